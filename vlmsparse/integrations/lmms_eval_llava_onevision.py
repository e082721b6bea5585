"""``vlmsparse_llava_onevision``: lmms-eval's own ``llava_hf`` model on a LLaVA-OneVision / LLaVA-Video checkpoint,
with a vlmsparse method patched in.

lmms-eval's ``llava_hf`` (its simple model) loads ``LlavaOnevisionForConditionalGeneration`` for a
``llava_onevision`` config, reads a video with decord at ``max_frames_num`` (32) frames spread uniformly
(``linspace`` truncated to integers), writes ``<video>`` before the task's prompt in one user turn, and lets the
checkpoint's processor resize the frames and expand the placeholder. Its chat variant hands video paths to the
processor, which would decode every frame of the video; so the plugin is built on the simple model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from lmms_eval.models.simple.llava_hf import LlavaHf as _LmmsLlavaHf

from .lmms_eval_sparse import SparsePlugin

__all__ = ["LlavaOnevisionSparse", "LLAVA_RUN_KEYS"]

#: ``[run]`` keys of a run config -> arguments of lmms-eval's ``llava_hf`` model (only the frame count).
LLAVA_RUN_KEYS = {"frames": "max_frames_num"}


class LlavaOnevisionSparse(SparsePlugin, _LmmsLlavaHf):
    """lmms-eval's ``llava_hf`` on a LLaVA-OneVision checkpoint, its decoder's prefill replaced by a vlmsparse method.

    ``--model_args`` as lmms-eval's ``llava_hf`` (``pretrained`` defaults to llava-onevision-qwen2-7b-ov-hf;
    ``max_frames_num``, ``device_map``, ``attn_implementation``, ``dtype``, ...) plus ``method``,
    ``config_file``, ``timing`` and the method's config fields.
    """

    is_simple = True
    family = "llava_onevision"
    lmms_base = _LmmsLlavaHf
    default_pretrained = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
    run_key_map = LLAVA_RUN_KEYS
    left_out_note = "lmms-eval's llava_hf takes only a frame count, max_frames_num; the processor sizes the frames"

    def base_arguments(self, base: dict[str, Any]) -> dict[str, Any]:
        """One process without a ``device_map``: load on ``device``. lmms-eval's ``llava_hf`` passes its default
        ``device_map=""`` on to ``from_pretrained``, which transformers 5 refuses; with several processes
        (``accelerate launch``) lmms-eval picks each process's GPU itself, so nothing changes there."""
        if not base.get("device_map") and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            base = {**base, "device_map": str(base.get("device") or "cuda")}
        return base

    @contextlib.contextmanager
    def loading(self, base: dict[str, Any]) -> Iterator[None]:
        """Refuse a checkpoint of another family before lmms-eval loads its weights."""
        from transformers import AutoConfig

        model_type = getattr(AutoConfig.from_pretrained(base["pretrained"]), "model_type", None)
        if model_type != self.family:
            raise ValueError(f"{base['pretrained']} is a {model_type!r} checkpoint; vlmsparse_llava_onevision takes "
                             "LLaVA-OneVision / LLaVA-Video (model_type 'llava_onevision')")
        yield
