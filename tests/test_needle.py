"""The needle generator: deterministic from a seed, the needle where the depth says, questions that make sense."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmsparse.eval.needle import (
    COLOURS,
    FIXED_COLOURS,
    NeedleConfig,
    draw_question,
    make_sample,
    make_samples,
    needle_start,
    render_batch,
    sample_seed,
)
from vlmsparse.eval.prompts import LETTERS

SMALL = NeedleConfig(frame_size=56)


def test_same_seed_same_video_other_seed_other_video():
    a = make_sample(3, 8, 0.5, SMALL)
    b = make_sample(3, 8, 0.5, SMALL)
    c = make_sample(4, 8, 0.5, SMALL)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (8, 56, 56, 3)
    assert np.array_equal(a.frames, b.frames) and a.question == b.question
    assert not np.array_equal(a.frames, c.frames)


def test_a_sample_does_not_depend_on_its_batch():
    seeds = [sample_seed(0, 6, d, 0) for d in (0.0, 1.0)]
    together = make_samples(seeds, 6, [0.0, 1.0], SMALL)
    alone = make_samples(seeds[1:], 6, [1.0], SMALL)[0]
    assert np.array_equal(together[1].frames, alone.frames)


@pytest.mark.parametrize("depth, start", [(0.0, 0), (0.5, 4), (1.0, 8)])
def test_needle_sits_at_its_depth_on_a_flat_background(depth, start):
    sample = make_sample(1, 10, depth, SMALL)
    assert sample.start == start == needle_start(10, 2, depth)
    # the needle's frames: a flat dark background (most pixels one colour), the haystack's: textured
    def dark_share(frame):
        return float((frame.max(axis=-1) < 60).mean())

    for t in range(10):
        in_needle = start <= t < start + 2
        assert (dark_share(sample.frames[t]) > 0.4) == in_needle
    # the haystack moves: no two haystack frames are alike
    hay = [sample.frames[t] for t in range(10) if not start <= t < start + 2]
    assert all(not np.array_equal(x, y) for i, x in enumerate(hay) for y in hay[i + 1 :])


def test_the_needle_shows_its_colour():
    sample = make_sample(2, 4, 0.0, SMALL)
    rgb = np.array(COLOURS[sample.question.colour])
    close = np.abs(sample.frames[0].astype(int) - rgb).sum(-1) < 10
    assert close.mean() > 0.05  # the shape covers a good part of the frame


@pytest.mark.parametrize("kind", ["shape", "digit", "mixed"])
def test_shuffled_questions_have_four_distinct_options_and_the_answer_names_the_needle(kind):
    letters = set()
    for i in range(40):
        q = draw_question(np.random.default_rng(i), kind)
        assert len(set(q.options)) == 4
        assert q.options[LETTERS.index(q.answer)] == q.description
        letters.add(q.answer)
        if q.kind == "shape":  # hard distractors: one shares the colour, one the shape
            others = [o for o in q.options if o != q.description]
            assert any(q.colour in o for o in others) and any(o.endswith(q.symbol) for o in others)
    assert letters == set(LETTERS)


def test_colour_questions_list_the_colours_in_one_order():
    for i in range(12):
        q = draw_question(np.random.default_rng(i), "colour")
        assert q.options == FIXED_COLOURS and q.options[LETTERS.index(q.answer)] == q.colour


def test_user_frames_keep_everything_but_the_needle():
    hay = np.random.default_rng(0).integers(0, 255, size=(1, 6, 56, 56, 3), dtype=np.uint8)
    frames, _, starts = render_batch([sample_seed(0, 6, 0.5, 0)], 6, [0.5], SMALL, haystacks=torch.from_numpy(hay))
    start = starts[0]
    kept = [t for t in range(6) if not start <= t < start + 2]
    assert np.array_equal(frames[0, kept].numpy(), hay[0, kept])
    assert not np.array_equal(frames[0, start].numpy(), hay[0, start])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(needle_frames=3), "even number"),
        (dict(frame_size=100), "multiple of 28"),
        (dict(kind="word"), "needle kind"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NeedleConfig(**kwargs)


def test_a_needle_longer_than_the_haystack_is_refused():
    with pytest.raises(ValueError, match="longer than the haystack"):
        make_sample(0, 2, 0.5, NeedleConfig(frame_size=56, needle_frames=4))


def test_the_control_leaves_the_needle_out_and_keeps_everything_else():
    seeds, depths = [(0, 1, 2), (3, 4, 5)], [0.3, 0.9]
    config = NeedleConfig(frame_size=56, kind="colour")
    with_needle, questions, starts = render_batch(seeds, 16, depths, config)
    without, questions2, starts2 = render_batch(seeds, 16, depths, config, with_needle=False)
    assert [q.answer for q in questions] == [q.answer for q in questions2] and starts == starts2
    for b, start in enumerate(starts):
        span = slice(start, start + config.needle_frames)
        assert not torch.equal(with_needle[b, span], without[b, span])  # the needle's frames differ ...
        keep = torch.ones(16, dtype=torch.bool)
        keep[span] = False
        assert torch.equal(with_needle[b, keep], without[b, keep])  # ... and nothing else
