"""toonlab vs the peers' own PyTorch code on the same networks and weights: seconds, peak RSS, max difference.

The peers' generators are re-implemented here from their published layer lists (facts only, no code taken):
- ``animegan2``: bryandlee/animegan2-pytorch ``model.py`` — ConvNormLReLU (reflect pad, bias-free conv,
  GroupNorm(1), LeakyReLU 0.2), four inverted residual blocks (×2 expansion, depthwise 3×3), bilinear
  align-corners upsampling to the stored sizes, 1×1 conv + tanh; their script feeds RGB in [-1, 1] under no_grad.
- ``cartoongan``: Yijunmaverick/CartoonGAN-Test-Pytorch-Torch ``network/Transformer.py`` — 7×7 conv, two strided
  conv pairs, 8 residual blocks (reflect pad 1, 3×3), two transposed-conv pairs, 7×7 conv + tanh; their own
  instance normalisation (mean, biased variance via ``torch.var`` × (n−1)/n, eps 1e-9, scale/shift); BGR input
  in [-1, 1] under no_grad.
Random weights (seeded) go into the peer network, are saved as the peer's ``.pt``/``.pth`` file and converted by
``toonlab import-weights`` (``toonlab.infer.import_weights``), so both run identical weights.

Per network and size, each configuration runs in a fresh process (load, a 64² warm-up call, then one timed pass
of scikit-image's astronaut (toonlab.photos) resized to the size; peak RSS = the process's ``ru_maxrss``), rounds
interleaved (peer, default, torch, peer, …) so machine load hits all alike; the best round counts; a configuration
that fails (e.g. the peer's untiled 4K pass killed for memory) is recorded as ``<config>_error`` and the run goes on:
- ``peer``: the peer network, its preprocessing, ``torch.no_grad()``;
- ``default``: what ``toonlab cartoonize -m CKPT`` runs: ``Translator.load(ck, backend="auto")`` (the measured
  memory plan; on CPU with onnxruntime, the faster of ONNX Runtime and PyTorch as timed once per checkpoint — the
  export and that timing are cached by a warm-up process first);
- ``torch``: ``Translator.load(ck, backend="torch")`` (PyTorch, the same plan);
- ``best``: the faster of ``default`` and ``torch`` in that round (the exact float32 paths);
- ``torch_return`` (with ``--heap-ablation``): ``torch`` with ``TOONLAB_CPU_HEAP=return`` — glibc's default heap,
  which maps and page-faults every activation map of 32 MiB or more anew (``toonlab.device.keep_cpu_heap``);
- ``bf16`` (with ``--bf16``): ``Translator.load(ck, backend="torch", dtype="bf16")`` — not exact (bfloat16
  activations), reported beside the others, never counted as the best path.
Max |difference| is between the peer's and toonlab's outputs (RGB [0,1]; toonlab without post-processing).
Goals (issue 13): default ≥ 1.5× faster than the peer at every size; default within 1.1× of the best path.
    .venv/bin/python benchmarks/bench_peers.py [--nets animegan2 cartoongan] [--sizes 512 1024 1920x1080]
        [--rounds 2] [--threads 2] [--heap-ablation] [--bf16] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


# --- the peers' generators, from their published layer lists -------------------------------------------------

class _CNL(nn.Sequential):
    """animegan2-pytorch's ConvNormLReLU: pad (reflect), conv (no bias unless asked), GroupNorm(1), LeakyReLU 0.2."""

    def __init__(self, cin, cout, k=3, stride=1, pad=1, groups=1, bias=False):
        super().__init__(nn.ReflectionPad2d(pad), nn.Conv2d(cin, cout, k, stride, 0, groups=groups, bias=bias),
                         nn.GroupNorm(1, cout), nn.LeakyReLU(0.2, inplace=True))


class _InvRes(nn.Module):
    def __init__(self, cin, cout, expansion=2):
        super().__init__()
        mid = int(round(cin * expansion))
        self.residual = cin == cout
        self.layers = nn.Sequential(_CNL(cin, mid, 1, pad=0), _CNL(mid, mid, groups=mid, bias=True),
                                    nn.Conv2d(mid, cout, 1, bias=False), nn.GroupNorm(1, cout))

    def forward(self, x):
        y = self.layers(x)
        return x + y if self.residual else y


