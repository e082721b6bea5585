"""lmms-eval plugins: ``--model vlmsparse_<family>`` runs any lmms-eval task with a vlmsparse method.

lmms-eval (0.7) finds plugin models through the ``lmms_eval.models`` entry-point group; each entry declared in
``pyproject.toml`` points at a manifest function here, which names the model class by its import path. This
module is imported while lmms-eval builds its model registry, so it stays light: the classes (each lmms-eval's
own model for its family with :class:`~vlmsparse.integrations.lmms_eval_sparse.SparsePlugin` mixed in) are
imported only when lmms-eval asks for one::

    python -m lmms_eval --model vlmsparse_qwen2_5_vl \\
        --model_args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,method=psa --tasks videomme --log_samples

=============================  ==================================  ======================================
model name                     family                              built on lmms-eval's
=============================  ==================================  ======================================
``vlmsparse_qwen2_5_vl``       Qwen2.5-VL                          ``qwen2_5_vl`` (chat)
``vlmsparse_qwen3_vl``         Qwen3-VL                            ``qwen3_vl`` (chat)
``vlmsparse_qwen3_vl_moe``     Qwen3-VL-MoE                        ``qwen3_vl`` (chat)
``vlmsparse_llava_onevision``  LLaVA-OneVision / LLaVA-Video       ``llava_hf`` (simple)
=============================  ==================================  ======================================
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CLASS_PATH", "MODEL_ID", "PLUGINS", "model_manifest", "qwen3_vl_manifest", "qwen3_vl_moe_manifest",
    "llava_onevision_manifest",
]  # the classes: imported on access

_PACKAGE = "vlmsparse.integrations"
#: model name -> (import path of the plugin class, whether it is a simple (not chat) lmms-eval model)
PLUGINS: dict[str, tuple[str, bool]] = {
    "vlmsparse_qwen2_5_vl": (f"{_PACKAGE}.lmms_eval_qwen2_5_vl.Qwen2_5_VLSparse", False),
    "vlmsparse_qwen3_vl": (f"{_PACKAGE}.lmms_eval_qwen3_vl.Qwen3_VLSparse", False),
    "vlmsparse_qwen3_vl_moe": (f"{_PACKAGE}.lmms_eval_qwen3_vl.Qwen3_VLMoeSparse", False),
    "vlmsparse_llava_onevision": (f"{_PACKAGE}.lmms_eval_llava_onevision.LlavaOnevisionSparse", True),
}
#: The first plugin's name and class (lmms-eval's ``--model`` takes the name).
MODEL_ID = "vlmsparse_qwen2_5_vl"
CLASS_PATH = PLUGINS[MODEL_ID][0]


def _manifest(model_id: str):
    from lmms_eval.models.registry_v2 import ModelManifest

    path, simple = PLUGINS[model_id]
    return ModelManifest(model_id=model_id, **({"simple_class_path": path} if simple else {"chat_class_path": path}))


def model_manifest():
    """The ``lmms_eval.models`` entry point of ``vlmsparse_qwen2_5_vl``: its ``ModelManifest``."""
    return _manifest("vlmsparse_qwen2_5_vl")


def qwen3_vl_manifest():
    """The entry point of ``vlmsparse_qwen3_vl``."""
    return _manifest("vlmsparse_qwen3_vl")


def qwen3_vl_moe_manifest():
    """The entry point of ``vlmsparse_qwen3_vl_moe``."""
    return _manifest("vlmsparse_qwen3_vl_moe")


def llava_onevision_manifest():
    """The entry point of ``vlmsparse_llava_onevision``."""
    return _manifest("vlmsparse_llava_onevision")


def plugin_class(model_id: str) -> type:
    """The plugin class registered under ``model_id`` (imports it, and lmms-eval's model it builds on)."""
    import importlib

    if model_id not in PLUGINS:
        raise ValueError(f"no vlmsparse lmms-eval model {model_id!r}; models: {sorted(PLUGINS)}")
    module, _, name = PLUGINS[model_id][0].rpartition(".")
    return getattr(importlib.import_module(module), name)


def __getattr__(name: str) -> Any:
    # ``from vlmsparse.integrations.lmms_eval import Qwen2_5_VLSparse`` without importing it at registry time.
    for model_id, (path, _) in PLUGINS.items():
        if path.rsplit(".", 1)[1] == name:
            return plugin_class(model_id)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
