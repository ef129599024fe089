"""CycleGAN baseline (Zhu et al. 2017), the row the papers compare against: toon2real's networks and losses
without spectral norm, with CycleGAN's own defaults.

Choices (from the CycleGAN paper, §4 and appendix 7.2): 9 residual blocks "for 256×256 or higher-resolution
training images" (6 for 128×128 — set ``n_blocks: 6`` with ``size: 128`` to compare with toon2real at the seeds'
size), the 70×70 PatchGAN (512 layer at stride 1), LSGAN, λ_cyc = 10, 50-image pools, lr 2e-4, Adam(0.5, 0.999),
batch 1, 200 epochs (100 constant + 100 linear decay — the decay is the trainer's option). Identity loss stays off
as in toon2real, so the two rows differ only in spectral norm, depth and D layout; set ``lambda_identity: 0.5`` for
CycleGAN's photo↔painting setting. Translator: G_c (photo → cartoon, ``translate: photo2cartoon``), since the
CycleGAN rows of the papers' tables (CTSS Table I, seed 000 Table 1) cartoonize photos; ``translate:
cartoon2photo`` exports G_r as toon2real does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from toonlab.config import ranged
from toonlab.models.base import register
from toonlab.models.toon2real import Toon2Real


@register("cyclegan")
class CycleGAN(Toon2Real):
    """toon2real without spectral norm, 9 residual blocks, 70×70 PatchGAN, 256²."""

    @dataclass
    class Config(Toon2Real.Config):
        n_blocks: int = ranged(9, ge=0)
        d_layout: Literal["table2", "patchgan70"] = "patchgan70"
        spectral_norm: bool = False
        translate: Literal["cartoon2photo", "photo2cartoon"] = "photo2cartoon"

    default_size = 256
