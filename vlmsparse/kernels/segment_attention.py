"""Block-diagonal (segment) attention for vision towers: every window or frame of a packed sequence in one launch.

A vision tower such as Qwen2.5-VL's packs all patches of a clip into one sequence of ``N`` tokens and lets each
token attend, non-causally, only to the tokens of its own segment: a window of the frame in most layers, the
whole frame in a few. The segments are given as ``cu_seqlens`` (``[S + 1]``, ``0 = c_0 <= c_1 <= ... <= c_S = N``;
segment ``s`` is ``[c_s, c_{s+1})``; empty segments are allowed).

For ``q [1, Hq, N, D]`` and ``k, v [1, Hkv, N, D]`` (``Hq % Hkv == 0``), row ``i`` of segment ``s`` is

    out[i] = softmax_j(scale * q[i] . k[j]) @ v      over the keys j of segment s

(``scale = 1 / sqrt(D)`` unless given): the same maths as one ``scaled_dot_product_attention`` call per segment.

- :func:`segment_attention_ref`: that definition, one segment at a time in float64 (exact, slow).
- :func:`segment_attention`: the Triton kernel. One program handles one (query block, q-head) and visits only the
  key blocks that span the segments of its rows, with token masks where a block crosses a segment edge; segment
  sizes need not be multiples of the block. Inputs may have any strides with the head dim contiguous (the layout
  transformers hands the attention function); the output is ``[1, Hq, N, D]``, a view of a contiguous
  ``[1, N, Hq, D]`` buffer, so ``out.transpose(1, 2)`` is contiguous.
- :func:`segment_layout`: the per-token segment ids and per-query-block key ranges the kernel reads; build it
  once per ``cu_seqlens`` and pass it to every layer that uses the same segments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .validation import SUPPORTED_DTYPES, interpreting, triton_can_run

__all__ = ["SegmentLayout", "segment_layout", "segment_attention", "segment_attention_ref"]

LOG2E = 1.4426950408889634


def _check_cu_seqlens(cu_seqlens: torch.Tensor, n: int) -> tuple[int, int]:
    """Validate ``cu_seqlens`` against a sequence of ``n`` tokens; returns (segments, longest segment)."""
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError("cu_seqlens must be a 1-D integer tensor [S + 1] of cumulative segment lengths, from 0 to N")
    if cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype == torch.bool:
        raise ValueError(f"cu_seqlens must hold integers, got {cu_seqlens.dtype}")
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    first, last, shortest, longest = torch.stack(
        [cu_seqlens[0], cu_seqlens[-1], lengths.min(), lengths.max()]
    ).tolist()  # one device sync
    if first != 0 or last != n:
        raise ValueError(f"cu_seqlens must run from 0 to N={n} (the sequence length), got {first} .. {last}")
    if shortest < 0:
        raise ValueError("cu_seqlens must be non-decreasing (segment lengths >= 0)")
    return cu_seqlens.numel() - 1, int(longest)


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor [1, heads, N, head_dim], got {getattr(t, 'shape', t)}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"{name} must be bfloat16, float16 or float32, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise ValueError("q, k and v must share one dtype and one device")
    if q.shape[0] != 1 or k.shape[0] != 1 or v.shape[0] != 1:
        raise ValueError(
            f"segment attention takes one packed sequence (batch 1) with segments given by cu_seqlens, got batch "
            f"{q.shape[0]}; pack the samples into one sequence and pass their boundaries as cu_seqlens"
        )
    if k.shape != v.shape or k.shape[2] != q.shape[2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"k and v must be [1, Hkv, N, D] like q {tuple(q.shape)}, got {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"q heads ({q.shape[1]}) must be a multiple of k/v heads ({k.shape[1]})")
    if q.shape[2] < 1:
        raise ValueError("the sequence is empty (N = 0): there is nothing to attend")
    if not 16 <= q.shape[3] <= 256:
        raise ValueError(f"head_dim must be between 16 and 256, got {q.shape[3]}")


def segment_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    sm_scale: float | None = None,
    compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Segment attention by its definition: one segment at a time, logits and softmax in ``compute_dtype``.

    Args:
        q: ``[1, Hq, N, D]``; k, v: ``[1, Hkv, N, D]``.
        cu_seqlens: ``[S + 1]`` cumulative segment lengths from 0 to ``N``.
        sm_scale: logit scale, ``1 / sqrt(D)`` by default.

    Returns:
        ``[1, Hq, N, D]`` in the dtype of ``q``.
    """
    _check_qkv(q, k, v)
    n, d = q.shape[2], q.shape[3]
    _check_cu_seqlens(cu_seqlens, n)
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    group = q.shape[1] // k.shape[1]
    out = torch.empty(1, n, q.shape[1], d, dtype=q.dtype, device=q.device).transpose(1, 2)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        qs = q[0, :, start:end].to(compute_dtype)
        ks = k[0, :, start:end].to(compute_dtype).repeat_interleave(group, dim=0)
        vs = v[0, :, start:end].to(compute_dtype).repeat_interleave(group, dim=0)
        weights = torch.softmax(scale * qs @ ks.transpose(-1, -2), dim=-1)
        out[0, :, start:end] = (weights @ vs).to(q.dtype)
    return out


