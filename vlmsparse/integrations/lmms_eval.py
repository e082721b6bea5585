"""lmms-eval plugin: ``--model vlmsparse_qwen2_5_vl`` runs any lmms-eval task with a vlmsparse method.

lmms-eval (0.7) finds plugin models through the ``lmms_eval.models`` entry-point group; the entry declared in
``pyproject.toml`` points at :func:`model_manifest`, which names the model class by its import path. This module
is imported while lmms-eval builds its model registry, so it stays light: the class itself
(:class:`~vlmsparse.integrations.lmms_eval_qwen2_5_vl.Qwen2_5_VLSparse`, built on lmms-eval's own Qwen2.5-VL
model) is imported only when lmms-eval asks for it::

    python -m lmms_eval --model vlmsparse_qwen2_5_vl \\
        --model_args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,method=psa --tasks videomme --log_samples
"""

from __future__ import annotations

from typing import Any

__all__ = ["CLASS_PATH", "MODEL_ID", "model_manifest"]  # Qwen2_5_VLSparse: imported on access

#: The name lmms-eval's ``--model`` takes.
MODEL_ID = "vlmsparse_qwen2_5_vl"
#: Import path of the model class (a chat model of lmms-eval, like its own ``qwen2_5_vl``).
CLASS_PATH = "vlmsparse.integrations.lmms_eval_qwen2_5_vl.Qwen2_5_VLSparse"


def model_manifest():
    """The ``lmms_eval.models`` entry point: a ``ModelManifest`` naming the model id and its class path."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, chat_class_path=CLASS_PATH)


def __getattr__(name: str) -> Any:
    # ``from vlmsparse.integrations.lmms_eval import Qwen2_5_VLSparse`` without importing it at registry time.
    if name == "Qwen2_5_VLSparse":
        from .lmms_eval_qwen2_5_vl import Qwen2_5_VLSparse

        return Qwen2_5_VLSparse
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
