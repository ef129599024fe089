"""The Model contract, checked for every registered system (MODELS-B's included, found via the registry).

For each model, built from its default config (plus, for speed only, the tiny overrides below): one
``training_step`` of every step of every phase on a tiny batch gives finite scalar losses; with the trainer's
``requires_grad`` toggling, gradients reach every parameter of the networks the step trains and nothing else
(no other network, never the perceptual backbone); the translator keeps shape and range; a seed makes it
deterministic; an export checkpoint round-trips to equal outputs.
"""

import math

import pytest
import torch

from toonlab.checkpoint import load_export, save_export
from toonlab.models import build_model, model_names
from toonlab.nn.perceptual import _SHARED

SIZE = 32
BATCH = 2
MODELS = [n for n in model_names() if not n.startswith("_")]


def make_batch(model, size=SIZE, batch=BATCH, seed=0) -> dict:
    """Random inputs for every key the model ``requires`` (images in [-1, 1], saliency in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in model.requires:
        if key == "style":
            out[key] = torch.randint(0, max(1, len(model.styles)), (batch,), generator=g)
        elif key == "saliency":
            out[key] = torch.rand(batch, 1, size, size, generator=g)
        else:
            out[key] = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    return out


def run_step(model, step, batch):
    """What the trainer does around ``training_step``: only ``step.networks`` require grad, then backward."""
    for name, net in model.networks.items():
        net.requires_grad_(name in step.networks)
        net.zero_grad(set_to_none=True)
    model.train()
    out = model.training_step(step.name, batch)
    out["loss"].backward()
    return out


@pytest.mark.parametrize("name", MODELS)
def test_every_step_gives_finite_losses_and_grads_only_where_trained(name):
    torch.manual_seed(0)
    model = build_model(name)
    batch = make_batch(model)
    for phase in model.phases():
        assert phase.epochs >= 0 and phase.steps
        for step in phase.steps:
            assert set(step.networks) <= set(model.networks), f"{name}/{step.name} trains unknown networks"
            out = run_step(model, step, batch)
            for key, value in out.items():
                assert value.ndim == 0, f"{name}/{step.name}: loss {key} is not a scalar"
                assert math.isfinite(value.item()), f"{name}/{step.name}: loss {key} = {value.item()}"
            for net_name, net in model.networks.items():
                for p_name, p in net.named_parameters():
                    where = f"{name}/{step.name}: {net_name}.{p_name}"
                    if net_name in step.networks:
                        assert p.grad is not None, f"{where} got no gradient"
                        assert torch.isfinite(p.grad).all(), f"{where} has a non-finite gradient"
                    else:
                        assert p.grad is None, f"{where} got a gradient but is not trained by this step"
            trained = [p.grad for n in step.networks for p in model.networks[n].parameters()]
            assert sum(g.abs().sum().item() for g in trained) > 0
            model.after_optimizer_step(step.name)
    for vgg in _SHARED.values():  # the frozen feature extractor never receives gradients
        assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())


def _translate(model, x):
    net = model.translator().eval()
    with torch.no_grad():
        return net(x, torch.zeros(x.shape[0], dtype=torch.long)) if model.styles else net(x)


@pytest.mark.parametrize("name", MODELS)
def test_translator_shape_range_determinism_and_export_round_trip(name, tmp_path):
    torch.manual_seed(3)
    model = build_model(name)
    size = max(SIZE, model.size_multiple)
    x = torch.rand(2, 3, size, size) * 2 - 1
    y = _translate(model, x)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1
    torch.manual_seed(3)
    assert torch.equal(_translate(build_model(name), x), y), "same seed must build the same network"

    path = save_export(model, tmp_path / f"{name}.safetensors")
    loaded, meta = load_export(path)
    assert meta["model"] == name
    assert torch.equal(_translate(loaded, x), y)


@pytest.mark.parametrize("name", MODELS)
def test_training_step_is_deterministic_with_a_seed(name):
    losses = []
    for _ in range(2):
        torch.manual_seed(5)
        model = build_model(name)
        step = model.phases()[-1].steps[-1]
        losses.append({k: v.item() for k, v in run_step(model, step, make_batch(model)).items()})
    assert losses[0] == losses[1]
