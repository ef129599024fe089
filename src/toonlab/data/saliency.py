"""Saliency maps for salcbam (seed 003): MBD (the default) and RBD, the alternative the seed names.

**MBD** — minimum barrier salient object detection (Zhang, Sclaroff, Lin, Shen, Price & Měch, ICCV 2015).

The saliency of a pixel is its minimum barrier distance to the image boundary: over all 4-connected paths from
the pixel to a boundary pixel, the smallest ``max(I) − min(I)`` along the path. Background regions touch the
boundary through paths of similar colour (low barrier); objects are enclosed by colour changes (high barrier).

``mbd_distance`` is FastMBD, the paper's raster-scan approximation (its Alg. 1): every pixel keeps the highest
(U) and lowest (L) value on its current best path and relaxes against a neighbour's path extended by itself,
``β = max(U(y), I(x)) − min(L(y), I(x))``. The paper scans row-major with the two causal neighbours at once;
here each pass is split into directional sweeps (top→bottom, bottom→top, left→right, right→left) so that a
sweep step updates a whole row (or column) with numpy — our choice for speed; the result is still the barrier
of a real path (an upper bound of the exact MBD), and converges in the same few passes.

``mbd_saliency`` is the paper's full pipeline ("MB+", Sec. 3.2–3.3), each step an option: FastMBD summed over
the Lab channels, plus the image-boundary contrast map, then morphological smoothing, centre bias and
contrast enhancement.

**RBD** — saliency optimisation from robust background detection (Zhu, Liang, Wei & Sun, CVPR 2014), on SLIC
superpixels (OpenCV contrib's ``ximgproc`` SLIC) with mean Lab colours c_i and normalised centres x_i ∈ [0,1]²:
d_app(p,q) = ‖c_p − c_q‖; d_geo = shortest path of d_app over the superpixel adjacency graph; spanning area
Area(p) = Σ_i exp(−d_geo²(p,i)/2σ_clr²) and boundary length Len_bnd(p) = the same sum over boundary superpixels;
boundary connectivity BndCon = Len_bnd/√Area; background probability w_bg = 1 − exp(−BndCon²/2σ_bndCon²);
background-weighted contrast wCtr(p) = Σ_i d_app(p,i)·exp(−‖x_p − x_i‖²/2σ_spa²)·w_bg(i); then the saliency s
minimises Σ w_bg·s² + Σ w_fg·(s − 1)² + Σ_{adjacent i<j} w_ij(s_i − s_j)² with w_fg = wCtr (min-max normalised)
and w_ij = exp(−d_app²/2σ_clr²) + μ — a linear system (diag(w_bg + w_fg) + L) s = w_fg, L the graph Laplacian
of w_ij. σ_clr = 10, σ_bndCon = 1, σ_spa = 0.25, μ = 0.1 are the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from toonlab.errors import UsageError


@dataclass(frozen=True)
class MBDConfig:
    """Settings of ``mbd_saliency``; defaults follow the paper (Sec. 4: images resized to 300 px, 3 passes)."""

    max_side: int = 300          # working resolution (long side); the map is resized back to the input size
    passes: int = 3              # FastMBD raster-scan passes (paper: 3 suffice)
    boundary_contrast: bool = True   # add the image-boundary contrast map B (Sec. 3.2, "MB+")
    border_frac: float = 0.1     # width of each boundary region for B, as a fraction of the side (our choice)
    smoothing: bool = True       # morphological smoothing by reconstruction (Sec. 3.3)
    alpha: float = 50.0          # smoothing kernel width δ = α·√(mean saliency) at 300 px (paper: α = 50)
    centre_bias: bool = True     # multiply by 1 − distance to the centre / half-diagonal (Sec. 3.3)
    contrast: bool = True        # sigmoid 1/(1+exp(−b(x−θ))), θ by Otsu (Sec. 3.3)
    b: float = 10.0              # sigmoid slope (paper: b = 10)


def mbd_distance(image: np.ndarray, passes: int = 3) -> np.ndarray:
    """FastMBD barrier distance to the image boundary.

    image (H,W) or (H,W,C) — channels are independent; returns float32 of the same shape, ≥ 0, zero on
    the boundary. Each pass: four directional sweeps, each row/column vectorised.
    """
    img = np.asarray(image, np.float32)  # float32: half the memory traffic; exact for 8-bit inputs
    squeeze = img.ndim == 2
    if squeeze:
        img = img[..., None]
    if img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise UsageError(f"mbd_distance: expected (H,W) or (H,W,C), got shape {np.shape(image)}")
    dist = np.full(img.shape, np.inf, np.float32)
    dist[0], dist[-1], dist[:, 0], dist[:, -1] = 0.0, 0.0, 0.0, 0.0  # seeds: the image boundary
    hi, lo = img.copy(), img.copy()  # U and L of each pixel's current path
    img_t = np.ascontiguousarray(img.transpose(1, 0, 2))
    for _ in range(passes):
        # vertical sweeps on (H,W,C); horizontal sweeps as vertical ones on contiguous transposed copies
        _sweeps(img, dist, hi, lo)
        state = [np.ascontiguousarray(a.transpose(1, 0, 2)) for a in (dist, hi, lo)]
        _sweeps(img_t, *state)
        dist, hi, lo = (np.ascontiguousarray(a.transpose(1, 0, 2)) for a in state)
    return dist[..., 0] if squeeze else dist


def _sweeps(img: np.ndarray, dist: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> None:
    """Top→bottom then bottom→top: each row's pixels relax against the row before, in place.

    A pixel x takes its neighbour y's path extended by x when that lowers its barrier:
    β = max(U(y), I(x)) − min(L(y), I(x)) (paper Alg. 1)."""
    u, l_, beta = (np.empty_like(img[0]) for _ in range(3))
    better = np.empty(img.shape[1:], bool)
    h = img.shape[0]
    for y, src in [(y, y - 1) for y in range(1, h)] + [(y, y + 1) for y in range(h - 2, -1, -1)]:
        value = img[y]
        np.maximum(hi[src], value, out=u)
        np.minimum(lo[src], value, out=l_)
        np.subtract(u, l_, out=beta)
        np.less(beta, dist[y], out=better)
        np.copyto(dist[y], beta, where=better)
        np.copyto(hi[y], u, where=better)
        np.copyto(lo[y], l_, where=better)


def boundary_contrast(lab: np.ndarray, border_frac: float = 0.1) -> np.ndarray:
    """Image-boundary contrast map B (paper Sec. 3.2): for each of the top/bottom/left/right border regions,
    the Mahalanobis distance of every pixel's colour to the region's colour distribution, normalised by its
    max; B = Σ_k U_k − max_k U_k (the border most like the object, e.g. one it touches, is discounted).

    lab (H,W,3) float → (H,W) float64 ≥ 0."""
    h, w = lab.shape[:2]
    ry, rx = max(1, round(h * border_frac)), max(1, round(w * border_frac))
    pixels = lab.reshape(-1, 3).astype(np.float64)
    maps = []
    for region in (lab[:ry], lab[-ry:], lab[:, :rx], lab[:, -rx:]):
        r = region.reshape(-1, 3).astype(np.float64)
        cov = np.cov(r, rowvar=False) + np.eye(3) * 1e-3  # ridge: flat borders have a singular covariance
        d = pixels - r.mean(0)
        u = np.sqrt(((d @ np.linalg.inv(cov)) * d).sum(1)).reshape(h, w)
        maps.append(u / (u.max() + 1e-12))
    stack = np.stack(maps)
    return stack.sum(0) - stack.max(0)


def _reconstruct(marker: np.ndarray, mask: np.ndarray, dilate: bool) -> np.ndarray:
    """Grey-scale morphological reconstruction (by dilation under ``mask``, or by erosion above it), iterated
    with a 3×3 cross until stable."""
    k = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    cur = marker.astype(np.float32)
    mask = mask.astype(np.float32)
    for _ in range(0, mask.shape[0] * mask.shape[1], 8):
        prev = cur
        for _ in range(8):  # test for stability every 8 steps: the test costs as much as a step
            cur = np.minimum(cv2.dilate(cur, k), mask) if dilate else np.maximum(cv2.erode(cur, k), mask)
        if np.array_equal(prev, cur):
            break
    return cur


_PAPER_SIDE = 300  # the MBD paper's working long side, for which α = 50 is given


def morphological_smoothing(sal: np.ndarray, alpha: float = 50.0) -> np.ndarray:
    """Opening by reconstruction then closing by reconstruction with a square of width δ = α·√mean(sal)
    (paper Sec. 3.3), α scaled by the long side / 300 so the kernel keeps the paper's size relative to the image
    (unscaled, δ ≈ 25 px erased every object of a 32 px map); sal (H,W) in [0,1]."""
    alpha = alpha * max(sal.shape) / _PAPER_SIDE
    delta = max(1, int(round(alpha * np.sqrt(max(float(sal.mean()), 0.0)))))
    k = np.ones((delta, delta), np.uint8)
    opened = _reconstruct(cv2.erode(sal.astype(np.float32), k), sal, dilate=True)
    return _reconstruct(cv2.dilate(opened, k), opened, dilate=False)


def centre_bias(h: int, w: int) -> np.ndarray:
    """1 − (distance to the image centre) / (half-diagonal): (H,W) in [0,1] (paper Sec. 3.3)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    return 1.0 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / np.sqrt(cy ** 2 + cx ** 2 + 1e-12)


