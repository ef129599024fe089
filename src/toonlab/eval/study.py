"""Human rating study (seed 000 asked volunteers to rate outputs 1–5): a local web page + SQLite + report.

``serve(folders, db)`` shows each rater, photo by photo, the outputs of every compared method for that photo in a
fresh random order and without labels; each output gets a 1–5 score. Which method sits in which slot is kept on
the server (the page only sees opaque slot numbers), so raters cannot tell methods apart by URL. Scores are
stored in SQLite as they arrive (one row per rater × photo × method; a re-score replaces it), so a restart loses
nothing. ``report(db)`` gives mean ± 95 % t-interval per method.

Methods are folders of outputs with the same file names (e.g. ``OUT/outputs/<row>/<dataset>`` of an experiment);
only photos present in every folder are shown. stdlib only (``http.server``, ``sqlite3``), bound to 127.0.0.1.
Like ``toonlab serve`` it checks the Host header (loopback names on a loopback bind: DNS rebinding), gives a
request ``request_timeout_s`` to arrive in full and serves at most ``max_connections`` at once (slow clients
neither pile up threads nor lock raters out); a rater asking for the next photo again gets the same open trial.
"""

from __future__ import annotations

import json
import math
import random
import socket
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from toonlab.errors import UsageError
from toonlab.serve.config import default_allowed_hosts, foreign_host

_SCHEMA = """
CREATE TABLE IF NOT EXISTS methods (name TEXT PRIMARY KEY, folder TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (id TEXT PRIMARY KEY, rater TEXT NOT NULL, photo TEXT NOT NULL,
                                   slots TEXT NOT NULL, created REAL DEFAULT (julianday('now')));
CREATE TABLE IF NOT EXISTS ratings (rater TEXT NOT NULL, photo TEXT NOT NULL, method TEXT NOT NULL,
                                    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
                                    created REAL DEFAULT (julianday('now')), PRIMARY KEY (rater, photo, method));
"""
MAX_BODY = 4096
REQUEST_TIMEOUT_S = 10.0  # request line, headers and body must arrive within this (our choice, as toonlab serve's)
MAX_CONNECTIONS = 32  # served at once; beyond, a new connection is closed at once (a study has a few raters)


@dataclass
class StudyData:
    """Methods (name → folder) and the photos (relative file names) present in every folder."""

    methods: dict[str, Path]
    photos: list[str]


def collect(folders: list[str | Path], names: list[str] | None = None) -> StudyData:
    """Methods from folders (named by ``names`` or the folder names); photos = file names common to all."""
    from toonlab.io import list_images

    if len(folders) < 2:
        raise UsageError("a study compares at least 2 method folders")
    names = names or [Path(f).name for f in folders]
    if len(names) != len(folders) or len(set(names)) != len(names):
        raise UsageError(f"method names must be unique, one per folder (got {names}); pass --name for each")
    methods, common = {}, None
    for name, f in zip(names, folders):
        p = Path(f)
        if not p.is_dir():
            raise UsageError(f"study: method folder not found: {p}")
        rel = {x.relative_to(p).as_posix() for x in list_images([str(p)])}
        common = rel if common is None else common & rel
        methods[name] = p
    if not common:
        raise UsageError("study: no image file name is present in every method folder")
    return StudyData(methods, sorted(common))


