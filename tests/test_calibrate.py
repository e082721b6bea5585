"""python -m vlmsparse.calibrate: the allocation over per-layer curves, the synthetic source end to end (tiny
shapes), a tiny model on the Video-MME-shaped fixture, and bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from vlmsparse.calibrate import cli
from vlmsparse.calibrate.choose import allocate, curve_at, uniform_knob
from vlmsparse.methods import get_planners
from vlmsparse.methods.psa import PSAConfig

from vlmsparse.eval.synthetic_videomme import write_synthetic_videomme as make_videomme_fixture

SMALL = 'name = "psa-small"\nmethod = "psa"\n[method_config]\nblock_m = 16\nblock_n = 16\nstride = 4\n'
SYNTH = ["--bench", "synthetic", "--layers", "3", "--tokens", "2x8x8", "--heads", "2:1", "--head-dim", "32",
         "--grid", "1.82,0.8,0.4,0.15", "--no-progress"]


def _curves(rng, units=6):
    values = np.array([1.0, 0.8, 0.6, 0.4, 0.2])
    frac = np.array([1.0, 0.75, 0.55, 0.4, 0.3])
    cost = rng.uniform(50, 100, units)[:, None] * frac[None]
    err = (1 - frac[None]) ** 2 * rng.uniform(0.2, 3.0, units)[:, None] * 0.01
    return values, cost, err


def test_allocation_hits_the_target_with_less_error_than_one_knob():
    rng = np.random.default_rng(1)
    values, cost, err = _curves(rng)
    target = 0.55 * cost[:, 0].sum()
    choice = allocate(values, cost, err, target_cost=target)
    assert choice.cost.sum() == pytest.approx(target, rel=1e-9)
    one = uniform_knob(values, cost, err, target_cost=target)
    assert sum(curve_at(values, cost[u], one) for u in range(len(cost))) == pytest.approx(target, rel=1e-9)
    assert choice.err.sum() < 0.8 * sum(curve_at(values, err[u], one) for u in range(len(cost)))
    # the error budget the cost target reached buys that cost back
    back = allocate(values, cost, err, error_budget=float(choice.err.sum()))
    assert back.cost.sum() == pytest.approx(target, rel=1e-6) and back.err.sum() <= choice.err.sum() * (1 + 1e-9)


def test_allocation_skips_points_above_the_hull_and_takes_free_savings_first():
    values = np.array([1.0, 0.5, 0.0])
    cost = np.array([[10.0, 5.0, 0.0], [10.0, 5.0, 0.0]])
    err = np.array([[0.0, 0.9, 1.0], [0.0, 0.0, 1.0]])  # unit 0: the middle point lies above the chord
    choice = allocate(values, cost, err, target_cost=15.0)
    assert choice.knob[1] == pytest.approx(0.5)  # unit 1 saves 5 blocks for nothing
    assert choice.knob[0] == pytest.approx(1.0)
    choice = allocate(values, cost, err, target_cost=10.0)
    assert choice.knob[0] == pytest.approx(0.5) and choice.err.sum() == pytest.approx(0.9)


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "psa-small.toml"
    path.write_text(SMALL)
    return path


def test_synthetic_calibration_end_to_end(tmp_path, small_config, capsys):
    out = tmp_path / "cal"
    code = cli.main([*SYNTH, "--config", str(small_config), "--samples", "2", "--holdout", "1",
                     "--target-sparsity", "0.3", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "calibrated" in printed and "input stability" in printed
    for name in ("calibrated.toml", "global.toml", "profile.csv", "choice.csv", "heldout.csv", "summary.json",
                 "calibration.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    cal = summary["calibration"]
    assert cal["calibrated"]["sparsity"] == pytest.approx(0.3, abs=1e-6)
    assert cal["global"]["sparsity"] == pytest.approx(0.3, abs=1e-6)
    assert cal["calibrated"]["rms_error"] <= cal["global"]["rms_error"] + 1e-12
    held = summary["heldout"]
    assert set(held) == {"calibrated", "global"} and 0.0 < held["calibrated"]["sparsity"] < 1.0
    # the written config loads, covers every layer, and its layer knobs are those of choice.csv
    planners = get_planners("psa", config_file=out / "calibrated.toml")
    assert planners.num_layers == 3
    choice = list(csv.DictReader((out / "choice.csv").open()))
    assert [r["layer"] for r in choice] == ["0", "1", "2"]
    for row in choice:
        scale = float(row["knob_value"])
        expected = tuple(round(min(1.0, t * scale), 4) for t in PSAConfig().thresholds)
        assert planners.for_layer(int(row["layer"])).config.thresholds == pytest.approx(expected)
    profile = list(csv.DictReader((out / "profile.csv").open()))
    assert len(profile) == 3 * (1 + 2) * 4  # layers x (whole layer + 2 heads) x grid values
    dense_rows = [r for r in profile if float(r["knob_value"]) == 1.82]
    assert all(float(r["error"]) < 1e-3 for r in dense_rows)  # every block kept: dense up to float32 rounding


def test_per_head_calibration_writes_head_overrides(tmp_path, small_config):
    out = tmp_path / "cal"
    assert cli.main([*SYNTH, "--config", str(small_config), "--samples", "1", "--per-head",
                     "--target-sparsity", "0.3", "--out", str(out)]) == 0
    text = (out / "calibrated.toml").read_text()
    planners = get_planners("psa", config_file=out / "calibrated.toml")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration"]["calibrated"]["sparsity"] == pytest.approx(0.3, abs=1e-6)
    choice = list(csv.DictReader((out / "choice.csv").open()))
    assert len(choice) == 3 * 2
    by_layer: dict[int, set] = {}
    for row in choice:
        by_layer.setdefault(int(row["layer"]), set()).add(row["knob_value"])
    if any(len(v) > 1 for v in by_layer.values()):
        assert "heads = " in text
        assert any(hasattr(planners.for_layer(layer), "parts") for layer, v in by_layer.items() if len(v) > 1)


def test_model_on_the_videomme_fixture(tmp_path, small_config):
    from vlmsparse.testing import save_tiny_qwen2_5_vl

    model = save_tiny_qwen2_5_vl(tmp_path / "tiny")
    # 16 frames of 112 x 168: 8 temporal x 4 x 6 = 192 video tokens, a dozen 16-token blocks
    data = make_videomme_fixture(tmp_path / "videomme", videos_per_split=1, questions_per_video=1, num_frames=16,
                                 height=112, width=168)
    out = tmp_path / "cal"
    code = cli.main([
        "--bench", "videomme", "--model", str(model), "--data-dir", str(data.root), "--config", str(small_config),
        "--frames", "16", "--min-pixels", "784", "--max-pixels", "18816", "--dtype", "float32", "--samples", "2",
        "--target-sparsity", "0.05", "--grid", "1.82,0.6,0.2,0.05", "--out", str(out),
        "--no-progress",
    ])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layers"] == 2 and summary["calibration"]["calibrated"]["sparsity"] == pytest.approx(0.05, abs=1e-6)
    assert summary["stability"]["samples_that_reach_target_alone"] >= 1  # held-out samples: the synthetic test
    import vlmsparse
    from transformers import Qwen2_5_VLForConditionalGeneration

    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(model)
    with vlmsparse.patch(loaded, "psa", config_file=out / "calibrated.toml") as handle:
        assert handle.planners.num_layers == 2


def test_tiny_testbed_on_the_needle_benchmark(tmp_path, small_config):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from testbed_fixture import save_tiny_testbed

    model = save_tiny_testbed(tmp_path / "tb")
    out = tmp_path / "cal"
    # 64 and 96 frames: 64 / 96 visual tokens (2 a frame), a handful of 16-token blocks; 2 + 2 samples spread
    # over both lengths (the samples come index-major, the lengths alternating)
    code = cli.main([
        "--bench", "vniah", "--model", str(model), "--bench-option", "lengths=64,96", "--bench-option", "depths=0,1",
        "--bench-option", "samples=1", "--bench-option", "seed=5", "--bench-option", "generate=true",
        "--config", str(small_config), "--samples", "2", "--holdout", "2", "--target-sparsity", "0.1",
        "--grid", "1.82,0.6,0.2,0.05", "--out", str(out), "--no-progress",
    ])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layers"] == 2 and summary["calibration"]["calibrated"]["sparsity"] == pytest.approx(0.1, abs=1e-6)
    assert set(summary["heldout"]) == {"calibrated", "global"}


def test_vniah_samples_spread_over_the_grid_and_use_the_trained_needle(tmp_path):
    from vlmsparse.eval.runner import EvalOptions
    from vlmsparse.eval.vniah_run import configure_vniah, vniah_samples

    folder = tmp_path / "tb"
    folder.mkdir()
    (folder / "testbed.json").write_text(json.dumps({"needle": {"kind": "colour", "frame_size": 56, "needle_frames": 2}}))
    opts = EvalOptions(model=str(folder))
    configure_vniah(opts, {"lengths": [64, 128], "depths": [0.0, 1.0], "samples": 2, "generate": True})
    assert opts.vniah.needle.frame_size == 56 and opts.vniah.needle.kind == "colour"
    ids = [s.sample_id for s in vniah_samples(opts)]
    assert ids[:4] == ["L64-d0-0", "L128-d0-0", "L64-d1-0", "L128-d1-0"] and len(ids) == 8
    with pytest.raises(ValueError, match="vniah has no option frames_per_second"):
        configure_vniah(opts, {"frames_per_second": 2})
    with pytest.raises(ValueError, match="haystack lengths are even"):
        configure_vniah(opts, {"lengths": 63})


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target-sparsity", "1.5"], "--target-sparsity must be a number in (0, 1)"),
        (["--target-sparsity", "0"], "--target-sparsity must be a number in (0, 1)"),
        (["--target-error", "-0.1"], "--target-error must be a number in (0, 1)"),
        (["--target-sparsity", "0.5", "--samples", "0"], "no samples"),
        (["--target-sparsity", "0.5", "--method", "dense"], "method 'dense' has no knob"),
        ([], "give exactly one of --target-sparsity and --target-error"),
        (["--target-sparsity", "0.5", "--grid", "0.5"], "at least two distinct values"),
        (["--target-sparsity", "0.99"], "outside what the knob grid reaches"),
        (["--target-sparsity", "0.5", "--bench", "nope"], "unknown benchmark 'nope'"),
        (["--target-sparsity", "0.5", "--method", "xattention"], "is for method 'psa'"),
        (["--target-sparsity", "0.5", "--model", "/no/such/model"], "--model apply to a model's samples; add --bench"),
        (["--target-sparsity", "0.5", "--data-dir", "d", "--frames", "8"], "--data-dir, --frames apply to a model's"),
        (["--target-sparsity", "0.5", "--bench", "vniah"], "--layers, --tokens, --heads, --head-dim apply to --bench "
                                                           "synthetic only"),
    ],
)
def test_bad_input_is_a_one_line_error(argv, message, tmp_path, small_config, capsys):
    code = cli.main([*SYNTH, "--config", str(small_config), "--samples", "1", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_both_targets_is_an_argument_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--target-sparsity", "0.5", "--target-error", "0.1", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_a_target_no_knob_value_can_reach_on_short_samples_says_to_lengthen_them():
    import numpy as np

    from vlmsparse.calibrate.run import _target_cost

    blocks = np.array([4.0, 6.0])
    keeps_all = np.repeat(blocks[:, None], 3, axis=1)  # every knob value keeps every block
    with pytest.raises(ValueError, match="no knob value skips anything on them: give longer samples"):
        _target_cost(0.3, keeps_all, blocks, np.array([0.1, 0.5, 1.0]))
    some = keeps_all.copy()
    some[:, 0] = blocks / 2  # the sparsest value skips half
    with pytest.raises(ValueError, match="add sparser values to --grid"):
        _target_cost(0.6, some, blocks, np.array([0.1, 0.5, 1.0]))
    assert _target_cost(0.25, some, blocks, np.array([0.1, 0.5, 1.0])) == pytest.approx(7.5)


def test_the_default_synthetic_shape_leaves_the_default_blocks_something_to_skip(tmp_path, capsys):
    """The help's first example runs on the synthetic source's default token grid with the methods' default
    128-key blocks: that grid must hold enough key blocks for a target like the example's to be reachable."""
    code = cli.main(["--bench", "synthetic", "--layers", "1", "--heads", "1:1", "--samples", "1",
                     "--target-sparsity", "0.3", "--grid", "1.82,0.5,0.2", "--no-progress", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["calibration"]["calibrated"]["sparsity"] == pytest.approx(0.3, abs=1e-6)
