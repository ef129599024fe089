"""Guided filter speed: toonlab.ops.guided_filter vs cv2.ximgproc.guidedFilter, side by side.

A real photo (scikit-image astronaut) resized to W×H (default 2048×1536, 3.1 MP) in [-1,1], r = 5, eps = 0.2 (the
CTSS setting), the same guide for both: the colour image itself, and its gray version. Both run with the same thread
count (default 2) and the same border (``"reflect"``, OpenCV's). Prints one JSON object; ``ratio`` = OpenCV median
time / toonlab median time (> 1: toonlab faster).

    .venv/bin/python benchmarks/bench_guided_filter.py [--runs 7] [--threads 2] [--size 2048x1536]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import cv2
import numpy as np
import torch
from skimage import data

from toonlab.ops import guided_filter


def _median_seconds(fn, runs: int) -> float:
    fn()  # warm-up (allocator, page faults, OpenCV's thread pool)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="2048x1536", help="WxH")
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--eps", type=float, default=0.2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    photo = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    rgb = photo.astype(np.float32) / 127.5 - 1.0  # HWC in [-1,1]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgb_t = torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()
    gray_t = torch.from_numpy(gray)[None, None].contiguous()
    r, eps = args.radius, args.eps

    results = {}
    for name, guide_np, guide_t in (("color_guide", rgb, rgb_t), ("gray_guide", gray, gray_t)):
        with torch.inference_mode():
            ours = _median_seconds(lambda: guided_filter(rgb_t, guide_t, r, eps, border="reflect"), args.runs)
            ours_out = guided_filter(rgb_t, guide_t, r, eps, border="reflect")[0].permute(1, 2, 0).numpy()
        theirs = _median_seconds(lambda: cv2.ximgproc.guidedFilter(guide_np, rgb, r, eps), args.runs)
        theirs_out = cv2.ximgproc.guidedFilter(guide_np, rgb, r, eps)
        results[name] = {
            "toonlab_s": round(ours, 4),
            "opencv_s": round(theirs, 4),
            "ratio_opencv_over_toonlab": round(theirs / ours, 3),
            "max_abs_diff": float(np.abs(ours_out - theirs_out).max()),
        }
    print(
        json.dumps(
            {
                "bench": "guided_filter",
                "image": f"{width}x{height} RGB (skimage astronaut, [-1,1])",
                "r": r,
                "eps": eps,
                "threads": args.threads,
                "runs": args.runs,
                "torch": torch.__version__,
                "opencv": cv2.__version__,
                "cpu": platform.processor() or platform.machine(),
                **results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
