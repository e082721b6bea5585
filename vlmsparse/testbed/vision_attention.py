"""One attention call per vision layer while training the testbed (instead of one per window).

Without flash-attn, transformers runs the Qwen2.5-VL vision tower's window and per-frame attention as a
Python loop of one SDPA call per window. The testbed's frames are all one size and a whole number of
windows, so every window of a call holds the same number of patches: the loop is then exactly one batched
SDPA call over ``[windows, heads, patches, head_dim]``. :func:`batched_vision_attention` swaps that in for
the duration of a block (training and the training-time accuracy checks); a call whose windows differ in
size, or that gets arguments this version does not know, runs the model's own forward. The weights are
the stock model's either way, and the harness never uses this.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F

__all__ = ["batched_vision_attention"]


def _batched_forward(module, original, hidden_states, cu_seqlens, *args, **kwargs):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    position_embeddings = kwargs.get("position_embeddings")
    if args or position_embeddings is None or kwargs.get("rotary_pos_emb") is not None:
        return original(hidden_states, cu_seqlens, *args, **kwargs)
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    size = int(lengths[0])
    if size == 0 or not bool((lengths == size).all()):
        return original(hidden_states, cu_seqlens, *args, **kwargs)
    seq = hidden_states.shape[0]
    heads = module.num_heads
    q, k, v = module.qkv(hidden_states).reshape(seq, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    windows = seq // size
    q, k, v = (t.reshape(windows, size, heads, -1).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, scale=module.scaling)
    return module.proj(out.transpose(1, 2).reshape(seq, -1))


@contextlib.contextmanager
def batched_vision_attention(model: torch.nn.Module) -> Iterator[int]:
    """Within the block, each vision attention layer of ``model`` makes one SDPA call; yields how many layers."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLVisionAttention

    swapped = []
    for module in model.modules():
        if isinstance(module, Qwen2_5_VLVisionAttention):
            original = module.forward

            def forward(hidden_states, cu_seqlens, *args, _m=module, _o=original, **kwargs):
                return _batched_forward(_m, _o, hidden_states, cu_seqlens, *args, **kwargs)

            module.forward = forward
            swapped.append(module)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward  # back to the class's method
