"""The kernel's helpers (K/V pyramid, plan compilation) in Triton against their plain-PyTorch definitions."""

import os

import pytest
import torch

from vlmsparse.kernels import build_kv_pyramid, compile_plan, plan_shape
from vlmsparse.kernels.kv_pyramid import build_kv_pyramid_torch, level_offsets
from vlmsparse.kernels.plan_lists import N_CATEGORIES, compile_plan_torch

from offline_compile import CAPTURED, MAX_SHARED, compile_launched_kernels, compiled_sizes

DEVICE = os.environ.get("VLMSPARSE_TEST_DEVICE", "cpu")


@pytest.mark.parametrize("length,d,block_n", [(1, 32, 16), (37, 64, 32), (130, 80, 128), (256, 128, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pyramid_matches_definition(length, d, block_n, dtype):
    k = torch.randn(2, 3, length, d, device=DEVICE).to(dtype)
    v = torch.randn(2, 3, length, d, device=DEVICE).to(dtype)
    got = build_kv_pyramid(k, v, tail=True, block_n=block_n)
    want = build_kv_pyramid_torch(k, v, tail=True, block_n=block_n)
    assert got.pooled_k_all.shape == (2, 3, level_offsets(length)[0], d)
    for p in (2, 4, 8):
        assert got.pooled_k[p].shape == (2, 3, -(-length // p), d)
        torch.testing.assert_close(got.pooled_k[p], want.pooled_k[p])
        torch.testing.assert_close(got.pooled_v[p], want.pooled_v[p])
        # the definition: means of p consecutive keys (a partial last group: of its own keys)
        groups = -(-length // p)
        first = k[:, :, : min(p, length)].float().mean(2)
        torch.testing.assert_close(got.pooled_k[p][:, :, 0].float(), first, rtol=1e-2, atol=1e-2)
        last = k[:, :, (groups - 1) * p :].float().mean(2)
        torch.testing.assert_close(got.pooled_k[p][:, :, -1].float(), last, rtol=1e-2, atol=1e-2)
    n_kb = -(-length // block_n)
    assert got.block_sum_k.shape == (2, 3, n_kb, d) and got.block_sums.dtype == torch.float32
    assert got.block_sums.shape == (2, 3, n_kb, 2 * d + 1)
    torch.testing.assert_close(got.block_sums, want.block_sums, rtol=1e-5, atol=1e-4)
    counts = torch.clamp(length - torch.arange(n_kb) * block_n, max=block_n).to(torch.float32)
    assert torch.equal(got.block_sums[..., -1].cpu(), counts.expand(2, 3, n_kb))
    torch.testing.assert_close(got.block_sum_k, want.block_sum_k, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got.block_sum_v, want.block_sum_v, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got.block_sum_v[:, :, -1].double(), v[:, :, (n_kb - 1) * block_n :].double().sum(2),
                               rtol=1e-5, atol=1e-4)


def test_pyramid_on_non_contiguous_keys():
    kv = torch.randn(1, 40, 2, 2, 32, device=DEVICE)  # [B, L, 2, H, D] as a fused projection would give
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    got = build_kv_pyramid(k, v, tail=True, block_n=16)
    want = build_kv_pyramid_torch(k.contiguous(), v.contiguous(), tail=True, block_n=16)
    torch.testing.assert_close(got.pooled_k[4], want.pooled_k[4])
    torch.testing.assert_close(got.block_sum_v, want.block_sum_v, rtol=1e-5, atol=1e-5)


def test_pyramid_without_tail_has_no_block_sums():
    k = torch.randn(1, 2, 50, 32, device=DEVICE)
    pyr = build_kv_pyramid(k, k)
    assert pyr.block_sum_k is None and not pyr.has_block_sums(128)
    with pytest.raises(ValueError, match="block_n"):
        build_kv_pyramid(k, k, tail=True, block_n=48)


@pytest.mark.parametrize("length,block_n", [(50, 16), (256, 128), (300, 64)])
def test_pyramid_of_block_sums_only(length, block_n):
    k = torch.randn(2, 3, length, 32, device=DEVICE)
    v = torch.randn(2, 3, length, 32, device=DEVICE) + 2.0
    full = build_kv_pyramid(k, v, tail=True, block_n=block_n)
    sums = build_kv_pyramid(k, v, tail=True, block_n=block_n, pooled=False)
    assert not sums.has_pooled and full.has_pooled and sums.has_block_sums(block_n)
    assert sums.head_dim == full.head_dim == 32
    torch.testing.assert_close(sums.block_sums, full.block_sums, rtol=0, atol=0)
    torch.testing.assert_close(sums.block_sums, build_kv_pyramid_torch(k, v, tail=True, block_n=block_n,
                                                                       pooled=False).block_sums)
    with pytest.raises(ValueError, match="block sums only"):
        sums.pooled_k
    with pytest.raises(ValueError, match="needs tail=True"):
        build_kv_pyramid(k, v, pooled=False)


def _lists(plan):
    """Per row, the kept blocks of each category as sets (order inside a category is increasing in both)."""
    out = []
    for idx, off in zip(plan.block_idx.tolist(), plan.cat_offsets.tolist()):
        out.append([idx[off[c]:off[c + 1]] for c in range(N_CATEGORIES)])
    return out


@pytest.mark.parametrize("lq,lk,bm,bn", [(64, 64, 16, 16), (50, 130, 32, 16), (1, 77, 16, 32), (200, 200, 64, 32)])
@pytest.mark.parametrize("causal", [True, False])
def test_compiled_plan_matches_definition(lq, lk, bm, bn, causal):
    shape = plan_shape(2, 3, lq, lk, bm, bn)
    levels = torch.tensor([0, 1, 2, 4, 8], device=DEVICE)[torch.randint(0, 5, shape, device=DEVICE)].to(torch.int8)
    got = compile_plan(levels, lq, lk, bm, bn, causal)
    want = compile_plan_torch(levels, lq, lk, bm, bn, causal)
    assert torch.equal(got.cat_offsets, want.cat_offsets)
    assert _lists(got) == _lists(want)
    assert got.plan_heads == 3


def test_runs_of_one_level_become_spans_and_single_blocks():
    # one row, no causal mask: exact 0; level 2 at 1-3; level 4 at 4-9; level 8 at 10-19; skipped 20
    row = [1] + [2] * 3 + [4] * 6 + [8] * 10 + [0]
    levels = torch.tensor(row, dtype=torch.int8, device=DEVICE).reshape(1, 1, 1, -1)
    want = [
        [0],  # exact
        [1 * 8 + 1],  # a span of two level-2 blocks from block 1 (entry 8 * first + blocks - 1)
        [4 * 8 + 3, 8 * 8 + 1],  # four level-4 blocks from 4, then the remainder of two as a part-filled span
        [10 * 8 + 7],  # eight level-8 blocks from 10
        [3],  # the level-2 remainder of one block: a narrow tile
        [],
        [18, 19],  # a level-8 remainder of two is cheaper as two narrow tiles than one span
        [], [], [20],
    ]
    for compile_fn in (compile_plan, compile_plan_torch):
        got = compile_fn(levels, 16, len(row) * 16, 16, 16, False)
        assert _lists(got) == [want]
    # a ragged last block never joins a span: its last group has fewer keys
    ragged = compile_plan(torch.full((1, 1, 1, 4), 2, dtype=torch.int8, device=DEVICE), 16, 60, 16, 16, False)
    assert _lists(ragged)[0][1] == [0 * 8 + 1] and _lists(ragged)[0][4] == [2, 3]


@pytest.mark.parametrize("lq,lk,bm,bn", [(200, 200, 32, 16), (64, 300, 16, 16), (130, 130, 64, 32)])
@pytest.mark.parametrize("causal", [True, False])
def test_compiled_runs_match_definition(lq, lk, bm, bn, causal):
    # levels in runs of one value (1 to 10 blocks), so spans of every size and every remainder occur
    b, hm, n_qb, n_kb = plan_shape(2, 2, lq, lk, bm, bn)
    values = torch.tensor([0, 1, 2, 4, 8], device=DEVICE)
    runs = torch.randint(1, 11, (b * hm * n_qb, n_kb), device=DEVICE)
    run_id = torch.searchsorted(runs.cumsum(-1), torch.arange(n_kb, device=DEVICE).expand_as(runs).contiguous(), right=True)
    pick = torch.randint(0, 5, (b * hm * n_qb, n_kb + 1), device=DEVICE)
    levels = values[torch.gather(pick, -1, run_id)].reshape(b, hm, n_qb, n_kb).to(torch.int8)
    got = compile_plan(levels, lq, lk, bm, bn, causal)
    want = compile_plan_torch(levels, lq, lk, bm, bn, causal)
    assert torch.equal(got.cat_offsets, want.cat_offsets)
    assert _lists(got) == _lists(want)
    assert int((got.cat_offsets[:, 4] - got.cat_offsets[:, 1]).sum()) > 0  # spans were made


@pytest.mark.parametrize("length,d,block", [(100, 32, 16), (256, 80, 64), (7, 16, 32)])
@pytest.mark.parametrize("centred", [False, True])
def test_block_stats_match_definition(length, d, block, centred):
    from vlmsparse.methods.scoring import block_mean_and_similarity

    # [B, L, H, D] memory seen as [B, H, L, D], as a model hands q/k over; alike tokens in the first block
    x = torch.randn(2, length, 3, d, device=DEVICE).transpose(1, 2)
    x[:, :, : min(block, length)] = x[:, :, :1] + 0.05 * x[:, :, : min(block, length)]
    center = torch.randn(2, 3, d, device=DEVICE) if centred else None
    mean, sim = block_mean_and_similarity(x, block, center, use_triton=True)
    want_mean, want_sim = block_mean_and_similarity(x, block, center, use_triton=False)
    n_blocks = -(-length // block)
    assert mean.shape == (2, 3, n_blocks, d) and sim.shape == (2, 3, n_blocks)
    torch.testing.assert_close(mean, want_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sim, want_sim, rtol=1e-5, atol=1e-5)
    assert sim[:, :, 0].min() > 0.9 and sim.max() <= 1.0 + 1e-5


def test_block_stats_bfloat16_and_bad_arguments():
    from vlmsparse.kernels.block_stats import block_stats_triton
    from vlmsparse.methods.scoring import block_mean_and_similarity

    x = torch.randn(1, 2, 96, 64, device=DEVICE).to(torch.bfloat16)
    mean, sim = block_stats_triton(x, 32)
    want_mean, want_sim = block_mean_and_similarity(x, 32, use_triton=False)
    torch.testing.assert_close(mean, want_mean, rtol=1e-3, atol=1e-3)  # the reference rounds weights to bf16
    torch.testing.assert_close(sim, want_sim, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="power of two"):
        block_stats_triton(x, 48)
    with pytest.raises(ValueError, match="center must have shape"):
        block_stats_triton(x, 32, torch.zeros(1, 2, 32, device=DEVICE))


def test_sums_form_rule():
    # 32-row programs only where each walks at least 128 key blocks and a kv-head has at most 256 plan rows
    from vlmsparse.kernels.pyramid import sums_form

    assert sums_form(256, 256)[0] == 32  # 32k tokens, one plan head per kv-head
    assert sums_form(64, 64)[0] == 64  # 8k
    assert sums_form(1792, 256)[0] == 64  # 32k, one plan head per query head of 7 per kv-head
    assert all(f[1:] == (32, 64, 4, "ieee") for f in (sums_form(256, 256), sums_form(64, 64)))


@pytest.mark.parametrize("lq,lk,bm,bn,causal", [(100, 160, 16, 16, True), (64, 64, 32, 16, True), (50, 90, 16, 32, False),
                                                  # programs whose last query block sees fewer blocks than the keys have
                                                  (1200, 1300, 16, 16, True)])
@pytest.mark.parametrize("form", [None, (32, 32, 64, 4, "ieee")])
def test_skipped_key_sums_match_definition(lq, lk, bm, bn, causal, form, monkeypatch):
    # per plan row: the sums of the keys and values of the wholly visible blocks it skips, and their key count, in
    # the default launch form (programs of 64 rows at these sizes, fewer than 128 key blocks) and in 32-row programs
    from vlmsparse.kernels import pyramid as kernel_module
    from vlmsparse.kernels.blocks import FULL, block_classes
    from vlmsparse.kernels.pyramid import skipped_key_sums

    monkeypatch.setattr(kernel_module, "SUMS_FORM", form)

    torch.manual_seed(7)
    b, hm, hkv, d = 2, 4, 2, 16
    k = torch.randn(b, hkv, lk, d, device=DEVICE) + 5.0
    v = torch.randn(b, hkv, lk, d, device=DEVICE)
    levels = torch.randint(0, 3, plan_shape(b, hm, lq, lk, bm, bn), device=DEVICE).to(torch.int8)
    pyr = build_kv_pyramid(k, v, tail=True, block_n=bn)
    got = skipped_key_sums(levels, pyr, lq, lk, bm, bn, causal)
    full = (block_classes(lq, lk, bm, bn, causal, DEVICE) == FULL)
    n_qb, n_kb = full.shape
    counts = torch.clamp(lk - torch.arange(n_kb, device=DEVICE) * bn, max=bn).double()
    want = torch.zeros(b, hm, n_qb, 2 * d + 1, dtype=torch.float64, device=DEVICE)
    for bi in range(b):
        for h in range(hm):
            kvh = h // (hm // hkv)
            for qb in range(n_qb):
                for j in range(n_kb):
                    if levels[bi, h, qb, j] == 0 and full[qb, j]:
                        keys = slice(j * bn, min((j + 1) * bn, lk))
                        want[bi, h, qb, :d] += k[bi, kvh, keys].double().sum(0)
                        want[bi, h, qb, d : 2 * d] += v[bi, kvh, keys].double().sum(0)
                        want[bi, h, qb, 2 * d] += counts[j]
    assert got.shape == (b * hm * n_qb, 2 * d + 1) and got.dtype == torch.float32
    assert want[..., 2 * d].sum() > 0  # some rows do skip something
    torch.testing.assert_close(got.double(), want.reshape(-1, 2 * d + 1), rtol=1e-5, atol=1e-3)
    # the tail key itself (the warp-specialized kernel's form): means in the asked dtype, zeros where nothing is
    # skipped, and the count
    want = want.reshape(-1, 2 * d + 1)
    n = want[:, 2 * d]
    for dtype in (torch.float32, torch.bfloat16):
        mean_k, mean_v, count = skipped_key_sums(levels, pyr, lq, lk, bm, bn, causal, means=dtype)
        assert mean_k.shape == mean_v.shape == (b * hm * n_qb, d) and mean_k.dtype == mean_v.dtype == dtype
        assert count.shape == (b * hm * n_qb,) and count.dtype == torch.float32
        torch.testing.assert_close(count.double(), n)
        tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(mean_k.double(), want[:, :d] / n.clamp(min=1)[:, None], **tol)
        torch.testing.assert_close(mean_v.double(), want[:, d : 2 * d] / n.clamp(min=1)[:, None], **tol)
        assert (mean_k[n == 0] == 0).all() and (n == 0).any()


def test_triton_kernel_compiles_for_ampere_and_hopper_with_this_triton():
    # no GPU needed: a GPU user of the installed Triton would meet any change of its API in the kernel first
    configs = [(90, True, True, True, 2), (90, True, False, True, 1), (80, False, True, True, 0),
               (80, False, False, False, 0)]
    call = "pyramid.compile_for(c[0], tma=c[1], tail=c[2], pooled=c[3], pdl=c[4])"
    for (arch, *_), (cubin, shared) in zip(configs, compiled_sizes(call, configs)):
        assert cubin > 10_000
        assert 0 < shared <= MAX_SHARED[arch]


def test_every_other_launched_triton_kernel_compiles_for_ampere_and_hopper(tmp_path):
    # the planners', the pyramid's, the plan lists', the tail's sums' and the segmented attention's kernels, as the
    # package launches them (captured under the interpreter), compiled with the installed Triton, no GPU needed
    rows = compile_launched_kernels(tmp_path)
    assert {name for name, *_ in rows} == CAPTURED
    assert {arch for _, arch, *_ in rows} == {80, 90}
    for name, arch, cubin, shared in rows:
        assert cubin > 10_000, name
        assert shared <= MAX_SHARED[arch], name
