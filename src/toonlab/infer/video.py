"""Video translation with PyAV (the ``video`` extra): streaming decode → translate in small batches → encode.

Never holds more than ``batch_size`` frames: packets are demuxed in file order; video packets are decoded and
buffered until a batch is full, then translated and encoded at once; audio packets are remuxed unchanged (no
re-encode, so audio quality and sync are kept). The output has the input's frame rate, size and timestamps.
Flicker is reduced by a ``stabilizer`` (:mod:`toonlab.infer.temporal`: the previous output warped by the input's
optical flow and fused, occlusions and scene cuts excluded; its flow runs on the decode thread) or, simpler, by
``smoothing`` > 0: where the *input* did not change between two frames, the output is an exponential moving
average of the generator's outputs (moving regions untouched).
The output is written to a temporary file beside ``dst`` and renamed when complete (atomic).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from toonlab.errors import ToonlabError, UsageError
from toonlab.infer.temporal import Stabilizer

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}

TranslateBatch = Callable[[torch.Tensor], torch.Tensor]  # (B,3,H,W) [0,1] → (B,3,H,W) [0,1]


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def find_videos(inputs: list[str | Path], exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """Video files named by ``inputs`` — files, folders (searched recursively, hidden names skipped) and glob
    patterns — as sorted unique ``(file, relative path)`` pairs: the path under a named folder, else the file
    name. Anything found under ``exclude`` (the output folder) is left out, but not a file named explicitly
    (``cartoonize clip.mp4 -o .``). Symlinked folders are searched once each (:func:`toonlab.io.walk_tree`); a
    symlink loop with a video's name is kept, to fail alone when read."""
    from toonlab.io import file_key, glob_paths, walk_tree
    from toonlab.paths import symlink_loop

    found: dict[Path, tuple[Path, Path]] = {}
    excl = exclude.resolve() if exclude is not None else None

    def add(f: Path, rel: Path, named: bool = False) -> None:
        if not is_video(f) or not (f.is_file() or symlink_loop(f)):
            return
        key = file_key(f)
        if named or not (excl is not None and (key == excl or excl in key.parents)):
            found.setdefault(key, (f, rel))

    for item in inputs:
        p = Path(item)
        matches = [(p, p.is_dir())] if p.exists() or symlink_loop(p) else glob_paths(str(item))[1]
        for m, is_dir in matches:
            if is_dir:
                for f, sub in walk_tree(m):
                    if not sub and not any(part.startswith(".") for part in f.relative_to(m).parts):
                        add(f, f.relative_to(m))
            else:
                add(m, Path(m.name), named=m is p)
    return sorted(found.values(), key=lambda fr: str(fr[0]))


def _av():
    try:
        import av
    except ImportError:
        raise UsageError("video needs PyAV: pip install 'toonlab[video]'") from None
    return av


@dataclass
class VideoResult:
    """What :func:`translate_video` did: frames written, frames that failed to decode (skipped), the video's
    frame rate, whether an audio stream was copied, the output path, and the wall-clock seconds it took."""

    path: Path
    frames: int
    bad_frames: int
    fps: float
    audio: bool
    seconds: float = 0.0


