"""Does each system learn? Train on SynthToon for a fixed step budget, score against the true cartoons (photos).

    python benchmarks/bench_learning.py [--systems ctss,cartoongan,...] [--seeds 0,1,2] [--steps 240]
        [--init-fraction 0.4] [--eval-every 60] [--size 64] [--batch 4] [--n 240] [--n-test 48]
        [--work runs/bench-learning] [--out benchmarks/results/learning.json] [--plot benchmarks/results/learning.png]
        [--rescore] [OVERRIDE ...]

SynthToon renders every test scene both as a photo and as its true cartoon, so a photo→cartoon generator can be
scored *paired*: PSNR / SSIM of its raw output (no post-processing) against the true cartoon, and FID / KID of its
outputs to the true-cartoon test set. Reference rows on the same test set: the unchanged photos ("identity") and
the learning-free classic cartoonizer. Cartoon→photo systems (toon2real, cyclegan) are scored on the inverse task
(cartoons in, true photos as the target; identity = the cartoons themselves). A multi-style system trains on a
SynthToon rendered in its styles (``prepare synth --styles``: same scenes, one palette and line weight per style) and
is scored in its first style, whose test cartoons are the unstyled ones (mean difference < 0.02/255).

Each system trains from its paper recipe (``configs/<name>.yaml``: losses, weights, learning rates, betas) with the
data, size and batch overridden, and the schedule compressed to ``--steps`` optimiser iterations: the first
``--init-fraction`` of them in the content-only ``init`` phase (systems that have one), the rest adversarial. CTSS's
patch length and strides are the paper's scaled by size/256. A system spec may name an ablation file:
``label=configs/ablations/ctss-all-patches.yaml``. The run is cut every ``--eval-every`` steps (``--resume`` is
bit-exact, so the segments equal one run) and its ``latest.safetensors`` scored: the learning curve. An existing
``--out`` at the same settings is merged into: systems and seeds already there are kept, not re-run.

Each run's final export is also scored post-processed (``final_post``): ``shipped`` is what ``toonlab cartoonize``
returns by default (the model's recipe: CTSS's +40 % saturation; absent where the recipe is the identity) and
``keep_colors`` keeps the output's luminance with the input's chroma (``--keep-colors``), which tells the form a
system learnt from its hue. The classic gets the same ``classic_keep_colors`` reference row. ``--rescore`` trains
nothing and adds these scores to the runs of ``--out`` whose run dirs under ``--work`` still hold their final export.

FID/KID need the FID Inception weights (the canonical file, or ``toonlab weights fetch fid-inception``); without
them those columns are null and the JSON says why. The perceptual backbone is the recipes' ``auto`` choice (the
JSON records which one ran). Prints one JSON object and writes it to ``--out``; ``--plot`` draws the curves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PHOTO2CARTOON = ["ctss", "cartoongan", "animegan", "salcbam", "white_box", "multistyle"]
CARTOON2PHOTO = ["toon2real", "cyclegan", "unit", "singlegan"]
CTSS_ABLATIONS = ["ctss-all-patches=configs/ablations/ctss-all-patches.yaml",
                  "ctss-no-patch-branch=configs/ablations/ctss-no-patch-branch.yaml"]


def parse_system(spec: str) -> tuple[str, Path]:
    """``name`` → (name, configs/name.yaml); ``label=path`` → (label, path)."""
    if "=" in spec:
        label, path = spec.split("=", 1)
        return label, ROOT / path
    return spec, ROOT / "configs" / f"{spec}.yaml"


def load_rgb(folder: Path) -> tuple[list[str], torch.Tensor]:
    """Every PNG of ``folder`` (sorted) as one (N,3,H,W) float tensor in [0, 1]."""
    from toonlab.io import read_image

    files = sorted(folder.glob("*.png"))
    return [f.name for f in files], torch.stack([read_image(f).rgb for f in files])


def paired_scores(out: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of (N,3,H,W) [0,1] outputs against their true targets."""
    from toonlab.eval.metrics import psnr, ssim

    a = out.permute(0, 2, 3, 1).numpy()
    b = truth.permute(0, 2, 3, 1).numpy()
    return {"psnr": float(np.mean([psnr(x, y) for x, y in zip(a, b)])),
            "ssim": float(np.mean([ssim(x, y) for x, y in zip(a, b)]))}


