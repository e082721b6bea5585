"""Small device-side counters that launches leave at zero, and the SM count, shared by the kernels that need them.

A launch that hands work out through atomics (the warp-specialized kernel's tile queue, the pyramid launch's count of
finished programs) takes its counter from :func:`stream_counter`: one zeroed buffer per purpose, device and stream,
which the launch's last program sets back to zero, so calls on one stream reuse it without a memset and launches on
two streams never share one.
"""

from __future__ import annotations

import functools

import torch

_COUNTERS: dict = {}


def stream_counter(device: torch.device, n: int, purpose: str) -> torch.Tensor:
    """At least ``n`` zeroed int32 for ``purpose`` on ``device``'s current stream (stream 0 off CUDA)."""
    device = torch.device(device)
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (purpose, str(device), stream)
    counter = _COUNTERS.get(key)
    if counter is None or counter.numel() < n:
        counter = _COUNTERS[key] = torch.zeros(n, dtype=torch.int32, device=device)
    return counter


@functools.lru_cache(maxsize=None)
def sm_count(device: torch.device) -> int:
    """The streaming multiprocessors of a CUDA device; 1 elsewhere."""
    device = torch.device(device)
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
