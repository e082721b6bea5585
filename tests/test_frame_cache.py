"""The frame cache (``--frame-cache``): stored sampled videos read back the same, keyed by file and frame spec,
robust to broken entries, shared writers and a disk that refuses writes; the harness answers the same with it,
later settings and runs read from it, and ``--decode-only`` fills it without a model."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from vlmsparse.eval import cli, leaderboard
from vlmsparse.eval.frame_cache import FrameCache
from vlmsparse.eval.frames import FrameSpec, read_video
from vlmsparse.eval.synthetic_videomme import write_synthetic_videomme, write_video

#: 4 frames of 28 x 56 (the harness tests' tiny sampling)
SPEC = FrameSpec(frames=4, min_pixels=784, max_pixels=3136)
TINY = ["--frames", "4", "--min-pixels", "784", "--max-pixels", "3136", "--dtype", "float32", "--max-new-tokens", "4"]
FIELDS = ("sample_fps", "indices", "total_frames", "video_fps", "source_size", "path", "decoder", "extra")


@pytest.fixture
def video(tmp_path) -> Path:
    return write_video(tmp_path / "clip.mp4", num_frames=12, seed=3)


def same_video(a, b) -> bool:
    return np.array_equal(a.frames, b.frames) and all(getattr(a, f) == getattr(b, f) for f in FIELDS)


def entry_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- the cache on its own ----------------------------------------------------------------------------------


def test_miss_then_hit_gives_the_same_frames_and_fields(video, tmp_path):
    cache = FrameCache(tmp_path / "cache")
    assert cache.get(video, SPEC) is None
    first, cached = cache.read(video, SPEC)
    assert cached is False
    assert same_video(first, read_video(video, SPEC))
    second, cached = cache.read(video, SPEC)
    assert cached is True and same_video(second, first)
    assert second.frames.dtype == np.uint8 and second.frames.shape == (4, 28, 56, 3)
    assert isinstance(second.source_size, tuple) and second.source_size == (56, 84)
    names = entry_files(tmp_path / "cache")
    assert len(names) == 2 and {Path(n).suffix for n in names} == {".npy", ".json"}  # no temporary file left


def test_a_changed_file_or_spec_misses(video, tmp_path):
    cache = FrameCache(tmp_path / "cache")
    cache.read(video, SPEC)
    assert cache.get(video, SPEC) is not None
    assert cache.get(video, FrameSpec(frames=6, min_pixels=784, max_pixels=3136)) is None
    assert cache.get(video, FrameSpec(frames=4, min_pixels=1024, max_pixels=3136, factor=32)) is None
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched: same bytes, new mtime
    assert cache.get(video, SPEC) is None
    write_video(video, num_frames=14, seed=4)  # rewritten: other size, other frames
    assert cache.get(video, SPEC) is None
    fresh, cached = cache.read(video, SPEC)
    assert cached is False and fresh.total_frames == 14
    assert cache.read(video, SPEC)[0].total_frames == 14


def test_fps_two_and_two_point_zero_share_an_entry(video, tmp_path):
    cache = FrameCache(tmp_path / "cache")
    cache.read(video, FrameSpec(fps=2, min_pixels=784, max_pixels=3136))
    assert cache.get(video, FrameSpec(fps=2.0, min_pixels=784, max_pixels=3136)) is not None


@pytest.mark.parametrize("damage", ["json not json", "json cut", "json other shape", "npy cut", "npy empty", "npy gone"])
def test_a_broken_entry_is_a_miss_and_is_rewritten(video, tmp_path, damage):
    cache = FrameCache(tmp_path / "cache")
    good, _ = cache.read(video, SPEC)
    frames_path, meta_path = cache.entry_paths(cache.key(video, SPEC))
    if damage == "json not json":
        meta_path.write_text("{not json")
    elif damage == "json cut":
        meta_path.write_bytes(meta_path.read_bytes()[:40])
    elif damage == "json other shape":
        meta = json.loads(meta_path.read_text())
        meta["shape"][0] = 6
        meta_path.write_text(json.dumps(meta))
    elif damage == "npy cut":
        frames_path.write_bytes(frames_path.read_bytes()[:-100])
    elif damage == "npy empty":
        frames_path.write_bytes(b"")
    else:
        frames_path.unlink()
    assert cache.get(video, SPEC) is None
    assert cache.get(video, SPEC, mmap=True) is None
    again, cached = cache.read(video, SPEC)
    assert cached is False and same_video(again, good)
    hit, cached = cache.read(video, SPEC)  # rewritten whole
    assert cached is True and same_video(hit, good)


def test_two_threads_putting_one_entry_leave_it_whole(video, tmp_path):
    cache = FrameCache(tmp_path / "cache")
    sampled = read_video(video, SPEC)
    start = threading.Barrier(3)
    seen: list[str] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            start.wait()
            for _ in range(25):
                assert cache.put(video, SPEC, sampled)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def reader() -> None:
        start.wait()
        for _ in range(200):
            hit = cache.get(video, SPEC)
            seen.append("miss" if hit is None else "same" if same_video(hit, sampled) else "different")

    threads = [threading.Thread(target=writer), threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert "different" not in seen  # a reader sees no entry or the whole one, never a mix
    assert same_video(cache.get(video, SPEC), sampled)
    assert len(entry_files(tmp_path / "cache")) == 2  # every temporary file replaced or removed


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")])
def test_a_disk_that_refuses_writes_warns_once_and_reading_goes_on(video, tmp_path, monkeypatch, code, reason):
    folder = tmp_path / "cache"
    folder.mkdir()
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & os.O_CREAT:
            raise OSError(code, reason, str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    warnings: list[str] = []
    cache = FrameCache(folder, log=warnings.append)
    for _ in range(3):
        sampled, cached = cache.read(video, SPEC)
        assert cached is False and sampled.num_frames == 4
    assert len(warnings) == 1 and reason in warnings[0] and "\n" not in warnings[0]
    assert cache.write_error == reason
    assert entry_files(folder) == []


# -- the harness ---------------------------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path):
    """One video per split, two questions each (6 questions)."""
    return write_synthetic_videomme(tmp_path / "videomme", videos_per_split=1, questions_per_video=2)


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr(cli, "_draw_plots", lambda out: None)


def run_cli(model: str, data_dir: Path, out: Path, *extra: str) -> int:
    base = ["--model", model, "--data-dir", str(data_dir), "--out", str(out), "--no-progress", "--no-warmup"]
    return cli.main([*base, *TINY, *extra])


def rows_and_records(out: Path) -> list[tuple[dict, list[dict]]]:
    rows = leaderboard.read_rows(out / "videomme.csv")
    return [
        (row, [json.loads(line) for line in (out / "runs" / row["run_id"] / "records.jsonl").read_text().splitlines()])
        for row in rows
    ]


def responses(records: list[dict]) -> dict[str, str]:
    return {r["question_id"]: r["response"] for r in records}


def test_harness_with_the_cache_answers_the_same_and_later_settings_and_runs_read_it(tiny_model, data, tmp_path):
    cache = tmp_path / "frames"
    assert run_cli(tiny_model, data.root, tmp_path / "plain", "--method", "dense") == 0
    ((plain_row, plain),) = rows_and_records(tmp_path / "plain")
    assert all(r["frames_cached"] is False for r in plain) and float(plain_row["frames_cached_share"]) == 0.0

    # dense decodes and stores each video; psa, the second setting of the same run, reads them back
    assert run_cli(tiny_model, data.root, tmp_path / "first", "--method", "dense,psa", "--frame-cache", str(cache)) == 0
    (dense_row, dense), (psa_row, psa) = rows_and_records(tmp_path / "first")
    assert (dense_row["method"], psa_row["method"]) == ("dense", "psa")
    assert responses(dense) == responses(plain)  # greedy answers: the same frames give the same replies
    assert all(r["frames_cached"] is False and r["decode_s"] > 0 for r in dense)
    assert all(r["frames_cached"] is True and r["error"] is None for r in psa)
    assert float(dense_row["frames_cached_share"]) == 0.0 and float(psa_row["frames_cached_share"]) == 1.0
    assert len([p for p in cache.iterdir() if p.suffix == ".json"]) == 3  # one entry per video

    # a later run reads every video from the cache and answers as the run without it did
    assert run_cli(tiny_model, data.root, tmp_path / "again", "--method", "dense", "--frame-cache", str(cache)) == 0
    ((again_row, again),) = rows_and_records(tmp_path / "again")
    assert all(r["frames_cached"] is True for r in again) and float(again_row["frames_cached_share"]) == 1.0
    assert responses(again) == responses(plain)
    keep = ("frames", "frame_size", "sample_fps", "decoder", "num_visual_tokens", "prediction", "correct")
    by_id = {r["question_id"]: r for r in plain}
    assert all({k: r[k] for k in keep} == {k: by_id[r["question_id"]][k] for k in keep} for r in again)


def test_harness_goes_on_when_the_cache_cannot_be_written(tiny_model, data, tmp_path, monkeypatch, capsys):
    def full(self, target, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FrameCache, "_write_atomic", full)
    out = tmp_path / "results"
    assert run_cli(tiny_model, data.root, out, "--method", "dense", "--frame-cache", str(tmp_path / "frames")) == 0
    ((row, records),) = rows_and_records(out)
    assert len(records) == 6 and all(r["error"] is None and r["frames_cached"] is False for r in records)
    warned = [line for line in capsys.readouterr().err.splitlines() if "frame cache" in line]
    assert len(warned) == 1 and "No space left on device" in warned[0]


def test_decode_only_fills_the_cache_without_a_model_and_the_run_reads_it(tiny_model, data, tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    cache, out = tmp_path / "frames", tmp_path / "results"
    argv = ["--method", "dense,psa", "--frame-cache", str(cache), "--decode-only", "--decode-workers", "2"]
    with monkeypatch.context() as patched:
        patched.setattr("vlmsparse.eval.model_io.load_model", refuse)
        assert run_cli(tiny_model, data.root, out, *argv) == 0
        printed = capsys.readouterr().out
        assert "3 videos" in printed and "0 cached already" in printed
        assert "s of video" in printed and "s wall" in printed
        assert len([p for p in cache.iterdir() if p.suffix == ".json"]) == 3  # dense and psa sample alike: one spec
        assert not out.exists()  # no record, no table
        assert run_cli(tiny_model, data.root, out, *argv) == 0
        assert "3 cached already" in capsys.readouterr().out

    assert run_cli(tiny_model, data.root, out, "--method", "dense", "--frame-cache", str(cache)) == 0
    ((row, records),) = rows_and_records(out)
    assert len(records) == 6 and all(r["frames_cached"] is True for r in records)  # the keys match the run's


def test_decode_only_stores_the_spec_of_each_setting(tiny_model, data, tmp_path, capsys):
    eight, plain = tmp_path / "eight-frames.toml", tmp_path / "default-frames.toml"
    eight.write_text('name = "eight"\nmethod = "dense"\n[run]\nframes = 8\n')
    plain.write_text('name = "plain"\nmethod = "psa"\n')
    cache = tmp_path / "frames"
    argv = ["--model", tiny_model, "--data-dir", str(data.root), "--no-progress", "--frame-cache", str(cache),
            "--decode-only", "--config", f"{eight},{plain}", "--split", "short"]
    assert cli.main(argv) == 0
    assert "1 video by 2 frame specs (2 entries), 3 s of video" in capsys.readouterr().out
    shapes = sorted(json.loads(p.read_text())["shape"][0] for p in cache.glob("*.json"))
    assert shapes == [6, 8]  # by default 2 fps of the 3 s clip (12 frames at 4 fps); 8 frames by the config


@pytest.mark.parametrize("family, sampled", [("qwen3_vl", {"factor": 32}), ("llava_onevision", {"sampling": "uniform"})])
def test_decode_only_samples_by_the_model_family(family, sampled, data, tmp_path):
    """The entries stored ahead are those a run of that model looks up: its family's frame rules (read from the
    model's config), not Qwen2.5-VL's."""
    from vlmsparse.eval.families import family_of_model
    from vlmsparse.eval.runner import EvalOptions, setting_spec
    from vlmsparse.eval.settings import default_setting
    from vlmsparse.testing import save_tiny_model

    model = str(save_tiny_model(family, tmp_path / family, num_hidden_layers=1))
    cache = tmp_path / "frames"
    argv = ["--model", model, "--data-dir", str(data.root), "--no-progress", "--frame-cache", str(cache),
            "--decode-only", "--method", "dense", "--split", "short"]
    assert cli.main(argv) == 0
    (meta,) = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    assert {k: meta["spec"].get(k) for k in sampled} == sampled
    spec, _ = setting_spec(default_setting("dense"), EvalOptions(model=model), family_of_model(model))
    video = data.videos[data.questions("short")[0]["videoID"]]
    assert FrameCache(cache).get(video, spec) is not None
    assert FrameCache(cache).get(video, FrameSpec()) is None  # Qwen2.5-VL's rules would have been another entry


def test_decode_only_stops_when_the_cache_cannot_be_written(tiny_model, data, tmp_path, monkeypatch, capsys):
    def full(self, target, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FrameCache, "_write_atomic", full)
    argv = ["--frame-cache", str(tmp_path / "frames"), "--decode-only"]
    assert run_cli(tiny_model, data.root, tmp_path / "results", *argv) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: cannot write to the frame cache") and "No space left on device" in line


def test_decode_only_counts_a_video_that_does_not_decode_and_goes_on(tiny_model, data, tmp_path, capsys):
    broken = data.rows[2]["videoID"]  # the medium video
    data.corrupt(broken)
    cache = tmp_path / "frames"
    assert run_cli(tiny_model, data.root, tmp_path / "results", "--frame-cache", str(cache), "--decode-only") == 0
    captured = capsys.readouterr()
    assert "2 videos" in captured.out and f"1 did not decode (first: {broken})" in captured.out
    assert sum(broken in line for line in captured.err.splitlines()) == 1
    assert len(list(cache.glob("*.json"))) == 2


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_cache_flag_errors_are_one_line(tiny_model, data, tmp_path, monkeypatch, capsys):
    base = ["--model", tiny_model, "--data-dir", str(data.root), "--out", str(tmp_path / "results")]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    unwritable = tmp_path / "unwritable"
    cases = [
        (["--decode-only"], "--decode-only needs --frame-cache DIR"),
        (["--frame-cache", str(a_file)], f"--frame-cache {a_file} is a file"),
        (["--frame-cache", str(a_file), "--decode-only"], f"--frame-cache {a_file} is a file"),
        (["--frame-cache", str(unwritable / "frames")], "cannot be written (Read-only file system)"),
        (["--demo", "--frame-cache", str(tmp_path / "f"), "--decode-only"], "the demo generates its own"),
        (["--bench", "vniah", "--generate", "--frame-cache", str(tmp_path / "f")], "--frame-cache apply to --bench videomme"),
    ]
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(unwritable)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    for argv, message in cases:
        argv = [*base, *argv]
        if "--demo" in argv or "--generate" in argv:
            argv.remove("--data-dir")
            argv.remove(str(data.root))
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2, argv
        line = _one_error_line(capsys)
        assert message in line, (argv, line)
    assert not (tmp_path / "results").exists() and not unwritable.exists()


def test_cache_flag_error_on_the_command_line(tmp_path):
    """The command itself: exit status 2, one line on stderr, no traceback."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "vlmsparse.eval", "--data-dir", str(tmp_path), "--decode-only"]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--decode-only needs --frame-cache DIR" in lines[0] and "Traceback" not in proc.stderr


def test_bench_decode_times_a_cache_hit(tmp_path):
    pytest.importorskip("decord")
    import csv

    from vlmsparse.bench.__main__ import main as bench_main

    out, cache = tmp_path / "decode", tmp_path / "frames"
    argv = ["decode", "--seconds", "1", "--size", "64x48", "--fps", "8", "--repeats", "2", "--parallel", "1", "2",
            "--frame-cache", str(cache), "--out", str(out)]
    assert bench_main(argv) == 0
    with open(out / "decode.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["parallel"] for r in rows] == ["1", "2"]
    assert all(float(r["cached_read_s"]) > 0 for r in rows) and rows[0]["cached_read_s"] == rows[1]["cached_read_s"]
    assert len(list(cache.glob("*.json"))) == 1
