"""The vision tower's segment attention on tiny random Qwen2.5-VL / Qwen2-VL models (CPU).

The patched tower must give the per-window SDPA output of the unpatched one (within float32 rounding), through
one attention call per layer, and ``restore()`` / ``unpatch()`` must give back the model's own path bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface

import vlmsparse
from vlmsparse.model import vision as vision_mod
from vlmsparse.model.vision import IMPLEMENTATION, VisionTimer, patch_vision
from vlmsparse.testing import tiny_qwen2_5_vl, tiny_qwen2_vl

# Two videos: 4 x 8 x 20 patches (merged 4 x 10: windows of 4 x 4, 4 x 4 and 4 x 2 merged tokens, so segments
# of 64, 64 and 32 patches) and 2 x 12 x 8 patches (windows cut at the bottom edge).
GRID = torch.tensor([[4, 8, 20], [2, 12, 8]])


@pytest.fixture(scope="module")
def tiny():
    model, _ = tiny_qwen2_5_vl(seed=0)
    return model


def _pixels(model, grid: torch.Tensor) -> torch.Tensor:
    cfg = model.config.vision_config
    width = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2
    return torch.randn(int(grid.prod(-1).sum()), width)


def _tower_out(model, pixels, grid):
    with torch.no_grad():
        return model.model.visual(pixels, grid_thw=grid).pooler_output


def _count_calls(monkeypatch) -> list[int]:
    """Count calls of the registered segment attention function (one per layer expected)."""
    calls = []
    inner = vision_mod.segment_attention_forward

    def counted(*args, **kwargs):
        calls.append(args[1].shape[2])
        return inner(*args, **kwargs)

    monkeypatch.setattr(vision_mod, "segment_attention_forward", counted)
    return calls


@pytest.mark.parametrize("kernel", ["reference", "triton"])
def test_patched_tower_equals_per_window_sdpa(tiny, monkeypatch, kernel):
    monkeypatch.setenv("TRITON_INTERPRET", "0" if kernel == "reference" else "1")
    calls = _count_calls(monkeypatch)
    pixels = _pixels(tiny, GRID)
    unpatched = _tower_out(tiny, pixels, GRID)
    vp = patch_vision(tiny)
    try:
        assert tiny.config.vision_config._attn_implementation == IMPLEMENTATION
        assert tiny.config.text_config._attn_implementation == "sdpa"
        patched = _tower_out(tiny, pixels, GRID)
    finally:
        vp.restore()
    n = int(GRID.prod(-1).sum())
    assert calls == [n] * tiny.config.vision_config.depth  # one call per layer, all segments at once
    torch.testing.assert_close(patched, unpatched, rtol=1e-5, atol=1e-6)
    assert tiny.config.vision_config._attn_implementation == "sdpa"
    assert IMPLEMENTATION not in AttentionInterface._global_mapping
    assert torch.equal(_tower_out(tiny, pixels, GRID), unpatched)  # restored bit for bit


def test_patch_switches_vision_by_default(tiny, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    pixels = _pixels(tiny, GRID)
    unpatched = _tower_out(tiny, pixels, GRID)
    with vlmsparse.patch(tiny, "dense", block_m=16, block_n=16) as handle:
        assert handle.vision is not None and handle.vision.active
        assert tiny.config.vision_config._attn_implementation == IMPLEMENTATION
        torch.testing.assert_close(_tower_out(tiny, pixels, GRID), unpatched, rtol=1e-5, atol=1e-6)
    assert tiny.config.vision_config._attn_implementation == "sdpa"
    assert torch.equal(_tower_out(tiny, pixels, GRID), unpatched)
    with vlmsparse.patch(tiny, "dense", vision="unpatched") as handle:
        assert handle.vision is None and tiny.config.vision_config._attn_implementation == "sdpa"


def test_bad_vision_mode_changes_nothing(tiny):
    with pytest.raises(ValueError, match="vision must be one of 'compiled', 'segment', 'unpatched'"):
        vlmsparse.patch(tiny, "dense", vision="flash")
    assert tiny.config.vision_config._attn_implementation == "sdpa"
    assert tiny.config.text_config._attn_implementation == "sdpa"
    assert not tiny._forward_pre_hooks


def test_already_patched_or_flash_is_left_alone(tiny, monkeypatch):
    vp = patch_vision(tiny)
    try:
        assert patch_vision(tiny) is None  # a second patch of the same tower does nothing
    finally:
        vp.restore()
    vp.restore()  # idempotent
    assert patch_vision(tiny, "unpatched") is None
    assert tiny.config.vision_config._attn_implementation == "sdpa"


def test_model_attention_can_still_be_set_while_patched(tiny):
    # transformers (5.25 on) checks every sub-model's implementation on each set_attn_implementation call and
    # would try to load a flash kernel for the segment function's name
    vp = patch_vision(tiny, "segment")
    try:
        tiny.set_attn_implementation({"text_config": "eager"})
        assert tiny.config.text_config._attn_implementation == "eager"
        assert tiny.config.vision_config._attn_implementation == IMPLEMENTATION
        tiny.set_attn_implementation({"text_config": "sdpa"})
    finally:
        vp.restore()
    assert tiny.config.vision_config._attn_implementation == "sdpa"
    assert tiny.config.text_config._attn_implementation == "sdpa"


def test_qwen2_vl_frames(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    model, _ = tiny_qwen2_vl(seed=1)
    grid = torch.tensor([[3, 4, 6], [1, 8, 4]])
    cfg = model.config.vision_config
    pixels = torch.randn(int(grid.prod(-1).sum()), cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2)

    def out():
        with torch.no_grad():
            return model.model.visual(pixels, grid_thw=grid).pooler_output

    unpatched = out()
    with vlmsparse.patch(model, "dense") as handle:
        assert handle.vision is not None
        torch.testing.assert_close(out(), unpatched, rtol=1e-5, atol=1e-6)
    assert torch.equal(out(), unpatched)


def test_vision_timer(tiny):
    pixels = _pixels(tiny, GRID)
    with VisionTimer(tiny) as timer:
        assert timer.seconds() == 0.0
        _tower_out(tiny, pixels, GRID)
        first = timer.seconds()
        assert first > 0.0
        _tower_out(tiny, pixels, GRID)
        assert timer.seconds() > first
        timer.reset()
        assert timer.seconds() == 0.0
    assert not tiny.model.visual._forward_hooks and not tiny.model.visual._forward_pre_hooks


@pytest.fixture
def compile_on_cpu(monkeypatch):
    """Compile the vision blocks on CPU with the graph capture alone (``aot_eager``: no code generation)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(vision_mod, "COMPILE_BACKEND", "aot_eager")
    monkeypatch.setattr(vision_mod, "COMPILE_ANY_DEVICE", True)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_blocks_equal_the_segment_path(tiny, compile_on_cpu, monkeypatch):
    calls = _count_calls(monkeypatch)
    pixels = _pixels(tiny, GRID)
    unpatched = _tower_out(tiny, pixels, GRID)
    with vlmsparse.patch(tiny, "dense", block_m=16, block_n=16) as handle:  # "compiled" is the default
        compiled = handle.vision.compiled
        assert compiled is not None and all("forward" in b.__dict__ for b in tiny.model.visual.blocks)
        out = _tower_out(tiny, pixels, GRID)
        other = GRID[:1]  # another video length: dynamic shapes, no failure
        other_out = _tower_out(tiny, _pixels(tiny, other), other)
        assert compiled.failed is None
        assert "blocks compiled" in repr(handle.vision)
    torch.testing.assert_close(out, unpatched, rtol=1e-5, atol=1e-6)
    assert other_out.shape[0] == int(other.prod()) // 4
    n = int(GRID.prod(-1).sum())
    assert calls[: tiny.config.vision_config.depth] == [n] * tiny.config.vision_config.depth  # attention outside
    assert not any("forward" in b.__dict__ for b in tiny.model.visual.blocks)  # restored
    assert torch.equal(_tower_out(tiny, pixels, GRID), unpatched)


