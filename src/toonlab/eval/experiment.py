"""Experiments: a list of runs (rows) × datasets (column groups) → train or reuse → translate → score → report.

An experiment file (``configs/experiments/NAME.yaml``)::

    title: CTSS Table III — ablations
    paper: Gao, Zhang & Tian, ICML 2022, Table III
    out: runs/experiments/ctss-table3          # outputs/, runs/, results.json, report.md, report.html, grid-*.png
    metrics: [fid, kid, psnr, ssim, edge_f1]   # cells, as available (fid/kid need the Inception weights,
                                               #  psnr/ssim/edge_f1 need paired truths, e.g. SynthToon's)
    train_overrides: [train.max_steps=40]      # applied to every trained row (e.g. small CPU runs)
    grid_images: 4                             # test images shown per row in the image grid
    datasets:                                  # column groups
      - name: SynthToon
        synth: {root: runs/synthtoon-64, n: 24, size: 64, seed: 0}   # generated if missing; fills the paths
      - name: TWR
        train_photos: data/train_photo         # → run config data.photos
        train_cartoons: data/TWR/style         # → run config data.cartoons
        test_inputs: data/test_photo           # translated by every row
        fid_reference: data/TWR/style          # FID / KID reference set (the target domain)
        truth: null                            # paired truths of test_inputs (same names) for PSNR/SSIM/edge F1
        input_weight: null                     # Toon2real weighted FID: 0.2 → 0.8·FID(out, ref) + 0.2·FID(out, in)
    rows:
      - {name: Learning-free abstraction, classic: true}
      - {name: CTSS, config: ../ctss.yaml, overrides: [model.K=32]}
      - {name: CTSS (published run), run: runs/ctss}   # reuse a run dir / export: never trained here

Relative paths inside the file are relative to the current directory, except ``config:`` (relative to the file,
like ``base:``). A trained row's run dir is ``OUT/runs/ROW/DATASET``; it is reused (not retrained) when it already
holds ``checkpoints/latest.safetensors``.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toonlab.config import from_dict, load_yaml
from toonlab.errors import ConfigError, MissingWeightsError, ToonlabError
from toonlab.eval.report import (METRIC_FORMATS, ResultTable, fid_weights_note, image_grid, render_html,
                                 render_markdown, write_text)

FEATURE_METRICS = ("fid", "kid", "weighted_fid")
PAIRED = ("psnr", "ssim", "edge_f1")


@dataclass
class SynthSpec:
    root: str
    n: int = 24
    size: int = 64
    seed: int = 0


@dataclass
class DatasetSpec:
    name: str
    synth: SynthSpec | None = None
    train_photos: str | None = None
    train_cartoons: str | None = None
    test_inputs: str | None = None
    fid_reference: str | None = None
    truth: str | None = None
    input_weight: float | None = None  # weight of FID(outputs, inputs) in the weighted FID (Toon2real: 0.2)


@dataclass
class RowSpec:
    name: str
    classic: bool = False
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    run: str | None = None  # an existing run dir or export file: reused, never trained


@dataclass
class ExperimentSpec:
    title: str
    datasets: list[DatasetSpec]
    rows: list[RowSpec]
    out: str = "runs/experiments/experiment"
    paper: str = ""
    notes: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["fid", "kid", "psnr", "ssim", "edge_f1"])
    train_overrides: list[str] = field(default_factory=list)
    grid_images: int = 4
    device: str = "cpu"
    fid_weights: str | None = None  # path of the Inception file; null = $TORCH_HOME/hub/checkpoints
    fid_batch_size: int = 16


def load_experiment(path: str | Path) -> tuple[ExperimentSpec, Path]:
    """Read and check an experiment file; returns the spec and the file's folder (for ``config:`` paths)."""
    path = Path(path)
    spec = from_dict(ExperimentSpec, load_yaml(path))
    bad = [m for m in spec.metrics if m not in METRIC_FORMATS]
    if bad:
        raise ConfigError(f"{path}: unknown metric(s) {', '.join(bad)} (valid: {', '.join(METRIC_FORMATS)})")
    for r in spec.rows:
        if sum([r.classic, r.config is not None, r.run is not None]) != 1:
            raise ConfigError(f"{path}: row {r.name!r} needs exactly one of classic: true, config: or run:")
        if r.config is not None and not (path.parent / r.config).is_file():
            raise ConfigError(f"{path}: row {r.name!r}: config {path.parent / r.config} not found")
    names = [r.name for r in spec.rows]
    if len(set(names)) != len(names) or len({d.name for d in spec.datasets}) != len(spec.datasets):
        raise ConfigError(f"{path}: row and dataset names must be unique")
    for d in spec.datasets:
        if d.synth is None and (d.test_inputs is None):
            raise ConfigError(f"{path}: dataset {d.name!r} needs synth: or test_inputs:")
    return spec, path.parent


