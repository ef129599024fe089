from dataclasses import dataclass

import pytest
import torch
from torch import nn

from toonlab.checkpoint import load_export, read_export_metadata, save_export, strip_prefixes
from toonlab.errors import ToonlabError
from toonlab.models.base import Model, Phase, Step, register


@dataclass
class _TinyConfig:
    width: int = 4


@register("_tiny_export_test")
class _Tiny(Model):
    Config = _TinyConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.networks["G"] = nn.Sequential(nn.Conv2d(3, cfg.width, 3, padding=1), nn.Conv2d(cfg.width, 3, 1))

    def phases(self):
        return (Phase("init", 1, (Step("init", ("G",), 1e-3),)),)

    def translator(self):
        return self.networks["G"]


def test_export_round_trip_rebuilds_from_metadata(tmp_path):
    model = _Tiny(_TinyConfig(width=6))
    path = save_export(model, tmp_path / "g.safetensors", extra={"step": 12})
    loaded, meta = load_export(path)
    assert meta["model"] == "_tiny_export_test" and meta["step"] == "12"
    assert loaded.cfg.width == 6
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(loaded.translator()(x), model.translator()(x))


def test_foreign_and_truncated_files_fail_with_one_line(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ToonlabError, match="not a readable safetensors"):
        read_export_metadata(bad)
    good = save_export(_Tiny(_TinyConfig()), tmp_path / "g.safetensors")
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ToonlabError):
        load_export(cut)


def test_strip_prefixes():
    s = {"module.a.weight": 1, "_orig_mod.module.b": 2, "c": 3}
    assert strip_prefixes(s) == {"a.weight": 1, "b": 2, "c": 3}
