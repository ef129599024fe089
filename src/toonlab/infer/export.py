"""Export a checkpoint's generator to ONNX or TorchScript and check it against PyTorch on a real photo.

The exported graph is :class:`~toonlab.infer.translator.GeneratorWrapper`: (B,3,H,W) RGB in [0,1] (+ ``style``
int64 (B,) for multi-style models) → (B,3,H,W) RGB in [0,1], with dynamic batch, height and width (H, W multiples
of the model's ``size_multiple``). The model name, config, styles, size multiple and input order are stored in the
file (ONNX ``metadata_props``; TorchScript extra file ``toonlab.json``) so ``toonlab cartoonize -m FILE.onnx``
applies the same post-processing as the PyTorch path. ONNX files are written and run by
``toonlab.infer.backends``, which the translator uses too.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from toonlab.errors import UsageError
from toonlab.infer.backends import ONNX_OPSET, OrtBackend, onnx_metadata, trace_example, write_onnx
from toonlab.infer.translator import GeneratorWrapper, resolve_checkpoint


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # exported vs PyTorch on a real photo, in [0,1] RGB units
    photo_size: tuple[int, int]


def _build(checkpoint: str | Path) -> tuple[GeneratorWrapper, dict, int]:
    from toonlab.checkpoint import load_export

    model, meta = load_export(resolve_checkpoint(checkpoint), device="cpu")
    styles = json.loads(meta.get("styles", "[]"))
    wrapper = GeneratorWrapper(model.translator(), bgr=meta.get("input_order", "rgb") == "bgr",
                               multi_style=bool(styles)).eval()
    return wrapper, onnx_metadata(model, meta), int(model.size_multiple)


def reference_photo(multiple: int, size: tuple[int, int] = (200, 300)) -> torch.Tensor:
    """A real photo (scikit-image's coffee, 400×600, shipped in :mod:`toonlab.photos`) resized to ``size`` rounded
    to ``multiple``: (1,3,H,W) [0,1]."""
    import cv2

    from toonlab import photos

    h, w = (s // multiple * multiple for s in size)
    img = cv2.resize(photos.load("coffee"), (w, h), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


def export_model(checkpoint: str | Path, out: str | Path, fmt: Literal["onnx", "torchscript"] = "onnx",
                 opset: int = ONNX_OPSET, check_size: tuple[int, int] = (200, 300)) -> ExportResult:
    """Export ``checkpoint`` (export file or run dir) to ``out``; then run the exported model and PyTorch on a real
    photo of ``check_size`` (different from the trace size, which proves the dynamic H/W) and report the largest
    absolute difference."""
    from toonlab.checkpoint import atomic_write

    if fmt not in ("onnx", "torchscript"):
        raise UsageError(f"unknown export format {fmt!r} (onnx, torchscript)")
    wrapper, info, multiple = _build(checkpoint)
    example = trace_example(wrapper, multiple)
    out = Path(out)
    if fmt == "onnx":
        atomic_write(out, lambda tmp: write_onnx(wrapper, example, tmp, info, opset))
    else:
        atomic_write(out, lambda tmp: _write_torchscript(wrapper, example, tmp, info))

    photo = reference_photo(multiple, check_size)
    args = (photo,) + ((torch.ones(1, dtype=torch.long) * (len(json.loads(info["toonlab_styles"])) - 1),)
                       if wrapper.multi_style else ())
    with torch.inference_mode():
        ref = wrapper(*args)
        got = OrtBackend(out)(*args) if fmt == "onnx" else torch.jit.load(str(out))(*args)
        diff = float((got - ref).abs().max())
    return ExportResult(out, fmt, diff, tuple(photo.shape[-2:]))


def _write_torchscript(wrapper, example, path, info: dict) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks; the trace is verified after export
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={"toonlab.json": json.dumps(info)})
