from pathlib import Path

import pytest

from toonlab.config import load_yaml
from toonlab.train.config import load_run_config

ABLATIONS = Path(__file__).resolve().parents[2] / "configs" / "ablations"
MINE = sorted(p for p in ABLATIONS.glob("*.yaml") if p.name.split("-")[0] in ("multistyle", "salcbam", "toon2real"))


def test_every_table_row_has_a_config():
    names = {p.stem for p in MINE}
    assert {"multistyle-full", "multistyle-no-adalin", "multistyle-no-aux"} <= names
    assert {"salcbam-cartoongan", "salcbam-sal", "salcbam-sal-cbam", "salcbam-ressal-cbam"} <= names
    assert {"toon2real-full", "toon2real-no-sn"} <= names


@pytest.mark.parametrize("path", MINE, ids=lambda p: p.stem)
def test_ablation_row_resolves(path):
    """Each row = the recipe (``base: ../<model>.yaml``) + model overrides, resolved (and strictly checked against
    the model's Config) by the trainer's loader; the overrides survive the merge."""
    raw = load_yaml(path)
    assert raw["base"] == f"../{raw['model']['name']}.yaml"
    cfg = load_run_config(path)
    assert cfg.model_name == raw["model"]["name"]
    for key, value in raw["model"].items():
        assert cfg.model[key] == value
