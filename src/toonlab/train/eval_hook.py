"""The ``train.eval_every`` hook: score the current generator on a held-out set while training (Toon2real Figs 3–4:
FID every 20 epochs up to 200, with and without spectral norm) without stalling it.

Every ``train.eval_every`` epochs (when the stream position crosses a multiple of that many passes over the photos,
so a resumed run scores at the same epochs) the trainer's current translator (the EMA copy when configured) is
written as ``checkpoints/eval-STEP.safetensors`` — kept: it is what the curve point scored — and run directly on
the training device over ``train.eval_inputs`` (the model's input domain: photos, or cartoons for a cartoon →
photo model), ``train.eval_batch`` images per forward pass, under the training's autocast, without
post-processing and without a Translator (no per-image set-up, backend timing, memory calibration or ONNX). The
inputs and truths are read once, at the first scoring. Outputs are rounded to 8 bits, written to
``RUN/eval/step-STEP/`` as PNG (same relative names) and scored from those 8-bit values:

- ``psnr``, ``ssim`` on the device (float64; the definitions of ``toonlab.eval.metrics``) and ``edge_f1`` (Canny:
  OpenCV, on the host) against ``train.eval_truth`` (paired truths, same names; e.g. SynthToon);
- ``fid``, ``kid`` (and ``weighted_fid`` with ``train.eval_input_weight``, Toon2real's 0.8·FID(out, ref) +
  0.2·FID(out, in)) against ``train.eval_reference``, only when configured and the Inception file exists;
  otherwise they are skipped and the record says why (``eval/skipped``).

One record per scoring goes to metrics.jsonl (``{"event": "eval", "step", "epoch", "eval/psnr": …,
"eval/seconds": this scoring's wall time, "eval/share": all scorings' time / the wall time of this fit so far}``)
and its numbers to TensorBoard. ``toonlab experiment`` plots them per row (``eval.experiment.eval_curves``). The
hook runs on rank 0 only and never touches the global RNGs (it runs inside a forked RNG state), so training and
its exact resume are the same with and without it.
"""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from toonlab.errors import MissingWeightsError, ToonlabError

FEATURE = ("fid", "kid", "weighted_fid")
PAIRED = ("psnr", "ssim", "edge_f1")


