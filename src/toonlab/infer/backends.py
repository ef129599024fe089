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
    ``metadata``: the file's toonlab_* properties (model name, config, styles, size multiple, direction).
    ``header``: ``(metadata, input names)`` already read from the file (:func:`onnx_header`); then the session
    (~0.05–0.2 s) opens on the first call, so a cached export that "auto" does not run costs no session."""

    name = "onnxruntime"
    module = None

    def __init__(self, path: str | Path, header: tuple[dict[str, str], list[str]] | None = None):
        if ort_missing_reason():
            raise UsageError("the onnx backend needs onnxruntime: pip install 'toonlab[onnx]'")
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"{self.path}: no such ONNX file")
        self._session = None
        if header is None:
            session = self.session
            header = (dict(session.get_modelmeta().custom_metadata_map), [i.name for i in session.get_inputs()])
        self.metadata = dict(header[0])
        self._has_style = "style" in header[1]

    @property
    def session(self):
        """The ONNX Runtime session, opened on first use."""
        if self._session is None:
            try:
                self._session = self._new_session()
            except Exception as e:  # onnxruntime raises its own exception types for foreign/corrupt files
                raise ToonlabError(f"{self.path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
        return self._session

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


# --- dtype "auto": bf16 where it is measured faster and faithful on this model ------------------------------------
# bf16 replaces float32 only where its output on a real photo, rounded to 8 bits as written, stays within both:
# - PSNR to float32 ≥ 45 dB, an RMS error of 1.4/255 (rounding float32's own output to 8 bits alone is 0.29/255,
#   59 dB): noise below what an 8-bit image shows;
# - no pixel off by more than 4/255 (1.6 % of full scale, under a just-noticeable step in smooth areas).
# AnimeGANv2 in bf16 is 55.7 dB, max 2/255 (passes); CartoonGAN's instance norms put it 44/255 off (fails).
BF16_MIN_PSNR_DB = 45.0
BF16_MAX_ABS_255 = 4.0
# our choice: bf16 must be this much faster to be worth its (small) difference — a margin over timing noise
BF16_MIN_SPEEDUP = 1.1
# the calibration photo's side (the bundled astronaut, resized): large enough for stable timings, ~1 s on AMX
PRECISION_CALIBRATION_SIDE = 256
# timed calls of each precision (best kept): on a loaded 2-core machine two rounds once put AnimeGAN's bf16 at 1.2×
# its float32 time where quiet runs measure 2.8×; the verdict is cached, so a noisy first run would stick
PRECISION_ROUNDS = 3


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86: AVX512-BF16 or AMX; elsewhere oneDNN's bf16 check, e.g.
    Arm's BF16 extension) — where "auto" calibrates bf16 at all. The one probe; tests monkeypatch it."""
    import platform

    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            # oneDNN also "supports" bf16 on plain AVX-512 by converting, which is slower than float32
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return True
    except (AttributeError, RuntimeError):  # a torch build without these probes
        return False


