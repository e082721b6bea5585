"""``python -m vlmsparse.eval --demo``, the plots of a run folder, and the harness's first-contact errors."""

from __future__ import annotations

import csv
import importlib.machinery
import json
import shlex
import sys
import types
from pathlib import Path

import pytest

import vlmsparse
from vlmsparse.eval import cli, demo, plots
from vlmsparse.eval.leaderboard import read_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One small demo on the CPU path: two methods, the first question of each split, two tokens per answer."""
    from contextlib import redirect_stdout
    from io import StringIO

    out = tmp_path_factory.mktemp("demo") / "run"
    argv = ["--demo", "--out", str(out), "--no-progress", "--method", "dense,psa", "--limit", "1", "--max-new-tokens", "2"]
    printed = StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(printed):
        mp.setenv("TRITON_INTERPRET", "0")  # the plain-PyTorch CPU path, as on a user's CPU
        # the tiny random model's path (a shipped testbed checkpoint would be chosen otherwise)
        mp.setattr("vlmsparse.testbed.checkpoint_path", lambda: out.parent / "no-testbed")
        code = cli.main(argv)
    return code, out, printed.getvalue()


def test_demo_runs_the_main_job_end_to_end(demo_run):
    code, out, printed = demo_run
    assert code == 0
    rows = read_rows(out / "videomme.csv")
    assert [r["method"] for r in rows] == ["dense", "psa"]
    assert all(r["n_overall"] == "3" and r["n_errors"] == "0" and r["frames"] == "32" for r in rows)
    assert float(rows[0]["sparsity"]) == 0.0
    assert float(rows[1]["sparsity"]) > 0.05  # 1024 visual tokens: blocks are left to the method
    assert (out / "videomme_task_types.csv").is_file()
    (records_file,) = [p for p in out.glob("runs/videomme/*/psa-*/records.jsonl")]
    records = [json.loads(line) for line in records_file.read_text().splitlines()]
    assert all(r["num_visual_tokens"] == 1024 for r in records)
    assert all(len(r["layer_sparsity"]) == demo.DEMO_TINY_LAYERS for r in records)
    assert all(0.0 < min(r["layer_sparsity"]) and max(r["layer_sparsity"]) < 1.0 for r in records)
    for name in (plots.ACCURACY_PNG, plots.LAYERS_PNG):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert sum(line.startswith("paper ") for line in printed.splitlines()) == 4
    assert [line.split()[2] for line in printed.splitlines() if line.startswith("this run")] == ["dense", "psa"]
    assert demo.REAL_DATA_COMMAND in printed and "its accuracy is chance" in printed
    assert (out / "data" / "videomme" / "videomme" / "test-00000-of-00001.parquet").is_file()


def test_demo_on_the_shipped_testbed_answers_from_the_clips(tmp_path, capsys):
    """The default demo model: needle clips of its own task, read back through mp4 and the harness's sampling,
    answered as the needle benchmark's renders are (chance is 0.25)."""
    from vlmsparse import testbed

    if not (Path(testbed.checkpoint_path()) / "config.json").is_file():
        pytest.skip("no testbed checkpoint in this install")
    out = tmp_path / "run"
    argv = ["--demo", "--out", str(out), "--no-progress", "--method", "dense,psa", "--limit", "2", "--max-new-tokens", "2"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "0")
        assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "trained on this task" in printed
    dense, psa = read_rows(out / "videomme.csv")
    assert dense["method"] == "dense" and dense["n_overall"] == "6" and dense["n_errors"] == "0"
    assert round(float(dense["acc_overall"]) * 6) >= 5  # the checkpoint's own check: 1.000 at 512 and 2048 frames
    assert dense["frames_used"] == "256-768" and dense["frame_pixels_used"] == "3136"  # every frame, 56 x 56
    assert float(dense["answer_prob"]) > 0.9  # the right letter's share of the options' probability
    (records_file,) = list(out.glob("runs/videomme/*/psa-*/records.jsonl"))
    records = [json.loads(line) for line in records_file.read_text().splitlines()]
    assert sorted({r["num_visual_tokens"] for r in records}) == [512, 1024, 1536]  # 256-768 frames, 2 tokens each
    assert max(r["sparsity"] for r in records) > 0.05  # eight visual key blocks on the medium clips
    assert all(len(r["option_probs"]) == 4 and 0.0 <= r["answer_prob"] <= 1.0 for r in records)


def test_demo_adds_a_sparse_psa_setting_only_to_its_default_methods(tmp_path):
    opts, _ = cli.parse_options(["--demo", "--out", str(tmp_path / "a")])
    assert [(s.method, s.name) for s in opts.settings] == [(m, "default") for m in demo.DEMO_METHODS] + [
        ("psa", "videomme-0.65")]
    assert opts.settings[-1].config.mode == "quota"  # the preset's fields, built and checked
    opts, _ = cli.parse_options(["--demo", "--out", str(tmp_path / "b"), "--method", "psa"])
    assert [(s.method, s.name) for s in opts.settings] == [("psa", "default")]


