"""Inference backends behind one call: ``backend(x, style) -> y``, (B,3,H,W) RGB [0,1] (+ style ids (B,) int64 for
multi-style models) → (B,3,H,W) [0,1] float32 on ``x``'s device.

* :class:`TorchBackend` runs the :class:`~toonlab.infer.translator.GeneratorWrapper` module (optionally
  ``torch.compile``-d, optionally channels-last); it is the only backend that can tile with exact image-wide
  normalisation statistics, because those patch the module's norm layers.
* :class:`OrtBackend` runs an ONNX file through ONNX Runtime. ``toonlab export`` writes such files
  (:func:`write_onnx`); ``--backend auto`` exports a checkpoint once into a cache (:func:`cached_onnx`).

The translator chooses among these and the exporter writes for them; this module imports neither (arrows point
one way: translator, export → backends).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from toonlab.errors import ToonlabError, UsageError
from toonlab.paths import cache_root, file_digest

ONNX_OPSET = 17
# the ONNX property that ties a cached export to its checkpoint: the first 32 hex digits of the checkpoint's sha256,
# as in the cache key
CHECKPOINT_DIGEST_KEY = "toonlab_checkpoint_sha256"


class TorchBackend:
    """The PyTorch module, eager or compiled. ``eager=True`` bypasses a compiled forward (tiles: their norm
    layers are patched per pass, which a compiled graph would not see)."""

    name = "torch"

    def __init__(self, module: nn.Module, compile: bool = False, channels_last: bool = False):
        self.module, self.channels_last = module, channels_last
        self._forward: Callable = torch.compile(module, dynamic=False) if compile else module

    def __call__(self, x: torch.Tensor, style: torch.Tensor | None = None, eager: bool = False) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (self.module if eager else self._forward)(x, style).float()


def ort_missing_reason() -> str | None:
    """None when onnxruntime imports, else a one-line reason."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install 'toonlab[onnx]')"
    return None


