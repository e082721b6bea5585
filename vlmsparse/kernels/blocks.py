"""Block geometry shared by the kernel, its reference and the planners.

A prefill of ``Lq`` queries against ``Lk`` keys is cut into query blocks of ``block_m`` rows and key blocks
of ``block_n`` keys. Queries are the last ``Lq`` positions (bottom-right causal alignment): query row ``i``
sees key ``j`` iff ``j <= i + Lk - Lq``.
"""

from __future__ import annotations

import torch

#: Levels a plan may hold: 0 skip, 1 exact, p > 1 keys mean-pooled in groups of p.
VALID_LEVELS = (0, 1, 2, 4, 8)
POOLED_LEVELS = (2, 4, 8)
VALID_BLOCK_SIZES = (16, 32, 64, 128)

#: Block classes returned by :func:`block_classes`.
INVISIBLE = 0  # no query of the query block sees any key of the key block
FULL = 1  # every query of the query block sees every key of the key block
PARTIAL = 2  # the key block meets the causal diagonal: visibility differs per query


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def plan_shape(batch: int, heads: int, q_len: int, k_len: int, block_m: int, block_n: int) -> tuple[int, int, int, int]:
    """Shape of a ``levels`` tensor: ``[B, Hm, ceil(Lq / block_m), ceil(Lk / block_n)]``."""
    return (batch, heads, cdiv(q_len, block_m), cdiv(k_len, block_n))


def block_classes(
    q_len: int,
    k_len: int,
    block_m: int,
    block_n: int,
    causal: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Class of every (query block, key block) pair: ``INVISIBLE``, ``FULL`` or ``PARTIAL``.

    Returns an int8 tensor ``[ceil(Lq / block_m), ceil(Lk / block_n)]``. Without ``causal`` every pair is FULL.
    """
    n_qb, n_kb = cdiv(q_len, block_m), cdiv(k_len, block_n)
    if not causal:
        return torch.full((n_qb, n_kb), FULL, dtype=torch.int8, device=device)
    offset = k_len - q_len
    qb = torch.arange(n_qb, device=device)
    kb = torch.arange(n_kb, device=device)
    first_row = qb * block_m
    last_row = torch.clamp((qb + 1) * block_m, max=q_len) - 1
    key_start = kb * block_n
    key_end = torch.clamp((kb + 1) * block_n, max=k_len)  # exclusive
    # every key of J is at or before the first query's causal limit
    full = key_end[None, :] <= (first_row + offset + 1)[:, None]
    # no key of J is at or before the last query's causal limit
    invisible = key_start[None, :] > (last_row + offset)[:, None]
    cls = torch.full((n_qb, n_kb), PARTIAL, dtype=torch.int8, device=device)
    cls[full] = FULL
    cls[invisible] = INVISIBLE
    return cls


def causal_block_mask(
    q_len: int, k_len: int, block_m: int, block_n: int, causal: bool = True, device: torch.device | str | None = None
) -> torch.Tensor:
    """Bool ``[nQB, nKB]``: the blocks of the causal block grid (those any query can see)."""
    return block_classes(q_len, k_len, block_m, block_n, causal, device) != INVISIBLE


def diagonal_block_mask(
    q_len: int, k_len: int, block_m: int, block_n: int, causal: bool = True, device: torch.device | str | None = None
) -> torch.Tensor:
    """Bool ``[nQB, nKB]``: the key blocks that meet the causal diagonal of each query block."""
    return block_classes(q_len, k_len, block_m, block_n, causal, device) == PARTIAL
