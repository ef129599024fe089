from pathlib import Path

import pytest

from toonlab.config import load_yaml
from toonlab.models import build_model

ABLATIONS = Path(__file__).resolve().parents[2] / "configs" / "ablations"
MINE = sorted(p for p in ABLATIONS.glob("*.yaml") if p.name.split("-")[0] in ("multistyle", "salcbam", "toon2real"))


def test_every_table_row_has_a_config():
    names = {p.stem for p in MINE}
    assert {"multistyle-full", "multistyle-no-adalin", "multistyle-no-aux"} <= names
    assert {"salcbam-cartoongan", "salcbam-sal", "salcbam-sal-cbam", "salcbam-ressal-cbam"} <= names
    assert {"toon2real-full", "toon2real-no-sn"} <= names


@pytest.mark.parametrize("path", MINE, ids=lambda p: p.stem)
def test_ablation_overrides_build_the_model(path):
    data = load_yaml(path)
    model = dict(data["model"])
    name = model.pop("name")
    assert data["base"] == f"../{name}.yaml"
    m = build_model(name, model)
    for key, value in model.items():
        assert getattr(m.cfg, key) == value
