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

More per-dataset keys: ``direction`` (``photo2cartoon`` default: the test inputs are photos; ``cartoon2photo``:
cartoons, for Toon2real's tables) — a row whose translator goes the other way is refused in one line before anything
trains; ``style`` (multi-style tables): ``train_cartoons`` is then a root with one sub-folder per style (names
matched case-insensitively); a multi-style row trains ONE model on the whole root and translates this column with
this style, a single-style row trains on the style's sub-folder. Per-row ``note:`` is printed under the table
(labels, protocol differences). ``saturation`` is the post-processing of EVERY row (1.0 = none; CTSS's tables
use 1.4, "+40 % for all related methods … for fair comparison", Fig. 7): rows never follow their own configs'
post-processing, so they are compared on equal terms. ``study: {datasets: [...]}`` prepares a rating study
(``toonlab study serve``) over the rows' outputs and, once ratings exist, folds ``toonlab study report`` into
the table as a "Subjective" column (seed 000 Table 1). Rows trained with ``train.eval_every`` (the eval hook,
``toonlab.train.eval_hook``) get metric-vs-epoch curves (``curve-METRIC-DATASET.png``, Toon2real Figs 3–4); in
``train_overrides`` / row ``overrides``, ``{test_inputs}``, ``{fid_reference}`` and ``{truth}`` stand for the
dataset's folders (``train.eval_inputs={test_inputs}``).

Relative paths inside the file are relative to the current directory, except ``config:`` (relative to the file,
like ``base:``). A trained row's run dir is ``OUT/runs/ROW/DATASET`` (for a model trained once for several
datasets, e.g. a multi-style row, the first such dataset). Its ``experiment-row.json`` records the steps it
completed of those planned: a complete row is reused (not retrained), an incomplete one resumes. A training stopped
by SIGINT/SIGTERM stops the experiment (exit 128 + signal, nothing translated or reported); one cut short by
``train.max_minutes`` is scored and noted as incomplete in the report.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from toonlab.config import from_dict, load_yaml
from toonlab.errors import ConfigError, MissingWeightsError, ToonlabError
from toonlab.eval.report import (METRIC_FORMATS, ResultTable, fid_weights_note, image_grid, render_html,
                                 render_markdown, write_text)
from toonlab.infer.batch import match_style, translate_folder

FEATURE_METRICS = ("fid", "kid", "weighted_fid")
PAIRED = ("psnr", "ssim", "edge_f1")
Direction = Literal["photo2cartoon", "cartoon2photo"]


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
    direction: Direction = "photo2cartoon"  # what the test inputs are: photos (→ cartoons) or cartoons (→ photos)
    style: str | None = None  # this column's style; train_cartoons is then a root with one sub-folder per style


@dataclass
class RowSpec:
    name: str
    classic: bool = False
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    run: str | None = None  # an existing run dir or export file: reused, never trained
    note: str | None = None  # shown under the table: label, differences from the paper's protocol


@dataclass
class StudySpec:
    datasets: list[str] = field(default_factory=list)  # datasets rated (empty = all)
    db_dir: str | None = None  # where the SQLite files live; null = OUT/study


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
    saturation: float = 1.0  # post-processing of every row's outputs (CTSS Fig. 7: 1.4); 1.0 = none
    study: StudySpec | None = None


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
    if not math.isfinite(spec.saturation) or spec.saturation < 0:
        raise ConfigError(f"{path}: saturation must be a factor >= 0 (1.0 = no post-processing)")
    if spec.study is not None:
        unknown = [n for n in spec.study.datasets if n not in {d.name for d in spec.datasets}]
        if unknown:
            raise ConfigError(f"{path}: study.datasets names unknown dataset(s) {', '.join(unknown)}")
    return spec, path.parent


