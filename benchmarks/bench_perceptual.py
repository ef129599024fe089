"""Which perceptual features keep the photo? Feature inversion on real photos and the init phase's reconstruction.

    python benchmarks/bench_perceptual.py invert [--features b1,b2,...] [--steps 300] [--size 64]
        [--out benchmarks/results/perceptual_invert.json]
    python benchmarks/bench_perceptual.py probe [--features b4,b4@up2] [--size 64]
        [--out benchmarks/results/perceptual_probe.json]
    python benchmarks/bench_perceptual.py init [--systems ctss,animegan,cartoongan] [--losses pixel,b4,...]
        [--steps 200] [--seeds 0] [--size 64] [--batch 4] [--out benchmarks/results/perceptual_init.json]

Feature names (EfficientNet-Lite0, ``toonlab.nn.efficientnet``; block i = ``_blocks[i]``): ``b<i>`` the output of
block i (linear bottleneck + skip, no activation), ``b<i>x`` the expanded activation inside block i (after the
depthwise conv, BN and ReLU6, before the projection; i ≥ 1), ``a+b`` an equal-weight combination, each term
scaled to mean |f| = ``FEATURE_TARGET`` (5.0, toonlab's calibration) on the photos, the loss the mean over the
terms (so every layer counts alike, and the whole weighs as one calibrated layer). ``pixel`` is plain L1 on the
image. A suffix ``@yuv`` adds CTSS's / AnimeGAN's YUV colour loss (``losses.yuv_color_loss``, CTSS eq 14) between
output and photo at CTSS's ratio to the content term, λ_col / λ_con = 15 / 1.5 = 10 (``init`` only). A suffix
``@up2`` takes the features of the images upsampled 2× (bilinear), so that EfficientNet's stride-2 stem samples
every pixel of the original grid (``b4@up2``, ``b4@up2@yuv``).

``invert``: real photos (scikit-image's astronaut, chelsea, coffee, rocket, stereo_motorcycle; each short side
resized to 64 with a centre crop, and to 128 with its four 64² centre-quadrant crops: 25 images, [-1, 1]). From a
gray image, Adam (lr 0.03, ``--steps``) minimises L1 between the features of the image and of the photo, the image
clamped to [-1, 1] after each step. Reported: PSNR of the inverted image to the photo (dB, [0, 1] scale, mean over
images) and its mean-colour error: |mean RGB of the inverted image − the photo's| per channel on [-1, 1], averaged
over images (and the worst channel). It tells what a content loss on that layer pins down of the photo.

``probe``: how strongly each feature set responds to a pattern added to the 25 real photos: mean |F(x + p) − F(x)|
(features calibrated as above) for patterns p of RMS 0.2 on [-1, 1] — a one-pixel checkerboard ((−1)^(i+j), the
artefact of stride-2 transposed convolutions), alternating rows, white noise, smooth noise (8×8 Gaussian noise
upsampled bilinearly) and a constant offset (a colour cast); seconds.

``init``: each system's generator (its recipe's defaults, ``configs/<name>.yaml``) is trained from its seeded init
on SynthToon photos (64², batch 4, the recipe's ``lr_init`` and betas) for ``--steps`` steps of the content-only
init phase — L1 between F(G(x)) and F(x) with F the named features, i.e. the systems' ``init`` step up to its
constant λ — then scored on the 48 test photos: PSNR(G(x), x) and the mean-colour error (as above, per image, and
of the whole set's mean RGB), PSNR with each output's mean RGB moved onto its photo's (``psnr_colour_matched``:
what the form alone scores), the contrast ratio (``contrast``: per channel, the mean over images of the output's
standard deviation over its pixels divided by the photo's), PSNR after 2×2 average pooling of both (``psnr_pool2``: blind to a one-pixel
checkerboard) and the RMS of that checkerboard (``checker_rms``: the (π, π) component of each 2×2 block, on
[-1, 1]; also of the untrained G, ``checker_rms_init``, and of the photos). ``pixel`` is the network's own limit at
that budget. ``--grid DIR`` saves each run's first 8 test photos over their outputs as a PNG. Threads: 1 (set
``OMP_NUM_THREADS``); figures do not depend on load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")


class Taps(nn.Module):
    """Frozen EfficientNet-Lite0 stem + blocks up to the deepest tap; ``forward`` → the list of tapped tensors.
    ``spec`` like ``b4`` / ``b4x`` / ``b2+b4`` (module docstring); each tap scaled by ``scales``."""

    def __init__(self, spec: str, scales: list[float] | None = None):
        super().__init__()
        from toonlab.nn.efficientnet import EfficientNetLite0Features

        self.taps = [(int(t[1:].rstrip("x")), t.endswith("x")) for t in spec.split("+")]
        self.net = EfficientNetLite0Features(max(i for i, _ in self.taps))
        self.scales = scales or [1.0] * len(self.taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        from toonlab.nn.efficientnet import normalize

        net, out = self.net, {}
        h = F.relu6(net._bn0(net._conv_stem(normalize(x))))
        for i, block in enumerate(net._blocks):
            if any(j == i and exp for j, exp in self.taps):  # the block's forward, keeping its expanded activation
                e = F.relu6(block._bn0(block._expand_conv(h))) if hasattr(block, "_expand_conv") else h
                e = F.relu6(block._bn1(block._depthwise_conv(e)))
                out[(i, True)] = e
                p = block._bn2(block._project_conv(e))
                h = p + h if block.skip else p
            else:
                h = block(h)
            out[(i, False)] = h
        return [out[t] * s for t, s in zip(self.taps, self.scales)]


class Upsampled(nn.Module):
    """``net`` applied to the images upsampled 2× (bilinear): a stride-2 stem then samples every original pixel."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class Pixel(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]


