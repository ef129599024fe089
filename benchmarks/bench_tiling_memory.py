"""Peak memory of a 3840×2160 photo through the CTSS generator on CPU with toonlab's tiling (goal: ≤ 2 GiB).

Each measurement runs in a fresh subprocess (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is a process-lifetime
peak): build CTSS (random init), save an export, ``Translator.load`` it with the given memory budget, translate
one photo (scikit-image's astronaut resized to W×H), report peak RSS, seconds, tile size and the untiled
activation estimate (bytes per pixel × pixels). Prints JSON.
    .venv/bin/python benchmarks/bench_tiling_memory.py [--quick] [--width 3840 --height 2160]
        [--budget-mib 512] [--norm-stats global|tile] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, tempfile, time
import numpy as np, torch
from PIL import Image
from skimage import data
from toonlab.checkpoint import save_export
from toonlab.infer import tiling
from toonlab.infer.translator import Translator
from toonlab.models import build_model

w, h, budget, norm_stats, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
with tempfile.TemporaryDirectory() as tmp:
    path = save_export(build_model("ctss"), tmp + "/ctss.safetensors")
    t = Translator.load(path, device="cpu", memory_budget=budget, norm_stats=norm_stats)
    img = np.asarray(Image.fromarray(data.astronaut()).resize((w, h), Image.Resampling.BICUBIC))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = t(img)
    secs = time.perf_counter() - start
    assert out.shape == img.shape
    bpp = t.bytes_per_pixel()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"width": w, "height": h, "budget_mib": budget / 2**20, "norm_stats": norm_stats,
                      "tile": tiling.tile_for_budget(budget, bpp, t.size_multiple, t.overlap),
                      "seconds": round(secs, 1), "peak_rss_mib": round(peak / 1024, 1),
                      "rss_before_mib": round(base / 1024, 1),
                      "untiled_activation_estimate_mib": round(bpp * w * h / 2**20, 1)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1280×720 with a 256 MiB budget (still tiled)")
    ap.add_argument("--width", type=int, default=3840)
    ap.add_argument("--height", type=int, default=2160)
    ap.add_argument("--budget-mib", type=float, default=512)
    ap.add_argument("--norm-stats", default="global", choices=["global", "tile"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        args.width, args.height, args.budget_mib = 1280, 720, 256
    cmd = [sys.executable, "-c", _CHILD, str(args.width), str(args.height), str(int(args.budget_mib * 2**20)),
           args.norm_stats, str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"child failed:\n{res.stderr}")
    row = json.loads(res.stdout.strip().splitlines()[-1])
    row["goal_peak_rss_mib"] = 2048
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
