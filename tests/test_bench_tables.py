"""Benchmark tables in run folders: a run rewrites its own rows as they grow and keeps every other run's."""

import csv
import multiprocessing as mp

from vlmsparse.bench.common import RunTable, write_csv


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_second_run_in_the_same_folder_keeps_the_first_runs_rows(tmp_path):
    path = tmp_path / "pareto.csv"
    first, second = RunTable(path), RunTable(path)
    second.run = first.run + "-b"  # two runs started in the same second by one process
    first.save([dict(L=1, err=0.1)])
    first.save([dict(L=1, err=0.1), dict(L=2, err=0.2)])  # grows: its old rows are replaced, not repeated
    second.save([dict(L=3, err=0.3)])
    second.save([dict(L=3, err=0.3), dict(L=4, err=0.4, extra="x")])
    got = _rows(path)
    assert [r["L"] for r in got] == ["1", "2", "3", "4"]
    assert [r["run"] for r in got] == [first.run, first.run, second.run, second.run]
    assert got[3]["extra"] == "x" and got[0]["extra"] == ""  # the header is the union of the columns
    # rows another tool wrote (no run column) stay too
    write_csv(path, [dict(L=5, err=0.5)])
    first.save([dict(L=1, err=0.11)])
    assert sorted((r["L"], r["err"]) for r in _rows(path)) == [("1", "0.11"), ("3", "0.3"), ("4", "0.4"),
                                                               ("5", "0.5")]
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


def _append(path, worker):
    table = RunTable(path)
    table.run += f"-{worker}"
    rows = []
    for i in range(20):
        rows.append(dict(worker=worker, i=i))
        table.save(rows)
        write_csv(path.with_name("shared.csv"), [dict(worker=worker, i=i)])


def test_runs_writing_one_folder_at_once_lose_nothing(tmp_path):
    path = tmp_path / "pareto.csv"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    got = {(r["worker"], r["i"]) for r in _rows(path)}
    assert got == {(str(w), str(i)) for w in range(4) for i in range(20)} and len(_rows(path)) == 80
    shared = [(r["worker"], r["i"]) for r in _rows(tmp_path / "shared.csv")]
    assert sorted(shared) == sorted((str(w), str(i)) for w in range(4) for i in range(20))


def test_tables_get_the_folders_usual_file_mode(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = tmp_path / "kernel.csv"
        write_csv(path, [dict(L=1)])  # a new table: what any new file gets here, not a private temporary's 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o664)
        RunTable(path).save([dict(L=2)])  # a rewritten table keeps its mode
        assert stat.S_IMODE(path.stat().st_mode) == 0o664
    finally:
        os.umask(umask)


def test_level_costs_come_from_device_time_not_the_host_bound_eager_time():
    # eager times of the short plans as a host-bound run gives them (the level-0 plan's call waits on its launch),
    # device times as the kernel runs them (the v21 run's 8k figures): the target is judged on the device's ratio
    from vlmsparse.bench.kernel import level_cost

    eager = {(0, False): 0.2165, (1, False): 0.7951, (8, False): 0.2384,
             (0, True): 0.2300, (1, True): 0.8017, (8, True): 0.2595}
    device = {(0, False): 0.125, (1, False): 0.7301, (8, False): 0.2307,
              (0, True): 0.148, (1, True): 0.7360, (8, True): 0.2521}
    row = level_cost(eager, device, 8, False)
    assert abs(row["marginal_cost"] - (0.2307 - 0.125) / (0.7301 - 0.125)) < 1e-12
    assert row["met"] is False and row["target_cost"] == 1.25 / 8
    assert row["marginal_cost_eager"] < 0.05  # what the eager ratio said: met by a wide margin, wrongly
    assert abs(row["tail_overhead_device"] - (0.2521 / 0.2307 - 1)) < 1e-12
    assert level_cost(eager, device, 1, True)["marginal_cost"] == 1.0


def test_tail_columns_time_the_same_plan_with_and_without_tail(monkeypatch):
    # bench kernel's planners part: the plan a method made, run again with tail=True; a fake device timer (no GPU
    # here) gives each timed call the next of a known sequence, so the overheads must be those ratios; the error
    # with tail comes from the interpreted kernel against dense attention
    import torch

    from vlmsparse.bench import kernel as bench_kernel
    from vlmsparse.bench.synthetic import video_qkv
    from vlmsparse.methods import get_method

    # kernel (lists given), kernel making its lists, kernel with tail making its lists, whole prefill without and
    # with tail
    times = iter([2.0, 2.2, 2.5, 10.0, 11.0])
    calls = []

    def fake_timer(fn):
        fn()
        calls.append(fn)
        return next(times)

    monkeypatch.setattr(bench_kernel, "device_time_ms", fake_timer)
    q, k, v, visual = video_qkv(4, 8, 8, heads_q=4, heads_kv=2, head_dim=32, seed=3)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                             is_causal=True)
    method = get_method("xattention", threshold=0.3, block_m=32, block_n=32)
    plan = method.plan(q, k, visual)
    assert plan.skips and bool((plan.levels == 0).any()) and not plan.pooled
    row = bench_kernel.tail_columns(method, plan, q, k, v, visual, dense, None)  # binary: no pyramid
    assert len(calls) == 5
    assert row["kernel_device_ms"] == 2.0 and row["kernel_lists_device_ms"] == 2.2
    assert row["kernel_tail_device_ms"] == 2.5
    assert abs(row["tail_overhead_device"] - (2.5 / 2.2 - 1)) < 1e-12
    assert abs(row["total_tail_overhead_device"] - 0.1) < 1e-12
    # the tail gives back part of what the skipped blocks held: its error differs from the plain plan's
    err_plain = bench_kernel.rel_err(plan.run(q, k, v), dense)
    assert 0.0 < row["rel_err_vs_dense_tail"] < 1.0 and row["rel_err_vs_dense_tail"] != err_plain

    # a plan that skips nothing runs without tail: its tail columns are NaN, and only the plain kernel is timed
    times = iter([3.0])
    calls.clear()
    full = get_method("xattention", threshold=1.0, block_m=32, block_n=32)
    plan = full.plan(q, k, visual)
    row = bench_kernel.tail_columns(full, plan, q, k, v, visual, dense, None)
    assert len(calls) == 1 and row["kernel_device_ms"] == 3.0
    assert all(row[c] != row[c] for c in ("kernel_tail_device_ms", "tail_overhead_device", "rel_err_vs_dense_tail"))


