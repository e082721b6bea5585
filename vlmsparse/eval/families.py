"""What the harness does differently per model family: the model class, frame sampling, processor keywords.

The patch side of a family lives in ``patches/`` (``vlmsparse.model.families``); this is the eval side. Frame
sampling follows each family's own video path, as lmms-eval's model for that family runs it:

- Qwen2-VL / Qwen2.5-VL: ``qwen-vl-utils`` rules (lmms-eval's ``qwen2_5_vl``): 2 fps within 4-768 frames (or a
  fixed even count), sides multiples of 28, 128-768 x 28 x 28 pixels per frame, 24576 visual tokens per video;
- Qwen3-VL / Qwen3-VL-MoE: the same rules with 32-pixel sides (patch 16 x merge 2, lmms-eval's ``qwen3_vl``
  calls qwen-vl-utils with ``image_patch_size=16``): 128-768 x 32 x 32 pixels per frame, the same 24576-token
  budget; the processor writes each frame pair's timestamp from the sampled indices and the video's fps;
- LLaVA-OneVision / LLaVA-Video: 32 frames spread uniformly (``linspace`` truncated, as lmms-eval's ``llava_hf``),
  at the video's own size: the processor resizes each frame to the tower's square input (384 x 384).

Frames sampled by Qwen's rules arrive sized, so the processor is told not to resize them (``do_resize=False``);
LLaVA-OneVision's processor resizes them itself.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EvalFamily", "EVAL_FAMILIES", "get_eval_family", "family_of_model", "sampling_help"]


@dataclass(frozen=True)
class EvalFamily:
    """The harness's settings for one model family.

    Attributes:
        name: the family's name (as ``vlmsparse.model.families``).
        model_class: the transformers class that loads its checkpoints (``module:Class``).
        frame_defaults: ``FrameSpec`` fields that differ from Qwen2.5-VL's defaults.
        processor_kwargs: keywords of every processor call (besides text, videos, metadata).
        sampling: one line on how its frames are sampled (``--help`` and the README).
    """

    name: str
    model_class: str
    frame_defaults: dict[str, Any] = field(default_factory=dict)
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    sampling: str = ""

    def load_class(self):
        """The model class (imported on use)."""
        module, _, name = self.model_class.partition(":")
        return getattr(importlib.import_module(module), name)


_QWEN_SAMPLING = "2 fps within 4-768 frames (or --frames N, even), sides multiples of {f}, {lo}-{hi} x {f}^2 pixels per frame, 24576 visual tokens per video"
_QWEN3_FRAMES = dict(factor=32, min_pixels=128 * 32 * 32, max_pixels=768 * 32 * 32, total_pixels=24576 * 32 * 32)

EVAL_FAMILIES: dict[str, EvalFamily] = {
    f.name: f
    for f in (
        EvalFamily(
            "qwen2_5_vl", "transformers:Qwen2_5_VLForConditionalGeneration", {}, {"do_resize": False},
            "Qwen2.5-VL: " + _QWEN_SAMPLING.format(f=28, lo=128, hi=768),
        ),
        EvalFamily(
            "qwen2_vl", "transformers:Qwen2VLForConditionalGeneration", {}, {"do_resize": False},
            "Qwen2-VL: as Qwen2.5-VL",
        ),
        EvalFamily(
            "qwen3_vl", "transformers:Qwen3VLForConditionalGeneration", dict(_QWEN3_FRAMES), {"do_resize": False},
            "Qwen3-VL: " + _QWEN_SAMPLING.format(f=32, lo=128, hi=768) + "; a timestamp before each frame pair",
        ),
        EvalFamily(
            "qwen3_vl_moe", "transformers:Qwen3VLMoeForConditionalGeneration", dict(_QWEN3_FRAMES),
            {"do_resize": False}, "Qwen3-VL-MoE: as Qwen3-VL",
        ),
        EvalFamily(
            "llava_onevision", "transformers:LlavaOnevisionForConditionalGeneration",
            dict(sampling="uniform", frames=32), {},
            "LLaVA-OneVision / LLaVA-Video: 32 frames uniformly (or --frames N), resized by the processor to its "
            "square input; --fps and the pixel flags do not apply",
        ),
    )
}


def get_eval_family(name: str) -> EvalFamily:
    """The harness settings of family ``name``; ``ValueError`` lists the families."""
    if name not in EVAL_FAMILIES:
        raise ValueError(f"the harness does not know model family {name!r}; supported families: {sorted(EVAL_FAMILIES)}")
    return EVAL_FAMILIES[name]


def family_of_model(model_id: str) -> EvalFamily:
    """The family of the checkpoint at ``model_id`` (hub id or folder), from its ``config.json`` alone.

    ``ValueError`` (one line) when the config cannot be read or its ``model_type`` is not supported.
    """
    from transformers import AutoConfig

    from vlmsparse.model.families import family_for_model_type

    from .model_io import resolve_model

    try:
        model_id = resolve_model(model_id)  # testbed: the shipped checkpoint's folder
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    try:
        config = AutoConfig.from_pretrained(model_id)
    except Exception as exc:  # OSError for a missing folder or hub id, ValueError for an unknown model_type
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read the model config of --model {model_id!r}: {first}") from exc
    return get_eval_family(family_for_model_type(getattr(config, "model_type", None), what=f"--model {model_id}").name)


def sampling_help() -> str:
    """The per-family frame sampling rules, one line each (for ``--help``)."""
    return "\n".join(f"  {f.sampling}" for f in EVAL_FAMILIES.values())
