"""Hostile clients against a real server on loopback: slow headers / bodies (slowloris), foreign Host headers
(DNS rebinding), malformed or invalid requests (one-line JSON errors without heap addresses), a client that leaves
mid-upload (499)."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from serve_helpers import encode, running_server
from toonlab.serve.config import ServeConfig
from toonlab.serve.models import ServedModel


def _negative(rgb, style):
    return 1.0 - rgb


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server with six connection slots and one-second read timeouts, a minimum upload rate of 100 bytes/s."""
    log = tmp_path_factory.mktemp("serve") / "access.jsonl"
    cfg = ServeConfig(max_connections=6, header_timeout_s=1.0, body_timeout_s=1.0, min_upload_rate=100.0,
                      max_upload_bytes=500_000, access_log=str(log))
    with running_server(cfg, {"negative": ServedModel("negative", "test", _negative)}) as url:
        yield url, int(url.rsplit(":", 1)[1]), log


def _multipart(png: bytes, boundary: str = "b0undary") -> tuple[bytes, dict]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nnegative\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def _dribble(port: int, head: bytes, drip: bytes, result: dict, period: float = 0.5, max_drips: int = 16,
             stop: threading.Event | None = None):
    """Send ``head`` at once, then ``drip`` one byte every ``period`` s until the server closes (bounded; or until
    ``stop``); ``result`` gets the seconds it took and the first bytes the server answered."""
    t0 = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(period)
        try:
            s.sendall(head)
            for i in range(max_drips):
                if stop is not None and stop.is_set():
                    result["closed_after"] = None
                    return
                s.sendall(drip[i % len(drip):i % len(drip) + 1])
                try:
                    chunk = s.recv(4096)
                except socket.timeout:
                    continue
                answer += chunk
                if not chunk:
                    break
                while chunk:  # the rest of the answer, up to the close
                    chunk = s.recv(4096)
                    answer += chunk
                break
            else:
                result["closed_after"] = None  # still open after max_drips: not timed out
                return
        except (ConnectionResetError, BrokenPipeError):
            pass
    result["closed_after"] = time.monotonic() - t0
    result["answer"] = answer


