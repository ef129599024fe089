"""The one training loop for every registered model (DESIGN.md: the model says what to compute, the trainer how
to optimise).

One *step* = one batch (``grad_accum`` micro-batches) through every ``Step`` of the current phase, in order: the
Step's networks get gradients (all others are frozen), ``training_step`` gives ``losses["loss"]``, backward, an
Adam update (betas and lr from the Step, optional linear decay), ``model.after_optimizer_step``. Phases last
``epochs`` passes over the photo set (or ``train.phase_steps``); an optimiser per Step is created when its phase
begins. Non-finite losses skip their Step; after ``nan_strikes`` of them the last good weights and optimiser
states are restored. With ``train.sync_free`` (auto: on CUDA) the skip is decided on the device (the fused Adam's
``found_inf``) and the strikes are counted when the losses are read, every ``log_every`` steps. Rank 0 writes the
run dir under a lock (``train.lock``): ``config.yaml``, ``env.json``, ``metrics.jsonl``, ``samples/``,
``checkpoints/`` (``export-XXXXXXX.safetensors``, ``state-XXXXXXX.safetensors``, ``latest.safetensors``,
``best.safetensors``) and, after a resume that changed settings, ``overrides.jsonl``.

Exactness: checkpoints *on the schedule* (every ``ckpt_every`` steps and the last step) judge ``best`` and clear
its metric window before the state is taken; a *stop* checkpoint (SIGINT/SIGTERM, ``max_steps``, ``max_minutes``)
saves the state as it is and is deleted once a later checkpoint exists, and samples / log lines follow the schedule
only, so a run split by any number of stops and kills ends with the same run dir as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from toonlab.checkpoint import atomic_write, check_model_size, remove_temp_files, save_export, strip_prefixes
from toonlab.device import keep_cpu_heap, resolve_device
from toonlab.errors import ToonlabError, UsageError
from toonlab.models.base import Model, Phase, Step
from toonlab.train import distributed as D
from toonlab.train.checkpoint import (
    RunLock,
    load_state,
    read_init_weights,
    rng_state,
    save_state,
    set_rng_state,
)
from toonlab.train.config import RunConfig, load_run_config, resolve_run_config, run_config_dict
from toonlab.train.logging import RunLogger

STATE_GLOB = "state-*.safetensors"
EXPORT_GLOB = "export-*.safetensors"
# Settings a resume may change without breaking exactness (they only decide when to stop, log, sample or save,
# where to run, or, for phase_steps, close a phase early as documented); anything else is refused.
RESUME_SAFE = {"train.max_steps", "train.max_minutes", "train.log_every", "train.sample_every", "train.ckpt_every",
               "train.keep_last", "train.progress", "train.tensorboard", "train.phase_steps", "train.nan_strikes",
               "train.max_restores", "train.device", "train.profile", "train.eval_batch", "data.workers",
               "data.val_photos", "data.val_count"}


class TrainingAborted(KeyboardInterrupt):
    """A second SIGINT/SIGTERM during training: stop at once, without a checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@dataclass(frozen=True)
class PhaseSpan:
    phase: Phase
    start: int  # first global step of the phase
    length: int  # steps in the phase


def plan_phases(phases: tuple[Phase, ...], steps_per_epoch: int, phase_steps: dict[str, int]) -> list[PhaseSpan]:
    """Global step ranges of the phases: ``epochs × steps_per_epoch`` or ``phase_steps[name]``."""
    unknown = sorted(set(phase_steps) - {p.name for p in phases})
    if unknown:
        raise UsageError(f"train.phase_steps: unknown phase {unknown[0]!r} (phases: {[p.name for p in phases]})")
    spans, start = [], 0
    for p in phases:
        length = phase_steps.get(p.name, p.epochs * steps_per_epoch)
        if length > 0:
            spans.append(PhaseSpan(p, start, length))
            start += length
    return spans


def lr_factor(i: int, n: int, mode: str, start_fraction: float) -> float:
    """Multiplier of a Step's lr at step ``i`` of an ``n``-step phase: 1, then (linear) down to 1/(n−start)."""
    if mode == "none":
        return 1.0
    start = int(n * start_fraction)
    return 1.0 if i < start else (n - i) / max(1, n - start)


class _EMAExport:
    """What ``save_export`` needs (name, config, styles, translator) with the EMA translator's weights."""

    def __init__(self, model: Model, ema: nn.Module):
        self.name, self.styles, self._ema = model.name, model.styles, ema
        self.config_dict = model.config_dict

    def translator(self) -> nn.Module:
        return self._ema


