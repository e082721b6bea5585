"""Stand-ins for the two torchvision-bound pieces lmms-eval's Qwen-VL and LLaVA models call, for the lmms-eval tests
on machines where torchvision cannot be imported (nothing in vlmsparse needs it; the PyPI torchvision wheels are
CUDA builds, which do not load beside the CPU torch wheel): ``AutoProcessor`` becomes
``vlmsparse.model.processor.load_processor``, and ``qwen_vl_utils.process_vision_info`` (which imports torchvision)
a function that samples and sizes frames by qwen-vl-utils' rules with ``vlmsparse.eval.frames`` (decord + PIL)."""

from __future__ import annotations

import torch


def torchvision_error() -> str | None:
    """None when torchvision imports, "absent" when it is not installed, else why it does not load."""
    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError:
        return "absent"
    except Exception as exc:  # a torchvision built for another torch fails while registering its operators
        return f"{type(exc).__name__}: {exc}"
    return None


def process_vision_info(conversations, return_video_kwargs=False, return_video_metadata=False, image_patch_size=14):
    """``qwen_vl_utils.process_vision_info`` on videos: Qwen's frame sampling and sizing for the patch size (frame
    sides multiples of twice the patch, pixels within qwen-vl-utils' per-frame bounds and its default total)."""
    from vlmsparse.eval.frames import FrameSpec, read_video

    factor = image_patch_size * 2
    if conversations and isinstance(conversations[0], dict):
        conversations = [conversations]
    videos = []
    for conversation in conversations:
        for message in conversation:
            for part in message["content"] if isinstance(message["content"], list) else []:
                if part.get("type") != "video" and "video" not in part:
                    continue
                spec = FrameSpec(
                    frames=part.get("nframes"),
                    fps=part.get("fps", 2.0),
                    factor=factor,
                    min_pixels=part.get("min_pixels", 128 * factor * factor),
                    max_pixels=min(part.get("max_pixels", 768 * factor * factor), 768 * factor * factor),
                    total_pixels=int(128000 * factor * factor * 0.9),  # qwen-vl-utils' default budget
                )
                video = read_video(part["video"], spec)
                frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float()  # [T, C, H, W] as qwen-vl-utils
                meta = {"fps": video.video_fps, "frames_indices": video.indices, "total_num_frames": video.total_frames}
                videos.append((frames, meta) if return_video_metadata else frames)
    out = (None, videos or None)
    return (*out, {"do_sample_frames": False}) if return_video_kwargs else out


class ProcessorLoader:
    """``AutoProcessor`` as lmms-eval's models call it: ``from_pretrained(path, ...)``, torchvision-free."""

    @staticmethod
    def from_pretrained(path, **kwargs):
        from vlmsparse.model.processor import load_processor

        return load_processor(path, **kwargs)
