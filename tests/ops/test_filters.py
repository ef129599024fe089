"""Box and guided filter: against cv2.boxFilter / cv2.ximgproc.guidedFilter, both code paths, gradcheck, bad input."""

import cv2
import numpy as np
import pytest
import torch

from toonlab.ops import OpsInputError, box_filter, filters, guided_filter, self_guided_filter
from toonlab.errors import ToonlabError

CV_BORDER = {"reflect101": cv2.BORDER_REFLECT_101, "reflect": cv2.BORDER_REFLECT}


@pytest.fixture(scope="module")
def photo(astronaut) -> torch.Tensor:
    """Two real 96×128 crops (face and suit) of the astronaut, (2,3,96,128) float32 in [0,1]."""
    crops = [astronaut[100:196, 180:308], astronaut[300:396, 40:168]]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255).contiguous()


def _hwc(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.permute(1, 2, 0).numpy())


@pytest.mark.parametrize("border", ["reflect101", "reflect"])
@pytest.mark.parametrize("r", [1, 4, 30])
def test_box_filter_matches_opencv(photo, r, border):
    out = box_filter(photo, r, border=border)
    assert out.shape == photo.shape and out.dtype == photo.dtype
    for b in range(2):
        ref = cv2.boxFilter(_hwc(photo[b]), -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=CV_BORDER[border])
        np.testing.assert_allclose(_hwc(out[b]), ref, atol=1e-5)  # float32 running sums


def test_box_filter_paths_agree_and_keep_dtype():
    x = torch.rand(2, 3, 17, 23, dtype=torch.float64)
    streamed = box_filter(x, 3)
    graph = box_filter(x.clone().requires_grad_(), 3)
    torch.testing.assert_close(graph.detach(), streamed, rtol=0, atol=1e-12)
    half = box_filter(x.half(), 3)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), streamed, rtol=0, atol=2e-3)


@pytest.mark.parametrize("border", ["reflect101", "reflect"])
def test_box_filter_gradcheck(border):
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: box_filter(t, 2, border=border), (x,))


@pytest.mark.parametrize(
    ("x", "r", "border", "message"),
    [
        (torch.rand(3, 8, 8), 1, "reflect101", "(B,C,H,W)"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.int64), 1, "reflect101", "floating"),
        (torch.rand(1, 1, 8, 8), 0, "reflect101", "radius must be >= 1"),
        (torch.rand(1, 1, 8, 8), 8, "reflect101", "smaller than the image"),
        (torch.rand(1, 1, 8, 8), 1.5, "reflect101", "int radius"),
        (torch.rand(1, 1, 8, 8), 1, "wrap", "border"),
    ],
)
def test_box_filter_bad_input(x, r, border, message):
    with pytest.raises(OpsInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        box_filter(x, r, border=border)


# eps >= 0.01: OpenCV's float32 colour path loses precision on near-singular Σ at eps ~ 1e-3 (checked: it drifts
# by 0.5 there while our float32 and float64 agree to 3e-5), so small eps is tested against float64 numpy below.
@pytest.mark.parametrize(("r", "eps"), [(2, 0.01), (5, 0.05), (8, 0.2)])
@pytest.mark.parametrize("guide_kind", ["gray", "color"])
def test_guided_filter_matches_opencv(photo, r, eps, guide_kind):
    guide = photo if guide_kind == "color" else photo.mean(1, keepdim=True)
    p = photo.flip(1).contiguous()  # a different image than the guide: exercises cov(I, p)
    out = guided_filter(p, guide, r, eps, border="reflect")
    assert out.shape == p.shape
    for b in range(2):
        ref = cv2.ximgproc.guidedFilter(_hwc(guide[b]), _hwc(p[b]), r, eps)
        np.testing.assert_allclose(_hwc(out[b]), ref, atol=5e-5)
    # Default border (reflect-101) only differs from OpenCV's within 2r of the image border.
    inner = guided_filter(p, guide, r, eps)[..., 2 * r : -2 * r, 2 * r : -2 * r]
    torch.testing.assert_close(inner, out[..., 2 * r : -2 * r, 2 * r : -2 * r], rtol=0, atol=1e-5)


def test_guided_filter_color_small_eps_matches_float64_numpy(photo):
    """He et al. eq. (14)–(16) written out with cv2.boxFilter means and a per-pixel np.linalg.solve."""
    r, eps = 2, 1e-3
    guide64 = _hwc(photo[0]).astype(np.float64)
    p64 = guide64[..., ::-1].copy()

    def mean(x):
        return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT_101)

    mean_i, mean_p = mean(guide64), mean(p64)
    sigma = np.empty(guide64.shape[:2] + (3, 3))
    cov = np.empty(guide64.shape[:2] + (3, 3))  # [..., k, j] = cov(I_k, p_j)
    for k in range(3):
        for j in range(3):
            sigma[..., k, j] = mean(guide64[..., k] * guide64[..., j]) - mean_i[..., k] * mean_i[..., j]
            cov[..., k, j] = mean(guide64[..., k] * p64[..., j]) - mean_i[..., k] * mean_p[..., j]
    a = np.linalg.solve(sigma + eps * np.eye(3), cov)  # [..., k, j]
    b = mean_p - np.einsum("hwkj,hwk->hwj", a, mean_i)
    mean_a = np.stack([mean(np.ascontiguousarray(a[..., j])) for j in range(3)], -1)  # [..., k, j]
    expected = np.einsum("hwkj,hwk->hwj", mean_a, guide64) + mean(b)
    out = guided_filter(photo[:1].flip(1).contiguous(), photo[:1], r, eps)[0]
    np.testing.assert_allclose(_hwc(out), expected, atol=1e-4)


