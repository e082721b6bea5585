"""Block importance estimates shared by the planners (tensor code; nothing ``[Lq, Lk]`` at token level).

- :func:`antidiagonal_block_scores`: the strided antidiagonal estimate of XAttention (also PSA's importance;
  defined in :mod:`vlmsparse.kernels.antidiagonal` beside its Triton kernel, re-exported here).
  Each ``S x S`` tile of the attention matrix is represented by the sum of its antidiagonal,
  ``sum_i q[S a + S - 1 - i] . k[S b + i]``, computed as one matmul of reshaped ``q`` and ``k`` with
  ``S * D`` features; the tile logits (scaled by ``1 / (sqrt(D) S)``) are softmaxed per tile row under a
  tile-level causal mask and summed into blocks. Cost: about ``1 / S`` of the ``QK^T`` of dense attention.
- :func:`pooled_block_scores`: softmax of mean-pooled ``q`` against mean-pooled ``k`` per block (SpargeAttn's
  pooled attention map; PSA's cheaper importance option).
- :func:`block_self_similarity`: mean pairwise cosine similarity of the tokens inside each block.
- :func:`group_heads`: fold per-q-head block tensors onto kv-heads for ``plan_heads = "kv"``.
"""

from __future__ import annotations

import torch

from vlmsparse.kernels.blocks import INVISIBLE, cdiv

from vlmsparse.kernels.antidiagonal import DEFAULT_MAX_ELEMENTS, antidiagonal_block_scores

__all__ = [
    "antidiagonal_block_scores",
    "pooled_block_scores",
    "block_self_similarity",
    "block_means",
    "block_mean_and_similarity",
    "group_heads",
    "visible_key_counts",
    "DEFAULT_MAX_ELEMENTS",
]

def _block_weighted_sums(x: torch.Tensor, weights: torch.Tensor | None, block: int) -> torch.Tensor:
    """``sum_t w_t x_t`` over blocks of ``block`` positions of ``x [B, H, L, D]``: float32 ``[B, H, nB, D]``.

    Reads ``x`` once in its own dtype (no float32 copy of it); a partial last block sums its own positions.
    """
    b, h, length, d = x.shape
    full = length // block
    parts = []
    if full:
        xf = x[:, :, : full * block].reshape(b, h, full, block, d)
        if weights is None:
            parts.append(xf.sum(3, dtype=torch.float32))
        else:
            wf = weights[:, :, : full * block].reshape(b, h, full, 1, block).to(x.dtype)
            parts.append(torch.matmul(wf, xf).squeeze(-2).float())
    if full * block < length:
        xt = x[:, :, full * block :]
        if weights is not None:
            xt = xt * weights[:, :, full * block :, None].to(x.dtype)
        parts.append(xt.sum(2, keepdim=True, dtype=torch.float32))
    return parts[0] if len(parts) == 1 else torch.cat(parts, 2)


def block_means(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean of ``x [B, H, L, D]`` over blocks of ``block`` positions (a partial last block over its own): float32."""
    length = x.shape[2]
    counts = visible_key_counts(length, block, x.device).to(torch.float32)
    return _block_weighted_sums(x, None, block) / counts[:, None]


def block_self_similarity(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean pairwise cosine similarity (self-pairs included) of the tokens in each block: float32 ``[B, H, nB]``.

    Computed as ``|sum of unit vectors|^2 / n^2`` without forming the block's Gram matrix.
    """
    inv_norm = 1.0 / torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32).clamp(min=1e-6)
    sums = _block_weighted_sums(x, inv_norm, block)
    counts = visible_key_counts(x.shape[2], block, x.device).to(torch.float32)
    return sums.pow(2).sum(-1) / counts.pow(2)


def block_mean_and_similarity(
    x: torch.Tensor, block: int, center: torch.Tensor | None = None, use_triton: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`block_means` and :func:`block_self_similarity` of ``x - center`` (``center`` ``[B, H, D]`` or None).

    On CUDA (``use_triton=None``) one Triton launch reads ``x`` once for both; elsewhere plain PyTorch. The
    Triton path weighs tokens by float32 inverse norms where the PyTorch one rounds them to ``x``'s dtype, so
    the two agree to that rounding, not bit for bit.
    """
    if use_triton is None:
        use_triton = x.device.type == "cuda" and block & (block - 1) == 0
    if use_triton:
        from vlmsparse.kernels.block_stats import block_stats_triton

        return block_stats_triton(x, block, center)
    xc = x if center is None else x.float() - center.float()[:, :, None, :]
    return block_means(xc, block), block_self_similarity(xc, block)


def pooled_block_scores(
    q_mean: torch.Tensor,
    k_mean: torch.Tensor,
    classes: torch.Tensor,
    *,
    sm_scale: float,
    key_counts: torch.Tensor | None = None,
    exclude_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax over visible key blocks of pooled logits ``mean(q_I) . mean(k_J) * sm_scale``: ``[B, Hq, nQB, nKB]``.

    Args:
        q_mean: ``[B, Hq, nQB, D]`` block means of q; k_mean: ``[B, Hkv, nKB, D]`` block means of k.
        classes: ``[nQB, nKB]`` block classes; invisible blocks get probability 0.
        key_counts: ``[nKB]`` keys per block; when given, logits get ``+ ln(count)`` (a block of n alike keys
            weighs n keys).
        exclude_keys: bool ``[B, Hq, nKB]``: key blocks left out of the softmax (probability 0).
    """
    b, hq, n_qb, d = q_mean.shape
    hkv = k_mean.shape[1]
    group = hq // hkv
    logits = torch.matmul(q_mean.reshape(b, hkv, group * n_qb, d), k_mean.transpose(-1, -2))
    logits = logits.reshape(b, hq, n_qb, -1) * sm_scale
    if key_counts is not None:
        logits = logits + torch.log(key_counts.to(logits.dtype))
    mask = (classes == INVISIBLE)[None, None]
    if exclude_keys is not None:
        mask = mask | exclude_keys[:, :, None, :]
    probs = torch.softmax(logits.masked_fill(mask, float("-inf")), dim=-1)
    return torch.nan_to_num(probs, nan=0.0)


def group_heads(x: torch.Tensor, kv_heads: int, reduce: str) -> torch.Tensor:
    """Fold ``[B, Hq, ...]`` onto ``[B, Hkv, ...]`` (query heads ``h`` of kv-head ``h // (Hq / Hkv)``).

    ``reduce``: ``"mean"`` (block importance), ``"any"`` (forced masks) or ``"min"`` (pooling allowances).
    """
    b, hq = x.shape[:2]
    if hq == kv_heads:
        return x
    y = x.reshape(b, kv_heads, hq // kv_heads, *x.shape[2:])
    if reduce == "mean":
        return y.mean(2)
    if reduce == "any":
        return y.any(2)
    if reduce == "min":
        return y.amin(2)
    raise ValueError(f"reduce must be 'mean', 'any' or 'min', got {reduce!r}")


def visible_key_counts(k_len: int, block_n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Keys per key block (the last one may be partial): int64 ``[nKB]``."""
    n = cdiv(k_len, block_n)
    return torch.clamp(k_len - torch.arange(n, device=device) * block_n, max=block_n)

