"""The Triton pyramid attention kernel (run by the interpreter) against the plain-PyTorch reference."""

import math
import os

import pytest
import torch

from vlmsparse.kernels import build_kv_pyramid, plan_shape, pyramid_attention
from vlmsparse.kernels.reference import pool_keys, pyramid_attention_ref

# VLMSPARSE_TEST_DEVICE=cuda TRITON_INTERPRET=0 runs these same checks on a GPU.
DEVICE = os.environ.get("VLMSPARSE_TEST_DEVICE", "cpu")
TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def _on_test_device():
    with torch.device(DEVICE):
        yield


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp(min=1e-30)).item()


def make_inputs(b, hq, hkv, lq, lk, d, dtype=torch.float32):
    q = torch.randn(b, hq, lq, d).to(dtype)
    k = torch.randn(b, hkv, lk, d).to(dtype)
    v = torch.randn(b, hkv, lk, d).to(dtype)
    return q, k, v


def random_levels(b, hm, lq, lk, bm, bn, choices=(0, 1, 2, 4, 8)):
    shape = plan_shape(b, hm, lq, lk, bm, bn)
    return torch.tensor(choices)[torch.randint(0, len(choices), shape)].to(torch.int8)


def check(q, k, v, levels, bm, bn, causal=True, tail=False, tol=None):
    out = pyramid_attention(q, k, v, levels, causal=causal, block_m=bm, block_n=bn, tail=tail)
    ref = pyramid_attention_ref(q, k, v, levels, causal=causal, block_m=bm, block_n=bn, tail=tail)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert torch.isfinite(out).all()
    err = rel_err(out, ref)
    assert err < (tol or TOL[q.dtype]), f"relative error {err:.2e}"
    return out, ref


@pytest.mark.parametrize("level", [0, 1, 2, 4, 8])
@pytest.mark.parametrize("causal", [True, False])
def test_single_level(level, causal):
    q, k, v = make_inputs(1, 2, 1, 96, 96, 32)
    levels = torch.full(plan_shape(1, 2, 96, 96, 32, 32), level, dtype=torch.int8)
    out, ref = check(q, k, v, levels, 32, 32, causal=causal)
    if level == 0:
        assert out.abs().max() == 0  # nothing to attend: zeros, not NaN


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("tail", [False, True])
def test_mixed_levels_gqa_plan_per_q_head(causal, tail):
    q, k, v = make_inputs(1, 4, 2, 100, 100, 32)
    check(q, k, v, random_levels(1, 4, 100, 100, 32, 32), 32, 32, causal=causal, tail=tail)


@pytest.mark.parametrize("heads_first", [False, True])
def test_both_launch_orders(heads_first, monkeypatch):
    from vlmsparse.kernels import pyramid as kernel_module

    monkeypatch.setattr(kernel_module, "GRID_HEADS_FIRST", heads_first)
    q, k, v = make_inputs(2, 4, 2, 100, 100, 32)
    check(q, k, v, random_levels(2, 4, 100, 100, 32, 32), 32, 32, tail=True)


@pytest.mark.parametrize("tail", [False, True])
def test_plan_per_kv_head_and_batch_2(tail):
    q, k, v = make_inputs(2, 6, 2, 80, 112, 32)
    check(q, k, v, random_levels(2, 2, 80, 112, 16, 32), 16, 32, tail=tail)


@pytest.mark.parametrize("lq,lk", [(1, 77), (17, 130), (64, 200), (150, 150)])
def test_queries_shorter_than_keys_and_partial_blocks(lq, lk):
    q, k, v = make_inputs(1, 2, 2, lq, lk, 32)
    check(q, k, v, random_levels(1, 2, lq, lk, 32, 32), 32, 32, tail=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d", [64, 80, 128])
def test_dtypes_and_head_dims(dtype, d):
    q, k, v = make_inputs(1, 2, 1, 70, 90, d, dtype)
    check(q, k, v, random_levels(1, 2, 70, 90, 32, 32), 32, 32, tail=(d == 80))


@pytest.mark.parametrize("bm,bn", [(64, 64), (128, 128), (128, 64), (64, 128)])
def test_block_sizes(bm, bn):
    q, k, v = make_inputs(1, 2, 1, 150, 200, 32, torch.bfloat16)
    check(q, k, v, random_levels(1, 1, 150, 200, bm, bn), bm, bn, tail=True)


@pytest.mark.parametrize("lq,lk", [(96, 96), (40, 130)])
def test_all_level_one_equals_dense_sdpa(lq, lk):
    q, k, v = make_inputs(2, 4, 2, lq, lk, 64)
    levels = torch.ones(plan_shape(2, 2, lq, lk, 32, 32), dtype=torch.int8)
    out = pyramid_attention(q, k, v, levels, block_m=32, block_n=32)
    mask = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)
    dense = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask
    )
    assert rel_err(out, dense) < 1e-4
    # the reference agrees with SDPA too
    assert rel_err(pyramid_attention_ref(q, k, v, levels, block_m=32, block_n=32), dense) < 1e-6


