"""Real images at 128²: train photo→cartoon systems on the licence-tracked real set, score unpaired against the
held-out cartoons, draw a photo / classic / model grid.

    python benchmarks/bench_real.py --data runs/real128 [--systems ctss,white_box] [--steps 300]
        [--init-fraction 0.5] [--batch 4] [--seed 0] [--work runs/bench-real]
        [--out benchmarks/results/real.json] [--grid benchmarks/results/real-grid.png] [OVERRIDE ...]

The set comes from ``toonlab prepare real OUT --size 128`` (Debian wallpaper photos and SuperTux backgrounds, see
docs/data.md; every file's licence in OUT/LICENSES.csv). There are no true cartoons of these photos, so the scores
are distributional: FID / KID of the held-out photos translated by each system to the held-out cartoons, beside
the same for the unchanged photos and the classic cartoonizer (lower = closer to the cartoon set). Each system
trains from its paper recipe with the data, size and batch overridden and the schedule compressed to ``--steps``
iterations as in ``bench_learning.py`` (the first ``--init-fraction`` content-only); raw generator output is
scored, no post-processing. A system whose run directory already holds a checkpoint is scored, not retrained.
Prints one JSON object and writes it to ``--out``; ``--grid`` (JPEG or PNG) shows six test photos.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench_learning import ROOT, generator_outputs, load_rgb, parse_system, run_overrides


def fid_kid(evaluator, images: torch.Tensor, target_stats) -> dict[str, float]:
    """FID and KID (mean over 50 subsets) of (N,3,H,W) [0,1] images to the target statistics."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = evaluator.image_stats(list(images))
    n = min(len(images), target_stats.count)
    return {"fid": evaluator.fid(stats, target_stats),
            "kid": evaluator.kid(stats, target_stats, subset_size=n, subsets=50)[0]}


def train_system(label: str, config: Path, args, data: Path) -> Path:
    """Train one system on the real set; returns its run directory."""
    from toonlab.train.trainer import train

    run = Path(args.work) / f"{label}-s{args.seed}"
    overrides = run_overrides(label, config, data, run, args.seed, args, max(args.steps // 10, 1), args.steps)
    if not (run / "checkpoints" / "latest.safetensors").exists():
        train(config, overrides + [f"train.max_steps={args.steps}"])
    return run


def draw_grid(rows: dict[str, torch.Tensor], path: Path, count: int = 6) -> None:
    """One row per name (photo, classic, each system), ``count`` test images spread over the (sorted) test set, so
    different source pictures show; a label strip on the left."""
    import cv2

    tiles = []
    for name, imgs in rows.items():
        picks = np.linspace(0, len(imgs) - 1, count).round().astype(int)
        strip = torch.cat([imgs[i] for i in picks], dim=2).permute(1, 2, 0).numpy()
        strip = (strip * 255).round().astype(np.uint8)[..., ::-1].copy()
        label = np.full((strip.shape[0], 110, 3), 255, np.uint8)
        cv2.putText(label, name, (4, strip.shape[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([label, strip], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(tiles, axis=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a `toonlab prepare real` folder")
    ap.add_argument("--systems", default="ctss,white_box")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--init-fraction", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/bench-real")
    ap.add_argument("--out", default="benchmarks/results/real.json")
    ap.add_argument("--grid", default="benchmarks/results/real-grid.png")
    ap.add_argument("overrides", nargs="*", help="dotted overrides applied to every run")
    args = ap.parse_args()

    from toonlab.eval.fid import FIDEvaluator
    from toonlab.infer.classic import cartoonize_classic

    data = Path(args.data)
    _, photos = load_rgb(data / "test/photos")
    _, cartoons = load_rgb(data / "test/cartoons")
    evaluator = FIDEvaluator(download=False, use_cache=False)
    _, weights = evaluator.network()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target = evaluator.image_stats(list(cartoons))
    classic = torch.cat([cartoonize_classic(p[None]) for p in photos])
    result = {"benchmark": "real_set", "data": str(data), "size": args.size, "batch": args.batch,
              "steps": args.steps, "init_fraction": args.init_fraction, "seed": args.seed,
              "test_photos": len(photos), "test_cartoons": len(cartoons), "fid_weights": weights,
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "references": {"photos": fid_kid(evaluator, photos, target),
                             "classic": fid_kid(evaluator, classic, target)},
              "systems": {}}
    rows = {"photo": photos, "classic": classic}
    for spec in args.systems.split(","):
        label, config = parse_system(spec)
        t0 = time.perf_counter()
        run = train_system(label, config, args, data)
        out = generator_outputs(run / "checkpoints" / "latest.safetensors", photos)
        result["systems"][label] = {"config": str(config.relative_to(ROOT)), "wall_s": round(time.perf_counter() - t0, 1),
                                    **fid_kid(evaluator, out, target)}
        rows[label] = out
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.grid:
        draw_grid(rows, Path(args.grid))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
