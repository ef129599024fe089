"""The HTTP API and web page of `toonlab serve`.

Request path of ``POST /v1/cartoonize``, cheapest checks first:
0. the connection (toonlab.serve.server): headers and body must arrive within their timeouts and above a minimum
   rate (408 + close);
1. the gate (outermost ASGI layer): request id, Host header (421), API key (401), body size from Content-Length and
   while streaming (413) — before any byte of the body is parsed;
2. the endpoint: file size (413), format by magic bytes (415), width×height from the header only (413), model /
   style / output format by name (400);
3. the worker pool: decode, translate, encode in a worker thread; pool full → 503 + Retry-After; no answer within
   ``timeout_s`` → 504; a truncated or corrupt image → 400 with toonlab.io's one-line message.
Every response gets an ``X-Request-ID`` and one JSON line in the access log.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import re
import sys
import threading
import time
import uuid
import warnings
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import torch
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import FormData
from starlette.requests import ClientDisconnect
from starlette.staticfiles import StaticFiles

from toonlab import __version__
from toonlab.errors import ToonlabError
from toonlab.infer.postprocess import PostProcess
from toonlab.io import ImageReadError, decode_image, encode_image
from toonlab.serve.config import API_KEY_ENV, OUTPUT_FORMATS, TIMEOUT_SCOPE_KEY, ServeConfig
from toonlab.serve.models import ServedModel, load_models
from toonlab.serve.worker import QueueFull, WorkerPool

# multipart framing (boundaries, part headers, the small form fields) on top of the file's own bytes
_BODY_SLACK = 64 * 1024

# (magic prefix, offset, format); WebP is RIFF....WEBP
_MAGIC = [(b"\x89PNG\r\n\x1a\n", 0, "png"), (b"\xff\xd8\xff", 0, "jpeg"), (b"WEBP", 8, "webp"),
          (b"GIF87a", 0, "gif"), (b"GIF89a", 0, "gif"), (b"BM", 0, "bmp"), (b"II*\x00", 0, "tiff"),
          (b"MM\x00*", 0, "tiff")]
_PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF"}
_MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def sniff_format(head: bytes) -> str | None:
    """The image format named by the first bytes of a file (png/jpeg/webp/gif/bmp/tiff), or None."""
    for magic, offset, fmt in _MAGIC:
        if head[offset:offset + len(magic)] == magic and (fmt != "webp" or head[:4] == b"RIFF"):
            return fmt
    return None


def header_size(data: bytes, fmt: str, name: str) -> tuple[int, int]:
    """(width, height) from the image header alone (Pillow's open is lazy: no pixel data is decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PIL_NAMES[fmt]]) as im:
                return im.size
    except Image.DecompressionBombError as e:  # beyond Pillow's own hard limit: certainly beyond ours
        raise HTTPException(413, f"{name}: too many pixels ({str(e).splitlines()[0]})") from None
    except Exception as e:  # noqa: BLE001 — any header parse failure is the client's broken file
        msg = _REPR.sub("", str(e)).strip().splitlines()
        reason = f"not a valid {fmt} file" if isinstance(e, UnidentifiedImageError) else (
            msg[0] if msg else type(e).__name__)
        raise HTTPException(400, f"{name}: unreadable {fmt} header ({reason})") from None


# an object's default repr (`<_io.BytesIO object at 0x7f…>`): never sent to a client (heap addresses, noise)
_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")
_CLASS_REPR = re.compile(r"<class '(?:\w+\.)*(\w+)'>")  # pydantic's "received: <class 'str'>" → "received: str"


def _safe_stem(filename: str | None) -> str:
    """A download-safe stem of an uploaded file name (the name is never used as a path)."""
    stem = Path(filename or "image").stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:64].strip("._") or "image"


class AccessLog:
    """One JSON object per line: ts, request_id, method, path, status, bytes_in, bytes_out, latency_ms, client."""

    def __init__(self, target: str | None):
        self._lock = threading.Lock()
        self._stream = None if target is None else sys.stderr if target == "-" else open(  # noqa: SIM115
            target, "a", encoding="utf-8", buffering=1)
        self._owned = target not in (None, "-")

    def write(self, record: dict):
        if self._stream is None:
            return
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def close(self):
        if self._owned and self._stream is not None:
            self._stream.close()


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BODY_TAIL_KEY = "toonlab.body_tail"
_TAIL_BYTES = 128  # a multipart close delimiter is "--" + boundary (≤ 70 characters, RFC 2046) + "--" + CRLF


