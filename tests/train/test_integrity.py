"""Issue 24 items 1, 2 and 11 (RNG): the run dir lock under contention and after crashes, states without a
checksum or with non-finite weights, the Python RNG position across a resume."""

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys

import pytest
import torch

from toonlab.checkpoint import load_export
from toonlab.errors import ToonlabError
from toonlab.train.checkpoint import RunLock, load_state, save_state
from toonlab.train.trainer import train

from .conftest import run_config, write_yaml

# -- item 1: the run dir lock ----------------------------------------------------------------------------------
_FORK = mp.get_context("fork")


def _contend(run_dir, start, done, holders):
    lock = RunLock(run_dir)
    start.wait()
    try:
        lock.acquire()
    except ToonlabError:
        ok = False
    else:
        ok = True
        with holders.get_lock():
            holders.value += 1
    done.wait()  # every contender has tried before the holder lets go
    if ok:
        lock.release()
    os._exit(0)


@pytest.mark.parametrize("stale", [False, True], ids=["no-lock", "stale-lock"])
def test_three_trainers_released_together_give_exactly_one_holder(tmp_path, stale):
    for trial in range(15):
        run = tmp_path / f"run{trial}"
        run.mkdir()
        if stale:  # a killed trainer's file with a dead pid
            (run / RunLock.NAME).write_text(json.dumps({"pid": 999_999_9, "host": os.uname().nodename}))
        start, done, holders = _FORK.Barrier(3), _FORK.Barrier(3), _FORK.Value("i", 0)
        procs = [_FORK.Process(target=_contend, args=(run, start, done, holders)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(20)
        assert holders.value == 1, f"trial {trial}: {holders.value} holders"
        assert not (run / RunLock.NAME).exists()


def test_lock_held_by_a_live_process_refuses_and_is_free_once_it_is_killed(tmp_path):
    code = ("import sys, time; from toonlab.train.checkpoint import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ToonlabError, match=f"in use by pid {holder.pid} on host {os.uname().nodename}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # no release, no clean-up: the kernel drops the lock
        holder.wait()
    assert (tmp_path / RunLock.NAME).exists()
    lock = RunLock(tmp_path)
    lock.acquire()
    lock.release()


@pytest.mark.parametrize("whose", ["unrelated-live-pid", "own-pid"])
def test_a_pid_in_the_lock_file_alone_never_refuses(tmp_path, whose):
    pid = os.getppid() if whose == "unrelated-live-pid" else os.getpid()  # as after an exec in a restarted container
    (tmp_path / RunLock.NAME).write_text(json.dumps({"pid": pid, "host": os.uname().nodename}))
    lock = RunLock(tmp_path)
    lock.acquire()
    assert json.loads((tmp_path / RunLock.NAME).read_text())["pid"] == os.getpid()
    with pytest.raises(ToonlabError, match="in use by"):  # a second trainer in this very process is refused too
        RunLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / RunLock.NAME).exists()


# -- item 2: states without a checksum, states with non-finite weights -------------------------------------------
def _rewrite(path, weight, keep_checksum):
    """Set every weight of G's first conv to ``weight`` in the state at ``path``; without ``keep_checksum`` the
    file is written with its metadata less ``sha256`` (a hand-edited state), else through save_state (valid)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    state = load_state(path)
    state["networks"]["G"]["0.weight"].fill_(weight)
    save_state(path, state)
    if not keep_checksum:
        with safe_open(str(path), framework="pt") as f:
            meta = {k: v for k, v in f.metadata().items() if k != "sha256"}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("weight,keep_checksum,why", [(0.5, False, "no checksum"), (float("nan"), False, "no checksum"),
                                                      (float("nan"), True, "non-finite weights in networks.G.0.weight")])
def test_tampered_newest_state_is_refused_and_resume_falls_back(tmp_path, tiny_data, capsys, weight, keep_checksum,
                                                                why):
    cfg = run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 2, "adv": 4}, "ckpt_every": 2,
                                                 "max_steps": 4})
    train(write_yaml(tmp_path / "c.yaml", cfg))
    ck = tmp_path / "run" / "checkpoints"
    newest = ck / "state-0000004.safetensors"
    _rewrite(newest, weight, keep_checksum)
    with pytest.raises(ToonlabError, match=why):
        load_state(newest)
    capsys.readouterr()
    out = train(None, ["train.max_steps=null"], resume=tmp_path / "run")
    err = capsys.readouterr().err
    assert "resuming from state-0000002.safetensors: state-0000004.safetensors is unusable" in err and why in err
    assert out["step"] == 6
    for name in ("latest", "best"):  # nothing of the rewritten state reaches the exports
        g = load_export(ck / f"{name}.safetensors")[0].networks["G"][0].weight
        assert bool(torch.isfinite(g).all()) and not bool((g == 0.5).all())


# -- item 11: the Python RNG position after a resume ---------------------------------------------------------------
def test_python_rng_position_after_a_resume_equals_the_uninterrupted_run(tmp_path, tiny_data):
    """A resumed process imports rich (the progress bar) after restoring the RNG states; rich draws from Python's
    global RNG on its first import, which moved the saved position (weights stayed equal)."""
    import sys

    def cfg(run, **kw):
        return run_config(tmp_path, tiny_data, train={"run_dir": str(tmp_path / run), "progress": True,
                                                      "phase_steps": {"init": 2, "adv": 2}, "ckpt_every": 2, **kw})

    import rich.progress  # noqa: F401  (before both runs: neither draws for it)

    train(write_yaml(tmp_path / "a.yaml", cfg("whole")))
    train(write_yaml(tmp_path / "b.yaml", cfg("split", max_steps=2)))
    saved = {m: sys.modules.pop(m) for m in list(sys.modules) if m == "rich" or m.startswith("rich.")}
    try:  # as in the fresh process of `toonlab train --resume`, which imports rich anew
        train(None, ["train.max_steps=null"], resume=tmp_path / "split")
    finally:  # the other tests keep the rich they imported
        for m in [m for m in sys.modules if m == "rich" or m.startswith("rich.")]:
            del sys.modules[m]
        sys.modules.update(saved)
    a, b = (load_state(tmp_path / run / "checkpoints" / "state-0000004.safetensors") for run in ("whole", "split"))
    assert a["rng"][0]["python"] == b["rng"][0]["python"]
    assert torch.equal(a["networks"]["G"]["0.weight"], b["networks"]["G"]["0.weight"])
