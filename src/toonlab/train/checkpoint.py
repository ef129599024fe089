"""Training state checkpoints: one safetensors file, no pickle.

Any nested structure of dicts / lists / tuples / numbers / strings / tensors / numpy arrays (network and optimiser
state dicts, scaler state, RNG states, counters) is split into its tensors — stored as safetensors tensors under
generated keys — and a JSON skeleton stored in the file's metadata (``format`` = "toonlab-state/1", ``state``),
which records where each tensor goes and which containers were tuples or had non-string keys. Loading never runs
code from the file. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toonlab.checkpoint import atomic_write
from toonlab.errors import ToonlabError

STATE_FORMAT = "toonlab-state/1"


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").clone().contiguous()  # clone: safetensors refuses shared storage
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _flatten(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a training state")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy()
    if "__tuple__" in obj:
        return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_hashable(_unflatten(k, tensors)): _unflatten(v, tensors) for k, v in obj["__items__"]}
    return {k: _unflatten(v, tensors) for k, v in obj.items()}


def _hashable(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def save_state(path: str | Path, state: dict) -> Path:
    """Atomically write a nested ``state`` dict to ``path`` (.safetensors)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors)
    meta = {"format": STATE_FORMAT, "state": json.dumps(skeleton)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_state(path: str | Path) -> dict:
    """Read a state written by :func:`save_state`; a missing, truncated or foreign file raises ToonlabError."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ToonlabError(f"{path}: no such training state file")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != STATE_FORMAT:
                raise ToonlabError(f"{path}: not a toonlab training state (metadata format={meta.get('format')!r})")
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
        return _unflatten(json.loads(meta["state"]), tensors)
    except ToonlabError:
        raise
    except Exception as e:  # safetensors/json raise several types for truncated or foreign files
        raise ToonlabError(f"{path}: not a readable training state ({str(e).splitlines()[0]})") from None


def rng_state() -> dict:
    """RNG states of python, numpy and torch (CPU and every CUDA device)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_init_weights(path: str | Path) -> dict[str, dict[str, torch.Tensor]] | dict[str, torch.Tensor]:
    """Weights for ``--init-from``: a training state → ``{"networks": {name: state_dict}}``; an export file →
    ``{"translator": state_dict}``. Anything else raises ToonlabError (one line, names the file)."""
    from safetensors import safe_open

    from toonlab.checkpoint import read_export_metadata

    path = Path(path)
    if not path.is_file():
        raise ToonlabError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            fmt = (f.metadata() or {}).get("format")
    except Exception as e:
        raise ToonlabError(f"{path}: not a readable safetensors checkpoint ({str(e).splitlines()[0]})") from None
    if fmt == STATE_FORMAT:
        return {"networks": load_state(path)["networks"]}
    meta = read_export_metadata(path)  # raises for foreign files
    from safetensors.torch import load_file

    try:
        return {"translator": load_file(str(path)), "model": meta["model"]}
    except Exception as e:
        raise ToonlabError(f"{path}: not a readable export checkpoint ({str(e).splitlines()[0]})") from None
