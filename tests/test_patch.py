"""vlmsparse.patch on a tiny random Qwen2.5-VL (CPU) fed a generated video through its processor.

Most tests run the sparse path through the plain-PyTorch CPU path, pyramid_attention_blockwise (TRITON_INTERPRET unset, fast);
``test_triton_kernel_path`` runs the Triton kernel under the interpreter.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

import vlmsparse
from vlmsparse.model.attention import _REGISTERED, _STATES
from vlmsparse.model.patcher import active_handle
from vlmsparse.testing import synthetic_video, tiny_qwen2_5_vl, video_chat_inputs

BLOCKS = dict(block_m=16, block_n=16)
ALL_LEVEL_ONE = dict(thresholds=[1.0, 1.0, 1.0, 1.0], **BLOCKS)


@pytest.fixture(scope="module")
def tiny():
    model, processor = tiny_qwen2_5_vl(seed=0)
    video = synthetic_video(8, 112, 112, seed=0)  # 64 video tokens: four 16-key visual blocks
    inputs = video_chat_inputs(processor, video, "What happens in this video?")
    with torch.no_grad():
        reference = model(**inputs).logits
    return model, processor, inputs, reference



def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _assert_clean(model):
    assert active_handle(model) is None
    assert model.config.text_config._attn_implementation == "sdpa"
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert not model._forward_pre_hooks
    assert not any(name.startswith("vlmsparse+") for name in AttentionInterface._global_mapping)
    assert not any(name.startswith("vlmsparse+") for name in AttentionMaskInterface._global_mapping)
    assert not _STATES and not _REGISTERED


def test_dense_method_equals_unpatched(tiny, reference_kernel):
    model, _, inputs, reference = tiny
    with vlmsparse.patch(model, "dense", **BLOCKS) as handle:
        assert model.config.text_config._attn_implementation == "vlmsparse+sdpa"
        assert model.config.vision_config._attn_implementation == "vlmsparse_flash_segment"  # one launch per layer
        logits = _logits(model, inputs)
        assert handle.stats.num_prefills == 1 and handle.stats.sparsity() == 0.0
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    _assert_clean(model)


def test_psa_all_level_one_equals_dense(tiny, reference_kernel):
    model, _, inputs, reference = tiny
    with vlmsparse.patch(model, "psa", **ALL_LEVEL_ONE) as handle:
        logits = _logits(model, inputs)
        assert handle.stats.sparsity() == 0.0
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)


def test_psa_defaults_sparse_and_stats(tiny, reference_kernel):
    model, _, inputs, reference = tiny
    with vlmsparse.patch(model, "psa", timing=True, **BLOCKS) as handle:
        logits = _logits(model, inputs)
        stats = handle.stats
        assert torch.isfinite(logits).all()
        assert not torch.allclose(logits, reference, atol=1e-4)  # some attention really was dropped
        overall, visual = stats.sparsity(), stats.visual_sparsity()
        assert 0.0 < overall < 1.0 and visual is not None and visual > overall
        layers = stats.per_layer()
        assert sorted(layers) == [0, 1] and all(0.0 <= s < 1.0 for s in layers.values())
        heads = stats.per_head()
        assert all(len(h) == model.config.text_config.num_attention_heads for h in heads.values())
        assert stats.per_sample() == pytest.approx([overall])
        assert stats.last_prefill_sparsity() == pytest.approx(overall)
        assert stats.prefill_seconds() > 0 and stats.planning_seconds() > 0
        table = stats.summary()
        assert "layer" in table and f"{overall:.3f}" in table
        assert stats.why_not_sparse() is None and "sparsity 0" not in table
        # accumulated over prefills, per sample is the last one
        _logits(model, inputs)
        assert stats.num_prefills == 2 and stats.sparsity() == pytest.approx(overall)
        stats.reset()
        assert stats.sparsity() is None and stats.num_prefills == 0 and stats.per_layer() == {}


def test_summary_says_why_a_short_prompt_is_not_sparse(tiny, reference_kernel):
    model, _, inputs, _ = tiny
    with vlmsparse.patch(model, "psa") as handle:  # 128-token blocks; the prompt holds 64 visual tokens
        _logits(model, inputs)
        assert handle.stats.num_prefills == 1 and handle.stats.sparsity() == 0.0
        why = handle.stats.why_not_sparse()
        assert why.startswith("too short to be sparse") and "64 of them visual" in why and "384" in why
        assert "sparsity 0: too short" in handle.stats.summary()
    with vlmsparse.patch(model, "psa", **ALL_LEVEL_ONE) as handle:  # blocks left to it, all kept
        _logits(model, inputs)
        assert handle.stats.why_not_sparse().startswith("the method kept every block left to it")
    with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
        text_only = model.config.text_config.bos_token_id
        with torch.no_grad():
            model(input_ids=torch.full((1, 8), text_only))
        assert handle.stats.num_prefills == 0 and "no prefill reached the sparse path" in handle.stats.why_not_sparse()


def test_triton_kernel_path(tiny):
    """The real kernel (under TRITON_INTERPRET=1 on CPU) gives the reference path's logits."""
    model, _, inputs, _ = tiny
    import os

    assert os.environ.get("TRITON_INTERPRET") == "1"
    with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
        triton_logits = _logits(model, inputs)
        triton_sparsity = handle.stats.sparsity()
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
            ref_logits = _logits(model, inputs)
            assert handle.stats.sparsity() == pytest.approx(triton_sparsity)
    finally:
        os.environ["TRITON_INTERPRET"] = "1"
    assert triton_sparsity > 0
    torch.testing.assert_close(triton_logits, ref_logits, rtol=1e-4, atol=1e-4)


