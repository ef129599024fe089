"""Settings of `toonlab serve`: what is loaded, where it listens, and every limit (with safe defaults)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from toonlab.errors import UsageError

# Upload formats recognised by their magic bytes (see toonlab.serve.app.sniff_format).
KNOWN_FORMATS = ("png", "jpeg", "webp", "bmp", "gif", "tiff")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
API_KEY_ENV = "TOONLAB_API_KEY"
# scope key through which the server's protocol (serve/server.py) tells the app's Gate that it ended a request with
# 408; here so that the app imports without uvicorn
TIMEOUT_SCOPE_KEY = "toonlab.read_timeout"
# bind addresses that only this machine reaches, and the Host names a browser sends for them
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether a bind address (or name) reaches this machine only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """The name of a Host header without its port, lower-case: ``[::1]:8000`` → ``[::1]``, ``a.b:80`` → ``a.b``.
    Anything after the name but a numeric port stays (``[::1].evil.com``, ``localhost:x.evil``), so it matches no
    allowed name."""
    host = host.strip().lower()
    if host.startswith("[") and "]" in host:
        end = host.index("]") + 1
        name, rest = host[:end], host[end:]
    elif host.count(":") == 1:
        name, rest = host[:host.index(":")], host[host.index(":"):]
    else:
        return host
    return name if rest == "" or (rest[0] == ":" and rest[1:].isdigit()) else host


def foreign_host(header: str, allowed: tuple[str, ...]) -> str | None:
    """The host name of a Host ``header`` when none of ``allowed`` (names, ``*.suffix``, ``*``) admits it, else
    None. Against DNS rebinding: a page on a foreign name that resolves to our address sends that name."""
    host = host_name(header)
    for name in allowed:
        if name == "*" or host == name or (name.startswith("*.") and host.endswith(name[1:])):
            return None
    return host


def default_allowed_hosts(bind: str) -> tuple[str, ...]:
    """Loopback names (and the bind address) for a loopback bind, else any name."""
    return (*LOOPBACK_NAMES, bind) if is_loopback(bind) else ("*",)


@dataclass
class ServeConfig:
    """Everything `create_app` needs. Limits are per request unless said otherwise."""

    models: list[str] = field(default_factory=list)  # export files / run dirs (optionally NAME=PATH); classic always
    host: str = "127.0.0.1"                 # loopback unless told otherwise
    port: int = 8000
    device: str = "auto"                    # device of the learned models (classic runs on CPU)
    max_upload_bytes: int = 20 * 2**20      # 413 above this (the file part; the whole body gets 64 KiB of slack)
    max_pixels: int = 4096 * 4096           # 413 above this, read from the header before any decoding
    allowed_formats: tuple[str, ...] = ("png", "jpeg", "webp")  # 415 for anything else (by content)
    workers: int = 1                        # fixed pool of translation threads (torch releases the GIL)
    queue_size: int = 4                     # requests waiting for a worker; beyond: 503 + Retry-After
    timeout_s: float = 120.0                # per request, queueing included: 504 after this
    retry_after_s: int = 2                  # the Retry-After header sent with 503
    api_key: str | None = None              # required (X-API-Key / Bearer) on /v1/* when set
    access_log: str | None = "-"            # JSON-lines access log: "-" = stderr, a path, or None = off
    torch_threads: int = 0                  # intra-op threads per translation (0 = torch's default)
    max_connections: int = 64               # open connections before uvicorn answers 503 (limit_concurrency)
    # slow clients (toonlab.serve.server): 408 + close. Our choice, in the range of Apache mod_reqtimeout's
    # defaults (header 20-40 s, body 20 s, MinRate 500 B/s) and nginx's 60 s; 0 = no minimum rate
    header_timeout_s: float = 10.0          # request line + headers complete within this
    body_timeout_s: float = 20.0            # longest gap between body bytes, and the grace before the rate counts
    min_upload_rate: float = 1024.0         # bytes/s on average over the body after the grace
    keep_alive_s: int = 5                   # an idle kept-alive connection is closed after this (uvicorn's)
    send_timeout_s: float = 20.0            # a client that reads none of its answer for this long is cut off
    evict_after_s: float = 1.0              # all slots taken: close the longest header wait beyond this (our choice)
    # Host header names accepted (DNS rebinding); None = loopback names when bound to loopback, else any
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self):
        aliases = {"jpg": "jpeg", "tif": "tiff"}
        self.allowed_formats = tuple(aliases.get(f.lower(), f.lower()) for f in self.allowed_formats)
        bad = [f for f in self.allowed_formats if f not in KNOWN_FORMATS]
        if bad:
            raise UsageError(f"serve: unknown upload format {bad[0]!r} (known: {', '.join(KNOWN_FORMATS)})")
        if self.allowed_hosts is None:
            self.allowed_hosts = default_allowed_hosts(self.host)
        self.allowed_hosts = tuple(dict.fromkeys(h.strip().lower() for h in self.allowed_hosts if h.strip()))
        checks = {"port": 0 <= self.port < 65536, "max_upload_bytes": self.max_upload_bytes > 0,
                  "max_pixels": self.max_pixels > 0, "allowed_formats": bool(self.allowed_formats),
                  "workers": self.workers >= 1, "queue_size": self.queue_size >= 0, "timeout_s": self.timeout_s > 0,
                  "retry_after_s": self.retry_after_s >= 0, "torch_threads": self.torch_threads >= 0,
                  "max_connections": self.max_connections >= 1, "header_timeout_s": self.header_timeout_s > 0,
                  "body_timeout_s": self.body_timeout_s > 0, "min_upload_rate": self.min_upload_rate >= 0,
                  "keep_alive_s": self.keep_alive_s >= 1, "send_timeout_s": self.send_timeout_s > 0, "evict_after_s": self.evict_after_s >= 0,
                  "allowed_hosts": bool(self.allowed_hosts)}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"serve: invalid {bad[0]}={getattr(self, bad[0])!r}")

    def foreign_host(self, header: str) -> str | None:
        """The Host ``header``'s name when ``allowed_hosts`` does not admit it, else None (:func:`foreign_host`)."""
        return foreign_host(header, self.allowed_hosts)

    @classmethod
    def from_env(cls, **kw) -> ServeConfig:
        """A config whose api_key comes from $TOONLAB_API_KEY (unset or empty: no key) unless given."""
        kw.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
        return cls(**kw)