@pytest.mark.parametrize("block", [64, 128])
def test_every_count_of_pooled_blocks_per_row(block):
    # Row i keeps min(i, 8) blocks at level 8, i % 5 at level 4 and i % 3 at level 2 (in shuffled places), so
    # the kernel meets every group size and every leftover size of each level; the last key block is partial.
    n_qb, n_kb = 10, 16
    lq, lk = n_qb * block, n_kb * block - 37
    q, k, v = make_inputs(1, 1, 1, lq, lk, 16)
    levels = torch.zeros(1, 1, n_qb, n_kb, dtype=torch.int8)
    for i in range(n_qb):
        row = [8] * min(i, 8) + [4] * (i % 5) + [2] * (i % 3)
        row += [1, 0] * n_kb
        levels[0, 0, i] = torch.tensor(row[:n_kb], dtype=torch.int8)[torch.randperm(n_kb)]
    check(q, k, v, levels, block, block, causal=False)


def run_levels(n_qb, n_kb, choices=(0, 1, 2, 4, 8), longest=10):
    """Rows made of runs of one level (1 to ``longest`` blocks), so every span size and remainder occurs."""
    levels = torch.zeros(1, 1, n_qb, n_kb, dtype=torch.int8)
    for i in range(n_qb):
        row: list[int] = []
        while len(row) < n_kb:
            row += [choices[int(torch.randint(0, len(choices), ()))]] * int(torch.randint(1, longest + 1, ()))
        levels[0, 0, i] = torch.tensor(row[:n_kb], dtype=torch.int8)
    return levels


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("tail", [False, True])
def test_runs_of_one_level_read_as_spans(causal, tail):
    # consecutive blocks of one level are read as one tile of pooled keys: the same maths as block by block
    block, n_kb = 16, 24
    lq = lk = n_kb * block - 5  # a ragged last key block
    q, k, v = make_inputs(1, 2, 1, lq, lk, 16)
    levels = run_levels(plan_shape(1, 1, lq, lk, 64, block)[2], n_kb)
    check(q, k, v, levels, 64, block, causal=causal, tail=tail)


def test_tail_only_where_a_program_skips_something():
    # one query block skips nothing (its tail work is left out), the next skips whole and diagonal blocks; a
    # plan that skips nothing gives the same output with and without tail aggregation
    q, k, v = make_inputs(1, 2, 1, 128, 128, 16)
    levels = torch.tensor([[1, 2, 4, 8], [1, 0, 4, 0]], dtype=torch.int8)[None, None].repeat(1, 2, 2, 1)
    levels[0, :, 2:, 3] = 0  # skipped diagonal blocks too
    levels[0, :, 0] = torch.tensor([1, 0, 0, 0], dtype=torch.int8)
    check(q, k, v, levels, 32, 32, tail=True)
    full = torch.tensor([1, 2, 4, 1], dtype=torch.int8).repeat(1, 2, 4, 1)
    # check_levels=False: the tail-compiled kernel runs (a call that checks its levels leaves the tail out, below)
    with_tail = pyramid_attention(q, k, v, full, block_m=32, block_n=32, tail=True, check_levels=False)
    without = pyramid_attention(q, k, v, full, block_m=32, block_n=32, tail=False)
    assert (with_tail - without).abs().max().item() == 0


@pytest.mark.parametrize("causal", [True, False])
def test_tail_left_out_where_no_visible_block_is_skipped(causal, monkeypatch):
    # a call that checks its levels finds out in the same sync whether any visible block is skipped; where none is,
    # it runs without the tail's launch and code (blocks past the causal diagonal are invisible, not skipped)
    from vlmsparse.kernels import pyramid as kernel_module

    sums_launches = []
    real = kernel_module.skipped_key_sums
    monkeypatch.setattr(kernel_module, "skipped_key_sums", lambda *a, **kw: sums_launches.append(1) or real(*a, **kw))
    torch.manual_seed(5)
    q, k, v = make_inputs(1, 2, 1, 128, 128, 16)
    levels = random_levels(1, 2, 128, 128, 32, 32, choices=(1, 2, 4, 8))
    if causal:
        levels = levels * torch.ones(4, 4, dtype=torch.int8).tril()  # zeros only where no key is visible
    check(q, k, v, levels, 32, 32, causal=causal, tail=True)
    assert sums_launches == []
    pyramid_attention(q, k, v, levels, causal=causal, block_m=32, block_n=32, tail=True, check_levels=False)
    assert len(sums_launches) == 1  # without the check the tail runs as asked
    levels[0, 1, 3, 1] = 0  # one visible block skipped: the tail has something to add
    check(q, k, v, levels, 32, 32, causal=causal, tail=True)
    assert len(sums_launches) == 2