def test_needle_dataset_holds_the_needle_benchmark_pixels_losslessly(tmp_path):
    from vlmsparse.eval.frames import FrameSpec, read_video
    from vlmsparse.eval.needle import NeedleConfig, make_sample
    from vlmsparse.eval.synthetic_videomme import write_needle_videomme
    from vlmsparse.eval.videomme import load_questions

    needle = NeedleConfig(frame_size=56, needle_frames=2, kind="colour")
    data = write_needle_videomme(tmp_path / "d", lengths={"short": 8, "long": 12}, questions_per_split=2, needle=needle,
                                 seed=5)
    assert [r["duration"] for r in data.rows] == ["short", "short", "long", "long"]
    questions, _ = load_questions(data.root)
    assert [q.answer for q in questions] == [r["answer"] for r in data.rows]
    for row, (i, length, depth) in zip(data.rows, [(0, 8, 0.25), (1, 8, 0.75), (0, 12, 0.25), (1, 12, 0.75)]):
        sample = make_sample(5, length, depth, needle, index=i)
        assert row["answer"] == sample.question.answer and row["options"][0] == f"A. {sample.question.options[0]}"
        video = read_video(data.videos[row["videoID"]], FrameSpec(min_pixels=56 * 56, max_pixels=56 * 56))
        assert video.num_frames == length and video.sample_fps == pytest.approx(2.0)
        assert (video.frames == sample.frames).all()  # lossless: the benchmark's pixels exactly
    with pytest.raises(ValueError, match="durations"):
        write_needle_videomme(tmp_path / "e", lengths={"huge": 8})
    with pytest.raises(ValueError, match="even frame count"):
        write_needle_videomme(tmp_path / "f", lengths={"short": 7})


def test_demo_model_prefers_the_trained_testbed(tmp_path, monkeypatch):
    fake = types.ModuleType("vlmsparse.testbed")
    fake.__spec__ = importlib.machinery.ModuleSpec("vlmsparse.testbed", None)
    checkpoint = tmp_path / "testbed-checkpoint"
    fake.checkpoint_path = lambda: checkpoint
    monkeypatch.setitem(sys.modules, "vlmsparse.testbed", fake)
    monkeypatch.setattr(vlmsparse, "testbed", fake, raising=False)  # where an earlier test imported the real one
    saved = []
    monkeypatch.setattr("vlmsparse.testing.save_tiny_qwen2_5_vl", lambda path, **kw: saved.append(path) or Path(path))
    chosen = demo.demo_model(tmp_path / "models")
    assert not chosen.trained and saved  # no checkpoint yet: the tiny random model
    checkpoint.mkdir()
    assert not demo.demo_model(tmp_path / "models").trained  # an empty folder is no checkpoint
    (checkpoint / "config.json").write_text("{}")
    chosen = demo.demo_model(tmp_path / "models")
    assert chosen.trained and chosen.path == str(checkpoint) and len(saved) == 2


def test_plot_command_redraws_a_run_folder(demo_run, tmp_path, capsys):
    _, out, _ = demo_run
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "videomme.csv").write_text((out / "videomme.csv").read_text())
    assert cli.main(["plot", str(folder)]) == 0
    assert capsys.readouterr().out.split() == [str(folder / plots.ACCURACY_PNG)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["plot", str(empty)]) == 2
    assert "nothing to plot" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["plot", str(tmp_path / "nowhere")])
    assert exc.value.code == 2 and "no such folder" in capsys.readouterr().err


def _pareto_rows(with_dense_ms: bool) -> list[dict]:
    """Rows as ``python -m vlmsparse.bench pareto`` writes them (two seeds per knob), with or without dense_ms."""
    rows = []
    for family, dense in {"diffuse": 10.0, "peaked": 8.0}.items():
        for line, times, errors in (("psa", (9.0, 6.0, 4.0), (0.02, 0.05, 0.1)), ("xattention", (9.5, 7.0), (0.03, 0.08))):
            for knob, (t, e) in enumerate(zip(times, errors)):
                for seed in (0, 1):
                    row = dict(device="NVIDIA H200", B=1, Hq=28, Hkv=4, L=16480, D=128, dtype="bfloat16", family=family,
                               seed=seed, line=line, method=line, knob=f"k={knob}", sparsity=0.5, time_ms=t + seed * 0.1,
                               ratio_to_dense=dense / (t + seed * 0.1), rel_error=e, recall=0.9)
                    if with_dense_ms:
                        row["dense_ms"] = dense
                    rows.append(row)
    return rows


