"""Test setup: Triton kernels run on the CPU through the interpreter; nothing is fetched from a hub."""

import os

# Must be set before triton (and so vlmsparse.kernels) is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import zlib  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Triton fixes a kernel's mode (interpreter or compiled) when its module is imported: import every kernel now,
# under TRITON_INTERPRET=1, so a test that sets TRITON_INTERPRET=0 for a while (to take the PyTorch paths) cannot
# leave a kernel module imported in compiled mode, which would then fail on a machine without a GPU.
import vlmsparse.kernels  # noqa: E402,F401
import vlmsparse.kernels.antidiagonal  # noqa: E402,F401
import vlmsparse.kernels.block_stats  # noqa: E402,F401
import vlmsparse.kernels.segment_attention  # noqa: E402,F401
import vlmsparse.kernels.select_levels  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """Each test draws fresh random inputs, reproducible from its node id."""
    seed = zlib.crc32(request.node.nodeid.encode())  # stable across processes, unlike hash()
    torch.manual_seed(seed)
    yield


@pytest.fixture
def reference_kernel(monkeypatch):
    """The sparse path on the CPU served by PyTorch (pyramid_attention_blockwise, float32) instead of the
    interpreted Triton kernel: the same maths, fast enough for whole-model tests."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random Qwen2.5-VL saved as a model folder, shared by the harness tests (saved once per session)."""
    from vlmsparse.testing import save_tiny_qwen2_5_vl

    return str(save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen2.5-vl") / "model"))
