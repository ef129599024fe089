"""Report tables: rows, grouped columns, best-per-column marking, missing cells; image grid geometry."""

import math
import re

import numpy as np

from toonlab.eval.report import ResultTable, image_grid, render_html, render_markdown


def _table():
    t = ResultTable(rows=["Classic", "CTSS", "CTSS w/o patch"], groups=["Hayao", "Shinkai"],
                    metrics=["fid", "kid", "ssim"])
    t.cells[("Classic", "Hayao")] = {"fid": 150.0, "kid": 0.020, "ssim": 0.5}
    t.cells[("CTSS", "Hayao")] = {"fid": 112.97, "kid": 0.011, "ssim": 0.7}
    t.cells[("CTSS w/o patch", "Hayao")] = {"fid": 120.0, "kid": None, "ssim": math.inf}
    t.cells[("CTSS", "Shinkai")] = {"fid": 124.66, "kid": 0.013, "ssim": 0.6}
    t.spread[("CTSS", "Hayao")] = {"kid": 0.002}
    return t


def test_markdown_has_paper_shape():
    md = render_markdown(_table(), title="Table I", notes=["FID/KID on 8 images"], grids=[("grid", "grid-a.png")])
    rows = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["Method", "Hayao · FID ↓", "Hayao · KID×10³ ↓", "Hayao · SSIM ↑", "Shinkai · FID ↓",
                      "Shinkai · KID×10³ ↓", "Shinkai · SSIM ↑"]
    body = {r.strip("|").split("|")[0].strip(): [c.strip() for c in r.strip("|").split("|")[1:]] for r in rows[2:]}
    assert list(body) == ["Classic", "CTSS", "CTSS w/o patch"]
    assert body["CTSS"][:2] == ["**112.97**", "**11.00 ± 2.00**"]  # lower FID/KID is better; KID shown ×10³
    assert body["Classic"][0] == "150.00" and body["Classic"][3:] == ["—", "—", "—"]
    assert body["CTSS w/o patch"][1:3] == ["—", "∞"]  # missing; non-finite values never count as best
    assert body["CTSS"][2] == "**0.700**"  # higher SSIM is better
    assert "![grid](grid-a.png)" in md and "- FID/KID on 8 images" in md


def test_html_has_grouped_header_and_every_row():
    page = render_html(_table(), title="Table <I>", notes=["n"], grids=[("g", "grid.png")])
    assert "<title>Table &lt;I&gt;</title>" in page
    assert page.count("<th colspan=3>") == 2
    body = page.split("<tbody>")[1]
    assert re.findall(r"<tr><th>([^<]+)</th>", body) == ["Classic", "CTSS", "CTSS w/o patch"]
    assert page.count("<td>") == 3 * 6 and page.count("<td><b>") == 6  # one best cell per column
    assert "<img src='grid.png'" in page


def test_image_grid_layout():
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    g = image_grid([("input", [red, red]), ("CTSS", [red, None])], cell=40, label_width=100, pad=2)
    assert g.shape == (2 * 42 + 2, 100 + 2 * 42 + 2, 3) and g.dtype == np.uint8
    assert (g[2:42, 102:142] == [255, 0, 0]).all()  # first cell, upscaled
    assert (g[44:84, 144:184] == 200).all()  # missing image stays gray
    assert (g[:, :100] < 128).any()  # a label was drawn
