"""The argparse types shared by the command lines, and one bad --device per command line that takes it."""

import argparse

import pytest
import torch

from vlmsparse import argtypes


@pytest.mark.parametrize("text", ["cpu", "cuda", "cuda:1"])
def test_device_takes_cpu_and_cuda(text):
    if text.startswith("cuda") and not torch.cuda.is_available():
        with pytest.raises(argparse.ArgumentTypeError, match=f"{text} was given but no CUDA device is available"):
            argtypes.device(text)
    else:
        assert argtypes.device(text) == text


@pytest.mark.parametrize("text", ["tpu", "mps", "", "cuda:x"])
def test_device_refuses_other_kinds(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected cpu or cuda"):
        argtypes.device(text)


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
