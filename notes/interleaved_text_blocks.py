"""How many blocks of a Qwen3-VL video prompt the layout rules make dense, with and without interleaved text.

Qwen3-VL writes ``<t seconds><|vision_start|>`` before and ``<|vision_end|>`` after every frame pair's tokens.
Under the earlier rule (any block holding a text token is dense, as a query block and as a key block) those
timestamps make most blocks dense; under the current one (text inside a visual span is planned as visual,
``vlmsparse.methods.base.planning_visual``) only the prompt's own text is. The prompts are built by the tiny
Qwen3-VL processor of ``vlmsparse.testing`` (its small BPE tokenizer splits digits one by one, as Qwen's does),
with frames sized by the harness's Qwen3-VL rules; no model runs.

Run from the repository root: python notes/interleaved_text_blocks.py
"""

from __future__ import annotations

import numpy as np
import torch

from vlmsparse.eval.families import get_eval_family
from vlmsparse.eval.frames import FrameSpec, frame_size
from vlmsparse.model.families import get_family
from vlmsparse.model.layout import LayoutTracker, planned_block_counts
from vlmsparse.testing import synthetic_video, tiny_qwen3_vl, video_chat_inputs

#: (frames, source height, source width, block size); the first is the tests' tiny prompt
CASES = [(8, 128, 128, 16), (64, 448, 448, 64), (64, 448, 448, 128), (160, 448, 448, 128)]


def layout_of(model, input_ids: torch.Tensor):
    family = get_family("qwen3_vl")
    tracker = LayoutTracker(
        family.visual_token_ids(model.config),
        interleaved_token_ids=family.interleaved_token_ids(model.config),
        interleaved_text_max_run=family.interleaved_text_max_run,
    )
    tracker.pre_hook(model, (), {"input_ids": input_ids})
    return tracker.layout


def main() -> None:
    model, processor = tiny_qwen3_vl()
    spec = FrameSpec(**get_eval_family("qwen3_vl").frame_defaults)
    print("frames  frame    tokens  visual  interleaved  block  rule         visible  dense(forced)  free   dense rows")
    for frames, height, width, block in CASES:
        h, w = (height, width) if frames <= 8 else frame_size(height, width, frames, spec)
        video = synthetic_video(frames, h, w)
        inputs = video_chat_inputs(processor, video, "What happens in this video?", fps=2.0)
        if frames > 8:  # frames sized by the harness: the processor must keep them
            inputs = processor(
                text=[processor.apply_chat_template(
                    [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}],
                    tokenize=False, add_generation_prompt=True)],
                videos=[video], do_resize=False, return_tensors="pt",
                video_metadata=[{"fps": 2.0, "total_num_frames": frames, "frames_indices": list(range(frames))}],
            )
        layout = layout_of(model, inputs["input_ids"])
        n_inter = 0 if layout.interleaved_text is None else int(layout.interleaved_text.sum())
        for rule, as_visual in (("old (text)", False), ("new (visual)", True)):
            c = planned_block_counts(layout.visual, layout.interleaved_text, block, block, interleaved_as_visual=as_visual)
            print(f"{frames:6d}  {h}x{w:<4d} {layout.length:7d}  {int(layout.visual.sum()):6d}  {n_inter:11d}  {block:5d}  "
                  f"{rule:12s} {c['visible']:7d}  {c['forced']:13d}  {c['free']:5d}  {c['dense_rows']:5d}")


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    main()
