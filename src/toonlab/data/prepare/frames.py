"""``prepare frames``: sample training frames from videos (the papers' cartoon sets are film frames).

Per video (one process each with ``workers``): decode with PyAV, sample a frame every ``every`` seconds and/or the
first frame after each scene cut (mean absolute difference of consecutive 64×36 gray thumbnails above
``cut_threshold``), skip the first/last seconds, resize + crop to ``size``, drop dark / near-uniform / blurry frames
and near-duplicates (pHash within ``hash_threshold`` bits), write ``<stem>_<sample:06d>.<ext>``.

Resumable: every sampled frame's decision is appended (one JSON line, flushed) to ``OUT/.frames/<stem>.jsonl``
right after its image was written atomically; a rerun seeks to the last recorded time and carries on, and a video
marked done is not decoded again. At the end, near-duplicates *across* videos are removed (input order decides
which copy stays) and ``OUT/manifest.json`` lists every sampled frame: source, timestamp, reason, status, hash.

Decode speed: frame-threaded decoding (``thread_type="AUTO"``), non-reference frames skipped
(``skip_frame="NONREF"``) while the next sample is more than ``lookahead`` seconds away, a seek instead of a decode
when the next sample is more than ``seek_gap`` seconds away, and RGB conversion only of sampled frames.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toonlab.data.prepare.common import (PrepareSummary, atomic_write_bytes, run_jobs, split_failures,
                                          write_image_atomic)
from toonlab.data.prepare.dedupe import HashIndex, hash_from_hex, hash_hex, phash
from toonlab.data.prepare.filters import CROPS, QualityThresholds, quality, reject_reason, resize_crop
from toonlab.errors import ToonlabError, UsageError

STATE_DIR = ".frames"
VIDEO_EXTENSIONS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
CUT_THUMB = (64, 36)  # scene-cut thumbnails (width, height): enough to see a cut, cheap to convert
CUT_THRESHOLD = 30.0  # mean |Δ| of 0–255 gray thumbnails that counts as a cut (our choice)


def thumb_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a − b| of two (36,64) uint8 gray thumbnails, on 0–255; above ``CUT_THRESHOLD`` is a scene cut (the
    detector of ``prepare frames`` and of the video stabiliser, ``toonlab.infer.temporal``)."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@dataclass(frozen=True)
class FrameConfig:
    """Sampling, filtering and output settings of ``prepare frames`` (see the module docstring)."""

    every: float = 1.0            # seconds between interval samples; 0 = no interval sampling
    scene_cuts: bool = False      # also sample the first frame after each detected cut
    cut_threshold: float = CUT_THRESHOLD
    min_cut_gap: float = 0.5      # seconds: cuts closer than this to the previous cut sample are ignored (flashes)
    skip_start: float = 0.0       # seconds skipped at the start (films: opening, e.g. 120)
    skip_end: float = 0.0         # seconds skipped at the end (films: credits, e.g. 300)
    size: int = 256               # output side (short side when crop="none"); 0 keeps the decoded size
    crop: str = "center"          # center | random | none
    seed: int = 0                 # random crops: a function of (seed, video key, sample index)
    hash_threshold: int = 6       # pHash Hamming distance ≤ this → duplicate; −1 keeps duplicates
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    ext: str = ".png"
    threads: str = "AUTO"         # PyAV thread_type: AUTO | FRAME | SLICE | NONE
    skip_nonref: bool = True      # skip decoding non-reference frames while far from the next sample
    lookahead: float = 0.5        # seconds before a sample from which every frame is decoded
    seek_gap: float = 10.0        # seek (to the keyframe before the next sample) when it is this far ahead

    def check(self) -> None:
        if self.every < 0 or (self.every == 0 and not self.scene_cuts):
            raise UsageError("frames: need --every > 0 or --scene-cuts")
        if self.skip_start < 0 or self.skip_end < 0:
            raise UsageError("frames: --skip-start/--skip-end must be >= 0")
        if self.threads.upper() not in ("AUTO", "FRAME", "SLICE", "NONE"):
            raise UsageError(f"frames: unknown --threads {self.threads!r} (AUTO, FRAME, SLICE or NONE)")
        if self.crop not in CROPS:
            raise UsageError(f"frames: unknown --crop {self.crop!r} (expected one of {', '.join(CROPS)})")
        if not self.ext.startswith("."):
            raise UsageError(f"frames: --ext must start with a dot (got {self.ext!r})")


def _state_path(out: Path, key: str) -> Path:
    return out / STATE_DIR / f"{key}.jsonl"


def read_state(path: Path) -> list[dict]:
    """The records of a per-video state file; a torn last line (crash mid-append) is ignored."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records


