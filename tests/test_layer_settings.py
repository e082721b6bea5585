"""Per-layer and per-head settings: run config parsing, planners per distinct setting, head-split plans, the patch
routing each decoder layer to its planner, the harness and lmms-eval arguments taking such a config."""

from __future__ import annotations

import pytest
import torch

import vlmsparse
from vlmsparse.methods import get_method, get_planners, load_run_config
from vlmsparse.kernels.plan_lists import compile_plan
from vlmsparse.kernels.reference import pyramid_attention_ref
from vlmsparse.methods.layers import HeadSplitPlanner
from vlmsparse.testing import synthetic_video, tiny_qwen2_5_vl, video_chat_inputs

SMALL = 'block_m = 16\nblock_n = 16\nstride = 4\n'


def _write(tmp_path, text, name="layers.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _layered(tmp_path, num_layers=2, extra=""):
    return _write(tmp_path, (
        f'name = "per-layer"\nmethod = "psa"\nnum_layers = {num_layers}\n[method_config]\n{SMALL}'
        '[[layer_overrides]]\nlayers = [0]\nthresholds = [1.0, 1.0, 1.0, 1.0]\n'
        '[[layer_overrides]]\nlayers = [1]\nthresholds = [0.2, 0.3, 0.4, 0.4]\n' + extra
    ))


def test_run_config_reads_layer_overrides(tmp_path):
    run = load_run_config(_layered(tmp_path, extra='[[layer_overrides]]\nlayers = [1]\nheads = [0, 2]\nthresholds = [0.5, 0.6, 0.7, 0.7]\n'))
    assert run.num_layers == 2 and [o.layers for o in run.layer_overrides] == [(0,), (1,), (1,)]
    assert run.layer_overrides[2].heads == (0, 2)
    planners = get_planners("psa", config_file=_layered(tmp_path))
    assert planners.for_layer(0).config.thresholds == (1.0, 1.0, 1.0, 1.0)
    assert planners.for_layer(1).config.thresholds == (0.2, 0.3, 0.4, 0.4)
    assert planners.for_layer(1).config.block_m == 16  # [method_config] under every layer
    assert planners.for_layer(5) is planners.default  # a layer without its own setting
    # keywords win over every layer; equal settings share one planner
    same = get_planners("psa", config_file=_layered(tmp_path), thresholds=[0.7, 0.8, 0.9, 0.9])
    assert len(same.distinct()) == 1 and same.for_layer(1).config.thresholds == (0.7, 0.8, 0.9, 0.9)


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[layer_overrides]]\nlayers = [0]\nstride = 4\n', "need num_layers"),
        ('num_layers = 2\n[[layer_overrides]]\nlayers = [2]\nstride = 4\n', "out of range"),
        ('num_layers = 2\n[[layer_overrides]]\nlayers = [0]\nstride = 4\n[[layer_overrides]]\nlayers = [0]\nstride = 8\n',
         "already set"),
        ('num_layers = 2\n[[layer_overrides]]\nlayers = [0]\nheads = [1]\nblock_m = 64\n', "cannot set"),
        ('num_layers = 2\n[[layer_overrides]]\nlayers = [0]\ntreshold = 1\n', "unknown config field"),
        ('num_layers = 2\n[[layer_overrides]]\nlayers = [0]\npreset = "videomme-0.65"\n', "cannot name a preset"),
        ('num_layers = 2\n[[layer_overrides]]\nthresholds = [1, 1, 1, 1]\n', "must name its layers"),
    ],
)
def test_bad_layer_overrides_are_one_line_errors(tmp_path, text, message):
    path = _write(tmp_path, 'method = "psa"\n' + text)
    with pytest.raises(ValueError, match=message):
        load_run_config(path)


def test_head_split_plan_skips_where_a_part_may():
    # the joined plan runs its tail only where some head's planner may skip a visible block
    q, k = torch.randn(1, 4, 96, 16), torch.randn(1, 2, 96, 16)
    base = dict(block_m=16, block_n=16, stride=4, tail=True)
    keeps_all = get_method("psa", **base)  # last threshold 1
    may_skip = get_method("psa", thresholds=[0.3, 0.4, 0.5, 0.6], **base)
    exact = get_method("psa", thresholds=[1.0, 1.0, 1.0, 1.0], **base)
    assert not HeadSplitPlanner(keeps_all, [((1,), exact)]).plan(q, k).runs_tail
    assert HeadSplitPlanner(keeps_all, [((1,), may_skip)]).plan(q, k).runs_tail
    assert HeadSplitPlanner(may_skip, [((1,), keeps_all)]).plan(q, k).runs_tail


