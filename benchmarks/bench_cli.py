"""The command line's fixed cost: whole-process wall seconds of ``toonlab`` commands beside ``python -c "import
torch"`` and the animegan2-pytorch peer's script run the same way (issue 25).

Configurations, each a fresh process, rounds interleaved (every configuration once per round, so machine load
hits all alike); the best round counts:
- ``import_torch``: ``python -c "import torch"`` — the floor any PyTorch tool pays;
- ``help``: ``toonlab --help``; ``models``: ``toonlab models`` (its table cache filled by a warm-up call);
- ``cli_64`` / ``cli_512``: ``toonlab cartoonize IMG -o OUT -m ag.safetensors --overwrite`` of one 64² / 512²
  photo (scikit-image's astronaut) through an AnimeGANv2 export — the default path, ``--dtype auto`` and
  ``--backend auto`` included, their measurements (precision verdict; ONNX export and backend timing) cached per
  checkpoint by warm-up calls, as after a first run; ``cli_512_fp32``: the same with ``--dtype fp32``;
- ``peer_64`` / ``peer_512``: the peer's script (its generator from benchmarks/bench_peers.py, the same random
  weights; load the ``.pt``, read the photo, one pass under ``no_grad``, write a PNG).
- ``warm_folder``: seconds per image in one warm process at 512² and 1024² (toonlab's default path, its fp32 path
  and the peer's network, alternated, best of ``--rounds``).
``precision``: what the default path ran (the CLI's ``-v`` backend line) and, where measured, bf16's fidelity to
fp32 and both times (``Translator.precision_verdict``).
Goals: ``cli_64 - import_torch`` ≤ 1 s; ``peer_512 / cli_512`` ≥ 1.5; ``models`` ≤ 2 s; warm folder ≥ 1.5.
    .venv/bin/python benchmarks/bench_cli.py [--rounds 5] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOONLAB = [sys.executable, "-m", "toonlab.cli"]  # what the console script runs, with this interpreter

PEER_SCRIPT = """import sys
import numpy as np
import torch
from PIL import Image
sys.path.insert(0, {here!r})
from bench_peers import PEERS, peer_forward
net, order = PEERS["animegan2"][0](), PEERS["animegan2"][1]
net.load_state_dict(torch.load(sys.argv[1], map_location="cpu", weights_only=True))
net.eval()
x = torch.from_numpy(np.asarray(Image.open(sys.argv[2]).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
y = peer_forward(net, order, x)[0].clamp(0, 1)
Image.fromarray((y.permute(1, 2, 0) * 255).round().byte().numpy()).save(sys.argv[3])
"""


def _run(cmd: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds, stderr) of one fresh process; exits with its error when it fails."""
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"bench_cli: {' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return seconds, res.stderr


def _wall(cmd: list[str], env: dict) -> float:
    return _run(cmd, env)[0]


def warm_passes(ck: Path, peer_pt: Path, sides: tuple[int, ...], rounds: int) -> dict:
    """Seconds per image in one warm process (a folder run): toonlab's default path (``toonlab.load(ck,
    backend="auto")``: dtype "auto", as ``cartoonize -m``), its fp32 path (``dtype="fp32"``) and the peer's network,
    each warmed at the full size once, then alternated ``rounds`` times at each side; best of the rounds, and
    peer ÷ each toonlab path."""
    import cv2
    import torch
    from bench_peers import PEERS, peer_forward

    import toonlab
    from toonlab.photos import load as load_photo

    net = PEERS["animegan2"][0]().eval()
    net.load_state_dict(torch.load(peer_pt, weights_only=True))
    t = toonlab.load(ck, device="cpu", backend="auto")
    t32 = toonlab.load(ck, device="cpu", backend="auto", dtype="fp32")
    out = {"toonlab_backend": t.backend_note, "toonlab_fp32_backend": t32.backend_note,
           "precision_verdict": t.precision_verdict}
    for side in sides:
        x = torch.from_numpy(cv2.resize(load_photo("astronaut"), (side, side), interpolation=cv2.INTER_AREA))
        x = x.permute(2, 0, 1)[None].float() / 255
        calls = {"toonlab": lambda: t.translate_tensor(x), "toonlab_fp32": lambda: t32.translate_tensor(x),
                 "peer": lambda: peer_forward(net, PEERS["animegan2"][1], x)}
        seconds: dict[str, list[float]] = {name: [] for name in calls}
        for name, call in calls.items():
            call()  # warm at this size: the folder's first image
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - start)
        best = {name: min(v) for name, v in seconds.items()}
        out[str(side)] = {"best_s": best, "all_s": seconds, "peer_over_toonlab": best["peer"] / best["toonlab"],
                          "peer_over_toonlab_fp32": best["peer"] / best["toonlab_fp32"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", help="Also write the JSON here.")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]

    import torch
    from PIL import Image

    sys.path.insert(0, str(HERE))
    from bench_peers import random_peer

    from toonlab.infer.import_weights import import_weights
    from toonlab.photos import load as load_photo

    with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "TOONLAB_CACHE": str(tmp / "cache")}
        peer_pt = tmp / "ag.pt"
        torch.save(random_peer("animegan2").state_dict(), peer_pt)
        ck = import_weights(peer_pt, "animegan2", tmp / "ag.safetensors")
        (tmp / "peer.py").write_text(PEER_SCRIPT.format(here=str(HERE)))
        photo = Image.fromarray(load_photo("astronaut"))
        commands = {"import_torch": [sys.executable, "-c", "import torch"],
                    "help": [*TOONLAB, "--help"],
                    "models": [*TOONLAB, "models"]}
        for side in (64, 512):
            img = tmp / f"in{side}" / "astronaut.png"
            img.parent.mkdir()
            photo.resize((side, side)).save(img)
            commands[f"cli_{side}"] = [*TOONLAB, "cartoonize", str(img), "-o", str(tmp / f"out{side}"), "-m",
                                       str(ck), "--overwrite"]
            if side == 512:
                commands["cli_512_fp32"] = [*commands["cli_512"], "--dtype", "fp32"]
            commands[f"peer_{side}"] = [sys.executable, str(tmp / "peer.py"), str(peer_pt), str(img),
                                        str(tmp / f"peer{side}.png")]
        # the first calls fill the caches: the table, the precision verdict, the ONNX export and backend timing
        # (the fp32 path's; with bf16 adopted the default path times no backend); -v says what the default ran
        warm, precision = {}, {}
        for name in ("models", "cli_64", "cli_512_fp32"):
            warm[name], err = _run(commands[name] + (["-v"] if name != "models" else []), env)
            if name != "models":
                precision[name] = next((line.removeprefix("backend: ") for line in err.splitlines()
                                        if line.startswith("backend: ")), "?")
        runs: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, cmd in commands.items():
                runs[name].append(_wall(cmd, env))
        os.environ["TOONLAB_CACHE"] = env["TOONLAB_CACHE"]  # the CLI's cached export and speed choice
        folder = warm_passes(ck, peer_pt, (512, 1024), args.rounds)
    best = {name: min(v) for name, v in runs.items()}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "load_1min": {"start": load_start, "end": os.getloadavg()[0]},  # uptime's: the machine's other work
        "rounds": args.rounds, "first_calls_s": warm, "best_s": best, "all_s": runs,
        "cli_64_over_import_torch_s": best["cli_64"] - best["import_torch"],
        "peer_over_cli_512": best["peer_512"] / best["cli_512"],
        "peer_over_cli_64": best["peer_64"] / best["cli_64"],
        "peer_over_cli_512_fp32": best["peer_512"] / best["cli_512_fp32"],
        "precision": {"cli": precision["cli_64"], "cli_fp32": precision["cli_512_fp32"],
                      "verdict": folder["precision_verdict"]},
        "warm_folder": folder,
        "goals": {"cli_64_over_import_torch_s": "<= 1.0", "peer_over_cli_512": ">= 1.5", "models": "<= 2.0",
                  "warm_folder peer_over_toonlab": ">= 1.5"},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
