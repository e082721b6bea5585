"""Argument checks shared by the Triton kernel and its reference: every error names the argument."""

from __future__ import annotations

import math
import os

import torch

from .blocks import VALID_BLOCK_SIZES, VALID_LEVELS, plan_shape

SUPPORTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def interpreting() -> bool:
    """Whether Triton kernels run on the CPU through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_can_run(device: torch.device) -> bool:
    """Whether a Triton kernel can run on tensors of ``device``: CUDA, or any device under the interpreter."""
    return device.type == "cuda" or interpreting()


def check_attention_args(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    levels: torch.Tensor,
    block_m: int,
    block_n: int,
    check_values: bool = True,
    *,
    sm_scale: float | None = None,
) -> None:
    """Raise ``ValueError`` unless the arguments fit the pyramid attention contract.

    Only cheap checks (shapes, dtypes, devices, scalars; level values unless ``check_values=False``). Tensor
    values are not checked for NaN or infinity: that would cost a pass over q, k, v and a host sync per call.
    A NaN in q, k or v comes out as NaN in every row that uses it, in the kernel and in the reference alike.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D [batch, heads, seq, head_dim], got shape {tuple(t.shape)}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"{name} must be bfloat16, float16 or float32, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device == levels.device):
        raise ValueError(
            f"q, k, v and levels must be on one device, got {q.device}, {k.device}, {v.device}, {levels.device}"
        )
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    b, hq, lq, d = q.shape
    bk, hkv, lk, dk = k.shape
    if b < 1:
        raise ValueError(f"q has batch 0 (shape {tuple(q.shape)}); call with at least one sample")
    if hq < 1 or hkv < 1:
        raise ValueError(f"q and k need at least one head, got shapes {tuple(q.shape)} and {tuple(k.shape)}")
    if bk != b:
        raise ValueError(f"k has batch {bk} but q has batch {b}")
    if dk != d:
        raise ValueError(f"k has head_dim {dk} but q has head_dim {d}")
    if d > 256 or d < 16:
        raise ValueError(f"head_dim must be between 16 and 256, got {d}")
    if hq % hkv != 0:
        raise ValueError(f"q heads ({hq}) must be a multiple of k/v heads ({hkv}) for grouped-query attention")
    if lq < 1 or lq > lk:
        raise ValueError(f"need 1 <= Lq <= Lk (queries are the last Lq positions), got Lq={lq}, Lk={lk}")
    if sm_scale is not None and (
        isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)) or not math.isfinite(sm_scale)
    ):
        raise ValueError(f"sm_scale must be a finite number (or None for 1/sqrt(head_dim)), got {sm_scale!r}")
    for name, bs in (("block_m", block_m), ("block_n", block_n)):
        if bs not in VALID_BLOCK_SIZES:
            raise ValueError(f"{name} must be one of {VALID_BLOCK_SIZES}, got {bs}")
    if not isinstance(levels, torch.Tensor) or levels.dtype.is_floating_point or levels.dtype == torch.bool:
        raise ValueError("levels must be an integer tensor (e.g. torch.int8) with values in {0, 1, 2, 4, 8}")
    if levels.dim() != 4:
        raise ValueError(
            f"levels must be 4-D [B, Hm, ceil(Lq/block_m), ceil(Lk/block_n)], got shape {tuple(levels.shape)}"
        )
    expected = plan_shape(b, levels.shape[1], lq, lk, block_m, block_n)
    if levels.shape[1] not in (hq, hkv) or tuple(levels.shape) != expected:
        want = plan_shape(b, hq, lq, lk, block_m, block_n)
        raise ValueError(
            f"levels has shape {tuple(levels.shape)}; expected {want} (one plan per q-head) or "
            f"{(b, hkv) + want[2:]} (one per kv-head) for Lq={lq}, Lk={lk}, block_m={block_m}, block_n={block_n}"
        )
    if check_values:
        ok = valid_level_values(levels)
        if not bool(ok.all()):
            raise_bad_level_values(levels, ok)


def valid_level_values(levels: torch.Tensor) -> torch.Tensor:
    """bool, the shape of ``levels``: where its value is a level (one of ``VALID_LEVELS``)."""
    ok = torch.zeros_like(levels, dtype=torch.bool)
    for lv in VALID_LEVELS:
        ok |= levels == lv
    return ok


def raise_bad_level_values(levels: torch.Tensor, ok: torch.Tensor) -> None:
    """The error for ``levels`` whose values are not all levels (``ok``: :func:`valid_level_values`)."""
    bad = levels[~ok].unique()[:8].tolist()
    raise ValueError(f"levels values must be in {VALID_LEVELS}, found {bad}")
