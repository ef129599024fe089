"""The train.eval_every hook: scores at epoch boundaries, records what it scored (re-scored here independently),
keeps the exports, leaves training untouched; the experiment report plots its curves."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from toonlab.errors import ConfigError
from toonlab.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from toonlab.data.synth import make_synthtoon

    return make_synthtoon(tmp_path_factory.mktemp("st") / "st", n=4, size=32, seed=0, n_test=2)


def _run(run_dir, synth, extra=()):
    return train(CONFIGS / "toon2real-tiny.yaml", [
        f"data.photos={synth / 'train/photos'}", f"data.cartoons={synth / 'train/cartoons'}",
        f"train.run_dir={run_dir}", "train.progress=false", "train.phase_steps={adv: 4}", "model.pool_size=2",
        *extra])


def _eval_overrides(synth, every=1):
    # cartoon → photo: held-out cartoons in, their true photos as paired truths and FID reference
    return [f"train.eval_every={every}", f"train.eval_inputs={synth / 'test/cartoons'}",
            f"train.eval_truth={synth / 'test/photos'}", f"train.eval_reference={synth / 'test/photos'}",
            "train.eval_metrics=[fid, psnr]"]


def test_eval_hook_scores_each_epoch_and_keeps_the_exports(tmp_path, synth, monkeypatch, fid_torch_home):
    monkeypatch.setenv("TORCH_HOME", str(fid_torch_home))
    _run(tmp_path / "a", synth, _eval_overrides(synth))
    recs = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r.get("event") == "eval"]
    # 4 train photos, batch 2: an epoch every 2 steps → scored after steps 2 and 4 (epochs 1 and 2)
    assert [(r["step"], r["epoch"]) for r in evals] == [(2, 1), (4, 2)]
    assert all(np.isfinite(r["eval/fid"]) and r["eval/fid"] >= 0 and r["eval/failed"] == 0 for r in evals)

    from toonlab.infer.translator import Translator
    from toonlab.io import list_images, read_image

    for r in evals:  # the recorded PSNR is that of the kept export's outputs, recomputed here by hand
        export = Path(r["eval/export"])
        assert export.is_file() and export.name == f"eval-{r['step']:07d}.safetensors"
        t = Translator.load(export, device="cpu", saturation=1.0)
        assert t.direction == "cartoon2photo"
        psnrs = []
        for f in list_images([str(synth / "test/cartoons")]):
            truth = read_image(synth / "test/photos" / f.name).rgb
            out = (t.translate_tensor(read_image(f).rgb) * 255).round() / 255  # as saved: 8-bit PNG
            psnrs.append(10 * np.log10(1.0 / float(((out - truth) ** 2).mean())))
        assert r["eval/psnr"] == pytest.approx(np.mean(psnrs), abs=1e-3)


def test_eval_hook_leaves_training_unchanged(tmp_path, synth, monkeypatch):
    """Building the export's model draws initial weights: the hook must not move the global RNGs."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))  # FID skipped, with a note
    _run(tmp_path / "plain", synth)
    _run(tmp_path / "hooked", synth, _eval_overrides(synth, every=1))
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "plain" / "checkpoints" / "latest.safetensors"))
    b = load_file(str(tmp_path / "hooked" / "checkpoints" / "latest.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    evals = [json.loads(x) for x in (tmp_path / "hooked" / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in x]
    assert len(evals) == 2 and "fid not computed" in evals[0]["eval/skipped"] and "eval/psnr" in evals[0]


def test_eval_every_needs_inputs(tmp_path, synth):
    with pytest.raises(ConfigError, match="eval_inputs"):
        _run(tmp_path / "x", synth, ["train.eval_every=1"])


def test_curves_from_metrics_jsonl(tmp_path):
    from toonlab.eval.experiment import eval_curves
    from toonlab.eval.report import plot_curves
    from toonlab.io import read_image

    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": 1, "epoch": 0, "phase": "adv", "G/loss": 1.0},
             {"step": 2, "epoch": 20, "event": "eval", "eval/fid": 80.0, "eval/skipped": "kid not computed",
              "eval/failed": 0, "eval/kid_std": 0.1},
             {"step": 4, "epoch": 40, "event": "eval", "eval/fid": 60.0},
             {"step": 4, "epoch": 40, "event": "eval", "eval/fid": 55.0}]  # a resumed run re-scoring epoch 40
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"step\": 5, \"ep")
    curves = eval_curves(run)
    assert curves == {"fid": [(20.0, 80.0), (40.0, 55.0)]}
    png = plot_curves({"with SN": curves["fid"], "without SN": [(20.0, 90.0), (40.0, 70.0)]},
                      tmp_path / "c.png", metric="fid", title="t")
    img = read_image(png).rgb
    assert img.shape[0] == 3 and img.shape[1] > 100 and img.std() > 0.05


def test_eval_share_at_the_curves_recipe_intervals_and_scores_by_hand(tmp_path):
    """configs/experiments/toon2real-curves-synth.yaml's training (16 SynthToon pairs at 32², batch 2, ngf = ndf =
    16, 2 residual blocks) with its interval, eval_every = 2 epochs (16 steps), on its 8 held-out images, scored
    with the paired metrics (FID needs the Inception file, which a CPU test run does not have): the hook takes
    < 5 % of the wall time, and its PSNR / SSIM / edge F1 equal scikit-image's (and metrics.edge_f1) on the PNGs
    it saved."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from toonlab.data.synth import make_synthtoon
    from toonlab.eval.metrics import edge_f1
    from toonlab.io import list_images, read_image

    st = make_synthtoon(tmp_path / "st", n=16, size=32, seed=0, n_test=8)
    run = tmp_path / "run"
    train(CONFIGS / "toon2real-tiny.yaml", [
        f"data.photos={st / 'train/photos'}", f"data.cartoons={st / 'train/cartoons'}", f"train.run_dir={run}",
        "train.progress=false", "model.ngf=16", "model.ndf=16", "model.n_blocks=2", "model.pool_size=10",
        "train.phase_steps={adv: 32}", "train.log_every=8", "train.sample_every=1000", "train.ckpt_every=1000",
        "train.eval_every=2", f"train.eval_inputs={st / 'test/cartoons'}", f"train.eval_truth={st / 'test/photos'}",
        "train.eval_metrics=[psnr, ssim, edge_f1]"])
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [(r["step"], r["epoch"]) for r in evals] == [(16, 2), (32, 4)]
    assert all(r["eval/seconds"] > 0 for r in evals)
    assert evals[-1]["eval/share"] < 0.05, evals
    for r in evals:
        outs = list_images([run / "eval" / f"step-{r['step']:07d}"])
        assert len(outs) == 8 and r["eval/failed"] == 0
        by_hand = {"psnr": [], "ssim": [], "edge_f1": []}
        for f in outs:
            out = read_image(f).rgb.permute(1, 2, 0).double().numpy()
            truth = read_image(st / "test/photos" / f.name).rgb.permute(1, 2, 0).double().numpy()
            by_hand["psnr"].append(peak_signal_noise_ratio(truth, out, data_range=1))
            by_hand["ssim"].append(structural_similarity(truth, out, gaussian_weights=True, sigma=1.5,
                                                         use_sample_covariance=False, data_range=1, channel_axis=-1))
            by_hand["edge_f1"].append(edge_f1(out, truth))
        for m, vals in by_hand.items():
            assert r[f"eval/{m}"] == pytest.approx(np.mean(vals), rel=1e-6), m  # PNG read as float32 here
