"""The argparse types shared by the command lines, and one bad --device per command line that takes it."""

import argparse

import pytest
import torch

from vlmsparse import argtypes


@pytest.mark.parametrize("text", ["cpu", "cuda", "cuda:1"])
def test_device_takes_cpu_and_cuda_whatever_this_machine_has(text):
    assert argtypes.device(text) == text  # an example line parses anywhere


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("text", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_refused_before_any_work(text):
    with pytest.raises(ValueError, match=f"--device {text} was given but no CUDA device is available here"):
        argtypes.require_available(text)
    argtypes.require_available("cpu")


@pytest.mark.parametrize("text", ["tpu", "mps", "", "cuda:x"])
def test_device_refuses_other_kinds(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected cpu or cuda"):
        argtypes.device(text)


def test_sizes_and_grids_are_even_pairs():
    assert argtypes.video_size("1280x720") == (1280, 720) and argtypes.video_size("64X48") == (64, 48)
    assert argtypes.patch_grid("36x64") == (36, 64) and argtypes.patch_grid("2x2") == (2, 2)
    for bad in ("1279x720", "14x16", "0x0", "-2x4"):
        with pytest.raises(argparse.ArgumentTypeError, match="WIDTHxHEIGHT in pixels with even sides >= 16"):
            argtypes.video_size(bad)
    for bad in ("big", "1280", "1280x720x3", "axb", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected HxW in patches, e.g. 36x64"):
            argtypes.patch_grid(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="even sides >= 2"):
        argtypes.patch_grid("35x64")


@pytest.mark.parametrize("module, argv", [
    ("vlmsparse.bench.__main__", ["capture", "--generate", "8", "--device", "tpu"]),
    ("vlmsparse.bench.__main__", ["fidelity", "--device", "tpu"]),
    ("vlmsparse.calibrate.cli", ["--bench", "synthetic", "--device", "tpu"]),
    ("vlmsparse.testbed.__main__", ["train", "--device", "tpu"]),
    ("vlmsparse.testbed.__main__", ["check", "--device", "tpu"]),
    ("vlmsparse.testbed.__main__", ["fidelity", "--device", "tpu"]),
])
def test_every_device_flag_is_checked_when_parsed(module, argv, capsys):
    import importlib

    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "argument --device: expected cpu or cuda" in err[-1], err
    assert "Traceback" not in "\n".join(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("module, argv", [
    ("vlmsparse.bench.__main__", ["capture", "--generate", "8", "--device", "cuda"]),
    ("vlmsparse.calibrate.cli", ["--bench", "synthetic", "--device", "cuda", "--target-sparsity", "0.4"]),
    ("vlmsparse.testbed.__main__", ["train", "--device", "cuda"]),
])
def test_cuda_flag_without_cuda_is_a_one_line_error(module, argv, capsys, tmp_path):
    import importlib

    main = importlib.import_module(module).main
    try:
        code = main(argv + ["--out", str(tmp_path / "out")])
    except SystemExit as exc:
        code = exc.code
    assert code not in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "no CUDA device is available here; use --device cpu" in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
