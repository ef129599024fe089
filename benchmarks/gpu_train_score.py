"""One device command that returns scored models: SynthToon at 256², CTSS then other photo→cartoon systems, each
trained for a fixed wall-clock budget (bf16 AMP on CUDA, periodic exports), scored on the held-out set on the device.

    PYTHONPATH=src python3 benchmarks/gpu_train_score.py --out $OUT [--device cuda|cpu] [--quick]
        [--systems ctss,cartoongan,animegan,salcbam] [--minutes ctss=4,cartoongan=1.2,...] [--deadline-minutes 9.3]
        [--size 256] [--n 1200] [--n-test 150] [--workers 8] [--perceptual auto]

Order of work, all inside ``--deadline-minutes`` (default 9.3, for a 10-minute device call):
1. SynthToon (``toonlab.data.synth``) at ``--size``: ``--n`` train photos / cartoons, ``--n-test`` held-out paired
   scenes; the licence-tracked real set (``toonlab prepare real``) at the same size when its Debian packages are
   installed, else ``real_set`` in the JSON says which are missing. Where a system needs saliency maps (SalCBAM),
   the training photos' MBD maps are prepared once (``saliency`` in the JSON) and passed as ``data.saliency``.
2. Per system, in ``--systems`` order, a child process (its own process group) trains the paper recipe with the
   data, size, ``train.amp=bf16`` (CUDA) and ``train.max_minutes`` = its budget; ``init`` lasts ``--init-steps``,
   ``adv`` until the budget; an export every ``--ckpt-every`` steps. It then scores the final export on the device:
   the generator over the held-out photos in batches (``toonlab.train.eval_hook``'s path: PSNR / SSIM on the device,
   edge F1 on the host) against the true cartoons, and writes the raw 8-bit outputs (and, with the real set, its
   held-out photos translated). The parent sends SIGTERM at the budget (the trainer checkpoints and stops), SIGKILL
   to the whole group 30 s later, and goes on when a child crashes or a package is missing: one line in the JSON.
3. ``results.json`` is rewritten after every system (a killed call keeps what it got), and at the end ``$OUT`` holds
   at most 8 files of at most 16 MiB: ``results.json``, ``log.txt`` (every child's output, tail-truncated),
   ``grid.png`` (photo / truth / each system on six held-out scenes) and one ``NAME.tar`` per system (final export +
   raw outputs, trimmed to fit — the JSON says how many outputs each holds) for FID/KID back home with
   ``toonlab evaluate``.

Installs nothing. Packages the device machine lacks travel with the call (docs/performance.md: the EfficientNet-Lite0
wheel for ``model.perceptual=auto`` when no VGG19 file is there). ``--device cpu --quick`` is the smoke run (32²,
8 images, 2 steps per system; tests/test_gpu_train_score.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

SYSTEMS = "ctss,cartoongan,animegan,salcbam"
MINUTES = {"ctss": 4.0, "cartoongan": 1.2, "animegan": 1.2, "salcbam": 1.2}  # the rest of the budget
MAX_FILE = 16 * 2 ** 20 - 64 * 2 ** 10  # a returned file's limit, less tar's slack
KILL_GRACE_S = 30.0


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def save_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    os.replace(tmp, path)


# --- child: train one system, then score it ----------------------------------------------------------------------
def default_model(name: str):
    """System ``name`` built from its default Config: what its phases and side inputs (``requires``) are."""
    from toonlab.models import get_model_class

    cls = get_model_class(name)
    return cls(cls.Config())


def system_overrides(name: str, args, data: Path, run: Path, budget_min: float) -> list[str]:
    """The paper recipe's overrides for a budgeted run on SynthToon at ``args.size``."""
    from bench_gpu import ctss_scaled

    cuda = args.device.startswith("cuda")
    model = default_model(name)
    phases = [p.name for p in model.phases()]
    steps = {"init": args.init_steps} if "init" in phases else {}
    steps.update({p: 10 ** 7 for p in phases if p != "init"})
    over = [f"data.photos={data / 'train/photos'}", f"data.cartoons={data / 'train/cartoons'}",
            f"data.size={args.size}", f"data.workers={args.workers}", "data.val_count=0",
            f"train.run_dir={run}", f"train.device={args.device}", "train.progress=false",
            "train.tensorboard=false", f"train.log_every={args.log_every}", f"train.ckpt_every={args.ckpt_every}",
            "train.keep_last=2", "train.lr_decay=none", f"train.max_minutes={budget_min}",
            "train.phase_steps={" + ", ".join(f"{k}: {v}" for k, v in steps.items()) + "}"]
    if cuda:
        over.append("train.amp=bf16")
    if args.batch:
        over.append(f"data.batch_size={args.batch}")
    if "perceptual" in type(model).Config.__dataclass_fields__:
        over.append(f"model.perceptual={args.perceptual}")
    if name == "ctss" and args.size != 256:
        over += ctss_scaled(args.size)
    if args.max_steps:
        over.append(f"train.max_steps={args.max_steps}")
    saliency = data / "train" / "saliency"
    if saliency.is_dir() and "saliency" in model.requires:
        over.append(f"data.saliency={saliency}")  # prepared by the parent: MBD per sample would starve the GPU
    return over


