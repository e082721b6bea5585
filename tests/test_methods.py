"""Planners: layout rules, valid levels, monotone knobs, scoring against its definition, config handling."""

import math

import pytest
import torch

from vlmsparse.kernels.blocks import INVISIBLE, PARTIAL, VALID_LEVELS, block_classes, plan_shape
from vlmsparse.methods import available_methods, get_method, load_run_config
from vlmsparse.methods.psa import key_pooling_allowance
from vlmsparse.kernels.antidiagonal import antidiagonal_block_scores
from vlmsparse.methods.scoring import block_self_similarity
from vlmsparse.kernels.select_levels import cumulative_levels

SPARSE = ["psa", "xattention", "sparge"]


def _small(name, **kw):
    """Small blocks so that tiny inputs have a real block grid."""
    base = {"block_m": 32, "block_n": 32}
    if name in ("psa", "xattention"):
        base["stride"] = 4
    if name == "sparge":
        base["block_n"] = 16
    base.update(kw)
    return get_method(name, **base)


def _layout_inputs(b=2, hq=4, hkv=2, lq=200, lk=240, d=32, prefix=40, suffix=25):
    q = torch.randn(b, hq, lq, d)
    k = torch.randn(b, hkv, lk, d)
    visual = torch.ones(b, lk, dtype=torch.bool)
    visual[:, :prefix] = False
    visual[:, lk - suffix :] = False
    if b > 1:
        visual[1, 100:103] = False  # text tokens in the middle of the second sample
    return q, k, visual


def _check_layout(plan, visual, lq, lk):
    lv = plan.levels.long()
    b = lv.shape[0]
    bm, bn = plan.block_m, plan.block_n
    cls = block_classes(lq, lk, bm, bn, plan.causal)
    for i in range(b):  # a test may loop; planners may not
        qtext = ~visual[i, lk - lq :]
        ktext = ~visual[i]
        for qb in range(cls.shape[0]):
            row_text = bool(qtext[qb * bm : (qb + 1) * bm].any())
            for kb in range(cls.shape[1]):
                cell = lv[i, :, qb, kb]
                if cls[qb, kb] == INVISIBLE:
                    assert (cell == 0).all()
                    continue
                col_text = bool(ktext[kb * bn : (kb + 1) * bn].any())
                if row_text or col_text or kb == 0 or cls[qb, kb] == PARTIAL:
                    assert (cell == 1).all(), (i, qb, kb, cell)


@pytest.mark.parametrize("name", ["dense"] + SPARSE)
@pytest.mark.parametrize("plan_heads", ["q", "kv"])
def test_layout_rules_and_valid_levels(name, plan_heads):
    q, k, visual = _layout_inputs()
    method = _small(name, plan_heads=plan_heads)
    plan = method.plan(q, k, visual)
    heads = q.shape[1] if plan_heads == "q" else k.shape[1]
    assert tuple(plan.levels.shape) == plan_shape(2, heads, 200, 240, plan.block_m, plan.block_n)
    assert plan.levels.dtype == torch.int8
    assert torch.isin(plan.levels, torch.tensor(VALID_LEVELS, dtype=torch.int8)).all()
    _check_layout(plan, visual, 200, 240)  # diagonal blocks at level 1: what the plan's promise below rests on
    assert plan.diagonal_kept
    if name in ("xattention", "sparge", "dense"):
        assert set(plan.levels.unique().tolist()) <= {0, 1}
        assert not plan.pooled  # binary planners promise the kernel a plan without pooled blocks
    else:
        assert plan.pooled


@pytest.mark.parametrize("thresholds", [(0.5, 0.5, 0.5, 0.5), (0.9, 0.9, 0.9, 0.9), (0.0, 0.0, 0.0, 0.0)])
@pytest.mark.parametrize("mode", ["energy", "quota"])
def test_psa_with_equal_thresholds_plans_no_pooled_block_and_says_so(thresholds, mode):
    q, k, _ = _local_inputs(lq=512, d=32, sharp=1.0)
    plan = _small("psa", thresholds=thresholds, mode=mode, tail=True).plan(q, k)
    assert not plan.pooled
    assert set(plan.levels.unique().tolist()) <= {0, 1}
    assert _small("psa", thresholds=(0.5, 0.5, 0.5, 0.6), mode=mode).plan(q, k).pooled


