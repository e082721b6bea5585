"""``python -m vlmsparse.bench question`` and ``decode`` on CPU with a tiny model and a tiny clip: the code paths the
GPU run takes (the numbers themselves mean nothing here)."""

from __future__ import annotations

import csv

import pytest

from vlmsparse.bench import question
from vlmsparse.bench.__main__ import main as bench_main


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_question_split_and_vision_check(tmp_path):
    out = tmp_path / "run"
    argv = ["question", "--tiny", "--frame", "8x8", "--visual-tokens", "32", "--new-tokens", "2",
            "--settings", "unpatched", "dense", "--out", str(out)]
    assert bench_main(argv) == 0
    rows = _rows(out / "question.csv")
    assert [r["setting"] for r in rows] == ["dense", "unpatched"]  # dense first: first allocations not on the baseline
    for r in rows:
        assert r["visual_tokens"] == "32" and r["grid_thw"] == "2x8x8" and r["generated"] == "2"
        parts = [float(r[k]) for k in question.PARTS]
        assert all(p > 0 for p in parts)
        assert sum(parts) == pytest.approx(float(r["question_s"]), rel=1e-6)
    dense, unpatched = rows
    assert (dense["kv_cache"], unpatched["kv_cache"]) == ("static", "dynamic")  # the baseline as transformers ships
    assert unpatched["vision_rel_err"] == "" and float(dense["vision_rel_err"]) < 1e-5  # same tower output
    assert 0 <= float(dense["vision_rel_err_floor"]) < 1e-5
    assert float(unpatched["speedup"]) == 1.0 and float(dense["speedup"]) > 0
    assert (out / "question.png").stat().st_size > 0
    kernel = _rows(out / "vision_attention.csv")
    assert [r["kind"] for r in kernel] == ["window", "frame"]
    assert all(float(r["segment_kernel_rel_err"]) < 1e-5 for r in kernel)


def test_video_grid():
    assert question.video_grid(24576, (36, 64)) == (43, 36, 64)  # 43 frames of 576 tokens: 24768
    assert question.video_grid(10, (36, 64)) == (1, 36, 64)


def test_decode_rate_of_a_written_clip(tmp_path):
    pytest.importorskip("decord")
    out = tmp_path / "decode"
    argv = ["decode", "--seconds", "1", "--size", "64x48", "--fps", "8", "--repeats", "1", "--parallel", "1", "2",
            "--out", str(out)]
    assert bench_main(argv) == 0
    rows = _rows(out / "decode.csv")
    assert [r["parallel"] for r in rows] == ["1", "2"]
    assert all(int(r["source_frames"]) == 8 and int(r["sampled_frames"]) >= 2 and float(r["decode_s"]) > 0 for r in rows)