def test_compiled_blocks_fall_back_when_compiling_fails(tiny, compile_on_cpu, monkeypatch, caplog):
    pixels = _pixels(tiny, GRID)
    unpatched = _tower_out(tiny, pixels, GRID)
    def broken(graph, example_inputs):
        raise RuntimeError("no code generation here")

    monkeypatch.setattr(vision_mod, "COMPILE_BACKEND", broken)
    with vlmsparse.patch(tiny, "dense", block_m=16, block_n=16) as handle:
        out = _tower_out(tiny, pixels, GRID)
        assert handle.vision.compiled.failed  # said once, then the blocks ran as "segment"
    torch.testing.assert_close(out, unpatched, rtol=1e-5, atol=1e-6)
    assert "run uncompiled" in caplog.text


def test_compiled_is_segment_off_cuda(tiny, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with vlmsparse.patch(tiny, "dense", vision="compiled") as handle:
        assert handle.vision is not None and handle.vision.compiled is None  # the tower is on the CPU
        assert not any("forward" in b.__dict__ for b in tiny.model.visual.blocks)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_compiled_blocks_of_other_families(family, compile_on_cpu):
    """Qwen2-VL's (LayerNorm, per-frame segments) and Qwen3-VL's (DeepStack) towers compile the same way."""
    from vlmsparse.testing import tiny_model

    model = tiny_model(family, seed=2)[0]
    tower = vision_mod.vision_tower(model)
    cfg = model.config.vision_config
    grid = torch.tensor([[2, 8, 4], [1, 4, 8]])
    pixels = torch.randn(int(grid.prod(-1).sum()), cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2)

    def out():
        with torch.no_grad():
            return tower(pixels, grid_thw=grid).pooler_output

    unpatched = out()
    with vlmsparse.patch(model, "dense", block_m=16, block_n=16) as handle:
        assert handle.vision.compiled is not None
        patched = out()
        assert handle.vision.compiled.failed is None
    torch.testing.assert_close(patched, unpatched, rtol=1e-5, atol=1e-5)
    assert not any("forward" in b.__dict__ for b in tower.blocks)


def test_an_error_of_the_inputs_keeps_the_compiled_path(tiny, compile_on_cpu, monkeypatch):
    """An error that the blocks' own forward raises too is the inputs' (here: the attention's): it propagates, and
    the compiled path stays."""
    inner = vision_mod.segment_attention_forward
    broken = {"on": True}

    def attention(*args, **kwargs):
        if broken["on"]:
            raise ValueError("bad segments")
        return inner(*args, **kwargs)

    monkeypatch.setattr(vision_mod, "segment_attention_forward", attention)
    pixels = _pixels(tiny, GRID)
    with vlmsparse.patch(tiny, "dense", block_m=16, block_n=16) as handle:
        with pytest.raises(ValueError, match="bad segments"):
            _tower_out(tiny, pixels, GRID)
        assert handle.vision.compiled.failed is None
        broken["on"] = False
        _tower_out(tiny, pixels, GRID)
        assert handle.vision.compiled.failed is None
