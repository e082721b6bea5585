"""Chained launches (programmatic dependent launch): when they are used, and that they change no output.

The chained launches themselves run only on a CUDA device of compute capability 9.0 or newer
(``VLMSPARSE_TEST_DEVICE=cuda``); elsewhere the tests check that nothing is chained.
"""

import os

import pytest
import torch

from vlmsparse.kernels import build_kv_pyramid, compile_plan, pdl, pyramid_attention
from vlmsparse.kernels.reference import pyramid_attention_ref

from test_kernel_ws import ON_HOPPER

DEVICE = os.environ.get("VLMSPARSE_TEST_DEVICE", "cpu")
CHAINS = DEVICE == "cuda" and torch.cuda.is_available() and pdl.pdl_ok(torch.device("cuda"))


@pytest.fixture
def pdl_switch():
    before = pdl.ENABLED
    yield
    pdl.ENABLED = before


def test_nothing_chained_off_hopper_or_under_the_interpreter(pdl_switch, monkeypatch):
    assert not pdl.pdl_ok(torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not pdl.pdl_ok(torch.device("cuda", 0))  # the interpreter runs no grid-dependency instruction
    monkeypatch.delenv("TRITON_INTERPRET")
    pdl.ENABLED = False
    assert not pdl.pdl_ok(torch.device("cuda", 0))


@pytest.mark.parametrize(
    "tail,built_here,pooled,want",
    [
        (False, False, True, 0),  # prebuilt pyramid, no tail: the launch before is the caller's
        (False, False, False, 0),  # binary plan, no pyramid at all
        (False, True, True, 1),  # pyramid built here: wait before the pooled loops
        (True, True, True, 1),  # pyramid -> sums -> kernel: the pyramid may still be in the making
        (True, False, True, 2),  # prebuilt pyramid (complete before the sums' launch): wait before the tail
        (True, True, False, 2),  # block sums alone built here: only the tail reads the chain's output
        (True, False, False, 2),
    ],
)
def test_where_the_chained_kernel_waits(tail, built_here, pooled, want):
    from vlmsparse.kernels.pyramid import chain_wait

    assert chain_wait(tail, built_here, pooled) == want


def _inputs(length, seed, hq=4, hkv=2, d=64, block=64):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, h, length, d, generator=g).to(DEVICE, torch.bfloat16) for h in (hq, hkv, hkv))
    nb = -(-length // block)
    levels = torch.tensor([0, 1, 2, 4, 8], dtype=torch.int8)[torch.randint(0, 5, (1, hkv, nb, nb), generator=g)]
    idx = torch.arange(nb)
    levels[..., idx, idx] = 1  # the diagonal kept, as every planner keeps it
    levels[..., 0] = 1
    return q, k, v, levels.to(DEVICE)


@pytest.mark.parametrize("tail", [False, True])
@pytest.mark.parametrize("prebuilt", [False, True])
@pytest.mark.parametrize("pooled", [True, False])
def test_chained_launches_change_no_output(pdl_switch, tail, prebuilt, pooled):
    if pooled is False and not tail and prebuilt:
        pytest.skip("a binary plan without tail reads no pyramid")
    length, block = 150, 32
    q, k, v, levels = _inputs(length, seed=7 + tail, block=block)
    if not pooled:
        levels = torch.where(levels > 1, torch.zeros_like(levels), levels)
    plan = compile_plan(levels, length, length, block, block, True)
    outs = []
    for enabled in (False, True):
        pdl.ENABLED = enabled
        pyr = build_kv_pyramid(k, v, tail=tail, block_n=block, pooled=pooled) if prebuilt else None
        outs.append(pyramid_attention(q, k, v, levels, block_m=block, block_n=block, tail=tail, pyramid=pyr,
                                      plan=plan, check_levels=False, diagonal_kept=True, pooled=pooled))
    assert torch.equal(outs[0], outs[1])
    ref = pyramid_attention_ref(q, k, v, levels, block_m=block, block_n=block, tail=tail)
    err = ((outs[1].double() - ref.double()).norm() / ref.double().norm()).item()
    assert err < 2e-2, f"relative error {err:.2e}"


WS = CHAINS and ON_HOPPER


@pytest.mark.skipif(not WS, reason="the warp-specialized kernel needs an sm_90 GPU outside the interpreter")
@pytest.mark.parametrize("tail", [False, True])
@pytest.mark.parametrize("prebuilt", [False, True])
def test_chained_launches_of_the_warp_specialized_kernel_change_no_output(pdl_switch, tail, prebuilt):
    length, block = 1100, 128
    q, k, v, levels = _inputs(length, seed=11 + tail, hq=8, hkv=2, d=128, block=block)
    plan = compile_plan(levels, length, length, block, block, True)
    outs = []
    for enabled in (False, True):
        pdl.ENABLED = enabled
        pyr = build_kv_pyramid(k, v, tail=tail, block_n=block) if prebuilt else None
        outs.append(pyramid_attention(q, k, v, levels, tail=tail, pyramid=pyr, plan=plan, check_levels=False,
                                      diagonal_kept=True, kernel="ws"))
    assert torch.equal(outs[0], outs[1])
    ref = pyramid_attention_ref(q, k, v, levels, block_m=block, block_n=block, tail=tail)
    err = ((outs[1].double() - ref.double()).norm() / ref.double().norm()).item()
    assert err < 1e-2, f"relative error {err:.2e}"


@pytest.mark.skipif(not CHAINS, reason="chained launches need a CUDA device of compute capability >= 9.0")
def test_chained_launches_replay_from_a_cuda_graph(pdl_switch):
    length, block = 1000, 128
    q, k, v, levels = _inputs(length, seed=3, hq=8, hkv=2, d=128, block=block)
    plan = compile_plan(levels, length, length, block, block, True)

    def call():
        return pyramid_attention(q, k, v, levels, tail=True, plan=plan, check_levels=False, diagonal_kept=True)

    pdl.ENABLED = False
    want = call()
    pdl.ENABLED = True
    call()  # compiled before capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = call()
    for _ in range(3):
        got.zero_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(got, want)