class PeerAnimeGAN2(nn.Module):
    """Module names as the published file's (block_a … block_e, out_layer), so its state dict is the release's."""

    def __init__(self):
        super().__init__()
        self.block_a = nn.Sequential(_CNL(3, 32, 7, pad=3), _CNL(32, 64, stride=2, pad=(0, 1, 0, 1)), _CNL(64, 64))
        self.block_b = nn.Sequential(_CNL(64, 128, stride=2, pad=(0, 1, 0, 1)), _CNL(128, 128))
        self.block_c = nn.Sequential(_CNL(128, 128), _InvRes(128, 256), _InvRes(256, 256), _InvRes(256, 256),
                                     _InvRes(256, 256), _CNL(256, 128))
        self.block_d = nn.Sequential(_CNL(128, 128), _CNL(128, 128))
        self.block_e = nn.Sequential(_CNL(128, 64), _CNL(64, 64), _CNL(64, 32, 7, pad=3))
        self.out_layer = nn.Sequential(nn.Conv2d(32, 3, 1, bias=False), nn.Tanh())

    def forward(self, x):
        y = self.block_a(x)
        half = y.shape[-2:]
        y = self.block_c(self.block_b(y))
        y = self.block_d(F.interpolate(y, half, mode="bilinear", align_corners=True))
        y = self.block_e(F.interpolate(y, x.shape[-2:], mode="bilinear", align_corners=True))
        return self.out_layer(y)


class _PeerIN(nn.Module):
    """CartoonGAN's own instance normalisation: biased variance through torch.var × (n−1)/n, eps 1e-9."""

    def __init__(self, dim):
        super().__init__()
        self.scale, self.shift, self.eps = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim)), 1e-9

    def forward(self, x):
        n = x.shape[2] * x.shape[3]
        t = x.view(x.shape[0], x.shape[1], n)
        mean = t.mean(2)[..., None, None]
        var = t.var(2)[..., None, None] * ((n - 1) / n)
        return (x - mean) / torch.sqrt(var + self.eps) * self.scale[None, :, None, None] + \
            self.shift[None, :, None, None]


class PeerCartoonGAN(nn.Module):
    """Attribute names as the published Transformer's (conv01_1, in01_1, …, deconv03_1)."""

    def __init__(self, n_res: int = 8):
        super().__init__()
        self.n_res = n_res
        self.conv01_1, self.in01_1 = nn.Conv2d(3, 64, 7), _PeerIN(64)
        self.conv02_1, self.conv02_2, self.in02_1 = nn.Conv2d(64, 128, 3, 2, 1), nn.Conv2d(128, 128, 3, 1, 1), \
            _PeerIN(128)
        self.conv03_1, self.conv03_2, self.in03_1 = nn.Conv2d(128, 256, 3, 2, 1), nn.Conv2d(256, 256, 3, 1, 1), \
            _PeerIN(256)
        for i in range(4, 4 + n_res):
            for j in (1, 2):
                setattr(self, f"conv{i:02d}_{j}", nn.Conv2d(256, 256, 3))
                setattr(self, f"in{i:02d}_{j}", _PeerIN(256))
        self.deconv01_1, self.deconv01_2 = nn.ConvTranspose2d(256, 128, 3, 2, 1, 1), nn.Conv2d(128, 128, 3, 1, 1)
        setattr(self, f"in{4 + n_res}_1", _PeerIN(128))
        self.deconv02_1, self.deconv02_2 = nn.ConvTranspose2d(128, 64, 3, 2, 1, 1), nn.Conv2d(64, 64, 3, 1, 1)
        setattr(self, f"in{5 + n_res}_1", _PeerIN(64))
        self.deconv03_1 = nn.Conv2d(64, 3, 7)

    def forward(self, x):
        y = F.relu(self.in01_1(self.conv01_1(F.pad(x, (3,) * 4, mode="reflect"))))
        y = F.relu(self.in02_1(self.conv02_2(self.conv02_1(y))))
        y = F.relu(self.in03_1(self.conv03_2(self.conv03_1(y))))
        for i in range(4, 4 + self.n_res):
            c1, n1 = getattr(self, f"conv{i:02d}_1"), getattr(self, f"in{i:02d}_1")
            c2, n2 = getattr(self, f"conv{i:02d}_2"), getattr(self, f"in{i:02d}_2")
            h = F.relu(n1(c1(F.pad(y, (1,) * 4, mode="reflect"))))
            y = n2(c2(F.pad(h, (1,) * 4, mode="reflect"))) + y
        y = F.relu(getattr(self, f"in{4 + self.n_res}_1")(self.deconv01_2(self.deconv01_1(y))))
        y = F.relu(getattr(self, f"in{5 + self.n_res}_1")(self.deconv02_2(self.deconv02_1(y))))
        return torch.tanh(self.deconv03_1(F.pad(y, (3,) * 4, mode="reflect")))


