"""Tiny, offline models of every supported family, and inputs, for tests and examples (no hub, no weights).

- ``tiny_qwen2_5_vl(seed=0)`` -> ``(model, processor)``: a randomly initialised two-layer Qwen2.5-VL with a small
  vision tower, and a Qwen2.5-VL processor built offline (a byte-level BPE tokenizer trained here with the
  ``tokenizers`` library on a few sentences, wrapped in ``Qwen2Tokenizer``, Qwen's special tokens, a
  Qwen2.5-VL-style chat template, the PIL image processor and the torchvision-free video processor of
  ``vlmsparse.model.video_processing``, combined in ``Qwen2_5_VLProcessorTorch``, a ``Qwen2_5_VLProcessor``).
- ``save_tiny_qwen2_5_vl(path)`` saves both as a stock Qwen2.5-VL folder:
  ``Qwen2_5_VLForConditionalGeneration.from_pretrained(path)`` works offline, and so does
  ``AutoProcessor.from_pretrained(path)`` where torchvision is installed; ``vlmsparse.model.processor.load_processor``
  loads the processor with or without torchvision.
- ``tiny_qwen3_vl(seed)``, ``tiny_qwen3_vl_moe(seed)``, ``tiny_llava_onevision(seed)`` -> ``(model, processor)``:
  the same for Qwen3-VL (DeepStack into both decoder layers, interleaved M-RoPE, patch 16), Qwen3-VL-MoE (four
  experts, two per token) and LLaVA-OneVision (SigLIP tower, Qwen2 decoder, 112-pixel frames pooled to 4 x 4
  tokens), built from their transformers configs with torchvision-free processors; ``save_tiny_model(family,
  path)`` saves any of them as a stock folder of its family.
- ``synthetic_video(...)``: a ``[T, H, W, 3]`` uint8 frame array with moving shapes.
- ``qwen2_5_vl_7b_text_config()`` / ``qwen2_5_vl_7b_config()``: the real Qwen2.5-VL-7B shapes, to build
  random-weight models for kernel and patch benchmarks; ``qwen3_vl_8b_config()`` the same for Qwen3-VL-8B.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model.processor import (
    LlavaOnevisionProcessorTorch,
    Qwen2_5_VLProcessorTorch,
    Qwen2VLProcessorTorch,
    Qwen3VLProcessorTorch,
)
from .model.video_processing import Qwen2VLVideoProcessorTorch
from .model.video_processing_llava_onevision import LlavaOnevisionVideoProcessorTorch
from .model.video_processing_qwen3_vl import Qwen3VLVideoProcessorTorch

__all__ = [
    "QWEN_SPECIAL_TOKENS",
    "QWEN_CHAT_TEMPLATE",
    "tiny_tokenizer",
    "tiny_processor",
    "tiny_qwen2_5_vl_config",
    "tiny_qwen2_5_vl",
    "tiny_qwen2_vl",
    "save_tiny_qwen2_5_vl",
    "tiny_qwen3_vl",
    "tiny_qwen3_vl_moe",
    "tiny_llava_onevision",
    "TINY_MODELS",
    "tiny_model",
    "save_tiny_model",
    "synthetic_video",
    "video_chat_inputs",
    "qwen2_5_vl_7b_text_config",
    "qwen2_5_vl_7b_config",
    "qwen3_vl_8b_config",
]

# In the order of their ids in Qwen's vocabulary (the ids here differ: the vocabulary is small).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# A chat template with the structure of Qwen2.5-VL's: a default system turn, one vision block per image or video
# entry, <|im_start|>role ... <|im_end|> turns, and an assistant header for generation.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif 'text' in part %}"
    "{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)

_CORPUS = (
    "You are a helpful assistant. Describe the video in one sentence.",
    "What happens in this video? Answer with the letter of the correct option.",
    "A. The red square moves to the right. B. The blue circle grows. C. Nothing moves. D. The scene goes dark.",
    "The best answer is A. The best answer is B. The best answer is C. The best answer is D.",
    "Select the best answer to the following multiple-choice question based on the video.",
    "question answer option frame image picture scene person object color left right up down",
    "0 1 2 3 4 5 6 7 8 9 10 20 30 60 100 seconds minutes hours first second third last",
    "the a an of to in on at with and or is are was were it this that these those",
)

# Small sizes so that a short synthetic video gives a few hundred tokens at most.
_TINY_VIDEO_SIZE = {"shortest_edge": 28 * 28, "longest_edge": 112 * 112}
_TINY_IMAGE_SIZE = {"shortest_edge": 28 * 28, "longest_edge": 112 * 112}


@lru_cache(maxsize=4)
def _trained_bpe(vocab_size: int, corpus: tuple[str, ...] = _CORPUS) -> tuple[str, str]:
    """Byte-level BPE trained on ``corpus`` (default: the small corpus above); (vocab json, merges json), cached."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    pretokenize = (
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
        r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
    )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pretokenize), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [list(m) if isinstance(m, list) else m.split(" ") for m in model["merges"]]
    return json.dumps(model["vocab"]), json.dumps(merges)


