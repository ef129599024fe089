"""Does each system learn? Train on SynthToon for a fixed step budget, score against the true cartoons (photos).

    python benchmarks/bench_learning.py [--systems ctss,cartoongan,...] [--seeds 0,1,2] [--steps 240]
        [--init-fraction 0.4] [--eval-every 60] [--size 64] [--batch 4] [--n 240] [--n-test 512]
        [--work runs/bench-learning] [--out benchmarks/results/learning.json] [--plot benchmarks/results/learning.png]
        [--rescore] [--rerun-check] [--bootstrap 1000] [OVERRIDE ...]

SynthToon renders every test scene both as a photo and as its true cartoon, so a photo→cartoon generator can be
scored *paired*: PSNR / SSIM of its raw output (no post-processing) against the true cartoon, edge F1 of its Canny
edges against the true cartoon's (``toonlab.eval.metrics.edge_f1``: the outlines that define a cartoon, matched
within 2 px), and FID / KID of its outputs to the true-cartoon test set (512 test scenes by default). Reference
rows on the same test set: the unchanged photos ("identity") and the learning-free classic cartoonizer.
Cartoon→photo systems (toon2real, cyclegan) are scored on the inverse task (cartoons in, true photos as the target;
identity = the cartoons themselves). A multi-style system trains on a
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

**Intervals.** Each system's final scores carry a 95 % bootstrap interval over seeds × images (``ci95``): each of
``--bootstrap`` replicates draws the seeds with replacement and the test scenes with replacement (the same scenes
for every drawn seed, outputs and targets paired), and takes the statistic the table reports — the mean over the
drawn seeds of the per-image mean (PSNR, SSIM, edge F1), or of FID / KID between the drawn outputs' and targets'
Inception features (FID on a fifth of the replicates: it costs an SVD each; KID as the unbiased MMD² over the whole
drawn set, from kernel matrices computed once; FID's as the replicates' central 95 % width centred on the full-set
FID, since the replicates, holding fewer distinct images, sit 10–15 above it). References (identity, classic) get the same interval over
images.
Per-image scores are kept in the JSON (``per_image``), features in the run dir (``final_features.npy``).

**Reproducibility.** The JSON records what the figures depend on (``env``: threads, torch and numpy versions, CPU
model, platform, and a SHA-256 of the SynthToon files). ``--rerun-check`` trains the first system's first seed a
second time in a separate run dir and records both final PSNRs and their difference (``rerun``).

FID/KID need the FID Inception weights (the canonical file, or ``toonlab weights fetch fid-inception``); without
them those columns are null and the JSON says why. The perceptual backbone is the recipes' ``auto`` choice (the
JSON records which one ran). Prints one JSON object and writes it to ``--out``; ``--plot`` draws the curves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
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


PAIRED = ("psnr", "ssim", "edge_f1")
FEATURE = ("fid", "kid")


def paired_per_image(out: torch.Tensor, truth: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image PSNR (dB), SSIM and edge F1 of (N,3,H,W) [0,1] outputs against their true targets: (N,) each."""
    from toonlab.eval.metrics import edge_f1, psnr, ssim

    a = out.permute(0, 2, 3, 1).numpy().astype(np.float64)
    b = truth.permute(0, 2, 3, 1).numpy().astype(np.float64)
    return {name: np.array([f(x, y) for x, y in zip(a, b)])
            for name, f in (("psnr", psnr), ("ssim", ssim), ("edge_f1", edge_f1))}


def paired_scores(out: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB), SSIM and edge F1 of (N,3,H,W) [0,1] outputs against their true targets."""
    return {k: float(v.mean()) for k, v in paired_per_image(out, truth).items()}


def environment(data: Path) -> dict:
    """What the figures depend on: threads, versions, CPU model, platform, SHA-256 of every file under ``data``."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    h = hashlib.sha256()
    for f in sorted(p for p in data.rglob("*") if p.is_file() and p.name != "manifest.json"):
        h.update(str(f.relative_to(data)).encode())
        h.update(f.read_bytes())
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "numpy": np.__version__,
            "cpu": cpu, "platform": platform.platform(), "python": platform.python_version(),
            "data_sha256": h.hexdigest()}