def test_slow_clients_are_closed_and_normal_requests_still_200(guarded, photo_small):
    """Five connections (all that --max-connections 6 admits) dribbling headers or bodies at 2 bytes/s are answered
    408 and closed within the timeouts; afterwards normal requests get 200, and an upload that is slow but above the
    minimum rate (its body takes longer than the body grace) is not cut off."""
    url, port, log = guarded
    png = encode(photo_small)
    body, headers = _multipart(png)
    slow_head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # never ends its headers
    body_head = (f"POST /v1/cartoonize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {headers['content-type']}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode()
    # five: with the request's own connection that is uvicorn's limit of six (a sixth would get 503 at once)
    clients = [(slow_head, b"X-Slow: abcdefghijklmnop"), (b"", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"),
               (slow_head, b"X-Slow: abcdefghijklmnop"), (body_head, body), (body_head, body)]
    results = [{} for _ in clients]
    threads = [threading.Thread(target=_dribble, args=(port, head, drip, res), daemon=True)
               for (head, drip), res in zip(clients, results)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    for res in results:
        assert res.get("closed_after") is not None, "a slow client was never closed"
        assert res["closed_after"] < 6, res
        assert res["answer"].startswith(b"HTTP/1.1 408 "), [(r["closed_after"], r["answer"][:30]) for r in results]
        detail = json.loads(res["answer"].split(b"\r\n\r\n", 1)[1])["detail"]
        assert "\n" not in detail and ("headers not complete within 1 s" in detail or "too slow" in detail), detail
    r = httpx.post(f"{url}/v1/cartoonize", content=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text

    def paced():  # ~4 × len(body)/4 bytes over ~1.5 s: far above 100 bytes/s, longer than the 1 s grace
        step = len(body) // 4 + 1
        for i in range(0, len(body), step):
            yield body[i:i + step]
            time.sleep(0.5)

    r = httpx.post(f"{url}/v1/cartoonize", content=paced(), headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    time.sleep(0.2)
    statuses = [json.loads(line)["status"] for line in log.read_text().splitlines()]
    assert statuses.count(408) >= len(clients)  # header timeouts logged by the protocol, body ones by the app


def test_slow_clients_holding_every_slot_make_room_for_others(photo_small):
    """Six slow connections hold all of --max-connections 6 (timeouts far away): a new client still gets 200,
    because the connections that waited longest for their headers are closed (408) to make room for it."""
    cfg = ServeConfig(max_connections=6, header_timeout_s=30.0, body_timeout_s=30.0, evict_after_s=0.5,
                      access_log=None)
    with running_server(cfg, {"negative": ServedModel("negative", "test", _negative)}) as url:
        port = int(url.rsplit(":", 1)[1])
        stop = threading.Event()
        results = [{} for _ in range(6)]
        threads = [threading.Thread(target=_dribble, daemon=True,
                                    args=(port, b"GET /healthz HTTP/1.1\r\n", b"X-Slow: abcdefghijklmnopqrstuvwxyz",
                                          res, 0.5, 30, stop)) for res in results]
        for t in threads:
            t.start()
        time.sleep(1.5)  # all six connected and older than evict_after_s
        body, headers = _multipart(encode(photo_small))
        for _ in range(3):
            r = httpx.post(f"{url}/v1/cartoonize", content=body, headers=headers, timeout=30)
            assert r.status_code == 200, r.text
        stop.set()
        for t in threads:
            t.join(10)
    evicted = [res for res in results if res.get("closed_after") is not None]
    assert len(evicted) >= 2, results  # at least the room for one request (6 + 1 > 6 - 1)
    for res in evicted:
        assert res["answer"].startswith(b"HTTP/1.1 408 ") and b"connection slots are taken" in res["answer"]


def test_idle_connection_is_closed_silently(guarded):
    """A connection that never sends a byte is closed after the header timeout, without a 408 on the wire (a
    client reusing it must not read a stray answer)."""
    _, port, _ = guarded
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        t0 = time.monotonic()
        assert s.recv(100) == b""
        assert 0.8 < time.monotonic() - t0 < 5


def test_host_header_is_checked(guarded, photo_small):
    """DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 reaches a loopback server with
    `Host: evil.example`; loopback names are the default on a loopback bind."""
    url, port, _ = guarded
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
        for path in ("/", "/v1/models", "/healthz"):
            r = httpx.get(f"{url}{path}", headers={"host": host})
            assert r.status_code == 421 and "not served here" in r.json()["detail"], (host, path, r.text)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert httpx.get(f"{url}/healthz", headers={"host": host}).status_code == 200, host
    assert ServeConfig(host="0.0.0.0").allowed_hosts == ("*",)
    assert set(ServeConfig(host="127.0.0.2").allowed_hosts) >= {"localhost", "127.0.0.1", "127.0.0.2"}
    named = ServeConfig(allowed_hosts=("toon.example", "*.lan"), access_log=None)
    with running_server(named, {"negative": ServedModel("negative", "test", _negative)}) as other:
        assert httpx.get(f"{other}/healthz").status_code == 421  # Host 127.0.0.1 is not in the list now
        for host in ("toon.example", "toon.example:8000", "box.lan"):
            assert httpx.get(f"{other}/healthz", headers={"host": host}).status_code == 200, host
        assert httpx.get(f"{other}/healthz", headers={"host": "lan"}).status_code == 421


def test_errors_are_one_line_json_without_reprs(guarded, photo_small):
    url, _, _ = guarded

    def post(data: bytes, **fields):
        return httpx.post(f"{url}/v1/cartoonize", files={"image": ("p.png", data, "image/png")},
                          data={k: str(v) for k, v in fields.items()}, timeout=30)

    r = post(b"\x89PNG\r\n\x1a\n")  # PNG magic, nothing behind: Pillow names its BytesIO in the message
    detail = r.json()["detail"]
    assert r.status_code == 400 and "object at" not in detail and "0x" not in detail, detail
    assert detail == "p: unreadable png header (not a valid png file)"
    r = post(encode(photo_small), model="negative", strength=2, quality=0)  # two invalid fields
    assert r.status_code == 422 and isinstance(r.json()["detail"], str), r.text
    assert r.json()["detail"] == ("strength: Input should be less than or equal to 1 (got '2'); "
                                  "quality: Input should be greater than or equal to 1 (got '0')")
    r = post(encode(photo_small), model="negative", style="red")
    assert r.status_code == 400 and r.json()["detail"] == (
        "model 'negative' has no style 'red': it has a single style (send no style)")
    body, headers = _multipart(encode(photo_small), "right")
    broken = body.replace(b"--right", b"--wrong")  # framing that never matches the declared boundary
    r = httpx.post(f"{url}/v1/cartoonize", content=broken, headers=headers)
    assert r.status_code == 400 and "multipart" in r.json()["detail"], r.text
    r = httpx.post(f"{url}/v1/cartoonize", content=body[:200], headers=headers)  # cut before any part ends
    assert r.status_code == 400 and "malformed multipart" in r.json()["detail"], r.text
    r = httpx.post(f"{url}/v1/cartoonize", data={"model": "negative"})  # well-formed, image missing: 422
    assert r.status_code == 422 and r.json()["detail"] == "image: Field required", r.text


def test_client_leaving_mid_upload_is_logged_499(guarded, photo_small):
    url, port, log = guarded
    body, headers = _multipart(encode(photo_small))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((f"POST /v1/cartoonize HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: leaver-1\r\n"
                   f"Content-Type: {headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                  + body[:len(body) // 2])
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while True:
        records = {rec["request_id"]: rec for rec in map(json.loads, log.read_text().splitlines())}
        if "leaver-1" in records or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert records["leaver-1"]["status"] == 499
