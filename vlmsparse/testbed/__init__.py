"""The testbed: a small Qwen2.5-VL the project trains on generated needle-in-a-video tasks.

Accuracy under sparsity means something only on attention that was learned; real weights cannot be
downloaded where the project is built, so it trains its own. ``python -m vlmsparse.testbed train`` trains one
(GPU: minutes; CPU: short haystacks only) and writes a Hugging Face model folder; a trained checkpoint ships
inside the package: :func:`checkpoint_path` is its folder, and ``--model testbed`` in the harness names it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["checkpoint_path", "require_checkpoint", "CHECKPOINT_DIR"]

#: The shipped checkpoint: a Hugging Face model folder (config, bf16 safetensors, processor files, testbed.json).
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"


def checkpoint_path() -> Path:
    """The shipped testbed checkpoint's folder (it exists only where a checkpoint was shipped or trained there)."""
    return CHECKPOINT_DIR


def require_checkpoint() -> Path:
    """:func:`checkpoint_path`, or ``FileNotFoundError`` saying how to train one when it holds no model."""
    if not (CHECKPOINT_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"no testbed checkpoint in {CHECKPOINT_DIR}: train one with `python -m vlmsparse.testbed train "
            f"--out {CHECKPOINT_DIR}` (or reinstall the package)"
        )
    return CHECKPOINT_DIR
