"""Box filter and guided filter (He, Sun & Tang, ECCV 2010), O(1) in the radius.

Shapes are batch-first ``(B,C,H,W)``; any floating dtype and device. Borders mirror the image: ``"reflect101"``
(OpenCV's default ``BORDER_REFLECT_101``, ``dcb|abcd|cba``) or ``"reflect"`` (``BORDER_REFLECT``, ``cba|abcd|dcb``,
the border ``cv2.ximgproc.guidedFilter`` uses internally).

Two code paths give the same numbers: when autograd needs a graph, window sums are differences of cumulative sums
(plain differentiable tensor ops); otherwise a fused path fills one padded buffer, takes cumulative sums along W and a
running sum over rows along H, writing straight into preallocated outputs (no graph, few temporaries).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from toonlab.ops._checks import OpsInputError, check_image, check_positive, check_radius

Border = Literal["reflect101", "reflect"]

# A "part" is one block of channels to box-filter: a tensor, or the product of two broadcastable tensors.
Part = tuple[torch.Tensor, torch.Tensor | None]


def _source_index(n: int, r: int, border: Border) -> list[int]:
    """Source position of each of the n + 2r padded positions (mirror padding of width r)."""
    if border == "reflect101":
        left, right = list(range(r, 0, -1)), list(range(n - 2, n - 2 - r, -1))
    elif border == "reflect":
        left, right = list(range(r - 1, -1, -1)), list(range(n - 1, n - 1 - r, -1))
    else:
        raise OpsInputError(f"border: expected 'reflect101' or 'reflect', got {border!r}")
    return left + list(range(n)) + right


def _window_sum(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Sums of k consecutive entries along ``dim`` (length n -> n - k + 1), by differences of cumulative sums."""
    c = x.cumsum(dim)
    n = x.shape[dim]
    first = c.narrow(dim, k - 1, 1)
    return torch.cat([first, c.narrow(dim, k, n - k) - c.narrow(dim, 0, n - k)], dim)


def _box_mean_autograd(x: torch.Tensor, r: int, border: Border) -> torch.Tensor:
    """Differentiable box mean: mirror-pad with index_select, then cumulative-sum window sums along H and W."""
    h, w = x.shape[-2:]
    idx_h = torch.tensor(_source_index(h, r, border), device=x.device)
    idx_w = torch.tensor(_source_index(w, r, border), device=x.device)
    padded = x.index_select(-2, idx_h).index_select(-1, idx_w)
    k = 2 * r + 1
    return _window_sum(_window_sum(padded, k, -2), k, -1) / (k * k)


def _part_channels(part: Part) -> int:
    a, b = part
    return a.shape[1] if b is None else max(a.shape[1], b.shape[1])


def _box_mean_fused(parts: Sequence[Part], r: int, border: Border) -> torch.Tensor:
    """Box means of several channel blocks at once, without autograd (see module docstring).

    The products ``a * b`` are written straight into the padded buffer, so they never exist as temporaries.
    Returns (B, sum of block channels, H, W).
    """
    a0 = parts[0][0]
    batch, (h, w) = a0.shape[0], a0.shape[-2:]
    n = sum(_part_channels(p) for p in parts)
    k = 2 * r + 1
    # Column 0 stays zero so that window sums along W are plain differences of the cumulative sum.
    buf = a0.new_empty(batch, n, h, w + 2 * r + 1)
    buf[..., 0] = 0
    start = 0
    for a, b in parts:
        c = _part_channels((a, b))
        dst = buf[:, start : start + c, :, r + 1 : r + 1 + w]
        if b is None:
            dst.copy_(a)
        else:
            torch.mul(a, b, out=dst)
        start += c
    src = _source_index(w, r, border)
    # Mirror the columns inside the buffer (source column s lives at buffer column r + 1 + s).
    buf[..., 1 : r + 1] = buf[..., [r + 1 + s for s in src[:r]]]
    buf[..., r + 1 + w :] = buf[..., [r + 1 + s for s in src[r + w :]]]
    buf.cumsum_(-1)
    rows = torch.sub(buf[..., k:], buf[..., :w])  # (B,N,H,W): window sums along W
    del buf
    # Running window sum along H: add the row entering the window, subtract the one leaving it.
    src_h = _source_index(h, r, border)
    out = torch.empty_like(rows)
    torch.sum(rows[:, :, src_h[:k]], dim=2, out=out[:, :, 0])
    for i in range(1, h):
        torch.add(out[:, :, i - 1], rows[:, :, src_h[i + 2 * r]], out=out[:, :, i])
        out[:, :, i].sub_(rows[:, :, src_h[i - 1]])
    return out.mul_(1.0 / (k * k))


