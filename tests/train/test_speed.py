"""Issue 22's host-side changes keep CPU training exact: losses read late equal the step's own losses, the
profiler writes its summary and sees only the finiteness reads, channels_last / compile stay within fp32
round-off of the default."""

import json

import pytest
import torch
from safetensors.torch import load_file

from toonlab.train.config import resolve_run_config
from toonlab.train.trainer import Trainer

from ._tiny import TinyGAN
from .conftest import run_config


def _fit(tmp_path, data, name, model=None, **train):
    cfg = run_config(tmp_path, data, model=model, train={"run_dir": str(tmp_path / name), **train})
    trainer = Trainer(resolve_run_config(cfg))
    trainer.fit()
    recs = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return trainer, recs, load_file(str(tmp_path / name / "checkpoints" / "latest.safetensors"))


def test_losses_read_every_log_every_steps_equal_the_steps_own(tmp_path, tiny_data, monkeypatch):
    """Every training_step's losses are recorded as floats when computed (the old per-step read); the metrics
    lines, read from the device every 3 steps, must equal their interval means bit for bit, grad_accum 2 included."""
    seen: list[dict[str, float]] = []
    real = TinyGAN.training_step

    def spy(self, step, batch):
        out = real(self, step, batch)
        seen.append({f"{step}/{k}": float(v) for k, v in out.items()})
        return out

    monkeypatch.setattr(TinyGAN, "training_step", spy)
    trainer, recs, _ = _fit(tmp_path, tiny_data, "run", log_every=3, grad_accum=2, phase_steps={"init": 2, "adv": 5})
    # per step: the micro-batch mean of each loss, summed in order as the trainer did before (float(v) / 2)
    steps, i = [], 0
    for phase_steps, names in ((2, ["init"]), (5, ["D", "G"])):
        for _ in range(phase_steps):
            logs = {}
            for name in names:
                for _ in range(2):
                    for k, v in seen[i].items():
                        logs[k] = logs.get(k, 0.0) + v / 2
                    i += 1
            steps.append(logs)
    lines = [r for r in recs if "phase" in r]
    assert [r["step"] for r in lines] == [3, 6, 7]
    for rec, (a, b) in zip(lines, [(0, 3), (3, 6), (6, 7)]):
        sums, counts = {}, {}
        for logs in steps[a:b]:
            for k, v in logs.items():
                sums[k], counts[k] = sums.get(k, 0.0) + v, counts.get(k, 0) + 1
        assert {k: rec[k] for k in sums} == {k: sums[k] / counts[k] for k in sums}


def test_log_interval_changes_nothing_but_the_lines(tmp_path, tiny_data):
    _, every1, w1 = _fit(tmp_path, tiny_data, "a", log_every=1, phase_steps={"init": 2, "adv": 4})
    _, every4, w4 = _fit(tmp_path, tiny_data, "b", log_every=4, phase_steps={"init": 2, "adv": 4})
    assert w1.keys() == w4.keys() and all(torch.equal(w1[k], w4[k]) for k in w1)
    g = [r["G/loss"] for r in every1 if "G/loss" in r]
    assert [r["step"] for r in every4 if "phase" in r] == [4, 6]  # every 4 steps and the last
    assert next(r for r in every4 if r["step"] == 6)["G/loss"] == (g[2] + g[3]) / 2


