"""Flow-guided temporal stability for video: each frame's translation is fused with the previous *output* warped
to the current frame by optical flow computed on the *input* frames.

    O_t = G(x_t) + w · c_t · (warp(O_{t−1}, f_t) − G(x_t))

``f_t`` is the backward flow (each pixel of frame t → where it was in frame t−1), estimated by OpenCV's DIS on
downscaled grayscale input frames (no new dependency). ``c_t`` ∈ [0,1] is a per-pixel confidence: 0 where the
forward–backward check fails (occlusion / disocclusion, Sundaram et al. 2010: |f_b + f_f(x + f_b)|² ≤
0.01 (|f_b|² + |f_f(x + f_b)|²) + 0.5 px²) or the warp lands outside the frame, and falling linearly to 0 as the
warped previous *input* departs from the current input in any colour channel (a flow error, a lighting change, an
object moving over a background of the same brightness); the mask is eroded by
one low-resolution pixel so ghosts do not bleed across occlusion borders. ``w`` is the fusion weight. A scene cut
(the rule of ``prepare frames``: mean |Δ| of consecutive 64×36 gray thumbnails above 30 on 0–255) or a change of
frame size resets the state, so the first frame of each shot is exactly the per-frame output.

The two halves keep separate state so a video pipeline can run them on different threads: :meth:`Stabilizer.motion`
(input side: flows, confidence, cuts — cheap OpenCV calls that release the GIL) and :meth:`Stabilizer.fuse` (output
side: warp and blend; cv2.remap on CPU, ``grid_sample`` where the outputs live on a GPU). Memory: one previous
input (small gray) and one previous output — a stream is never held whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from toonlab.data.prepare.frames import CUT_THRESHOLD, CUT_THUMB, thumb_difference
from toonlab.errors import UsageError

# Measured on the constructed clips and the real pan/zoom clip for CTSS, AnimeGAN and the classic
# (benchmarks/README.md, issue 26): the warping error falls ≥ 50 % while SSIM to the per-frame output stays ≥ 0.9.
DEFAULT_WEIGHT = 0.7
_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


def to_uint8_frames(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """(B,3,H,W) / (3,H,W) tensor in [0,1] or (B,H,W,3) / (H,W,3) uint8 array → (B,H,W,3) uint8 RGB."""
    if torch.is_tensor(frames):
        t = frames[None] if frames.dim() == 3 else frames
        if t.dim() != 4 or t.shape[1] != 3:
            raise UsageError(f"expected RGB frames (B,3,H,W) or (3,H,W), got shape {tuple(frames.shape)}")
        return (t.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    a = np.asarray(frames)
    a = a[None] if a.ndim == 3 else a
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise UsageError(f"expected uint8 RGB frames (B,H,W,3) or (H,W,3), got {a.dtype} {a.shape}")
    return a


def downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """(H,W,3) uint8 RGB → (h,w,3) uint8 with max(h,w) ≤ max_side (area filter; unchanged when small enough)."""
    scale = min(1.0, max_side / max(rgb.shape[:2]))
    if scale == 1.0:
        return rgb
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def gray_small(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """(H,W,3) uint8 RGB → (h,w) uint8 gray with max(h,w) ≤ max_side (area-downscaled)."""
    return cv2.cvtColor(downscale(rgb, max_side), cv2.COLOR_RGB2GRAY)


def is_cut(prev_gray: np.ndarray, gray: np.ndarray, threshold: float = CUT_THRESHOLD) -> bool:
    """Scene cut between two gray frames (any size, uint8): mean |Δ| of their 64×36 thumbnails > ``threshold``."""
    if prev_gray.shape != gray.shape:
        return True
    return thumb_difference(cv2.resize(prev_gray, CUT_THUMB, interpolation=cv2.INTER_AREA),
                            cv2.resize(gray, CUT_THUMB, interpolation=cv2.INTER_AREA)) > threshold


@lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y), each (h,w) float32; cached (read-only) since every frame of a stream needs them."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


def remap(image: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Backward warp: ``out[y, x] = image[y + flow[y,x,1], x + flow[y,x,0]]`` (bilinear, border replicated).
    image (H,W) or (H,W,C) float32/uint8; flow (H,W,2) float32 in pixels. Returns image's shape and dtype."""
    gx, gy = _grid(*flow.shape[:2])
    return cv2.remap(image, gx + flow[..., 0], gy + flow[..., 1], interpolation, borderMode=cv2.BORDER_REPLICATE)


