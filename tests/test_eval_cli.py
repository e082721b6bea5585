"""``python -m vlmsparse.eval`` end to end on CPU: a tiny random Qwen2.5-VL saved to a folder, a Video-MME-shaped
fixture with generated videos. The tiny model answers at random; these tests check the harness, not accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmsparse.eval import cli, leaderboard, runner
from vlmsparse.eval.model_io import VideoQA
from vlmsparse.eval.records import load_records

from vlmsparse.eval.synthetic_videomme import write_synthetic_videomme

REPO = Path(__file__).resolve().parents[1]
#: Tiny frames (4 frames of 56 x 28) and short answers keep a question well under a second on CPU.
TINY = ["--frames", "4", "--min-pixels", "784", "--max-pixels", "3136", "--dtype", "float32", "--max-new-tokens", "4"]
RECORD_FIELDS = {
    "question_id", "video_id", "videoID", "duration", "domain", "task_type", "prediction", "response", "answer",
    "correct", "sparsity", "visual_sparsity", "prefill_s", "num_tokens", "num_visual_tokens", "error",
}


@pytest.fixture
def data(tmp_path):
    """One video per split, two questions each (6 questions)."""
    return write_synthetic_videomme(tmp_path / "videomme", videos_per_split=1, questions_per_video=2)


def run_cli(model: str, data_dir: Path, out: Path, *extra: str) -> int:
    base = ["--model", model, "--data-dir", str(data_dir), "--out", str(out), "--no-progress", "--no-warmup"]
    return cli.main([*base, *TINY, *extra])


def board_rows(out: Path) -> list[dict]:
    return leaderboard.read_rows(out / "videomme.csv")


def run_records(out: Path, row: dict) -> list[dict]:
    path = out / "runs" / row["run_id"] / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bench", "mmlu"], "unknown benchmark"),
        (["--method", "psa,fast"], "unknown method 'fast'"),
        (["--split", "tiny"], "unknown split 'tiny'"),
        (["--config", "no/such/file.toml"], "does not exist"),
    ],
)
def test_bad_arguments_are_argument_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--data-dir", str(tmp_path), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_every_method_runs_into_one_table(tiny_model, data, tmp_path, capsys):
    out = tmp_path / "results"
    # --limit 1: the first question of each split (sparse methods run the Triton kernel in its slow interpreter)
    assert run_cli(tiny_model, data.root, out, "--method", "dense,psa,xattention,sparge", "--limit", "1") == 0
    rows = board_rows(out)
    assert [r["method"] for r in rows] == ["dense", "psa", "xattention", "sparge"]
    first_of_each_split = [data.questions(d)[0]["question_id"] for d in ("short", "medium", "long")]
    for row in rows:
        assert (row["n_short"], row["n_medium"], row["n_long"], row["n_overall"]) == ("1", "1", "1", "3")
        assert row["n_errors"] == "0" and row["n_missing"] == "0" and row["device"] == "cpu"
        assert row["model"] == tiny_model and row["frames"] == "4" and row["max_pixels"] == "3136"
        assert 0.0 <= float(row["acc_overall"]) <= 1.0 and 0.0 <= float(row["sparsity"]) <= 1.0
        assert float(row["prefill_s_mean"]) > 0
        records = run_records(out, row)
        assert [r["question_id"] for r in records] == first_of_each_split
        for rec in records:
            assert RECORD_FIELDS <= set(rec)
            assert rec["error"] is None and rec["num_visual_tokens"] > 0 and rec["num_tokens"] > rec["num_visual_tokens"]
            assert rec["correct"] == (rec["prediction"] == rec["answer"])
            assert rec["sparsity"] is not None and 0.0 <= rec["sparsity"] <= 1.0
        correct = sum(r["correct"] for r in records)
        assert float(row["acc_overall"]) == pytest.approx(correct / 3, abs=1e-4)
    assert float(rows[0]["sparsity"]) == 0.0  # dense
    task_rows = leaderboard.read_rows(out / "videomme_task_types.csv")
    assert {r["method"] for r in task_rows} == {"dense", "psa", "xattention", "sparge"}
    assert sum(int(r["n"]) for r in task_rows if r["method"] == "psa") == 3
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("paper ") for line in printed) == 4  # the paper's rows beside ours
    assert [line.split()[2] for line in printed if line.startswith("this run")] == ["dense", "psa", "xattention", "sparge"]


def test_config_file_setting_and_limit(tiny_model, data, tmp_path, monkeypatch):
    out = tmp_path / "results"
    config = REPO / "evals" / "psa-videomme-065.toml"
    calls = {"n": 0}
    real_answer = VideoQA.answer

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return real_answer(self, *args, **kwargs)

    monkeypatch.setattr(VideoQA, "answer", counted)
    argv = ["--config", str(config), "--split", "short", "--limit", "1"]
    assert cli.main(["--model", tiny_model, "--data-dir", str(data.root), "--out", str(out), "--no-progress", *TINY, *argv]) == 0
    assert calls["n"] == 2  # an untimed warm-up answer (kernel compilation), then the question
    (row,) = board_rows(out)
    assert (row["method"], row["setting"], row["split"], row["limit"]) == ("psa", "psa-videomme-0.65", "short", "1")
    assert row["config"] == "preset=videomme-0.65"
    assert (row["n_short"], row["n_medium"], row["n_overall"]) == ("1", "0", "1") and row["acc_medium"] == ""
    # a rerun of the same command replaces its row and answers nothing new
    assert run_cli(tiny_model, data.root, out, "--config", str(config), "--split", "short", "--limit", "1") == 0
    assert len(board_rows(out)) == 1 and len(run_records(out, row)) == 1


def test_run_config_frames_apply_and_sparsity_is_reported(tiny_model, data, tmp_path):
    """A config's [run] sets the frames (no CLI frame flags); enough visual blocks for PSA to skip some."""
    config = tmp_path / "psa-small-blocks.toml"
    config.write_text(
        'name = "psa-small-blocks"\nmethod = "psa"\n'
        '[method_config]\nblock_m = 32\nblock_n = 32\nmode = "quota"\nthresholds = [0.2, 0.3, 0.4, 0.5]\n'
        "[run]\nframes = 8\nmin_pixels = 18816\nmax_pixels = 18816\nmax_new_tokens = 2\n"
    )
    out = tmp_path / "results"
    base = ["--model", tiny_model, "--data-dir", str(data.root), "--out", str(out), "--no-progress", "--no-warmup"]
    assert cli.main([*base, "--dtype", "float32", "--config", str(config), "--split", "short", "--limit", "1"]) == 0
    (row,) = board_rows(out)
    assert (row["setting"], row["frames"], row["max_pixels"]) == ("psa-small-blocks", "8", "18816")
    (rec,) = run_records(out, row)
    assert rec["frames"] == 8 and rec["frame_size"] == [112, 168] and rec["num_generated"] <= 2
    assert rec["num_visual_tokens"] == 8 // 2 * (112 // 28) * (168 // 28)
    assert 0.0 < rec["sparsity"] < rec["visual_sparsity"] < 1.0
    assert float(row["sparsity"]) == pytest.approx(rec["sparsity"], abs=1e-4)
    assert float(row["visual_sparsity"]) == pytest.approx(rec["visual_sparsity"], abs=1e-4)


