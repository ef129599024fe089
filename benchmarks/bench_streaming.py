"""Layer-streamed vs untiled vs two-pass tiled inference of the CTSS generator on CPU (issue 13, item 2).

Each run is a fresh subprocess (``ru_maxrss`` is a process-lifetime peak): build CTSS (random init, seed 0: the
same compute as trained weights), save an export, ``Translator.load`` it, translate scikit-image's astronaut
(toonlab/photos) resized to W×H as a float tensor, and report seconds, peak RSS, the RSS before the call and the
plan's reason line. Modes:

* ``untiled``: budget unbounded (one forward pass);
* ``streamed``: budget = the streamed executor's own estimate, so the plan streams (``toonlab.infer.streaming``);
* ``tiled``: the same budget with ``tile`` forced to the tile the plan would pick there (two passes, pooled
  "global" statistics: the path large images took before streaming).

Mean/max |mode − untiled| (in 1/255 units) is computed where an untiled run exists. Writes JSON to stdout.
    nice .venv/bin/python benchmarks/bench_streaming.py [--sizes 1024x1024 3840x2160] [--threads 1]
        [--untiled-max-pixels 4000000] [--modes untiled streamed tiled] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_CHILD = r"""
import json, math, resource, sys, time
from pathlib import Path
import numpy as np, torch
from PIL import Image
import toonlab.photos
from toonlab.checkpoint import save_export
from toonlab.infer import tiling
from toonlab.infer.translator import Translator
from toonlab.models import build_model

w, h, mode, threads, ckpt, out = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5],
                                  sys.argv[6])
torch.set_num_threads(threads)
t = Translator.load(ckpt, device="cpu", memory_budget=1 << 42)
img = Image.open(Path(toonlab.photos.__file__).parent / "astronaut.jpg").convert("RGB")
x = torch.from_numpy(np.asarray(img.resize((w, h), Image.Resampling.BICUBIC)).copy()).permute(2, 0, 1)[None] / 255.0
if mode != "untiled":
    t.memory_budget = math.ceil(t.streamer()[0].estimate((1, 3, h + (-h) % 4, w + (-w) % 4)))
if mode == "tiled":
    mem = t.memory_model()
    t.tile = tiling.tile_for_budget(t.memory_budget - mem.fixed, mem.per_pixel, t.size_multiple, t.overlap)
plan = t.plan(h, w)
assert plan.streamed == (mode == "streamed") and (plan.tile is not None) == (mode == "tiled"), plan
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
y = t.translate_tensor(x)
secs = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if out != "-":
    np.save(out, y[0].numpy())
print(json.dumps({"mode": mode, "size": f"{w}x{h}", "seconds": round(secs, 2), "peak_rss_mib": round(peak / 1024),
                  "rss_before_call_mib": round(base / 1024), "plan": plan.reason}))
"""


def run(w: int, h: int, mode: str, threads: int, ckpt: str, out: str) -> dict:
    res = subprocess.run([sys.executable, "-c", _CHILD, str(w), str(h), mode, str(threads), ckpt, out],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{mode} {w}x{h} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["1024x1024", "3840x2160"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--untiled-max-pixels", type=int, default=4_000_000,
                    help="skip the untiled run above this many pixels (CTSS untiled at 4K needs ~10 GB)")
    ap.add_argument("--modes", nargs="+", default=["untiled", "streamed", "tiled"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from toonlab.checkpoint import save_export
    from toonlab.models import build_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ckpt = str(save_export(build_model("ctss"), Path(tmp) / "ctss.safetensors"))
        for size in args.sizes:
            w, h = (int(v) for v in size.split("x"))
            modes = [m for m in args.modes if m != "untiled" or w * h <= args.untiled_max_pixels]
            outs = {}
            for mode in modes:
                outs[mode] = f"{tmp}/{mode}-{size}.npy"
                r = run(w, h, mode, args.threads, ckpt, outs[mode])
                if "untiled" in outs and mode != "untiled":
                    ref, got = np.load(outs["untiled"]), np.load(outs[mode])
                    d = np.abs(got - ref) * 255.0
                    r["mean_diff_255"], r["max_diff_255"] = round(float(d.mean()), 4), round(float(d.max()), 3)
                rows.append(r)
                print(json.dumps(r), file=sys.stderr)
    result = {"threads": args.threads, "runs": rows}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
