from pathlib import Path

import pytest

from toonlab.errors import ConfigError, UsageError
from toonlab.train.config import load_run_config, run_config_dict

from .conftest import write_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_base_inheritance_deep_merges_and_overrides_win(tmp_path):
    (tmp_path / "sub").mkdir()
    write_yaml(tmp_path / "base.yaml", {"model": {"name": "_tiny_train", "width": 3, "noise": 0.5},
                                        "data": {"size": 16, "batch_size": 4},
                                        "train": {"seed": 7, "phase_steps": {"init": 2}}})
    write_yaml(tmp_path / "sub" / "child.yaml", {"base": "../base.yaml", "model": {"name": "_tiny_train", "width": 5},
                                                 "data": {"batch_size": 2}})
    cfg = load_run_config(tmp_path / "sub" / "child.yaml", ["train.max_steps=9", "model.lr_g=1e-5"])
    assert cfg.model["width"] == 5 and cfg.model["noise"] == 0.5  # child wins, base kept
    assert cfg.model["lr_g"] == 1e-5 and cfg.model["adv_epochs"] == 2  # override; model default filled in
    assert cfg.data.size == 16 and cfg.data.batch_size == 2
    assert cfg.train.seed == 7 and cfg.train.max_steps == 9 and cfg.train.phase_steps == {"init": 2}
    assert run_config_dict(cfg)["model"]["betas"] == [0.5, 0.999]


@pytest.mark.parametrize("bad, match", [
    ({"train": {"max_step": 3}}, "train.max_step"),
    ({"data": {"batch_size": 0}}, "data.batch_size"),
    ({"model": {"name": "_tiny_train", "widht": 3}}, "model.widht"),
    ({"model": {"name": "_tiny_train", "width": "wide"}}, "model.width"),
    ({"train": {"ema": 1.5}}, "train.ema"),
    ({"train": {"amp": "fp8"}}, "train.amp"),
])
def test_bad_keys_and_values_name_the_key(tmp_path, bad, match):
    data = {"model": {"name": "_tiny_train"}, **bad}
    if "model" in bad:
        data["model"] = bad["model"]
    with pytest.raises(ConfigError, match=match):
        load_run_config(write_yaml(tmp_path / "c.yaml", data))


def test_missing_or_unknown_model_and_circular_base(tmp_path):
    with pytest.raises(ConfigError, match="model.name"):
        load_run_config(write_yaml(tmp_path / "a.yaml", {"data": {"size": 32}}))
    with pytest.raises(UsageError, match="unknown model 'nope'"):
        load_run_config(write_yaml(tmp_path / "b.yaml", {"model": {"name": "nope"}}))
    write_yaml(tmp_path / "x.yaml", {"base": "y.yaml", "model": {"name": "_tiny_train"}})
    write_yaml(tmp_path / "y.yaml", {"base": "x.yaml"})
    with pytest.raises(ConfigError, match="circular"):
        load_run_config(tmp_path / "x.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_resolves(path):
    cfg = load_run_config(path)
    assert path.name.split("-")[0].split(".")[0] == cfg.model_name
    if path.name.endswith("-tiny.yaml"):
        assert cfg.data.size <= 64 and cfg.data.batch_size <= 2 and cfg.data.workers == 0
        assert cfg.train.phase_steps and max(cfg.train.phase_steps.values()) <= 4
