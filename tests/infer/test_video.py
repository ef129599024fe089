from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from toonlab.errors import ToonlabError
from toonlab.infer.video import TemporalSmoother, translate_video


def _probe(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        return n, v.average_rate, (v.codec_context.width, v.codec_context.height), len(c.streams.audio)


def test_video_keeps_frames_rate_size_and_audio(tmp_path, make_video):
    src = make_video(tmp_path / "in.mp4")
    calls = []

    def invert(x):
        calls.append(x.shape[0])
        return 1 - x

    res = translate_video(src, tmp_path / "out" / "in_toon.mp4", invert, batch_size=5)
    assert res.frames == 12 and res.bad_frames == 0 and res.audio and res.fps == 10
    n, rate, size, n_audio = _probe(res.path)
    assert (n, rate, size, n_audio) == (12, Fraction(10), (64, 48), 1)
    assert max(calls) <= 5 and sum(calls) == 12  # streamed in batches, never all frames at once
    with av.open(str(src)) as a, av.open(str(res.path)) as b:
        fa = next(a.decode(video=0)).to_ndarray(format="rgb24").astype(int)
        fb = next(b.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs((255 - fa) - fb).mean() < 6  # inverted, up to lossy coding
    assert not list(tmp_path.joinpath("out").glob(".*tmp*"))


def test_video_without_audio_and_overwrite(tmp_path, make_video):
    from toonlab.io import OutputExistsError

    src = make_video(tmp_path / "in.mp4", n=4, audio=False)
    dst = tmp_path / "o.mp4"
    assert not translate_video(src, dst, lambda x: x).audio
    with pytest.raises(OutputExistsError):
        translate_video(src, dst, lambda x: x)
    assert translate_video(src, dst, lambda x: x, overwrite=True).frames == 4


def test_not_a_video_is_one_line_error(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"nope")
    with pytest.raises(ToonlabError, match="x.mp4"):
        translate_video(bad, tmp_path / "y.mp4", lambda x: x)
    assert not (tmp_path / "y.mp4").exists()


def test_temporal_smoothing_only_on_static_regions():
    x = torch.rand(1, 3, 32, 32).expand(4, 3, 32, 32).clone()
    x[:, :, :, 16:] = torch.rand(4, 3, 32, 16)  # right half changes every frame
    noisy = x + 0.1 * torch.randn(4, 3, 32, 32)  # a flickering "generator"
    y = TemporalSmoother(0.8)(x, noisy)
    flicker = lambda t: (t[1:] - t[:-1]).abs()[..., 2:-2, 2:14].mean()
    assert flicker(y) < 0.5 * flicker(noisy)
    assert torch.equal(y[:, :, :, 20:], noisy[:, :, :, 20:])  # moving region: untouched
    assert torch.equal(TemporalSmoother(0.0)(x, noisy), noisy)
