"""``toonlab prepare`` throughput: smooth / guided / saliency images/s at 256², and ``prepare frames`` 1080p
decode speed as × real-time when sampling one frame per second.

Inputs are made here: SynthToon cartoons at 256² (smooth, guided) and photos (saliency); a 1080p H.264 video
(libx264 ``veryfast``, so with B-frames) of SynthToon photo scenes panning, with a cut every 5 s, encoded with
PyAV (about a minute on 2 busy cores; ``--quick`` makes it 6 s long). Folder commands run through the library
call behind the CLI (read, process, atomic PNG write). Prints one JSON object.

    .venv/bin/python benchmarks/bench_prepare.py [--images 24] [--seconds 20] [--workers 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from toonlab.data.prepare.frames import FrameConfig, extract_frames
from toonlab.data.prepare.images import map_folder
from toonlab.data.synth import random_scene, render_scene


def _folder(root: Path, n: int, kind: str) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        rgb = render_scene(random_scene(i, 256), kind)
        cv2.imwrite(str(root / f"{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return root


def _images_per_second(src: Path, out: Path, op: str, workers: int, params: dict | None = None) -> float:
    # warm-up on one image: imports (torch for smooth/guided) and first-call costs are not throughput
    warm = out.with_name(out.name + "-warmup")
    (warm / "in").mkdir(parents=True)
    (warm / "in" / "0.png").write_bytes(next(iter(sorted(src.glob("*.png")))).read_bytes())
    map_folder(warm / "in", warm / "out", op, params, progress=False)
    t0 = time.perf_counter()
    s = map_folder(src, out, op, params, workers=workers, progress=False)
    dt = time.perf_counter() - t0
    assert not s.failed and s.done == len(list(src.glob("*.png")))
    return round(s.done / dt, 2)


def _encode_1080p(path: Path, seconds: int, fps: int = 25) -> Path:
    import av

    w, h = 1920, 1080
    canvases = [cv2.resize(render_scene(random_scene(100 + i, 640), "photo"), (2400, 1350),
                           interpolation=cv2.INTER_CUBIC) for i in range(4)]
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"preset": "veryfast", "crf": "20"}
        for i in range(seconds * fps):
            canvas = canvases[(i // (5 * fps)) % len(canvases)]
            off = (i % (5 * fps)) * 3  # a slow pan: every frame differs
            frame = np.ascontiguousarray(canvas[off // 4: off // 4 + h, off: off + w])
            for p in st.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    return path


def _decode_all_seconds(path: Path, threads: str) -> float:
    """Reference: decode every frame, no conversion."""
    import av

    t0 = time.perf_counter()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if threads != "NONE":
            s.thread_type = threads
        for _ in c.decode(s):
            pass
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="8 images, a 6 s video")
    args = parser.parse_args()
    if args.quick:
        args.images, args.seconds = 8, 6
    res: dict = {"machine": platform.processor() or platform.machine(), "workers": args.workers,
                 "images": args.images}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cartoons = _folder(tmp / "cartoons", args.images, "cartoon")
        photos = _folder(tmp / "photos", args.images, "photo")
        res["smooth_images_per_s_256"] = _images_per_second(cartoons, tmp / "smooth", "smooth", args.workers)
        res["guided_images_per_s_256"] = _images_per_second(cartoons, tmp / "guided", "guided", args.workers)
        res["saliency_images_per_s_256"] = _images_per_second(photos, tmp / "sal", "saliency", args.workers)

        t0 = time.perf_counter()
        video = _encode_1080p(tmp / "hd.mp4", args.seconds)
        res["video"] = {"size": "1920x1080", "fps": 25, "seconds": args.seconds, "codec": "h264 veryfast",
                        "encode_s": round(time.perf_counter() - t0, 1)}
        frames = {}
        for threads in ("AUTO", "NONE"):
            for skip_nonref in (True, False):
                cfg = FrameConfig(every=1.0, size=256, threads=threads, skip_nonref=skip_nonref)
                t0 = time.perf_counter()
                s = extract_frames([str(video)], tmp / f"frames-{threads}-{skip_nonref}", cfg, progress=False)
                dt = time.perf_counter() - t0
                frames[f"threads={threads},skip_nonref={skip_nonref}"] = {
                    "x_realtime": round(args.seconds / dt, 2), "seconds": round(dt, 2), "kept": s.done}
            dec = _decode_all_seconds(video, threads)
            frames[f"decode_all_frames,threads={threads}"] = {"x_realtime": round(args.seconds / dec, 2)}
        res["frames_1fps_1080p"] = frames
        res["frames_x_realtime_default"] = frames["threads=AUTO,skip_nonref=True"]["x_realtime"]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
