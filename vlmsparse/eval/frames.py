"""Video frames: decode with decord (PyAV where decord fails), sample and resize by the model family's own rules.

``sampling="fps"`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): the rules of Qwen's ``qwen-vl-utils`` video path, which
lmms-eval's Qwen models call, re-expressed here without torchvision:

* frame count: either a fixed ``frames`` (rounded to a multiple of 2) or ``duration * fps`` clamped to
  ``[min_frames, max_frames]`` and to the video's length, floored to a multiple of 2;
* frame indices: ``linspace(0, total - 1, n)`` rounded;
* frame size (``smart_resize``): height and width multiples of ``factor`` (patch x merge: 28 for Qwen2/2.5-VL,
  32 for Qwen3-VL), aspect ratio kept, pixel count within ``[min_pixels, max_pixels]``, where ``max_pixels`` is
  further capped by a total budget over the clip: ``total_pixels / n * 2`` (two frames make one temporal patch),
  never below ``1.05 * min_pixels``.

Frames are resized with PIL's bicubic filter (antialiased), as Qwen's path resizes bicubically.

``sampling="uniform"`` (LLaVA-OneVision / LLaVA-Video): as lmms-eval's LLaVA models (``llava_hf``) sample,
exactly ``frames`` frames (32 by default) at ``linspace(0, total - 1, frames)`` truncated to integers, kept at
the video's own size: the model's processor resizes every frame to its square input (384 x 384).

decord cannot read some valid files (frames of some widths, e.g. 16, 24, 48 or 72 pixels, come back with four
channels and fail its size check); those are decoded again with PyAV, and the video says which decoder it came
from (``SampledVideo.decoder``).
"""

from __future__ import annotations

import math
import threading
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

#: Height and width of a frame are multiples of this (patch 14 x spatial merge 2).
IMAGE_FACTOR = 28
#: Frames are taken in pairs (temporal patch of 2).
FRAME_FACTOR = 2
MAX_ASPECT_RATIO = 200
#: Qwen2.5-VL's video defaults.
DEFAULT_FPS = 2.0
DEFAULT_MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 768
DEFAULT_MIN_PIXELS = 128 * 28 * 28
DEFAULT_MAX_PIXELS = 768 * 28 * 28
#: Total pixel budget over a clip: 24576 visual tokens (one token per 28 x 28 pixels of a frame pair).
DEFAULT_TOTAL_PIXELS = 24576 * 28 * 28
#: Frames decoded per decord call, so a long clip at full resolution never sits in memory at once.
DECODE_CHUNK = 32
#: How frames are picked: Qwen's fps rules, or a fixed count spread uniformly (lmms-eval's LLaVA models).
SAMPLINGS = ("fps", "uniform")
#: Fields added after the first runs were recorded: left out of ``to_dict`` at their defaults, so the run
#: identities of earlier runs stay the same.
_LATER_FIELDS = {"factor": IMAGE_FACTOR, "sampling": "fps"}


class VideoDecodeError(RuntimeError):
    """A video file could not be opened or decoded."""


def round_by_factor(number: float, factor: int) -> int:
    """The multiple of ``factor`` closest to ``number``."""
    return round(number / factor) * factor


def ceil_by_factor(number: float, factor: int) -> int:
    """The smallest multiple of ``factor`` not below ``number``."""
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    """The largest multiple of ``factor`` not above ``number``."""
    return math.floor(number / factor) * factor


