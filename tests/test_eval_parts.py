"""The harness's parts without a model: data loading, frame sampling, prompts, answers, records, scores, CSVs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from vlmsparse.eval import aggregate, answers, frames, leaderboard, prompts, records, reported, settings, videomme
from vlmsparse.eval.distributed import close_process_group, group_by_video, shard_by_video

from vlmsparse.eval.synthetic_videomme import write_synthetic_videomme


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_videomme(tmp_path_factory.mktemp("videomme"), videos_per_split=2, questions_per_video=2)


# -- data --------------------------------------------------------------------------------------------


def test_questions_load_from_the_published_layout(dataset):
    questions, source = videomme.load_questions(dataset.root)
    assert source == str(dataset.parquet)
    assert [q.question_id for q in questions] == [r["question_id"] for r in dataset.rows]
    q = questions[0]
    assert q.video_file_id == dataset.rows[0]["videoID"] and q.video_id == dataset.rows[0]["video_id"]
    assert q.options == tuple(dataset.rows[0]["options"]) and q.answer == dataset.rows[0]["answer"]
    assert {q.duration for q in videomme.select_split(questions, "long")} == {"long"}
    assert len(videomme.select_split(questions, "all")) == len(questions)
    with pytest.raises(ValueError, match="split must be one of"):
        videomme.select_split(questions, "tiny")


def test_metadata_with_wrong_columns_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["1"], "questions": ["q"]}), path)
    with pytest.raises(ValueError, match="lacks Video-MME columns"):
        videomme.load_questions(metadata=path)


def test_bad_answer_letter_is_refused(dataset):
    row = dict(dataset.rows[0], answer="E")
    with pytest.raises(ValueError, match="answer must be one of"):
        videomme.Question.from_row(row)


def test_video_lookup_accepts_published_extensions(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "abc.MP4").write_bytes(b"x")
    (tmp_path / "data" / "def.mkv").write_bytes(b"x")
    assert videomme.find_video(tmp_path, "abc").name == "abc.MP4"
    assert videomme.find_video(tmp_path, "def").name == "def.mkv"
    assert videomme.find_video(tmp_path, "ghi") is None


# -- frames ------------------------------------------------------------------------------------------


def test_frame_count_follows_qwen_rules():
    spec = frames.FrameSpec()
    # 60 s at 30 fps, 2 fps wanted -> 120 frames
    assert frames.smart_nframes(1800, 30.0, spec) == 120
    # a 1 s clip still gets min_frames (4)
    assert frames.smart_nframes(30, 30.0, spec) == 4
    # an hour at 2 fps is capped at max_frames (768)
    assert frames.smart_nframes(108000, 30.0, spec) == 768
    # odd results are floored to even
    assert frames.smart_nframes(int(30 * 10.5), 30.0, frames.FrameSpec(fps=1.0)) == 10
    # a fixed count is rounded to even, and lowered to the video's length when longer
    assert frames.smart_nframes(1000, 30.0, frames.FrameSpec(frames=63)) == 64
    assert frames.smart_nframes(9, 30.0, frames.FrameSpec(frames=64)) == 8


def test_smart_resize_and_total_budget():
    h, w = frames.smart_resize(1080, 1920, min_pixels=frames.DEFAULT_MIN_PIXELS, max_pixels=frames.DEFAULT_MAX_PIXELS)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= frames.DEFAULT_MAX_PIXELS
    assert abs(w / h - 1920 / 1080) < 0.1
    # 768 frames under a 24576-token budget: each frame pair gets at most 24576 * 784 / 384 pixels
    spec = frames.FrameSpec()
    budget = frames.frame_pixel_budget(768, spec)
    assert budget == int(max(min(spec.max_pixels, spec.total_pixels / 768 * 2), int(spec.min_pixels * 1.05)))
    h, w = frames.frame_size(1080, 1920, 768, spec)
    assert h * w <= budget and h % 28 == 0 and w % 28 == 0
    # tiny input is scaled up to min_pixels
    h, w = frames.smart_resize(20, 30, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    assert h * w >= 28 * 28 * 4
    with pytest.raises(ValueError, match="aspect ratio"):
        frames.smart_resize(10, 5000)


def test_frame_spec_validates():
    with pytest.raises(ValueError, match="frames must be"):
        frames.FrameSpec(frames=1)
    with pytest.raises(ValueError, match="max_pixels"):
        frames.FrameSpec(min_pixels=10000, max_pixels=5000)


def test_read_video_samples_evenly_and_resizes(dataset):
    path = next(iter(dataset.videos.values()))
    spec = frames.FrameSpec(frames=6, min_pixels=28 * 28, max_pixels=56 * 56, total_pixels=56 * 56 * 6)
    video = frames.read_video(path, spec)
    assert video.frames.dtype == np.uint8 and video.frames.shape[0] == 6
    h, w = video.size
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 56 * 56
    assert video.indices == np.linspace(0, video.total_frames - 1, 6).round().astype(int).tolist()
    assert video.total_frames == 12 and math.isclose(video.video_fps, 4.0)
    assert math.isclose(video.sample_fps, 6 / 12 * 4.0)
    # the bright square moves right: its column of maximum red drifts right over the frames
    cols = [int(np.argmax(f[..., 0].astype(int).sum(axis=0))) for f in video.frames]
    assert cols[-1] > cols[0]


def test_broken_video_raises_decode_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(frames.VideoDecodeError, match="cannot decode"):
        frames.read_video(bad, frames.FrameSpec(frames=4))


def test_decord_readers_open_and_close_one_thread_at_a_time(monkeypatch):
    """decord can abort the process when two threads open or free readers at once; decoding may overlap."""
    import sys
    import threading
    import time
    import types
    from concurrent.futures import ThreadPoolExecutor

    state = {"open": 0, "most_open": 0, "decoding": 0, "most_decoding": 0, "freed": 0}
    guard = threading.Lock()

    def enter(key):
        with guard:
            state[key] += 1
            state["most_" + key] = max(state["most_" + key], state[key])
        time.sleep(0.02)
        with guard:
            state[key] -= 1

    class FakeReader:
        def __init__(self, path, num_threads=0):
            self._handle = object()
            enter("open")
            if "bad-open" in path:
                raise RuntimeError("Error reading " + path)

        def __del__(self):
            if self._handle is not None:
                enter("open")
                state["freed"] += 1

        def __len__(self):
            return 4

        def get_avg_fps(self):
            return 2.0

        def get_batch(self, indices):
            enter("decoding")
            if len(indices) > 1:  # a failure while decoding, as decord's on frame sizes it cannot read
                raise RuntimeError("Check failed: from_size == to_size")
            return types.SimpleNamespace(asnumpy=lambda: np.zeros((len(indices), 28, 28, 3), np.uint8))

    monkeypatch.setitem(sys.modules, "decord", types.SimpleNamespace(VideoReader=FakeReader))

    def read(name):
        try:
            with frames.decord_reader(name) as reader:
                reader.get_batch([0, 1])
        except RuntimeError:
            return "failed"

    names = [f"video{i}.mp4" for i in range(6)] + [f"bad-open{i}.mp4" for i in range(2)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(read, names)) == ["failed"] * 8
    assert state["most_open"] == 1, "two readers were opened or freed at once"
    assert state["most_decoding"] > 1, "decoding was serialised too"
    assert state["freed"] == 8  # every reader freed under the lock, the ones that failed to open included


def test_many_threads_reading_videos_decord_fails_on_fall_back_to_pyav(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from vlmsparse.eval.synthetic_videomme import write_video

    paths = [write_video(tmp_path / f"v{i}.mp4", width=72, seed=i) for i in range(4)]  # 56 x 72: decord fails
    spec = frames.FrameSpec(frames=4, min_pixels=28 * 28, max_pixels=56 * 56)
    with ThreadPoolExecutor(max_workers=8) as pool:
        videos = list(pool.map(lambda p: frames.read_video(p, spec), paths * 4))
    assert {v.frames.shape[0] for v in videos} == {4}
    assert all(v.decoder == "pyav" for v in videos)


# -- prompt and answers ------------------------------------------------------------------------------


def test_prompt_layout_matches_lmms_eval():
    text = prompts.build_prompt("What moves?", ["A. a", "B. b", "C. c", "D. d"])
    assert text == (
        prompts.OPTION_PROMPT
        + "\nWhat moves?\nA. a\nB. b\nC. c\nD. d\n\nAnswer with the option's letter from the given choices directly."
    )
    # options without their letters get them
    assert prompts.format_options(["x", "y", "z", "w"]).splitlines() == ["A. x", "B. y", "C. z", "D. w"]


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("B", "B"),
        ("C.", "C"),
        (" (D) the dog", "D"),
        ("The best answer is A", "A"),
        ("The correct option is D.", "D"),
        ("Best answer: C", "C"),
        ("the cat sat on the mat and then it slept for a very long while", ""),
        ("", ""),
        ("Answer: B", "A"),  # as lmms-eval: the capital of "Answer" is found first
    ],
)
def test_answer_extraction(reply, letter):
    assert answers.extract_letter(reply) == letter


def test_scoring():
    assert answers.is_correct("B", "B") and answers.is_correct("b", "B")
    assert not answers.is_correct("", "A") and not answers.is_correct("C", "A")


# -- records -----------------------------------------------------------------------------------------


def test_records_append_resume_and_survive_a_cut_line(tmp_path):
    path = records.shard_path(tmp_path, 0, 1)
    with records.RecordWriter(path) as w:
        w.write({"question_id": "001-1", "correct": True})
        w.write({"question_id": "001-2", "correct": False})
    with path.open("a") as fh:  # an interruption in the middle of a line
        fh.write('{"question_id": "002-1", "corr')
    assert set(records.load_records(tmp_path)) == {"001-1", "001-2"}
    with records.RecordWriter(path) as w:  # the next record starts on its own line
        w.write({"question_id": "002-1", "correct": True})
    assert set(records.load_records(tmp_path)) == {"001-1", "001-2", "002-1"}
    with pytest.raises(ValueError, match="question_id"):
        records.RecordWriter(tmp_path / "x.jsonl").write({"no": "id"})


def test_shards_merge_into_one_file_without_duplicates(tmp_path):
    for rank, ids in enumerate([["b", "d"], ["a", "c", "d"]]):
        with records.RecordWriter(records.shard_path(tmp_path, rank, 2)) as w:
            for qid in ids:
                w.write({"question_id": qid, "rank": rank})
    merged = records.merge_shards(tmp_path, order=["a", "b", "c", "d"])
    lines = [json.loads(l) for l in merged.read_text().splitlines()]
    assert [r["question_id"] for r in lines] == ["a", "b", "c", "d"]
    assert not list(tmp_path.glob(records.SHARD_PATTERN))


def test_drop_errors_keeps_answers(tmp_path):
    with records.RecordWriter(records.shard_path(tmp_path, 0, 1)) as w:
        w.write({"question_id": "a", "error": None})
        w.write({"question_id": "b", "error": "decode: boom"})
    assert records.drop_errors(tmp_path) == 1
    assert set(records.load_records(tmp_path)) == {"a"}


# -- sharding ----------------------------------------------------------------------------------------


def test_sharding_keeps_videos_whole_and_covers_everything(dataset):
    questions, _ = videomme.load_questions(dataset.root)
    shards = [shard_by_video(questions, r, 3) for r in range(3)]
    ids = [q.question_id for s in shards for q in s]
    assert sorted(ids) == sorted(q.question_id for q in questions) and len(ids) == len(set(ids))
    for s in shards:
        for other in shards:
            if other is not s:
                assert not {q.video_file_id for q in s} & {q.video_file_id for q in other}
    groups = group_by_video(questions)
    assert sum(len(g) for _, g in groups) == len(questions)


# -- scores ------------------------------------------------------------------------------------------


def _rec(qid, duration, task, correct, sparsity=None, error=None, prefill=None):
    return {
        "question_id": qid,
        "duration": duration,
        "task_type": task,
        "correct": correct,
        "sparsity": sparsity,
        "visual_sparsity": None if sparsity is None else sparsity + 0.1,
        "prefill_s": prefill,
        "error": error,
    }


def test_process_group_is_closed_at_the_end_and_closing_alone_is_a_no_op(tmp_path):
    import torch.distributed as dist

    close_process_group()  # no group: nothing to do, no error
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    assert dist.is_initialized()
    close_process_group()
    assert not dist.is_initialized()


def test_aggregation_on_known_outcomes():
    recs = [
        _rec("1", "short", "Counting", True, 0.5, prefill=1.0),
        _rec("2", "short", "OCR", False, 0.7, prefill=3.0),
        _rec("3", "medium", "Counting", True, 0.6, prefill=2.0),
        _rec("4", "long", "OCR", True, 0.4, prefill=2.0),
        _rec("5", "long", "OCR", False, 0.2, prefill=2.0),
        _rec("6", "long", "OCR", False, None, error="decode: broken"),
    ]
    s = aggregate.summarize(recs)
    assert s.accuracy("short") == 0.5 and s.accuracy("medium") == 1.0 and s.accuracy("long") == 0.5
    assert s.accuracy() == 3 / 5
    assert s.overall.answered == 5 and s.overall.errors == 1
    assert math.isclose(s.overall.sparsity, (0.5 + 0.7 + 0.6 + 0.4 + 0.2) / 5)
    assert math.isclose(s.overall.visual_sparsity, s.overall.sparsity + 0.1)
    assert math.isclose(s.overall.prefill_s, 2.0)
    assert s.by_task_type["OCR"].answered == 3 and math.isclose(s.by_task_type["OCR"].accuracy, 1 / 3)
    assert s.by_task_type_duration[("OCR", "long")].accuracy == 0.5
    assert s.by_task_type["OCR"].errors == 1


def test_answer_prob_is_the_right_letters_share_and_its_mean_skips_records_without_it():
    from vlmsparse.eval.runner import answer_prob

    assert answer_prob([0.1, 0.6, 0.1, 0.0], "B") == pytest.approx(0.75)  # renormalised over the four letters
    assert answer_prob([0.25] * 4, "D") == pytest.approx(0.25)
    assert answer_prob(None, "A") is None and answer_prob([0.0] * 4, "A") is None
    recs = [_rec("1", "short", "OCR", True, 0.5), _rec("2", "short", "OCR", False, 0.5), _rec("3", "long", "OCR", True, 0.5)]
    recs[0]["answer_prob"], recs[1]["answer_prob"] = 0.9, 0.3  # the third is a record from before the field
    s = aggregate.summarize(recs)
    assert s.overall.answer_prob == pytest.approx(0.6) and s.by_duration["long"].answer_prob is None


def test_option_letters_are_single_tokens_of_the_offline_tokenizer():
    import torch

    from vlmsparse.eval.model_io import _FirstStepTimer, option_letter_ids
    from vlmsparse.testing import tiny_qwen2_5_vl

    _, processor = tiny_qwen2_5_vl()
    ids = option_letter_ids(processor.tokenizer)
    assert ids is not None and len(set(ids)) == 4
    assert [processor.tokenizer.decode([i]) for i in ids] == list("ABCD")
    timer = _FirstStepTimer(torch.device("cpu"), ids)
    scores = torch.full((1, max(ids) + 1), -30.0)
    scores[0, ids[2]] = 5.0
    assert timer(None, scores) is scores and timer.option_probs[2] > 0.99 and sum(timer.option_probs) <= 1.0 + 1e-6
    timer(None, scores * 0)  # later steps leave the first step's probabilities alone
    assert timer.option_probs[2] > 0.99


# -- CSVs --------------------------------------------------------------------------------------------


def test_leaderboard_rows_are_replaced_by_reruns_and_written_atomically(tmp_path):
    board = tmp_path / "videomme.csv"
    row = {c: "" for c in leaderboard.LEADERBOARD_COLUMNS}
    row.update(model="m", method="psa", run_id="r1", split="all", acc_overall=0.5)
    leaderboard.append_row(board, row)
    leaderboard.append_row(board, dict(row, run_id="r2", acc_overall=0.25))
    leaderboard.append_row(board, dict(row, acc_overall=0.75))  # rerun of r1 replaces its row
    rows = leaderboard.read_rows(board)
    assert [(r["run_id"], r["acc_overall"]) for r in rows] == [("r2", "0.2500"), ("r1", "0.7500")]
    with board.open() as fh:
        assert next(csv.reader(fh)) == list(leaderboard.LEADERBOARD_COLUMNS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videomme.csv"]  # no temporary or lock file left
    with pytest.raises(ValueError, match="unknown columns"):
        leaderboard.append_row(board, {"model": "m", "bogus": 1})
    assert leaderboard.task_types_path(board).name == "videomme_task_types.csv"


def test_reported_table_holds_the_papers_numbers():
    psa = reported.reported_for("psa")
    assert (psa.short, psa.medium, psa.long, psa.overall, psa.sparsity) == (0.748, 0.673, 0.542, 0.654, 0.65)
    assert reported.reported_for("dense").overall == 0.651
    assert reported.reported_for("xattention").sparsity == 0.58
    assert reported.reported_for("sparge").sparsity == 0.37
    text = reported.comparison_table([{"method": "psa", "setting": "x", "acc_overall": 0.5, "n_overall": 6}])
    assert "PSA" in text and "this run" in text and "0.500" in text


# -- settings ----------------------------------------------------------------------------------------


def test_settings_from_methods_and_frame_overrides():
    s = settings.resolve_settings(["dense"], None)
    assert [(x.name, x.method) for x in s] == [("default", "dense")]
    with pytest.raises(ValueError, match="unknown method"):
        settings.resolve_settings(["nope"], None)
    spec = settings.frame_spec({"frames": 32, "max_pixels": 200704}, {"fps": 1.0, "max_pixels": None})
    assert spec.frames is None and spec.fps == 1.0 and spec.max_pixels == 200704
    spec = settings.frame_spec({"fps": 1.0}, {"frames": 8})
    assert spec.frames == 8
    a, _ = settings.run_identity(bench="videomme", model="Qwen/X", setting=s[0], spec=spec, dtype="bfloat16", max_new_tokens=16)
    b, _ = settings.run_identity(bench="videomme", model="Qwen/X", setting=s[0], spec=frames.FrameSpec(frames=16), dtype="bfloat16", max_new_tokens=16)
    assert a != b and a.startswith("videomme/Qwen--X/dense-default-")


def test_run_config_unknown_run_key_is_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "x"\nmethod = "dense"\n[run]\nframez = 3\n')
    with pytest.raises(ValueError, match="unknown \\[run\\] keys"):
        settings.setting_from_config(cfg)


def test_shipped_run_configs_load_and_build_their_methods():
    from pathlib import Path

    from vlmsparse.methods import get_method

    paths = sorted((Path(__file__).resolve().parents[1] / "evals").glob("*.toml"))
    loaded = {settings.setting_from_config(p).method: settings.setting_from_config(p) for p in paths}
    assert {"dense", "psa", "xattention", "sparge"} <= set(loaded)
    for p in paths:
        s = settings.setting_from_config(p)
        get_method(s.method, **s.method_config)  # fields match the method's config dataclass
        spec = settings.frame_spec(s.run)
        assert spec == frames.FrameSpec()  # every paper row samples frames the same way
        assert s.run.get("max_new_tokens") == 16


def test_no_table_anywhere_says_what_to_pass(tmp_path):
    # no parquet under the folder and no hub access (tests run offline)
    with pytest.raises(FileNotFoundError, match="--metadata"):
        videomme.load_questions(tmp_path)
