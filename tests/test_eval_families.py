"""``python -m vlmsparse.eval`` end to end on tiny random Qwen3-VL, Qwen3-VL-MoE and LLaVA-OneVision models saved
to folders, with a generated Video-MME-shaped dataset (vlmsparse.eval.synthetic_videomme): each family samples frames by its own rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmsparse.eval import cli, frames, leaderboard, settings
from vlmsparse.eval.families import family_of_model, get_eval_family

from vlmsparse.eval.synthetic_videomme import write_synthetic_videomme

#: 8 frames; Qwen3-VL frames at least 32768 pixels: the fixture's 56 x 84 video becomes 160 x 224 (5 x 7 merged
#: 32-pixel patches per frame pair: 140 video tokens)
QWEN3_FRAMES = ["--frames", "8", "--min-pixels", "32768", "--max-pixels", "65536"]
FAMILY_ARGS = {"qwen3_vl": QWEN3_FRAMES, "qwen3_vl_moe": QWEN3_FRAMES, "llava_onevision": ["--frames", "8"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One 12-frame video (56 x 84, 4 fps) per split, one question each."""
    return write_synthetic_videomme(tmp_path_factory.mktemp("videomme"), videos_per_split=1, questions_per_video=1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from vlmsparse.testing import save_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    # one decoder layer keeps the runs quick
    return {family: str(save_tiny_model(family, root / family, num_hidden_layers=1)) for family in FAMILY_ARGS}


def _records(out: Path, row: dict) -> list[dict]:
    path = out / "runs" / row["run_id"] / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("family", list(FAMILY_ARGS))
def test_harness_runs_each_family(family, saved, data, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the reference kernel: exact and quicker than the interpreter
    config = tmp_path / "psa-16.toml"
    config.write_text('name = "psa-16"\nmethod = "psa"\n[method_config]\nblock_m = 16\nblock_n = 16\n')
    out = tmp_path / "results"
    argv = ["--model", saved[family], "--data-dir", str(data.root), "--out", str(out), "--no-progress", "--no-warmup",
            "--dtype", "float32", "--max-new-tokens", "2", "--split", "short", "--config", str(config)]
    assert cli.main([*argv, *FAMILY_ARGS[family]]) == 0
    (row,) = leaderboard.read_rows(out / "videomme.csv")
    assert (row["method"], row["setting"], row["n_overall"], row["n_errors"]) == ("psa", "psa-16", "1", "0")
    assert row["frames"] == "8" and 0.0 < float(row["sparsity"]) < float(row["visual_sparsity"]) < 1.0
    (rec,) = _records(out, row)
    assert rec["error"] is None and rec["frames"] == 8
    if family.startswith("qwen3"):
        assert rec["frame_size"] == [160, 224] and rec["num_visual_tokens"] == 4 * 5 * 7
        assert row["max_pixels"] == "65536"
    else:  # uniform frames at the video's own size; the processor resizes them to the tower's input
        assert rec["frame_size"] == [56, 84] and rec["num_visual_tokens"] == 8 * 16 + 1
        assert row["max_pixels"] == "" and row["fps"] == ""


def test_family_frame_rules(saved):
    assert {family_of_model(path).name for path in saved.values()} == set(FAMILY_ARGS)
    qwen3 = settings.frame_spec({}, {}, defaults=get_eval_family("qwen3_vl").frame_defaults)
    assert (qwen3.factor, qwen3.min_pixels, qwen3.max_pixels) == (32, 128 * 32 * 32, 768 * 32 * 32)
    assert frames.frame_size(448, 800, 64, qwen3) == (448, 800) and frames.frame_size(450, 810, 64, qwen3) == (448, 800)
    llava_defaults = get_eval_family("llava_onevision").frame_defaults
    llava = settings.frame_spec({"fps": 2.0, "min_pixels": 100352}, {"frames": None}, defaults=llava_defaults)
    assert (llava.sampling, llava.frames) == ("uniform", 32)  # a config's fps / pixels do not apply
    assert settings.frame_spec({}, {"frames": 7}, defaults=llava_defaults).frames == 7  # not rounded to even
    assert frames.smart_nframes(5, 30.0, llava) == 32  # a short video repeats frames, as lmms-eval's llava_hf
    assert frames.frame_indices(8, 3, "uniform") == [0, 3, 7] and frames.frame_indices(8, 3) == [0, 4, 7]
    assert frames.frame_size(56, 84, 32, llava) == (56, 84)
    with pytest.raises(ValueError, match="--fps, --max-pixels do\\(es\\) not apply"):
        settings.frame_spec({}, {"fps": 1.0, "max_pixels": 4096}, defaults=llava_defaults)
    # run identities of earlier (Qwen2.5-VL) runs do not change: the added fields are left out at their defaults
    assert set(frames.FrameSpec().to_dict()) == {
        "frames", "fps", "min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels"
    }
    assert qwen3.to_dict()["factor"] == 32 and llava.to_dict()["sampling"] == "uniform"


def test_model_and_frame_flags_checked_before_loading(saved, data, tmp_path, capsys):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    base = ["--data-dir", str(data.root), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        cli.main(["--model", saved["llava_onevision"], "--fps", "1", *base])
    assert exc.value.code == 2 and "--fps do(es) not apply to this model" in capsys.readouterr().err
    folder = tmp_path / "text-only"
    config = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1)
    Qwen2ForCausalLM(config).save_pretrained(folder)  # a loadable folder, but a text-only model
    with pytest.raises(SystemExit) as exc:
        cli.main(["--model", str(folder), *base])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "model_type='qwen2'" in err and "supported families: ['llava_onevision'" in err
    with pytest.raises(SystemExit):
        cli.main(["--model", str(tmp_path / "no-such-model"), *base])
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
