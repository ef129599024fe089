"""Crash safety of training (issue 14 items 3–8, 11, 14; issue 15 item 5): signals, checksums and fallback,
temp files, the run dir lock, resume-time overrides, config validation, disk full, file modes, plain log lines."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from toonlab.checkpoint import load_export, save_export
from toonlab.cli import app
from toonlab.errors import ConfigError, ToonlabError
from toonlab.train.checkpoint import RunLock, load_state
from toonlab.train.config import resolve_run_config
from toonlab.train.trainer import Trainer, TrainingAborted, train

from .conftest import run_config, write_yaml

CLI = Path(__file__).with_name("_cli.py")


def _states(run):
    return sorted(p.name for p in (run / "checkpoints").glob("state-*"))


def _long_run(tmp_path, tiny_data, **train_kw):
    return run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 2, "adv": 400}, "ckpt_every": 1000,
                                                  **train_kw})


# -- 14.3 signals -----------------------------------------------------------------------------------------------
def test_sigint_in_process_finishes_the_step_checkpoints_and_reports(tmp_path, tiny_data):
    # the handler in place before training (Python's default_int_handler, or SIG_IGN where the runner started
    # us in the background: a shell's background job inherits an ignored SIGINT)
    handler_before = signal.getsignal(signal.SIGINT)
    tr = Trainer(resolve_run_config(_long_run(tmp_path, tiny_data)))
    orig, calls = tr.model.training_step, []

    def step(name, batch):  # Ctrl-C arrives in the middle of step 4 (its D update)
        calls.append(name)
        if len(calls) == 2 + 2 * 1 + 1:
            os.kill(os.getpid(), signal.SIGINT)
        return orig(name, batch)

    tr.model.training_step = step
    out = tr.fit()
    assert out["interrupted"] == "SIGINT" and out["step"] == 4  # step 4 was finished (its G update ran too)
    assert calls[-2:] == ["D", "G"] and len(calls) == 6
    assert _states(tr.run_dir) == ["state-0000004.safetensors"] and load_state(out["state"])["step"] == 4
    assert not (tr.run_dir / RunLock.NAME).exists()
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers restored


def test_second_signal_aborts_at_once_without_a_checkpoint(tmp_path, tiny_data):
    tr = Trainer(resolve_run_config(_long_run(tmp_path, tiny_data)))
    orig, calls = tr.model.training_step, []

    def step(name, batch):
        calls.append(name)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(name, batch)

    tr.model.training_step = step
    with pytest.raises(TrainingAborted) as e:
        tr.fit()
    assert e.value.signum == signal.SIGTERM and len(calls) == 3
    assert _states(tr.run_dir) == [] and not (tr.run_dir / RunLock.NAME).exists()


def _start(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(CLI), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def test_cli_sigterm_saves_says_where_and_exits_143(tmp_path, tiny_data):
    cfg = write_yaml(tmp_path / "c.yaml", _long_run(tmp_path, tiny_data))
    proc = _start(["train", cfg], tmp_path)
    first = proc.stdout.readline()  # stdout is a pipe: plain log lines (15.5)
    assert first.startswith("step 1/402  init  ") and "init/loss=" in first and "ETA " in first
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    step = int(err.split("stopped by SIGTERM at step ")[1].split(":")[0])
    assert f"state-{step:07d}.safetensors" in err and "--resume" in err and "Traceback" not in err
    assert _states(tmp_path / "run") == [f"state-{step:07d}.safetensors"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, step + 1))


_FAKE_WORKER = """
import pathlib, signal, sys, time
log, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
def got(signum, frame):
    with open(log, "a") as f:
        f.write(f"worker {signum}\\n")
    if mode == "exit":
        sys.exit(0)
signal.signal(signal.SIGINT, got)
signal.signal(signal.SIGTERM, got)
log.write_text("")
while True:
    time.sleep(0.02)