class Scorer:
    """Paired metrics always; FID/KID to the target set when the FID Inception weights load."""

    def __init__(self, target: torch.Tensor):
        from toonlab.eval.fid import FIDEvaluator

        self.target = target
        self.fid_error = None
        self.weights = None
        try:
            self.evaluator = FIDEvaluator(download=False, use_cache=False)
            _, self.weights = self.evaluator.network()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.target_stats = self.evaluator.image_stats(list(target))
        except Exception as e:  # missing weights: paired metrics only, and say why
            self.evaluator, self.fid_error = None, str(e).splitlines()[0]

    def __call__(self, out: torch.Tensor) -> dict[str, float | None]:
        scores: dict[str, float | None] = paired_scores(out, self.target)
        scores["fid"] = scores["kid"] = None
        if self.evaluator is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stats = self.evaluator.image_stats(list(out))
            scores["fid"] = self.evaluator.fid(stats, self.target_stats)
            n = min(len(out), len(self.target))
            scores["kid"] = self.evaluator.kid(stats, self.target_stats, subset_size=n, subsets=50)[0]
        return scores


def post_variants(export: Path) -> dict:
    """The post-processed scorings of a final export besides the raw one: ``shipped`` = what ``toonlab cartoonize``
    returns by default (the model's recipe, e.g. CTSS's +40 % saturation; left out where it is the identity) and
    ``keep_colors`` = the output's luminance with the input's chroma (``--keep-colors``): it separates the form a
    system learnt from its hue."""
    from toonlab.checkpoint import read_export_metadata
    from toonlab.infer.postprocess import PostProcess

    shipped = PostProcess.for_model(json.loads(read_export_metadata(export).get("config", "{}")))
    return ({} if shipped.is_identity else {"shipped": shipped}) | {"keep_colors": PostProcess(keep_colors=True)}


def score_variants(export: Path, raw: torch.Tensor, inputs: torch.Tensor, scorer: "Scorer") -> dict[str, dict]:
    """{variant: scores} of ``export``'s raw outputs ``raw`` (:func:`generator_outputs` on ``inputs``) through
    each of :func:`post_variants`."""
    return {name: scorer(post(raw, inputs)) for name, post in post_variants(export).items()}