def _frame_time(frame, stream) -> float | None:
    if frame.pts is None:
        return None
    return float(frame.pts * stream.time_base)


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


class _Sampler:
    """Decides, frame by frame, whether a frame is a sample (interval grid or first frame after a cut)."""

    def __init__(self, cfg: FrameConfig, start: float, resume_after: float | None):
        self.cfg = cfg
        self.start = start
        self.resume_after = resume_after
        base = start if resume_after is None else resume_after
        # next point of the grid start + j·every strictly after what was already sampled
        # (1e-9: a time stored exactly on the grid must not come out a hair below it)
        self.next_t = (start + (math.floor((base - start) / cfg.every + 1e-9) + (resume_after is not None))
                       * cfg.every if cfg.every > 0 else math.inf)
        self.prev_thumb: np.ndarray | None = None
        self.last_cut_t = -math.inf
        self.first_pending = resume_after is None  # the first frame in range opens the first shot

    def reason(self, t: float, thumb: np.ndarray | None) -> str | None:
        cut = False
        if thumb is not None:
            if self.prev_thumb is not None:
                cut = (thumb_difference(thumb, self.prev_thumb) > self.cfg.cut_threshold
                       and t - self.last_cut_t >= self.cfg.min_cut_gap)
            self.prev_thumb = thumb
            if cut:
                self.last_cut_t = t
        if t < self.start or (self.resume_after is not None and t <= self.resume_after):
            return None  # decoded only to warm up the cut detector / reach the resume point
        first, self.first_pending = self.first_pending, False
        if t >= self.next_t:
            self.next_t += self.cfg.every * max(1, math.floor((t - self.next_t) / self.cfg.every) + 1)
            return "interval"
        if self.cfg.scene_cuts and (cut or first):
            return "cut"
        return None


def _process_video(job: tuple[str, str, str, dict]) -> dict:
    """Worker: sample one video into ``out``; returns {'key', 'sampled', 'decoded'}."""
    import av

    video, key, out_dir, cfg_dict = job
    cfg = FrameConfig(**{**cfg_dict, "quality": QualityThresholds(**cfg_dict["quality"])})
    out = Path(out_dir)
    state_path = _state_path(out, key)
    records = read_state(state_path)
    if records and records[-1].get("done"):
        return {"key": key, "sampled": 0, "decoded": 0}
    samples = [r for r in records if "index" in r]
    index = samples[-1]["index"] + 1 if samples else 0
    resume_after = samples[-1]["time"] if samples else None
    seen = HashIndex(cfg.hash_threshold, [hash_from_hex(r["hash"]) for r in samples if r["status"] == "kept"])
    try:
        container = av.open(video)
    except (av.FFmpegError, OSError) as e:
        raise ToonlabError(f"{video}: cannot open video ({e})") from None
    decoded = sampled = 0
    with container:
        if not container.streams.video:
            raise ToonlabError(f"{video}: no video stream")
        stream = container.streams.video[0]
        if cfg.threads.upper() != "NONE":
            stream.thread_type = cfg.threads.upper()
        duration = _duration(container, stream)
        stop = duration - cfg.skip_end if duration is not None else math.inf
        sampler = _Sampler(cfg, cfg.skip_start, resume_after)
        ctx = stream.codec_context
        skipping = False
        can_seek = True  # turned off when a seek lands behind the current position (keyframes too sparse)
        seek_from = None

        def seek_to(t: float) -> None:
            # backward to the keyframe at/before t; a little earlier so the cut detector sees the frame before
            target = max(0.0, t - cfg.lookahead)
            container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)

        first = cfg.skip_start if resume_after is None else resume_after
        if first > cfg.seek_gap / 2:
            seek_to(first)
        try:
            for packet in container.demux(stream):
                pt = float(packet.pts * stream.time_base) if packet.pts is not None else None
                if seek_from is not None and pt is not None:
                    can_seek, seek_from = pt > seek_from, None
                if pt is not None and pt > stop + 1.0:  # past the end of the wanted range (B-frame reorder margin)
                    break
                want = pt is None or pt >= sampler.next_t - cfg.lookahead or cfg.scene_cuts
                if cfg.skip_nonref and want == skipping:
                    skipping = not want
                    ctx.skip_frame = "NONREF" if skipping else "DEFAULT"
                for frame in ctx.decode(packet):
                    decoded += 1
                    t = _frame_time(frame, stream)
                    if t is None:
                        continue
                    if t >= stop:
                        break
                    thumb = (frame.reformat(width=CUT_THUMB[0], height=CUT_THUMB[1], format="gray").to_ndarray()
                             if cfg.scene_cuts else None)
                    why = sampler.reason(t, thumb)
                    if why is None:
                        continue
                    rgb = frame.to_ndarray(format="rgb24")
                    _keep_sample(rgb, t, why, index, key, video, out, cfg, seen, state_path)
                    index += 1
                    sampled += 1
                # far from the next interval sample and no cut detection: jump instead of decoding the gap
                if (can_seek and not cfg.scene_cuts and pt is not None and math.isfinite(sampler.next_t)
                        and sampler.next_t - pt > cfg.seek_gap):
                    seek_to(sampler.next_t)  # (seek also flushes the decoder)
                    seek_from = pt
        except av.FFmpegError as e:
            raise ToonlabError(f"{video}: decoding failed after {decoded} frames ({e})") from None
    _append(state_path, {"done": True, "decoded": decoded})
    return {"key": key, "sampled": sampled, "decoded": decoded}


