"""Folder → folder preparation: ``prepare photos`` (resize/crop/filter/dedupe photo folders) and the side inputs
that models read from prepared folders: ``smooth`` (CartoonGAN edge smoothing), ``guided`` (seed 000's
self-guided-filter edge processing), ``gray`` (AnimeGAN's grayscale cartoons) and ``saliency`` (MBD maps).

Outputs keep the inputs' relative paths, are written atomically, and an existing output is skipped unless
``overwrite`` — so an interrupted run is finished by running it again.
"""

from __future__ import annotations

import json
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from toonlab.data.prepare.common import (JobFailure, PrepareSummary, atomic_write_bytes, run_jobs,
                                          split_failures, write_image_atomic)
from toonlab.data.prepare.dedupe import HashIndex, hash_from_hex, hash_hex, phash
from toonlab.data.prepare.filters import CROPS, QualityThresholds, quality, reject_reason, resize_crop
from toonlab.errors import ToonlabError, UsageError

OPS = ("smooth", "guided", "gray", "saliency")


@contextmanager
def _one_torch_thread():
    """Run a per-image torch op on one thread: at 256² the work per call is too small for intra-op threads
    (measured 10× slower with 2 threads on a busy 2-core machine); parallelism comes from ``--workers``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(n)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file → HWC uint8 RGB via ``toonlab.io.read_image`` (EXIF orientation applied; alpha dropped).
    Raises ``toonlab.io.ImageReadError`` (one line, names the file) for unreadable files."""
    from toonlab.io import read_image

    with _one_torch_thread():
        rgb = read_image(path).rgb  # (3,H,W) float32 in [0,1]
    return np.ascontiguousarray((rgb.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8))


def _to_tensor(rgb: np.ndarray):
    import torch

    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255.0)