def tiny_tokenizer(vocab_size: int = 512, extra_special_tokens: tuple[str, ...] = (), corpus: tuple[str, ...] | None = None):
    """Qwen2 tokenizer (transformers ``Qwen2Tokenizer``) over a small byte-level BPE, with Qwen's special tokens
    (and ``extra_special_tokens`` after them, e.g. LLaVA-OneVision's ``<image>`` / ``<video>``).

    ``corpus``: the sentences the BPE merges are learned from (default: a few prompt-like sentences).
    """
    from transformers import Qwen2Tokenizer

    vocab_json, merges_json = _trained_bpe(vocab_size, tuple(corpus) if corpus is not None else _CORPUS)
    tokenizer = Qwen2Tokenizer(
        vocab=json.loads(vocab_json),
        merges=[tuple(pair) for pair in json.loads(merges_json)],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[
            *(t for t in QWEN_SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")), *extra_special_tokens
        ],
        model_max_length=32768,
        errors="replace",
    )
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def tiny_processor(vocab_size: int = 512):
    """``Qwen2_5_VLProcessor`` from the tiny tokenizer, the PIL image processor and the torch video processor."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2_5_VLProcessorTorch(
        image_processor=Qwen2VLImageProcessorPil(size=dict(_TINY_IMAGE_SIZE)),
        tokenizer=tiny_tokenizer(vocab_size),
        video_processor=Qwen2VLVideoProcessorTorch(size=dict(_TINY_VIDEO_SIZE)),
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def _special_ids(tokenizer, extra: tuple[str, ...] = ()) -> dict[str, int]:
    """Qwen's special tokens (and ``extra``) -> their ids in ``tokenizer``."""
    return {t: tokenizer.convert_tokens_to_ids(t) for t in (*QWEN_SPECIAL_TOKENS, *extra)}


#: The special-token ids of the published Qwen2-VL / Qwen2.5-VL / Qwen3-VL vocabularies (the full-size configs).
_PUBLISHED_QWEN_IDS = {"<|endoftext|>": 151643, "<|im_end|>": 151645, "<|vision_start|>": 151652,
                       "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656}

#: The tiny decoders' shapes: hidden 64, MLP 128, two layers, 4 query / 2 key-value heads.
_TINY_DECODER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=8192)


def _decoder_fields(ids: dict[str, int], rope_theta: float, mrope_section: list[int] | None = None, *,
                    interleaved: bool = False, pad: bool = True, **shape: Any) -> dict:
    """A decoder's ``text_config`` fields: ``shape`` (sizes, vocabulary, ...), RMS-norm eps 1e-6, default RoPE at
    ``rope_theta`` (M-RoPE with ``mrope_section``, interleaved as Qwen3-VL's where asked), and the begin / end
    (and, with ``pad``, padding) token ids from ``ids``."""
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": rope_theta}
    if mrope_section is not None:
        rope["mrope_section"] = mrope_section
    if interleaved:
        rope["mrope_interleaved"] = True
    fields = dict(shape, rms_norm_eps=1e-6, rope_parameters=rope, bos_token_id=ids["<|endoftext|>"],
                  eos_token_id=ids["<|im_end|>"])
    if pad:
        fields["pad_token_id"] = ids["<|endoftext|>"]
    return fields


def _vision_token_fields(ids: dict[str, int]) -> dict:
    """The top-level ids of a Qwen-VL config: image and video placeholders, vision start and end."""
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def tiny_qwen2_5_vl_config(tokenizer=None, **overrides: Any):
    """A two-layer Qwen2.5-VL config (hidden 64, 4 query / 2 KV heads of dim 16) with a two-block vision tower.

    ``overrides``: ``text_config`` fields by name (e.g. ``num_hidden_layers=3``), ``vision_config`` fields with a
    ``vision_`` prefix (e.g. ``vision_depth=1``), and top-level fields (``image_token_id``, ...) by name.
    """
    from transformers import Qwen2_5_VLConfig

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    ids = _special_ids(tokenizer)
    text = _decoder_fields(ids, 1_000_000.0, [2, 3, 3], vocab_size=len(tokenizer), **_TINY_DECODER)
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
        window_size=112,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
    )
    top = dict(_vision_token_fields(ids), tie_word_embeddings=False)
    for key, value in overrides.items():
        if key in top:
            top[key] = value
        elif key.startswith("vision_"):
            vision[key[len("vision_"):]] = value
        else:
            text[key] = value
    if "hidden_size" in overrides and "vision_out_hidden_size" not in overrides:
        vision["out_hidden_size"] = text["hidden_size"]
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **top)


