import numpy as np
import torch

from toonlab.nn.cbam import CBAM, CBAMResBlock


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _direct_cbam(x: np.ndarray, w1, b1, w2, b2, wk, bk) -> np.ndarray:
    """CBAM written out in numpy: shared MLP on avg/max pools, then a 7×7 conv on [mean_c; max_c] (zero pad)."""
    def mlp(v):  # v (B,C)
        return np.maximum(v @ w1.T + b1, 0) @ w2.T + b2

    mc = _sigmoid(mlp(x.mean(axis=(2, 3))) + mlp(x.max(axis=(2, 3))))[:, :, None, None]
    f1 = mc * x
    pooled = np.stack([f1.mean(axis=1), f1.max(axis=1)], axis=1)  # (B,2,H,W)
    k = wk.shape[-1]
    p = k // 2
    padded = np.pad(pooled, ((0, 0), (0, 0), (p, p), (p, p)))
    B, _, H, W = pooled.shape
    s = np.full((B, H, W), bk[0])
    for c in range(2):
        for i in range(k):
            for j in range(k):
                s += wk[0, c, i, j] * padded[:, c, i:i + H, j:j + W]
    return _sigmoid(s)[:, None] * f1


def test_cbam_matches_direct_computation():
    torch.manual_seed(3)
    m = CBAM(32, reduction=8, kernel=7).double()
    x = torch.randn(2, 32, 9, 11, dtype=torch.float64)
    w1 = m.channel.mlp[0].weight.detach().numpy()[:, :, 0, 0]
    b1 = m.channel.mlp[0].bias.detach().numpy()
    w2 = m.channel.mlp[2].weight.detach().numpy()[:, :, 0, 0]
    b2 = m.channel.mlp[2].bias.detach().numpy()
    wk, bk = m.spatial.conv.weight.detach().numpy(), m.spatial.conv.bias.detach().numpy()
    assert w1.shape == (4, 32)
    ref = _direct_cbam(x.numpy(), w1, b1, w2, b2, wk, bk)
    np.testing.assert_allclose(m(x).detach().numpy(), ref, rtol=1e-10, atol=1e-12)


def test_cbam_attention_ranges_and_constant_input():
    m = CBAM(16, reduction=4)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        mc, ms = m.channel(x), m.spatial(x)
    assert mc.shape == (2, 16, 1, 1) and ms.shape == (2, 1, 8, 8)
    assert float(mc.min()) > 0 and float(mc.max()) < 1 and float(ms.min()) > 0 and float(ms.max()) < 1
    # zero features stay zero (attention only rescales)
    assert torch.equal(m(torch.zeros(1, 16, 5, 5)), torch.zeros(1, 16, 5, 5))


def test_cbam_resblock_shape_and_gradient():
    blk = CBAMResBlock(16, reduction=4)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    y = blk(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert blk.cbam.spatial.conv.weight.grad is not None and blk.cbam.spatial.conv.weight.grad.abs().sum() > 0