def test_profile_summary_and_its_scalar_reads(tmp_path, tiny_data):
    """train.profile=3 profiles steps 2–4 (step 1 warms up). Per adversarial step the only scalar reads outside
    the optimiser are the two finiteness checks (one per Step), down from 2 + one per logged loss (3 here); the
    non-fused Adam reads its host step counters, one per parameter tensor (4 in D, 4 in G)."""
    _, recs, plain = _fit(tmp_path, tiny_data, "plain", phase_steps={"init": 0, "adv": 6})
    _, recs_p, profiled = _fit(tmp_path, tiny_data, "prof", phase_steps={"init": 0, "adv": 6}, profile=3)
    assert all(torch.equal(plain[k], profiled[k]) for k in plain)  # profiling changes nothing
    assert [r["G/loss"] for r in recs] == [r["G/loss"] for r in recs_p]
    s = json.loads((tmp_path / "prof" / "profile" / "summary.json").read_text())
    assert s["steps"] == 3 and s["device"] == "cpu"
    assert s["scalar_reads_per_step"] == {"optimizer": 8.0, "data": 0.0, "step": 2.0}
    assert s["wall_ms_per_step"] > 0 and 0 < s["data_wait_ms_per_step"] < s["wall_ms_per_step"]
    assert 0 < s["train_step_ms_per_step"] < s["wall_ms_per_step"]
    assert any(r["op"] == "aten::convolution" for r in s["host_ops"]) and s["kernel_launches_per_step"] == 0
    text = (tmp_path / "prof" / "profile" / "summary.txt").read_text()
    assert "data-loader wait" in text and "aten::convolution" in text


def _losses(recs):
    return [r.get("G/loss", r.get("init/loss")) for r in recs if "phase" in r]


def test_channels_last_trains_within_round_off(tmp_path, tiny_data):
    """Not bit-equal on CPU (other conv kernels): the first step's loss agrees to fp32 round-off; Adam's
    normalised updates then carry the round-off on, so later steps agree to 1 %."""
    _, a, wa = _fit(tmp_path, tiny_data, "a", phase_steps={"init": 2, "adv": 3})
    _, b, wb = _fit(tmp_path, tiny_data, "b", phase_steps={"init": 2, "adv": 3}, channels_last=True)
    assert _losses(b)[0] == pytest.approx(_losses(a)[0], rel=1e-6)
    assert _losses(b) == pytest.approx(_losses(a), rel=1e-2)
    assert {k: v.shape for k, v in wa.items()} == {k: v.shape for k, v in wb.items()}


def _compile_works() -> str | None:
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2))
    except Exception as e:  # no C++ compiler, unsupported Python, …
        return f"torch.compile does not run here: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def test_compile_trains_within_round_off(tmp_path, tiny_data):
    why = _compile_works()
    if why:
        pytest.skip(why)
    _, a, wa = _fit(tmp_path, tiny_data, "a", phase_steps={"init": 1, "adv": 2})
    trainer, b, wb = _fit(tmp_path, tiny_data, "b", phase_steps={"init": 1, "adv": 2}, compile=True)
    assert trainer.model.networks["G"]._compiled_call_impl is not None
    assert wa.keys() == wb.keys()  # no _orig_mod. prefixes in the export
    assert _losses(b)[0] == pytest.approx(_losses(a)[0], rel=1e-6)
    assert _losses(b) == pytest.approx(_losses(a), rel=1e-2)
    assert {k: v.shape for k, v in wa.items()} == {k: v.shape for k, v in wb.items()}


@pytest.mark.parametrize("value, mode", [(True, None), ("reduce-overhead", "reduce-overhead"),
                                         ("max-autotune", "max-autotune")])
def test_compile_mode_reaches_torch_compile(tmp_path, tiny_data, monkeypatch, value, mode):
    """train.compile: true → torch.compile's default mode; a mode name (reduce-overhead = CUDA graphs) is passed
    on to every network; anything else is a config error."""
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    trainer = Trainer(resolve_run_config(run_config(tmp_path, tiny_data, train={
        "run_dir": str(tmp_path / "r"), "compile": value, "phase_steps": {"init": 1, "adv": 1}})))
    assert seen == [{"mode": mode}] * len(trainer.model.networks)
    trainer.close()
    with pytest.raises(Exception, match="compile"):
        resolve_run_config(run_config(tmp_path, tiny_data, train={"run_dir": str(tmp_path / "x"),
                                                                  "compile": "fastest"}))
