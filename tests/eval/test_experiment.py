"""Experiments: every shipped experiment file resolves (rows → run configs → models); a SynthToon experiment
runs end to end and writes a report with the right rows, columns and grid."""

import json
from pathlib import Path

import pytest
import yaml

from toonlab.checkpoint import save_export
from toonlab.errors import ConfigError
from toonlab.eval.experiment import DatasetSpec, fill_overrides, load_experiment, run_experiment
from toonlab.models.base import build_model
from toonlab.train.config import load_run_config

EXPERIMENTS = sorted(Path(__file__).resolve().parents[2].joinpath("configs", "experiments").glob("*.yaml"))
PAPER_TABLES = {"ctss-table1", "ctss-table2", "ctss-table3", "ctss-table4", "multistyle-table1",
                "multistyle-ablation", "salcbam-tables1-2", "toon2real-table3", "ctss-table3-synth"}


def test_every_paper_table_has_an_experiment_file():
    assert PAPER_TABLES <= {p.stem for p in EXPERIMENTS}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_rows_resolve_to_run_configs(path):
    spec, base = load_experiment(path)
    assert spec.rows and spec.datasets
    for row in spec.rows:
        if row.config is None:
            continue
        d = spec.datasets[0]
        if d.synth is not None:  # its folders exist once generated: stand-ins are enough to check the keys
            d = DatasetSpec(d.name, test_inputs="in", fid_reference="ref", truth="truth")
        overrides = fill_overrides([*spec.train_overrides, *row.overrides], d)
        cfg = load_run_config(base / row.config, overrides)  # strict keys
        assert cfg.model_name


def test_bad_experiment_files(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump({"title": "t", "datasets": [{"name": "d", "test_inputs": "in"}],
                                 "rows": [{"name": "a", "classic": True, "config": "c.yaml"}]}))
    with pytest.raises(ConfigError, match="exactly one of"):
        load_experiment(p)
    p.write_text(yaml.safe_dump({"title": "t", "datasets": [{"name": "d", "test_inputs": "in"}],
                                 "rows": [{"name": "a", "classic": True}], "metrics": ["lpips"]}))
    with pytest.raises(ConfigError, match="unknown metric"):
        load_experiment(p)