def _connect(db: str | Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None)  # autocommit: every score lands
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(_SCHEMA)
    return con


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>toonlab rating study</title>
<style>body{font-family:sans-serif;margin:1.5em}.grid{display:flex;flex-wrap:wrap;gap:1em}
.card{border:1px solid #aaa;padding:.5em;text-align:center}.card img{width:256px;height:256px;object-fit:contain;
image-rendering:auto}button.sel{background:#36c;color:#fff}</style></head><body>
<h1>Rate each image from 1 (poor) to 5 (excellent)</h1>
<p>Judge how good a cartoon each image is, keeping the content of the photo. Images are in random order.</p>
<p id="progress"></p><div class="grid" id="grid"></div><p><button id="next" disabled>Next photo</button></p>
<script>
const rater = localStorage.rater || (localStorage.rater = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()));
let trial = null, scored = {};
async function load() {
  const r = await fetch('api/next?rater=' + encodeURIComponent(rater)); const t = await r.json();
  const grid = document.getElementById('grid'); grid.innerHTML = ''; scored = {}; trial = t;
  document.getElementById('progress').textContent = t.done ? 'All photos rated — thank you!' :
      `Photo ${t.index + 1} of ${t.total}`;
  document.getElementById('next').disabled = true;
  if (t.done) return;
  for (let s = 0; s < t.slots; s++) {
    const c = document.createElement('div'); c.className = 'card';
    c.innerHTML = `<img src="img?trial=${t.trial}&slot=${s}"><br>` +
      [1,2,3,4,5].map(v => `<button data-s="${s}" data-v="${v}">${v}</button>`).join(' ');
    grid.appendChild(c);
  }
  grid.querySelectorAll('button').forEach(b => b.onclick = () => score(b));
}
async function score(b) {
  const s = +b.dataset.s, v = +b.dataset.v;
  const r = await fetch('api/score', {method: 'POST', headers: {'Content-Type': 'application/json'},
                        body: JSON.stringify({trial: trial.trial, slot: s, score: v})});
  if (!r.ok) return;
  b.parentNode.querySelectorAll('button').forEach(x => x.classList.toggle('sel', x === b));
  scored[s] = v; document.getElementById('next').disabled = Object.keys(scored).length < trial.slots;
}
document.getElementById('next').onclick = load; load();
</script></body></html>"""


class _BoundedServer(ThreadingHTTPServer):
    """At most ``limit`` connections are served at once; beyond, a new one is closed unanswered."""

    daemon_threads = True
    request_queue_size = 64  # the listen backlog (socketserver's 5 made a burst of connections wait for SYN retries)

    def __init__(self, address, handler, limit: int):
        self._slots = threading.BoundedSemaphore(limit)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class StudyServer:
    """The rating server: ``start()`` serves in a thread (for tests), ``serve_forever()`` blocks (CLI)."""

    def __init__(self, data: StudyData, db: str | Path, host: str = "127.0.0.1", port: int = 8765,
                 seed: int | None = None, request_timeout_s: float = REQUEST_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS):
        self.data, self.db = data, Path(db)
        self.allowed_hosts = default_allowed_hosts(host)
        self.request_timeout_s = request_timeout_s
        self.con = _connect(self.db)
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        with self.lock:
            self.con.executemany("INSERT OR REPLACE INTO methods VALUES (?, ?)",
                                 [(n, str(p)) for n, p in data.methods.items()])
        self.httpd = _BoundedServer((host, port), self._handler(), max_connections)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def next_trial(self, rater: str) -> dict:
        """The next photo this rater has not fully scored (random order per rater), with slots shuffled."""
        with self.lock:
            rated = {p for (p,) in self.con.execute(
                "SELECT photo FROM ratings WHERE rater=? GROUP BY photo HAVING COUNT(*) >= ?",
                (rater, len(self.data.methods)))}
            todo = [p for p in self.data.photos if p not in rated]
            if not todo:
                return {"done": True, "total": len(self.data.photos), "index": len(self.data.photos)}
            last = self.con.execute("SELECT id, photo, slots FROM trials WHERE rater=? ORDER BY rowid DESC LIMIT 1",
                                    (rater,)).fetchone()
            if last is not None and last[1] in todo and sorted(json.loads(last[2])) == sorted(self.data.methods):
                # still open (a reload, a second tab, a client calling in a loop): the same trial, no new row
                return {"done": False, "trial": last[0], "slots": len(self.data.methods),
                        "total": len(self.data.photos), "index": len(self.data.photos) - len(todo)}
            photo = self.rng.choice(todo)
            slots = list(self.data.methods)
            self.rng.shuffle(slots)
            trial = uuid.uuid4().hex
            self.con.execute("INSERT INTO trials (id, rater, photo, slots) VALUES (?, ?, ?, ?)",
                             (trial, rater, photo, json.dumps(slots)))
        return {"done": False, "trial": trial, "slots": len(slots), "total": len(self.data.photos),
                "index": len(self.data.photos) - len(todo)}

    def _trial(self, trial: str) -> tuple[str, str, list[str]] | None:
        with self.lock:
            row = self.con.execute("SELECT rater, photo, slots FROM trials WHERE id=?", (trial,)).fetchone()
        return None if row is None else (row[0], row[1], json.loads(row[2]))

    def record(self, trial: str, slot: int, score: int) -> None:
        t = self._trial(trial)
        if t is None or not 0 <= slot < len(t[2]) or score not in (1, 2, 3, 4, 5):
            raise ValueError("unknown trial/slot or score outside 1..5")
        rater, photo, slots = t
        with self.lock:
            self.con.execute("INSERT OR REPLACE INTO ratings (rater, photo, method, score) VALUES (?, ?, ?, ?)",
                             (rater, photo, slots[slot], score))

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = server.request_timeout_s  # per read; the deadline below bounds the whole request

            def setup(self):
                super().setup()
                self._timed_out = False
                # a request still arriving at the deadline is cut off (the socket shut: its reads end at once)
                self._deadline = threading.Timer(server.request_timeout_s, self._cut_off)
                self._deadline.start()

            def _cut_off(self):
                self._timed_out = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def finish(self):
                self._deadline.cancel()
                super().finish()

            def parse_request(self) -> bool:
                if self._timed_out or not super().parse_request():  # cut off: what arrived is not a request
                    return False
                if foreign_host(self.headers.get("Host", ""), server.allowed_hosts) is not None:
                    self._json({"error": "host not served here (DNS rebinding?)"}, HTTPStatus.MISDIRECTED_REQUEST)
                    return False
                return True

            def log_message(self, *args):  # quiet: the CLI prints the URL once
                pass

            def _send(self, status, body: bytes, ctype: str):
                if self._timed_out:  # nobody to answer
                    return
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _json(self, obj, status=HTTPStatus.OK):
                self._send(status, json.dumps(obj).encode(), "application/json")

            def do_GET(self):
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                self._deadline.cancel()  # the request is in
                if u.path == "/":
                    return self._send(HTTPStatus.OK, _PAGE.encode(), "text/html; charset=utf-8")
                if u.path == "/api/next":
                    rater = q.get("rater", "")[:100]
                    if not rater:
                        return self._json({"error": "rater missing"}, HTTPStatus.BAD_REQUEST)
                    return self._json(server.next_trial(rater))
                if u.path == "/img":
                    t = server._trial(q.get("trial", ""))
                    slot = q.get("slot", "")
                    # a trial from an earlier session may name a method this server no longer serves
                    if (t is None or not slot.isdigit() or int(slot) >= len(t[2])
                            or t[2][int(slot)] not in server.data.methods):
                        return self._json({"error": "unknown trial or slot"}, HTTPStatus.NOT_FOUND)
                    path = server.data.methods[t[2][int(slot)]] / t[1]
                    ctype = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                             ".webp": "image/webp"}.get(path.suffix.lower(), "application/octet-stream")
                    return self._send(HTTPStatus.OK, path.read_bytes(), ctype)
                self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)

            def do_POST(self):
                if urlparse(self.path).path != "/api/score":
                    return self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
                n = int(self.headers.get("Content-Length") or 0)
                if n > MAX_BODY:
                    return self._json({"error": "body too large"}, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                try:
                    data = self.rfile.read(n)
                    self._deadline.cancel()
                    body = json.loads(data or b"{}")
                    server.record(str(body["trial"]), int(body["slot"]), int(body["score"]))
                except (ValueError, KeyError, TypeError) as e:
                    return self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
                self._json({"ok": True})

        return Handler

    def start(self) -> StudyServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.close()

    def close(self) -> None:
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join(timeout=5)
            self.thread = None
        self.httpd.server_close()
        self.con.close()


@dataclass
class MethodScore:
    method: str
    n: int
    mean: float
    ci95: float  # half-width of the 95 % t-interval of the mean (nan with fewer than 2 ratings)


def report(db: str | Path) -> list[MethodScore]:
    """Mean score ± 95 % confidence half-width (Student t, n−1 dof) per method, best first."""
    try:
        from scipy.stats import t as student_t
    except ImportError:
        raise UsageError("study report needs SciPy for the t-interval: pip install 'toonlab[eval]'") from None

    p = Path(db)
    if not p.is_file():
        raise UsageError(f"study database not found: {p}")
    con = sqlite3.connect(str(p))
    try:
        rows = con.execute("SELECT method, score FROM ratings").fetchall()
    except sqlite3.DatabaseError as e:
        raise UsageError(f"{p}: not a toonlab study database ({e})") from None
    finally:
        con.close()
    by: dict[str, list[int]] = {}
    for m, s in rows:
        by.setdefault(m, []).append(s)
    out = []
    for m, scores in by.items():
        n = len(scores)
        mean = sum(scores) / n
        if n < 2:
            out.append(MethodScore(m, n, mean, math.nan))
            continue
        sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
        out.append(MethodScore(m, n, mean, float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)))
    return sorted(out, key=lambda r: -r.mean)