def slug(name: str) -> str:
    """A file-system-safe name: ``"CTSS (K=32)"`` → ``"ctss-k-32"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "row"


def _resolve_dataset(d: DatasetSpec, log: Callable[[str], None]) -> DatasetSpec:
    """Fill a SynthToon dataset's paths (generating it when missing): train photos/cartoons, test photos as
    inputs, test cartoons as both FID reference and paired truth."""
    if d.synth is None:
        return d
    root = Path(d.synth.root)
    if not (root / "manifest.json").is_file():
        from toonlab.data.synth import make_synthtoon

        log(f"generating SynthToon in {root} (n={d.synth.n}, size={d.synth.size})")
        make_synthtoon(root, d.synth.n, d.synth.size, d.synth.seed)
    return DatasetSpec(name=d.name, train_photos=str(root / "train/photos"), train_cartoons=str(root / "train/cartoons"),
                       test_inputs=str(root / "test/photos"), fid_reference=str(root / "test/cartoons"),
                       truth=str(root / "test/cartoons"), input_weight=d.input_weight)


def _final_export(run_dir: Path) -> Path | None:
    p = run_dir / "checkpoints" / "latest.safetensors"
    return p if p.is_file() else None


def _train_row(row: RowSpec, d: DatasetSpec, spec: ExperimentSpec, base_dir: Path, run_dir: Path,
               log: Callable[[str], None]) -> Path:
    """Train one (row, dataset) run with the TRAIN engineer's trainer, or reuse its final export."""
    done = _final_export(run_dir)
    if done is not None:
        log(f"reusing {done}")
        return done
    if not d.train_photos or not d.train_cartoons:
        raise ConfigError(f"dataset {d.name!r} has no train_photos/train_cartoons to train row {row.name!r}")
    from toonlab.train.trainer import train

    overrides = [f"data.photos={d.train_photos}", f"data.cartoons={d.train_cartoons}", f"train.run_dir={run_dir}",
                 *spec.train_overrides, *row.overrides]
    log(f"training {row.name} on {d.name} → {run_dir}")
    result = train(base_dir / row.config, overrides)
    export = Path(result.get("export") or run_dir / "checkpoints" / "latest.safetensors")
    if not export.is_file():
        raise ToonlabError(f"training {row.name!r} on {d.name!r} finished without an export in {run_dir}")
    return export


def translate_folder(model_ref: str, inputs: Path, out_dir: Path, device: str) -> list[tuple[str, str]]:
    """Translate every image of ``inputs`` into ``out_dir`` (same relative names, PNG); returns failures."""
    import torch

    from toonlab.infer.translator import Translator
    from toonlab.io import list_images, read_image, write_image

    translator = Translator.load(model_ref, device=device)
    failed = []
    for f in list_images([str(inputs)]):
        try:
            rgb = read_image(f).rgb
            with torch.inference_mode():
                y = translator.translate_tensor(rgb[None])[0]
            write_image(out_dir / f.relative_to(inputs).with_suffix(".png"), y.float().cpu(), overwrite=True)
        except ToonlabError as e:
            failed.append((str(f), str(e)))
    return failed


@dataclass
class ExperimentResult:
    table: ResultTable
    notes: list[str]
    report_md: Path
    report_html: Path
    results_json: Path
    grids: list[Path]


