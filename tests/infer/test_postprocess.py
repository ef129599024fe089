import cv2
import numpy as np
import pytest
import torch

from toonlab.errors import UsageError
from toonlab.infer.postprocess import PostProcess, keep_input_colors


def _photo(astronaut, size=64):
    img = cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


def test_identity_by_default(astronaut):
    x = _photo(astronaut)
    assert PostProcess().is_identity and torch.equal(PostProcess()(x.flip(-1), x), x.flip(-1))


def test_ctss_saturation_default_from_config(astronaut):
    post = PostProcess.for_model({"saturation_boost": 1.4})
    assert post.saturation == 1.4
    x = _photo(astronaut)
    y = post(x, x)
    # independent check: blend with the grey image (.299/.587/.114) by factor 1.4 and clamp (PIL-style saturation)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    ref = (gray + 1.4 * (x - gray)).clamp(0, 1)
    assert torch.allclose(y, ref, atol=1e-5)
    assert PostProcess.for_model({"saturation_boost": 1.4}, saturation=1.0).is_identity


def test_keep_colors_takes_output_luma_and_input_chroma(astronaut):
    x = _photo(astronaut)
    out = torch.rand_like(x) * 0.5 + 0.25
    y = keep_input_colors(out, x)
    # independent YUV (PAPERS.md §1 coefficients) through OpenCV-free numpy
    m = np.array([[0.299, 0.587, 0.114], [-0.14714119, -0.28886916, 0.43601035],
                  [0.61497538, -0.51496512, -0.10001026]])
    yuv = lambda t: np.einsum("ij,bjhw->bihw", m, t.double().numpy())
    ok = ((y > 0.001) & (y < 0.999)).all(1, keepdim=True).expand_as(y).numpy()  # away from the clamp
    ry, ro, rx = yuv(y), yuv(out), yuv(x)
    assert np.abs(ry[:, :1] - ro[:, :1])[ok[:, :1]].max() < 1e-4
    assert np.abs(ry[:, 1:] - rx[:, 1:])[ok[:, 1:]].max() < 1e-4


def test_strength_blends_with_input(astronaut):
    x = _photo(astronaut)
    out = 1 - x
    assert torch.allclose(PostProcess(strength=0.25)(out, x), 0.25 * out + 0.75 * x, atol=1e-6)
    assert torch.allclose(PostProcess(strength=0.0)(out, x), x)
    with pytest.raises(UsageError, match="strength"):
        PostProcess(strength=1.5)


def test_match_luminance_then_contrast(astronaut):
    x = _photo(astronaut)
    out = (x * 0.5).clamp(0, 1)
    y = PostProcess(match_luminance=True)(out, x)
    luma = lambda t: (0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]).mean()
    assert abs(luma(y) - luma(x)) < 0.01 < abs(luma(out) - luma(x))
