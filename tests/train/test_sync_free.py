"""``train.sync_free``: a Step with a non-finite loss is skipped on the device (the fused Adam's ``found_inf``) and
counted when the losses are read, every ``log_every`` steps. Forced on here, on CPU. The independent computation is
the sync path (host check, backward skipped) with the same fused Adam: its runs must come out identical."""

import json

import pytest
import torch

from toonlab.errors import ToonlabError
from toonlab.train import trainer as trainer_module
from toonlab.train.config import resolve_run_config
from toonlab.train.trainer import Trainer, train

from ._tiny import TinyGAN
from .conftest import run_config, write_yaml
from .test_ddp import train_two_ranks
from .test_resume import _final_state, check_real_model_resume, run_files


class _FusedAdam(torch.optim.Adam):
    """The sync path's per-tensor Adam swapped for the fused one sync_free uses, so runs can be compared exactly."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "fused": True})


def _trainer(tmp_path, data, name, sync_free, model=None, **train_kw):
    cfg = run_config(tmp_path, data, model=model,
                     train={"run_dir": str(tmp_path / name), "sync_free": sync_free, **train_kw})
    return Trainer(resolve_run_config(cfg))


def _records(tr):
    return [json.loads(x) for x in (tr.run_dir / "metrics.jsonl").read_text().splitlines()]


def _timeless(recs):
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in recs]


def _events(tr):
    return [{k: v for k, v in r.items() if k != "applied_at_step"} for r in _records(tr) if "event" in r]


def _weights(tr):
    return {f"{n}.{k}": v.clone() for n, net in tr.model.networks.items() for k, v in net.state_dict().items()}


def _assert_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _g_state(tr):
    """G's parameters and its optimiser's exp_avg / exp_avg_sq / step, cloned."""
    out = {f"param.{k}": v.detach().clone() for k, v in tr.model.networks["G"].named_parameters()}
    opt = tr.optimizers["adv.G"]
    for i, p in enumerate(opt.param_groups[0]["params"]):
        for k, v in opt.state.get(p, {}).items():
            out[f"{k}.{i}"] = v.clone()
    return out


def test_nan_step_is_a_no_op_on_the_device_and_logged_late_with_its_step(tmp_path, tiny_data, monkeypatch):
    """G's loss is NaN at step 2 (of 6, adversarial only), read at step 4 (log_every 4): G's parameters and Adam
    state (exp_avg, exp_avg_sq, step) after step 2 equal those before it, D trained on, the event names step 2;
    and the whole run equals the sync path's with the same fused Adam bit for bit."""
    kw = dict(model={"nan_calls": [2]}, phase_steps={"init": 0, "adv": 6}, log_every=4)
    tr = _trainer(tmp_path, tiny_data, "free", True, **kw)
    before, after, d_moved = [], [], []
    real_step = Trainer._train_step

    def spy(self, span, micro):
        before.append(_g_state(self))
        d0 = self.model.networks["D"][0].weight.detach().clone()
        out = real_step(self, span, micro)
        after.append(_g_state(self))
        d_moved.append(not torch.equal(d0, self.model.networks["D"][0].weight))
        return out

    monkeypatch.setattr(Trainer, "_train_step", spy)
    tr.fit()
    assert isinstance(tr.optimizers["adv.G"], torch.optim.Adam) and tr.optimizers["adv.G"].defaults["fused"]
    assert before[2].keys() == after[2].keys() and "step.0" in before[2] and "exp_avg_sq.3" in before[2]
    _assert_equal(before[2], after[2])  # the skipped step: nothing of G moved, the step count included
    assert float(after[2]["step.0"]) == 2.0 and float(after[3]["step.0"]) == 3.0
    assert all(any(not torch.equal(b[k], a[k]) for k in b) for i, (b, a) in enumerate(zip(before, after)) if i != 2)
    assert all(d_moved)
    recs = _records(tr)
    assert [r for r in recs if "event" in r] == [{"step": 2, "event": "non_finite_loss", "step_name": "G"}]
    assert [r["step"] for r in recs] == [2, 4, 6]  # the event is read with the losses of steps 1–4
    assert tr.strikes == 1

    monkeypatch.setattr(Trainer, "_train_step", real_step)
    monkeypatch.setattr(trainer_module.torch.optim, "Adam", _FusedAdam)
    ref = _trainer(tmp_path, tiny_data, "sync", False, **kw)
    ref.fit()
    _assert_equal(_weights(tr), _weights(ref))
    assert _timeless(_records(ref)) == _timeless(recs)  # the same losses: step 2's G losses left out of both


