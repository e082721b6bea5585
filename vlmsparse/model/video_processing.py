"""Qwen2-VL / Qwen2.5-VL video preprocessing in plain PyTorch (no torchvision).

transformers' ``Qwen2VLVideoProcessor`` needs torchvision, which cannot always be installed beside a given
torch build. This module computes the same ``pixel_values_videos`` / ``video_grid_thw`` from a
``[T, H, W, 3]`` uint8 frame array, step for step:

1. resize every frame to ``smart_resize(H, W)`` (both sides multiples of ``patch_size * merge_size``, pixel count
   within ``[size["shortest_edge"], size["longest_edge"]]``) with antialiased bicubic interpolation, uint8 in and
   out, as torchvision does (on the CPU its native uint8 kernel; checked equal to the stock processor);
2. ``(x / 255 - mean) / std`` with the CLIP mean and std (computed fused, ``(x - 255 mean) / (255 std)``);
3. pad the frame count to a multiple of ``temporal_patch_size`` by repeating the last frame, and flatten into
   ``[grid_t * grid_h * grid_w, C * temporal_patch_size * patch_size**2]`` patches in the order the vision tower
   expects (merge windows contiguous).

``qwen_video_inputs`` is the function; ``Qwen2VLVideoProcessorTorch`` wraps it as a transformers video processor,
so that ``Qwen2_5_VLProcessor(..., video_processor=Qwen2VLVideoProcessorTorch())`` handles ``videos=`` exactly as
with torchvision installed. It saves itself under the name ``Qwen2VLVideoProcessor`` (it is a drop-in), so a saved
folder loads with stock transformers where torchvision exists; ``vlmsparse.model.processor.load_processor`` loads
such a folder where it does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict
from transformers.processing_utils import VideosKwargs
try:
    from transformers.video_processing_utils import VideoProcessorMixin
except ImportError:  # older transformers: only the torchvision-based base class exists
    from transformers.video_processing_utils import BaseVideoProcessor as VideoProcessorMixin
from transformers.video_utils import make_batched_metadata, make_batched_videos

__all__ = [
    "smart_resize",
    "qwen_video_inputs",
    "Qwen2VLVideoProcessorTorch",
]

QWEN_VIDEO_MIN_PIXELS = 128 * 28 * 28
QWEN_VIDEO_MAX_PIXELS = 768 * 28 * 28


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Frame size Qwen2-VL resizes to: multiples of ``factor``, area within ``[min_pixels, max_pixels]``."""
    if min(height, width) <= 0:
        raise ValueError(f"frame size must be positive, got height={height}, width={width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"frame aspect ratio must be below 200, got {height}x{width}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _as_frames(video: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] or [T, 3, H, W] uint8/float frames -> [T, 3, H, W] tensor."""
    frames = torch.from_numpy(np.ascontiguousarray(video)) if isinstance(video, np.ndarray) else video
    if frames.ndim != 4:
        raise ValueError(f"video must be a [T, H, W, 3] frame array, got shape {tuple(frames.shape)}")
    if frames.shape[-1] in (1, 3) and frames.shape[1] not in (1, 3):
        frames = frames.permute(0, 3, 1, 2)
    if frames.shape[1] == 1:
        frames = frames.expand(-1, 3, -1, -1)
    if frames.shape[1] != 3:
        raise ValueError(f"video must have 3 (RGB) channels, got shape {tuple(frames.shape)}")
    return frames.contiguous()


def _resize_bicubic_uint8(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bicubic resize as torchvision's tensor ``resize`` does it.

    uint8 frames on the CPU use PyTorch's native uint8 kernel (torchvision's CPU path); elsewhere the frames are
    resized in float32, then clamped to [0, 255] and rounded back to uint8 (torchvision's GPU path).
    """
    if tuple(frames.shape[-2:]) == (height, width):
        return frames
    size = (height, width)
    if frames.dtype == torch.uint8 and frames.device.type == "cpu":
        return F.interpolate(frames, size=size, mode="bicubic", align_corners=False, antialias=True)
    out = F.interpolate(frames.float(), size=size, mode="bicubic", align_corners=False, antialias=True)
    if frames.dtype == torch.uint8:
        out = out.clamp_(0, 255).round_().to(torch.uint8)
    return out


def qwen_video_inputs(
    video: np.ndarray | torch.Tensor,
    *,
    min_pixels: int = QWEN_VIDEO_MIN_PIXELS,
    max_pixels: int = QWEN_VIDEO_MAX_PIXELS,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
    image_std: Sequence[float] = OPENAI_CLIP_STD,
    do_resize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One video -> (``pixel_values_videos`` [N, 3*tp*p*p] float32, ``video_grid_thw`` [3] long) as Qwen2.5-VL.

    ``video`` is a ``[T, H, W, 3]`` uint8 frame array (numpy or torch). The number of video tokens the language
    model sees is ``grid_thw.prod() // merge_size**2``.
    """
    frames = _as_frames(video)
    if do_resize:
        height, width = smart_resize(
            frames.shape[-2], frames.shape[-1], patch_size * merge_size, min_pixels, max_pixels
        )
        frames = _resize_bicubic_uint8(frames, height, width)
    mean = torch.tensor(image_mean, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(image_std, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1) * 255.0
    pixels = (frames.to(torch.float32) - mean) / std
    if pad := -pixels.shape[0] % temporal_patch_size:
        pixels = torch.cat([pixels, pixels[-1:].expand(pad, -1, -1, -1)], dim=0)
    num_frames, channels, height, width = pixels.shape
    grid_t, grid_h, grid_w = num_frames // temporal_patch_size, height // patch_size, width // patch_size
    if grid_h % merge_size or grid_w % merge_size:
        raise ValueError(
            f"resized frame {height}x{width} is not a multiple of patch_size*merge_size={patch_size * merge_size}; "
            "keep do_resize=True or pass frames of such a size"
        )
    patches = pixels.view(
        grid_t,
        temporal_patch_size,
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    # -> [t, h/m, w/m, m, m, C, tp, p, p]: each merge window's patches are contiguous.
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    return flat, torch.tensor([grid_t, grid_h, grid_w], dtype=torch.long, device=flat.device)


class Qwen2VLVideoProcessorTorchKwargs(VideosKwargs, total=False):
    """Extra keywords of the Qwen2-VL video processor."""

    min_pixels: int
    max_pixels: int
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    min_frames: int
    max_frames: int


class DecodedFramesVideoProcessor(VideoProcessorMixin):
    """Base of this package's video processors: already decoded and sampled ``[T, H, W, 3]`` frames in (no
    torchvision, no decoding of files, no frame sampling inside the processor)."""

    def _decode_and_sample_videos(self, videos, video_metadata=None, do_sample_frames=None, sample_indices_fn=None):
        name = type(self).__name__
        if do_sample_frames:
            raise ValueError(f"{name} does not sample frames: pass already sampled frames and do_sample_frames=False")
        videos = make_batched_videos(videos)
        if not videos or isinstance(videos[0], (str, list)):
            raise ValueError(f"{name} takes decoded [T, H, W, 3] frame arrays, not paths or URLs")
        return videos, make_batched_metadata(videos, video_metadata=video_metadata)

    def _prepare_input_videos(self, videos, do_convert_rgb=None, input_data_format=None, device=None):
        return [_as_frames(video) for video in videos]

    def _check_pixel_scaling(self, do_rescale: bool, do_normalize: bool, rescale_factor: float) -> None:
        """The processors here rescale by 1/255 and normalise in one step, always: ``ValueError`` otherwise."""
        if not (do_rescale and do_normalize) or abs(rescale_factor - 1 / 255) > 1e-12:
            raise ValueError(f"{type(self).__name__} supports only do_rescale=do_normalize=True with 1/255")


class Qwen2VLVideoProcessorTorch(DecodedFramesVideoProcessor):
    """Qwen2-VL / Qwen2.5-VL video processor without torchvision (frame arrays in, patches out).

    Accepts what the processor passes for ``videos=``: one ``[T, H, W, 3]`` array or a list of them (already
    sampled frames; decoding files is the caller's job). Frame sampling inside the processor is not supported.
    """

    resample = PILImageResampling.BICUBIC
    size = {"shortest_edge": QWEN_VIDEO_MIN_PIXELS, "longest_edge": QWEN_VIDEO_MAX_PIXELS}
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = False
    patch_size = 14
    temporal_patch_size = 2
    merge_size = 2
    min_frames = 4
    max_frames = 768
    valid_kwargs = Qwen2VLVideoProcessorTorchKwargs
    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, **kwargs) -> None:
        size = kwargs.pop("size", None)
        size = dict(self.size) if size is None else dict(size)
        if (min_pixels := kwargs.pop("min_pixels", None)) is not None:
            size["shortest_edge"] = min_pixels
        if (max_pixels := kwargs.pop("max_pixels", None)) is not None:
            size["longest_edge"] = max_pixels
        for key in ("cap_pixels_per_frame", "max_video_tokens"):
            kwargs.pop(key, None)  # options of the torchvision class that this one does not implement
        super().__init__(size=size, **kwargs)

    def _standardize_kwargs(self, size=None, min_pixels=None, max_pixels=None, **kwargs) -> dict:
        if min_pixels is not None or max_pixels is not None:
            size = dict(size or {})
            if min_pixels is not None:
                size["shortest_edge"] = min_pixels
            if max_pixels is not None:
                size["longest_edge"] = max_pixels
        return super()._standardize_kwargs(size=size, **kwargs)

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
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        self._check_pixel_scaling(do_rescale, do_normalize, rescale_factor)
        size = size or SizeDict(**self.size)
        pixel_values, grids = [], []
        for video in videos:
            flat, grid = qwen_video_inputs(
                video,
                min_pixels=size.shortest_edge,
                max_pixels=size.longest_edge,
                patch_size=patch_size or self.patch_size,
                temporal_patch_size=temporal_patch_size or self.temporal_patch_size,
                merge_size=merge_size or self.merge_size,
                image_mean=image_mean if image_mean is not None else self.image_mean,
                image_std=image_std if image_std is not None else self.image_std,
                do_resize=do_resize,
            )
            pixel_values.append(flat)
            grids.append(grid)
        data = {"pixel_values_videos": torch.cat(pixel_values, dim=0), "video_grid_thw": torch.stack(grids)}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def get_num_of_video_patches(self, num_frames: int, height: int, width: int, videos_kwargs=None) -> int:
        """Number of vision-tower patches for a video of this size (tokens = patches // merge_size**2)."""
        videos_kwargs = videos_kwargs or {}
        size = videos_kwargs.get("size") or self.size
        patch = videos_kwargs.get("patch_size") or self.patch_size
        merge = videos_kwargs.get("merge_size") or self.merge_size
        tps = videos_kwargs.get("temporal_patch_size") or self.temporal_patch_size
        h, w = smart_resize(height, width, patch * merge, size["shortest_edge"], size["longest_edge"])
        return math.ceil(num_frames / tps) * (h // patch) * (w // patch)

    def to_dict(self) -> dict:
        """Serialised as the stock ``Qwen2VLVideoProcessor`` (same fields, same outputs)."""
        out = super().to_dict()
        out["video_processor_type"] = "Qwen2VLVideoProcessor"
        return out