def warp_tensor(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """:func:`remap` in PyTorch (``grid_sample``, any device): image (B,C,H,W), flow (B,2,H,W) in pixels (x, y)."""
    b, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=image.device, dtype=flow.dtype),
                            torch.arange(w, device=image.device, dtype=flow.dtype), indexing="ij")
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0  # align_corners=True: pixel centres at −1 … 1
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class FlowEstimator:
    """DIS optical flow between gray frames plus the forward–backward occlusion check.

    ``preset``: "ultrafast" | "fast" | "medium" (OpenCV's DIS presets). One instance per thread (DIS is stateful)."""

    def __init__(self, preset: str = "medium"):
        if preset not in _PRESETS:
            raise UsageError(f"unknown flow preset {preset!r} ({', '.join(_PRESETS)})")
        self.dis = cv2.DISOpticalFlow_create(_PRESETS[preset])

    def backward(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gray (h,w) uint8 frames t−1, t → (backward flow (h,w,2) float32 in pixels: pixel x of frame t was at
        x + flow in frame t−1; valid (h,w) bool: passes the forward–backward check and stays inside the frame)."""
        fb = self.dis.calc(cur, prev, None)
        ff = self.dis.calc(prev, cur, None)
        return fb, consistent(fb, ff)


def consistent(fb: np.ndarray, ff: np.ndarray) -> np.ndarray:
    """(h,w) bool: the backward flow ``fb`` (t → t−1) and the forward flow ``ff`` (t−1 → t), both (h,w,2)
    float32 pixels, cancel (Sundaram et al. 2010's test) and x + fb(x) lies inside the frame."""
    h, w = fb.shape[:2]
    ff_at = remap(ff, fb)  # forward flow where each pixel came from
    err = ((fb + ff_at) ** 2).sum(-1)
    tol = 0.01 * ((fb ** 2).sum(-1) + (ff_at ** 2).sum(-1)) + 0.5
    gx, gy = _grid(h, w)
    px, py = gx + fb[..., 0], gy + fb[..., 1]
    inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    return (err <= tol) & inside


@dataclass
class Motion:
    """One frame's input-side analysis. ``flow`` (h,w,2) float32 backward flow at the analysis resolution
    (pixels of that resolution), ``confidence`` (h,w) float32 in [0,1], ``cut``: True = start of a shot (no
    fusion); ``flow``/``confidence`` are None then."""

    cut: bool
    flow: np.ndarray | None = None
    confidence: np.ndarray | None = None


class Stabilizer:
    """Temporal stabilizer for a stream of frames (see the module docstring).

    ``translate``: any callable (B,3,H,W) [0,1] → (B,3,H,W) [0,1] — a :class:`~toonlab.infer.translator.Translator`
    (``toonlab.load(...)``), a function; None when only :meth:`motion` / :meth:`fuse` are used (the video path).
    ``weight`` ∈ [0,1): fusion weight w (0 = per-frame output). ``flow_side``: longest side of the frames the flow is
    computed on. ``preset``: DIS preset. ``photo_tolerance``: |x_t − warp(x_{t−1})| (0–1, largest channel, 5×5
    mean) at which the confidence reaches 0; it is 1 up to half of it. ``cut_threshold``: see :func:`is_cut`.
    ``warp``: "auto" (OpenCV for CPU outputs, ``grid_sample`` otherwise), "opencv" or "torch".

    Frames must come in order; call :meth:`reset` between unrelated streams. ``stab(frames)`` translates and fuses
    a batch: (B,3,H,W)/(3,H,W) tensors in [0,1] or (B,H,W,3)/(H,W,3) uint8 arrays, returning the same kind."""

    def __init__(self, translate: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                 weight: float = DEFAULT_WEIGHT, flow_side: int = 320, preset: str = "medium",
                 photo_tolerance: float = 0.1, cut_threshold: float = CUT_THRESHOLD,
                 warp: Literal["auto", "opencv", "torch"] = "auto"):
        if not 0.0 <= weight < 1.0:
            raise UsageError(f"stabilize weight must be in [0, 1), got {weight}")
        if flow_side < 16:
            raise UsageError(f"flow side must be ≥ 16 pixels, got {flow_side}")
        if photo_tolerance <= 0:
            raise UsageError(f"photo tolerance must be > 0, got {photo_tolerance}")
        if warp not in ("auto", "opencv", "torch"):
            raise UsageError(f"unknown warp {warp!r} (auto, opencv, torch)")
        self.translate, self.weight, self.flow_side = translate, weight, flow_side
        self.photo_tolerance, self.cut_threshold, self.warp = photo_tolerance, cut_threshold, warp
        self.flow = FlowEstimator(preset)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next frame starts a shot."""
        self._prev_small: np.ndarray | None = None  # the previous input, downscaled RGB
        self._prev_out: torch.Tensor | np.ndarray | None = None

    # --- input side -----------------------------------------------------------------------------------------
    def motion(self, frames: torch.Tensor | np.ndarray) -> list[Motion]:
        """Analyse the next input frames ((B,3,H,W) [0,1] tensor or (B,H,W,3) uint8), in stream order."""
        result = []
        for rgb in to_uint8_frames(frames):
            small = downscale(rgb, self.flow_side)
            gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
            prev_small, self._prev_small = self._prev_small, small
            prev = cv2.cvtColor(prev_small, cv2.COLOR_RGB2GRAY) if prev_small is not None else None
            # a 1×1 frame has no flow (DIS needs two pixels) and nothing to stabilise
            if self.weight == 0.0 or prev is None or gray.size < 2 or is_cut(prev, gray, self.cut_threshold):
                result.append(Motion(cut=True))
                continue
            fb, valid = self.flow.backward(prev, gray)
            # dilate the occluded set by one pixel: bilinear upsampling would otherwise blend ghosts into its edge
            valid = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
            # 5×5 box mean: per-pixel noise must not lower the confidence, only a consistent difference
            diff = np.abs(remap(prev_small, fb).astype(np.float32) - small.astype(np.float32)).max(-1) / 255.0
            diff = cv2.blur(diff, (5, 5))
            photo = np.clip(2.0 - 2.0 * diff / self.photo_tolerance, 0.0, 1.0)
            result.append(Motion(cut=False, flow=fb, confidence=valid.astype(np.float32) * photo))
        return result

    # --- output side ----------------------------------------------------------------------------------------
    def fuse(self, outputs: torch.Tensor, motions: list[Motion]) -> torch.Tensor:
        """Fuse per-frame outputs (B,3,H,W) [0,1] with the running state; ``motions`` from :meth:`motion` for the
        same frames. Returns (B,3,H,W) float32 on ``outputs``' device; a cut frame is returned unchanged."""
        if outputs.dim() != 4 or outputs.shape[1] != 3 or len(motions) != outputs.shape[0]:
            raise UsageError(f"fuse: expected (B,3,H,W) outputs with one motion per frame, got "
                             f"{tuple(outputs.shape)} and {len(motions)} motions")
        use_torch = self.warp == "torch" or (self.warp == "auto" and outputs.device.type != "cpu")
        frames = []
        for y, m in zip(outputs.float(), motions):
            state = self._prev_out
            if m.cut or state is None or tuple(state.shape[-2:] if use_torch else state.shape[:2]) != y.shape[-2:]:
                fused = y
            elif use_torch:
                fused = self._fuse_torch(y, state, m)
            else:
                fused = torch.from_numpy(self._fuse_cv(y, state, m)).permute(2, 0, 1)
            self._prev_out = fused if use_torch else fused.permute(1, 2, 0).contiguous().numpy()
            frames.append(fused.to(outputs.device))
        return torch.stack(frames)

    def _full_res(self, m: Motion, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """The motion's flow (H,W,2, in output pixels) and confidence (H,W) at the output size (bilinear)."""
        sy, sx = h / m.flow.shape[0], w / m.flow.shape[1]
        flow = cv2.resize(m.flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= sx
        flow[..., 1] *= sy
        return flow, cv2.resize(m.confidence, (w, h), interpolation=cv2.INTER_LINEAR)

    def _fuse_cv(self, y: torch.Tensor, prev: np.ndarray, m: Motion) -> np.ndarray:
        h, w = y.shape[-2:]
        flow, conf = self._full_res(m, h, w)
        cur = y.permute(1, 2, 0).contiguous().numpy()
        a = (self.weight * conf)[..., None]
        return cur + a * (remap(prev, flow) - cur)

    def _fuse_torch(self, y: torch.Tensor, prev: torch.Tensor, m: Motion) -> torch.Tensor:
        h, w = y.shape[-2:]
        dev = y.device
        flow = torch.from_numpy(m.flow).to(dev).permute(2, 0, 1)[None]
        conf = torch.from_numpy(m.confidence).to(dev)[None, None]
        scale = torch.tensor([w / m.flow.shape[1], h / m.flow.shape[0]], device=dev).view(1, 2, 1, 1)
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False) * scale
        conf = F.interpolate(conf, size=(h, w), mode="bilinear", align_corners=False)
        warped = warp_tensor(prev[None], flow)[0]
        return y + self.weight * conf[0] * (warped - y)

    # --- both -----------------------------------------------------------------------------------------------
    def __call__(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Translate the next frames with ``translate`` and fuse them: a (B,3,H,W) / (3,H,W) tensor in [0,1] →
        float32 of that shape; (B,H,W,3) / (H,W,3) uint8 → uint8 of that shape."""
        if self.translate is None:
            raise UsageError("Stabilizer(translate=None) only fuses: call motion() and fuse()")
        motions = self.motion(frames)
        if torch.is_tensor(frames):
            batch = frames[None] if frames.dim() == 3 else frames
            out = self.fuse(self.translate(batch.float()).float().clamp(0, 1), motions)
            return out[0] if frames.dim() == 3 else out
        u8 = to_uint8_frames(frames)
        x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
        out = to_uint8_frames(self.fuse(self.translate(x).float().clamp(0, 1), motions))
        return out[0] if np.asarray(frames).ndim == 3 else out
