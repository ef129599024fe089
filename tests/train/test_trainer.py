import json

import pytest
import torch
from safetensors.torch import load_file

from toonlab.checkpoint import load_export
from toonlab.errors import ToonlabError, UsageError
from toonlab.train.config import resolve_run_config
from toonlab.train.trainer import Trainer, lr_factor, plan_phases

from .conftest import run_config


def _trainer(tmp_path, data, **kw):
    return Trainer(resolve_run_config(run_config(tmp_path, data, **kw)))


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_phases_from_epochs_toggling_and_hooks(tmp_path, tiny_data):
    # 6 photos, batch 2 → 3 steps per epoch; init 1 epoch + adv 2 epochs = 9 steps
    tr = _trainer(tmp_path, tiny_data)
    model = tr.model
    seen, hooks = [], []
    orig_step, orig_hook = model.training_step, model.after_optimizer_step

    def spy(step, batch):
        seen.append((step, all(p.requires_grad for p in model.networks["G"].parameters()),
                     all(p.requires_grad for p in model.networks["D"].parameters())))
        return orig_step(step, batch)

    model.training_step = spy
    model.after_optimizer_step = lambda step: (hooks.append(step), orig_hook(step))
    d_before = {k: v.clone() for k, v in model.networks["D"].state_dict().items()}
    out = tr.fit()
    assert out["step"] == tr.total_steps == 9
    assert seen[:3] == [("init", True, False)] * 3
    assert seen[3:] == [("D", False, True), ("G", True, False)] * 6
    assert hooks == [s for s, _, _ in seen]
    assert model.epochs_seen == [0, 1, 2]
    recs = [r for r in _metrics(tr.run_dir) if "phase" in r]
    assert [r["phase"] for r in recs] == ["init"] * 3 + ["adv"] * 6
    assert all(abs(r["lr/adv.D"] - 1e-2) < 1e-12 for r in recs[3:])
    opt = tr.optimizers["adv.G"]
    assert opt.defaults["betas"] == (0.5, 0.999)
    # D was trained only in adv: it changed; G's export is what latest.safetensors holds
    assert any(not torch.equal(d_before[k], v) for k, v in model.networks["D"].state_dict().items())
    exported = load_file(str(tr.ckpt_dir / "latest.safetensors"))
    assert all(torch.equal(exported[k], v) for k, v in model.networks["G"].state_dict().items())
    assert (tr.run_dir / "config.yaml").is_file() and json.loads((tr.run_dir / "env.json").read_text())["torch"]
    assert sorted(p.name for p in (tr.run_dir / "samples").iterdir()) == ["step-000009.png"]


def test_phase_steps_max_steps_keep_last_and_best(tmp_path, tiny_data):
    tr = _trainer(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 6}, "max_steps": 5,
                                              "ckpt_every": 1, "keep_last": 2, "sample_every": 2})
    assert tr.total_steps == 7 and tr.stop_step == 5
    tr.fit()
    ck = tr.ckpt_dir
    assert sorted(p.name for p in ck.glob("state-*")) == ["state-0000004.safetensors", "state-0000005.safetensors"]
    assert sorted(p.name for p in ck.glob("export-*")) == ["export-0000004.safetensors", "export-0000005.safetensors"]
    g_losses = {r["step"]: r["G/loss"] for r in _metrics(tr.run_dir) if "G/loss" in r}
    best_step = min(g_losses, key=g_losses.get)
    model, meta = load_export(ck / "best.safetensors")
    assert meta["step"] == str(best_step) and meta["phase"] == "adv"
    # samples follow the schedule only (a max_steps stop adds none: a resumed run must equal an uninterrupted one)
    assert sorted(p.name for p in (tr.run_dir / "samples").iterdir()) == ["step-000002.png", "step-000004.png"]


