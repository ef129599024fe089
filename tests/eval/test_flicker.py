"""The flicker metric (eval/flicker.py) against hand-computable cases and clips of known motion."""

import numpy as np
import pytest

from toonlab.errors import UsageError
from toonlab.eval.flicker import FlickerMeter, evaluate_video, pan_zoom_clip, warping_error
from toonlab.photos import load


def test_warping_error_by_hand():
    rng = np.random.default_rng(0)
    prev = rng.uniform(0, 0.8, (12, 16, 3)).astype(np.float32)
    cur = np.zeros_like(prev)
    cur[:, :-3] = prev[:, 3:] + 0.1  # the picture moved 3 px left and brightened by 0.1
    flow = np.zeros((12, 16, 2), np.float32)
    flow[..., 0] = 3
    valid = np.zeros((12, 16), bool)
    valid[:, :-3] = True
    assert warping_error(prev, cur, flow, valid) == pytest.approx(0.1, abs=1e-6)
    cur[:4, :4] = 1.0  # a change confined to one corner: 16 of 156 valid pixels off by (1 − 0.1 − prev) each
    part = valid.copy()
    part[:4, :4] = False
    assert warping_error(prev, cur, flow, part) == pytest.approx(0.1, abs=1e-6)
    want = (np.abs(1.0 - prev[:4, 3:7]).sum() + 0.1 * 3 * (156 - 16)) / (156 * 3)
    assert warping_error(prev, cur, flow, valid) == pytest.approx(want, abs=1e-5)
    assert np.isnan(warping_error(prev, cur, flow, np.zeros_like(valid)))
    with pytest.raises(UsageError, match="shapes"):
        warping_error(prev, cur[1:], flow, valid)


def test_constructed_clip_flow_is_exact():
    frames = list(pan_zoom_clip(load("coffee"), (64, 48), 4, pan=(2, -1)))
    for (a, _, _), (b, flow, valid) in zip(frames, frames[1:]):
        assert (flow == (2, -1)).all() and valid.sum() == (64 - 2) * (48 - 1)
        warped = np.rint(warping_error(a.astype(np.float32), b.astype(np.float32), flow, valid))
        assert warped == 0  # whole-pixel pans move the picture exactly
    zoom = list(pan_zoom_clip(load("coffee"), (64, 48), 3, pan=(0, 0), zoom=1.05))
    (a, _, _), (b, flow, valid) = zoom[:2]
    assert np.abs(flow[24, 32]).max() < 0.1 and np.abs(flow[0, 0]).min() > 1  # the centre stays, corners move
    err = warping_error(a.astype(np.float32) / 255, b.astype(np.float32) / 255, flow, valid)
    assert err < 0.03  # only resampling blur differs


def test_meter_streams_shots_and_ssim():
    """Input + per-frame noise flickers more than the input; a copy of the input equals it; a cut starts a shot
    whose pairs are not compared across; SSIM to the reference leaves out each shot's first frame."""
    rng = np.random.default_rng(1)
    a = list(pan_zoom_clip(load("astronaut"), (64, 48), 4, pan=(1, 0), noise=2.0))
    b = list(pan_zoom_clip(load("coffee"), (64, 48), 3, pan=(0, 1), noise=2.0))
    meter = FlickerMeter(reference="copy")
    for f, flow, valid in a + b:
        x = f.astype(np.float32) / 255
        noisy = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
        meter.update(f, {"copy": x, "noisy": noisy}, flow=flow, valid=valid)
    r = meter.summary()
    s = r["streams"]
    assert (r["frames"], r["shots"]) == (7, 2)
    assert s["copy"]["warping_error"] == pytest.approx(s["input"]["warping_error"]) and s["copy"]["vs_input"] == 1
    assert s["noisy"]["warping_error"] > 0.04 and s["noisy"]["vs_input"] > 3 and r["reduction"]["noisy"] < -2
    assert len(s["noisy"]["ssim_per_shot"]) == 2 and s["noisy"]["ssim"] < 0.9
    with pytest.raises(UsageError, match="reference"):
        FlickerMeter(reference="copy").update(a[0][0], {"noisy": a[0][0]})
    with pytest.raises(UsageError, match="same streams"):
        meter.update(a[0][0], {"copy": a[0][0]})
    with pytest.raises(UsageError, match="too small"):
        FlickerMeter().update(a[0][0][:8], {})
    with pytest.raises(UsageError, match="one size"):
        FlickerMeter().update(a[0][0], {"x": a[0][0][1:]})


def test_estimated_flow_finds_the_motion():
    """With the flow estimated from the input (DIS), a whole-pixel pan's input warping error is that of the
    exact flow, up to sub-pixel flow error."""
    frames = list(pan_zoom_clip(load("astronaut"), (96, 72), 4, pan=(2, 1)))
    exact, estimated = FlickerMeter(), FlickerMeter()
    for f, flow, valid in frames:
        exact.update(f, {}, flow=flow, valid=valid)
        estimated.update(f, {})
    assert exact.summary()["streams"]["input"]["warping_error"] == 0
    assert estimated.summary()["streams"]["input"]["warping_error"] < 0.01


def _video(path, n):
    import av

    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=10)
    vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
    for f, _, _ in pan_zoom_clip(load("chelsea"), (64, 48), n, pan=(1, 1), noise=4.0):
        for p in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    out.close()
    return path


def test_evaluate_video_modes(tmp_path):
    src = _video(tmp_path / "in.mp4", 6)
    r = evaluate_video(src, model="classic", batch_size=4)
    s = r["streams"]
    assert r["frames"] == 6 and set(s) == {"input", "per_frame", "stabilized"} and "stabilized" in r["reduction"]
    assert s["stabilized"]["warping_error"] <= s["per_frame"]["warping_error"]
    assert evaluate_video(src, outputs=src)["streams"]["output"]["vs_input"] == 1
    with pytest.raises(UsageError, match="exactly one"):
        evaluate_video(src)
    short = _video(tmp_path / "short.mp4", 3)
    with pytest.raises(UsageError, match="fewer frames"):
        evaluate_video(src, outputs=short)


def test_cli_evaluate_video(tmp_path):
    import json

    from typer.testing import CliRunner

    from toonlab.cli import app

    src = _video(tmp_path / "in.mp4", 5)
    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", "--video", str(src), "-m", "classic", "--json", str(tmp_path / "f.json")])
    assert r.exit_code == 0, r.output
    assert "stabilized" in r.output and "lower than per-frame" in r.output
    got = json.loads((tmp_path / "f.json").read_text())
    assert got["frames"] == 5 and set(got["streams"]) == {"input", "per_frame", "stabilized"}
    r = runner.invoke(app, ["evaluate", "--video", str(src), "--photos", str(tmp_path)])
    assert r.exit_code == 2 and "--video takes" in r.output
    r = runner.invoke(app, ["evaluate", "--video", str(tmp_path / "missing.mp4"), "--outputs", str(src)])
    assert r.exit_code == 1 and "missing.mp4" in r.output and r.output.count("\n") <= 2, r.output