def _normalise(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def mbd_saliency(rgb: np.ndarray, cfg: MBDConfig = MBDConfig()) -> np.ndarray:
    """Saliency map of an HWC uint8 RGB image → (H,W) float32 in [0,1] (1 = salient)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise UsageError(f"mbd_saliency: expected an (H,W,3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    scale = min(1.0, cfg.max_side / max(h, w)) if cfg.max_side > 0 else 1.0
    small = cv2.resize(rgb, (max(3, round(w * scale)), max(3, round(h * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1.0 else rgb
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float64)  # 8-bit Lab: all channels on 0–255
    sal = _normalise(mbd_distance(lab, cfg.passes).sum(2))
    if cfg.boundary_contrast:
        # our choice: both maps normalised to [0,1] before the pixel-wise addition
        sal = _normalise(sal + _normalise(boundary_contrast(lab, cfg.border_frac)))
    if cfg.smoothing:
        sal = _normalise(morphological_smoothing(sal, cfg.alpha).astype(np.float64))
    if cfg.centre_bias:
        sal = _normalise(sal * centre_bias(*sal.shape))
    if cfg.contrast:
        theta, _ = cv2.threshold(np.round(sal * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        sal = _normalise(1.0 / (1.0 + np.exp(-cfg.b * (sal - theta / 255.0))))
    if sal.shape != (h, w):
        sal = cv2.resize(sal.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(sal, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class RBDConfig:
    """Settings of ``rbd_saliency`` (σs and μ: the RBD paper's; the resolution and superpixel count: ours)."""

    max_side: int = 300          # working resolution (long side), as MBD's
    n_segments: int = 250        # SLIC superpixels (our choice; region size = √(H·W / n_segments))
    ruler: float = 10.0          # SLIC compactness (OpenCV's default)
    sigma_clr: float = 10.0      # σ_clr: colour scale of the geodesic similarity and of the smoothness weights
    sigma_bndcon: float = 1.0    # σ_bndCon: boundary connectivity → background probability
    sigma_spa: float = 0.25      # σ_spa: spatial weighting of the contrast (centres in [0,1])
    mu: float = 0.1              # μ: constant in the smoothness weights w_ij


@dataclass
class Superpixels:
    """A superpixel graph: ``labels`` (H,W) int in [0,n); ``colour`` (n,3) mean Lab; ``centre`` (n,2) mean (y,x)
    normalised by (H,W); ``edges`` (m,2) adjacent pairs i<j; ``boundary`` (n,) bool, touches the image border."""

    labels: np.ndarray
    colour: np.ndarray
    centre: np.ndarray
    edges: np.ndarray
    boundary: np.ndarray


def superpixel_graph(lab: np.ndarray, labels: np.ndarray) -> Superpixels:
    """Mean colours, centres, 4-adjacency and boundary flags of a labelling (labels relabelled to 0..n−1)."""
    _, labels = np.unique(labels, return_inverse=True)
    labels = labels.reshape(lab.shape[:2])
    n = int(labels.max()) + 1
    h, w = labels.shape
    count = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    colour = np.stack([np.bincount(labels.ravel(), lab[..., c].ravel(), n) for c in range(3)], 1) / count[:, None]
    yy, xx = np.mgrid[0:h, 0:w]
    centre = np.stack([np.bincount(labels.ravel(), yy.ravel() / max(h - 1, 1), n),
                       np.bincount(labels.ravel(), xx.ravel() / max(w - 1, 1), n)], 1) / count[:, None]
    pairs = np.concatenate([np.stack([labels[1:].ravel(), labels[:-1].ravel()], 1),
                            np.stack([labels[:, 1:].ravel(), labels[:, :-1].ravel()], 1)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    edges = np.unique(np.sort(pairs, 1), axis=0)
    boundary = np.zeros(n, bool)
    boundary[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = True
    return Superpixels(labels, colour, centre, edges, boundary)


def rbd_superpixel_saliency(sp: Superpixels, cfg: RBDConfig = RBDConfig()) -> dict[str, np.ndarray]:
    """RBD on a superpixel graph → {"bndcon", "w_bg", "wctr", "saliency"}, each (n,) float64; saliency in [0,1]."""
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.csgraph import dijkstra, laplacian
    from scipy.sparse.linalg import spsolve

    n = len(sp.colour)
    i, j = sp.edges[:, 0], sp.edges[:, 1]
    d_app_edge = np.linalg.norm(sp.colour[i] - sp.colour[j], axis=1)
    # zero-weight edges vanish from a sparse graph: a tiny floor keeps equal-colour neighbours connected
    graph = coo_matrix((np.maximum(d_app_edge, 1e-9), (i, j)), shape=(n, n)).tocsr()
    d_geo = dijkstra(graph, directed=False)
    sim = np.exp(-d_geo ** 2 / (2 * cfg.sigma_clr ** 2))
    area = sim.sum(1)
    len_bnd = sim[:, sp.boundary].sum(1)
    bndcon = len_bnd / np.sqrt(area)
    w_bg = 1.0 - np.exp(-bndcon ** 2 / (2 * cfg.sigma_bndcon ** 2))
    d_app = np.linalg.norm(sp.colour[:, None] - sp.colour[None], axis=2)
    w_spa = np.exp(-((sp.centre[:, None] - sp.centre[None]) ** 2).sum(2) / (2 * cfg.sigma_spa ** 2))
    wctr = (d_app * w_spa * w_bg[None]).sum(1)
    w_fg = _normalise(wctr)
    w_ij = np.exp(-d_app_edge ** 2 / (2 * cfg.sigma_clr ** 2)) + cfg.mu
    lap = laplacian(coo_matrix((np.concatenate([w_ij, w_ij]), (np.concatenate([i, j]), np.concatenate([j, i]))),
                               shape=(n, n)).tocsr())
    s = spsolve((diags(w_bg + w_fg) + lap).tocsc(), w_fg)
    return {"bndcon": bndcon, "w_bg": w_bg, "wctr": wctr, "saliency": _normalise(np.asarray(s, np.float64))}


def rbd_saliency(rgb: np.ndarray, cfg: RBDConfig = RBDConfig(), labels: np.ndarray | None = None) -> np.ndarray:
    """Saliency map of an HWC uint8 RGB image → (H,W) float32 in [0,1] (1 = salient). ``labels``: a superpixel
    labelling (H,W) to use instead of SLIC (at the input's resolution; tests, precomputed segmentations)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise UsageError(f"rbd_saliency: expected an (H,W,3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    if labels is not None:
        if labels.shape != (h, w):
            raise UsageError(f"rbd_saliency: labels shape {labels.shape} != image shape {(h, w)}")
        small = rgb
    else:
        scale = min(1.0, cfg.max_side / max(h, w)) if cfg.max_side > 0 else 1.0
        small = cv2.resize(rgb, (max(3, round(w * scale)), max(3, round(h * scale))),
                           interpolation=cv2.INTER_AREA) if scale < 1.0 else rgb
    # float Lab (L 0–100, a/b ±127): the scale the paper's σ_clr = 10 is meant for
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).astype(np.float64)
    if labels is None:
        region = max(2, round(np.sqrt(small.shape[0] * small.shape[1] / max(cfg.n_segments, 1))))
        slic = cv2.ximgproc.createSuperpixelSLIC(cv2.GaussianBlur(small, (3, 3), 0), cv2.ximgproc.SLIC,
                                                 region, cfg.ruler)
        slic.iterate(10)
        slic.enforceLabelConnectivity()
        labels = slic.getLabels()
    sp = superpixel_graph(lab, labels)
    if len(sp.colour) < 2:
        return np.zeros((h, w), np.float32)  # one region: nothing stands out
    sal = rbd_superpixel_saliency(sp, cfg)["saliency"][sp.labels].astype(np.float32)
    if sal.shape != (h, w):
        sal = cv2.resize(sal, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(sal, 0.0, 1.0).astype(np.float32)
