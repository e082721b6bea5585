"""LLaVA-OneVision video preprocessing in plain PyTorch (no torchvision), for frame arrays.

transformers' ``LlavaOnevisionVideoProcessor`` resizes every frame to ``size`` (384 x 384, aspect ratio not
kept) with antialiased bicubic interpolation, rescales by 1/255 and normalises with the CLIP mean and std; the
output is ``pixel_values_videos [B, T, 3, H, W]`` (the model pools each frame's patch grid 2x2 and appends one
image-newline vector per video). This class does the same steps with the resize of
:mod:`vlmsparse.model.video_processing`. Frames arrive already sampled (``do_sample_frames=False``).
"""

from __future__ import annotations

import torch
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict
from transformers.processing_utils import VideosKwargs

from .video_processing import DecodedFramesVideoProcessor, _as_frames, _resize_bicubic_uint8

__all__ = ["llava_onevision_video_inputs", "LlavaOnevisionVideoProcessorTorch"]


def llava_onevision_video_inputs(
    video,
    *,
    height: int = 384,
    width: int = 384,
    image_mean=OPENAI_CLIP_MEAN,
    image_std=OPENAI_CLIP_STD,
    do_resize: bool = True,
) -> torch.Tensor:
    """One ``[T, H, W, 3]`` uint8 video -> ``[T, 3, height, width]`` float32 pixels as LLaVA-OneVision's processor."""
    frames = _as_frames(video)
    if do_resize:
        frames = _resize_bicubic_uint8(frames, height, width)
    mean = torch.tensor(image_mean, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(image_std, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1) * 255.0
    return (frames.to(torch.float32) - mean) / std


class LlavaOnevisionVideoProcessorTorch(DecodedFramesVideoProcessor):
    """LLaVA-OneVision video processor without torchvision (sampled frame arrays in, ``[B, T, 3, H, W]`` out)."""

    resample = PILImageResampling.BICUBIC
    size = {"height": 384, "width": 384}
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    rescale_factor = 1 / 255
    default_to_square = False
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = False
    valid_kwargs = VideosKwargs
    model_input_names = ["pixel_values_videos"]

    def _preprocess(
        self,
        videos: list[torch.Tensor],
        do_resize: bool = True,
        size: SizeDict | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean=None,
        image_std=None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        self._check_pixel_scaling(do_rescale, do_normalize, rescale_factor)
        if kwargs.get("do_center_crop"):
            raise ValueError("LlavaOnevisionVideoProcessorTorch does not center-crop; LLaVA-OneVision does not either")
        size = size or SizeDict(**self.size)
        if not (size.height and size.width):
            raise ValueError(f"size must give height and width, got {size}")
        pixels = [
            llava_onevision_video_inputs(
                video,
                height=size.height,
                width=size.width,
                image_mean=image_mean if image_mean is not None else self.image_mean,
                image_std=image_std if image_std is not None else self.image_std,
                do_resize=do_resize,
            )
            for video in videos
        ]
        return BatchFeature(data={"pixel_values_videos": pixels}, tensor_type=return_tensors)

    def to_dict(self) -> dict:
        """Serialised as the stock ``LlavaOnevisionVideoProcessor``."""
        out = super().to_dict()
        out["video_processor_type"] = "LlavaOnevisionVideoProcessor"
        return out
