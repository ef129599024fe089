import numpy as np
import pytest
import torch
from torch import nn

from toonlab.models.base import Model
from toonlab.nn.adalin import AdaLIN, ILN


def _direct(x: np.ndarray, rho: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps=1e-5) -> np.ndarray:
    """ρ·IN + (1−ρ)·LN then γ·+β, written out in float64 numpy (unbiased variances, as U-GAT-IT)."""
    x_in = (x - x.mean(axis=(2, 3), keepdims=True)) / np.sqrt(x.var(axis=(2, 3), ddof=1, keepdims=True) + eps)
    x_ln = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(1, 2, 3), ddof=1, keepdims=True) + eps)
    r = rho.reshape(1, -1, 1, 1)
    return (r * x_in + (1 - r) * x_ln) * gamma[:, :, None, None] + beta[:, :, None, None]


def test_adalin_matches_direct_formula():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 6, 7, generator=g, dtype=torch.float64) * 3 + 2
    gamma = torch.randn(3, 5, generator=g, dtype=torch.float64)
    beta = torch.randn(3, 5, generator=g, dtype=torch.float64)
    layer = AdaLIN(5).double()
    assert torch.allclose(layer.rho, torch.full((1, 5, 1, 1), 0.9, dtype=torch.float64))
    with torch.no_grad():
        layer.rho.copy_(torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0]).reshape(1, 5, 1, 1))
    out = layer(x, gamma, beta)
    ref = _direct(x.numpy(), layer.rho.detach().numpy().ravel(), gamma.numpy(), beta.numpy())
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-10, atol=1e-10)


def test_iln_matches_direct_formula_and_inits():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
    layer = ILN(4).double()
    assert float(layer.rho.detach().abs().max()) == 0.0  # U-GAT-IT's ILN starts as pure LN
    with torch.no_grad():
        layer.rho.copy_(torch.tensor([0.1, 0.4, 0.7, 1.0]).reshape(1, 4, 1, 1))
        layer.gamma.copy_(torch.tensor([2.0, -1.0, 0.5, 1.5]).reshape(1, 4, 1, 1))
        layer.beta.copy_(torch.tensor([0.3, 0.0, -0.2, 1.0]).reshape(1, 4, 1, 1))
    ref = _direct(x.numpy(), layer.rho.detach().numpy().ravel(), np.tile(layer.gamma.detach().numpy().reshape(1, 4), (2, 1)),
                  np.tile(layer.beta.detach().numpy().reshape(1, 4), (2, 1)))
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-10, atol=1e-10)


def test_adalin_bad_shapes_raise():
    with pytest.raises(ValueError, match="gamma/beta"):
        AdaLIN(4)(torch.zeros(2, 4, 3, 3), torch.zeros(2, 3), torch.zeros(2, 3))


def test_after_optimizer_step_clips_rho_to_unit_interval():
    class Tiny(Model):
        def __init__(self):
            super().__init__(None)
            self.networks["G"] = nn.ModuleDict({"a": AdaLIN(3), "b": nn.Sequential(ILN(3))})

    m = Tiny()
    a, b = m.networks["G"]["a"], m.networks["G"]["b"][0]
    with torch.no_grad():
        a.rho.copy_(torch.tensor([-0.5, 0.3, 1.7]).reshape(1, 3, 1, 1))
        b.rho.copy_(torch.tensor([2.0, -1.0, 0.6]).reshape(1, 3, 1, 1))
    m.after_optimizer_step("G")
    assert a.rho.flatten().tolist() == pytest.approx([0.0, 0.3, 1.0])
    assert b.rho.flatten().tolist() == pytest.approx([1.0, 0.0, 0.6])
