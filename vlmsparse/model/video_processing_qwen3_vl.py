"""Qwen3-VL video preprocessing in plain PyTorch (no torchvision), for frame arrays.

Qwen3-VL's video processor differs from Qwen2.5-VL's in three ways, all kept here:

1. patches of 16 pixels (so frame sides are multiples of ``16 * 2 = 32``) and mean = std = 0.5 per channel;
2. the pixel bounds ``size = {"shortest_edge", "longest_edge"}`` apply to the whole clip (frames x height x
   width, the frame count rounded to the temporal patch of 2), not to one frame: :func:`qwen3_smart_resize`;
   with ``cap_pixels_per_frame`` the clip budget is first capped per frame at ``max_video_tokens`` patches
   (qwen-vl-utils' rule);
3. the processor writes a timestamp before every frame, from the video metadata (``fps``, ``frames_indices``),
   which the processor passes through (``return_metadata``).

Resizing (antialiased bicubic, uint8), normalising and the patch order are those of
:mod:`vlmsparse.model.video_processing`. Frames arrive already sampled (``do_sample_frames=False``).
"""

from __future__ import annotations

import math

import torch
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, SizeDict

from .video_processing import (
    Qwen2VLVideoProcessorTorch,
    Qwen2VLVideoProcessorTorchKwargs,
    _as_frames,
    _resize_bicubic_uint8,
    qwen_video_inputs,
)

__all__ = ["qwen3_smart_resize", "Qwen3VLVideoProcessorTorch"]

QWEN3_VIDEO_MIN_PIXELS = 128 * 32 * 32
QWEN3_VIDEO_MAX_PIXELS = 768 * 32 * 32


def qwen3_smart_resize(
    num_frames: int, height: int, width: int, *, temporal_factor: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Frame size Qwen3-VL resizes a clip of ``num_frames`` frames to: sides multiples of ``factor``, aspect ratio
    kept, ``frames x height x width`` within ``[min_pixels, max_pixels]`` (frames rounded to ``temporal_factor``)."""
    if num_frames < temporal_factor:
        raise ValueError(f"a Qwen3-VL video needs at least {temporal_factor} frames, got {num_frames}")
    if min(height, width) <= 0:
        raise ValueError(f"frame size must be positive, got height={height}, width={width}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"frame aspect ratio must be below 200, got {height}x{width}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class Qwen3VLVideoProcessorTorchKwargs(Qwen2VLVideoProcessorTorchKwargs, total=False):
    """Extra keywords of the Qwen3-VL video processor."""

    cap_pixels_per_frame: bool
    max_video_tokens: int


class Qwen3VLVideoProcessorTorch(Qwen2VLVideoProcessorTorch):
    """Qwen3-VL video processor without torchvision (sampled frame arrays in, patches and metadata out)."""

    size = {"shortest_edge": QWEN3_VIDEO_MIN_PIXELS, "longest_edge": QWEN3_VIDEO_MAX_PIXELS}
    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD
    patch_size = 16
    fps = 2
    cap_pixels_per_frame = False
    max_video_tokens = 768
    valid_kwargs = Qwen3VLVideoProcessorTorchKwargs

    def __init__(self, **kwargs) -> None:
        cap = kwargs.pop("cap_pixels_per_frame", None)
        max_video_tokens = kwargs.pop("max_video_tokens", None)
        for key in ("fps", "num_frames", "max_duration", "max_image_size"):
            kwargs.pop(key, None)  # frame sampling options of the torchvision class: frames arrive sampled here
        super().__init__(**kwargs)
        if cap is not None:
            self.cap_pixels_per_frame = bool(cap)
        if max_video_tokens is not None:
            self.max_video_tokens = int(max_video_tokens)

    def clip_max_pixels(self, num_frames: int, size: SizeDict, factor: int, cap: bool | None = None) -> int:
        """The clip's pixel budget: ``size.longest_edge``, capped per frame when ``cap_pixels_per_frame``."""
        cap = self.cap_pixels_per_frame if cap is None else cap
        if not cap:
            return size.longest_edge
        per_frame = max(
            min(self.max_video_tokens * factor * factor, size.longest_edge // num_frames), int(size.shortest_edge * 1.05)
        )
        return per_frame * num_frames

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
        patch_size: int | None = None,
        temporal_patch_size: int | None = None,
        merge_size: int | None = None,
        cap_pixels_per_frame: bool | None = None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        self._check_pixel_scaling(do_rescale, do_normalize, rescale_factor)
        size = size or SizeDict(**self.size)
        patch = patch_size or self.patch_size
        merge = merge_size or self.merge_size
        temporal = temporal_patch_size or self.temporal_patch_size
        pixel_values, grids = [], []
        for video in videos:
            frames = _as_frames(video)
            if do_resize:
                factor = patch * merge
                height, width = qwen3_smart_resize(
                    frames.shape[0], frames.shape[-2], frames.shape[-1], temporal_factor=temporal, factor=factor,
                    min_pixels=size.shortest_edge,
                    max_pixels=self.clip_max_pixels(frames.shape[0], size, factor, cap_pixels_per_frame),
                )
                frames = _resize_bicubic_uint8(frames, height, width)
            flat, grid = qwen_video_inputs(
                frames,
                patch_size=patch,
                temporal_patch_size=temporal,
                merge_size=merge,
                image_mean=image_mean if image_mean is not None else self.image_mean,
                image_std=image_std if image_std is not None else self.image_std,
                do_resize=False,
            )
            pixel_values.append(flat)
            grids.append(grid)
        data = {"pixel_values_videos": torch.cat(pixel_values, dim=0), "video_grid_thw": torch.stack(grids)}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def get_num_of_video_patches(self, num_frames: int, height: int, width: int, videos_kwargs=None) -> int:
        """Number of vision-tower patches for a video of this size (tokens = patches // merge_size**2)."""
        videos_kwargs = videos_kwargs or {}
        size = SizeDict(**(videos_kwargs.get("size") or self.size))
        patch = videos_kwargs.get("patch_size") or self.patch_size
        merge = videos_kwargs.get("merge_size") or self.merge_size
        temporal = videos_kwargs.get("temporal_patch_size") or self.temporal_patch_size
        factor = patch * merge
        h, w = qwen3_smart_resize(
            num_frames, height, width, temporal_factor=temporal, factor=factor, min_pixels=size.shortest_edge,
            max_pixels=self.clip_max_pixels(num_frames, size, factor, videos_kwargs.get("cap_pixels_per_frame")),
        )
        return math.ceil(num_frames / temporal) * (h // patch) * (w // patch)

    def to_dict(self) -> dict:
        """Serialised as the stock ``Qwen3VLVideoProcessor`` (same fields, same outputs for sampled frames)."""
        out = super().to_dict()
        out["video_processor_type"] = "Qwen3VLVideoProcessor"
        return out