def generator_outputs(export: Path, inputs: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Raw generator output (no post-processing) of an export on (N,3,H,W) [0,1] inputs, in [0,1]."""
    from toonlab.checkpoint import load_export

    model, _ = load_export(export)
    G = model.translator().eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(inputs), batch):
            x = inputs[i:i + batch] * 2 - 1
            y = G(x, 0) if model.styles else G(x)
            outs.append(((y + 1) / 2).clamp(0, 1))
    return torch.cat(outs)


def schedule(config: Path, steps: int, init_fraction: float) -> dict[str, int]:
    """Steps per phase of a recipe compressed to ``steps`` iterations (``init`` gets ``init_fraction``)."""
    from toonlab.models import build_model
    from toonlab.train.config import load_run_config

    cfg = load_run_config(config)
    phases = [p.name for p in build_model(cfg.model["name"], {k: v for k, v in cfg.model.items() if k != "name"}).phases()]
    if phases == ["init", "adv"]:
        init = round(steps * init_fraction)
        return {"init": init, "adv": steps - init}
    return {phases[-1]: steps, **{p: 0 for p in phases[:-1]}}


def run_overrides(label: str, config: Path, data: Path, run: Path, seed: int, args, log_every: int,
                  ckpt_every: int) -> list[str]:
    """The overrides one benchmark run trains with: ``data``'s train/test folders, ``args``' size, batch, steps and
    init fraction (:func:`schedule`), CPU, no progress bar or TensorBoard, then ``args.overrides``; CTSS's patch
    length and strides are the paper's scaled by size/256."""
    phase_steps = schedule(config, args.steps, args.init_fraction)
    scale = args.size / 256
    overrides = [f"data.photos={data / 'train/photos'}", f"data.cartoons={data / 'train/cartoons'}",
                 f"data.size={args.size}", f"data.batch_size={args.batch}", "data.workers=0",
                 f"data.val_photos={data / 'test/photos'}", "data.val_count=4", f"train.seed={seed}",
                 f"train.run_dir={run}", "train.progress=false", "train.tensorboard=false",
                 f"train.log_every={log_every}", f"train.sample_every={args.steps}",
                 f"train.ckpt_every={ckpt_every}", "train.keep_last=1", "train.device=cpu",
                 "train.phase_steps={" + ", ".join(f"{k}: {v}" for k, v in phase_steps.items()) + "}",
                 *args.overrides]
    if label.startswith("ctss"):
        overrides += [f"model.patch_size={round(96 * scale)}",
                      f"model.stride_range=[{round(48 * scale)}, {round(72 * scale)}]",
                      f"model.stride_fixed=[{round(48 * scale)}, {round(72 * scale)}]"]
    return overrides


def train_and_curve(label: str, config: Path, seed: int, args, data: Path, inputs: torch.Tensor,
                    scorer: Scorer) -> dict:
    """Train one system/seed in ``--eval-every`` segments, scoring ``latest.safetensors`` after each."""
    from toonlab.train.trainer import train

    run = Path(args.work) / f"{label}-s{seed}"
    export = run / "checkpoints" / "latest.safetensors"
    overrides = run_overrides(label, config, data, run, seed, args, args.eval_every, args.eval_every)
    curve, t0 = [], time.perf_counter()
    for stop in range(args.eval_every, args.steps + 1, args.eval_every):
        if stop == args.eval_every:
            train(config, overrides + [f"train.max_steps={stop}"])
        else:
            train(None, [f"train.max_steps={stop}"], resume=run)
        out = generator_outputs(export, inputs)
        curve.append({"step": stop, **scorer(out)})
        print(f"[{label} seed {seed}] step {stop}: {curve[-1]}", file=sys.stderr, flush=True)
    return {"seed": seed, "phase_steps": schedule(config, args.steps, args.init_fraction),
            "wall_s": round(time.perf_counter() - t0, 1), "curve": curve, "final": curve[-1],
            "final_post": score_variants(export, out, inputs, scorer),  # the last segment's outputs
            "perceptual": _perceptual_of(run)}


def rescore(result: dict, work: Path, inputs: dict, scorers: dict) -> None:
    """Add ``final_post`` (:func:`score_variants`) to the runs of ``result`` that lack it and whose run dir under
    ``work`` still holds the final export of the same schedule (export ``step`` and config ``phase_steps``)."""
    import yaml

    from toonlab.checkpoint import read_export_metadata

    for label, entry in result["systems"].items():
        task = entry["task"]
        for r in entry["runs"]:
            run = work / f"{label}-s{r['seed']}"
            export = run / "checkpoints" / "latest.safetensors"
            if "final_post" in r or not export.is_file():
                continue
            phases = yaml.safe_load((run / "config.yaml").read_text())["train"]["phase_steps"]
            if read_export_metadata(export).get("step") != str(result["steps"]) or phases != r["phase_steps"]:
                continue
            raw = generator_outputs(export, inputs[task])
            r["final_post"] = score_variants(export, raw, inputs[task], scorers[task])
            print(f"[{label} seed {r['seed']}] final, post-processed: {r['final_post']}", file=sys.stderr,
                  flush=True)
        entry["summary"] = summarise(entry["runs"])


def _perceptual_of(run: Path) -> str | None:
    """The perceptual backbone a run resolved to (from its config.yaml), if the model has one."""
    import yaml

    model = yaml.safe_load((run / "config.yaml").read_text()).get("model", {})
    return model.get("perceptual", model.get("vgg_weights"))


def summarise(rows: list[dict]) -> dict:
    """The seeds, and the mean and spread (min, max) of each final metric over them; the same for each
    post-processed variant (``final_post``) over the seeds that have it."""
    out: dict = {"seeds": [r["seed"] for r in rows]} | _spread([r["final"] for r in rows])
    variants = {v for r in rows for v in r.get("final_post", {})}
    for v in sorted(variants):  # post-processed finals: only over the seeds that have them, named
        have = [r for r in rows if v in r.get("final_post", {})]
        out[v] = {"seeds": [r["seed"] for r in have]} | _spread([r["final_post"][v] for r in have])
    return out


def _spread(finals: list[dict]) -> dict:
    """{metric: {mean, min, max}} over ``finals`` (score dicts), for each metric that has values."""
    out = {}
    for key in ("psnr", "ssim", "fid", "kid"):
        vals = [f[key] for f in finals if f.get(key) is not None]
        if vals:
            out[key] = {"mean": float(np.mean(vals)), "min": float(np.min(vals)), "max": float(np.max(vals))}
    return out


def plot(result: dict, path: Path) -> None:
    """Learning curves (PSNR and, when present, FID vs step; mean over seeds) with reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["psnr"] + (["fid"] if result["fid_weights"] else [])
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.6 * len(metrics)), squeeze=False)
    for col, task in enumerate(("photo2cartoon", "cartoon2photo")):
        for row, m in enumerate(metrics):
            ax = axes[row][col]
            for label, sysres in result["systems"].items():
                if sysres["task"] != task:
                    continue
                steps = [p["step"] for p in sysres["runs"][0]["curve"]]
                vals = np.array([[p[m] for p in r["curve"]] for r in sysres["runs"]], dtype=float)
                (line,) = ax.plot(steps, vals.mean(0), marker="o", label=label)
                if len(vals) > 1:  # the spread over seeds, in the line's colour
                    ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.15, color=line.get_color())
            for name, ref in result["references"][task].items():
                if ref.get(m) is not None:
                    ax.axhline(ref[m], linestyle="--", linewidth=1, color="gray")
                    ax.annotate(name, (0, ref[m]), xycoords=("axes fraction", "data"), fontsize=7, color="gray")
            ax.set_title(f"{task}: {m.upper()} vs step ({'higher' if m == 'psnr' else 'lower'} is better)")
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", default=",".join(PHOTO2CARTOON + CARTOON2PHOTO + CTSS_ABLATIONS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--init-fraction", type=float, default=0.4)
    ap.add_argument("--eval-every", type=int, default=60)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--n", type=int, default=240, help="SynthToon train images per domain")
    ap.add_argument("--n-test", type=int, default=48)
    ap.add_argument("--work", default="runs/bench-learning")
    ap.add_argument("--out", default="benchmarks/results/learning.json")
    ap.add_argument("--plot", default="benchmarks/results/learning.png")
    ap.add_argument("--rescore", action="store_true",
                    help="train nothing: add the post-processed final scores to --out's runs whose run dirs "
                         "under --work still hold their final export")
    ap.add_argument("overrides", nargs="*", help="dotted overrides applied to every run (e.g. train.amp=bf16)")
    args = ap.parse_args()
    if args.steps % args.eval_every:
        ap.error("--steps must be a multiple of --eval-every")

    from toonlab.data.synth import make_synthtoon
    from toonlab.infer.classic import cartoonize_classic
    from toonlab.infer.postprocess import PostProcess
    from toonlab.models import build_model
    from toonlab.train.config import load_run_config

    data = make_synthtoon(Path(args.work) / f"synthtoon{args.size}", args.n, args.size, 0, n_test=args.n_test)
    _, photos = load_rgb(data / "test/photos")
    _, cartoons = load_rgb(data / "test/cartoons")
    scorers = {"photo2cartoon": Scorer(cartoons), "cartoon2photo": Scorer(photos)}
    inputs = {"photo2cartoon": photos, "cartoon2photo": cartoons}
    classic = torch.cat([cartoonize_classic(p[None]) for p in photos])
    result = {
        "benchmark": "learning_synthtoon", "size": args.size, "batch": args.batch, "steps": args.steps,
        "init_fraction": args.init_fraction, "train_images": args.n, "test_images": len(photos),
        "seeds": [int(s) for s in args.seeds.split(",")], "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "fid_weights": scorers["photo2cartoon"].weights, "fid_error": scorers["photo2cartoon"].fid_error,
        "references": {
            "photo2cartoon": {"identity": scorers["photo2cartoon"](photos),
                              "classic": scorers["photo2cartoon"](classic),
                              "classic_keep_colors": scorers["photo2cartoon"](
                                  PostProcess(keep_colors=True)(classic, photos))},
            "cartoon2photo": {"identity": scorers["cartoon2photo"](cartoons)},
        },
        "systems": {},
    }
    out_path = Path(args.out)
    if out_path.exists():  # merge: earlier invocations' systems / seeds at the same settings are kept
        old = json.loads(out_path.read_text())
        same = ("size", "batch", "steps", "init_fraction", "train_images", "test_images", "fid_weights")
        if any(old.get(k) != result[k] for k in same):
            ap.error(f"{out_path} holds results at other settings: give another --out")
        result["systems"] = old["systems"]
        if args.rescore:
            result["seeds"], result["wall_s"] = old["seeds"], old.get("wall_s")
    if args.rescore:
        rescore(result, Path(args.work), inputs, scorers)
    t0 = time.perf_counter()
    for spec in ([] if args.rescore else args.systems.split(",")):
        label, config = parse_system(spec)
        model_cfg = load_run_config(config).model
        model = build_model(model_cfg["name"], {k: v for k, v in model_cfg.items() if k != "name"})
        task, train_data = model.direction, data
        if model.styles:  # same scenes, cartoons in each of the model's styles; scored in the first
            train_data = make_synthtoon(Path(args.work) / f"synthtoon{args.size}-styles", args.n, args.size, 0,
                                        n_test=args.n_test, styles=list(model.styles))
        entry = result["systems"].setdefault(label, {"task": task, "config": str(config.relative_to(ROOT)),
                                                      "runs": []})
        for seed in result["seeds"]:
            if any(r["seed"] == seed for r in entry["runs"]):
                continue
            entry["runs"].append(train_and_curve(label, config, seed, args, train_data, inputs[task], scorers[task]))
            entry["runs"].sort(key=lambda r: r["seed"])
            entry["summary"] = summarise(entry["runs"])
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(result, indent=1))  # partial results survive an interrupted run
    if not args.rescore:
        result["wall_s"] = round(time.perf_counter() - t0, 1)
    out_path.write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, Path(args.plot))
    print(json.dumps({k: v for k, v in result.items() if k != "systems"}
                     | {"summary": {k: v["summary"] for k, v in result["systems"].items()}}, indent=1))


if __name__ == "__main__":
    main()
