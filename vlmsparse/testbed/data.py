"""Training and scoring batches: needle samples rendered on a device and put through the model's processor.

The prompt is the harness's (``vlmsparse.eval.prompts``: the Video-MME layout, the video first in the user
turn) and the frames go through the same processor call with the same metadata, so the model is trained on
exactly the inputs ``python -m vlmsparse.eval --bench vniah`` gives it. Each text ends with the answer
letter and ``<|im_end|>``; with left padding these are the last two tokens of every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..eval.needle import NeedleConfig, NeedleQuestion, render_batch, video_metadata
from ..eval.prompts import build_prompt, chat_messages
from ..model.processor import sized_frames_kwargs

__all__ = ["NeedleBatch", "needle_batch", "ANSWER_TOKENS"]

#: Tokens the model is trained to produce: the letter, then the end of its turn.
ANSWER_TOKENS = 2
#: Whether the processor took frames on an accelerator (None: not tried yet).
_DEVICE_FRAMES_OK: bool | None = None


@dataclass
class NeedleBatch:
    """Model inputs (on the device), the answer letters' token ids ``[B]`` and the questions."""

    inputs: dict
    answer_ids: torch.Tensor
    end_id: int
    questions: list[NeedleQuestion]

    text_after_video: int = 2

    @property
    def num_visual_tokens(self) -> int:
        grid = self.inputs["video_grid_thw"][0]
        return int(grid.prod()) // 4


def prompt_text(processor, question: NeedleQuestion) -> str:
    """The chat text of one question, ending with the assistant header (as the harness sends it)."""
    prompt = build_prompt(question.question, question.options)
    return processor.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True)


def needle_batch(
    processor,
    seeds: Sequence[Sequence[int]],
    length: int,
    depths: Sequence[float],
    config: NeedleConfig,
    *,
    device: torch.device | str = "cpu",
    with_needle: bool = True,
) -> NeedleBatch:
    """Render ``len(seeds)`` samples of ``length`` frames on ``device`` and build the model's inputs
    (``with_needle=False``: the same questions on the haystack alone, the control)."""
    frames, questions, _ = render_batch(seeds, length, depths, config, device=device, with_needle=with_needle)
    tokenizer = processor.tokenizer
    end = "<|im_end|>"
    texts = [prompt_text(processor, q) + q.answer + end for q in questions]
    size = config.frame_size
    tokenizer.padding_side = "left"
    kwargs = dict(
        text=texts,
        video_metadata=[video_metadata(length, size, size) for _ in questions],
        **sized_frames_kwargs(processor),
        do_sample_frames=False,
        padding=True,
        return_tensors="pt",
    )
    global _DEVICE_FRAMES_OK
    videos = list(frames)
    if frames.device.type != "cpu" and _DEVICE_FRAMES_OK is not False:
        try:
            batch = processor(videos=videos, **kwargs)
            _DEVICE_FRAMES_OK = True
        except Exception as exc:  # the processor does not take device tensors: fall back to the CPU, once said
            if _DEVICE_FRAMES_OK is None:
                print(f"needle_batch: the processor does not take frames on {frames.device} "
                      f"({type(exc).__name__}: {exc}); preprocessing on the CPU", flush=True)
            _DEVICE_FRAMES_OK = False
    if frames.device.type == "cpu" or _DEVICE_FRAMES_OK is False:
        batch = processor(videos=[v.cpu() for v in videos], **kwargs)
    inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    letter_ids = [tokenizer.convert_tokens_to_ids(q.answer) for q in questions]
    answer_ids = torch.tensor(letter_ids, dtype=torch.long, device=device)
    ids = inputs["input_ids"]
    if not bool((ids[:, -2] == answer_ids).all()):
        raise RuntimeError("the answer letter is not one token before <|im_end|>: the tokenizer splits it")
    vision_end = tokenizer.convert_tokens_to_ids("<|vision_end|>")
    positions = torch.arange(ids.shape[1], device=ids.device)
    last_video = torch.where(ids == vision_end, positions, -1).amax(dim=1)
    after = int((ids.shape[1] - 1 - last_video).min())
    return NeedleBatch(inputs, answer_ids, tokenizer.convert_tokens_to_ids(end), questions, text_after_video=after)
