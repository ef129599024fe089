"""The models a server holds: loaded once at start, chosen by name per request (never by a path from a request)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from toonlab.errors import UsageError

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


def translator_model(name: str, source: str, device: str = "auto") -> ServedModel:
    """``source`` ("classic", an export file or a run dir) through toonlab's Translator, served as ``name``.

    The Translator applies the model's own recipe (e.g. CTSS's +40 % saturation); the request's keep_colors and
    strength come after it (toonlab.serve.app), the same order as toonlab.infer.postprocess."""
    from toonlab.infer.translator import Translator

    tr = Translator.load(source, device=device)

    def run(rgb: torch.Tensor, style: str | None) -> torch.Tensor:
        return tr.translate_tensor(rgb, style)

    return ServedModel(name, tr.name, run, styles=tuple(tr.styles), size_multiple=int(tr.size_multiple),
                       info={"direction": tr.direction})


def classic_model() -> ServedModel:
    """The learning-free cartoonizer (always served, name ``classic``)."""
    return translator_model("classic", "classic")


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
        models[name] = translator_model(name, source, device)
    return models

