"""Video needle in a haystack: a short needle clip hidden at a depth in a long haystack, and a question about it.

Everything is a deterministic function of a seed. A sample is:

- a **haystack** of ``length`` frames: generated moving textures (a few coloured sinusoidal gratings drifting
  at their own speeds, so no two frames are alike), or frames of a user's video;
- a **needle**: ``needle_frames`` consecutive frames (an even count, so it fills whole temporal patches of
  Qwen's vision tower) showing a coloured shape (``a red circle``) or a seven-segment digit (``the digit 7``)
  on a flat dark background, drifting a few pixels from frame to frame; it replaces the haystack frames at
  ``start = even_floor(depth * (length - needle_frames))``, depth in [0, 1];
- a four-option **question** whose options are the needle's description and three distractors in a random
  order (for shapes, one distractor shares the colour and one the shape), and the answer letter.

Rendering is vectorised over a batch of samples in torch, on any device (the testbed's training draws its
batches on the GPU); the random parameters of a sample come from a numpy generator seeded by its own seed
sequence, so a sample does not depend on the batch it is drawn in, and the same seed gives the same video.
:func:`make_sample` returns numpy frames for the harness; :func:`render_batch` returns torch frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .prompts import LETTERS

__all__ = [
    "COLOURS",
    "SHAPES",
    "DIGITS",
    "KINDS",
    "NeedleConfig",
    "NeedleQuestion",
    "NeedleSample",
    "needle_start",
    "sample_seed",
    "draw_question",
    "question_for",
    "render_batch",
    "make_sample",
    "make_samples",
    "video_metadata",
    "VIDEO_FPS",
]

#: Needle colours (name -> RGB), saturated and far apart.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 90, 240),
    "yellow": (240, 220, 30),
    "purple": (170, 50, 220),
    "orange": (250, 140, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
DIGITS: tuple[str, ...] = tuple("0123456789")
#: ``shape``: a coloured shape, options shuffled; ``digit``: a seven-segment digit, options shuffled; ``mixed``:
#: either, half and half; ``colour``: a shape in one of four colours, asked for its colour with the four colours
#: always listed in one order (the answer still depends on the needle only: a uniform prior over the letters).
KINDS: tuple[str, ...] = ("shape", "digit", "mixed", "colour")
#: The colours of the ``colour`` question, in the order its options list them.
FIXED_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")

QUESTION_SHAPE = "Which object is shown for a moment in the video?"
QUESTION_DIGIT = "Which digit is shown for a moment in the video?"
QUESTION_COLOUR = "What colour is the object shown for a moment in the video?"

# Seven-segment layout: segment -> (y0, y1, x0, x1) in units of the digit box (height 1, width 0.6).
_SEGMENT_BOXES = {
    "a": (0.00, 0.14, 0.00, 0.60),
    "b": (0.00, 0.57, 0.46, 0.60),
    "c": (0.43, 1.00, 0.46, 0.60),
    "d": (0.86, 1.00, 0.00, 0.60),
    "e": (0.43, 1.00, 0.00, 0.14),
    "f": (0.00, 0.57, 0.00, 0.14),
    "g": (0.43, 0.57, 0.00, 0.60),
}
_DIGIT_SEGMENTS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg")

#: Frame rate a generated haystack is declared at (Qwen2.5-VL's sampling default): one temporal patch a second.
VIDEO_FPS = 2.0

#: Streams of seed sequences: samples of a benchmark never share a seed with the testbed's training draws.
STREAM_EVAL = 0
STREAM_TRAIN = 1

_TEXTURE_COMPONENTS = 3


@dataclass(frozen=True)
class NeedleConfig:
    """How samples look: frame size (pixels, a multiple of 28), needle length and kind."""

    frame_size: int = 112
    needle_frames: int = 2
    kind: str = "shape"

    def __post_init__(self) -> None:
        if not isinstance(self.frame_size, int) or self.frame_size < 28 or self.frame_size % 28:
            raise ValueError(f"frame_size must be a multiple of 28 (the model's patch x merge), got {self.frame_size!r}")
        if not isinstance(self.needle_frames, int) or self.needle_frames < 2 or self.needle_frames % 2:
            raise ValueError(
                f"needle_frames must be an even number >= 2 (the vision tower takes frames in pairs), "
                f"got {self.needle_frames!r}"
            )
        if self.kind not in KINDS:
            raise ValueError(f"needle kind must be one of {KINDS}, got {self.kind!r}")

    def check_length(self, length: int) -> None:
        """``ValueError`` unless a haystack of ``length`` frames can hold the needle."""
        if not isinstance(length, (int, np.integer)) or length < 2 or length % 2:
            raise ValueError(f"haystack length must be an even frame count >= 2, got {length!r}")
        if self.needle_frames > length:
            raise ValueError(
                f"the needle ({self.needle_frames} frames) is longer than the haystack ({length} frames); "
                "use longer haystacks or a shorter --needle-frames"
            )


@dataclass(frozen=True)
class NeedleQuestion:
    """The needle's identity and the question about it."""

    kind: str  # "shape" or "digit"
    colour: str
    symbol: str  # a shape name or a digit
    question: str
    options: tuple[str, ...]  # four option texts, without letters
    answer: str  # the letter of the right option

    @property
    def description(self) -> str:
        return describe(self.kind, self.colour, self.symbol)


