"""Eval fixtures: a random-weight FID Inception file in pytorch-fid's key layout (the real one can't be
downloaded offline), written once per session under a fake $TORCH_HOME, and allowed (labelled UNVERIFIED) in
every test here."""

from pathlib import Path

import pytest
import torch

from toonlab.nn.inception import ALLOW_UNVERIFIED_ENV, FID_WEIGHTS_FILE, random_inception_state


@pytest.fixture(scope="session")
def fid_torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub/checkpoints holds a random-weight pt_inception file."""
    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(random_inception_state(), ckpt / FID_WEIGHTS_FILE)
    return home


@pytest.fixture(autouse=True)
def _allow_unverified_fid(monkeypatch):
    """The random weights above are not the FID Inception: loading them needs the explicit opt-in."""
    monkeypatch.setenv(ALLOW_UNVERIFIED_ENV, "1")
