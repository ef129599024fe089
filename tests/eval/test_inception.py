"""FID InceptionV3: pytorch-fid key layout, weight loading (path / $TORCH_HOME / offline error), features."""

import pytest
import torch
import torch.nn.functional as F

from toonlab.errors import MissingWeightsError
from toonlab.nn.inception import (FID_CONVERTED_FILE, FID_WEIGHTS_FILE, FID_WEIGHTS_URL, FIDInceptionV3, InceptionE,
                                  load_fid_inception)

# Key names of pytorch-fid's fid_inception_v3() (torchvision Inception3, aux_logits=False, 1008 classes, with
# FIDInceptionA/C/E_1/E_2 blocks), written out by hand so that a renamed layer fails here.
PYTORCH_FID_KEYS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
    "Conv2d_3b_1x1.conv.weight": (80, 64, 1, 1),
    "Conv2d_4a_3x3.bn.weight": (192,),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch3x3dbl_3.bn.running_mean": (96,),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch3x3dbl_3a.bn.bias": (384,),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
# 94 BasicConv2d × (conv.weight + 5 BN tensors) + fc.weight + fc.bias
PYTORCH_FID_NUM_KEYS = 566


def test_state_dict_keys_match_pytorch_fid():
    sd = FIDInceptionV3().state_dict()
    assert len(sd) == PYTORCH_FID_NUM_KEYS
    assert sum(k.endswith(".conv.weight") for k in sd) == 94
    for key, shape in PYTORCH_FID_KEYS.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in sd)


def test_tf_compatible_pools():
    net = FIDInceptionV3()
    assert [b.pool for b in (net.Mixed_7b, net.Mixed_7c)] == ["avg", "max"]
    # count_include_pad=False: the border average of a constant map stays the constant (zero pads excluded)
    block = InceptionE(4, pool="avg")
    x = torch.ones(1, 4, 5, 5)
    block.branch_pool = torch.nn.Identity()
    for name in ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
                 "branch3x3dbl_3a", "branch3x3dbl_3b"):
        setattr(block, name, torch.nn.Identity())
    pooled = block(x)[:, -4:]
    assert torch.equal(pooled, torch.ones_like(pooled))
    assert not torch.equal(F.avg_pool2d(x, 3, 1, 1), torch.ones_like(x))  # the default would dilute the border


def _written(torch_home):
    return torch.load(torch_home / "hub" / "checkpoints" / FID_WEIGHTS_FILE, weights_only=True)


def test_loads_file_from_torch_home_and_features_are_deterministic(fid_torch_home, monkeypatch, astronaut):
    monkeypatch.setenv("TORCH_HOME", str(fid_torch_home))
    net, fingerprint = load_fid_inception(download=False)
    written = _written(fid_torch_home)
    got = net.state_dict()
    assert set(written) <= set(got)
    assert all(torch.equal(got[k], v) for k, v in written.items())
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert len(fingerprint) == 16

    x = torch.from_numpy(astronaut).permute(2, 0, 1).float().div(255)[None, :, ::4, ::4]  # (1,3,128,128)
    with torch.inference_mode():
        a = net(x)
        b = net(F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))
    assert a.shape == (1, 2048) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and (a >= 0).all() and a.std() > 0  # average of ReLU outputs
    # same input, same numbers: deterministic, and the resize inside forward is the 299² bilinear one
    assert torch.equal(a, b)


def test_explicit_path_and_counters(tmp_path, fid_torch_home):
    state = _written(fid_torch_home)
    state.update({k: torch.tensor(7) for k in FIDInceptionV3().state_dict() if k.endswith("num_batches_tracked")})
    path = tmp_path / "inception.pth"
    torch.save(state, path)
    net, fp1 = load_fid_inception(path)
    assert torch.equal(net.state_dict()["fc.bias"], state["fc.bias"])
    state["fc.bias"] += 1
    torch.save(state, path)
    assert load_fid_inception(path)[1] != fp1  # the cache key follows the weights


def test_missing_weights_error_names_file_url_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as e:
        load_fid_inception(download=False)
    msg = str(e.value)
    assert FID_WEIGHTS_FILE in msg and FID_WEIGHTS_URL in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "toonlab weights fetch fid-inception" in msg and "\n" not in msg


def test_converted_file_without_classifier_loads_from_torch_home(tmp_path, monkeypatch, fid_torch_home):
    # `toonlab weights fetch fid-inception` offline writes FID_CONVERTED_FILE: every conv/BN tensor, no fc
    state = {k: v for k, v in _written(fid_torch_home).items() if not k.startswith("fc.")}
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / FID_CONVERTED_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net, fp = load_fid_inception()
    assert net.weights_label == f"UNVERIFIED {FID_CONVERTED_FILE} sha256:{fp}"  # random weights (opt-in)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    del state["Mixed_5b.branch1x1.bn.running_var"]  # only fc may be absent
    torch.save(state, folder / FID_CONVERTED_FILE)
    with pytest.raises(MissingWeightsError, match="Mixed_5b.branch1x1.bn.running_var"):
        load_fid_inception()


def test_renamed_or_foreign_state_dict_is_rejected(tmp_path, fid_torch_home):
    bad = _written(fid_torch_home)
    bad["Mixed_7c.branch_pool.conv.weight_renamed"] = bad.pop("Mixed_7c.branch_pool.conv.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(MissingWeightsError, match="not a pytorch-fid Inception"):
        load_fid_inception(tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MissingWeightsError, match="junk.pth"):
        load_fid_inception(tmp_path / "junk.pth")
