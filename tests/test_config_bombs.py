"""Issue 24 item 8: configuration bombs — alias expansion, absurd sizes, non-mapping sections under overrides,
duplicate keys, huge values in error messages. Each is one line before anything is built."""

import time

import pytest
from typer.testing import CliRunner

from toonlab.cli import app
from toonlab.config import load_yaml, merge, parse_overrides
from toonlab.errors import ConfigError
from toonlab.train.config import load_run_config

LAUGHS = "\n".join(["model: {name: ctss}", "data:", "  photos: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                   + [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]) + "\n"


def _one_line(result):
    return result.output.count("\n") == 1 and "Traceback" not in result.output


def test_billion_laughs_is_refused_at_once(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(LAUGHS.replace("  l9:", "  cartoons:"))  # 9^10 strings through data.cartoons
    start = time.monotonic()
    with pytest.raises(ConfigError, match="aliases .* expand to more than 100,000 values"):
        load_yaml(bomb)
    r = CliRunner().invoke(app, ["train", str(bomb)])
    assert r.exit_code == 2 and _one_line(r) and "billion laughs" in r.output, r.output
    assert time.monotonic() - start < 10  # it took 3 GB in 60 s
    level = "&a0 [x, x, x, x, x, x, x, x, x, x]"
    for i in range(1, 6):  # 10^6 values on one line
        level = f"&a{i} [{level}, {', '.join([f'*a{i - 1}'] * 9)}]"
    with pytest.raises(ConfigError, match="override data.photos: its aliases"):
        parse_overrides([f"data.photos={level}"])
    recursive = tmp_path / "rec.yaml"
    recursive.write_text("data: {photos: &r [a, *r]}\n")
    with pytest.raises(ConfigError, match="expand to more than"):
        load_yaml(recursive)


@pytest.mark.parametrize("override,needs", [("data.size=100000", "data.size 100000²"),
                                            ("data.batch_size=1e12", "data.batch_size 1000000000000")])
def test_sizes_beyond_memory_are_one_line_before_allocating(tmp_path, override, needs):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: ctss}}\ndata: {{photos: {tmp_path}, cartoons: {tmp_path}}}\n"
                   f"train: {{run_dir: {tmp_path / 'run'}}}\n")
    with pytest.raises(ConfigError, match=f"{needs}.*GiB, more than this machine's"):
        load_run_config(cfg, [override])
    r = CliRunner().invoke(app, ["train", str(cfg), override])
    assert r.exit_code == 2 and _one_line(r) and "GiB" in r.output, r.output
    assert not (tmp_path / "run").exists()


def test_a_scalar_section_is_not_silently_replaced_by_an_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: ctss}\ntrain: 5\n")
    with pytest.raises(ConfigError, match="^train: expected a mapping, got 5$"):
        load_run_config(cfg, ["train.max_steps=3"])
    with pytest.raises(ConfigError, match="^a.b: expected a mapping, got 'x'"):
        merge({"a": {"b": {"c": 1}}}, {"a": {"b": "x"}})
    assert merge({"a": None}, {"a": {"b": 1}}) == {"a": {"b": 1}}  # an empty section (`train:`) may be filled


def test_duplicate_keys_are_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: ctss}\ntrain: {max_steps: 3}\ndata: {size: 64}\ntrain: {max_steps: 9}\n")
    with pytest.raises(ConfigError, match="duplicate key 'train'"):
        load_yaml(cfg)
    cfg.write_text("base: &b {size: 64}\ndata: {<<: *b, size: 32}\n")  # a merge key's values may be overridden
    assert load_yaml(cfg)["data"] == {"size": 32}


def test_error_messages_never_print_a_huge_value(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: ctss}\ndata: {batch_size: [" + ", ".join(["123456789"] * 5_000) + "]}\n")
    with pytest.raises(ConfigError) as e:
        load_run_config(cfg)
    assert str(e.value).startswith("data.batch_size: expected an integer, got [123456789, ") and len(str(e.value)) < 200