@pytest.mark.parametrize("guide_channels", [1, 3])
def test_guided_filter_self_guided_shortcut_equals_general_form(guide_channels):
    x = torch.rand(2, guide_channels, 20, 25, dtype=torch.float64)
    shortcut = guided_filter(x, x, 3, 0.05)  # p is guide: closed form a = I − eps·(Σ + eps·U)⁻¹
    general = guided_filter(x, x.clone(), 3, 0.05)
    torch.testing.assert_close(shortcut, general, rtol=0, atol=1e-12)


@pytest.mark.parametrize("guide_channels", [1, 3])
def test_guided_filter_paths_agree(guide_channels):
    p = torch.rand(2, 2, 19, 21, dtype=torch.float64)
    guide = torch.rand(2, guide_channels, 19, 21, dtype=torch.float64)
    streamed = guided_filter(p, guide, 2, 0.02)
    graph = guided_filter(p.clone().requires_grad_(), guide, 2, 0.02)
    torch.testing.assert_close(graph.detach(), streamed, rtol=0, atol=1e-12)


def test_guided_filter_keeps_constants_and_edges():
    step = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    step[..., 8:] = 1.0
    # A constant image is a fixed point; a strong step is preserved when eps << its variance.
    const = torch.full((1, 3, 16, 16), 0.3, dtype=torch.float64)
    torch.testing.assert_close(guided_filter(const, step, 3, 0.01), const)
    out = guided_filter(step, step, 3, 1e-6)
    torch.testing.assert_close(out, step, rtol=0, atol=1e-4)


def test_self_guided_filter_matches_opencv_per_channel(photo):
    x = photo * 2 - 1  # CTSS: [-1,1], r = 5, eps = 0.2
    out = self_guided_filter(x, 5, 0.2, border="reflect")
    for b in range(2):
        for c in range(3):
            plane = np.ascontiguousarray(x[b, c].numpy())
            ref = cv2.ximgproc.guidedFilter(plane, plane, 5, 0.2)
            np.testing.assert_allclose(out[b, c].numpy(), ref, atol=5e-5)


@pytest.mark.parametrize("guide_channels", [1, 3])
def test_guided_filter_gradcheck(guide_channels):
    p = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    guide = torch.rand(1, guide_channels, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, g: guided_filter(a, g, 1, 0.1), (p, guide))
    x = torch.rand(1, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: self_guided_filter(t, 1, 0.2), (x,))


@pytest.mark.parametrize(
    ("p", "guide", "r", "eps", "message"),
    [
        (torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8), 1, 0.1, "guide: expected 1 or 3 channels"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 9), 1, 0.1, "batch and size must match"),
        (torch.rand(2, 3, 8, 8), torch.rand(1, 1, 8, 8), 1, 0.1, "batch and size must match"),
        (torch.rand(3, 8, 8), torch.rand(1, 1, 8, 8), 1, 0.1, "p: expected a"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8).double(), 1, 0.1, "dtype/device"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8), 0, 0.1, "radius must be >= 1"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8), 1, 0.0, "eps: expected a number > 0"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8), 1, -1.0, "eps: expected a number > 0"),
    ],
)
def test_guided_filter_bad_input(p, guide, r, eps, message):
    with pytest.raises(ToonlabError, match=message):
        guided_filter(p, guide, r, eps)


@pytest.mark.parametrize("threads", [1, 3])
def test_streamed_path_column_slabs_and_threads_agree_with_graph_path(threads, monkeypatch):
    # One wide image: the streamed path splits it into column slabs run on threads (also under inference_mode,
    # which is thread-local); the result must not depend on the split. (Small images normally run unthreaded.)
    monkeypatch.setattr(filters, "_THREADED_PIXELS", 0)
    p = torch.rand(1, 3, 37, 160, dtype=torch.float64)
    gray = p.mean(1, keepdim=True)
    expected = [guided_filter(p.clone().requires_grad_(), g, 3, 0.05).detach() for g in (p.clone(), gray)]
    expected.append(box_filter(p.clone().requires_grad_(), 4).detach())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            got = [guided_filter(p, p, 3, 0.05), guided_filter(p, gray, 3, 0.05), box_filter(p, 4)]
        assert torch.get_num_threads() == threads  # the slab threads' single-threading is undone
    finally:
        torch.set_num_threads(before)
    for out, ref in zip(got, expected):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
