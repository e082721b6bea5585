"""The tiny offline Qwen2.5-VL (vlmsparse.testing) and the torchvision-free video path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmsparse.model.processor import load_processor
from vlmsparse.model.video_processing import qwen_video_inputs, smart_resize
from vlmsparse.testing import (
    QWEN_SPECIAL_TOKENS,
    qwen2_5_vl_7b_config,
    qwen2_5_vl_7b_text_config,
    save_tiny_qwen2_5_vl,
    synthetic_video,
    tiny_qwen2_5_vl,
    video_chat_inputs,
)


@pytest.fixture(scope="module")
def tiny():
    return tiny_qwen2_5_vl(seed=0)


def test_tokenizer_has_qwen_special_tokens_as_single_ids(tiny):
    model, processor = tiny
    tok = processor.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS]
    assert len(set(ids)) == len(ids) and max(ids) < model.config.text_config.vocab_size
    encoded = tok("<|vision_start|><|video_pad|><|video_pad|><|vision_end|>")["input_ids"]
    assert encoded == [ids[9], ids[13], ids[13], ids[10]]
    assert model.config.video_token_id == ids[13] and model.config.image_token_id == ids[12]
    assert tok.decode(tok("What happens in this video?")["input_ids"]) == "What happens in this video?"


def test_video_through_processor_and_model(tiny):
    model, processor = tiny
    video = synthetic_video(8, 56, 56)
    inputs = video_chat_inputs(processor, video, "What happens?")
    grid = inputs["video_grid_thw"][0].tolist()
    assert grid == [4, 4, 4]
    n_video = int((inputs["input_ids"] == model.config.video_token_id).sum())
    assert n_video == 4 * 4 * 4 // 4
    assert inputs["pixel_values_videos"].shape == (64, 3 * 2 * 14 * 14)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


def test_chat_template_matches_qwen_layout(tiny):
    _, processor = tiny
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Hi?"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>Hi?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_video_patch_layout_matches_explicit_loop():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 56, 84, 3), dtype=np.uint8)  # odd T: last frame is repeated
    flat, grid = qwen_video_inputs(frames, do_resize=False)
    t, gh, gw = grid.tolist()
    assert (t, gh, gw) == (2, 4, 6)
    mean = np.array([0.48145466, 0.4578275, 0.40821073]) * 255
    std = np.array([0.26862954, 0.26130258, 0.27577711]) * 255
    norm = (frames.astype(np.float64) - mean) / std  # [T, H, W, C]
    norm = np.concatenate([norm, norm[-1:]], axis=0)
    rows = []
    for ti in range(t):
        for bh in range(gh // 2):
            for bw in range(gw // 2):
                for mh in range(2):
                    for mw in range(2):
                        y, x = (bh * 2 + mh) * 14, (bw * 2 + mw) * 14
                        patch = norm[2 * ti : 2 * ti + 2, y : y + 14, x : x + 14, :]  # [tp, p, p, C]
                        rows.append(patch.transpose(3, 0, 1, 2).reshape(-1))
    expected = torch.tensor(np.stack(rows), dtype=torch.float32)
    torch.testing.assert_close(flat, expected, rtol=1e-5, atol=1e-5)


def test_smart_resize_bounds():
    h, w = smart_resize(360, 640, 28, 28 * 28, 112 * 112)
    assert h % 28 == 0 and w % 28 == 0 and 28 * 28 <= h * w <= 112 * 112
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(1, 500, 28, 28 * 28, 112 * 112)


def test_save_and_load_offline(tmp_path, tiny):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model, processor = tiny
    path = save_tiny_qwen2_5_vl(tmp_path / "tiny", seed=0)
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval()
    loaded_processor = load_processor(path)
    video = synthetic_video(4, 56, 56, seed=1)
    a = video_chat_inputs(processor, video, "Describe the video.")
    b = video_chat_inputs(loaded_processor, video, "Describe the video.")
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["pixel_values_videos"], b["pixel_values_videos"])
    with torch.no_grad():
        torch.testing.assert_close(model(**a).logits, loaded(**b).logits, rtol=0, atol=0)


def test_7b_shapes():
    text = qwen2_5_vl_7b_text_config()
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        3584,
        28,
        28,
        4,
    )
    assert text.hidden_size // text.num_attention_heads == 128 and text.intermediate_size == 18944
    full = qwen2_5_vl_7b_config(num_hidden_layers=2)
    assert full.text_config.num_hidden_layers == 2 and full.vision_config.out_hidden_size == 3584


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava_onevision"])
@pytest.mark.parametrize("flags", [dict(do_rescale=False), dict(do_normalize=False), dict(rescale_factor=1 / 127.5)])
def test_video_processors_refuse_other_pixel_scaling(family, flags):
    """Every torchvision-free video processor rescales by 1/255 and normalises in one step; asked for anything
    else it says so in one line, naming itself, rather than returning pixels scaled otherwise."""
    from vlmsparse.testing import tiny_model

    processor = tiny_model(family)[1].video_processor
    video = synthetic_video(4, 112, 112)
    assert processor(videos=[video], return_tensors="pt")  # the defaults pass
    with pytest.raises(ValueError, match=f"{type(processor).__name__} supports only do_rescale=do_normalize=True"):
        processor(videos=[video], return_tensors="pt", **flags)
