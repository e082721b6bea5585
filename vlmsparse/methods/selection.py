"""Per-row level assignment (Algorithm 2 of the PSA paper): defined in :mod:`vlmsparse.kernels.select_levels`
beside its Triton kernel, re-exported here for the planners."""

from vlmsparse.kernels.select_levels import MODES, RULES, cumulative_levels, lone_level2_exact_, no_same_level_neighbour

__all__ = ["cumulative_levels", "lone_level2_exact_", "no_same_level_neighbour", "MODES", "RULES"]