class OrtBackend:
    """An ONNX file written by :func:`write_onnx`, run by ONNX Runtime (CUDA provider first when present).
    ``metadata``: the file's toonlab_* properties (model name, config, styles, size multiple, direction)."""

    name = "onnxruntime"
    module = None

    def __init__(self, path: str | Path):
        if ort_missing_reason():
            raise UsageError("the onnx backend needs onnxruntime: pip install 'toonlab[onnx]'")
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"{self.path}: no such ONNX file")
        try:
            self.session = self._new_session()
        except Exception as e:  # onnxruntime raises its own exception types for foreign/corrupt files
            raise ToonlabError(f"{self.path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._has_style = any(i.name == "style" for i in self.session.get_inputs())

    def _new_session(self):
        import onnxruntime as ort

        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        opts = ort.SessionOptions()
        # PyTorch's thread count (OMP_NUM_THREADS, torch.set_num_threads) holds for both backends. The memory
        # arena stays on: without it AnimeGAN's G at 512² ran 1.6–1.9× slower (the arena keeps the largest
        # image's buffers reserved for the session's life)
        opts.intra_op_num_threads = torch.get_num_threads()
        return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)

    def _feeds(self, x: torch.Tensor, style: torch.Tensor | None) -> dict[str, np.ndarray]:
        feeds = {"image": np.ascontiguousarray(x.detach().float().cpu().numpy())}
        if self._has_style:
            if style is None:
                style = torch.zeros(x.shape[0], dtype=torch.long)
            feeds["style"] = style.cpu().numpy().astype(np.int64)
        return feeds

    def __call__(self, x: torch.Tensor, style: torch.Tensor | None = None, eager: bool = False) -> torch.Tensor:
        return torch.from_numpy(self.session.run(["output"], self._feeds(x, style))[0]).to(x.device)

    def measure_memory(self, multiple: int = 1) -> tuple[float, float] | None:
        """``(fixed, per_pixel)``: the bytes ONNX Runtime keeps resident for one (1,3,H,W) image ≈ fixed +
        per_pixel·H·W (its arena holds a call's buffers for the session's life), × ``ORT_MEMORY_MARGIN``.
        Fitted in a fresh session of the file from the resident set after a call at each of two square sides;
        cached beside the exports (``cache_dir()``) by the file's digest and the runtime version, so a file is
        measured once. None where the resident set cannot be read (no /proc) or did not grow."""
        import onnxruntime

        cache = cache_dir() / f"{_digest(self.path)}-ort{onnxruntime.__version__}-memory.json"
        fitted = _read_json(cache)
        try:
            fixed, per_pixel = float(fitted["fixed"]), float(fitted["per_pixel"])
            if all(math.isfinite(v) and v >= 0 for v in (fixed, per_pixel)):
                return fixed, per_pixel
        except (KeyError, TypeError, ValueError):
            pass  # absent or malformed: measured again and rewritten
        if _resident_bytes() is None:
            return None
        from toonlab.device import keep_cpu_heap

        keep_cpu_heap(False)  # free memory kept from PyTorch passes would absorb the growth measured here
        session = self._new_session()
        if session.get_providers()[0] != "CPUExecutionProvider":
            return None  # device memory: not in the resident set
        s0, s1 = (max(s, multiple) // multiple * multiple for s in ORT_CALIBRATION_SIDES)
        start = _resident_bytes()
        resident = []
        for side in (s0, s1):
            session.run(["output"], self._feeds(torch.rand(1, 3, side, side), None))
            resident.append(_resident_bytes() - start)
        del session
        if resident[1] <= resident[0]:
            return None
        per_pixel = (resident[1] - resident[0]) / (s1 * s1 - s0 * s0)
        fixed = max(0.0, resident[0] - per_pixel * s0 * s0)
        fitted = {"fixed": ORT_MEMORY_MARGIN * fixed, "per_pixel": ORT_MEMORY_MARGIN * per_pixel,
                  "sides": [s0, s1], "margin": ORT_MEMORY_MARGIN}
        _write_json(cache, fitted)
        return fitted["fixed"], fitted["per_pixel"]


# ONNX Runtime's resident memory for one image, fitted at 128² and 256², against what a fresh session then kept
# resident for a 1024² and a 2048² call (benchmarks/bench_ort_memory.py, results/ort-memory.json): the fit alone
# was 0.84–1.00× the measurement (CTSS, AnimeGAN, CartoonGAN), so a 1.3 margin keeps it above (1.09–1.30×). No one
# factor of PyTorch's estimate would do: ONNX Runtime takes 1.25× it for CartoonGAN and 0.8–1.0× for the others.
ORT_MEMORY_MARGIN = 1.3
ORT_CALIBRATION_SIDES = (128, 256)


# The side of the square image "auto" times both backends on: a common photo size, large enough for PyTorch's
# activation maps to pass glibc's 32 MiB mmap threshold (toonlab.device.keep_cpu_heap) as real photos do.
AUTO_TIMING_SIDE = 512


def faster_backend(ort: OrtBackend, torch_backend: TorchBackend, multiple: int = 1,
                   style: torch.Tensor | None = None) -> tuple[str, dict[str, float]]:
    """``("onnxruntime" | "torch", seconds)``: which backend runs an untiled (1,3,S,S) call faster on this machine,
    S = ``AUTO_TIMING_SIDE`` rounded to ``multiple``; ``seconds`` holds each one's best of two alternating calls
    after a 128² warm-up. Measured once per ONNX file, runtime versions, thread count and heap setting, and
    cached beside the export (``cache_dir()``); a read-only cache measures again next time."""
    import time

    import onnxruntime

    from toonlab.device import keep_cpu_heap

    heap = "keep" if keep_cpu_heap(True) else "return"  # as an untiled PyTorch pass runs
    cache = cache_dir() / (f"{_digest(ort.path)}-ort{onnxruntime.__version__}-torch{torch.__version__}"
                           f"-t{torch.get_num_threads()}-{heap}-speed.json")
    timed = _read_json(cache)
    try:
        seconds = {name: float(timed["seconds"][name]) for name in ("onnxruntime", "torch")}
        if timed["choice"] in seconds and all(math.isfinite(v) and v >= 0 for v in seconds.values()):
            return timed["choice"], seconds
    except (KeyError, TypeError, ValueError):
        pass  # absent or malformed: timed again and rewritten
    side = max(AUTO_TIMING_SIDE // multiple, 1) * multiple
    calls = {"onnxruntime": ort, "torch": torch_backend}
    seconds = {name: float("inf") for name in calls}
    with torch.inference_mode():
        for name, call in calls.items():
            call(torch.rand(1, 3, 128, 128), style)
        x = torch.rand(1, 3, side, side)
        for _ in range(2):
            for name, call in calls.items():
                start = time.perf_counter()
                call(x, style)
                seconds[name] = min(seconds[name], time.perf_counter() - start)
    choice = min(seconds, key=seconds.get)
    _write_json(cache, {"choice": choice, "side": side, "seconds": seconds})
    return choice, seconds


_DIGESTS: dict[tuple, str] = {}


def _digest(path: Path) -> str:
    """The first 32 hex digits of the file's sha256, hashed once per file version (path, size, mtime) in a
    process: the memory fit and the speed choice of one export are both keyed by it."""
    st = Path(path).stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)[:32]
    return _DIGESTS[key]


def _read_json(path: Path) -> dict | None:
    """A measurement cached beside the exports, or None when absent or unreadable (then measured again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    """Cache a measurement atomically; a read-only cache is skipped (measured again next time)."""
    from toonlab.checkpoint import atomic_write

    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data)))
    except ToonlabError:
        pass


def _resident_bytes() -> int | None:
    """This process's resident set in bytes (Linux /proc), or None."""
    import os

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def onnx_metadata(model: nn.Module, meta: dict) -> dict[str, str]:
    """The toonlab_* properties an exported file carries, from a built model and its export metadata."""
    return {"toonlab_model": meta["model"], "toonlab_config": meta.get("config", "{}"),
            "toonlab_styles": json.dumps(json.loads(meta.get("styles", "[]"))),
            "toonlab_size_multiple": str(int(getattr(model, "size_multiple", 1))),
            "toonlab_direction": getattr(model, "direction", "photo2cartoon"),
            "toonlab_input_order": meta.get("input_order", "rgb")}


def trace_example(wrapper: nn.Module, multiple: int) -> tuple[torch.Tensor, ...]:
    """An input to trace ``wrapper`` with: (1,3,S,S) with S ≥ 64 a multiple of ``multiple`` (+ a style id)."""
    side = max(64, 2 * multiple) // multiple * multiple
    example = (torch.rand(1, 3, side, side),)
    if getattr(wrapper, "multi_style", False):
        example = example + (torch.zeros(1, dtype=torch.long),)
    return example


def write_onnx(wrapper: nn.Module, example: tuple, path: str | Path, info: dict[str, str],
               opset: int = ONNX_OPSET) -> None:
    """Export ``wrapper`` (a GeneratorWrapper, float32 on CPU) to ``path`` with dynamic batch/H/W and ``info``
    as metadata_props. Not atomic: callers write to a temporary path and rename."""
    import onnx

    names = ["image"] + (["style"] if getattr(wrapper, "multi_style", False) else [])
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}}
    if "style" in names:
        axes["style"] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # the legacy TorchScript-based exporter: dynamic H/W through dynamic_axes, no onnxscript rewriting needed;
        # its tracer/constant-folding warnings concern shape checks, not results (callers verify the export)
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, example, str(path), input_names=names, output_names=["output"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    model = onnx.load(str(path))
    for k, v in info.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))


