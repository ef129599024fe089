"""Reading a pretrained network's weight file: ``torch.load(weights_only=True)`` (never unpickles code), one-line
errors naming the file and the network."""

from __future__ import annotations

from pathlib import Path

import torch

from toonlab.errors import ToonlabError


def read_state_dict(path: str | Path, network: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path``; ToonlabError (one line) if it is unreadable or not a dict. ``network`` names the
    weights in the message (e.g. "VGG19")."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / truncated / pickled objects refused by weights_only
        raise ToonlabError(f"{path}: cannot read {network} weights ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise ToonlabError(f"{path}: expected a state dict of {network} weights, got {type(state).__name__}")
    return state
