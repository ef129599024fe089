"""Video frames/s through the CTSS generator on CPU: the previous default code vs today's, in one run.

A synthetic clip (a moving square over scikit-image's astronaut, resized to W×H, H.264) is translated by
``translate_video(clip, out, Translator.load(ck, device="cpu", ...).translate_tensor)`` in a fresh process per
round, twice:
- ``before``: toonlab's source at ``--before-rev`` (default: the commit before the new defaults, extracted with
  ``git archive``) with its defaults — PyTorch, a fixed 512 MiB CPU budget (a 720p frame is tiled, two passes for
  shared statistics), decode → translate → encode one after the other;
- ``after``: this checkout with ``backend="auto"`` (ONNX Runtime on CPU; its export is cached by a warm-up run
  first, not timed), the measured memory budget (untiled when it fits), decode / translate / encode in threads.
Rounds alternate (before, after, before, …) so machine load hits both alike; the best round of each counts.
Goal (issue 13): after ≥ 2× before for a 720p clip.
    .venv/bin/python benchmarks/bench_video.py [--width 1280 --height 720] [--frames 8] [--rounds 2]
        [--batch-size 4] [--threads 2] [--before-rev df7a965~1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

_CHILD = r"""
import json, sys, time, torch
from toonlab.infer.translator import Translator
from toonlab.infer.video import translate_video
ck, clip, dst, threads, batch, backend = sys.argv[1:7]
torch.set_num_threads(int(threads))
opts = {"backend": backend} if backend != "default" else {}
t = Translator.load(ck, device="cpu", **opts)
start = time.perf_counter()
res = translate_video(clip, dst, t.translate_tensor, batch_size=int(batch), overwrite=True)
secs = time.perf_counter() - start
plan = getattr(t, "last_plan", None)
print(json.dumps({"seconds": secs, "frames": res.frames, "plan": plan.reason if plan else None}))
"""

def make_clip(path: Path, width: int, height: int, frames: int, fps: int = 24) -> Path:
    import av
    import cv2
    from skimage import data

    base = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    side = height // 6
    for i in range(frames):
        img = base.copy()
        x0 = (i * width // max(frames, 1)) % max(width - side, 1)
        img[height // 3:height // 3 + side, x0:x0 + side] = (250, 240, 40)
        for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    out.close()
    return path


def _round(src: Path, ck: Path, clip: Path, dst: Path, threads: int, batch: int, backend: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    res = subprocess.run([sys.executable, "-c", _CHILD, str(ck), str(clip), str(dst), str(threads), str(batch),
                          backend], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"child failed ({src}):\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    from toonlab.checkpoint import save_export
    from toonlab.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--before-rev", default="df7a965~1")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "before"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(repo), "archive", args.before_rev, "src"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        ck = save_export(build_model("ctss"), tmp / "ctss.safetensors")
        clip = make_clip(tmp / "clip.mp4", args.width, args.height, args.frames)
        configs = {"before": (old / "src", "default"), "after": (repo / "src", "auto")}
        small = make_clip(tmp / "small.mp4", 64, 48, 2)
        _round(repo / "src", ck, small, tmp / "warm.mp4", args.threads, args.batch_size, "auto")  # ONNX cache
        runs: dict[str, list[dict]] = {k: [] for k in configs}
        for r in range(args.rounds):
            for name, (src, backend) in configs.items():
                got = _round(src, ck, clip, tmp / f"{name}{r}.mp4", args.threads, args.batch_size, backend)
                assert got["frames"] == args.frames
                runs[name].append(got)
        fps = {k: args.frames / min(g["seconds"] for g in v) for k, v in runs.items()}
        row = {"width": args.width, "height": args.height, "frames": args.frames, "threads": args.threads,
               "before_rev": args.before_rev,
               **{k: {"fps": round(fps[k], 3), "seconds": [round(g["seconds"], 1) for g in v],
                      "plan": v[-1]["plan"]} for k, v in runs.items()},
               "speedup": round(fps["after"] / fps["before"], 2), "goal_speedup": 2.0,
               "load_average": [round(x, 1) for x in os.getloadavg()]}
    text = json.dumps(row, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
