"""What the ``train.eval_every`` hook costs: one scoring of CTSS at 256², and its share of a recipe's wall time.

    python benchmarks/bench_eval_hook.py [--n-test 24] [--size 256] [--threads 1] [--baseline-src OLD/src]

- ``scoring``: a CTSS Trainer (paper recipe, random init, not fitted) scores ``--n-test`` held-out SynthToon photos
  at ``--size`` against their true cartoons (psnr, ssim) twice through ``EvalHook.run``; seconds of each call (the
  first pays the one-time costs: reading the set, or the old hook's Translator set-up).
- ``recipe``: ``configs/experiments/toon2real-curves-synth.yaml``'s training (16 SynthToon pairs at 32², batch 2,
  ngf = ndf = 16, 2 residual blocks, 8 held-out images, psnr + ssim) for 4 epochs (32 steps) at its interval,
  eval_every = 2 epochs: the seconds of each scoring and their share of the fit's wall time.

Every ``EvalHook.run`` call is timed from outside, so the same script measures an older hook that records no
``eval/seconds``: ``--baseline-src`` runs it on another source tree too (fresh processes, baseline first) and puts
both sides in the JSON. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def timed_hook() -> list[float]:
    """Wrap EvalHook.run (once per process) so that every call's wall time is appended to the returned list;
    each call of timed_hook starts a new list."""
    from toonlab.train.eval_hook import EvalHook

    seconds: list[float] = []
    real = getattr(EvalHook.run, "__wrapped__", EvalHook.run)

    def run(self, trainer):
        t0 = time.perf_counter()
        try:
            return real(self, trainer)
        finally:
            seconds.append(round(time.perf_counter() - t0, 3))

    run.__wrapped__ = real
    EvalHook.run = run
    return seconds


def scoring(work: Path, n_test: int, size: int) -> dict:
    from toonlab.data.synth import make_synthtoon
    from toonlab.train.config import load_run_config
    from toonlab.train.eval_hook import EvalHook
    from toonlab.train.trainer import Trainer

    st = make_synthtoon(work / "st", n=8, size=size, seed=0, n_test=n_test)
    cfg = load_run_config(ROOT / "configs" / "ctss.yaml", [
        f"data.photos={st / 'train/photos'}", f"data.cartoons={st / 'train/cartoons'}", f"data.size={size}",
        "data.workers=0", f"train.run_dir={work / 'ctss'}", "train.device=cpu", "model.perceptual=random",
        "train.eval_every=1", f"train.eval_inputs={st / 'test/photos'}", f"train.eval_truth={st / 'test/cartoons'}",
        "train.eval_metrics=[psnr, ssim]", "train.progress=false", "train.tensorboard=false"])
    trainer = Trainer(cfg)
    try:
        hook, seconds = EvalHook(cfg), timed_hook()
        recs = [hook.run(trainer) for _ in range(2)]
    finally:
        trainer.close()
    return {"images": n_test, "size": size, "seconds": seconds, "psnr": recs[-1].get("eval/psnr")}


def recipe(work: Path) -> dict:
    from toonlab.data.synth import make_synthtoon
    from toonlab.train.trainer import train

    st = make_synthtoon(work / "st32", n=16, size=32, seed=0, n_test=8)
    seconds = timed_hook()
    t0 = time.perf_counter()
    train(ROOT / "configs" / "toon2real-tiny.yaml", [
        f"data.photos={st / 'train/photos'}", f"data.cartoons={st / 'train/cartoons'}",
        f"train.run_dir={work / 'recipe'}", "train.progress=false", "model.ngf=16", "model.ndf=16",
        "model.n_blocks=2", "model.pool_size=10", "train.phase_steps={adv: 32}", "train.log_every=8",
        "train.sample_every=1000", "train.ckpt_every=1000", "train.eval_every=2",
        f"train.eval_inputs={st / 'test/cartoons'}", f"train.eval_truth={st / 'test/photos'}",
        "train.eval_metrics=[psnr, ssim]"])
    wall = time.perf_counter() - t0
    return {"steps": 32, "eval_every_epochs": 2, "fit_seconds": round(wall, 2), "eval_seconds": seconds,
            "share": round(sum(seconds) / wall, 4)}


def measure(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        return {"scoring": scoring(Path(tmp), args.n_test, args.size), "recipe": recipe(Path(tmp))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-test", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baseline-src", default=None)
    args = ap.parse_args()
    result = {"benchmark": "eval_hook", "torch": torch.__version__, "threads": args.threads}
    if not args.baseline_src:
        result["this"] = measure(args)
    else:
        for side, src in (("baseline", str(Path(args.baseline_src).resolve())), ("this", str(ROOT / "src"))):
            cmd = [sys.executable, __file__, "--n-test", str(args.n_test), "--size", str(args.size),
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": src}, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{side} failed:\n{out.stderr[-2000:]}")
            result[side] = json.loads(out.stdout[out.stdout.index('{\n "benchmark"'):])["this"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
