"""``toonlab evaluate``: translate a test folder with a model (or take existing outputs) and score the outputs.

Scores: FID / KID against a reference set of the output domain, the Toon2real weighted FID when a target set is
given, and the SynthToon paired scores (PSNR, SSIM, edge F1) when the reference holds the true outputs under the
same file names as the inputs.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from toonlab.errors import MissingWeightsError, ToonlabError, UsageError
from toonlab.eval.metrics import PAIRED_METRICS

ALL_METRICS = ("fid", "kid", *PAIRED_METRICS)


@dataclass
class EvalResult:
    """``scores``: metric → value (``kid_std`` beside ``kid``); ``counts``: images per role; ``failed``: (file, why)."""

    scores: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outputs: str | None = None

    def to_json(self) -> dict:
        import math

        return {"scores": {k: (v if math.isfinite(v) else str(v)) for k, v in self.scores.items()},
                "counts": self.counts, "failed": [{"file": f, "error": m} for f, m in self.failed],
                "notes": self.notes, "outputs": self.outputs}


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"fid,kid"`` → ("fid", "kid"); unknown names raise UsageError."""
    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in ALL_METRICS]
    if bad or not names:
        raise UsageError(f"--metrics: unknown {', '.join(bad) or '(empty)'} (valid: {', '.join(ALL_METRICS)})")
    return names


def _names(folder: Path) -> set[str]:
    from toonlab.io import list_images

    return {f.relative_to(folder).with_suffix("").as_posix() for f in list_images([str(folder)])}


def evaluate(*, model: str | None = None, photos: str | None = None, cartoons: str | None = None,
             targets: str | None = None, outputs: str | None = None, reference: str | None = None,
             inputs: str | None = None, out: str | None = None, metrics: tuple[str, ...] = ALL_METRICS,
             device: str = "auto", inception: str | None = None, cache_dir: str | None = None,
             use_cache: bool = True, batch_size: int = 16, kid_subsets: int = 100,
             kid_subset_size: int = 1000) -> EvalResult:
    """Two modes:

    - ``model`` + ``photos`` + ``cartoons``: translate ``photos`` (photo → cartoon) and score against ``cartoons``;
      ``model`` + ``cartoons`` + ``targets`` (no photos): translate ``cartoons`` (cartoon → photo, Toon2real) and
      score against ``targets``; whenever ``targets`` is given it is the FID reference and the weighted FID
      0.8·FID(outputs, targets) + 0.2·FID(outputs, inputs) is added. ``model`` = export / run dir / "classic".
    - ``outputs`` + ``reference`` (+ ``inputs`` for the weighted FID): score two existing folders.
    Paired scores (PSNR/SSIM/edge F1) use ``cartoons`` (with ``photos``) or the reference as the truths, where
    file names match the outputs'. Without the Inception weights (offline), FID/KID are left out with a note and
    the other metrics are scored, as ``toonlab experiment`` does; only when nothing else was asked is it an error.
    """
    res = EvalResult()
    if outputs is not None:
        if model is not None or reference is None:
            raise UsageError("give either --model (with --photos/--cartoons) or --outputs with --reference")
        out_dir, ref_dir = Path(outputs), Path(reference)
        in_dir = Path(inputs) if inputs else None
        weighted = in_dir is not None
        truth_dir = ref_dir
    else:
        if model is None:
            raise UsageError("give --model CKPT (or 'classic') with --photos/--cartoons, or --outputs and --reference")
        if photos is None and (cartoons is None or targets is None):
            raise UsageError("--model needs --photos DIR with --cartoons DIR (photo → cartoon), or --cartoons DIR "
                             "with --targets DIR (cartoon → photo)")
        in_dir = Path(photos) if photos is not None else Path(cartoons)
        ref_dir = Path(targets) if targets is not None else Path(cartoons) if cartoons is not None else None
        if ref_dir is None:
            raise UsageError("--photos needs --cartoons DIR (reference cartoons) to score against")
        weighted = targets is not None
        truth_dir = Path(cartoons) if photos is not None and cartoons is not None else ref_dir
        out_dir = None
    for label, p in (("inputs", in_dir), ("reference", ref_dir), ("truth", truth_dir), ("outputs", out_dir)):
        if p is not None and not p.is_dir():
            raise UsageError(f"{label} folder not found: {p}")

    from toonlab.device import resolve_device

    device = str(resolve_device(device, key="--device"))
    evaluator = None
    if any(m in ("fid", "kid") for m in metrics):
        from toonlab.eval.fid import FIDEvaluator

        evaluator = FIDEvaluator(inception, device=device, batch_size=batch_size, cache_dir=cache_dir,
                                 use_cache=use_cache)
        try:  # fail fast, before translating anything
            evaluator.network()
        except MissingWeightsError as e:
            if not any(m in PAIRED_METRICS for m in metrics):
                raise MissingWeightsError(f"FID/KID can't be computed: {e}; --metrics psnr,ssim,edge_f1 scores "
                                          f"without it") from None
            res.notes.append(f"FID/KID not computed: {e}")
            evaluator = None

    if out_dir is None:
        out_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="toonlab-eval-"))
        from toonlab.infer.batch import translate_folder

        res.failed += translate_folder(model, in_dir, out_dir, device)
    res.outputs = str(out_dir)
    res.counts = {"outputs": len(_names(out_dir)), "reference": len(_names(ref_dir))}
    if in_dir is not None:
        res.counts["inputs"] = len(_names(in_dir))

    paired = [m for m in metrics if m in PAIRED_METRICS]
    if paired:
        if _names(out_dir) & _names(truth_dir):
            from toonlab.eval.metrics import score_folders

            ps = score_folders(out_dir, truth_dir, tuple(paired))
            res.scores.update(ps.mean())
            res.counts["paired"] = len(ps.per_image)
            res.failed += ps.failed
        else:
            res.notes.append(f"{', '.join(paired)} skipped: no output has a same-named true image in {truth_dir}")
    if evaluator is not None:
        from toonlab.eval.fid import SmallSampleWarning, kernel_inception_distance, weighted_fid
        from toonlab.eval.report import fid_weights_note

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SmallSampleWarning)
            so, sr = evaluator.folder_stats(out_dir), evaluator.folder_stats(ref_dir)
            if "fid" in metrics:
                res.scores["fid"] = evaluator.fid(so, sr)
                if weighted:
                    res.scores["weighted_fid"] = weighted_fid(res.scores["fid"], evaluator.fid(so, in_dir))
            if "kid" in metrics:
                res.scores["kid"], res.scores["kid_std"] = kernel_inception_distance(
                    so.features, sr.features, subsets=kid_subsets, subset_size=kid_subset_size)
        res.notes += sorted({str(w.message) for w in caught if issubclass(w.category, SmallSampleWarning)})
        res.notes.append(fid_weights_note(evaluator.weights_label))
    if not res.scores:  # an empty table with exit 0 read as success
        raise ToonlabError(f"nothing was scored: {'; '.join(res.notes) or 'no metric applied'}")
    return res