def tiny_qwen2_5_vl(
    seed: int = 0,
    *,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
):
    """A randomly initialised tiny Qwen2.5-VL (eval mode) and its offline processor: ``(model, processor)``.

    ``attn_implementation`` is ``"sdpa"`` or ``"eager"``; ``overrides`` go to ``tiny_qwen2_5_vl_config``.
    The weights depend only on ``seed`` (the global RNG state is restored afterwards).
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    processor = tiny_processor()
    config = tiny_qwen2_5_vl_config(processor.tokenizer, **overrides)
    return _random_model(Qwen2_5_VLForConditionalGeneration, config, seed, attn_implementation, dtype), processor


def _random_model(model_class, config, seed: int, attn_implementation: str, dtype: torch.dtype):
    """A randomly initialised ``model_class`` for greedy generation, seeded without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
        # Initial weights are small; widen them so attention patterns are not uniform (sparsity shows up).
        with torch.no_grad():
            for name, param in model.model.language_model.named_parameters():
                if name.endswith(("q_proj.weight", "k_proj.weight")):
                    param.normal_(0.0, 0.25)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.do_sample = False
    return model.eval()


def tiny_qwen2_vl(seed: int = 0, *, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32):
    """A randomly initialised tiny Qwen2-VL (same text shapes as ``tiny_qwen2_5_vl``) and its processor."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    tokenizer = tiny_tokenizer()
    base = tiny_qwen2_5_vl_config(tokenizer)
    text = base.text_config.to_dict()
    vision = dict(depth=2, embed_dim=32, hidden_size=text["hidden_size"], mlp_ratio=2, num_heads=2,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, **_vision_token_fields(_special_ids(tokenizer)))
    processor = Qwen2VLProcessorTorch(
        image_processor=Qwen2VLImageProcessorPil(size=dict(_TINY_IMAGE_SIZE)),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessorTorch(size=dict(_TINY_VIDEO_SIZE)),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    return _random_model(Qwen2VLForConditionalGeneration, config, seed, attn_implementation, dtype), processor


# Qwen3-VL: clip-level pixel bounds (frames x height x width); 8 frames of 128 x 128 stay at their size.
_TINY_QWEN3_VIDEO_SIZE = {"shortest_edge": 2 * 32 * 32, "longest_edge": 16 * 128 * 128}
_TINY_QWEN3_IMAGE_SIZE = {"shortest_edge": 32 * 32, "longest_edge": 128 * 128}
#: LLaVA-OneVision's processor inputs are square frames of the tower's image size (112 here, 384 in the real one).
_TINY_LLAVA_IMAGE_SIZE = 112

# A chat template with the structure of LLaVA-OneVision's: ``<|im_start|>role `` then the turn's images, then its
# videos, then each text part after a newline, ``<|im_end|>``; an assistant header for generation; no system turn.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'video' %}{{ '<video>' }}{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ '\\n' + part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


def _tiny_qwen3_vl_config(moe: bool, tokenizer, **text_overrides: Any):
    """A two-layer Qwen3-VL (or -MoE) config: hidden 64, 4 q / 2 kv heads of dim 16, interleaved M-RoPE, DeepStack
    features from both vision blocks into both decoder layers, patch 16."""
    if moe:
        from transformers import Qwen3VLMoeConfig as Config
    else:
        from transformers import Qwen3VLConfig as Config

    ids = _special_ids(tokenizer)
    text = _decoder_fields(ids, 5_000_000.0, [4, 2, 2], interleaved=True, vocab_size=len(tokenizer), head_dim=16,
                           **_TINY_DECODER)
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
    text.update(text_overrides)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, num_position_embeddings=64,
                  deepstack_visual_indexes=[0, 1])
    return _qwen3_vl_config(Config, ids, text, vision)


def _qwen3_vl_config(config_class, ids: dict[str, int], text: dict, vision: dict):
    """A Qwen3-VL(-MoE) config from its decoder fields and the vision tower's sizes: patches of 16 pixels, 2 frames
    deep, merged 2 x 2 into the decoder's width; untied embeddings."""
    vision = dict(vision, out_hidden_size=text["hidden_size"], patch_size=16, temporal_patch_size=2,
                  spatial_merge_size=2)
    return config_class(text_config=text, vision_config=vision, **_vision_token_fields(ids),
                        tie_word_embeddings=False)


