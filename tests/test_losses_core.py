import torch

from toonlab import losses


def test_lsgan_terms_hand_values():
    s = torch.tensor([[0.5, 1.0], [0.0, 2.0]])
    # (−0.5)², 0², (−1)², 1² → mean 0.5625 ; squares 0.25, 1, 0, 4 → mean 1.3125
    assert torch.isclose(losses.d_loss_real(s), torch.tensor(0.5625))
    assert torch.isclose(losses.d_loss_fake(s), torch.tensor(1.3125))
    assert torch.isclose(losses.g_loss(s), torch.tensor(0.5625))


def test_hinge_and_bce_hand_values():
    s = torch.tensor([-2.0, 0.0, 2.0])
    assert torch.isclose(losses.d_loss_real(s, "hinge"), torch.tensor((3 + 1 + 0) / 3))
    assert torch.isclose(losses.d_loss_fake(s, "hinge"), torch.tensor((0 + 1 + 3) / 3))
    expected = torch.log1p(torch.exp(-s)).mean()
    assert torch.isclose(losses.d_loss_real(s, "bce"), expected)


def test_total_variation_hand_value():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    # vertical diffs: 2, 3 → squares 4, 9 → mean 6.5 ; horizontal: 1, 2 → 1, 4 → mean 2.5
    assert torch.isclose(losses.total_variation(x), torch.tensor(9.0))
