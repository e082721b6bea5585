"""vlmsparse.patch on tiny random Qwen3-VL, Qwen3-VL-MoE and LLaVA-OneVision models (CPU) fed a generated video.

The sparse path runs through the plain-PyTorch reference kernel (TRITON_INTERPRET unset, fast); 16-token blocks
give each video prompt several visual blocks. Qwen3-VL's timestamps between frames are interleaved text: the
tests check where the layout finds it, that the plan treats it as visual, and that DeepStack and the
interleaved M-RoPE reach the decoder unchanged.
"""

from __future__ import annotations

import pytest
import torch

import vlmsparse
from vlmsparse.model.layout import LayoutTracker, interleaved_text_mask, planned_block_counts
from vlmsparse.testing import synthetic_video, tiny_model, video_chat_inputs

BLOCKS = dict(block_m=16, block_n=16)
#: the families every test runs on; Qwen3-VL-MoE (Qwen3-VL's attention and layout, other MLPs) gets one test
FAMILIES = ["qwen3_vl", "llava_onevision"]
#: frame side per family: Qwen3-VL 128 (a 4 x 4 merged grid of 32-pixel patches), LLaVA-OneVision the tower's 112
SIDE = {"qwen3_vl": 128, "llava_onevision": 112}


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    family = request.param
    model, processor = tiny_model(family, seed=0)
    video = synthetic_video(8, SIDE[family], SIDE[family], seed=0)
    inputs = video_chat_inputs(processor, video, "What happens in this video?", fps=2.0)
    with torch.no_grad():
        reference = model(**inputs).logits
    return family, model, processor, inputs, reference


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_dense_equals_unpatched(tiny, reference_kernel):
    family, model, _, inputs, reference = tiny
    with vlmsparse.patch(model, "dense", **BLOCKS) as handle:
        assert handle.family.name == family
        assert model.config.text_config._attn_implementation == "vlmsparse+sdpa"
        # Qwen3-VL's tower runs its frames as segments in one launch per layer; SigLIP has no segments to join
        vision = "vlmsparse_flash_segment" if family.startswith("qwen3") else "sdpa"
        assert model.config.vision_config._attn_implementation == vision
        logits = _logits(model, inputs)
        assert handle.stats.num_prefills == 1 and handle.stats.sparsity() == 0.0
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)


def test_psa_is_sparse_and_finite_on_video(tiny, reference_kernel):
    _, model, _, inputs, reference = tiny
    with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
        logits = _logits(model, inputs)
        overall, visual = handle.stats.sparsity(), handle.stats.visual_sparsity()
        assert sorted(handle.stats.per_layer()) == [0, 1]
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits, reference, atol=1e-4)  # some attention really was dropped or pooled
    assert 0.0 < overall < 1.0 and visual is not None and visual > 0.0


def test_text_only_prompt_untouched(tiny, reference_kernel):
    _, model, processor, _, _ = tiny
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "What is the best answer? A or B?"}]}],
        tokenize=False, add_generation_prompt=True,
    )
    inputs = processor(text=[text], return_tensors="pt")
    before = _logits(model, inputs)
    with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
        patched = _logits(model, inputs)
        assert handle.stats.num_prefills == 0 and handle.stats.num_dense_prefills == 1
    assert torch.equal(patched, before)


def test_unpatch_restores_bit_identical(tiny, reference_kernel):
    _, model, _, inputs, reference = tiny
    handle = vlmsparse.patch(model, "psa", **BLOCKS)
    _logits(model, inputs)
    handle.unpatch()
    assert not handle.active and not model._forward_pre_hooks
    assert model.config.text_config._attn_implementation == "sdpa"
    assert torch.equal(_logits(model, inputs), reference)


def test_generate(tiny, reference_kernel):
    _, model, processor, inputs, _ = tiny
    prompt = inputs["input_ids"].shape[1]
    plain = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    with vlmsparse.patch(model, "dense", **BLOCKS) as handle:
        assert torch.equal(model.generate(**inputs, max_new_tokens=3, do_sample=False), plain)
        assert handle.stats.num_prefills == 1  # decode steps ran the model's own attention
    with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        assert handle.stats.num_prefills == 1 and handle.stats.sparsity() > 0
        layout = handle._state.tracker.layout
        assert layout.length == prompt + 2  # the layout followed the cache through the decode steps
    assert out.shape == (1, prompt + 3)
    assert isinstance(processor.batch_decode(out[:, prompt:])[0], str)