def _append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def _keep_sample(rgb, t, why, index, key, video, out, cfg, seen, state_path) -> None:
    """Crop, filter, dedupe and write one sample, then record the decision."""
    rng = np.random.default_rng([cfg.seed, _stable_hash(key), index])
    img = resize_crop(rgb, cfg.size, cfg.crop, rng)
    q = quality(img)
    h = phash(img)
    status = reject_reason(q, cfg.quality) or ("kept" if seen.add_if_new(h) else "duplicate")
    name = f"{key}_{index:06d}{cfg.ext}"
    if status == "kept":
        write_image_atomic(out / name, img)
    _append(state_path, {"index": index, "time": t, "reason": why, "status": status,
                         "file": name if status == "kept" else None, "hash": hash_hex(h), "source": video,
                         **{k: round(v, 3) for k, v in q.items()}})


def _stable_hash(s: str) -> int:
    import zlib

    return zlib.crc32(s.encode())


def video_keys(videos: list[Path]) -> list[str]:
    """Output-name stems: the file stem, suffixed -2, -3 … when several inputs share one (input order)."""
    keys, used = [], {}
    for v in videos:
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in v.stem)
        used[stem] = used.get(stem, 0) + 1
        keys.append(stem if used[stem] == 1 else f"{stem}-{used[stem]}")
    return keys


def list_videos(inputs: list[str]) -> list[Path]:
    """Video files from files and folders (recursive, by extension), in the given order, folders sorted."""
    found = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_EXTENSIONS and q.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise UsageError(f"{p}: no such video file or folder")
    if not found:
        raise UsageError(f"no video files in {', '.join(inputs)}")
    return found


def extract_frames(inputs: list[str], out: str | Path, cfg: FrameConfig = FrameConfig(), *, workers: int = 1,
                   overwrite: bool = False, progress: bool = True) -> PrepareSummary:
    """Sample frames from the videos in ``inputs`` into ``out`` (resumable; see the module docstring).

    Returns a PrepareSummary: ``done`` = frames kept in total, ``failed`` = videos that could not be decoded,
    ``extra`` = counts per status."""
    try:
        import av  # noqa: F401
    except ImportError:
        raise ToonlabError("prepare frames needs PyAV: pip install 'toonlab[video]'") from None
    cfg.check()
    out = Path(out)
    videos = list_videos(inputs)
    keys = video_keys(videos)
    if overwrite:  # forget earlier runs: their kept images and their state
        for k in keys:
            for r in read_state(_state_path(out, k)):
                if r.get("file"):
                    (out / r["file"]).unlink(missing_ok=True)
            _state_path(out, k).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = asdict(cfg)
    jobs = [(str(v), k, str(out), cfg_dict) for v, k in zip(videos, keys)]
    _, failed = split_failures(run_jobs(_process_video, jobs, workers=workers, progress=progress, desc="frames"))
    return _finish(out, videos, keys, cfg, failed)


def _finish(out: Path, videos: list[Path], keys: list[str], cfg: FrameConfig, failed) -> PrepareSummary:
    """Cross-video dedupe (earlier inputs win) and the merged manifest, written atomically."""
    seen = HashIndex(cfg.hash_threshold)
    frames, counts = [], {}
    for video, key in zip(videos, keys):
        for r in read_state(_state_path(out, key)):
            if "index" not in r:
                continue
            r = dict(r, video=key)
            if r["status"] == "kept" and not seen.add_if_new(hash_from_hex(r["hash"])):
                (out / r["file"]).unlink(missing_ok=True)
                r.update(status="duplicate", file=None)
            counts[r["status"]] = counts.get(r["status"], 0) + 1
            frames.append(r)
    manifest = {"format": "toonlab-frames/1", "config": asdict(cfg), "videos": [str(v) for v in videos],
                "counts": counts, "frames": frames}
    atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    return PrepareSummary(done=counts.get("kept", 0), failed=failed, extra=counts)
