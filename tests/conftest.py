"""Shared fixtures: deterministic torch, a small thread count, real photos from scikit-image."""

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real 512×512 RGB photo, HWC uint8."""
    from skimage import data

    return data.astronaut()
