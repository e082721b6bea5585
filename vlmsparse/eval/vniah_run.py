"""The ``--bench vniah`` run: grid questions -> rendered haystacks -> answers -> records -> rows and heatmaps.

For each setting in turn: find its record folder (the run identity hashes the model, the method and its
config, the seed, the needle and the haystack source, not the grid, so a larger grid reuses what is done),
skip every question with a record, deal the rest out over the processes, render each haystack on the
model's device, answer greedily with the method patched in (``dense``: the model's own attention), append
the record, then score: one ``vniah.csv`` row, its per-cell rows and a heatmap PNG.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .answers import is_correct
from .errors import ModelError
from .frames import VideoDecodeError
from .needle import question_for
from .records import RecordWriter, drop_errors, merge_shards, read_run, shard_path
from .runner import (
    EvalOptions, answer_question, apply_method, device_name, error_record, load_video_qa, project_version,
)
from .samples import PromptSample
from .settings import Setting, run_identity
from .videomme import Question
from .vniah import BENCH, HaystackSource, Item, VniahSpec, check_context, grid_items, item_record, model_context, sampled_video
from . import leaderboard as lb
from . import vniah_report as report

__all__ = ["run_vniah", "vniah_samples", "configure_vniah", "VNIAH_OPTIONS", "VniahRun", "LEADERBOARD_FILE", "check_vniah_record"]

LEADERBOARD_FILE = "vniah.csv"
DEFAULT_MAX_NEW_TOKENS = 16


def check_vniah_record(record: dict) -> str | None:
    """Why a vniah record is not whole (None when it is): a resumed run answers such questions again."""
    for name in ("question_id", "length", "depth", "answer", "correct", "error"):
        if name not in record:
            return f"no {name!r}"
    if record["answer"] not in ("A", "B", "C", "D"):
        return f"'answer' is {record['answer']!r}, not a letter A-D"
    if not isinstance(record["correct"], bool):
        return "'correct' is not true or false"
    if record["error"] is None:
        for name in ("prediction", "sparsity", "prefill_s"):
            if name not in record:
                return f"no {name!r}"
        if record["correct"] != is_correct(record["prediction"], record["answer"]):
            return "'correct' disagrees with the prediction"
    elif record["correct"]:
        return "a record with an error cannot be correct"
    return None


def _question(item: Item, question, source: str) -> Question:
    """The harness's question type for one grid item (what the Video-MME record helpers take)."""
    return Question(
        question_id=item.question_id, video_id=source, video_file_id="", duration="", domain="vniah",
        sub_category=f"{item.length} frames", task_type="needle", question=question.question,
        options=tuple(question.options), answer=question.answer,
    )


