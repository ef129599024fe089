"""Four real photos shipped with toonlab (scikit-image's sample photos, re-encoded as JPEG so that no [dev]
package is needed at run time): the FID weights' conversion check, the ONNX export check and the real-image recipe
use them. ``LICENSES`` gives each one's licence and author (from ``skimage.data.<name>.__doc__``)."""

from __future__ import annotations

from importlib import resources

import numpy as np

LICENSES: dict[str, tuple[str, str]] = {
    "astronaut": ("public-domain", "NASA"),
    "chelsea": ("CC0-1.0", "Stefan van der Walt"),
    "coffee": ("CC0-1.0", "Rachel Michetti"),
    "rocket": ("public-domain", "SpaceX"),
}
NAMES = tuple(LICENSES)


def load(name: str) -> np.ndarray:
    """The photo ``name`` (one of :data:`NAMES`) as an (H, W, 3) uint8 RGB array."""
    import cv2

    if name not in LICENSES:
        raise KeyError(f"no bundled photo {name!r} (have: {', '.join(NAMES)})")
    raw = np.frombuffer(resources.files(__name__).joinpath(f"{name}.jpg").read_bytes(), np.uint8)
    return cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
