"""Import published generator weights into toonlab export checkpoints.

- ``animegan2``: bryandlee/animegan2-pytorch ``.pt`` state dicts (``paprika.pt``, ``face_paint_512_v2.pt``, …) →
  the ``animegan`` model's G, whose module names are that repository's (``block_a`` … ``block_e``, ``out_layer``).
  Input RGB in [-1, 1], as there.
- ``cartoongan``: the PyTorch conversion of CartoonGAN's released models (Yijunmaverick/CartoonGAN-Test-Pytorch-Torch,
  ``Hayao_net_G_float.pth``, ``Hosoda…``, ``Paprika…``, ``Shinkai…``) → the ``cartoongan`` model's G (names
  ``conv01_1`` … ``deconv03_1``, instance norms ``in01_1`` … with ``scale``/``shift``). Those weights were trained
  on **BGR** input in [-1, 1] (the original Torch/Caffe convention): the export records ``input_order = "bgr"`` and
  the Translator / exported ONNX flip channels around the network, so users still pass and get RGB.

Files are read with ``torch.load(weights_only=True)`` (no unpickling of code). The written file is an ordinary
export checkpoint: ``toonlab cartoonize -m OUT.safetensors`` runs it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from toonlab.errors import ToonlabError, UsageError

# arch → (registered toonlab model, channel order the released weights expect)
ARCHS = {"animegan2": ("animegan", "rgb"), "cartoongan": ("cartoongan", "bgr")}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``name → tensor`` dict from a ``.pt``/``.pth`` file (also inside a ``{"state_dict": …}`` wrapper),
    with ``module.`` / ``_orig_mod.`` prefixes stripped. One-line ToonlabError for unreadable files."""
    from toonlab.checkpoint import strip_prefixes

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such weights file")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors, or objects that weights_only refuses
        raise ToonlabError(f"{path}: {_load_failure(path, e)}") from None
    for wrapper in ("state_dict", "model", "generator", "G"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ToonlabError(f"{path}: expected a state dict (name → tensor)")
    return strip_prefixes(obj)


# torch.save's two layouts: a zip archive (since 1.6), or the legacy pickle stream opening with its magic number
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def _load_failure(path: Path, e: Exception) -> str:
    """Why torch.load failed, in words: torch's own messages are multi-paragraph or bare numbers (a KeyError of a
    pickle memo id), so the file's layout is read from its first bytes instead."""
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if not (head.startswith(_ZIP_MAGIC) or head == _LEGACY_MAGIC):
        return "not a PyTorch weights file (neither torch.save's zip archive nor its legacy pickle layout)"
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    if refused:  # weights_only met something that is not a tensor (or a file cut inside such a name)
        return f"holds a {refused.group(1)} object, not only tensors (toonlab never unpickles code)"
    return f"a damaged or truncated PyTorch weights file ({type(e).__name__})"


def _model_config(arch: str, state: Mapping[str, torch.Tensor]) -> dict:
    if arch == "cartoongan":  # residual blocks conv04_1 … conv(3+n)_1
        blocks = {int(m.group(1)) for k in state if (m := re.fullmatch(r"conv(\d\d)_1\.weight", k))}
        return {"n_res": len([i for i in blocks if i >= 4])}
    return {}


def map_state_dict(arch: str, state: Mapping[str, torch.Tensor]):
    """Build the toonlab model for ``arch`` and load ``state`` into its G (names and shapes checked, all tensors
    used). Returns the model. ToonlabError lists the first missing / unexpected / mis-shaped keys."""
    from toonlab.models import build_model

    if arch not in ARCHS:
        raise UsageError(f"unknown --arch {arch!r} (known: {', '.join(ARCHS)})")
    model = build_model(ARCHS[arch][0], _model_config(arch, state))
    g = model.translator()
    expected = g.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = [f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
                 if keys]
        raise ToonlabError(f"weights do not match the {arch} generator ({'; '.join(parts)})")
    g.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model.eval()


def import_weights(src: str | Path, arch: str, out: str | Path) -> Path:
    """Read released weights ``src`` of ``arch`` ("animegan2" | "cartoongan") and write an export checkpoint."""
    from toonlab.checkpoint import save_export

    src = Path(src)
    try:
        model = map_state_dict(arch, read_state_dict(src))
    except ToonlabError as e:
        if str(src) in str(e):
            raise
        raise type(e)(f"{src}: {e}") from None
    extra = {"input_order": ARCHS[arch][1], "imported_from": src.name, "imported_arch": arch}
    return save_export(model, out, extra=extra)
