"""White-box cartoonization's structure representation (Wang & Yu, CVPR 2020, §3.1): superpixel segmentation,
merged into larger regions by selective search, each region painted one colour chosen by its spread ("adaptive
colouring"), then a contrast power.

Two variants (PAPERS.md: the paper is the default, the authors' released code a named option):

- ``"paper"`` — §3.1 as written: Felzenszwalb segmentation, then selective search (Uijlings et al. 2013:
  hierarchical grouping of neighbouring regions by colour + texture + size + fill similarity, "CTSF", in Lab)
  until ``n_regions`` = 200 regions remain; adaptive colouring with σ measured on the 0–255 scale its thresholds
  γ1 = 20, γ2 = 40 were written for; the colour raised to μ = 1.2 on the [0, 1] scale.
- ``"code"`` — the authors' ``utils.selective_adacolor(batch, power=1.2)`` (``train.py --use_enhance``): the same
  Felzenszwalb call; the segments painted by ``label2rgb(kind='mix')`` on the [-1, 1] image, whose σ never reaches
  20 there, so every region takes its mean; selective search on that flat image in Lab, run while more than 200
  *neighbour pairs* remain (``HierarchicalGrouping.num_regions`` counts the similarity pairs, not the regions);
  the merged regions painted the same way; then ``((x + 1)/2)^1.2``, divided by the image's max, back to
  [-1, 1]. Quirks kept in this variant only, as the code computes them: every initial region's size is the pixel
  count of label 1 (``size = (img_seg == 1).sum()``), the size and fill terms divide by H·W·3
  (``img.size``), and each region's histograms bin over that region's own value range (``np.histogram(layer,
  bins)``) — on the flat image every colour histogram is then the same spike, so colour similarity is constant.

Segmentation (OpenCV's contrib build, a base dependency — no scikit-image at runtime):
- ``"felzenszwalb"``: Felzenszwalb–Huttenlocher graph segmentation with the authors' call
  ``segmentation.felzenszwalb(image, scale=10, sigma=0.8, min_size=100)`` on the [-1, 1] image. scikit-image
  divides ``scale`` by 255, and the image OpenCV is given is the same one on the 0–255 scale (×127.5), so the
  equivalent OpenCV threshold is k = 10 / 255 · 127.5 = 5 — the *same* segmentation, not a smaller scale (on
  skimage's astronaut at 128²: 154 regions from scikit-image, 149 from OpenCV; k = 10 would give ~half).
- ``"slic"``: SLIC with ``n_segments`` regions, compactness 10, Gaussian σ 1, in Lab — the authors' default
  training path (``utils.simple_superpixel``, ``seg_num=200``; no merging, no power), with scikit-image's
  ``enforce_connectivity``: every label is one 4-connected region (OpenCV's SLIC alone can leave fragments).

Adaptive colouring (§3.1; authors' ``label2rgb(kind='mix')``): with σ the standard deviation of all the region's
values (every channel together), the region's colour is its mean if σ < γ1 = 20, (mean + median)/2 if γ1 ≤ σ < γ2
= 40, its median otherwise (the order of the authors' code; the paper's PDF was not available here to check its
θ table). ``colouring="mean"`` forces the region mean in either variant.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import cv2
import numpy as np
import torch

from toonlab.ops._checks import OpsInputError, check_image

Segmentation = Literal["felzenszwalb", "slic"]
Colouring = Literal["adaptive", "mean"]
Variant = Literal["paper", "code"]

GAMMA1, GAMMA2 = 20.0, 40.0          # §3.1: thresholds on the region's σ
MU = 1.2                             # §3.1 / authors' power=1.2: contrast power of the structure image (their
                                     # train.py comment advises 1.0 "to stably reproduce our results")
N_REGIONS = 200                      # §3.1 / authors' seg_num: selective search's target
FELZENSZWALB_SCALE = 10.0            # authors' skimage call on [-1, 1] …
FELZENSZWALB = dict(k=FELZENSZWALB_SCALE / 255 * 127.5, sigma=0.8, min_size=100)  # … = OpenCV's k on 0–255
SLIC_COMPACTNESS, SLIC_SIGMA = 10.0, 1.0               # authors' simple_superpixel
COLOUR_BINS, TEXTURE_BINS = 25, 10                     # selective search histograms (authors' measure.py)


def connected_labels(labels: np.ndarray) -> np.ndarray:
    """(H,W) int labels → (H,W) int32 labels 0..K-1 in which every label is one 4-connected region (a label whose
    pixels fall apart into several pieces becomes several labels)."""
    out = np.zeros(labels.shape, np.int32)
    nxt = 0
    for lab in np.unique(labels):
        n, comp = cv2.connectedComponents((labels == lab).astype(np.uint8), connectivity=4)
        mask = comp > 0
        out[mask] = comp[mask] - 1 + nxt
        nxt += n - 1
    return out


def segment(image: np.ndarray, method: Segmentation = "felzenszwalb", n_segments: int = 200) -> np.ndarray:
    """Label map (H,W) int32, labels 0..K-1, of ``image`` (H,W,3) float32 RGB in [-1, 1]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise OpsInputError(f"image: expected (H,W,3), got shape {image.shape}")
    img = np.ascontiguousarray(image, dtype=np.float32)
    if method == "felzenszwalb":
        gs = cv2.ximgproc.segmentation.createGraphSegmentation(
            sigma=FELZENSZWALB["sigma"], k=FELZENSZWALB["k"], min_size=FELZENSZWALB["min_size"])
        labels = gs.processImage(np.ascontiguousarray((img + 1.0) * 127.5))
    elif method == "slic":
        if n_segments < 1:
            raise OpsInputError(f"n_segments: expected >= 1, got {n_segments}")
        h, w = img.shape[:2]
        u8 = np.clip(np.rint((img + 1.0) * 127.5), 0, 255).astype(np.uint8)
        lab = cv2.cvtColor(cv2.GaussianBlur(u8, (0, 0), SLIC_SIGMA), cv2.COLOR_RGB2Lab)
        region = max(2, int(round(np.sqrt(h * w / n_segments))))  # OpenCV takes a region size, not a count
        slic = cv2.ximgproc.createSuperpixelSLIC(lab, cv2.ximgproc.SLIC, region, SLIC_COMPACTNESS)
        slic.iterate(10)
        # absorb fragments under 10 % of the mean superpixel size into a neighbour, as scikit-image's
        # enforce_connectivity does (OpenCV's default 25 % also swallowed pieces across colour edges), then split
        # whatever is still in pieces
        slic.enforceLabelConnectivity(10)
        return connected_labels(slic.getLabels())
    else:
        raise OpsInputError(f"method: expected 'felzenszwalb' or 'slic', got {method!r}")
    # relabel densely 0..K-1 (np.unique's inverse)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)