def test_one_non_finite_micro_batch_skips_the_whole_step(tmp_path, tiny_data, monkeypatch):
    """grad_accum 2: G's first micro-batch of step 1 (call 2) is NaN, its second is finite; the step's flag is
    the AND over both, so G and its Adam state stay as they were and the other steps are finite."""
    tr = _trainer(tmp_path, tiny_data, "free", True, model={"nan_calls": [2]}, phase_steps={"init": 0, "adv": 3},
                  grad_accum=2, log_every=3)
    states = []
    real_step = Trainer._train_step

    def spy(self, span, micro):
        states.append(_g_state(self))
        return real_step(self, span, micro)

    monkeypatch.setattr(Trainer, "_train_step", spy)
    tr.fit()
    _assert_equal(states[1], states[2])
    assert all(torch.isfinite(v).all() for v in _weights(tr).values())
    assert [r for r in _records(tr) if "event" in r] == [{"step": 1, "event": "non_finite_loss", "step_name": "G"}]


def test_strikes_restore_and_abort_as_on_the_sync_path(tmp_path, tiny_data, monkeypatch):
    """Two NaN strikes restore the last good state (same events and weights as the sync path); persistent NaNs
    stop with the sync path's error, naming the same step, at most log_every steps of training later."""
    monkeypatch.setattr(trainer_module.torch.optim, "Adam", _FusedAdam)  # the sync path too: exact comparison
    kw = dict(model={"nan_calls": [0, 1]}, phase_steps={"init": 0, "adv": 3}, nan_strikes=2)
    a = _trainer(tmp_path, tiny_data, "a", True, **kw)  # built and fitted in turn: each seeds the global RNG
    a.fit()
    b = _trainer(tmp_path, tiny_data, "b", False, **kw)
    b.fit()
    assert _events(a) == _events(b) == [{"step": 0, "event": "non_finite_loss", "step_name": "G"},
                                        {"step": 1, "event": "non_finite_loss", "step_name": "G"},
                                        {"step": 1, "event": "restored_last_good_state"}]
    assert next(r for r in _records(a) if "event" in r and "restored" in r["event"])["applied_at_step"] == 2
    assert a.restores == b.restores == 1
    _assert_equal(_weights(a), _weights(b))

    calls = {}
    real = TinyGAN.training_step

    def count(self, step, batch):
        calls[self.run] = calls.get(self.run, 0) + (step == "G")
        return real(self, step, batch)

    monkeypatch.setattr(TinyGAN, "training_step", count)
    messages = {}
    for sync_free in (False, True):
        tr = _trainer(tmp_path, tiny_data, f"p{sync_free}", sync_free, model={"nan_calls": list(range(20))},
                      phase_steps={"init": 0, "adv": 12}, nan_strikes=1, max_restores=2, log_every=4)
        tr.model.run = sync_free
        with pytest.raises(ToonlabError, match="diverged") as e:
            tr.fit()
        messages[sync_free] = (str(e.value), _events(tr))
    assert messages[True] == messages[False]
    assert "(step 2)" in messages[True][0]
    assert calls == {False: 3, True: 4}  # the third restore's strike is read at step 4: one step late