@torch.no_grad()
def translate_folder_on_device(export: Path, folder: Path, device: torch.device, batch: int = 16):
    """(names, (N,3,H,W) uint8 host outputs) of the export's generator over every PNG of ``folder`` (same-sized
    images), ``batch`` per pass, bf16 autocast on CUDA."""
    from toonlab.checkpoint import load_export
    from toonlab.io import read_image

    model, _ = load_export(export, device)
    g = model.translator().eval()
    files = sorted(folder.glob("*.png"))
    outs = []
    for s in range(0, len(files), batch):
        x = torch.stack([read_image(f).rgb for f in files[s: s + batch]]).to(device) * 2 - 1
        args = (torch.zeros(len(x), dtype=torch.long, device=device),) if model.styles else ()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            y = g(x, *args)
        outs.append((((y.float() + 1) / 2).clamp(0, 1) * 255).round().to(torch.uint8).cpu())
    return [f.name for f in files], torch.cat(outs)


def score(export: Path, data: Path, out_dir: Path, device: torch.device) -> dict:
    """Paired scores of the export on SynthToon's held-out photos, raw outputs written to ``out_dir``."""
    from toonlab.eval.metrics import edge_f1
    from toonlab.io import read_image, write_image
    from toonlab.train.eval_hook import _hwc, psnr_batch, ssim_batch

    t0 = time.perf_counter()
    names, u8 = translate_folder_on_device(export, data / "test/photos", device)
    truth = torch.stack([read_image(data / "test/cartoons" / n).rgb for n in names])
    q, t = u8.to(device).double() / 255, truth.to(device)
    res = {"psnr": float(psnr_batch(q, t).mean()), "ssim": float(ssim_batch(q, t).mean()),
           "edge_f1": float(np.mean([edge_f1(_hwc(a.double() / 255), _hwc(b)) for a, b in zip(u8, truth)]))}
    res["score_seconds"] = round(time.perf_counter() - t0, 2)
    for n, img in zip(names, u8):
        write_image(out_dir / "synth" / n, _hwc(img), overwrite=True)
    return res


def child(args) -> None:
    """Train ``args.child`` for ``args.budget`` minutes, score its final export; writes RUN/child.json."""
    from toonlab.train.trainer import train

    name, run, data = args.child, Path(args.run), Path(args.data)
    over = system_overrides(name, args, data, run, args.budget)
    t0 = time.perf_counter()
    result = train(ROOT / "configs" / f"{name}.yaml", over)
    rec: dict = {"steps": result["step"], "train_seconds": round(time.perf_counter() - t0, 1)}
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for phase in ("init", "adv"):
        ips = [m["images_per_s"] for m in metrics if m.get("phase") == phase][1:]  # the first interval warms up
        rec[f"{phase}_images_per_s"] = round(float(np.median(ips)), 2) if ips else None
    export = Path(result["export"])
    device = torch.device(args.device)
    rec.update(score(export, data, run / "outputs", device))
    if args.real:
        from toonlab.io import write_image
        from toonlab.train.eval_hook import _hwc

        names, u8 = translate_folder_on_device(export, Path(args.real) / "test/photos", device)
        for n, img in zip(names, u8):
            write_image(run / "outputs" / "real" / n, _hwc(img), overwrite=True)
    rec["export"] = str(export)
    save_json(run / "child.json", rec)