def run_experiment(path: str | Path, *, out: str | Path | None = None, log: Callable[[str], None] = print,
                   fid_evaluator=None) -> ExperimentResult:
    """Train/reuse every row on every dataset, translate the test inputs, score, and write the report."""
    spec, base_dir = load_experiment(path)
    out_dir = Path(out or spec.out)
    datasets = [_resolve_dataset(d, log) for d in spec.datasets]
    metrics = [m for m in spec.metrics if m != "weighted_fid" or any(d.input_weight for d in datasets)]
    if any(d.input_weight for d in datasets) and "fid" in metrics and "weighted_fid" not in metrics:
        metrics.insert(metrics.index("fid") + 1, "weighted_fid")
    table = ResultTable(rows=[r.name for r in spec.rows], groups=[d.name for d in datasets], metrics=metrics)
    notes = list(spec.notes)
    failures: list[str] = []
    fid_error: str | None = None
    evaluator = fid_evaluator
    if evaluator is None and any(m in FEATURE_METRICS for m in metrics):
        from toonlab.eval.fid import FIDEvaluator

        evaluator = FIDEvaluator(spec.fid_weights, device=spec.device, batch_size=spec.fid_batch_size)

    outputs: dict[tuple[str, str], Path] = {}
    for row in spec.rows:
        for d in datasets:
            key = (row.name, d.name)
            if row.classic:
                model_ref = "classic"
            elif row.run is not None:
                model_ref = row.run
            else:
                model_ref = str(_train_row(row, d, spec, base_dir, out_dir / "runs" / slug(row.name) / slug(d.name),
                                           log))
            o = out_dir / "outputs" / slug(row.name) / slug(d.name)
            log(f"translating {d.test_inputs} with {row.name}")
            failures += [f"{row.name}/{d.name}: {p}: {m}" for p, m in translate_folder(
                model_ref, Path(d.test_inputs), o, spec.device)]
            outputs[key] = o
            cell: dict[str, float | None] = {m: None for m in metrics}
            spread: dict[str, float] = {}
            if d.truth and any(m in PAIRED for m in metrics):
                from toonlab.eval.metrics import score_folders

                paired = score_folders(o, d.truth, tuple(m for m in metrics if m in PAIRED))
                cell.update(paired.mean())
                failures += [f"{row.name}/{d.name}: {p}: {m}" for p, m in paired.failed]
            if evaluator is not None and fid_error is None and d.fid_reference:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # the small-set note is added once, below
                        if "fid" in metrics:
                            cell["fid"] = evaluator.fid(o, d.fid_reference)
                        if "weighted_fid" in metrics and d.input_weight:
                            from toonlab.eval.fid import weighted_fid

                            cell["weighted_fid"] = weighted_fid(cell["fid"], evaluator.fid(o, d.test_inputs),
                                                                1 - d.input_weight)
                        if "kid" in metrics:
                            cell["kid"], spread["kid"] = evaluator.kid(o, d.fid_reference)
                except MissingWeightsError as e:
                    fid_error = str(e)
            table.cells[key] = cell
            if spread:
                table.spread[key] = spread

    if fid_error:
        notes.append(f"FID/KID not computed: {fid_error}")
    elif evaluator is not None and any(d.fid_reference for d in datasets):  # the weights behind the FID cells
        notes.append(fid_weights_note(evaluator.weights_label))
    n_test = {d.name: _count(d.test_inputs) for d in datasets}
    if any(m in FEATURE_METRICS for m in metrics) and fid_error is None and min(n_test.values()) < 2048:
        notes.append(f"test sets of {', '.join(f'{k}: {v}' for k, v in n_test.items())} images: FID is unstable "
                     f"and biased upwards below 2048 images — compare KID (shown ×10³, mean ± std over subsets)")
    notes += [f"failed: {f}" for f in failures]

    grids = _write_grids(spec, datasets, outputs, out_dir)
    intro = " ".join(x for x in (f"Reproduces: {spec.paper}." if spec.paper else "",
                                 f"Rows: {len(spec.rows)} methods; datasets: {', '.join(table.groups)}.") if x)
    rel = [(f"{d.name}: test inputs through every row", g.name) for d, g in zip(datasets, grids)]
    md = write_text(out_dir / "report.md", render_markdown(table, title=spec.title, intro=intro, notes=notes,
                                                           grids=rel))
    page = write_text(out_dir / "report.html", render_html(table, title=spec.title, intro=intro, notes=notes,
                                                           grids=rel))
    res = write_text(out_dir / "results.json", json.dumps({
        "title": spec.title, "rows": table.rows, "datasets": table.groups, "metrics": metrics,
        "cells": {f"{r}|{g}": {m: _json_num(v) for m, v in table.cells.get((r, g), {}).items()}
                  for r in table.rows for g in table.groups},
        "spread": {f"{r}|{g}": v for (r, g), v in table.spread.items()}, "notes": notes}, indent=2))
    return ExperimentResult(table, notes, md, page, res, grids)


def _count(folder: str | None) -> int:
    from toonlab.io import list_images

    return len(list_images([folder])) if folder and Path(folder).is_dir() else 0


def _json_num(v: float | None) -> Any:
    return None if v is None else (v if math.isfinite(v) else str(v))


def _write_grids(spec: ExperimentSpec, datasets: list[DatasetSpec], outputs: dict, out_dir: Path) -> list[Path]:
    """One grid per dataset: the first ``grid_images`` test inputs, then every row's outputs of them."""
    from toonlab.io import list_images, read_image, write_image

    def load(p: Path):
        try:
            return (read_image(p).rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        except ToonlabError:
            return None

    paths = []
    for d in datasets:
        inputs = list_images([d.test_inputs])[: spec.grid_images]
        rows = [("input", [load(f) for f in inputs])]
        if d.truth:
            rows.append(("true cartoon", [load(_same_name(Path(d.truth), f.relative_to(d.test_inputs)))
                                          for f in inputs]))
        for r in spec.rows:
            o = outputs[(r.name, d.name)]
            rows.append((r.name, [load(o / f.relative_to(d.test_inputs).with_suffix(".png")) for f in inputs]))
        p = out_dir / f"grid-{slug(d.name)}.png"
        write_image(p, image_grid(rows), overwrite=True)
        paths.append(p)
    return paths


def _same_name(folder: Path, rel: Path) -> Path:
    """The file of ``folder`` with ``rel``'s relative name and any image extension (first match)."""
    hits = sorted(folder.glob(f"{rel.with_suffix('').as_posix()}.*"))
    return hits[0] if hits else folder / rel