def slug(name: str) -> str:
    """A file-system-safe name: ``"CTSS (K=32)"`` → ``"ctss-k-32"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "row"


def _resolve_dataset(d: DatasetSpec, log: Callable[[str], None], out_dir: Path | None = None) -> DatasetSpec:
    """Fill a SynthToon dataset's paths (generating it when missing): train photos/cartoons, test photos as
    inputs, test cartoons as both FID reference and paired truth. With ``out_dir`` (``-o``) a relative root
    lives inside it, so nothing is written outside the chosen output folder."""
    if d.synth is None:
        return d
    root = Path(d.synth.root)
    if out_dir is not None and not root.is_absolute():
        root = out_dir / root
    if not (root / "manifest.json").is_file():
        from toonlab.data.synth import make_synthtoon

        log(f"generating SynthToon in {root} (n={d.synth.n}, size={d.synth.size})")
        make_synthtoon(root, d.synth.n, d.synth.size, d.synth.seed)
    inputs, targets = ("photos", "cartoons") if d.direction == "photo2cartoon" else ("cartoons", "photos")
    return DatasetSpec(name=d.name, train_photos=str(root / "train/photos"), train_cartoons=str(root / "train/cartoons"),
                       test_inputs=str(root / "test" / inputs), fid_reference=str(root / "test" / targets),
                       truth=str(root / "test" / targets), input_weight=d.input_weight, direction=d.direction,
                       style=d.style)


@dataclass
class RowPlan:
    """What a row is, found before anything trains: translation direction, styles (multi-style models), and the
    resolved run config of a trained row."""

    direction: str = "photo2cartoon"
    styles: tuple[str, ...] = ()
    cfg: Any = None


def _plan_row(row: RowSpec, spec: ExperimentSpec, base_dir: Path, d: DatasetSpec) -> RowPlan:
    if row.classic:
        return RowPlan()
    if row.run is not None:  # known once its export is loaded (checked in translate_folder)
        return RowPlan(direction="")
    from toonlab.models import build_model
    from toonlab.train.config import load_run_config

    cfg = load_run_config(base_dir / row.config, fill_overrides([*spec.train_overrides, *row.overrides], d))
    model = build_model(cfg.model_name, cfg.model_fields())
    return RowPlan(model.direction, tuple(model.styles), cfg)


def _check_row(row: RowSpec, plan: RowPlan, d: DatasetSpec) -> None:
    """One-line ConfigError for a row that cannot produce this dataset's column."""
    if plan.direction and plan.direction != d.direction:
        raise ConfigError(f"row {row.name!r} translates {plan.direction} but dataset {d.name!r} has "
                          f"{d.direction} test inputs ({d.test_inputs}): set the row's direction (e.g. "
                          f"model.translate={d.direction}) or the dataset's direction:")
    if plan.styles:
        if d.style is None:
            raise ConfigError(f"row {row.name!r} is a multi-style model ({', '.join(plan.styles)}): dataset "
                              f"{d.name!r} needs style: and train_cartoons: a root with one folder per style")
        if match_style(d.style, plan.styles) is None:
            raise ConfigError(f"dataset {d.name!r}: style {d.style!r} is not one of row {row.name!r}'s styles "
                              f"({', '.join(plan.styles)})")


def _train_cartoons(plan: RowPlan, d: DatasetSpec) -> str | None:
    """The cartoons a row trains on for dataset ``d``: the style root for a multi-style model, the column's
    style folder for a single-style model on a styled dataset, else ``train_cartoons``."""
    if d.style is None or plan.styles or not d.train_cartoons:
        return d.train_cartoons
    from toonlab.data.datasets import style_folders

    root = Path(d.train_cartoons)
    if not root.is_dir():
        raise ConfigError(f"dataset {d.name!r}: train_cartoons {root} is not a folder")
    return str(style_folders(root, [d.style])[d.style])


def _patch_note(row: RowSpec, cfg) -> str | None:
    """CTSS rows: the number M of candidate patches per mini-batch at the run's size and stride range, and a
    warning when K >= M (the sampler then keeps every patch, i.e. the "W/O CTSS" row)."""
    if cfg is None or cfg.model_name != "ctss":
        return None
    from toonlab.models.ctss import candidate_patches

    m = cfg.model
    if m["sampler"] != "ctss":
        return None
    size = cfg.data.size or 256
    lo, hi = (m["stride_range"] if m["stride_policy"] == "random" else sorted(m["stride_fixed"]))
    m_lo = candidate_patches(cfg.data.batch_size, size, m["patch_size"], hi)
    m_hi = candidate_patches(cfg.data.batch_size, size, m["patch_size"], lo)
    if m["K"] < m_lo:
        return None
    span = f"{m_lo}" if m_lo == m_hi else f"{m_lo}–{m_hi}"
    return (f"{row.name}: K = {m['K']} ≥ M = {span} patches per mini-batch (batch {cfg.data.batch_size}, "
            f"{size}², l = {m['patch_size']}, s ∈ [{lo}, {hi}]): the CTSS sampler keeps every patch"
            f"{'' if m['K'] >= m_hi else ' at the larger strides'}, i.e. this row is (nearly) the W/O CTSS row")


def _final_export(run_dir: Path) -> Path | None:
    p = run_dir / "checkpoints" / "latest.safetensors"
    return p if p.is_file() else None


ROW_STATUS = "experiment-row.json"  # in a trained row's run dir: {"steps": completed, "of": planned, "stopped_by"}


def row_status(run_dir: Path) -> dict | None:
    """What a row's training completed (:data:`ROW_STATUS`), or None when unknown (never recorded, unreadable)."""
    try:
        status = json.loads((run_dir / ROW_STATUS).read_text())
        return status if isinstance(status.get("steps"), int) and isinstance(status.get("of"), int) else None
    except (OSError, ValueError, AttributeError):
        return None


