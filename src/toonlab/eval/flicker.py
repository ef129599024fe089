"""Flicker of a translated video: the warping error, beside the input's own, and SSIM to the per-frame output.

Warping error of a stream O between frames t−1 and t (both in one shot): mean over non-occluded pixels and channels
of |O_t − warp(O_{t−1}, f_t)|, values in [0,1]; ``f_t`` is the backward flow of the *input* video (DIS on the gray
input, :mod:`toonlab.infer.temporal`) and the non-occluded pixels pass its forward–backward check. The input's own
warping error (same flow, same pixels) is the floor a stream that follows the input exactly would have. Pairs across
a scene cut are skipped. SSIM (:func:`toonlab.eval.metrics.ssim`) of each stream to a reference stream (the
per-frame output) is averaged per shot, leaving out each shot's first frame (identical by construction), and also
over the frames whose occluded fraction is at most ``occlusion_limit`` (default 5 %: a pan's entering border
is occluded in every frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from toonlab.errors import UsageError
from toonlab.eval.metrics import ssim
from toonlab.infer.temporal import CUT_THRESHOLD, FlowEstimator, gray_small, is_cut, remap


def warping_error(prev: np.ndarray, cur: np.ndarray, flow: np.ndarray, valid: np.ndarray) -> float:
    """Mean |cur − remap(prev, flow)| over the ``valid`` pixels and all channels. prev, cur (H,W,C) float32 in
    [0,1]; flow (H,W,2) float32 backward flow in pixels; valid (H,W) bool. NaN when no pixel is valid."""
    if prev.shape != cur.shape or flow.shape != (*cur.shape[:2], 2) or valid.shape != cur.shape[:2]:
        raise UsageError(f"warping_error: shapes differ (prev {prev.shape}, cur {cur.shape}, flow {flow.shape}, "
                         f"valid {valid.shape})")
    if not valid.any():
        return float("nan")
    diff = np.abs(cur.astype(np.float32) - remap(prev.astype(np.float32), flow.astype(np.float32)))
    return float(diff[valid].mean())


@dataclass
class _Stream:
    errors: list[float] = field(default_factory=list)
    ssim_by_shot: list[list[float]] = field(default_factory=list)
    ssim_still: list[float] = field(default_factory=list)
    prev: np.ndarray | None = None


class FlickerMeter:
    """Streams the flicker figures of one video: call :meth:`update` once per frame in order, then
    :meth:`summary`. ``flow_side``: longest side of the gray input frames the flow is computed on (then upsampled;
    larger = finer, slower). ``reference``: name of the stream the others' SSIM is measured against (None: no SSIM).
    Holds one previous frame per stream."""

    def __init__(self, *, flow_side: int = 640, preset: str = "medium", cut_threshold: float = CUT_THRESHOLD,
                 reference: str | None = None, occlusion_limit: float = 0.05):
        self.flow_side, self.cut_threshold, self.reference = flow_side, cut_threshold, reference
        self.occlusion_limit = occlusion_limit
        self.flow = FlowEstimator(preset)
        self.streams: dict[str, _Stream] = {}
        self.prev_gray: np.ndarray | None = None
        self.frames = self.shots = 0

    def update(self, frame: np.ndarray, outputs: dict[str, np.ndarray], *, flow: np.ndarray | None = None,
               valid: np.ndarray | None = None) -> None:
        """``frame``: input (H,W,3) uint8 RGB; ``outputs``: name → (H,W,3) float in [0,1] (or uint8). ``flow`` /
        ``valid``: the exact backward flow (H,W,2) and non-occluded mask (H,W) bool, when known (constructed
        clips), instead of estimating them."""
        shapes = {k: v.shape for k, v in outputs.items()}
        if frame.ndim != 3 or frame.shape[2] != 3 or any(s != frame.shape for s in shapes.values()):
            raise UsageError(f"flicker: frames must all be (H,W,3) of one size, got input {frame.shape}, {shapes}")
        if min(frame.shape[:2]) < 16:  # the SSIM window is 11 px; DIS needs a few pixels too
            raise UsageError(f"flicker: frames of {frame.shape[1]}×{frame.shape[0]} are too small (≥ 16 px a side)")
        if self.streams and set(outputs) != set(self.streams) - {"input"}:
            raise UsageError(f"flicker: the same streams every frame ({', '.join(sorted(self.streams))}), got "
                             f"{', '.join(sorted(outputs))}")
        if self.reference is not None and self.reference not in outputs:
            raise UsageError(f"flicker: reference stream {self.reference!r} missing (got {', '.join(outputs)})")
        streams = {"input": frame.astype(np.float32) / 255.0,
                   **{k: (v.astype(np.float32) / 255.0 if v.dtype == np.uint8 else v.astype(np.float32))
                      for k, v in outputs.items()}}
        gray = gray_small(frame, self.flow_side)
        cut = self.prev_gray is None or is_cut(self.prev_gray, gray, self.cut_threshold)
        if not cut and flow is None:
            fb, ok = self.flow.backward(self.prev_gray, gray)
            h, w = frame.shape[:2]
            flow = cv2.resize(fb, (w, h), interpolation=cv2.INTER_LINEAR) * np.array(
                [w / fb.shape[1], h / fb.shape[0]], np.float32)
            valid = cv2.resize(ok.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        elif not cut and valid is None:
            valid = np.ones(frame.shape[:2], bool)
        self.prev_gray = gray
        self.frames += 1
        self.shots += cut
        for name, img in streams.items():
            st = self.streams.setdefault(name, _Stream())
            if cut:
                st.ssim_by_shot.append([])
            else:
                st.errors.append(warping_error(st.prev, img, flow, valid))
                if self.reference is not None and name not in ("input", self.reference):
                    s = ssim(img, streams[self.reference])
                    st.ssim_by_shot[-1].append(s)
                    if 1.0 - valid.mean() <= self.occlusion_limit:
                        st.ssim_still.append(s)
            st.prev = img

    def summary(self) -> dict:
        """{"frames", "shots", "streams": name → {"warping_error": mean over pairs, "vs_input": ratio to the
        input's, and with a reference: "ssim" (mean over frames), "ssim_per_shot", "ssim_no_occlusion"}}, plus
        "reduction": name → 1 − its warping error / the reference's."""
        def mean(v):
            return float(np.nanmean(v)) if len(v) else float("nan")

        def ratio(a, b):
            return round(a / b, 4) if b > 0 else float("nan")

        base = mean(self.streams["input"].errors) if self.streams else float("nan")
        out: dict = {"frames": self.frames, "shots": self.shots, "streams": {}}
        for name, st in self.streams.items():
            row = {"warping_error": round(mean(st.errors), 6), "vs_input": ratio(mean(st.errors), base)}
            if self.reference is not None and name not in ("input", self.reference):
                row["ssim"] = round(mean([s for shot in st.ssim_by_shot for s in shot]), 4)
                row["ssim_per_shot"] = [round(mean(shot), 4) for shot in st.ssim_by_shot]
                row["ssim_no_occlusion"] = round(mean(st.ssim_still), 4)
            out["streams"][name] = row
        if self.reference is not None and self.reference in self.streams:
            ref = mean(self.streams[self.reference].errors)
            out["reduction"] = {k: round(1.0 - ratio(r["warping_error"], ref), 4) for k, r in out["streams"].items()
                                if k not in ("input", self.reference)}
        return out


def evaluate_video(video: str | Path, *, model: str | None = None, outputs: str | Path | None = None,
                   weight: float | None = None, device: str = "auto", batch_size: int = 4, flow_side: int = 640,
                   max_frames: int | None = None) -> dict:
    """Flicker figures of a video (``toonlab evaluate --video``), streamed frame by frame.

    With ``model`` ("classic", an export, a run dir): translates ``video`` per frame and stabilised
    (:class:`~toonlab.infer.temporal.Stabilizer`, ``weight`` or its default) from the same generator outputs and
    reports both — warping errors, the reduction, SSIM of the stabilised to the per-frame output. With ``outputs``
    (a translated video of the same frame count and size): the warping error of that video beside the input's."""
    import torch

    from toonlab.infer.temporal import DEFAULT_WEIGHT, Stabilizer
    from toonlab.infer.video import iter_frames

    if (model is None) == (outputs is None):
        raise UsageError("evaluate --video needs exactly one of --model (translate it) or --outputs (a video)")
    meter = FlickerMeter(flow_side=flow_side, reference="per_frame" if model is not None else None)
    frames = iter_frames(video)
    if model is None:
        produced = iter_frames(outputs)
        for i, x in enumerate(frames):
            if max_frames is not None and i >= max_frames:
                break
            y = next(produced, None)
            if y is None:
                raise UsageError(f"{outputs}: fewer frames than {video}")
            if y.shape != x.shape:  # encoders pad odd sizes to even
                y = y[:x.shape[0], :x.shape[1]]
            meter.update(x, {"output": y})
        return {"video": str(video), "outputs": str(outputs), **meter.summary()}
    from toonlab.infer.translator import Translator

    translator = Translator.load(model, device=device)
    stab = Stabilizer(weight=DEFAULT_WEIGHT if weight is None else weight)
    batch: list[np.ndarray] = []

    def flush() -> None:
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255.0
        y = translator.translate_tensor(x).float().clamp(0, 1)
        s = stab.fuse(y, stab.motion(x))
        for a, p, q in zip(batch, y.permute(0, 2, 3, 1).cpu().numpy(), s.permute(0, 2, 3, 1).cpu().numpy()):
            meter.update(a, {"per_frame": p, "stabilized": q})
        batch.clear()

    for i, x in enumerate(frames):
        if max_frames is not None and i >= max_frames:
            break
        batch.append(x)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return {"video": str(video), "model": model, "weight": stab.weight, **meter.summary()}


def pan_zoom_clip(texture: np.ndarray, size: tuple[int, int], frames: int, *, pan: tuple[float, float] = (2, 1),
                  zoom: float = 1.0, noise: float = 0.0, seed: int = 0):
    """A clip of known motion: frame t shows ``texture`` (H0,W0,3) uint8 around centre o_t = centre + t·pan, at
    scale s_t = zoom^−t texture pixels per frame pixel (zoom > 1 zooms in), rendered bilinearly at ``size`` = (w, h),
    plus Gaussian noise of std ``noise`` (0–255 units) drawn afresh per frame. Yields (frame (h,w,3) uint8, exact
    backward flow (h,w,2) float32 or None for frame 0, valid (h,w) bool: the flow lands inside frame t−1).
    Whole-pixel pans with zoom 1 move the picture exactly (no resampling between frames)."""
    w, h = size
    rng = np.random.default_rng(seed)
    centre = np.array([(texture.shape[1] - 1) / 2, (texture.shape[0] - 1) / 2])
    m = np.array([(w - 1) / 2, (h - 1) / 2])
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    for t in range(frames):
        o, s = centre + t * np.asarray(pan, float), zoom ** -t
        inv = np.array([[s, 0, o[0] - s * m[0]], [0, s, o[1] - s * m[1]]])  # frame pixel → texture pixel
        img = cv2.warpAffine(texture, inv, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
        if noise > 0:
            img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        if t == 0:
            yield img, None, None
            continue
        o_prev, s_prev = centre + (t - 1) * np.asarray(pan, float), zoom ** -(t - 1)
        # solve o_{t−1} + s_{t−1}(x' − m) = o_t + s_t(x − m) for x', where pixel x of frame t was
        px = m[0] + (o[0] - o_prev[0] + s * (gx - m[0])) / s_prev
        py = m[1] + (o[1] - o_prev[1] + s * (gy - m[1])) / s_prev
        flow = np.stack([px - gx, py - gy], -1).astype(np.float32)
        valid = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
        yield img, flow, valid
