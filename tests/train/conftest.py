"""Fixtures for trainer tests: tiny PNG folders and a run-config writer; registers the tiny test model."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from . import _tiny  # noqa: F401  (registers "_tiny_train")


def write_pngs(folder: Path, n: int, hw=(20, 24), seed: int = 0, prefix: str = "") -> list[Path]:
    """``n`` smooth random RGB images (gradients + noise), HWC uint8, as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for i in range(n):
        base = rng.uniform(0, 255, 3)[None, None] * (0.5 + 0.5 * np.sin(xx / (3 + i) + yy / 5)[..., None])
        img = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        p = folder / f"{prefix}{i:02d}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def tiny_data(tmp_path) -> dict:
    """6 photos and 5 cartoons (20×24 PNGs); photos partly nested in a sub-folder."""
    photos, cartoons = tmp_path / "photos", tmp_path / "cartoons"
    write_pngs(photos, 4, seed=1)
    write_pngs(photos / "sub", 2, seed=2, prefix="s")
    write_pngs(cartoons, 5, seed=3)
    return {"photos": photos, "cartoons": cartoons, "root": tmp_path}


def run_config(tmp_path: Path, data: dict, model: dict | None = None, train: dict | None = None,
               **data_kw) -> dict:
    """A run-config mapping for the tiny model (fast defaults: no progress bar, no TensorBoard, workers 0)."""
    return {
        "model": {"name": "_tiny_train", **(model or {})},
        "data": {"photos": str(data["photos"]), "cartoons": str(data["cartoons"]), "batch_size": 2,
                 "workers": 0, **data_kw},
        "train": {"run_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False, "log_every": 1,
                  "sample_every": 1000, "ckpt_every": 1000, **(train or {})},
    }


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path