def test_finite_run_matches_the_sync_path(tmp_path, tiny_data, monkeypatch):
    """No NaN: identical to the sync path with the same fused Adam (found_inf = 0 changes nothing); within 1e-6 of
    the default CPU run, whose per-tensor Adam rounds differently (measured: ≤ 3e-8 on weights up to 0.5 after 8
    steps; fused and per-tensor Adam each round to ~1 ulp per update, and 8 updates of lr 1e-2 move a weight by
    ~0.1 — 1e-6 is a margin of 30, far below a real difference such as a skipped or doubled update)."""
    kw = dict(phase_steps={"init": 2, "adv": 6}, grad_accum=2, log_every=3, ema=0.9)
    free = _trainer(tmp_path, tiny_data, "free", True, **kw)
    free.fit()
    default = _trainer(tmp_path, tiny_data, "default", "auto", **kw)
    default.fit()
    assert not default.sync_free and not default.optimizers["adv.G"].defaults["fused"]
    wf, wd = _weights(free), _weights(default)
    for k in wf:
        torch.testing.assert_close(wf[k], wd[k], atol=1e-6, rtol=0, msg=k)
    assert any(not torch.equal(wf[k], wd[k]) for k in wf)  # really the other Adam
    monkeypatch.setattr(trainer_module.torch.optim, "Adam", _FusedAdam)
    fused = _trainer(tmp_path, tiny_data, "fused", False, **kw)
    fused.fit()
    _assert_equal(wf, _weights(fused))
    assert _timeless(_records(free)) == _timeless(_records(fused))


def test_profile_counts_no_scalar_reads_in_the_step(tmp_path, tiny_data):
    """train.profile=3 over non-logging steps (log_every 100): the step itself reads no scalar with sync_free (the
    sync path: one finite check per Step, 2); the optimiser's reads on CPU are the fused kernel's own reads of its
    host step counters (one per parameter tensor; on CUDA that kernel reads them on the device)."""
    summaries = {}
    for sync_free in (True, False):
        tr = _trainer(tmp_path, tiny_data, f"p{sync_free}", sync_free, phase_steps={"init": 0, "adv": 6}, profile=3,
                      log_every=100)
        tr.fit()
        summaries[sync_free] = json.loads((tr.run_dir / "profile" / "summary.json").read_text())
        assert bool(tr.optimizers["adv.G"].defaults["fused"]) is sync_free
    assert summaries[True]["scalar_reads_per_step"] == {"optimizer": 8.0, "data": 0.0, "step": 0.0}
    assert summaries[False]["scalar_reads_per_step"] == {"optimizer": 8.0, "data": 0.0, "step": 2.0}


def test_resume_is_bit_exact_with_sync_free(tmp_path, tiny_data):
    """As tests/train/test_resume.py, with sync_free on and log_every 3 (losses pending across the stop at step 4)."""
    k = 4
    base = dict(model={"noise": 0.3}, train={"phase_steps": {"init": 2, "adv": 6}, "ema": 0.9, "ckpt_every": 3,
                                             "sample_every": 2, "log_every": 3, "sync_free": True})
    run = tmp_path / "run"
    train(write_yaml(tmp_path / "whole.yaml", run_config(tmp_path, tiny_data, **base)))
    run.rename(tmp_path / "whole")
    split = run_config(tmp_path, tiny_data, **base)
    split["train"]["max_steps"] = k
    train(write_yaml(tmp_path / "split.yaml", split))
    assert _final_state(run)["step"] == k
    assert _final_state(run)["optimizers"]["adv.G"]["param_groups"][0]["fused"]
    train(None, ["train.max_steps=null"], resume=run)
    a, b = run_files(tmp_path / "whole"), run_files(run)
    b.pop("overrides.jsonl")
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], name
    assert [r["step"] for r in b["metrics.jsonl"]] == [3, 6, 8]