PEERS = {"animegan2": (PeerAnimeGAN2, "rgb"), "cartoongan": (PeerCartoonGAN, "bgr")}


def peer_forward(net: nn.Module, order: str, x01: torch.Tensor) -> torch.Tensor:
    """The peer's inference: (1,3,H,W) RGB [0,1] → RGB [0,1], channel order and [-1,1] scaling as their scripts."""
    x = x01 * 2 - 1
    if order == "bgr":
        x = x.flip(1)
    with torch.no_grad():
        y = net(x)
    if order == "bgr":
        y = y.flip(1)
    return (y + 1) / 2


def random_peer(name: str, seed: int = 0) -> nn.Module:
    """The peer network with random weights of a trained network's scale (N(0, 0.05) convs, norms near 1/0)."""
    g = torch.Generator().manual_seed(seed)
    net = PEERS[name][0]().eval()
    with torch.no_grad():
        for pname, p in net.named_parameters():
            if pname.endswith(("scale", "weight")) and p.dim() == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return net


# --- one measurement, in a fresh process --------------------------------------------------------------------

def child(args: list[str]) -> None:
    import resource
    import time

    import numpy as np

    config, name, ck, peer_file, h, w, threads, ref_out = args
    torch.set_num_threads(int(threads))
    h, w = int(h), int(w)
    import cv2

    from toonlab import photos

    x = torch.from_numpy(cv2.resize(photos.load("astronaut"), (w, h), interpolation=cv2.INTER_AREA))
    x = x.permute(2, 0, 1)[None]
    x = x.float() / 255
    if config == "peer":
        net = PEERS[name][0]().eval()
        net.load_state_dict(torch.load(peer_file, weights_only=True))
        run = (lambda: peer_forward(net, PEERS[name][1], x))
        peer_forward(net, PEERS[name][1], x[..., :64, :64])  # warm-up: kernel selection, thread pool
        plan, note = "peer code", None
    else:
        from toonlab.infer.translator import Translator

        t = Translator.load(ck, device="cpu", backend="auto" if config == "default" else "torch", saturation=1.0,
                            dtype="bf16" if config == "bf16" else None)
        t.memory_model()  # calibration is part of loading, not of the pass
        t.translate_tensor(x[..., :64, :64])  # warm-up, as the peer's
        run = (lambda: t.translate_tensor(x))
        plan, note = None, t.backend_note
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    y = run()
    secs = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if plan is None:
        p = t.last_plan  # the backend that ran the pass: streamed and tiled ones always PyTorch
        plan = f"{'ONNX Runtime' if p.backend == 'onnxruntime' else 'pytorch'}: {p.reason}"
    np.save(ref_out, y[0].numpy())
    print(json.dumps({"seconds": secs, "peak_rss_mib": peak / 1024, "growth_mib": (peak - before) / 1024,
                      "plan": plan, "backend": note}))


