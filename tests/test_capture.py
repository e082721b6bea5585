"""Captured attention inputs: the file format, ``bench capture``, and ``bench fidelity / pareto --inputs``."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmsparse.bench.__main__ import main as bench_main
from vlmsparse.model.capture import FORMAT, LayerQKV, load_capture, save_capture

sys.path.insert(0, str(Path(__file__).parent))
from testbed_fixture import save_tiny_testbed  # noqa: E402


def _layers(n_layers=2, length=40, hq=4, hkv=2, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    visual = torch.zeros(1, length, dtype=torch.bool)
    visual[0, 8:32] = True
    return [LayerQKV(i, torch.randn(1, hq, length, d, generator=g), torch.randn(1, hkv, length, d, generator=g),
                     torch.randn(1, hkv, length, d, generator=g), visual) for i in range(n_layers)]


def test_a_capture_reads_back_as_written_and_a_layer_subset_is_honoured(tmp_path):
    layers = _layers(3)
    path = save_capture(tmp_path / "sub" / "qkv.pt", layers, {"model": "m", "frames": 12})
    assert [p.name for p in path.parent.iterdir()] == ["qkv.pt"]  # no temporary file left beside it
    got = load_capture(path)
    assert got.name == "qkv" and got.meta == {"model": "m", "frames": 12} and got.seq_len == 40
    for a, b in zip(layers, got.layers):
        assert a.layer == b.layer and torch.equal(a.q, b.q) and torch.equal(a.k, b.k) and torch.equal(a.v, b.v)
        assert torch.equal(a.visual, b.visual)
    assert [x.layer for x in load_capture(path, layers=[2, 0]).layers] == [0, 2]
    halves = load_capture(save_capture(tmp_path / "h.pt", layers, {}, torch.bfloat16))
    assert halves.layers[0].q.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"none of layers \[7\] is in the capture \(it has \[0, 1, 2\]\)"):
        load_capture(path, layers=[7])


def test_files_that_are_not_captures_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file; make one with python -m vlmsparse.bench capture"):
        load_capture(tmp_path / "none.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="not a capture file"):
        load_capture(tmp_path / "text.pt")
    torch.save({"q": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=f"not a {FORMAT} capture"):
        load_capture(tmp_path / "other.pt")
    bad = _layers(1)
    bad[0].k = bad[0].k[:, :, :30]  # keys shorter than the queries and the layout
    save_capture(tmp_path / "bad.pt", bad, {})
    with pytest.raises(ValueError, match="do not fit together"):
        load_capture(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no layer was captured"):
        save_capture(tmp_path / "empty.pt", [], {})


@pytest.fixture(scope="module")
def tiny_testbed(tmp_path_factory):
    return save_tiny_testbed(tmp_path_factory.mktemp("tb") / "testbed")


def test_capture_a_testbed_prefill_then_sweep_its_layers(tiny_testbed, tmp_path, capsys):
    out = tmp_path / "qkv.pt"
    assert bench_main(["capture", "--model", str(tiny_testbed), "--generate", "96", "--seed", "3",
                       "--out", str(out)]) == 0
    capture = load_capture(out)
    assert [x.layer for x in capture.layers] == [0, 1]  # a two-layer model: every layer by default
    first = capture.layers[0]
    assert first.q.shape[1] == 7 and first.k.shape[1] == 1 and first.q.shape[3] == 16
    assert capture.meta["frames"] == 96 and capture.meta["seed"] == 3
    assert capture.meta["visual_tokens"] == int(first.visual.sum()) > 0
    assert capture.meta["seq_len"] == first.q.shape[2] > capture.meta["visual_tokens"]  # the question's text too

    fid = tmp_path / "fid"
    assert bench_main(["fidelity", "--inputs", str(out), "--methods", "dense", "psa", "--out", str(fid)]) == 0
    rows = list(csv.DictReader((fid / "fidelity.csv").open()))
    assert {r["input"] for r in rows} == {"qkv:L0", "qkv:L1"}
    assert {r["seq_len"] for r in rows} == {str(first.q.shape[2])} and {r["heads_q"] for r in rows} == {"7"}
    assert (fid / "fidelity.png").stat().st_size > 0  # the plot beside the CSV
    from vlmsparse.eval.plots import plot_run

    assert fid / "fidelity.png" in plot_run(fid)  # and redrawn by python -m vlmsparse.eval plot
    dense = [r for r in rows if r["method"] == "dense"]
    assert len(dense) == 2 and all(float(r["rel_l2_error"]) == 0.0 and float(r["sparsity"]) == 0.0 for r in dense)
    assert all(0.0 <= float(r["rel_l2_error"]) < 1.0 for r in rows)
    # a rerun replaces its own rows, and rows of the generated inputs in the same file stay
    assert bench_main(["fidelity", "--seq-lens", "256", "--core-seq-lens", "--heads-q", "2", "--head-dim", "16",
                       "--methods", "dense", "--out", str(fid)]) == 0
    assert bench_main(["fidelity", "--inputs", str(out), "--methods", "dense", "psa", "--out", str(fid)]) == 0
    again = list(csv.DictReader((fid / "fidelity.csv").open()))
    assert len(again) == len(rows) + 1 and sum(r["input"] == "synthetic" for r in again) == 1


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava_onevision"])
def test_capture_from_a_video_file_samples_it_by_the_family_rules(family, tmp_path):
    from vlmsparse.eval.synthetic_videomme import write_frames
    from vlmsparse.testing import save_tiny_model

    model = save_tiny_model(family, tmp_path / "tiny")
    rng = np.random.default_rng(0)
    video = write_frames(tmp_path / "clip.mp4", rng.integers(0, 255, (12, 64, 96, 3), dtype=np.uint8), fps=4)
    out = tmp_path / "v.pt"
    pixels = [] if family == "llava_onevision" else ["--max-pixels", str(64 * 64)]  # LLaVA: the processor's size
    assert bench_main(["capture", "--model", str(model), "--video", str(video), "--frames", "8", *pixels,
                       "--layers", "1", "--out", str(out)]) == 0
    capture = load_capture(out)
    assert [x.layer for x in capture.layers] == [1] and capture.meta["frames"] == 8
    assert capture.meta["family"] == family and capture.meta["question"] == "Describe what happens in the video."
    assert int(capture.layers[0].visual.sum()) == capture.meta["visual_tokens"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["capture", "--generate", "7"], "an even frame count"),
        (["capture", "--generate", "8", "--frames", "8"], "--frames apply to --video"),
        (["capture", "--video", "/no/such.mp4"], "--video /no/such.mp4: no such file"),
        (["capture", "--generate", "8", "--model", "/no/such/model"], "model folder /no/such/model does not exist"),
        (["capture", "--generate", "8", "--device", "tpu"], "expected cpu or cuda"),
        (["capture", "--generate", "8", "--layers", "a,b"], "expected all or comma-separated layer numbers"),
        (["fidelity", "--inputs", "/no/such.pt"], "no such file; make one with python -m vlmsparse.bench capture"),
        (["fidelity", "--inputs", "X", "--seq-lens", "1024"], "--seq-lens choose generated inputs"),
        (["pareto", "--inputs", "/no/such.pt"], "no such file"),
        (["pareto", "--inputs", "X", "--families", "peaked"], "--families choose generated inputs"),
    ],
)
def test_bad_capture_input_is_a_one_line_error_before_any_work(argv, message, capsys, tmp_path):
    argv = [str(tmp_path / "ok.pt") if a == "X" else a for a in argv]
    save_capture(tmp_path / "ok.pt", _layers(1), {})
    with pytest.raises(SystemExit) as exc:
        bench_main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and err.count("\n") == 1, err


def test_capture_names_layers_the_model_does_not_have(tiny_testbed, tmp_path, capsys):
    code = bench_main(["capture", "--model", str(tiny_testbed), "--generate", "8", "--layers", "0,5",
                       "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "--layers 5: the model has 2 decoder layers (0-1)" in err
    assert not (tmp_path / "x.pt").exists()


def test_deep_models_get_four_spread_layers_by_default():
    from vlmsparse.bench.capture import default_layers

    assert default_layers(4) == [0, 1, 2, 3]
    assert default_layers(28) == [0, 9, 18, 27]
    assert default_layers(36) == [0, 12, 24, 35]


def test_qwen3_vl_timestamps_are_kept_as_interleaved_text_and_planned_as_visual(tmp_path):
    """Qwen3-VL writes a timestamp before each frame pair: text inside the visual span, which the live patch plans as
    visual. The capture keeps that mask, so a sweep plans the captured layer as the patched model would."""
    from vlmsparse.eval.synthetic_videomme import write_frames
    from vlmsparse.methods import get_method
    from vlmsparse.testing import save_tiny_model

    model = save_tiny_model("qwen3_vl", tmp_path / "tiny")
    rng = np.random.default_rng(1)
    video = write_frames(tmp_path / "clip.mp4", rng.integers(0, 255, (12, 64, 64, 3), dtype=np.uint8), fps=4)
    out = tmp_path / "q3.pt"
    assert bench_main(["capture", "--model", str(model), "--video", str(video), "--frames", "8", "--max-pixels",
                       str(64 * 64), "--out", str(out)]) == 0
    layer = load_capture(out).layers[0]
    assert layer.interleaved_text is not None and int(layer.interleaved_text.sum()) > 0
    assert not bool((layer.interleaved_text & layer.visual).any())
    seen = []
    original = get_method("psa").__class__.plan

    def spy(self, q, k, visual=None, interleaved_text=None):
        seen.append(interleaved_text)
        return original(self, q, k, visual, interleaved_text)

    import unittest.mock

    with unittest.mock.patch.object(get_method("psa").__class__, "plan", spy):
        assert bench_main(["fidelity", "--inputs", str(out), "--methods", "psa", "--out", str(tmp_path / "f")]) == 0
    assert seen and all(m is not None and torch.equal(m.cpu(), layer.interleaved_text) for m in seen)


def test_a_capture_at_another_softmax_scale_is_refused(tmp_path):
    layers = _layers(1)
    layers[0].scaling = 0.5  # head dim 16: the sweeps assume 0.25
    save_capture(tmp_path / "s.pt", layers, {})
    with pytest.raises(ValueError, match="uses softmax scale 0.5, not 1/sqrt\\(16\\)"):
        load_capture(tmp_path / "s.pt")
    layers[0].scaling = 0.25
    assert load_capture(save_capture(tmp_path / "ok.pt", layers, {})).layers[0].scaling == 0.25


_WRITER = """
import sys
from pathlib import Path
from vlmsparse.bench.fidelity import _write_rows