def local_binary_pattern(channel: np.ndarray) -> np.ndarray:
    """scikit-image's ``local_binary_pattern(channel, 8, 1)`` ('default'): bit p (weight 2^p) is set where the
    neighbour at angle 2πp/8 on the unit circle (bilinear, 0 outside the image) is ≥ the centre. (H,W) → (H,W)."""
    h, w = channel.shape
    pad = np.pad(channel.astype(np.float64), 1)
    out = np.zeros((h, w))
    for p in range(8):
        dr = round(-np.sin(2 * np.pi * p / 8), 5)
        dc = round(np.cos(2 * np.pi * p / 8), 5)
        r0, c0 = int(np.floor(dr)), int(np.floor(dc))
        fr, fc = dr - r0, dc - c0

        def at(r: int, c: int) -> np.ndarray:
            return pad[1 + r:1 + r + h, 1 + c:1 + c + w]

        r1, c1 = (r0 + 1 if fr else r0), (c0 + 1 if fc else c0)
        top = (1 - fc) * at(r0, c0) + fc * at(r0, c1)
        bottom = (1 - fc) * at(r1, c0) + fc * at(r1, c1)
        out += ((1 - fr) * top + fr * bottom - channel >= 0) * 2.0 ** p
    return out


def _histograms(values: np.ndarray, labels: np.ndarray, n: int, bins: int, lo: np.ndarray | None,
                hi: np.ndarray | None) -> np.ndarray:
    """(n, C·bins) L1-normalised histograms of each region's (H·W, C) ``values``: over the fixed range [lo, hi] per
    channel, or (``lo`` None) over each region's own range as ``np.histogram(layer, bins)`` bins it."""
    c = values.shape[1]
    out = np.zeros((n, c, bins))
    for ch in range(c):
        v = values[:, ch]
        if lo is None:
            rmin = np.full(n, np.inf)
            rmax = np.full(n, -np.inf)
            np.minimum.at(rmin, labels, v)
            np.maximum.at(rmax, labels, v)
            flat = rmin == rmax  # np.histogram's range for a constant: (v − 0.5, v + 0.5)
            rmin, rmax = np.where(flat, rmin - 0.5, rmin), np.where(flat, rmax + 0.5, rmax)
            a, b = rmin[labels], rmax[labels]
        else:
            a, b = lo[ch], hi[ch]
        idx = np.clip(np.floor((v - a) / (b - a) * bins), 0, bins - 1).astype(np.int64)
        np.add.at(out[:, ch], (labels, idx), 1.0)
    out = out.reshape(n, c * bins)
    return out / out.sum(1, keepdims=True)


