"""The lmms-eval plugin: lmms-eval finds ``vlmsparse_qwen2_5_vl`` through its entry points, builds it around a tiny
random Qwen2.5-VL saved to a temporary folder, and runs a Video-MME-shaped task end to end through its own CLI,
with each request's achieved sparsity in the logged samples and the run's row in a leaderboard CSV.

Needs the ``lmms`` extra (on a CPU-only machine, as CI: ``pip install -e ".[test,lmms]" torch==2.14.1
torchvision==0.29.1``, see the README); skipped only where lmms-eval is not installed.

Where torchvision is not installed (nothing in vlmsparse needs it; the PyPI torchvision wheels are CUDA builds,
which do not load beside the CPU torch wheel), the two torchvision-bound pieces that lmms-eval's Qwen2.5-VL model
calls, ``AutoProcessor`` and ``qwen_vl_utils.process_vision_info``, are replaced for the test by
``lmms_stand_ins``. Everything else, from task loading to prompt building, generation, scoring and logging, is
lmms-eval's own code.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import sys
from pathlib import Path

import pytest

lmms_eval = pytest.importorskip(
    "lmms_eval",
    reason="lmms-eval is not installed; on a CPU: pip install -e '.[test,lmms]' torch==2.14.1 torchvision==0.29.1",
)

import torch  # noqa: E402
from lmms_stand_ins import ProcessorLoader, process_vision_info, torchvision_error  # noqa: E402
from vlmsparse.eval.synthetic_videomme import write_synthetic_videomme  # noqa: E402

from vlmsparse.eval.leaderboard import LEADERBOARD_COLUMNS  # noqa: E402
from vlmsparse.eval.prompts import build_prompt  # noqa: E402
from vlmsparse.integrations.lmms_eval import MODEL_ID  # noqa: E402
from vlmsparse.integrations.lmms_eval_args import (  # noqa: E402
    effective_model_args,
    parse_model_args,
    run_config_model_args,
)

TASK = "vlmsparse_videomme_fixture"


@pytest.fixture(scope="module")
def torchvision_usable() -> bool:
    error = torchvision_error()
    if error not in (None, "absent"):
        pytest.fail(
            f"torchvision is installed but does not load beside torch {torch.__version__} ({error}); transformers "
            "then fails to import its image utilities. On a CPU-only machine install the matching pair from the "
            "README instead: pip install -e '.[test,lmms]' torch==2.14.1 torchvision==0.29.1"
        )
    return error is None


@pytest.fixture
def lmms_qwen(monkeypatch, torchvision_usable):
    """lmms-eval's Qwen2.5-VL modules, with the torchvision-bound pieces replaced where torchvision is missing."""
    import lmms_eval.models.chat.qwen2_5_vl as chat
    import lmms_eval.models.simple.qwen2_5_vl as simple

    if not torchvision_usable:
        monkeypatch.setattr(simple, "AutoProcessor", ProcessorLoader)
        monkeypatch.setattr(chat, "process_vision_info", process_vision_info)
    return chat


def test_registry_finds_the_plugin_by_name(lmms_qwen):
    from lmms_eval.models import get_model, get_model_manifest, list_available_models

    from vlmsparse.integrations.lmms_eval_qwen2_5_vl import Qwen2_5_VLSparse

    assert MODEL_ID in list_available_models()
    assert get_model_manifest(MODEL_ID).chat_class_path.endswith("lmms_eval_qwen2_5_vl.Qwen2_5_VLSparse")
    cls = get_model(MODEL_ID)
    assert cls is Qwen2_5_VLSparse
    assert issubclass(cls, lmms_qwen.Qwen2_5_VL) and cls.is_simple is False


