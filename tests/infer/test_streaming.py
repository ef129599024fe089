"""Layer-streamed inference (toonlab.infer.streaming): equal to the untiled network, chosen by the plan when the
untiled pass is over the budget and the network streams, and a memory estimate that tracks the real peak."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from toonlab.checkpoint import save_export
from toonlab.infer import tiling
from toonlab.infer.streaming import NotStreamable, StreamedNetwork
from toonlab.infer.translator import GeneratorWrapper, Translator
from toonlab.models import build_model
from toonlab.nn.blocks import LayerNorm2d

# the default suite runs one generator per op family (LN + nearest ×2; explicit pads + align_corners bilinear;
# CartoonGAN's IN + transposed convs); the other streamable ones, same ops in other arrangements, are slow
STREAMABLE = [("ctss", None), ("animegan", None), ("cartoongan", None)] + [
    pytest.param(name, cfg, marks=pytest.mark.slow)
    for name, cfg in [("ctss", {"generator": "unet"}), ("cyclegan", None), ("toon2real", None), ("unit", None)]]


def _wrapped(name, cfg=None, bgr=False):
    torch.manual_seed(0)
    return GeneratorWrapper(build_model(name, cfg).translator(), bgr=bgr).eval()


@pytest.mark.parametrize("name,cfg", STREAMABLE, ids=lambda v: v if isinstance(v, str) else str(v))
def test_streamed_equals_untiled(name, cfg):
    """Every streamable registered generator on odd sizes and a batch of 2, in 16-row stripes (many stripes, halos
    and reflected border rows): float32 storage matches the untiled module to float32 round-off, fp16 storage
    (the default) to well under half an 8-bit step on average (measured 0.02–0.1/255)."""
    net = _wrapped(name, cfg)
    exact = StreamedNetwork(net, storage=torch.float32, stripe_rows=16)
    for shape in [(1, 3, 70, 90), (2, 3, 37, 53)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            ref = net(x)
        assert (exact(x) - ref).abs().max() < 1e-4
    assert (StreamedNetwork(net, stripe_rows=16)(x) - ref).abs().mean() < 0.5 / 255


def test_bgr_wrapper_streams():
    """CartoonGAN's released weights work in BGR: the wrapper's channel flips stream too."""
    net = _wrapped("cartoongan", bgr=True)
    x = torch.rand(1, 3, 44, 52)
    with torch.inference_mode():
        ref = net(x)
    assert (StreamedNetwork(net, storage=torch.float32, stripe_rows=8)(x) - ref).abs().max() < 1e-4


class _EveryOp(nn.Module):
    """One of each streamed op: zero / reflect / replicate padding (explicit pads and conv modes), stride 2,
    dilation, a transposed conv, nearest and bilinear resizing (by factor, to a size, both align_corners, module
    and function), LN, IN (affine or not), channel concatenation and a residual add."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 3, 3)
        self.c1 = nn.Conv2d(3, 8, 5, padding=2, padding_mode="reflect")
        self.n1 = LayerNorm2d(8)
        self.down = nn.Conv2d(8, 8, 3, 2, padding=1, padding_mode="replicate")
        self.n2 = nn.InstanceNorm2d(8)
        self.dil = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.n3 = nn.InstanceNorm2d(8, affine=True)
        self.up = nn.ConvTranspose2d(8, 6, 3, 2, padding=1, output_padding=1)
        self.pad = nn.ReflectionPad2d((0, 1, 0, 1))
        self.c2 = nn.Conv2d(14, 8, 3, 2)
        self.up2 = nn.Upsample(scale_factor=2, mode="bilinear")
        self.out = nn.Conv2d(24, 3, 1)
        for m in (self.n1, self.n3):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)

    def forward(self, x):
        a = F.leaky_relu(self.n1(self.c1(self.c0(F.pad(x, (1, 1, 1, 1))))), 0.2)
        b = F.relu(self.n2(self.down(a)))
        b = b + self.n3(self.dil(b))
        v = self.c2(self.pad(torch.cat([F.relu(self.up(b)), a], 1)))
        w = [F.interpolate(v, scale_factor=2, mode="nearest"),
             F.interpolate(v, size=a.shape[-2:], mode="bilinear", align_corners=True), self.up2(v)]
        return torch.tanh(self.out(torch.cat(w, 1)))


def test_every_op_with_stripes_thinner_than_halos():
    """3-row stripes: every conv's halo and every border reflection reaches into neighbouring stripes. Batch 1
    also writes maps over differently shaped ones (the stride-2 and transposed convs' inputs)."""
    torch.manual_seed(0)
    net = _EveryOp().eval()
    streamed = StreamedNetwork(net, storage=torch.float32, stripe_rows=3)
    for batch in (2, 1):
        x = torch.randn(batch, 3, 38, 46)
        with torch.inference_mode():
            ref = net(x)
        assert (streamed(x) - ref).abs().max() < 1e-4