def selective_search(image: np.ndarray, labels: np.ndarray, n_regions: int = N_REGIONS,
                     variant: Variant = "paper") -> np.ndarray:
    """Hierarchical grouping (selective search, CTSF similarity) of the regions of ``labels`` (H,W) over
    ``image`` (H,W,3) in [-1, 1] → merged labels (H,W) int32 0..K-1. ``paper``: on the image in Lab, fixed-range
    histograms, stop at ``n_regions`` regions; ``code``: the authors' quirks (module docstring)."""
    if labels.shape != image.shape[:2]:
        raise OpsInputError(f"labels {labels.shape} do not match image {image.shape[:2]}")
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    h, w = labels.shape
    n = int(labels.max()) + 1
    # the code groups the segments' flat colouring (label2rgb 'mix' on [-1, 1] = the means); Lab of the image
    # mapped to [0, 1] (the code converts the [-1, 1] values as they are: its colour term is constant anyway)
    src = adaptive_colour(image, labels, "mean") if variant == "code" else image
    lab = cv2.cvtColor(((np.clip(src, -1, 1) + 1) / 2).astype(np.float32), cv2.COLOR_RGB2Lab).reshape(-1, 3)
    lbp = np.stack([local_binary_pattern(lab.reshape(h, w, 3)[..., ch]) for ch in range(3)], -1).reshape(-1, 3)
    flat = labels.reshape(-1)
    if variant == "code":
        colour = _histograms(lab, flat, n, COLOUR_BINS, None, None)
        texture = _histograms(lbp, flat, n, TEXTURE_BINS, None, None)
        size = np.full(n, float((labels == 1).sum()))  # authors' build_regions: (img_seg == 1).sum() for all
        imsize = float(h * w * 3)                       # authors' img.size
    else:
        colour = _histograms(lab, flat, n, COLOUR_BINS, np.array([0.0, -128, -128]), np.array([100.0, 128, 128]))
        texture = _histograms(lbp, flat, n, TEXTURE_BINS, np.zeros(3), np.full(3, 256.0))
        size = np.bincount(flat, minlength=n).astype(np.float64)
        imsize = float(h * w)
    ys, xs = np.indices((h, w))
    box = np.stack([_reduce(np.minimum, xs, flat, n, np.inf),  # (x0, y0, x1, y1), stops exclusive: find_objects
                    _reduce(np.minimum, ys, flat, n, np.inf),
                    _reduce(np.maximum, xs, flat, n, -np.inf) + 1,
                    _reduce(np.maximum, ys, flat, n, -np.inf) + 1], 1)
    regions = {i: {"size": size[i], "box": box[i], "colour": colour[i], "texture": texture[i]} for i in range(n)}
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        diff = a != b
        for i, j in set(zip(a[diff].tolist(), b[diff].tolist())):
            neighbours[i].add(j)
            neighbours[j].add(i)

    def sim(ri: dict, rj: dict) -> float:
        bb = (max(ri["box"][2], rj["box"][2]) - min(ri["box"][0], rj["box"][0])) * \
             (max(ri["box"][3], rj["box"][3]) - min(ri["box"][1], rj["box"][1]))
        return (np.minimum(ri["colour"], rj["colour"]).sum() + np.minimum(ri["texture"], rj["texture"]).sum()
                + 1.0 - (ri["size"] + rj["size"]) / imsize + 1.0 - (bb - ri["size"] - rj["size"]) / imsize)

    pairs = {(i, j): sim(regions[i], regions[j]) for i in neighbours for j in neighbours[i] if i < j}
    parent = np.arange(n)  # merged region of each original label (labels grow past n as regions merge)
    nxt = n

    def count() -> int:
        return len(regions) if variant == "paper" else len(pairs)

    while count() > n_regions and pairs:
        i, j = max(pairs, key=pairs.__getitem__)
        ri, rj = regions.pop(i), regions.pop(j)
        s = ri["size"] + rj["size"]
        regions[nxt] = {"size": s, "box": np.concatenate([np.minimum(ri["box"][:2], rj["box"][:2]),
                                                          np.maximum(ri["box"][2:], rj["box"][2:])]),
                        "colour": (ri["colour"] * ri["size"] + rj["colour"] * rj["size"]) / s,
                        "texture": (ri["texture"] * ri["size"] + rj["texture"] * rj["size"]) / s}
        near = (neighbours.pop(i) | neighbours.pop(j)) - {i, j}
        for k in near:
            neighbours[k] -= {i, j}
            neighbours[k].add(nxt)
        neighbours[nxt] = near
        pairs = {key: v for key, v in pairs.items() if i not in key and j not in key}
        for k in near:
            pairs[(k, nxt)] = sim(regions[k], regions[nxt])
        parent[np.isin(parent, (i, j))] = nxt
        nxt += 1
    merged = parent[labels]
    return np.unique(merged, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)


