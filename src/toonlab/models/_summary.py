"""Registry summary for ``toonlab models``: parameter counts per network and generator GFLOPs.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add = 2 FLOPs; convolutions and
matmuls only — norms, activations and resizes are not counted) on one image at the model's default size. The
count runs on the ``meta`` device (no memory, no arithmetic) and falls back to CPU for models that cannot be
built there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from toonlab.models.base import Model, build_model


@dataclass
class ModelSummary:
    name: str
    direction: str
    default_size: int
    params: dict[str, int]      # trainable parameters per network
    generator_gflops: float     # translator() on (1,3,S,S), S = default_size
    styles: tuple[str, ...]


def translator_gflops(model: Model, size: int, device: str | torch.device = "cpu") -> float:
    """GFLOPs of ``model.translator()`` on one (1,3,size,size) image (style 0 for multi-style models)."""
    net = model.translator().eval()
    x = torch.zeros(1, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        if model.styles:
            net(x, 0)  # an int id: a tensor's range check reads its values, which meta tensors do not have
        else:
            net(x)
    return counter.get_total_flops() / 1e9


def summarize(name: str) -> ModelSummary:
    """Build registered model ``name`` from its default config and measure it."""
    try:
        with torch.device("meta"):
            model = build_model(name)
            gflops = translator_gflops(model, model.default_size, "meta")
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # an op without a meta kernel
        model = build_model(name)
        gflops = translator_gflops(model, model.default_size)
    params = {k: sum(p.numel() for p in net.parameters() if p.requires_grad) for k, net in model.networks.items()}
    return ModelSummary(name, model.direction, model.default_size, params, gflops, tuple(model.styles))
