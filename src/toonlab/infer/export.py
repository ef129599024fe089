"""Export a checkpoint's generator to ONNX or TorchScript, check it against PyTorch, and run ONNX files.

The exported graph is :class:`~toonlab.infer.translator.GeneratorWrapper`: (B,3,H,W) RGB in [0,1] (+ ``style``
int64 (B,) for multi-style models) → (B,3,H,W) RGB in [0,1], with dynamic batch, height and width (H, W multiples
of the model's ``size_multiple``). The model name, config, styles, size multiple and input order are stored in the
file (ONNX ``metadata_props``; TorchScript extra file ``toonlab.json``) so ``toonlab cartoonize --backend onnx``
applies the same post-processing as the PyTorch path.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from toonlab.errors import ToonlabError, UsageError
from toonlab.infer.translator import GeneratorWrapper, Translator, resolve_checkpoint

ONNX_OPSET = 17


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
    info = {"toonlab_model": meta["model"], "toonlab_config": meta.get("config", "{}"),
            "toonlab_styles": json.dumps(styles), "toonlab_size_multiple": str(int(model.size_multiple)),
            "toonlab_direction": getattr(model, "direction", "photo2cartoon"),
            "toonlab_input_order": meta.get("input_order", "rgb")}
    return wrapper, info, int(model.size_multiple)


def reference_photo(multiple: int, size: tuple[int, int] = (200, 300)) -> torch.Tensor:
    """A real photo (scikit-image's coffee, 400×600, shipped as ``coffee.jpg`` beside this module: scikit-image is
    a [dev]-only package) resized to ``size`` rounded to ``multiple``: (1,3,H,W) [0,1]."""
    from importlib import resources

    import cv2
    import numpy as np

    raw = np.frombuffer(resources.files("toonlab.infer").joinpath("coffee.jpg").read_bytes(), np.uint8)
    h, w = (s // multiple * multiple for s in size)
    img = cv2.resize(cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), (w, h),
                     interpolation=cv2.INTER_AREA)
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
    trace_hw = (max(64, 2 * multiple) // multiple * multiple,) * 2
    example = (torch.rand(1, 3, *trace_hw),)
    if wrapper.multi_style:
        example = example + (torch.zeros(1, dtype=torch.long),)
    out = Path(out)
    if fmt == "onnx":
        atomic_write(out, lambda tmp: _write_onnx(wrapper, example, tmp, info, opset))
    else:
        atomic_write(out, lambda tmp: _write_torchscript(wrapper, example, tmp, info))

    photo = reference_photo(multiple, check_size)
    args = (photo,) + ((torch.ones(1, dtype=torch.long) * (len(json.loads(info["toonlab_styles"])) - 1),)
                       if wrapper.multi_style else ())
    with torch.inference_mode():
        ref = wrapper(*args)
        got = run_onnx_raw(out, *args) if fmt == "onnx" else torch.jit.load(str(out))(*args)
        diff = float((got - ref).abs().max())
    return ExportResult(out, fmt, diff, tuple(photo.shape[-2:]))


def _write_onnx(wrapper, example, path, info: dict, opset: int) -> None:
    import onnx

    names = ["image"] + (["style"] if wrapper.multi_style else [])
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}}
    if wrapper.multi_style:
        axes["style"] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # the legacy TorchScript-based exporter: dynamic H/W through dynamic_axes, no onnxscript rewriting needed;
        # its tracer/constant-folding warnings concern shape checks, not results (the export is verified below)
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, example, str(path), input_names=names, output_names=["output"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    model = onnx.load(str(path))
    for k, v in info.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))


def _write_torchscript(wrapper, example, path, info: dict) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks; the trace is verified after export
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={"toonlab.json": json.dumps(info)})


def _session(path: str | Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("the onnx backend needs onnxruntime: pip install 'toonlab[onnx]'") from None
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for foreign/corrupt files
        raise ToonlabError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None


def run_onnx_raw(path: str | Path, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
    """Run an exported ONNX file once: (B,3,H,W) [0,1] (+ style (B,)) → (B,3,H,W) [0,1]."""
    sess = _session(path)
    feeds = {"image": x.float().cpu().numpy()}
    if style is not None:
        feeds["style"] = style.cpu().numpy().astype(np.int64)
    return torch.from_numpy(sess.run(["output"], feeds)[0])


def load_onnx_translator(path: str | Path, *, overrides: dict, **common) -> Translator:
    """A :class:`Translator` running ``path`` (made by :func:`export_model`) through onnxruntime."""
    from toonlab.infer.postprocess import PostProcess

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such ONNX file")
    sess = _session(path)
    meta = sess.get_modelmeta().custom_metadata_map
    if "toonlab_model" not in meta:
        raise ToonlabError(f"{path}: not exported by toonlab (no toonlab_model metadata)")
    styles = tuple(json.loads(meta.get("toonlab_styles", "[]")))

    def forward(x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        feeds = {"image": x.float().cpu().numpy()}
        if styles:
            feeds["style"] = style.cpu().numpy().astype(np.int64)
        return torch.from_numpy(sess.run(["output"], feeds)[0]).to(x.device)

    post = PostProcess.for_model(json.loads(meta.get("toonlab_config", "{}")), **overrides)
    common = {**common, "channels_last": False}
    return Translator(forward, name=meta["toonlab_model"], device=torch.device("cpu"),
                      size_multiple=int(meta.get("toonlab_size_multiple", "1")), styles=styles,
                      direction=meta.get("toonlab_direction", "photo2cartoon"), post=post,
                      bytes_per_pixel=2048.0, meta=dict(meta), **common)
