"""Issue 24 item 11 (serve): Host names that only start like a loopback name are refused; 422 details name types
without Python's ``<class '…'>`` reprs."""

from __future__ import annotations

import httpx
import pytest

from serve_helpers import running_server
from toonlab.serve.config import ServeConfig
from toonlab.serve.models import ServedModel


@pytest.fixture(scope="module")
def url():
    cfg = ServeConfig(access_log=None)
    with running_server(cfg, {"negative": ServedModel("negative", "test", lambda rgb, style: 1.0 - rgb)}) as u:
        yield u


def test_host_that_only_starts_like_loopback_is_refused(url):
    port = url.rsplit(":", 1)[1]
    for host in ("[::1].evil.com", f"[::1].evil.com:{port}", "[::1]evil", "[::1]:80x", "localhost:x.evil.com",
                 "127.0.0.1:evil"):
        r = httpx.get(f"{url}/healthz", headers={"host": host})
        assert r.status_code == 421 and "not served here" in r.json()["detail"], host
    for host in ("[::1]", f"[::1]:{port}", f"localhost:{port}", "127.0.0.1"):
        assert httpx.get(f"{url}/healthz", headers={"host": host}).status_code == 200, host


def test_422_detail_has_no_class_repr(url):
    r = httpx.post(f"{url}/v1/cartoonize", data={"model": "negative", "image": "not a file"})
    detail = r.json()["detail"]
    assert r.status_code == 422 and "<class" not in detail and detail.startswith("image: "), detail
    assert "received: str" in detail
