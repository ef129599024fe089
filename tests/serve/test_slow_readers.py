"""Issue 24 item 6: clients that pipeline requests for a large response and never read the answers — they must
not hold the connection slots, and /healthz answers while they do."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from serve_helpers import running_server
from toonlab.serve.config import ServeConfig

BUNDLE = "/docs-assets/swagger-ui-bundle.js"  # ~1.5 MB: the Swagger UI bundle served from the local package


def _non_readers(port: int, n: int) -> list[socket.socket]:
    """``n`` connections that each pipeline two GETs of the bundle and then read nothing (the first answer fits
    in the kernel's buffers, the second stalls)."""
    out = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's buffers fill
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {BUNDLE} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() * 2)
        out.append(s)
        time.sleep(0.1)  # one at a time: uvicorn 503s (and closes) a pipelined request while the one before lingers
    return out


def _cut_off(s: socket.socket, within: float) -> bool:
    """Whether the server drops the connection within ``within`` seconds (reading what is in flight)."""
    s.settimeout(0.5)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if not s.recv(1 << 20):
                return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            pass
    return False


@pytest.fixture
def needs_bundle():
    pytest.importorskip("swagger_ui_bundle")


def test_non_readers_holding_every_slot_are_cut_off_and_healthz_answers(needs_bundle):
    cfg = ServeConfig(max_connections=6, send_timeout_s=1.0, evict_after_s=30.0, access_log=None)
    with running_server(cfg, {}) as url:
        port = int(url.rsplit(":", 1)[1])
        slow = _non_readers(port, 5)  # uvicorn serves max_connections - 1 at once
        try:
            time.sleep(0.3)  # every slot held, every server-side send buffer full
            r = httpx.get(f"{url}/healthz", timeout=5)
            assert r.status_code == 200 and r.json()["status"] == "ok"
            time.sleep(1.5)  # past send_timeout_s: the non-readers are dropped, their slots free again
            assert httpx.get(f"{url}/v1/models", timeout=5).status_code == 200
            assert all(_cut_off(s, 10) for s in slow)
        finally:
            for s in slow:
                s.close()


def test_non_readers_make_room_for_a_new_client_when_all_slots_are_taken(needs_bundle):
    cfg = ServeConfig(max_connections=6, send_timeout_s=60.0, evict_after_s=0.3, access_log=None)
    with running_server(cfg, {}) as url:
        port = int(url.rsplit(":", 1)[1])
        slow = _non_readers(port, 5)  # uvicorn serves max_connections - 1 at once
        try:
            time.sleep(0.6)  # stalled for longer than evict_after_s
            for _ in range(3):
                assert httpx.get(f"{url}/v1/models", timeout=5).status_code == 200
            assert _cut_off(slow[0], 5)  # the one stalled longest made room
        finally:
            for s in slow:
                s.close()
