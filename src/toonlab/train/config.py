"""Run configuration: the YAML read by ``toonlab train CONFIG [a.b=c ...]``.

A run config has three sections: ``model`` (``name`` + any field of that model's Config, strictly checked),
``data`` (:class:`DataConfig`) and ``train`` (:class:`TrainConfig`). ``base: other.yaml`` (relative to the file)
inherits another recipe: this file's keys deep-merge over it, recursively. Overrides (``train.max_steps=4``) are
merged last. Unknown keys anywhere are errors naming the dotted key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from toonlab.config import check_memory, from_dict, load_yaml, merge, parse_overrides, ranged, to_dict
from toonlab.errors import ConfigError


@dataclass
class DataConfig:
    """Where the images are and how batches are cut from them."""

    photos: str | None = None  # photo folder (any nesting), e.g. data/train_photo
    cartoons: str | None = None  # cartoon folder, or (multi-style model) a root with one sub-folder per style
    smooth: str | None = None  # prepared edge-smoothed cartoons (same relative names); null = computed on the fly
    guided: str | None = None  # prepared self-guided-filtered cartoons; null = on the fly
    gray: str | None = None  # prepared grayscale cartoons; null = on the fly
    saliency: str | None = None  # prepared saliency maps of the photos; null = on the fly (MBD)
    size: int | None = ranged(None, ge=8)  # crop size; null = the model's paper size (Model.default_size)
    # shorter side resized to this before cropping; null = to `size`; 0 = keep native
    resize: int | None = ranged(None, ge=0)
    crop: Literal["random", "center"] = "random"
    flip: bool = True  # random horizontal flip (same flip for a cartoon and its side inputs)
    batch_size: int = ranged(8, ge=1)  # per process (DDP: the global batch is batch_size × world size)
    workers: int = ranged(2, ge=0)  # DataLoader worker processes (0 = load in the main process)
    val_photos: str | None = None  # photos translated into samples/; null = the first training photos
    val_count: int = ranged(4, ge=0)  # 0 = no sample grids
    # on-the-fly guided cartoons: self-guided filter r and eps on [-1, 1] (PAPERS §2, eq 1)
    guided_radius: int = ranged(5, ge=1)
    guided_eps: float = ranged(0.2, gt=0)


@dataclass
class TrainConfig:
    """How to optimise; every interval counts training steps (one step = one batch through every Step of a phase)."""

    run_dir: str = "runs/run"
    seed: int = ranged(0, ge=0, lt=2**31)  # every RNG (numpy, torch, python) takes it, plus 1000 × rank
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["none", "bf16", "fp16"] = "none"  # CUDA only; ignored (with a warning) on CPU
    grad_accum: int = ranged(1, ge=1)  # micro-batches accumulated per optimiser step
    # decay of an EMA copy of the translator (e.g. 0.999); exported and sampled when set
    ema: float | None = ranged(None, ge=0, lt=1)
    max_steps: int | None = ranged(None, ge=0)  # stop after this many steps in total (schedules unchanged: resumable)
    max_minutes: float | None = ranged(None, gt=0)  # wall-clock budget of this invocation (then checkpoint, stop)
    phase_steps: dict[str, int] = field(default_factory=dict)  # steps of a phase instead of its epochs (tiny runs)
    lr_decay: Literal["none", "linear"] = "none"  # linear decay to 0 over the tail of each phase (CycleGAN-style)
    lr_decay_start: float = ranged(0.5, ge=0, le=1)  # fraction of each phase after which the linear decay starts
    log_every: int = ranged(10, ge=1)  # metrics.jsonl line (and a plain stdout line when it is not a TTY)
    sample_every: int = ranged(500, ge=1)
    ckpt_every: int = ranged(1000, ge=1)
    keep_last: int = ranged(3, ge=1)  # training states / exports kept (plus best.safetensors)
    best_metric: str = "G/loss"  # logged value whose interval mean picks best.safetensors (lower is better)
    nan_strikes: int = ranged(3, ge=1)  # non-finite losses (each skips its step) before the last good state is restored
    max_restores: int = ranged(3, ge=0)  # restores before training stops with an error
    progress: bool = True  # rich progress bar (rank 0)
    tensorboard: bool = True  # scalars + sample grids when tensorboard is installed
    deterministic: bool = False  # torch.use_deterministic_algorithms (exact resume on GPU needs it)
    # speed (docs/performance.md): profile N steps after one warm-up step into RUN/profile/ (0 = off); compile each
    # network with torch.compile; channels_last memory format for networks and batches (CPU: not bit-equal to the
    # default layout, so a run keeps the setting it started with)
    profile: int = ranged(0, ge=0)
    # skip a Step with a non-finite loss without reading the loss on the host: the finite flag stays on the device
    # and makes the fused Adam step a no-op; strikes are read with the losses every log_every steps (so a restore or
    # the divergence error comes up to log_every steps late). auto = on CUDA only (on CPU a read costs nothing and the
    # default per-tensor Adam is bit-exact with earlier runs; true there switches to the fused Adam)
    sync_free: Literal["auto", True, False] = "auto"
    # compile: true = torch.compile's default mode; "reduce-overhead" replays each network's kernels as CUDA graphs
    # (CUDA, static shapes: a paper recipe's fixed crop and batch); "max-autotune" also searches kernel configs
    compile: Literal[False, True, "reduce-overhead", "max-autotune"] = False
    channels_last: bool = False
    sync_bn: bool = True  # DDP: BatchNorm → SyncBatchNorm in networks that have BN
    ddp_find_unused: bool = False  # DDP find_unused_parameters, for models whose Steps leave parameters unused
    # eval hook (toonlab.train.eval_hook): score the generator on a held-out set every eval_every epochs (0 = off)
    eval_every: int = ranged(0, ge=0)
    eval_inputs: str | None = None  # held-out inputs in the model's input domain (photos; cartoons for toon2real)
    eval_reference: str | None = None  # FID/KID reference set (the target domain)
    eval_truth: str | None = None  # paired truths of eval_inputs (same names) for psnr / ssim / edge_f1
    eval_metrics: list[Literal["fid", "kid", "weighted_fid", "psnr", "ssim", "edge_f1"]] = field(
        default_factory=lambda: ["fid", "kid", "psnr", "ssim"])
    eval_input_weight: float | None = ranged(None, ge=0, le=1)  # weighted FID's share of FID(out, inputs) (0.2)
    eval_fid_weights: str | None = None  # Inception file; null = $TORCH_HOME/hub/checkpoints
    eval_batch: int = ranged(8, ge=1)  # held-out images translated per forward pass


@dataclass
class RunConfig:
    """``model`` is a plain mapping (``name`` + the model's Config fields, resolved to full defaults)."""

    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def model_name(self) -> str:
        return self.model["name"]

    def model_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}


