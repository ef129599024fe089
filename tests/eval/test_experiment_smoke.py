"""Every shipped experiment file, end to end at smoke scale on SynthToon (slow): the file's own rows, datasets,
styles, directions and protocol overrides, with the data paths pointed at a generated SynthToon, 32² images, CPU
and one or two steps per phase; each report must hold every row and every dataset column."""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from toonlab.eval.experiment import load_experiment, run_experiment, slug
from toonlab.models import build_model
from toonlab.train.config import load_run_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPERIMENTS = sorted(CONFIGS.joinpath("experiments").glob("*.yaml"))
TINY = ["data.size=32", "data.batch_size=2", "data.workers=0", "data.val_count=1", "train.device=cpu",
        "train.log_every=1", "train.sample_every=1000", "train.ckpt_every=1000", "train.tensorboard=false",
        "train.progress=false"]  # VGG models: perceptual auto → the offline VGG19 stand-in in TORCH_HOME


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory, offline_vgg19, fid_torch_home):
    """SynthToon (4 train pairs, 4 test pairs at 32²), a styles root (Hayao/, Shinkai/ copies of its cartoons) and a
    TORCH_HOME with both the offline VGG19 and the random FID Inception file."""
    from toonlab.data.synth import make_synthtoon

    root = tmp_path_factory.mktemp("smoke")
    st = make_synthtoon(root / "st", n=4, size=32, seed=0, n_test=4)
    for name in ("Hayao", "Shinkai"):
        shutil.copytree(st / "train" / "cartoons", root / "styles" / name)
    home = root / "torch_home" / "hub" / "checkpoints"
    home.mkdir(parents=True)
    for f in (offline_vgg19, *(fid_torch_home / "hub" / "checkpoints").iterdir()):
        os.symlink(f, home / f.name)
    return {"st": st, "styles": root / "styles", "torch_home": root / "torch_home"}


def _narrow(model: str) -> list[str]:
    """The widths / depths of ``configs/MODEL-tiny.yaml`` as overrides (the rows' own settings come after and win;
    CTSS's K stays the row's: Table II's rows differ in it)."""
    tiny = yaml.safe_load((CONFIGS / f"{model}-tiny.yaml").read_text())["model"]
    return [f"model.{k}={json.dumps(v)}" for k, v in tiny.items() if k not in ("name", "perceptual", "K")]


def _smoke_spec(path: Path, data: dict, out: Path) -> dict:
    spec, base = load_experiment(path)
    raw = yaml.safe_load(path.read_text())
    st = data["st"]
    feature = raw.get("train_overrides") and any("eval_every" in o for o in raw["train_overrides"])
    datasets = []
    for d in raw["datasets"]:
        inputs, targets = ("photos", "cartoons") if d.get("direction", "photo2cartoon") == "photo2cartoon" \
            else ("cartoons", "photos")
        datasets.append({k: v for k, v in d.items() if k in ("name", "style", "direction", "input_weight")} | {
            "train_photos": str(st / "train/photos"),
            "train_cartoons": str(data["styles"] if d.get("style") else st / "train/cartoons"),
            "test_inputs": str(st / "test" / inputs), "fid_reference": str(st / "test" / targets),
            "truth": str(st / "test" / targets)})
    rows = []
    for r in raw["rows"]:
        r = dict(r)
        if r.get("config"):
            r["config"] = str((base / r["config"]).resolve())
            cfg = load_run_config(r["config"], [*TINY, *r.get("overrides", [])])
            names = [p.name for p in build_model(cfg.model_name, cfg.model_fields()).phases()]
            r["overrides"] = [*_narrow(cfg.model_name), *r.get("overrides", [])]
            steps = {n: 1 for n in names}
            if feature:  # two epochs of the 4 photos at batch 2: two eval-hook points per curve
                steps[names[-1]] = 4
            r["overrides"] = [*r.get("overrides", []), "train.phase_steps={" + ", ".join(
                f"{k}: {v}" for k, v in steps.items()) + "}"]
        rows.append(r)
    tiny = list(TINY)
    if feature:  # the eval hook on the held-out SynthToon pairs (Toon2real Figs 3–4)
        tiny += ["train.eval_every=1", f"train.eval_inputs={st / 'test/cartoons'}",
                 f"train.eval_truth={st / 'test/photos'}", "train.eval_metrics=[psnr]"]  # FID in the hook: test_eval_hook
    return raw | {"out": str(out), "device": "cpu", "datasets": datasets, "rows": rows, "train_overrides": tiny,
                  "metrics": [m for m in spec.metrics if m != "kid"] + ["psnr"] if feature else ["psnr", "ssim"],
                  "grid_images": 2}


@pytest.mark.slow
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_file_runs_end_to_end(path, smoke_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(smoke_data["torch_home"]))
    spec = _smoke_spec(path, smoke_data, tmp_path / "out")
    small = tmp_path / path.name
    small.write_text(yaml.safe_dump(spec, allow_unicode=True))
    res = run_experiment(small, log=lambda m: None)

    md = res.report_md.read_text()
    data = json.loads(res.results_json.read_text())
    assert data["rows"] == [r["name"] for r in spec["rows"]] and data["datasets"] == [d["name"] for d in spec["datasets"]]
    for r in data["rows"]:
        assert f"| {r} |" in md
        for d in data["datasets"]:
            cell = data["cells"][f"{r}|{d}"]
            assert cell["psnr"] is not None and cell["psnr"] > 0, (r, d)
    assert not any(n.startswith("failed:") for n in res.notes)
    assert any(n.startswith("post-processing:") for n in res.notes)
    raw = yaml.safe_load(path.read_text())
    if raw.get("saturation"):
        assert any("+40 %" in n for n in res.notes)
    if raw.get("study"):
        for d in raw["study"]["datasets"]:
            assert (tmp_path / "out" / "study" / f"serve-{slug(d)}.sh").is_file()
    if any("eval_every" in o for o in raw.get("train_overrides", [])):  # Toon2real: curves with and without SN
        assert data["cells"][f"{data['rows'][0]}|{data['datasets'][0]}"]["weighted_fid"] is not None
        curve = tmp_path / "out" / f"curve-psnr-{slug(data['datasets'][0])}.png"
        assert curve.is_file() and curve.name in md
