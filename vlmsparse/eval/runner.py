"""The Video-MME run: questions -> frames -> model answers -> records -> leaderboard rows.

For each setting (a method and its config) in turn: find the run's record folder, skip every question that
already has a record, deal the rest out over the processes by video, decode each video once (with a frame
cache, :mod:`vlmsparse.eval.frame_cache`, once for every setting and run), answer its questions greedily with
the method patched in, append one record per question, then (main process) merge
the records, score them and write the leaderboard rows. ``dense`` runs the model's own attention, unpatched:
it is the full-attention baseline, and its sparsity is 0 by definition.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from . import leaderboard as lb
from .aggregate import Summary, Tally, summarize
from .answers import extract_letter, is_correct
from .distributed import group_by_video, process_state, shard_by_video
from .errors import DataError, HarnessError, MissingVideosError, ModelError, OutputError, output_error, write_problem
from .frame_cache import FrameCache
from .frames import FRAME_FACTOR, FrameSpec, SampledVideo, VideoDecodeError, read_video, round_by_factor
from .locks import VideoClaims
from .prompts import LETTERS, build_prompt
from .record_fields import record_check
from .records import RecordWriter, drop_errors, merge_shards, read_run, shard_path
from .reported import comparison_table
from .settings import (
    DEFAULT_MAX_NEW_TOKENS,
    Setting,
    frame_spec,
    method_settings_text,
    questions_digest,
    resolve_settings,
    run_identity,
)
from .timing import question_times, time_split
from .videomme import DURATIONS, Question, load_questions, locate_videos, select_split

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
BENCH = "videomme"
LEADERBOARD_FILE = "videomme.csv"
#: Per-video claims of a run folder (see :class:`vlmsparse.eval.locks.VideoClaims`).
CLAIMS_FILE = "claims.lock"



#: Videos decoded ahead in parallel while the GPU answers: 8, or the CPU count if smaller. On the lent H200
#: machine's 16 cores decord sampled 14.4 / 47.6 / 58.9 / 63.6 seconds of 720p video per second with 1 / 4 / 8 / 16
#: workers (results/decode.csv): 8 is where more threads stop paying.
DEFAULT_DECODE_WORKERS = max(1, min(8, os.cpu_count() or 1))


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
    vision: str = "compiled"  # the vision tower: "compiled" (one launch per layer, blocks compiled), "segment", "unpatched"
    kv_cache: str = "auto"  # generation's KV cache: "static" (decode step compiled on CUDA), "dynamic", "auto"
    decode_workers: int = DEFAULT_DECODE_WORKERS  # videos decoded ahead, in parallel, while the GPU answers
    #: folder of sampled videos (:mod:`vlmsparse.eval.frame_cache`): each video decoded once, read back by later
    #: settings and runs; None: decode every time
    frame_cache: str | None = None
    decode_only: bool = False  # fill ``frame_cache`` with every selected video, load no model, write no records
    progress: bool = True
    warmup: bool = True
    demo: bool = False
    vniah: object | None = None  # vniah.VniahSpec: the needle benchmark's grid (set by the CLI for --bench vniah)
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
def apply_method(model, setting: Setting, vision: str = "compiled") -> Iterator[object | None]:
    """Patch ``model`` with the setting's method for the duration of the block (``dense``: unpatched, None).

    ``vision="compiled"`` / ``"segment"`` also run the vision tower's windows in one launch per layer (for ``dense``
    too: the decoder stays unpatched), ``"compiled"`` with its blocks compiled on CUDA; ``"unpatched"`` leaves the
    vision tower alone.
    """
    if setting.unpatched:
        from vlmsparse.model.vision import patch_vision

        vision_patch = patch_vision(model, vision)
        try:
            yield None
        finally:
            if vision_patch is not None:
                vision_patch.restore()
        return
    import vlmsparse

    handle = vlmsparse.patch(model, setting.build_planners(), vision=vision)
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
        layer_sparsity=None,
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


def setting_spec(setting: Setting, opts: EvalOptions, family=None) -> tuple[FrameSpec, int]:
    """Frame sampling and generation length of ``setting``: CLI flags over its ``[run]`` over the defaults of the
    model's family (``family``, a :class:`~vlmsparse.eval.families.EvalFamily`; None: Qwen2.5-VL's).

    ``ValueError`` names the value that is out of range (the CLI checks every setting before anything runs).
    """
    spec = frame_spec(
        setting.run,
        {
            "frames": opts.frames,
            "fps": opts.fps,
            "min_pixels": opts.min_pixels,
            "max_pixels": opts.max_pixels,
            "total_pixels": opts.total_pixels,
        },
        defaults=None if family is None else family.frame_defaults,
    )
    max_new_tokens = opts.max_new_tokens or setting.run.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    return spec, max_new_tokens


def _peak_mem_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def answer_question(
    qa,
    handle,
    q: Question,
    video: SampledVideo,
    setting: Setting,
    model_id: str,
    *,
    decode_s: float | None = None,
    wait_s: float = 0.0,
    frames_cached: bool = False,
) -> dict:
    """Ask one question about its decoded video; returns the question's record.

    ``decode_s``: this question's share of decoding its video; ``wait_s``: the time the harness waited for that
    decode before this question (both go into the record's time split, :mod:`vlmsparse.eval.timing`);
    ``frames_cached``: the video's frames were read from the frame cache, not decoded (``decode_s`` is the read).
    """
    began = time.perf_counter()
    prompt = build_prompt(q.question, q.options)
    if handle is not None:
        handle.stats.reset()
    gen = qa.answer(video, prompt)
    prediction = extract_letter(gen.text)
    if handle is None:  # the model's own dense attention
        sparsity, visual, layers = 0.0, 0.0, None
    else:
        sparsity, visual = handle.stats.sparsity(), handle.stats.visual_sparsity()
        per_layer = handle.stats.per_layer()
        layers = [per_layer.get(i) for i in range(max(per_layer) + 1)] if per_layer else []
    record = _base_record(q, setting, model_id)
    record.update(
        prediction=prediction,
        response=gen.text,
        correct=is_correct(prediction, q.answer),
        option_probs=gen.option_probs,
        answer_prob=answer_prob(gen.option_probs, q.answer),
        sparsity=sparsity,
        visual_sparsity=visual,
        layer_sparsity=layers,
        prefill_s=gen.prefill_s,
        generate_s=gen.generate_s,
        num_tokens=gen.num_input_tokens,
        num_visual_tokens=gen.num_visual_tokens,
        num_generated=gen.num_generated,
        frames=video.num_frames,
        frame_size=list(video.size),
        sample_fps=video.sample_fps,
        decoder=video.decoder,
        kv_cache=gen.kv_cache,
        frames_cached=frames_cached,
        error=None,
        device=device_name(qa.device),
        peak_mem_gib=_peak_mem_gib(qa.device),
        vision_attention=getattr(getattr(getattr(qa.model, "config", None), "vision_config", None), "_attn_implementation", None),
        time=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    record.update(question_times(gen, decode_s=decode_s, wall_s=wait_s + time.perf_counter() - began))
    return record


def answer_prob(option_probs: list[float] | None, answer: str) -> float | None:
    """The right option's share of the four letters' probability as the first reply token: 1 when the model is
    sure of the right letter, 0.25 when it cannot tell the options apart. It moves before accuracy does, so it
    shows what a sparse setting costs where every setting still answers right. None without letter probabilities."""
    if not option_probs or answer not in LETTERS:
        return None
    total = sum(option_probs)
    return option_probs[LETTERS.index(answer)] / total if total > 0 else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _span(values: tuple[int, int] | None) -> str:
    """``"4"`` or ``"4-12"`` (smallest to largest), empty when nothing was answered."""
    if values is None:
        return ""
    lo, hi = values
    return str(lo) if lo == hi else f"{lo}-{hi}"


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
        method_settings=method_settings_text(setting),
        split=opts.split,
        limit=opts.limit if opts.limit is not None else "",
        frames=spec.frames if spec.frames is not None else "",
        fps="" if spec.frames is not None else spec.fps,
        # uniform sampling (LLaVA-OneVision) leaves the frame size to the processor: no pixel bounds
        min_pixels=spec.min_pixels if spec.sampling == "fps" else "",
        max_pixels=spec.max_pixels if spec.sampling == "fps" else "",
        total_pixels=spec.total_pixels if spec.sampling == "fps" else "",
        frames_used=_span(summary.frames_used),
        frame_pixels_used=_span(summary.frame_pixels_used),
        dtype=opts.dtype,
        acc_overall=summary.overall.accuracy,
        answer_prob=summary.overall.answer_prob,
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


def _timed_read(path, spec: FrameSpec, cache: FrameCache | None = None) -> tuple[SampledVideo, float, bool]:
    """``read_video`` (through ``cache`` when given), the seconds it took, and whether the frames came from the
    cache (run on a decode thread)."""
    start = time.perf_counter()
    if cache is None:
        video, cached = read_video(path, spec), False
    else:
        video, cached = cache.read(path, spec)
    return video, time.perf_counter() - start, cached


def load_video_qa(opts: EvalOptions, state, family, max_new_tokens: int):
    """Load ``opts.model`` as a :class:`VideoQA` on this process's device (``state``: its process group), with
    ``family``'s processor keywords; a model that cannot be loaded is a one-line :class:`ModelError`."""
    from .model_io import VideoQA, load_model

    device_map = opts.device_map
    if state.num_processes > 1:
        device_map = {"": str(state.device)}
    elif device_map is None:
        device_map = "auto" if torch.cuda.is_available() else None
    try:
        model, processor = load_model(
            opts.model, dtype=opts.dtype, device_map=device_map, attn_implementation=opts.attn_implementation,
            family=family,
        )
    except (OSError, ValueError, ImportError, RuntimeError, KeyError) as exc:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise
        detail = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelError(
            f"cannot load the model {opts.model!r} ({type(exc).__name__}: {detail}); pass --model a "
            "folder of a supported model (config.json, weights, processor files), testbed, or a hub id such as "
            f"{DEFAULT_MODEL}, and check --dtype, --device-map and --attn-implementation"
        ) from exc
    return VideoQA(model, processor, max_new_tokens=max_new_tokens, processor_kwargs=family.processor_kwargs,
                   kv_cache=opts.kv_cache)


class VideoMMERun:
    """One invocation of the harness: shared questions, videos and model across its settings."""

    def __init__(self, opts: EvalOptions):
        self.opts = opts
        self.state = process_state()
        self.settings = opts.settings if opts.settings is not None else resolve_settings(opts.methods, opts.configs)
        self.out = Path(opts.out)
        self._qa = None
        self._family = None
        self.frame_cache = FrameCache(opts.frame_cache, log=opts.log) if opts.frame_cache else None

    @property
    def family(self):
        """The model's family (its frame sampling, class and processor keywords), read from its config once."""
        if self._family is None:
            from .families import family_of_model

            self._family = family_of_model(self.opts.model)
        return self._family

    # -- data -----------------------------------------------------------------------------------------
    def prepare(self, *, records: bool = True) -> None:
        """Check the results folder (``records``: results will be written), load the questions and find the
        videos; missing videos stop the run unless ``skip_missing``. Every problem here is a
        :class:`~vlmsparse.eval.errors.HarnessError`."""
        opts = self.opts
        if opts.data_dir is None:
            raise DataError("--data-dir is required: the folder holding Video-MME's data/<videoID>.mp4 files")
        try:
            questions, self.source = load_questions(opts.data_dir, opts.metadata)
        except (ValueError, OSError) as exc:  # no table, a table without the published columns, a bad row
            raise DataError(str(exc)) from exc
        self.all_questions = questions
        self.by_id = {q.question_id: q for q in questions}
        self.selected = select_questions(questions, opts.split, opts.limit)
        if not self.selected:
            raise DataError(f"the question table {self.source} has no question in split {opts.split!r}")
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
        if records:
            ensure_writable(self.out)  # on every process, so that all of them stop here alike

    def question_selection(self) -> dict:
        """Which questions this invocation asks (part of every run identity)."""
        content = [(q.question_id, q.video_file_id, q.question, list(q.options), q.answer) for q in self.selected]
        return {
            "split": self.opts.split,
            "limit": self.opts.limit,
            "count": len(self.selected),
            "digest": questions_digest([q.question_id for q in self.selected], content),
        }

    # -- model ----------------------------------------------------------------------------------------
    def qa(self, max_new_tokens: int):
        """The model, loaded on first use (a finished run only re-scores its records, without a model)."""
        if self._qa is None:
            self._qa = load_video_qa(self.opts, self.state, self.family, max_new_tokens)
        self._qa.max_new_tokens = max_new_tokens
        self._qa.generation_config.max_new_tokens = max_new_tokens
        return self._qa

    # -- one setting ----------------------------------------------------------------------------------
    def run_setting(self, setting: Setting) -> dict | None:
        """Answer every pending question of one setting, then (main process) score it; returns its row."""
        opts, state = self.opts, self.state
        label = f"[{setting.method}/{setting.name}]"
        spec, max_new_tokens = setting_spec(setting, opts, self.family)
        run_id, identity = run_identity(
            bench=BENCH,
            model=opts.model,
            setting=setting,
            spec=spec,
            dtype=opts.dtype,
            max_new_tokens=max_new_tokens,
            questions=self.question_selection(),
        )
        run_dir = self.out / "runs" / run_id
        check = record_check(self.by_id)
        if state.is_main_process:
            for note in spec.adjustments():
                opts.log(f"{label} note: {note}")
            described = {k: v for k, v in setting.__dict__.items() if k != "config"}
            info = {"run_id": run_id, "identity": identity, "setting": described}
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                _write_text_atomic(run_dir / "run.json", json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
            except OSError as exc:
                raise output_error("writing", run_dir / "run.json", exc) from exc
            if opts.retry_errors:
                dropped = drop_errors(run_dir, check)
                if dropped:
                    opts.log(f"{label} retrying {dropped} question(s) that had errors")
        state.wait_for_everyone()

        on_disk = read_run(run_dir, check)
        done = on_disk.records
        if on_disk.rejected and state.is_main_process:
            opts.log(
                f"{label} {len(on_disk.rejected)} line(s) in {run_dir} are not whole records and are not counted; "
                f"their questions are answered again ({on_disk.describe_rejected()})"
            )
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
                f"{label} {len(self.present)} questions, {len(self.present) - len(pending)} "
                f"already answered, {len(pending)} to go ({state.num_processes} process(es)); records in {run_dir}"
            )
        if mine:
            writer = RecordWriter(shard_path(run_dir, state.process_index, state.num_processes), check)
            self._answer(setting, spec, max_new_tokens, mine, run_dir, tally, len(self.present) - len(pending), writer)
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        merge_shards(run_dir, order=[q.question_id for q in self.all_questions], check=check)
        records = read_run(run_dir, check).records
        chosen = [records[q.question_id] for q in self.present if q.question_id in records]
        if len(chosen) < len(self.present):
            opts.log(
                f"{label} {len(self.present) - len(chosen)} question(s) have no record yet (another process may "
                "still be answering them); rerun the same command once it is done for the complete row"
            )
        if not chosen:
            opts.log(f"{label} no question was answered; no leaderboard row written")
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
        row.update(time_split(chosen))
        board = self.out / LEADERBOARD_FILE
        lb.append_row(board, row)
        lb.append_task_type_rows(lb.task_types_path(board), task_type_rows(row, summary))
        return row

    def _answer(self, setting, spec, max_new_tokens, mine, run_dir, tally, already, writer: RecordWriter) -> None:
        """Answer ``mine``, video by video. Each video is claimed first (another process working on the same run
        folder skips it and comes back at the end), and its questions re-checked against the records on disk,
        so two processes on one run never answer a question twice, and none finishes before every video is
        answered by one of them."""
        from tqdm.auto import tqdm

        opts, state = self.opts, self.state
        label = f"[{setting.method}/{setting.name}]"
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
        groups = group_by_video(mine)
        claims = VideoClaims(run_dir / CLAIMS_FILE)
        deferred: list[tuple[str, list[Question]]] = []
        shorter: list[str] = []  # videos with fewer frames than a fixed --frames asked for

        def next_claimed(it):
            """The next video of ``it`` that this process claims and that still has questions without a record."""
            for vid, questions in it:
                if not claims.try_claim(vid):
                    deferred.append((vid, questions))
                    continue
                todo = self._still_pending(writer, questions, bar)
                if todo:
                    return vid, todo
                claims.release(vid)
            return None

        # Decode the next videos on worker threads (decode_workers of them) while the model answers this one's.
        workers = max(1, opts.decode_workers)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        decode = lambda vid: pool.submit(_timed_read, self.videos[vid], spec, self.frame_cache)  # noqa: E731
        try:
            with apply_method(qa.model, setting, opts.vision) as handle:
                state_ = {"warm": not opts.warmup}
                it = iter(groups)
                ahead: deque = deque()

                def fill() -> None:
                    while len(ahead) < workers and (upcoming := next_claimed(it)) is not None:
                        ahead.append((upcoming, decode(upcoming[0])))

                fill()
                while ahead:
                    (vid, questions), current = ahead.popleft()
                    fill()
                    self._answer_video(qa, handle, setting, spec, vid, questions, current, writer, tally, bar, device, state_, shorter)
                    claims.release(vid)
                for vid, questions in deferred:  # claimed by another process when first met: wait for it
                    if not claims.try_claim(vid):
                        opts.log(f"{label} another process is answering video {vid} of this run; waiting for it")
                        claims.claim(vid)  # holds no other claim while waiting: no deadlock
                    try:
                        todo = self._still_pending(writer, questions, bar)
                        if todo:
                            self._answer_video(qa, handle, setting, spec, vid, todo, decode(vid), writer, tally, bar, device, state_, shorter)
                    finally:
                        claims.release(vid)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            claims.close()
            writer.close()
            bar.close()
        if shorter:
            opts.log(
                f"{label} note: {len(shorter)} video(s) have fewer than the {round_by_factor(spec.frames, FRAME_FACTOR)} "
                f"frames asked for (first: {shorter[0]}); each was sampled at its own length, floored to a multiple of "
                f"{FRAME_FACTOR}: the records (frames) and the CSV (frames_used) say what was used"
            )

    @staticmethod
    def _still_pending(writer: RecordWriter, questions: list[Question], bar) -> list[Question]:
        todo = set(writer.pending([q.question_id for q in questions]))
        answered_elsewhere = len(questions) - len(todo)
        if answered_elsewhere:
            bar.update(answered_elsewhere)
        return [q for q in questions if q.question_id in todo]

    def _answer_video(self, qa, handle, setting, spec, vid, questions, future, writer, tally, bar, device, state_, shorter) -> None:
        opts = self.opts
        label = f"[{setting.method}/{setting.name}]"
        waited = time.perf_counter()
        try:
            video, decode_s, cached = future.result()
            waited = time.perf_counter() - waited
        except VideoDecodeError as exc:
            opts.log(f"{label} {exc}; its {len(questions)} question(s) recorded as errors")
            for q in questions:
                self._record(writer, tally, bar, error_record(q, setting, opts.model, f"decode: {exc}", device))
            return
        if video.decoder != "decord":
            from_cache = " (frames read from the frame cache)" if cached else ""
            opts.log(f"{label} decord could not read {video.path}; decoded with PyAV instead{from_cache}")
        if spec.frames is not None and video.num_frames < round_by_factor(spec.frames, FRAME_FACTOR):
            if not shorter:
                opts.log(
                    f"{label} note: {video.path} has {video.total_frames} frames, fewer than the {spec.frames} asked "
                    f"for: {video.num_frames} are sampled"
                )
            shorter.append(vid)
        if not state_["warm"]:  # one untimed answer first: kernel compilation stays out of the latencies
            qa.answer(video, build_prompt(questions[0].question, questions[0].options))
            state_["warm"] = True
        for j, q in enumerate(questions):
            try:
                record = answer_question(
                    qa, handle, q, video, setting, opts.model,
                    decode_s=decode_s / len(questions), wait_s=waited if j == 0 else 0.0, frames_cached=cached,
                )
            except torch.cuda.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                record = error_record(q, setting, opts.model, f"out of GPU memory: {exc}"[:500], device)
            self._record(writer, tally, bar, record)

    @staticmethod
    def _record(writer: RecordWriter, tally: Tally, bar, record: dict) -> None:
        if writer.write(record):  # False: another process recorded this question first
            tally.add(record)
        bar.update(1)
        bar.set_postfix(acc=_fmt(tally.accuracy), sparsity=_fmt(tally.sparsity), errors=tally.errors, refresh=False)

    # -- decoding alone (--decode-only) -----------------------------------------------------------------
    def frame_specs(self) -> list[FrameSpec]:
        """The distinct frame specs of the settings, computed as their runs compute them (:func:`setting_spec`
        with the model's family), so that the entries stored ahead are the ones the runs look up."""
        specs: dict[str, FrameSpec] = {}
        for setting in self.settings:
            spec, _ = setting_spec(setting, self.opts, self.family)
            specs.setdefault(json.dumps(spec.to_dict(), sort_keys=True), spec)
        return list(specs.values())

    def fill_frame_cache(self) -> DecodeSummary:
        """Decode every selected video into the frame cache, by every setting's frame spec, on
        ``decode_workers`` threads; load no model and write no records. Entries already stored are checked,
        not decoded again; a video that does not decode is counted and skipped; a cache that cannot be written
        stops the run (:class:`OutputError`)."""
        from concurrent.futures import as_completed

        from tqdm.auto import tqdm

        opts, state = self.opts, self.state
        if not opts.frame_cache:
            raise HarnessError("--decode-only needs --frame-cache DIR: the folder the decoded frames are stored in")
        self.prepare(records=False)
        cache = FrameCache(opts.frame_cache, log=lambda message: None)  # a failed write stops this run (below)
        specs = self.frame_specs()
        mine = shard_by_video(self.present, state.process_index, state.num_processes)
        videos = list(dict.fromkeys(q.video_file_id for q in mine))
        jobs = [(vid, spec) for vid in videos for spec in specs]
        rank = f" [rank {state.process_index}]" if state.num_processes > 1 else ""
        summary = DecodeSummary(folder=str(cache.folder), specs=len(specs), rank=rank)
        bar = tqdm(total=len(jobs), desc=f"decode-only{rank}", unit="video", dynamic_ncols=True,
                   disable=not opts.progress or not state.is_main_process)
        start = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=max(1, opts.decode_workers), thread_name_prefix="decode")
        try:
            futures = {pool.submit(_fill_entry, cache, self.videos[vid], spec): vid for vid, spec in jobs}
            for future in as_completed(futures):
                try:
                    video_s, cached = future.result()
                except VideoDecodeError as exc:
                    if futures[future] not in summary.failed:  # once, whatever the number of specs
                        summary.failed.append(futures[future])
                        opts.log(f"decode-only{rank}: {exc}")
                else:
                    summary.add(futures[future], video_s, cached)
                if cache.write_error is not None:
                    raise OutputError(
                        f"cannot write to the frame cache {cache.folder} ({cache.write_error}); free some space or "
                        "pass --frame-cache another folder, and rerun: the videos stored so far are kept"
                    )
                bar.update(1)
                bar.set_postfix(cached=summary.cached, failed=len(summary.failed), refresh=False)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        summary.wall_s = time.perf_counter() - start
        return summary

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


