"""The HTTP API against a real uvicorn server on loopback: results, every limit's status code, the access log."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from serve_helpers import encode, running_server
from toonlab.serve.config import ServeConfig
from toonlab.serve.models import ServedModel, classic_model


def _negative(rgb, style):
    return 1.0 - rgb


def _tinted(rgb, style):
    """Multi-style test model: keeps only the style's channel."""
    keep = {"red": 0, "green": 1, "blue": 2}[style]
    out = torch.zeros_like(rgb)
    out[:, keep] = rgb[:, keep]
    return out


class Blocker:
    """A translator that holds its worker until released: makes queue-full and timeout cases deterministic."""

    def __init__(self):
        self.release = threading.Event()
        self.running = threading.Semaphore(0)

    def __call__(self, rgb, style):
        self.running.release()
        self.release.wait(20)
        return rgb

    def model(self, name="blocker"):
        return ServedModel(name, "test", self)


def _models(*extra):
    models = {"classic": classic_model(), "negative": ServedModel("negative", "test", _negative),
              "tinted": ServedModel("tinted", "test", _tinted, styles=("red", "green", "blue"))}
    models.update({m.name: m for m in extra})
    return models


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "access.jsonl"
    cfg = ServeConfig(max_upload_bytes=200_000, max_pixels=300 * 300, workers=2, queue_size=4,
                      access_log=str(log))
    with running_server(cfg, _models()) as url:
        yield url, log


def post(url, data: bytes, filename="photo.png", content_type="image/png", timeout=30, **fields):
    return httpx.post(f"{url}/v1/cartoonize", files={"image": (filename, data, content_type)},
                      data={k: str(v) for k, v in fields.items()}, timeout=timeout)


