"""The lmms-eval plugins of the newer families: ``vlmsparse_qwen3_vl`` (and ``_moe``) and
``vlmsparse_llava_onevision`` found through lmms-eval's entry points and run through its own CLI on tiny random
models saved to folders, on a Video-MME-shaped task.

As in ``test_lmms_eval.py``, where torchvision cannot be imported the two torchvision-bound pieces lmms-eval's
models call are replaced for the test by ``lmms_stand_ins`` (the frame sizing follows the patch size it is given:
16 for Qwen3-VL, 32-pixel sides). lmms-eval's LLaVA model reads its frames with decord itself. Everything else is
lmms-eval's own code.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest

lmms_eval = pytest.importorskip(
    "lmms_eval", reason="lmms-eval is not installed; install the extra: pip install -e '.[cpu,test,lmms]'"
)

from lmms_stand_ins import ProcessorLoader, process_vision_info, torchvision_error  # noqa: E402
from vlmsparse.eval.synthetic_videomme import write_synthetic_videomme  # noqa: E402

from vlmsparse.eval.prompts import build_prompt  # noqa: E402
from vlmsparse.integrations.lmms_eval import PLUGINS, plugin_class  # noqa: E402

TASK = "vlmsparse_videomme_fixture_families"


@pytest.fixture
def lmms_models(monkeypatch):
    """lmms-eval's Qwen3-VL and llava_hf modules, torchvision-bound pieces replaced where torchvision is missing."""
    import lmms_eval.models.chat.qwen3_vl as qwen3_chat
    import lmms_eval.models.simple.llava_hf as llava_simple
    import lmms_eval.models.simple.qwen3_vl as qwen3_simple

    if torchvision_error() is not None:
        monkeypatch.setattr(qwen3_simple, "AutoProcessor", ProcessorLoader)
        monkeypatch.setattr(llava_simple, "AutoProcessor", ProcessorLoader)
        monkeypatch.setattr(qwen3_chat, "process_vision_info", process_vision_info)
    return qwen3_chat, llava_simple


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from vlmsparse.testing import save_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    # one decoder layer keeps the lmms-eval runs quick
    return {f: save_tiny_model(f, root / f, num_hidden_layers=1) for f in ("qwen3_vl", "qwen3_vl_moe", "llava_onevision")}


def test_registry_finds_every_plugin(lmms_models):
    from lmms_eval.models import get_model, get_model_manifest, list_available_models

    qwen3_chat, llava_simple = lmms_models
    assert set(PLUGINS) <= set(list_available_models())
    for model_id, (path, simple) in PLUGINS.items():
        manifest = get_model_manifest(model_id)
        assert (manifest.simple_class_path if simple else manifest.chat_class_path) == path
        cls = get_model(model_id, force_simple=simple)
        assert cls is plugin_class(model_id) and cls.is_simple is simple
    assert issubclass(plugin_class("vlmsparse_qwen3_vl_moe"), qwen3_chat.Qwen3_VL)
    assert issubclass(plugin_class("vlmsparse_llava_onevision"), llava_simple.LlavaHf)


def test_qwen3_plugins_load_their_own_family(lmms_models, saved):
    dense_cls, moe_cls = plugin_class("vlmsparse_qwen3_vl"), plugin_class("vlmsparse_qwen3_vl_moe")
    with pytest.raises(ValueError, match="is a 'qwen3_vl_moe' checkpoint, not 'qwen3_vl'; run it with --model vlmsparse_qwen3_vl_moe"):
        dense_cls(pretrained=str(saved["qwen3_vl_moe"]), method="psa", device="cpu", device_map="cpu")
    with pytest.raises(ValueError, match="takes LLaVA-OneVision"):
        plugin_class("vlmsparse_llava_onevision")(pretrained=str(saved["qwen3_vl"]), method="psa", device="cpu")
    # a local MoE folder has no "A3B" in its name: the class comes from its config
    model = moe_cls(pretrained=str(saved["qwen3_vl_moe"]), method="psa", block_m=16, device="cpu", device_map="cpu")
    assert type(model.model).__name__ == "Qwen3VLMoeForConditionalGeneration"
    assert model.patch_handle.family.name == "qwen3_vl_moe" and model.patch_handle.method.config.block_m == 16
    model.clean()
    assert not model.patch_handle.active