@dataclass(frozen=True)
class SegmentLayout:
    """What the kernel reads about the segments, for one ``cu_seqlens`` and one query block size.

    Attributes:
        segment_ids: ``[N]`` int32, the segment of each token.
        key_start, key_end: ``[ceil(N / block_m)]`` int32, the keys query block ``b`` must visit: from the start of
            the segment of its first row to the end of the segment of its last row.
        n: the sequence length; segments: ``S``; longest: the longest segment; block_m: the query block size.
    """

    segment_ids: torch.Tensor
    key_start: torch.Tensor
    key_end: torch.Tensor
    n: int
    segments: int
    longest: int
    block_m: int


def default_blocks(longest: int) -> tuple[int, int]:
    """``(block_m, block_n)`` for segments of at most ``longest`` tokens: 64 x 64 for windows, 128 x 64 beyond."""
    return (64, 64) if longest <= 128 else (128, 64)


def segment_layout(cu_seqlens: torch.Tensor, n: int, block_m: int | None = None) -> SegmentLayout:
    """Build the :class:`SegmentLayout` of ``cu_seqlens`` over ``n`` tokens (validated: one device sync).

    ``block_m`` defaults to :func:`default_blocks` of the longest segment.
    """
    segments, longest = _check_cu_seqlens(cu_seqlens, n)
    if block_m is None:
        block_m = default_blocks(longest)[0]
    if block_m not in (16, 32, 64, 128):
        raise ValueError(f"block_m must be one of 16, 32, 64, 128, got {block_m}")
    cu = cu_seqlens.to(torch.int64)
    lengths = cu[1:] - cu[:-1]
    ids = torch.arange(segments, device=cu.device, dtype=torch.int32)
    segment_ids = torch.repeat_interleave(ids, lengths, output_size=n)
    first = torch.arange(0, n, block_m, device=cu.device, dtype=torch.int64)
    last = torch.clamp(first + block_m - 1, max=n - 1)
    # the segment holding row r is the last s with cu[s] <= r (right=True skips empty segments)
    seg_first = torch.searchsorted(cu, first, right=True) - 1
    seg_last = torch.searchsorted(cu, last, right=True) - 1
    key_start = cu[seg_first].to(torch.int32)
    key_end = cu[seg_last + 1].to(torch.int32)
    return SegmentLayout(segment_ids, key_start, key_end, n, segments, longest, block_m)