class TemporalSmoother:
    """EMA of outputs over static input regions: ``out_t = w·out_{t−1} + (1−w)·G(x_t)`` with
    ``w = alpha · static``, ``static = clamp(1 − |x_t − x_{t−1}| / threshold, 0, 1)`` (per pixel, channel mean,
    5×5 box-blurred so noise does not punch holes). alpha 0 = off. Tensors (B,3,H,W) in [0,1], frames in order."""

    def __init__(self, alpha: float, threshold: float = 0.05):
        if not 0.0 <= alpha < 1.0:
            raise UsageError(f"--smoothing must be in [0, 1), got {alpha}")
        self.alpha, self.threshold = alpha, threshold
        self.prev_in: torch.Tensor | None = None
        self.prev_out: torch.Tensor | None = None

    def __call__(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        if self.alpha == 0.0:
            return outputs
        result = torch.empty_like(outputs)
        for i in range(inputs.shape[0]):
            x, y = inputs[i:i + 1], outputs[i:i + 1]
            if self.prev_in is not None and self.prev_in.shape == x.shape:
                change = F.avg_pool2d((x - self.prev_in).abs().mean(1, keepdim=True), 5, 1, 2,
                                      count_include_pad=False)
                w = self.alpha * (1.0 - change / self.threshold).clamp(0.0, 1.0)
                y = w * self.prev_out + (1.0 - w) * y
            self.prev_in, self.prev_out = x, y
            result[i:i + 1] = y
        return result


def _pick_codec(av, name: str | None) -> str:
    if name:
        return name
    for codec in ("libx264", "h264", "mpeg4"):
        if codec in av.codecs_available:
            return codec
    raise ToonlabError("no H.264 / MPEG-4 video encoder available in this PyAV build")


class _Failed:
    """A pipeline thread's exception, passed downstream so the caller re-raises it."""

    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()  # end of stream marker between pipeline stages


def _even_pad(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) → replicate the last row / column where H / W is odd: 4:2:0 encoders need even sizes."""
    h, w = x.shape[-2:]
    if h % 2 == 0 and w % 2 == 0:
        return x
    return F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")


def iter_frames(path: str | Path):
    """The frames of ``path``'s first video stream in order, as (H,W,3) uint8 RGB arrays, decoded one at a time.
    Raises ToonlabError (one line naming the file) when it cannot be opened or has no video stream."""
    av = _av()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise ToonlabError(f"{path}: cannot open video ({str(e).splitlines()[0]})") from None
    with container:
        if not container.streams.video:
            raise ToonlabError(f"{path}: no video stream")
        for frame in container.decode(container.streams.video[0]):
            yield frame.to_ndarray(format="rgb24")


def translate_video(src: str | Path, dst: str | Path, translate: TranslateBatch, *, batch_size: int = 4,
                    smoothing: float = 0.0, stabilizer: Stabilizer | None = None, overwrite: bool = False,
                    codec: str | None = None, crf: int = 18,
                    progress: Callable[[int, int | None, str], None] | None = None,
                    pipeline: bool = True) -> VideoResult:
    """Translate every frame of ``src`` into ``dst`` (container from its extension), keeping audio and frame rate.

    ``translate`` maps (B,3,H,W) [0,1] RGB to the same; ``stabilizer`` (reset here) fuses each output with the
    previous one (its ``translate`` is not used; its flow is computed on the decode thread); ``smoothing`` is the
    simpler alternative (:class:`TemporalSmoother`). ``progress(done, total, "frame")`` is called after each
    batch (``total`` None when the container does not say). ``pipeline``: decode, translate and encode in three
    threads that overlap (at most two batches queued between stages), else in turn on this thread. Frames of an
    odd width or height are encoded one replicated row / column larger (4:2:0 needs even sizes; nothing of the
    picture is cut). Raises ToonlabError (one line naming the file) when the input has no video stream or cannot
    be opened or encoded."""
    av = _av()
    src, dst = Path(src), Path(dst)
    if stabilizer is not None and smoothing > 0:
        raise UsageError("--smoothing and --stabilize are alternatives: choose one")
    if dst.exists() and not overwrite:
        from toonlab.io import OutputExistsError

        raise OutputExistsError(f"{dst}: exists (use --overwrite)")
    try:
        inp = av.open(str(src))
    except (av.error.FFmpegError, OSError) as e:
        raise ToonlabError(f"{src}: cannot open video ({str(e).splitlines()[0]})") from None
    smoother = TemporalSmoother(smoothing)
    if stabilizer is not None:
        stabilizer.reset()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.tmp{dst.suffix}")  # keeps the extension: the muxer is chosen from it
    counts = {"frames": 0, "bad": 0}
    start = time.perf_counter()
    try:
        if not inp.streams.video:
            raise ToonlabError(f"{src}: no video stream")
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        total = vin.frames or None
        out = av.open(str(tmp), "w")
        try:
            vout = out.add_stream(_pick_codec(av, codec), rate=rate)
            width, height = vin.codec_context.width, vin.codec_context.height
            vout.width, vout.height = width + width % 2, height + height % 2
            vout.pix_fmt = "yuv420p"
            if vout.codec_context.name in ("libx264", "h264"):
                vout.options = {"crf": str(crf)}
            vout.time_base = vin.time_base
            aout = out.add_stream_from_template(ain) if ain is not None else None

            def decoded_items():
                """File order: ("audio", packet) and ("video", ([frames], motions or None)) batches of ≤
                batch_size; the stabilizer's input side runs here, overlapping translation."""
                buffer: list = []
                streams = [vin] + ([ain] if ain is not None else [])
                for packet in inp.demux(*streams):
                    if packet.stream is ain:
                        if packet.dts is not None:  # the demuxer's final flush packet carries no data
                            yield "audio", packet
                        continue
                    try:
                        frames = packet.decode()
                    except av.error.FFmpegError:
                        counts["bad"] += 1  # a corrupt packet: reported, never fatal
                        continue
                    for frame in frames:
                        buffer.append((frame.to_ndarray(format="rgb24"), frame.pts, frame.time_base))
                        if len(buffer) >= batch_size:
                            yield "video", with_motion(buffer)
                            buffer = []
                if buffer:
                    yield "video", with_motion(buffer)

            def with_motion(buffer: list) -> tuple:
                motions = stabilizer.motion(np.stack([a for a, _, _ in buffer])) if stabilizer else None
                return buffer, motions

            def translated(item):
                kind, payload = item
                if kind == "audio":
                    return item
                payload, motions = payload
                x = torch.from_numpy(np.stack([a for a, _, _ in payload])).permute(0, 3, 1, 2).float() / 255.0
                y = translate(x).float().clamp(0, 1)
                y = _even_pad(stabilizer.fuse(y, motions) if stabilizer else smoother(x, y))
                arr = (y * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
                return "video", [(a, pts, tb) for a, (_, pts, tb) in zip(arr, payload)]

            def encode(item) -> None:
                kind, payload = item
                if kind == "audio":
                    payload.stream = aout
                    out.mux(payload)
                    return
                for a, pts, tb in payload:
                    frame = av.VideoFrame.from_ndarray(a, format="rgb24")
                    frame.pts, frame.time_base = pts, tb
                    for packet in vout.encode(frame):
                        out.mux(packet)
                counts["frames"] += len(payload)
                if progress:
                    progress(counts["frames"], total, "frame")

            if pipeline:
                _run_pipeline(decoded_items(), translated, encode)
            else:
                for item in decoded_items():
                    encode(translated(item))
            for packet in vout.encode(None):
                out.mux(packet)
        finally:
            out.close()
        if counts["frames"] == 0:
            raise ToonlabError(f"{src}: no decodable video frames")
        os.replace(tmp, dst)
    except ToonlabError:
        tmp.unlink(missing_ok=True)
        raise
    except av.error.FFmpegError as e:  # e.g. an encoder that rejects the stream's parameters
        tmp.unlink(missing_ok=True)
        raise ToonlabError(f"{src}: video encoding failed ({str(e).splitlines()[0]})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        inp.close()
    return VideoResult(dst, counts["frames"], counts["bad"], float(rate), ain is not None,
                       time.perf_counter() - start)


def _run_pipeline(items, work: Callable, sink: Callable) -> None:
    """``sink(work(item))`` for every item in order, with ``items`` drawn on one thread, ``work`` on the caller's
    and ``sink`` on a third, so decoding, inference and encoding overlap (PyAV, PyTorch and ONNX Runtime release
    the GIL in their heavy calls). Queues hold two items: memory stays a few batches. The first exception of any
    stage is re-raised here."""
    import queue
    import threading

    todo: queue.Queue = queue.Queue(maxsize=2)
    done: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    sink_error: list[BaseException] = []

    def put(q: queue.Queue, obj) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(todo, item):
                    return
        except BaseException as e:  # handed to the caller's thread
            put(todo, _Failed(e))
            return
        put(todo, _DONE)

    def consume() -> None:
        while not stop.is_set():
            try:
                obj = done.get(timeout=0.1)
            except queue.Empty:
                continue
            if obj is _DONE:
                return
            try:
                sink(obj)
            except BaseException as e:  # handed to the caller's thread
                sink_error.append(e)
                stop.set()

    producer, consumer = threading.Thread(target=produce, daemon=True), threading.Thread(target=consume, daemon=True)
    producer.start()
    consumer.start()
    try:
        while not stop.is_set():
            try:
                obj = todo.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(obj, _Failed):
                raise obj.error
            if obj is _DONE or not put(done, work(obj)):
                break
        put(done, _DONE)
        consumer.join()  # drains what is queued, then stops at _DONE (or at its own error)
    finally:
        stop.set()
        producer.join()
        consumer.join()
    if sink_error:
        raise sink_error[0]
