"""The warp-specialized Hopper kernel (``kernel="ws"``): where it runs, and the same outputs as the reference.

Its numerical checks need an sm_90 GPU (``VLMSPARSE_TEST_DEVICE=cuda TRITON_INTERPRET=0``); the interpreter cannot
run Gluon. The dispatch checks run everywhere.
"""

import os

import pytest
import torch

from vlmsparse.kernels.blocks import PARTIAL, block_classes
from vlmsparse.kernels import build_kv_pyramid, compile_plan, plan_shape, pyramid_attention
from vlmsparse.kernels import pyramid_ws
from vlmsparse.kernels.pyramid_ws import ws_supported
from vlmsparse.kernels.reference import pyramid_attention_ref

from offline_compile import MAX_SHARED, compiled_sizes
from test_kernel import make_inputs, random_levels, rel_err, run_levels

DEVICE = os.environ.get("VLMSPARSE_TEST_DEVICE", "cpu")
ON_HOPPER = (DEVICE == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
             and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"))
hopper = pytest.mark.skipif(not ON_HOPPER, reason="needs an sm_90 GPU outside the interpreter")
TOL = {torch.float16: 5e-3, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def _on_test_device():
    with torch.device(DEVICE):
        yield


def test_not_chosen_off_hopper_or_outside_its_shapes():
    q, k, v = make_inputs(1, 2, 1, 256, 256, 128, torch.bfloat16)
    if not ON_HOPPER:
        assert not ws_supported(q, k, v, 128, 128, False)
    assert not ws_supported(q, k, v, 128, 128, True)  # a tail over skipped diagonal blocks: the Triton kernel
    assert not ws_supported(q, k, v, 64, 128, False)
    q32, k32, v32 = make_inputs(1, 2, 1, 256, 256, 128, torch.float32)
    assert not ws_supported(q32, k32, v32, 128, 128, False)
    q64, k64, v64 = make_inputs(1, 2, 1, 256, 256, 64, torch.bfloat16)
    assert not ws_supported(q64, k64, v64, 128, 128, False)


no_gluon = pytest.mark.skipif(pyramid_ws.gluon is None, reason="this Triton has no Gluon (the kernel is never chosen)")


@no_gluon
def test_compiles_for_sm90_with_this_triton():
    # no GPU needed: Gluon's API moves from Triton version to version (thread_barrier became barrier, and
    # async_copy_global_to_shared async_load, in 3.9), and a Hopper user of this Triton would meet any break first
    configs = [(True, True, 2), (True, False, 1), (False, False, 0), (False, True, 2)]
    for cubin, shared in compiled_sizes("pyramid_ws.compile_for_sm90(*c)", configs):
        assert cubin > 10_000
        assert 160_000 < shared <= MAX_SHARED[90]


@no_gluon
def test_fast_descriptor_has_every_field_of_the_checked_one():
    # the launcher builds its TMA descriptors without the dataclass's checks; a field a newer Triton adds (3.9's
    # round_f32_to_tf32) must still be there, with its default
    import dataclasses

    t = torch.zeros(1, 2, 256, 128, dtype=torch.bfloat16, device="cpu")
    ours = pyramid_ws._descriptor(t, 64)
    checked = pyramid_ws.GluonDescriptor.from_tensor(t, [1, 1, 64, 128], pyramid_ws._box_layout(64))
    for field in dataclasses.fields(checked):
        a, b = getattr(ours, field.name), getattr(checked, field.name)
        if field.name == "base":
            assert a is t and b is t
        else:
            assert (list(a) if field.name in ("shape", "strides") else a) == \
                (list(b) if field.name in ("shape", "strides") else b), field.name


def test_bad_kernel_argument_is_one_clear_error():
    q, k, v = make_inputs(1, 2, 1, 64, 64, 32)
    levels = torch.ones(plan_shape(1, 1, 64, 64, 32, 32), dtype=torch.int8)
    with pytest.raises(ValueError, match="pass 'ws', 'triton' or None"):
        pyramid_attention(q, k, v, levels, block_m=32, block_n=32, kernel="fast")
    with pytest.raises(ValueError, match="sm_90"):
        pyramid_attention(q, k, v, levels, block_m=32, block_n=32, kernel="ws")


def test_environment_turns_it_off(monkeypatch):
    q, k, v = make_inputs(1, 2, 1, 256, 256, 128, torch.bfloat16)
    monkeypatch.setenv("VLMSPARSE_KERNEL", "triton")
    assert not ws_supported(q, k, v, 128, 128, False)


def check_ws(q, k, v, levels, causal=True, pooled=None):
    out = pyramid_attention(q, k, v, levels, causal=causal, kernel="ws", pooled=pooled)
    ref = pyramid_attention_ref(q, k, v, levels, causal=causal)
    tri = pyramid_attention(q, k, v, levels, causal=causal, kernel="triton", pooled=pooled)
    assert out.shape == q.shape and out.dtype == q.dtype and torch.isfinite(out).all()
    err = rel_err(out, ref)
    assert err < TOL[q.dtype], f"relative error {err:.2e} against the reference"
    # the same steps on the same operands as the Triton kernel: equal to rounding
    assert rel_err(out, tri) < TOL[q.dtype] / 2
    return out, ref


@hopper
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("lq,lk", [(1024, 1024), (1000, 1000), (300, 1100), (129, 900)])
def test_random_mixed_plans(dtype, causal, lq, lk):
    torch.manual_seed(lq + lk)
    q, k, v = make_inputs(1, 4, 2, lq, lk, 128, dtype)
    check_ws(q, k, v, random_levels(1, 4, lq, lk, 128, 128), causal=causal)


@hopper
@pytest.mark.parametrize("plan_heads", [2, 6])
def test_plan_per_kv_head_batch_2_and_runs_of_one_level(plan_heads):
    # runs of 1 to 10 blocks of one level: every span size and remainder, single pooled blocks of every level
    torch.manual_seed(plan_heads)
    lq = lk = 24 * 128 - 37
    q, k, v = make_inputs(2, 6, 2, lq, lk, 128, torch.bfloat16)
    n_qb = plan_shape(2, plan_heads, lq, lk, 128, 128)[2]
    levels = torch.cat([run_levels(n_qb, 24) for _ in range(2 * plan_heads)]).reshape(2, plan_heads, n_qb, 24)
    for causal in (True, False):
        check_ws(q, k, v, levels, causal=causal)


@hopper
@pytest.mark.parametrize("kind", ["one level 8", "one level 2", "mixed keep 0.25", "mixed keep 0.1"])
def test_rows_of_sixty_four_blocks(kind):
    # rows as long as the benchmarks' at 8k (64 key blocks): many spans and single blocks per row, span entries
    # and block indices past what the short tests reach; the plans of bench kernel and tail_ab (sink and diagonal
    # exact), checked against the float64 reference and the Triton kernel
    from vlmsparse.bench.kernel import one_level_plan, random_mixed_plan

    length = 64 * 128
    torch.manual_seed(len(kind))
    q, k, v = make_inputs(1, 8, 2, length, length, 128, torch.bfloat16)
    with torch.device("cpu"):  # the plans' generators are CPU ones
        if kind.startswith("one level"):
            levels = one_level_plan(2, length, 128, int(kind[-1]), device="cpu")
        else:
            levels = random_mixed_plan(1, 2, length, 128, float(kind.split()[-1]), device="cpu", seed=len(kind))
    check_ws(q, k, v, levels.to(DEVICE))


@hopper
def test_strided_queries_and_every_level_one_equals_sdpa():
    torch.manual_seed(0)
    b, l, hq, hkv = 1, 2000, 8, 2
    q = torch.randn(b, l, hq, 128, dtype=torch.bfloat16).transpose(1, 2)  # as a model's projection gives it
    k = torch.randn(b, l, hkv, 128, dtype=torch.bfloat16).transpose(1, 2)
    v = torch.randn(b, l, hkv, 128, dtype=torch.bfloat16).transpose(1, 2)
    assert ws_supported(q, k, v, 128, 128, False)
    levels = torch.ones(plan_shape(b, hkv, l, l, 128, 128), dtype=torch.int8)
    out = pyramid_attention(q, k, v, levels)  # chosen by default here
    dense = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1), is_causal=True)
    assert rel_err(out, dense) < 5e-3
    check_ws(q, k, v, levels)