def test_text_only_prompt_unchanged(tiny, reference_kernel):
    model, processor, _, _ = tiny
    text = processor.apply_chat_template(
        [{"role": "user", "content": "What is the best answer? A or B?"}], tokenize=False, add_generation_prompt=True
    )
    inputs = processor(text=[text], return_tensors="pt")
    before = _logits(model, inputs)
    with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
        patched = _logits(model, inputs)
        assert handle.stats.num_prefills == 0 and handle.stats.num_dense_prefills == 1
        assert handle.stats.sparsity() is None
    assert torch.equal(patched, before)


def test_generate_end_to_end(tiny, reference_kernel):
    model, processor, inputs, _ = tiny
    prompt = inputs["input_ids"].shape[1]
    plain = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    with vlmsparse.patch(model, "dense", **BLOCKS) as handle:
        dense = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert handle.stats.num_prefills == 1  # decode steps ran the original attention
    assert torch.equal(dense, plain)
    with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert handle.stats.num_prefills == 1 and handle.stats.sparsity() > 0
    assert out.shape == (1, prompt + 4)
    assert isinstance(processor.batch_decode(out[:, prompt:])[0], str)


def test_unpatch_restores_bit_identical(tiny, reference_kernel):
    model, _, inputs, reference = tiny
    handle = vlmsparse.patch(model, "psa", **BLOCKS)
    _logits(model, inputs)
    handle.unpatch()
    handle.unpatch()  # idempotent
    assert not handle.active
    _assert_clean(model)
    assert torch.equal(_logits(model, inputs), reference)


def test_double_patch_replaces(tiny, reference_kernel):
    model, _, inputs, _ = tiny
    first = vlmsparse.patch(model, "dense", **BLOCKS)
    second = vlmsparse.patch(model, "psa", **BLOCKS)
    assert not first.active and second.active and active_handle(model) is second
    assert second.original_attn_implementation == "sdpa"
    assert len(model._forward_pre_hooks) == 1 and _REGISTERED == {"vlmsparse+sdpa": 1}
    _logits(model, inputs)
    assert first.stats.num_prefills == 0 and second.stats.num_prefills == 1
    first.unpatch()  # an inactive handle does not undo the active patch
    assert second.active and model.config.text_config._attn_implementation == "vlmsparse+sdpa"
    second.unpatch()
    _assert_clean(model)


def test_padded_batch_never_attends_padding(tiny, reference_kernel):
    model, processor, _, _ = tiny
    videos = [synthetic_video(8, 112, 112, seed=1), synthetic_video(4, 112, 112, seed=2)]
    questions = ["What happens in this video?", "Which color is the square?"]
    batch = video_chat_inputs(processor, videos, questions)
    assert not bool(batch["attention_mask"].all())  # left padding in the shorter sample
    singles = [video_chat_inputs(processor, v, q) for v, q in zip(videos, questions)]
    with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
        batched = _logits(model, batch)
        per_sample = handle.stats.per_sample()
        assert len(per_sample) == 2 and per_sample[0] > 0
        for i, single in enumerate(singles):
            n = single["input_ids"].shape[1]
            alone = _logits(model, single)
            torch.testing.assert_close(batched[i, -n:], alone[0], rtol=1e-4, atol=1e-4)
            assert handle.stats.per_sample()[0] == pytest.approx(per_sample[i])


def test_eager_model_and_reference_notice(reference_kernel, caplog):
    model, processor = tiny_qwen2_5_vl(seed=1, attn_implementation="eager")
    inputs = video_chat_inputs(processor, synthetic_video(8, 112, 112), "Describe the video.")
    before = _logits(model, inputs)
    with caplog.at_level(logging.WARNING, logger="vlmsparse"):
        with vlmsparse.patch(model, "dense", **BLOCKS) as handle:
            assert handle.original_attn_implementation == "eager"
            torch.testing.assert_close(_logits(model, inputs), before, rtol=1e-5, atol=1e-5)
            _logits(model, inputs)
            out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    notices = [r for r in caplog.records if "pyramid_attention_blockwise" in r.getMessage()]
    assert len(notices) == 1  # said once
    assert model.config.text_config._attn_implementation == "eager"