def labelled_columns(grid: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """grid (3,H,W) in [0,1] of ``len(labels)`` equal-width columns -> (3,H+h,W): a white header row of height h
    naming each column in black (TensorBoard shows the grid without any other legend)."""
    import cv2
    import numpy as np

    col = grid.shape[-1] // len(labels)
    h = max(12, col // 8)
    header = np.full((h, grid.shape[-1], 3), 255, np.uint8)
    for i, text in enumerate(labels):
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)
        scale = min((col - 4) / tw, (h - 4) / (th + base))  # fit the column's width and the header's height
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.putText(header, text, (i * col + (col - tw) // 2, (h - th - base) // 2 + th), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (0, 0, 0), 1, cv2.LINE_AA)
    return torch.cat([torch.from_numpy(header).permute(2, 0, 1).float() / 255, grid.float()], dim=1)


class Trainer:
    """``Trainer(cfg).fit()``; ``resume=True`` continues the run in ``cfg.train.run_dir`` exactly (``changes``:
    the settings a resume changed, recorded in the run dir); ``init_from`` loads weights (export or training
    state) into a new run."""

    def __init__(self, cfg: RunConfig, *, resume: bool = False, init_from: str | Path | None = None,
                 changes: dict | None = None):
        from toonlab.data.datasets import UnpairedDataset, discover
        from toonlab.models import build_model

        self.cfg = cfg
        t, d = cfg.train, cfg.data
        check_model_size(cfg.model_name, cfg.model_fields(), "model")  # before any weight is allocated
        info = D.env_info()
        self.device = resolve_device(t.device, info.local_rank, key="train.device")
        if self.device.type == "cpu":
            keep_cpu_heap(True)
        self.dist = D.setup(self.device)
        self.run_dir = Path(t.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.lock = RunLock(self.run_dir)
        self._signal: int | None = None
        self.amp = t.amp
        # the finite check of each Step's loss stays on the device (see _train_step); on CPU a host read is free
        self.sync_free = self.device.type == "cuda" if t.sync_free == "auto" else bool(t.sync_free)
        if t.amp != "none" and self.device.type != "cuda":
            print(f"warning: train.amp={t.amp} needs CUDA; training in fp32 on {self.device}", file=sys.stderr)
            self.amp = "none"
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":  # shapes are static (fixed crops, fixed CTSS patch batch): autotune once
            torch.backends.cudnn.benchmark = True

        if "perceptual" in cfg.model:  # resolved once, here: config.yaml and every checkpoint record the backbone,
            #                            and a resumed run keeps it (or stops in one line if it is missing)
            from toonlab.nn.perceptual import resolve_perceptual

            asked, cfg.model["perceptual"] = cfg.model["perceptual"], resolve_perceptual(cfg.model["perceptual"])
            if self.dist.is_main:  # never silent: which network the content losses run on
                print(f"perceptual backbone: {cfg.model['perceptual']}" + (" (auto)" if asked == "auto" else ""),
                      file=sys.stderr)
        _seed_all(t.seed)
        self.model: Model = build_model(cfg.model_name, cfg.model_fields())
        if self.dist.rank:  # same initial weights on every rank (DDP also broadcasts), own randomness after
            _seed_all(t.seed + 1000 * self.dist.rank)
        self.size = d.size or self.model.default_size
        if self.size % self.model.size_multiple:
            raise UsageError(f"data.size: {self.size} is not a multiple of {self.model.size_multiple} "
                             f"(required by model {self.model.name!r})")

        self.sources = discover(d, self.model.requires, self.model.styles)
        self.dataset = UnpairedDataset(self.sources, self.model.requires, self.size, resize=d.resize, crop=d.crop,
                                       flip=d.flip, seed=t.seed, guided_radius=d.guided_radius,
                                       guided_eps=d.guided_eps)
        self.images_per_step = d.batch_size * self.dist.world * t.grad_accum
        self.steps_per_epoch = max(1, math.ceil(len(self.sources.photos) / self.images_per_step))
        self.spans = plan_phases(self.model.phases(), self.steps_per_epoch, t.phase_steps)
        self.total_steps = self.spans[-1].start + self.spans[-1].length if self.spans else 0
        self.stop_step = self.total_steps if t.max_steps is None else min(self.total_steps, t.max_steps)

        # counters (all part of the training state)
        self.step = 0
        self.position = 0  # global sample-stream position (sampler state)
        self.epoch = 0
        self.skipped_images = 0
        self.strikes = 0
        self.restores = 0
        self.best: float | None = None
        self.window: dict[str, list[float]] = {}  # best_metric values since the last scheduled checkpoint
        self.log_sums: dict[str, float] = {}  # logged values since the last metrics line, and their counts
        self.log_counts: dict[str, int] = {}
        # per step taken since the last read: (step, [(Step name, finite flag or None, "<Step>/<loss>" -> its
        # micro-batches' detached losses)]), still on the device (read in one transfer by _drain_logs every
        # log_every steps, before a checkpoint and before a new phase)
        self._pending_logs: list[tuple[int, list[tuple[str, torch.Tensor | None, dict[str, list[torch.Tensor]]]]]] = []
        self._good: dict | None = None  # the last good state (_snapshot) that too many strikes restore
        self.metrics_lines = 0  # lines of metrics.jsonl that belong to the steps done
        self.phase_name: str | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.ema: nn.Module | None = None

        # rank 0 owns the run dir; every rank learns whether it could take it before going on
        error = None
        if self.dist.is_main:
            try:
                self._open_run_dir(resume)
            except ToonlabError as e:
                error = e
        if not D.all_true(error is None):
            self.lock.release()
            raise error if error is not None else ToonlabError("rank 0 could not open the run dir")
        try:
            state = None
            if resume:
                state = self._pick_state()
                self._load_networks(state["networks"])
            elif init_from is not None:
                self._init_from(init_from)
            self.model.to(self.device)
            if t.channels_last:
                for net in self.model.networks.values():
                    net.to(memory_format=torch.channels_last)
            if self.dist.enabled:
                D.wrap_networks(self.model.networks, self.device, t.sync_bn, t.ddp_find_unused)
            if t.ema is not None:
                with D.unwrapped(self.model.networks):
                    live = self.model.translator()
                    self.ema = copy.deepcopy(live).eval().requires_grad_(False)
                    self._ema_pairs = list(zip(self.ema.parameters(), live.parameters()))
                    self._ema_buffers = list(zip(self.ema.buffers(), live.buffers()))
            if t.compile:  # in place, after the EMA copy is taken: state-dict keys and DDP wrapping stay as they are
                for net in self.model.networks.values():
                    D.bare(net).compile(mode=None if t.compile is True else t.compile)
            if state is not None:
                self._load_state(state)
                if self.dist.is_main:
                    self._resumed_run_dir(state, changes or {})
            elif self.dist.is_main:
                self._start_run_dir()
        except BaseException:
            self.lock.release()
            raise
        D.barrier()

    # -- run dir / resume ---------------------------------------------------------------------------------
    def _open_run_dir(self, resume: bool) -> None:
        """Rank 0: refuse a new run over an old one, take the lock, delete temp files of killed writes."""
        if not resume and any(self.ckpt_dir.glob(STATE_GLOB)):
            raise UsageError(f"train.run_dir: {self.run_dir} already holds a run; use --resume {self.run_dir} "
                             f"or another train.run_dir")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ToonlabError(f"train.run_dir: cannot create {self.run_dir} ({e.strerror})") from None
        self.lock.acquire()
        n = sum(remove_temp_files(f) for f in (self.run_dir, self.ckpt_dir, self.run_dir / "samples") if f.is_dir())
        if n:
            print(f"note: removed {n} temp file(s) left by interrupted writes in {self.run_dir}", file=sys.stderr)

    def _pick_state(self) -> dict:
        """The newest training state that loads and verifies (checksum); says so when it is not the newest."""
        states = sorted(self.ckpt_dir.glob(STATE_GLOB), reverse=True)
        if not states:
            raise UsageError(f"--resume: no training state ({STATE_GLOB}) in {self.ckpt_dir}")
        for i, path in enumerate(states):
            try:
                state = load_state(path)
            except ToonlabError as e:
                if i == 0:
                    first_error = e
                continue
            if i and self.dist.is_main:
                print(f"note: resuming from {path.name}: {states[0].name} is unusable ({first_error})",
                      file=sys.stderr)
            return state
        raise ToonlabError(f"--resume: no usable training state in {self.ckpt_dir} "
                           f"({len(states)} tried; newest: {first_error})")

    def _resumed_run_dir(self, state: dict, changes: dict) -> None:
        """Rank 0 after loading ``state``: drop metrics lines written after it (a kill), record changed settings."""
        metrics = self.run_dir / "metrics.jsonl"
        if "metrics_lines" in state and metrics.is_file():
            lines = metrics.read_text(encoding="utf-8").splitlines(keepends=True)
            if len(lines) > state["metrics_lines"]:
                text = "".join(lines[: state["metrics_lines"]])
                atomic_write(metrics, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        if changes:
            text = yaml.safe_dump(run_config_dict(self.cfg), sort_keys=False)
            atomic_write(self.run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
            rec = {"step": self.step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "changes": {k: {"from": a, "to": b} for k, (a, b) in changes.items()}}
            with open(self.run_dir / "overrides.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    def _start_run_dir(self) -> None:
        # metrics of an earlier start that was killed before its first checkpoint: nothing can continue them
        (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        text = yaml.safe_dump(run_config_dict(self.cfg), sort_keys=False)
        atomic_write(self.run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        env = {"git_commit": _git_commit(), "torch": torch.__version__, "python": platform.python_version(),
               "device": str(self.device), "cuda": torch.version.cuda, "world_size": self.dist.world,
               "host": platform.node(), "argv": sys.argv}
        if self.device.type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(self.device)
        atomic_write(self.run_dir / "env.json", lambda tmp: Path(tmp).write_text(json.dumps(env, indent=1)))

    def _load_networks(self, nets: dict) -> None:
        missing = sorted(set(self.model.networks) - set(nets))
        if missing:
            raise ToonlabError(f"checkpoint has no weights for network(s) {missing} of model {self.model.name!r}")
        for name, net in self.model.networks.items():
            try:
                D.bare(net).load_state_dict(nets[name], strict=True)
            except RuntimeError as e:
                raise ToonlabError(f"checkpoint weights of {name!r} do not match model {self.model.name!r} "
                                   f"({str(e).splitlines()[0]})") from None

    def _init_from(self, path: str | Path) -> None:
        weights = read_init_weights(path)
        if "networks" in weights:
            self._load_networks(weights["networks"])
            return
        if weights["model"] != self.model.name:
            raise UsageError(f"--init-from {path}: an export of model {weights['model']!r}, not {self.model.name!r}")
        try:
            self.model.translator().load_state_dict(weights["translator"], strict=True)
        except RuntimeError as e:
            ours = json.loads(json.dumps(self.model.config_dict()))  # tuples as the export stores them
            differ = [f"{k}: {weights['config'][k]!r} in the export, {ours[k]!r} here" for k in sorted(ours)
                      if k in weights["config"] and weights["config"][k] != ours[k]]
            why = "; ".join(differ[:4]) if differ else str(e).splitlines()[0]
            raise ToonlabError(f"{path}: weights do not match this {self.model.name!r} config ({why})") from None

    def _state(self) -> dict:
        rngs = [rng_state()]
        if self.dist.enabled:
            rngs = [None] * self.dist.world
            torch.distributed.all_gather_object(rngs, rng_state())
        with D.unwrapped(self.model.networks):
            nets = {k: strip_prefixes(v.state_dict()) for k, v in self.model.networks.items()}
        return {
            "step": self.step, "position": self.position, "epoch": self.epoch, "phase": self.phase_name,
            "skipped_images": self.skipped_images, "strikes": self.strikes, "restores": self.restores,
            "best": self.best, "window": self.window, "networks": nets,
            "log": {"sums": self.log_sums, "counts": self.log_counts},
            "metrics_lines": self.logger.lines if hasattr(self, "logger") else self.metrics_lines,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rngs, "world": self.dist.world,
            # model state outside its networks (e.g. CycleGAN's image pools), via the optional hook pair
            # extra_training_state() / load_extra_training_state(state)
            "extra": self.model.extra_training_state() if hasattr(self.model, "extra_training_state") else None,
        }

    def _load_state(self, s: dict) -> None:
        self.step, self.position, self.epoch = s["step"], s["position"], s["epoch"]
        self.skipped_images, self.strikes, self.restores = s["skipped_images"], s["strikes"], s["restores"]
        self.best, self.window = s["best"], s["window"]
        if "log" in s:
            self.log_sums, self.log_counts = dict(s["log"]["sums"]), dict(s["log"]["counts"])
            self.metrics_lines = s["metrics_lines"]
        # the saved phase's optimisers continue; if phase_steps were changed so that it no longer runs at this
        # step, the loop starts the next phase with fresh optimisers as usual
        saved = [sp for sp in self.spans if sp.phase.name == s["phase"]]
        if saved and self.step < self.total_steps and self._span_at(self.step).phase.name == s["phase"]:
            self._enter_phase(saved[0].phase)
            for k, o in self.optimizers.items():
                o.load_state_dict(s["optimizers"][k])
            for k, sc in self.scalers.items():
                sc.load_state_dict(s["scalers"][k])
        if self.ema is not None and s["ema"] is not None:
            self.ema.load_state_dict(s["ema"])
        if s.get("extra") is not None and hasattr(self.model, "load_extra_training_state"):
            self.model.load_extra_training_state(_to_device(s["extra"], self.device))
        rngs = s["rng"]
        set_rng_state(rngs[self.dist.rank] if len(rngs) == self.dist.world else rngs[0])

    # -- phases / optimisers ------------------------------------------------------------------------------
    def _span_at(self, step: int) -> PhaseSpan:
        for sp in self.spans:
            if sp.start <= step < sp.start + sp.length:
                return sp
        raise IndexError(step)

    def _params(self, step: Step) -> list[nn.Parameter]:
        unknown = [n for n in step.networks if n not in self.model.networks]
        if unknown:
            raise ToonlabError(f"model {self.model.name!r}: Step {step.name!r} names unknown network(s) {unknown}")
        return [p for n in step.networks for p in self.model.networks[n].parameters()]

    def _enter_phase(self, phase: Phase) -> None:
        """Fresh Adam (and fp16 scaler) per Step of the phase; earlier phases' optimisers are dropped."""
        self.phase_name = phase.name
        self.optimizers, self.scalers = {}, {}
        for st in phase.steps:
            key = f"{phase.name}.{st.name}"
            # CUDA: one fused kernel per optimiser step; CPU keeps the per-tensor loop (foreach is bit-equal on
            # CPU but no faster there, fused is not bit-equal) unless sync_free needs the fused one's found_inf
            fast = {"fused": True} if self.device.type == "cuda" or self.sync_free else {}
            self.optimizers[key] = torch.optim.Adam(self._params(st), lr=st.lr, betas=tuple(st.betas), **fast)
            if self.amp == "fp16":
                self.scalers[key] = torch.amp.GradScaler("cuda")

    def _toggle(self, step: Step) -> None:
        for name, net in self.model.networks.items():
            net.requires_grad_(name in step.networks)

    # -- snapshots for NaN recovery -----------------------------------------------------------------------
    def _snapshot(self) -> dict:
        with D.unwrapped(self.model.networks):
            nets = {k: {n: t.detach().clone() for n, t in v.state_dict().items()}
                    for k, v in self.model.networks.items()}
        return {"networks": nets, "optimizers": {k: copy.deepcopy(o.state_dict()) for k, o in self.optimizers.items()},
                "phase": self.phase_name}

    def _restore(self, snap: dict) -> None:
        with D.unwrapped(self.model.networks):
            for k, v in self.model.networks.items():
                v.load_state_dict(snap["networks"][k])
        if snap["phase"] == self.phase_name:
            for k, o in self.optimizers.items():
                o.load_state_dict(snap["optimizers"][k])

    # -- the loop -----------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train until ``stop_step`` (or a SIGINT/SIGTERM: finish the step, checkpoint, stop); returns {"step",
        "stop_step", "run_dir", "export", "state", "interrupted" (the signal's name or None)}. Releases the run dir
        lock."""
        from toonlab.data.datasets import StreamSampler, make_loader

        t, d = self.cfg.train, self.cfg.data
        sampler = StreamSampler(len(self.sources.photos), len(self.sources.cartoons), t.seed, self.position,
                                self.dist.rank, self.dist.world)
        loader = make_loader(self.dataset, sampler, d.batch_size, d.workers, self.device.type == "cuda")
        self.logger = RunLogger(self.run_dir, self.stop_step, self.step, enabled=self.dist.is_main,
                                progress=t.progress, tensorboard=t.tensorboard, lines=self.metrics_lines)
        self.val = self._val_images() if self.dist.is_main else None
        if t.eval_every and self.dist.is_main:  # held-out scoring every eval_every epochs (train/eval_hook.py)
            from toonlab.train.eval_hook import EvalHook

            eval_hook = EvalHook(self.cfg)
        else:
            eval_hook = None
        profiler = None
        if t.profile and self.dist.is_main:  # where a step's time goes (train/profile.py)
            from toonlab.train.profile import StepProfiler

            profiler = StepProfiler(self.run_dir / "profile", t.profile, self.device)
        region = profiler.region if profiler is not None else (lambda name: contextlib.nullcontext())
        self.model.train()
        self._good = self._snapshot()
        last_log = time.perf_counter()
        steps_timed = 0  # for images/s only: the sums themselves are training state
        epoch_told = None  # set_epoch is (re)called at the start of every fit, so resumed models get it too
        deadline = None if t.max_minutes is None else time.monotonic() + 60 * t.max_minutes
        interrupted = None
        previous = self._catch_signals()  # before the loader forks workers, which inherit the handlers
        try:
            it = iter(loader)
            while self.step < self.stop_step:
                span = self._span_at(self.step)
                if span.phase.name != self.phase_name:
                    self._drain_logs()  # sync_free: the old phase's strikes restore the old phase's good state
                    self._enter_phase(span.phase)
                    self._good = self._snapshot()
                self.epoch = self.position // len(self.sources.photos)
                if self.epoch != epoch_told and hasattr(self.model, "set_epoch"):
                    self.model.set_epoch(self.epoch)
                epoch_told = self.epoch
                with region("data"):
                    micro = [self._to_device(next(it)) for _ in range(t.grad_accum)]
                self.position += self.images_per_step
                with region("step"):
                    self._pending_logs.append((self.step, self._train_step(span, micro)))
                self._settle_strikes(self.step)  # sync_free: no strikes yet, _drain_logs counts them
                self.step += 1
                steps_timed += 1
                self.logger.progress(self.step, span.phase.name)
                # every rank stops at the same step: one host-side agreement (no GPU sync under NCCL)
                in_time, unsignalled = D.all_hold(deadline is None or time.monotonic() < deadline,
                                                  self._signal is None)
                out_of_time, signalled = not in_time, not unsignalled
                final = self.step == self.total_steps
                if self.step % t.log_every == 0 or final:
                    self.logger.progress(self.step, span.phase.name, self._drain_logs())
                    now = time.perf_counter()
                    rec = {"step": self.step, "epoch": self.epoch, "phase": span.phase.name,
                           **{k: self.log_sums[k] / self.log_counts[k] for k in self.log_sums},
                           **{f"lr/{k}": o.param_groups[0]["lr"] for k, o in self.optimizers.items()},
                           "images_per_s": steps_timed * self.images_per_step / max(now - last_log, 1e-9),
                           "skipped_images": self.skipped_images, "restores": self.restores}
                    self.logger.log(rec)
                    self.log_sums, self.log_counts, steps_timed, last_log = {}, {}, 0, now
                if self.step % t.sample_every == 0 or final:
                    self._sample()
                if eval_hook is not None:
                    eval_hook.maybe_run(self)
                scheduled = self._scheduled(self.step)
                if scheduled or signalled or out_of_time or self.step == self.stop_step:
                    self._checkpoint(scheduled)
                    self._good = self._snapshot()
                if profiler is not None:
                    profiler.step()
                if signalled:
                    interrupted = signal.Signals(self._signal or signal.SIGTERM).name
                    break
                if out_of_time:
                    break
        finally:
            if profiler is not None:
                profiler.close()
            self._restore_signals(previous)
            self.logger.close()
            self.lock.release()
        latest = sorted(self.ckpt_dir.glob(STATE_GLOB))
        return {"step": self.step, "stop_step": self.stop_step, "run_dir": str(self.run_dir),
                "export": str(self.ckpt_dir / "latest.safetensors"), "state": str(latest[-1]) if latest else None,
                "interrupted": interrupted}

    def close(self) -> None:
        """Release the run dir lock (``fit`` does it; for a Trainer that is built but never fitted)."""
        self.lock.release()

    # -- signals ------------------------------------------------------------------------------------------
    def _catch_signals(self) -> dict | None:
        """SIGINT/SIGTERM: the first asks for a checkpoint after the current step, the second aborts at once.
        Only the main thread can install handlers (a Trainer fitted in another thread keeps the defaults)."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None
        owner = os.getpid()

        def handler(signum, frame):
            if os.getpid() != owner:  # a DataLoader worker (forked with this handler): the trainer decides
                return
            if self._signal is not None:
                raise TrainingAborted(signum)
            self._signal = signum
            if self.dist.is_main:
                print(f"\n{signal.Signals(signum).name}: finishing step {self.step + 1}, then saving a "
                      f"checkpoint (send it again to abort without one)", file=sys.stderr, flush=True)

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(previous: dict | None) -> None:
        for s, h in (previous or {}).items():
            signal.signal(s, h)

    def _to_device(self, batch: dict) -> dict:
        self.skipped_images += sum(batch.pop("_skipped").tolist())  # a host tensor: no device sync
        nb = self.device.type == "cuda"  # the loader pins host memory on CUDA: the copies overlap the step
        fmt = torch.channels_last if self.cfg.train.channels_last else torch.preserve_format
        return {k: v.to(self.device, non_blocking=nb, memory_format=fmt if v.ndim == 4 else torch.preserve_format)
                for k, v in batch.items()}

    def _autocast(self):
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def _train_step(self, span: PhaseSpan, micro: list[dict]
                    ) -> list[tuple[str, torch.Tensor | None, dict[str, list[torch.Tensor]]]]:
        """Every Step of the phase on the same micro-batches; returns, per Step not already skipped here, (name,
        finite, losses): ``finite`` is None on the sync path (checked on the host, per micro-batch), and with
        ``sync_free`` a 0-d bool device tensor, all micro-batches' and ranks' losses finite (where it is false the
        update was a no-op on the device); losses ``"<Step>/<loss>"`` → one detached 0-d tensor per micro-batch, left
        on the device (read later by ``_drain_logs``)."""
        t = self.cfg.train
        done = []
        for st in span.phase.steps:
            key = f"{span.phase.name}.{st.name}"
            opt, scaler = self.optimizers[key], self.scalers.get(key)
            for g in opt.param_groups:
                g["lr"] = st.lr * lr_factor(self.step - span.start, span.length, t.lr_decay, t.lr_decay_start)
            self._toggle(st)
            opt.zero_grad(set_to_none=True)
            nets = [self.model.networks[n] for n in st.networks]
            finite = True  # sync path: read on the host after each micro-batch
            all_finite: torch.Tensor | None = None  # sync_free: AND over the micro-batches, on the device
            step_logs: dict[str, list[torch.Tensor]] = {}
            for i, batch in enumerate(micro):
                sync = contextlib.nullcontext() if i == len(micro) - 1 else D.no_sync(nets)
                with sync:
                    with self._autocast():
                        losses = self.model.training_step(st.name, batch)
                    loss = losses["loss"]
                    if self.sync_free:  # always backward; the optimiser step below is skipped on the device
                        ok = torch.isfinite(loss.detach()).all()
                        all_finite = ok if all_finite is None else all_finite & ok
                        loss = loss.float() / len(micro)
                        if scaler is not None:  # NaN gradients: the GradScaler's own inf check skips the step
                            loss = loss * torch.where(ok, 1.0, math.nan)
                    else:
                        finite = D.all_true(bool(torch.isfinite(loss.detach()).all()))
                        if not finite:
                            break
                        loss = loss.float() / len(micro)
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                for k, v in losses.items():
                    step_logs.setdefault(f"{st.name}/{k}", []).append(v.detach())
            if not finite:
                opt.zero_grad(set_to_none=True)
                self._strike(self.step, st.name)
                continue
            if self.sync_free:
                all_finite = D.all_true_on_device(all_finite)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            elif self.sync_free:
                _step_unless(opt, all_finite)
            else:
                opt.step()
            # sync_free calls the hook after a skipped step too: it must leave unchanged weights as they are (the
            # default, AdaLIN's ρ clamp to [0, 1], does)
            self.model.after_optimizer_step(st.name)
            done.append((st.name, all_finite, step_logs))
        if self.ema is not None:
            self._ema_update(t.ema)
        return done

    def _strike(self, step: int, step_name: str) -> None:
        """Step ``step_name`` of training step ``step`` (0-based) had a non-finite loss and was skipped."""
        self.strikes += 1
        self.logger.log({"step": step, "event": "non_finite_loss", "step_name": step_name})

    def _settle_strikes(self, step: int) -> None:
        """After the strikes of training step ``step``: at ``nan_strikes`` restore the last good state (or stop with
        an error after ``max_restores`` restores). With sync_free this runs when the flags are read, up to
        ``log_every`` steps later: the record then says at which step count it was applied (the steps in between,
        trained from the diverged weights, are undone with it)."""
        t = self.cfg.train
        if self.strikes < t.nan_strikes:
            return
        self.restores += 1
        if self.restores > t.max_restores:
            raise ToonlabError(f"training diverged: non-finite losses persisted after {t.max_restores} restores "
                               f"(step {step})")
        self._restore(self._good)
        self.strikes = 0
        rec = {"step": step, "event": "restored_last_good_state"}
        if self.sync_free:
            rec["applied_at_step"] = self.step
        self.logger.log(rec)

    def _drain_logs(self) -> dict[str, float]:
        """Read the pending losses and finite flags (one device → host transfer) into the log sums and the
        ``best_metric`` window, with the float arithmetic of a per-step read (metrics.jsonl is unchanged); a Step
        whose flag is false is a strike at its step and its losses are dropped, as the sync path never records
        them. Returns the newest step's values."""
        pending, self._pending_logs = self._pending_logs, []
        flat = [v.float() for _, entries in pending for _, ok, logs in entries
                for v in ([] if ok is None else [ok]) + [v for vs in logs.values() for v in vs]]
        values = iter(torch.stack(flat).tolist() if flat else [])
        last: dict[str, float] = {}
        for step, entries in pending:
            last = {}
            for name, ok, logs in entries:
                finite = ok is None or next(values) == 1.0
                read = {k: [next(values) for _ in vs] for k, vs in logs.items()}
                if not finite:
                    self._strike(step, name)
                    continue
                for k, vs in read.items():
                    last[k] = 0.0
                    for v in vs:  # the mean over micro-batches, summed in their order
                        last[k] += v / self.cfg.train.grad_accum
                    self.log_sums[k] = self.log_sums.get(k, 0.0) + last[k]
                    self.log_counts[k] = self.log_counts.get(k, 0) + 1
            self._settle_strikes(step)
            if self.cfg.train.best_metric in last:
                self.window.setdefault(self.cfg.train.best_metric, []).append(last[self.cfg.train.best_metric])
        return last

    @torch.no_grad()
    def _ema_update(self, decay: float) -> None:
        for e, p in self._ema_pairs:
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in self._ema_buffers:
            e.copy_(b)

    # -- samples / checkpoints (rank 0) -------------------------------------------------------------------
    def _val_images(self) -> torch.Tensor:
        from toonlab.data.datasets import _images, load_val_photos

        d = self.cfg.data
        if d.val_photos:
            if not Path(d.val_photos).is_dir():
                raise UsageError(f"data.val_photos: {d.val_photos} is not a folder")
            paths = _images(Path(d.val_photos))
        else:  # the model's input domain: photos, or cartoons for a cartoon → photo model
            paths = self.sources.cartoons if self.model.direction == "cartoon2photo" else self.sources.photos
        return load_val_photos(paths[: d.val_count], self.size, self.model.size_multiple)

    def _translator(self) -> nn.Module:
        return self.ema if self.ema is not None else self.model.translator()

    def export_source(self):
        """What ``save_export`` writes: the model, or its EMA translator's weights (call inside D.unwrapped)."""
        return _EMAExport(self.model, self.ema) if self.ema is not None else self.model

    @torch.no_grad()
    def _sample(self) -> None:
        if not self.dist.is_main or self.val is None or len(self.val) == 0:
            return
        from toonlab.io import write_image

        with D.unwrapped(self.model.networks):
            tr = self._translator()
            was_training = tr.training
            tr.eval()
            x = (self.val * 2 - 1).to(self.device)
            if self.model.styles:
                outs = [tr(x, torch.full((len(x),), s, dtype=torch.long, device=self.device))
                        for s in range(len(self.model.styles))]
            else:
                outs = [tr(x)]
            tr.train(was_training)
        cols = [self.val.to(self.device)] + [((o.float() + 1) / 2).clamp(0, 1) for o in outs]
        grid = torch.cat([torch.cat(list(c), dim=1) for c in cols], dim=2).cpu()  # rows = images, cols = in|out…
        write_image(self.run_dir / "samples" / f"step-{self.step:06d}.png", grid, overwrite=True)
        labels = ["cartoon" if self.model.direction == "cartoon2photo" else "photo"]
        labels += [f"output {s}" for s in self.model.styles] if self.model.styles else ["output"]
        self.logger.image("samples", labelled_columns(grid, labels), self.step)

    def _scheduled(self, step: int) -> bool:
        return step % self.cfg.train.ckpt_every == 0 or step == self.total_steps

    def _checkpoint(self, scheduled: bool) -> None:
        """Write export, best (scheduled and improved), latest, then the state — last, because --resume trusts
        the newest state and the files it stands for must exist before it. Collective under DDP."""
        t = self.cfg.train
        self._drain_logs()  # the window and the log sums are read below and saved in the state
        improved = False
        if scheduled:  # best and its window change on the schedule only, and before the state is taken
            values = self.window.get(t.best_metric, [])
            if values:
                value = float(np.mean(values))
                if math.isfinite(value) and (self.best is None or value < self.best):
                    self.best, improved = value, True
            self.window = {}
        state = self._state()  # collective under DDP: every rank calls it
        if not self.dist.is_main:
            return
        extra = {"step": self.step, "epoch": self.epoch, "phase": self.phase_name}
        export = self.ckpt_dir / f"export-{self.step:07d}.safetensors"
        with D.unwrapped(self.model.networks):
            save_export(self.export_source(), export, extra=extra)
        if improved:
            _copy_atomic(export, self.ckpt_dir / "best.safetensors")
        _copy_atomic(export, self.ckpt_dir / "latest.safetensors")
        save_state(self.ckpt_dir / f"state-{self.step:07d}.safetensors", state)
        self._prune()

    def _prune(self) -> None:
        """Keep the newest ``keep_last`` scheduled states/exports and the current one; stop checkpoints go once
        a later checkpoint exists (an uninterrupted run never had them)."""
        for pattern in (STATE_GLOB, EXPORT_GLOB):
            files = [(p, _step_of(p)) for p in sorted(self.ckpt_dir.glob(pattern))]
            files = [(p, s) for p, s in files if s is not None]
            keep = {p for p, s in [f for f in files if self._scheduled(f[1])][-self.cfg.train.keep_last:]}
            keep |= {p for p, s in files if s == self.step}
            for p, _ in files:
                if p not in keep:
                    p.unlink(missing_ok=True)


def _step_unless(opt: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """``opt.step()`` that is a no-op on the device where the 0-d bool ``finite`` is false: the fused Adam takes
    ``found_inf`` the way GradScaler hands it over (an attribute read by ``step``), leaves parameters, exp_avg and
    exp_avg_sq alone and takes its step count back. A masked update of the per-tensor Adam would read its host step
    counters all the same, so sync_free always builds the fused one (``_enter_phase``)."""
    opt.found_inf = (~finite).to(torch.float32)
    try:
        opt.step()
    finally:
        del opt.found_inf


def _step_of(path: Path) -> int | None:
    """7-digit step of ``state-0000012.safetensors`` / ``export-…``; None for other names."""
    tail = path.name.split("-", 1)[-1].split(".", 1)[0]
    return int(tail) if tail.isdigit() else None


def _to_device(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _copy_atomic(src: Path, dst: Path) -> None:
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def train(config: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *,
          resume: str | Path | None = None, init_from: str | Path | None = None) -> dict:
    """Library entry of ``toonlab train``: a new run from ``config`` (+ overrides), or ``resume`` a run dir
    (its ``config.yaml`` + overrides that keep the run exact, see RESUME_SAFE: e.g. ``train.max_steps=...``)."""
    from toonlab.config import load_yaml

    changes = None
    if resume is not None:
        if init_from is not None or config is not None:
            raise UsageError("--resume RUN_DIR takes its config from the run dir: give no CONFIG and no --init-from")
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise UsageError(f"--resume: {run_dir} is not a run dir (no config.yaml)")
        saved = load_yaml(run_dir / "config.yaml")
        cfg = resolve_run_config(saved, list(overrides))
        changes = resume_changes(resolve_run_config(saved), cfg)
        cfg.train.run_dir = str(run_dir)
    else:
        if config is None:
            raise UsageError("give a CONFIG file (or --resume RUN_DIR)")
        cfg = load_run_config(config, list(overrides))
    trainer = Trainer(cfg, resume=resume is not None, init_from=init_from, changes=changes)
    try:
        return trainer.fit()
    finally:
        trainer.close()
        D.teardown()


def resume_changes(old: RunConfig, new: RunConfig) -> dict[str, tuple]:
    """Dotted settings that ``new`` changes relative to the run's saved ``old`` config → (old, new); raises
    UsageError (one line) for any that would break an exact resume (outside RESUME_SAFE)."""
    a, b = _flat(run_config_dict(old)), _flat(run_config_dict(new))
    changed = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    for key, (was, now) in changed.items():
        if key not in RESUME_SAFE:
            raise UsageError(f"--resume: {key}={now!r} would change the run (it was {was!r}) and break an exact "
                             f"resume; start a new run from its weights instead (--init-from)")
    return changed


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key != "train.phase_steps":
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out
