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
import torch
from bench_train import write_images

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
        folders = {name: tmp / name for name in ("photos", "cartoons", "smooth", "saliency")}
        for seed, folder in enumerate(folders.values()):
            write_images(folder, args.n, args.native, seed)
        photos, cartoons, smooth, saliency = (sorted(f.glob("*.png")) for f in folders.values())
        prepared = {"smooth": smooth, "saliency": saliency}
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