@dataclass
class DecodeSummary:
    """What a ``--decode-only`` run did. An entry is one video sampled by one frame spec (settings that sample
    alike share one); ``cached`` counts the entries found stored already, ``failed`` the videos that did not
    decode."""

    folder: str
    specs: int = 1
    entries: int = 0
    cached: int = 0
    #: seconds of source video per video (each counted once, whatever the number of specs)
    video_seconds: dict[str, float] = field(default_factory=dict)
    #: seconds of source video over the entries decoded now (a video decoded by two specs counts twice)
    decoded_video_s: float = 0.0
    wall_s: float = 0.0
    failed: list[str] = field(default_factory=list)
    rank: str = ""

    def add(self, video_id: str, video_s: float | None, cached: bool) -> None:
        self.entries += 1
        self.cached += int(cached)
        self.video_seconds[video_id] = video_s or 0.0
        if not cached:
            self.decoded_video_s += video_s or 0.0

    def line(self) -> str:
        """``N videos, X s of video, Y s wall, Z cached already``, then the decoding rate and any failures."""
        n = len(self.video_seconds)
        videos = f"{n} video{'' if n == 1 else 's'}"
        if self.specs > 1:
            videos += f" by {self.specs} frame specs ({self.entries} entries)"
        text = (
            f"decode-only{self.rank}: {videos}, {sum(self.video_seconds.values()):.0f} s of video, "
            f"{self.wall_s:.1f} s wall, {self.cached} cached already"
        )
        decoded = self.entries - self.cached
        if decoded and self.wall_s > 0:
            text += (
                f" ({decoded} decoded: {self.decoded_video_s:.0f} s of video at "
                f"{self.decoded_video_s / self.wall_s:.1f} s of video per second)"
            )
        if self.failed:
            text += f"; {len(self.failed)} did not decode (first: {self.failed[0]})"
        return text + f"; frames in {self.folder}"


def _fill_entry(cache: FrameCache, path, spec: FrameSpec) -> tuple[float | None, bool]:
    """One video into ``cache`` (on a decode thread): ``(seconds of source video, stored already)``. A stored
    entry is checked with its frames mapped, not read."""
    video, cached = cache.read(path, spec, mmap=True)
    return (video.total_frames / video.video_fps if video.video_fps > 0 else None), cached


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` if needed and check that files can be written in it (:class:`OutputError` if not)."""
    reason = write_problem(folder)
    if reason is not None:
        raise OutputError(
            f"cannot write to the results folder {folder} ({reason}); pass --out a folder you can write to"
        )


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_videomme(opts: EvalOptions) -> list[dict]:
    """Run Video-MME for every setting of ``opts``; returns the leaderboard rows written."""
    return VideoMMERun(opts).run()


def decode_videomme(opts: EvalOptions) -> DecodeSummary:
    """``--decode-only``: decode the selected videos of ``opts`` into ``opts.frame_cache`` by the frame specs its
    settings would answer with, and print the summary; no model is loaded, no record written."""
    summary = VideoMMERun(opts).fill_frame_cache()
    print(summary.line(), flush=True)
    return summary