def test_model_args_split_between_lmms_eval_and_the_method(lmms_qwen, tmp_path):
    config = tmp_path / "psa-test.toml"
    config.write_text(
        'name = "psa-test"\nmethod = "psa"\n[method_config]\nstride = 4\n'
        "[run]\nfps = 1.0\nmax_frames = 768\nmax_pixels = 50176\ntotal_pixels = 19267584\nmax_new_tokens = 16\n"
    )
    args = parse_model_args(
        f"pretrained=/m,max_num_frames=16,thresholds=[0.5,0.6,0.7,0.8],block_m=32,config_file={config},timing=true"
    )
    base, sparse, left_out = effective_model_args(args, lmms_qwen.Qwen2_5_VL)
    # explicit max_num_frames wins over the file's fps; the file's max_pixels applies; total_pixels has no argument;
    # max_frames = 768 is what qwen-vl-utils does anyway
    assert base == {"pretrained": "/m", "max_num_frames": 16, "max_pixels": 50176}
    assert left_out == {"total_pixels": 19267584, "max_new_tokens": 16}
    assert sparse.method == "psa" and sparse.timing is True
    assert sparse.method_config() == {"stride": 4, "thresholds": [0.5, 0.6, 0.7, 0.8], "block_m": 32}
    assert sparse.setting_name() == "psa-test"
    assert run_config_model_args({"frames": 64, "fps": 2.0}, {}) == ({"max_num_frames": 64}, {})
    assert run_config_model_args({"fps": 2.0, "min_frames": 8}, {"max_pixels": 1}) == ({"fps": 2.0}, {"min_frames": 8})

    with pytest.raises(ValueError, match="unknown --model_args \\['treshold'\\]"):
        effective_model_args({"pretrained": "/m", "method": "xattention", "treshold": 0.9}, lmms_qwen.Qwen2_5_VL)
    with pytest.raises(ValueError, match="unknown method"):
        effective_model_args({"method": "nope"}, lmms_qwen.Qwen2_5_VL)


def test_missing_qwen_vl_utils_is_reported_before_loading(lmms_qwen, monkeypatch):
    from vlmsparse.integrations.lmms_eval_qwen2_5_vl import Qwen2_5_VLSparse

    monkeypatch.setattr(lmms_qwen, "process_vision_info", None)  # what lmms-eval holds when the import failed
    with pytest.raises(ImportError, match="qwen-vl-utils, which did not import"):
        Qwen2_5_VLSparse(pretrained="/no/such/model", method="psa")


def _task_yaml(folder: Path, parquet: Path) -> None:
    """lmms-eval's own videomme task (prompt, scoring, aggregation), reading a local Video-MME-shaped table."""
    videomme_yaml = Path(lmms_eval.__file__).parent / "tasks" / "videomme" / "videomme.yaml"
    folder.mkdir(parents=True)
    (folder / f"{TASK}.yaml").write_text(
        f"include: {videomme_yaml}\n"
        f"task: {TASK}\n"
        "dataset_path: parquet\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {parquet}\n"
        "generation_kwargs:\n"
        "  max_new_tokens: 3\n"
        "  temperature: 0\n"
        "  do_sample: false\n"
    )