def _tiny_qwen3_vl_processor(tokenizer):
    from transformers import Qwen2VLImageProcessorPil
    from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD

    return Qwen3VLProcessorTorch(
        image_processor=Qwen2VLImageProcessorPil(
            size=dict(_TINY_QWEN3_IMAGE_SIZE), patch_size=16, image_mean=IMAGENET_STANDARD_MEAN,
            image_std=IMAGENET_STANDARD_STD,
        ),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessorTorch(size=dict(_TINY_QWEN3_VIDEO_SIZE)),
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def tiny_qwen3_vl(
    seed: int = 0, *, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32, **text_overrides: Any
):
    """A randomly initialised tiny Qwen3-VL (eval mode) and its offline processor: ``(model, processor)``.

    The processor writes Qwen3-VL's ``<t seconds>`` timestamp before every frame (pass ``fps`` to
    :func:`video_chat_inputs` for real times). ``text_overrides`` replace decoder config fields.
    """
    from transformers import Qwen3VLForConditionalGeneration

    tokenizer = tiny_tokenizer()
    config = _tiny_qwen3_vl_config(False, tokenizer, **text_overrides)
    model = _random_model(Qwen3VLForConditionalGeneration, config, seed, attn_implementation, dtype)
    return model, _tiny_qwen3_vl_processor(tokenizer)


def tiny_qwen3_vl_moe(
    seed: int = 0, *, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32, **text_overrides: Any
):
    """A randomly initialised tiny Qwen3-VL-MoE (4 experts, 2 per token) and its offline processor."""
    from transformers import Qwen3VLMoeForConditionalGeneration

    tokenizer = tiny_tokenizer()
    config = _tiny_qwen3_vl_config(True, tokenizer, **text_overrides)
    model = _random_model(Qwen3VLMoeForConditionalGeneration, config, seed, attn_implementation, dtype)
    return model, _tiny_qwen3_vl_processor(tokenizer)


def tiny_llava_onevision(
    seed: int = 0, *, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32, **text_overrides: Any
):
    """A randomly initialised tiny LLaVA-OneVision and its offline processor: ``(model, processor)``.

    SigLIP tower (2 layers, 112-pixel inputs in 14-pixel patches: an 8 x 8 grid, pooled to 4 x 4 = 16 tokens per
    video frame, plus one image-newline token per video) and a two-layer Qwen2 decoder (hidden 64, 4 q / 2 kv heads).
    """
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision import LlavaOnevisionImageProcessorPil

    tokenizer = tiny_tokenizer(extra_special_tokens=("<image>", "<video>"))
    ids = _special_ids(tokenizer, ("<image>", "<video>"))
    size, patch = _TINY_LLAVA_IMAGE_SIZE, 14
    text = _decoder_fields(ids, 1_000_000.0, model_type="qwen2", vocab_size=len(tokenizer),
                           tie_word_embeddings=False, **_TINY_DECODER)
    text.update(text_overrides)
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=size,
        patch_size=patch,
        vision_use_head=False,
    )
    pinpoints = [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    config = LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    model = _random_model(LlavaOnevisionForConditionalGeneration, config, seed, attn_implementation, dtype)
    processor = LlavaOnevisionProcessorTorch(
        image_processor=LlavaOnevisionImageProcessorPil(
            size={"height": size, "width": size}, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessorTorch(size={"height": size, "width": size}),
        num_image_tokens=(size // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
        vision_aspect_ratio="anyres_max_9",
    )
    return model, processor


#: family name -> builder of its tiny ``(model, processor)``
TINY_MODELS = {
    "qwen2_5_vl": lambda seed=0, **kw: tiny_qwen2_5_vl(seed, **kw),
    "qwen2_vl": lambda seed=0, **kw: tiny_qwen2_vl(seed, **kw),
    "qwen3_vl": lambda seed=0, **kw: tiny_qwen3_vl(seed, **kw),
    "qwen3_vl_moe": lambda seed=0, **kw: tiny_qwen3_vl_moe(seed, **kw),
    "llava_onevision": lambda seed=0, **kw: tiny_llava_onevision(seed, **kw),
}


def tiny_model(family: str, seed: int = 0, **kwargs: Any):
    """The tiny random ``(model, processor)`` of a supported family (a key of ``TINY_MODELS``)."""
    if family not in TINY_MODELS:
        raise ValueError(f"no tiny model for family {family!r}; families: {sorted(TINY_MODELS)}")
    return TINY_MODELS[family](seed, **kwargs)


def save_tiny_model(family: str, path: str | os.PathLike, seed: int = 0, **kwargs: Any) -> Path:
    """Save ``tiny_model(family, seed, **kwargs)`` (model and processor) to ``path`` as a stock folder."""
    path = Path(path)
    model, processor = tiny_model(family, seed, **kwargs)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_tiny_qwen2_5_vl(path: str | os.PathLike, seed: int = 0, **overrides: Any) -> Path:
    """Save ``tiny_qwen2_5_vl(seed, **overrides)`` (model and processor) to ``path``; returns the path."""
    path = Path(path)
    model, processor = tiny_qwen2_5_vl(seed, **overrides)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def synthetic_video(
    num_frames: int = 8,
    height: int = 56,
    width: int = 56,
    *,
    seed: int = 0,
) -> np.ndarray:
    """A ``[T, H, W, 3]`` uint8 video: a noisy background with a square moving left to right."""
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"num_frames, height and width must be >= 1, got {num_frames}, {height}, {width}")
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 64, size=(num_frames, height, width, 3), dtype=np.uint8)
    side = max(2, min(height, width) // 4)
    for t in range(num_frames):
        x = int((width - side) * t / max(1, num_frames - 1))
        y = (height - side) // 2
        frames[t, y : y + side, x : x + side] = (220, 40, 40)
    return frames


def video_chat_inputs(
    processor, video: np.ndarray | list[np.ndarray], question: str | list[str], *, fps: float | None = None
):
    """Processor inputs (``pt`` tensors, left padding) for one or more (video, question) chat prompts.

    ``fps``: the frames' rate, passed as video metadata (Qwen3-VL's timestamps and Qwen2.5-VL's temporal
    positions read it); None passes no metadata.
    """
    videos = video if isinstance(video, list) else [video]
    questions = question if isinstance(question, list) else [question] * len(videos)
    if len(questions) != len(videos):
        raise ValueError(f"got {len(videos)} videos but {len(questions)} questions; pass one question per video")
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q}]}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for q in questions
    ]
    processor.tokenizer.padding_side = "left"
    extra: dict[str, Any] = {}
    if fps is not None:
        extra["video_metadata"] = [
            {"fps": float(fps), "total_num_frames": int(v.shape[0]), "frames_indices": list(range(int(v.shape[0])))}
            for v in videos
        ]
    return processor(text=texts, videos=videos, return_tensors="pt", padding=True, **extra)