@pytest.mark.parametrize("plan_heads", ["q", "kv"])
def test_head_split_plan_equals_each_planners_own_heads(plan_heads):
    q, k = torch.randn(1, 6, 160, 16), torch.randn(1, 2, 160, 16)
    visual = torch.ones(1, 160, dtype=torch.bool)
    visual[:, :20] = False
    base = dict(block_m=16, block_n=16, stride=4, plan_heads=plan_heads)
    dense_ish = get_method("psa", thresholds=[1.0, 1.0, 1.0, 1.0], **base)
    sparse = get_method("psa", thresholds=[0.3, 0.4, 0.5, 0.5], **base)
    tail_free = get_method("psa", thresholds=[0.6, 0.7, 0.8, 0.8], **base)
    heads = (0, 4) if plan_heads == "q" else (1,)
    split = HeadSplitPlanner(sparse, [(heads, dense_ish), ((2,), tail_free)] if plan_heads == "q" else [(heads, dense_ish)])
    plan = split.plan(q, k, visual)
    whole = {name: m.plan(q, k, visual).levels for name, m in (("d", dense_ish), ("s", sparse), ("t", tail_free))}
    hm = plan.levels.shape[1]
    for h in range(hm):
        owner = "d" if h in heads else ("t" if plan_heads == "q" and h == 2 else "s")
        assert torch.equal(plan.levels[:, h], whole[owner][:, h]), h
    assert plan.sparsity().cost.shape == (1, hm)
    # the kernel's lists are those of the joined levels (each part's own lists cover only its heads)
    assert plan.compiled is not None and plan.compiled.plan_heads == hm
    want = compile_plan(plan.levels, plan.q_len, plan.k_len, plan.block_m, plan.block_n, plan.causal)
    assert torch.equal(plan.compiled.cat_offsets, want.cat_offsets)
    v = torch.randn_like(k)
    out = plan.run(q, k, v)
    ref = pyramid_attention_ref(q, k, v, plan.levels, block_m=16, block_n=16)
    assert (out.double() - ref).abs().max().item() < 1e-4


@pytest.fixture(scope="module")
def tiny():
    model, processor = tiny_qwen2_5_vl(seed=0)
    inputs = video_chat_inputs(processor, synthetic_video(8, 112, 112, seed=0), "What happens in this video?")
    return model, inputs


def test_patch_gives_each_layer_its_setting(tiny, tmp_path, reference_kernel):
    model, inputs = tiny
    with torch.no_grad(), vlmsparse.patch(model, config_file=_layered(tmp_path), method="psa") as handle:
        model(**inputs)
        layered = handle.stats.per_layer()
        assert handle.planners.per_layer and handle.planners.for_layer(1) is not handle.planners.for_layer(0)
    with torch.no_grad(), vlmsparse.patch(model, "psa", block_m=16, block_n=16, stride=4,
                                          thresholds=[0.2, 0.3, 0.4, 0.4]) as handle:
        model(**inputs)
        uniform = handle.stats.per_layer()
    assert layered[0] == 0.0  # thresholds 1: every block kept
    assert layered[1] > 0.05
    assert uniform[0] > 0.05  # the same setting on layer 0 is sparse: layer 0's was its own


def test_config_for_another_layer_count_fails_at_patch_time(tiny, tmp_path):
    model, _ = tiny
    path = _layered(tmp_path, num_layers=3)
    with pytest.raises(ValueError, match="for a model with 3 decoder layers, but this model has 2"):
        vlmsparse.patch(model, "psa", config_file=path)
    assert model.config.text_config._attn_implementation == "sdpa"  # nothing was patched


def test_observer_sees_every_layer_and_changes_nothing(tiny):
    model, inputs = tiny
    with torch.no_grad():
        before = model(**inputs).logits
    seen = []
    handle = vlmsparse.model.observe(model, lambda att: seen.append((att.layer, tuple(att.q.shape), int(att.visual.sum()))))
    try:
        with torch.no_grad():
            after = model(**inputs).logits
    finally:
        handle.unpatch()
    assert torch.equal(before, after)
    n_visual = int(torch.isin(inputs["input_ids"], torch.tensor([model.config.video_token_id])).sum())
    assert [s[0] for s in seen] == [0, 1]
    assert all(s[1] == (1, 4, inputs["input_ids"].shape[1], 16) and s[2] == n_visual for s in seen)
    assert model.config.text_config._attn_implementation == "sdpa"


def test_harness_setting_and_lmms_arguments_carry_the_layers(tmp_path):
    from vlmsparse.eval.settings import resolve_settings, run_identity, frame_spec
    from vlmsparse.integrations.lmms_eval_args import split_model_args

    path = _layered(tmp_path)
    setting = resolve_settings(None, [str(path)])[0]
    assert "per-layer settings for 2 of 2 layers" in setting.config_summary()
    planners = setting.build_planners()
    assert planners.for_layer(1).config.thresholds == (0.2, 0.3, 0.4, 0.4) and planners.num_layers == 2
    plain = resolve_settings(None, [str(_write(tmp_path, f'name = "per-layer"\nmethod = "psa"\n[method_config]\n{SMALL}', "p.toml"))])[0]
    ids = {run_identity(bench="videomme", model="m", setting=s, spec=frame_spec({}), dtype="bfloat16", max_new_tokens=16)[0]
           for s in (setting, plain)}
    assert len(ids) == 2  # another per-layer setting is another run
    _, sparse = split_model_args({"pretrained": "/m", "config_file": str(path)}, ["pretrained"])
    assert sparse.planners().for_layer(0).config.thresholds == (1.0, 1.0, 1.0, 1.0)
    assert sparse.setting.num_layers == 2
    # a keyword field applies to every layer, over the file's per-layer values
    _, sparse = split_model_args({"pretrained": "/m", "config_file": str(path), "thresholds": [0.5, 0.6, 0.7, 0.7]},
                                 ["pretrained"])
    assert {sparse.planners().for_layer(i).config.thresholds for i in (0, 1)} == {(0.5, 0.6, 0.7, 0.7)}