def _decoder_inputs(model, inputs) -> dict:
    """What the decoder (language model) receives in one forward: positions and DeepStack features."""
    seen = {}

    def hook(module, args, kwargs):
        seen.update({k: kwargs.get(k) for k in ("position_ids", "visual_pos_masks", "deepstack_visual_embeds")})

    handle = model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        _logits(model, inputs)
    finally:
        handle.remove()
    return seen


def test_qwen3_vl_moe_dense_sparse_unpatch(reference_kernel):
    model, processor = tiny_model("qwen3_vl_moe", seed=0)
    inputs = video_chat_inputs(processor, synthetic_video(8, 128, 128), "What happens in this video?", fps=2.0)
    reference = _logits(model, inputs)
    with vlmsparse.patch(model, "dense", **BLOCKS) as handle:
        assert handle.family.name == "qwen3_vl_moe"
        torch.testing.assert_close(_logits(model, inputs), reference, rtol=1e-5, atol=1e-5)
    with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
        logits = _logits(model, inputs)
        assert handle.stats.visual_sparsity() > 0 and handle._state.tracker.layout.interleaved_text is not None
    assert torch.isfinite(logits).all() and not torch.allclose(logits, reference, atol=1e-4)
    assert torch.equal(_logits(model, inputs), reference)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_vl_moe"])