# --- parent ------------------------------------------------------------------------------------------------------
def run_child(name: str, args, data: Path, real: Path | None, run: Path, budget_min: float, log) -> dict:
    """One system in its own process group; SIGTERM at the budget (+ scoring time), SIGKILL 30 s later."""
    cmd = [sys.executable, __file__, "--child", name, "--run", str(run), "--data", str(data),
           "--budget", str(budget_min), "--device", args.device, "--size", str(args.size),
           "--workers", str(args.workers), "--init-steps", str(args.init_steps), "--ckpt-every",
           str(args.ckpt_every), "--log-every", str(args.log_every), "--perceptual", args.perceptual]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    if real is not None:
        cmd += ["--real", str(real)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    with open(run.parent / f"{name}.log", "w", encoding="utf-8") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        limit = budget_min * 60 + args.score_allowance
        status = None
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            status = f"killed at its deadline ({limit:.0f} s): SIGTERM"
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                status += ", then SIGKILL"
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        finally:
            try:  # whatever the child left behind in its group (DataLoader workers)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    rec: dict = {"seconds": round(time.monotonic() - t0, 1), "returncode": proc.returncode}
    done = run / "child.json"
    if done.is_file():
        rec.update(json.loads(done.read_text()))
    else:
        tail = (run.parent / f"{name}.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
        rec["error"] = status or f"exit {proc.returncode}: {tail[0][:300]}"
    log(f"{name}: {rec}")
    return rec


def make_data(args, work: Path, result: dict) -> tuple[Path, Path | None]:
    from toonlab.data.synth import make_synthtoon

    t0 = time.perf_counter()
    data = make_synthtoon(work / "synth", n=args.n, size=args.size, seed=0, n_test=args.n_test,
                          workers=min(os.cpu_count() or 1, 16))
    result["synthtoon"] = {"n": args.n, "n_test": args.n_test, "size": args.size,
                           "seconds": round(time.perf_counter() - t0, 1)}
    real = None
    try:
        from toonlab.data.prepare.real import RealConfig, prepare_real

        t0 = time.perf_counter()
        summary = prepare_real(work / "real", RealConfig(size=args.size))
        real = work / "real"
        result["real_set"] = {"built": True, "seconds": round(time.perf_counter() - t0, 1),
                              "summary": str(summary)[:300]}
    except Exception as e:  # packages absent (UsageError naming them) or anything else: say so, go on
        result["real_set"] = {"built": False, "why": one_line(e)}
    return data, real


def prepare_saliency(systems: list[str], data: Path, result: dict) -> None:
    """MBD saliency maps of the training photos, once, for the systems that need them (SalCBAM): computed per
    sample on the fly they cost ~156 ms a 256² photo on one CPU core against ~12 ms to read a prepared map
    (benchmarks/bench_datapath.py), which caps such a system near 26 img/s with 4 workers whatever the GPU."""
    def needs(name: str) -> bool:
        try:
            return "saliency" in default_model(name).requires
        except Exception:  # an unknown or broken system fails in its own child, with its one line
            return False

    if not any(needs(name) for name in systems):
        return
    from toonlab.data.prepare.images import map_folder

    t0 = time.perf_counter()
    summary = map_folder(data / "train" / "photos", data / "train" / "saliency", "saliency",
                         workers=min(os.cpu_count() or 1, 16), progress=False)
    result["saliency"] = {"maps": summary.done, "failed": len(summary.failed),
                          "seconds": round(time.perf_counter() - t0, 1)}


def pack(out: Path, work: Path, data: Path, systems: dict) -> dict:
    """grid.png, log.txt and one NAME.tar (export + outputs, trimmed under the file limit) per scored system."""
    from toonlab.io import read_image, write_image

    files: dict[str, dict] = {}
    logs = "".join(f"===== {p.stem}\n" + p.read_text(errors="replace")[-200_000:] for p in sorted(work.glob("*.log")))
    (out / "log.txt").write_text(logs[-MAX_FILE:], encoding="utf-8")
    names = sorted(p.name for p in (data / "test/photos").glob("*.png"))
    picks = [names[i] for i in np.linspace(0, len(names) - 1, min(6, len(names))).round().astype(int)]
    rows = [[data / "test/photos" / n for n in picks], [data / "test/cartoons" / n for n in picks]]
    for name, rec in systems.items():
        outs = work / name / "outputs"
        if "psnr" not in rec:
            continue
        rows.append([outs / "synth" / n for n in picks])
        with tarfile.open(out / f"{name}.tar", "w") as tar:
            size, kept = 0, 0
            export = Path(rec["export"])
            if export.stat().st_size < MAX_FILE // 2:
                tar.add(export, arcname=f"{name}/{export.name}")
                size += export.stat().st_size
            for f in sorted(outs.rglob("*.png")):
                if size + f.stat().st_size + 1024 > MAX_FILE:
                    break
                tar.add(f, arcname=f"{name}/{f.relative_to(outs)}")
                size, kept = size + f.stat().st_size + 1024, kept + 1
        files[f"{name}.tar"] = {"outputs": kept, "export_included": export.stat().st_size < MAX_FILE // 2}
        if len(files) >= 4:  # results.json, log.txt, grid.png, 4 archives + the caller's stderr log = 8 files
            break
    grid = torch.cat([torch.cat([read_image(p).rgb for p in row], dim=2) for row in rows], dim=1)
    write_image(out / "grid.png", grid, overwrite=True)
    return files


def parse_minutes(text: str | None) -> dict[str, float]:
    out = dict(MINUTES)
    for part in (text or "").split(","):
        if part:
            k, v = part.split("=")
            out[k.strip()] = float(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="results folder ($OUT on the device machine)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="32², 16 images, a few steps per system (smoke run)")
    ap.add_argument("--systems", default=SYSTEMS)
    ap.add_argument("--minutes", default=None, help="training budget per system, e.g. ctss=4,cartoongan=1.2")
    ap.add_argument("--deadline-minutes", type=float, default=9.3)
    ap.add_argument("--score-allowance", type=float, default=60.0,
                    help="seconds past the training budget for the child's start-up, last checkpoint and scoring")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--n-test", type=int, default=150)
    ap.add_argument("--batch", type=int, default=None, help="default: each recipe's paper batch")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--init-steps", type=int, default=1000)
    ap.add_argument("--ckpt-every", type=int, default=1000)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--perceptual", default="auto")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--real", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.size, args.n, args.n_test, args.workers = 32, 8, 4, 0
        args.init_steps, args.max_steps, args.log_every, args.ckpt_every = 1, 2, 1, 2
        args.batch = args.batch or 2
    start = time.monotonic()
    deadline = start + 60 * args.deadline_minutes
    import tempfile

    out = Path(args.out or tempfile.mkdtemp(prefix="gpu-train-score-out-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-train-score-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"benchmark": "gpu_train_score", "device": args.device, "torch": torch.__version__,
                    "quick": args.quick, "systems": {}}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name(0)

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    minutes = parse_minutes(args.minutes)
    try:
        data, real = make_data(args, work, result)
        prepare_saliency(args.systems.split(","), data, result)
        log(f"data: {result['synthtoon']} real: {result['real_set']} saliency: {result.get('saliency')}")
        save_json(out / "results.json", result)
        from bench_gpu import missing_dependency

        for name in args.systems.split(","):
            left = (deadline - time.monotonic()) / 60 - (args.score_allowance + KILL_GRACE_S + 20) / 60
            budget = min(minutes.get(name, 1.0), left)
            if budget < 0.2:
                result["systems"][name] = {"error": "not run: the call's deadline is too close"}
                continue
            why = missing_dependency(name)
            if why:
                result["systems"][name] = {"error": f"not run: {why}"}
                continue
            run = work / name
            run.mkdir(parents=True, exist_ok=True)
            try:
                result["systems"][name] = {"budget_minutes": round(budget, 2),
                                           **run_child(name, args, data, real if name == "ctss" else None, run,
                                                       budget, log)}
            except Exception as e:  # the parent must keep going whatever one system does
                result["systems"][name] = {"error": one_line(e)}
            result["files"] = pack(out, work, data, result["systems"])  # after every system: a kill keeps them
            save_json(out / "results.json", result)
    except Exception as e:
        result["error"] = one_line(e)
        result["traceback"] = traceback.format_exc()[-2000:]
    result["wall_seconds"] = round(time.monotonic() - start, 1)
    save_json(out / "results.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "traceback"}, indent=1))


if __name__ == "__main__":
    main()
