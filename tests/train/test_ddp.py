import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from toonlab.train.config import resolve_run_config
from toonlab.train.trainer import Trainer

from .conftest import run_config, write_yaml

WORKER = Path(__file__).with_name("_ddp_worker.py")


def train_two_ranks(tmp_path: Path, cfg: dict, **env: str) -> dict:
    """Train ``cfg`` on 2 gloo ranks through torchrun (``_ddp_worker.py``, ``env`` added to its environment);
    asserts both ranks end with identical weights and returns rank 0's state dict."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(WORKER), str(write_yaml(tmp_path / "ddp.yaml", cfg)), str(tmp_path)],
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    return r0
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_two_cpu_processes_match_each_other_and_one_process_with_the_combined_batch(tmp_path, tiny_data):
    """gloo, 2 ranks × batch 2 for init 2 + adv 2 steps == 1 process × batch 4 (the tiny model has no
    batch-dependent layers; noise off so that both runs draw the same data and nothing else)."""
    kw = dict(model={"noise": 0.0, "memory_weight": 0.0}, train={"phase_steps": {"init": 2, "adv": 2}, "ckpt_every": 2})
    cfg = run_config(tmp_path / "ddp", tiny_data, **kw)
    r0 = train_two_ranks(tmp_path, cfg)

    single = run_config(tmp_path / "single", tiny_data, **kw)
    single["data"]["batch_size"] = 4
    tr = Trainer(resolve_run_config(single))
    tr.fit()
    for name, net in tr.model.networks.items():
        for k, v in net.state_dict().items():
            torch.testing.assert_close(r0[f"{name}.{k}"], v, atol=1e-5, rtol=1e-4, msg=f"{name}.{k}")
    # rank 0 alone wrote the run dir; its export holds the synchronised G
    ddp_run = tmp_path / "ddp" / "run"
    exported = load_file(str(ddp_run / "checkpoints" / "latest.safetensors"))
    assert all(torch.equal(exported[k], r0[f"G.{k}"]) for k in exported)
    assert len((ddp_run / "metrics.jsonl").read_text().splitlines()) == 4


@pytest.mark.slow
def test_cli_nproc_relaunches_under_torchrun_with_a_batchnorm_model(tmp_path):
    """`toonlab train --nproc 2` on a registered model whose D has BatchNorm (per-process statistics on CPU)."""
    from toonlab.data.synth import make_synthtoon

    data = make_synthtoon(tmp_path / "st", n=4, size=32, seed=0, n_test=2)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "toonlab.cli", "train", str(CONFIGS / "cartoongan-tiny.yaml"),
                           f"data.photos={data / 'train/photos'}", f"data.cartoons={data / 'train/cartoons'}",
                           f"train.run_dir={run}", "train.progress=false", "--nproc", "2"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SyncBatchNorm needs CUDA" in proc.stderr
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # rank 0 alone logs
    assert (run / "checkpoints" / "latest.safetensors").is_file()


def _agree_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    import toonlab.train.distributed as D

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    D.setup(torch.device("cpu"))
    res = {"backend": dist.get_backend(D._CONTROL), "separate": D._CONTROL is not dist.group.WORLD,
           # rank 1 is out of time, rank 0 signalled: every rank sees both, in one call
           "both": D.all_hold(rank == 0, rank == 1, True), "one": D.all_true(True)}
    D.teardown()
    res["after"] = D._CONTROL is None and D.all_hold(False, True) == (False, True)
    Path(out, f"{rank}.json").write_text(json.dumps(res))


def test_ranks_agree_on_host_flags_in_one_call_over_a_gloo_control_group(tmp_path):
    """The stop flags meet over a gloo group of their own (no CUDA tensor read under NCCL), all in one reduce."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_agree_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        res = json.loads((tmp_path / f"{rank}.json").read_text())
        assert res == {"backend": "gloo", "separate": True, "both": [False, False, True], "one": True,
                       "after": True}, (rank, res)