def decode(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def test_models_health_and_openapi(server):
    url, _ = server
    info = httpx.get(f"{url}/v1/models").json()
    by_name = {m["name"]: m for m in info["models"]}
    assert set(by_name) == {"classic", "negative", "tinted"}
    assert by_name["tinted"]["styles"] == ["red", "green", "blue"]
    assert info["limits"]["max_pixels"] == 300 * 300 and info["limits"]["formats"] == ["png", "jpeg", "webp"]
    health = httpx.get(f"{url}/healthz").json()
    assert health["status"] == "ok" and health["queue"] == {"admitted": 0, "capacity": 6}
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert "/v1/cartoonize" in paths and "/v1/models" in paths
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "/v1/cartoonize" in page.text and "<script" in page.text


def test_classic_result_equals_the_library(server, photo_small):
    from toonlab.infer.classic import cartoonize_classic

    url, _ = server
    r = post(url, encode(photo_small), model="classic")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and len(r.headers["x-request-id"]) >= 16
    got = decode(r.content).astype(int)
    x = torch.from_numpy(photo_small.copy()).permute(2, 0, 1)[None].float() / 255
    want = (cartoonize_classic(x)[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
    assert got.shape == photo_small.shape
    assert np.abs(got - want).max() <= 1
    assert np.abs(got - photo_small.astype(int)).mean() > 2  # it did change the photo


def test_strength_keep_colors_style_and_formats(server, photo_small):
    url, _ = server
    png = encode(photo_small)
    x = photo_small.astype(np.float64) / 255
    # strength 0 gives the photo back; 0.25 is a quarter of the way to the negative
    same = decode(post(url, png, model="negative", strength=0).content).astype(int)
    assert np.abs(same - photo_small.astype(int)).max() <= 1
    quarter = decode(post(url, png, model="negative", strength=0.25).content).astype(np.float64) / 255
    assert np.abs(quarter - (x + 0.25 * (1 - 2 * x))).max() <= 1.5 / 255
    # keep_colors: luminance of the output, chroma of the photo (BT.601 YUV, typed here independently)
    m = np.array([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]])
    yuv_in, yuv_neg = x @ m.T, (1 - x) @ m.T
    want = np.clip(np.concatenate([yuv_neg[..., :1], yuv_in[..., 1:]], -1) @ np.linalg.inv(m).T, 0, 1)
    kept = decode(post(url, png, model="negative", keep_colors="true").content).astype(np.float64) / 255
    assert np.abs(kept - want).max() <= 2 / 255
    # style by name
    blue = decode(post(url, png, model="tinted", style="blue").content).astype(int)
    assert blue[..., :2].max() == 0 and np.array_equal(blue[..., 2], photo_small[..., 2].astype(int))
    first = decode(post(url, png, model="tinted").content).astype(int)  # default style: the first (red)
    assert first[..., 1:].max() == 0
    # output formats, checked by magic bytes and decoded size
    for fmt, magic in (("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF"), ("png", b"\x89PNG")):
        r = post(url, png, model="negative", format=fmt)
        assert r.status_code == 200 and r.content.startswith(magic) and r.headers["content-type"] == f"image/{fmt}"
        assert decode(r.content).shape == photo_small.shape


def test_bad_fields_are_400_or_422(server, photo_small):
    url, _ = server
    png = encode(photo_small)
    cases = [({"model": "../../etc/passwd"}, 400, "unknown model"), ({"model": "tinted", "style": "purple"}, 400,
             "no style 'purple'"), ({"model": "negative", "style": "red"}, 400, "has no style"),
             ({"format": "gif"}, 400, "format must be"), ({"strength": 1.5}, 422, "strength")]
    for fields, status, text in cases:
        r = post(url, png, **fields)
        assert r.status_code == status and text in r.text, (fields, r.status_code, r.text)
    missing = httpx.post(f"{url}/v1/cartoonize", data={"model": "classic"})
    assert missing.status_code == 422
    broken = httpx.post(f"{url}/v1/cartoonize", content=b"--nope\r\ngarbage",
                        headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert broken.status_code == 400


def test_upload_size_limits_413(server, photo_small):
    url, _ = server
    noise = np.random.default_rng(0).integers(0, 256, (290, 290, 3), dtype=np.uint8)
    big = encode(noise)  # ~250 kB: over the 200 kB limit, under the body limit (+64 KiB): the endpoint's check
    assert 200_000 < len(big) < 200_000 + 65536
    r = post(url, big)
    assert r.status_code == 413 and "over the limit of 200000 bytes" in r.json()["detail"]
    huge = b"\x89PNG\r\n\x1a\n" + bytes(400_000)  # rejected by the gate from Content-Length, body unread
    r = post(url, huge)
    assert r.status_code == 413 and "request body" in r.json()["detail"]
    # no Content-Length (chunked): cut off while streaming
    def chunks():
        boundary = b"--b0undary\r\n"
        yield boundary + b'Content-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'
        for _ in range(40):
            yield bytes(16_384)
    r = httpx.post(f"{url}/v1/cartoonize", content=chunks(),
                   headers={"content-type": "multipart/form-data; boundary=b0undary"}, timeout=30)
    assert r.status_code == 413
    assert httpx.get(f"{url}/healthz").status_code == 200  # the server is fine afterwards


def _png_bomb(width: int, height: int) -> bytes:
    """A valid-looking PNG header declaring width×height with one tiny compressed row: a decompression bomb."""
    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * 64)))
            + chunk(b"IEND", b""))


def test_pixel_limit_and_image_bomb_413(server, astronaut):
    url, _ = server
    t0 = time.perf_counter()
    r = post(url, _png_bomb(100_000, 100_000))  # 10¹⁰ pixels (30 GB decoded) in a ~100-byte file
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    r = post(url, _png_bomb(400, 400))
    assert r.status_code == 413 and "400x400 = 160000 pixels is over the limit of 90000" in r.json()["detail"]
    assert time.perf_counter() - t0 < 5  # header only: nothing was decoded
    real = np.asarray(Image.fromarray(astronaut).resize((320, 300)))  # 96000 pixels > 90000
    r = post(url, encode(real, "JPEG", quality=80), filename="big.jpg", content_type="image/jpeg")
    assert r.status_code == 413 and "320x300" in r.json()["detail"]


