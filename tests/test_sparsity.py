"""Sparsity accounting on hand-made plans: exact costs over the causal block grid."""

import pytest
import torch

from vlmsparse.methods import Plan, get_method
from vlmsparse.methods.sparsity import plan_sparsity


def _plan(levels, q_len, k_len, bm, bn, qv=None, kv=None, causal=True):
    lv = torch.tensor(levels, dtype=torch.int8)
    while lv.dim() < 4:
        lv = lv[None]
    return Plan(lv, bm, bn, q_len, k_len, causal=causal, query_block_visual=qv, key_block_visual=kv)


def test_hand_made_costs_and_invisible_blocks_not_counted():
    # 4x4 causal grid (Lq = Lk = 64, blocks of 16): 10 counted blocks (diagonal + below).
    levels = [
        [1, 8, 8, 8],  # above-diagonal entries are never counted, whatever their value
        [2, 1, 4, 4],  # (1,0) pooled 2 -> 1/2
        [4, 0, 1, 2],  # (2,0) 1/4, (2,1) skipped
        [8, 2, 0, 1],  # (3,0) 1/8, (3,1) 1/2, (3,2) skipped
    ]
    s = _plan(levels, 64, 64, 16, 16).sparsity()
    cost = 4 * 1 + 0.5 + 0.25 + 0 + 0.125 + 0.5 + 0
    assert s.blocks.item() == 10
    assert s.cost.item() == pytest.approx(cost)
    assert s.overall == pytest.approx(1 - cost / 10)


def test_pooled_level_on_diagonal_costs_one():
    # Lq = Lk = 48, blocks of 32: grid 2x2; block (1,1) is PARTIAL, pooled there is computed exactly.
    s = _plan([[1, 0], [0, 8]], 48, 48, 32, 32).sparsity()
    assert s.blocks.item() == 3
    assert s.cost.item() == pytest.approx(2.0)
    # block_m=32, block_n=16: row 0 meets the diagonal in key blocks 0 and 1, row 1 in key blocks 2 and 3
    s2 = _plan([[8, 8, 8, 8], [8, 8, 8, 8]], 64, 64, 32, 16).sparsity()
    assert s2.blocks.item() == 6
    assert s2.cost.item() == pytest.approx(1 + 1 + 0.125 + 0.125 + 1 + 1)


def test_non_causal_counts_every_block():
    s = _plan([[1, 0], [2, 4]], 64, 64, 32, 32, causal=False).sparsity()
    assert s.blocks.item() == 4
    assert s.cost.item() == pytest.approx(1 + 0.5 + 0.25)


def test_visual_region_per_head_per_sample_and_queries_at_the_end():
    # Lq = 32 queries at the end of Lk = 64 keys, blocks 16: grid 2x4, all four key blocks visible to row 1.
    lv = torch.tensor(
        [
            [[[1, 0, 1, 0], [1, 2, 0, 1]], [[1, 1, 1, 0], [1, 1, 1, 1]]],
            [[[1, 4, 1, 0], [1, 4, 4, 1]], [[1, 0, 0, 0], [1, 0, 0, 1]]],
        ],
        dtype=torch.int8,
    )  # [B=2, H=2, 2, 4]
    qv = torch.tensor([[True, True], [False, True]])
    kv = torch.tensor([[False, True, True, True], [True, True, True, True]])
    s = plan_sparsity(lv, 32, 64, 16, 16, True, qv, kv)
    # counted: row 0 sees key blocks 0..2 (key 47 <= 32+15), row 1 sees 0..3: 7 blocks
    assert s.blocks.tolist() == [[7, 7], [7, 7]]
    assert s.cost.tolist() == [[1 + 0 + 1 + 1 + 0.5 + 0 + 1, 7], [1 + 0.25 + 1 + 1 + 0.25 + 0.25 + 1, 1 + 0 + 0 + 1 + 0 + 0 + 1]]
    # visual region, sample 0: q blocks {0,1} x k blocks {1,2,3} visible -> (0,1),(0,2),(1,1),(1,2),(1,3)
    # sample 1: q block {1} x k blocks {0..3} -> 4 blocks
    assert s.visual_blocks.tolist() == [[5, 5], [4, 4]]
    assert s.visual_cost.tolist() == [[0 + 1 + 0.5 + 0 + 1, 5], [1 + 0.25 + 0.25 + 1, 1 + 0 + 0 + 1]]
    assert torch.allclose(s.per_head, 1 - s.cost / 7)
    assert torch.allclose(s.per_sample, 1 - s.cost.sum(1) / 14)
    assert s.overall == pytest.approx(1 - float(s.cost.sum()) / 28)
    assert s.visual == pytest.approx(1 - float(s.visual_cost.sum()) / 18)


def test_sums_pool_exactly_over_layers():
    a = _plan([[1, 0], [0, 1]], 64, 64, 32, 32).sparsity()
    b = _plan([[1, 0], [1, 1]], 64, 64, 32, 32).sparsity()
    both = a + b
    assert both.overall == pytest.approx(1 - 5 / 6)


def test_no_visual_region_gives_none():
    qv = torch.zeros(1, 2, dtype=torch.bool)
    s = _plan([[1, 0], [1, 1]], 64, 64, 32, 32, qv=qv).sparsity()
    assert s.visual is None and s.overall == 0.0


def test_dense_plan_has_zero_sparsity():
    q = torch.randn(2, 4, 200, 32)
    k = torch.randn(2, 2, 260, 32)
    visual = torch.rand(2, 260) > 0.3
    plan = get_method("dense", block_m=32, block_n=64).plan(q, k, visual)
    s = plan.sparsity()
    assert s.overall == 0.0
    assert (s.per_head == 0).all()
    assert plan.levels.shape == (2, 2, 7, 5)