class VniahRun:
    """One invocation: one grid, one model, several settings."""

    def __init__(self, opts: EvalOptions):
        from .distributed import process_state
        from .settings import resolve_settings

        if not isinstance(opts.vniah, VniahSpec):
            raise ValueError("the vniah benchmark needs opts.vniah, a VniahSpec (the CLI builds it from --lengths ...)")
        self.opts = opts
        self.spec: VniahSpec = opts.vniah
        self.state = process_state()
        self.settings = list(opts.settings) if opts.settings else resolve_settings(opts.methods, opts.configs)
        self.out = Path(opts.out)
        self._qa = None
        self.render_device: torch.device | None = None

    def prepare(self) -> None:
        """Check the haystack source and the model's context before anything is loaded."""
        from .model_io import resolve_model

        self.source = HaystackSource(self.spec)
        self.items = grid_items(self.spec)
        path = resolve_model(self.opts.model)
        try:
            context = model_context(path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read the config of model {self.opts.model!r}: {exc}") from exc
        check_context(self.spec, context, self.opts.model)

    def qa(self, max_new_tokens: int):
        if self._qa is None:
            from .families import family_of_model

            self._qa = load_video_qa(self.opts, self.state, family_of_model(self.opts.model), max_new_tokens)
            self.render_device = self._probe_device(self._qa)
        self._qa.max_new_tokens = max_new_tokens
        self._qa.generation_config.max_new_tokens = max_new_tokens
        return self._qa

    def _probe_device(self, qa) -> torch.device:
        """Render on the model's device if its processor takes frames there, else on the CPU."""
        device = qa.device
        if device.type == "cpu":
            return device
        frames = torch.zeros(2, 28, 28, 3, dtype=torch.uint8, device=device)
        try:
            qa.inputs(sampled_video(frames), "probe")
        except Exception as exc:  # the processor does not take device tensors: render on the CPU
            self.opts.log(f"[vniah] the processor does not take frames on {device} ({type(exc).__name__}); rendering on cpu")
            return torch.device("cpu")
        return device

    def _identity(self, setting: Setting) -> tuple[str, dict, int]:
        opts = self.opts
        max_new_tokens = opts.max_new_tokens or int(setting.run.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        run_id, identity = run_identity(
            bench=BENCH, model=opts.model, setting=setting, spec=self.spec, dtype=opts.dtype,
            max_new_tokens=max_new_tokens,
        )
        return run_id, identity, max_new_tokens

    def run_setting(self, setting: Setting) -> dict | None:
        """Answer the pending questions of one setting, then (main process) score it; returns its row."""
        opts, state = self.opts, self.state
        run_id, identity, max_new_tokens = self._identity(setting)
        run_dir = self.out / "runs" / run_id
        tag = f"[{setting.method}/{setting.name}]"
        if state.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            described = {k: v for k, v in setting.__dict__.items() if k != "config"}
            info = {"run_id": run_id, "identity": identity, "setting": described}
            (run_dir / "run.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
            if opts.retry_errors and (dropped := drop_errors(run_dir, check_vniah_record)):
                opts.log(f"{tag} retrying {dropped} question(s) that had errors")
        state.wait_for_everyone()
        on_disk = read_run(run_dir, check_vniah_record)
        done = on_disk.records
        if on_disk.rejected and state.is_main_process:
            opts.log(f"{tag} {len(on_disk.rejected)} line(s) in {run_dir} are not whole records and are not counted; "
                     f"their questions are answered again ({on_disk.describe_rejected()})")
        mine = [it for i, it in enumerate(self.items) if i % state.num_processes == state.process_index]
        mine = [it for it in mine if it.question_id not in done]
        if state.is_main_process:
            pending = sum(it.question_id not in done for it in self.items)
            opts.log(
                f"{tag} {len(self.items)} questions ({len(self.spec.lengths)} lengths x {len(self.spec.depths)} depths x "
                f"{self.spec.samples}), {len(self.items) - pending} already answered; records in {run_dir}"
            )
        if mine:
            self._answer(setting, max_new_tokens, mine, run_dir, already=len(self.items) - len(mine))
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        merge_shards(run_dir, order=[it.question_id for it in self.items], check=check_vniah_record)
        records = read_run(run_dir, check_vniah_record).records
        chosen = [records[it.question_id] for it in self.items if it.question_id in records]
        if not chosen:
            opts.log(f"{tag} no question was answered; no leaderboard row written")
            return None
        grid = report.tally_grid(chosen, self.spec.lengths, self.spec.depths)
        row = report.leaderboard_row(
            grid=grid, spec=self.spec, setting=setting, model=opts.model, dtype=opts.dtype, run_id=run_id,
            version=project_version(),
        )
        board = self.out / LEADERBOARD_FILE
        report.write_rows(board, row, report.cell_rows(row, grid, self.spec))
        picture = report.heatmap(report.heatmap_path(board, row), grid, self.spec, row)
        opts.log(f"{tag} accuracy {report._fmt(row['acc_overall'])}, sparsity {report._fmt(row['sparsity'])}; heatmap {picture}")
        return row

    def _answer(self, setting: Setting, max_new_tokens: int, mine: list[Item], run_dir: Path, already: int) -> None:
        from tqdm.auto import tqdm

        from .aggregate import Tally

        opts, state = self.opts, self.state
        qa = self.qa(max_new_tokens)
        if qa.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(qa.device)
        device = device_name(qa.device)
        tally = Tally()
        bar = tqdm(total=already + len(mine), initial=already, desc=f"{setting.method}/{setting.name}", unit="q",
                   disable=not opts.progress or not state.is_main_process, dynamic_ncols=True)
        writer = RecordWriter(shard_path(run_dir, state.process_index, state.num_processes), check_vniah_record)
        source = self.spec.haystack
        try:
            with apply_method(qa.model, setting, opts.vision) as handle:
                warm = not opts.warmup
                for item in mine:
                    try:
                        frames, question, start = self.source.render(item, device=self.render_device)
                    except VideoDecodeError as exc:
                        opts.log(f"[{setting.method}/{setting.name}] {exc}; question {item.question_id} recorded as an error")
                        question = question_for(item.seed(self.spec), self.spec.needle.kind)
                        record = error_record(_question(item, question, source), setting, opts.model,
                                              f"decode: {exc}", device)
                        record.update(item_record(item, question, None, self.spec))
                    else:
                        path = str(self.source.video_for(item)) if self.source.videos else ""
                        video = sampled_video(frames, path, decoder="decord" if path else "generated")
                        q = _question(item, question, source)
                        if not warm:  # one untimed answer first: kernel compilation stays out of the latencies
                            qa.answer(video, "warm-up")
                            warm = True
                        try:
                            record = answer_question(qa, handle, q, video, setting, opts.model)
                        except torch.cuda.OutOfMemoryError as exc:
                            torch.cuda.empty_cache()
                            record = error_record(q, setting, opts.model, f"out of GPU memory: {exc}"[:500], device)
                        record.update(item_record(item, question, start, self.spec))
                    writer.write(record)
                    tally.add(record)
                    bar.update(1)
                    bar.set_postfix(acc=report._fmt(tally.accuracy), sparsity=report._fmt(tally.sparsity), refresh=False)
        finally:
            writer.close()
            bar.close()

    def run(self) -> list[dict]:
        """Run every setting in turn; returns the leaderboard rows written (main process)."""
        self.prepare()
        rows = [row for setting in self.settings if (row := self.run_setting(setting)) is not None]
        if self.state.is_main_process and rows:
            board = self.out / LEADERBOARD_FILE
            print(f"\nVideo needle in a haystack ({self.spec.haystack}, seed {self.spec.seed}), leaderboard {board}\n"
                  + report.table(rows), flush=True)
            try:
                from .plots import plot_vniah

                board_rows = [r for r in lb.read_rows(board) if r.get("model") == rows[0].get("model")]
                picture = plot_vniah(board_rows or rows, board.with_suffix(".png"))
                print(f"accuracy vs sparsity of every setting on the board: {picture}", flush=True)
            except (OSError, ValueError) as exc:  # a figure is never worth losing a finished run
                print(f"vniah: the summary figure was not drawn ({exc})", flush=True)
        return rows


def run_vniah(opts: EvalOptions) -> list[dict]:
    """Run the needle benchmark for every setting of ``opts``; returns the leaderboard rows written."""
    return VniahRun(opts).run()


#: keys of :func:`configure_vniah` (``--bench-option KEY=VALUE`` of ``python -m vlmsparse.calibrate``)
VNIAH_OPTIONS = ("lengths", "depths", "samples", "seed", "needle", "needle_frames", "frame_size", "generate")


def configure_vniah(opts: EvalOptions, options: dict) -> None:
    """Set ``opts.vniah`` from ``options`` (keys of ``VNIAH_OPTIONS``, as ``python -m vlmsparse.eval``'s flags:
    ``samples`` is questions per cell, ``--limit``); the needle defaults to the one a testbed folder was trained
    on. Haystacks are generated unless ``opts.data_dir`` names a folder of videos. ``ValueError`` for an unknown
    key, ``generate`` beside a data folder, a bad grid or a grid longer than the model's context."""
    from .vniah import build_spec

    unknown = sorted(set(options) - set(VNIAH_OPTIONS))
    if unknown:
        raise ValueError(f"vniah has no option {', '.join(unknown)}; its options: {', '.join(VNIAH_OPTIONS)}")

    def seq(key, cast):
        value = options.get(key)
        if value is None:
            return None
        return tuple(cast(v) for v in (value if isinstance(value, (list, tuple)) else [value]))

    if options.get("generate") is False and opts.data_dir is None:
        raise ValueError("vniah needs a haystack source: generated haystacks (generate=true) or a data folder of videos")
    if options.get("generate") is True and opts.data_dir is not None:
        raise ValueError("give one haystack source: generate=true (generated videos) or a data folder (your videos)")
    model = opts.model if opts.model and Path(opts.model).exists() else None
    spec = build_spec(model, lengths=seq("lengths", int), depths=seq("depths", float),
                      samples=options.get("samples") or opts.limit, seed=options.get("seed"),
                      frame_size=options.get("frame_size"), needle_frames=options.get("needle_frames"),
                      kind=options.get("needle"), data_dir=opts.data_dir)
    opts.vniah = spec


def vniah_samples(opts: EvalOptions) -> list[PromptSample]:
    """The grid's questions as model inputs without scoring (calibration profiles attention on them).

    ``opts.vniah`` sets the grid (:func:`configure_vniah`); without it, the default grid with ``opts.limit``
    questions per cell and the model's trained needle. Questions come index-major (every cell's first question,
    then every cell's second, ...), and within one index depth by depth with the lengths alternating, so the
    first N samples (calibration) and the next K (held out) each spread over the lengths and depths.
    """
    from .prompts import build_prompt

    if not isinstance(opts.vniah, VniahSpec):
        configure_vniah(opts, {})
    spec = opts.vniah
    source = HaystackSource(spec)

    def loader(item: Item):
        def load():
            frames, question, _ = source.render(item)
            return sampled_video(frames.numpy()), build_prompt(question.question, question.options)

        return load

    length_at = {length: n for n, length in enumerate(spec.lengths)}
    depth_at = {depth: n for n, depth in enumerate(spec.depths)}
    items = sorted(grid_items(spec), key=lambda item: (item.index, depth_at[item.depth], length_at[item.length]))
    return [PromptSample(item.question_id, loader(item)) for item in items]
