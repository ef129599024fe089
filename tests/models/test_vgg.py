"""VGG19 features: torchvision key layout, loading paths, the offline error, normalisation, frozen."""

import urllib.error

import pytest
import torch
import torch.nn.functional as F

from toonlab.errors import MissingWeightsError, ToonlabError
from toonlab.nn.vgg import VGG19_FILE, VGG19_URL, VGG19Features

# torchvision vgg19 "E" config: conv indices of features[:26] and where the 2×2 max-pools sit
CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25]
POOL_IDX = [4, 9, 18]


def torchvision_state(seed=0, extra=True):
    """A state dict in torchvision's full vgg19 layout (features beyond 25 and classifier included)."""
    g = torch.Generator().manual_seed(seed)
    chans = [3, 64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512]
    state = {}
    for i, idx in enumerate(CONV_IDX):
        state[f"features.{idx}.weight"] = torch.randn(chans[i + 1], chans[i], 3, 3, generator=g) * 0.05
        state[f"features.{idx}.bias"] = torch.randn(chans[i + 1], generator=g) * 0.01
    if extra:
        state["features.28.weight"] = torch.zeros(512, 512, 3, 3)
        state["classifier.0.weight"] = torch.zeros(10, 10)
    return state


def reference_forward(state, x01):
    """Independent conv4_4 (pre-ReLU) forward from the raw state dict, ImageNet-normalised [0,1] input."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    y = (x01 - mean) / std
    for idx in range(26):
        if idx in CONV_IDX:
            y = F.conv2d(y, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"], padding=1)
            if idx != 25:
                y = F.relu(y)
        elif idx in POOL_IDX:
            y = F.max_pool2d(y, 2)
    return y


def test_loads_torchvision_layout_from_a_path_and_matches_reference(tmp_path):
    state = torchvision_state()
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    vgg = VGG19Features(str(path))
    assert set(vgg.state_dict()) == {f"features.{i}.{p}" for i in CONV_IDX for p in ("weight", "bias")}
    for k, v in vgg.state_dict().items():
        assert torch.equal(v, state[k])
    x = torch.rand(1, 3, 32, 24)
    out = vgg(x * 2 - 1)
    assert out.shape == (1, 512, 4, 3)
    assert torch.allclose(out, reference_forward(state, x), atol=1e-4)


def test_imagenet_comes_from_torch_home(offline_vgg19):
    vgg = VGG19Features("imagenet")
    saved = torch.load(offline_vgg19, weights_only=True)
    assert torch.equal(vgg.features[25].weight, saved["features.25.weight"])


def test_offline_without_file_names_file_url_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        VGG19Features("imagenet", download=False)
    msg = str(err.value)
    assert VGG19_FILE in msg and VGG19_URL in msg and str(tmp_path / "hub" / "checkpoints") in msg

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(MissingWeightsError, match="download failed"):
        VGG19Features("imagenet")


def test_missing_path_and_foreign_state_fail_clearly(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found"):
        VGG19Features(str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ToonlabError, match="missing features.0.weight"):
        VGG19Features(str(bad))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ToonlabError, match="cannot read"):
        VGG19Features(str(junk))


def test_frozen_eval_and_no_weight_gradients():
    vgg = VGG19Features("imagenet")
    vgg.train()
    assert not vgg.training and all(not p.requires_grad for p in vgg.parameters())
    x = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_()
    vgg(x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in vgg.parameters())


def test_normalisation_variants():
    x = torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1)  # RGB (1, .5, 0) in [0,1]
    with pytest.warns(UserWarning, match="random weights"):
        tv = VGG19Features("random").normalize(x).flatten()
    expected = (torch.tensor([1.0, 0.5, 0.0]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(tv, expected)
    with pytest.warns(UserWarning):
        caffe = VGG19Features("random", variant="caffe").normalize(x).flatten()
    # BGR order, 0–255, minus the Caffe BGR means
    assert torch.allclose(caffe, torch.tensor([0.0 - 103.939, 127.5 - 116.779, 255.0 - 123.68]))
    with pytest.raises(ToonlabError):
        VGG19Features("random", variant="keras")
