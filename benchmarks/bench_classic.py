"""Classic cartoonizer throughput on a 12-megapixel photo (scikit-image's astronaut upscaled to 4000×3000).

Prints JSON: megapixels/s of `cartoonize_classic` (median of --repeat runs after one warm-up), seconds, CPU
seconds, size, threads, and the end-to-end figure including JPEG decode + JPEG encode when --io is given.
    .venv/bin/python benchmarks/bench_classic.py [--width 4000 --height 3000 --repeat 3 --threads 2 --io]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from toonlab.infer.classic import ClassicConfig, cartoonize_classic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--io", action="store_true", help="also time read (JPEG) + cartoonize + write (PNG)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    photo = Image.fromarray(data.astronaut()).resize((args.width, args.height), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)[None].float().div_(255).contiguous()
    mp = args.width * args.height / 1e6
    cartoonize_classic(x)  # warm-up (allocator, kernels)
    times, cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        cartoonize_classic(x)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    sec = statistics.median(times)
    result = {
        "benchmark": "classic_cartoonizer", "width": args.width, "height": args.height, "megapixels": round(mp, 2),
        "threads": torch.get_num_threads(), "seconds": round(sec, 3), "seconds_all": [round(t, 3) for t in times],
        "megapixels_per_s": round(mp / sec, 2), "goal_megapixels_per_s": 6.0,
        # CPU seconds of this process (all threads): on a shared, loaded machine wall time mostly measures waiting
        "cpu_seconds": round(statistics.median(cpu), 3),
        "config": ClassicConfig().__dict__,
    }
    if args.io:
        from toonlab.io import read_image, write_image

        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "in.jpg"
            photo.save(src, quality=92)
            t0 = time.perf_counter()
            img = read_image(src)
            out = cartoonize_classic(img.rgb[None])[0]
            write_image(Path(d) / "out.jpg", out)
            result["end_to_end_jpeg_seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