def test_format_is_checked_by_content_415(server, photo_small):
    url, _ = server
    for fmt in ("GIF", "BMP", "TIFF"):  # real images, but not allowed by this server
        r = post(url, encode(photo_small, fmt), filename="photo.png")
        assert r.status_code == 415 and f"a {fmt} file" in r.json()["detail"], r.text
    r = post(url, b"<html>not a picture</html>" * 10, filename="photo.png")
    assert r.status_code == 415 and "not a recognised image" in r.json()["detail"]
    # a real PNG with a wrong name and type is fine: content decides
    r = post(url, encode(photo_small), filename="notes.txt", content_type="text/plain", model="negative")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")


def test_truncated_image_400_one_line(server, photo_small):
    url, _ = server
    for fmt, kind in (("PNG", "photo.png"), ("JPEG", "photo.jpg")):
        data = encode(photo_small, fmt)
        r = post(url, data[: len(data) // 2], filename=kind)
        detail = r.json()["detail"]
        assert r.status_code == 400 and "truncated" in detail and "\n" not in detail, detail
        assert detail.startswith("photo:")
    r = post(url, b"")
    assert r.status_code == 400 and "empty" in r.json()["detail"]


def test_queue_full_503_then_recovers(photo_small):
    blocker = Blocker()
    cfg = ServeConfig(workers=1, queue_size=1, retry_after_s=7, access_log=None)
    png = encode(photo_small)
    with running_server(cfg, _models(blocker.model())) as url, cf.ThreadPoolExecutor(2) as ex:
        first = ex.submit(post, url, png, model="blocker")
        assert blocker.running.acquire(timeout=10)  # the worker is busy
        second = ex.submit(post, url, png, model="blocker")
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/healthz").json()["queue"]["admitted"] < 2:  # the second one waits in the queue
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for _ in range(3):
            r = post(url, png, model="negative")
            assert r.status_code == 503 and r.headers["retry-after"] == "7" and "busy" in r.json()["detail"]
        blocker.release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert httpx.get(f"{url}/healthz").json()["queue"]["admitted"] == 0
        assert post(url, png, model="negative").status_code == 200


def test_full_pool_answers_503_before_reading_the_upload(photo_small):
    """While the pool is full, a new upload is turned away from its headers alone: its body is never awaited."""
    blocker = Blocker()
    cfg = ServeConfig(workers=1, queue_size=0, retry_after_s=3, access_log=None)
    with running_server(cfg, _models(blocker.model())) as url, cf.ThreadPoolExecutor(1) as ex:
        first = ex.submit(post, url, encode(photo_small), model="blocker")
        assert blocker.running.acquire(timeout=10)
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /v1/cartoonize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                      b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n")  # no body follows
            answer = chunk = s.recv(4096)
            while chunk:  # up to the server's close (headers and body may come in two segments)
                chunk = s.recv(4096)
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 3" in answer.lower(), answer
        assert b"server busy: 1 requests already running or queued" in answer
        blocker.release.set()
        assert first.result().status_code == 200


def test_timeout_504(photo_small):
    blocker = Blocker()
    cfg = ServeConfig(workers=1, queue_size=2, timeout_s=0.5, access_log=None)
    with running_server(cfg, _models(blocker.model())) as url:
        t0 = time.perf_counter()
        r = post(url, encode(photo_small), model="blocker")
        assert r.status_code == 504 and "0.5 s" in r.json()["detail"]
        assert 0.5 <= time.perf_counter() - t0 < 5
        blocker.release.set()  # the abandoned job ends and frees its slot
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/healthz").json()["queue"]["admitted"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_api_key_401(photo_small):
    cfg = ServeConfig(api_key="s3cret-key", access_log=None)
    png = encode(photo_small)
    with running_server(cfg, _models()) as url:
        assert httpx.get(f"{url}/v1/models").status_code == 401
        r = post(url, png, model="negative")
        assert r.status_code == 401 and "TOONLAB_API_KEY" in r.json()["detail"]
        assert httpx.get(f"{url}/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        r = httpx.post(f"{url}/v1/cartoonize", files={"image": ("p.png", png, "image/png")},
                       data={"model": "negative"}, headers={"Authorization": "Bearer s3cret-key"})
        assert r.status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/").status_code == 200


def test_concurrent_requests_are_bounded(photo_small):
    """10 simultaneous requests against capacity 3: exactly 3 admitted (and answered 200), 7 turned away (503)."""
    blocker = Blocker()
    cfg = ServeConfig(workers=2, queue_size=1, access_log=None)
    png = encode(photo_small)
    with running_server(cfg, _models(blocker.model())) as url, cf.ThreadPoolExecutor(10) as ex:
        futures = [ex.submit(post, url, png, model="blocker") for _ in range(10)]
        deadline = time.monotonic() + 15
        while sum(f.done() for f in futures) < 7:  # the 7 rejections come back while 3 are held
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert httpx.get(f"{url}/healthz").json()["queue"]["admitted"] == 3
        blocker.release.set()
        codes = sorted(f.result().status_code for f in futures)
        assert codes == [200] * 3 + [503] * 7
        # and without a blocker, concurrent requests all succeed with the right pixels
        results = list(ex.map(lambda _: post(url, png, model="negative"), range(3)))
        for r in results:
            assert r.status_code == 200 and np.abs(decode(r.content).astype(int) - (255 - photo_small)).max() <= 1


def test_access_log_json_lines(server, photo_small):
    url, log = server
    r = post(url, encode(photo_small), model="negative", timeout=30)
    bad = post(url, b"junk" * 10)
    time.sleep(0.1)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    by_id = {rec["request_id"]: rec for rec in records}
    ok = by_id[r.headers["x-request-id"]]
    assert ok["method"] == "POST" and ok["path"] == "/v1/cartoonize" and ok["status"] == 200
    assert ok["bytes_out"] == len(r.content) and ok["bytes_in"] > len(encode(photo_small)) and ok["latency_ms"] > 0
    assert by_id[bad.headers["x-request-id"]]["status"] == 415


def test_cli_serve_subprocess(tmp_path, photo_small):
    """`toonlab serve` itself: binds loopback, answers, logs JSON lines, refuses an unknown upload format option."""
    from serve_helpers import free_port

    port = free_port()
    log = tmp_path / "access.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "toonlab.cli", "serve", "--port", str(port), "--access-log",
                             str(log), "--header-timeout", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline
                time.sleep(0.2)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["models"]
        assert [m["name"] for m in models] == ["classic"]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # the read timeouts are wired in
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            t0 = time.monotonic()
            assert s.recv(100).startswith(b"HTTP/1.1 408 ") and time.monotonic() - t0 < 8
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"host": "evil.example"}).status_code == 421
    finally:
        proc.terminate()
        proc.wait(20)
    assert json.loads(log.read_text().splitlines()[0])["path"] == "/healthz"
    from typer.testing import CliRunner

    from toonlab.cli import app

    bad = CliRunner().invoke(app, ["serve", "--formats", "png,heic"])
    assert bad.exit_code == 2 and "unknown upload format 'heic'" in bad.output and bad.exception.__class__ is SystemExit
    bad = CliRunner().invoke(app, ["serve", "--header-timeout", "0"])
    assert bad.exit_code == 2 and "invalid header_timeout_s=0.0" in bad.output


def test_alpha_is_kept_in_png_and_dropped_in_jpeg(server, photo_small):
    url, _ = server
    alpha = np.tile(np.linspace(0, 255, 160).astype(np.uint8), (160, 1))
    rgba = np.dstack([photo_small, alpha])
    r = post(url, encode(rgba), model="negative")
    out = Image.open(io.BytesIO(r.content))
    assert r.status_code == 200 and out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[..., 3], alpha)
    r = post(url, encode(rgba), model="negative", format="jpeg")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).mode == "RGB"


def test_worker_pool_bounds_and_cancellation():
    from toonlab.serve.worker import QueueFull, WorkerPool

    pool = WorkerPool(workers=1, queue_size=1)
    gate, ran = threading.Event(), []
    running = pool.submit(gate.wait, 10)
    waiting = pool.submit(ran.append, "waiting job")
    with pytest.raises(QueueFull):
        pool.submit(ran.append, "third job")
    assert pool.admitted == 2 and waiting.cancel()  # still queued: cancellable, and then never runs
    gate.set()
    assert running.result(5) is True
    assert pool.submit(ran.append, "after").result(5) is None
    assert ran == ["after"] and pool.admitted == 0
    failing = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    pool.close()
