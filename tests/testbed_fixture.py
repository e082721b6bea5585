"""A tiny testbed (the real architecture at toy sizes, random weights) for the CPU tests."""

from __future__ import annotations

from pathlib import Path

from vlmsparse.testbed.model import TestbedSpec

#: 7 query heads on 1 key/value head like the testbed, head dim 16 (the kernel's smallest); 56-pixel frames (4 visual tokens a frame pair).
TINY_SPEC = TestbedSpec(
    hidden_size=112,
    intermediate_size=128,
    num_hidden_layers=2,
    max_position_embeddings=1024,
    vision_hidden_size=32,
    vision_intermediate_size=32,
    vision_num_heads=2,
    frame_size=56,
)


def save_tiny_testbed(path: Path, kind: str = "colour") -> Path:
    """A random tiny testbed saved as a testbed folder (with its ``testbed.json``)."""
    from vlmsparse.eval.needle import NeedleConfig
    import dataclasses

    from vlmsparse.testbed.model import build_testbed
    from vlmsparse.testbed.train import save_testbed

    model, processor = build_testbed(TINY_SPEC, seed=0)
    needle = NeedleConfig(frame_size=TINY_SPEC.frame_size, kind=kind)
    return save_testbed(model, processor, path, {"needle": dataclasses.asdict(needle), "what": "test fixture"})