def _to_uint8(x) -> np.ndarray:
    return (x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def op_smooth(rgb: np.ndarray) -> np.ndarray:
    """CartoonGAN edge smoothing (PAPERS.md: Canny(100,200) → dilate 5×5 → Gaussian 5×5 on edge pixels)."""
    from toonlab.ops import edge_smooth

    with _one_torch_thread():
        return _to_uint8(edge_smooth(_to_tensor(rgb)))


def op_guided(rgb: np.ndarray, r: int = 5, eps: float = 0.2) -> np.ndarray:
    """Seed 000's edge processing: the self-guided filter (its eq. 1, q_i = Σ_j W_ij(I) p_j with I = p), per
    channel on [-1,1] images. Seed 000 gives no r / eps; our defaults are CTSS's self-guided filter (r = 5,
    eps = 0.2 on [-1,1]), options of ``prepare guided``."""
    from toonlab.ops import self_guided_filter

    with _one_torch_thread():
        x = _to_tensor(rgb) * 2 - 1
        return _to_uint8((self_guided_filter(x, r, eps) + 1) / 2)


def op_gray(rgb: np.ndarray) -> np.ndarray:
    """Grayscale cartoon as 3 equal channels (AnimeGAN's Gram-loss input); BT.601 luma, as cv2."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return np.repeat(gray[..., None], 3, axis=2)


def op_saliency(rgb: np.ndarray, method: str = "mbd", **params) -> np.ndarray:
    """8-bit saliency map (H,W) uint8, 255 = salient: ``method`` "mbd" (MBDConfig params) or "rbd" (RBDConfig)."""
    from toonlab.data.saliency import MBDConfig, RBDConfig, mbd_saliency, rbd_saliency

    sal = rbd_saliency(rgb, RBDConfig(**params)) if method == "rbd" else mbd_saliency(rgb, MBDConfig(**params))
    out = (sal * 255.0 + 0.5).astype(np.uint8)
    if out.min() == out.max():  # an all-zero (or flat) map would train salcbam's attention on nothing
        raise ToonlabError(f"{method} saliency map is constant ({out.min()}) at {rgb.shape[1]}x{rgb.shape[0]}: "
                           f"nothing stands out (not written)")
    return out


_OP_FUNCS = {"smooth": op_smooth, "guided": op_guided, "gray": op_gray, "saliency": op_saliency}


def _map_job(job: tuple[str, str, str, dict]) -> str:
    src, dst, op, params = job
    write_image_atomic(dst, _OP_FUNCS[op](read_rgb(src), **params))
    return dst


def _list_inputs(src: str | Path, out: Path) -> tuple[Path, list[Path]]:
    from toonlab.io import list_images

    root = Path(src)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder")
    out_abs = out.resolve()
    # an output folder inside the input folder must not be read back as input on a rerun
    files = [p for p in list_images([str(root)]) if out_abs not in p.resolve().parents]
    return root, files


def map_folder(src: str | Path, out: str | Path, op: str, params: dict | None = None, *, ext: str | None = None,
               workers: int = 1, overwrite: bool = False, progress: bool = True) -> PrepareSummary:
    """Apply ``op`` (smooth | guided | gray | saliency) to every image under ``src``, writing ``out/<relative
    path>`` (suffix ``ext``, default: the input's; saliency maps are always .png). Bad files are reported in
    ``failed``; the others are finished."""
    if op not in _OP_FUNCS:
        raise UsageError(f"unknown prepare operation {op!r} (expected one of {', '.join(OPS)})")
    out = Path(out)
    root, files = _list_inputs(src, out)
    jobs, skipped = [], 0
    for f in files:
        suffix = ".png" if op == "saliency" else (ext or f.suffix)
        dst = out / f.relative_to(root).with_suffix(suffix)
        if dst.exists() and not overwrite:
            skipped += 1
            continue
        jobs.append((str(f), str(dst), op, dict(params or {})))
    done, failed = split_failures(run_jobs(_map_job, jobs, workers=workers, progress=progress, desc=op))
    return PrepareSummary(done=len(done), skipped=skipped, failed=failed)


# ---- photos --------------------------------------------------------------------------------------------------

PHOTO_STATE = ".photos.jsonl"


@dataclass(frozen=True)
class PhotoConfig:
    """Settings of ``prepare photos`` (quality rules as ``prepare frames``; see filters.QualityThresholds)."""

    size: int = 256
    crop: str = "center"
    seed: int = 0
    hash_threshold: int = 6
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    ext: str | None = None  # output suffix; None keeps the input's


def _photo_job(job: tuple[str, str, str, str, dict]) -> dict:
    src, dst, rel, out, c = job
    out = Path(out)
    cfg = PhotoConfig(**{**c, "quality": QualityThresholds(**c["quality"])})
    rng = np.random.default_rng([cfg.seed, zlib.crc32(rel.encode())])
    img = resize_crop(read_rgb(src), cfg.size, cfg.crop, rng)
    q = quality(img)
    status = reject_reason(q, cfg.quality) or "kept"
    if status == "kept":
        write_image_atomic(dst, img)
    name = Path(dst).relative_to(out).as_posix()
    return {"input": rel, "status": status, "file": name if status == "kept" else None,
            "hash": hash_hex(phash(img)), **{k: round(v, 3) for k, v in q.items()}}


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # a torn last line from a crash
    return records


def prepare_photos(src: str | Path, out: str | Path, cfg: PhotoConfig = PhotoConfig(), *, workers: int = 1,
                   overwrite: bool = False, progress: bool = True) -> PrepareSummary:
    """Resize/crop, filter (dark, uniform, blurry) and dedupe (pHash, earlier file in sorted order wins) the
    photos under ``src`` into ``out`` (same relative paths); unreadable files are reported in ``failed``.
    Decisions are appended to ``out/.photos.jsonl`` as they come, so a rerun skips decided inputs;
    ``out/manifest.json`` lists all of them."""
    if cfg.crop not in CROPS:
        raise UsageError(f"photos: unknown --crop {cfg.crop!r} (expected one of {', '.join(CROPS)})")
    out = Path(out)
    root, files = _list_inputs(src, out)
    state = out / PHOTO_STATE
    if overwrite:
        state.unlink(missing_ok=True)
    records = {r["input"]: r for r in _read_jsonl(state)}
    seen = HashIndex(cfg.hash_threshold,
                     [hash_from_hex(r["hash"]) for r in records.values() if r["status"] == "kept"])
    jobs = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        if rel in records:
            continue
        dst = out / f.relative_to(root).with_suffix(cfg.ext or f.suffix)
        jobs.append((str(f), str(dst), rel, str(out), asdict(cfg)))
    skipped = len(files) - len(jobs)
    out.mkdir(parents=True, exist_ok=True)
    with open(state, "a") as log:
        def record(r) -> None:
            """Dedupe (results arrive in sorted input order: deterministic) and log the decision at once."""
            if isinstance(r, JobFailure):
                return  # not recorded: a rerun tries the file again
            if r["status"] == "kept" and not seen.add_if_new(hash_from_hex(r["hash"])):
                (out / r["file"]).unlink(missing_ok=True)
                r.update(status="duplicate", file=None)
            log.write(json.dumps(r) + "\n")
            log.flush()
            records[r["input"]] = r

        results = run_jobs(_photo_job, jobs, workers=workers, progress=progress, desc="photos", on_result=record)
    ok, failed = split_failures(results)
    counts: dict[str, int] = {}
    for r in records.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    manifest = {"format": "toonlab-photos/1", "source": str(root), "config": asdict(cfg), "counts": counts,
                "photos": sorted(records.values(), key=lambda r: r["input"])}
    atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    new_kept = sum(r["status"] == "kept" for r in ok)
    return PrepareSummary(done=new_kept, skipped=skipped, failed=failed, extra=counts)
