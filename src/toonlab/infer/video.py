"""Video translation with PyAV (the ``video`` extra): streaming decode → translate in small batches → encode.

Never holds more than ``batch_size`` frames: packets are demuxed in file order; video packets are decoded and
buffered until a batch is full, then translated and encoded at once; audio packets are remuxed unchanged (no
re-encode, so audio quality and sync are kept). The output has the input's frame rate, size and timestamps.
An optional temporal smoothing (``smoothing`` > 0) reduces flicker: where the *input* did not change between
two frames, the output is an exponential moving average of the generator's outputs (moving regions untouched).
The output is written to a temporary file beside ``dst`` and renamed when complete (atomic).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from toonlab.errors import ToonlabError, UsageError

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}

TranslateBatch = Callable[[torch.Tensor], torch.Tensor]  # (B,3,H,W) [0,1] → (B,3,H,W) [0,1]


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _av():
    try:
        import av
    except ImportError:
        raise UsageError("video needs PyAV: pip install 'toonlab[video]'") from None
    return av


@dataclass
class VideoResult:
    """What :func:`translate_video` did: frames written, frames that failed to decode (skipped), frame rate,
    whether an audio stream was copied, and the output path."""

    path: Path
    frames: int
    bad_frames: int
    fps: float
    audio: bool


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


def translate_video(src: str | Path, dst: str | Path, translate: TranslateBatch, *, batch_size: int = 4,
                    smoothing: float = 0.0, overwrite: bool = False, codec: str | None = None, crf: int = 18,
                    on_frames: Callable[[int], None] | None = None) -> VideoResult:
    """Translate every frame of ``src`` into ``dst`` (container from its extension), keeping audio and frame rate.

    ``translate`` maps (B,3,H,W) [0,1] RGB to the same; ``on_frames(n)`` is called after each encoded batch.
    Raises ToonlabError (one line naming the file) when the input has no video stream or cannot be opened."""
    av = _av()
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        from toonlab.io import OutputExistsError

        raise OutputExistsError(f"{dst}: exists (use --overwrite)")
    try:
        inp = av.open(str(src))
    except (av.error.FFmpegError, OSError) as e:
        raise ToonlabError(f"{src}: cannot open video ({str(e).splitlines()[0]})") from None
    smoother = TemporalSmoother(smoothing)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.tmp{dst.suffix}")  # keeps the extension: the muxer is chosen from it
    frames = bad = 0
    try:
        if not inp.streams.video:
            raise ToonlabError(f"{src}: no video stream")
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        out = av.open(str(tmp), "w")
        try:
            vout = out.add_stream(_pick_codec(av, codec), rate=rate)
            vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
            vout.pix_fmt = "yuv420p"
            if vout.codec_context.name in ("libx264", "h264"):
                vout.options = {"crf": str(crf)}
            vout.time_base = vin.time_base
            aout = out.add_stream_from_template(ain) if ain is not None else None
            buffer: list = []

            def flush() -> None:
                nonlocal frames
                if not buffer:
                    return
                rgb = np.stack([f.to_ndarray(format="rgb24") for f in buffer])
                x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0
                y = smoother(x, translate(x).float().clamp(0, 1))
                arr = (y * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
                for frame_in, a in zip(buffer, arr):
                    frame = av.VideoFrame.from_ndarray(a, format="rgb24")
                    frame.pts, frame.time_base = frame_in.pts, frame_in.time_base
                    for packet in vout.encode(frame):
                        out.mux(packet)
                frames += len(buffer)
                buffer.clear()
                if on_frames:
                    on_frames(frames)

            streams = [vin] + ([ain] if ain is not None else [])
            for packet in inp.demux(*streams):
                if packet.stream is ain:
                    if packet.dts is not None:  # the demuxer's final flush packet carries no data
                        packet.stream = aout
                        out.mux(packet)
                    continue
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError:
                    bad += 1  # a corrupt packet: reported, never fatal
                    continue
                for frame in decoded:
                    buffer.append(frame)
                    if len(buffer) >= batch_size:
                        flush()
            flush()
            for packet in vout.encode(None):
                out.mux(packet)
        finally:
            out.close()
        if frames == 0:
            raise ToonlabError(f"{src}: no decodable video frames")
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        inp.close()
    return VideoResult(dst, frames, bad, float(rate), ain is not None)
