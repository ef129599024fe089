"""Flow-guided temporal stability (infer/temporal.py) on clips whose motion is known exactly."""

import numpy as np
import pytest
import torch

import toonlab
from toonlab.errors import UsageError
from toonlab.eval.flicker import FlickerMeter, pan_zoom_clip
from toonlab.infer.temporal import Stabilizer, consistent, is_cut, remap, warp_tensor
from toonlab.photos import load

SIZE = (96, 72)


@pytest.fixture(scope="module")
def classic():
    return toonlab.load("classic")


def _clip(photo="astronaut", n=8, **kw):
    frames = list(pan_zoom_clip(load(photo), SIZE, n, noise=kw.pop("noise", 4.0), **kw))
    x = torch.from_numpy(np.stack([f for f, _, _ in frames])).permute(0, 3, 1, 2).float() / 255
    return frames, x


def _hwc(t):
    return t.permute(0, 2, 3, 1).numpy()


def _errors(frames, per_frame, stabilized):
    """Warping errors (exact flow) of the per-frame and the stabilised outputs, and their SSIM."""
    m = FlickerMeter(reference="per_frame")
    for (f, flow, valid), a, b in zip(frames, _hwc(per_frame), _hwc(stabilized)):
        m.update(f, {"per_frame": a, "stabilized": b}, flow=flow, valid=valid)
    s = m.summary()["streams"]
    return s["per_frame"]["warping_error"], s["stabilized"]["warping_error"], s["stabilized"]["ssim"]


def test_remap_moves_by_whole_pixels_and_torch_path_agrees():
    img = np.random.default_rng(0).random((20, 30, 3), dtype=np.float32)
    flow = np.zeros((20, 30, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3, -2  # out[y, x] = img[y − 2, x + 3]
    out = remap(img, flow)
    np.testing.assert_array_equal(out[2:, :-3], img[:-2, 3:])
    smooth = np.random.default_rng(1).normal(0, 2, (20, 30, 2)).astype(np.float32)
    want = remap(img, smooth)
    got = warp_tensor(torch.from_numpy(img).permute(2, 0, 1)[None], torch.from_numpy(smooth).permute(2, 0, 1)[None])
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), want, atol=1e-4)


def test_forward_backward_check():
    fb = np.zeros((10, 12, 2), np.float32)
    fb[..., 0] = 2  # every pixel came from 2 px to the right
    valid = consistent(fb, -fb)
    assert valid[:, :-2].all() and not valid[:, -2:].any()  # the right border came from outside the frame
    assert not consistent(fb, np.zeros_like(fb)).any()  # forward flow does not undo the backward flow: occluded


def test_cut_detector():
    a, b = load("astronaut")[..., 0], load("coffee")[:512, :512, 0]
    assert not is_cut(a, a) and is_cut(a, b) and is_cut(a, a[:100])


def test_stabilized_warping_error_is_lower_on_pan_and_zoom(classic):
    for kw in ({"pan": (2, 1)}, {"pan": (0, 0), "zoom": 1.03}):
        frames, x = _clip(**kw)
        y = classic(x)
        stab = Stabilizer()
        s = stab.fuse(y, stab.motion(x))
        per_frame, stabilized, ssim = _errors(frames, y, s)
        assert stabilized < 0.5 * per_frame, (kw, per_frame, stabilized)
        assert ssim > 0.9, (kw, ssim)
        assert torch.equal(s[0], y[0])


def test_scene_cut_resets_and_does_not_ghost(classic):
    fa, xa = _clip("astronaut", n=5)
    fb, xb = _clip("coffee", n=5, pan=(-1, 2))
    x = torch.cat([xa, xb])
    y = classic(x)
    stab = Stabilizer()
    motions = stab.motion(x)
    assert [m.cut for m in motions] == [True, False, False, False, False, True, False, False, False, False]
    s = stab.fuse(y, motions)
    assert torch.equal(s[0], y[0]) and torch.equal(s[5], y[5])  # first frame of each shot: the per-frame output
    per_frame, stabilized, _ = _errors(fb, y[5:], s[5:])
    assert stabilized < 0.5 * per_frame
    # nothing of the first scene is left in the second: every stabilised frame is far closer to its own output
    assert max((s[i] - y[i]).abs().mean() for i in range(5, 10)) < 0.25 * (y[4] - y[5]).abs().mean()


def test_moving_object_leaves_no_trail(classic):
    """A square moves 6 px a frame over a static noisy photo: where it just left, the stabilised output is the
    per-frame output (the disoccluded background is not blended with the square's old colours)."""
    rng = np.random.default_rng(0)
    bg = load("chelsea")[:72, :96]
    frames = []
    for t in range(6):
        f = np.clip(bg + rng.normal(0, 4, bg.shape), 0, 255).astype(np.uint8)
        f[20:44, 10 + 6 * t:34 + 6 * t] = (250, 40, 40)
        frames.append(f)
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    y = classic(x)
    stab = Stabilizer()
    s = stab.fuse(y, stab.motion(x))
    for t in range(1, 6):
        left = (slice(22, 42), slice(10 + 6 * (t - 1) + 1, 10 + 6 * t - 1))  # square's old place, now background
        trail = (s[t][:, left[0], left[1]] - y[t][:, left[0], left[1]]).abs().mean()
        assert trail < 0.03, (t, float(trail))
    static = (slice(50, 70), slice(50, 94))
    flicker = lambda o: (o[1:, :, static[0], static[1]] - o[:-1, :, static[0], static[1]]).abs().mean()
    assert flicker(s) < 0.5 * flicker(y)  # the static background is still stabilised