@hopper
def test_binary_kernel_reads_pooled_blocks_as_skipped():
    torch.manual_seed(1)
    q, k, v = make_inputs(1, 4, 2, 1024, 1024, 128, torch.bfloat16)
    levels = random_levels(1, 2, 1024, 1024, 128, 128)
    out = pyramid_attention(q, k, v, levels, pooled=False, kernel="ws")
    # blocks meeting the diagonal are computed exactly whatever their level; the other pooled ones are skipped
    partial = (block_classes(1024, 1024, 128, 128, True) == PARTIAL).to(levels.device)
    binary = torch.where(levels > 1, partial.to(levels.dtype).expand_as(levels), levels)
    assert rel_err(out, pyramid_attention_ref(q, k, v, binary)) < TOL[q.dtype]
    assert rel_err(out, pyramid_attention(q, k, v, levels, pooled=False, kernel="triton")) < TOL[q.dtype] / 2


@hopper
def test_prebuilt_pyramid_and_plan_and_rows_seeing_nothing():
    torch.manual_seed(2)
    q, k, v = make_inputs(1, 2, 1, 640, 640, 128, torch.bfloat16)
    levels = random_levels(1, 1, 640, 640, 128, 128)
    levels[0, 0, 2] = 0  # a query block that skips everything: zeros, not NaN
    pyr = build_kv_pyramid(k, v, block_n=128)
    plan = compile_plan(levels, 640, 640, 128, 128, True)
    out = pyramid_attention(q, k, v, levels, pyramid=pyr, plan=plan, kernel="ws")
    assert out[:, :, 256:384].abs().max() == 0
    assert rel_err(out, pyramid_attention_ref(q, k, v, levels)) < TOL[q.dtype]