class ExperimentStopped(ToonlabError):
    """A row's training was stopped by a signal: the experiment stops with it (exit 128 + the signal)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def fill_overrides(overrides: list[str], d: DatasetSpec) -> list[str]:
    """``{test_inputs}``, ``{fid_reference}``, ``{truth}`` in overrides → dataset ``d``'s folders (e.g. the eval
    hook's held-out set: ``train.eval_inputs={test_inputs}``)."""
    fill = {"{test_inputs}": d.test_inputs, "{fid_reference}": d.fid_reference, "{truth}": d.truth}
    out = []
    for o in overrides:
        for key, value in fill.items():
            if key in o:
                if value is None:
                    raise ConfigError(f"override {o!r}: dataset {d.name!r} has no {key.strip('{}')}")
                o = o.replace(key, str(value))
        out.append(o)
    return out


def _train_row(row: RowSpec, d: DatasetSpec, spec: ExperimentSpec, base_dir: Path, run_dir: Path,
               log: Callable[[str], None], cartoons: str | None = None) -> Path:
    """Train one (row, dataset) run with the trainer, resume it where it stopped, or reuse its final export when it
    completed (:func:`row_status`); records what it completed. A signal that stopped the training raises
    ExperimentStopped."""
    import signal

    from toonlab.train.trainer import STATE_GLOB, train

    done, status = _final_export(run_dir), row_status(run_dir)
    if done is not None and status is not None and status["steps"] >= status["of"]:
        log(f"reusing {done} ({status['steps']} steps)")
        return done
    if any((run_dir / "checkpoints").glob(STATE_GLOB)):
        log(f"resuming {row.name} on {d.name} in {run_dir} (" + (f"stopped at step {status['steps']} of "
            f"{status['of']})" if status is not None else "not recorded as complete)"))
        result = train(None, resume=run_dir)
    else:
        cartoons = cartoons or d.train_cartoons
        if not d.train_photos or not cartoons:
            raise ConfigError(f"dataset {d.name!r} has no train_photos/train_cartoons to train row {row.name!r}")
        overrides = [f"data.photos={d.train_photos}", f"data.cartoons={cartoons}", f"train.run_dir={run_dir}",
                     *fill_overrides([*spec.train_overrides, *row.overrides], d)]
        log(f"training {row.name} on {d.name} → {run_dir}")
        result = train(base_dir / row.config, overrides)
    from toonlab.checkpoint import atomic_write

    text = json.dumps({"steps": result["step"], "of": result["stop_step"], "stopped_by": result["interrupted"]})
    atomic_write(run_dir / ROW_STATUS, lambda tmp: Path(tmp).write_text(text))
    if result["interrupted"]:
        raise ExperimentStopped(f"stopped by {result['interrupted']} while training {row.name!r} on {d.name!r} at "
                                f"step {result['step']} of {result['stop_step']}; nothing was translated or "
                                f"reported — run the same command again to continue this row",
                                signal.Signals[result["interrupted"]].value)
    export = Path(result.get("export") or run_dir / "checkpoints" / "latest.safetensors")
    if not export.is_file():
        raise ToonlabError(f"training {row.name!r} on {d.name!r} finished without an export in {run_dir}")
    return export


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
    datasets = [_resolve_dataset(d, log, out_dir if out else None) for d in spec.datasets]
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

    # every row is checked against every dataset before anything trains (direction, styles)
    plans = {r.name: _plan_row(r, spec, base_dir, datasets[0]) for r in spec.rows}
    cartoons = {}
    for row in spec.rows:
        for d in datasets:
            _check_row(row, plans[row.name], d)
            cartoons[(row.name, d.name)] = _train_cartoons(plans[row.name], d) if row.config else None
    notes += [f"{r.name}: {r.note}" for r in spec.rows if r.note]
    notes += [n for r in spec.rows if (n := _patch_note(r, plans[r.name].cfg))]
    notes.append(f"post-processing: saturation ×{spec.saturation:g} (+{round(100 * (spec.saturation - 1))} %) "
                 f"on every row's outputs" if spec.saturation != 1.0 else
                 "post-processing: none on any row (models' own post-processing, e.g. CTSS's +40 % saturation, "
                 "is switched off so that rows are compared alike)")

    outputs: dict[tuple[str, str], Path] = {}
    trained: dict[tuple[str, str | None, str | None], Path] = {}  # one training per (row, training data)
    run_dirs: dict[tuple[str, str], Path] = {}
    for row in spec.rows:
        for d in datasets:
            key = (row.name, d.name)
            if row.classic:
                model_ref = "classic"
            elif row.run is not None:
                model_ref = row.run
            else:
                data_key = (row.name, d.train_photos, cartoons[key])
                if data_key not in trained:
                    run_dir = out_dir / "runs" / slug(row.name) / slug(d.name)
                    trained[data_key] = _train_row(row, d, spec, base_dir, run_dir, log, cartoons[key])
                model_ref = str(trained[data_key])
                run_dirs[key] = trained[data_key].parent.parent
                status = row_status(run_dirs[key])
                if status is not None and status["steps"] < status["of"]:  # train.max_minutes ran out
                    notes.append(f"{row.name} / {d.name}: INCOMPLETE — trained {status['steps']} of "
                                 f"{status['of']} steps (train.max_minutes); its scores are not the recipe's")
            o = out_dir / "outputs" / slug(row.name) / slug(d.name)
            log(f"translating {d.test_inputs} with {row.name}" + (f" (style {d.style})" if d.style else ""))
            failures += [f"{row.name}/{d.name}: {p}: {m}" for p, m in translate_folder(
                model_ref, Path(d.test_inputs), o, spec.device, style=d.style, saturation=spec.saturation,
                direction=d.direction if not row.classic else None)]
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

    if spec.study is not None:
        notes += _fold_study(spec, datasets, outputs, out_dir, table)
    curves = _write_curves(datasets, spec.rows, run_dirs, out_dir)

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
    rel += [(caption, c.name) for caption, c in curves]
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