@triton.jit
def _dot(a, b, UPCAST: tl.constexpr):
    """``a @ b`` in float32; ``UPCAST``: exact float32 products (float32 inputs, or bfloat16 under the interpreter)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _segment_attention_fwd(
    Q, K, V, Out, SegIds, KeyStart, KeyEnd,
    qk_scale,
    stride_qh, stride_qn,
    stride_kh, stride_kn,
    stride_vh, stride_vn,
    stride_oh, stride_on,
    n_q_heads, n_kv_heads, seq_len, head_dim,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST: tl.constexpr,
):
    qblk = tl.program_id(0)
    h = tl.program_id(1)
    kvh = h // (n_q_heads // n_kv_heads)

    offs_m = qblk * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < seq_len
    d_ok = offs_d < head_dim

    rows = offs_m.to(tl.int64)  # offsets in 64 bits: N x row stride passes 2**31 at ~560k vision tokens
    q = tl.load(Q + h * stride_qh + rows[:, None] * stride_qn + offs_d[None, :], mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    seg_q = tl.load(SegIds + offs_m, mask=m_ok, other=-1)
    lo = tl.load(KeyStart + qblk)
    hi = tl.load(KeyEnd + qblk)

    k_base = K + kvh * stride_kh
    v_base = V + kvh * stride_vh
    # finite start: a row whose segment has no key in the current block gets p = 0, never NaN
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start in range(lo, hi, BLOCK_N):
        cols = start + offs_n
        n_ok = cols < hi
        kv_mask = n_ok[:, None] & d_ok[None, :]
        cols64 = cols.to(tl.int64)
        k = tl.load(k_base + cols64[:, None] * stride_kn + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols64[:, None] * stride_vn + offs_d[None, :], mask=kv_mask, other=0.0)
        seg_k = tl.load(SegIds + cols, mask=n_ok, other=-2)
        qk = _dot(q, tl.trans(k), UPCAST) * qk_scale
        qk = tl.where(seg_q[:, None] == seg_k[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if UPCAST:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    l_i = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_i[:, None]
    tl.store(
        Out + h * stride_oh + rows[:, None] * stride_on + offs_d[None, :],
        out.to(Out.dtype.element_ty),
        mask=m_ok[:, None] & d_ok[None, :],
    )


def segment_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    *,
    sm_scale: float | None = None,
    layout: SegmentLayout | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """Non-causal attention within each segment of a packed sequence, in one Triton launch.

    Args:
        q: ``[1, Hq, N, D]``; k, v: ``[1, Hkv, N, D]``; any strides with the last one 1.
        cu_seqlens: ``[S + 1]`` cumulative segment lengths from 0 to ``N`` (or pass ``layout``).
        sm_scale: logit scale, ``1 / sqrt(D)`` by default.
        layout: a :class:`SegmentLayout` built by :func:`segment_layout` for these segments (built here otherwise,
            which costs one device sync).
        block_n: key block size (by default from :func:`default_blocks`).

    Returns:
        ``[1, Hq, N, D]`` in the dtype of ``q``, a view of a contiguous ``[1, N, Hq, D]`` tensor.
    """
    _check_qkv(q, k, v)
    if not triton_can_run(q.device):
        raise ValueError(
            f"segment_attention runs its Triton kernel on a CUDA device, but q is on {q.device}; move the tensors "
            "to CUDA, set TRITON_INTERPRET=1 before importing vlmsparse (slow, for tests), or call "
            "vlmsparse.kernels.segment_attention.segment_attention_ref"
        )
    n, d = q.shape[2], q.shape[3]
    if layout is None:
        if cu_seqlens is None:
            raise ValueError("pass cu_seqlens (the segment boundaries) or a layout built by segment_layout")
        layout = segment_layout(cu_seqlens, n)
    elif layout.n != n:
        raise ValueError(f"layout was built for N={layout.n} tokens but q has {n}; build it for these tensors")
    block_m = layout.block_m
    if block_n is None:
        block_n = default_blocks(layout.longest)[1]
    if block_n not in (16, 32, 64, 128):
        raise ValueError(f"block_n must be one of 16, 32, 64, 128, got {block_n}")
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    hq, hkv = q.shape[1], k.shape[1]
    out = torch.empty(1, n, hq, d, dtype=q.dtype, device=q.device).transpose(1, 2)
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    block_d = max(16, triton.next_power_of_2(d))
    if num_warps is None:
        num_warps = 8 if block_m >= 128 else 4
    if num_stages is None:
        num_stages = 2
    grid = (triton.cdiv(n, block_m), hq)
    _segment_attention_fwd[grid](
        q, k, v, out, layout.segment_ids, layout.key_start, layout.key_end,
        scale * LOG2E,
        q.stride(1), q.stride(2),
        k.stride(1), k.stride(2),
        v.stride(1), v.stride(2),
        out.stride(1), out.stride(2),
        hq, hkv, n, d,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        UPCAST=(q.dtype == torch.float32 or (q.dtype == torch.bfloat16 and interpreting())),
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
