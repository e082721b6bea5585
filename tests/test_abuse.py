"""The harness, the benchmarks, the plugin and the kernel under abuse: bad inputs, unlucky files and faults.

What must hold: every bad argument, config, model folder or data file is a one-line error (exit 2) before the
model loads; a fault (full disk, SIGTERM, a killed process, a second process on the same run) loses and
duplicates no record; the CSV and the records say what was really used. The tiny random model answers at
random: these tests check the harness, not accuracy.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from vlmsparse.eval import cli, leaderboard, records, runner
from vlmsparse.eval.errors import OutputError
from vlmsparse.eval.frames import FrameSpec, read_video
from vlmsparse.eval.record_fields import check_record

from vlmsparse.eval.synthetic_videomme import write_synthetic_videomme as make_videomme_fixture, write_video

REPO = Path(__file__).resolve().parents[1]
TINY = ["--min-pixels", "784", "--max-pixels", "3136", "--dtype", "float32", "--max-new-tokens", "2"]


@pytest.fixture
def data(tmp_path):
    """One video per split, two questions each; 56 x 72 frames, a size decord cannot read (PyAV does)."""
    return make_videomme_fixture(tmp_path / "videomme", videos_per_split=1, questions_per_video=2, width=72)


def run_cli(model, data_dir, out, *extra) -> int:
    base = ["--model", str(model), "--data-dir", str(data_dir), "--out", str(out), "--no-progress", "--no-warmup"]
    return cli.main([*base, *TINY, "--method", "dense", *extra])


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("Loading")]


def run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("runs/*/*/*/run.json"))


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    """The plots drawn after a run are tested elsewhere; here they would only cost time."""
    monkeypatch.setattr(cli, "_draw_plots", lambda out: None)


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the model is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("vlmsparse.eval.model_io.load_model", refuse)


# -- bad inputs: one line, exit 2, before the model loads, nothing written ------------------------------------


def _bad_argv(tmp: Path, model: str, data_dir: Path) -> list[tuple[list[str], str]]:
    (tmp / "empty").mkdir()
    (tmp / "no-weights").mkdir()
    (tmp / "no-weights" / "config.json").write_text("{}")
    (tmp / "a-file").write_text("x")
    configs = {
        "frames0.toml": 'method = "psa"\n[run]\nframes = 0\n',
        "high.toml": 'method = "psa"\n[method_config]\nthresholds = "high"\n',
        "fast.toml": 'method = "psa"\n[run]\nfps = "fast"\n',
        "tokens.toml": 'method = "psa"\n[run]\nmax_new_tokens = 0\n',
        "twin.toml": 'name = "same"\nmethod = "psa"\n',
    }
    for name, text in configs.items():
        (tmp / name).write_text(text)
    twin = str(tmp / "twin.toml")
    return [
        (["--frames", "1"], "--frames 1"),
        (["--min-pixels", "100"], "min_pixels must be >= 784"),
        (["--min-pixels", "5000"], "max_pixels (3136) must be >= min_pixels (5000)"),
        (["--fps", "inf"], "--fps"),
        (["--method", "psa", "--config", str(tmp / "frames0.toml")], "[run] frames = 0"),
        (["--method", "psa", "--config", str(tmp / "high.toml")], "thresholds must be a list of 4 numbers"),
        (["--method", "psa", "--config", str(tmp / "fast.toml")], "fps must be a number"),
        (["--method", "psa", "--config", str(tmp / "tokens.toml")], "max_new_tokens must be an integer >= 1"),
        (["--method", "psa", "--config", twin, "--config", twin], "both name setting 'same'"),
        (["--model", str(tmp / "empty")], "is empty"),
        (["--model", str(tmp / "no-weights")], "no weights"),
        (["--model", str(tmp / "missing")], "does not exist"),
        (["--model", str(tmp / "a-file")], "is a file"),
        (["--model", "Owner/not-cached"], "nor in the hub cache"),
        (["--data-dir", str(tmp / "missing")], "--data-dir"),
        (["--metadata", str(tmp / "missing.parquet")], "--metadata"),
        (["--out", str(tmp / "a-file")], "--out"),
    ]


def test_bad_arguments_configs_and_model_folders(tiny_model, data, tmp_path, capsys, no_model_load, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "results"
    for argv, message in _bad_argv(tmp_path, tiny_model, data.root):
        base = ["--model", tiny_model, "--data-dir", str(data.root), "--out", str(out), *TINY[:-2], "--method", "dense"]
        with pytest.raises(SystemExit) as exc:
            cli.main([*base, *argv])
        lines = error_lines(capsys)
        assert exc.value.code == 2, argv
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0], (argv, lines)
    assert not out.exists()  # nothing written, not even run.json


def test_bad_question_tables_are_one_line_errors(tiny_model, data, tmp_path, capsys, no_model_load):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(data.parquet)
    no_task = tmp_path / "no-task-type.parquet"
    pq.write_table(table.drop(["task_type"]), no_task)
    bad_answer = tmp_path / "bad-answer.parquet"
    rows = table.to_pylist()
    rows[0]["answer"] = "E"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), bad_answer)
    not_parquet = tmp_path / "table.parquet"
    not_parquet.write_text("question_id,answer\n001-1,A\n")
    out = tmp_path / "results"
    for path, message in [(no_task, "task_type"), (bad_answer, "answer must be one of"), (not_parquet, str(not_parquet))]:
        assert run_cli(tiny_model, data.root, out, "--metadata", str(path)) == 2
        lines = error_lines(capsys)
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert not out.exists()


def test_read_only_results_folder(tiny_model, data, tmp_path, capsys, no_model_load, monkeypatch):
    out = tmp_path / "results"
    out.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # the folder's file system answers as a read-only mount does
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert run_cli(tiny_model, data.root, out) == 2
    (line,) = error_lines(capsys)
    assert "Read-only file system" in line and "--out" in line and str(out) in line


# -- what was used, what a resume counts -----------------------------------------------------------------------


def test_frames_used_odd_videos_and_records_checked_on_resume(tiny_model, data, tmp_path, capsys):
    out = tmp_path / "results"
    # 15 frames: odd (sampled as 16), and more than the videos' 12 (sampled as 12)
    assert run_cli(tiny_model, data.root, out, "--frames", "15") == 0
    err = capsys.readouterr().err
    assert "frames 15 is not a multiple of 2" in err and "12 are sampled" in err
    assert "decoded with PyAV" in err  # 56 x 72: decord fails, PyAV reads it
    (row,) = leaderboard.read_rows(out / "videomme.csv")
    assert (row["frames"], row["frames_used"], row["n_overall"], row["n_errors"]) == ("15", "12", "6", "0")
    assert row["min_pixels"] == "784" and row["method_settings"] == "unpatched"
    assert row["frame_pixels_used"] == str(28 * 56)
    (run_dir,) = run_dirs(out)
    file = run_dir / "records.jsonl"
    recs = lines_of(file)
    assert all(r["frames"] == 12 and r["decoder"] == "pyav" and r["frame_size"] == [28, 56] for r in recs)
    assert oct(os.stat(out / "videomme.csv").st_mode & 0o777) == oct(0o666 & ~_umask())

    # hand-edited and torn records are not counted: reported, answered again, kept aside
    bad = [{"question_id": recs[0]["question_id"]}, {**recs[1], "sparsity": "abc"}, {**recs[2], "correct": not recs[2]["correct"]},
           {**recs[3], "answer": "D" if recs[3]["answer"] != "D" else "A"}]
    file.write_text("".join(json.dumps(r) + "\n" for r in bad + recs[4:]) + '{"question_id": "003-2", "corr')
    assert run_cli(tiny_model, data.root, out, "--frames", "15") == 0
    err = capsys.readouterr().err
    assert "5 line(s)" in err and "not whole records" in err and "'sparsity' is 'abc'" in err
    (row,) = leaderboard.read_rows(out / "videomme.csv")
    assert (row["n_overall"], row["n_short"], row["n_medium"], row["n_long"]) == ("6", "2", "2", "2")
    after = lines_of(file)
    assert sorted(r["question_id"] for r in after) == sorted(r["question_id"] for r in data.rows)
    assert all(check_record(r) is None for r in after)
    assert len((run_dir / records.REJECTED_FILE).read_text().splitlines()) == 5

    # another split or limit is another run: its own folder, the first one's records untouched
    assert run_cli(tiny_model, data.root, out, "--frames", "15", "--split", "long", "--limit", "1") == 0
    assert len(run_dirs(out)) == 2 and lines_of(file) == after
    rows = leaderboard.read_rows(out / "videomme.csv")
    assert [(r["split"], r["n_overall"]) for r in rows] == [("all", "6"), ("long", "1")]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_csv_files_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        leaderboard.append_row(tmp_path / "board.csv", {"model": "m", "run_id": "r"})
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "board.csv").st_mode & 0o777 == 0o664
    os.chmod(tmp_path / "board.csv", 0o640)  # a file that exists keeps its mode
    leaderboard.append_row(tmp_path / "board.csv", {"model": "m", "run_id": "s"})
    assert os.stat(tmp_path / "board.csv").st_mode & 0o777 == 0o640


@pytest.mark.parametrize("height, width", [(56, 72), (30, 48), (40, 16), (90, 24), (58, 90)])
def test_odd_size_videos_decode(tmp_path, height, width):
    path = write_video(tmp_path / "v.mp4", num_frames=6, height=height, width=width)
    video = read_video(path, FrameSpec(frames=4, min_pixels=784, max_pixels=3136))
    assert video.source_size == (height, width) and video.num_frames == 4 and video.frames.shape[-1] == 3
    assert video.indices == [0, 2, 3, 5] and video.total_frames == 6


def test_pyav_gives_the_pixels_decord_gives(tmp_path):
    from vlmsparse.eval import frames

    path = write_video(tmp_path / "v.mp4", num_frames=6, height=56, width=84)
    spec = FrameSpec(frames=4, min_pixels=784, max_pixels=6272)
    a, b = frames._read_with_decord(str(path), spec, 0), frames._read_with_pyav(str(path), spec)
    assert (a.decoder, b.decoder) == ("decord", "pyav") and a.indices == b.indices and a.video_fps == b.video_fps
    assert torch.equal(torch.from_numpy(a.frames), torch.from_numpy(b.frames))


def test_unreadable_video_names_both_decoders(tmp_path):
    from vlmsparse.eval.frames import VideoDecodeError

    path = tmp_path / "v.mp4"
    path.write_bytes(b"\x00not a video" * 50)
    with pytest.raises(VideoDecodeError, match="decord: .*PyAV: "):
        read_video(path, FrameSpec(frames=4))


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"question_id": "1"}, "no 'videoID'"),
        ({"sparsity": float("nan")}, "'sparsity' is nan"),
        ({"prefill_s": -1.0}, "'prefill_s'"),
        ({"frames": "4"}, "'frames'"),
        ({"correct": 1}, "'correct'"),
        ({"error": "decode: x", "correct": True}, "cannot be correct"),
        ({"duration": "forever"}, "'duration'"),
    ],
)
def test_record_check(record, problem):
    whole = {
        "question_id": "1", "videoID": "v", "duration": "short", "task_type": "t", "answer": "A", "correct": True,
        "error": None, "prediction": "A", "sparsity": 0.5, "visual_sparsity": None, "prefill_s": 0.1,
        "num_tokens": 10, "num_visual_tokens": 4, "frames": 4, "frame_size": [28, 56], "peak_mem_gib": None,
    }
    assert check_record(whole) is None
    found = check_record(record if "question_id" in record and len(record) == 1 else {**whole, **record})
    assert found is not None and problem in found


# -- faults: full disk, SIGTERM, a killed claim, two processes ------------------------------------------------


def test_full_disk_mid_run_then_rerun(tiny_model, data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "results"
    real = records._append
    calls = {"n": 0}

    def full_on_third(path, lines):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, lines)

    monkeypatch.setattr(records, "_append", full_on_third)
    assert run_cli(tiny_model, data.root, out, "--frames", "4") == 2
    (line,) = [ln for ln in error_lines(capsys) if not ln.startswith("[")]
    assert line.startswith("error:") and "No space left on device" in line and "rerun" in line
    (run_dir,) = run_dirs(out)
    assert len(lines_of(run_dir / "records.jsonl")) == 2
    monkeypatch.setattr(records, "_append", real)
    assert run_cli(tiny_model, data.root, out, "--frames", "4") == 0
    ids = [r["question_id"] for r in lines_of(run_dir / "records.jsonl")]
    assert sorted(ids) == sorted(r["question_id"] for r in data.rows) and len(ids) == len(set(ids))


def test_full_disk_during_a_merge_changes_nothing(tmp_path, monkeypatch):
    for rank, ids in enumerate([["b", "d"], ["a", "c"]]):
        writer = records.RecordWriter(records.shard_path(tmp_path, rank, 2))
        for qid in ids:
            assert writer.write({"question_id": qid})
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.jsonl")}
    real = records._write_all

    def full_for_temporary_files(fd, data):
        if ".tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(records, "_write_all", full_for_temporary_files)
    with pytest.raises(OutputError, match="No space left on device"):
        records.merge_shards(tmp_path, order=["a", "b", "c", "d"])
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.jsonl")} == before
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
    monkeypatch.setattr(records, "_write_all", real)
    merged = records.merge_shards(tmp_path, order=["a", "b", "c", "d"])
    assert [r["question_id"] for r in lines_of(merged)] == ["a", "b", "c", "d"]


def test_writer_never_duplicates_and_survives_a_merge(tmp_path):
    one, two = records.RecordWriter(tmp_path / "records.jsonl"), records.RecordWriter(tmp_path / "records.jsonl")
    assert one.write({"question_id": "a"}) and not two.write({"question_id": "a", "again": True})
    assert two.write({"question_id": "b"})
    records.merge_shards(tmp_path, order=["b", "a"])  # replaces records.jsonl by a new file
    assert one.write({"question_id": "c"}) and not one.write({"question_id": "b"})
    assert [r["question_id"] for r in lines_of(tmp_path / "records.jsonl")] == ["b", "a", "c"]
    assert one.pending(["a", "c", "d"]) == ["d"]


def test_sigterm_stops_like_ctrl_c(tiny_model, data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "results"
    real = runner.answer_question
    calls = {"n": 0}

    def terminate_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "answer_question", terminate_on_third)
    before = signal.getsignal(signal.SIGTERM)
    assert run_cli(tiny_model, data.root, out, "--frames", "4") == 143
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    assert "terminated (SIGTERM)" in capsys.readouterr().err
    (run_dir,) = run_dirs(out)
    assert 2 <= len(lines_of(run_dir / "records.jsonl")) <= 3


def test_a_claim_dies_with_its_process(tmp_path):
    from vlmsparse.eval.locks import VideoClaims

    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from vlmsparse.eval.locks import VideoClaims
            claims = VideoClaims({str(tmp_path / 'claims.lock')!r})
            assert claims.try_claim("video-1")
            print("claimed", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "claimed"
        claims = VideoClaims(tmp_path / "claims.lock")
        assert not claims.try_claim("video-1") and claims.try_claim("video-2")
        holder.kill()  # kill -9: no clean-up runs
        holder.wait(timeout=30)
        assert claims.try_claim("video-1")
        claims.close()
    finally:
        if holder.poll() is None:
            holder.kill()


_SLOW_RUN = """
import os, sys, time, types
from pathlib import Path
import torch
barrier, log = Path(sys.argv[1]), sys.argv[2]
from vlmsparse.eval import cli, runner
from vlmsparse.eval.model_io import Generation
from vlmsparse.eval.records import RecordWriter

