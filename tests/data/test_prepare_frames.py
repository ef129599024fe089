"""prepare frames on tiny videos encoded here with PyAV: known dark / uniform / blurry / duplicated seconds."""

import json

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from toonlab.cli import app
from toonlab.data.prepare import frames as frames_mod
from toonlab.data.prepare.dedupe import hamming, phash
from toonlab.data.prepare.filters import resize_crop
from toonlab.data.prepare.frames import FrameConfig, extract_frames
from toonlab.data.synth import random_scene, render_scene

FPS = 10


def _img(seed):
    return cv2.resize(render_scene(random_scene(seed, 96), "photo"), (64, 48), interpolation=cv2.INTER_AREA)


def _seconds():
    """One image per second: A, dark, B, uniform, blurred C, A again, D, D + small noise."""
    a, b, c, d = (_img(s) for s in (1, 2, 3, 4))
    noisy_d = np.clip(d.astype(int) + np.random.default_rng(0).integers(-6, 7, d.shape), 0, 255).astype(np.uint8)
    return [a, (a * 0.08).astype(np.uint8), b, np.full_like(a, 128), cv2.GaussianBlur(c, (0, 0), 3), a, d, noisy_d]


EXPECTED = ["kept", "dark", "kept", "uniform", "blurry", "duplicate", "kept", "duplicate"]


def _encode(path, images):
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=FPS)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        st.options = {"crf": "4"}  # near-lossless, with the default B-frames (exercises non-ref skipping)
        st.codec_context.gop_size = FPS  # a keyframe every second: seeking has somewhere to land
        for img in images:
            for _ in range(FPS):
                for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
        for p in st.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return _encode(tmp_path_factory.mktemp("vid") / "clip.mp4", _seconds())


CFG = FrameConfig(every=1.0, size=32, cut_threshold=15.0)


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_interval_sampling_keeps_the_right_frames(clip, tmp_path):
    out = tmp_path / "out"
    summary = extract_frames([str(clip)], out, CFG, progress=False)
    man = _manifest(out)
    assert [round(f["time"], 3) for f in man["frames"]] == [float(s) for s in range(8)]
    assert [f["status"] for f in man["frames"]] == EXPECTED
    kept = sorted(p.name for p in out.glob("*.png"))
    assert kept == ["clip_000000.png", "clip_000002.png", "clip_000006.png"] and summary.done == 3
    # the written images are the source seconds, resized and centre-cropped (codec error only)
    src = _seconds()
    for name, sec in zip(kept, (0, 2, 6)):
        got = cv2.cvtColor(cv2.imread(str(out / name)), cv2.COLOR_BGR2RGB).astype(float)
        assert got.shape == (32, 32, 3)
        assert np.abs(got - resize_crop(src[sec], 32)).mean() < 6
    rec = man["frames"][0]
    assert rec["source"] == str(clip) and rec["reason"] == "interval"
    assert int(hamming(int(rec["hash"], 16), phash(cv2.cvtColor(cv2.imread(str(out / kept[0])),
                                                                    cv2.COLOR_BGR2RGB)))) == 0


def test_scene_cuts_and_skip_start_end(clip, tmp_path):
    cuts = extract_frames([str(clip)], tmp_path / "cuts", FrameConfig(every=0, scene_cuts=True, size=32,
                                                                       cut_threshold=15.0), progress=False)
    man = _manifest(tmp_path / "cuts")
    # first frame + a cut at each change of image; D → noisy D is no cut
    assert [round(f["time"], 3) for f in man["frames"]] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert [f["status"] for f in man["frames"]] == EXPECTED[:7] and cuts.done == 3
    extract_frames([str(clip)], tmp_path / "mid", FrameConfig(every=1.0, size=32, skip_start=2, skip_end=2),
                   progress=False)
    assert [round(f["time"], 3) for f in _manifest(tmp_path / "mid")["frames"]] == [2.0, 3.0, 4.0, 5.0]


def test_resume_after_interruption_equals_a_full_run(clip, tmp_path, monkeypatch):
    full = tmp_path / "full"
    extract_frames([str(clip)], full, CFG, progress=False)
    real_write, calls = frames_mod.write_image_atomic, []

    def crashing_write(path, img):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while writing the second kept frame
        return real_write(path, img)

    part = tmp_path / "part"
    monkeypatch.setattr(frames_mod, "write_image_atomic", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        extract_frames([str(clip)], part, CFG, progress=False)
    assert sorted(p.name for p in part.glob("*.png")) == ["clip_000000.png"]
    monkeypatch.setattr(frames_mod, "write_image_atomic", real_write)
    extract_frames([str(clip)], part, CFG, progress=False)
    assert sorted(p.name for p in part.glob("*.png")) == sorted(p.name for p in full.glob("*.png"))
    for p in full.glob("*.png"):
        assert (part / p.name).read_bytes() == p.read_bytes()
    assert _manifest(part)["frames"] == _manifest(full)["frames"]
    # a finished video is not decoded again
    state = (part / ".frames" / "clip.jsonl").read_text()
    extract_frames([str(clip)], part, CFG, progress=False)
    assert (part / ".frames" / "clip.jsonl").read_text() == state


def test_cross_video_duplicates_workers_and_bad_video(clip, tmp_path):
    src = _seconds()
    second = _encode(tmp_path / "second.mp4", [src[6], src[2], _img(9)])  # D and B repeat clip's frames
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video" * 10)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["prepare", "frames", str(clip), str(second), str(bad), "-o", str(out),
                                 "--every", "1", "--size", "32", "--workers", "2"])
    assert r.exit_code == 1, r.output  # one input failed, the others finished
    assert "broken.mp4" in r.output and "Traceback" not in r.output
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["clip_000000.png", "clip_000002.png", "clip_000006.png", "second_000002.png"]
    second_recs = [f for f in _manifest(out)["frames"] if f["video"] == "second"]
    assert [f["status"] for f in second_recs] == ["duplicate", "duplicate", "kept"]


def test_seeking_and_skipping_pick_the_same_frames_as_decoding_everything(clip, tmp_path):
    runs = {}
    for name, cfg in {"plain": FrameConfig(every=3.0, size=32, skip_nonref=False, seek_gap=1e9, threads="NONE"),
                      "fast": FrameConfig(every=3.0, size=32, skip_nonref=True, seek_gap=1.0, lookahead=0.3)}.items():
        extract_frames([str(clip)], tmp_path / name, cfg, progress=False)
        runs[name] = [(round(f["time"], 3), f["status"], f["hash"]) for f in _manifest(tmp_path / name)["frames"]]
    assert [t for t, _, _ in runs["plain"]] == [0.0, 3.0, 6.0]
    assert runs["fast"] == runs["plain"]
