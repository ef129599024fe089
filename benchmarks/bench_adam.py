"""Adam's implementations on CTSS's parameters: time per step and whether each equals the per-tensor loop bit for bit.

    python benchmarks/bench_adam.py [--steps 10] [--rounds 3] [--threads 1] [--device cpu]

The trainer's choice (train/trainer.py ``_enter_phase``): ``fused`` on CUDA, PyTorch's default elsewhere (the
per-tensor loop on CPU). G, D_img and D_patch of the paper config get the same random gradients every step; each
implementation runs ``--steps`` steps from the same weights, ``--rounds`` times interleaved (best of the rounds).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

IMPLS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def run(params: list[torch.Tensor], grads: list[list[torch.Tensor]], kw: dict) -> tuple[float, list[torch.Tensor]]:
    ps = [p.detach().clone().requires_grad_() for p in params]
    opt = torch.optim.Adam(ps, lr=2e-4, betas=(0.5, 0.999), **kw)
    t = 0.0
    for g in grads:
        for p, gi in zip(ps, g):
            p.grad = gi
        if ps[0].is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.step()
        if ps[0].is_cuda:
            torch.cuda.synchronize()
        t += time.perf_counter() - t0
    return t / len(grads), [p.detach() for p in ps]


def main() -> None:
    from toonlab.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("ctss", {"perceptual": "random"})
    params = [p.detach().to(args.device) for net in model.networks.values() for p in net.parameters()]
    gen = torch.Generator().manual_seed(1)
    grads = [[torch.randn(p.shape, generator=gen).to(args.device) for p in params] for _ in range(args.steps)]
    best: dict[str, float] = {}
    final: dict[str, list[torch.Tensor]] = {}
    for _ in range(args.rounds):
        for name, kw in IMPLS.items():
            try:
                s, final[name] = run(params, copy.copy(grads), kw)
            except (RuntimeError, ValueError) as e:  # an implementation this device lacks
                best[name] = float("nan")
                final.pop(name, None)
                print(f"{name}: {e}")
                continue
            best[name] = min(best.get(name, s), s)
    equal = {n: all(torch.equal(a, b) for a, b in zip(final["loop"], w)) for n, w in final.items() if n != "loop"}
    print(json.dumps({"benchmark": "adam", "device": args.device, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "tensors": len(params),
                      "parameters": sum(p.numel() for p in params), "steps": args.steps, "rounds": args.rounds,
                      "ms_per_step_best": {k: round(v * 1e3, 2) for k, v in best.items()},
                      "bit_equal_to_loop": equal}, indent=1))


if __name__ == "__main__":
    main()
