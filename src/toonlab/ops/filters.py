"""Box filter and guided filter (He, Sun & Tang, ECCV 2010), O(1) in the radius.

Shapes are batch-first ``(B,C,H,W)``; any floating dtype and device. Borders mirror the image: ``"reflect101"``
(OpenCV's default ``BORDER_REFLECT_101``, ``dcb|abcd|cba``) or ``"reflect"`` (``BORDER_REFLECT``, ``cba|abcd|dcb``,
the border ``cv2.ximgproc.guidedFilter`` uses internally).

Two code paths give the same numbers:
- when autograd records a graph (or off the CPU), window sums are differences of cumulative sums, in plain
  differentiable tensor ops;
- otherwise (CPU inference) a streamed path (``_StreamedBox``): strips of a few rows are filled (products computed
  straight into the strip buffer), cumulatively summed along W and differenced while they sit in cache, and a
  running sum over rows gives the window sums along H. The guided filter chains two such boxes row-strip by
  row-strip, so besides the input and output only buffers of a few dozen rows exist. Work is split over images
  and column slabs on ``torch.get_num_threads()`` threads (torch ops release the GIL).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Literal, Sequence

import torch

from toonlab.ops._checks import OpsInputError, check_image, check_positive, check_radius

Border = Literal["reflect101", "reflect"]

# A "part" is one block of channels to box-filter: a tensor, or the product of two broadcastable tensors.
Part = tuple[torch.Tensor, torch.Tensor | None]

# Rows per push in the streamed path: enough to amortise Python's per-op cost, few enough to stay in cache
# (16 rows × 12 channels × 1 k columns × 4 B ≈ 0.8 MB per buffer). Measured best of 4 / 8 / 16 / 32 here.
_PUSH_ROWS = 16
# Below this many pixels (all images together) starting threads costs more than it saves.
_THREADED_PIXELS = 1 << 18


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


class _StreamedBox:
    """Box means of rows pushed in order, emitted in order as soon as their window is complete (CPU inference).

    Each pushed block of source rows is mirror-padded along W, cumulatively summed along W and differenced in a
    small reused buffer; the per-row W-window sums go into a ring of block + 2r + 2 rows. Output rows come from a
    running sum along H (add the row entering the window, subtract the one leaving it), then are divided by the
    window area. Only buffers of a few dozen rows exist, so everything stays in cache and no full-size temporary is
    ever touched.
    """

    def __init__(
        self,
        n: int,
        like: torch.Tensor,
        r: int,
        border: Border,
        block_rows: int,
        mean: bool = True,
        keep: slice | None = None,
        target: torch.Tensor | None = None,
    ):
        """n channels of rows shaped like ``like`` (B,·,H,W). ``mean=False``: emit window sums (the consumer folds
        in 1/(2r+1)², saving a pass). Only columns ``keep`` are emitted; with ``target`` (B,n,H,len(keep)) they are
        written straight into it instead of an internal buffer."""
        self.mean = mean
        self.batch, self.h, self.w = like.shape[0], like.shape[-2], like.shape[-1]
        self.n, self.r, self.k = n, r, 2 * r + 1
        self.src_h = _source_index(self.h, r, border)
        src_w = _source_index(self.w, r, border)
        # Buffer column r + 1 + s holds source column s; column 0 stays zero so window sums are plain differences.
        self.left = torch.tensor([r + 1 + s for s in src_w[:r]], device=like.device)
        self.right = torch.tensor([r + 1 + s for s in src_w[r + self.w :]], device=like.device)
        self.capacity = block_rows  # the most rows one push may bring
        self.wbuf = like.new_empty(self.batch, self.capacity, n, self.w + self.k)
        self.wbuf[..., 0] = 0
        # Rows needed at once: the pushed block, the r rows after the last emitted one and the r + 1 before it.
        self.ring_size = self.capacity + 2 * r + 2
        self.ring = like.new_empty(self.batch, self.ring_size, n, self.w)  # W-window sums of recent rows
        self.keep = keep if keep is not None else slice(0, self.w)
        # Views made once: slicing costs as much as a small op.
        self.ring_rows = [row[..., self.keep] for row in self.ring.unbind(1)]
        self.target = target
        width = len(range(self.w)[self.keep])
        self.last = like.new_empty(self.batch, n, width)  # window sum of the last emitted row
        if target is None:
            self.out = like.new_empty(self.batch, self.capacity + r, n, width)  # the last push emits rows + r
            self.out_rows = list(self.out.unbind(1))
        self.pushed = 0
        self.emitted = 0

    def _w_sums(self, rows: int) -> None:
        """Window sums along W of the first ``rows`` buffer rows into the ring."""
        r, k, w = self.r, self.k, self.w
        buf = self.wbuf[:, :rows]
        buf[..., 1 : r + 1] = buf.index_select(3, self.left)
        buf[..., r + 1 + w :] = buf.index_select(3, self.right)
        buf.cumsum_(-1)
        slot = self.pushed % self.ring_size
        first = min(rows, self.ring_size - slot)  # the rows may wrap around the ring
        torch.sub(buf[:, :first, :, k:], buf[:, :first, :, :w], out=self.ring[:, slot : slot + first])
        if first < rows:
            torch.sub(buf[:, first:, :, k:], buf[:, first:, :, :w], out=self.ring[:, : rows - first])

    def push(self, rows: int, fill: Callable[[torch.Tensor], None]) -> tuple[int, int, torch.Tensor] | None:
        """Take the next ``rows`` source rows (``fill`` writes them into a (B,n,rows,W) view); return the newly
        complete output rows as (i0, i1, means (B,n,i1-i0,W) view of an internal buffer, valid until the next push)
        (window sums instead of means if the box was made with ``mean=False``)."""
        r, k, w = self.r, self.k, self.w
        fill(self.wbuf[:, :rows, :, r + 1 : r + 1 + w].transpose(1, 2))
        self._w_sums(rows)
        self.pushed += rows
        # Output row i needs source rows up to i + r (mirrored rows at the bottom are already in the ring).
        end = self.h if self.pushed == self.h else max(self.emitted, self.pushed - r)
        if end == self.emitted:
            return None
        i0 = self.emitted
        ring, size, src = self.ring_rows, self.ring_size, self.src_h
        if self.target is None:
            out = self.out[:, : end - i0].transpose(1, 2)
            out_rows = self.out_rows
        else:
            out = self.target[:, :, i0:end]
            out_rows = out.unbind(2)
        if i0 == 0:
            torch.sum(self.ring[:, [src[j] % size for j in range(k)]][..., self.keep], dim=1, out=out_rows[0])
            prev, start = out_rows[0], 1
        else:
            prev, start = self.last, 0
        for j in range(start, end - i0):
            i = i0 + j
            row = out_rows[j]
            torch.add(prev, ring[src[i + 2 * r] % size], out=row)
            row.sub_(ring[src[i - 1] % size])
            prev = row
        self.last.copy_(prev)  # before the rows are scaled to means
        self.emitted = end
        if self.mean:
            out.mul_(1.0 / (k * k))
        return i0, end, out


def _run_slabs(
    batch: int, height: int, width: int, halo: int, task: Callable[[int, int, int, int, int], None]
) -> None:
    """Run ``task(b, lo, hi, c0, c1)`` over images b and column slabs, on torch.get_num_threads() threads.

    A slab reads input columns [lo, hi) = [c0 − halo, c1 + halo) ∩ [0, W) and writes output columns [c0, c1): the
    mirror padding at a slab's inner edge only corrupts the ``halo`` columns that are thrown away.
    """
    workers = torch.get_num_threads() if batch * width * height >= _THREADED_PIXELS else 1
    per_image = max(1, min(-(-workers // batch), width // (4 * halo + 1)))
    bounds = [width * j // per_image for j in range(per_image + 1)]
    jobs = [
        (b, max(0, c0 - halo), min(width, c1 + halo), c0, c1)
        for b in range(batch)
        for c0, c1 in zip(bounds[:-1], bounds[1:])
    ]
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            task(*job)
        return
    inference = torch.is_inference_mode_enabled()  # grad and inference modes are thread-local: carry them over

    def run(*job: int) -> None:
        with torch.inference_mode(inference), torch.no_grad():
            task(*job)

    # Each slab thread runs its ops single-threaded: nested intra-op thread teams would oversubscribe the cores.
    # (PyTorch's intra-op thread count is process-wide; it is restored on exit.)
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            for future in [pool.submit(run, *job) for job in jobs]:
                future.result()
    finally:
        torch.set_num_threads(workers)


def _part_channels(part: Part) -> int:
    a, b = part
    return a.shape[1] if b is None else max(a.shape[1], b.shape[1])


def _fill_parts(parts: Sequence[Part], i0: int, i1: int) -> Callable[[torch.Tensor], None]:
    """Writes rows [i0, i1) of the channel blocks (products computed straight into the buffer) into dst."""

    def fill(dst: torch.Tensor) -> None:
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
    h, c = x.shape[-2], x.shape[1]
    out = torch.empty_like(work)

    def task(b: int, lo: int, hi: int, c0: int, c1: int) -> None:
        src = work[b : b + 1, :, :, lo:hi]
        box = _StreamedBox(
            c, src, r, border, _PUSH_ROWS, keep=slice(c0 - lo, c1 - lo), target=out[b : b + 1, :, :, c0:c1]
        )
        for s0 in range(0, h, _PUSH_ROWS):
            s1 = min(h, s0 + _PUSH_ROWS)
            box.push(s1 - s0, lambda rows: rows.copy_(src[..., s0:s1, :]))

    _run_slabs(x.shape[0], h, x.shape[-1], r, task)
    return out.to(x.dtype)


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


def _coefficients_gray(
    m: torch.Tensor, c: int, self_guided: bool, eps: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """He et al. 2010 eq. (5)–(6): a = cov(I,p) / (var(I) + eps), b = mean(p) − a·mean(I).

    Returns [a, b] concatenated, (B,2C,·,·); written into ``out`` when given (streamed path, no graph).
    """
    mean_i = m[:, 0:1]
    var_i = m[:, 1:2] - mean_i * mean_i
    mean_p = mean_i if self_guided else m[:, 2 : 2 + c]
    cov_ip = var_i if self_guided else m[:, 2 + c : 2 + 2 * c] - mean_i * mean_p
    if out is None:
        a = cov_ip / (var_i + eps)
        return torch.cat([a, mean_p - a * mean_i], 1)
    torch.div(cov_ip, var_i + eps, out=out[:, :c])
    torch.addcmul(mean_p, out[:, :c], mean_i, value=-1.0, out=out[:, c:])
    return out


def _coefficients_color(
    m: torch.Tensor, c: int, self_guided: bool, eps: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """He et al. 2010 eq. (14)–(15): a_j = (Σ + eps·U)⁻¹ cov(I, p_j), b_j = mean(p_j) − a_jᵀ mean(I).

    The 3×3 inverse is the adjugate over the determinant, per pixel. Returns [a (B,3C,·,·) ordered (j, k), b (B,C,·,·)]
    concatenated, (B,4C,·,·), written into ``out`` when given.
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
        return torch.cat([a for row in a_jk for a in row] + b, 1, out=out)
    mean_p = m[:, 9 : 9 + c]
    cov = [m[:, 9 + c * (1 + k) : 9 + c * (2 + k)] - mean_i[k] * mean_p for k in range(3)]  # (B,C,·,·) each
    a = [(adj[k][0] * cov[0] + adj[k][1] * cov[1] + adj[k][2] * cov[2]) * inv_det for k in range(3)]
    b = mean_p - a[0] * mean_i[0] - a[1] * mean_i[1] - a[2] * mean_i[2]
    return torch.cat([torch.stack(a, 2).flatten(1, 2), b], 1, out=out)


