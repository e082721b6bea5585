"""Processors of the supported families that also work where torchvision is not installed.

transformers 5 takes a video processor only if torchvision is installed (its ``VideoProcessorMixin`` is not
exported otherwise, and ``AutoVideoProcessor`` is a placeholder), so the stock ``Qwen2_5_VLProcessor`` cannot be
built or loaded at all without torchvision. The subclasses below change one thing: they accept a torchvision-free
video processor (``Qwen2VLVideoProcessorTorch``, ``Qwen3VLVideoProcessorTorch``,
``LlavaOnevisionVideoProcessorTorch``). They save under the stock class names, so a saved folder is a plain
processor folder of its family.

``load_processor(path)`` is what callers use: the stock ``AutoProcessor`` where torchvision exists, these classes
where it does not.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import LlavaOnevisionProcessor, Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen3VLProcessor
from transformers.utils import is_torchvision_available
try:
    from transformers.video_processing_utils import VideoProcessorMixin
except ImportError:  # older transformers: only the torchvision-based base class exists
    from transformers.video_processing_utils import BaseVideoProcessor as VideoProcessorMixin

from .video_processing import Qwen2VLVideoProcessorTorch
from .video_processing_llava_onevision import LlavaOnevisionVideoProcessorTorch
from .video_processing_qwen3_vl import Qwen3VLVideoProcessorTorch

__all__ = [
    "Qwen2_5_VLProcessorTorch",
    "Qwen2VLProcessorTorch",
    "Qwen3VLProcessorTorch",
    "LlavaOnevisionProcessorTorch",
    "load_processor",
    "sized_frames_kwargs",
]


class _AcceptsTorchVideoProcessor:
    """Mixin: accept any ``VideoProcessorMixin`` as video processor; save under the stock class name."""

    _stock_name: str

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(f"video_processor must be a video processor, got {type(argument).__name__}")
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["processor_class"] = self._stock_name
        return out


class Qwen2_5_VLProcessorTorch(_AcceptsTorchVideoProcessor, Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` that takes ``Qwen2VLVideoProcessorTorch`` (no torchvision needed)."""

    _stock_name = "Qwen2_5_VLProcessor"


class Qwen2VLProcessorTorch(_AcceptsTorchVideoProcessor, Qwen2VLProcessor):
    """``Qwen2VLProcessor`` that takes ``Qwen2VLVideoProcessorTorch`` (no torchvision needed)."""

    _stock_name = "Qwen2VLProcessor"


class Qwen3VLProcessorTorch(_AcceptsTorchVideoProcessor, Qwen3VLProcessor):
    """``Qwen3VLProcessor`` that takes ``Qwen3VLVideoProcessorTorch`` (no torchvision needed)."""

    _stock_name = "Qwen3VLProcessor"


class LlavaOnevisionProcessorTorch(_AcceptsTorchVideoProcessor, LlavaOnevisionProcessor):
    """``LlavaOnevisionProcessor`` that takes ``LlavaOnevisionVideoProcessorTorch`` (no torchvision needed)."""

    _stock_name = "LlavaOnevisionProcessor"


#: stock processor class name -> (torch-only processor, torch-only video processor)
_TORCH_PROCESSORS = {
    "Qwen2_5_VLProcessor": (Qwen2_5_VLProcessorTorch, Qwen2VLVideoProcessorTorch),
    "Qwen2VLProcessor": (Qwen2VLProcessorTorch, Qwen2VLVideoProcessorTorch),
    "Qwen3VLProcessor": (Qwen3VLProcessorTorch, Qwen3VLVideoProcessorTorch),
    "LlavaOnevisionProcessor": (LlavaOnevisionProcessorTorch, LlavaOnevisionVideoProcessorTorch),
}
#: processor settings kept from a folder's processor config (besides the chat template)
_PROCESSOR_FIELDS = ("num_image_tokens", "vision_feature_select_strategy", "vision_aspect_ratio", "image_token", "video_token")


def load_processor(path: str | os.PathLike, **kwargs: Any):
    """Load the processor of a supported family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision) from a folder or hub id.

    With torchvision installed this is ``AutoProcessor.from_pretrained(path, **kwargs)``. Without it, the tokenizer
    and image processor load through their Auto classes, the video processor is the family's torch-only one
    (same outputs for frame arrays), and the chat template and processor settings come from the folder.
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    if is_torchvision_available():
        return AutoProcessor.from_pretrained(path, **kwargs)
    processor_dict, _ = Qwen2_5_VLProcessor.get_processor_dict(path, **kwargs)
    name = processor_dict.get("processor_class", "Qwen2_5_VLProcessor")
    if name not in _TORCH_PROCESSORS:
        raise ValueError(
            f"load_processor without torchvision supports {sorted(_TORCH_PROCESSORS)}, but {path} holds a {name}; "
            "install torchvision to load it with AutoProcessor"
        )
    processor_class, video_class = _TORCH_PROCESSORS[name]
    video_config = dict(processor_dict.get("video_processor") or {})
    if not video_config:
        video_config, _ = video_class.get_video_processor_dict(path, **kwargs)
    video_config = {k: v for k, v in video_config.items() if k not in ("video_processor_type", "processor_class")}
    settings = {k: processor_dict[k] for k in _PROCESSOR_FIELDS if processor_dict.get(k) is not None}
    return processor_class(
        image_processor=AutoImageProcessor.from_pretrained(path, **kwargs),
        tokenizer=AutoTokenizer.from_pretrained(path, **kwargs),
        video_processor=video_class(**video_config),
        chat_template=processor_dict.get("chat_template"),
        **settings,
    )


def sized_frames_kwargs(processor) -> dict[str, Any]:
    """Keywords of a processor call whose frames arrive sized by the caller (sampled and resized by the family's
    rules, the video's pixel budget included): no resizing, and, where the video processor has transformers'
    per-frame pixel cap (``cap_pixels_per_frame``, which acts only when it resizes), that cap off, which keeps
    transformers from warning on every run that the cap is not applied."""
    kwargs: dict[str, Any] = {"do_resize": False}
    if hasattr(getattr(processor, "video_processor", None), "cap_pixels_per_frame"):
        kwargs["cap_pixels_per_frame"] = False
    return kwargs
