"""Training state checkpoints: one safetensors file, no pickle.

Any nested structure of dicts / lists / tuples / numbers / strings / tensors / numpy arrays (network and optimiser
state dicts, scaler state, RNG states, counters) is split into its tensors — stored as safetensors tensors under
generated keys — and a JSON skeleton stored in the file's metadata (``format`` = "toonlab-state/1", ``state``),
which records where each tensor goes and which containers were tuples or had non-string keys, and ``sha256``, a
digest of the tensors and the skeleton checked on load. Loading never runs code from the file. Writes are atomic
(temp file + rename).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toonlab.checkpoint import atomic_write, tensors_digest, verify_digest
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
    text = json.dumps(skeleton)
    meta = {"format": STATE_FORMAT, "state": text, "sha256": tensors_digest(tensors, text)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_state(path: str | Path) -> dict:
    """Read a state written by :func:`save_state`; a missing, truncated, corrupt (checksum), checksum-less or
    foreign file, or one whose network weights are not finite, raises ToonlabError."""
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
        if "sha256" not in meta:  # every state toonlab writes has one: a state without it was rewritten
            raise ToonlabError(f"{path}: training state has no checksum (sha256); not trusted")
        verify_digest(path, tensors, meta, meta["state"])
        state = _unflatten(json.loads(meta["state"]), tensors)
    except ToonlabError:
        raise
    except Exception as e:  # safetensors/json raise several types for truncated or foreign files
        raise ToonlabError(f"{path}: not a readable training state ({str(e).splitlines()[0]})") from None
    for part in ("networks", "ema"):  # the trainer only saves finite weights (non-finite steps are rolled back)
        bad = _non_finite(state.get(part) if isinstance(state, dict) else None, part)
        if bad is not None:
            raise ToonlabError(f"{path}: non-finite weights in {bad}; not resuming from it")
    return state


def _non_finite(obj: Any, where: str) -> str | None:
    """The dotted key of the first floating tensor in ``obj`` holding NaN/inf, or None."""
    if isinstance(obj, torch.Tensor):
        return where if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    if isinstance(obj, dict):
        for k, v in obj.items():
            bad = _non_finite(v, f"{where}.{k}")
            if bad is not None:
                return bad
    return None


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
    ``{"translator": state_dict, "model": name, "config": the export's model config}``. Anything else raises ToonlabError (one line, names the file)."""
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
        weights = load_file(str(path))
    except Exception as e:
        raise ToonlabError(f"{path}: not a readable export checkpoint ({str(e).splitlines()[0]})") from None
    verify_digest(path, weights, meta)
    try:
        config = json.loads(meta.get("config", "{}"))
    except ValueError:
        config = {}
    return {"translator": weights, "model": meta["model"], "config": config if isinstance(config, dict) else {}}


class RunLock:
    """``RUN_DIR/train.lock``, held through an OS lock (``flock``) on the file, so that two trainers never write
    one run dir. The kernel releases the lock when its holder dies, however it dies: a lock file left by a killed
    trainer, or holding a pid that now names another process (or this one, after an exec), is simply taken. The
    file also records the holder's pid and host, for the message a second trainer gets."""

    NAME = "train.lock"

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / self.NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        import fcntl
        import os
        import platform

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise ToonlabError(f"cannot create the run dir lock {self.path} ({e.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                who = (f"pid {holder.get('pid')} on host {holder.get('host')}" if holder is not None
                       else "another trainer")
                raise ToonlabError(f"{self.path.parent} is in use by {who} (lock {self.path}); wait for it to "
                                   f"finish or stop it") from None
            except OSError as e:
                os.close(fd)
                raise ToonlabError(f"cannot lock {self.path} ({e.strerror})") from None
            try:  # a holder that released meanwhile unlinked the file we opened: lock the new one instead
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": platform.node()}).encode(), 0)
            self._fd = fd
            return

    @staticmethod
    def _holder(fd: int) -> dict | None:
        import os

        try:
            holder = json.loads(os.pread(fd, 4096, 0))
            return holder if isinstance(holder, dict) else None
        except (OSError, ValueError):  # being written by the holder right now
            return None

    def release(self) -> None:
        import os

        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still locked: the next trainer locks a fresh file
            os.close(self._fd)
            self._fd = None
