"""Test helpers: a real uvicorn server on a free loopback port (in a thread), image encoding."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(config, models=None):
    """Start ``create_app(config, models)`` under uvicorn on 127.0.0.1 (toonlab.serve.server's settings); yields the
    base URL; stops it after."""
    import uvicorn

    from toonlab.serve.app import create_app
    from toonlab.serve.server import uvicorn_config

    app = create_app(config, models)  # under the same protocol and limits as `toonlab serve`
    server = uvicorn.Server(uvicorn_config(app, config, host="127.0.0.1", port=free_port(),
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def encode(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()