def _run(config, name, ck, peer_file, h, w, threads, out):
    """One configuration in a fresh process: its JSON line, or {"error": why} when it failed (e.g. killed by the
    kernel for memory: the peers' code runs untiled at any size)."""
    env = {**os.environ, **({"TOONLAB_CPU_HEAP": "return"} if config == "torch_return" else {})}
    res = subprocess.run([sys.executable, __file__, "--child", config, name, str(ck), str(peer_file), str(h), str(w),
                          str(threads), str(out)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        why = ("killed (signal 9: out of memory)" if res.returncode == -9 else
               (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1])
        print(f"{config} {name} {w}x{h} failed: {why}", file=sys.stderr, flush=True)
        return {"error": why}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _size(text: str) -> tuple[int, int]:
    """'512' → (512, 512); '1920x1080' → (1080, 1920) as (H, W)."""
    w, _, h = text.partition("x")
    return (int(h or w), int(w))


def main() -> None:
    import numpy as np

    from toonlab.infer.import_weights import import_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=["animegan2", "cartoongan"], choices=list(PEERS))
    ap.add_argument("--sizes", nargs="+", default=["512", "1024", "1920x1080"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--bf16", action="store_true", help="also time PyTorch in bfloat16 (an opt-in, not exact)")
    ap.add_argument("--heap-ablation", action="store_true",
                    help="also time PyTorch with glibc's default heap (TOONLAB_CPU_HEAP=return)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.nets:
            peer_file = tmp / f"{name}.pt"
            torch.save(random_peer(name).state_dict(), peer_file)
            ck = import_weights(peer_file, name, tmp / f"{name}.safetensors")
            _run("default", name, ck, peer_file, 64, 64, args.threads, tmp / "warm.npy")  # ONNX export cached
            for size in args.sizes:
                h, w = _size(size)
                configs = (["peer", "default", "torch"] + (["torch_return"] if args.heap_ablation else [])
                           + (["bf16"] if args.bf16 else []))
                runs: dict[str, list[dict]] = {c: [] for c in configs}
                for _ in range(args.rounds):
                    for config in runs:
                        runs[config].append(_run(config, name, ck, peer_file, h, w, args.threads,
                                                 tmp / f"{config}.npy"))
                ok = {c: [r for r in v if "error" not in r] for c, v in runs.items()}
                outs = {c: np.load(tmp / f"{c}.npy") for c in runs if ok[c]}
                best = {c: min(r["seconds"] for r in v) for c, v in ok.items() if v}
                best_path = min([best[c] for c in ("default", "torch") if c in best], default=None)

                def ratio(a, b):
                    return round(a / b, 2) if a is not None and b is not None else None

                def diff(c):
                    return float(np.abs(outs[c] - outs["peer"]).max()) if c in outs and "peer" in outs else None

                row = {"net": name, "size": f"{w}x{h}",
                       **{f"{c}_s": round(best[c], 2) if c in best else None for c in runs},
                       **{f"{c}_peak_rss_mib": round(max(r["peak_rss_mib"] for r in v)) if v else None
                          for c, v in ok.items()},
                       **{f"{c}_error": v[-1]["error"] for c, v in runs.items() if not ok[c]},
                       "default_plan": ok["default"][-1]["plan"] if ok["default"] else None,
                       "default_backend": ok["default"][-1]["backend"] if ok["default"] else None,
                       "peer_over_default": ratio(best.get("peer"), best.get("default")),
                       "default_over_best": ratio(best.get("default"), best_path),
                       "max_diff_default_vs_peer": diff("default"), "max_diff_torch_vs_peer": diff("torch"),
                       **({"torch_return_over_torch": ratio(best.get("torch_return"), best.get("torch"))}
                          if args.heap_ablation else {}),
                       **({"peer_over_bf16": ratio(best.get("peer"), best.get("bf16")),
                           "max_diff_bf16_vs_peer": diff("bf16")} if args.bf16 else {})}
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"threads": args.threads, "rounds": args.rounds, "load_average": [round(v, 1) for v in os.getloadavg()],
              "goals": {"peer_over_default": ">= 1.5", "default_over_best": "<= 1.1"}, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