def test_lr_linear_decay():
    assert [lr_factor(i, 4, "none", 0.5) for i in range(4)] == [1, 1, 1, 1]
    assert [lr_factor(i, 4, "linear", 0.5) for i in range(4)] == [1, 1, 1.0, 0.5]
    assert [round(lr_factor(i, 5, "linear", 0.0), 6) for i in range(5)] == [1, 0.8, 0.6, 0.4, 0.2]


def test_lr_decay_is_applied(tmp_path, tiny_data):
    tr = _trainer(tmp_path, tiny_data, train={"phase_steps": {"init": 0, "adv": 4}, "lr_decay": "linear",
                                              "lr_decay_start": 0.5})
    tr.fit()
    lrs = [r["lr/adv.G"] for r in _metrics(tr.run_dir) if "lr/adv.G" in r]
    assert lrs == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3])


def test_plan_phases_rejects_unknown_phase_names(tmp_path, tiny_data):
    with pytest.raises(UsageError, match="unknown phase 'adversarial'"):
        _trainer(tmp_path, tiny_data, train={"phase_steps": {"adversarial": 1}})
    spans = plan_phases(_trainer(tmp_path, tiny_data).model.phases(), 3, {"init": 0})
    assert [(s.phase.name, s.start, s.length) for s in spans] == [("adv", 0, 6)]


def test_grad_accum_equals_larger_batch(tmp_path, tiny_data):
    kw = dict(model={"noise": 0.0, "memory_weight": 0.0}, train={"phase_steps": {"init": 2, "adv": 2}})
    a = _trainer(tmp_path / "a", tiny_data, **kw)
    a.fit()
    cfg = run_config(tmp_path / "b", tiny_data, **kw)
    cfg["data"]["batch_size"], cfg["train"]["grad_accum"] = 1, 2
    b = Trainer(resolve_run_config(cfg))
    b.fit()
    for name in ("G", "D"):
        for (k, va), vb in zip(a.model.networks[name].state_dict().items(), b.model.networks[name].state_dict().values()):
            torch.testing.assert_close(va, vb, atol=1e-5, rtol=1e-4, msg=f"{name}.{k}")


def test_nan_losses_skip_steps_then_restore(tmp_path, tiny_data):
    # G-step calls 0 and 1 give NaN: the first is skipped (G unchanged by it), the second is the 2nd strike
    tr = _trainer(tmp_path, tiny_data, model={"nan_calls": [0, 1]},
                  train={"phase_steps": {"init": 0, "adv": 3}, "nan_strikes": 2})
    g0 = {k: v.clone() for k, v in tr.model.networks["G"].state_dict().items()}
    tr.fit()
    events = [r for r in _metrics(tr.run_dir) if "event" in r]
    assert [e["event"] for e in events] == ["non_finite_loss", "non_finite_loss", "restored_last_good_state"]
    assert tr.restores == 1
    assert all(torch.isfinite(v).all() for v in tr.model.networks["G"].state_dict().values())
    assert any(not torch.equal(g0[k], v) for k, v in tr.model.networks["G"].state_dict().items())  # step 3 trained
    persistent = _trainer(tmp_path / "p", tiny_data, model={"nan_calls": list(range(20))},
                          train={"phase_steps": {"init": 0, "adv": 6}, "nan_strikes": 1, "max_restores": 2})
    with pytest.raises(ToonlabError, match="diverged"):
        persistent.fit()


def test_ema_export_matches_hand_computed_average(tmp_path, tiny_data):
    tr = _trainer(tmp_path, tiny_data, model={"noise": 0.0}, train={"phase_steps": {"init": 2, "adv": 2}, "ema": 0.5})
    G = tr.model.networks["G"]
    ema = {k: v.clone() for k, v in G.state_dict().items()}
    orig = tr.model.after_optimizer_step
    snaps = []
    tr.model.after_optimizer_step = lambda step: (orig(step), snaps.append({k: v.clone() for k, v in G.state_dict().items()})
                                                  if step in ("init", "G") else None)
    tr.fit()
    for snap in snaps:  # one G update per trainer step here
        ema = {k: 0.5 * ema[k] + 0.5 * snap[k] for k in ema}
    exported = load_file(str(tr.ckpt_dir / "latest.safetensors"))
    for k in ema:
        torch.testing.assert_close(exported[k], ema[k], atol=1e-6, rtol=1e-5)
    assert not torch.equal(exported["0.weight"], G.state_dict()["0.weight"])