def test_bench_kernel_keeps_every_row_of_a_run_cut_short(tmp_path, monkeypatch):
    # the benchmark's parts append row by row to the run folder's table: a run stopped in its planners' part (a time
    # limit, Ctrl-C) keeps the rows measured before, and rows another run left in that file stay
    import argparse

    import pytest
    import torch

    from vlmsparse.bench import kernel as bench_kernel

    write_csv(tmp_path / "kernel.csv", [dict(L=1, variant="an earlier run's row")])

    def levels_part(args, rows):
        rows.append(dict(L=8192, variant="one_level_8", marginal_cost=0.15))
        return rows

    def methods_part(args, rows):
        rows.append(dict(L=8192, family="medium", variant="plan+kernel:psa", total_device_vs_cudnn=1.4))
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench_kernel, "run_level_costs", levels_part)
    monkeypatch.setattr(bench_kernel, "run_methods", methods_part)
    p = argparse.ArgumentParser()
    bench_kernel.add_arguments(p)
    args = p.parse_args(["--skip-random", "--out", str(tmp_path), "--lengths", "8192"])
    with pytest.raises(KeyboardInterrupt):
        bench_kernel.run(args)
    with open(tmp_path / "kernel.csv", newline="") as f:
        got = [r["variant"] for r in csv.DictReader(f)]
    assert got == ["an earlier run's row", "one_level_8", "plan+kernel:psa"]


def test_bench_prefill_keeps_every_row_of_a_run_cut_short(tmp_path, monkeypatch):
    # the prefill benchmark saves each setting's row as it is measured: a run stopped at its second length keeps
    # the first length's rows, and rows another run left in that file stay
    import argparse
    import types

    import pytest
    import torch

    from vlmsparse.bench import prefill as bench_prefill

    write_csv(tmp_path / "prefill.csv", [dict(L=1, method="an earlier run's row")])
    cfg = types.SimpleNamespace(hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
    model = types.SimpleNamespace(config=types.SimpleNamespace(text_config=cfg, video_token_id=7))
    timed = []

    def time_prefill(model, inputs, repeats):
        timed.append(inputs["input_ids"].shape[1])
        if len(timed) == 2:  # the second length's unpatched prefill
            raise KeyboardInterrupt
        return 10.0, 1.0

    def method_rows(model, inputs, labels, patch, base, dense_ms, repeats):
        return [dict(base, method=label, prefill_ms=5.0) for label in labels]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self: self)
    monkeypatch.setattr(bench_prefill, "_build_model", lambda layers: model)
    monkeypatch.setattr(bench_prefill, "time_prefill", time_prefill)
    monkeypatch.setattr(bench_prefill, "_dense_attention_ms", lambda *a: 0.1)
    monkeypatch.setattr(bench_prefill, "method_rows", method_rows)
    monkeypatch.setattr(bench_prefill, "environment", lambda: dict(device="test"))
    p = argparse.ArgumentParser()
    bench_prefill.add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path), "--visual-tokens", "128", "256", "--methods", "dense", "psa"])
    with pytest.raises(KeyboardInterrupt):
        bench_prefill.run(args)
    got = [(r["L"], r["method"]) for r in _rows(tmp_path / "prefill.csv")]
    assert got == [("1", "an earlier run's row"), ("224", "sdpa (unpatched)"), ("224", "dense"), ("224", "psa")]
