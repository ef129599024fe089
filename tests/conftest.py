"""Shared fixtures: deterministic torch, a small thread count, real photos from scikit-image."""

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session", autouse=True)
def offline_vgg19(tmp_path_factory):
    """Every test runs offline: a random torchvision-layout VGG19 (``features.0..25`` only) is written to a
    temporary ``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth`` and TORCH_HOME points there for the session."""
    from toonlab.nn.vgg import VGG19_FILE, _build_features

    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(1234)
    state = {f"features.{k}": torch.randn(v.shape, generator=gen) * 0.05
             for k, v in _build_features().state_dict().items()}
    torch.save(state, folder / VGG19_FILE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        yield folder / VGG19_FILE


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real 512×512 RGB photo, HWC uint8."""
    from skimage import data

    return data.astronaut()