def test_synthtoon_experiment_end_to_end(tmp_path, monkeypatch):
    """A classic row and a reused export (a freshly initialised tiny CTSS: no training needed to test the
    pipeline) on a generated SynthToon; FID skipped (no weights offline) with a note, paired scores present."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TOONLAB_OFFLINE", "1")
    export = save_export(build_model("ctss", {"perceptual": "random"}), tmp_path / "ctss.safetensors")
    spec = {
        "title": "SynthToon smoke", "out": str(tmp_path / "exp"), "grid_images": 3,
        "metrics": ["fid", "kid", "psnr", "ssim", "edge_f1"],
        "datasets": [{"name": "SynthToon", "synth": {"root": str(tmp_path / "synth"), "n": 4, "size": 32}}],
        "rows": [{"name": "Learning-free abstraction", "classic": True},
                 {"name": "CTSS (untrained)", "run": str(export)}],
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = run_experiment(path, log=lambda m: None)

    md = res.report_md.read_text()
    header = [c.strip() for c in md.splitlines()[next(i for i, l in enumerate(md.splitlines())
                                                      if l.startswith("| Method"))].strip("|").split("|")]
    assert header == ["Method", "FID ↓", "KID×10³ ↓", "PSNR ↑", "SSIM ↑", "edge F1 ↑"]
    assert "| Learning-free abstraction |" in md and "| CTSS (untrained) |" in md
    assert "FID/KID not computed" in md and "pt_inception-2015-12-05-6726825d.pth" in md
    data = json.loads(res.results_json.read_text())
    for row in ("Learning-free abstraction", "CTSS (untrained)"):
        cell = data["cells"][f"{row}|SynthToon"]
        assert cell["fid"] is None and 0 < cell["ssim"] <= 1 and 0 <= cell["edge_f1"] <= 1
    outs = sorted((tmp_path / "exp" / "outputs" / "ctss-untrained" / "synthtoon").glob("*.png"))
    assert len(outs) == 8  # SynthToon's test split: max(8, n // 4) scenes
    assert "<th colspan=5>SynthToon</th>" in res.report_html.read_text()
    from toonlab.io import read_image

    grid = read_image(res.grids[0]).rgb
    assert grid.shape[1] == 4 * (128 + 2) + 2  # rows: input, true cartoon, 2 methods
    assert grid.shape[2] == 150 + 3 * (128 + 2) + 2


# ---- protocol fixes (issue 12): direction, styles, post-processing, K >= M, study ---------------------------------


def _exp(tmp_path, rows, datasets=None, **extra):
    spec = {"title": "t", "out": str(tmp_path / "exp"), "metrics": ["psnr"], "grid_images": 2,
            "datasets": datasets or [{"name": "S", "synth": {"root": str(tmp_path / "synth"), "n": 4, "size": 32}}],
            "rows": rows, **extra}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_row_translating_the_wrong_direction_is_refused_before_training(tmp_path):
    """CycleGAN in a photo → cartoon table must use G_c; a G_r row (cartoon → photo) is refused in one line."""
    configs = Path(__file__).resolve().parents[2] / "configs"
    path = _exp(tmp_path, [{"name": "CycleGAN G_r", "config": str(configs / "cyclegan-tiny.yaml"),
                            "overrides": ["model.translate=cartoon2photo"]}])
    with pytest.raises(ConfigError, match="translates cartoon2photo but dataset 'S' has photo2cartoon"):
        run_experiment(path, log=lambda m: None)
    assert not (tmp_path / "exp" / "runs").exists()  # nothing trained
    t2r = save_export(build_model("toon2real", {"ngf": 4, "ndf": 4, "n_blocks": 1}), tmp_path / "t2r.safetensors")
    with pytest.raises(ConfigError, match="translates cartoon2photo"):  # a reused export: checked when loaded
        run_experiment(_exp(tmp_path, [{"name": "t2r", "run": str(t2r)}]), log=lambda m: None)
    # the same export on a cartoon → photo dataset is fine (SynthToon's test cartoons in, true photos as truths)
    res = run_experiment(_exp(tmp_path, [{"name": "t2r", "run": str(t2r)}], datasets=[
        {"name": "S", "direction": "cartoon2photo", "synth": {"root": str(tmp_path / "synth"), "n": 4, "size": 32}}]),
        log=lambda m: None)
    assert res.table.value("t2r", "S", "psnr") is not None


def test_multistyle_row_translates_each_column_with_its_style(tmp_path):
    import torch

    from toonlab.infer.translator import Translator
    from toonlab.io import read_image

    export = save_export(build_model("multistyle", {"ch": 4, "ra_blocks": 1, "styles": ["hayao", "shinkai"]}),
                         tmp_path / "ms.safetensors")
    synth = {"root": str(tmp_path / "synth"), "n": 4, "size": 32}
    path = _exp(tmp_path, [{"name": "ms", "run": str(export)}],
                datasets=[{"name": "Hayao", "style": "Hayao", "synth": synth},
                          {"name": "Shinkai", "style": "SHINKAI", "synth": synth}])
    run_experiment(path, log=lambda m: None)
    t = Translator.load(export, device="cpu", saturation=1.0)
    f = sorted((tmp_path / "synth" / "test" / "photos").glob("*.png"))[0]
    x = read_image(f).rgb
    for col, sid in (("hayao", 0), ("shinkai", 1)):
        out = read_image(tmp_path / "exp" / "outputs" / "ms" / col / f.name).rgb
        assert torch.allclose(out, t.translate_tensor(x, sid), atol=1 / 255 + 1e-6)
    a, b = (read_image(tmp_path / "exp" / "outputs" / "ms" / c / f.name).rgb for c in ("hayao", "shinkai"))
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="needs style"):  # a multi-style config row on an unstyled dataset
        configs = Path(__file__).resolve().parents[2] / "configs"
        run_experiment(_exp(tmp_path, [{"name": "ms", "config": str(configs / "multistyle-tiny.yaml")}]),
                       log=lambda m: None)


def test_multistyle_and_single_style_rows_train_on_the_right_folders(tmp_path, monkeypatch):
    """A styles root: the multi-style row trains once on the root, a single-style row once per style folder."""
    import shutil

    import toonlab.eval.experiment as ex
    from toonlab.data.synth import make_synthtoon

    st = make_synthtoon(tmp_path / "st", n=4, size=32, seed=0, n_test=2)
    for name in ("Hayao", "Shinkai"):
        shutil.copytree(st / "train" / "cartoons", tmp_path / "styles" / name / "style")
    calls = []

    def fake_train(row, d, spec, base_dir, run_dir, log, cartoons=None):
        calls.append((row.name, d.name, cartoons))
        return save_export(build_model(*(("multistyle", {"ch": 4, "ra_blocks": 1}) if row.name == "ms" else
                                         ("ctss", {"perceptual": "random"}))), run_dir / "checkpoints" / "latest.safetensors")

    monkeypatch.setattr(ex, "_train_row", fake_train)
    configs = Path(__file__).resolve().parents[2] / "configs"
    common = {"train_photos": str(st / "train/photos"), "train_cartoons": str(tmp_path / "styles"),
              "test_inputs": str(st / "test/photos")}
    run_experiment(_exp(tmp_path, [{"name": "ms", "config": str(configs / "multistyle-tiny.yaml")},
                                   {"name": "ctss", "config": str(configs / "ctss-tiny.yaml")}],
                        datasets=[{"name": "Hayao", "style": "hayao", **common},
                                  {"name": "Shinkai", "style": "shinkai", **common}], metrics=[]), log=lambda m: None)
    root = str(tmp_path / "styles")
    assert calls == [("ms", "Hayao", root), ("ctss", "Hayao", str(tmp_path / "styles/Hayao/style")),
                     ("ctss", "Shinkai", str(tmp_path / "styles/Shinkai/style"))]


def test_every_row_gets_the_same_post_processing(tmp_path):
    """CTSS's own +40 % saturation is not applied unless the experiment applies it to every row (Fig. 7)."""
    import torch

    from toonlab import ops
    from toonlab.infer.classic import cartoonize_classic
    from toonlab.infer.translator import Translator
    from toonlab.io import read_image

    export = save_export(build_model("ctss", {"perceptual": "random"}), tmp_path / "ctss.safetensors")
    rows = [{"name": "classic", "classic": True}, {"name": "ctss", "run": str(export)}]
    raw = Translator.load(export, device="cpu", saturation=1.0)
    for sat in (1.0, 1.4):
        res = run_experiment(_exp(tmp_path, rows, saturation=sat, out=str(tmp_path / f"e{sat}")), log=lambda m: None)
        f = sorted((tmp_path / "synth" / "test" / "photos").glob("*.png"))[0]
        x = read_image(f).rgb[None]
        want = {"ctss": ops.adjust_saturation(raw.translate_tensor(x), sat),
                "classic": ops.adjust_saturation(cartoonize_classic(x), sat)}
        for row, expected in want.items():
            got = read_image(tmp_path / f"e{sat}" / "outputs" / row / "s" / f.name).rgb[None]
            assert torch.allclose(got, expected.clamp(0, 1), atol=1 / 255 + 1e-6), (sat, row)
        assert any(("+40 %" if sat == 1.4 else "none on any row") in n for n in res.notes)


