"""``vlmsparse_qwen3_vl`` / ``vlmsparse_qwen3_vl_moe``: lmms-eval's own Qwen3-VL chat model with a method patched in.

lmms-eval's ``qwen3_vl`` model samples frames with ``qwen-vl-utils`` (32-pixel patches: ``image_patch_size=16``),
passes the frames' metadata so the processor writes each frame pair's timestamp, and picks the dense or the MoE
class from the checkpoint *name* (``A<n>B`` in it means MoE). The plugins pick the class from the checkpoint's
config instead (a local folder has no such name), and each plugin name takes its own family: a MoE checkpoint
under ``vlmsparse_qwen3_vl`` is an error that names the other plugin, before any weights load.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lmms_eval.models.chat import qwen3_vl as _lmms_qwen3_vl_chat
from lmms_eval.models.chat.qwen3_vl import Qwen3_VL as _LmmsQwen3_VL
from lmms_eval.models.simple import qwen3_vl as _lmms_qwen3_vl_simple

from .lmms_eval_qwen2_5_vl import require_qwen_vl_utils
from .lmms_eval_sparse import SparsePlugin

__all__ = ["Qwen3_VLSparse", "Qwen3_VLMoeSparse", "QWEN3_RUN_KEYS"]

#: ``[run]`` keys of a run config -> arguments of lmms-eval's Qwen3-VL model (it takes a total pixel budget too).
QWEN3_RUN_KEYS = {
    "frames": "max_num_frames", "fps": "fps", "min_pixels": "min_pixels", "max_pixels": "max_pixels",
    "total_pixels": "total_pixels",
}
_CLASSES = {"qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration"}
_PLUGINS = {"qwen3_vl": "vlmsparse_qwen3_vl", "qwen3_vl_moe": "vlmsparse_qwen3_vl_moe"}


class Qwen3_VLSparse(SparsePlugin, _LmmsQwen3_VL):
    """lmms-eval's Qwen3-VL (chat) with its decoder's prefill attention replaced by a vlmsparse method.

    ``--model_args`` as lmms-eval's ``qwen3_vl`` (``pretrained`` defaults to Qwen3-VL-8B-Instruct;
    ``max_num_frames``, ``fps``, ``min_pixels``, ``max_pixels``, ``total_pixels``, ...) plus ``method``,
    ``config_file``, ``timing`` and the method's config fields.
    """

    is_simple = False
    family = "qwen3_vl"
    lmms_base = _LmmsQwen3_VL
    default_pretrained = "Qwen/Qwen3-VL-8B-Instruct"
    run_key_map = QWEN3_RUN_KEYS
    left_out_note = "max_new_tokens: pass --gen_kwargs max_new_tokens=N"

    def check_dependencies(self, base: dict[str, Any]) -> None:
        require_qwen_vl_utils(_lmms_qwen3_vl_chat)

    @contextlib.contextmanager
    def loading(self, base: dict[str, Any]) -> Iterator[None]:
        """lmms-eval picks the model class from the checkpoint's name; pick it from its config for the load."""
        import transformers
        from transformers import AutoConfig

        model_type = getattr(AutoConfig.from_pretrained(base["pretrained"]), "model_type", None)
        if model_type != self.family:
            other = _PLUGINS.get(model_type)
            hint = f"; run it with --model {other}" if other else ""
            raise ValueError(
                f"{base['pretrained']} is a {model_type!r} checkpoint, not {self.family!r}{hint}"
            )
        original = _lmms_qwen3_vl_simple._resolve_model_class
        _lmms_qwen3_vl_simple._resolve_model_class = lambda pretrained, is_moe: (
            getattr(transformers, _CLASSES[model_type]), "dtype"
        )
        try:
            yield
        finally:
            _lmms_qwen3_vl_simple._resolve_model_class = original


class Qwen3_VLMoeSparse(Qwen3_VLSparse):
    """As :class:`Qwen3_VLSparse` for Qwen3-VL-MoE checkpoints (``pretrained`` defaults to Qwen3-VL-30B-A3B)."""

    family = "qwen3_vl_moe"
    default_pretrained = "Qwen/Qwen3-VL-30B-A3B-Instruct"