def cache_dir() -> Path:
    """``$TOONLAB_CACHE/onnx`` or ``~/.cache/toonlab/onnx``."""
    return cache_root() / "onnx"


def cached_onnx(checkpoint: Path, wrapper: nn.Module, info: dict[str, str]) -> tuple[OrtBackend, bool]:
    """ONNX Runtime on the export of ``checkpoint`` from the cache, written on first use; returns
    ``(backend, was_cached)``. Key: the checkpoint file's sha256 + the onnxruntime, torch and toonlab versions (a
    new exporter or runtime gets a fresh file). The file also carries the checkpoint's digest
    (``toonlab_checkpoint_sha256``), checked before use: a cached file that is not this checkpoint's export
    (another model's copied over it, a foreign or unreadable file) is exported again. ``wrapper`` must be the
    checkpoint's GeneratorWrapper in float32 on CPU."""
    import onnxruntime

    from toonlab import __version__
    from toonlab.checkpoint import atomic_write

    digest = _digest(checkpoint)
    key = f"{digest}-ort{onnxruntime.__version__}-torch{torch.__version__}-tl{__version__}"
    path = cache_dir() / f"{key}.onnx"
    if path.is_file():
        try:
            ort = OrtBackend(path)
        except ToonlabError:
            ort = None
        if ort is not None and ort.metadata.get(CHECKPOINT_DIGEST_KEY) == digest:
            return ort, True
        print(f"note: the cached ONNX file {path} is not the export of {checkpoint}; exporting it again",
              file=sys.stderr)
    example = trace_example(wrapper, int(info.get("toonlab_size_multiple", "1")))
    atomic_write(path, lambda tmp: write_onnx(wrapper, example, tmp, {**info, CHECKPOINT_DIGEST_KEY: digest}))
    return OrtBackend(path), False
