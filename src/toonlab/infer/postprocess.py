"""Post-processing of a generator's output: the CTSS colour recipe, keep-colours, strength.

All steps act on (B,3,H,W) RGB in [0,1] and use ``toonlab.ops`` colour functions. Order: match the input's mean
luminance (authors' code) → saturation → contrast → brightness (CTSS inference, PAPERS.md §1: +40 % saturation by
default) → keep the input's chroma (``keep_colors``: output's Y, input's U and V) → blend with the input
(``strength``: 0 = input, 1 = full effect).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch

from toonlab.errors import UsageError


@dataclass(frozen=True)
class PostProcess:
    """Post-processing knobs. Factors are multiplicative (1 = unchanged); ``saturation=1.4`` is CTSS's +40 %."""

    saturation: float = 1.0
    contrast: float = 1.0
    brightness: float = 1.0
    match_luminance: bool = False
    keep_colors: bool = False
    strength: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.strength <= 1.0:
            raise UsageError(f"--strength must be in [0, 1], got {self.strength}")
        for name in ("saturation", "contrast", "brightness"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} factor must be >= 0, got {getattr(self, name)}")

    @classmethod
    def for_model(cls, model_config: Mapping[str, Any] | None, **overrides) -> "PostProcess":
        """Defaults from a model's config (``saturation_boost``: a factor, CTSS's 1.4 = +40 %), then the
        non-None ``overrides``."""
        cfg = dict(model_config or {})
        base = cls(saturation=float(cfg.get("saturation_boost", 1.0) or 1.0))
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def is_identity(self) -> bool:
        return (self.saturation == 1.0 and self.contrast == 1.0 and self.brightness == 1.0
                and not self.match_luminance and not self.keep_colors and self.strength == 1.0)

    def __call__(self, out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        """``out`` (B,3,H,W) generator output and ``inp`` (B,3,H,W) the input, both in [0,1] → (B,3,H,W) [0,1]."""
        if self.is_identity:
            return out
        from toonlab import ops

        y = out
        if self.match_luminance:
            y = ops.match_luminance(y, inp)
        if self.saturation != 1.0:
            y = ops.adjust_saturation(y, self.saturation)
        if self.contrast != 1.0:
            y = ops.adjust_contrast(y, self.contrast)
        if self.brightness != 1.0:
            y = ops.adjust_brightness(y, self.brightness)
        if self.keep_colors:
            y = keep_input_colors(y, inp)
        if self.strength != 1.0:
            y = self.strength * y + (1.0 - self.strength) * inp
        return y.clamp(0.0, 1.0)


def keep_input_colors(out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """Luminance (Y) of ``out`` with the chroma (U, V) of ``inp``; both (B,3,H,W) RGB [0,1] → RGB [0,1]."""
    from toonlab import ops

    yuv_out, yuv_in = ops.rgb_to_yuv(out), ops.rgb_to_yuv(inp)
    return ops.yuv_to_rgb(torch.cat([yuv_out[:, :1], yuv_in[:, 1:]], dim=1)).clamp(0.0, 1.0)
