"""ONNX Runtime's memory model against what it really keeps resident: the plan's input for the ONNX Runtime backend.

Per network (``ctss``, and the ``animegan2`` / ``cartoongan`` peers' networks of ``bench_peers.py`` with random
weights, converted by ``import-weights``): the export is fitted once (``OrtBackend.measure_memory``: a fresh
session, the resident set after a 128² and a 256² call, × ``ORT_MEMORY_MARGIN``), then each size runs in a fresh
process: a fresh session, the peak resident set reset (``/proc/self/clear_refs``), one call, the peak growth
(VmHWM − VmRSS before). Also printed: PyTorch's calibrated estimate at that size (``Translator.memory_model``,
its own factor included). Memory does not depend on machine load, so this can run beside other jobs. Linux only.
    .venv/bin/python benchmarks/bench_ort_memory.py [--nets ctss animegan2 cartoongan] [--sizes 1024 2048]
        [--threads 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def _status_mib(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def child(onnx_path: str, side: int, threads: int) -> None:
    """One fresh session, one call at side²: the peak resident growth in MiB, as a JSON line."""
    torch.set_num_threads(threads)
    from toonlab.infer.backends import OrtBackend

    backend = OrtBackend(onnx_path)
    x = torch.rand(1, 3, side, side)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    before = _status_mib("VmRSS")
    backend(x)
    print(json.dumps({"grown_mib": _status_mib("VmHWM") - before, "side": side}))


def checkpoint(name: str, folder: Path) -> Path:
    from toonlab.checkpoint import save_export
    from toonlab.infer.import_weights import import_weights
    from toonlab.models import build_model

    if name == "ctss":
        torch.manual_seed(0)
        return save_export(build_model("ctss"), folder / "ctss.safetensors")
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_peers import random_peer

    peer_file = folder / f"{name}.pt"
    torch.save(random_peer(name).state_dict(), peer_file)
    return import_weights(peer_file, name, folder / f"{name}.safetensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=["ctss", "animegan2", "cartoongan"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["TOONLAB_CACHE"] = tmp  # a fresh export cache: the fit is measured, not read back
        from toonlab.infer.backends import ORT_MEMORY_MARGIN
        from toonlab.infer.translator import Translator

        for name in args.nets:
            t = Translator.load(checkpoint(name, Path(tmp)), device="cpu", backend="auto")
            ort_model, torch_model = t.ort_memory_model(), t.memory_model()
            for side in args.sizes:
                res = subprocess.run([sys.executable, __file__, "--child", str(t.backend.path), str(side),
                                      str(args.threads)], capture_output=True, text=True, env=os.environ)
                if res.returncode != 0:
                    print(f"{name} {side}: failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                    continue
                grown = json.loads(res.stdout.strip().splitlines()[-1])["grown_mib"]
                predicted = ort_model.bytes(side, side) / 2**20
                row = {"net": name, "size": side, "measured_mib": round(grown),
                       "predicted_mib": round(predicted), "predicted_over_measured": round(predicted / grown, 2),
                       "fit_without_margin_over_measured": round(predicted / ORT_MEMORY_MARGIN / grown, 2),
                       "torch_estimate_mib": round(torch_model.bytes(side, side) / 2**20)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"threads": args.threads, "margin": ORT_MEMORY_MARGIN, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