def psnr_batch(out: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """PSNR in dB (data range 1) of (B,C,H,W) images in [0,1] → (B,) float64; identical images → inf."""
    mse = ((out.double() - truth.double()) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse)


def ssim_batch(out: torch.Tensor, truth: torch.Tensor, sigma: float = 1.5, k1: float = 0.01,
               k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM of (B,C,H,W) images in [0,1] → (B,) float64: ``toonlab.eval.metrics.ssim`` batched on the device
    (Gaussian σ=1.5 window of 11 taps, population covariances, valid interior, mean over channels)."""
    from toonlab.eval.metrics import _gaussian_window

    radius = int(3.5 * sigma + 0.5)
    c = out.shape[1]
    g = _gaussian_window(sigma, radius).to(out.device)
    kx, ky = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t):  # separable valid convolution per channel
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    x, y = out.double(), truth.double()
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + k1 ** 2) * (2 * cxy + k2 ** 2)) / ((mx * mx + my * my + k1 ** 2) * (vx + vy + k2 ** 2))
    return s.mean(dim=(1, 2, 3))


def _hwc(rgb: torch.Tensor) -> np.ndarray:
    """(3,H,W) host tensor → contiguous (H,W,3) array of the same dtype (uint8 → PNG; float → metrics, float64)."""
    a = np.ascontiguousarray(rgb.permute(1, 2, 0).numpy())
    return a if a.dtype == np.uint8 else a.astype(np.float64)


class EvalHook:
    """Built by the trainer when ``train.eval_every > 0``; ``maybe_run(trainer)`` after every step."""

    def __init__(self, cfg):
        t = cfg.train
        self.every, self.inputs = t.eval_every, t.eval_inputs
        self.reference, self.truth = t.eval_reference, t.eval_truth
        self.metrics, self.input_weight, self.weights = tuple(t.eval_metrics), t.eval_input_weight, t.eval_fid_weights
        self.batch = t.eval_batch
        for key, folder in (("eval_inputs", self.inputs), ("eval_reference", self.reference),
                            ("eval_truth", self.truth)):
            if folder is not None and not Path(folder).is_dir():
                raise ToonlabError(f"train.{key}: {folder} is not a folder")
        self._evaluator = None
        self._skip_note: str | None = None
        self._pairs: list[tuple[Path, torch.Tensor, torch.Tensor | None]] | None = None  # (rel, input, truth)
        self._failed: list[str] = []
        self.seconds = 0.0  # every scoring's wall time in this fit
        self.started = time.perf_counter()  # the fit's start (eval/share's denominator runs from here)

    def due(self, trainer) -> bool:
        """True when the step just taken crossed an epoch boundary that is a multiple of ``every``."""
        n = len(trainer.sources.photos)
        now, before = trainer.position // n, (trainer.position - trainer.images_per_step) // n
        return now > before and now % self.every == 0

    def maybe_run(self, trainer) -> dict | None:
        if not self.due(trainer):
            return None
        t0 = time.perf_counter()
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=devices):
                rec = self.run(trainer)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        now = time.perf_counter()
        self.seconds += now - t0
        rec["eval/seconds"] = round(now - t0, 4)
        rec["eval/share"] = round(self.seconds / max(now - self.started, 1e-9), 5)
        trainer.logger.log(rec)
        return rec

    def _load(self) -> None:
        """Read the held-out inputs and their truths once: (3,H,W) [0,1] host tensors."""
        from toonlab.io import list_images, read_image

        root = Path(self.inputs)
        truths = {}
        if self.truth:
            truth_root = Path(self.truth)
            truths = {f.relative_to(truth_root).with_suffix("").as_posix(): f for f in list_images([truth_root])}
        self._pairs = []
        for f in list_images([root]):
            rel = f.relative_to(root)
            try:
                x = read_image(f).rgb
                t = truths.get(rel.with_suffix("").as_posix())
                truth = read_image(t).rgb if t is not None else None
            except ToonlabError as e:
                self._failed.append(f"{f}: {str(e).splitlines()[0]}")
                continue
            self._pairs.append((rel, x, truth))

    @torch.no_grad()
    def translate(self, trainer) -> list[tuple[Path, torch.Tensor, torch.Tensor | None]]:
        """(rel, output (3,H,W) uint8 on the device, truth (3,H,W) [0,1] host tensor or None) of every input,
        ``eval_batch`` same-sized inputs per forward pass (padded by reflection to the model's size multiple)."""
        from toonlab.train import distributed as D

        if self._pairs is None:
            self._load()
        by_shape: dict[tuple, list[int]] = {}
        for i, (_, x, _) in enumerate(self._pairs):
            by_shape.setdefault(tuple(x.shape), []).append(i)
        m, dev = trainer.model.size_multiple, trainer.device
        fmt = torch.channels_last if trainer.cfg.train.channels_last else torch.preserve_format
        outs: dict[int, torch.Tensor] = {}
        with D.unwrapped(trainer.model.networks):
            tr = trainer._translator()
            was_training = tr.training
            tr.eval()
            try:
                for (_, h, w), idx in by_shape.items():
                    for s in range(0, len(idx), self.batch):
                        part = idx[s: s + self.batch]
                        x = torch.stack([self._pairs[i][1] for i in part]).to(dev, non_blocking=True) * 2 - 1
                        x = F.pad(x, (0, -w % m, 0, -h % m), mode="reflect") if (h % m or w % m) else x
                        x = x.contiguous(memory_format=fmt)
                        args = (torch.zeros(len(x), dtype=torch.long, device=dev),) if trainer.model.styles else ()
                        with trainer._autocast():
                            y = tr(x, *args)
                        y = ((y[..., :h, :w].float() + 1) / 2).clamp(0, 1)
                        for i, u8 in zip(part, (y * 255).round().to(torch.uint8)):
                            outs[i] = u8
            finally:
                tr.train(was_training)
        return [(rel, outs[i], truth) for i, (rel, _, truth) in enumerate(self._pairs)]

    def run(self, trainer) -> dict:
        from toonlab.checkpoint import save_export
        from toonlab.io import write_image
        from toonlab.train import distributed as D

        step, epoch = trainer.step, trainer.position // len(trainer.sources.photos)
        export = trainer.ckpt_dir / f"eval-{step:07d}.safetensors"
        with D.unwrapped(trainer.model.networks):
            save_export(trainer.export_source(), export,
                        extra={"step": step, "epoch": epoch, "phase": trainer.phase_name})
        results = self.translate(trainer)
        out = trainer.run_dir / "eval" / f"step-{step:07d}"
        paired = [m for m in self.metrics if m in PAIRED] if self.truth else []
        scores: dict[str, list[float]] = {m: [] for m in paired}
        for rel, u8, truth in results:
            host = u8.cpu()
            write_image(out / rel.with_suffix(".png"), _hwc(host), overwrite=True)
            if truth is None or not paired:
                continue
            if truth.shape != u8.shape:  # as score_folders: the output is resized to its truth
                q = F.interpolate(host[None].float() / 255, size=truth.shape[-2:], mode="bilinear",
                                  antialias=True, align_corners=False)[0].clamp(0, 1).to(u8.device)
            else:
                q = u8.double() / 255
            t = truth.to(u8.device)
            if "psnr" in scores:
                scores["psnr"].append(psnr_batch(q[None], t[None]))
            if "ssim" in scores:
                scores["ssim"].append(ssim_batch(q[None], t[None]))
            if "edge_f1" in scores:
                from toonlab.eval.metrics import edge_f1

                scores["edge_f1"].append(torch.tensor([edge_f1(_hwc(q.cpu()), _hwc(truth))]))
        failed = self._failed + [f"{rel}: no truth" for rel, _, truth in results if truth is None and paired]
        rec: dict = {"step": step, "epoch": epoch, "event": "eval", "eval/export": str(export),
                     "eval/failed": len(failed)}
        for m, vals in scores.items():
            if vals:
                rec[f"eval/{m}"] = float(torch.cat([v.double().cpu() for v in vals]).mean())
        rec.update(self._feature_scores(out, trainer.device))
        return rec

    def _feature_scores(self, out: Path, device: torch.device) -> dict:
        rec: dict = {}
        feature = [m for m in self.metrics if m in FEATURE]
        if feature and self.reference and self._skip_note is None:
            try:
                ev = self._fid(device)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # small held-out sets: the note belongs to the report
                    fid = ev.fid(out, self.reference) if {"fid", "weighted_fid"} & set(feature) else None
                    if "fid" in feature:
                        rec["eval/fid"] = fid
                    if "weighted_fid" in feature and self.input_weight:
                        from toonlab.eval.fid import weighted_fid

                        rec["eval/weighted_fid"] = weighted_fid(fid, ev.fid(out, self.inputs), 1 - self.input_weight)
                    if "kid" in feature:
                        rec["eval/kid"], rec["eval/kid_std"] = ev.kid(out, self.reference)
            except MissingWeightsError as e:
                self._skip_note = f"{', '.join(feature)} not computed: {str(e).splitlines()[0]}"
        if self._skip_note is not None:
            rec["eval/skipped"] = self._skip_note
        return rec

    def _fid(self, device: torch.device):
        if self._evaluator is None:
            from toonlab.eval.fid import FIDEvaluator

            self._evaluator = FIDEvaluator(self.weights, device=device)
        return self._evaluator
