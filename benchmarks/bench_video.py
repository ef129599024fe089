"""Video benchmarks: frames/s of the default code vs an earlier revision (``--mode speedup``, issue 13); flicker of
per-frame vs stabilised translation (``--mode stability``, issue 26); the stabiliser's wall-time cost (``--mode
overhead``, issue 26).

``--mode speedup`` — video frames/s through the CTSS generator on CPU: the previous default code vs today's.

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

``--mode stability`` — for each model (the classic; CTSS and AnimeGAN as seeded *untrained* generators: no trained
export ships with toonlab) and each clip, the generator runs once per frame and the same outputs are fused by
:class:`toonlab.infer.temporal.Stabilizer` at each ``--weights`` value; :class:`toonlab.eval.flicker.FlickerMeter`
reports the warping errors (input, per-frame, stabilised), the reduction and SSIM to the per-frame output. Clips
(:func:`toonlab.eval.flicker.pan_zoom_clip`, ``--width``×``--height``, noise σ = 4/255 per frame): ``pan`` (2, 1)
px/frame and ``zoom`` 1.03/frame, scored with their exact flow; ``cut`` (astronaut pan, then coffee pan; estimated
flow); ``real``: the rocket photo under a sub-pixel pan (1.5, 0.7) px and a 1.01 zoom per frame, σ = 3 noise,
H.264-encoded (crf 23) and decoded again, scored with the flow estimated from the decoded input.
    .venv/bin/python benchmarks/bench_video.py --mode stability [--width 320 --height 180] [--frames 12]
        [--weights 0.5,0.6,0.7,0.8] [--models classic,ctss,animegan] [--out FILE.json]

``--mode grid`` — the picture of docs/video.md: the ``real`` clip through ``--models``' first entry, per-frame and
stabilised, four consecutive frames with their maps of |O_t − warp(O_{t−1})| (flow estimated from the input).
    .venv/bin/python benchmarks/bench_video.py --mode grid [--models classic] [--width 480 --height 270]
        [--out docs/img/video-grid.jpg]

``--mode overhead`` — ``translate_video`` on a 720p H.264 clip per-frame and stabilised (default weight), in this
process, alternating per-frame / stabilised ``--rounds`` times (the best round of each counts, so load on the
machine hits both alike). Goal (issue 26): stabilised ≤ 1.3× per-frame wall time.
    .venv/bin/python benchmarks/bench_video.py --mode overhead [--models classic,ctss,animegan] [--frames 8]
        [--rounds 3] [--threads 2] [--out FILE.json]
It also times the stabiliser alone (its ``motion`` and ``fuse`` halves, ms per frame; ``--models ''`` for only
that).
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
    """An H.264 clip of scikit-image's astronaut with a yellow square moving across it (crf 23, libx264's own)."""
    import cv2
    from skimage import data

    base = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    side = height // 6
    clip = []
    for i in range(frames):
        img = base.copy()
        x0 = (i * width // max(frames, 1)) % max(width - side, 1)
        img[height // 3:height // 3 + side, x0:x0 + side] = (250, 240, 40)
        clip.append(img)
    return _encode(clip, path, crf=23, fps=fps)


def _round(src: Path, ck: Path, clip: Path, dst: Path, threads: int, batch: int, backend: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    res = subprocess.run([sys.executable, "-c", _CHILD, str(ck), str(clip), str(dst), str(threads), str(batch),
                          backend], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"child failed ({src}):\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _translators(names: list[str], folder: Path) -> dict:
    """name → Translator on CPU: the classic, or a seeded untrained generator of that model."""
    from toonlab.checkpoint import save_export
    from toonlab.infer.translator import Translator
    from toonlab.models import build_model

    out = {}
    for name in names:
        if name == "classic":
            out[name] = Translator.load("classic")
        else:
            torch.manual_seed(0)
            out[name] = Translator.load(str(save_export(build_model(name), folder / f"{name}.safetensors")),
                                        device="cpu")
    return out


def _encode(frames, path: Path, crf: int, fps: int = 24) -> Path:
    import av

    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.height, vs.width = frames[0].shape[:2]
    vs.pix_fmt, vs.options = "yuv420p", {"crf": str(crf)}
    for f in frames:
        for p in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    out.close()
    return path


def _clips(width: int, height: int, n: int, folder: Path) -> dict:
    """name → list of (frame uint8, exact flow or None, valid or None)."""
    from toonlab.eval.flicker import pan_zoom_clip
    from toonlab.infer.video import iter_frames
    from toonlab.photos import load

    size = (width, height)
    real = [f for f, _, _ in pan_zoom_clip(load("rocket"), size, n, pan=(1.5, 0.7), zoom=1.01, noise=3.0)]
    real = [(f, None, None) for f in iter_frames(_encode(real, folder / "real.mp4", crf=23))]
    return {
        "pan": list(pan_zoom_clip(load("astronaut"), size, n, pan=(2, 1), noise=4.0)),
        "zoom": list(pan_zoom_clip(load("astronaut"), size, n, pan=(0, 0), zoom=1.03, noise=4.0)),
        "cut": [(f, None, None) for f, _, _ in [*pan_zoom_clip(load("astronaut"), size, n // 2, pan=(2, 1), noise=4.0),
                                                 *pan_zoom_clip(load("coffee"), size, n - n // 2, pan=(-1, 2),
                                                                noise=4.0, seed=1)]],
        "real": real,
    }


def stability(args) -> dict:
    import numpy as np

    from toonlab.eval.flicker import FlickerMeter
    from toonlab.infer.temporal import Stabilizer

    weights = [float(w) for w in args.weights.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = _clips(args.width, args.height, args.frames, Path(tmp))
        for model, tr in _translators(args.models.split(","), Path(tmp)).items():
            for clip, frames in clips.items():
                x = torch.from_numpy(np.stack([f for f, _, _ in frames])).permute(0, 3, 1, 2).float() / 255
                y = torch.cat([tr.translate_tensor(x[i:i + 4]) for i in range(0, len(x), 4)])
                for w in weights:
                    stab = Stabilizer(weight=w)
                    s = stab.fuse(y, stab.motion(x))
                    meter = FlickerMeter(reference="per_frame")
                    for (f, flow, valid), a, b in zip(frames, y.permute(0, 2, 3, 1).numpy(),
                                                      s.permute(0, 2, 3, 1).numpy()):
                        meter.update(f, {"per_frame": a, "stabilized": b}, flow=flow, valid=valid)
                    r = meter.summary()
                    st = r["streams"]
                    rows.append({"model": model, "clip": clip, "weight": w, "shots": r["shots"],
                                 "input": st["input"]["warping_error"],
                                 "per_frame": st["per_frame"]["warping_error"],
                                 "stabilized": st["stabilized"]["warping_error"],
                                 "reduction": r["reduction"]["stabilized"], "ssim": st["stabilized"]["ssim"],
                                 "ssim_no_occlusion": st["stabilized"]["ssim_no_occlusion"],
                                 "ssim_per_shot": st["stabilized"]["ssim_per_shot"]})
                    print(json.dumps(rows[-1]), file=sys.stderr)
    return {"mode": "stability", "width": args.width, "height": args.height, "frames": args.frames,
            "models_note": "ctss/animegan: seeded untrained generators (torch.manual_seed(0)); no trained export",
            "goal": {"reduction": 0.5, "ssim": 0.9}, "rows": rows,
            "load_average": [round(v, 1) for v in os.getloadavg()]}


def grid(args) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import cv2
    import matplotlib.pyplot as plt
    import numpy as np

    from toonlab.eval.flicker import FlickerMeter
    from toonlab.infer.temporal import FlowEstimator, Stabilizer, consistent, remap

    with tempfile.TemporaryDirectory() as tmp:
        frames = [f for f, _, _ in _clips(args.width, args.height, args.frames, Path(tmp))["real"]]
        model, tr = next(iter(_translators(args.models.split(",")[:1], Path(tmp)).items()))
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    y = torch.cat([tr.translate_tensor(x[i:i + 4]) for i in range(0, len(x), 4)])
    stab = Stabilizer()
    s = stab.fuse(y, stab.motion(x))
    streams = {"per-frame": y.permute(0, 2, 3, 1).numpy(), "stabilised": s.permute(0, 2, 3, 1).numpy()}
    meter = FlickerMeter(reference="per-frame")
    for i, f in enumerate(frames):
        meter.update(f, {k: v[i] for k, v in streams.items()})
    summary = meter.summary()
    flow = FlowEstimator()
    shown = range(len(frames) - 4, len(frames))
    fig, axes = plt.subplots(5, 4, figsize=(4 * args.width / 100, 5 * args.height / 100 + 0.6), dpi=72)
    for c, t in enumerate(shown):
        g0, g1 = (cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY) for i in (t - 1, t))
        fb, ff = flow.dis.calc(g1, g0, None), flow.dis.calc(g0, g1, None)
        valid = consistent(fb, ff)
        cells = [("input", frames[t])]
        for name, v in streams.items():
            err = np.abs(v[t] - remap(v[t - 1], fb)).mean(-1) * valid
            cells += [(name, v[t]), (f"{name} |O_t − warp(O_t−1)|", np.clip(err / 0.05, 0, 1))]
        for r, (label, img) in enumerate([cells[0], cells[1], cells[3], cells[2], cells[4]]):
            ax = axes[r, c]
            ax.imshow(img, cmap="magma" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
        axes[0, c].set_title(f"frame {t}", fontsize=9)
    st = summary["streams"]
    fig.suptitle(f"{model}, weight {stab.weight}: warping error input {st['input']['warping_error']:.4f}, per-frame "
                 f"{st['per-frame']['warping_error']:.4f}, stabilised {st['stabilised']['warping_error']:.4f} "
                 f"({100 * summary['reduction']['stabilised']:.0f} % lower); SSIM to per-frame "
                 f"{st['stabilised']['ssim']:.3f}. Error maps: 0 (black) … ≥ 0.05.", fontsize=9)
    fig.tight_layout()
    out = Path(args.out or "docs/img/video-grid.jpg")
    fig.savefig(out, pil_kwargs={"quality": 85})
    return {"mode": "grid", "model": model, "image": str(out), **summary}


def _stabilizer_cost(clip: Path, rounds: int) -> dict:
    """Milliseconds per frame of the stabiliser's two halves on ``clip``'s decoded frames (best of ``rounds``):
    ``motion`` (flow, checks; the decode thread) and ``fuse`` (warp, blend; after the translation)."""
    import time

    import numpy as np

    from toonlab.infer.temporal import Stabilizer
    from toonlab.infer.video import iter_frames

    frames = np.stack(list(iter_frames(clip)))
    outputs = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    best = {"motion": float("inf"), "fuse": float("inf")}
    for _ in range(rounds):
        stab = Stabilizer()
        start = time.perf_counter()
        motions = stab.motion(frames)
        mid = time.perf_counter()
        stab.fuse(outputs, motions)
        end = time.perf_counter()
        best = {"motion": min(best["motion"], mid - start), "fuse": min(best["fuse"], end - mid)}
    return {k: round(1000 * v / len(frames), 1) for k, v in best.items()}


def overhead(args) -> dict:
    import time

    from toonlab.infer.temporal import Stabilizer
    from toonlab.infer.video import translate_video

    torch.set_num_threads(args.threads)
    result = {"mode": "overhead", "width": args.width, "height": args.height, "frames": args.frames,
              "threads": args.threads, "batch_size": args.batch_size, "goal_ratio": 1.3, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_clip(tmp / "clip.mp4", args.width, args.height, args.frames)
        result["stabilizer_alone_ms_per_frame"] = _stabilizer_cost(clip, args.rounds)
        print(json.dumps(result["stabilizer_alone_ms_per_frame"]), file=sys.stderr)
        for model, tr in _translators([m for m in args.models.split(",") if m], tmp).items():
            translate_video(clip, tmp / "warm.mp4", tr.translate_tensor, batch_size=args.batch_size,
                            overwrite=True)  # first-call costs (memory fit, allocations) out of the timing
            secs: dict[str, list[float]] = {"per_frame": [], "stabilized": []}
            for _ in range(args.rounds):
                for name in secs:
                    stab = Stabilizer() if name == "stabilized" else None
                    start = time.perf_counter()
                    res = translate_video(clip, tmp / f"{name}.mp4", tr.translate_tensor,
                                          batch_size=args.batch_size, stabilizer=stab, overwrite=True)
                    secs[name].append(time.perf_counter() - start)
                    assert res.frames == args.frames
            best = {k: min(v) for k, v in secs.items()}
            result["models"][model] = {"seconds": {k: [round(s, 2) for s in v] for k, v in secs.items()},
                                       "frames_per_s": {k: round(args.frames / b, 3) for k, b in best.items()},
                                       "ratio": round(best["stabilized"] / best["per_frame"], 3)}
            print(json.dumps({model: result["models"][model]}), file=sys.stderr)
    result["load_average"] = [round(v, 1) for v in os.getloadavg()]
    return result


def speedup(args) -> dict:
    from toonlab.checkpoint import save_export
    from toonlab.models import build_model

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
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("speedup", "stability", "overhead", "grid"), default="speedup")
    ap.add_argument("--width", type=int, default=None, help="default 1280 (320 for stability)")
    ap.add_argument("--height", type=int, default=None, help="default 720 (180 for stability)")
    ap.add_argument("--frames", type=int, default=None, help="default 8 (12 for stability)")
    ap.add_argument("--rounds", type=int, default=None, help="default 2 (3 for overhead)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--before-rev", default="df7a965~1")
    ap.add_argument("--models", default="classic,ctss,animegan")
    ap.add_argument("--weights", default="0.5,0.6,0.7,0.8")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    small = args.mode in ("stability", "grid")
    args.width = args.width or {"stability": 320, "grid": 480}.get(args.mode, 1280)
    args.height = args.height or {"stability": 180, "grid": 270}.get(args.mode, 720)
    args.frames = args.frames or (12 if small else 8)
    args.rounds = args.rounds or (3 if args.mode == "overhead" else 2)
    row = {"stability": stability, "overhead": overhead, "speedup": speedup, "grid": grid}[args.mode](args)
    text = json.dumps(row, indent=1)
    print(text)
    if args.out and args.mode != "grid":
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
