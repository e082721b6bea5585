"""The plain-PyTorch blockwise path (a patched model's CPU path) against the reference, which defines the maths."""

from __future__ import annotations

import pytest
import torch

from vlmsparse.kernels.blocks import plan_shape
from vlmsparse.kernels.blockwise import pyramid_attention_blockwise
from vlmsparse.kernels.reference import pyramid_attention_ref

LEVELS = torch.tensor([0, 1, 2, 4, 8])


def random_levels(b: int, heads: int, lq: int, lk: int, bm: int, bn: int) -> torch.Tensor:
    return LEVELS[torch.randint(0, len(LEVELS), plan_shape(b, heads, lq, lk, bm, bn))].to(torch.int8)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("tail", [False, True])
@pytest.mark.parametrize("plan_heads", ["q", "kv"])
@pytest.mark.parametrize("lq, lk, bm, bn", [(100, 100, 32, 32), (37, 130, 16, 64), (90, 90, 64, 16)])
def test_blockwise_equals_reference(causal, tail, plan_heads, lq, lk, bm, bn):
    hq, hkv = 4, 2
    q, k, v = torch.randn(2, hq, lq, 16), torch.randn(2, hkv, lk, 16), torch.randn(2, hkv, lk, 16)
    levels = random_levels(2, hq if plan_heads == "q" else hkv, lq, lk, bm, bn)
    kw = dict(causal=causal, block_m=bm, block_n=bn, tail=tail, sm_scale=0.3)
    want = pyramid_attention_ref(q, k, v, levels, **kw)
    got = pyramid_attention_blockwise(q, k, v, levels, **kw)
    assert got.dtype == q.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # float64 inside matches to float32 rounding of the output
    torch.testing.assert_close(pyramid_attention_blockwise(q, k, v, levels, compute_dtype=torch.float64, **kw), want,
                               rtol=1e-6, atol=1e-6)


def test_blockwise_rows_with_nothing_to_attend_are_zero_and_bfloat16():
    q, k, v = (torch.randn(1, 2, 64, 32, dtype=torch.bfloat16) for _ in range(3))
    levels = random_levels(1, 2, 64, 64, 16, 16)
    levels[:, :, 1] = 0  # the second query block skips everything (non-causal: nothing forces a block)
    got = pyramid_attention_blockwise(q, k, v, levels, causal=False, block_m=16, block_n=16)
    assert got.dtype == torch.bfloat16
    assert torch.all(got[:, :, 16:32] == 0) and torch.isfinite(got.float()).all()
    want = pyramid_attention_ref(q, k, v, levels, causal=False, block_m=16, block_n=16)
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_blockwise_notices_a_changed_plan():
    """A block's level matters: changing one block changes the rows of that query block only."""
    q, k, v = torch.randn(1, 1, 64, 16), torch.randn(1, 1, 64, 16), torch.randn(1, 1, 64, 16)
    levels = torch.ones(plan_shape(1, 1, 64, 64, 16, 16), dtype=torch.int8)
    before = pyramid_attention_blockwise(q, k, v, levels, block_m=16, block_n=16)
    levels[0, 0, 3, 0] = 0
    after = pyramid_attention_blockwise(q, k, v, levels, block_m=16, block_n=16)
    assert torch.equal(before[:, :, :48], after[:, :, :48])
    assert (before[:, :, 48:] - after[:, :, 48:]).abs().max() > 1e-3


def test_blockwise_checks_its_arguments():
    q = torch.randn(1, 2, 16, 16)
    with pytest.raises(ValueError, match="levels"):
        pyramid_attention_blockwise(q, q, q, torch.ones(1, 2, 3, 3, dtype=torch.int8), block_m=16, block_n=16)