def test_config_file_and_bad_arguments(tiny, tmp_path):
    model, _, _, _ = tiny
    path = tmp_path / "psa.toml"
    path.write_text('name = "t"\nmethod = "psa"\n[method_config]\nblock_m = 32\nblock_n = 16\n')
    with vlmsparse.patch(model, "psa", config_file=path, block_n=32) as handle:
        assert (handle.method.config.block_m, handle.method.config.block_n) == (32, 32)
    with pytest.raises(ValueError, match="unknown method"):
        vlmsparse.patch(model, "nope")
    with pytest.raises(ValueError):
        vlmsparse.patch(model, "psa", block_m=12)
    _assert_clean(model)


def test_unsupported_model_lists_families():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    text_model = Qwen2ForCausalLM(
        Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=1)
    )
    families = r"\['llava_onevision', 'qwen2_5_vl', 'qwen2_vl', 'qwen3_vl', 'qwen3_vl_moe'\]"
    with pytest.raises(ValueError, match=r"Qwen2ForCausalLM \(model_type='qwen2'\); supported families: " + families):
        vlmsparse.patch(text_model, "dense")
    with pytest.raises(ValueError, match="supported families"):
        vlmsparse.patch(torch.nn.Linear(2, 2), "dense")


def test_cases_served_dense_are_logged_once(tiny, reference_kernel, caplog):
    model, _, inputs, _ = tiny
    holes = dict(inputs)
    holes["attention_mask"] = inputs["attention_mask"].clone()
    holes["attention_mask"][0, 3] = 0  # a hole in the mask: not padding the sparse path can slice away
    embeds = model.get_input_embeddings()(inputs["input_ids"][:, :20])
    before_holes = _logits(model, holes)
    before_embeds = model(inputs_embeds=embeds).logits.detach()
    with caplog.at_level(logging.WARNING, logger="vlmsparse"):
        with vlmsparse.patch(model, "psa", vision="unpatched", **BLOCKS) as handle:  # bit-equal: vision unchanged
            assert torch.equal(_logits(model, holes), before_holes)
            _logits(model, holes)
            assert torch.equal(model(inputs_embeds=embeds).logits.detach(), before_embeds)
            assert handle.stats.num_prefills == 0 and handle.stats.num_dense_prefills == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not a contiguous run" in m for m in messages) == 1
    assert sum("token layout unknown" in m for m in messages) == 1


def test_qwen2_vl_family(reference_kernel):
    from vlmsparse.testing import tiny_qwen2_vl

    model, processor = tiny_qwen2_vl(seed=0)
    inputs = video_chat_inputs(processor, synthetic_video(8, 112, 112), "What happens?")
    before = _logits(model, inputs)
    with vlmsparse.patch(model, "dense", **BLOCKS) as handle:
        assert handle.family.name == "qwen2_vl"
        torch.testing.assert_close(_logits(model, inputs), before, rtol=1e-5, atol=1e-5)
    with vlmsparse.patch(model, "psa", **BLOCKS) as handle:
        assert torch.isfinite(_logits(model, inputs)).all() and handle.stats.sparsity() > 0
    assert torch.equal(_logits(model, inputs), before)


def test_prefill_after_cache_queries_are_last_positions(tiny, reference_kernel):
    """With a KV cache (Lq < Lk) the queries are the last Lq positions: bottom-right causal alignment."""
    from vlmsparse.model.attention import sparse_attention_forward
    from vlmsparse.model.layout import TokenLayout

    model, _, _, _ = tiny
    module = model.model.language_model.layers[1].self_attn
    hq, hkv, d = 4, 2, 16
    lk, lq = 80, 24
    q, k, v = torch.randn(1, hq, lq, d), torch.randn(1, hkv, lk, d), torch.randn(1, hkv, lk, d)
    visual = torch.zeros(1, lk, dtype=torch.bool)
    visual[:, 10:70] = True
    kr, vr = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    logits = q @ kr.transpose(-1, -2) * d**-0.5
    allowed = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)
    expected = (logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ vr).transpose(1, 2)
    with vlmsparse.patch(model, "psa", **ALL_LEVEL_ONE) as handle:
        handle._state.tracker.layout = TokenLayout(visual=visual, has_visual=True)
        out, weights = sparse_attention_forward(module, q, k, v, None, scaling=d**-0.5)
        assert weights is None and handle.stats.per_layer() == {1: 0.0}
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["dense", "psa", "xattention", "sparge"])
def test_a_config_file_alone_sets_its_method(tiny, name):
    from pathlib import Path

    from vlmsparse.methods import get_method_class

    model = tiny[0]
    path = Path(__file__).resolve().parents[1] / "evals" / f"{name}.toml"
    with vlmsparse.patch(model, config_file=path, vision="unpatched") as handle:
        assert isinstance(handle.planners.default, get_method_class(name))
    other = "xattention" if name != "xattention" else "psa"
    with pytest.raises(ValueError, match=f"is for method '{name}', not '{other}'"):
        vlmsparse.patch(model, other, config_file=path, vision="unpatched")
    with vlmsparse.patch(model, vision="unpatched") as handle:  # no method and no file: PSA
        assert isinstance(handle.planners.default, get_method_class("psa"))