def test_tail_with_many_skipped_blocks_per_row():
    # many key blocks per row (more skipped blocks than one step of the launch that sums them), runs of skipped
    # blocks of every length and keys far from zero mean
    torch.manual_seed(3)
    q, k, v = make_inputs(1, 2, 1, 32, 1500, 16)
    k, v = k + 20.0, v - 30.0
    n_kb = -(-1500 // 16)
    levels = torch.zeros(1, 2, 2, n_kb, dtype=torch.int8)
    pattern = torch.tensor([1, 0, 0, 2, 2, 0, 4, 4, 4, 4, 0, 0, 0, 0, 0, 8, 1, 0])
    levels[0, 0, :] = pattern.repeat(n_kb // len(pattern) + 1)[:n_kb].to(torch.int8)
    levels[0, 1, :] = (torch.rand(n_kb) < 0.2).to(torch.int8)
    check(q, k, v, levels, 16, 16, causal=False, tail=True)
    check(q, k, v, levels, 16, 16, causal=True, tail=True)


@pytest.mark.parametrize(
    "lq, lk, bm, bn, causal",
    [
        (96, 96, 32, 16, True),  # two diagonal blocks per query block
        (70, 150, 32, 32, True),  # fewer queries than keys, the last block partial
        (64, 128, 32, 32, False),  # no masked block at all
        (64, 100, 32, 32, False),  # only the sequence's last block is masked
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tail_where_the_diagonal_is_kept_on_several_geometries(lq, lk, bm, bn, causal, dtype):
    # tail aggregation compiled without its diagonal passes, on block geometries where some rows see none of a
    # masked block's keys, or no block is masked; one query block skips nothing and has no tail
    torch.manual_seed(11)
    q, k, v = make_inputs(1, 2, 1, lq, lk, 16, dtype)
    k, v = k + 2.0, v - 1.0
    from vlmsparse.kernels.blocks import PARTIAL, block_classes

    partial = block_classes(lq, lk, bm, bn, causal) == PARTIAL
    levels = random_levels(1, 2, lq, lk, bm, bn, choices=(0, 0, 1, 4))
    levels = levels.masked_fill(partial.expand_as(levels) & (levels == 0), 1)
    levels[0, 0, 0] = torch.where(levels[0, 0, 0] == 0, 1, levels[0, 0, 0])  # nothing skipped here
    kw = dict(block_m=bm, block_n=bn, causal=causal, tail=True)
    ref = pyramid_attention_ref(q, k, v, levels, **kw)
    out = pyramid_attention(q, k, v, levels, diagonal_kept=True, **kw)
    assert torch.isfinite(out).all()
    err = rel_err(out, ref)
    assert err < TOL[dtype]
    # the tail key moved the output well past that error
    assert rel_err(out, pyramid_attention_ref(q, k, v, levels, **{**kw, "tail": False})) > 5 * max(err, 1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tail_without_its_diagonal_passes_where_the_diagonal_is_kept(dtype):
    # diagonal_kept=True compiles the tail without its passes over skipped diagonal blocks: the same result on a
    # plan that keeps them; check_levels=False without the promise keeps the passes (a plan that skips some)
    torch.manual_seed(5)
    q, k, v = make_inputs(1, 4, 2, 100, 160, 32, dtype)
    k = k + 3.0  # keys far from zero mean: the tail's mean key matters
    levels = random_levels(1, 4, 100, 160, 16, 16)
    from vlmsparse.kernels.blocks import PARTIAL, block_classes

    partial = block_classes(100, 160, 16, 16, True) == PARTIAL
    kept = levels.masked_fill(partial.expand_as(levels) & (levels == 0), 1)
    kw = dict(block_m=16, block_n=16, tail=True)
    ref = pyramid_attention_ref(q, k, v, kept, **kw)
    for promise in (dict(diagonal_kept=True), dict(check_levels=False), dict()):
        assert rel_err(pyramid_attention(q, k, v, kept, **kw, **promise), ref) < TOL[dtype]
    assert ((levels == 0) & partial).any()
    ref = pyramid_attention_ref(q, k, v, levels, **kw)
    for promise in (dict(check_levels=False), dict()):
        assert rel_err(pyramid_attention(q, k, v, levels, **kw, **promise), ref) < TOL[dtype]


@pytest.mark.parametrize("tail", [False, True])
def test_binary_plans_without_the_pooled_loops(tail):
    # pooled=False compiles the kernel without its pooled loops and builds no pooled K/V (with tail, the block
    # sums alone): the same output on a binary plan; check_levels finds out by itself
    torch.manual_seed(7)
    q, k, v = make_inputs(1, 4, 2, 100, 160, 32)
    levels = random_levels(1, 2, 100, 160, 16, 16, choices=(0, 1))
    kw = dict(block_m=16, block_n=16, tail=tail)
    ref = pyramid_attention_ref(q, k, v, levels, **kw)
    general = pyramid_attention(q, k, v, levels, **kw, check_levels=False, pooled=True)
    binary = pyramid_attention(q, k, v, levels, **kw, check_levels=False, pooled=False)
    found = pyramid_attention(q, k, v, levels, **kw)
    assert rel_err(general, ref) < TOL[q.dtype]
    assert torch.equal(binary, general) and torch.equal(found, general)
    if tail:
        sums_only = build_kv_pyramid(k, v, tail=True, block_n=16, pooled=False)
        assert torch.equal(pyramid_attention(q, k, v, levels, **kw, pyramid=sums_only, pooled=False), general)
        # a plan with pooled blocks needs the pooled levels: a sums-only pyramid is refused
        mixed = random_levels(1, 2, 100, 160, 16, 16)
        with pytest.raises(ValueError, match="pooled levels"):
            pyramid_attention(q, k, v, mixed, **kw, pyramid=sums_only)


def test_all_skipped_rows_give_zeros_and_tail_restores_mass():
    q, k, v = make_inputs(1, 2, 1, 64, 64, 32)
    levels = torch.zeros(plan_shape(1, 1, 64, 64, 32, 32), dtype=torch.int8)
    levels[..., 1, :] = 1  # second query block keeps everything; the first keeps nothing
    out = pyramid_attention(q, k, v, levels, block_m=32, block_n=32)
    assert not torch.isnan(out).any()
    assert out[:, :, :32].abs().max() == 0
    assert out[:, :, 32:].abs().max() > 0
    # with tail aggregation, a row that skips everything attends to the mean of what it can see
    out_tail = pyramid_attention(q, k, v, levels, block_m=32, block_n=32, tail=True)
    expected = v[0, 0].cumsum(0)[:32] / torch.arange(1, 33)[:, None]
    torch.testing.assert_close(out_tail[0, 0, :32], expected, rtol=1e-4, atol=1e-5)


def test_pooled_level_uses_group_means_with_log_correction():
    # one query, a non-causal plan with a single block at level 4: out = softmax(q.mean_k + ln 4) weighted mean_v
    q, k, v = make_inputs(1, 1, 1, 16, 32, 16)
    levels = torch.full(plan_shape(1, 1, 16, 32, 16, 16), 0, dtype=torch.int8)
    levels[..., 0, 1] = 4
    out = pyramid_attention(q, k, v, levels, block_m=16, block_n=16, causal=False)
    kp, counts = pool_keys(k[0, 0, 16:32].double(), 4)
    vp, _ = pool_keys(v[0, 0, 16:32].double(), 4)
    logits = q[0, 0].double() @ kp.T / math.sqrt(16) + math.log(4)
    expected = torch.softmax(logits, -1) @ vp
    torch.testing.assert_close(out[0, 0].double(), expected, rtol=1e-4, atol=1e-5)
    assert counts.tolist() == [4, 4, 4, 4]


def test_prebuilt_pyramid_gives_same_output():
    q, k, v = make_inputs(1, 2, 1, 64, 64, 32)
    levels = random_levels(1, 2, 64, 64, 16, 16)
    pyr = build_kv_pyramid(k, v, tail=True, block_n=16)
    a = pyramid_attention(q, k, v, levels, block_m=16, block_n=16, tail=True)
    b = pyramid_attention(q, k, v, levels, block_m=16, block_n=16, tail=True, pyramid=pyr)
    assert torch.equal(a, b)
    # block sums are per key block: a pyramid built for other blocks (or without tail) is refused
    with pytest.raises(ValueError, match="block_n=16"):
        pyramid_attention(q, k, v, levels, block_m=16, block_n=16, tail=True, pyramid=build_kv_pyramid(k, v, tail=True))


def test_sm_scale_is_used():
    q, k, v = make_inputs(1, 1, 1, 32, 32, 16)
    levels = torch.ones(plan_shape(1, 1, 32, 32, 16, 16), dtype=torch.int8)
    out = pyramid_attention(q, k, v, levels, block_m=16, block_n=16, sm_scale=0.05)
    ref = pyramid_attention_ref(q, k, v, levels, block_m=16, block_n=16, sm_scale=0.05)
    default = pyramid_attention_ref(q, k, v, levels, block_m=16, block_n=16)
    assert rel_err(out, ref) < 1e-4 and rel_err(out, default) > 1e-2


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(levels=torch.ones(1, 3, 2, 2, dtype=torch.int8)), "levels has shape"),
        (dict(levels=torch.full((1, 2, 2, 2), 3, dtype=torch.int8)), "levels values"),
        (dict(levels=torch.ones(1, 2, 2, 2)), "integer tensor"),
        (dict(k=torch.randn(1, 3, 64, 32)), "k and v must have the same shape"),
        (dict(q=torch.randn(1, 2, 65, 32)), "Lq <= Lk"),
        (dict(q=torch.randn(1, 2, 64, 32, dtype=torch.float64)), "bfloat16, float16 or float32"),
        (dict(block_m=48), "block_m must be one of"),
        (dict(q=torch.randn(2, 64, 32)), "must be 4-D"),
    ],
)
def test_bad_arguments_raise_value_error(change, match):
    # the parameters were built on the CPU at collection time: validate there, whatever the test device
    cpu = dict(device="cpu")
    args = dict(
        q=torch.randn(1, 2, 64, 32, **cpu),
        k=torch.randn(1, 2, 64, 32, **cpu),
        v=torch.randn(1, 2, 64, 32, **cpu),
        levels=torch.ones(1, 2, 2, 2, dtype=torch.int8, **cpu),
        block_m=32,
    )
    args.update(change)
    if "k" in change:
        args["levels"] = torch.ones(1, 2, 2, 2, dtype=torch.int8, **cpu)
    with pytest.raises(ValueError, match=match):
        pyramid_attention(args["q"], args["k"], args["v"], args["levels"], block_m=args["block_m"], block_n=32)


def test_descriptor_and_pointer_loads_agree():
    # K/V as the model hands them over ([B, L, H, D] memory seen as [B, H, L, D]), ragged last block, tail,
    # GQA: tiles read through tensor descriptors equal tiles read through pointers
    from vlmsparse.kernels.pyramid import can_use_tma

    q, k, v = make_inputs(2, 4, 2, 70, 100, 32)
    k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (k, v))
    assert not k.is_contiguous() and can_use_tma(k, v)
    levels = random_levels(2, 4, 70, 100, 16, 16)
    kw = dict(block_m=16, block_n=16, tail=True)
    via_desc = pyramid_attention(q, k, v, levels, tma=True, **kw)
    via_ptr = pyramid_attention(q, k, v, levels, tma=False, **kw)
    ref = pyramid_attention_ref(q, k, v, levels, **kw)
    assert rel_err(via_desc, ref) < TOL[q.dtype]
    assert (via_desc - via_ptr).abs().max().item() < 1e-5


def test_descriptor_loads_fall_back_where_they_cannot_run():
    from vlmsparse.kernels.pyramid import can_use_tma

    q, k, v = make_inputs(1, 2, 1, 32, 32, 80)  # head dim not a power of two
    assert not can_use_tma(k, v)
    levels = torch.ones(plan_shape(1, 2, 32, 32, 16, 16), dtype=torch.int8)
    out = pyramid_attention(q, k, v, levels, block_m=16, block_n=16)  # automatic choice: pointer loads
    assert rel_err(out, pyramid_attention_ref(q, k, v, levels, block_m=16, block_n=16)) < TOL[q.dtype]
    with pytest.raises(ValueError, match="tma=True needs"):
        pyramid_attention(q, k, v, levels, block_m=16, block_n=16, tma=True)
    _, k, v = make_inputs(1, 2, 1, 32, 32, 32)
    assert can_use_tma(k, v)
    assert not can_use_tma(k.expand(3, -1, -1, -1), v.expand(3, -1, -1, -1))  # broadcast batch: stride 0
