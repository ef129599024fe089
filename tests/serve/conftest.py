"""Fixtures of the serve tests (helpers live in serve_helpers.py)."""

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def photo_small(astronaut) -> np.ndarray:
    """The astronaut photo at 160×160 (HWC uint8): small enough for fast requests."""
    return np.asarray(Image.fromarray(astronaut).resize((160, 160), Image.LANCZOS))
