"""Per-sample CPU cost of the training data path: ``UnpairedDataset.__getitem__`` at a ``--size``² crop, photo and
cartoon alone, then with each side input a recipe asks for computed on the fly (after the crop) or read from a
prepared folder (issue 22: what a GPU run should precompute).

    OMP_NUM_THREADS=1 python benchmarks/bench_datapath.py [--native 256] [--size 256] [--n 8] [--rounds 3]

Source images are ``--native``² PNGs (a 512² source is resized per sample to the crop); the "prepared" folders
hold images of the same size, so those rows measure reading a prepared file. One process, one thread, the cases
interleaved per round; prints ``{"ms_per_sample": {case: best of the rounds}}`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from toonlab.data.datasets import Sources, UnpairedDataset

CASES = {  # case -> (side inputs asked for, prepared folders by side input)
    "photo+cartoon": ((), ()),
    "smooth on the fly": (("smooth",), ()),
    "smooth prepared": (("smooth",), ("smooth",)),
    "guided on the fly": (("guided",), ()),
    "gray on the fly": (("gray",), ()),
    "saliency on the fly": (("saliency",), ()),
    "saliency prepared": (("saliency",), ("saliency",)),
}


def write_images(folder: Path, n: int, size: int, seed: int) -> list[Path]:
    """``n`` smooth colour ramps with noise, ``size``² RGB PNGs (decode cost of a photo, not a flat image)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = rng.uniform(0, 255, 3) * (0.5 + 0.5 * np.sin(6 * xx + 4 * yy + i))[..., None]
        noisy = np.clip(base + rng.normal(0, 15, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:03d}.png")
    return sorted(folder.glob("*.png"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--native", type=int, default=256, help="side of the source images")
    ap.add_argument("--size", type=int, default=256, help="training crop")
    ap.add_argument("--n", type=int, default=8, help="samples per case and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="bench_datapath_") as tmp:
        tmp = Path(tmp)
        photos = write_images(tmp / "photos", args.n, args.native, 0)
        cartoons = write_images(tmp / "cartoons", args.n, args.native, 1)
        prepared = {"smooth": write_images(tmp / "smooth", args.n, args.native, 2),
                    "saliency": write_images(tmp / "saliency", args.n, args.native, 3)}
        ms: dict[str, list[float]] = {case: [] for case in CASES}
        for r in range(args.rounds):
            for case, (sides, from_files) in CASES.items():
                sources = Sources(photos, cartoons, prepared={k: prepared[k] for k in from_files})
                ds = UnpairedDataset(sources, ("photo", "cartoon") + sides, args.size, seed=0)
                start = time.perf_counter()
                for i in range(args.n):
                    ds[(i, i, r * args.n + i)]
                ms[case].append((time.perf_counter() - start) / args.n * 1e3)
    print(json.dumps({"native": args.native, "size": args.size, "n": args.n, "rounds": args.rounds,
                      "ms_per_sample": {case: round(min(v), 2) for case, v in ms.items()}}, indent=1))


if __name__ == "__main__":
    main()
