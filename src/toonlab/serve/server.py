"""Running the app under uvicorn with read timeouts that uvicorn itself lacks (slow clients, "slowloris").

uvicorn closes idle keep-alive connections but never times out a client that is still sending: request headers or a
body dribbled at one byte per second hold a connection (and a slot of ``--max-connections``) for ever. The
connection protocol here is uvicorn's h11 protocol plus one timer per connection, in the spirit of Apache's
mod_reqtimeout (``header=…``, ``body=…,MinRate=…``):

- **headers**: the request line and headers must be complete ``header_timeout_s`` after the connection opens, or
  after the previous response on a kept-alive connection (uvicorn's own keep-alive timeout still closes silent
  ones earlier);
- **body**: no gap between body bytes longer than ``body_timeout_s``, and on average at least ``min_upload_rate``
  bytes/s after a grace of ``body_timeout_s`` (the deadline is ``start + body_timeout_s + received / rate``).
  Time during which the server itself stopped reading (flow control: the app has not consumed what it holds) is
  not counted against the client.

- **response**: a client that stops reading its answer (the socket's send buffer stays full) for
  ``send_timeout_s`` is cut off: its connection is aborted, its request cancelled. Without this, connections that
  pipeline requests for large responses and never read them hold their slots for as long as they like.

When every slot of ``--max-connections`` is taken, a new connection closes the one that has waited longest (over
``evict_after_s``) for its request headers or for its client to read, so slow clients holding all slots cannot
turn everyone else away. ``/healthz`` is answered even then (it is outside the slot limit): a liveness probe must
not fail because clients are slow.

A connection that misses its deadline is closed, after a ``408`` with a one-line JSON ``detail`` when it had
started a request and no answer has begun; the app sees a disconnect and the access log records 408.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Callable

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from toonlab.serve.config import TIMEOUT_SCOPE_KEY, ServeConfig

# paths answered however many connections are open (uvicorn's limit_concurrency does not apply to them)
UNLIMITED_PATHS = ("/healthz",)


def _timeout_response(detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode()
    return head + body


def guarded_protocol(config: ServeConfig, on_header_timeout: Callable[[dict], None] | None = None) -> type:
    """An H11Protocol subclass enforcing ``config``'s header / body timeouts and minimum upload rate.

    ``on_header_timeout(record)`` is called for connections closed before a request existed (the app never saw
    them), with ``client`` and ``detail``; body timeouts reach the app as a disconnect marked in its scope.
    """
    header_s, body_s, rate = config.header_timeout_s, config.body_timeout_s, config.min_upload_rate
    evict_s, send_s = config.evict_after_s, config.send_timeout_s

    class GuardedH11Protocol(H11Protocol):
        @property
        def limit_concurrency(self) -> int | None:
            """uvicorn's slot limit, read when a request's head is complete (``scope`` is that request's): none
            for the health check, which costs nothing and must answer while slow clients hold every slot."""
            scope = getattr(self, "scope", None)
            return None if scope is not None and scope.get("path") in UNLIMITED_PATHS else self._limit

        @limit_concurrency.setter
        def limit_concurrency(self, value: int | None) -> None:
            self._limit = value

        def connection_made(self, transport):
            self._send_guard: asyncio.TimerHandle | None = None
            self._unread_since: float | None = None  # when the client stopped reading (send buffer full)
            super().connection_made(transport)
            self._guard: asyncio.TimerHandle | None = None
            self._seen_cycle = None
            self._phase: str | None = None
            self._enter("headers")  # an open connection that sends nothing is a slow client too
            if self.limit_concurrency is not None and len(self.connections) >= self.limit_concurrency:
                self._make_room()

        def _waiting_since(self) -> float | None:
            """Since when this connection waits on its client: for request headers, or to read its answer."""
            if getattr(self, "_phase", None) == "headers":
                return self._start
            return getattr(self, "_unread_since", None)

        def _make_room(self) -> None:
            """All slots taken: this connection's request would get 503. Close the connection that has waited
            longest on its client — for its request headers, or to read its answer — if longer than
            ``evict_after_s`` (a real client sends its headers in milliseconds and reads as it goes), so slow
            clients cannot starve the others."""
            now = time.monotonic()
            waiting = sorted((c for c in self.connections if c is not self and c._waiting_since() is not None
                              and now - c._waiting_since() > evict_s), key=lambda c: c._waiting_since())
            # uvicorn admits a request while len(connections) < limit, this connection included
            for oldest in waiting[:len(self.connections) - self._limit + 1]:
                self.connections.discard(oldest)  # its connection_lost comes on a later loop turn
                if oldest._phase == "headers":
                    oldest._expire(now, f"request headers not complete after {now - oldest._start:.1f} s while "
                                        f"all connection slots are taken")
                else:
                    oldest._cut_off()

        def connection_lost(self, exc):
            self._enter(None)
            self._stop_send_guard()
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._send_guard is None:
                self._unread_since = time.monotonic()
                self._send_guard = self.loop.call_later(send_s, self._cut_off)

        def resume_writing(self) -> None:
            super().resume_writing()
            self._stop_send_guard()

        def _stop_send_guard(self) -> None:
            if self._send_guard is not None:
                self._send_guard.cancel()
                self._send_guard = None
            self._unread_since = None

        def _cut_off(self) -> None:
            """The client does not read what we send: nothing more can reach it, so drop the connection (abort:
            a close would wait for the unread bytes to flush) — the request's task sees a disconnect."""
            self._stop_send_guard()
            self.transport.abort()

        def data_received(self, data: bytes) -> None:
            if self._phase is not None:
                self._received += len(data)
                self._last = time.monotonic()
            super().data_received(data)
            self._sync()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # may start the next (pipelined) request
            self._sync()

        def _sync(self) -> None:
            """Move between phases after h11 has consumed what arrived."""
            if self.transport.is_closing():
                return self._enter(None)
            their = self.conn.their_state
            if self.cycle is not None and self.cycle is not self._seen_cycle:  # a new request's head is complete
                self._seen_cycle = self.cycle
                self._enter("body" if their is h11.SEND_BODY else None)
            elif self._phase == "body" and their is not h11.SEND_BODY:
                self._enter(None)
            if self._phase is None and their is h11.IDLE and self.cycle is not None and self.cycle.response_complete:
                self._enter("headers")  # kept alive: the next request's headers are due from now

        def _enter(self, phase: str | None) -> None:
            if getattr(self, "_guard", None) is not None:
                self._guard.cancel()
                self._guard = None
            now = time.monotonic()
            self._phase, self._start, self._last, self._checked, self._received = phase, now, now, now, 0
            if phase is not None:
                self._guard = self.loop.call_later(header_s if phase == "headers" else body_s, self._check)

        def _check(self) -> None:
            self._guard = None
            now = time.monotonic()
            if self._phase == "body" and self.flow.read_paused:  # we stopped reading, not the client
                self._start += now - self._checked
                self._last = now
            self._checked = now
            if self._phase == "headers":
                deadline = self._start + header_s
            else:
                deadline = self._last + body_s
                if rate > 0:
                    deadline = min(deadline, self._start + body_s + self._received / rate)
            if now < deadline:
                self._guard = self.loop.call_later(deadline - now, self._check)
            else:
                self._expire(now)

        def _expire(self, now: float, detail: str | None = None) -> None:
            """408 (if a request had begun and no answer has) and close; ``detail`` defaults to the deadline missed."""
            if detail is None and self._phase == "headers":
                detail = f"request headers not complete within {header_s:g} s"
            elif detail is None and now - self._last >= body_s:
                detail = f"no request body bytes for {body_s:g} s"
            elif detail is None:
                detail = (f"request body too slow: {self._received} bytes in {now - self._start:.1f} s (the minimum "
                          f"is {rate:g} bytes/s after {body_s:g} s)")
            cycle = self.cycle if self._phase == "body" else None
            started = self._received > 0
            self._enter(None)
            if cycle is not None:
                cycle.scope[TIMEOUT_SCOPE_KEY] = detail
                answer = not cycle.response_started
                cycle.disconnected = True  # the app's receive() now returns http.disconnect; its sends are dropped
                cycle.message_event.set()
            else:  # an idle connection that sent nothing is closed silently, like an expired keep-alive
                answer = started
                if answer and on_header_timeout is not None:
                    on_header_timeout({"client": self.client[0] if self.client else None, "detail": detail})
            if answer:
                self.transport.write(_timeout_response(detail))
            self.transport.close()

    return GuardedH11Protocol


def uvicorn_config(app, config: ServeConfig, **overrides) -> uvicorn.Config:
    """The uvicorn settings of `toonlab serve` for ``app`` (from ``create_app(config)``)."""
    log = getattr(app.state, "access_log", None)

    def header_timeout(record: dict):
        if log is not None:
            log.write({"ts": round(time.time(), 3), "request_id": None, "method": None, "path": None,
                       "status": 408, "bytes_in": 0, "bytes_out": 0, "latency_ms": None, **record})

    kw = dict(host=config.host, port=config.port, log_level="warning", access_log=False,
              http=guarded_protocol(config, header_timeout), limit_concurrency=config.max_connections,
              timeout_keep_alive=config.keep_alive_s, timeout_graceful_shutdown=5,
              ws="none")  # no WebSocket routes: an Upgrade stays plain HTTP, under the same timeouts
    kw.update(overrides)
    return uvicorn.Config(app, **kw)


def serve(app, config: ServeConfig) -> None:
    """Serve ``app`` until interrupted."""
    uvicorn.Server(uvicorn_config(app, config)).run()