@dataclass
class NeedleSample:
    """One haystack video with its needle and question. ``frames`` is uint8 ``[T, H, W, 3]``."""

    frames: np.ndarray
    question: NeedleQuestion
    length: int
    depth: float
    start: int
    seed: tuple[int, ...]
    extra: dict = field(default_factory=dict)


def describe(kind: str, colour: str, symbol: str) -> str:
    """Option text of a needle: ``a red circle``, ``an orange cross``, ``the digit 7`` or (colour) ``red``."""
    if kind == "colour":
        return colour
    if kind == "digit":
        return f"the digit {symbol}"
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {symbol}"


def needle_start(length: int, needle_frames: int, depth: float) -> int:
    """First frame of the needle: ``depth`` of the way through, on a temporal-patch boundary (even)."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be within [0, 1], got {depth!r}")
    slots = (length - needle_frames) // 2  # last even start, in pairs of frames
    return 2 * int(math.floor(depth * slots + 0.5))


def sample_seed(seed: int, length: int, depth: float, index: int, stream: int = STREAM_EVAL) -> tuple[int, ...]:
    """The seed sequence of benchmark sample ``index`` of the cell (length, depth) under ``seed``."""
    return (stream, int(seed), int(length), int(round(depth * 10_000)), int(index))


def draw_question(rng: np.random.Generator, kind: str) -> NeedleQuestion:
    """A needle and its four shuffled options (``kind`` ``mixed`` draws shape or digit)."""
    if kind == "mixed":
        kind = "shape" if rng.random() < 0.5 else "digit"
    if kind == "colour":
        index = int(rng.integers(len(FIXED_COLOURS)))
        symbol = SHAPES[int(rng.integers(len(SHAPES)))]
        return NeedleQuestion(kind="colour", colour=FIXED_COLOURS[index], symbol=symbol, question=QUESTION_COLOUR,
                              options=FIXED_COLOURS, answer=LETTERS[index])
    colours = list(COLOURS)
    colour = colours[int(rng.integers(len(colours)))]
    if kind == "shape":
        symbol = SHAPES[int(rng.integers(len(SHAPES)))]
        other_shapes = [s for s in SHAPES if s != symbol]
        other_colours = [c for c in colours if c != colour]
        same_colour = (colour, other_shapes[int(rng.integers(len(other_shapes)))])
        same_shape = (other_colours[int(rng.integers(len(other_colours)))], symbol)
        taken = {(colour, symbol), same_colour, same_shape}
        rest = [(c, s) for c in colours for s in SHAPES if (c, s) not in taken]
        third = rest[int(rng.integers(len(rest)))]
        options = [describe(kind, colour, symbol)] + [describe(kind, c, s) for c, s in (same_colour, same_shape, third)]
        question = QUESTION_SHAPE
    else:
        symbol = DIGITS[int(rng.integers(len(DIGITS)))]
        others = [d for d in DIGITS if d != symbol]
        picks = rng.choice(len(others), size=3, replace=False)
        options = [describe(kind, colour, symbol)] + [describe(kind, colour, others[int(i)]) for i in picks]
        question = QUESTION_DIGIT
    order = rng.permutation(len(LETTERS))
    shuffled = tuple(options[int(i)] for i in order)
    answer = LETTERS[int(np.flatnonzero(order == 0)[0])]
    return NeedleQuestion(kind=kind, colour=colour, symbol=symbol, question=question, options=shuffled, answer=answer)


def question_for(seed: Sequence[int], kind: str) -> NeedleQuestion:
    """The question of the sample with seed sequence ``seed`` (drawn first, so known without rendering)."""
    return draw_question(np.random.default_rng(list(seed)), kind)


@dataclass
class _Draw:
    """Random parameters of one sample (all rendering is a function of these)."""

    question: NeedleQuestion
    start: int
    texture: np.ndarray  # [K, 6]: angle, spatial frequency, temporal frequency, phase, amplitude, spare
    texture_colour: np.ndarray  # [K, 3] in [-1, 1]
    base: np.ndarray  # [3] base colour of the texture
    background: np.ndarray  # [3] flat background of the needle
    centre: np.ndarray  # [2] (y, x) in pixels
    radius: float
    drift: np.ndarray  # [2] pixels per frame


def _draw(seed: Sequence[int], length: int, depth: float, config: NeedleConfig) -> _Draw:
    rng = np.random.default_rng(list(seed))
    question = draw_question(rng, config.kind)
    size = config.frame_size
    k = _TEXTURE_COMPONENTS
    texture = np.stack(
        [
            rng.uniform(0.0, math.pi, k),  # orientation
            rng.uniform(0.8, 4.0, k),  # cycles per frame width
            rng.uniform(0.08, 0.6, k) * rng.choice([-1.0, 1.0], k),  # radians per frame
            rng.uniform(0.0, 2 * math.pi, k),  # phase
            rng.uniform(25.0, 55.0, k),  # amplitude (grey levels)
            np.zeros(k),
        ],
        axis=1,
    )
    colour = rng.uniform(-1.0, 1.0, (k, 3))
    colour /= np.maximum(np.abs(colour).max(axis=1, keepdims=True), 1e-6)
    base = rng.uniform(90.0, 165.0, 3)
    background = np.full(3, rng.uniform(15.0, 45.0)) + rng.uniform(-5.0, 5.0, 3)
    radius = rng.uniform(0.22, 0.34) * size
    margin = radius + 2.0
    centre = rng.uniform(margin, size - margin, 2)
    drift = rng.uniform(-1.5, 1.5, 2)
    start = needle_start(length, config.needle_frames, depth)
    return _Draw(question, start, texture, colour, base, background, centre, radius, drift)


def _haystack(draws: list[_Draw], length: int, size: int, device: torch.device) -> torch.Tensor:
    """Float frames ``[B, T, H, W, 3]`` of drifting coloured gratings."""
    tex = torch.tensor(np.stack([d.texture for d in draws]), dtype=torch.float32, device=device)  # [B, K, 6]
    col = torch.tensor(np.stack([d.texture_colour for d in draws]), dtype=torch.float32, device=device)  # [B, K, 3]
    base = torch.tensor(np.stack([d.base for d in draws]), dtype=torch.float32, device=device)  # [B, 3]
    coords = torch.arange(size, dtype=torch.float32, device=device) / size
    angle, freq, speed, phase, amp = (tex[..., i] for i in range(5))
    # [B, K, H, W]: position along each grating's direction
    along = torch.cos(angle)[..., None, None] * coords[None, None, None, :] + torch.sin(angle)[..., None, None] * coords[
        None, None, :, None
    ]
    spatial = 2 * math.pi * freq[..., None, None] * along
    t = torch.arange(length, dtype=torch.float32, device=device)
    temporal = speed[..., None] * t + phase[..., None]  # [B, K, T]
    wave = torch.sin(spatial[:, :, None] + temporal[..., None, None])  # [B, K, T, H, W]
    frames = torch.einsum("bkthw,bkc->bthwc", wave, col * amp[..., None])
    return frames.add_(base[:, None, None, None, :])


def _symbol_masks(draws: list[_Draw], frames: int, size: int, device: torch.device) -> torch.Tensor:
    """Bool ``[B, n, H, W]``: where each needle frame shows its shape or digit."""
    centre = torch.tensor(np.stack([d.centre for d in draws]), dtype=torch.float32, device=device)  # [B, 2]
    drift = torch.tensor(np.stack([d.drift for d in draws]), dtype=torch.float32, device=device)
    radius = torch.tensor([d.radius for d in draws], dtype=torch.float32, device=device)[:, None, None, None]
    step = torch.arange(frames, dtype=torch.float32, device=device)
    cy = (centre[:, 0, None] + drift[:, 0, None] * step)[..., None, None]  # [B, n, 1, 1]
    cx = (centre[:, 1, None] + drift[:, 1, None] * step)[..., None, None]
    pix = torch.arange(size, dtype=torch.float32, device=device) + 0.5
    dy = pix[None, None, :, None] - cy  # [B, n, H, 1]
    dx = pix[None, None, None, :] - cx  # [B, n, 1, W]
    ady, adx = dy.abs(), dx.abs()
    masks = {
        "circle": dy**2 + dx**2 <= radius**2,
        "square": (ady <= 0.8 * radius) & (adx <= 0.8 * radius),
        # apex up: half-width grows linearly from the top (y = -r) to the base (y = 0.8 r)
        "triangle": (dy >= -radius) & (dy <= 0.8 * radius) & (adx <= 0.62 * (dy + radius)),
        "cross": ((adx <= 0.3 * radius) & (ady <= radius)) | ((ady <= 0.3 * radius) & (adx <= radius)),
    }
    # digits: a box of height 2r and width 1.2r around the centre
    uy = (dy + radius) / (2 * radius)
    ux = (dx + 0.6 * radius) / (2 * radius)
    segments = {
        name: (uy >= y0) & (uy <= y1) & (ux >= x0) & (ux <= x1) for name, (y0, y1, x0, x1) in _SEGMENT_BOXES.items()
    }
    out = torch.zeros(len(draws), frames, size, size, dtype=torch.bool, device=device)
    for b, d in enumerate(draws):
        q = d.question
        if q.kind in ("shape", "colour"):
            out[b] = masks[q.symbol][b]
        else:
            for seg in _DIGIT_SEGMENTS[int(q.symbol)]:
                out[b] |= segments[seg][b]
    return out


def _needle(draws: list[_Draw], frames: int, size: int, device: torch.device) -> torch.Tensor:
    """Float needle frames ``[B, n, H, W, 3]``: the symbol in its colour on a flat dark background."""
    mask = _symbol_masks(draws, frames, size, device)
    background = torch.tensor(np.stack([d.background for d in draws]), dtype=torch.float32, device=device)
    colour = torch.tensor([COLOURS[d.question.colour] for d in draws], dtype=torch.float32, device=device)
    return torch.where(mask[..., None], colour[:, None, None, None, :], background[:, None, None, None, :])


def _to_uint8(frames: torch.Tensor) -> torch.Tensor:
    return frames.clamp_(0.0, 255.0).round_().to(torch.uint8)


def render_batch(
    seeds: Sequence[Sequence[int]],
    length: int,
    depths: Sequence[float],
    config: NeedleConfig = NeedleConfig(),
    *,
    device: torch.device | str = "cpu",
    haystacks: torch.Tensor | None = None,
    with_needle: bool = True,
) -> tuple[torch.Tensor, list[NeedleQuestion], list[int]]:
    """Frames uint8 ``[B, T, H, W, 3]`` on ``device``, the questions and the needle start frames.

    ``seeds[i]`` and ``depths[i]`` define sample i; ``haystacks`` (uint8 ``[B, T, H, W, 3]``, frames of the
    user's videos) replaces the generated textures. ``with_needle=False`` leaves the needle out (the haystack's
    own frames stay where it would be) and asks the same questions: a control, where a model that reads the
    needle can only guess.
    """
    config.check_length(length)
    if len(seeds) != len(depths) or not seeds:
        raise ValueError(f"need one depth per seed and at least one sample, got {len(seeds)} seeds, {len(depths)} depths")
    device = torch.device(device)
    size, n = config.frame_size, config.needle_frames
    draws = [_draw(s, length, float(d), config) for s, d in zip(seeds, depths)]
    if haystacks is None:
        frames = _to_uint8(_haystack(draws, length, size, device))
    else:
        expected = (len(draws), length, size, size, 3)
        if tuple(haystacks.shape) != expected or haystacks.dtype != torch.uint8:
            raise ValueError(f"haystacks must be uint8 {expected}, got {haystacks.dtype} {tuple(haystacks.shape)}")
        frames = haystacks.to(device).clone()
    if with_needle:
        needle = _to_uint8(_needle(draws, n, size, device))
        for b, d in enumerate(draws):
            frames[b, d.start : d.start + n] = needle[b]
    return frames, [d.question for d in draws], [d.start for d in draws]


def make_samples(
    seeds: Sequence[Sequence[int]],
    length: int,
    depths: Sequence[float],
    config: NeedleConfig = NeedleConfig(),
    *,
    haystacks: np.ndarray | None = None,
) -> list[NeedleSample]:
    """Samples with numpy frames (rendered on the CPU in one batch)."""
    hay = None if haystacks is None else torch.from_numpy(np.ascontiguousarray(haystacks))
    frames, questions, starts = render_batch(seeds, length, depths, config, haystacks=hay)
    array = frames.numpy()
    return [
        NeedleSample(frames=array[i], question=questions[i], length=length, depth=float(depths[i]), start=starts[i],
                     seed=tuple(int(x) for x in seeds[i]))
        for i in range(len(seeds))
    ]


def make_sample(
    seed: int,
    length: int,
    depth: float,
    config: NeedleConfig = NeedleConfig(),
    *,
    index: int = 0,
    haystack: np.ndarray | None = None,
) -> NeedleSample:
    """Benchmark sample ``index`` of the cell (``length`` frames, ``depth``) under ``seed``.

    ``haystack`` (uint8 ``[length, H, W, 3]``) replaces the generated textures.
    """
    hay = None if haystack is None else haystack[None]
    return make_samples([sample_seed(seed, length, depth, index)], length, [depth], config, haystacks=hay)[0]


def video_metadata(num_frames: int, height: int, width: int, fps: float = VIDEO_FPS) -> dict:
    """The processor's ``video_metadata`` for ``num_frames`` frames shown at ``fps``, every frame sampled.

    The same dict the harness builds for a generated haystack, so training and evaluation give the model the
    same temporal positions.
    """
    return {
        "total_num_frames": num_frames,
        "fps": fps,
        "frames_indices": list(range(num_frames)),
        "height": height,
        "width": width,
        "duration": num_frames / fps,
    }
