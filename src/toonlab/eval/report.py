"""Paper-style result tables (markdown + html) and image grids.

A :class:`ResultTable` has rows (methods / ablations), column groups (datasets / styles) and, inside each group,
metric sub-columns; a cell holds a number or None ("—", e.g. FID without the Inception weights).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# metric key → (header label, format, lower is better); KID is shown ×10³ as in Bińkowski et al.'s tables
METRIC_FORMATS: dict[str, tuple[str, str, bool]] = {
    "fid": ("FID ↓", "{:.2f}", True),
    "weighted_fid": ("wFID ↓", "{:.2f}", True),
    "kid": ("KID×10³ ↓", "{:.2f}", True),
    "psnr": ("PSNR ↑", "{:.2f}", False),
    "ssim": ("SSIM ↑", "{:.3f}", False),
    "edge_f1": ("edge F1 ↑", "{:.3f}", False),
    "study": ("Subjective ↑", "{:.2f}", False),  # rating study, 1–5 (seed 000 Table 1), mean ± 95 % CI
}
_SCALE = {"kid": 1e3}


@dataclass
class ResultTable:
    """``cells[(row, group)][metric] = value``; ``spread`` holds ± values (e.g. KID std) under the same keys."""

    rows: list[str]
    groups: list[str]
    metrics: list[str]
    cells: dict[tuple[str, str], dict[str, float | None]] = field(default_factory=dict)
    spread: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    def value(self, row: str, group: str, metric: str) -> float | None:
        return self.cells.get((row, group), {}).get(metric)

    def best(self, group: str, metric: str) -> float | None:
        """The best finite value of a column (lowest for ↓ metrics, highest for ↑)."""
        vals = [v for r in self.rows if (v := self.value(r, group, metric)) is not None and math.isfinite(v)]
        if not vals:
            return None
        return min(vals) if METRIC_FORMATS[metric][2] else max(vals)

    def text(self, row: str, group: str, metric: str) -> str:
        v = self.value(row, group, metric)
        if v is None:
            return "—"
        if not math.isfinite(v):
            return "∞" if v > 0 else "−∞"
        fmt = METRIC_FORMATS[metric][1]
        s = fmt.format(v * _SCALE.get(metric, 1))
        sd = self.spread.get((row, group), {}).get(metric)
        return f"{s} ± {fmt.format(sd * _SCALE.get(metric, 1))}" if sd is not None else s

    def headers(self) -> list[str]:
        multi = len(self.groups) > 1
        return [f"{g} · {METRIC_FORMATS[m][0]}" if multi else METRIC_FORMATS[m][0]
                for g in self.groups for m in self.metrics]


def fid_weights_note(label: str) -> str:
    """The report line that names the Inception weights behind FID/KID (FIDEvaluator.weights_label)."""
    return f"FID/KID features: InceptionV3 pool3 with {label}"


def render_markdown(table: ResultTable, *, title: str, intro: str = "", notes: list[str] = (),
                    grids: list[tuple[str, str]] = ()) -> str:
    """A markdown report: title, intro, the table (best value per column in bold), notes, grid images
    (``(caption, relative path)`` pairs)."""
    lines = [f"# {title}", ""]
    if intro:
        lines += [intro, ""]
    lines.append("| Method | " + " | ".join(table.headers()) + " |")
    lines.append("|---|" + "---:|" * len(table.headers()))
    for r in table.rows:
        cells = []
        for g in table.groups:
            for m in table.metrics:
                t = table.text(r, g, m)
                v, best = table.value(r, g, m), table.best(g, m)
                cells.append(f"**{t}**" if v is not None and best is not None and v == best else t)
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines.append("")
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    for caption, rel in grids:
        lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    return "\n".join(lines)


def render_html(table: ResultTable, *, title: str, intro: str = "", notes: list[str] = (),
                grids: list[tuple[str, str]] = ()) -> str:
    """The same report as a standalone HTML page (grouped column headers, best value per column in bold)."""
    e = html.escape
    head1 = "<th rowspan=2>Method</th>" + "".join(f"<th colspan={len(table.metrics)}>{e(g)}</th>"
                                                  for g in table.groups)
    head2 = "".join(f"<th>{e(METRIC_FORMATS[m][0])}</th>" for _ in table.groups for m in table.metrics)
    body = []
    for r in table.rows:
        tds = []
        for g in table.groups:
            for m in table.metrics:
                v, best, t = table.value(r, g, m), table.best(g, m), e(table.text(r, g, m))
                tds.append(f"<td><b>{t}</b></td>" if v is not None and v == best else f"<td>{t}</td>")
        body.append(f"<tr><th>{e(r)}</th>{''.join(tds)}</tr>")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 8px}td{text-align:right}"
        "img{max-width:100%;image-rendering:pixelated}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>{e(intro)}</p>" if intro else "",
        f"<table><thead><tr>{head1}</tr><tr>{head2}</tr></thead><tbody>{''.join(body)}</tbody></table>",
        ("<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>") if notes else "",
        "".join(f"<h3>{e(c)}</h3><img src='{e(rel)}' alt='{e(c)}'>" for c, rel in grids),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def image_grid(rows: list[tuple[str, list[np.ndarray]]], *, cell: int = 128, label_width: int = 150,
               pad: int = 2) -> np.ndarray:
    """Tile ``(label, [HWC uint8 images])`` rows into one HWC uint8 image: a white label column, then each image
    resized (area) to ``cell``×``cell``. Missing images (None) stay gray."""
    ncols = max((len(imgs) for _, imgs in rows), default=0)
    h = len(rows) * (cell + pad) + pad
    w = label_width + ncols * (cell + pad) + pad
    canvas = np.full((h, w, 3), 255, np.uint8)
    for i, (label, imgs) in enumerate(rows):
        y = pad + i * (cell + pad)
        _put_label(canvas, label, (4, y), label_width - 8, cell)
        for j in range(ncols):
            x = label_width + pad + j * (cell + pad)
            img = imgs[j] if j < len(imgs) else None
            canvas[y:y + cell, x:x + cell] = 200 if img is None else cv2.resize(
                img, (cell, cell), interpolation=cv2.INTER_AREA if img.shape[0] > cell else cv2.INTER_NEAREST)
    return canvas


def _put_label(canvas: np.ndarray, text: str, origin: tuple[int, int], width: int, height: int) -> None:
    """Word-wrapped black label inside the box at ``origin`` (cv2's Hershey font: ASCII only)."""
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1
    words, lines, cur = text.encode("ascii", "replace").decode().split(), [], ""
    for w in words:
        trial = f"{cur} {w}".strip()
        if cv2.getTextSize(trial, font, scale, thick)[0][0] > width and cur:
            lines.append(cur)
            cur = w
        else:
            cur = trial
    if cur:
        lines.append(cur)
    line_h = 16
    y0 = origin[1] + max(line_h, (height - line_h * len(lines)) // 2 + 12)
    for k, line in enumerate(lines):
        cv2.putText(canvas, line, (origin[0], y0 + k * line_h), font, scale, (0, 0, 0), thick, cv2.LINE_AA)


def plot_curves(series: dict[str, list[tuple[float, float]]], path: str | Path, *, metric: str,
                title: str = "") -> Path:
    """A metric-vs-epoch PNG (one line with markers per row): ``series[row] = [(epoch, value), …]``. Written
    atomically; needs matplotlib (``pip install 'toonlab[eval]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        from toonlab.errors import UsageError

        raise UsageError("metric curves need matplotlib: pip install 'toonlab[eval]'") from None
    from toonlab.checkpoint import atomic_write

    label = METRIC_FORMATS[metric][0] if metric in METRIC_FORMATS else metric
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=100)
    try:
        for row, points in series.items():
            xs, ys = zip(*points) if points else ((), ())
            ax.plot(xs, [y * _SCALE.get(metric, 1) for y in ys], marker="o", label=row)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if title:
            ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomic UTF-8 text write."""
    from toonlab.checkpoint import atomic_write

    return atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
