"""FID speed: Inception feature extraction throughput, and a cached reference read vs recomputing it.

Uses the real FID weights when ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` (or
``--weights``) exists; otherwise a random-weight file with the same layout (same FLOPs, so the same speed — the
JSON says which). A folder of N SynthToon-like 256² PNG photos is the reference set. Prints one JSON object:

- ``images_per_s``: feature extraction (decode + 299² resize + InceptionV3) over the folder, batch ``--batch``;
- ``recompute_s`` / ``cached_read_s``: ``FIDEvaluator.folder_stats`` without / with a valid cache entry (the
  cached read still lists the folder and fingerprints every file, so it is an honest "reference read" time);
- ``cache_speedup`` = recompute_s / cached_read_s (goal ≥ 20);
- ``fid_small_s`` / ``fid_full_s``: the Fréchet distance of two N-image sets by the low-rank form and by the
  2048×2048 statistics form.

    .venv/bin/python benchmarks/bench_fid.py [--n 64] [--batch 16] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from toonlab.eval.fid import FIDEvaluator, frechet_distance, frechet_distance_features
from toonlab.nn.inception import FID_WEIGHTS_FILE, checkpoints_dir, random_inception_state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="images in the reference folder")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weights", default=None, help="FID weight file (default: $TORCH_HOME/hub/checkpoints)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    from toonlab.data.synth import make_synthtoon

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = Path(args.weights) if args.weights else checkpoints_dir() / FID_WEIGHTS_FILE
        real = weights.is_file()
        if not real:
            weights = tmp / FID_WEIGHTS_FILE
            torch.save(random_inception_state(), weights)
        make_synthtoon(tmp / "synth", args.n, 256, 0)
        folder = tmp / "synth" / "train" / "photos"
        ev = FIDEvaluator(weights, device=args.device, batch_size=args.batch, cache_dir=tmp / "cache",
                          allow_unverified=not real)  # random weights time the same compute
        ev.network()  # load once, outside the timings
        with torch.inference_mode():  # warm-up: allocator, oneDNN kernels
            ev.network()[0](torch.rand(2, 3, 299, 299, device=args.device))

        t0 = time.perf_counter()
        computed = ev.folder_stats(folder)
        recompute = time.perf_counter() - t0
        reads = []
        for _ in range(5):
            t0 = time.perf_counter()
            cached = ev.folder_stats(folder)
            reads.append(time.perf_counter() - t0)
        assert cached.cached and np.array_equal(cached.mu, computed.mu)
        cached_read = float(np.median(reads))

        other = ev.folder_stats(tmp / "synth" / "train" / "cartoons")
        t0 = time.perf_counter()
        frechet_distance_features(computed.features, other.features)
        fid_small = time.perf_counter() - t0
        t0 = time.perf_counter()
        frechet_distance(computed.mu, computed.sigma, other.mu, other.sigma)
        fid_full = time.perf_counter() - t0

    print(json.dumps({
        "benchmark": "fid", "device": args.device, "threads": args.threads, "n_images": args.n,
        "image_size": 256, "batch": args.batch, "real_weights": real, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "images_per_s": round(args.n / recompute, 2), "recompute_s": round(recompute, 3),
        "cached_read_s": round(cached_read, 4), "cache_speedup": round(recompute / cached_read, 1),
        "fid_small_s": round(fid_small, 4), "fid_full_s": round(fid_full, 3),
    }))


if __name__ == "__main__":
    main()
