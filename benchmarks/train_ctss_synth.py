"""CTSS on SynthToon at 64² for a wall-clock budget; scores the trained generator against the true cartoons.

    python benchmarks/train_ctss_synth.py [--minutes 10] [--data data/synthtoon64] [--n 400] [--run runs/ctss-synth]

Schedule: the paper's 1 : 7 split of init : adversarial epochs (10 of 80) applied to the time budget — the init
phase runs for minutes/8 (``train.max_minutes``), then the run is resumed with the init phase ending where it
stopped and the adversarial phase filling the rest. Patch size and strides are the paper's scaled by 64/256
(l = 24, s ~ U(12, 18)); everything else is the CTSS paper recipe (configs/ctss.yaml).
Prints JSON: steps/s, images/s, the SynthToon test PSNR of the raw generator output vs the true cartoons, next to
the PSNR of the unchanged photos and of the classic cartoonizer, and which perceptual backbone was used (what
``auto`` resolves to; ``random`` when neither VGG19 nor EfficientNet-Lite0 is available).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def _psnr_folder(translate, photos: list[Path], truths: Path) -> float:
    from toonlab.eval.metrics import psnr
    from toonlab.io import read_image

    scores = []
    for p in photos:
        x = read_image(p).rgb[None]
        y = translate(x)[0]
        t = read_image(truths / p.name).rgb
        scores.append(psnr(y.permute(1, 2, 0).numpy(), t.permute(1, 2, 0).numpy()))
    return round(float(np.mean(scores)), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--data", default="data/synthtoon64")
    ap.add_argument("--n", type=int, default=400, help="SynthToon train images per domain")
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--run", default="runs/ctss-synth")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from bench_train import perceptual_choice

    from toonlab.checkpoint import load_export
    from toonlab.data.synth import make_synthtoon
    from toonlab.infer.classic import cartoonize_classic
    from toonlab.io import list_images
    from toonlab.train.trainer import train

    data = make_synthtoon(args.data, args.n, args.size, 0, n_test=args.n_test)
    vgg = perceptual_choice()
    scale = args.size / 256
    patch = max(8, round(96 * scale))
    strides = [max(1, round(48 * scale)), max(1, round(72 * scale))]
    run = Path(args.run)
    big = 10 ** 7
    common = [f"data.photos={data / 'train/photos'}", f"data.cartoons={data / 'train/cartoons'}",
              f"data.size={args.size}", f"data.batch_size={args.batch}", f"data.workers={args.workers}",
              f"data.val_photos={data / 'test/photos'}", f"model.perceptual={vgg}", f"model.patch_size={patch}",
              f"model.stride_range={strides}", f"model.stride_fixed={strides}", f"train.device={args.device}",
              "train.progress=false", "train.log_every=10", "train.sample_every=200", "train.ckpt_every=500"]
    t0 = time.perf_counter()
    first = train(ROOT / "configs" / "ctss.yaml", common + [f"train.run_dir={run}", f"train.max_minutes={args.minutes / 8}",
                                                            f"train.phase_steps={{init: {big}, adv: {big}}}"])
    init_steps = first["step"]
    rest = args.minutes * 7 / 8 - (time.perf_counter() - t0) / 60 + args.minutes / 8
    result = train(None, [f"train.max_minutes={max(rest, 0.05)}", f"train.phase_steps={{init: {init_steps}, adv: {big}}}"],
                   resume=run)
    wall = time.perf_counter() - t0
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ips = [r["images_per_s"] for r in recs if "images_per_s" in r]

    model, meta = load_export(run / "checkpoints" / "latest.safetensors")
    G = model.translator().eval()

    @torch.inference_mode()
    def generator(x):  # raw G output, no post-processing (saturation boost etc.)
        return ((G(x * 2 - 1) + 1) / 2).clamp(0, 1)

    photos = list_images([str(data / "test/photos")])
    truths = data / "test/cartoons"
    out = {
        "benchmark": "ctss_synthtoon", "minutes": args.minutes, "size": args.size, "batch": args.batch,
        "device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "perceptual": vgg, "patch_size": patch, "stride_range": strides,
        "train_images": args.n, "test_images": len(photos),
        "steps": result["step"], "init_steps": init_steps, "adv_steps": result["step"] - init_steps,
        "wall_s": round(wall, 1), "steps_per_s": round(result["step"] / wall, 4),
        "images_per_s_mean": round(float(np.mean(ips)), 3) if ips else None,
        "psnr_generator": _psnr_folder(generator, photos, truths),
        "psnr_unchanged_photos": _psnr_folder(lambda x: x, photos, truths),
        "psnr_classic": _psnr_folder(lambda x: cartoonize_classic(x), photos, truths),
        "run_dir": str(run),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