def kid_full(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, idx: np.ndarray) -> float:
    """Unbiased MMD² (KID's) of the outputs and targets at the drawn indices ``idx``, from the full kernel
    matrices (cubic polynomial kernel, :func:`toonlab.eval.fid.kernel_inception_distance`'s). Within-set pairs
    of one image with itself — the diagonal and the bootstrap's repeats — are left out, as the unbiased
    estimator leaves out k(x_i, x_i); on a draw without repeats this is KID over the whole set."""
    a, b, c = kxx[np.ix_(idx, idx)], kyy[np.ix_(idx, idx)], kxy[np.ix_(idx, idx)]
    distinct = idx[:, None] != idx[None, :]
    return float(a[distinct].mean() + b[distinct].mean() - 2 * c.mean())


def bootstrap_ci(per_image: list[dict[str, np.ndarray]], feats: list[np.ndarray | None] | None,
                 target_feats: np.ndarray | None, n_boot: int, seed: int = 0) -> dict[str, list[float]]:
    """95 % percentile intervals of the table's statistics over seeds × images (module docstring): ``per_image``
    one {metric: (N,)} per seed, ``feats`` one (N,D) output-feature array per seed (or None), ``target_feats``
    (N,D). Returns {metric: [low, high]}."""
    from toonlab.eval.fid import frechet_distance_features

    rng = np.random.default_rng(seed)
    n_seeds, n = len(per_image), len(next(iter(per_image[0].values())))
    draws = [(rng.integers(0, n_seeds, n_seeds), rng.integers(0, n, n)) for _ in range(n_boot)]
    out: dict[str, list[float]] = {}
    for key in PAIRED:
        if key in per_image[0]:
            vals = np.stack([p[key] for p in per_image])  # (seeds, N)
            finite = np.where(np.isfinite(vals), vals, np.nan)
            stats = [np.nanmean(finite[np.ix_(s, i)]) for s, i in draws]
            out[key] = [float(v) for v in np.percentile(stats, [2.5, 97.5])]
    if feats and target_feats is not None and all(f is not None for f in feats):
        d = target_feats.shape[1]
        kyy = (target_feats @ target_feats.T / d + 1) ** 3
        kernels = [((f @ f.T / d + 1) ** 3, (f @ target_feats.T / d + 1) ** 3) for f in feats]
        kid = [np.mean([kid_full(kernels[k][0], kyy, kernels[k][1], i) for k in s]) for s, i in draws]
        fid = [np.mean([frechet_distance_features(feats[k][i], target_feats[i]) for k in s])
               for s, i in draws[: max(20, n_boot // 5)]]
        out["kid"] = [float(v) for v in np.percentile(kid, [2.5, 97.5])]
        # FID is biased by the set's size and a draw with repeats holds fewer distinct images, so its replicates sit
        # above the full-set value (by 10–15 on 512 scenes): the interval is the replicates' central 95 % width,
        # centred on the full-set FID the table reports (every system shares the set size, hence the bias)
        full = float(np.mean([frechet_distance_features(f, target_feats) for f in feats]))
        lo, hi = np.percentile(fid, [2.5, 97.5])
        out["fid"] = [full - float(hi - lo) / 2, full + float(hi - lo) / 2]
    return out


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
        return self.detailed(out)[0]

    def detailed(self, out: torch.Tensor) -> tuple[dict[str, float | None], dict[str, np.ndarray],
                                                   np.ndarray | None]:
        """(mean scores, per-image paired scores, (N,D) Inception features of ``out`` or None)."""
        per_image = paired_per_image(out, self.target)
        scores: dict[str, float | None] = {k: float(v.mean()) for k, v in per_image.items()}
        scores["fid"] = scores["kid"] = None
        feats = None
        if self.evaluator is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stats = self.evaluator.image_stats(list(out))
            scores["fid"] = self.evaluator.fid(stats, self.target_stats)
            n = min(len(out), len(self.target))
            scores["kid"] = self.evaluator.kid(stats, self.target_stats, subset_size=n, subsets=50)[0]
            feats = stats.features
        return scores, per_image, feats

    def reference(self, out: torch.Tensor, n_boot: int) -> dict:
        """Scores of a reference row with its 95 % interval over images."""
        scores, per_image, feats = self.detailed(out)
        target = None if self.evaluator is None else self.target_stats.features
        return scores | {"ci95": bootstrap_ci([per_image], [feats], target, n_boot)}


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
                    scorer: Scorer, run: Path | None = None) -> dict:
    """Train one system/seed in ``--eval-every`` segments, scoring ``latest.safetensors`` after each: paired
    metrics at every point, FID / KID too at the last one (512 Inception passes cost minutes on a CPU); the last
    point's per-image scores go into the result, its Inception features into ``final_features.npy``."""
    from toonlab.train.trainer import train

    run = run or Path(args.work) / f"{label}-s{seed}"
    export = run / "checkpoints" / "latest.safetensors"
    overrides = run_overrides(label, config, data, run, seed, args, args.eval_every, args.eval_every)
    curve, t0 = [], time.perf_counter()
    for stop in range(args.eval_every, args.steps + 1, args.eval_every):
        if stop == args.eval_every:
            train(config, overrides + [f"train.max_steps={stop}"])
        else:
            train(None, [f"train.max_steps={stop}"], resume=run)
        out = generator_outputs(export, inputs)
        if stop < args.steps:
            curve.append({"step": stop, **paired_scores(out, scorer.target)})
        else:
            scores, per_image, feats = scorer.detailed(out)
            curve.append({"step": stop, **scores})
            if feats is not None:
                np.save(run / "final_features.npy", feats)
        print(f"[{label} seed {seed}] step {stop}: {curve[-1]}", file=sys.stderr, flush=True)
    return {"seed": seed, "phase_steps": schedule(config, args.steps, args.init_fraction),
            "wall_s": round(time.perf_counter() - t0, 1), "curve": curve, "final": curve[-1],
            "per_image": {k: [round(float(x), 5) for x in v] for k, v in per_image.items()},
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
        entry["summary"] = summarise(entry["runs"], label, work, scorers[task], result["bootstrap"])


def _perceptual_of(run: Path) -> str | None:
    """The perceptual backbone a run resolved to (from its config.yaml), if the model has one."""
    import yaml

    model = yaml.safe_load((run / "config.yaml").read_text()).get("model", {})
    return model.get("perceptual", model.get("vgg_weights"))


def summarise(rows: list[dict], label: str, work: Path, scorer: Scorer, n_boot: int) -> dict:
    """The seeds, and the mean and spread (min, max) of each final metric over them, with the 95 % bootstrap
    interval over seeds × images (``ci95``; runs with per-image scores, FID / KID where every run's
    ``final_features.npy`` is still under ``work``); the spread for each post-processed variant (``final_post``)
    over the seeds that have it."""
    out: dict = {"seeds": [r["seed"] for r in rows]} | _spread([r["final"] for r in rows])
    have = [r for r in rows if "per_image" in r]
    if have:
        feats = [np.load(f) if (f := work / f"{label}-s{r['seed']}" / "final_features.npy").is_file() else None
                 for r in have]
        target = None if scorer.evaluator is None else scorer.target_stats.features
        ci = bootstrap_ci([{k: np.asarray(v) for k, v in r["per_image"].items()} for r in have], feats, target,
                          n_boot)
        for key, interval in ci.items():
            out.setdefault(key, {})["ci95"] = interval
        out["ci95_seeds"] = [r["seed"] for r in have]
    variants = {v for r in rows for v in r.get("final_post", {})}
    for v in sorted(variants):  # post-processed finals: only over the seeds that have them, named
        have = [r for r in rows if v in r.get("final_post", {})]
        out[v] = {"seeds": [r["seed"] for r in have]} | _spread([r["final_post"][v] for r in have])
    return out


def _spread(finals: list[dict]) -> dict:
    """{metric: {mean, min, max}} over ``finals`` (score dicts), for each metric that has values."""
    out = {}
    for key in ("psnr", "ssim", "edge_f1", "fid", "kid"):
        vals = [f[key] for f in finals if f.get(key) is not None]
        if vals:
            out[key] = {"mean": float(np.mean(vals)), "min": float(np.min(vals)), "max": float(np.max(vals))}
    return out


def plot(result: dict, path: Path) -> None:
    """Learning curves (PSNR and, when present, FID vs step; mean over seeds) with reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["psnr", "edge_f1"]  # at every curve point (FID / KID only at the last)
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.6 * len(metrics)), squeeze=False)
    for col, task in enumerate(("photo2cartoon", "cartoon2photo")):
        for row, m in enumerate(metrics):
            ax = axes[row][col]
            for label, sysres in result["systems"].items():
                if sysres["task"] != task:
                    continue
                runs = [r for r in sysres["runs"] if all(m in p for p in r["curve"])]
                if not runs:
                    continue
                steps = [p["step"] for p in runs[0]["curve"]]
                vals = np.array([[p[m] for p in r["curve"]] for r in runs], dtype=float)
                (line,) = ax.plot(steps, vals.mean(0), marker="o", label=label)
                if len(vals) > 1:  # the spread over seeds, in the line's colour
                    ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.15, color=line.get_color())
            for name, ref in result["references"].get(task, {}).items():
                if ref.get(m) is not None:
                    ax.axhline(ref[m], linestyle="--", linewidth=1, color="gray")
                    ax.annotate(name, (0, ref[m]), xycoords=("axes fraction", "data"), fontsize=7, color="gray")
            ax.set_title(f"{task}: {m.upper()} vs step (higher is better)")
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
    ap.add_argument("--n-test", type=int, default=512)
    ap.add_argument("--work", default="runs/bench-learning")
    ap.add_argument("--out", default="benchmarks/results/learning.json")
    ap.add_argument("--plot", default="benchmarks/results/learning.png")
    ap.add_argument("--rescore", action="store_true",
                    help="train nothing: add the post-processed final scores to --out's runs whose run dirs "
                         "under --work still hold their final export")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates of the 95 %% intervals")
    ap.add_argument("--rerun-check", action="store_true",
                    help="train the first system's first seed again in a separate run dir and record both final "
                         "PSNRs (a single-style system: it trains on the plain SynthToon set)")
    ap.add_argument("overrides", nargs="*", help="dotted overrides applied to every run (e.g. train.amp=bf16)")
    args = ap.parse_args()
    if args.steps % args.eval_every:
        ap.error("--steps must be a multiple of --eval-every")

    from toonlab.data.synth import make_synthtoon
    from toonlab.infer.classic import cartoonize_classic
    from toonlab.infer.postprocess import PostProcess
    from toonlab.models import build_model
    from toonlab.train.config import load_run_config

    data = make_synthtoon(Path(args.work) / f"synthtoon{args.size}-t{args.n_test}", args.n, args.size, 0,
                          n_test=args.n_test)
    _, photos = load_rgb(data / "test/photos")
    _, cartoons = load_rgb(data / "test/cartoons")
    inputs = {"photo2cartoon": photos, "cartoon2photo": cartoons}
    targets = {"photo2cartoon": cartoons, "cartoon2photo": photos}
    scorers: dict[str, Scorer] = {}

    def scorer(task: str) -> Scorer:  # built on first use: each one extracts its target set's features once
        if task not in scorers:
            scorers[task] = Scorer(targets[task])
        return scorers[task]

    nb = args.bootstrap
    result = {
        "benchmark": "learning_synthtoon", "size": args.size, "batch": args.batch, "steps": args.steps,
        "init_fraction": args.init_fraction, "train_images": args.n, "test_images": len(photos),
        "seeds": [int(s) for s in args.seeds.split(",")], "torch": torch.__version__,
        "threads": torch.get_num_threads(), "env": environment(data), "bootstrap": nb,
        "fid_weights": scorer("photo2cartoon").weights, "fid_error": scorer("photo2cartoon").fid_error,
        "references": {}, "systems": {},
    }
    out_path = Path(args.out)
    if out_path.exists():  # merge: earlier invocations' systems / seeds / references at the same settings are kept
        old = json.loads(out_path.read_text())
        same = ("size", "batch", "steps", "init_fraction", "train_images", "test_images", "fid_weights",
                "bootstrap")
        if any(old.get(k) != result[k] for k in same):
            ap.error(f"{out_path} holds results at other settings: give another --out")
        if old.get("env", {}).get("data_sha256") != result["env"]["data_sha256"]:
            ap.error(f"{out_path} was measured on other data (SHA-256 differs): give another --out")
        result["systems"], result["references"] = old["systems"], old.get("references", {})
        if "rerun" in old:
            result["rerun"] = old["rerun"]
        if args.rescore:
            result["seeds"], result["wall_s"] = old["seeds"], old.get("wall_s")
    specs = [] if args.rescore else [parse_system(spec) for spec in args.systems.split(",")]
    models = {}
    for label, config in specs:
        model_cfg = load_run_config(config).model
        models[label] = build_model(model_cfg["name"], {k: v for k, v in model_cfg.items() if k != "name"})
    tasks = {m.direction for m in models.values()} | {e["task"] for e in result["systems"].values()}
    refs = result["references"]
    if "photo2cartoon" in tasks and "photo2cartoon" not in refs:
        classic = torch.cat([cartoonize_classic(p[None]) for p in photos])
        p2c = scorer("photo2cartoon")
        refs["photo2cartoon"] = {"identity": p2c.reference(photos, nb), "classic": p2c.reference(classic, nb),
                                 "classic_keep_colors": p2c.reference(PostProcess(keep_colors=True)(classic, photos),
                                                                      nb)}
    if "cartoon2photo" in tasks and "cartoon2photo" not in refs:
        refs["cartoon2photo"] = {"identity": scorer("cartoon2photo").reference(cartoons, nb)}
    if args.rescore:
        rescore(result, Path(args.work), inputs, {t: scorer(t) for t in tasks})
    t0 = time.perf_counter()
    for label, config in specs:
        model = models[label]
        task, train_data = model.direction, data
        if model.styles:  # same scenes, cartoons in each of the model's styles; scored in the first
            train_data = make_synthtoon(Path(args.work) / f"synthtoon{args.size}-t{args.n_test}-styles", args.n,
                                        args.size, 0,
                                        n_test=args.n_test, styles=list(model.styles))
        entry = result["systems"].setdefault(label, {"task": task, "config": str(config.relative_to(ROOT)),
                                                      "runs": []})
        for seed in result["seeds"]:
            if any(r["seed"] == seed for r in entry["runs"]):
                continue
            entry["runs"].append(train_and_curve(label, config, seed, args, train_data, inputs[task], scorer(task)))
            entry["runs"].sort(key=lambda r: r["seed"])
            entry["summary"] = summarise(entry["runs"], label, Path(args.work), scorer(task), nb)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(result, indent=1))  # partial results survive an interrupted run
    if args.rerun_check and not args.rescore:  # the same settings again, in its own run dir
        label, config = parse_system(args.systems.split(",")[0])
        seed = result["seeds"][0]
        first = next(r for r in result["systems"][label]["runs"] if r["seed"] == seed)
        task = result["systems"][label]["task"]
        again = train_and_curve(label, config, seed, args, data, inputs[task], scorer(task),
                                run=Path(args.work) / f"{label}-s{seed}-rerun")
        result["rerun"] = {"system": label, "seed": seed, "psnr": first["final"]["psnr"],
                           "psnr_rerun": again["final"]["psnr"],
                           "abs_diff": abs(first["final"]["psnr"] - again["final"]["psnr"]),
                           "threads": torch.get_num_threads()}
    if not args.rescore:
        result["wall_s"] = round(time.perf_counter() - t0, 1)
    out_path.write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, Path(args.plot))
    print(json.dumps({k: v for k, v in result.items() if k != "systems"}
                     | {"summary": {k: v["summary"] for k, v in result["systems"].items()}}, indent=1))


if __name__ == "__main__":
    main()