class SlowQA:  # the model, replaced: a process then needs no transformers import (seconds on a busy CPU)
    device = torch.device("cpu")
    model = types.SimpleNamespace(config=types.SimpleNamespace())
    def answer(self, video, prompt):
        time.sleep(0.3)
        return Generation(text="B", prefill_s=0.3, generate_s=0.3, num_input_tokens=20,
                          num_visual_tokens=int(video.frames.shape[0]), num_generated=1)

real_write = RecordWriter.write
def logged(self, record):
    written = real_write(self, record)
    if written:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {record['question_id']}\\n")
    return written
runner.VideoMMERun.qa = lambda self, max_new_tokens: SlowQA()
cli._draw_plots = lambda out: None  # plots are not what this checks (matplotlib takes seconds to import)
RecordWriter.write = logged
(barrier / str(os.getpid())).touch()
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.01)
sys.exit(cli.main(sys.argv[3:]))
"""


def test_two_processes_on_one_run_share_it(tiny_model, tmp_path):
    """The same command twice at once on one --out: every question recorded once, both rows complete.

    Real processes running the real harness (claims, record files, merge, scoring); only the model is a
    stand-in that answers "B" after 0.3 s, so that the two overlap.
    """
    data = make_videomme_fixture(tmp_path / "videomme", videos_per_split=2, questions_per_video=2)
    out, barrier, log = tmp_path / "results", tmp_path / "barrier", tmp_path / "writes.log"
    barrier.mkdir()
    argv = ["--model", tiny_model, "--data-dir", str(data.root), "--out", str(out), "--no-progress", "--no-warmup",
            *TINY, "--method", "dense", "--frames", "4", "--vision", "unpatched"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(barrier), str(log), *argv], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, err
    (run_dir,) = run_dirs(out)
    ids = [r["question_id"] for r in lines_of(run_dir / "records.jsonl")]
    assert ids == [r["question_id"] for r in data.rows]  # all 12, once each, in table order
    writes = [line.split() for line in log.read_text().splitlines()]
    assert sorted(qid for _, qid in writes) == sorted(ids)  # no question written twice, by either process
    print("records per process:", {pid: sum(1 for p, _ in writes if p == pid) for pid, _ in writes})
    (row,) = leaderboard.read_rows(out / "videomme.csv")
    assert row["n_overall"] == "12" and row["n_errors"] == "0"
    expected = sum(r["answer"] == "B" for r in data.rows) / 12
    assert float(row["acc_overall"]) == pytest.approx(expected, abs=1e-4)


# -- benchmarks and plugin ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fidelity", "--seq-lens", "0"], "--seq-lens must be > 0"),
        (["fidelity", "--methods", "bogus"], "unknown ['bogus']"),
        (["fidelity", "--heads-q", "7", "--heads-kv", "2"], "multiple of --heads-kv"),
        (["fidelity", "--head-dim", "300"], "--head-dim"),
        (["fidelity", "--out", "/proc/no/such-folder"], "cannot be written"),
        (["kernel", "--block", "100"], "--block must be one of"),
        (["kernel", "--keeps", "1.5"], "--keeps"),
        (["kernel", "--input-seeds", "-1"], "--input-seeds"),
        (["prefill", "--layers", "0"], "--layers must be > 0"),
        (["pareto", "--recall-rows", "0"], "--recall-rows must be > 0"),
        (["decode", "--size", "1279x720"], "argument --size: expected WIDTHxHEIGHT in pixels with even sides >= 16"),
        (["decode", "--size", "big"], "argument --size: expected WIDTHxHEIGHT in pixels, e.g. 1280x720"),
        (["question", "--frame", "35x64"], "argument --frame: expected HxW in patches with even sides >= 2"),
    ],
)
def test_bench_flags(argv, message, capsys, tmp_path, monkeypatch):
    from vlmsparse.bench.__main__ import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert message in line
    assert not (tmp_path / "results").exists()


def test_plugin_frame_and_model_arguments(tmp_path):
    from vlmsparse.integrations.lmms_eval_args import effective_model_args

    class Base:
        def __init__(self, pretrained=None, max_num_frames=32, fps=None, min_pixels=200704, max_pixels=1605632):
            pass

    for args, message in [
        ({"max_num_frames": 0}, "max_num_frames must be an integer >= 1"),
        ({"fps": -2.0}, "fps must be a number > 0"),
        ({"min_pixels": 5000, "max_pixels": 4000}, "min_pixels (5000) must be <= max_pixels (4000)"),
        ({"thresholds": "high"}, "thresholds must be a list of 4 numbers"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            base, sparse, _ = effective_model_args(args, Base)
            __import__("vlmsparse").get_method(sparse.method, **sparse.overrides)


# -- kernel boundary -------------------------------------------------------------------------------------------


#: VLMSPARSE_TEST_DEVICE=cuda TRITON_INTERPRET=0 runs the kernel-boundary checks on a GPU.
KERNEL_DEVICE = os.environ.get("VLMSPARSE_TEST_DEVICE", "cpu")


def _kernel_inputs():
    q, k, v = (torch.randn(1, 2, 64, 16, device=KERNEL_DEVICE) for _ in range(3))
    levels = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 2, 0, 1]], dtype=torch.int8)
    return q, k, v, levels.expand(1, 2, 4, 4).contiguous().to(KERNEL_DEVICE)


def _nan_rows(out: torch.Tensor) -> set[int]:
    return set(out.isnan().any(-1)[0, 0].nonzero().flatten().tolist())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy warns on NaN
@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_nan_inputs_give_nan_rows_in_kernel_and_reference(where):
    from vlmsparse.kernels import pyramid_attention
    from vlmsparse.kernels.reference import pyramid_attention_ref

    q, k, v, levels = _kernel_inputs()
    {"q": q, "k": k, "v": v}[where][0, 0, 20] = float("nan")  # position 20: key block 1
    kw = dict(block_m=16, block_n=16)
    kernel, ref = pyramid_attention(q, k, v, levels, **kw), pyramid_attention_ref(q, k, v, levels, **kw)
    # rows that use position 20: its own row for q; for k and v the rows of query blocks 1 (causally, from
    # row 20 on) and 3 (pooled at level 2); query blocks 0 and 2 do not see key block 1
    users = {20} if where == "q" else set(range(20, 32)) | set(range(48, 64))
    assert _nan_rows(ref) == users
    if where == "v":  # the kernel multiplies the whole tile by its weights: 0 x NaN reaches rows 16-19 too
        assert users <= _nan_rows(kernel) <= set(range(16, 32)) | set(range(48, 64))
    else:
        assert _nan_rows(kernel) == users
    finite = torch.ones(64, dtype=torch.bool, device=kernel.device)
    finite[sorted(_nan_rows(kernel))] = False
    torch.testing.assert_close(kernel[0, 0, finite], ref[0, 0, finite], atol=1e-4, rtol=1e-4)
    assert not (ref[0, 0, sorted(users)] == 0).all(-1).any()  # never silently zero


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("where", ["k", "v"])
def test_nan_in_a_skipped_block_never_gives_a_finite_tail(where):
    from vlmsparse.kernels import pyramid_attention
    from vlmsparse.kernels.reference import pyramid_attention_ref

    q, k, v, levels = _kernel_inputs()
    {"k": k, "v": v}[where][0, 0, 20] = float("nan")  # key block 1, which query block 2 skips (wholly visible)
    kw = dict(block_m=16, block_n=16, tail=True)
    kernel, ref = pyramid_attention(q, k, v, levels, **kw), pyramid_attention_ref(q, k, v, levels, **kw)
    assert set(range(32, 48)) <= _nan_rows(ref)  # the tail of query block 2 holds the NaN key
    # the kernel sums skipped blocks with one matmul per kv-head: a NaN reaches every row whose program has a
    # tail over wholly visible blocks (query blocks 2 and 3), and may reach rows 16-19 through a whole V tile
    assert _nan_rows(ref) <= _nan_rows(kernel) <= _nan_rows(ref) | set(range(16, 20)) | set(range(32, 64))
    finite = torch.ones(64, dtype=torch.bool, device=kernel.device)
    finite[sorted(_nan_rows(kernel))] = False
    assert finite[:16].all()
    torch.testing.assert_close(kernel[0, 0, finite], ref[0, 0, finite], atol=1e-4, rtol=1e-4)


def test_kernel_boundary_errors():
    from vlmsparse.kernels import pyramid_attention
    from vlmsparse.kernels.reference import pyramid_attention_ref

    q, k, v, levels = _kernel_inputs()
    for fn in (pyramid_attention, pyramid_attention_ref):
        with pytest.raises(ValueError, match="batch 0"):
            fn(q[:0], k[:0], v[:0], levels[:0], block_m=16, block_n=16)
        with pytest.raises(ValueError, match="at least one head"):
            fn(q[:, :0], k[:, :0], v[:, :0], levels[:, :0], block_m=16, block_n=16)
    with pytest.raises(ValueError, match="sm_scale must be a finite number"):
        pyramid_attention_ref(q, k, v, levels, block_m=16, block_n=16, sm_scale=float("nan"))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_kernel_refuses_a_nan_scale():
    from vlmsparse.kernels import pyramid_attention

    q, k, v, levels = _kernel_inputs()
    with pytest.raises(ValueError, match="sm_scale must be a finite number"):
        pyramid_attention(q, k, v, levels, block_m=16, block_n=16, sm_scale=float("nan"))