def kept_diagonal(levels, lq, lk, causal=True):
    """``levels`` with every block that needs token masks at level 1 (as every planner here keeps them)."""
    partial = (block_classes(lq, lk, 128, 128, causal) == PARTIAL).to(levels.device)
    return torch.where(partial, torch.ones_like(levels), levels)


@hopper
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("lq,lk", [(1024, 1024), (1000, 1000), (300, 1100)])
def test_tail_where_the_diagonal_is_kept(causal, lq, lk):
    torch.manual_seed(lq + 3 * lk + causal)
    q, k, v = make_inputs(1, 4, 2, lq, lk, 128, torch.bfloat16)
    levels = kept_diagonal(random_levels(1, 2, lq, lk, 128, 128, choices=(0, 0, 1, 4, 8)), lq, lk, causal)
    for diagonal_kept in (True, False):  # False: found from the levels
        out = pyramid_attention(q, k, v, levels, causal=causal, tail=True, diagonal_kept=diagonal_kept, kernel="ws")
        ref = pyramid_attention_ref(q, k, v, levels, causal=causal, tail=True)
        tri = pyramid_attention(q, k, v, levels, causal=causal, tail=True, diagonal_kept=True, kernel="triton")
        assert torch.isfinite(out).all()
        assert rel_err(out, ref) < TOL[q.dtype]
        assert rel_err(out, tri) < TOL[q.dtype] / 2
    pyr = build_kv_pyramid(k, v, tail=True, block_n=128)  # prebuilt: the sums' launch is the only one chained
    again = pyramid_attention(q, k, v, levels, causal=causal, tail=True, pyramid=pyr, diagonal_kept=True, kernel="ws")
    assert torch.equal(again, out)
    # the tail restores the skipped mass: closer to dense than the same plan without it
    dense = pyramid_attention_ref(q, k, v, torch.ones_like(levels), causal=causal)
    no_tail = pyramid_attention(q, k, v, levels, causal=causal, kernel="ws")
    assert rel_err(out, dense) < rel_err(no_tail, dense)