def _box_means(parts: Sequence[Part], r: int, border: Border) -> torch.Tensor:
    """Box means of channel blocks, concatenated along C; differentiable when autograd is recording."""
    needs_graph = torch.is_grad_enabled() and any(t is not None and t.requires_grad for p in parts for t in p)
    low_precision = parts[0][0].dtype in (torch.float16, torch.bfloat16)
    if needs_graph or low_precision:
        blocks = [a if b is None else a * b for a, b in parts]
        x = torch.cat(blocks, 1) if len(blocks) > 1 else blocks[0]
        if low_precision:  # cumulative sums need at least float32
            return _box_mean_autograd(x.float(), r, border).to(x.dtype)
        return _box_mean_autograd(x, r, border)
    return _box_mean_fused(parts, r, border)


def box_filter(x: torch.Tensor, r: int, border: Border = "reflect101") -> torch.Tensor:
    """Mean over the (2r+1)×(2r+1) window of each pixel. x (B,C,H,W) -> (B,C,H,W); O(1) in r.

    Equals ``cv2.boxFilter(x, -1, (2r+1, 2r+1), normalize=True, borderType=cv2.BORDER_REFLECT_101)`` per channel
    (``border="reflect"``: ``BORDER_REFLECT``).
    """
    check_image(x, "x")
    check_radius(r, *x.shape[-2:])
    _source_index(1, 0, border)  # validates the border name
    return _box_means([(x, None)], r, border)


def _check_guided(p: torch.Tensor, guide: torch.Tensor, r: int, eps: float) -> None:
    check_image(p, "p")
    check_image(guide, "guide", channels=(1, 3))
    if guide.shape[0] != p.shape[0] or guide.shape[-2:] != p.shape[-2:]:
        raise OpsInputError(
            f"guide: batch and size must match p: guide {tuple(guide.shape)} vs p {tuple(p.shape)}"
        )
    if guide.dtype != p.dtype or guide.device != p.device:
        raise OpsInputError(f"guide: dtype/device {guide.dtype}/{guide.device} differ from p's {p.dtype}/{p.device}")
    check_radius(r, *p.shape[-2:])
    check_positive(eps, "eps")


def _guided_gray(p: torch.Tensor, guide: torch.Tensor, r: int, eps: float, border: Border) -> torch.Tensor:
    """He et al. 2010, Algorithm 1 with a one-channel guide I: q = mean(a)·I + mean(b)."""
    c = p.shape[1]
    self_guided = p is guide
    parts: list[Part] = [(guide, None), (guide, guide)]
    if not self_guided:
        parts += [(p, None), (p, guide)]
    m = _box_means(parts, r, border)
    mean_i, corr_ii = m[:, 0:1], m[:, 1:2]
    var_i = corr_ii - mean_i * mean_i
    if self_guided:
        mean_p, cov_ip = mean_i, var_i
    else:
        mean_p, corr_ip = m[:, 2 : 2 + c], m[:, 2 + c :]
        cov_ip = corr_ip - mean_i * mean_p
    a = cov_ip / (var_i + eps)  # eq. (5)
    b = mean_p - a * mean_i  # eq. (6)
    mean_ab = _box_means([(a, None), (b, None)], r, border)
    return torch.addcmul(mean_ab[:, c:], mean_ab[:, :c], guide)  # eq. (8)