def test_init_from_export_and_state(tmp_path, tiny_data):
    first = _trainer(tmp_path / "a", tiny_data, train={"phase_steps": {"init": 1, "adv": 1}})
    first.fit()
    g = first.model.networks["G"].state_dict()
    d = first.model.networks["D"].state_dict()
    cfg = resolve_run_config(run_config(tmp_path / "b", tiny_data))
    from_export = Trainer(cfg, init_from=first.ckpt_dir / "latest.safetensors")
    assert all(torch.equal(g[k], v) for k, v in from_export.model.networks["G"].state_dict().items())
    assert from_export.step == 0
    state = sorted(first.ckpt_dir.glob("state-*"))[-1]
    cfg = resolve_run_config(run_config(tmp_path / "c", tiny_data))
    from_state = Trainer(cfg, init_from=state)
    assert all(torch.equal(d[k], v) for k, v in from_state.model.networks["D"].state_dict().items())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    with pytest.raises(ToonlabError, match="bad.safetensors"):
        Trainer(resolve_run_config(run_config(tmp_path / "d", tiny_data)), init_from=bad)


def test_init_from_a_mismatched_export_names_the_differing_field(tmp_path, tiny_data):
    first = _trainer(tmp_path / "a", tiny_data, train={"phase_steps": {"init": 1, "adv": 0}})
    first.fit()
    cfg = resolve_run_config(run_config(tmp_path / "b", tiny_data, model={"width": 6}))
    with pytest.raises(ToonlabError, match=r"'_tiny_train' config \(width: 4 in the export, 6 here\)"):
        Trainer(cfg, init_from=first.ckpt_dir / "latest.safetensors")


def test_a_piped_run_prints_plain_lines_and_no_progress_bar(tmp_path, tiny_data, capfd):
    _trainer(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 1}, "progress": True}).fit()
    out, err = capfd.readouterr()  # both are pipes here
    assert out.splitlines()[0].startswith("step 1/2  init  ") and "━" not in err and "step" not in err


def test_existing_run_dir_is_refused(tmp_path, tiny_data):
    _trainer(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 0}}).fit()
    with pytest.raises(UsageError, match="already holds a run"):
        _trainer(tmp_path, tiny_data)


def test_unreadable_training_images_are_counted(tmp_path, tiny_data):
    (tiny_data["photos"] / "01.png").write_bytes(b"not an image")
    tr = _trainer(tmp_path, tiny_data, train={"phase_steps": {"init": 3, "adv": 0}})
    tr.fit()
    assert _metrics(tr.run_dir)[-1]["skipped_images"] >= 1


def test_max_minutes_stops_with_a_checkpoint(tmp_path, tiny_data):
    tr = _trainer(tmp_path, tiny_data, train={"max_minutes": 1e-9})
    out = tr.fit()
    assert out["step"] == 1 < tr.total_steps
    assert out["state"].endswith("state-0000001.safetensors")


def test_tensorboard_scalars_and_sample_grids(tmp_path, tiny_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tr = _trainer(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 2}, "tensorboard": True,
                                              "sample_every": 3})
    tr.fit()
    acc = EventAccumulator(str(tr.run_dir / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("G/loss")] == [2, 3]
    assert [e.step for e in acc.Images("samples")] == [3]
    grid = (tr.run_dir / "samples" / "step-000003.png")
    from PIL import Image
    assert Image.open(grid).size == (2 * 16, 4 * 16)  # rows: 4 validation photos; columns: input | output
    tb = acc.Images("samples")[0]  # TensorBoard's copy carries a header row naming the columns (photo | output)
    assert (tb.width, tb.height) == (2 * 16, 4 * 16 + 12)
