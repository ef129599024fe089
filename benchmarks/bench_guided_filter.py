"""Guided filter speed: toonlab.ops.guided_filter vs cv2.ximgproc.guidedFilter, side by side.

A real photo (scikit-image astronaut) resized to W×H (default 2048×1536, 3.1 MP) in [-1,1], r = 5, eps = 0.2 (the
CTSS setting), the same guide for both: the colour image itself, and its gray version. Both run with the same thread
count (default 2) and the same border (``"reflect"``, OpenCV's). Runs alternate between the two so both see the
same background load. Prints one JSON object; ``ratio_opencv_over_toonlab`` = OpenCV median time / toonlab median
time (> 1: toonlab faster); the same for the fastest runs (``ratio_of_mins``); ``*_cpu_s`` = median CPU time of
all the process's threads per call (the work done, whatever the load on a shared machine).

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


def _interleaved_seconds(fns, runs: int) -> tuple[list[list[float]], list[list[float]]]:
    """Wall and CPU (all threads of this process) times of each fn over ``runs`` rounds, alternating the fns within
    a round so that both see the same background load (the machine may be shared)."""
    for fn in fns:
        fn()  # warm-up (allocator, page faults, OpenCV's thread pool)
    times = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for _ in range(runs):
        for fn, bucket, cpu_bucket in zip(fns, times, cpu):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - t0)
            cpu_bucket.append(time.process_time() - c0)
    return times, cpu


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
    for name, guide_np in (("color_guide", rgb), ("gray_guide", gray)):
        # The colour case passes the image itself as guide (p is guide), as CTSS's self-guided filter does.
        guide_arg = rgb_t if name == "color_guide" else gray_t

        def ours():
            with torch.inference_mode():
                return guided_filter(rgb_t, guide_arg, r, eps, border="reflect")

        def theirs():
            return cv2.ximgproc.guidedFilter(guide_np, rgb, r, eps)

        (ours_times, theirs_times), (ours_cpu, theirs_cpu) = _interleaved_seconds([ours, theirs], args.runs)
        ours_s, theirs_s = statistics.median(ours_times), statistics.median(theirs_times)
        results[name] = {
            "toonlab_s": round(ours_s, 4),
            "opencv_s": round(theirs_s, 4),
            "ratio_opencv_over_toonlab": round(theirs_s / ours_s, 3),
            "toonlab_min_s": round(min(ours_times), 4),
            "opencv_min_s": round(min(theirs_times), 4),
            "ratio_of_mins": round(min(theirs_times) / min(ours_times), 3),
            "toonlab_cpu_s": round(statistics.median(ours_cpu), 4),
            "opencv_cpu_s": round(statistics.median(theirs_cpu), 4),
            "max_abs_diff": float(np.abs(ours()[0].permute(1, 2, 0).numpy() - theirs()).max()),
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