def _reduce(op: np.ufunc, values: np.ndarray, labels: np.ndarray, n: int, init: float) -> np.ndarray:
    out = np.full(n, init)
    op.at(out, labels, values.reshape(-1).astype(np.float64))
    return out


def adaptive_colour(image: np.ndarray, labels: np.ndarray, colouring: Colouring = "adaptive",
                    gamma1: float = GAMMA1, gamma2: float = GAMMA2, sigma_scale: float = 127.5) -> np.ndarray:
    """Paint each region of ``labels`` (H,W) one colour chosen from ``image`` (H,W,3) float in [-1, 1]; σ is
    measured on the image times ``sigma_scale`` (127.5: the 0–255 scale, the paper's; 1: the [-1, 1] values the
    authors' code thresholds, module docstring). Returns (H,W,3) float32 in [-1, 1]."""
    if labels.shape != image.shape[:2]:
        raise OpsInputError(f"labels {labels.shape} do not match image {image.shape[:2]}")
    flat = image.reshape(-1, 3).astype(np.float64)
    lab = labels.reshape(-1)
    order = np.argsort(lab, kind="stable")
    bounds = np.flatnonzero(np.diff(lab[order])) + 1
    out = np.empty_like(flat)
    for idx in np.split(order, bounds):
        px = flat[idx]
        mean = px.mean(axis=0)
        if colouring == "mean":
            colour = mean
        else:
            sigma = (px * sigma_scale).std()  # σ of every value of the region
            if sigma < gamma1:
                colour = mean
            elif sigma < gamma2:
                colour = 0.5 * mean + 0.5 * np.median(px, axis=0)
            else:
                colour = np.median(px, axis=0)
        out[idx] = colour
    return out.reshape(image.shape).astype(np.float32)


def structure_image(img: np.ndarray, method: Segmentation = "felzenszwalb", n_segments: int = N_REGIONS,
                    colouring: Colouring = "adaptive", variant: Variant = "paper", mu: float = MU) -> np.ndarray:
    """F_st of one (H,W,3) float32 image in [-1, 1] → (H,W,3) float32 (module docstring). ``slic``: SLIC regions,
    coloured, no merging and no power (the authors' simple_superpixel path); ``felzenszwalb``: merged by
    selective search to ``n_segments``, coloured, then the variant's power step with exponent ``mu``."""
    scale = 127.5 if variant == "paper" else 1.0
    labels = segment(img, method, n_segments)
    if method == "slic":
        return adaptive_colour(img, labels, colouring, sigma_scale=scale)
    labels = selective_search(img, labels, n_segments, variant)
    out = (adaptive_colour(img, labels, colouring, sigma_scale=scale).astype(np.float64) + 1) / 2
    out = np.clip(out, 0.0, None) ** mu  # G's unclipped output can dip below -1; a power needs x ≥ 0
    if variant == "code":
        out = out / max(out.max(), 1e-12)
    return (out * 2 - 1).astype(np.float32)


def structure_representation(x: torch.Tensor, method: Segmentation = "felzenszwalb", n_segments: int = N_REGIONS,
                             colouring: Colouring = "adaptive", variant: Variant = "paper",
                             mu: float = MU) -> torch.Tensor:
    """F_st of (B,3,H,W) RGB in [-1, 1] → (B,3,H,W) in [-1, 1], same dtype/device; no gradient (OpenCV)."""
    check_image(x, "x", channels=(3,))
    if variant not in ("paper", "code"):
        raise OpsInputError(f"variant: expected 'paper' or 'code', got {variant!r}")
    images = x.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()

    def one(img: np.ndarray) -> np.ndarray:
        return structure_image(img, method, n_segments, colouring, variant, mu)

    # images in parallel on torch's threads (OpenCV's segmentation releases the GIL; ~0.2 s per 256² image)
    workers = min(len(images), torch.get_num_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            out = list(pool.map(one, images))
    else:
        out = [one(img) for img in images]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)
