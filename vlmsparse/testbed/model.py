"""The testbed's architecture: a small ``Qwen2_5_VLForConditionalGeneration`` and its offline processor.

The decoder keeps the 7B model's grouped-query ratio (7 query heads share each key/value head) and its
multimodal rotary layout (temporal / height / width sections in the 7B's 1/4 : 3/8 : 3/8 proportion); the
vision tower is the real Qwen2.5-VL one (patch embedding over 2 frames x 14 x 14 pixels, rotary 2-D
positions, window attention, a full-attention last block, the 2 x 2 patch merger), only small. Its window
is 56 pixels (2 x 2 merged tokens) and frames are 112 pixels by default, so each frame holds 4 windows.

The tokenizer is a byte-level BPE learned offline from the benchmark's own prompts (so its words are few
tokens), wrapped in ``Qwen2Tokenizer`` with Qwen's special tokens and chat template.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..eval.needle import COLOURS, DIGITS, FIXED_COLOURS, QUESTION_COLOUR, QUESTION_DIGIT, QUESTION_SHAPE, SHAPES, describe
from ..eval.prompts import OPTION_PROMPT, POST_PROMPT, build_prompt

__all__ = ["TestbedSpec", "corpus", "testbed_processor", "testbed_config", "build_testbed"]


@dataclass(frozen=True)
class TestbedSpec:
    """Sizes of the testbed model (defaults: the shipped checkpoint's)."""

    hidden_size: int = 224
    intermediate_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 7
    num_key_value_heads: int = 1
    max_position_embeddings: int = 16384
    rope_theta: float = 1_000_000.0
    vision_depth: int = 2
    vision_hidden_size: int = 128
    vision_intermediate_size: int = 256
    vision_num_heads: int = 4
    window_size: int = 56
    fullatt_block_indexes: tuple[int, ...] = (1,)
    vocab_size: int = 640
    frame_size: int = 112

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        head_dim = self.hidden_size // self.num_attention_heads
        if head_dim % 8:
            raise ValueError(f"head dim {head_dim} must be a multiple of 8 (rotary sections)")
        if self.vision_hidden_size % self.vision_num_heads:
            raise ValueError("vision_hidden_size must be a multiple of vision_num_heads")
        if any(not 0 <= i < self.vision_depth for i in self.fullatt_block_indexes):
            raise ValueError(f"fullatt_block_indexes must lie in [0, {self.vision_depth})")
        if self.window_size % 28 or self.frame_size % 28:
            raise ValueError("window_size and frame_size must be multiples of 28 pixels")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def mrope_section(self) -> list[int]:
        """Temporal, height, width shares of the rotary frequencies (the 7B's 16/24/24 of 64, scaled)."""
        half = self.head_dim // 2
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fullatt_block_indexes"] = list(self.fullatt_block_indexes)
        return out


def corpus() -> tuple[str, ...]:
    """Sentences the tokenizer learns its merges from: the benchmark's prompts and every option text."""
    shapes = [describe("shape", c, s) for c in COLOURS for s in SHAPES]
    digits = [describe("digit", "red", d) for d in DIGITS]
    lines = [
        "You are a helpful assistant.",
        OPTION_PROMPT,
        POST_PROMPT,
        build_prompt(QUESTION_SHAPE, shapes[:4]),
        build_prompt(QUESTION_DIGIT, digits[:4]),
        build_prompt(QUESTION_COLOUR, list(FIXED_COLOURS)),
        " ".join(shapes),
        " ".join(digits),
        "A. B. C. D. A B C D",
    ]
    return tuple(lines * 4)


def testbed_processor(spec: TestbedSpec = TestbedSpec()):
    """The offline ``Qwen2_5_VLProcessor``: BPE tokenizer, PIL image processor, torch video processor.

    Videos given without ``do_resize=False`` are resized to at most ``frame_size`` x ``frame_size`` pixels.
    """
    from transformers import Qwen2VLImageProcessorPil

    from ..model.processor import Qwen2_5_VLProcessorTorch
    from ..model.video_processing import Qwen2VLVideoProcessorTorch
    from ..testing import QWEN_CHAT_TEMPLATE, tiny_tokenizer

    size = {"shortest_edge": 28 * 28, "longest_edge": spec.frame_size * spec.frame_size}
    tokenizer = tiny_tokenizer(spec.vocab_size, corpus=corpus())
    tokenizer.model_max_length = spec.max_position_embeddings
    return Qwen2_5_VLProcessorTorch(
        image_processor=Qwen2VLImageProcessorPil(size=dict(size)),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessorTorch(size=dict(size)),
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def testbed_config(tokenizer, spec: TestbedSpec = TestbedSpec()):
    """``Qwen2_5_VLConfig`` of the testbed for ``tokenizer``'s vocabulary and special tokens."""
    from ..testing import tiny_qwen2_5_vl_config

    return tiny_qwen2_5_vl_config(
        tokenizer,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta, "mrope_section": spec.mrope_section()},
        vision_depth=spec.vision_depth,
        vision_hidden_size=spec.vision_hidden_size,
        vision_intermediate_size=spec.vision_intermediate_size,
        vision_num_heads=spec.vision_num_heads,
        vision_out_hidden_size=spec.hidden_size,
        vision_window_size=spec.window_size,
        vision_fullatt_block_indexes=list(spec.fullatt_block_indexes),
    )


def build_testbed(spec: TestbedSpec = TestbedSpec(), *, seed: int = 0, attn_implementation: str = "sdpa"):
    """A freshly initialised testbed ``(model, processor)`` (float32, train mode off)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    processor = testbed_processor(spec)
    config = testbed_config(processor.tokenizer, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation=attn_implementation)
    gen = model.generation_config
    gen.pad_token_id = config.text_config.pad_token_id
    gen.eos_token_id = config.text_config.eos_token_id
    gen.do_sample = False
    return model.eval(), processor

