"""``toonlab study serve | report``: human rating study (library: toonlab.eval.study)."""

from __future__ import annotations

import typer

from toonlab.cli._common import _typer
from toonlab.terminal import console as terminal_console

app = _typer(help="Human rating study: serve a local rating page, report mean ± 95 % interval per method.")


@app.command("serve")
def study_serve(folders: list[str] = typer.Argument(..., help="One output folder per method (same file names)."),
                db: str = typer.Option("study.sqlite", "--db", help="SQLite file the scores are stored in."),
                names: list[str] = typer.Option(None, "--name", help="Method name per folder (default: folder names)."),
                port: int = typer.Option(8765, "--port"),
                host: str = typer.Option("127.0.0.1", "--host", help="Bind address (keep it local).")):
    """Serve the rating page: randomised, unlabelled outputs per photo, 1–5 scores saved to --db."""
    from toonlab.eval.study import StudyServer, collect

    server = StudyServer(collect(folders, names or None), db, host=host, port=port)
    typer.echo(f"rating page on {server.url} (scores → {db}); Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


@app.command("report")
def study_report(db: str = typer.Argument(..., help="The study's SQLite file.")):
    """Mean score ± 95 % confidence interval (Student t) per method."""
    from rich.table import Table

    from toonlab.eval.study import report

    table = Table(title=f"rating study: {db}")
    for col in ("method", "ratings", "mean ± 95 % CI"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in report(db):
        table.add_row(r.method, str(r.n), f"{r.mean:.2f} ± {r.ci95:.2f}" if r.n > 1 else f"{r.mean:.2f}")
    terminal_console().print(table)
