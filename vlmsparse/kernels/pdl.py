"""Programmatic dependent launch (Hopper and newer): a launch that may start before the launch ahead of it ends.

The attention call is a short chain of launches: the K/V pyramid (when the call builds it), the skipped-block sums
(with tail aggregation), then the attention kernel. Each later launch reads what the one before wrote only in its
second part: the attention kernel's exact-block loop needs only Q, K, V and the plan lists, which were complete
before the chain began; the pooled blocks and the tail's sums come after. With ``launch_pdl`` the later launch's
programs start as soon as the earlier one's have all started, run their first part, and wait
(``griddepcontrol.wait``: the earlier launch complete and its writes visible) where they first read its output.
The gap between two launches, and the earlier launch's last, half-empty wave, then overlap useful work.

Rules that keep this correct:

- only launches that this package makes back to back are chained; the first launch of a chain is an ordinary
  one, so everything before it on the stream is complete when the chain starts;
- every program of a chained launch executes the wait (none may end before the launch ahead of it has), so the
  chain's last launch ending implies the whole chain has ended, whatever follows on the stream;
- nothing read before the wait is written by a launch of the chain.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .validation import interpreting

try:  # Triton >= 3.4 on CUDA
    from triton.backends.nvidia.compiler import CUDAOptions
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    _TRITON_HAS_PDL = "launch_pdl" in getattr(CUDAOptions, "__dataclass_fields__", {})
except Exception:  # pragma: no cover - older Triton, or a build without the CUDA backend
    _TRITON_HAS_PDL = False

#: Use programmatic dependent launch where the device and Triton allow it. ``False`` launches every kernel of a
#: call in plain stream order (the A/B scripts switch it to time both).
ENABLED: bool = True


@functools.cache
def _device_allows(index: int) -> bool:
    return torch.version.hip is None and torch.cuda.get_device_capability(index)[0] >= 9


def pdl_ok(device: torch.device) -> bool:
    """Whether launches on ``device`` may be chained: CUDA on compute capability 9.0 or newer, a Triton that knows
    ``launch_pdl``, not the interpreter, and :data:`ENABLED`."""
    if not ENABLED or not _TRITON_HAS_PDL or device.type != "cuda" or interpreting():
        return False
    return _device_allows(device.index if device.index is not None else torch.cuda.current_device())


@triton.jit
def wait_for_prior(PDL: tl.constexpr):
    """With ``PDL``: block until the launch ahead of this one has ended and its writes are visible."""
    if PDL:
        gdc_wait()


@triton.jit
def release_dependents(PDL: tl.constexpr):
    """With ``PDL``: let the next launch (if chained) start once every program of this one has got here."""
    if PDL:
        gdc_launch_dependents()
