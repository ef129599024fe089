"""``toonlab evaluate | experiment``: scores and paper tables (library: toonlab.eval)."""

from __future__ import annotations

import typer

from toonlab.cli._common import _typer
from toonlab.terminal import console as terminal_console

app = _typer()


@app.command("evaluate")
def evaluate_cmd(
        model: str = typer.Option(None, "--model", "-m", help="Export / run dir / 'classic' to translate with."),
        photos: str = typer.Option(None, "--photos", help="Photos to translate (photo → cartoon)."),
        cartoons: str = typer.Option(None, "--cartoons", help="Reference cartoons (FID/KID; paired truth when names "
                                                              "match, e.g. SynthToon test/cartoons); without "
                                                              "--photos: the cartoons to translate (cartoon → photo)."),
        targets: str = typer.Option(None, "--targets", help="Target-domain reference (Toon2real: real photos); adds "
                                                            "the weighted FID 0.8·FID(out,targets)+0.2·FID(out,inputs)."),
        outputs: str = typer.Option(None, "--outputs", help="Score this existing output folder instead of translating."),
        reference: str = typer.Option(None, "--reference", help="Reference folder for --outputs."),
        inputs: str = typer.Option(None, "--inputs", help="With --outputs: the inputs, for the weighted FID."),
        out: str = typer.Option(None, "--out", "-o", help="Where translated outputs go (default: a temp folder)."),
        metrics: str = typer.Option("fid,kid,psnr,ssim,edge_f1", "--metrics",
                                    help="Comma list of fid,kid,psnr,ssim,edge_f1."),
        json_path: str = typer.Option(None, "--json", help="Write the scores as JSON here."),
        inception: str = typer.Option(None, "--inception", help="Path of pt_inception-2015-12-05-6726825d.pth "
                                                                "(default: $TORCH_HOME/hub/checkpoints)."),
        cache_dir: str = typer.Option(None, "--cache-dir", help="FID stats cache (default ~/.cache/toonlab/fid)."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write cached statistics."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N (the model and Inception)."),
        batch_size: int = typer.Option(16, "--batch-size", min=1),
        video: str = typer.Option(None, "--video", help="Flicker of a video instead: with -m, its per-frame and "
                                                        "stabilised translations; with --outputs, that translated "
                                                        "video (warping error beside the input's; docs/video.md)."),
        stabilize_weight: float = typer.Option(None, "--stabilize-weight", min=0.0, max=0.99,
                                               help="With --video -m: the stabiliser's fusion weight (default: "
                                                    "its measured default).")):
    """Score outputs: FID, KID (×10³ in the table), weighted FID, PSNR / SSIM / edge F1 (SynthToon). Without the
    Inception weights (offline) FID/KID are noted as not computed and the rest is scored. With --video: flicker."""
    import json

    from rich.table import Table

    if video is not None:
        _evaluate_video(video, model, outputs, stabilize_weight, device, batch_size, json_path,
                        other=photos or cartoons or targets or reference or inputs or out)

    from toonlab.eval.evaluate import evaluate, parse_metrics

    res = evaluate(model=model, photos=photos, cartoons=cartoons, targets=targets, outputs=outputs,
                   reference=reference, inputs=inputs, out=out, metrics=parse_metrics(metrics), device=device,
                   inception=inception, cache_dir=cache_dir, use_cache=not no_cache, batch_size=batch_size)
    table = Table(title="toonlab evaluate")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in res.scores.items():
        if k == "kid_std":
            continue
        shown = f"{v * 1e3:.3f} ± {res.scores['kid_std'] * 1e3:.3f} (×10³)" if k == "kid" else f"{v:.4f}"
        table.add_row(k, shown)
    console = terminal_console()
    console.print(table)
    console.print("images: " + ", ".join(f"{k} {v}" for k, v in res.counts.items()))
    for n in res.notes:
        console.print(f"note: {n}", markup=False)
    for f, why in res.failed:
        typer.echo(f"failed: {f}: {why}", err=True)
    if json_path:
        from toonlab.eval.report import write_text

        write_text(json_path, json.dumps(res.to_json(), indent=2) + "\n")
    raise typer.Exit(1 if res.failed else 0)


def _evaluate_video(video, model, outputs, weight, device, batch_size, json_path, other) -> None:
    """``evaluate --video``: a table of warping errors (and SSIM to the per-frame output), optional JSON."""
    import json

    from rich.table import Table

    from toonlab.errors import UsageError
    from toonlab.eval.flicker import evaluate_video

    if other:
        raise UsageError("--video takes --model or --outputs (and --json, --device, --batch-size, "
                         "--stabilize-weight), not image folders")
    res = evaluate_video(video, model=model, outputs=outputs, weight=weight, device=device,
                         batch_size=min(batch_size, 8))
    table = Table(title=f"toonlab evaluate --video ({res['frames']} frames, {res['shots']} shot(s))")
    for col in ("stream", "warping error", "× input", "SSIM to per-frame"):
        table.add_column(col, justify="left" if col == "stream" else "right")
    for name, row in res["streams"].items():
        table.add_row(name, f"{row['warping_error']:.5f}", f"{row['vs_input']:.2f}",
                      f"{row['ssim']:.4f}" if "ssim" in row else "")
    console = terminal_console()
    console.print(table)
    for name, r in res.get("reduction", {}).items():
        console.print(f"{name}: warping error {100 * r:.1f} % lower than per-frame (weight {res['weight']})")
    if json_path:
        from toonlab.eval.report import write_text

        write_text(json_path, json.dumps(res, indent=2) + "\n")
    raise typer.Exit(0)


@app.command("experiment")
def experiment_cmd(config: str = typer.Argument(..., help="Experiment file, e.g. configs/experiments/NAME.yaml."),
                   out: str = typer.Option(None, "--out", "-o", help="Output folder (default: the file's out:); "
                                                                       "relative synth: roots are made inside it.")):
    """Train (or reuse) the runs of a paper table, evaluate them on the same data, write report.md/.html."""
    from toonlab.eval.experiment import run_experiment

    res = run_experiment(config, out=out, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"report: {res.report_md} and {res.report_html}")
    raise typer.Exit(1 if any(n.startswith("failed:") for n in res.notes) else 0)