def _combine(mean_ab: torch.Tensor, guide: torch.Tensor, c: int) -> torch.Tensor:
    """He et al. 2010 eq. (8)/(16): q = mean(a)ᵀ I + mean(b)."""
    if guide.shape[1] == 1:
        return torch.addcmul(mean_ab[:, c:], mean_ab[:, :c], guide)
    a = mean_ab[:, : 3 * c].unflatten(1, (c, 3))
    return (a * guide.unsqueeze(1)).sum(2) + mean_ab[:, 3 * c :]


def _combine_into(out: torch.Tensor, sum_ab: torch.Tensor, guide: torch.Tensor, c: int, area: int) -> None:
    """:func:`_combine` from window sums of a and b (area = window size), written straight into ``out``."""
    na = c * guide.shape[1]
    torch.mul(sum_ab[:, na:], 1.0 / area, out=out)
    if guide.shape[1] == 1:
        out.addcmul_(sum_ab[:, :c], guide, value=1.0 / area)
        return
    for k in range(3):
        out.addcmul_(sum_ab[:, k:na:3], guide[:, k : k + 1], value=1.0 / area)


def _guided(
    p: torch.Tensor, guide: torch.Tensor, r: int, eps: float, border: Border, self_guided: bool
) -> torch.Tensor:
    c = p.shape[1]
    coefficients = _coefficients_gray if guide.shape[1] == 1 else _coefficients_color
    parts = _moment_parts(p, guide, self_guided)
    if _use_graph_path(p, guide):
        moments = torch.cat([a if b is None else a * b for a, b in parts], 1)
        m = _box_mean_graph(moments, r, border)
        mean_ab = _box_mean_graph(coefficients(m, c, self_guided, eps), r, border)
        return _combine(mean_ab, guide, c)

    out = torch.empty_like(p)
    _run_slabs(
        p.shape[0],
        p.shape[-2],
        p.shape[-1],
        2 * r,  # two box passes: each spreads the inner-edge mirror r columns further
        lambda b, lo, hi, c0, c1: _guided_streamed(
            p[b : b + 1, :, :, lo:hi],
            guide[b : b + 1, :, :, lo:hi],
            r,
            eps,
            border,
            self_guided,
            out[b : b + 1, :, :, c0:c1],
            c0 - lo,
        ),
    )
    return out