def bf16_verdict(checkpoint: Path, calibration: Callable[[], tuple[Callable, Callable, torch.Tensor,
                                                                   torch.Tensor | None]]) -> dict:
    """How bf16 compares with float32 on one model: ``{"psnr_db", "max_abs_255", "mean_abs_255", "seconds":
    {"fp32", "bf16"}, "side"}``. ``calibration()`` → ``(fp32, bf16, x, style)``, called only when nothing valid is
    cached (building the bf16 copy and the input costs ~30 ms a CLI call): ``fp32`` / ``bf16``: ``(x, style) ->
    (B,3,H,W)`` [0,1] float32, the model's output after its own post-processing; ``x``: (B,3,S,S) [0,1] float32
    (B = one image per style). Fidelity on
    both outputs rounded to 8 bits, the worst image's PSNR; seconds: best of ``PRECISION_ROUNDS`` alternating
    calls after a warm-up each. Measured once per checkpoint digest, torch version and thread count, cached in ``cache_dir()``; an
    absent or malformed cache is measured again, a read-only one next time."""
    import time

    cache = cache_dir() / f"{_digest(checkpoint)}-torch{torch.__version__}-t{torch.get_num_threads()}-bf16.json"
    stored = _read_json(cache)
    try:
        figures = {k: float(stored[k]) for k in ("psnr_db", "max_abs_255", "mean_abs_255")}
        seconds = {k: float(stored["seconds"][k]) for k in ("fp32", "bf16")}
        if (not math.isnan(figures["psnr_db"]) and all(math.isfinite(figures[k]) and figures[k] >= 0
                                                       for k in ("max_abs_255", "mean_abs_255"))
                and all(math.isfinite(v) and v > 0 for v in seconds.values())):
            return {**figures, "seconds": seconds, "side": int(stored["side"])}
    except (KeyError, TypeError, ValueError):
        pass  # absent or malformed: measured again and rewritten
    fp32, bf16, x, style = calibration()
    calls = {"fp32": fp32, "bf16": bf16}
    seconds = {name: float("inf") for name in calls}
    outputs = {}
    with torch.inference_mode():
        for name, call in calls.items():
            outputs[name] = call(x, style)  # the warm-up (oneDNN builds its bf16 kernels here) gives the output
        for _ in range(PRECISION_ROUNDS):
            for name, call in calls.items():
                start = time.perf_counter()
                call(x, style)
                seconds[name] = min(seconds[name], time.perf_counter() - start)
    a, b = ((outputs[k].clamp(0, 1) * 255.0 + 0.5).floor().double() for k in ("fp32", "bf16"))  # as written
    diff = (a - b).abs()
    mse = diff.square().flatten(1).mean(1)  # per image
    worst = float(mse.max())
    verdict = {"psnr_db": 10.0 * math.log10(255.0 ** 2 / worst) if worst > 0 else float("inf"),
               "max_abs_255": float(diff.max()), "mean_abs_255": float(diff.mean()),
               "seconds": seconds, "side": int(x.shape[-1])}
    _write_json(cache, verdict)
    return verdict


def precision_choice(verdict: dict) -> tuple[str, str]:
    """``("bf16" | "fp32", why)`` from :func:`bf16_verdict` and the BF16_* thresholds, e.g. ``("bf16", "bf16:
    55.7 dB to fp32, max 2/255, 2.8× faster")`` or ``("fp32", "fp32: bf16 differs by 44/255 (31.2 dB)")``."""
    psnr, worst = verdict["psnr_db"], verdict["max_abs_255"]
    speedup = verdict["seconds"]["fp32"] / verdict["seconds"]["bf16"]
    if psnr < BF16_MIN_PSNR_DB or worst > BF16_MAX_ABS_255:
        return "fp32", f"fp32: bf16 differs by {worst:.0f}/255 ({psnr:.1f} dB; needs ≥ {BF16_MIN_PSNR_DB:.0f} dB, " \
                       f"≤ {BF16_MAX_ABS_255:.0f}/255)"
    if speedup < BF16_MIN_SPEEDUP:
        return "fp32", f"fp32: bf16 is not faster here ({speedup:.2f}×)"
    return "bf16", f"bf16: {psnr:.1f} dB to fp32, max {worst:.0f}/255, {speedup:.1f}× faster"


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


def onnx_header(path: Path) -> tuple[dict[str, str], list[str]] | None:
    """``(metadata_props, graph input names)`` of an ONNX file, parsed without its external data and without an
    ONNX Runtime session (a few ms against the session's 0.05–0.2 s); None for an unreadable or foreign file."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf raises its own types for foreign/corrupt files
        return None
    return {p.key: p.value for p in model.metadata_props}, [i.name for i in model.graph.input]


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
        header = onnx_header(path)
        if header is not None and header[0].get(CHECKPOINT_DIGEST_KEY) == digest:
            return OrtBackend(path, header), True  # its session opens when it first runs
        print(f"note: the cached ONNX file {path} is not the export of {checkpoint}; exporting it again",
              file=sys.stderr)
    example = trace_example(wrapper, int(info.get("toonlab_size_multiple", "1")))
    atomic_write(path, lambda tmp: write_onnx(wrapper, example, tmp, {**info, CHECKPOINT_DIGEST_KEY: digest}))
    return OrtBackend(path), False
