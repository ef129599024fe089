"""Box filter and guided filter (He, Sun & Tang, ECCV 2010), O(1) in the radius.

Shapes are batch-first ``(B,C,H,W)``; any floating dtype and device. Borders mirror the image: ``"reflect101"``
(OpenCV's default ``BORDER_REFLECT_101``, ``dcb|abcd|cba``) or ``"reflect"`` (``BORDER_REFLECT``, ``cba|abcd|dcb``,
the border ``cv2.ximgproc.guidedFilter`` uses internally).

Two code paths give the same numbers:
- when autograd records a graph (or off the CPU), window sums are differences of cumulative sums, in plain
  differentiable tensor ops;
- otherwise (CPU inference) a streamed path: horizontal strips of a few rows are filled (products computed straight
  into the strip buffer), cumulatively summed along W and differenced while they sit in cache, then a running sum
  over rows gives the window sums along H. The guided filter's per-pixel coefficients are computed strip by strip
  too, so no full-size temporaries are made besides the box means themselves.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch

from toonlab.ops._checks import OpsInputError, check_image, check_positive, check_radius

Border = Literal["reflect101", "reflect"]

# A "part" is one block of channels to box-filter: a tensor, or the product of two broadcastable tensors.
Part = tuple[torch.Tensor, torch.Tensor | None]
# Writes rows [i0, i1) of the channels to box-filter into dst (B, n, i1 - i0, W).
Fill = Callable[[torch.Tensor, int, int], None]

_STRIP_BYTES = 1 << 20  # a strip buffer of ~1 MiB stays in the L2 cache


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


def _box_mean_graph(x: torch.Tensor, r: int, border: Border) -> torch.Tensor:
    """Differentiable box mean: mirror-pad with index_select, then cumulative-sum window sums along H and W."""
    h, w = x.shape[-2:]
    idx_h = torch.tensor(_source_index(h, r, border), device=x.device)
    idx_w = torch.tensor(_source_index(w, r, border), device=x.device)
    padded = x.index_select(-2, idx_h).index_select(-1, idx_w)
    k = 2 * r + 1
    return _window_sum(_window_sum(padded, k, -2), k, -1) / (k * k)


def _box_mean_streamed(fill: Fill, n: int, like: torch.Tensor, r: int, border: Border) -> torch.Tensor:
    """Box means (B, n, H, W) of the n channels that ``fill`` writes strip by strip (see module docstring)."""
    batch, h, w = like.shape[0], like.shape[-2], like.shape[-1]
    k = 2 * r + 1
    src_w = _source_index(w, r, border)
    # Buffer column r + 1 + s holds source column s; column 0 stays zero so window sums are plain differences.
    left = [r + 1 + s for s in src_w[:r]]
    right = [r + 1 + s for s in src_w[r + w :]]
    strip = max(4, min(64, _STRIP_BYTES // (like.element_size() * n * (w + k))))
    buf = like.new_empty(batch, n, strip, w + k)
    buf[..., 0] = 0
    rows = like.new_empty(batch, n, h, w)  # window means along W
    for i0 in range(0, h, strip):
        i1 = min(h, i0 + strip)
        sb = buf[:, :, : i1 - i0]
        fill(sb[..., r + 1 : r + 1 + w], i0, i1)
        sb[..., 1 : r + 1] = sb[..., left]
        sb[..., r + 1 + w :] = sb[..., right]
        sb.cumsum_(-1)
        dst = rows[:, :, i0:i1]
        torch.sub(sb[..., k:], sb[..., :w], out=dst)
        dst.mul_(1.0 / (k * k))
    del buf
    # Running window sum along H: add the row entering the window, subtract the one leaving it.
    src_h = _source_index(h, r, border)
    out = torch.empty_like(rows)
    torch.sum(rows[:, :, src_h[:k]], dim=2, out=out[:, :, 0])
    for i in range(1, h):
        torch.add(out[:, :, i - 1], rows[:, :, src_h[i + 2 * r]], out=out[:, :, i])
        out[:, :, i].sub_(rows[:, :, src_h[i - 1]])
    return out


def _part_channels(part: Part) -> int:
    a, b = part
    return a.shape[1] if b is None else max(a.shape[1], b.shape[1])


def _fill_parts(parts: Sequence[Part]) -> Fill:
    def fill(dst: torch.Tensor, i0: int, i1: int) -> None:
        start = 0
        for a, b in parts:
            c = _part_channels((a, b))
            block = dst[:, start : start + c]
            if b is None:
                block.copy_(a[..., i0:i1, :])
            else:
                torch.mul(a[..., i0:i1, :], b[..., i0:i1, :], out=block)
            start += c

    return fill


def _use_graph_path(*tensors: torch.Tensor) -> bool:
    """The cumulative-sum path when autograd records, or off the CPU (where one kernel beats a row loop)."""
    t = tensors[0]
    return (torch.is_grad_enabled() and any(x.requires_grad for x in tensors)) or t.device.type != "cpu"


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Half precision is too coarse for running sums: compute in float32 and cast back."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def box_filter(x: torch.Tensor, r: int, border: Border = "reflect101") -> torch.Tensor:
    """Mean over the (2r+1)×(2r+1) window of each pixel. x (B,C,H,W) -> (B,C,H,W); O(1) in r.

    Equals ``cv2.boxFilter(x, -1, (2r+1, 2r+1), normalize=True, borderType=cv2.BORDER_REFLECT_101)`` per channel
    (``border="reflect"``: ``BORDER_REFLECT``).
    """
    check_image(x, "x")
    check_radius(r, *x.shape[-2:])
    _source_index(1, 0, border)  # validates the border name
    work = x.to(_compute_dtype(x))
    if _use_graph_path(x):
        return _box_mean_graph(work, r, border).to(x.dtype)
    return _box_mean_streamed(_fill_parts([(work, None)]), x.shape[1], work, r, border).to(x.dtype)


# ---- guided filter -------------------------------------------------------------------------------------------
# Moments box-filtered in the first pass, as channel blocks: mean(I), mean(I_k I_l), then (unless p is the guide)
# mean(p), mean(I_k p). ``_coefficients`` turns their box means into the planes a (per guide channel) and b.

# Upper-triangle entries (k, l) of the 3×3 colour-guide covariance, in the order they are box-filtered.
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def _moment_parts(p: torch.Tensor, guide: torch.Tensor, self_guided: bool) -> list[Part]:
    g = [guide[:, k : k + 1] for k in range(guide.shape[1])]
    if guide.shape[1] == 1:
        parts: list[Part] = [(guide, None), (guide, guide)]
    else:
        parts = [(guide, None)] + [(g[k], g[l]) for k, l in _PAIRS]
    if not self_guided:
        parts += [(p, None)] + [(p, gk) for gk in g]
    return parts


def _coefficients_gray(m: torch.Tensor, c: int, self_guided: bool, eps: float) -> list[torch.Tensor]:
    """He et al. 2010 eq. (5)–(6): a = cov(I,p) / (var(I) + eps), b = mean(p) − a·mean(I). Returns [a, b] (B,C,·,·)."""
    mean_i = m[:, 0:1]
    var_i = m[:, 1:2] - mean_i * mean_i
    if self_guided:
        a = var_i / (var_i + eps)
        return [a, mean_i - a * mean_i]
    mean_p = m[:, 2 : 2 + c]
    cov_ip = m[:, 2 + c : 2 + 2 * c] - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    return [a, mean_p - a * mean_i]


def _coefficients_color(m: torch.Tensor, c: int, self_guided: bool, eps: float) -> list[torch.Tensor]:
    """He et al. 2010 eq. (14)–(15): a_j = (Σ + eps·U)⁻¹ cov(I, p_j), b_j = mean(p_j) − a_jᵀ mean(I).

    The 3×3 inverse is the adjugate over the determinant, per pixel. Returns [a (B,3C,·,·) ordered (j, k), b (B,C,·,·)].
    """
    mean_i = [m[:, k : k + 1] for k in range(3)]
    sigma = {}
    for n, (k, l) in enumerate(_PAIRS):
        sigma[k, l] = m[:, 3 + n : 4 + n] - mean_i[k] * mean_i[l]
    s00, s01, s02 = sigma[0, 0] + eps, sigma[0, 1], sigma[0, 2]
    s11, s12, s22 = sigma[1, 1] + eps, sigma[1, 2], sigma[2, 2] + eps
    c00 = s11 * s22 - s12 * s12
    c01 = s02 * s12 - s01 * s22
    c02 = s01 * s12 - s02 * s11
    c11 = s00 * s22 - s02 * s02
    c12 = s01 * s02 - s00 * s12
    c22 = s00 * s11 - s01 * s01
    inv_det = 1.0 / (s00 * c00 + s01 * c01 + s02 * c02)
    adj = ((c00, c01, c02), (c01, c11, c12), (c02, c12, c22))
    if self_guided:
        # p = I: cov(I, I_j) = (Σ + eps·U) e_j − eps·e_j, so a_jk = δ_jk − eps·inv_jk (the inverse is symmetric).
        scale = -eps * inv_det
        a_jk = [[adj[j][k] * scale + (1.0 if j == k else 0.0) for k in range(3)] for j in range(3)]
        b = [mean_i[j] - a_jk[j][0] * mean_i[0] - a_jk[j][1] * mean_i[1] - a_jk[j][2] * mean_i[2] for j in range(3)]
        return [torch.cat([a for row in a_jk for a in row], 1), torch.cat(b, 1)]
    mean_p = m[:, 9 : 9 + c]
    cov = [m[:, 9 + c * (1 + k) : 9 + c * (2 + k)] - mean_i[k] * mean_p for k in range(3)]  # (B,C,·,·) each
    a = [(adj[k][0] * cov[0] + adj[k][1] * cov[1] + adj[k][2] * cov[2]) * inv_det for k in range(3)]
    b = mean_p - a[0] * mean_i[0] - a[1] * mean_i[1] - a[2] * mean_i[2]
    return [torch.stack(a, 2).flatten(1, 2), b]


def _combine(mean_ab: torch.Tensor, guide: torch.Tensor, c: int) -> torch.Tensor:
    """He et al. 2010 eq. (8)/(16): q = mean(a)ᵀ I + mean(b)."""
    if guide.shape[1] == 1:
        return torch.addcmul(mean_ab[:, c:], mean_ab[:, :c], guide)
    a = mean_ab[:, : 3 * c].unflatten(1, (c, 3))
    return (a * guide.unsqueeze(1)).sum(2) + mean_ab[:, 3 * c :]


def _guided(p: torch.Tensor, guide: torch.Tensor, r: int, eps: float, border: Border, self_guided: bool) -> torch.Tensor:
    c = p.shape[1]
    coefficients = _coefficients_gray if guide.shape[1] == 1 else _coefficients_color
    parts = _moment_parts(p, guide, self_guided)
    if _use_graph_path(p, guide):
        moments = torch.cat([a if b is None else a * b for a, b in parts], 1)
        m = _box_mean_graph(moments, r, border)
        mean_ab = _box_mean_graph(torch.cat(coefficients(m, c, self_guided, eps), 1), r, border)
        return _combine(mean_ab, guide, c)

    m = _box_mean_streamed(_fill_parts(parts), sum(map(_part_channels, parts)), p, r, border)

    def fill_ab(dst: torch.Tensor, i0: int, i1: int) -> None:
        torch.cat(coefficients(m[..., i0:i1, :], c, self_guided, eps), 1, out=dst)

    n_ab = c * guide.shape[1] + c
    mean_ab = _box_mean_streamed(fill_ab, n_ab, p, r, border)
    del m
    out = torch.empty_like(p)
    step = 64
    for i0 in range(0, p.shape[-2], step):
        rows = slice(i0, i0 + step)
        out[..., rows, :] = _combine(mean_ab[..., rows, :], guide[..., rows, :], c)
    return out


def _check_guided(p: torch.Tensor, guide: torch.Tensor, r: int, eps: float, border: Border) -> None:
    check_image(p, "p")
    check_image(guide, "guide", channels=(1, 3))
    if guide.shape[0] != p.shape[0] or guide.shape[-2:] != p.shape[-2:]:
        raise OpsInputError(f"guide: batch and size must match p: guide {tuple(guide.shape)} vs p {tuple(p.shape)}")
    if guide.dtype != p.dtype or guide.device != p.device:
        raise OpsInputError(f"guide: dtype/device {guide.dtype}/{guide.device} differ from p's {p.dtype}/{p.device}")
    check_radius(r, *p.shape[-2:])
    check_positive(eps, "eps")
    _source_index(1, 0, border)


def guided_filter(
    p: torch.Tensor, guide: torch.Tensor, r: int, eps: float, border: Border = "reflect101"
) -> torch.Tensor:
    """Guided filter (He et al. 2010): edge-preserving smoothing of p steered by guide.

    p (B,C,H,W) any C, each channel filtered; guide (B,1,H,W) gray or (B,3,H,W) colour (3×3 covariance form);
    r >= 1 window radius, eps > 0 regularisation (in squared units of the guide). Returns (B,C,H,W), p's dtype.
    ``border="reflect"`` reproduces ``cv2.ximgproc.guidedFilter(guide, p, r, eps)``.
    """
    _check_guided(p, guide, r, eps, border)
    dtype = _compute_dtype(p)
    self_guided = p is guide
    p_work = p.to(dtype)
    guide_work = p_work if self_guided else guide.to(dtype)
    return _guided(p_work, guide_work, r, float(eps), border, self_guided).to(p.dtype)


def self_guided_filter(x: torch.Tensor, r: int = 5, eps: float = 0.2, border: Border = "reflect101") -> torch.Tensor:
    """Each channel of x guided by itself (CTSS sampler step 1: r = 5, eps = 0.2 on [-1,1] images). (B,C,H,W)."""
    check_image(x, "x")
    b, c, h, w = x.shape
    flat = x.reshape(b * c, 1, h, w)
    return guided_filter(flat, flat, r, eps, border).reshape(b, c, h, w)
