"""Inference edge cases: tiny and thin images, non-finite outputs, progress callbacks."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from toonlab.checkpoint import save_export
from toonlab.infer.batch import run_batch
from toonlab.infer.translator import NonFiniteOutput, Translator
from toonlab.models import build_model


@pytest.fixture(scope="module")
def ctss(tmp_path_factory):
    torch.manual_seed(0)
    path = save_export(build_model("ctss"), tmp_path_factory.mktemp("ck") / "ctss.safetensors")
    return path, Translator.load(path, device="cpu")


@pytest.mark.parametrize("hw", [(1, 1), (3, 3), (1, 5000), (5000, 1), (2, 37)])
def test_tiny_and_thin_images_work(ctss, hw):
    """Too small to reflect-pad inside the network: replicate-padded to the network's minimum side, cropped back.
    A uniform image stays uniform (replication adds no new content), and the same pixel gives the same output
    whatever the shape it comes in."""
    _, t = ctss
    x = torch.full((1, 3, *hw), 0.25)
    x[:, 1] = 0.6
    y = t(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and 0 <= y.min() and y.max() <= 1
    assert (y - y[..., :1, :1]).abs().max() < 1e-5
    assert (y[..., 0, 0] - t(x[..., :1, :1])[..., 0, 0]).abs().max() < 1e-4


def test_replicate_padding_of_a_dot_matches_a_uniform_image(ctss):
    """1×1 input = the uniform min-side image (what replication makes of it), cropped to its centre pixel."""
    _, t = ctss
    dot = torch.tensor([0.9, 0.2, 0.4])[None, :, None, None]
    side = t.min_side
    assert side == 32  # CTSS: 8 × its multiple of 4
    big = t(dot.expand(1, 3, side, side).clone())
    assert torch.allclose(t(dot)[..., 0, 0], big[..., side // 2, side // 2], atol=1e-5)


def test_non_finite_output_fails_that_file(ctss, tmp_path):
    path, _ = ctss
    state = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    key = next(k for k in state if k.endswith("weight") and state[k].dim() == 4)
    state[key] = state[key].clone()
    state[key][0, 0, 0, 0] = float("nan")
    meta.pop("sha256", None)  # a bad export written before checksums existed: the translator is the last guard
    bad = tmp_path / "nan.safetensors"
    save_file(state, str(bad), metadata=meta)
    t = Translator.load(bad, device="cpu")
    with pytest.raises(NonFiniteOutput):
        t(torch.rand(1, 3, 32, 32))
    photos = tmp_path / "in"
    photos.mkdir()
    Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(photos / "a.png")
    summary = run_batch([photos], tmp_path / "out", lambda loaded: t.translate_tensor(loaded.rgb), progress=False)
    assert summary.line().startswith("0 done, 0 skipped, 1 failed")
    (src, message), = summary.failed
    assert message.startswith(f"{src}: ") and "non-finite" in message and "\n" not in message
    assert not (tmp_path / "out" / "a.png").exists()


def test_progress_callback_counts_tiles_and_images(ctss):
    path, t = ctss
    calls = []
    t(torch.rand(3, 3, 32, 32), progress=lambda *a: calls.append(a))
    assert calls[-1] == (3, 3, "image")
    tiled = Translator.load(path, device="cpu", tile=68, overlap=32)
    calls.clear()
    tiled(torch.rand(1, 3, 100, 100), progress=lambda *a: calls.append(a))
    # 2×2 tiles, two passes (record the statistics, then blend)
    assert calls == [(i, 8, "tile") for i in range(1, 9)]
