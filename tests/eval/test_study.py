"""Rating study: a real server on a loopback port; scores persist across restarts; report statistics."""

import json
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from scipy import stats

from toonlab.errors import UsageError
from toonlab.eval.study import StudyServer, collect, report

TIMEOUT = 5  # seconds per request: a hung server fails the test instead of blocking the suite


def _get(url):
    with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _post(url, obj):
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        return json.loads(r.read())


@pytest.fixture()
def methods(tmp_path):
    folders = []
    for k, name in enumerate(("ctss", "cartoongan", "classic")):
        d = tmp_path / name
        d.mkdir()
        for photo in ("a.png", "b.png"):
            cv2.imwrite(str(d / photo), np.full((8, 8, 3), 40 * k, np.uint8))
        folders.append(d)
    (folders[0] / "only-here.png").write_bytes((folders[0] / "a.png").read_bytes())
    return folders


def _rate_all(server, rater, score_of):
    """Rate every photo through HTTP; the score depends on the method behind each slot (looked up via the
    image's pixel value: the page itself never sees method names)."""
    seen = []
    while True:
        _, _, body = _get(f"{server.url}api/next?rater={rater}")
        t = json.loads(body)
        if t["done"]:
            return seen
        assert t["slots"] == 3 and "method" not in body.decode()
        for slot in range(t["slots"]):
            status, ctype, png = _get(f"{server.url}img?trial={t['trial']}&slot={slot}")
            assert status == 200 and ctype == "image/png"
            level = int(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)[0, 0]) // 40
            seen.append(level)
            assert _post(f"{server.url}api/score", {"trial": t["trial"], "slot": slot, "score": score_of[level]})


def test_scores_persist_across_restarts(methods, tmp_path):
    db = tmp_path / "study.sqlite"
    data = collect(methods)
    assert data.photos == ["a.png", "b.png"] and list(data.methods) == ["ctss", "cartoongan", "classic"]
    server = StudyServer(data, db, port=0, seed=1).start()
    try:
        status, ctype, page = _get(server.url)
        assert status == 200 and "text/html" in ctype and b"api/score" in page
        seen = _rate_all(server, "r1", score_of={0: 5, 1: 3, 2: 1})
        assert sorted(seen) == [0, 0, 1, 1, 2, 2]
        with pytest.raises(urllib.error.HTTPError) as e:
            _post(f"{server.url}api/score", {"trial": "nope", "slot": 0, "score": 3})
        assert e.value.code == 400
    finally:
        server.close()

    server = StudyServer(collect(methods), db, port=0, seed=2).start()  # restart on the same file
    try:
        assert json.loads(_get(f"{server.url}api/next?rater=r1")[2])["done"]  # r1's scores survived
        _rate_all(server, "r2", score_of={0: 4, 1: 3, 2: 2})
    finally:
        server.close()

    res = {r.method: r for r in report(db)}
    assert [r.method for r in report(db)] == ["ctss", "cartoongan", "classic"]
    assert res["ctss"].n == 4 and res["ctss"].mean == pytest.approx(4.5)
    sample = [5, 5, 4, 4]
    half = stats.t.ppf(0.975, 3) * np.std(sample, ddof=1) / 2
    assert res["ctss"].ci95 == pytest.approx(half)
    assert res["cartoongan"].ci95 == 0 and res["classic"].mean == pytest.approx(1.5)


def test_bad_inputs(methods, tmp_path):
    with pytest.raises(UsageError, match="at least 2"):
        collect(methods[:1])
    with pytest.raises(UsageError, match="not found"):
        collect([methods[0], tmp_path / "missing"])
    with pytest.raises(UsageError, match="not found"):
        report(tmp_path / "none.sqlite")
