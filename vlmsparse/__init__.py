"""vlmsparse: pyramid sparse attention for long-video understanding with vision-language models.

``vlmsparse.patch(model, method="psa")`` swaps a loaded Hugging Face VLM's prefill attention for the
Triton pyramid sparse attention kernel; ``python -m vlmsparse.eval`` runs Video-MME.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "patch", "get_method"]


def __getattr__(name: str):
    # Imported lazily so that `import vlmsparse.kernels` does not pull in transformers.
    if name == "patch":
        from .model.patcher import patch

        return patch
    if name == "get_method":
        from .methods import get_method

        return get_method
    raise AttributeError(f"module 'vlmsparse' has no attribute {name!r}")
