"""Triton kernels and their plain-PyTorch references (the reference defines the maths).

``blockwise.pyramid_attention_blockwise`` computes the same maths in plain PyTorch, one query block at a time,
visiting only the kept keys: the CPU path of a patched model.
"""

from .blocks import FULL, INVISIBLE, PARTIAL, VALID_LEVELS, block_classes, causal_block_mask, diagonal_block_mask, plan_shape
from .kv_pyramid import KVPyramid, build_kv_pyramid
from .plan_lists import CompiledPlan, compile_plan
from .pyramid import pyramid_attention

__all__ = [
    "pyramid_attention",
    "build_kv_pyramid",
    "compile_plan",
    "KVPyramid",
    "CompiledPlan",
    "block_classes",
    "causal_block_mask",
    "diagonal_block_mask",
    "plan_shape",
    "VALID_LEVELS",
    "FULL",
    "PARTIAL",
    "INVISIBLE",
]
