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


# --- the experiments' rows (configs/experiments): CTSS's protocol and the labels of rows that are not the paper's --
EXPERIMENTS = ABLATIONS.parent / "experiments"
CTSS_TABLES = ("ctss-table1", "ctss-table2", "ctss-table3", "ctss-table4")


def _trained_rows(stem, models=False):
    """(row, resolved run config, model or None) for every trained row of ``configs/experiments/<stem>.yaml``,
    resolved as the experiment runner does (the experiment's train_overrides, then the row's, on the row's config;
    a SynthToon dataset's folders, made at run time, stand in as placeholders)."""
    from dataclasses import replace

    from toonlab.eval.experiment import fill_overrides, load_experiment
    from toonlab.models import build_model

    spec, base = load_experiment(EXPERIMENTS / f"{stem}.yaml")
    d = spec.datasets[0]
    if d.synth is not None:
        d = replace(d, test_inputs="synth/test", fid_reference="synth/ref", truth="synth/truth")
    out = []
    for row in spec.rows:
        if row.classic or row.run is not None:
            continue
        cfg = load_run_config(base / row.config, fill_overrides([*spec.train_overrides, *row.overrides], d))
        out.append((row, cfg, build_model(cfg.model_name, cfg.model_fields()) if models else None))
    return out


@pytest.mark.parametrize("stem", CTSS_TABLES)
def test_every_trained_row_of_ctss_tables_runs_ctss_epochs(stem):
    """CTSS §IV: every trained row gets CTSS's 80 epochs — 10 content-only + 70 adversarial; CycleGAN (no init phase)
    80 epochs with its linear decay from the half, epoch 40; no row shortened by steps."""
    rows = _trained_rows(stem, models=True)
    assert rows
    for row, cfg, model in rows:
        assert not cfg.train.phase_steps and cfg.train.max_steps is None, row.name
        epochs = [(p.name, p.epochs) for p in model.phases()]
        if cfg.model_name == "cyclegan":
            assert epochs == [("adv", 80)], row.name
            assert cfg.train.lr_decay == "linear" and cfg.train.lr_decay_start * 80 == 40, row.name
        else:
            assert epochs == [("init", 10), ("adv", 70)], (row.name, epochs)
            assert cfg.train.lr_decay == "none", row.name


def test_rows_that_are_not_the_papers_carry_their_label():
    """A row whose system differs from the paper's row says so in its name or note: toonlab's animegan is
    AnimeGANv2, CTSS Table IV's L_mean_std is AdaIN's loss, the multistyle AdaIN row is ours, the salcbam
    'CartoonGAN' base has no saliency net / CBAM, and toon2real without spectral norm is the seeds' other row."""
    seen = set()
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        for row, cfg, _ in _trained_rows(path.stem):
            label = f"{row.name} {row.note or ''}"
            m = cfg.model
            if cfg.model_name == "animegan":
                assert "AnimeGANv2" in label, (path.stem, row.name)
                seen.add("animegan")
            if cfg.model_name == "ctss" and "mean_std" in m["extra_losses"]:
                assert "AdaIN" in (row.note or ""), (path.stem, row.name)
                seen.add("ctss-adain")
            if cfg.model_name == "multistyle" and m["norm"] == "in":  # AdaIN
                assert "AdaIN" in row.name and "not in the paper" in (row.note or ""), (path.stem, row.name)
                seen.add("multistyle-adain")
            if cfg.model_name == "salcbam" and m["saliency"] == "none" and not m["cbam"]:
                assert "no saliency net / CBAM" in (row.note or ""), (path.stem, row.name)
                seen.add("salcbam-cartoongan")
            if cfg.model_name == "toon2real" and not m["spectral_norm"]:
                assert "without spectral norm" in row.name and "Cartoon-to-real" in (row.note or ""), row.name
                seen.add("no-sn")
    assert seen == {"animegan", "ctss-adain", "multistyle-adain", "salcbam-cartoongan", "no-sn"}
