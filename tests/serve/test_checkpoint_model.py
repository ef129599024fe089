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


class _ChannelPick(nn.Module):
    """Multi-style G: style 0 keeps the red channel, 1 the blue one (others set to −1, i.e. 0 on [0,1])."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x, style):
        keep = torch.where(style == 0, 0, 2)
        mask = torch.zeros_like(x)
        mask[torch.arange(x.shape[0]), keep] = 1
        return (x * self.scale) * mask - (1 - mask)


@register("_serve_styles_test")
class _Styles(Model):
    Config = _NegConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.networks["G"] = _ChannelPick()

    @property
    def styles(self):
        return ("reds", "blues")

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
        odd = photo_small[:131, :157]  # not a multiple of size_multiple (4): padded, translated, cropped back
        r = httpx.post(f"{url}/v1/cartoonize", files={"image": ("p.png", encode(odd), "image/png")},
                       data={"model": "neg"}, timeout=60)
        got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
        assert got.shape == odd.shape and np.abs(got - (255 - odd.astype(int))).max() <= 1


def test_serves_a_multi_style_checkpoint(tmp_path, photo_small):
    path = save_export(_Styles(_NegConfig()), tmp_path / "two-styles.safetensors")
    cfg = ServeConfig(models=[str(path)], device="cpu", access_log=None)
    with running_server(cfg, load_models(cfg.models, cfg.device)) as url:
        info = {m["name"]: m for m in httpx.get(f"{url}/v1/models").json()["models"]}
        assert info["two-styles"]["styles"] == ["reds", "blues"] and info["two-styles"]["default_style"] == "reds"
        for style, channel in (("blues", 2), ("reds", 0), (None, 0)):
            fields = {"model": "two-styles"} | ({"style": style} if style else {})
            r = httpx.post(f"{url}/v1/cartoonize", files={"image": ("p.png", encode(photo_small), "image/png")},
                           data=fields, timeout=60)
            assert r.status_code == 200, r.text
            got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
            assert np.abs(got[..., channel] - photo_small[..., channel]).max() <= 1
            assert np.delete(got, channel, axis=2).max() == 0
        r = httpx.post(f"{url}/v1/cartoonize", files={"image": ("p.png", encode(photo_small), "image/png")},
                       data={"model": "two-styles", "style": "greens"})
        assert r.status_code == 400 and "reds, blues" in r.json()["detail"]
