"""Synthetic video-like q / k / v with space-time locality, for fidelity and speed benchmarks.

Visual tokens sit on a ``(frame, row, column)`` grid. Each token's content is a smooth random field of its
position (random Fourier features of an RBF kernel, so ``E[z(p) . z(p')] / D ~ exp(-|p - p'|^2 / 2)`` in
units of per-axis length scales), mixing a local and a global scale, plus per-token noise. Keys and queries
of a kv-group are noisy views of the same field through a per-kv-head rotation, so a query attends most to
keys near it in space and time; each query head has its own sharpness (some heads local, some diffuse).
Values are smooth in position too. A text prefix (system prompt) and suffix (question) hold unstructured
tokens; the first key is an attention sink. Nothing here is fitted to a real model: it only has the kind of
structure that block-sparse planners exploit.
"""

from __future__ import annotations

import math

import torch

__all__ = ["video_qkv", "video_grid_positions"]


def video_grid_positions(frames: int, height: int, width: int) -> torch.Tensor:
    """``(frame, row, column)`` of every visual token in raster order, float ``[frames * height * width, 3]``."""
    t, y, x = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([t, y, x], -1).reshape(-1, 3).float()


def _fourier_field(pos: torch.Tensor, scales: tuple[float, float, float], dim: int, gen: torch.Generator) -> torch.Tensor:
    """Random Fourier features of ``pos [N, 3]`` for an RBF kernel with per-axis length ``scales``: ``[N, dim]``."""
    w = torch.randn(3, dim, generator=gen) / torch.tensor(scales)[:, None]
    b = torch.rand(dim, generator=gen) * 2 * math.pi
    return math.sqrt(2.0) * torch.cos(pos @ w + b)


def _rotation(dim: int, gen: torch.Generator) -> torch.Tensor:
    qmat, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen))
    return qmat


def video_qkv(
    frames: int,
    height: int,
    width: int,
    text_prefix: int = 64,
    text_suffix: int = 32,
    heads_q: int = 28,
    heads_kv: int = 4,
    head_dim: int = 128,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    *,
    local_scale: tuple[float, float, float] = (1.5, 2.0, 2.0),
    global_scale: tuple[float, float, float] = (8.0, 8.0, 8.0),
    local_weight: float = 0.6,
    noise: float = 0.4,
    sharpness: tuple[float, float] = (0.5, 1.5),
    sink: float = 8.0,
    batch: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Video-like attention inputs in the layout ``[text prefix | frames x height x width | text suffix]``.

    Args:
        frames, height, width: the visual token grid (e.g. Qwen2.5-VL merges 2x2 patches and 2 frames per
            temporal token, so 64 sampled frames at 448x448 give 32 x 16 x 16 tokens).
        text_prefix, text_suffix: text tokens before and after the video.
        heads_q, heads_kv, head_dim: head shapes (defaults: Qwen2.5-VL-7B, 28 / 4 / 128).
        local_scale, global_scale: RBF length scales (frames, rows, columns) of the two field components;
            ``local_weight`` is the share of variance of the local one.
        noise: per-token noise standard deviation, relative to the field's (unit) per-dimension scale.
        sharpness: range of per-query-head logit scales (spread evenly over the heads of a group).
        sink: logit bonus of the first key for every query (an attention sink).
        batch: batch size (every row gets its own draw).

    Returns:
        ``q [B, Hq, L, D]``, ``k, v [B, Hkv, L, D]`` in ``dtype`` on ``device``, and ``visual`` bool ``[B, L]``.
    """
    if heads_q % heads_kv:
        raise ValueError(f"heads_q ({heads_q}) must be a multiple of heads_kv ({heads_kv})")
    if min(frames, height, width) < 1 or min(text_prefix, text_suffix) < 0:
        raise ValueError("frames, height and width must be >= 1 and text lengths >= 0")
    gen = torch.Generator().manual_seed(seed)
    pos = video_grid_positions(frames, height, width)
    n_vis = pos.shape[0]
    length = text_prefix + n_vis + text_suffix
    group = heads_q // heads_kv
    d = head_dim
    qs, ks, vs = [], [], []
    for _ in range(batch):
        q_b = torch.empty(heads_q, length, d)
        k_b = torch.empty(heads_kv, length, d)
        v_b = torch.empty(heads_kv, length, d)
        for h in range(heads_kv):  # data generation, not planning: a loop over heads is fine here
            field = math.sqrt(local_weight) * _fourier_field(pos, local_scale, d, gen) + math.sqrt(
                1 - local_weight
            ) * _fourier_field(pos, global_scale, d, gen)
            text = torch.randn(text_prefix + text_suffix, d, generator=gen)
            z = torch.cat([text[:text_prefix], field, text[text_prefix:]], 0)  # [L, D], unit variance per dim
            rot = _rotation(d, gen)
            zk = (z + noise * torch.randn(length, d, generator=gen)) @ rot
            k_b[h] = zk / math.sqrt(1 + noise**2)
            vfield = math.sqrt(local_weight) * _fourier_field(pos, local_scale, d, gen) + math.sqrt(
                1 - local_weight
            ) * _fourier_field(pos, global_scale, d, gen)
            vz = torch.cat([torch.randn(text_prefix, d, generator=gen), vfield, torch.randn(text_suffix, d, generator=gen)])
            v_b[h] = 0.8 * vz + 0.6 * torch.randn(length, d, generator=gen)
            # attention sink: key 0 gets a component sqrt(D) along a unit direction u, every query sink * u,
            # so q . k_0 / sqrt(D) gains `sink` (other keys gain sink * N(0, 1) / sqrt(D), small)
            u = torch.randn(d, generator=gen)
            u = u / u.norm()
            k_b[h, 0] = k_b[h, 0] + math.sqrt(d) * u
            for g in range(group):
                s = sharpness[0] + (sharpness[1] - sharpness[0]) * (g / max(group - 1, 1))
                zq = (z + noise * torch.randn(length, d, generator=gen)) @ rot / math.sqrt(1 + noise**2)
                # logits q . k / sqrt(D) ~ s * sqrt(D) * (field similarity)
                q_b[h * group + g] = s * zq + sink * u
        qs.append(q_b)
        ks.append(k_b)
        vs.append(v_b)
    visual = torch.zeros(length, dtype=torch.bool)
    visual[text_prefix : text_prefix + n_vis] = True
    q = torch.stack(qs).to(device=device, dtype=dtype)
    k = torch.stack(ks).to(device=device, dtype=dtype)
    v = torch.stack(vs).to(device=device, dtype=dtype)
    return q, k, v, visual[None].expand(batch, -1).clone().to(device)