def test_psa_uses_pooled_levels_and_tail_flag():
    q, k, _ = _local_inputs(lq=512, d=32, sharp=1.0)
    plan = _small("psa", thresholds=(0.3, 0.5, 0.7, 0.9), tail=True).plan(q, k)
    assert plan.tail and plan.kernel_kwargs()["tail"] is True
    used = set(plan.levels.unique().tolist())
    assert {2, 4, 8} & used, used


@pytest.mark.parametrize("name, config, skips", [
    ("psa", {}, False),  # the default: last threshold 1, every visible block at least level 8
    ("psa", {"thresholds": (0.6, 0.6, 0.6, 1.0), "mode": "quota"}, False),
    ("psa", {"thresholds": (0.3, 0.5, 0.7, 0.9)}, True),
    ("psa", {"lone_pooled": "skip"}, True),
    ("xattention", {"threshold": 1.0}, False),
    ("xattention", {"threshold": 0.9}, True),
    ("dense", {}, False),
    ("sparge", {}, True),
])
def test_plans_that_skip_nothing_run_without_tail(name, config, skips):
    # a planner that never skips a visible block says so; its plans then run without tail aggregation (it would
    # add nothing), and a planner that may skip keeps the tail it was asked for
    torch.manual_seed(0)
    q, k, _ = _local_inputs(lq=512, d=32, sharp=1.0)
    method = _small(name, tail=True, **config)
    plan = method.plan(q, k)
    assert method.plans_skip() is skips and plan.skips is skips
    assert plan.tail and plan.kernel_kwargs()["tail"] is skips
    classes = block_classes(512, 512, plan.block_m, plan.block_n, True, q.device)
    skipped = ((plan.levels == 0) & (classes != INVISIBLE)).sum().item()
    if not skips:
        assert skipped == 0
    elif name == "psa" and "thresholds" in config:
        assert skipped > 0  # the test's inputs do make a planner that may skip skip something


