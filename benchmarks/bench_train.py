"""Training throughput (images/s) per model at its paper size and batch, through the real trainer loop.

    python benchmarks/bench_train.py [--models ctss,cartoongan] [--steps 3] [--warmup 1] [--batch N]
                                     [--size N] [--device cpu|cuda] [OVERRIDE ...]   (e.g. train.amp=bf16)
    python benchmarks/bench_train.py --baseline-src OLD/src --rounds 2 [same options]   (before/after)
    python benchmarks/bench_train.py --baseline-src src --baseline-override train.sync_free=false \
        --this-override train.sync_free=true [same options]   (one setting off/on, same tree)

For each model: a temporary dataset of random-texture PNGs at the model's size, the paper recipe
(configs/<model>.yaml) with ``warmup + steps`` steps of each phase; images/s is the mean over the non-warm-up
steps of a phase (from metrics.jsonl, one line per step unless ``train.log_every=K`` is among the overrides: then
the mean of the lines wholly after the warm-up; data loading with workers=0 included); ``cpu_s``: the process CPU time
of the whole fit (steadier than wall time on a loaded machine); with ``train.profile=N`` among the overrides the
profiler's summary (train/profile.py) as ``profile``. Prints one JSON object.
``--baseline-src``: before/after on a shared machine — this benchmark runs alternately (A, B, A, B, …, ``--rounds``
each) in fresh processes on another source tree (e.g. ``git archive OLD src | tar -x -C /tmp/old``) and on this
one; the JSON has every run, each side's best images/s per phase and the ratio this/baseline.
``--baseline-override`` / ``--this-override`` (repeatable) add an override to one side only, e.g. a setting the old
tree does not know, or the same tree with a setting off and on.
Perceptual backbone: what ``model.perceptual=auto`` resolves to here (VGG19 with its file, else EfficientNet-Lite0),
or ``random`` when neither is available — reported as ``perceptual``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["ctss", "cartoongan", "animegan", "multistyle", "salcbam", "toon2real", "cyclegan"]


def write_images(folder: Path, n: int, size: int, seed: int) -> None:
    """``n`` smooth colour ramps with noise, ``size``² RGB PNGs named 000.png… (also bench_datapath's sources)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = rng.uniform(0, 255, 3) * (0.5 + 0.5 * np.sin(6 * xx + 4 * yy + i))[..., None]
        img = np.clip(base + rng.normal(0, 15, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:03d}.png")


def perceptual_choice() -> str:
    from toonlab.errors import MissingWeightsError
    from toonlab.nn.perceptual import resolve_perceptual

    try:
        return resolve_perceptual("auto")
    except MissingWeightsError:
        return "random"


def bench_model(name: str, work: Path, steps: int, warmup: int, batch: int | None, size: int | None,
                device: str, overrides: Sequence[str] = ()) -> dict:
    """Images/s and s/step of each phase of ``name``'s paper recipe; ``overrides`` (dotted, e.g.
    ``train.amp=bf16``) are applied last, so they win over the benchmark's own settings."""
    from toonlab.models import get_model_class
    from toonlab.train.config import load_run_config
    from toonlab.train.trainer import Trainer

    base = load_run_config(ROOT / "configs" / f"{name}.yaml")
    size = size or base.data.size
    batch = batch or base.data.batch_size
    data = work / name
    n_img = max(batch * 2, 4)
    write_images(data / "photos", n_img, size, 0)
    styles = get_model_class(name).Config().__dict__.get("styles") or ()
    for sub in (styles or [""]):
        write_images(data / "cartoons" / sub, n_img, size, 1)
    phases = [p.name for p in get_model_class(name)(get_model_class(name).Config()).phases()]
    n = warmup + steps
    over = [f"data.photos={data / 'photos'}", f"data.cartoons={data / 'cartoons'}", f"data.size={size}",
            f"data.batch_size={batch}", "data.workers=0", f"train.run_dir={work / (name + '-run')}",
            f"train.device={device}", "train.progress=false", "train.tensorboard=false", "train.log_every=1",
            f"train.sample_every={10 ** 9}", f"train.ckpt_every={10 ** 9}",
            "train.phase_steps={" + ", ".join(f"{p}: {n}" for p in phases) + "}"]
    fields = get_model_class(name).Config.__dataclass_fields__
    vgg = None
    if "perceptual" in fields:
        vgg = perceptual_choice()
        over.append(f"model.perceptual={vgg}")
    trainer = Trainer(load_run_config(ROOT / "configs" / f"{name}.yaml", [*over, *overrides]))
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    recs = [json.loads(x) for x in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    out = {"size": size, "batch": batch, "perceptual": vgg, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
    summary = trainer.run_dir / "profile" / "summary.json"
    if summary.is_file():  # train.profile=N among the overrides
        out["profile"] = json.loads(summary.read_text())
    lines = [r for r in recs if "phase" in r]
    starts = {sp.phase.name: sp.start for sp in trainer.spans}  # phase_steps may be overridden
    for p in phases:
        # a line's images/s covers the steps since the line before (train.log_every may be raised, e.g. to let
        # sync_free run without a read every step): keep the lines whose steps all come after the warm-up
        ips = [r["images_per_s"] for prev, r in zip([0] + [x["step"] for x in lines], lines)
               if r["phase"] == p and prev - starts[p] >= warmup]
        out[f"{p}_images_per_s"] = round(float(np.mean(ips)), 3) if ips else None
        out[f"{p}_s_per_step"] = round(batch / float(np.mean(ips)), 3) if ips else None
    return out


def compare(args: argparse.Namespace) -> dict:
    """Alternate fresh runs of this benchmark on ``args.baseline_src`` (A) and this checkout's src (B)."""
    import os
    import subprocess

    argv = ["--models", args.models, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--device", args.device]
    for flag in ("batch", "size", "threads"):
        if getattr(args, flag):
            argv += [f"--{flag}", str(getattr(args, flag))]
    argv += args.overrides
    sides = {"baseline": str(Path(args.baseline_src).resolve()), "this": str(ROOT / "src")}
    side_overrides = {"baseline": args.baseline_override, "this": args.this_override}
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    for r in range(args.rounds):
        for side, src in sides.items():
            env = {**os.environ, "PYTHONPATH": src}
            out = subprocess.run([sys.executable, __file__, *argv, *side_overrides[side]], env=env,
                                 capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{side} run {r} failed:\n{out.stderr[-2000:]}")
            text = out.stdout[out.stdout.index('{\n "benchmark"'):]  # after the trainer's plain log lines
            runs[side].append(json.loads(text)["models"])
            print(f"round {r} {side}: {runs[side][-1]}", file=sys.stderr, flush=True)
    best: dict[str, dict] = {}
    for side, rs in runs.items():
        for name in rs[0]:
            keys = [k for k in rs[0][name] if k.endswith("_images_per_s")]
            best.setdefault(side, {})[name] = {k: max(x[name][k] for x in rs if x[name].get(k)) for k in keys}
            best[side][name]["cpu_s"] = min(x[name]["cpu_s"] for x in rs)
    ratio = {name: {k: round(v / best["baseline"][name][k], 3) for k, v in m.items() if k.endswith("_images_per_s")}
             for name, m in best["this"].items()}
    for name, m in best["this"].items():
        ratio[name]["cpu_s"] = round(m["cpu_s"] / best["baseline"][name]["cpu_s"], 3)
    return {"benchmark": "train_throughput_ab", "rounds": args.rounds, "baseline_src": sides["baseline"],
            "overrides": args.overrides, "side_overrides": side_overrides,
            "best": best, "ratio_this_over_baseline": ratio, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=None, help="default: the paper recipe's batch")
    ap.add_argument("--size", type=int, default=None, help="default: the paper size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--baseline-src", default=None, help="another source tree: alternate runs on it and on this one")
    ap.add_argument("--rounds", type=int, default=2, help="with --baseline-src: runs per side")
    ap.add_argument("--baseline-override", action="append", default=[], metavar="KEY=VALUE",
                    help="with --baseline-src: an override for the baseline side only (repeatable)")
    ap.add_argument("--this-override", action="append", default=[], metavar="KEY=VALUE",
                    help="with --baseline-src: an override for this side only (repeatable)")
    ap.add_argument("overrides", nargs="*", help="dotted overrides for every run (e.g. train.amp=bf16)")
    args = ap.parse_args()
    if args.baseline_src:
        print(json.dumps(compare(args), indent=1))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"benchmark": "train_throughput", "device": args.device, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "steps": args.steps, "warmup": args.warmup, "overrides": args.overrides, "models": {}}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            try:
                result["models"][name] = bench_model(name, Path(tmp), args.steps, args.warmup, args.batch,
                                                     args.size, args.device, args.overrides)
            except Exception as e:  # one model failing must not lose the others' figures
                result["models"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
            print(f"{name}: {result['models'][name]}", file=sys.stderr, flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
