import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from toonlab.config import build, load_yaml, parse_overrides, ranged, to_dict
from toonlab.errors import ConfigError


@dataclass
class Inner:
    k: int = 32
    lr: float = 2e-4
    mode: Literal["random", "fixed"] = "random"
    strides: tuple[int, int] = (48, 72)


@dataclass
class Outer:
    name: str = "ctss"
    inner: Inner = field(default_factory=Inner)
    path: Optional[Path] = None
    flag: bool = False


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["a.b=1", "a.c=1e-5", "d=[1, 2]", "e=true", "f=x"]) == {
        "a": {"b": 1, "c": 1e-5}, "d": [1, 2], "e": True, "f": "x"}


def test_build_merges_nested_and_coerces():
    cfg = build(Outer, {"inner": {"k": 16}}, ["inner.lr=1e-5", "inner.strides=[48,48]", "path=/tmp/x", "flag=true"])
    assert cfg.inner.k == 16 and cfg.inner.lr == 1e-5 and cfg.inner.strides == (48, 48)
    assert cfg.path == Path("/tmp/x") and cfg.flag is True and cfg.inner.mode == "random"
    assert to_dict(cfg) == {"name": "ctss", "inner": {"k": 16, "lr": 1e-5, "mode": "random", "strides": [48, 48]},
                            "path": "/tmp/x", "flag": True}


@pytest.mark.parametrize("override, message", [
    ("inner.kk=3", "unknown config key in inner: inner.kk"),
    ("inner.k=abc", "inner.k: expected an integer"),
    ("inner.mode=other", "inner.mode: 'other' is not one of"),
    ("flag=3", "flag: expected true/false"),
    ("inner.strides=[1]", "inner.strides: expected 2 items"),
    ("novalue", "not of the form"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        build(Outer, {}, [override])


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(lst)


@dataclass
class Ranged:
    width: int = ranged(64, ge=1)
    rate: float = ranged(0.5, gt=0, le=1)
    strides: tuple[int, int] = ranged((48, 72), ge=1)
    weight: float = 1.0


@pytest.mark.parametrize("override, message", [
    ("width=0", "width: must be >= 1, got 0"),
    ("rate=0", "rate: must be > 0, got 0.0"),
    ("rate=1.5", "rate: must be <= 1, got 1.5"),
    ("strides=[48, 0]", "strides: must be >= 1, got (48, 0)"),
    ("weight=.nan", "weight: must be a finite number"),
    ("weight=-.inf", "weight: must be a finite number"),
])
def test_ranges_and_non_finite_floats_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build(Ranged, {}, [override])
    assert build(Ranged, {}, ["width=1", "rate=1", "strides=[1, 1]", "weight=-2"]).weight == -2.0
