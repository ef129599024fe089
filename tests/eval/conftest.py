"""Eval fixtures: a random-weight FID Inception file in pytorch-fid's key layout (the real one can't be
downloaded offline), written once per session under a fake $TORCH_HOME."""

from pathlib import Path

import pytest
import torch

from toonlab.nn.inception import FID_WEIGHTS_FILE, FIDInceptionV3


def random_inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict generated from FIDInceptionV3's own keys and shapes; BN variances positive; like the
    2019 file, without the ``num_batches_tracked`` counters."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in FIDInceptionV3().state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        r = torch.randn(v.shape, generator=g)
        if k.endswith("running_var"):
            r = r.abs() + 0.5
        elif k.endswith("conv.weight"):
            r = r * (2.0 / v[0].numel()) ** 0.5  # He scale keeps activations finite through 94 layers
        out[k] = r
    return out


@pytest.fixture(scope="session")
def fid_torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub/checkpoints holds a random-weight pt_inception file."""
    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(random_inception_state(), ckpt / FID_WEIGHTS_FILE)
    return home