path, name = Path(sys.argv[1]), sys.argv[2]
rows = []
for i in range(25):  # a run rewrites all its rows after each input, as the sweep does
    rows.append({"method": "psa", "setting": f"s{i}", "input": f"{name}:L{i}", "seq_len": 64, "device": "cpu",
                 "backend": "float32", "rel_l2_error": 0.1})
    _write_rows(path, rows)
"""


def test_two_sweeps_writing_one_fidelity_csv_at_once_keep_every_row(tmp_path):
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    path = tmp_path / "fidelity.csv"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name], env=env, stderr=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    rows = list(csv.DictReader(path.open()))
    assert sorted(r["input"] for r in rows) == sorted(f"{n}:L{i}" for n in "ab" for i in range(25))
    assert not [p for p in tmp_path.iterdir() if p.name != "fidelity.csv"]  # no temporary file left


def test_the_sparsity_summary_takes_each_methods_best_setting_at_least_that_sparse():
    import math

    from vlmsparse.bench.fidelity import sparsity_summary

    def row(method, sparsity, err, source=""):
        return {"method": method, "sparsity": sparsity, "rel_l2_error": err, "seq_len": 128, "input": source}

    rows = [row("dense", 0.0, 0.0), row("psa", 0.25, 0.01), row("psa", 0.45, 0.05), row("psa", 0.3, 0.2),
            row("xattention", 0.35, 0.1), row("psa", 0.5, 0.3, "cap:L0")]
    got = {(r["input"], r["sparsity"]): r for r in sparsity_summary(rows, budgets=(0.2, 0.4, 0.6))}
    assert got[("synthetic", ">= 0.2")]["psa"] == 0.01 and got[("synthetic", ">= 0.2")]["xattention"] == 0.1
    assert got[("synthetic", ">= 0.4")]["psa"] == 0.05 and math.isnan(got[("synthetic", ">= 0.4")]["xattention"])
    assert math.isnan(got[("synthetic", ">= 0.6")]["psa"]) and got[("cap:L0", ">= 0.4")]["psa"] == 0.3
    assert "dense" not in got[("synthetic", ">= 0.2")]


def test_pareto_takes_each_captured_layer_as_an_input_of_its_own(tmp_path):
    import argparse

    from vlmsparse.bench.pareto import _inputs

    layers = _layers(2)
    layers[0].interleaved_text = torch.zeros_like(layers[0].visual)
    layers[0].interleaved_text[0, 20] = True
    layers[0].visual[0, 20] = False
    layers[1].interleaved_text, layers[1].visual = layers[0].interleaved_text, layers[0].visual
    a = save_capture(tmp_path / "a.pt", layers, {"seed": 4})
    b = save_capture(tmp_path / "b.pt", layers[:1], {})
    got = list(_inputs(argparse.Namespace(inputs=[str(a), str(b)]), device="cpu"))
    assert [(family, seed) for family, seed, *_ in got] == [("a:L0", 4), ("a:L1", 4), ("b:L0", 0)]
    family, seed, q, k, v, (visual, inter) = got[0]
    assert q.dtype == torch.bfloat16 and q.shape == layers[0].q.shape and torch.equal(visual, layers[0].visual)
    assert inter is not None and bool(inter[0, 20]) and not bool(visual[0, 20])
