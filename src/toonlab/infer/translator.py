"""Translator: a checkpoint (or the classic filter, or an ONNX file) as a callable on images of any size.

    t = Translator.load("runs/ctss")   # run dir → its latest export; or FILE.safetensors, FILE.onnx, "classic"
    cartoon = t(pil_image)             # PIL → PIL, HWC uint8 ndarray → ndarray, (B,3,H,W) [0,1] → tensor
    t(images_list, style="shinkai")    # many small images: batched by size

The model's config travels with its weights, so loading needs no architecture flags. Inputs are reflect-padded to
the network's ``size_multiple`` (tiny or thin ones replicate-padded to a minimum side) and cropped back. Each call
is planned (:meth:`Translator.plan`): untiled whenever the network's measured activation peak at that size fits
the memory budget (default: a fraction of the memory actually free), else layer-streamed where the network
streams (``toonlab.infer.streaming``: exact statistics), else overlapping tiles with image-wide statistics
(``toonlab.infer.tiling``). The network runs on a backend (``toonlab.infer.backends``): PyTorch, or ONNX
Runtime. Post-processing (``toonlab.infer.postprocess``) follows the model's config (CTSS: +40 % saturation)
unless overridden.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from toonlab.device import (KEPT_HEAP_FACTOR, cpu_heap_tunable, keep_cpu_heap, resolve_device,
                            trim_cpu_heap)
from toonlab.errors import ToonlabError, UsageError
from toonlab.infer import streaming, tiling
from toonlab.infer.backends import (AUTO_TIMING_SIDE, PRECISION_CALIBRATION_SIDE, OrtBackend, TorchBackend,
                                   _read_json, _write_json, bf16_verdict, cached_onnx, cpu_has_bf16, faster_backend,
                                   onnx_metadata, ort_missing_reason, precision_choice)
from toonlab.infer.postprocess import PostProcess

_MEMORY_MODELS: dict[tuple, tiling.MemoryModel] = {}  # Translator.memory_model's per-architecture measurements
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def _channels_last_pays(module: nn.Module, device: torch.device) -> bool:
    """Whether channels-last memory speeds ``module`` up: always on CUDA; on CPU only without instance-type norms,
    whose CPU kernels are slower on channels-last (measured in benchmarks/bench_inference.py)."""
    if device.type == "cuda":
        return True
    from toonlab.models.cartoongan import ScaleShiftInstanceNorm
    from toonlab.nn.adalin import ILN, AdaLIN

    instance_norms = (nn.InstanceNorm2d, ScaleShiftInstanceNorm, AdaLIN, ILN)
    return not any(isinstance(m, instance_norms) for m in module.modules())


class GeneratorWrapper(nn.Module):
    """A translator network with toonlab's image convention around it: (B,3,H,W) RGB in [0,1] (+ style ids (B,)
    for multi-style models) → (B,3,H,W) RGB in [0,1]. ``bgr=True`` feeds the network BGR (CartoonGAN's released
    weights); the conversion is part of the module so an ONNX/TorchScript export behaves identically."""

    def __init__(self, net: nn.Module, bgr: bool = False, multi_style: bool = False):
        super().__init__()
        self.net, self.bgr, self.multi_style = net, bgr, multi_style

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        x = x * 2.0 - 1.0
        if self.bgr:
            x = x.flip(1)
        y = self.net(x, style) if self.multi_style else self.net(x)
        if self.bgr:
            y = y.flip(1)
        return (y + 1.0) * 0.5


def resolve_checkpoint(source: str | Path) -> Path:
    """An export file as given, or a run dir's latest export: ``latest.safetensors`` (in the run dir or its
    ``checkpoints/``), else the highest-numbered ``checkpoints/export-*.safetensors``."""
    p = Path(source)
    if not p.exists():
        raise UsageError(f"{p}: no such checkpoint file or run directory")
    if p.is_file():
        return p
    for cand in (p / "latest.safetensors", p / "checkpoints" / "latest.safetensors"):
        if cand.is_file():
            return cand
    exports = [f for d in (p / "checkpoints", p) for f in d.glob("export-*.safetensors")]
    if not exports:
        raise ToonlabError(f"{p}: no export checkpoint in this run directory "
                           "(expected latest.safetensors or checkpoints/export-*.safetensors)")
    return max(exports, key=lambda f: int(re.sub(r"\D", "", f.stem) or 0))



@contextmanager
def _one_thread():
    """PyTorch on one thread: building a model runs thousands of tiny ops (spectral norm's power iterations on the
    discriminators) where a second thread only waits at each op's barrier — AnimeGANv2's build took 1.8 s on two
    threads of a loaded 2-core machine and 0.2 s on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _memory_model_file(key: tuple) -> Path:
    """Where the calibration of architecture ``key`` is cached: per torch version, heap setting and GPU model."""
    import hashlib

    from toonlab.paths import cache_root

    gpu = torch.cuda.get_device_name(torch.device(key[3])) if key[3].startswith("cuda") else ""
    text = json.dumps([*key, torch.__version__, cpu_heap_tunable(), gpu])
    return cache_root() / "memory" / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"


