"""``toonlab serve``: the HTTP API and web page (library: toonlab.serve)."""

from __future__ import annotations

import typer

from toonlab.cli._common import _typer, need_extra

app = _typer()


@app.command("serve")
def serve_cmd(models: list[str] = typer.Option(None, "--model", "-m", help="Export file or run dir to serve (repeat; "
                                                                          "NAME=PATH names it). classic is always on."),
              host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback unless you mean it)."),
              port: int = typer.Option(8000, "--port"),
              device: str = typer.Option("auto", "--device", help="Device of the learned models."),
              workers: int = typer.Option(1, "--workers", min=1, help="Translation threads (fixed pool)."),
              queue_size: int = typer.Option(4, "--queue-size", min=0, help="Requests waiting for a worker; "
                                                                             "beyond: 503 + Retry-After."),
              timeout: float = typer.Option(120.0, "--timeout", help="Per-request limit in seconds (504)."),
              max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest upload (413)."),
              max_pixels: int = typer.Option(4096 * 4096, "--max-pixels", help="Largest width×height (413)."),
              formats: str = typer.Option("png,jpeg,webp", "--formats", help="Accepted upload formats, by content "
                                                                             "(415 for others): png,jpeg,webp,bmp,gif,tiff."),
              max_connections: int = typer.Option(64, "--max-connections", help="Open connections before uvicorn "
                                                                                "answers 503."),
              header_timeout: float = typer.Option(10.0, "--header-timeout", help="Seconds for a request's line and "
                                                                                  "headers (then 408 + close)."),
              body_timeout: float = typer.Option(20.0, "--body-timeout", help="Longest silence within an upload, "
                                                                              "and the grace before the rate counts."),
              min_upload_rate: float = typer.Option(1024.0, "--min-upload-rate", help="Slowest average upload in "
                                                                                      "bytes/s (0 = no minimum)."),
              send_timeout: float = typer.Option(20.0, "--send-timeout", help="Seconds a client may read none of "
                                                                              "its answer before it is cut off."),
              allowed_hosts: str = typer.Option(None, "--allowed-hosts", help="Host header names served, comma-"
                                                "separated ('*' = any; default: loopback names on a loopback bind, "
                                                "else any)."),
              access_log: str = typer.Option("-", "--access-log", help="JSON-lines access log file ('-' = stderr).")):
    """Serve the HTTP API (POST /v1/cartoonize, GET /v1/models, /healthz, /docs) and the web page at /.

    Set $TOONLAB_API_KEY to require that key (X-API-Key header) on /v1/*."""
    import os

    need_extra("serve", "toonlab serve", "fastapi", "uvicorn", "python_multipart|multipart")
    from toonlab.serve.app import create_app
    from toonlab.serve.config import ServeConfig
    from toonlab.serve.server import serve

    cfg = ServeConfig.from_env(models=list(models or []), host=host, port=port, device=device, workers=workers,
                               queue_size=queue_size, timeout_s=timeout, max_upload_bytes=int(max_upload_mb * 2**20),
                               max_pixels=max_pixels, allowed_formats=tuple(f for f in formats.split(",") if f),
                               access_log=access_log, max_connections=max_connections,
                               header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                               min_upload_rate=min_upload_rate, send_timeout_s=send_timeout,
                               allowed_hosts=None if allowed_hosts is None else tuple(allowed_hosts.split(",")),
                               torch_threads=max(1, (os.cpu_count() or 1) // workers))  # no oversubscription
    web_app = create_app(cfg)
    names = ", ".join(web_app.state.models)
    typer.echo(f"toonlab serve: http://{host}:{port}/ (models: {names}; key {'required' if cfg.api_key else 'off'})",
               err=True)
    serve(web_app, cfg)
