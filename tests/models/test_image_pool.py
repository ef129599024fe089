import pytest
import torch

from toonlab.nn.image_pool import ImagePool


def _batch(start: int, n: int) -> torch.Tensor:
    """n images (1,2,2), image i filled with the value start+i (an id we can trace through the pool)."""
    return torch.arange(start, start + n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).clone()


def _ids(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t[:, 0, 0, 0]]


def test_fills_up_to_size_returning_inputs():
    pool = ImagePool(5, torch.Generator().manual_seed(0))
    assert _ids(pool.query(_batch(0, 3))) == [0, 1, 2]
    assert _ids(pool.query(_batch(3, 2))) == [3, 4]
    assert len(pool) == 5


def test_full_pool_returns_a_mix_with_probability_half():
    gen = torch.Generator().manual_seed(123)
    pool = ImagePool(10, gen)
    pool.query(_batch(0, 10))
    n, from_pool = 4000, 0
    for i in range(n // 4):
        batch = _batch(1000 + 4 * i, 4)
        out = _ids(pool.query(batch))
        for new_id, got in zip(_ids(batch), out):
            if got != new_id:
                from_pool += 1
                assert got < new_id  # an older image (earlier in this batch at the latest), never a later one
        assert len(pool) == 10
    assert abs(from_pool / n - 0.5) < 0.04  # binomial sd ≈ 0.008


def test_returned_old_image_is_replaced_by_new_one():
    pool = ImagePool(1, torch.Generator().manual_seed(0))
    pool.query(_batch(7, 1))
    seen = set()
    for k in range(50):
        out = _ids(pool.query(_batch(100 + k, 1)))[0]
        stored = int(pool.images[0][0, 0, 0])
        if out != 100 + k:  # swapped: we got the previous occupant and the new image took its slot
            assert stored == 100 + k
        seen.add(out == 100 + k)
    assert seen == {True, False}


def test_seeded_pools_are_repeatable_and_size_zero_passes_through():
    outs = []
    for _ in range(2):
        pool = ImagePool(3, torch.Generator().manual_seed(5))
        outs.append([_ids(pool.query(_batch(10 * i, 2))) for i in range(6)])
    assert outs[0] == outs[1]
    assert _ids(ImagePool(0).query(_batch(0, 3))) == [0, 1, 2]


def test_state_dict_round_trip_and_bad_input():
    pool = ImagePool(4, torch.Generator().manual_seed(0))
    pool.query(_batch(0, 3))
    other = ImagePool(4)
    other.load_state_dict(pool.state_dict())
    assert [int(im[0, 0, 0]) for im in other.images] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"\(B,C,H,W\)"):
        pool.query(torch.zeros(3, 2, 2))
