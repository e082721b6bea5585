"""Fidelity benchmark pieces: synthetic inputs, float32 evaluator vs the reference, recall, CLI end to end."""

import csv
import math

import pytest
import torch

from vlmsparse.bench import SUBCOMMANDS
from vlmsparse.bench.__main__ import load_subcommand, main
from vlmsparse.bench.fidelity import COLUMNS, dense_attention_stats, plan_recall
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels.blocks import plan_shape
from vlmsparse.kernels.reference import pyramid_attention_ref
from vlmsparse.methods import Plan, get_method


def test_video_qkv_layout_shapes_and_determinism():
    q, k, v, visual = video_qkv(3, 4, 5, 7, 6, heads_q=6, heads_kv=2, head_dim=16, seed=1)
    length = 7 + 3 * 4 * 5 + 6
    assert q.shape == (1, 6, length, 16) and k.shape == v.shape == (1, 2, length, 16)
    assert visual.shape == (1, length) and visual.sum() == 60
    assert not visual[0, :7].any() and not visual[0, -6:].any()
    q2, *_ = video_qkv(3, 4, 5, 7, 6, heads_q=6, heads_kv=2, head_dim=16, seed=1)
    q3, *_ = video_qkv(3, 4, 5, 7, 6, heads_q=6, heads_kv=2, head_dim=16, seed=2)
    assert torch.equal(q, q2) and not torch.equal(q, q3)


def test_video_qkv_has_space_time_locality():
    q, k, _, _ = video_qkv(6, 8, 8, 0, 0, heads_q=2, heads_kv=1, head_dim=64, seed=0)
    logits = q[0, 1] @ k[0, 0].T / 8.0  # the sharper head
    t = torch.arange(6 * 64) // 64
    near = (t[:, None] == t[None, :]) & ~torch.eye(6 * 64, dtype=torch.bool)
    far = (t[:, None] - t[None, :]).abs() >= 4
    far[:, 0] = False  # the sink
    assert logits[near].mean() > logits[far].mean() + 1.0


@pytest.mark.parametrize("tail", [False, True])
@pytest.mark.parametrize("lq,lk,bm,bn,per_kv", [(96, 96, 16, 32, False), (70, 133, 32, 16, True)])
def test_float32_evaluator_matches_reference(tail, lq, lk, bm, bn, per_kv):
    b, hq, hkv, d = 2, 4, 2, 16
    q, k, v = torch.randn(b, hq, lq, d), torch.randn(b, hkv, lk, d), torch.randn(b, hkv, lk, d)
    k[:, :, :64] = k[:, :, :1] + 0.2 * torch.randn(b, hkv, 64, d)  # some alike keys, so pooling matters
    shape = plan_shape(b, hkv if per_kv else hq, lq, lk, bm, bn)
    levels = torch.tensor([0, 1, 2, 4, 8], dtype=torch.int8)[torch.randint(0, 5, shape)]
    want = pyramid_attention_ref(q, k, v, levels, block_m=bm, block_n=bn, tail=tail)
    got = pyramid_attention_ref(
        q, k, v, levels, block_m=bm, block_n=bn, tail=tail, row_chunk=32, compute_dtype=torch.float32
    )
    assert torch.allclose(got, want.float(), atol=1e-5, rtol=1e-4)


def test_dense_stats_match_softmax_attention_and_mass_sums_to_rows():
    q, k, v = torch.randn(1, 4, 50, 16), torch.randn(1, 2, 70, 16), torch.randn(1, 2, 70, 16)
    out, mass = dense_attention_stats(q, k, v, row_chunk=16)
    kr, vr = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    mask = torch.arange(70)[None, :] <= torch.arange(50)[:, None] + 20
    want = torch.softmax((q @ kr.transpose(-1, -2) / 4.0).masked_fill(~mask, -math.inf), -1) @ vr
    assert torch.allclose(out, want, atol=1e-5)
    assert mass.shape == (1, 4, 4, 5)
    assert torch.allclose(mass.sum(-1), torch.tensor([16.0, 16.0, 16.0, 2.0]).expand(1, 4, 4))


def test_recall_is_one_for_dense_and_counts_only_kept_blocks():
    q, k, v, visual = video_qkv(2, 8, 8, 16, 16, heads_q=2, heads_kv=1, head_dim=32)
    _, mass = dense_attention_stats(q, k, v)
    dense = get_method("dense", block_m=32, block_n=32).plan(q, k, visual)
    assert plan_recall(dense, mass, 2) == pytest.approx(1.0, abs=1e-5)
    lv = dense.levels.clone()
    lv[:, :, :, 1:] = 0  # keep only the first key block
    only_first = Plan(lv, 32, 32, dense.q_len, dense.k_len)
    want = float(mass[..., :2].sum()) / (2 * dense.q_len)
    assert plan_recall(only_first, mass, 2) == pytest.approx(want, rel=1e-5)
    pooled = Plan(torch.where(lv > 0, 8, 0).to(torch.int8), 32, 32, dense.q_len, dense.k_len)
    assert plan_recall(pooled, mass, 2) == pytest.approx(want, rel=1e-5)  # pooled counts as kept