@dataclass(frozen=True)
class FrameSpec:
    """How many frames to take from a video and at what size.

    ``frames`` fixes the count (it wins over ``fps``); otherwise ``fps`` frames per second of video are
    taken within ``[min_frames, max_frames]``. Pixel counts are per frame except ``total_pixels``; frame sides
    are multiples of ``factor``. ``sampling="uniform"`` takes exactly ``frames`` frames and leaves their size to
    the processor (fps and pixel fields unused).
    """

    frames: int | None = None
    fps: float = DEFAULT_FPS
    min_frames: int = DEFAULT_MIN_FRAMES
    max_frames: int = DEFAULT_MAX_FRAMES
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    total_pixels: int = DEFAULT_TOTAL_PIXELS
    factor: int = IMAGE_FACTOR
    sampling: str = "fps"

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if not _is_int(self.factor) or self.factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got {self.factor!r}")
        if self.sampling == "uniform":
            if not _is_int(self.frames) or self.frames < 1:
                raise ValueError(f"uniform sampling needs a frame count: frames must be an integer >= 1, got {self.frames!r}")
            return
        for name in ("min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if self.frames is not None and (not _is_int(self.frames) or self.frames < FRAME_FACTOR):
            raise ValueError(f"frames must be an integer >= {FRAME_FACTOR} (or None to use fps), got {self.frames!r}")
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not 0 < self.fps < math.inf:
            raise ValueError(f"fps must be a number > 0, got {self.fps!r}")
        if self.min_frames < 1 or self.max_frames < self.min_frames:
            raise ValueError(
                f"need 1 <= min_frames <= max_frames, got min_frames={self.min_frames}, max_frames={self.max_frames}"
            )
        if self.max_frames < FRAME_FACTOR:
            raise ValueError(f"max_frames must be >= {FRAME_FACTOR}, got {self.max_frames}")
        if self.min_pixels < self.factor * self.factor:
            raise ValueError(f"min_pixels must be >= {self.factor * self.factor} (factor {self.factor} squared), got {self.min_pixels}")
        if self.max_pixels < self.min_pixels:
            raise ValueError(f"max_pixels ({self.max_pixels}) must be >= min_pixels ({self.min_pixels})")
        if self.total_pixels < self.min_pixels:
            raise ValueError(f"total_pixels ({self.total_pixels}) must be >= min_pixels ({self.min_pixels})")

    def to_dict(self) -> dict:
        """Plain dict (for run identities and records); fields added later are left out at their defaults."""
        out = asdict(self)
        for key, default in _LATER_FIELDS.items():
            if out[key] == default:
                del out[key]
        return out

    def adjustments(self) -> list[str]:
        """What sampling will change in this request whatever the video (shown to the user before a run)."""
        notes = []
        if self.sampling == "fps" and self.frames is not None and round_by_factor(self.frames, FRAME_FACTOR) != self.frames:
            notes.append(
                f"frames {self.frames} is not a multiple of {FRAME_FACTOR} (frames go in pairs): "
                f"{round_by_factor(self.frames, FRAME_FACTOR)} frames are sampled"
            )
        return notes


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def smart_nframes(total_frames: int, video_fps: float, spec: FrameSpec) -> int:
    """Number of frames to sample from a video of ``total_frames`` frames at ``video_fps``.

    A fixed ``spec.frames`` larger than the video is lowered to the video's length (floored to a multiple
    of 2) rather than refused.
    """
    if spec.sampling == "uniform":
        if total_frames < 1:
            raise VideoDecodeError("video has no frames")
        return spec.frames
    if total_frames < FRAME_FACTOR:
        raise VideoDecodeError(f"video has {total_frames} frame(s); at least {FRAME_FACTOR} are needed")
    if spec.frames is not None:
        nframes = round_by_factor(spec.frames, FRAME_FACTOR)
    else:
        min_frames = ceil_by_factor(spec.min_frames, FRAME_FACTOR)
        max_frames = floor_by_factor(min(spec.max_frames, total_frames), FRAME_FACTOR)
        fps = video_fps if video_fps > 0 else spec.fps
        nframes = total_frames / fps * spec.fps
        nframes = min(max(nframes, min_frames), max_frames, total_frames)
        nframes = floor_by_factor(nframes, FRAME_FACTOR)
    nframes = min(nframes, floor_by_factor(total_frames, FRAME_FACTOR))
    return max(nframes, FRAME_FACTOR)


def frame_indices(total_frames: int, nframes: int, sampling: str = "fps") -> list[int]:
    """Evenly spread frame indices over the whole video, first and last frame included: rounded (Qwen's rule) or,
    for ``sampling="uniform"``, truncated (lmms-eval's LLaVA models; a short video repeats frames)."""
    if sampling == "uniform":
        return np.linspace(0, total_frames - 1, nframes, dtype=int).astype(np.int64).tolist()
    return np.linspace(0, total_frames - 1, nframes).round().astype(np.int64).tolist()


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """Size ``(h, w)``, both multiples of ``factor``, closest to ``(height, width)`` within the pixel bounds."""
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio must be below {MAX_ASPECT_RATIO}, got {height}x{width}")
    h_bar = max(factor, round_by_factor(height, factor))
    w_bar = max(factor, round_by_factor(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, floor_by_factor(height / beta, factor))
        w_bar = max(factor, floor_by_factor(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by_factor(height * beta, factor)
        w_bar = ceil_by_factor(width * beta, factor)
    return h_bar, w_bar


def frame_pixel_budget(nframes: int, spec: FrameSpec) -> int:
    """Per-frame ``max_pixels`` once the clip's total pixel budget is shared over ``nframes`` frames."""
    share = spec.total_pixels / nframes * FRAME_FACTOR
    return int(max(min(spec.max_pixels, share), int(spec.min_pixels * 1.05)))


def frame_size(height: int, width: int, nframes: int, spec: FrameSpec) -> tuple[int, int]:
    """Output ``(h, w)`` of each of ``nframes`` frames sampled from a ``height x width`` video (uniform sampling:
    the video's own size, the processor resizes)."""
    if spec.sampling == "uniform":
        return height, width
    return smart_resize(
        height, width, factor=spec.factor, min_pixels=spec.min_pixels, max_pixels=frame_pixel_budget(nframes, spec)
    )


@dataclass
class SampledVideo:
    """Frames ready for the processor: ``frames`` uint8 ``[T, H, W, 3]`` (fps sampling: H, W multiples of the
    family's factor; uniform sampling: the video's own size)."""

    frames: np.ndarray
    sample_fps: float
    indices: list[int]
    total_frames: int
    video_fps: float
    source_size: tuple[int, int]
    path: str = ""
    decoder: str = "decord"
    extra: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the sampled frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of uint8 ``[T, H, W, 3]`` frames to ``size = (h, w)``."""
    from PIL import Image

    h, w = size
    if frames.shape[1] == h and frames.shape[2] == w:
        return np.ascontiguousarray(frames)
    out = np.empty((frames.shape[0], h, w, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BICUBIC))
    return out


def read_video(path: str | Path, spec: FrameSpec, *, num_threads: int = 0) -> SampledVideo:
    """Decode ``path`` and sample it by ``spec``: decord first, PyAV where decord fails.

    Raises :class:`VideoDecodeError` when neither can read the file, or when it has too few frames.
    """
    path = str(path)
    try:
        return _read_with_decord(path, spec, num_threads)
    except VideoDecodeError:
        raise
    except Exception as exc:  # decord raises its own error types and RuntimeError for broken files
        decord_error = f"{type(exc).__name__}: {_first_line(exc)}"
    try:
        return _read_with_pyav(path, spec)
    except VideoDecodeError:
        raise
    except Exception as exc:
        raise VideoDecodeError(
            f"cannot decode {path}: decord: {decord_error}; PyAV: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:300] if text else ""


def _sampled(frames: list[np.ndarray], indices: list[int], total: int, video_fps: float, source_size, path: str, decoder: str) -> SampledVideo:
    nframes = len(indices)
    return SampledVideo(
        frames=np.concatenate(frames, axis=0),
        sample_fps=nframes / max(total, 1e-6) * video_fps,
        indices=indices,
        total_frames=total,
        video_fps=video_fps,
        source_size=source_size,
        path=path,
        decoder=decoder,
    )


#: decord opens and closes its FFmpeg decoders without a lock of its own, and two threads doing so at once can
#: abort the process (seen when several decode workers met files it fails on). Opening and closing therefore take
#: this lock; decoding frames (the long part) still runs in parallel.
_DECORD_OPEN_CLOSE = threading.Lock()


@contextmanager
def decord_reader(path: str, num_threads: int = 0):
    """A ``decord.VideoReader`` of ``path``, opened and released one thread at a time."""
    import decord

    with _DECORD_OPEN_CLOSE:
        try:
            reader = decord.VideoReader(path, num_threads=num_threads)
        except BaseException as exc:  # a reader that failed halfway is freed here too, not by a later collection
            traceback.clear_frames(exc.__traceback__)
            raise
    try:
        yield reader
    finally:
        with _DECORD_OPEN_CLOSE:  # freed now, not whenever the last reference (maybe a traceback's) goes
            if getattr(reader, "_handle", None) is not None:
                reader.__del__()
                reader._handle = None


def _read_with_decord(path: str, spec: FrameSpec, num_threads: int) -> SampledVideo:
    with decord_reader(path, num_threads) as reader:
        total = len(reader)
        video_fps = float(reader.get_avg_fps())
        nframes = smart_nframes(total, video_fps, spec)
        indices = frame_indices(total, nframes, spec.sampling)
        chunks = []
        size = source_size = None
        for start in range(0, len(indices), DECODE_CHUNK):
            batch = reader.get_batch(indices[start : start + DECODE_CHUNK]).asnumpy()
            if batch.ndim != 4 or batch.shape[-1] != 3:
                raise ValueError(f"decord returned frames of shape {batch.shape}, not [T, H, W, 3]")
            if size is None:
                source_size = (int(batch.shape[1]), int(batch.shape[2]))
                size = frame_size(*source_size, nframes, spec)
            chunks.append(resize_frames(batch, size))
    return _sampled(chunks, indices, total, video_fps, source_size, path, "decord")


def _read_with_pyav(path: str, spec: FrameSpec) -> SampledVideo:
    """One sequential decoding pass, converting and resizing only the sampled frames."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        stream = container.streams.video[0]
        total = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
        video_fps = float(rate) if rate else 0.0
    if total < 1:  # not in the header: count the frames
        with av.open(path) as container:
            total = sum(1 for _ in container.decode(video=0))
    for _attempt in range(2):
        nframes = smart_nframes(total, video_fps, spec)
        indices = frame_indices(total, nframes, spec.sampling)
        wanted: dict[int, int] = {}
        for position, index in enumerate(indices):
            wanted.setdefault(index, position)
        frames: list[np.ndarray | None] = [None] * nframes
        size = source_size = None
        decoded = 0
        with av.open(path) as container:
            container.streams.video[0].thread_type = "AUTO"
            for i, frame in enumerate(container.decode(video=0)):
                decoded = i + 1
                if i not in wanted:
                    continue
                rgb = frame.to_ndarray(format="rgb24")[None]
                if size is None:
                    source_size = (int(rgb.shape[1]), int(rgb.shape[2]))
                    size = frame_size(*source_size, nframes, spec)
                resized = resize_frames(rgb, size)
                for position in (p for p, idx in enumerate(indices) if idx == i):
                    frames[position] = resized
        if all(f is not None for f in frames):
            return _sampled(frames, indices, total, video_fps, source_size, path, "pyav")
        total = decoded  # the header overstated the frame count: sample again from what is there
    raise ValueError(f"the file header says {total} frames but they could not all be decoded")