class Gate:
    """Outermost ASGI layer: request id, Host check, API key on /v1/*, body-size limit, access log (499 for a client
    that left before its answer, 408 for one the connection protocol timed out).

    Rejections here happen before the body is read, 503 included when the worker pool is already full (a turned-away
    upload then costs no parsing). A body that grows past the limit while streaming (no or a false Content-Length)
    is answered 413 at once; the app behind sees a disconnect and its output is dropped.
    """

    def __init__(self, app, config: ServeConfig, log: AccessLog, pool: WorkerPool | None = None):
        self.app = app
        self.config = config
        self.log = log
        self.pool = pool
        self.body_limit = config.max_upload_bytes + _BODY_SLACK

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id", "")
        rid = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        st = {"status": None, "bytes_in": 0, "bytes_out": 0, "rejected": False, "gone": False}
        tail = scope[_BODY_TAIL_KEY] = bytearray()  # the body's last bytes: did a multipart body end properly?
        rid_header = (b"x-request-id", rid.encode())

        async def send_logged(message):
            if st["rejected"]:
                return  # the app's late answer after our own rejection
            if message["type"] == "http.response.start":
                st["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), rid_header]}
            elif message["type"] == "http.response.body":
                st["bytes_out"] += len(message.get("body", b""))
            await send(message)

        async def reject(status: int, detail: str, extra: list | None = None):
            body = json.dumps({"detail": detail}).encode()
            await send_logged({"type": "http.response.start", "status": status,
                               "headers": [(b"content-type", b"application/json"),
                                           (b"content-length", str(len(body)).encode()),
                                           (b"connection", b"close"), *(extra or [])]})
            await send_logged({"type": "http.response.body", "body": body})
            st["rejected"] = True

        async def receive_counted():
            if st["rejected"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect" and st["status"] is None:
                st["gone"] = True  # before any answer: whatever the app answers now, nobody reads it
            elif message["type"] == "http.request":
                st["bytes_in"] += len(message.get("body", b""))
                tail.extend(message.get("body", b"")[-_TAIL_BYTES:])
                del tail[:-_TAIL_BYTES]
                if st["bytes_in"] > self.body_limit:
                    await reject(413, f"request body over {self.body_limit} bytes "
                                      f"(the upload limit is {self.config.max_upload_bytes} bytes)")
                    return {"type": "http.disconnect"}
            return message

        try:
            path = scope.get("path", "")
            length = headers.get("content-length", "")
            host = self.config.foreign_host(headers.get("host", ""))
            if host is not None:  # DNS rebinding: a foreign name resolving to our address
                await reject(421, f"host {host[:100]!r} is not served here (allowed: "
                                  f"{', '.join(self.config.allowed_hosts)}; see --allowed-hosts)")
            elif path.startswith("/v1/") and self.config.api_key and not self._authorized(headers):
                await reject(401, f"missing or wrong API key (send it as X-API-Key; the server reads it from "
                                  f"${API_KEY_ENV})", [(b"www-authenticate", b"Bearer")])
            elif (self.pool is not None and path == "/v1/cartoonize" and self.pool.admitted >= self.pool.capacity
                  and scope.get("method") == "POST"):  # full now: answered before the upload is read and parsed
                await reject(503, self.pool.busy_message(), [(b"retry-after", str(self.config.retry_after_s).encode())])
            elif length.isdigit() and int(length) > self.body_limit:
                await reject(413, f"request body of {length} bytes is over the limit of {self.body_limit} bytes "
                                  f"(upload limit {self.config.max_upload_bytes} bytes)")
            else:
                try:
                    await self.app(scope, receive_counted, send_logged)
                except ClientDisconnect:
                    st["gone"] = st["gone"] or not st["rejected"]  # else we cut the body off after our 413
                if st["gone"]:  # the client went away (nginx's 499), or the server timed it out (408)
                    st["status"] = 408 if TIMEOUT_SCOPE_KEY in scope else 499
        except BaseException:
            st["status"] = st["status"] or 500
            raise
        finally:
            self.log.write({"ts": round(time.time(), 3), "request_id": rid, "method": scope.get("method"),
                            "path": scope.get("path"), "status": st["status"], "bytes_in": st["bytes_in"],
                            "bytes_out": st["bytes_out"], "latency_ms": round((time.perf_counter() - t0) * 1e3, 2),
                            "client": (scope.get("client") or [None])[0]})

    def _authorized(self, headers: dict) -> bool:
        given = headers.get("x-api-key") or ""
        auth = headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.config.api_key.encode())


def _translate_job(data: bytes, name: str, model: ServedModel, style: str | None, strength: float,
                   keep_colors: bool, fmt: str, max_pixels: int, quality: int) -> bytes:
    """Worker-thread body: decode → translate → post-process → encode. Returns the encoded image bytes."""
    with torch.inference_mode():
        img = decode_image(data, name=name, max_pixels=max_pixels)
        photo = img.rgb[None]
        out = PostProcess(keep_colors=keep_colors, strength=strength)(model.run(photo, style), photo)
        alpha = img.alpha if fmt != "jpeg" else None  # JPEG cannot hold alpha
        return encode_image(out[0], alpha, fmt=fmt, quality=quality)


def create_app(config: ServeConfig, models: dict[str, ServedModel] | None = None) -> FastAPI:
    """The ASGI app. ``models`` (name → ServedModel) defaults to ``load_models(config.models, config.device)``;
    all models are loaded here, once, before the first request."""
    if models is None:
        models = load_models(config.models, config.device)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    pool = WorkerPool(config.workers, config.queue_size)
    log = AccessLog(config.access_log)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        pool.close(wait=False)
        log.close()

    swagger_assets = _swagger_assets()
    app = FastAPI(title="toonlab", version=__version__, lifespan=lifespan,
                  docs_url=None if swagger_assets else "/docs",
                  description="Photo → cartoon translation. Endpoints under /v1 need the API key (header "
                              f"`X-API-Key` or `Authorization: Bearer`) when the server has ${API_KEY_ENV} set.")
    app.state.config, app.state.models, app.state.pool, app.state.access_log = config, models, pool, log
    index_html = resources.files("toonlab.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    def error(status: int, detail: str, headers: dict | None = None):
        raise HTTPException(status, detail, headers=headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(index_html, headers={
            "content-security-policy": "default-src 'self'; img-src 'self' blob: data:; "
                                       "style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'",
            "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"})

    if swagger_assets:  # the API docs from local files: they render without internet
        app.mount("/docs-assets", StaticFiles(directory=swagger_assets), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def docs():
            return get_swagger_ui_html(openapi_url=app.openapi_url, title="toonlab API",
                                       swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-assets/swagger-ui.css",
                                       swagger_favicon_url="/docs-assets/favicon-32x32.png")

    @app.get("/healthz", summary="Liveness: ok, the models held and the work queue's fill")
    async def healthz():
        return {"status": "ok", "models": list(models), "queue": {"admitted": pool.admitted,
                                                                  "capacity": pool.capacity}}

    @app.get("/v1/models", summary="The loaded models (styles, size multiple) and the server's limits")
    async def list_models():
        return {"models": [m.describe() for m in models.values()], "default": "classic",
                "limits": {"max_upload_bytes": config.max_upload_bytes, "max_pixels": config.max_pixels,
                           "formats": list(config.allowed_formats), "output_formats": list(OUTPUT_FORMATS),
                           "timeout_s": config.timeout_s}}

    @app.post("/v1/cartoonize", summary="Translate one photo; the answer is the image itself",
              response_class=Response,
              responses={200: {"content": {t: {} for t in _MEDIA_TYPES.values()}, "description": "the image"},
                         400: {"description": "bad field, unknown model/style, or a truncated/corrupt image"},
                         401: {"description": "API key required"},
                         413: {"description": "file over max_upload_bytes or image over max_pixels"},
                         415: {"description": "not an allowed image format (checked by content)"},
                         503: {"description": "work queue full; retry after Retry-After seconds"},
                         504: {"description": "not done within the per-request timeout"}})
    async def cartoonize(
            image: UploadFile = File(..., description="The photo (format checked by its content)."),
            model: str = Form("classic", description="A name from GET /v1/models."),
            style: str | None = Form(None, description="Style name, for multi-style models."),
            strength: float = Form(1.0, ge=0.0, le=1.0, description="0 = the photo, 1 = the full translation."),
            keep_colors: bool = Form(False, description="Keep the photo's colours (output luminance only)."),
            format: str = Form("png", description="Output format: png | jpeg | webp."),
            quality: int = Form(92, ge=1, le=100, description="JPEG / WebP quality.")):
        name = _safe_stem(image.filename)
        if image.size is not None and image.size > config.max_upload_bytes:
            error(413, f"{name}: file of {image.size} bytes is over the limit of {config.max_upload_bytes} bytes")
        data = await image.read()
        if len(data) > config.max_upload_bytes:
            error(413, f"{name}: file of {len(data)} bytes is over the limit of {config.max_upload_bytes} bytes")
        if not data:
            error(400, f"{name}: empty file")
        fmt = sniff_format(data[:16])
        if fmt not in config.allowed_formats:
            error(415, f"{name}: {'a ' + fmt.upper() if fmt else 'not a recognised image'} file; "
                       f"allowed: {', '.join(config.allowed_formats)}")
        w, h = header_size(data, fmt, name)
        if w * h > config.max_pixels:
            error(413, f"{name}: {w}x{h} = {w * h} pixels is over the limit of {config.max_pixels} pixels")
        if model not in models:
            error(400, f"unknown model {model!r} (loaded: {', '.join(models)})")
        served = models[model]
        if style in ("", None):
            style = served.styles[0] if served.styles else None
        elif style not in served.styles:
            if not served.styles:
                error(400, f"model {model!r} has no style {style!r}: it has a single style (send no style)")
            error(400, f"model {model!r} has no style {style!r} (styles: {', '.join(served.styles)})")
        fmt_out = format.lower().replace("jpg", "jpeg")
        if fmt_out not in OUTPUT_FORMATS:
            error(400, f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {format!r}")
        try:
            fut = pool.submit(_translate_job, data, name, served, style, strength, keep_colors, fmt_out,
                              config.max_pixels, quality)
        except QueueFull as e:
            error(503, str(e), {"Retry-After": str(config.retry_after_s)})
        del data  # the job holds the only reference now
        try:
            out = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=config.timeout_s)
        except asyncio.TimeoutError:
            fut.cancel()  # dropped if still queued; a running job finishes and frees its slot then
            error(504, f"{name}: not done within {config.timeout_s:g} s")
        except ImageReadError as e:
            error(413 if "exceeds the limit" in str(e) else 400, str(e))
        except ToonlabError as e:
            error(400, str(e))
        return Response(out, media_type=_MEDIA_TYPES[fmt_out], headers={
            "content-disposition": f'inline; filename="{name}-{model}.{"jpg" if fmt_out == "jpeg" else fmt_out}"',
            "cache-control": "no-store"})

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        detail = _REPR.sub("", exc.detail) if isinstance(exc.detail, str) else exc.detail
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_fields(request: Request, exc: RequestValidationError):
        """FastAPI's list of errors → one line; a multipart body in which no part could be found, or that stops
        before its closing delimiter, is malformed (400), not a request with missing fields (422)."""
        content_type = request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            boundary = re.search(r"boundary=\"?([^\";]+)", content_type)
            closed = boundary and f"--{boundary.group(1)}--".encode() in request.scope.get(_BODY_TAIL_KEY, b"")
            if not closed or (isinstance(exc.body, FormData) and not len(exc.body)):
                return JSONResponse({"detail": "malformed multipart body: no form part found or no closing "
                                               "--boundary-- (a cut or mis-framed upload)"}, status_code=400)
        return JSONResponse({"detail": _one_line_errors(exc.errors())}, status_code=422)

    return _wrap(app, config, log, pool)


def _one_line_errors(errors) -> str:
    """``[{"loc": ("body", "strength"), "msg": "Input should be …", "input": "2"}, …]`` → ``strength: Input should
    be … (got '2'); …``."""
    parts = []
    for err in errors:
        field = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header"))
        got = f" (got {err['input']!r})" if isinstance(err.get("input"), (str, int, float)) else ""
        msg = _CLASS_REPR.sub(r"\1", str(err.get("msg", "invalid")))
        parts.append(f"{field or 'request'}: {msg}{got}"[:200])
    return "; ".join(parts) or "invalid request"


def _swagger_assets() -> str | None:
    """Folder of a locally installed Swagger UI (package swagger-ui-bundle-v2, in the ``serve`` extra), or None:
    then /docs is FastAPI's own page, whose scripts come from a CDN."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return swagger_ui_bundle.swagger_ui_path


def _wrap(app: FastAPI, config: ServeConfig, log: AccessLog, pool: WorkerPool) -> FastAPI:
    """Install the Gate as the outermost layer while keeping the FastAPI object (routes, OpenAPI, state)."""
    inner_build = app.build_middleware_stack

    def build():
        return Gate(inner_build(), config, log, pool)

    app.build_middleware_stack = build
    return app
