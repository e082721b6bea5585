"""The Video-MME run: questions -> frames -> model answers -> records -> leaderboard rows.

For each setting (a method and its config) in turn: find the run's record folder, skip every question that
already has a record, deal the rest out over the processes by video, decode each video once, answer its
questions greedily with the method patched in, append one record per question, then (main process) merge
the records, score them and write the leaderboard rows. ``dense`` runs the model's own attention, unpatched:
it is the full-attention baseline, and its sparsity is 0 by definition.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from . import leaderboard as lb
from .aggregate import Summary, Tally, summarize
from .answers import extract_letter, is_correct
from .distributed import group_by_video, process_state, shard_by_video
from .frames import FrameSpec, SampledVideo, VideoDecodeError, read_video
from .prompts import build_prompt
from .records import RecordWriter, drop_errors, load_records, merge_shards, shard_path
from .reported import comparison_table
from .settings import DEFAULT_MAX_NEW_TOKENS, Setting, frame_spec, resolve_settings, run_identity
from .videomme import DURATIONS, Question, load_questions, locate_videos, select_split

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
BENCH = "videomme"
LEADERBOARD_FILE = "videomme.csv"


class MissingVideosError(RuntimeError):
    """Some questions' video files are not under ``<data-dir>/data``."""


@dataclass
class EvalOptions:
    """Everything the command line sets (see ``python -m vlmsparse.eval --help``)."""

    model: str = DEFAULT_MODEL
    #: the settings to run, resolved and checked once (the CLI sets them); None: from ``methods`` / ``configs``
    settings: list[Setting] | None = None
    methods: list[str] | None = None
    configs: list[str] | None = None
    split: str = "all"
    data_dir: str | None = None
    metadata: str | None = None
    frames: int | None = None
    fps: float | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    total_pixels: int | None = None
    max_new_tokens: int | None = None
    limit: int | None = None
    dtype: str = "bfloat16"
    out: str = "results"
    skip_missing: bool = False
    retry_errors: bool = False
    device_map: str | None = None
    attn_implementation: str = "sdpa"
    progress: bool = True
    warmup: bool = True
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True), repr=False)


def project_version() -> str:
    """``vlmsparse.__version__``, plus the git commit when running from a checkout."""
    import vlmsparse

    version = vlmsparse.__version__
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(vlmsparse.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version}+g{commit}" if commit else version


def device_name(device: torch.device) -> str:
    """GPU model name, or ``cpu``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def select_questions(questions: list[Question], split: str, limit: int | None) -> list[Question]:
    """The split's questions; ``limit`` keeps the first ``limit`` of each duration (table order)."""
    chosen = select_split(questions, split)
    if limit is None:
        return chosen
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    counts = {d: 0 for d in DURATIONS}
    kept = []
    for q in chosen:
        if counts[q.duration] < limit:
            counts[q.duration] += 1
            kept.append(q)
    return kept


@contextlib.contextmanager
def apply_method(model, setting: Setting) -> Iterator[object | None]:
    """Patch ``model`` with the setting's method for the duration of the block (``dense``: unpatched, None)."""
    if setting.unpatched:
        yield None
        return
    import vlmsparse

    handle = vlmsparse.patch(model, setting.build_planners())
    try:
        yield handle
    finally:
        handle.unpatch()


def _base_record(q: Question, setting: Setting, model_id: str) -> dict:
    return {
        "question_id": q.question_id,
        "video_id": q.video_id,
        "videoID": q.video_file_id,
        "duration": q.duration,
        "domain": q.domain,
        "sub_category": q.sub_category,
        "task_type": q.task_type,
        "answer": q.answer,
        "model": model_id,
        "method": setting.method,
        "setting": setting.name,
    }


