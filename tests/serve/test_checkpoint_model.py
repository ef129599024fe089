"""Serving a trained model: an export checkpoint given with -m NAME=PATH goes through toonlab's Translator."""

from __future__ import annotations

import io
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from serve_helpers import encode, running_server
from toonlab.checkpoint import save_export
from toonlab.errors import UsageError
from toonlab.models.base import Model, Phase, Step, register
from toonlab.serve.config import ServeConfig
from toonlab.serve.models import load_models, parse_model_specs


@dataclass
class _NegConfig:
    width: int = 3


@register("_serve_negative_test")
class _Negative(Model):
    """G(x) = −x on [-1,1], i.e. 1 − x on [0,1]: an exactly known translation."""

    Config = _NegConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            conv.weight.copy_(-torch.eye(3).view(3, 3, 1, 1))
            conv.bias.zero_()
        self.networks["G"] = conv

    def phases(self):
        return (Phase("init", 1, (Step("init", ("G",), 1e-3),)),)

    def translator(self):
        return self.networks["G"]


def test_model_specs():
    assert parse_model_specs(["runs/ctss/", "x/hayao.safetensors", "fast=a/b.safetensors"]) == [
        ("ctss", "runs/ctss/"), ("hayao", "x/hayao.safetensors"), ("fast", "a/b.safetensors")]
    with pytest.raises(UsageError, match="used twice"):
        parse_model_specs(["a/g.safetensors", "b/g.safetensors"])
    with pytest.raises(UsageError, match="used twice"):
        parse_model_specs(["classic=x.safetensors"])


def test_serves_an_export_checkpoint(tmp_path, photo_small):
    path = save_export(_Negative(_NegConfig()), tmp_path / "neg.safetensors")
    cfg = ServeConfig(models=[f"neg={path}"], device="cpu", access_log=None)
    models = load_models(cfg.models, cfg.device)
    with running_server(cfg, models) as url:
        info = {m["name"]: m for m in httpx.get(f"{url}/v1/models").json()["models"]}
        assert info["neg"]["architecture"] == "_serve_negative_test" and info["neg"]["styles"] == []
        assert "tmp" not in str(info)  # no file paths leak
        r = httpx.post(f"{url}/v1/cartoonize", files={"image": ("p.png", encode(photo_small), "image/png")},
                       data={"model": "neg", "strength": "0.5"}, timeout=60)
        assert r.status_code == 200, r.text
        got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
        assert np.abs(got - 127.5).max() <= 1  # x + 0.5·((1 − x) − x) = 0.5 everywhere
