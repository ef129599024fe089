"""toonlab.ops: pure, batch-first (B,C,H,W) tensor functions (filters, edges, colour, patches, smoothing)."""

from toonlab.ops._checks import OpsInputError
from toonlab.ops.color import (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    match_luminance,
    rgb_to_gray,
    rgb_to_yuv,
    yuv_to_rgb,
)
from toonlab.ops.edges import ctss_edge_map, high_pass
from toonlab.ops.filters import box_filter, guided_filter, self_guided_filter
from toonlab.ops.patches import num_patches, patch_scores, sliding_patches, topk_patches
from toonlab.ops.smoothing import edge_smooth

__all__ = [
    "OpsInputError",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "box_filter",
    "ctss_edge_map",
    "edge_smooth",
    "guided_filter",
    "high_pass",
    "match_luminance",
    "num_patches",
    "patch_scores",
    "rgb_to_gray",
    "rgb_to_yuv",
    "self_guided_filter",
    "sliding_patches",
    "topk_patches",
    "yuv_to_rgb",
]