def error_record(q: Question, setting: Setting, model_id: str, error: str, device: str) -> dict:
    """Record of a question that got no answer (its video did not decode, or the GPU ran out of memory)."""
    record = _base_record(q, setting, model_id)
    record.update(
        prediction=None,
        response=None,
        correct=False,
        sparsity=None,
        visual_sparsity=None,
        prefill_s=None,
        generate_s=None,
        num_tokens=None,
        num_visual_tokens=None,
        num_generated=None,
        error=error,
        device=device,
        time=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    return record


def _peak_mem_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def answer_question(qa, handle, q: Question, video: SampledVideo, setting: Setting, model_id: str) -> dict:
    """Ask one question about its decoded video; returns the question's record."""
    prompt = build_prompt(q.question, q.options)
    if handle is not None:
        handle.stats.reset()
    gen = qa.answer(video, prompt)
    prediction = extract_letter(gen.text)
    if handle is None:  # the model's own dense attention
        sparsity, visual = 0.0, 0.0
    else:
        sparsity, visual = handle.stats.sparsity(), handle.stats.visual_sparsity()
    record = _base_record(q, setting, model_id)
    record.update(
        prediction=prediction,
        response=gen.text,
        correct=is_correct(prediction, q.answer),
        sparsity=sparsity,
        visual_sparsity=visual,
        prefill_s=gen.prefill_s,
        generate_s=gen.generate_s,
        num_tokens=gen.num_input_tokens,
        num_visual_tokens=gen.num_visual_tokens,
        num_generated=gen.num_generated,
        frames=video.num_frames,
        frame_size=list(video.size),
        sample_fps=video.sample_fps,
        error=None,
        device=device_name(qa.device),
        peak_mem_gib=_peak_mem_gib(qa.device),
        time=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    return record


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def leaderboard_row(
    *,
    opts: EvalOptions,
    setting: Setting,
    spec: FrameSpec,
    summary: Summary,
    n_missing: int,
    num_processes: int,
    source: str,
    run_id: str,
) -> dict:
    """The leaderboard row of one run, as built by :class:`~vlmsparse.eval.leaderboard.LeaderboardRow`."""
    per_duration = {}
    for duration in DURATIONS:
        tally = summary.by_duration.get(duration, Tally())
        per_duration[f"acc_{duration}"] = tally.accuracy
        per_duration[f"n_{duration}"] = tally.answered
    return lb.LeaderboardRow(
        model=opts.model,
        method=setting.method,
        setting=setting.name,
        config=setting.config_summary(),
        split=opts.split,
        limit=opts.limit if opts.limit is not None else "",
        frames=spec.frames if spec.frames is not None else "",
        fps="" if spec.frames is not None else spec.fps,
        max_pixels=spec.max_pixels,
        total_pixels=spec.total_pixels,
        dtype=opts.dtype,
        acc_overall=summary.overall.accuracy,
        n_overall=summary.overall.answered,
        n_errors=summary.overall.errors,
        n_missing=n_missing,
        sparsity=summary.overall.sparsity,
        visual_sparsity=summary.overall.visual_sparsity,
        prefill_s_mean=summary.overall.prefill_s,
        peak_mem_gib=summary.peak_mem_gib,
        device="; ".join(summary.devices),
        num_processes=num_processes,
        date=_dt.date.today().isoformat(),
        version=project_version(),
        data=source,
        run_id=run_id,
        **per_duration,
    ).as_dict()


def task_type_rows(row: dict, summary: Summary) -> list[dict]:
    """Per-task-type rows of one run (columns: ``TASK_TYPE_COLUMNS``)."""
    rows = []
    for task, tally in summary.by_task_type.items():
        out = {k: row[k] for k in ("model", "method", "setting", "split", "limit", "run_id")}
        out.update(task_type=task, n=tally.answered, accuracy=tally.accuracy, sparsity=tally.sparsity)
        for duration in DURATIONS:
            out[f"acc_{duration}"] = summary.by_task_type_duration.get((task, duration), Tally()).accuracy
        rows.append(out)
    return rows


class VideoMMERun:
    """One invocation of the harness: shared questions, videos and model across its settings."""

    def __init__(self, opts: EvalOptions):
        self.opts = opts
        self.state = process_state()
        self.settings = opts.settings if opts.settings is not None else resolve_settings(opts.methods, opts.configs)
        self.out = Path(opts.out)
        self._qa = None

    # -- data -----------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the questions and find the videos; missing videos stop the run unless ``skip_missing``."""
        opts = self.opts
        if opts.data_dir is None:
            raise ValueError("--data-dir is required: the folder holding Video-MME's data/<videoID>.mp4 files")
        questions, self.source = load_questions(opts.data_dir, opts.metadata)
        self.all_questions = questions
        self.selected = select_questions(questions, opts.split, opts.limit)
        self.videos, missing = locate_videos(opts.data_dir, self.selected)
        missing_set = set(missing)
        self.present = [q for q in self.selected if q.video_file_id not in missing_set]
        self.n_missing = len(self.selected) - len(self.present)
        if missing:
            shown = ", ".join(missing[:20]) + (f", ... ({len(missing) - 20} more)" if len(missing) > 20 else "")
            message = (
                f"{len(missing)} video(s) for {self.n_missing} of {len(self.selected)} questions are missing under "
                f"{Path(opts.data_dir) / 'data'} (looked for .mp4, .MP4, .mkv): {shown}"
            )
            if not opts.skip_missing:
                raise MissingVideosError(message + ". Add them, or pass --skip-missing to run without them.")
            if self.state.is_main_process:
                opts.log(message + ". Going on without them (--skip-missing); the row counts them as n_missing.")

    # -- model ----------------------------------------------------------------------------------------
    def qa(self, max_new_tokens: int):
        """The model, loaded on first use (a finished run only re-scores its records, without a model)."""
        from .model_io import VideoQA, load_model

        if self._qa is None:
            opts = self.opts
            device_map = opts.device_map
            if self.state.num_processes > 1:
                device_map = {"": str(self.state.device)}
            elif device_map is None:
                device_map = "auto" if torch.cuda.is_available() else None
            model, processor = load_model(
                opts.model, dtype=opts.dtype, device_map=device_map, attn_implementation=opts.attn_implementation
            )
            self._qa = VideoQA(model, processor, max_new_tokens=max_new_tokens)
        self._qa.max_new_tokens = max_new_tokens
        self._qa.generation_config.max_new_tokens = max_new_tokens
        return self._qa

    # -- one setting ----------------------------------------------------------------------------------
    def run_setting(self, setting: Setting) -> dict | None:
        """Answer every pending question of one setting, then (main process) score it; returns its row."""
        opts, state = self.opts, self.state
        spec = frame_spec(
            setting.run,
            {
                "frames": opts.frames,
                "fps": opts.fps,
                "min_pixels": opts.min_pixels,
                "max_pixels": opts.max_pixels,
                "total_pixels": opts.total_pixels,
            },
        )
        max_new_tokens = opts.max_new_tokens or int(setting.run.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        run_id, identity = run_identity(
            bench=BENCH, model=opts.model, setting=setting, spec=spec, dtype=opts.dtype, max_new_tokens=max_new_tokens
        )
        run_dir = self.out / "runs" / run_id
        if state.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            described = {k: v for k, v in setting.__dict__.items() if k != "config"}
            info = {"run_id": run_id, "identity": identity, "setting": described}
            (run_dir / "run.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
            if opts.retry_errors:
                dropped = drop_errors(run_dir)
                if dropped:
                    opts.log(f"[{setting.method}/{setting.name}] retrying {dropped} question(s) that had errors")
        state.wait_for_everyone()

        done = load_records(run_dir)
        pending = [q for q in self.present if q.question_id not in done]
        # Deal out all questions, then drop the answered ones: the deal does not depend on when each process
        # read the records, so no question is skipped or answered twice.
        mine = [
            q
            for q in shard_by_video(self.present, state.process_index, state.num_processes)
            if q.question_id not in done
        ]
        tally = Tally()
        for q in self.present:
            if q.question_id in done:
                tally.add(done[q.question_id])
        if state.is_main_process:
            opts.log(
                f"[{setting.method}/{setting.name}] {len(self.present)} questions, {len(self.present) - len(pending)} "
                f"already answered, {len(pending)} to go ({state.num_processes} process(es)); records in {run_dir}"
            )
        if mine:
            self._answer(setting, spec, max_new_tokens, mine, run_dir, tally, len(self.present) - len(pending))
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        merge_shards(run_dir, order=[q.question_id for q in self.all_questions])
        records = load_records(run_dir)
        chosen = [records[q.question_id] for q in self.present if q.question_id in records]
        if not chosen:
            opts.log(f"[{setting.method}/{setting.name}] no question was answered; no leaderboard row written")
            return None
        summary = summarize(chosen)
        row = leaderboard_row(
            opts=opts,
            setting=setting,
            spec=spec,
            summary=summary,
            n_missing=self.n_missing,
            num_processes=state.num_processes,
            source=self.source,
            run_id=run_id,
        )
        board = self.out / LEADERBOARD_FILE
        lb.append_row(board, row)
        lb.append_task_type_rows(lb.task_types_path(board), task_type_rows(row, summary))
        return row

    def _answer(self, setting, spec, max_new_tokens, mine, run_dir, tally, already) -> None:
        from tqdm.auto import tqdm

        opts, state = self.opts, self.state
        qa = self.qa(max_new_tokens)
        if qa.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(qa.device)
        device = device_name(qa.device)
        bar = tqdm(
            total=already + len(mine),
            initial=already,
            desc=f"{setting.method}/{setting.name}" + (f" [rank {state.process_index}]" if state.num_processes > 1 else ""),
            unit="q",
            disable=not opts.progress or not state.is_main_process,
            dynamic_ncols=True,
        )
        writer = RecordWriter(shard_path(run_dir, state.process_index, state.num_processes))
        groups = group_by_video(mine)
        # Decode the next video on a worker thread while the model answers the current one's questions.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        decode = lambda i: pool.submit(read_video, self.videos[groups[i][0]], spec)  # noqa: E731
        try:
            with apply_method(qa.model, setting) as handle:
                warm = not opts.warmup
                upcoming = decode(0)
                for i, (video_file_id, questions) in enumerate(groups):
                    current = upcoming
                    upcoming = decode(i + 1) if i + 1 < len(groups) else None
                    try:
                        video = current.result()
                    except VideoDecodeError as exc:
                        opts.log(f"[{setting.method}/{setting.name}] {exc}; its {len(questions)} question(s) recorded as errors")
                        for q in questions:
                            self._record(writer, tally, bar, error_record(q, setting, opts.model, f"decode: {exc}", device))
                        continue
                    if not warm:  # one untimed answer first: kernel compilation stays out of the latencies
                        qa.answer(video, build_prompt(questions[0].question, questions[0].options))
                        warm = True
                    for q in questions:
                        try:
                            record = answer_question(qa, handle, q, video, setting, opts.model)
                        except torch.cuda.OutOfMemoryError as exc:
                            torch.cuda.empty_cache()
                            record = error_record(q, setting, opts.model, f"out of GPU memory: {exc}"[:500], device)
                        self._record(writer, tally, bar, record)
                    del video
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            writer.close()
            bar.close()

    @staticmethod
    def _record(writer: RecordWriter, tally: Tally, bar, record: dict) -> None:
        writer.write(record)
        tally.add(record)
        bar.update(1)
        bar.set_postfix(acc=_fmt(tally.accuracy), sparsity=_fmt(tally.sparsity), errors=tally.errors, refresh=False)

    # -- all settings ---------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Run every setting in turn; returns the leaderboard rows written (main process)."""
        self.prepare()
        rows = []
        for setting in self.settings:
            row = self.run_setting(setting)
            if row is not None:
                rows.append(row)
        if self.state.is_main_process and rows:
            board = self.out / LEADERBOARD_FILE
            print(f"\nVideo-MME ({self.opts.split}), leaderboard {board}\n" + comparison_table(rows), flush=True)
        return rows


def run_videomme(opts: EvalOptions) -> list[dict]:
    """Run Video-MME for every setting of ``opts``; returns the leaderboard rows written."""
    return VideoMMERun(opts).run()