def _fold_study(spec: ExperimentSpec, datasets: list[DatasetSpec], outputs: dict, out_dir: Path,
                table: ResultTable) -> list[str]:
    """Per rated dataset: the ``toonlab study serve`` command over the rows' outputs (a note, and
    ``study/serve-DATASET.sh``), and, when its SQLite file holds ratings, a "study" column of mean ± 95 % CI."""
    import shlex

    from toonlab.eval.study import report

    db_dir = Path(spec.study.db_dir) if spec.study.db_dir else out_dir / "study"
    notes = []
    if "study" not in table.metrics:
        table.metrics.append("study")
    for d in datasets:
        if spec.study.datasets and d.name not in spec.study.datasets:
            continue
        db = db_dir / f"{slug(d.name)}.sqlite"
        cmd = ["toonlab", "study", "serve", *[str(outputs[(r.name, d.name)]) for r in spec.rows]]
        for r in spec.rows:
            cmd += ["--name", r.name]
        cmd += ["--db", str(db)]
        write_text(db_dir / f"serve-{slug(d.name)}.sh", "#!/bin/sh\n" + shlex.join(cmd) + "\n")
        if db.is_file():
            scores = {m.method: m for m in report(db)}
            for r in spec.rows:
                if r.name in scores:
                    m = scores[r.name]
                    table.cells.setdefault((r.name, d.name), {})["study"] = m.mean
                    if math.isfinite(m.ci95):
                        table.spread.setdefault((r.name, d.name), {})["study"] = m.ci95
            n = sum(m.n for m in scores.values())
            notes.append(f"{d.name}: subjective scores (1–5, mean ± 95 % CI) from {n} ratings in {db} "
                         f"(`toonlab study report {db}`)")
        else:
            notes.append(f"{d.name}: no ratings yet — collect them with `{shlex.join(cmd)}` "
                         f"(also in {db_dir / f'serve-{slug(d.name)}.sh'}), then re-run this experiment")
    return notes


def eval_curves(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """The eval hook's metric records of a run dir's metrics.jsonl: ``{"fid": [(epoch, value), …], …}`` by epoch
    (bookkeeping entries such as ``eval/failed`` or ``eval/kid_std`` are not curves)."""
    path = run_dir / "metrics.jsonl"
    out: dict[str, list[tuple[float, float]]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if rec.get("event") != "eval":
            continue
        for k, v in rec.items():
            if k.startswith("eval/") and k[5:] in METRIC_FORMATS and isinstance(v, (int, float)) and math.isfinite(v):
                out.setdefault(k[5:], []).append((float(rec["epoch"]), float(v)))
    return {k: sorted(dict(v).items()) for k, v in out.items()}  # a resumed run may repeat an epoch: last wins


def _write_curves(datasets: list[DatasetSpec], rows: list[RowSpec], run_dirs: dict,
                  out_dir: Path) -> list[tuple[str, Path]]:
    """``curve-METRIC-DATASET.png``: metric vs epoch, one line per row trained with the eval hook."""
    from toonlab.eval.report import plot_curves

    made = []
    for d in datasets:
        series: dict[str, dict[str, list[tuple[float, float]]]] = {}
        for r in rows:
            if (r.name, d.name) in run_dirs:
                for metric, points in eval_curves(run_dirs[(r.name, d.name)]).items():
                    series.setdefault(metric, {})[r.name] = points
        for metric, by_row in series.items():
            p = plot_curves(by_row, out_dir / f"curve-{slug(metric)}-{slug(d.name)}.png", metric=metric,
                            title=f"{d.name}: {metric} during training (held-out set, eval hook)")
            made.append((f"{d.name}: {metric} vs epoch", p))
    return made


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