def _local_inputs(b=1, hq=2, hkv=1, lq=1024, d=32, block=32, sharp=3.0):
    """Tokens alike within their block of 32 and unrelated across blocks: attention stays in the block."""
    n_blocks = lq // block
    dirs = torch.nn.functional.normalize(torch.randn(b, hkv, n_blocks, d), dim=-1) * math.sqrt(d) * sharp
    base = dirs.repeat_interleave(block, dim=2)
    k = base + 0.1 * torch.randn(b, hkv, lq, d)
    q = base.repeat_interleave(hq // hkv, dim=1) + 0.1 * torch.randn(b, hq, lq, d)
    return q, k, None


@pytest.mark.parametrize("name", SPARSE)
def test_all_visual_strongly_local_input_gives_high_sparsity(name):
    q, k, _ = _local_inputs()
    plan = _small(name, block_n=32).plan(q, k)
    s = plan.sparsity()
    # 32 x 32 causal block grid: 528 blocks, of which the diagonal (32) and first column (31) are forced. PSA's
    # default skips nothing (every other block at least level 8): at most 1 - (63 + 465 / 8) / 528 = 0.771
    assert s.overall > (0.76 if name == "psa" else 0.8), s.overall
    assert s.visual == pytest.approx(s.overall)


def test_all_text_input_is_dense():
    q, k, _ = _layout_inputs(b=1)
    visual = torch.zeros(1, 240, dtype=torch.bool)
    for name in SPARSE:
        assert _small(name).plan(q, k, visual).sparsity().overall == 0.0


@pytest.mark.parametrize(
    "name,field,values",
    [
        ("xattention", "threshold", [0.3, 0.6, 0.8, 0.9, 0.97, 1.0]),
        ("sparge", "cdf_threshold", [0.3, 0.6, 0.8, 0.9, 0.98, 1.0]),
        ("psa", "thresholds", [(0.2 * s, 0.4 * s, 0.6 * s, 0.8 * s) for s in (0.5, 0.8, 1.0, 1.1, 1.25)]),
        ("psa", "thresholds", [(0.5, 0.6, 0.7, 0.8), (0.5, 0.7, 0.7, 0.8), (0.5, 0.7, 0.8, 0.95)]),
    ],
)
def test_raising_keep_threshold_never_raises_sparsity(name, field, values):
    from vlmsparse.bench.synthetic import video_qkv

    q, k, _, visual = video_qkv(4, 8, 8, 16, 16, heads_q=4, heads_kv=2, head_dim=32, seed=3)
    prev_levels, prev = None, None
    # Algorithm 2's levels are monotone by construction; the lone steps (a lone block made exact) are not
    extra = {"lone_level2_exact": False, "lone_pooled": "keep"} if name == "psa" else {}
    for value in values:
        plan = _small(name, **{field: value}, **extra).plan(q, k, visual)
        s = plan.sparsity().overall
        if prev is not None:
            assert s <= prev + 1e-12, (value, s, prev)
            cost = torch.where(plan.levels > 0, 1.0 / plan.levels.clamp(min=1).float(), 0.0)
            prev_cost = torch.where(prev_levels > 0, 1.0 / prev_levels.clamp(min=1).float(), 0.0)
            assert (cost >= prev_cost).all()  # block by block, too
        prev, prev_levels = s, plan.levels


def test_cumulative_levels_algorithm_2_by_hand():
    # one row, 6 visible blocks; block 5 forced (diagonal); free importance below
    imp = torch.tensor([[[[0.05, 0.30, 0.10, 0.05, 0.20, 0.30]]]])
    forced = torch.tensor([False, False, False, False, False, True])
    free = ~forced
    lv = cumulative_levels(imp, forced, free, (0.5, 0.7, 0.8, 0.9))
    # order: forced (0.30) then 0.30 (b1), 0.20 (b4), 0.10 (b2), 0.05 (b0), 0.05 (b3)
    # share before: b1 0.30 -> 1; b4 0.60 -> 2; b2 0.80 -> 8; b0/b3 0.90 / 0.95 -> 0
    assert lv[0, 0, 0].tolist() == [0, 1, 8, 0, 2, 0]
    incl = cumulative_levels(imp, forced, free, (0.8,), levels=(1,), rule="inclusive")
    assert incl[0, 0, 0].tolist() == [0, 1, 0, 0, 1, 0]  # CDF with b2 would be 0.9 > 0.8
    quota = cumulative_levels(imp, forced, free, (0.5, 0.5, 0.5, 0.75), mode="quota")
    # ranks 1..5 of 6 for b1, b4, b2, b0, b3 -> shares before 1/6, 2/6, 3/6, 4/6, 5/6
    assert quota[0, 0, 0].tolist() == [8, 1, 8, 0, 1, 0]


def _naive_antidiagonal(q, k, stride, bm, bn):
    """Token-level definition: antidiagonal sums of every stride x stride tile, softmax per tile row, block sums."""
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    kr = k.repeat_interleave(hq // hkv, 1)
    lqp, lkp = -(-lq // bm) * bm, -(-lk // bn) * bn
    qp = torch.nn.functional.pad(q, (0, 0, 0, lqp - lq))
    kp = torch.nn.functional.pad(kr, (0, 0, 0, lkp - lk))
    full = qp @ kp.transpose(-1, -2)  # [B, H, Lqp, Lkp]
    na, nc = lqp // stride, lkp // stride
    tiles = full.reshape(b, hq, na, stride, nc, stride)
    anti = sum(tiles[:, :, :, stride - 1 - i, :, i] for i in range(stride)) / math.sqrt(d) / stride
    a = torch.arange(na)[:, None]
    c = torch.arange(nc)[None, :]
    keep = (c * stride < lk) & (c * stride <= a * stride + stride - 1 + lk - lq)
    p = torch.softmax(anti.masked_fill(~keep, float("-inf")), -1)
    p = p * (a * stride < lq).float()
    return p.reshape(b, hq, lqp // bm, bm // stride, lkp // bn, bn // stride).sum((3, 5))


@pytest.mark.parametrize("lq,lk,max_elements", [(96, 96, 1 << 26), (70, 130, 1 << 26), (128, 160, 64)])
def test_antidiagonal_scores_match_definition(lq, lk, max_elements):
    q = torch.randn(1, 4, lq, 16)
    k = torch.randn(1, 2, lk, 16)
    got = antidiagonal_block_scores(q, k, stride=4, block_m=32, block_n=16, max_elements=max_elements)
    want = _naive_antidiagonal(q, k, 4, 32, 16)
    assert torch.allclose(got, want.float(), atol=1e-5)


def test_block_self_similarity_is_mean_pairwise_cosine():
    x = torch.randn(1, 1, 40, 8)
    got = block_self_similarity(x, 16)
    for j, (s, e) in enumerate([(0, 16), (16, 32), (32, 40)]):
        u = torch.nn.functional.normalize(x[0, 0, s:e], dim=-1)
        assert got[0, 0, j].item() == pytest.approx((u @ u.T).mean().item(), abs=1e-5)


def test_psa_similarity_guard_caps_pooling():
    q, k, visual = _layout_inputs(b=1, hq=2, hkv=1, lq=256, lk=256, prefix=8, suffix=8)
    k[..., 64:96, :] = k[..., 64:65, :] + 0.01 * torch.randn(1, 1, 32, 32)  # one block of alike keys
    method = _small("psa", thresholds=(0.1, 0.2, 0.3, 1.0), sim_guard=True)
    plan = method.plan(q, k, visual)
    allowed = key_pooling_allowance(k, 32, method.config.sim_thresholds)
    assert allowed[0, 0, 2] == 8 and (allowed[0, 0, :2] == 1).all()
    lv = plan.levels[0]
    pooled = lv > 1
    assert (lv[pooled] <= allowed[0, 0][None, None, :].expand_as(lv)[pooled]).all()
    unguarded = _small("psa", thresholds=(0.1, 0.2, 0.3, 1.0)).plan(q, k, visual)
    assert plan.sparsity().overall <= unguarded.sparsity().overall


def test_sparge_keeps_dissimilar_key_blocks_in_every_row():
    q, k, _ = _local_inputs(lq=512)
    k[:, :, 256:272] = torch.randn(1, 1, 16, 32) * 5  # a key block of unrelated keys
    plan = _small("sparge", block_n=16).plan(q, k)
    col = 256 // 16
    lv = plan.levels[0, :, :, col]
    cls = block_classes(512, 512, 32, 16)[:, col]
    assert (lv[:, cls != INVISIBLE] == 1).all()


def test_unknown_method_field_and_preset_list_what_exists():
    with pytest.raises(ValueError, match="available methods.*dense.*psa.*sparge.*xattention"):
        get_method("flash")
    with pytest.raises(ValueError, match="its fields are.*threshold.*stride"):
        get_method("xattention", tau=0.9)
    with pytest.raises(ValueError, match="available.*videomme-0.65"):
        get_method("psa", preset="nope")
    with pytest.raises(ValueError, match="thresholds"):
        get_method("psa", thresholds=(0.9, 0.8, 0.9, 0.9))
    with pytest.raises(ValueError, match="stride"):
        get_method("xattention", stride=48)
    with pytest.raises(ValueError, match="block_m"):
        get_method("dense", block_m=100)
    assert available_methods() == ["dense", "psa", "sparge", "xattention"]


def test_defaults_and_presets():
    psa = get_method("psa").config
    assert psa.thresholds == (0.55, 0.55, 0.55, 1.0) and psa.stride == 16 and psa.mode == "energy"
    assert psa.lone_pooled == "exact" and psa == get_method("psa", preset="exact-l8").config
    # the defaults until they changed, and the public code's levels, stay reachable by name, with their lone blocks
    former = get_method("psa", preset="levels-4-8").config
    assert former.thresholds == (0.6, 0.6, 0.8, 0.93) and former.stride == 16 and former.lone_pooled == "keep"
    old = get_method("psa", preset="public-thresholds").config
    assert old.thresholds == (0.7, 0.8, 0.9, 0.9) and old.stride == 8 and old.lone_level2_exact
    assert old.lone_pooled == "keep"
    public = get_method("psa", preset="public-qwen2.5-vl").config
    assert public.thresholds == (0.7, 0.8, 0.9, 0.9) and public.stride == 8 and not public.lone_level2_exact
    assert public.lone_pooled == "keep" and get_method("psa", preset="videomme-0.65").config.lone_pooled == "keep"
    x = get_method("xattention").config
    assert (x.threshold, x.stride, x.block_m, x.block_n) == (0.9, 16, 128, 128)
    sp = get_method("sparge").config
    assert (sp.sim_threshold, sp.cdf_threshold, sp.block_m, sp.block_n) == (0.6, 0.98, 128, 64)
    vm = get_method("psa", preset="videomme-0.65", tail=True).config
    assert vm.mode == "quota" and vm.tail and vm.stride == 8


def test_run_config_files_load(tmp_path):
    path = tmp_path / "psa-paper.toml"
    path.write_text(
        'name = "psa-paper"\ndescription = "d"\nmethod = "psa"\n'
        "[method_config]\nthresholds = [0.6, 0.7, 0.8, 0.9]\nstride = 16\n[run]\nframes = 64\n"
    )
    run = load_run_config(path)
    assert (run.name, run.method, run.run, run.description) == ("psa-paper", "psa", {"frames": 64}, "d")
    m = get_method("psa", config_file=path, stride=8)  # keywords beat the file
    assert m.config.thresholds == (0.6, 0.7, 0.8, 0.9) and m.config.stride == 8
    preset_file = tmp_path / "p.toml"
    preset_file.write_text('method = "psa"\n[method_config]\npreset = "videomme-0.65"\ntail = true\n')
    assert get_method("psa", config_file=preset_file).config.mode == "quota"
    with pytest.raises(ValueError, match="for method 'psa', not 'sparge'"):
        get_method("sparge", config_file=path)
    bad = tmp_path / "bad.toml"
    bad.write_text('method = "xattention"\n[method_config]\ntau = 0.9\n')
    with pytest.raises(ValueError, match="unknown config field"):
        load_run_config(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_run_config(tmp_path / "missing.toml")


@pytest.mark.parametrize("tail", [False, True])
def test_psa_plan_runs_through_the_kernel(tail):
    from vlmsparse.kernels import pyramid_attention
    from vlmsparse.kernels.reference import pyramid_attention_ref

    q, k, visual = _layout_inputs(b=1, hq=4, hkv=2, lq=128, lk=160, d=16, prefix=16, suffix=8)
    k[..., 64:96, :] = k[..., 64:65, :] + 0.05 * torch.randn(1, 2, 32, 16)
    v = torch.randn_like(k)
    plan = get_method("psa", block_m=16, block_n=32, stride=4, thresholds=(0.3, 0.5, 0.7, 0.85), tail=tail).plan(
        q, k, visual
    )
    assert {0, 2, 4, 8} & set(plan.levels.unique().tolist())
    out = pyramid_attention(q, k, v, plan.levels, **plan.kernel_kwargs())
    ref = pyramid_attention_ref(q, k, v, plan.levels, **plan.kernel_kwargs())
    assert torch.allclose(out.float(), ref.float(), atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize(
    "lq,lk,bm,bn,stride,causal",
    [
        (200, 260, 64, 32, 8, True),  # partial last blocks, Lq < Lk
        (100, 100, 32, 32, 4, False),
        (130, 300, 32, 64, 4, True),
        (300, 120, 32, 32, 4, True),  # Lq > Lk: the first query blocks see nothing
        (96, 160, 32, 32, 8, False),
    ],
)
def test_triton_antidiagonal_kernel_matches_torch(lq, lk, bm, bn, stride, causal):
    from vlmsparse.kernels.antidiagonal import antidiagonal_block_scores_triton

    q = torch.randn(2, 4, lq, 32)
    k = torch.randn(2, 2, lk, 32)
    want = antidiagonal_block_scores(q, k, stride=stride, block_m=bm, block_n=bn, causal=causal, use_triton=False)
    got = antidiagonal_block_scores_triton(q, k, stride=stride, block_m=bm, block_n=bn, causal=causal)
    assert not got.isnan().any()
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "lq,lk,causal,knobs",
    [
        (96, 96, True, dict(block_r=4, block_c=4, block_k=16)),  # whole tiles: the unmasked loads
        (70, 100, True, dict(block_r=8, block_c=16, block_k=32, num_warps=4, num_stages=2)),  # 48 = 32 + 16 dims
        (96, 64, False, dict(block_r=8, block_c=8, block_k=64)),
    ],
)
def test_split_antidiagonal_tiles_match_torch(lq, lk, causal, knobs, seed):
    """Small tiles (several tiles per row, several row blocks), a head dim that is not a
    multiple of the reduction chunk, 3 query heads per key head, q in the model's [B, L, H, D] layout."""
    from vlmsparse.kernels.antidiagonal import antidiagonal_block_scores_triton

    torch.manual_seed(seed)
    q = torch.randn(1, lq, 6, 48).transpose(1, 2)
    k = torch.randn(1, 2, lk, 48)
    want = antidiagonal_block_scores(q, k, stride=8, block_m=32, block_n=32, causal=causal, use_triton=False)
    got = antidiagonal_block_scores_triton(q, k, stride=8, block_m=32, block_n=32, causal=causal, **knobs)
    assert torch.allclose(got, want, atol=1e-5)


def test_layout_is_reused_for_the_same_unmodified_visual():
    q, k, visual = _layout_inputs(b=1)
    method = _small("psa")
    first = method.plan(q, k, visual)
    layout = method._layout_memo[2]
    method.plan(q, k, visual)
    assert method._layout_memo[2] is layout
    visual[0, 120:130] = False  # in place: a new layout
    second = method.plan(q, k, visual)
    assert method._layout_memo[2] is not layout
    _check_layout(second, visual, 200, 240)
    assert not torch.equal(first.levels, second.levels)


def test_plan_is_compiled_once_and_runs_the_kernel():
    """The planner hands over the kernel's lists with the plan; running it gives the kernel's own output."""
    import os

    from vlmsparse.kernels import pyramid_attention
    from vlmsparse.kernels.plan_lists import compile_plan_torch
    from vlmsparse.methods import get_method

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the compiled lists are made where the Triton kernel runs")
    q = torch.randn(1, 4, 96, 32)
    k = torch.randn(1, 2, 96, 32)
    v = torch.randn(1, 2, 96, 32)
    plan = get_method("psa", block_m=32, block_n=32, stride=4).plan(q, k, None)
    assert plan.compiled is not None
    want = compile_plan_torch(plan.levels, 96, 96, 32, 32, True)
    assert torch.equal(plan.compiled.cat_offsets, want.cat_offsets)
    out = plan.run(q, k, v)
    ref = pyramid_attention(q, k, v, plan.levels, block_m=32, block_n=32)
    assert torch.equal(out, ref)
    other = get_method("psa", block_m=32, block_n=32, stride=4).plan(q[:, :, :64], k[:, :, :64], None)
    with pytest.raises(ValueError, match="compiled from other levels"):
        pyramid_attention(q, k, v, plan.levels, block_m=32, block_n=32, plan=other.compiled)


def test_lone_level2_blocks_are_kept_exact():
    from vlmsparse.methods.psa import lone_level2_exact

    row = torch.tensor([[2, 0, 2, 2, 1, 2, 4, 2, 2, 2, 0, 2]], dtype=torch.int8)
    assert lone_level2_exact(row).tolist() == [[1, 0, 2, 2, 1, 1, 4, 2, 2, 2, 0, 1]]

    torch.manual_seed(3)
    q, k, visual = _layout_inputs(b=1, hq=4, hkv=2, lq=512, lk=512, prefix=8, suffix=8)
    raw = _small("psa", thresholds=(0.3, 0.6, 0.8, 0.95), lone_level2_exact=False).plan(q, k, visual).levels
    new = _small("psa", thresholds=(0.3, 0.6, 0.8, 0.95)).plan(q, k, visual).levels  # the default
    two = raw == 2
    lone = two & ~(torch.nn.functional.pad(two[..., :-1], (1, 0)) | torch.nn.functional.pad(two[..., 1:], (0, 1)))
    assert lone.any()  # the input has lone level-2 blocks to change
    assert torch.equal(new, torch.where(lone, torch.ones_like(raw), raw))  # they, and only they, became exact
    with pytest.raises(ValueError, match="lone_level2_exact must be true or false"):
        _small("psa", lone_level2_exact="yes")


def test_lone_level4_and_level8_blocks_exact_or_skipped():
    from vlmsparse.methods.psa import lone_pooled_blocks

    row = torch.tensor([[4, 0, 4, 4, 8, 1, 8, 8, 2, 8, 4, 2]], dtype=torch.int8)
    assert lone_pooled_blocks(row, 0).tolist() == [[0, 0, 4, 4, 0, 1, 8, 8, 2, 0, 0, 2]]
    assert lone_pooled_blocks(row, 1).tolist() == [[1, 0, 4, 4, 1, 1, 8, 8, 2, 1, 1, 2]]

    torch.manual_seed(3)
    q, k, visual = _layout_inputs(b=1, hq=4, hkv=2, lq=512, lk=512, prefix=8, suffix=8)
    th = (0.3, 0.3, 0.6, 0.9)
    keep = _small("psa", thresholds=th, lone_pooled="keep").plan(q, k, visual)
    skip = _small("psa", thresholds=th, lone_pooled="skip").plan(q, k, visual)
    exact = _small("psa", thresholds=th, lone_pooled="exact").plan(q, k, visual)
    changed = skip.levels != keep.levels
    assert changed.any() and (keep.levels[changed] >= 4).all() and (skip.levels[changed] == 0).all()
    assert torch.equal(changed, exact.levels != keep.levels) and (exact.levels[changed] == 1).all()
    assert skip.sparsity().overall > keep.sparsity().overall > exact.sparsity().overall
    with pytest.raises(ValueError, match="lone_pooled must be one of"):
        _small("psa", lone_pooled="drop")


def test_exact_l8_preset_sees_every_key_and_keeps_no_lone_level8_block():
    # the default (and preset exact-l8): exact blocks to 55% of the mass, every other visible block at level 8,
    # lone level-8 blocks exact
    cfg = get_method("psa", preset="exact-l8").config
    assert cfg.thresholds == (0.55, 0.55, 0.55, 1.0) and cfg.lone_pooled == "exact" and cfg.stride == 16
    torch.manual_seed(5)
    q, k, visual = _layout_inputs(b=1, hq=4, hkv=2, lq=768, lk=768, prefix=8, suffix=8)
    plan = _small("psa").plan(q, k, visual)
    keep = _small("psa", thresholds=(0.55, 0.55, 0.55, 1.0), lone_pooled="keep").plan(q, k, visual)  # no lone step
    n = plan.levels.shape[-1]
    visible = torch.arange(n)[None, :] <= torch.arange(n)[:, None]
    lv, lk_ = plan.levels[..., visible], keep.levels[..., visible]
    assert (lv > 0).all() and set(lv.unique().tolist()) == {1, 8}  # nothing visible skipped; levels 1 and 8 only
    changed = plan.levels != keep.levels
    assert changed.any() and (keep.levels[changed] == 8).all() and (plan.levels[changed] == 1).all()
    from vlmsparse.methods.selection import no_same_level_neighbour

    assert not ((plan.levels == 8) & no_same_level_neighbour(plan.levels)).any()
    assert 0 < plan.sparsity().overall < keep.sparsity().overall and (lk_ > 0).all()
