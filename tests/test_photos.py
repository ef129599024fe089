"""The shipped sample photos are scikit-image's, decoded as RGB (a JPEG re-encoding: close, not equal)."""

import numpy as np
import pytest
from skimage import data

from toonlab import photos


@pytest.mark.parametrize("name", photos.NAMES)
def test_shipped_photo_matches_scikit_image(name):
    ours, theirs = photos.load(name).astype(np.int16), getattr(data, name)()[..., :3].astype(np.int16)
    assert ours.shape == theirs.shape and ours.dtype == np.int16
    assert np.abs(ours - theirs).mean() < 4.0  # JPEG error; swapped channels or another photo give > 20
    assert np.abs(ours[..., ::-1] - theirs).mean() > 20.0  # BGR order would be caught


def test_unknown_photo_is_a_key_error():
    with pytest.raises(KeyError, match="no bundled photo"):
        photos.load("lena")