def _load_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base:' chain ({' -> '.join(p.name for p in (*seen, path))})")
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a path string, got {base!r}")
    return merge(_load_with_bases(path.parent / base, (*seen, path)), data)


def resolve_run_config(data: Mapping, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Build a RunConfig from an already-merged mapping + overrides; the model section is checked against the
    model's Config and completed with its defaults."""
    from toonlab.models import get_model_class

    data = merge(dict(data), parse_overrides(list(overrides)))
    data.pop("base", None)
    model_section = data.get("model")
    if not isinstance(model_section, Mapping) or not isinstance(model_section.get("name"), str):
        raise ConfigError("config: 'model.name' (a registered model name) is required")
    cls = get_model_class(model_section["name"])
    fields = {k: v for k, v in model_section.items() if k != "name"}
    model_cfg = from_dict(cls.Config, fields, "model")
    rest = {k: v for k, v in data.items() if k != "model"}
    cfg = from_dict(RunConfig, rest)
    cfg.model = {"name": model_section["name"], **to_dict(model_cfg)}
    _check(cfg, cls.default_size)
    return cfg


def load_run_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read ``path`` (following ``base:`` chains) and apply dotted ``overrides``; raises ConfigError on bad keys."""
    data = _load_with_bases(Path(path)) if path is not None else {}
    return resolve_run_config(data, overrides)


def run_config_dict(cfg: RunConfig) -> dict:
    """Plain YAML-safe dict of a resolved RunConfig (what is written to RUN_DIR/config.yaml)."""
    return to_dict(cfg)


def _check(cfg: RunConfig, default_size: int) -> None:
    """Checks across fields (single-field ranges are ``ranged`` metadata, checked while parsing)."""
    d, t = cfg.data, cfg.train
    size = d.size or default_size
    if d.resize not in (None, 0) and d.resize < size:
        raise ConfigError(f"data.resize: must be 0, null or >= the crop size {size}, got {d.resize}")
    # the images of one step alone (photos and cartoons, float32 RGB): data.size=100000 or batch_size=1e12 grew
    # until the kernel stepped in (and a step that never ends ignores SIGTERM)
    check_memory(d.batch_size * t.grad_accum * 2 * 3 * max(size, d.resize or 0) ** 2 * 4,
                 f"data.batch_size {d.batch_size} × train.grad_accum {t.grad_accum} images of data.size {size}²")
    for name, n in t.phase_steps.items():
        if n < 0:
            raise ConfigError(f"train.phase_steps.{name}: must be >= 0, got {n}")
    if t.eval_every and not t.eval_inputs:
        raise ConfigError("train.eval_every: needs train.eval_inputs (a held-out folder in the model's input domain)")