def test_speed_vs_error_frontier_is_drawn_from_the_speed_csv(tmp_path):
    for with_dense in (False, True):
        ups = [plots.speedup(r) for r in _pareto_rows(with_dense)]
        assert ups[:2] == pytest.approx([10.0 / 9.0, 10.0 / 9.1])
    assert plots.speedup({"time_ms": "", "ratio_to_dense": ""}) is None
    path = tmp_path / "pareto.csv"
    rows = _pareto_rows(True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert plots.plot_run(tmp_path) == [tmp_path / plots.PARETO_PNG]
    assert (tmp_path / plots.PARETO_PNG).read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="no row with a speed-up"):
        plots.plot_pareto([{"rel_error": "0.1"}], tmp_path / "x.png")


def test_a_missing_data_folder_is_an_immediate_error_pointing_at_the_demo(tmp_path, capsys):
    missing = tmp_path / "Video-MME"
    with pytest.raises(SystemExit) as exc:
        cli.main(["--data-dir", str(missing), "--method", "psa"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and str(missing) in err and "no such folder" in err and "--demo" in err
    with pytest.raises(SystemExit):
        cli.main(["--method", "psa"])
    assert "--data-dir" in capsys.readouterr().err


def test_a_folder_without_the_question_table_does_not_go_to_the_hub(tmp_path, monkeypatch):
    from vlmsparse.eval import videomme

    monkeypatch.setattr(videomme, "load_from_hub", lambda *a, **k: pytest.fail("the hub was asked"))
    with pytest.raises(FileNotFoundError, match="--metadata hub"):
        videomme.load_questions(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        videomme.load_questions(tmp_path / "nowhere")


def test_data_dir_or_demo_is_asked_for_after_the_bench_and_method_are_checked(capsys):
    def error(argv):
        with pytest.raises(SystemExit) as exc:
            cli.parse_options(argv)
        assert exc.value.code == 2
        return capsys.readouterr().err

    assert "--data-dir DIR | --demo" in cli.build_parser().format_usage().replace("\n", " ").replace("  ", " ")
    assert "give --data-dir DIR (a Video-MME copy) or --demo" in error(["--method", "psa"])
    assert "needs --generate" in error(["--bench", "vniah"])
    assert "unknown benchmark 'foo'" in error(["--bench", "foo"])  # not "--data-dir is required"
    assert "unknown method 'psaa'" in error(["--method", "psaa"])


def test_the_help_examples_parse():
    parser = cli.build_parser()
    examples = [line.strip().split("#")[0].strip() for line in cli.EXAMPLES.splitlines()]
    commands = [shlex.split(line) for line in examples if line.startswith(("python -m vlmsparse.eval", "accelerate"))]
    assert len(commands) >= 5
    repo = Path(__file__).resolve().parents[1]
    for words in commands:
        argv = words[words.index("vlmsparse.eval") + 1 :]
        if argv[:1] == ["plot"]:
            continue
        args = parser.parse_args(argv)
        for config in args.config or []:
            assert (repo / config).is_file(), f"the help names {config}, which is not in the repository"


def test_frontier_summary_names_the_line_and_counts_budgets_xattention_cannot_reach():
    from vlmsparse.bench.pareto import frontier_summary

    def row(line, up, err):
        return dict(L=1024, family="peaked", seed=0, line=line, ratio_to_dense=up, rel_error=err)

    rows = [row("psa", 1.3, 0.02), row("psa-exact-lone-exact", 1.3, 0.01), row("psa", 2.2, 0.05),
            row("xattention", 1.2, 0.015), row("xattention", 1.6, 0.03)]
    out = {r["budget"]: r for r in frontier_summary(rows, budgets=(1.25, 1.5, 2.0, 3.0))}
    assert out["1.25x"]["psa_line"] == "psa-exact-lone-exact" and out["1.25x"]["psa_ahead"] == "yes"  # 0.01 vs 0.03
    assert out["1.5x"]["psa_err"] == 0.05 and out["1.5x"]["psa_ahead"] == "no"  # 0.05 vs 0.03
    assert out["2.0x"]["psa_ahead"] == "yes" and out["2.0x"]["psa_line"] == "psa"  # no XAttention setting that fast
    assert out["3.0x"]["psa_ahead"] == "" and out["3.0x"]["psa_line"] == ""


def test_demo_checks_a_given_model_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        cli.main(["--demo", "--out", str(out), "--model", str(tmp_path / "no-such-model")])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert not out.exists()
    folder = tmp_path / "not-a-vlm"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--demo", "--out", str(out), "--model", str(folder)])
    assert exc.value.code == 2 and not out.exists()


def test_demo_runs_the_model_named_even_when_it_is_the_harness_default(tmp_path, monkeypatch, capsys):
    from vlmsparse.eval.runner import DEFAULT_MODEL

    opts, _ = cli.parse_options(["--demo", "--out", str(tmp_path / "a")])
    assert opts.model == ""  # none named: the demo picks the testbed when it runs
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the default 7B is not in this machine's hub cache
    with pytest.raises(SystemExit) as exc:
        cli.parse_options(["--demo", "--out", str(tmp_path / "b"), "--model", DEFAULT_MODEL])
    assert exc.value.code == 2 and "nor in the hub cache" in capsys.readouterr().err  # checked, not replaced
