"""``python -m vlmsparse.eval --bench vniah`` on CPU: rows, cells, heatmaps, resume, and every bad input refused
before anything runs. The tiny testbed here has random weights: these tests check the harness, not accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmsparse.eval import cli, leaderboard
from vlmsparse.eval.model_io import VideoQA

from testbed_fixture import save_tiny_testbed

QUICK = ["--no-progress", "--no-warmup", "--dtype", "float32"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(save_tiny_testbed(tmp_path_factory.mktemp("tiny-testbed") / "model"))


def run(model: str, out: Path, *extra: str) -> int:
    return cli.main(["--bench", "vniah", "--model", model, "--out", str(out), *QUICK, *extra])


def records(out: Path, row: dict) -> list[dict]:
    path = out / "runs" / row["run_id"] / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_methods_write_rows_cells_heatmaps_and_resume(model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    grid = ["--generate", "--seed", "7", "--lengths", "2,4", "--depths", "0,1", "--limit", "1"]
    assert run(model, out, "--method", "dense,psa", *grid) == 0
    rows = leaderboard.read_rows(out / "vniah.csv")
    assert [r["method"] for r in rows] == ["dense", "psa"]
    for row in rows:
        assert row["n_overall"] == "4" and row["n_errors"] == "0" and row["device"] == "cpu"
        assert row["lengths"] == "2/4" and row["depths"] == "0/1" and row["seed"] == "7"
        assert row["needle"] == "colour" and row["frame_size"] == "56"  # from the model's testbed.json
        assert row["acc_by_length"].startswith("2:") and 0.0 <= float(row["acc_overall"]) <= 1.0
        assert 0.0 <= float(row["sparsity"]) <= 1.0 and float(row["prefill_s_mean"]) > 0
        assert (out / f"vniah_model_{row['method']}-default.png").stat().st_size > 1000
        recs = records(out, row)
        assert sorted(r["question_id"] for r in recs) == ["L2-d0-0", "L2-d1-0", "L4-d0-0", "L4-d1-0"]
        assert all(r["answer"] in "ABCD" and r["num_visual_tokens"] == r["visual_tokens"] for r in recs)
    cells = leaderboard.read_rows(out / "vniah_cells.csv")
    assert len(cells) == 8 and {c["length"] for c in cells} == {"2", "4"}
    assert (out / "vniah.png").stat().st_size > 1000  # accuracy vs sparsity of the board's settings

    calls = []
    real = VideoQA.answer
    monkeypatch.setattr(VideoQA, "answer", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    assert run(model, out, "--method", "dense", *grid) == 0  # same command: nothing to answer
    assert calls == []
    grid[4] = "2,4,6"  # a longer grid reuses the answered cells
    assert run(model, out, "--method", "dense", *grid) == 0
    assert len(calls) == 2
    assert len(leaderboard.read_rows(out / "vniah.csv")) == 3  # a new grid is a new row


def test_haystacks_from_a_video_folder(model, tmp_path):
    av = pytest.importorskip("av")
    import numpy as np

    folder = tmp_path / "videos"
    folder.mkdir()
    with av.open(str(folder / "clip.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for t in range(6):
            frame = np.full((48, 64, 3), 40 * t, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out"
    assert run(model, out, "--method", "dense", "--data-dir", str(folder), "--lengths", "4", "--depths", "0",
               "--limit", "1") == 0
    row = leaderboard.read_rows(out / "vniah.csv")[0]
    assert row["haystack"] == str(folder) and row["n_errors"] == "0"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lengths", "4"], "--data-dir"),  # no haystack source
        (["--generate", "--data-dir", "x"], "one haystack source"),
        (["--generate", "--needle-frames", "6", "--lengths", "4"], "longer than the haystack"),
        (["--generate", "--lengths", "1000"], "context"),  # 1000 frames = 2000 tokens > 1024 positions
        (["--generate", "--frames", "8"], "apply to --bench videomme"),
        (["--generate", "--frame-size", "50"], "multiple of 28"),
        (["--generate", "--lengths", "3"], "even frame counts"),
    ],
)
def test_bad_input_is_an_argument_error_before_anything_runs(model, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        run(model, tmp_path / "out", *extra)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_empty_or_missing_video_folder_is_refused(model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder, message in ((tmp_path / "empty", "holds no video"), (tmp_path / "nowhere", "is not a folder")):
        with pytest.raises(SystemExit) as exc:
            run(model, tmp_path / "out", "--data-dir", str(folder))
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_needle_flags_belong_to_vniah(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--data-dir", str(tmp_path), "--generate"])
    assert exc.value.code == 2 and "--bench vniah only" in capsys.readouterr().err


def test_the_shipped_testbed_runs_by_name(tmp_path):
    from vlmsparse.testbed import CHECKPOINT_DIR

    if not (CHECKPOINT_DIR / "config.json").is_file():
        pytest.skip("no testbed checkpoint in this checkout")
    out = tmp_path / "out"
    assert run("testbed", out, "--method", "dense,psa", "--generate", "--seed", "3", "--limit", "1",
               "--lengths", "8", "--depths", "0.5") == 0
    rows = leaderboard.read_rows(out / "vniah.csv")
    assert [r["model"] for r in rows] == ["testbed", "testbed"] and all(r["n_overall"] == "1" for r in rows)


def test_plot_command_draws_the_vniah_summary_with_the_testbed_errors(tmp_path):
    from vlmsparse.eval import plots

    rows = [dict(model="testbed", method=m, setting=s, acc_overall=a, acc_min_cell=a, sparsity=sp, visual_sparsity=sp)
            for m, s, a, sp in (("dense", "dense", 1.0, 0.0), ("psa", "default", 0.9, 0.4), ("psa", "x0.5", 0.6, 0.7))]
    leaderboard.write_rows(tmp_path / "vniah.csv", rows, list(rows[0]))
    fidelity = [dict(method="psa", setting="default", layer=i, sparsity=0.3 + 0.1 * i, rel_l2_error=0.05 * i)
                for i in range(3)]
    leaderboard.write_rows(tmp_path / "testbed_fidelity.csv", fidelity, list(fidelity[0]))
    assert plots.main([str(tmp_path)]) == 0
    assert (tmp_path / "vniah.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no vniah row"):
        plots.plot_vniah([dict(method="psa")], tmp_path / "x.png")


def test_default_lengths_reach_the_token_counts_a_planner_can_thin_and_fit_the_context(tmp_path):
    import json

    from vlmsparse.eval.vniah import build_spec, default_lengths

    assert default_lengths(112) == (128, 256, 512)  # 16 tokens a frame pair: 1024, 2048, 4096 visual tokens
    assert default_lengths(56) == (512, 1024, 2048)  # the testbed's frames
    assert default_lengths(56, max_positions=4096) == (512, 1024)  # 2048 frames + the question overflow 4096
    assert default_lengths(56, max_positions=1024) == (384,)  # none fits: the longest that does
    folder = tmp_path / "tb"
    folder.mkdir()
    (folder / "testbed.json").write_text(json.dumps({"needle": {"kind": "colour", "frame_size": 56, "needle_frames": 2}}))
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl", "max_position_embeddings": 5000}))
    spec = build_spec(str(folder))
    assert spec.lengths == (512, 1024, 2048) and spec.needle.frame_size == 56 and spec.needle.kind == "colour"
    assert build_spec(str(folder), lengths=[64]).lengths == (64,)


def test_the_no_needle_control_is_a_run_of_its_own_and_a_line_of_its_own(tmp_path):
    import torch

    from vlmsparse.eval.needle import NeedleConfig
    from vlmsparse.eval.plots import plot_vniah
    from vlmsparse.eval.vniah import HaystackSource, VniahSpec, grid_items

    spec = VniahSpec(lengths=(8,), depths=(0.5,), samples=1, needle=NeedleConfig(frame_size=56))
    control = VniahSpec(lengths=(8,), depths=(0.5,), samples=1, needle=NeedleConfig(frame_size=56), control=True)
    assert control.to_dict() != spec.to_dict() and "no needle" in control.haystack
    assert "control" not in str(spec.to_dict())  # runs without the control keep their identity
    (item,) = grid_items(spec)
    with_needle, question, start = HaystackSource(spec).render(item)
    without, question2, start2 = HaystackSource(control).render(item)
    assert question == question2 and start == start2
    assert not torch.equal(with_needle[start : start + 2], without[start : start + 2])
    assert torch.equal(with_needle[:start], without[:start]) and torch.equal(with_needle[start + 2 :], without[start + 2 :])
    rows = [dict(model="m", method="psa", haystack=s.haystack, visual_sparsity=0.3, acc_overall=a, acc_min_cell=a)
            for s, a in ((spec, 1.0), (control, 0.25))]
    png = plot_vniah(rows, tmp_path / "v.png")
    assert png.stat().st_size > 0
