"""Generator inference throughput on CPU: plain eager fp32 vs toonlab's tuned path vs onnxruntime, and conv peak.

For every registered generator (``translator()``, random init) at each size: median seconds per image of
- ``eager``: ``torch.no_grad()``, NCHW contiguous fp32 (what a plain script does);
- ``inference_mode``: ``torch.inference_mode()``, NCHW; ``channels_last``: the same with channels-last tensors;
- ``tuned``: toonlab's fast path (``Translator.load(..., compile=True)``, ``--compile`` on the CLI):
  inference mode + ``torch.compile`` (compiled NCHW and channels-last measured equal on CPU);
  ``--no-compile`` makes ``tuned`` the faster of the two inference-mode variants;
- ``onnx``: the same network exported by ``toonlab.infer.backends.write_onnx`` and run by onnxruntime (CPU
  provider).
It also measures this machine's fp32 conv peak (a 256→256 3×3 conv on 256×128² channels-last, GFLOP/s) and reports
each generator's achieved GFLOP/s and fraction of that peak (FLOPs from ``torch.utils.flop_counter``).
Goals (issue 5): CTSS G at 512²: tuned ≥ 1.5× eager and ≥ 60 % of the conv peak.
    .venv/bin/python benchmarks/bench_inference.py [--quick] [--sizes 256 512 1024] [--models ctss ...]
        [--repeat 3] [--threads 2] [--no-compile] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from toonlab.infer.translator import GeneratorWrapper
from toonlab.models import build_model, model_names


def _median_time(fn, repeat: int) -> float:
    fn()  # warm-up: allocator, kernel selection, onnxruntime graph optimisation
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def conv_peak_gflops(repeat: int) -> float:
    """fp32 GFLOP/s of a large, well-shaped conv (256→256, 3×3, 128×128, channels-last): the machine's peak."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 256, 128, 128).contiguous(memory_format=torch.channels_last)
    flops = 2 * 256 * 256 * 9 * 128 * 128
    with torch.inference_mode():
        return flops / _median_time(lambda: conv(x), repeat) / 1e9


def gflops_of(net, x, style) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x, style) if style is not None else net(x)
    return counter.get_total_flops() / 1e9


def bench_model(name: str, sizes: list[int], repeat: int, compile_: bool, peak: float, tmp: Path) -> list[dict]:
    import onnxruntime as ort

    from toonlab.infer.backends import write_onnx

    torch.manual_seed(0)
    model = build_model(name)
    net = model.translator().eval()
    multi = bool(model.styles)
    rows = []
    for size in sizes:
        x = torch.rand(1, 3, size, size) * 2 - 1
        style = torch.zeros(1, dtype=torch.long) if multi else None
        call = (lambda m, t: m(t, style)) if multi else (lambda m, t: m(t))
        with torch.no_grad():
            eager = _median_time(lambda: call(net, x), repeat)
        with torch.inference_mode():
            inf_mode = _median_time(lambda: call(net, x), repeat)
        cl_net = net.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            chl = _median_time(lambda: call(cl_net, xc), repeat)
        net = net.to(memory_format=torch.contiguous_format)
        compile_s = compiled = None
        if compile_:
            comp = torch.compile(net, dynamic=False)
            with torch.inference_mode():
                t0 = time.perf_counter()
                call(comp, x)
                compile_s = time.perf_counter() - t0
                compiled = _median_time(lambda: call(comp, x), repeat)
        tuned = compiled if compiled is not None else min(inf_mode, chl)
        wrapper = GeneratorWrapper(net, multi_style=multi).eval()
        onnx_path = tmp / f"{name}.onnx"
        if not onnx_path.exists():
            example = (torch.rand(1, 3, 64, 64),) + ((torch.zeros(1, dtype=torch.long),) if multi else ())
            write_onnx(wrapper, example, onnx_path, {"toonlab_model": name})
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        feeds = {"image": ((x + 1) / 2).numpy()}
        if multi:
            feeds["style"] = style.numpy()
        onnx_t = _median_time(lambda: sess.run(["output"], feeds), repeat)
        gf = gflops_of(net, x, style)
        rows.append({"model": name, "size": size, "gflop": round(gf, 2),
                     "eager_s": round(eager, 4), "inference_mode_s": round(inf_mode, 4),
                     "channels_last_s": round(chl, 4),
                     "compiled_s": None if compiled is None else round(compiled, 4),
                     "compile_time_s": None if compile_s is None else round(compile_s, 1),
                     "tuned_s": round(tuned, 4), "onnx_s": round(onnx_t, 4),
                     "tuned_speedup": round(eager / tuned, 3), "onnx_speedup": round(eager / onnx_t, 3),
                     "tuned_gflops": round(gf / tuned, 1), "tuned_frac_of_peak": round(gf / tuned / peak, 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CTSS only at 256² and 512², 2 repeats")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--models", nargs="+", default=None, help="registered names (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="tuned path without torch.compile")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.models, args.sizes, args.repeat = args.models or ["ctss"], [256, 512], 2
    models = args.models or model_names()
    peak = conv_peak_gflops(args.repeat)
    print(json.dumps({"conv_peak_gflops": round(peak, 1)}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for name in models for r in bench_model(name, args.sizes, args.repeat, args.compile, peak,
                                                          Path(tmp))]
    result = {"threads": args.threads, "torch": torch.__version__, "conv_peak_gflops": round(peak, 1),
              "compile": args.compile, "rows": rows}
    ctss512 = [r for r in rows if r["model"] == "ctss" and r["size"] == 512]
    if ctss512:
        r = ctss512[0]
        result["goal_ctss_512"] = {"tuned_speedup": r["tuned_speedup"], "goal_speedup": 1.5,
                                   "frac_of_peak": r["tuned_frac_of_peak"], "goal_frac": 0.6}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