def test_interrupted_run_resumes_with_same_totals_and_no_duplicates(tiny_model, data, tmp_path, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_cli(tiny_model, data.root, full, "--method", "dense") == 0

    real = runner.answer_question
    calls = {"n": 0}

    def interrupt_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "answer_question", interrupt_on_third)
    assert run_cli(tiny_model, data.root, cut, "--method", "dense") == 130
    run_dirs = list((cut / "runs").rglob("records.jsonl"))
    assert len(run_dirs) == 1 and len(run_dirs[0].read_text().splitlines()) == 2
    assert not (cut / "videomme.csv").exists()
    monkeypatch.setattr(runner, "answer_question", real)

    assert run_cli(tiny_model, data.root, cut, "--method", "dense") == 0
    (row_full,), (row_cut,) = board_rows(full), board_rows(cut)
    records_cut = run_records(cut, row_cut)
    ids = [r["question_id"] for r in records_cut]
    assert len(ids) == len(set(ids)) == 6
    keep = ("acc_short", "acc_medium", "acc_long", "acc_overall", "n_short", "n_medium", "n_long", "n_overall", "n_errors")
    assert {k: row_cut[k] for k in keep} == {k: row_full[k] for k in keep}
    by_id = {r["question_id"]: r for r in run_records(full, row_full)}
    assert all(r["response"] == by_id[r["question_id"]]["response"] for r in records_cut)  # greedy: same answers


def test_missing_videos_are_listed_before_anything_runs(tiny_model, data, tmp_path, capsys):
    out = tmp_path / "results"
    gone = data.rows[2]["videoID"]  # the medium video
    data.remove(gone)
    assert run_cli(tiny_model, data.root, out, "--method", "dense") == 2
    err = capsys.readouterr().err
    assert gone in err and "--skip-missing" in err
    assert not out.exists()  # nothing ran, nothing written

    assert run_cli(tiny_model, data.root, out, "--method", "dense", "--skip-missing") == 0
    (row,) = board_rows(out)
    assert (row["n_missing"], row["n_medium"], row["n_overall"], row["acc_medium"]) == ("2", "0", "4", "")