"""
# torchrun's part: start one worker in its own session, record any signal it gets itself, exit with the worker
_FAKE_TORCHRUN = """
import pathlib, signal, subprocess, sys
log = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda s, f: open(log, "a").write(f"torchrun {s}\\n"))
sys.exit(subprocess.Popen([sys.executable, "-c", sys.argv[3], *sys.argv[1:3]], start_new_session=True).wait())
"""


@pytest.mark.parametrize("mode", ["exit", "hang"])
def test_nproc_launcher_forwards_the_first_signal_once_and_kills_on_the_second(tmp_path, monkeypatch, mode):
    """`train --nproc` (distributed.launch): the first SIGTERM goes once to torchrun's workers, which stop and
    end the launch (143); workers that do not stop are killed, with torchrun, by a second SIGTERM."""
    import threading
    import time

    from toonlab.train import distributed as D

    log, popen, procs = tmp_path / "signals.txt", subprocess.Popen, []

    def fake_popen(cmd, **kw):
        assert kw["env"][D.LAUNCHED_ENV] == "1" and kw["start_new_session"]
        procs.append(popen([sys.executable, "-c", _FAKE_TORCHRUN, str(log), mode, _FAKE_WORKER], **kw))
        return procs[-1]

    monkeypatch.setattr(D.subprocess, "Popen", fake_popen)

    def send():
        while not log.exists():
            time.sleep(0.02)
        for _ in range(1 if mode == "exit" else 2):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=send, daemon=True).start()
    assert D.launch(2, ["c.yaml"]) == 143
    assert log.read_text().splitlines() == [f"worker {int(signal.SIGTERM)}"]  # the worker, exactly once
    assert procs[0].returncode == (0 if mode == "exit" else -signal.SIGKILL)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_torchrun_sigterm_stops_every_rank_after_the_same_step(tmp_path, tiny_data):
    """torchrun forwards SIGTERM to both workers; they agree on the stop (all-reduce each step), take the
    state together (a collective) and rank 0 writes one checkpoint and says where."""
    cfg = write_yaml(tmp_path / "c.yaml", _long_run(tmp_path, tiny_data))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(CLI), "train", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    first = proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert first.startswith("step 1/402"), err[-3000:]
    step = int(err.split("stopped by SIGTERM at step ")[1].split(":")[0])
    run = tmp_path / "run"
    assert _states(run) == [f"state-{step:07d}.safetensors"] and not (run / RunLock.NAME).exists()
    state = load_state(run / "checkpoints" / f"state-{step:07d}.safetensors")
    assert state["world"] == 2 and len(state["rng"]) == 2 and state["step"] == step
    assert len((run / "metrics.jsonl").read_text().splitlines()) == step


# -- 14.4 checksums, fallback, non-finite exports -----------------------------------------------------------
def _flip(path: Path, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    for i in range(1, n + 1):  # the tensor bytes sit at the end of a safetensors file
        data[-8 * i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_newest_state_falls_back_to_the_newest_that_verifies(tmp_path, tiny_data, capsys):
    cfg = run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 2, "adv": 6}, "ckpt_every": 2,
                                                 "max_steps": 6})
    train(write_yaml(tmp_path / "c.yaml", cfg))
    ck = tmp_path / "run" / "checkpoints"
    assert _states(tmp_path / "run") == [f"state-000000{i}.safetensors" for i in (2, 4, 6)]
    _flip(ck / "state-0000006.safetensors")
    with pytest.raises(ToonlabError, match="checksum mismatch"):
        load_state(ck / "state-0000006.safetensors")
    trunc = ck / "state-0000004.safetensors"
    trunc.write_bytes(trunc.read_bytes()[:200])
    capsys.readouterr()
    out = train(None, ["train.max_steps=null"], resume=tmp_path / "run")
    err = capsys.readouterr().err
    assert "resuming from state-0000002.safetensors: state-0000006.safetensors is unusable" in err
    assert "checksum mismatch" in err and out["step"] == 8
    assert load_state(ck / "state-0000008.safetensors")["step"] == 8


def test_export_checksum_and_non_finite_weights(tmp_path, tiny_data):
    cfg = run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 0}})
    tr = Trainer(resolve_run_config(cfg))
    tr.fit()
    latest = tr.ckpt_dir / "latest.safetensors"
    load_export(latest)
    _flip(latest)
    with pytest.raises(ToonlabError, match="checksum mismatch"):
        load_export(latest)
    with torch.no_grad():
        tr.model.networks["G"][0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ToonlabError, match="non-finite weights"):
        save_export(tr.model, tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()


# -- 14.6 temp files, 14.7 lock -----------------------------------------------------------------------------
def test_resume_removes_temp_files_of_killed_writes(tmp_path, tiny_data, capsys):
    cfg = run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 2}, "max_steps": 1})
    train(write_yaml(tmp_path / "c.yaml", cfg))
    run = tmp_path / "run"
    junk = [run / "checkpoints" / ".state-0000002.safetensors.k3j_x.tmp", run / ".config.yaml.a1b2.tmp",
            run / "samples" / ".step-000002.png.zz.tmp"]
    for p in junk:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x" * 100)
    train(None, ["train.max_steps=null"], resume=run)
    assert not any(p.exists() for p in junk) and "removed 3 temp file(s)" in capsys.readouterr().err


def test_lock_refuses_a_second_writer_and_takes_over_a_stale_one(tmp_path, tiny_data, capsys):
    cfg = run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 1}, "max_steps": 1})
    train(write_yaml(tmp_path / "c.yaml", cfg))
    run = tmp_path / "run"
    code = ("import sys, time; from toonlab.train.checkpoint import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    live = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "held"
        with pytest.raises(ToonlabError, match=f"in use by pid {live.pid} on host"):
            train(None, resume=run)
        result = CliRunner().invoke(app, ["train", "--resume", str(run)])
        assert result.exit_code == 1 and "in use by pid" in result.output and "Traceback" not in result.output
    finally:
        live.kill()  # the kernel releases its lock; the file with its pid stays behind
        live.wait()
    assert (run / RunLock.NAME).exists()
    out = train(None, ["train.max_steps=null"], resume=run)
    assert out["step"] == 2 and not (run / RunLock.NAME).exists()


# -- 14.8 resume-time overrides -----------------------------------------------------------------------------
@pytest.mark.parametrize("override", ["data.batch_size=4", "train.seed=3", "data.size=24", "model.width=8",
                                      "train.run_dir=elsewhere"])
def test_resume_refuses_overrides_that_break_exactness(tmp_path, tiny_data, override):
    cfg = run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 1}, "max_steps": 1})
    train(write_yaml(tmp_path / "c.yaml", cfg))
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "run"), override])
    key = override.split("=")[0]
    assert result.exit_code == 2 and f"error: --resume: {key}=" in result.output, result.output
    assert "would change the run" in result.output and "Traceback" not in result.output
    assert _states(tmp_path / "run") == ["state-0000001.safetensors"]


def test_resume_records_harmless_overrides(tmp_path, tiny_data):
    cfg = run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 3}, "max_steps": 1})
    train(write_yaml(tmp_path / "c.yaml", cfg))
    run = tmp_path / "run"
    train(None, ["train.max_steps=3", "train.log_every=2"], resume=run)
    train(None, [], resume=run)  # no change: nothing recorded
    recs = [json.loads(x) for x in (run / "overrides.jsonl").read_text().splitlines()]
    assert len(recs) == 1 and recs[0]["step"] == 1
    assert recs[0]["changes"] == {"train.log_every": {"from": 1, "to": 2}, "train.max_steps": {"from": 1, "to": 3}}
    saved = resolve_run_config(__import__("yaml").safe_load((run / "config.yaml").read_text()))
    assert saved.train.max_steps == 3 and saved.train.log_every == 2


# -- 14.11 validation, disk full, absurd sizes --------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("model.width=0", "model.width: must be >= 1"),
    ("data.resize=8", "data.resize: must be 0, null or >= the crop size 16"),
    ("train.seed=-1", "train.seed: must be >= 0"),
    ("train.seed=4294967296", "train.seed: must be < 2147483648"),
    ("model.lr_g=.nan", "model.lr_g: must be a finite number"),
    ("data.val_count=-1", "data.val_count: must be >= 0"),
    ("train.ema=1.0", "train.ema: must be < 1"),
])
def test_invalid_configs_are_one_line_before_anything_is_built(tmp_path, tiny_data, override, message):
    cfg = write_yaml(tmp_path / "c.yaml", run_config(tmp_path, tiny_data))
    result = CliRunner().invoke(app, ["train", str(cfg), override])
    assert result.exit_code == 2 and f"error: {message}" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


@pytest.mark.parametrize("model, field", [("toon2real", "ngf=0"), ("toon2real", "n_blocks=-1"),
                                          ("toon2real", "pool_size=-1"), ("cyclegan", "n_blocks=-1"),
                                          ("ctss", "K=0"), ("ctss", "patch_size=0"), ("ctss", "stride_range=[0, 4]"),
                                          ("ctss", "lambda_con=.nan"), ("animegan", "lambda_adv=-1")])
def test_model_field_ranges(model, field):
    with pytest.raises(ConfigError, match=f"model.{field.split('=')[0]}: must be"):
        resolve_run_config({"model": {"name": model}}, [f"model.{field}"])


def test_absurd_model_size_is_refused_before_allocation(tmp_path):
    from safetensors.torch import save_file

    from toonlab.checkpoint import EXPORT_FORMAT

    path = tmp_path / "huge.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": EXPORT_FORMAT, "model": "toon2real",
                                                         "config": json.dumps({"ngf": 20000}), "styles": "[]"})
    with pytest.raises(ToonlabError, match=r"would have \d+\.\d G parameters .* over the 1 G limit"):
        load_export(path)
    # tiny G: 3·w·9+w + w·3+3, D: 3·w·9+w + w·9+1 → 68·w (+4) parameters
    with pytest.raises(ToonlabError, match=r"model: model '_tiny_train' would have 6\.8 G parameters \(27\.2 GB"):
        Trainer(resolve_run_config({"model": {"name": "_tiny_train", "width": 10**8}}))


def test_disk_full_during_a_checkpoint_is_one_line(tmp_path, tiny_data, monkeypatch):
    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    cfg = write_yaml(tmp_path / "c.yaml", run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 0}}))
    result = CliRunner().invoke(app, ["train", str(cfg)])
    assert result.exit_code == 1 and "export-0000001.safetensors: disk full" in result.output, result.output
    assert "Traceback" not in result.output and not list((tmp_path / "run" / "checkpoints").iterdir())
    assert not (tmp_path / "run" / RunLock.NAME).exists()


# -- 15.5 plain log lines -------------------------------------------------------------------------------------
def test_plain_log_line_every_log_every_steps_when_stdout_is_not_a_tty(tmp_path, tiny_data):
    cfg = write_yaml(tmp_path / "c.yaml", run_config(tmp_path, tiny_data, train={
        "phase_steps": {"init": 1, "adv": 4}, "log_every": 2}))
    result = CliRunner().invoke(app, ["train", str(cfg)])  # CliRunner's stdout is not a terminal
    assert result.exit_code == 0, result.output
    lines = [x for x in result.output.splitlines() if x.startswith("step ")]
    assert [x.split("  ")[0] for x in lines] == ["step 2/5", "step 4/5", "step 5/5"]
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for line, rec in zip(lines, recs):
        assert f"  {rec['phase']}  " in line and f"{rec['images_per_s']:.1f} img/s" in line and "ETA " in line
        assert f"G/loss={rec['G/loss']:.4g}" in line and f"D/loss={rec['D/loss']:.4g}" in line


# -- 14.14 file modes -----------------------------------------------------------------------------------------
def test_run_files_honour_the_umask(tmp_path, tiny_data):
    old = os.umask(0o022)
    os.umask(old)
    want = 0o666 & ~old
    cfg = run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 0}})
    train(write_yaml(tmp_path / "c.yaml", cfg))
    run = tmp_path / "run"
    for p in [run / "config.yaml", run / "env.json", *(run / "checkpoints").iterdir()]:
        assert p.stat().st_mode & 0o777 == want, p.name


# -- soak: random SIGKILL / SIGINT / SIGTERM, resume each time, same run dir as one uninterrupted run ------------
@pytest.mark.slow
def test_soak_random_kills_end_identical_to_an_uninterrupted_run(tmp_path, tiny_data):
    import random
    import time

    from .test_resume import run_files

    rng = random.Random(14)  # the signals and delays are reproducible; where they land depends on the machine
    cfg = write_yaml(tmp_path / "c.yaml", run_config(
        tmp_path, tiny_data, model={"noise": 0.3},
        train={"phase_steps": {"init": 6, "adv": 114}, "ckpt_every": 4, "sample_every": 7, "keep_last": 2,
               "ema": 0.9}))
    run = tmp_path / "run"
    ref = _start(["train", cfg], tmp_path)
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-2000:]
    run.rename(tmp_path / "whole")

    kills = {signal.SIGKILL: 0, signal.SIGINT: 0, signal.SIGTERM: 0}
    while sum(kills.values()) < 20:
        fresh = not list((run / "checkpoints").glob("state-*")) if run.exists() else True
        proc = _start(["train", cfg] if fresh else ["train", "--resume", run], tmp_path)
        first = proc.stdout.readline()  # a plain log line: training is under way
        for _ in range(rng.randint(0, 4)):  # a few more steps (at most 5 per attempt: 20 fit in 120)
            proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.05))  # anywhere within a step, a sample or a checkpoint write
        sig = rng.choice(list(kills))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
        assert first.startswith("step "), err[-2000:]
        assert proc.returncode in ({signal.SIGKILL: -9, signal.SIGINT: 130, signal.SIGTERM: 143}[sig], 0), \
            err[-2000:]
        assert proc.returncode != 0, "the run ended before 20 kills: give it more steps"
        assert "Traceback" not in err, err[-2000:]
        kills[sig] += 1
    done = _start(["train", "--resume", run], tmp_path)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err[-2000:]
    assert all(kills.values()), kills  # every kind of kill happened
    a, b = run_files(tmp_path / "whole"), run_files(run)
    assert sorted(a) == sorted(b)  # no temp file, lock or stop checkpoint left over
    for name in a:
        assert a[name] == b[name], name