def _guided_streamed(
    p: torch.Tensor,
    guide: torch.Tensor,
    r: int,
    eps: float,
    border: Border,
    self_guided: bool,
    out: torch.Tensor,
    offset: int,
) -> None:
    """Streamed guided filter of one slab: push strips of input rows through the first box; each block of complete
    moment means gives the same rows of (a, b), pushed through the second box, whose complete rows give the output
    rows. Writes columns [offset, offset + out width) of the result into ``out``."""
    c, h = p.shape[1], p.shape[-2]
    coefficients = _coefficients_gray if guide.shape[1] == 1 else _coefficients_color
    parts = _moment_parts(p, guide, self_guided)
    keep = slice(offset, offset + out.shape[-1])
    box1 = _StreamedBox(sum(map(_part_channels, parts)), p, r, border, _PUSH_ROWS)
    # box1 emits <= rows + r rows at once; box2 emits window sums, _combine_into divides by the area.
    box2 = _StreamedBox(c * guide.shape[1] + c, p, r, border, _PUSH_ROWS + r, mean=False, keep=keep)
    for s0 in range(0, h, _PUSH_ROWS):
        s1 = min(h, s0 + _PUSH_ROWS)
        moments = box1.push(s1 - s0, _fill_parts(parts, s0, s1))
        if moments is None:
            continue
        i0, i1, m = moments
        done = box2.push(i1 - i0, lambda dst: coefficients(m, c, self_guided, eps, out=dst))
        if done is not None:
            j0, j1, sum_ab = done
            _combine_into(out[..., j0:j1, :], sum_ab, guide[..., j0:j1, keep], c, (2 * r + 1) ** 2)


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