def _stored_memory_model(key: tuple) -> tiling.MemoryModel | None:
    """The cached calibration of ``key``, or None (absent, unreadable, malformed: calibrated again)."""
    stored = _read_json(_memory_model_file(key))
    try:
        fixed, per_pixel = float(stored["fixed"]), float(stored["per_pixel"])
    except (KeyError, TypeError, ValueError):
        return None
    return tiling.MemoryModel(fixed, per_pixel) if fixed >= 0 and per_pixel > 0 else None


def _style_index(style: str | int, styles: tuple[str, ...], model: str) -> int:
    """Index of ``style`` (name or index) among ``styles``; UsageError listing the valid styles otherwise."""
    if not styles:
        raise UsageError(f"model {model!r} has a single style; --style is only for multi-style models")
    if isinstance(style, int) or (isinstance(style, str) and style.isdigit()):
        i = int(style)
        if 0 <= i < len(styles):
            return i
    elif style in styles:
        return styles.index(style)
    raise UsageError(f"unknown style {style!r} for model {model!r} (valid: {', '.join(styles)})")


def _pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | str:
    """The torch dtype named by ``dtype`` (None: float32), or "auto" (decided per model: :func:`_auto_dtype`)."""
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        return "auto"
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise UsageError(f"unknown dtype {dtype!r} (auto, fp32, fp16, bf16)")
        dtype = _DTYPES[dtype]
    if dtype == torch.float16 and device.type != "cuda":
        raise UsageError("fp16 inference needs a CUDA device (use fp32 or bf16 on CPU)")
    return dtype