def test_dispatcher_lists_subcommands_and_reports_missing_modules(capsys):
    assert {"fidelity", "kernel", "prefill"} <= set(SUBCOMMANDS)
    assert main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    SUBCOMMANDS["ghost"] = "vlmsparse.bench.ghost_module_that_is_not_there"
    try:
        with pytest.raises(ValueError, match="needs the module vlmsparse.bench.ghost"):
            load_subcommand("ghost")
    finally:
        del SUBCOMMANDS["ghost"]


def test_fidelity_cli_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default run folder and results/ are relative to the current folder
    args = ["fidelity", "--seq-lens", "1200", "--core-seq-lens", "--heads-q", "2", "--head-dim", "32",
            "--height", "8", "--width", "8", "--methods", "dense", "xattention"]
    assert main(args) == 0
    assert "asked for 1200 tokens: 17 frames of 8x8 visual tokens and 96 text tokens make 1184" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()  # the committed table changes only with --results
    (out,) = (tmp_path / "runs").glob("fidelity-*/fidelity.csv")
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == COLUMNS
    assert [r["method"] for r in rows] == ["dense"] + ["xattention"] * 6
    dense = rows[0]
    assert float(dense["sparsity"]) == 0.0 and float(dense["recall"]) == pytest.approx(1.0, abs=1e-5)
    assert float(dense["rel_l2_error"]) < 1e-5
    taus = [float(r["knob_value"]) for r in rows[1:]]
    sparsity = [float(r["sparsity"]) for r in rows[1:]]
    assert taus == sorted(taus) and sparsity == sorted(sparsity, reverse=True) and sparsity[0] > 0.1
    errors = [float(r["rel_l2_error"]) for r in rows[1:]]
    assert errors[0] > errors[-1]
    # 96 text tokens + 17 frames of 8 x 8
    assert all(r["backend"] == "float32" and r["device"].startswith("cpu") and r["seq_len"] == "1184" for r in rows)
    # a second run at another length into a chosen folder, and into results/: earlier rows there are kept
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "fidelity.csv").write_text(out.read_text())
    assert main(args[:2] + ["300"] + args[3:] + ["--out", str(folder), "--results"]) == 0
    assert {r["seq_len"] for r in csv.DictReader((folder / "fidelity.csv").open())} == {"1184", "288"}
    assert {r["seq_len"] for r in csv.DictReader((tmp_path / "results" / "fidelity.csv").open())} == {"288"}


def test_fidelity_refuses_an_unknown_method(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["fidelity", "--seq-lens", "300", "--core-seq-lens", "--methods", "psa", "fast"])
    assert exc.value.code == 2 and "unknown ['fast']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        (tmp_path / "taken").write_text("a file")
        main(["fidelity", "--seq-lens", "300", "--out", str(tmp_path / "taken")])
    assert exc.value.code == 2 and "is a file" in capsys.readouterr().err


SMALL_SWEEP = ["fidelity", "--seq-lens", "300", "--core-seq-lens", "--heads-q", "2", "--head-dim", "32", "--height",
               "8", "--width", "8", "--methods", "dense", "xattention"]


def _interrupt_at_row(monkeypatch, n):
    """Make the fidelity sweep raise KeyboardInterrupt as it starts measuring its ``n``-th row."""
    from vlmsparse.bench import fidelity

    real = fidelity.evaluate_plan
    calls = []

    def evaluate_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fidelity, "evaluate_plan", evaluate_then_stop)


def test_fidelity_run_cut_short_keeps_its_rows(tmp_path, monkeypatch):
    # each row goes to the run folder's table as it is measured; results/ gets a length's rows only once it is whole
    monkeypatch.chdir(tmp_path)
    _interrupt_at_row(monkeypatch, 3)
    assert main(SMALL_SWEEP + ["--out", str(tmp_path / "run"), "--results"]) == 130  # the CLI says it was interrupted
    rows = list(csv.DictReader((tmp_path / "run" / "fidelity.csv").open()))
    assert [r["method"] for r in rows] == ["dense", "xattention"]
    assert not (tmp_path / "results" / "fidelity.csv").exists()


def test_fidelity_rerun_cut_short_in_the_same_folder_keeps_the_earlier_rows_it_had_not_reached(tmp_path, monkeypatch):
    # a rerun into a folder that holds a whole length replaces row by row: stopped after its first row, the folder
    # keeps that new row and the earlier run's rows of the settings it did not reach
    monkeypatch.chdir(tmp_path)
    args = SMALL_SWEEP + ["--out", str(tmp_path / "run")]
    assert main(args) == 0
    first = list(csv.DictReader((tmp_path / "run" / "fidelity.csv").open()))
    assert len(first) >= 3
    _interrupt_at_row(monkeypatch, 2)
    assert main(args) == 130
    rows = list(csv.DictReader((tmp_path / "run" / "fidelity.csv").open()))
    key = lambda r: (r["setting"], r["tail"])  # noqa: E731
    assert sorted(map(key, rows)) == sorted(map(key, first))  # one row a setting, none lost
    assert {key(r) for r in rows if r not in first} <= {key(first[0])}  # only the first setting measured again
