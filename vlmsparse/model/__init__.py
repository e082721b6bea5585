"""The model side: ``vlmsparse.patch`` for a loaded Hugging Face VLM.

- ``patcher``: ``patch(model, method, ...)`` -> ``PatchHandle`` (``stats``, ``unpatch()``, context manager);
  ``observe(model, callback)``: each layer's prefill q/k/v to a callback, the model's own attention unchanged;
- ``attention``: the function registered with transformers' ``AttentionInterface`` (sparse prefill, dense rest);
- ``layout``: which positions are visual / padding, read from ``input_ids`` at each forward;
- ``stats``: achieved sparsity and time;
- ``families``: the supported model families (described in ``patches/``);
- ``video_processing`` / ``processor``: Qwen2-VL video preprocessing and processors without torchvision.
"""

from __future__ import annotations

__all__ = ["patch", "observe", "PatchHandle", "PatchStats", "supported_families", "load_processor"]


def __getattr__(name: str):
    if name in ("patch", "observe", "PatchHandle"):
        from . import patcher

        return getattr(patcher, name)
    if name == "PatchStats":
        from .stats import PatchStats

        return PatchStats
    if name == "supported_families":
        from .families import supported_families

        return supported_families
    if name == "load_processor":
        from .processor import load_processor

        return load_processor
    raise AttributeError(f"module 'vlmsparse.model' has no attribute {name!r}")