def test_sync_free_setting_is_checked_and_resolved(tmp_path, tiny_data):
    from toonlab.errors import ConfigError, UsageError

    with pytest.raises(ConfigError, match="train.sync_free"):
        resolve_run_config(run_config(tmp_path, tiny_data, train={"sync_free": "sometimes"}))
    tr = _trainer(tmp_path, tiny_data, "auto", "auto", phase_steps={"init": 1, "adv": 1})
    assert tr.sync_free is False  # auto on CPU
    tr.fit()
    with pytest.raises(UsageError, match="train.sync_free=True would change the run"):
        train(None, ["train.sync_free=true", "train.max_steps=3"], resume=tr.run_dir)


def test_ddp_a_nan_on_one_rank_skips_the_step_on_both(tmp_path, tiny_data):
    """gloo, 2 ranks, sync_free: G's loss is NaN on rank 1 alone at step 1. The flag is all-reduced on the device,
    so rank 0 skips as well (its G would otherwise take the all-reduced NaN gradients); the ranks end equal, with
    finite weights, and rank 0 logs the strike."""
    cfg = run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 0, "adv": 3}, "sync_free": True,
                                                 "log_every": 3})
    r0 = train_two_ranks(tmp_path, cfg, NAN_RANK="1", NAN_CALLS="1")
    assert all(torch.isfinite(v).all() for v in r0.values())
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in recs if "event" in r] == [{"step": 1, "event": "non_finite_loss", "step_name": "G"}]


def test_fp16_scaler_path_skips_a_nan_step(tmp_path, tiny_data, monkeypatch):
    """The fp16 GradScaler path (CUDA only in real runs; here a CPU GradScaler and no autocast). G's loss at step 2
    is +inf through a constant term, so its gradients stay finite: the trainer makes them NaN, the scaler's own inf
    check then skips the fused Adam step on the device (G and its Adam state unchanged) and backs its scale off
    once, as for an fp16 overflow; the strike is counted as without a scaler."""
    real_scaler, real_training_step = torch.amp.GradScaler, TinyGAN.training_step
    monkeypatch.setattr(trainer_module.torch.amp, "GradScaler", lambda device: real_scaler("cpu"))
    monkeypatch.setattr(Trainer, "_autocast", lambda self: torch.autocast("cpu", enabled=False))

    def inf_at_call_2(self, step, batch):
        out = real_training_step(self, step, batch)
        if step == "G" and self.g_calls == 3:  # the call just made was call 2
            out["loss"] = out["loss"] + torch.tensor(float("inf"))
        return out

    monkeypatch.setattr(TinyGAN, "training_step", inf_at_call_2)
    tr = _trainer(tmp_path, tiny_data, "fp16", True, phase_steps={"init": 0, "adv": 4}, log_every=4)
    tr.amp = "fp16"
    states, scales = [], []
    real_step = Trainer._train_step

    def spy(self, span, micro):
        states.append(_g_state(self))
        out = real_step(self, span, micro)
        scales.append(self.scalers["adv.G"].get_scale())
        return out

    monkeypatch.setattr(Trainer, "_train_step", spy)
    tr.fit()
    _assert_equal(states[2], states[3])
    assert all(any(not torch.equal(states[i][k], states[i + 1][k]) for k in states[i]) for i in (0, 1))
    assert scales == [65536.0, 65536.0, 32768.0, 32768.0]
    assert [r for r in _records(tr) if "event" in r] == [{"step": 2, "event": "non_finite_loss", "step_name": "G"}]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ctss", "multistyle", "cartoongan", "toon2real"])
def test_real_models_resume_bit_exact_with_sync_free(tmp_path, name):
    """As test_resume.py's real-model test with sync_free on and log_every 2 (the stop at step 2 reads the losses
    early): CTSS, MultiStyle (AdaLIN ρ clamped after each step), CartoonGAN (BatchNorm), toon2real (image pools)."""
    resumed = check_real_model_resume(tmp_path, name, ("train.sync_free=true", "train.log_every=2"))
    optimizers = _final_state(resumed)["optimizers"].values()
    assert optimizers and all(o["param_groups"][0]["fused"] for o in optimizers)