def test_weight_zero_is_per_frame_and_bad_input(classic):
    frames, x = _clip(n=3)
    y = classic(x)
    stab = Stabilizer(weight=0.0)
    assert torch.equal(stab.fuse(y, stab.motion(x)), y)
    dots = np.random.default_rng(0).integers(0, 256, (3, 1, 1, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Stabilizer(lambda t: t)(dots), dots)  # 1×1 frames: no flow, passed through
    for bad in ({"weight": 1.0}, {"weight": -0.1}, {"flow_side": 4}, {"preset": "slow"}, {"warp": "cuda"}):
        with pytest.raises(UsageError):
            Stabilizer(**bad)
    with pytest.raises(UsageError, match="motions"):
        Stabilizer().fuse(y, [])
    with pytest.raises(UsageError, match="RGB"):
        Stabilizer().motion(torch.rand(2, 1, 8, 8))
    with pytest.raises(UsageError, match="only fuses"):
        Stabilizer()(x)


def test_torch_warp_path_matches_opencv(classic):
    frames, x = _clip(n=4, pan=(1, 1))
    y = classic(x)
    outs = []
    for warp in ("opencv", "torch"):
        stab = Stabilizer(warp=warp)
        outs.append(stab.fuse(y, stab.motion(x)))
    torch.testing.assert_close(outs[0], outs[1], atol=2e-4, rtol=0)


def test_stream_api_with_any_translator(classic):
    """Stabilizer(toonlab.load(...)) on uint8 frames one at a time equals the same frames as one batch; any
    callable works as the translator."""
    frames, x = _clip(n=5)
    u8 = np.stack([f for f, _, _ in frames])
    one = Stabilizer(classic)
    singles = np.stack([one(f) for f in u8])
    assert singles.dtype == np.uint8 and singles.shape == u8.shape
    np.testing.assert_array_equal(singles, Stabilizer(classic)(u8))
    invert = Stabilizer(lambda t: 1 - t)
    out = invert(x[:2])
    assert out.shape == (2, 3, 72, 96) and torch.equal(out[0], 1 - x[0])


def test_translate_video_with_stabilizer(tmp_path, classic):
    """The video path (pipelined and sequential) stabilises: lower warping error than per-frame, same frames;
    --smoothing and a stabilizer together are refused."""
    import av

    from toonlab.eval.flicker import evaluate_video
    from toonlab.infer.video import translate_video

    src = tmp_path / "pan.mp4"
    out = av.open(str(src), "w")
    vs = out.add_stream("libx264", rate=10)
    vs.width, vs.height, vs.pix_fmt = *SIZE, "yuv444p"
    vs.options = {"crf": "0"}  # lossless: the noise in the clip is the clip's own
    for f, _, _ in pan_zoom_clip(load("astronaut"), SIZE, 8, pan=(2, 1), noise=4.0):
        for p in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    out.close()
    errors = {}
    for name, kw in {"per_frame": {}, "stabilized": {"stabilizer": Stabilizer()},
                     "sequential": {"stabilizer": Stabilizer(), "pipeline": False}}.items():
        res = translate_video(src, tmp_path / f"{name}.mp4", classic.translate_tensor, batch_size=3, crf=0, **kw)
        assert res.frames == 8
        errors[name] = evaluate_video(src, outputs=res.path)["streams"]["output"]["warping_error"]
    assert errors["stabilized"] < 0.6 * errors["per_frame"], errors
    assert errors["sequential"] == pytest.approx(errors["stabilized"], rel=0.05)
    with pytest.raises(UsageError, match="choose one"):
        translate_video(src, tmp_path / "x.mp4", classic.translate_tensor, smoothing=0.5, stabilizer=Stabilizer())


def test_cli_cartoonize_stabilize(tmp_path, make_video):
    from typer.testing import CliRunner

    from toonlab.cli import app

    src = make_video(tmp_path / "clip.mp4", n=5, audio=False)
    runner = CliRunner()
    r = runner.invoke(app, ["cartoonize", str(src), "-o", str(tmp_path / "o"), "--stabilize", "--no-progress"])
    assert r.exit_code == 0 and "1 done" in r.output, r.output
    assert (tmp_path / "o" / "clip.mp4").is_file()
    r = runner.invoke(app, ["cartoonize", str(src), "-o", str(tmp_path / "p"), "--stabilize-weight", "0.5",
                            "--smoothing", "0.5", "--no-progress"])
    assert r.exit_code == 2 and "choose one" in r.output and r.output.count("\n") <= 2, r.output
    r = runner.invoke(app, ["cartoonize", str(src), "-o", str(tmp_path / "p"), "--stabilize-weight", "1.5"])
    assert r.exit_code == 2
