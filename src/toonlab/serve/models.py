"""The models a server holds: loaded once at start, chosen by name per request (never by a path from a request)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from toonlab.errors import UsageError
from toonlab.ops import rgb_to_yuv, yuv_to_rgb

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class ServedModel:
    """A loaded model. ``run(rgb (B,3,H,W) [0,1], style | None) -> (B,3,H,W) [0,1]`` (thread-safe, no grad)."""

    name: str
    architecture: str
    run: Callable[[torch.Tensor, str | None], torch.Tensor]
    styles: tuple[str, ...] = ()
    size_multiple: int = 1
    info: dict = field(default_factory=dict)  # extra public facts for /v1/models (never file paths)

    def describe(self) -> dict:
        return {"name": self.name, "architecture": self.architecture, "styles": list(self.styles),
                "default_style": self.styles[0] if self.styles else None, "size_multiple": self.size_multiple,
                **self.info}


def classic_model() -> ServedModel:
    """The learning-free cartoonizer (always served, name ``classic``)."""
    from toonlab.infer.classic import ClassicConfig, cartoonize_classic

    cfg = ClassicConfig()

    def run(rgb: torch.Tensor, style: str | None) -> torch.Tensor:
        return cartoonize_classic(rgb, cfg)

    return ServedModel("classic", "classic", run, info={"direction": "photo2cartoon", "work_size": cfg.work_size})


def checkpoint_model(name: str, source: str, device: str = "auto") -> ServedModel:
    """A trained model from an export file or a run dir, through the INFER engineer's Translator."""
    from toonlab.infer.translator import Translator

    # The Translator applies the model's own recipe (e.g. CTSS's +40 % saturation); the request's strength and
    # keep_colors come after, in `finish` (the same order as toonlab.infer.postprocess).
    tr = Translator.load(source, device=device)

    def run(rgb: torch.Tensor, style: str | None) -> torch.Tensor:
        return tr.translate_tensor(rgb, style)

    return ServedModel(name, tr.name, run, styles=tuple(tr.styles), size_multiple=int(tr.size_multiple),
                       info={"direction": tr.direction})


def parse_model_specs(specs: list[str]) -> list[tuple[str, str]]:
    """``-m`` values -> [(name, source)]: ``NAME=PATH`` or ``PATH`` (name = the file's stem / the run dir's name).

    Names must be unique, URL-safe and not ``classic`` (always present).
    """
    out: list[tuple[str, str]] = []
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not _NAME.match(name):
            source = spec
            p = Path(spec.rstrip("/"))
            name = p.stem if p.suffix == ".safetensors" else p.name
            name = re.sub(r"[^A-Za-z0-9._-]", "-", name)[:64].lstrip("._-") or "model"
        if name == "classic" or name in {n for n, _ in out}:
            raise UsageError(f"serve: model name {name!r} is used twice (name them: -m NAME=PATH)")
        out.append((name, source))
    return out


def load_models(specs: list[str], device: str = "auto") -> dict[str, ServedModel]:
    """``classic`` plus every ``-m`` spec, loaded now (a bad checkpoint fails the start, not a request)."""
    models = {"classic": classic_model()}
    for name, source in parse_model_specs(specs):
        models[name] = checkpoint_model(name, source, device)
    return models


def finish(photo: torch.Tensor, out: torch.Tensor, strength: float = 1.0, keep_colors: bool = False) -> torch.Tensor:
    """User-facing post-processing of a translation ``out`` of ``photo`` (both (B,3,H,W) in [0,1]).

    keep_colors: the output's luminance Y with the photo's chroma U, V (YUV of toonlab.ops) — the tone of the
    photo stays. strength in [0,1]: photo + strength·(out − photo), 0 = the photo, 1 = the full translation.
    """
    if keep_colors:
        yuv = torch.cat([rgb_to_yuv(out)[:, :1], rgb_to_yuv(photo)[:, 1:]], 1)
        out = yuv_to_rgb(yuv).clamp_(0.0, 1.0)
    if strength < 1.0:
        out = torch.lerp(photo, out, strength)
    return out
