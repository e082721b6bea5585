"""The testbed: its batches are the harness's inputs, its training-time vision path is exact, it trains and saves
as a model folder, and its q/k/v capture sees what attention sees."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from vlmsparse.eval.model_io import VideoQA, resolve_model
from vlmsparse.eval.needle import NeedleConfig, make_sample, sample_seed
from vlmsparse.eval.prompts import build_prompt
from vlmsparse.eval.vniah import sampled_video
from vlmsparse.testbed.data import needle_batch
from vlmsparse.testbed.model import build_testbed
from vlmsparse.testbed.train import Stage, TrainConfig, answer_loss, train
from vlmsparse.testbed.vision_attention import batched_vision_attention

from testbed_fixture import TINY_SPEC

NEEDLE = NeedleConfig(frame_size=TINY_SPEC.frame_size, kind="colour")


@pytest.fixture(scope="module")
def tiny():
    return build_testbed(TINY_SPEC, seed=0)


def test_training_batches_are_the_harness_inputs(tiny):
    model, processor = tiny
    seed = sample_seed(5, 6, 0.5, 0)
    batch = needle_batch(processor, [seed], 6, [0.5], NEEDLE)
    sample = make_sample(5, 6, 0.5, NEEDLE)
    from vlmsparse.eval.families import get_eval_family

    qa = VideoQA(model, processor, processor_kwargs=get_eval_family("qwen2_5_vl").processor_kwargs)
    harness = qa.inputs(sampled_video(sample.frames),
                                               build_prompt(sample.question.question, sample.question.options))
    ids = batch.inputs["input_ids"][0]
    assert torch.equal(ids[:-2], harness["input_ids"][0])  # then the answer letter and <|im_end|>
    assert processor.tokenizer.decode(ids[-2:]) == sample.question.answer + "<|im_end|>"
    for key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
        assert torch.equal(torch.as_tensor(batch.inputs[key]), torch.as_tensor(harness[key])), key
    assert batch.answer_ids.tolist() == [processor.tokenizer.convert_tokens_to_ids(sample.question.answer)]
    assert 2 < batch.text_after_video < ids.numel()


def test_sized_frames_turn_the_processor_pixel_cap_off_only_where_it_exists(tiny):
    from types import SimpleNamespace

    from vlmsparse.eval.families import get_eval_family
    from vlmsparse.model.processor import sized_frames_kwargs

    capped = SimpleNamespace(video_processor=SimpleNamespace(cap_pixels_per_frame=None))
    assert sized_frames_kwargs(capped) == {"do_resize": False, "cap_pixels_per_frame": False}
    assert sized_frames_kwargs(SimpleNamespace(video_processor=object())) == {"do_resize": False}
    model, processor = tiny
    has_cap = hasattr(processor.video_processor, "cap_pixels_per_frame")
    qa = VideoQA(model, processor, processor_kwargs=get_eval_family("qwen2_5_vl").processor_kwargs)
    assert qa.processor_kwargs == ({"do_resize": False, "cap_pixels_per_frame": False} if has_cap
                                   else {"do_resize": False})
    resized = VideoQA(model, processor, processor_kwargs={"do_resize": True})
    assert resized.processor_kwargs == {"do_resize": True}  # frames the processor sizes keep its own settings


def test_batched_vision_attention_equals_the_window_loop(tiny):
    model, processor = tiny
    batch = needle_batch(processor, [sample_seed(0, 4, 0.0, i) for i in range(2)], 4, [0.0, 1.0],
                         dataclasses.replace(NEEDLE, frame_size=112))  # 112 px: 4 windows of 56 px per frame
    pixels, grid = batch.inputs["pixel_values_videos"], batch.inputs["video_grid_thw"]
    with torch.no_grad():
        stock = model.model.visual(pixels, grid_thw=grid).pooler_output
        with batched_vision_attention(model) as n:
            fast = model.model.visual(pixels, grid_thw=grid).pooler_output
        again = model.model.visual(pixels, grid_thw=grid).pooler_output
    assert n == TINY_SPEC.vision_depth
    torch.testing.assert_close(fast, stock, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, stock)  # the stock path is back after the block


def test_the_answer_loss_falls_when_a_batch_is_learned():
    model, processor = build_testbed(TINY_SPEC, seed=1)
    model.train()
    batch = needle_batch(processor, [sample_seed(0, 2, 0.0, i) for i in range(4)], 2, [0.0] * 4, NEEDLE)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(16):
        loss, _ = answer_loss(model, batch, autocast=False, text_weight=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]


def test_train_writes_a_model_folder_the_harness_loads(tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vlmsparse.model.processor import load_processor

    cfg = TrainConfig(stages=(Stage(2, 2), Stage(4, 1)), lengths=(2, 4), tokens_per_step=16, max_batch=2,
                      warmup_steps=1, kind="colour", eval_lengths=(4,), eval_depths=(0.0,), eval_samples=1,
                      log_every=1, spec=TINY_SPEC)
    lines = []
    info = train(cfg, tmp_path / "tb", log=lines.append)
    assert info["steps_done"] == 3 and [s["steps"] for s in info["stages_run"]] == [2, 1]
    assert len(info["history"]) == 3 and all(h["loss"] > 0 for h in info["history"])
    saved = json.loads((tmp_path / "tb" / "testbed.json").read_text())
    assert saved["needle"]["kind"] == "colour" and saved["needle"]["frame_size"] == 56
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "tb")
    assert model.config.text_config.num_attention_heads == 7 * model.config.text_config.num_key_value_heads
    assert model.config.vision_config.fullatt_block_indexes == [1] and model.config.vision_config.window_size == 56
    assert load_processor(tmp_path / "tb").tokenizer.convert_tokens_to_ids("<|video_pad|>") == model.config.video_token_id
    assert any("dense accuracy" in line for line in lines)


def test_stages_stop_on_accuracy_and_bad_stages_are_refused():
    with pytest.raises(ValueError, match="max_frames"):
        Stage(3, 10)
    with pytest.raises(ValueError, match="no length"):
        TrainConfig(stages=(Stage(2, 1),), lengths=(4,))


def test_testbed_name_resolves_to_the_shipped_folder_or_says_how_to_train_one():
    from vlmsparse.testbed import CHECKPOINT_DIR, checkpoint_path

    assert checkpoint_path() == CHECKPOINT_DIR
    if (CHECKPOINT_DIR / "config.json").is_file():
        assert resolve_model("testbed") == str(checkpoint_path())
    else:
        with pytest.raises(FileNotFoundError, match="python -m vlmsparse.testbed train"):
            resolve_model("testbed")
    assert resolve_model("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_capture_sees_every_layer_and_dense_has_no_error(tiny):
    from vlmsparse.testbed.fidelity import capture_qkv, layer_errors, mean_rows

    model, processor = tiny
    sample = make_sample(0, 32, 0.5, NEEDLE)  # 64 visual tokens + text: more than one 128-token block
    inputs = dict(VideoQA(model, processor).inputs(sampled_video(sample.frames),
                                                   build_prompt(sample.question.question, sample.question.options)))
    with torch.no_grad():
        plain = model(**inputs, logits_to_keep=1).logits
    layers = capture_qkv(model, inputs)
    with torch.no_grad():
        after = model(**inputs, logits_to_keep=1).logits
    assert torch.equal(plain, after)  # unpatched again
    length = inputs["input_ids"].shape[1]
    assert [layer.layer for layer in layers] == list(range(TINY_SPEC.num_hidden_layers))
    assert layers[0].q.shape == (1, 7, length, 16) and layers[0].k.shape == layers[0].v.shape == (1, 1, length, 16)
    assert int(layers[0].visual.sum()) == 64
    rows = layer_errors(layers, [("dense", "dense", {}), ("low", "psa", {"thresholds": [0.2, 0.2, 0.2, 0.2]})],
                        backend="float32", meta={"sample": 0, "frames": 32})
    dense = [r for r in rows if r["method"] == "dense"]
    assert all(r["rel_l2_error"] < 1e-5 and r["recall"] > 0.999 for r in dense)
    means = {r["method"]: r for r in mean_rows(rows)}
    assert means["psa"]["layer"] == "mean" and 0.0 <= means["psa"]["sparsity"] < 1.0


def test_the_shipped_checkpoint_finds_the_needle_on_fresh_seeds():
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vlmsparse.eval.vniah import trained_needle
    from vlmsparse.model.processor import load_processor
    from vlmsparse.testbed import CHECKPOINT_DIR
    from vlmsparse.testbed.model import TestbedSpec
    from vlmsparse.testbed.train import evaluate

    if not (CHECKPOINT_DIR / "config.json").is_file():
        pytest.skip("no testbed checkpoint in this checkout")
    trained = trained_needle(str(CHECKPOINT_DIR))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(CHECKPOINT_DIR, dtype=torch.float32).eval()
    cfg = TrainConfig(kind=trained["kind"], spec=TestbedSpec(frame_size=trained["frame_size"]),
                      eval_depths=(0.0, 0.5, 1.0))
    # stream 7: seeds neither the training (1), its check (2) nor the benchmark (0) drew
    result = evaluate(model, load_processor(CHECKPOINT_DIR), cfg, device=torch.device("cpu"), lengths=(16,),
                      samples=4, stream=7)
    assert result["overall"] >= 0.75  # chance is 0.25; the checkpoint's own check measured 0.975


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check", "--model", "/no/such/testbed"], "model folder /no/such/testbed does not exist"),
        (["fidelity", "--model", "/no/such/testbed"], "model folder /no/such/testbed does not exist"),
        (["train", "--init", "/no/such/testbed"], "pass --init a folder"),
        (["fidelity", "--methods", "psa,nope"], "--methods nope: not in the sweep"),
        (["check", "--device", "tpu7"], "expected cpu or cuda (cuda:N for one GPU), got 'tpu7'"),
        (["check", "--lengths", "3"], "expected even frame counts >= 2"),
        (["check", "--depths", "0,1.5"], "expected depths within [0, 1]"),
        (["check", "--samples", "0"], "expected an integer >= 1"),
    ],
)
def test_testbed_command_bad_input_is_a_one_line_error_before_any_model_loads(argv, message, capsys, monkeypatch):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vlmsparse.testbed.__main__ import main

    monkeypatch.setattr(Qwen2_5_VLForConditionalGeneration, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("a model was loaded")))
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err.strip().splitlines()[-1] and "Traceback" not in err, err


def test_check_runs_the_control_without_the_needle(tmp_path, capsys):
    from testbed_fixture import save_tiny_testbed

    from vlmsparse.testbed.__main__ import main

    model = save_tiny_testbed(tmp_path / "tb")
    assert main(["check", "--model", str(model), "--lengths", "8", "--depths", "0.5", "--samples", "2",
                 "--no-needle"]) == 0
    text = capsys.readouterr().out
    shown = json.loads(text[text.index("{"):])
    assert shown["control"].startswith("needle left out") and shown["samples"] == 2
    assert shown["overall"] in (0.0, 0.5, 1.0)  # two answers of a random model: a share of two
