"""``train.profile=N``: where a training step's time goes (torch.profiler over N steps after one warm-up step).

Writes ``RUN/profile/summary.json`` and ``RUN/profile/summary.txt``: wall time per step and its split into the
data-loader wait (``toonlab::data``: the next batch from the loader and its copy to the device), the training
step (``toonlab::step``) and the rest (logging, samples, checkpoints); the ops with the most self time on the host
and on the device; and per step the kernel launches, the host↔device synchronisations (``cudaStreamSynchronize``,
``cudaDeviceSynchronize``, blocking ``cudaMemcpy``) and the scalar reads that cause them (``aten::item`` /
``aten::_local_scalar_dense``, i.e. ``.item()``, ``float(t)``, ``bool(t)``), split by where they happen: in the
optimiser step (the non-fused Adam reads its per-parameter step counters, host tensors: no sync; so does the fused
Adam's CPU kernel, where CUDA's reads them on the device), in the data fetch (host tensors of the loader; in worker
processes when ``data.workers`` > 0) and in the rest of the training step — those are synchronisations once the run
is on a GPU. On CPU they are counted all the same.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

REGIONS = ("toonlab::data", "toonlab::step")
LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
TOP = 15


class StepProfiler:
    """``region(name)`` around the data fetch and the step, ``step()`` after every training step; the summary is
    written once ``warmup + steps`` steps are done (or at ``close()`` with the steps profiled so far)."""

    def __init__(self, out_dir: Path, steps: int, device: torch.device, warmup: int = 1):
        self.out_dir, self.steps, self.warmup, self.device = Path(out_dir), steps, warmup, device
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        self._prof = profile(activities=activities,
                             schedule=torch.profiler.schedule(wait=0, warmup=warmup, active=steps, repeat=1))
        self._prof.start()
        self._seen = 0
        self._t_active: float | None = time.perf_counter() if warmup == 0 else None
        self.summary: dict | None = None

    @property
    def active(self) -> bool:
        return self.summary is None

    def region(self, name: str):
        return record_function(f"toonlab::{name}") if self.active else contextlib.nullcontext()

    def step(self) -> None:
        if not self.active:
            return
        self._seen += 1
        if self._seen == self.warmup:
            self._sync()
            self._t_active = time.perf_counter()
        if self._seen == self.warmup + self.steps:
            self._finish()
        else:
            self._prof.step()

    def close(self) -> None:
        if self.active:
            self._finish()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _finish(self) -> None:
        self._sync()
        n = max(self._seen - self.warmup, 0)
        wall = time.perf_counter() - self._t_active if self._t_active is not None and n else 0.0
        self._prof.stop()
        events = self._prof.events() if n else []
        self.summary = summarise(self._prof.key_averages() if n else [], n, wall, self.device,
                                 _scalar_reads(events))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "summary.json").write_text(json.dumps(self.summary, indent=1), encoding="utf-8")
        (self.out_dir / "summary.txt").write_text(render(self.summary), encoding="utf-8")


def _device_time(e) -> float:
    """Self device time (µs) of a key-average entry, whatever this torch calls the field."""
    return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) or 0.0)


def _scalar_reads(events) -> dict[str, int]:
    """Scalar reads among the profiled ``events`` (FunctionEvents) by their enclosing range: the optimiser step,
    the data fetch, or the rest ("step")."""
    out = {"optimizer": 0, "data": 0, "step": 0}
    for e in events:
        if e.name == "aten::_local_scalar_dense":  # what every .item() / float() / bool() of a tensor ends in
            p = e.cpu_parent
            while p is not None and not (p.name.startswith("Optimizer.step") or p.name == "toonlab::data"):
                p = p.cpu_parent
            out["step" if p is None else "data" if p.name == "toonlab::data" else "optimizer"] += 1
    return out


def summarise(events, steps: int, wall_s: float, device: torch.device, reads: dict[str, int]) -> dict:
    """The summary dict of ``events`` (``profile.key_averages()``) over ``steps`` profiled steps and their scalar
    ``reads`` (see _scalar_reads); times in ms per step, counts per step."""
    per = max(steps, 1)
    by_name = {e.key: e for e in events}

    def region_ms(name: str) -> float:  # a record_function's host span, children included
        e = by_name.get(name)
        return round(e.cpu_time_total / 1e3 / per, 3) if e is not None else 0.0

    def count(names) -> dict[str, float]:
        return {k: round(by_name[k].count / per, 2) for k in names if k in by_name}

    ops = [e for e in events if not e.key.startswith("toonlab::") and not e.key.startswith("ProfilerStep")]
    host = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:TOP]
    dev = sorted((e for e in ops if _device_time(e) > 0), key=_device_time, reverse=True)[:TOP]
    wall_ms = wall_s * 1e3 / per
    data_ms, step_ms = region_ms("toonlab::data"), region_ms("toonlab::step")
    syncs = count(SYNCS)
    return {
        "device": str(device), "steps": steps, "wall_ms_per_step": round(wall_ms, 3),
        "data_wait_ms_per_step": data_ms, "data_wait_share": round(data_ms / wall_ms, 4) if wall_ms else None,
        "train_step_ms_per_step": step_ms,
        "other_ms_per_step": round(max(wall_ms - data_ms - step_ms, 0.0), 3),
        "device_busy_ms_per_step": round(sum(_device_time(e) for e in ops) / 1e3 / per, 3),
        "kernel_launches_per_step": round(sum(by_name[k].count for k in LAUNCHES if k in by_name) / per, 2),
        "syncs_per_step": syncs, "scalar_reads_per_step": {k: round(v / per, 2) for k, v in reads.items()},
        "host_ops": [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / per, 3),
                      "calls_per_step": round(e.count / per, 2)} for e in host],
        "device_ops": [{"op": e.key, "self_ms_per_step": round(_device_time(e) / 1e3 / per, 3),
                        "calls_per_step": round(e.count / per, 2)} for e in dev],
    }


def render(s: dict) -> str:
    """The summary as a few readable lines and two tables."""
    lines = [f"profile of {s['steps']} training step(s) on {s['device']}",
             f"wall {s['wall_ms_per_step']:.1f} ms/step: data-loader wait {s['data_wait_ms_per_step']:.1f} ms, "
             f"training step {s['train_step_ms_per_step']:.1f} ms, other {s['other_ms_per_step']:.1f} ms",
             f"device busy {s['device_busy_ms_per_step']:.1f} ms/step, kernel launches "
             f"{s['kernel_launches_per_step']:g}/step",
             "syncs/step: " + (", ".join(f"{k} {v:g}" for k, v in s["syncs_per_step"].items()) or "none"),
             "scalar reads/step: " + (", ".join(f"{k} {v:g}" for k, v in s["scalar_reads_per_step"].items())
                                      or "none")]
    for title, rows in (("host (self time)", s["host_ops"]), ("device (self time)", s["device_ops"])):
        if rows:
            lines += ["", f"{title:<44} {'ms/step':>10} {'calls/step':>11}"]
            lines += [f"{r['op'][:44]:<44} {r['self_ms_per_step']:>10.3f} {r['calls_per_step']:>11g}" for r in rows]
    return "\n".join(lines) + "\n"