def lone_row_levels(lq, lk):
    """Random levels whose last query block (one row that sees every key: no block of it needs token masks) skips
    its first key block and keeps its last, so that its tile has a tail and no masked step."""
    levels = kept_diagonal(random_levels(1, 2, lq, lk, 128, 128, choices=(0, 0, 1, 4, 8)), lq, lk, True)
    levels[:, :, -1, 0] = 0
    levels[:, :, -1, -1] = 1
    return levels


@hopper
@pytest.mark.parametrize("lq,lk", [(129, 1024), (257, 512)])
def test_tail_on_a_last_query_block_of_one_row(lq, lk):
    torch.manual_seed(lq + lk)
    q, k, v = make_inputs(1, 4, 2, lq, lk, 128, torch.bfloat16)
    levels = lone_row_levels(lq, lk)
    assert not (block_classes(lq, lk, 128, 128, True)[-1] == PARTIAL).any()
    ref = pyramid_attention_ref(q, k, v, levels, causal=True, tail=True)
    tri = pyramid_attention(q, k, v, levels, tail=True, diagonal_kept=True, kernel="triton")
    out = pyramid_attention(q, k, v, levels, tail=True, diagonal_kept=True, kernel="ws")  # the tail step alone
    assert rel_err(out, ref) < TOL[q.dtype]
    assert rel_err(out, tri) < TOL[q.dtype] / 2


@hopper
@pytest.mark.parametrize("kind", ["sink and diagonal", "keep 0.1", "keep 0.6", "pooled", "per kv-head"])
@pytest.mark.parametrize("length", [4096, 3000])
def test_tail_over_many_tiles_per_program(kind, length):
    # 16 heads of 24-32 query blocks: each program takes several tiles, with and without a tail in turn (a chained
    # program meets the sums' launch at its first tile with a tail, later tiles find the means written), a ragged
    # last block, keys far from zero on average
    torch.manual_seed(length + len(kind))
    q, k, v = make_inputs(1, 16, 4, length, length, 128, torch.bfloat16)
    k = (k.float() + 3.0).to(torch.bfloat16)
    hm = 4 if kind == "per kv-head" else 16
    shape = plan_shape(1, hm, length, length, 128, 128)
    if kind == "sink and diagonal":
        levels = torch.zeros(shape, dtype=torch.int8)
        levels[..., 0] = 1
    elif kind == "pooled":
        levels = random_levels(1, hm, length, length, 128, 128, choices=(0, 0, 0, 1, 2, 4, 8))
    else:
        keep = 0.6 if kind == "keep 0.6" else 0.1
        levels = (torch.rand(shape) < keep).to(torch.int8)
    levels = kept_diagonal(levels, length, length)
    out = pyramid_attention(q, k, v, levels, tail=True, diagonal_kept=True, kernel="ws")
    ref = pyramid_attention_ref(q, k, v, levels, tail=True)
    tri = pyramid_attention(q, k, v, levels, tail=True, diagonal_kept=True, kernel="triton")
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < TOL[q.dtype]
    assert rel_err(out, tri) < TOL[q.dtype] / 2
    dense = pyramid_attention_ref(q, k, v, torch.ones_like(levels))
    no_tail = pyramid_attention(q, k, v, levels, kernel="ws")
    assert rel_err(out, dense) < rel_err(no_tail, dense)