def test_qwen3_deepstack_and_mrope_reach_the_decoder_unchanged(family, reference_kernel):
    model, processor = tiny_model(family, seed=1)
    inputs = video_chat_inputs(processor, synthetic_video(8, 128, 128, seed=3), "Describe the video.", fps=2.0)
    before = _decoder_inputs(model, inputs)
    with vlmsparse.patch(model, "psa", vision="unpatched", **BLOCKS) as handle:  # the decoder's patch alone
        after = _decoder_inputs(model, inputs)
        assert handle.stats.sparsity() > 0
    with vlmsparse.patch(model, "psa", **BLOCKS):  # the tower's frames as segments too: equal up to rounding
        segments = _decoder_inputs(model, inputs)
    for a, b in zip(segments["deepstack_visual_embeds"], before["deepstack_visual_embeds"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert torch.equal(segments["position_ids"], before["position_ids"])
    # DeepStack: features of both vision blocks added to the visual positions of the first two decoder layers
    assert len(before["deepstack_visual_embeds"]) == 2
    assert int(before["visual_pos_masks"].sum()) == int((inputs["input_ids"] == model.config.video_token_id).sum())
    # M-RoPE: three position axes (time, height, width), which differ at the visual tokens
    positions = before["position_ids"]
    assert positions.shape[0] == 3 and not torch.equal(positions[1], positions[2])
    assert torch.equal(after["position_ids"], positions) and torch.equal(after["visual_pos_masks"], before["visual_pos_masks"])
    for a, b in zip(after["deepstack_visual_embeds"], before["deepstack_visual_embeds"]):
        assert torch.equal(a, b)


def _layout(family: str, model, input_ids):
    from vlmsparse.model.families import get_family

    fam = get_family(family)
    tracker = LayoutTracker(
        fam.visual_token_ids(model.config),
        interleaved_token_ids=fam.interleaved_token_ids(model.config),
        interleaved_text_max_run=fam.interleaved_text_max_run,
    )
    tracker.pre_hook(model, (), {"input_ids": input_ids})
    return tracker.layout


def test_qwen3_timestamps_are_interleaved_text_planned_as_visual(reference_kernel):
    model, processor = tiny_model("qwen3_vl", seed=0)
    inputs = video_chat_inputs(processor, synthetic_video(8, 128, 128), "What happens in this video?", fps=2.0)
    ids = inputs["input_ids"]
    tokens = processor.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    layout = _layout("qwen3_vl", model, ids)
    inter = layout.interleaved_text[0]
    assert not (inter & layout.visual[0]).any()
    # the three gaps between the four frame pairs: <|vision_end|>, "<1.2 seconds>", <|vision_start|>
    runs = "".join(t if flag else "\0" for t, flag in zip(tokens, inter.tolist())).split("\0")
    runs = [r.replace("\u0120", " ") for r in runs if r]  # byte-level BPE writes a space as U+0120
    assert runs == [f"<|vision_end|><{t} seconds><|vision_start|>" for t in ("1.2", "2.2", "3.2")]
    text = processor.tokenizer.decode(ids[0][~(inter | layout.visual[0])])
    assert "You are a helpful assistant." in text and "What happens in this video?" in text  # ordinary text
    assert "<0.2 seconds>" in text  # the timestamp before the first frame has no video token before it

    old = planned_block_counts(layout.visual, layout.interleaved_text, 16, 16, interleaved_as_visual=False)
    new = planned_block_counts(layout.visual, layout.interleaved_text, 16, 16)
    assert old["visible"] == new["visible"] and old["free"] == 0  # every block holds a text token
    assert new["free"] > 0 and new["forced"] < old["forced"] and new["dense_rows"] < old["dense_rows"]

    method = vlmsparse.get_method("psa", **BLOCKS)
    q = torch.randn(1, 4, ids.shape[1], 16)
    plan = method.plan(q, torch.randn(1, 2, ids.shape[1], 16), layout.visual, layout.interleaved_text)
    assert plan.interleaved_text is layout.interleaved_text  # the text keys the kernel is to attend exactly
    assert bool(plan.key_block_visual.any()) and bool(plan.query_block_visual.any())
    assert plan.sparsity().visual_blocks.sum() > 0


def test_llava_onevision_video_is_placeholders_only():
    model, processor = tiny_model("llava_onevision", seed=0)
    inputs = video_chat_inputs(processor, synthetic_video(8, 112, 112), "What happens?")
    layout = _layout("llava_onevision", model, inputs["input_ids"])
    visual = layout.visual[0]
    # 8 frames x (8 x 8 patches pooled to 4 x 4) + 1 image-newline token, one contiguous visual run
    assert int(visual.sum()) == 8 * 16 + 1
    first, last = visual.nonzero()[[0, -1], 0].tolist()
    assert bool(visual[first : last + 1].all())
    assert layout.interleaved_text is None and layout.span is None


def test_interleaved_text_mask_rules():
    #         0  1  2  3  4  5  6  7  8  9 10 11 12 13
    kinds = "T  T  V  V  t  t  V  V  T  T  T  V  T  T".split()
    visual = torch.tensor([[k == "V" for k in kinds]])
    span = visual.clone()
    got = interleaved_text_mask(visual, span, max_run=2)[0].tolist()
    # the 2-token run between frames is interleaved; the 3-token run (8-10) is longer than max_run; the text before
    # the first and after the last span token is ordinary text
    assert [i for i, flag in enumerate(got) if flag] == [4, 5]
    got3 = interleaved_text_mask(visual, span, max_run=3)[0].tolist()
    assert [i for i, flag in enumerate(got3) if flag] == [4, 5, 8, 9, 10]
    # image tokens (visual, not span) inside a run count towards its length and are never interleaved text
    image = torch.tensor([[False, True, False, False, True]])
    video = torch.tensor([[True, False, False, False, True]])
    assert interleaved_text_mask(image | video, video, max_run=3)[0].tolist() == [False, False, True, True, False]
    assert not interleaved_text_mask(image | video, video, max_run=2).any()


def test_qwen3_prefill_benchmark_prompt_takes_the_model_path(reference_kernel):
    """The GPU benchmark's prompt (precomputed vision outputs, timestamps between frames) on the tiny model."""
    from vlmsparse.bench.prefill_qwen3_vl import layout_rows, patch_setting, video_prompt

    model, _ = tiny_model("qwen3_vl", seed=0)
    inputs = video_prompt(model.config, 4, 16, text_prefix=8, text_suffix=4, deepstack_layers=2, device="cpu",
                          dtype=torch.float32)
    before = _decoder_inputs(model, inputs)
    assert len(before["deepstack_visual_embeds"]) == 2 and int(before["visual_pos_masks"].sum()) == 64
    assert before["position_ids"].shape[0] == 3 and not torch.equal(before["position_ids"][1], before["position_ids"][2])
    counts = layout_rows(model, inputs, block=16)
    assert counts["interleaved_text"] == 3 * 8  # as the processor's prompt: <|vision_end|> <t seconds> <|vision_start|>
    assert counts["free_blocks_old_rule"] <= 1 < counts["free_blocks_new_rule"]
    reference = _logits(model, inputs)
    sparsity = {}
    for label in ("psa", "psa-old-rule"):
        handle = patch_setting(model, label, **BLOCKS)
        try:
            logits = _logits(model, inputs)
            sparsity[label] = handle.stats.sparsity()
        finally:
            handle.unpatch()
        assert torch.isfinite(logits).all()
    assert 0 <= sparsity["psa-old-rule"] < sparsity["psa"]
    assert torch.equal(_logits(model, inputs), reference)


def test_prefill_benchmark_rows_for_each_method(reference_kernel):
    """The prefill benchmarks' per-method loop (a CPU clock in place of the CUDA events): a row per label in order,
    the speed-up against the dense time given, the sparsity reached, planning and attention times from the timed
    pass; the model is left unpatched."""
    import time

    from vlmsparse.bench.prefill import forward_prefill, method_rows
    from vlmsparse.bench.prefill_qwen3_vl import patch_setting, video_prompt

    model, _ = tiny_model("qwen3_vl", seed=0)
    inputs = video_prompt(model.config, 4, 16, text_prefix=8, text_suffix=4, deepstack_layers=2, device="cpu",
                          dtype=torch.float32)
    reference = _logits(model, inputs)
    calls = []

    def cpu_time(m, inp, repeats):
        start = time.perf_counter()
        for _ in range(repeats):
            forward_prefill(m, inp)
        calls.append(repeats)
        return 1e3 * (time.perf_counter() - start) / repeats, 0.0

    labels = ["psa", "psa-old-rule", "dense"]
    rows = method_rows(model, inputs, labels, lambda m, label, timing=False: patch_setting(m, label, timing, **BLOCKS),
                       {"L": inputs["input_ids"].shape[1]}, 5.0, 2, time_fn=cpu_time)
    assert [r["method"] for r in rows] == labels and calls == [2, 2, 2]
    by = {r["method"]: r for r in rows}
    for r in rows:
        assert r["L"] == inputs["input_ids"].shape[1] and r["speedup"] == pytest.approx(5.0 / r["prefill_ms"])
    assert 0 <= by["psa-old-rule"]["sparsity"] < by["psa"]["sparsity"] and by["dense"]["sparsity"] == 0
    assert by["psa"]["planning_ms"] > 0 and by["psa"]["sparse_attention_ms"] > 0
    assert torch.equal(_logits(model, inputs), reference)


def test_qwen3_padded_batch_matches_single_prompts(reference_kernel):
    """Left-padded samples are planned one by one on their own slices, interleaved text included."""
    model, processor = tiny_model("qwen3_vl", seed=2)
    videos = [synthetic_video(8, 128, 128, seed=1), synthetic_video(4, 128, 128, seed=2)]
    questions = ["What happens in this video?", "Which color is the square?"]
    batch = video_chat_inputs(processor, videos, questions, fps=2.0)
    assert not bool(batch["attention_mask"].all())
    with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
        batched = _logits(model, batch)
        per_sample = handle.stats.per_sample()
        for i, (video, question) in enumerate(zip(videos, questions)):
            single = video_chat_inputs(processor, video, question, fps=2.0)
            n = single["input_ids"].shape[1]
            torch.testing.assert_close(batched[i, -n:], _logits(model, single)[0], rtol=1e-4, atol=1e-4)
            assert handle.stats.per_sample()[0] == pytest.approx(per_sample[i])