# Upper-triangle entries (k, l) of the 3×3 guide covariance, in the order they are box-filtered.
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def _guided_color(p: torch.Tensor, guide: torch.Tensor, r: int, eps: float, border: Border) -> torch.Tensor:
    """He et al. 2010, eq. (14)–(16) with a colour guide: a_j = (Σ + eps·U)⁻¹ cov(I, p_j), 3×3 inverse in closed form."""
    c = p.shape[1]
    self_guided = p is guide
    g = [guide[:, k : k + 1] for k in range(3)]
    parts: list[Part] = [(guide, None)] + [(g[k], g[l]) for k, l in _PAIRS]
    if not self_guided:
        parts += [(p, None)] + [(p, g[k]) for k in range(3)]
    m = _box_means(parts, r, border)
    mean_i = [m[:, k : k + 1] for k in range(3)]
    sigma = {}
    for n, (k, l) in enumerate(_PAIRS):
        sigma[k, l] = m[:, 3 + n : 4 + n] - mean_i[k] * mean_i[l]
    s00, s01, s02 = sigma[0, 0] + eps, sigma[0, 1], sigma[0, 2]
    s11, s12, s22 = sigma[1, 1] + eps, sigma[1, 2], sigma[2, 2] + eps
    # Adjugate of the symmetric matrix Σ + eps·U; inverse = adj / det.
    c00 = s11 * s22 - s12 * s12
    c01 = s02 * s12 - s01 * s22
    c02 = s01 * s12 - s02 * s11
    c11 = s00 * s22 - s02 * s02
    c12 = s01 * s02 - s00 * s12
    c22 = s00 * s11 - s01 * s01
    inv_det = 1.0 / (s00 * c00 + s01 * c01 + s02 * c02)
    adj = ((c00, c01, c02), (c01, c11, c12), (c02, c12, c22))
    if self_guided:
        # p = I: cov(I, p_j) = column j of Σ = (Σ + eps·U) e_j − eps e_j, so a_jk = δ_jk − eps · inv_kj.
        mean_p = mean_i
        a = [[(1.0 if j == k else 0.0) - eps * adj[k][j] * inv_det for k in range(3)] for j in range(3)]
    else:
        mean_p = [m[:, 9 + j : 10 + j] for j in range(c)]
        corr = [m[:, 9 + c * (1 + k) : 9 + c * (2 + k)] for k in range(3)]  # (B,C,H,W) each: mean(I_k p)
        cov = [corr[k] - mean_i[k] * m[:, 9 : 9 + c] for k in range(3)]
        a_all = [(adj[k][0] * cov[0] + adj[k][1] * cov[1] + adj[k][2] * cov[2]) * inv_det for k in range(3)]
        a = [[a_all[k][:, j : j + 1] for k in range(3)] for j in range(c)]
    b = [mean_p[j] - a[j][0] * mean_i[0] - a[j][1] * mean_i[1] - a[j][2] * mean_i[2] for j in range(c)]
    parts_ab: list[Part] = [(a[j][k], None) for j in range(c) for k in range(3)] + [(b[j], None) for j in range(c)]
    mean_ab = _box_means(parts_ab, r, border)
    out = []
    for j in range(c):
        q = mean_ab[:, 3 * c + j : 3 * c + j + 1]
        for k in range(3):
            q = torch.addcmul(q, mean_ab[:, 3 * j + k : 3 * j + k + 1], g[k])
        out.append(q)
    return torch.cat(out, 1)


def guided_filter(
    p: torch.Tensor, guide: torch.Tensor, r: int, eps: float, border: Border = "reflect101"
) -> torch.Tensor:
    """Guided filter (He et al. 2010): edge-preserving smoothing of p steered by guide.

    p (B,C,H,W) any C, each channel filtered; guide (B,1,H,W) gray or (B,3,H,W) colour (3×3 covariance form);
    r >= 1 window radius, eps > 0 regularisation (in squared units of the guide). Returns (B,C,H,W).
    ``border="reflect"`` reproduces ``cv2.ximgproc.guidedFilter(guide, p, r, eps)`` exactly.
    """
    _check_guided(p, guide, r, eps)
    _source_index(1, 0, border)
    if guide.shape[1] == 1:
        return _guided_gray(p, guide, r, float(eps), border)
    return _guided_color(p, guide, r, float(eps), border)


def self_guided_filter(x: torch.Tensor, r: int = 5, eps: float = 0.2, border: Border = "reflect101") -> torch.Tensor:
    """Each channel of x guided by itself (CTSS sampler step 1: r = 5, eps = 0.2 on [-1,1] images). (B,C,H,W)."""
    check_image(x, "x")
    b, c, h, w = x.shape
    flat = x.reshape(b * c, 1, h, w)
    return guided_filter(flat, flat, r, eps, border).reshape(b, c, h, w)