def _auto_dtype(path: Path, wrapper: GeneratorWrapper, styles: tuple[str, ...], multiple: int,
                device: torch.device, backend: str, channels_last: bool | None,
                post: PostProcess) -> tuple[torch.dtype, str, dict | None]:
    """``dtype="auto"``: ``(dtype, why, verdict)``. bf16 on a CPU with bf16 units where, on this model, it runs
    faster than float32 and its output matches float32's (:func:`toonlab.infer.backends.bf16_verdict` on the
    bundled astronaut photo at ``PRECISION_CALIBRATION_SIDE``², one image per style, with the model's own
    post-processing; measured once per checkpoint and cached); float32 everywhere else. ``wrapper``: float32 on
    the CPU; it stays float32 (bf16 runs on a deep copy), and only a cache miss builds the copy and the input."""
    if device.type != "cpu":
        # fp16 / bf16 on a GPU are not verified here (no GPU to measure their fidelity on): float32 until they are
        return torch.float32, f"fp32: auto keeps float32 on {device.type}", None
    if backend == "onnx":
        return torch.float32, "fp32: ONNX Runtime runs float32", None
    if not cpu_has_bf16():
        return torch.float32, "fp32: this CPU has no bf16 units", None
    side = max(PRECISION_CALIBRATION_SIDE // multiple, 1) * multiple

    def calibration():  # only on a cache miss
        import copy

        import cv2

        from toonlab.photos import load as load_photo

        photo = cv2.resize(load_photo("astronaut"), (side, side), interpolation=cv2.INTER_AREA)
        n = max(len(styles), 1)
        x = (torch.from_numpy(photo).permute(2, 0, 1).float() / 255.0)[None].expand(n, -1, -1, -1).contiguous()
        cl = _channels_last_pays(wrapper, device) if channels_last is None else channels_last
        fmt = torch.channels_last if cl else torch.contiguous_format
        runs = {}
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            module = (wrapper if dt == torch.float32 else copy.deepcopy(wrapper).to(dtype=dt)).to(memory_format=fmt)
            tb = TorchBackend(module, channels_last=cl)
            runs[name] = lambda x_, s_, tb=tb, dt=dt: post(tb(x_.to(dt), s_).clamp(0.0, 1.0), x_)
        return runs["fp32"], runs["bf16"], x, (torch.arange(n) if styles else None)

    verdict = bf16_verdict(path, calibration)
    choice, why = precision_choice(verdict)
    return (torch.bfloat16 if choice == "bf16" else torch.float32), f"{why} (measured once at {side}²)", verdict


def _ort_for_checkpoint(path: Path, model: nn.Module, meta: dict, wrapper: GeneratorWrapper,
                        device: torch.device, dtype: torch.dtype, compile: bool,
                        strict: bool) -> tuple[OrtBackend | None, str]:
    """ONNX Runtime on the cached export of ``path``, or (``strict`` False, i.e. "auto") None and the one-line
    reason PyTorch runs instead: ORT is chosen where it was measured faster, CPU in float32 without compile."""
    if not strict:
        reason = (ort_missing_reason() or
                  (f"device {device} (ONNX Runtime is chosen on CPU)" if device.type != "cpu" else None) or
                  ("dtype is not fp32" if dtype != torch.float32 else None) or
                  ("--compile asks for torch.compile" if compile else None))
        if reason:
            return None, f"torch ({reason})"
    elif ort_missing_reason():
        raise UsageError("the onnx backend needs onnxruntime: pip install 'toonlab[onnx]'")
    ort, cached = cached_onnx(path, wrapper, onnx_metadata(model, meta))
    return ort, f"onnxruntime ({'cached' if cached else 'exported to'} {ort.path})"


@dataclass(frozen=True)
class Plan:
    """How one (B,3,H,W) call runs: untiled (``tile`` None) in chunks of ``chunk`` images, layer-streamed
    (``streamed``, one image at a time: ``toonlab.infer.streaming``), or tiled; ``backend``: the name of the
    backend that runs it ("torch" for streamed and tiled calls, and for untiled ones ONNX Runtime's memory would
    not fit); ``reason`` is the one line the CLI prints with --verbose."""

    tile: int | None
    chunk: int
    reason: str
    streamed: bool = False
    backend: str = "torch"


Progress = Callable[[int, int, str], None]  # progress(done, total, unit) with unit "image" | "tile" | "layer"


class NonFiniteOutput(ToonlabError):
    """The network produced NaN/inf (corrupt or diverged weights): that image fails instead of turning black."""


def _mib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


class Translator:
    """Callable image translator. Build with :meth:`load`. Attributes: ``name`` (model name or "classic"),
    ``styles``, ``direction`` ("photo2cartoon" | "cartoon2photo"), ``size_multiple``, ``device``, ``post``,
    ``backend`` (its ``name``: "torch" | "onnxruntime" | "classic"), ``backend_note`` (why that backend),
    ``last_plan`` (the :class:`Plan` of the latest call)."""

    def __init__(self, backend: Callable, *, name: str, device: torch.device, dtype: torch.dtype = torch.float32,
                 size_multiple: int = 1, styles: Sequence[str] = (), direction: str = "photo2cartoon",
                 post: PostProcess | None = None, memory_budget: int | None = None, tile: int | None = None,
                 overlap: int = 32, norm_stats: Literal["tile", "global"] = "global", batch_size: int = 8,
                 style: str | int | None = None, meta: dict | None = None, torch_backend: TorchBackend | None = None,
                 memory_model: tiling.MemoryModel | None = None, backend_note: str = "", min_side: int = 1,
                 memory_key: tuple | None = None, precision_verdict: dict | None = None):
        self.backend, self.name, self.device, self.dtype = backend, name, device, dtype
        self.size_multiple, self.styles, self.direction = size_multiple, tuple(styles), direction
        # the module tiled runs use (exact image-wide statistics patch its norm layers): the backend's own, or a
        # PyTorch twin of an ONNX Runtime backend
        self.torch_backend = torch_backend if torch_backend is not None else (
            backend if isinstance(backend, TorchBackend) else None)
        self.post = post or PostProcess()
        self.budget_is_default = memory_budget is None
        self.memory_budget = memory_budget if memory_budget is not None else tiling.default_budget(device)
        self.tile, self.overlap, self.norm_stats, self.batch_size = tile, overlap, norm_stats, batch_size
        self.meta, self.backend_note = dict(meta or {}), backend_note
        self.precision_verdict = precision_verdict  # dtype="auto"'s measurement (bf16_verdict), else None
        self.default_style = self.style_index(style) if style is not None else (0 if self.styles else None)
        self._memory_model = memory_model  # None: measured on first use (needs a PyTorch module)
        self._memory_key = memory_key  # architecture key under which a measured model is shared between loads
        # ONNX Runtime's own memory model (:meth:`ort_memory_model`): None = not measured yet, False = unmeasurable
        self._ort_memory: tiling.MemoryModel | bool | None = None
        self.last_plan: Plan | None = None
        if overlap % max(size_multiple, 1):
            self.overlap = (overlap // size_multiple + 1) * size_multiple
        # tiny or thin images are replicate-padded up to ``min_side`` (networks: 8 × the multiple, so the deepest
        # map keeps ≥ 8 px for every layer's reflection padding); cropped off again like the multiple-of padding
        self.min_side = min_side

    @property
    def module(self) -> nn.Module | None:
        return self.torch_backend.module if self.torch_backend is not None else None

    # --- construction ----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, source: str | Path = "classic", *, device: str | torch.device = "auto",
             dtype: str | torch.dtype | None = None, style: str | int | None = None,
             strength: float | None = None, keep_colors: bool | None = None, saturation: float | None = None,
             contrast: float | None = None, brightness: float | None = None, match_luminance: bool | None = None,
             memory_budget: int | None = None, tile: int | None = None, overlap: int = 32,
             norm_stats: Literal["tile", "global"] = "global", batch_size: int = 8,
             channels_last: bool | None = None, compile: bool = False, backend: str | None = None,
             classic_options: dict[str, Any] | None = None) -> "Translator":
        """``source``: "classic", an export ``.safetensors``, a run dir, or an ``.onnx`` file made by
        ``toonlab export``. Post-processing arguments left at None follow the model's config.
        ``backend``: "torch"; "onnx" (ONNX Runtime: an ``.onnx`` source, or a checkpoint exported once into the
        cache, :func:`toonlab.infer.backends.cached_onnx`); "auto" = on CPU in float32 with onnxruntime
        installed, the faster of ONNX Runtime and PyTorch on this machine (timed once per checkpoint at 512²:
        :func:`toonlab.infer.backends.faster_backend`), else PyTorch; None (default) = onnx for an ``.onnx``
        source, else torch (no cache written).
        ``memory_budget``: bytes of activations one forward pass may take (default: half the available RAM, 0.8
        of free GPU memory); beyond it an image is layer-streamed, or tiled where the network does not stream
        (both through PyTorch). ONNX Runtime is planned with its own measured memory (:meth:`plan`).
        ``dtype``: None / "fp32" (default: exact), "bf16", "fp16" (CUDA), or "auto" (the CLI's default): bf16 on
        a CPU with bf16 units where it was measured faster than float32 on this model and its 8-bit output within
        ``BF16_MIN_PSNR_DB`` / ``BF16_MAX_ABS_255`` of float32's (once per checkpoint, cached; then PyTorch runs
        it and ``backend`` "auto" times nothing), else float32 — ``backend_note`` says which and why.
        ``channels_last``: None = auto (on CUDA, and on CPU for LayerNorm generators);
        ``compile``: ``torch.compile`` the untiled PyTorch forward (one compile per input size)."""
        overrides = dict(strength=strength, keep_colors=keep_colors, saturation=saturation, contrast=contrast,
                         brightness=brightness, match_luminance=match_luminance)
        common = dict(memory_budget=memory_budget, tile=tile, overlap=overlap, norm_stats=norm_stats,
                      batch_size=batch_size, style=style)
        if backend not in (None, "torch", "onnx", "auto"):
            raise UsageError(f"unknown backend {backend!r} (auto, torch, onnx)")
        if str(source) == "classic":
            return cls._load_classic(classic_options or {}, overrides, common)
        if str(source).lower().endswith(".onnx"):
            if backend == "torch":
                raise UsageError(f"{source}: an ONNX file runs on the onnx backend (--backend onnx or auto)")
            return cls._load_onnx_file(Path(source), overrides, common)
        dev = resolve_device(device)
        return cls._load_export(resolve_checkpoint(source), dev, _pick_dtype(dtype, dev), overrides, common,
                                compile, channels_last, backend or "torch")

    @classmethod
    def _load_classic(cls, options: dict, overrides: dict, common: dict) -> "Translator":
        from toonlab.infer.classic import cartoonize_classic

        if common.get("style") is not None:
            raise UsageError("the classic cartoonizer has no styles (--style needs a multi-style model)")

        def forward(x: torch.Tensor, _style=None) -> torch.Tensor:
            return cartoonize_classic(x.float(), **options)

        forward.name = "classic"  # what the CLI's --verbose line names as the backend
        # OpenCV filters are local and memory-light: no tiling (tile stays None and the budget is unbounded);
        # 64 bytes per pixel only sizes batches
        common = {**common, "memory_budget": 1 << 62}
        return cls(forward, name="classic", device=torch.device("cpu"), post=PostProcess.for_model({}, **overrides),
                   memory_model=tiling.MemoryModel(0.0, 64.0), **common)

    @classmethod
    def _load_onnx_file(cls, path: Path, overrides: dict, common: dict) -> "Translator":
        ort = OrtBackend(path)
        meta = ort.metadata
        if "toonlab_model" not in meta:
            raise ToonlabError(f"{path}: not exported by toonlab (no toonlab_model metadata)")
        post = PostProcess.for_model(json.loads(meta.get("toonlab_config", "{}")), **overrides)
        # no PyTorch twin: exact tiled statistics need one, so a bare ONNX file always runs untiled (its memory
        # model, ONNX Runtime's own, only sizes batches)
        return cls(ort, name=meta["toonlab_model"], device=torch.device("cpu"),
                   size_multiple=int(meta.get("toonlab_size_multiple", "1")),
                   styles=tuple(json.loads(meta.get("toonlab_styles", "[]"))),
                   direction=meta.get("toonlab_direction", "photo2cartoon"), post=post, meta=meta,
                   backend_note=f"onnxruntime ({path})",
                   min_side=8 * int(meta.get("toonlab_size_multiple", "1")), **common)

    @classmethod
    def _load_export(cls, path: Path, device: torch.device, dtype: torch.dtype, overrides: dict, common: dict,
                     compile: bool, channels_last: bool | None, backend: str) -> "Translator":
        from toonlab.checkpoint import load_export

        with _one_thread():
            model, meta = load_export(path, device="cpu")
        styles = tuple(json.loads(meta.get("styles", "[]")))
        if common.get("style") is not None:  # a typo fails before the backend is exported and timed
            _style_index(common["style"], styles, meta["model"])
        config = json.loads(meta.get("config", "{}"))
        post = PostProcess.for_model(config, **overrides)
        multiple = int(getattr(model, "size_multiple", 1))
        wrapper = GeneratorWrapper(model.translator(), bgr=meta.get("input_order", "rgb") == "bgr",
                                   multi_style=bool(styles)).eval()
        for p in wrapper.parameters():
            p.requires_grad_(False)
        precision, verdict = "", None
        if dtype == "auto":  # measured on the model's own post-processing: the verdict is the checkpoint's
            dtype, precision, verdict = _auto_dtype(path, wrapper, styles, multiple, device, backend, channels_last,
                                                    PostProcess.for_model(config))
            if dtype == torch.bfloat16 and backend == "auto":
                backend = "torch"  # ONNX Runtime runs float32: no export, no backend timing
        ort, note = None, "torch"
        if backend in ("onnx", "auto"):
            ort, note = _ort_for_checkpoint(path, model, meta, wrapper, device, dtype, compile,
                                            strict=backend == "onnx")
        wrapper = wrapper.to(device=device, dtype=dtype)
        if channels_last is None:
            channels_last = _channels_last_pays(wrapper, device)
        if channels_last:
            wrapper = wrapper.to(memory_format=torch.channels_last)
        torch_backend = TorchBackend(wrapper, compile=compile and ort is None, channels_last=channels_last)
        if backend == "auto" and ort is not None:  # the faster of the two exact paths on this machine
            choice, seconds = faster_backend(ort, torch_backend, multiple,
                                             torch.zeros(1, dtype=torch.long) if styles else None)
            timing = (f"onnxruntime {seconds['onnxruntime']:.2f} s, torch {seconds['torch']:.2f} s "
                      f"at {AUTO_TIMING_SIDE}², measured once")
            if choice == "torch":
                ort, note = None, f"torch (faster here: {timing})"
            else:
                note = f"{note[:-1]}; faster here: {timing})"  # inside "onnxruntime (… path)"
        return cls(ort or torch_backend, name=meta["model"], device=device, dtype=dtype,
                   size_multiple=multiple, styles=styles,
                   direction=getattr(model, "direction", "photo2cartoon"), post=post, meta=meta,
                   torch_backend=torch_backend, backend_note=f"{note}; {precision}" if precision else note,
                   min_side=8 * multiple, precision_verdict=verdict,
                   memory_key=(meta["model"], meta.get("config", ""), meta.get("input_order", "rgb"), str(device),
                               str(dtype), bool(channels_last)), **common)

    # --- styles ------------------------------------------------------------------------------------------------
    def style_index(self, style: str | int) -> int:
        """Index of ``style`` (name or index); UsageError listing the valid styles otherwise."""
        return _style_index(style, self.styles, self.name)

    # --- memory and the tiling decision --------------------------------------------------------------------------
    def memory_model(self) -> tiling.MemoryModel:
        """The measured activation peak of one PyTorch forward pass: calibrated on first use, once per
        architecture (model, config, device, dtype, memory format) — activations do not depend on the weights, so
        every load of the same network (an eval hook's exports, a server's reloads, the next command) shares one
        measurement, kept in the process and in ``$TOONLAB_CACHE/memory`` (per torch version and heap setting). On CPU where untiled passes keep freed memory (:func:`toonlab.device.keep_cpu_heap`), scaled
        by ``KEPT_HEAP_FACTOR`` for the heap's fragmentation. A bare ONNX file (no PyTorch module):
        :meth:`ort_memory_model`, else 2 KiB per pixel."""
        if self._memory_model is None and self.torch_backend is None:
            self._memory_model = self.ort_memory_model() or tiling.MemoryModel(0.0, 2048.0)
        if self._memory_model is None and self._memory_key:
            self._memory_model = _MEMORY_MODELS.get(self._memory_key) or _stored_memory_model(self._memory_key)
        if self._memory_model is None:
            probe_style = self._style_tensor(1, None)
            tb = self.torch_backend
            mem = tiling.measure_memory(lambda x: tb(x, probe_style, eager=True), multiple=self.size_multiple,
                                        device=self.device, dtype=self.dtype)
            if self.device.type == "cpu" and cpu_heap_tunable():  # untiled passes keep freed memory: fragmentation
                mem = tiling.MemoryModel(KEPT_HEAP_FACTOR * mem.fixed, KEPT_HEAP_FACTOR * mem.per_pixel)
            self._memory_model = mem
            if self._memory_key:
                _write_json(_memory_model_file(self._memory_key), {"fixed": mem.fixed, "per_pixel": mem.per_pixel})
        if self._memory_key:
            _MEMORY_MODELS[self._memory_key] = self._memory_model
        return self._memory_model

    def ort_memory_model(self) -> tiling.MemoryModel | None:
        """ONNX Runtime's resident memory for one image (:meth:`OrtBackend.measure_memory`, measured once per
        file and cached), or None when the backend is not ONNX Runtime or the memory cannot be measured."""
        if not isinstance(self.backend, OrtBackend):
            return None
        if self._ort_memory is None:
            fitted = self.backend.measure_memory(self.size_multiple)
            self._ort_memory = tiling.MemoryModel(*fitted) if fitted else False
        return self._ort_memory or None

    def bytes_per_pixel(self) -> float:
        """Activation bytes per input pixel (the slope of :meth:`memory_model`)."""
        return self.memory_model().per_pixel

    def streamer(self) -> tuple[streaming.StreamedNetwork | None, str]:
        """The layer-streamed executor of the PyTorch module, or None and the one-line reason it cannot stream
        (untraceable or unsupported ops, a dtype other than float32: stripes compute in float32)."""
        if self.module is None:
            return None, "no PyTorch module"
        if self.dtype != torch.float32:
            return None, f"streaming computes in float32, the model runs in {str(self.dtype).removeprefix('torch.')}"
        if getattr(self, "_streamed", None) is None:  # traced once per translator
            try:
                self._streamed = (streaming.StreamedNetwork(self.module), "")
            except streaming.NotStreamable as e:
                self._streamed = (None, str(e))
        return self._streamed

    def plan(self, height: int, width: int, batch: int = 1) -> Plan:
        """Untiled on the translator's backend whenever one padded image's estimated memory there fits the budget
        (several per chunk when they fit); else layer-streamed (exact, one pass's FLOPs) when the network streams
        and its stored maps fit; else untiled through PyTorch when an ONNX Runtime backend's own memory did not
        fit but PyTorch's does; else tiled — through PyTorch, whose tiles share pooled statistics. Under the default
        budget a chunk no larger than the calibration's largest pass runs untiled without calibrating."""
        m = max(self.size_multiple, 1)
        ph, pw = max(height + (-height) % m, self.min_side), max(width + (-width) % m, self.min_side)
        name, budget = getattr(self.backend, "name", "torch"), self.memory_budget
        src = ("--memory-budget" if not self.budget_is_default else
               "classic, untiled" if self.name == "classic" else
               f"{int(100 * (tiling.CUDA_BUDGET_FRACTION if self.device.type == 'cuda' else tiling.CPU_BUDGET_FRACTION))}"
               f" % of available {'GPU memory' if self.device.type == 'cuda' else 'RAM'}")
        side, chunk = tiling.CALIBRATION_SIDES[-1], max(1, min(self.batch_size, batch))
        if self.tile is None and self.budget_is_default and chunk * ph * pw <= side * side:
            # the calibration would itself run a larger image untiled: skip it (and its seconds) for small inputs
            return Plan(None, chunk, f"untiled {width}×{height}: no larger than the memory calibration's {side}² "
                                     f"pass (not calibrated), budget {_mib(budget)} ({src})", backend=name)
        mem = self.memory_model()
        need = mem.bytes(ph, pw)

        def untiled(model: tiling.MemoryModel, backend: str, why: str = "") -> Plan:
            one = model.bytes(ph, pw)
            chunk = max(1, min(self.batch_size, batch, int((budget - model.fixed) // max(one - model.fixed, 1.0))))
            return Plan(None, chunk, f"untiled {width}×{height}: ~{_mib(one)} of activations, budget "
                                     f"{_mib(budget)} ({src}){why}", backend=backend)

        if self.tile is None and self.torch_backend is None:
            why = "" if need <= budget else "; over the budget, but a bare ONNX file cannot tile exactly"
            return untiled(mem, name, why)
        if self.torch_backend is None:
            raise UsageError("--tile needs a PyTorch model (a checkpoint), not a bare ONNX file")
        # an ONNX Runtime backend with a PyTorch twin is planned with its own memory (its arena: larger or
        # smaller than PyTorch's, depending on the network), where measured
        own = (self.ort_memory_model() if self.tile is None else None) or mem
        if self.tile is None and own.bytes(ph, pw) <= budget:
            return untiled(own, name)
        over = f"~{_mib(own.bytes(ph, pw))} of activations{'' if own is mem else ' on ' + name} > budget " \
               f"{_mib(budget)} ({src})"
        not_streamed = ""
        if self.tile is None:
            streamer, not_streamed = self.streamer()
            if streamer is not None:
                stream_need = streamer.estimate((1, 3, ph, pw))
                if stream_need <= budget:
                    return Plan(None, 1, f"streamed {width}×{height} layer by layer (exact image-wide statistics, "
                                         f"~{_mib(stream_need)} of stored maps): {over}", streamed=True)
                not_streamed = f"streamed would take ~{_mib(stream_need)}"
            if own is not mem and need <= budget:
                return untiled(mem, "torch", f"; through PyTorch: {over}; not streamed: {not_streamed}")
            not_streamed = f"; not streamed: {not_streamed}"
        tile = self.tile or tiling.tile_for_budget(budget - mem.fixed, mem.per_pixel, m, self.overlap)
        why = "--tile" if self.tile else over + not_streamed
        return Plan(tile, 1, f"tiled {width}×{height} in {tile}² tiles, {self.norm_stats} norm statistics, "
                             f"through PyTorch: {why}")

    # --- the tensor path ---------------------------------------------------------------------------------------
    def _style_tensor(self, batch: int, style: str | int | None) -> torch.Tensor | None:
        if style is None and self.default_style is None:
            return None
        idx = self.style_index(style) if style is not None else self.default_style
        return torch.full((batch,), idx, dtype=torch.long, device=self.device)

    def translate_tensor(self, rgb: torch.Tensor, style: str | int | None = None,
                         progress: Progress | None = None) -> torch.Tensor:
        """(B,3,H,W) or (3,H,W) RGB in [0,1] (any size) → same shape in [0,1], float32, on ``rgb``'s device.
        ``progress(done, total, unit)`` is called after each image ("image") or, for tiled images, each tile
        ("tile"). Raises :class:`NonFiniteOutput` when the network outputs NaN/inf."""
        if rgb.dim() == 3:
            return self.translate_tensor(rgb[None], style, progress)[0]
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise UsageError(f"expected an RGB image tensor (B,3,H,W) or (3,H,W), got shape {tuple(rgb.shape)}")
        if 0 in rgb.shape:
            raise UsageError(f"empty image (shape {tuple(rgb.shape)})")
        src = rgb.float().clamp(0.0, 1.0)
        b, _, h, w = src.shape
        out = torch.empty_like(src)
        m = max(self.size_multiple, 1)
        plan = self.last_plan = self.plan(h, w, b)
        if self.device.type == "cpu" and self.torch_backend is not None:
            # freed maps reused by an untiled pass; released where the plan bounds memory (toonlab.device)
            keep_cpu_heap(plan.tile is None and not plan.streamed)
        with torch.inference_mode():
            for i in range(0, b, plan.chunk):
                x = src[i:i + plan.chunk].to(self.device, self.dtype)
                style_ids = self._style_tensor(x.shape[0], style)
                xp, pads = tiling.pad_to_multiple(x, m, self.min_side)
                if plan.streamed:
                    on_layer = (lambda d, t: progress(d, t, "layer")) if progress else None
                    y = self.streamer()[0](xp, progress=on_layer)
                elif plan.tile is not None:
                    tb = self.torch_backend
                    on_tile = (lambda d, t, _i=i: progress(d, t, "tile")) if progress else None
                    y = tiling.run_tiled(lambda t: tb(t, style_ids, eager=True), xp, plan.tile, self.overlap, m,
                                         module=tb.module, norm_stats=self.norm_stats, progress=on_tile)
                elif plan.backend == "torch":
                    y = self.torch_backend(xp, style_ids)
                else:
                    y = self.backend(xp, style_ids)
                y = tiling.crop_padding(y.float(), pads)
                if not torch.isfinite(y).all():
                    raise NonFiniteOutput("the network produced non-finite values (NaN/inf): the weights are "
                                          "corrupt or diverged")
                # the float32 input, not its copy in the model's dtype (bf16 rounds [0,1] by up to 1/512)
                src_chunk = src[i:i + plan.chunk].to(self.device)
                out[i:i + plan.chunk] = self.post(y.clamp(0.0, 1.0), src_chunk).to(out.device)
                if progress and plan.tile is None and not plan.streamed:
                    progress(min(i + plan.chunk, b), b, "image")
        trim_cpu_heap()
        return out

    # --- any image kind ----------------------------------------------------------------------------------------
    def __call__(self, images, style: str | int | None = None, progress: Progress | None = None):
        """Translate a PIL image, an HWC uint8 (or float [0,1]) ndarray, a (3,H,W)/(B,3,H,W) [0,1] tensor, or a
        list of these (batched by size); returns the same kind. Alpha channels (RGBA) are kept unchanged.
        ``progress(done, total, unit)``: see :meth:`translate_tensor` (lists report per image)."""
        if isinstance(images, (list, tuple)):
            return self._translate_list(list(images), style, progress)
        if torch.is_tensor(images):
            return self.translate_tensor(images, style, progress)
        rgb, restore = _to_tensor(images)
        return restore(self.translate_tensor(rgb[None], style, progress)[0])

    def _translate_list(self, items: list, style, progress: Progress | None = None) -> list:
        converted = [_to_tensor(it) if not torch.is_tensor(it) else (it, None) for it in items]
        results: list = [None] * len(items)
        by_size: dict[tuple, list[int]] = {}
        for i, (t, _) in enumerate(converted):
            if t.dim() != 3:
                results[i] = self.translate_tensor(t, style)  # a batch tensor inside a list: as is
                continue
            by_size.setdefault(tuple(t.shape), []).append(i)
        for idxs in by_size.values():
            for j in range(0, len(idxs), self.batch_size):
                group = idxs[j:j + self.batch_size]
                batch = self.translate_tensor(torch.stack([converted[k][0] for k in group]), style)
                for k, y in zip(group, batch):
                    restore = converted[k][1]
                    results[k] = restore(y) if restore else y
                if progress:
                    progress(sum(r is not None for r in results), len(items), "image")
        return results


def _to_tensor(image) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """PIL image or HWC ndarray → ((3,H,W) float [0,1], a function turning a (3,H,W) result into that kind)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
        arr = np.asarray(image.convert("RGB"))

        def to_pil(y: torch.Tensor):
            out = Image.fromarray(_to_uint8(y))
            if alpha is not None:
                out.putalpha(alpha)
            return out

        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0, to_pil
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise UsageError(f"expected an HWC RGB(A) array, got shape {image.shape}")
        is_uint8 = image.dtype == np.uint8
        rgb = image[..., :3].astype(np.float32) / (255.0 if is_uint8 else 1.0)
        alpha = image[..., 3:] if image.shape[2] == 4 else None

        def to_array(y: torch.Tensor):
            out = _to_uint8(y) if is_uint8 else y.permute(1, 2, 0).cpu().numpy().astype(image.dtype)
            return np.concatenate([out, alpha], axis=2) if alpha is not None else out

        return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1), to_array
    raise UsageError(f"cannot translate an object of type {type(image).__name__} "
                     "(PIL image, HWC ndarray or (B,3,H,W) tensor expected)")


def _to_uint8(y: torch.Tensor) -> np.ndarray:
    """(3,H,W) [0,1] → HWC uint8 (rounded)."""
    return (y.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