def _task_yaml(folder: Path, parquet: Path) -> None:
    videomme_yaml = Path(lmms_eval.__file__).parent / "tasks" / "videomme" / "videomme.yaml"
    folder.mkdir(parents=True)
    (folder / f"{TASK}.yaml").write_text(
        f"include: {videomme_yaml}\ntask: {TASK}\ndataset_path: parquet\ndataset_kwargs:\n  data_files:\n"
        f"    test: {parquet}\ngeneration_kwargs:\n  max_new_tokens: 2\n  temperature: 0\n  do_sample: false\n"
    )


@pytest.mark.parametrize(
    "model_id, family, frame_args, visual_tokens",
    [
        # 8 frames of the fixture's 56 x 84 video at >= 2 x 2 merged 32-pixel patches: 64 x 96, 2 x 3 per pair
        ("vlmsparse_qwen3_vl", "qwen3_vl", "max_num_frames=8,min_pixels=4096,max_pixels=6144", 4 * 2 * 3),
        # 8 uniform frames, each pooled to 4 x 4 tokens, plus the image-newline token
        ("vlmsparse_llava_onevision", "llava_onevision", "max_frames_num=8", 8 * 16 + 1),
    ],
)
def test_videomme_shaped_task_through_the_lmms_eval_cli(
    model_id, family, frame_args, visual_tokens, lmms_models, saved, tmp_path, monkeypatch
):
    import lmms_eval.__main__ as lmms_main
    from lmms_eval.tasks import TaskManager
    from loguru import logger

    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the reference kernel: exact and quicker than the interpreter
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("VERBOSITY", "WARNING")
    fixture = write_synthetic_videomme(hf_home / "videomme", questions_per_video=1)
    _task_yaml(tmp_path / "tasks", fixture.parquet)
    out = tmp_path / "lmms-out"
    # lone pooled blocks as Algorithm 2 leaves them: on this tiny model the default makes every pooled block exact
    model_args = (f"pretrained={saved[family]},method=psa,block_m=16,block_n=16,lone_level2_exact=False,"
                  f"lone_pooled=keep,{frame_args}")
    model_args += ",device_map=cpu" if family.startswith("qwen3") else ",dtype=float32"
    argv = ["lmms_eval", "--model", model_id, "--model_args", model_args, "--device", "cpu", "--batch_size", "1"]
    argv += ["--tasks", TASK, "--include_path", str(tmp_path / "tasks"), "--log_samples", "--output_path", str(out)]
    argv += ["--verbosity", "WARNING", "--limit", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(lmms_main, "TaskManager", functools.partial(TaskManager, include_defaults=False))
    try:
        lmms_main.cli_evaluate()
    finally:
        logger.remove()
        logger.add(sys.stderr, level="WARNING")

    (results_file,) = list(out.rglob("*_results.json"))
    results = json.loads(results_file.read_text())
    samples_file = results_file.with_name(results_file.name.replace("_results.json", f"_samples_{TASK}.jsonl"))
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 1  # --limit 1: the first question
    by_question = {row["question_id"]: row for row in fixture.rows}
    for sample in samples:
        row = by_question[sample["videomme_perception_score"]["question_id"]]
        assert sample["input"] == build_prompt(row["question"], row["options"])  # the harness's prompt
        record = sample["token_counts"][0]["vlmsparse"]
        assert record["method"] == "psa" and record["visual_tokens"] == visual_tokens
        assert 0.0 < record["sparsity"] < 1.0 and 0.0 < record["visual_sparsity"] < 1.0
    assert results["throughput"]["avg_vlmsparse_sparsity"] > 0

    from vlmsparse.eval.leaderboard import read_rows
    from vlmsparse.integrations.lmms_eval_leaderboard import main as leaderboard_main

    board = tmp_path / "videomme.csv"
    assert leaderboard_main([str(out), "--task", TASK, "--csv", str(board)]) == 0
    (row,) = read_rows(board)
    assert (row["model"], row["method"], row["frames"], row["n_overall"]) == (str(saved[family]), "psa", "8", "1")
    assert row["dtype"] == ("bfloat16" if family.startswith("qwen3") else "float32")