def test_k_at_least_m_is_noted_for_table2():
    """K = 128 at 256² with batch 8: M = 8·(⌊(256−96)/s⌋+1)² ≤ 8·16 = 128 for s ≥ 54, so top-K keeps every patch."""
    from toonlab.eval.experiment import RowSpec, _patch_note

    base = Path(__file__).resolve().parents[2] / "configs" / "ablations"
    note = _patch_note(RowSpec("K=128", config="x"), load_run_config(base / "ctss-k128.yaml"))
    assert note is not None and "M = 72–128" in note and "W/O CTSS" in note
    assert _patch_note(RowSpec("K=32", config="x"), load_run_config(base / "ctss-k32.yaml")) is None


def test_study_block_prepares_serving_and_folds_scores(tmp_path):
    from toonlab.eval.study import StudyServer, collect
    from toonlab.eval.study import report as study_report

    export = save_export(build_model("ctss", {"perceptual": "random"}), tmp_path / "ctss.safetensors")
    rows = [{"name": "classic", "classic": True}, {"name": "ctss", "run": str(export)}]
    path = _exp(tmp_path, rows, study={"datasets": ["S"]})
    res = run_experiment(path, log=lambda m: None)
    script = tmp_path / "exp" / "study" / "serve-s.sh"
    assert "toonlab study serve" in script.read_text() and "--name classic --name ctss" in script.read_text()
    assert any("no ratings yet" in n for n in res.notes) and res.table.value("ctss", "S", "study") is None
    outs = [tmp_path / "exp" / "outputs" / r / "s" for r in ("classic", "ctss")]
    server = StudyServer(collect(outs, ["classic", "ctss"]), tmp_path / "exp" / "study" / "s.sqlite", port=0)
    try:
        for rater in ("a", "b"):
            while not (t := server.next_trial(rater))["done"]:
                methods = server._trial(t["trial"])[2]
                for slot, m in enumerate(methods):
                    server.record(t["trial"], slot, 4 if m == "ctss" else 2 + (rater == "b"))
    finally:
        server.close()
    res = run_experiment(path, log=lambda m: None)
    scores = {m.method: m for m in study_report(tmp_path / "exp" / "study" / "s.sqlite")}
    assert res.table.value("ctss", "S", "study") == pytest.approx(4.0)
    assert res.table.value("classic", "S", "study") == pytest.approx(scores["classic"].mean) == pytest.approx(2.5)
    assert "Subjective ↑" in res.report_md.read_text()


def test_out_option_keeps_a_relative_synth_root_inside_it(tmp_path, monkeypatch):
    """`experiment -o X` with the shipped files' relative synth root writes nothing into the current folder."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "title": "t", "out": "runs/experiments/t", "grid_images": 1, "metrics": ["ssim"],
        "datasets": [{"name": "S", "synth": {"root": "runs/synthtoon-32", "n": 2, "size": 32}}],
        "rows": [{"name": "classic", "classic": True}]}))
    res = run_experiment(path, out=tmp_path / "x", log=lambda m: None)
    assert (tmp_path / "x" / "runs" / "synthtoon-32" / "manifest.json").is_file() and res.report_md.is_file()
    assert list(work.iterdir()) == []