def test_corrupt_video_is_an_error_for_its_questions_and_the_run_goes_on(tiny_model, data, tmp_path):
    out = tmp_path / "results"
    broken = data.rows[4]["videoID"]  # the long video
    data.corrupt(broken)
    assert run_cli(tiny_model, data.root, out, "--method", "dense") == 0
    (row,) = board_rows(out)
    assert (row["n_errors"], row["n_long"], row["n_overall"]) == ("2", "0", "4")
    records = {r["question_id"]: r for r in run_records(out, row)}
    assert len(records) == 6
    for rec in records.values():
        if rec["videoID"] == broken:
            assert rec["error"].startswith("decode:") and rec["prediction"] is None and rec["correct"] is False
        else:
            assert rec["error"] is None
    # errors are kept on a plain rerun, tried again with --retry-errors
    data.videos[broken].unlink()
    from vlmsparse.eval.synthetic_videomme import write_video

    write_video(data.videos[broken], seed=9)
    assert run_cli(tiny_model, data.root, out, "--method", "dense", "--retry-errors") == 0
    (row,) = board_rows(out)
    assert (row["n_errors"], row["n_long"], row["n_overall"]) == ("0", "2", "6")
    assert len(load_records(out / "runs" / row["run_id"])) == 6


class _FakeState:
    """Stands in for accelerate's PartialState as one of two processes (they run one after the other here)."""

    def __init__(self, rank: int, world: int = 2):
        self.process_index, self.num_processes = rank, world
        self.is_main_process = rank == 0
        self.device = "cpu"

    def wait_for_everyone(self) -> None:
        pass


def test_two_processes_share_the_questions_and_merge_one_result(tiny_model, data, tmp_path, monkeypatch):
    out = tmp_path / "results"
    for rank in (1, 0):  # the main process goes last: it merges the shards and scores
        monkeypatch.setattr(runner, "process_state", lambda rank=rank: _FakeState(rank))
        assert run_cli(tiny_model, data.root, out, "--method", "dense") == 0
    (row,) = board_rows(out)
    assert row["num_processes"] == "2" and row["n_overall"] == "6"
    run_dir = out / "runs" / row["run_id"]
    assert sorted(p.name for p in run_dir.glob("*.jsonl")) == ["records.jsonl"]  # shards merged away
    assert [r["question_id"] for r in run_records(out, row)] == [r["question_id"] for r in data.rows]


def test_ctrl_c_on_the_command_then_rerun_loses_nothing(tiny_model, data, tmp_path):
    """A real SIGINT to ``python -m vlmsparse.eval`` once it has answered a question; the rerun completes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "vlmsparse.eval", "--model", tiny_model, "--data-dir", str(data.root), "--out", str(out),
           "--no-progress", "--no-warmup", "--method", "dense", *TINY[:-2], "--max-new-tokens", "16"]  # slower answers: time to interrupt
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    records_file = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(out.glob("runs/*/*/*/records.jsonl"))
        if found and found[0].read_text().count("\n") >= 1:
            records_file = found[0]
            break
        time.sleep(0.05)
    assert records_file is not None, "the command answered no question"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    answered = [json.loads(line)["question_id"] for line in records_file.read_text().splitlines() if line.strip()]
    print(f"exit code {proc.returncode} after {len(answered)} answer(s)")
    if proc.returncode == 0:  # it finished before the signal landed: nothing to resume, still nothing lost
        assert len(answered) == 6
    else:
        assert proc.returncode == 130 and "rerun the same command to resume" in err
        assert 1 <= len(answered) < 6
    assert run_cli(tiny_model, data.root, out, "--method", "dense", "--max-new-tokens", "16") == 0
    (row,) = board_rows(out)
    ids = [r["question_id"] for r in run_records(out, row)]
    assert ids == [r["question_id"] for r in data.rows] and row["n_overall"] == "6"


def test_time_split_and_vision_switch(tiny_model, data, tmp_path):
    """Each record splits its time (decode, preprocess, vision, decoder prefill, generation); the row has the means."""
    from vlmsparse.eval.timing import TIME_COLUMNS, TIME_FIELDS

    for vision, implementation in (("segment", "vlmsparse_flash_segment"), ("unpatched", "sdpa")):
        out = tmp_path / vision
        assert run_cli(tiny_model, data.root, out, "--method", "dense", "--split", "short", "--vision", vision) == 0
        (row,) = board_rows(out)
        records = run_records(out, row)
        assert len(records) == 2  # one video, two questions: decoded once, its time shared
        for rec in records:
            assert rec["vision_attention"] == implementation
            assert all(rec[f] is not None and rec[f] >= 0 for f in TIME_FIELDS + ("wall_s",))
            assert rec["vision_s"] > 0 and rec["decode_s"] > 0
            assert rec["vision_s"] + rec["decoder_prefill_s"] == pytest.approx(rec["prefill_s"])
            assert rec["wall_s"] >= rec["prefill_s"] + rec["generation_s"]
        assert records[0]["decode_s"] == pytest.approx(records[1]["decode_s"])
        for column in TIME_COLUMNS:
            assert float(row[column]) > 0
        mean_wall = sum(r["wall_s"] for r in records) / 2
        assert float(row["questions_per_hour"]) == pytest.approx(3600 / mean_wall, rel=1e-3)
