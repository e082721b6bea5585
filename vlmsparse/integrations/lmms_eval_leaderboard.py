"""A leaderboard row from an lmms-eval Video-MME run of a vlmsparse plugin (``vlmsparse_qwen2_5_vl``,
``vlmsparse_qwen3_vl``, ...), in ``vlmsparse.eval``'s format.

lmms-eval writes ``<output_path>/<model>/<date>_results.json`` and, with ``--log_samples``,
``<date>_samples_<task>.jsonl`` beside it. From the samples this reads each question's duration and score
(accuracy per duration, as ``vlmsparse.eval`` reports it) and the sparsity the plugin recorded per request
(means over questions, as ``vlmsparse.eval``); without samples it falls back to the overall score and the
summary in the results file. The row goes to ``results/videomme.csv`` through
``vlmsparse.eval.leaderboard.append_row`` (columns ``LEADERBOARD_COLUMNS``)::

    python -m vlmsparse.integrations.lmms_eval_leaderboard logs/ --csv results/videomme.csv
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmsparse.eval import leaderboard as lb

from .lmms_eval_args import effective_model_args, parse_model_args

__all__ = ["LmmsEvalRun", "find_run", "read_run", "leaderboard_row", "append_lmms_eval_row", "summarize_records", "main"]

DURATIONS = ("short", "medium", "long")
#: lmms-eval Video-MME task -> the split name of ``vlmsparse.eval``.
TASK_SPLITS = {"videomme": "all", "videomme_long": "long"}
#: The per-question entry of lmms-eval's ``videomme`` samples (its metric name).
SCORE_KEY = "videomme_perception_score"


def summarize_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over requests of their sparsity, visual sparsity and prefill time, as ``vlmsparse.eval`` reports."""

    def mean(key: str) -> float | None:
        values = [float(r[key]) for r in records if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    peaks = [float(r["peak_mem_gib"]) for r in records if r.get("peak_mem_gib") is not None]
    devices = sorted({str(r["device"]) for r in records if r.get("device")})
    return {
        "requests": len(records),
        "sparsity": mean("sparsity"),
        "visual_sparsity": mean("visual_sparsity"),
        "prefill_s_mean": mean("prefill_s"),
        "peak_mem_gib": max(peaks) if peaks else None,
        "device": "; ".join(devices),
    }


class LmmsEvalRun:
    """One lmms-eval run on disk: its results file, its samples of one task, and the task name."""

    def __init__(self, results: dict[str, Any], samples: list[dict[str, Any]] | None, task: str, source: Path):
        self.results = results
        self.samples = samples
        self.task = task
        self.source = source

    @property
    def model_args(self) -> dict[str, Any]:
        return parse_model_args(str(self.results.get("config", {}).get("model_args") or ""))


def find_run(path: str | Path, task: str = "videomme") -> tuple[Path, Path | None]:
    """``(results json, samples jsonl or None)`` for ``path``: a results file or a folder holding runs (newest)."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ValueError(f"no lmms-eval *_results.json under {path}; pass lmms-eval's --output_path folder")
        path = candidates[-1]
    if not path.is_file():
        raise ValueError(f"{path} is not an lmms-eval results file or folder")
    stem = path.name[: -len("_results.json")] if path.name.endswith("_results.json") else path.stem
    samples = path.with_name(f"{stem}_samples_{task}.jsonl")
    return path, (samples if samples.is_file() else None)


def read_run(path: str | Path, task: str = "videomme") -> LmmsEvalRun:
    """Read the run at ``path`` (see :func:`find_run`) for ``task``."""
    results_path, samples_path = find_run(path, task)
    results = json.loads(results_path.read_text(encoding="utf-8"))
    if task not in results.get("results", {}):
        raise ValueError(f"{results_path} has no results for task {task!r}; it has {sorted(results.get('results', {}))}")
    samples = None
    if samples_path is not None:
        with samples_path.open(encoding="utf-8") as fh:
            samples = [json.loads(line) for line in fh if line.strip()]
    return LmmsEvalRun(results, samples, task, results_path)


def _sample_record(sample: dict[str, Any]) -> dict[str, Any] | None:
    for counts in sample.get("token_counts") or []:
        if isinstance(counts, dict) and isinstance(counts.get("vlmsparse"), dict):
            return counts["vlmsparse"]
    return None


def _accuracy(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    scored = [s[SCORE_KEY] for s in samples if isinstance(s.get(SCORE_KEY), dict)]
    for duration in DURATIONS:
        scores = [float(s["score"]) for s in scored if s.get("duration") == duration]
        out[f"acc_{duration}"] = sum(scores) / len(scores) if scores else None
        out[f"n_{duration}"] = len(scores)
    scores = [float(s["score"]) for s in scored]
    out["acc_overall"] = sum(scores) / len(scores) if scores else None
    out["n_overall"] = len(scores)
    return out


def _effective_args(model_args: dict[str, Any], model_id: str):
    from .lmms_eval import MODEL_ID, PLUGINS, plugin_class

    try:
        plugin = plugin_class(model_id if model_id in PLUGINS else MODEL_ID)
    except Exception:  # lmms-eval absent here: only the arguments given explicitly are known
        plugin = None
    if plugin is not None:
        return effective_model_args(
            model_args, plugin.lmms_base, default_pretrained=plugin.default_pretrained, run_key_map=plugin.run_key_map
        )[:2]
    from .lmms_eval_args import split_model_args

    return split_model_args(model_args, None)


def leaderboard_row(run: LmmsEvalRun) -> dict[str, Any]:
    """The leaderboard row (a :class:`~vlmsparse.eval.leaderboard.LeaderboardRow`) of an lmms-eval run of a
    vlmsparse plugin (``vlmsparse_qwen2_5_vl``, ``vlmsparse_qwen3_vl``, ...)."""
    from vlmsparse.eval.runner import project_version
    from vlmsparse.eval.settings import method_settings_text, slugify

    config = run.results.get("config", {})
    model_args = run.model_args
    base, sparse = _effective_args(model_args, str(config.get("model", "")))
    setting = sparse.setting
    model = str(base.get("pretrained") or model_args.get("pretrained") or config.get("model", ""))
    if run.samples is not None:
        records = [r for r in (_sample_record(s) for s in run.samples) if r is not None]
        if not records:
            raise ValueError(
                f"the samples of {run.source} carry no vlmsparse sparsity: was the run made with "
                "--model vlmsparse_<family> (vlmsparse_qwen2_5_vl, vlmsparse_qwen3_vl, ...)?"
            )
        accuracy = _accuracy(run.samples)
        summary = summarize_records(records)
    else:  # no --log_samples: the overall score and the end-of-run summary only
        score = run.results["results"][run.task].get(f"{SCORE_KEY},none")
        n = run.results.get("n-samples", {}).get(run.task, {}).get("effective")
        accuracy = {f"{k}_{d}": None for k in ("acc", "n") for d in DURATIONS}  # per duration: samples only
        accuracy.update(acc_overall=None if score is None else float(score) / 100.0, n_overall=n)
        throughput = run.results.get("throughput", {})
        summary = {
            "sparsity": throughput.get("avg_vlmsparse_sparsity"),
            "visual_sparsity": throughput.get("avg_vlmsparse_visual_sparsity"),
        }
    fps = base.get("fps")
    identity = {
        "bench": "videomme",
        "harness": "lmms-eval",
        "task": run.task,
        "model_args": model_args,
        "gen_kwargs": config.get("gen_kwargs"),
        "lmms_eval_version": run.results.get("lmms_eval_version"),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    limit = config.get("limit")
    return lb.LeaderboardRow(
        model=model,
        method=sparse.method,
        setting=setting.name,
        config=setting.config_summary(),
        method_settings=method_settings_text(setting),
        split=TASK_SPLITS.get(run.task, run.task),
        limit="" if limit is None else limit,
        frames="" if fps is not None else base.get("max_num_frames", base.get("max_frames_num", "")),
        fps="" if fps is None else fps,
        min_pixels=base.get("min_pixels", ""),
        max_pixels=base.get("max_pixels", ""),
        total_pixels=base.get("total_pixels", ""),
        # lmms-eval's Qwen models always load bfloat16 weights; its llava_hf takes dtype= (default: the checkpoint's)
        dtype=str(base.get("dtype", "auto" if config.get("model") == "vlmsparse_llava_onevision" else "bfloat16")),
        n_errors=0,
        n_missing=0,  # lmms-eval stops on a missing video
        sparsity=summary.get("sparsity"),
        visual_sparsity=summary.get("visual_sparsity"),
        prefill_s_mean=summary.get("prefill_s_mean"),
        peak_mem_gib=summary.get("peak_mem_gib"),
        device=summary.get("device", ""),
        num_processes="",
        date=_dt.date.today().isoformat(),
        version=f"{project_version()}; lmms-eval {run.results.get('lmms_eval_version', '?')}",
        # lmms-eval's --limit N takes the first N questions of the table, not N per duration as vlmsparse.eval
        data=f"lmms-eval task {run.task}" + ("" if limit is None else f" (--limit {limit}: first {limit} questions)"),
        run_id=f"videomme/{slugify(model)}/lmms-eval-{slugify(sparse.method)}-{slugify(setting.name)}-{digest}",
        **accuracy,
    ).as_dict()


def append_lmms_eval_row(csv_path: str | Path, path: str | Path, task: str = "videomme") -> dict[str, Any]:
    """Read the lmms-eval run at ``path`` and add (or replace) its row in ``csv_path``; returns the row."""
    row = leaderboard_row(read_run(path, task))
    lb.append_row(csv_path, row)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlmsparse.integrations.lmms_eval_leaderboard",
        description="Add the row of an lmms-eval Video-MME run of a vlmsparse plugin to a leaderboard CSV.",
    )
    parser.add_argument("path", help="lmms-eval's --output_path folder (newest run) or one *_results.json file")
    parser.add_argument("--task", default="videomme", help="the lmms-eval task of the run (default: videomme)")
    parser.add_argument("--csv", default="results/videomme.csv", help="leaderboard CSV (default: results/videomme.csv)")
    args = parser.parse_args(argv)
    from vlmsparse.eval.errors import HarnessError

    try:
        row = append_lmms_eval_row(args.csv, args.path, args.task)
    except (ValueError, HarnessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = {k: row[k] for k in ("model", "method", "setting", "acc_overall", "sparsity", "run_id")}
    print(f"{args.csv}: {json.dumps(shown, default=str)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
