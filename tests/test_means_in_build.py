"""The tail's means made by the pyramid's own launch (``build_kv_pyramid_means``) against the pyramid's launch and
the skipped sums' launch made one after the other: the same pyramid and, in float32 products, the same bits."""

import os

import pytest
import torch

from vlmsparse.kernels import build_kv_pyramid
from vlmsparse.kernels import pyramid as pyramid_module
from vlmsparse.kernels.blocks import cdiv
from vlmsparse.kernels.pyramid import build_kv_pyramid_means, skipped_key_sums

DEVICE = os.environ.get("VLMSPARSE_TEST_DEVICE", "cpu")


@pytest.mark.parametrize("lq,lk,block,hm,causal", [(100, 100, 16, 6, True), (40, 130, 32, 2, True),
                                                   (70, 70, 16, 2, False)])
@pytest.mark.parametrize("pooled", [True, False])
def test_means_in_build_equal_the_two_launches(lq, lk, block, hm, causal, pooled):
    torch.manual_seed(lq + lk + hm)
    b, hq, hkv, d = 2, 6, 2, 32
    k = torch.randn(b, hkv, lk, d, device=DEVICE).to(torch.bfloat16)
    v = torch.randn(b, hkv, lk, d, device=DEVICE).to(torch.bfloat16)
    shape = (b, hm, cdiv(lq, block), cdiv(lk, block))
    choices = torch.tensor([0, 0, 1, 2, 4, 8] if pooled else [0, 0, 1])
    levels = choices[torch.randint(0, len(choices), shape)].to(torch.int8).to(DEVICE)
    got_pyr, got = build_kv_pyramid_means(k, v, levels, lq, block, block, causal, torch.bfloat16, pooled=pooled)
    want_pyr = build_kv_pyramid(k, v, tail=True, block_n=block, pooled=pooled)
    want = skipped_key_sums(levels, want_pyr, lq, lk, block, block, causal, means=torch.bfloat16)
    assert torch.equal(got_pyr.block_sums, want_pyr.block_sums)
    if pooled:
        assert torch.equal(got_pyr.pooled_k_all, want_pyr.pooled_k_all)
        assert torch.equal(got_pyr.pooled_v_all, want_pyr.pooled_v_all)
    else:
        assert got_pyr.pooled_k_all is None
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert torch.equal(g, w)
    assert got[2].sum() > 0  # some row skips a wholly visible block: the comparison is not of zeros alone
    # the launch leaves its counters at zero: a second call gives the same means
    _, again = build_kv_pyramid_means(k, v, levels, lq, block, block, causal, torch.bfloat16, pooled=pooled)
    for g, w in zip(again, want):
        assert torch.equal(g, w)
    counter = pyramid_module._means_counter(k.device, b * hkv)
    assert int(counter.abs().sum()) == 0


def test_means_follow_the_levels():
    """A row that skips a block counts its keys; one whose blocks are all kept has no tail (count 0, zero means)."""
    b, hkv, lk, d, block = 1, 1, 64, 16, 16
    k = torch.randn(b, hkv, lk, d, device=DEVICE)
    v = torch.randn(b, hkv, lk, d, device=DEVICE)
    levels = torch.ones(1, 1, 4, 4, dtype=torch.int8, device=DEVICE)
    levels[0, 0, 3, 1] = 0  # the last query block skips key block 1
    _, (mk, mv, count) = build_kv_pyramid_means(k, v, levels, lk, block, block, True, torch.float32)
    assert count.tolist() == [0.0, 0.0, 0.0, 16.0]
    torch.testing.assert_close(mk[3], k[0, 0, 16:32].mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mv[3], v[0, 0, 16:32].mean(0), rtol=1e-5, atol=1e-5)
    assert torch.equal(mk[:3], torch.zeros_like(mk[:3]))


def test_means_kernel_compiles_for_sm90():
    """The GPU's form (fences, a split of several programs a kv-head), which no interpreter launch has."""
    from offline_compile import MAX_SHARED, compiled_sizes

    sizes = compiled_sizes("pyramid.compile_means_for(90, pooled=c[0], precision=c[1])",
                           [(True, "ieee"), (False, "tf32")])
    for cubin, shared in sizes:
        assert cubin > 0 and shared <= MAX_SHARED[90]


@pytest.mark.skipif(DEVICE != "cuda", reason="several programs a kv-head make the means only on a GPU")
@pytest.mark.parametrize("precision", ["ieee", "tf32"])
@pytest.mark.parametrize("length", [4096, 3000])
def test_means_in_build_on_the_gpu(monkeypatch, precision, length):
    """The GPU's split (several programs a kv-head wait for its count and share its means), repeated calls on a
    stream: the same means as the two launches (bit for bit in float32 products, within tf32's rounding else)."""
    monkeypatch.setattr(pyramid_module, "MEANS_PRECISION", precision)
    torch.manual_seed(length)
    b, hm, hkv, d, block = 1, 16, 4, 128, 128
    k = (torch.randn(b, hkv, length, d, device=DEVICE) + 3.0).to(torch.bfloat16)
    v = torch.randn(b, hkv, length, d, device=DEVICE).to(torch.bfloat16)
    shape = (b, hm, cdiv(length, block), cdiv(length, block))
    levels = torch.tensor([0, 0, 1, 2, 4, 8])[torch.randint(0, 6, shape)].to(torch.int8).to(DEVICE)
    want_pyr = build_kv_pyramid(k, v, tail=True, block_n=block)
    want = skipped_key_sums(levels, want_pyr, length, length, block, block, True, means=torch.bfloat16)
    for _ in range(3):
        got_pyr, got = build_kv_pyramid_means(k, v, levels, length, block, block, True, torch.bfloat16)
        assert torch.equal(got_pyr.pooled_k_all, want_pyr.pooled_k_all)
        assert torch.equal(got_pyr.block_sums, want_pyr.block_sums)
        assert torch.equal(got[2], want[2])
        for g, w in zip(got[:2], want[:2]):
            if precision == "ieee":
                assert torch.equal(g, w)
            else:
                torch.testing.assert_close(g.float(), w.float(), rtol=2e-2, atol=2e-2)
    torch.cuda.synchronize()
    assert int(pyramid_module._means_counter(k.device, b * hkv).abs().sum()) == 0