def test_transposed_conv_rows_no_input_reaches():
    """Padding 0 with output_padding 1: the last output row holds the bias only; 1-row stripes reach it alone."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.InstanceNorm2d(4),
                        nn.ConvTranspose2d(4, 3, 3, 2, output_padding=1)).eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.inference_mode():
        ref = net(x)
    assert (StreamedNetwork(net, storage=torch.float32, stripe_rows=1)(x) - ref).abs().max() < 1e-5


def test_float16_overflow_reruns_in_bfloat16():
    """A map beyond float16's range (a conv with huge weights before a norm) would turn the output into NaN; the
    executor re-runs in bfloat16 storage and stays close to the untiled result."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(1, 8), nn.ReLU(), nn.Conv2d(8, 3, 1),
                        nn.Tanh()).eval()
    with torch.no_grad():
        net[0].weight.mul_(1e6)
    x = torch.rand(1, 3, 40, 40)
    with torch.inference_mode():
        ref = net(x)
    assert ref.isfinite().all()
    y = StreamedNetwork(net, stripe_rows=8)(x)
    assert y.isfinite().all() and (y - ref).abs().mean() < 0.02


@pytest.mark.parametrize("name,why", [("salcbam", "mean"), ("multistyle", "multi-style")])
def test_unsupported_networks_say_why(name, why):
    """CBAM's channel attention pools over the whole image; style-conditioned generators are not traced."""
    torch.manual_seed(0)
    model = build_model(name)
    net = GeneratorWrapper(model.translator(), multi_style=bool(model.styles)).eval()
    with pytest.raises(NotStreamable, match=why):
        StreamedNetwork(net)


def test_global_pooling_is_not_streamable():
    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y * torch.sigmoid(F.adaptive_avg_pool2d(y, 1))

    with pytest.raises(NotStreamable, match="adaptive_avg_pool2d"):
        StreamedNetwork(Pool().eval())


@pytest.mark.parametrize("name", ["ctss", "cartoongan"])
def test_estimate_vs_measured_peak(name):
    """The estimate (live stored maps + one stripe's float32 temporaries + one conv's weight copy) against the
    allocator's peak during the run (tiling's per-operator heap sampler) at 192×224 with the default stripes:
    within [0.6, 1.6]× (measured about 0.9–1.3)."""
    net = _wrapped(name)
    s = StreamedNetwork(net)
    x = torch.rand(1, 3, 192, 224)
    s(x)  # warm-up: one-off allocations (oneDNN primitives) are not the executor's
    peak = tiling._peak_bytes(lambda: s(x), torch.device("cpu"))
    ratio = peak / s.estimate(tuple(x.shape))
    assert 0.6 <= ratio <= 1.6, ratio


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    return {n: save_export(build_model(n), d / f"{n}.safetensors") for n in ("ctss", "salcbam")}


def test_plan_streams_over_budget_and_matches_untiled(exports):
    """Untiled when it fits; over a small forced budget a streamable model streams (the reason says so), exactly
    as the untiled result; --tile still forces tiles."""
    x = torch.rand(1, 3, 96, 120)
    full = Translator.load(exports["ctss"], device="cpu", memory_budget=1 << 40)
    assert not full.plan(96, 120).streamed and full.plan(96, 120).tile is None
    ref = full.translate_tensor(x)
    small = Translator.load(exports["ctss"], device="cpu", memory_budget=full.streamer()[0].estimate((1, 3, 96, 120)))
    plan = small.plan(96, 120)
    assert plan.streamed and plan.tile is None and plan.reason.startswith("streamed 120×96")
    steps = []
    y = small.translate_tensor(x, progress=lambda d, t, unit: steps.append((d, t, unit)))
    assert small.last_plan.streamed and (y - ref).abs().mean() < 0.5 / 255
    assert steps[-1][0] == steps[-1][1] and {u for *_, u in steps} == {"layer"}
    forced = Translator.load(exports["ctss"], device="cpu", memory_budget=1 << 20, tile=64)
    assert forced.plan(96, 120).tile == 64 and not forced.plan(96, 120).streamed


def test_plan_tiles_what_cannot_stream(exports):
    t = Translator.load(exports["salcbam"], device="cpu", memory_budget=1 << 20)
    plan = t.plan(96, 120)
    assert plan.tile is not None and not plan.streamed
    assert "not streamed: " in plan.reason and "mean" in plan.reason
