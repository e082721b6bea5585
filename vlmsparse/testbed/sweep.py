"""The method settings the testbed's numbers compare (``results/vniah.csv``, ``results/testbed_fidelity.csv``).

Each is ``(setting name, method, method config)``: dense; PSA at its default (rows dated before 2026-12-03 ran an
earlier default, see the README), at its former default (preset ``levels-4-8``), at the public code's thresholds
scaled by 0.7 and by 0.5 (sparser; lone pooled blocks kept as the thresholds give them), and its ``videomme-0.65``
preset; XAttention at tau 0.9 (its
Video-MME setting) and 0.7; SpargeAttn at its defaults and with its similarity test off at CDF 0.9 (its
defaults keep every block of video-like inputs dense). Then sparser settings of each, down to where the needle
is lost: PSA thresholds scaled by 0.3, 0.15, 0.05; XAttention tau 0.5, 0.3, 0.1; SpargeAttn CDF 0.7, 0.5, 0.3;
and PSA's default and the sparsest of each with 64 x 64 blocks (``b64-``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SWEEP", "settings"]

SWEEP: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("dense", "dense", {}),
    ("default", "psa", {}),
    ("levels-4-8", "psa", {"preset": "levels-4-8"}),
    ("thresholds-x0.7", "psa", {"thresholds": [0.49, 0.56, 0.63, 0.63], "lone_pooled": "keep"}),
    ("thresholds-x0.5", "psa", {"thresholds": [0.35, 0.4, 0.45, 0.45], "lone_pooled": "keep"}),
    ("videomme-0.65", "psa", {"preset": "videomme-0.65"}),
    ("tau-0.9", "xattention", {"threshold": 0.9}),
    ("tau-0.7", "xattention", {"threshold": 0.7}),
    ("default", "sparge", {}),
    ("sim-off-cdf-0.9", "sparge", {"sim_threshold": -1.0, "cdf_threshold": 0.9}),
    # sparser, to find where accuracy breaks
    ("thresholds-x0.3", "psa", {"thresholds": [0.21, 0.24, 0.27, 0.27], "lone_pooled": "keep"}),
    ("thresholds-x0.15", "psa", {"thresholds": [0.105, 0.12, 0.135, 0.135], "lone_pooled": "keep"}),
    ("thresholds-x0.05", "psa", {"thresholds": [0.035, 0.04, 0.045, 0.045], "lone_pooled": "keep"}),
    ("tau-0.5", "xattention", {"threshold": 0.5}),
    ("tau-0.3", "xattention", {"threshold": 0.3}),
    ("tau-0.1", "xattention", {"threshold": 0.1}),
    ("sim-off-cdf-0.7", "sparge", {"sim_threshold": -1.0, "cdf_threshold": 0.7}),
    ("sim-off-cdf-0.5", "sparge", {"sim_threshold": -1.0, "cdf_threshold": 0.5}),
    ("sim-off-cdf-0.3", "sparge", {"sim_threshold": -1.0, "cdf_threshold": 0.3}),
    # 64 x 64 blocks: twice the blocks per row, so a planner can skip a larger share
    ("b64-default", "psa", {"block_m": 64, "block_n": 64}),
    ("b64-thresholds-x0.05", "psa", {"thresholds": [0.035, 0.04, 0.045, 0.045], "block_m": 64, "block_n": 64,
                                     "lone_pooled": "keep"}),
    ("b64-tau-0.1", "xattention", {"threshold": 0.1, "block_m": 64, "block_n": 64}),
    ("b64-sim-off-cdf-0.3", "sparge", {"sim_threshold": -1.0, "cdf_threshold": 0.3, "block_m": 64, "block_n": 64}),
)


def settings(methods: list[str] | None = None):
    """The sweep as :class:`~vlmsparse.methods.config.Setting` objects (optionally only some methods)."""
    import dataclasses

    from ..methods.config import default_setting

    return [
        dataclasses.replace(default_setting(method, **config), name=name, description="testbed sweep")
        for name, method, config in SWEEP
        if methods is None or method in methods
    ]
