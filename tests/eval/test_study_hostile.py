"""Issue 24 item 9: `study serve` against slow clients, foreign Host headers and a client calling /api/next in a
loop."""

import socket
import sqlite3
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest

from toonlab.eval.study import StudyServer, collect


@pytest.fixture()
def server(tmp_path):
    folders = []
    for k, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        for photo in ("x.png", "y.png"):
            cv2.imwrite(str(tmp_path / name / photo), np.full((8, 8, 3), 40 * k, np.uint8))
        folders.append(tmp_path / name)
    s = StudyServer(collect(folders), tmp_path / "s.sqlite", port=0, seed=0, request_timeout_s=0.5,
                    max_connections=8).start()
    yield s
    s.close()


def _get(url, host=None):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_half_sent_requests_are_cut_off_and_threads_return(server):
    port = server.httpd.server_address[1]
    before = threading.active_count()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(30)]
    for s in socks:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")  # headers never end
    time.sleep(1.5)  # past request_timeout_s
    assert all(s.recv(100) == b"" for s in socks)  # closed, unanswered
    for s in socks:
        s.close()
    assert _get(server.url)[0] == 200
    deadline = time.monotonic() + 5
    while threading.active_count() > before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before + 1  # 300 of them held 302 threads after 30 s


def test_foreign_host_is_refused(server):
    port = server.httpd.server_address[1]
    for host in ("evil.example", f"evil.example:{port}", "[::1].evil.com", "127.0.0.1.evil.example"):
        status, body = _get(f"{server.url}api/next?rater=r", host)
        assert status == 421 and b"not served here" in body, host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]"):
        assert _get(server.url, host)[0] == 200, host


def test_asking_again_reuses_the_open_trial(server):
    trials = {_get(f"{server.url}api/next?rater=r1")[1] for _ in range(200)}
    assert len(trials) == 1
    with sqlite3.connect(server.db) as con:
        assert con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 1  # 2,000 calls gave 2,001 rows