def features(spec: str, calibrate: torch.Tensor) -> nn.Module:
    """``pixel`` or a :class:`Taps` (``@up2``: of the 2×-upsampled images) whose terms are each scaled to mean
    |f| = FEATURE_TARGET on ``calibrate``."""
    from toonlab.nn.perceptual import FEATURE_TARGET

    layers, *mods = spec.split("@")
    if layers == "pixel":
        return Pixel()
    taps = Taps(layers)
    net = Upsampled(taps) if "up2" in mods else taps
    with torch.no_grad():
        taps.scales = [FEATURE_TARGET / f.abs().mean().item() for f in net(calibrate)]
    return net.requires_grad_(False)


def feature_l1(net: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the terms of mean |F(a) − F(b)| (b's features carry no graph)."""
    with torch.no_grad():
        target = net(b)
    return sum(F.l1_loss(f, t) for f, t in zip(net(a), target)) / len(target)


def real_photos(size: int = 64) -> torch.Tensor:
    """(25,3,size,size) in [-1, 1]: each photo's short side at size (centre crop) and at 2·size (four centre
    quadrants). Antialiased bilinear resizing (PIL)."""
    import skimage.data
    from PIL import Image

    out = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img
        for side in (size, 2 * size):
            h, w = img.shape[:2]
            s = side / min(h, w)
            im = np.asarray(Image.fromarray(img).resize((max(side, round(w * s)), max(side, round(h * s))),
                                                         Image.BILINEAR))
            y0, x0 = (im.shape[0] - side) // 2, (im.shape[1] - side) // 2
            im = im[y0:y0 + side, x0:x0 + side]
            crops = [im] if side == size else [im[i:i + size, j:j + size] for i in (0, size) for j in (0, size)]
            out += [torch.from_numpy(c.copy()).permute(2, 0, 1).float() / 127.5 - 1 for c in crops]
    return torch.stack(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of (N,3,H,W) [-1, 1] tensors, on the [0, 1] scale."""
    mse = (((a - b) / 2) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-12))


def colour_matched(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``out`` with each image's mean RGB moved onto ``ref``'s (clamped to [-1, 1])."""
    return (out - out.mean((2, 3), keepdim=True) + ref.mean((2, 3), keepdim=True)).clamp(-1, 1)


def checker_rms(x: torch.Tensor) -> float:
    """RMS over (N,3,H,W) [-1, 1] images of each 2×2 block's checkerboard component (a − b − c + d) / 4."""
    b = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2].unfold(2, 2, 2).unfold(3, 2, 2)
    return (b[..., 0, 0] - b[..., 0, 1] - b[..., 1, 0] + b[..., 1, 1]).div(4).pow(2).mean().sqrt().item()


def save_grid(path: Path, photos: torch.Tensor, outputs: torch.Tensor) -> None:
    """PNG: the first 8 photos (top row) over their outputs, shown 2× (nearest)."""
    from PIL import Image

    grid = torch.cat([torch.cat(list(photos[:8]), 2), torch.cat(list(outputs[:8]), 2)], 1)
    img = ((grid.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(path)


def colour_error(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Mean-colour errors on [-1, 1]: per image |Δ mean RGB| averaged (per channel and worst channel), and the set's
    mean RGB (output and reference) with its worst-channel difference."""
    per = (out.mean((2, 3)) - ref.mean((2, 3))).abs()
    set_out, set_ref = out.mean((0, 2, 3)), ref.mean((0, 2, 3))
    return {"colour_err": [round(v, 4) for v in per.mean(0).tolist()],
            "colour_err_max_channel": round(per.mean(0).max().item(), 4),
            "set_mean_rgb": [round(v, 4) for v in set_out.tolist()],
            "set_mean_rgb_ref": [round(v, 4) for v in set_ref.tolist()],
            "set_colour_err_max": round((set_out - set_ref).abs().max().item(), 4)}


def invert(spec: str, photos: torch.Tensor, steps: int, lr: float = 0.03) -> dict:
    net = features(spec, photos)
    x = torch.zeros_like(photos, requires_grad=True)
    opt = torch.optim.Adam([x], lr)
    for _ in range(steps):
        opt.zero_grad()
        feature_l1(net, x, photos).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(-1, 1)
    x = x.detach()
    return {"psnr": round(psnr(x, photos).mean().item(), 3), **colour_error(x, photos)}


def probe(spec: str, photos: torch.Tensor) -> dict[str, float]:
    """Mean |F(x + p) − F(x)| for the patterns of the module docstring, each of RMS 0.2 (seeded noise)."""
    net = features(spec, photos)
    gen = torch.Generator().manual_seed(0)
    h, w = photos.shape[-2:]
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    patterns = {"checkerboard": ((-1.0) ** (i + j)).expand(1, 3, h, w),
                "alternating_rows": ((-1.0) ** i).expand(1, 3, h, w),
                "white_noise": torch.randn(1, 3, h, w, generator=gen),
                "smooth_noise": F.interpolate(torch.randn(1, 3, 8, 8, generator=gen), size=(h, w), mode="bilinear"),
                "offset": torch.ones(1, 3, h, w)}
    out = {}
    with torch.no_grad():
        ref = net(photos)
        for name, p in patterns.items():
            p = p * 0.2 / p.pow(2).mean().sqrt()
            out[name] = round(sum((f - r).abs().mean().item() for f, r in zip(net(photos + p), ref)) / len(ref), 3)
    return out


def init_phase(system: str, spec: str, seed: int, args, train: torch.Tensor, test: torch.Tensor) -> dict:
    """Train ``system``'s G on the content-only init loss through ``spec`` for ``args.steps`` steps; score it."""
    from toonlab.models import build_model
    from toonlab.train.config import load_run_config

    cfg = load_run_config(ROOT / "configs" / f"{system}.yaml")
    fields = {k: v for k, v in cfg.model.items() if k != "name"}
    torch.manual_seed(seed)
    model = build_model(cfg.model["name"], fields)
    G = model.networks["G"].train()
    c = model.cfg
    from toonlab.losses import yuv_color_loss

    net = features(spec, test)
    with torch.no_grad():
        untrained = G(test[:16]).clamp(-1, 1)
    opt = torch.optim.Adam(G.parameters(), c.lr_init, tuple(c.betas))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        idx = torch.randint(len(train), (args.batch,), generator=gen)
        x = train[idx]
        x = torch.where(torch.rand(args.batch, 1, 1, 1, generator=gen) < 0.5, x, x.flip(-1))  # random h-flip
        opt.zero_grad()
        y = G(x)
        loss = feature_l1(net, y, x)
        if "yuv" in spec.split("@"):
            loss = loss + 10.0 * yuv_color_loss(y, x)
        loss.backward()
        opt.step()
    G.eval()
    with torch.no_grad():
        y = torch.cat([G(test[i:i + 16]) for i in range(0, len(test), 16)]).clamp(-1, 1)
    if args.grid:
        save_grid(Path(args.grid) / f"{system}_{spec.replace('@', '-')}_{args.steps}_s{seed}.png", test, y)
    pool = nn.AvgPool2d(2)
    return {"system": system, "loss": spec, "seed": seed, "steps": args.steps,
            "psnr": round(psnr(y, test).mean().item(), 3), **colour_error(y, test),
            "psnr_colour_matched": round(psnr(colour_matched(y, test), test).mean().item(), 3),
            "contrast": [round(v, 3) for v in (y.std((2, 3)) / test.std((2, 3))).mean(0).tolist()],
            "psnr_pool2": round(psnr(pool(y), pool(test)).mean().item(), 3), "checker_rms": round(checker_rms(y), 4),
            "checker_rms_init": round(checker_rms(untrained), 4), "wall_s": round(time.perf_counter() - t0, 1)}


def synth_photos(size: int, n: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    from toonlab.data.synth import make_synthtoon
    from toonlab.io import read_image

    data = make_synthtoon(ROOT / "runs" / f"bench-perceptual/synthtoon{size}", n, size, 0, n_test=n_test)

    def load(folder):
        return torch.stack([read_image(f).rgb for f in sorted(folder.glob("*.png"))]) * 2 - 1

    return load(data / "train/photos"), load(data / "test/photos")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("invert", "probe", "init"))
    ap.add_argument("--features", default="b1,b2,b3,b4,b5,b6,b7,b2x,b4x,b7x,b2+b4,b1+b4+b7")
    ap.add_argument("--systems", default="ctss,animegan,cartoongan")
    ap.add_argument("--losses", default="pixel,b4")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", default=None)
    ap.add_argument("--grid", default=None, help="init: folder for a PNG per run (photos over outputs)")
    args = ap.parse_args()
    env = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.mode == "invert":
        args.steps = args.steps or 300
        photos = real_photos(args.size)
        out = Path(args.out or ROOT / "benchmarks/results/perceptual_invert.json")
        old = json.loads(out.read_text()) if out.exists() else {}
        rows = old.get("features", {}) if (old.get("steps"), old.get("size")) == (args.steps, args.size) else {}
        for spec in args.features.split(","):
            if spec in rows:  # measured earlier at the same settings: kept
                continue
            torch.manual_seed(0)
            rows[spec] = invert(spec, photos, args.steps)
            print(f"[invert] {spec}: {rows[spec]}", file=sys.stderr, flush=True)
            result = {"benchmark": "perceptual_invert", "size": args.size, "images": len(photos),
                      "steps": args.steps, "lr": 0.03, **env, "features": rows}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1))  # partial results survive an interruption
        result = json.loads(out.read_text())
    elif args.mode == "probe":
        photos = real_photos(args.size)
        result = {"benchmark": "perceptual_probe", "size": args.size, "images": len(photos), "rms": 0.2, **env,
                  "features": {spec: probe(spec, photos) for spec in args.features.split(",")}}
        out = Path(args.out or ROOT / "benchmarks/results/perceptual_probe.json")
    else:
        args.steps = args.steps or 200
        train, test = synth_photos(args.size, 240, 48)
        out = Path(args.out or ROOT / "benchmarks/results/perceptual_init.json")
        old = json.loads(out.read_text()) if out.exists() else {}
        rows = [r for r in old.get("runs", []) if r["steps"] == args.steps]
        for seed in (int(s) for s in args.seeds.split(",")):
            for system in args.systems.split(","):
                for spec in args.losses.split(","):
                    if any((r["system"], r["loss"], r["seed"]) == (system, spec, seed) for r in rows):
                        continue
                    rows.append(init_phase(system, spec, seed, args, train, test))
                    print(f"[init] {rows[-1]}", file=sys.stderr, flush=True)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps({"benchmark": "perceptual_init", "size": args.size,
                                               "batch": args.batch, "steps": args.steps, **env,
                                               "photos": colour_error(test, test)["set_mean_rgb"],
                                               "photos_checker_rms": round(checker_rms(test), 4),
                                               "runs": rows}, indent=1))
        result = json.loads(out.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
