"""Generation with transformers' static (preallocated) KV cache: the sparse prefill sees the sequence's keys and not
the cache's unwritten slots, a compiled decode step gives the same tokens, and the harness's answerer uses the
cache it was asked for and falls back to the dynamic one when the static one fails."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import CompileConfig

import vlmsparse
from vlmsparse.bench.question import question_inputs, video_grid
from vlmsparse.eval.model_io import VideoQA, resolve_kv_cache
from vlmsparse.model.patcher import observe
from vlmsparse.testing import tiny_qwen2_5_vl


@pytest.fixture(scope="module")
def tiny():
    return tiny_qwen2_5_vl(seed=0)


@pytest.fixture()
def model(tiny):
    model, _ = tiny
    saved = (model.generation_config.cache_implementation, model.generation_config.compile_config)
    yield model
    model.generation_config.cache_implementation, model.generation_config.compile_config = saved


def _generate(model, inputs, cache: str | None):
    model.generation_config.cache_implementation = cache
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)


def test_static_cache_prefill_takes_the_sparse_path(model, caplog):
    inputs = question_inputs(model, video_grid(4 * 96, (8, 8)))
    handle = vlmsparse.patch(model, "psa")
    try:
        dynamic = _generate(model, inputs, None)
        dynamic_records = handle.stats.sparsity()
        handle.stats.reset()
        with caplog.at_level(logging.INFO, logger="vlmsparse"):
            static = _generate(model, inputs, "static")
        static_records = handle.stats.sparsity()
    finally:
        handle.unpatch()
    assert dynamic_records is not None  # the sparse path planned every layer's prefill
    assert static_records == dynamic_records  # and it still does when the keys are the cache's preallocated length
    assert "attention sees" not in caplog.text  # no dense fallback for a layout/key-length mismatch
    assert torch.equal(static, dynamic)


def test_observer_sees_the_sequence_keys_of_a_static_cache(model):
    """Calibration's observer gets the sequence's keys; the model's own attention keeps the cache's keys and mask."""
    inputs = question_inputs(model, video_grid(2 * 96, (8, 8)), seed=2)
    reference = _generate(model, inputs, None)
    seen = []
    handle = observe(model, lambda layer: seen.append(tuple(layer.k.shape)))
    try:
        static = _generate(model, inputs, "static")
    finally:
        handle.unpatch()
    length = inputs["input_ids"].shape[1]
    assert len(seen) == model.config.text_config.num_hidden_layers  # every layer's prefill, once
    assert all(shape[2] == length for shape in seen)
    assert torch.equal(static, reference)


def test_compiled_decode_step_with_a_patched_model(model):
    """transformers compiles the decode step for a static cache (on CPU only when asked): same tokens, one graph."""
    from torch._dynamo.utils import counters

    inputs = question_inputs(model, video_grid(2 * 96, (8, 8)), seed=1)
    handle = vlmsparse.patch(model, "psa")
    try:
        reference = _generate(model, inputs, None)
        config = CompileConfig(backend="eager", fullgraph=False)
        config._compile_all_devices = True  # transformers compiles on accelerators only unless told
        model.generation_config.compile_config = config
        torch._dynamo.reset()
        counters.clear()
        first = _generate(model, inputs, "static")
        second = _generate(model, inputs, "static")
        planned = handle.stats.sparsity()
    finally:
        handle.unpatch()
        torch._dynamo.reset()
    assert counters["stats"]["unique_graphs"] >= 1, "the decode step was not compiled"
    assert planned is not None
    assert torch.equal(first, reference) and torch.equal(second, reference)


def test_resolve_kv_cache():
    assert resolve_kv_cache("auto", torch.device("cpu")) == "dynamic"
    assert resolve_kv_cache("auto", torch.device("cuda", 0)) == "static"
    assert resolve_kv_cache("static", torch.device("cpu")) == "static"
    with pytest.raises(ValueError, match="kv_cache must be one of"):
        resolve_kv_cache("paged", torch.device("cpu"))


def _sample_video():
    from vlmsparse.eval.frames import SampledVideo

    rng = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (4, 56, 56, 3), generator=rng, dtype=torch.uint8).numpy()
    return SampledVideo(frames=frames, sample_fps=2.0, indices=[0, 1, 2, 3], total_frames=4, video_fps=2.0,
                        source_size=(56, 56), path="synthetic", decoder="test")


def test_answerer_static_cache_and_fallback(tiny, caplog):
    model, processor = tiny
    video = _sample_video()
    dynamic = VideoQA(model, processor, max_new_tokens=3, kv_cache="dynamic")
    static = VideoQA(model, processor, max_new_tokens=3, kv_cache="static")
    assert dynamic.generation_config.cache_implementation is None
    assert static.generation_config.cache_implementation == "static"
    want = dynamic.answer(video, "What is shown?")
    got = static.answer(video, "What is shown?")
    assert (got.text, got.kv_cache, want.kv_cache) == (want.text, "static", "dynamic")

    generate = model.generate

    def failing_static(*args, generation_config=None, **kwargs):
        if generation_config.cache_implementation == "static":
            raise RuntimeError("compiling the decode step failed")
        return generate(*args, generation_config=generation_config, **kwargs)

    model.generate = failing_static
    try:
        with caplog.at_level(logging.WARNING, logger="vlmsparse"):
            fell_back = static.answer(video, "What is shown?")
    finally:
        del model.generate
    assert (fell_back.text, fell_back.kv_cache, static.kv_cache) == (want.text, "dynamic", "dynamic")
    assert "static KV cache failed (RuntimeError: compiling the decode step failed)" in caplog.text


def test_answerer_keeps_static_when_both_caches_fail(tiny):
    model, processor = tiny
    qa = VideoQA(model, processor, max_new_tokens=2, kv_cache="static")

    def broken(*args, **kwargs):
        raise ValueError("bad inputs")

    model.generate = broken
    try:
        with pytest.raises(ValueError, match="bad inputs"):
            qa.answer(_sample_video(), "What is shown?")
    finally:
        del model.generate
    assert qa.kv_cache == "static" and qa.generation_config.cache_implementation == "static"