def qwen2_5_vl_7b_text_config(**overrides: Any):
    """The language-model config of Qwen2.5-VL-7B (hidden 3584, 28 layers, 28 q / 4 kv heads of dim 128, MLP 18944).

    For random-weight benchmarks of real layer shapes; ``overrides`` replace fields (e.g. ``num_hidden_layers=2``).
    """
    from transformers import Qwen2_5_VLTextConfig

    fields = _decoder_fields(_PUBLISHED_QWEN_IDS, 1_000_000.0, [16, 24, 24], pad=False, vocab_size=152064,
                             hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                             num_key_value_heads=4, max_position_embeddings=128000, hidden_act="silu")
    fields.update(overrides)
    return Qwen2_5_VLTextConfig(**fields)


def qwen2_5_vl_7b_config(**text_overrides: Any):
    """Full Qwen2.5-VL-7B config (real vision tower shapes too), e.g. for ``_from_config`` on a GPU."""
    from transformers import Qwen2_5_VLConfig

    vision = dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=3584,
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
    )
    text = qwen2_5_vl_7b_text_config(**text_overrides)
    return Qwen2_5_VLConfig(text_config=text.to_dict(), vision_config=vision,
                            **_vision_token_fields(_PUBLISHED_QWEN_IDS))


def qwen3_vl_8b_config(**text_overrides: Any):
    """A Qwen3-VL-8B-shaped config (decoder: hidden 4096, 36 layers, 32 q / 8 kv heads of dim 128, MLP 12288,
    interleaved M-RoPE sections 24/20/20; vision: 27 blocks of width 1152, patch 16, DeepStack from blocks 8/16/24).

    The shapes are those published for Qwen3-VL-8B-Instruct (its config could not be downloaded here to check);
    for random-weight benchmarks of real layer shapes. ``text_overrides`` replace decoder fields.
    """
    from transformers import Qwen3VLConfig

    text = _decoder_fields(_PUBLISHED_QWEN_IDS, 5_000_000.0, [24, 20, 20], interleaved=True, pad=False,
                           vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                           num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                           max_position_embeddings=262144, hidden_act="silu")
    text.update(text_overrides)
    vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, num_position_embeddings=2304,
                  deepstack_visual_indexes=[8, 16, 24])
    return _qwen3_vl_config(Qwen3VLConfig, _PUBLISHED_QWEN_IDS, text, vision)
