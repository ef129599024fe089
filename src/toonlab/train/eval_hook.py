"""The ``train.eval_every`` hook: score the current generator on a held-out set while training (Toon2real Figs 3–4:
FID every 20 epochs up to 200, with and without spectral norm).

Every ``train.eval_every`` epochs (when the stream position crosses a multiple of that many passes over the photos,
so a resumed run scores at the same epochs) the trainer's current translator (the EMA copy when configured) is
written as ``checkpoints/eval-STEP.safetensors`` — kept: it is what the curve point scored — then translates
``train.eval_inputs`` (the model's input domain: photos, or cartoons for a cartoon → photo model) into
``RUN/eval/step-STEP/`` without post-processing, and the configured ``train.eval_metrics`` are computed:

- ``fid``, ``kid`` (and ``weighted_fid`` with ``train.eval_input_weight``, Toon2real's 0.8·FID(out, ref) +
  0.2·FID(out, in)) against ``train.eval_reference`` when the Inception file exists; otherwise they are skipped
  and the record says why (``eval/skipped``);
- ``psnr``, ``ssim``, ``edge_f1`` against ``train.eval_truth`` (paired truths, same names; e.g. SynthToon).

One record per scoring goes to metrics.jsonl (``{"event": "eval", "step", "epoch", "eval/fid": …}``) and its
numbers to TensorBoard. ``toonlab experiment`` plots them per row (``eval.experiment.eval_curves``). The hook
runs on rank 0 only and never touches the global RNGs (it runs inside a forked RNG state), so training and
its exact resume are the same with and without it.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch

from toonlab.errors import MissingWeightsError, ToonlabError

FEATURE = ("fid", "kid", "weighted_fid")
PAIRED = ("psnr", "ssim", "edge_f1")


class EvalHook:
    """Built by the trainer when ``train.eval_every > 0``; ``maybe_run(trainer)`` after every step."""

    def __init__(self, cfg):
        t = cfg.train
        self.every, self.inputs, self.reference, self.truth = t.eval_every, t.eval_inputs, t.eval_reference, t.eval_truth
        self.metrics, self.input_weight, self.weights = tuple(t.eval_metrics), t.eval_input_weight, t.eval_fid_weights
        for key, folder in (("eval_inputs", self.inputs), ("eval_reference", self.reference),
                            ("eval_truth", self.truth)):
            if folder is not None and not Path(folder).is_dir():
                raise ToonlabError(f"train.{key}: {folder} is not a folder")
        self._evaluator = None
        self._skip_note: str | None = None

    def due(self, trainer) -> bool:
        """True when the step just taken crossed an epoch boundary that is a multiple of ``every``."""
        n = len(trainer.sources.photos)
        now, before = trainer.position // n, (trainer.position - trainer.images_per_step) // n
        return now > before and now % self.every == 0

    def maybe_run(self, trainer) -> dict | None:
        if not self.due(trainer):
            return None
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=devices):  # building the export's model draws initial weights
                rec = self.run(trainer)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        trainer.logger.log(rec)
        return rec

    def run(self, trainer) -> dict:
        from toonlab.checkpoint import save_export
        from toonlab.eval.experiment import translate_folder
        from toonlab.train import distributed as D
        from toonlab.train.trainer import _EMAExport

        step, epoch = trainer.step, trainer.position // len(trainer.sources.photos)
        export = trainer.ckpt_dir / f"eval-{step:07d}.safetensors"
        with D.unwrapped(trainer.model.networks):
            src = _EMAExport(trainer.model, trainer.ema) if trainer.ema is not None else trainer.model
            save_export(src, export, extra={"step": step, "epoch": epoch, "phase": trainer.phase_name})
        out = trainer.run_dir / "eval" / f"step-{step:07d}"
        failed = translate_folder(str(export), Path(self.inputs), out, str(trainer.device),
                                  style=trainer.model.styles[0] if trainer.model.styles else None)
        rec: dict = {"step": step, "epoch": epoch, "event": "eval", "eval/export": str(export),
                     "eval/failed": len(failed)}
        rec.update(self._score(out, trainer.device))
        return rec

    def _score(self, out: Path, device: torch.device) -> dict:
        rec: dict = {}
        paired = [m for m in self.metrics if m in PAIRED]
        if paired and self.truth:
            from toonlab.eval.metrics import score_folders

            rec.update({f"eval/{k}": v for k, v in score_folders(out, self.truth, tuple(paired)).mean().items()})
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
