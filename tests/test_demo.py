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
    assert demo.REAL_DATA_COMMAND in printed and "accuracy here is chance" in printed
    assert (out / "data" / "videomme" / "videomme" / "test-00000-of-00001.parquet").is_file()


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


def test_help_shows_data_dir_as_required_and_its_examples_parse():
    parser = cli.build_parser()
    assert "(--data-dir DIR | --demo)" in parser.format_usage().replace("\n", " ").replace("  ", " ")
    examples = [line.strip().split("#")[0].strip() for line in cli.EXAMPLES.splitlines()]
    commands = [shlex.split(line) for line in examples if line.startswith(("python -m vlmsparse.eval", "accelerate"))]
    assert len(commands) >= 5
    repo = Path(__file__).resolve().parents[1]
    for words in commands:
        argv = words[words.index("vlmsparse.eval") + 1 :]
        if argv[:1] == ["plot"]:
            continue
        args = cli.build_parser(generated="--generate" in argv).parse_args(argv)
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
