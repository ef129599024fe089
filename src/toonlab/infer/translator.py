"""Translator: a checkpoint (or the classic filter, or an ONNX file) as a callable on images of any size.

    t = Translator.load("runs/ctss")   # run dir → its latest export; or FILE.safetensors, FILE.onnx, "classic"
    cartoon = t(pil_image)             # PIL → PIL, HWC uint8 ndarray → ndarray, (B,3,H,W) [0,1] → tensor
    t(images_list, style="shinkai")    # many small images: batched by size

The model's config travels with its weights, so loading needs no architecture flags. Inputs are reflect-padded to
the network's ``size_multiple`` and cropped back; beyond ``memory_budget`` bytes of activations an image is run in
overlapping tiles (``toonlab.infer.tiling``). Post-processing (``toonlab.infer.postprocess``) follows the model's
config (CTSS: +40 % saturation) unless overridden.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from toonlab.device import resolve_device
from toonlab.errors import ToonlabError, UsageError
from toonlab.infer import tiling
from toonlab.infer.postprocess import PostProcess

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



def _pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise UsageError(f"unknown dtype {dtype!r} (fp32, fp16, bf16)")
        dtype = _DTYPES[dtype]
    if dtype == torch.float16 and device.type != "cuda":
        raise UsageError("fp16 inference needs a CUDA device (use fp32 or bf16 on CPU)")
    return dtype


class Translator:
    """Callable image translator. Build with :meth:`load`. Attributes: ``name`` (model name or "classic"),
    ``styles``, ``direction`` ("photo2cartoon" | "cartoon2photo"), ``size_multiple``, ``device``, ``post``."""

    def __init__(self, forward: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], *, name: str,
                 device: torch.device, dtype: torch.dtype = torch.float32, size_multiple: int = 1,
                 module: nn.Module | None = None, styles: Sequence[str] = (), direction: str = "photo2cartoon",
                 post: PostProcess | None = None, memory_budget: int | None = None, tile: int | None = None,
                 overlap: int = 32, norm_stats: Literal["tile", "global"] = "global", batch_size: int = 8,
                 style: str | int | None = None, channels_last: bool = False, meta: dict | None = None,
                 bytes_per_pixel: float | None = None):
        self._forward, self.name, self.device, self.dtype = forward, name, device, dtype
        self.size_multiple, self.module, self.styles, self.direction = size_multiple, module, tuple(styles), direction
        self.post = post or PostProcess()
        self.memory_budget = memory_budget if memory_budget is not None else tiling.default_budget(device)
        self.tile, self.overlap, self.norm_stats, self.batch_size = tile, overlap, norm_stats, batch_size
        self.channels_last, self.meta = channels_last, dict(meta or {})
        self.default_style = self.style_index(style) if style is not None else (0 if self.styles else None)
        self._bytes_per_pixel = bytes_per_pixel  # None: measured on first use (needs ``module``)
        if overlap % max(size_multiple, 1):
            self.overlap = (overlap // size_multiple + 1) * size_multiple

    # --- construction ----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, source: str | Path = "classic", *, device: str | torch.device = "auto",
             dtype: str | torch.dtype | None = None, style: str | int | None = None,
             strength: float | None = None, keep_colors: bool | None = None, saturation: float | None = None,
             contrast: float | None = None, brightness: float | None = None, match_luminance: bool | None = None,
             memory_budget: int | None = None, tile: int | None = None, overlap: int = 32,
             norm_stats: Literal["tile", "global"] = "global", batch_size: int = 8,
             channels_last: bool | None = None, compile: bool = False,
             classic_options: dict[str, Any] | None = None) -> "Translator":
        """``source``: "classic", an export ``.safetensors``, a run dir, or an ``.onnx`` file made by
        ``toonlab export``. Post-processing arguments left at None follow the model's config.
        ``channels_last``: None = auto (on CUDA, and on CPU for LayerNorm generators: 1.29× for the CTSS G at 512²;
        off on CPU for instance-norm generators, where it costs 10–25 %, benchmarks/README.md); ``compile``:
        ``torch.compile`` the untiled forward (fuses norm + activation + padding; 1.6–1.7× eager for the CTSS G
        on CPU, after a one-off compile per input size)."""
        overrides = dict(strength=strength, keep_colors=keep_colors, saturation=saturation, contrast=contrast,
                         brightness=brightness, match_luminance=match_luminance)
        common = dict(memory_budget=memory_budget, tile=tile, overlap=overlap, norm_stats=norm_stats,
                      batch_size=batch_size, style=style, channels_last=channels_last)
        if str(source) == "classic":
            return cls._load_classic(classic_options or {}, overrides, common)
        if str(source).lower().endswith(".onnx"):
            from toonlab.infer.export import load_onnx_translator

            return load_onnx_translator(source, overrides=overrides, **common)
        dev = resolve_device(device)
        return cls._load_export(resolve_checkpoint(source), dev, _pick_dtype(dtype, dev), overrides, common,
                                compile)

    @classmethod
    def _load_classic(cls, options: dict, overrides: dict, common: dict) -> "Translator":
        from toonlab.infer.classic import cartoonize_classic

        if common.get("style") is not None:
            raise UsageError("the classic cartoonizer has no styles (--style needs a multi-style model)")

        def forward(x: torch.Tensor, _style) -> torch.Tensor:
            return cartoonize_classic(x.float(), **options)

        # OpenCV filters are local and memory-light: no tiling (tile stays None and the budget is unbounded).
        common = {**common, "memory_budget": 1 << 62}
        return cls(forward, name="classic", device=torch.device("cpu"), post=PostProcess.for_model({}, **overrides),
                   **common)

    @classmethod
    def _load_export(cls, path: Path, device: torch.device, dtype: torch.dtype, overrides: dict,
                     common: dict, compile: bool = False) -> "Translator":
        from toonlab.checkpoint import load_export

        model, meta = load_export(path, device="cpu")
        styles = tuple(json.loads(meta.get("styles", "[]")))
        wrapper = GeneratorWrapper(model.translator(), bgr=meta.get("input_order", "rgb") == "bgr",
                                   multi_style=bool(styles))
        wrapper = wrapper.to(device=device, dtype=dtype).eval()
        if common["channels_last"] is None:
            common = {**common, "channels_last": _channels_last_pays(wrapper, device)}
        if common["channels_last"]:
            wrapper = wrapper.to(memory_format=torch.channels_last)
        for p in wrapper.parameters():
            p.requires_grad_(False)
        post = PostProcess.for_model(json.loads(meta.get("config", "{}")), **overrides)
        # the compiled module serves untiled calls; tiles use the eager module, whose norm layers run_tiled patches
        forward = torch.compile(wrapper, dynamic=False) if compile else wrapper
        return cls(forward, name=meta["model"], device=device, dtype=dtype,
                   size_multiple=int(getattr(model, "size_multiple", 1)), module=wrapper, styles=styles,
                   direction=getattr(model, "direction", "photo2cartoon"), post=post, meta=meta, **common)

    # --- styles ------------------------------------------------------------------------------------------------
    def style_index(self, style: str | int) -> int:
        """Index of ``style`` (name or index); UsageError listing the valid styles otherwise."""
        if not self.styles:
            raise UsageError(f"model {self.name!r} has a single style; --style is only for multi-style models")
        if isinstance(style, int) or (isinstance(style, str) and style.isdigit()):
            i = int(style)
            if 0 <= i < len(self.styles):
                return i
        elif style in self.styles:
            return self.styles.index(style)
        raise UsageError(f"unknown style {style!r} for model {self.name!r} (valid: {', '.join(self.styles)})")

    # --- the tensor path ---------------------------------------------------------------------------------------
    def bytes_per_pixel(self) -> float:
        if self._bytes_per_pixel is None:
            if self.module is None:
                self._bytes_per_pixel = 64.0  # classic: OpenCV-light, only used to size batches
            else:
                probe_style = self._style_tensor(1, None)
                self._bytes_per_pixel = tiling.estimate_bytes_per_pixel(
                    self.module, multiple=self.size_multiple, device=self.device, dtype=self.dtype,
                    forward=lambda x: self.module(x, probe_style))
        return self._bytes_per_pixel

    def _style_tensor(self, batch: int, style: str | int | None) -> torch.Tensor | None:
        if style is None and self.default_style is None:
            return None
        idx = self.style_index(style) if style is not None else self.default_style
        return torch.full((batch,), idx, dtype=torch.long, device=self.device)

    def _run_network(self, x: torch.Tensor, style_ids: torch.Tensor | None, eager: bool = False) -> torch.Tensor:
        """(B,3,H,W) [0,1] on the device, H and W multiples of size_multiple → (B,3,H,W) [0,1] float32.
        ``eager``: bypass a compiled forward (tiles: their norm layers are patched per pass)."""
        if self.channels_last and self.module is not None:
            x = x.contiguous(memory_format=torch.channels_last)
        forward = self.module if eager and self.module is not None else self._forward
        return forward(x, style_ids).float()

    def translate_tensor(self, rgb: torch.Tensor, style: str | int | None = None) -> torch.Tensor:
        """(B,3,H,W) or (3,H,W) RGB in [0,1] (any size) → same shape in [0,1], float32, on ``rgb``'s device."""
        if rgb.dim() == 3:
            return self.translate_tensor(rgb[None], style)[0]
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise UsageError(f"expected an RGB image tensor (B,3,H,W) or (3,H,W), got shape {tuple(rgb.shape)}")
        src = rgb.float().clamp(0.0, 1.0)
        b, _, h, w = src.shape
        out = torch.empty_like(src)
        m = max(self.size_multiple, 1)
        ph, pw = h + (-h) % m, w + (-w) % m
        per_image = ph * pw * self.bytes_per_pixel()
        tiled = self.tile is not None or per_image > self.memory_budget
        chunk = 1 if tiled else max(1, min(self.batch_size, int(self.memory_budget // max(per_image, 1.0))))
        with torch.inference_mode():
            for i in range(0, b, chunk):
                x = src[i:i + chunk].to(self.device, self.dtype)
                style_ids = self._style_tensor(x.shape[0], style)
                xp, pads = tiling.pad_to_multiple(x, m)
                if tiled:
                    tile = self.tile or tiling.tile_for_budget(self.memory_budget, self.bytes_per_pixel(), m,
                                                               self.overlap)
                    y = tiling.run_tiled(lambda t: self._run_network(t, style_ids, eager=True), xp, tile, self.overlap, m,
                                         module=self.module, norm_stats=self.norm_stats)
                else:
                    y = self._run_network(xp, style_ids)
                y = tiling.crop_padding(y, pads).clamp(0.0, 1.0)
                out[i:i + chunk] = self.post(y.float(), x.float()).to(out.device)
        return out

    # --- any image kind ----------------------------------------------------------------------------------------
    def __call__(self, images, style: str | int | None = None):
        """Translate a PIL image, an HWC uint8 (or float [0,1]) ndarray, a (3,H,W)/(B,3,H,W) [0,1] tensor, or a
        list of these (batched by size); returns the same kind. Alpha channels (RGBA) are kept unchanged."""
        if isinstance(images, (list, tuple)):
            return self._translate_list(list(images), style)
        if torch.is_tensor(images):
            return self.translate_tensor(images, style)
        rgb, restore = _to_tensor(images)
        return restore(self.translate_tensor(rgb[None], style)[0])

    def _translate_list(self, items: list, style) -> list:
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
