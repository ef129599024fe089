"""Load test of `toonlab serve` on loopback: N clients for T seconds against a server this script starts.

Prints JSON: throughput, latency percentiles of successful requests, counts by status, transport errors, and the
server's resident memory over time (VmRSS / VmHWM sampled from /proc/PID/status). Bounded in clients, time and
request count; the server binds 127.0.0.1 only. ``--slow-clients K`` adds K slowloris connections (request headers
at one byte per second, reconnecting whenever the server closes them) and reports how long the server let them hold.

    .venv/bin/python benchmarks/load_serve.py --clients 4 --duration 300 --size 512
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import numpy as np
from PIL import Image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def _photo(size: int, fmt: str) -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((size, size), Image.LANCZOS).save(buf, format=fmt, quality=90)
    return buf.getvalue()


def _start_server(args, port: int, log_path: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "toonlab.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(args.workers), "--queue-size", str(args.queue_size), "--timeout", str(args.timeout),
           "--access-log", log_path]
    for m in args.model or []:
        cmd += ["-m", m]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4, help="Concurrent clients (1..64).")
    ap.add_argument("--duration", type=float, default=60.0, help="Seconds of load (≤ 900).")
    ap.add_argument("--max-requests", type=int, default=100_000, help="Stop after this many requests in all.")
    ap.add_argument("--size", type=int, default=512, help="Side of the astronaut photo sent (pixels).")
    ap.add_argument("--upload-format", default="JPEG", choices=["JPEG", "PNG", "WEBP"])
    ap.add_argument("--model", action="append", help="Extra -m for the server (classic is always there).")
    ap.add_argument("--use-model", default="classic", help="Model name the clients ask for.")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--queue-size", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=60.0, help="Server's per-request timeout.")
    ap.add_argument("--sample-every", type=float, default=1.0, help="RSS sampling period (s).")
    ap.add_argument("--slow-clients", type=int, default=0, help="Extra slowloris connections (0..16).")
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 0 < args.duration <= 900 or not 0 <= args.slow_clients <= 16:
        ap.error("--clients must be 1..64, --slow-clients 0..16 and --duration 0..900 s")

    body = _photo(args.size, args.upload_format)
    port = _free_port()
    log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"toonlab-load-{port}.jsonl")
    server = _start_server(args, port, log_path)
    url = f"http://127.0.0.1:{port}/v1/cartoonize"
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter = Counter()
    errors: Counter = Counter()
    issued = [0]
    stop = threading.Event()
    rss: list[tuple[float, int]] = []

    def sampler():
        t0 = time.monotonic()
        while not stop.is_set():
            kib = _proc_kib(server.pid, "VmRSS")
            if kib is not None:
                rss.append((time.monotonic() - t0, kib))
            stop.wait(args.sample_every)

    def client(i: int):
        mime = "image/" + args.upload_format.lower()
        with httpx.Client(timeout=args.timeout + 30) as c:
            while not stop.is_set():
                with lock:
                    if issued[0] >= args.max_requests:
                        return
                    issued[0] += 1
                t = time.perf_counter()
                try:
                    r = c.post(url, files={"image": (f"c{i}.jpg", body, mime)}, data={"model": args.use_model})
                except httpx.HTTPError as e:
                    with lock:
                        errors[type(e).__name__] += 1
                    continue
                dt = time.perf_counter() - t
                with lock:
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        latencies.append(dt)
                if r.status_code == 503:  # a well-behaved client waits as told (capped to keep the load up)
                    stop.wait(min(float(r.headers.get("retry-after", 1)), 1.0))

    slow = {"connections": 0, "answered_408": 0, "closed_by_server": 0, "held_s": []}

    def slow_client():
        """Dribble one request's headers at 1 byte/s until the server closes the connection; then again."""
        while not stop.is_set():
            t, answer, closed = time.monotonic(), b"", False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.settimeout(1.0)
                    s.sendall(b"POST /v1/cartoonize HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    while not stop.is_set():
                        s.sendall(b"a")
                        try:
                            answer = s.recv(4096)
                        except socket.timeout:
                            continue
                        closed = True  # an answer or end of stream: the server ended it
                        break
            except OSError:  # reset by the server
                closed = True
            with lock:
                slow["connections"] += 1
                if closed:
                    slow["closed_by_server"] += 1
                    slow["answered_408"] += answer.startswith(b"HTTP/1.1 408 ")
                    slow["held_s"].append(time.monotonic() - t)

    threading.Thread(target=sampler, daemon=True).start()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    threads += [threading.Thread(target=slow_client, daemon=True) for _ in range(args.slow_clients)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(args.duration)
    stop.set()
    for t in threads:
        t.join(args.timeout + 60)
    elapsed = time.perf_counter() - t_start
    peak_kib = _proc_kib(server.pid, "VmHWM")
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
    with open(log_path) as f:
        logged = sum(1 for line in f if '"path":"/v1/cartoonize"' in line)
    os.unlink(log_path)

    lat = np.array(latencies) * 1e3
    mib = np.array([k for _, k in rss]) / 1024
    ts = np.array([t for t, _ in rss])
    half = len(mib) // 2
    # memory trend over the second half of the run (after warm-up): MiB per minute from a least-squares line
    slope = float(np.polyfit(ts[half:], mib[half:], 1)[0] * 60) if len(mib) - half >= 3 else None
    fivexx = {s: n for s, n in statuses.items() if s >= 500 and s != 503}
    report = {
        "config": {"clients": args.clients, "duration_s": args.duration, "image": f"{args.size}x{args.size} "
                   f"{args.upload_format} ({len(body)} bytes)", "model": args.use_model, "workers": args.workers,
                   "queue_size": args.queue_size, "cpu_count": os.cpu_count()},
        "elapsed_s": round(elapsed, 2),
        "requests": sum(statuses.values()),
        "ok": statuses.get(200, 0),
        "throughput_ok_per_s": round(statuses.get(200, 0) / elapsed, 3),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1), "p95": round(float(np.percentile(lat, 95)), 1),
                       "p99": round(float(np.percentile(lat, 99)), 1), "max": round(float(lat.max()), 1)}
        if len(lat) else None,
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "slow_clients": {"clients": args.slow_clients, "connections": slow["connections"],
                         "closed_by_server": slow["closed_by_server"], "answered_408": slow["answered_408"],
                         "held_s_max": round(max(slow["held_s"]), 2) if slow["held_s"] else None}
        if args.slow_clients else None,
        "unexpected_5xx": sum(fivexx.values()),
        "transport_errors": dict(errors),
        "access_log_lines": logged,
        "server_rss_mib": {"first": round(float(mib[0]), 1) if len(mib) else None,
                           "after_warmup": round(float(mib[half]), 1) if len(mib) else None,
                           "last": round(float(mib[-1]), 1) if len(mib) else None,
                           "max_sampled": round(float(mib.max()), 1) if len(mib) else None,
                           "peak_vmhwm": round(peak_kib / 1024, 1) if peak_kib else None,
                           "trend_second_half_mib_per_min": round(slope, 3) if slope is not None else None,
                           "timeline": [[round(float(t)), round(float(m), 1)]
                                        for t, m in list(zip(ts, mib))[:: max(1, len(mib) // 20)]]},
    }
    timeline = report["server_rss_mib"].pop("timeline")  # printed on one line: [[t_s, MiB], ...]
    text = json.dumps(report, indent=2)
    print(text[:-2] + ',\n  "rss_timeline_s_mib": ' + json.dumps(timeline) + "\n}")
    return 0 if report["unexpected_5xx"] == 0 and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
