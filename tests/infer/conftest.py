"""Fixtures of the infer tests: a tiny video with audio, a state dict in the released CartoonGAN layout."""

import av
import numpy as np
import pytest
import torch


def _make_video(path, n=12, fps=10, size=(64, 48), audio=True):
    """A tiny H.264 video (a square moving over a static gradient) with an AAC sine track."""
    w, h = size
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    a_s = out.add_stream("aac", rate=16000) if audio else None
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    base[..., 2] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
    for i in range(n):
        img = base.copy()
        img[10:22, 4 * i:4 * i + 12] = (250, 250, 40)
        for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    if a_s is not None:
        t = np.arange(int(16000 * n / fps)) / 16000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for k in range(0, len(samples), 1024):
            chunk = samples[k:k + 1024][None]
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, k
            for p in a_s.encode(frame):
                out.mux(p)
        for p in a_s.encode(None):
            out.mux(p)
    out.close()
    return path


def _cartoongan_released(n_res=8, seed=0):
    """A state dict in the layout of Yijunmaverick/CartoonGAN-Test-Pytorch-Torch network/Transformer.py
    (names and shapes written out here, independently of toonlab's model code)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, cout, cin, k, transposed=False):
        sd[f"{name}.weight"] = torch.randn((cin, cout, k, k) if transposed else (cout, cin, k, k), generator=g) * 0.05
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.05

    def norm(name, c):
        sd[f"{name}.scale"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.shift"] = 0.1 * torch.randn(c, generator=g)

    conv("conv01_1", 64, 3, 7), norm("in01_1", 64)
    conv("conv02_1", 128, 64, 3), conv("conv02_2", 128, 128, 3), norm("in02_1", 128)
    conv("conv03_1", 256, 128, 3), conv("conv03_2", 256, 256, 3), norm("in03_1", 256)
    for i in range(4, 4 + n_res):
        for j in (1, 2):
            conv(f"conv{i:02d}_{j}", 256, 256, 3), norm(f"in{i:02d}_{j}", 256)
    conv("deconv01_1", 128, 256, 3, transposed=True), conv("deconv01_2", 128, 128, 3), norm(f"in{4 + n_res}_1", 128)
    conv("deconv02_1", 64, 128, 3, transposed=True), conv("deconv02_2", 64, 64, 3), norm(f"in{5 + n_res}_1", 64)
    conv("deconv03_1", 3, 64, 7)
    return sd



@pytest.fixture(autouse=True)
def onnx_cache(tmp_path_factory, monkeypatch):
    """``--backend auto`` exports checkpoints into $TOONLAB_CACHE/onnx: a per-session folder, not ~/.cache."""
    folder = tmp_path_factory.getbasetemp() / "toonlab_cache"
    monkeypatch.setenv("TOONLAB_CACHE", str(folder))
    return folder / "onnx"


@pytest.fixture
def make_video():
    return _make_video


@pytest.fixture
def cartoongan_released():
    return _cartoongan_released