def test_videomme_shaped_task_through_the_lmms_eval_cli(lmms_qwen, tmp_path, monkeypatch):
    import lmms_eval.__main__ as lmms_main
    from lmms_eval.tasks import TaskManager
    from loguru import logger

    from vlmsparse.integrations.lmms_eval_leaderboard import main as leaderboard_main
    from vlmsparse.testing import save_tiny_qwen2_5_vl

    # lmms-eval's videomme task finds videos at $HF_HOME/videomme/data/<videoID>.mp4
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("VERBOSITY", "WARNING")
    fixture = write_synthetic_videomme(hf_home / "videomme", num_frames=8, height=112, width=112, questions_per_video=1)
    _task_yaml(tmp_path / "tasks", fixture.parquet)
    # one decoder layer with two query heads over one KV head (head dim 16) keeps the interpreted kernel quick
    model_dir = save_tiny_qwen2_5_vl(
        tmp_path / "tiny-qwen2.5-vl", num_hidden_layers=1, hidden_size=32, num_attention_heads=2, num_key_value_heads=1
    )
    out = tmp_path / "lmms-out"

    model_args = (
        f"pretrained={model_dir},method=psa,block_m=16,block_n=16,device_map=cpu,"
        "max_num_frames=8,min_pixels=784,max_pixels=12544"
    )
    argv = ["lmms_eval", "--model", MODEL_ID, "--model_args", model_args, "--device", "cpu", "--batch_size", "1"]
    argv += ["--tasks", TASK, "--include_path", str(tmp_path / "tasks"), "--log_samples", "--output_path", str(out)]
    argv += ["--verbosity", "WARNING"]
    monkeypatch.setattr(sys, "argv", argv)
    # index only the test's task folder, not lmms-eval's ~2000 task files (seconds of YAML parsing)
    monkeypatch.setattr(lmms_main, "TaskManager", functools.partial(TaskManager, include_defaults=False))
    try:
        lmms_main.cli_evaluate()
    finally:
        logger.remove()  # the CLI re-points lmms-eval's logger at this test's stdout
        logger.add(sys.stderr, level="WARNING")

    results_files = list(out.rglob("*_results.json"))
    assert len(results_files) == 1, f"lmms-eval wrote {results_files}"
    results = json.loads(results_files[0].read_text())
    samples_file = results_files[0].with_name(results_files[0].name.replace("_results.json", f"_samples_{TASK}.jsonl"))
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == len(fixture.rows) == 3

    by_question = {row["question_id"]: row for row in fixture.rows}
    records = []
    for sample in samples:
        row = by_question[sample["videomme_perception_score"]["question_id"]]
        # the prompt lmms-eval built is vlmsparse.eval's Video-MME prompt, character for character
        assert sample["input"] == build_prompt(row["question"], row["options"])
        record = sample["token_counts"][0]["vlmsparse"]
        assert record["method"] == "psa" and record["batch_size"] == 1 and record["device"] == "cpu"
        assert 0.0 <= record["sparsity"] < 1.0 and 0.0 <= record["visual_sparsity"] < 1.0
        assert record["visual_tokens"] == 64  # 8 frames of 112 x 112: 4 temporal x 16 merged patches
        assert record["input_tokens"] > record["visual_tokens"]
        records.append(record)
    assert any(r["visual_sparsity"] > 0 for r in records), "the method skipped or pooled no visual block"
    mean_sparsity = sum(r["sparsity"] for r in records) / len(records)
    assert math.isclose(results["throughput"]["avg_vlmsparse_sparsity"], mean_sparsity, rel_tol=1e-9)

    board = tmp_path / "results" / "videomme.csv"
    argv_board = [str(out), "--task", TASK, "--csv", str(board)]
    assert leaderboard_main(argv_board) == 0
    assert leaderboard_main(argv_board) == 0  # the same run again replaces its row
    with board.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == LEADERBOARD_COLUMNS
        rows = list(reader)
    assert len(rows) == 1
    row = rows[0]
    scores = [s["videomme_perception_score"]["score"] for s in samples]
    assert (row["model"], row["method"], row["setting"], row["config"]) == (str(model_dir), "psa", "default", "block_m=16; block_n=16")
    assert (row["split"], row["frames"], row["max_pixels"], row["dtype"]) == (TASK, "8", "12544", "bfloat16")
    assert (row["n_overall"], row["n_short"], row["n_medium"], row["n_long"]) == ("3", "1", "1", "1")
    assert float(row["acc_overall"]) == pytest.approx(sum(scores) / 3, abs=1e-4)
    assert float(row["sparsity"]) == pytest.approx(mean_sparsity, abs=1e-4)
    assert row["run_id"].startswith("videomme/") and "lmms-eval-psa-default-" in row["run_id"]


def test_leaderboard_row_without_logged_samples(lmms_qwen, tmp_path):
    """Without --log_samples the row comes from the results file: overall score and the end-of-run summary."""
    from vlmsparse.integrations.lmms_eval_leaderboard import append_lmms_eval_row

    run_dir = tmp_path / "logs" / "Qwen__Qwen2.5-VL-7B-Instruct"
    run_dir.mkdir(parents=True)
    results = {
        "results": {"videomme": {"alias": "videomme", "videomme_perception_score,none": 62.5}},
        "n-samples": {"videomme": {"original": 2700, "effective": 8}},
        "config": {
            "model": MODEL_ID,
            "model_args": "pretrained=Qwen/Qwen2.5-VL-7B-Instruct,method=xattention,threshold=0.9,fps=1.0",
            "limit": 8,
            "gen_kwargs": "",
        },
        "throughput": {"avg_vlmsparse_sparsity": 0.41, "avg_vlmsparse_visual_sparsity": 0.57},
        "lmms_eval_version": "0.7.3",
    }
    (run_dir / "20261123_120000_results.json").write_text(json.dumps(results))
    row = append_lmms_eval_row(tmp_path / "videomme.csv", tmp_path / "logs")
    assert (row["model"], row["method"], row["config"], row["split"]) == (
        "Qwen/Qwen2.5-VL-7B-Instruct", "xattention", "threshold=0.9", "all"
    )
    assert (row["acc_overall"], row["n_overall"], row["acc_short"]) == (0.625, 8, None)
    assert (row["sparsity"], row["visual_sparsity"], row["fps"], row["frames"]) == (0.41, 0.57, 1.0, "")
    assert "first 8 questions" in row["data"] and row["limit"] == 8
    with pytest.raises(ValueError, match="no results for task 'videomme_long'"):
        append_lmms_eval_row(tmp_path / "videomme.csv", tmp_path / "logs", task="videomme_long")
