"""torchrun / DistributedDataParallel helpers.

``torchrun --nproc_per_node N -m toonlab.cli train CONFIG`` (or ``toonlab train --nproc N CONFIG``) sets RANK /
WORLD_SIZE / LOCAL_RANK; :func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU). Each network is
wrapped in its own DDP (never G and D as one module) *in place* in ``model.networks``, so ``training_step`` calls
the wrappers unchanged; :func:`unwrapped` temporarily puts the bare modules back for saving and sampling.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


LAUNCHED_ENV = "TOONLAB_LAUNCHED"  # set by launch(): the launcher, not the workers, reports a stop by signal


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank / world size / local rank from torchrun's environment (single process when absent)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


# A gloo group beside the training one, for agreements on host-side flags (out of time, signalled, the run dir
# opened): under NCCL an all-reduce of a CUDA tensor read back with .item() waits for everything queued on the GPU,
# every step; over gloo a few bytes of host memory meet the other ranks' without touching the GPU stream.
_CONTROL: dist.ProcessGroup | None = None


def setup(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1 (and make the host-side control
    group: every rank creates it here, in the same order, as ``new_group`` requires)."""
    global _CONTROL
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        _CONTROL = dist.new_group(backend="gloo")
    return info


def teardown() -> None:
    global _CONTROL
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CONTROL = None


def all_hold(*flags: bool) -> tuple[bool, ...]:
    """Whether each of ``flags`` holds on every rank, in one host-side all-reduce over the control group (every
    rank must call it with as many flags: ranks then take the same branch). No GPU synchronisation."""
    if not (dist.is_available() and dist.is_initialized()):
        return tuple(bool(f) for f in flags)
    if _CONTROL is None and dist.get_backend() != "gloo":  # a group set up by someone else: its own device
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=_CONTROL)
    return tuple(bool(v) for v in t.tolist())


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (:func:`all_hold` of one flag)."""
    return all_hold(flag)[0]


def all_true_on_device(flag: torch.Tensor) -> torch.Tensor:
    """0-d bool ``flag`` (on the training device) → whether it holds on every rank, still on the device: an
    all-reduce queued on the stream, no host read (every rank must call it)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = flag.to(torch.int32).reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t[0].bool()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def wrap_networks(networks: nn.ModuleDict, device: torch.device, sync_bn: bool = True,
                  find_unused: bool = False) -> None:
    """Replace each trainable network in ``networks`` by its own DDP wrapper (SyncBatchNorm where it has BN —
    CUDA only: PyTorch's SyncBatchNorm has no CPU kernel, so on CPU BN statistics stay per process)."""
    for name in list(networks.keys()):
        net = networks[name]
        if not any(True for _ in net.parameters()):
            continue
        if sync_bn and has_batchnorm(net):
            if device.type == "cuda":
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            elif env_info().is_main:
                print(f"warning: {name}: SyncBatchNorm needs CUDA; BatchNorm statistics stay per process on "
                      f"{device.type}", file=sys.stderr)
        for p in net.parameters():  # DDP registers its hooks on parameters that require grad at wrap time
            p.requires_grad_(True)
        ids = [device.index] if device.type == "cuda" else None
        networks[name] = DDP(net, device_ids=ids, find_unused_parameters=find_unused)


def bare(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, DDP) else net


@contextlib.contextmanager
def unwrapped(networks: nn.ModuleDict):
    """Within the block, ``networks`` holds the bare modules (for ``translator()``, state dicts, sampling)."""
    wrapped = {k: v for k, v in networks.items() if isinstance(v, DDP)}
    for k, v in wrapped.items():
        networks[k] = v.module
    try:
        yield networks
    finally:
        for k, v in wrapped.items():
            networks[k] = v


def no_sync(nets: list[nn.Module]):
    """Skip DDP's gradient all-reduce for these networks (all but the last micro-batch of an accumulation)."""
    stack = contextlib.ExitStack()
    for net in nets:
        if isinstance(net, DDP):
            stack.enter_context(net.no_sync())
    return stack


def launch(nproc: int, args: list[str]) -> int:
    """Re-run ``toonlab train ARGS`` under torchrun with ``nproc`` local processes; returns its exit code.

    torchrun runs in its own session (and starts each worker in another), so a terminal's Ctrl-C reaches only this
    process. The first SIGINT/SIGTERM goes straight to the workers (torchrun's children), which finish the step,
    agree to stop, checkpoint and exit 0 (``TOONLAB_LAUNCHED``), so torchrun ends quietly instead of reporting a
    failure; a second one SIGKILLs torchrun and its workers. Interrupted, it returns 128 + the signal number."""
    import signal

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "toonlab.cli", "train", *args]
    proc = subprocess.Popen(cmd, start_new_session=True, env={**os.environ, LAUNCHED_ENV: "1"})
    got: list[int] = []

    def forward(signum, frame):
        got.append(signum)
        try:
            workers = _children(proc.pid)
            if len(got) == 1:
                for pid in workers:
                    os.kill(pid, signum)
                if not workers:  # still starting: torchrun passes it on to whatever it started
                    proc.send_signal(signum)
                return
        except (ProcessLookupError, PermissionError):
            return
        # torchrun first: killed after a worker, it could see the worker die and exit with its status, or restart it
        _sigkill(proc.pid, group=True)
        for pid in workers:
            _sigkill(pid)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 128 + got[0] if got else code


def _sigkill(pid: int, group: bool = False) -> None:
    """SIGKILL a process (or its process group); one already gone is fine."""
    import signal

    try:
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere): torchrun's workers live in their own sessions."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:  # field 4 of /proc/PID/stat, after "pid (comm) state"
            out.append(int(stat.parent.name))
    return out