@hopper
@pytest.mark.parametrize("kind", ["sink and diagonal", "keep 0.25"])
def test_binary_plan_with_tail_on_a_prebuilt_pyramid(kind):
    # exact blocks only, run as a binary plan with its tail over a pyramid built beforehand (the pooled levels too,
    # as a caller that builds one pyramid for every plan does): the path the benchmarks time, which builds the
    # pyramid outside the call, unlike the tests above
    torch.manual_seed(21 + len(kind))
    length = 2048
    q, k, v = make_inputs(1, 8, 2, length, length, 128, torch.bfloat16)
    shape = plan_shape(1, 8, length, length, 128, 128)
    if kind == "sink and diagonal":
        levels = torch.zeros(shape, dtype=torch.int8)
        levels[..., 0] = 1
    else:
        levels = (torch.rand(shape) < 0.25).to(torch.int8)
    levels = kept_diagonal(levels, length, length)
    plan = compile_plan(levels, length, length, 128, 128, True)
    ref = pyramid_attention_ref(q, k, v, levels, tail=True)
    inside = pyramid_attention(q, k, v, levels, tail=True, diagonal_kept=True, kernel="ws")
    for pooled_pyramid in (True, False):
        pyr = build_kv_pyramid(k, v, tail=True, block_n=128, pooled=pooled_pyramid)
        out = pyramid_attention(q, k, v, levels, tail=True, pyramid=pyr, plan=plan, check_levels=False,
                                diagonal_kept=True, pooled=False, kernel="ws")
        assert torch.isfinite(out).all()
        assert rel_err(out, ref) < TOL[q.dtype], f"pooled pyramid {pooled_pyramid}"
        assert torch.equal(out, inside)


@hopper
def test_tail_over_skipped_diagonal_blocks_goes_to_the_triton_kernel():
    torch.manual_seed(5)
    q, k, v = make_inputs(1, 2, 1, 512, 512, 128, torch.bfloat16)
    levels = random_levels(1, 1, 512, 512, 128, 128)
    levels[0, 0, 2, 2] = 0  # a skipped diagonal block
    with pytest.raises(ValueError, match="diagonal_kept"):
        pyramid_attention(q, k, v, levels, tail=True, kernel="ws")
    out = pyramid_attention(q, k, v, levels, tail=True)  # chosen: the Triton kernel
    assert rel_err(out, pyramid_attention_ref(q, k, v, levels, tail=True)) < TOL[q.dtype]


@hopper
def test_persistent_schedule_on_two_streams_and_in_a_graph():
    # programs draw query tiles from a counter per stream that each launch's last program sets back to zero: calls
    # back to back, on two streams at once and replayed from a CUDA graph give the outputs of a lone eager call
    from vlmsparse.kernels import pyramid_ws

    torch.manual_seed(11)
    shapes = [(1, 8, 2, 2048, 2048), (2, 4, 4, 1000, 1000)]
    calls = []
    for b, hq, hkv, lq, lk in shapes:
        q, k, v = make_inputs(b, hq, hkv, lq, lk, 128, torch.bfloat16)
        levels = random_levels(b, hkv, lq, lk, 128, 128)
        pyr, plan = build_kv_pyramid(k, v, block_n=128), compile_plan(levels, lq, lk, 128, 128, True)
        run = lambda q=q, k=k, v=v, levels=levels, pyr=pyr, plan=plan: pyramid_attention(
            q, k, v, levels, kernel="ws", pyramid=pyr, plan=plan, check_levels=False)
        calls.append((run, run(), pyramid_attention_ref(q, k, v, levels)))
    for run, out, ref in calls:
        assert rel_err(out, ref) < TOL[torch.bfloat16]
        assert torch.equal(run(), out)
    streams = [torch.cuda.Stream() for _ in calls]
    torch.cuda.synchronize()
    outs = [[] for _ in calls]
    for _ in range(3):
        for (run, _, _), stream, got in zip(calls, streams, outs):
            with torch.cuda.stream(stream):
                got.append(run())
    torch.cuda.synchronize()
    for (_, out, _), got in zip(calls, outs):
        assert all(torch.equal(g, out) for g in got)
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        calls[0][0]()  # the side stream's counter exists before the capture
        side.synchronize()
        with torch.cuda.graph(graph, stream=side):
            captured = calls[0][0]()
    for _ in range(3):
        captured.zero_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured, calls[0][1])
    assert all(int(c.abs().sum()) == 0 for c in pyramid_ws._COUNTERS.values())
