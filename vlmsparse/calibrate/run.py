"""One calibration: profile the calibration samples, choose per-layer (or per-head) knobs, write the configs,
measure them on held-out samples."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmsparse.methods import build_config, get_method, get_method_class, get_planners

from .choose import Choice, allocate, curve_at, uniform_knob
from .knobs import Knob, knob_for
from .profile import Profile, Source, profile_samples

__all__ = ["CalibrationSpec", "Calibration", "check_spec", "calibrate", "unit_curves"]


@dataclass
class CalibrationSpec:
    """What to calibrate (checked once by :func:`check_spec`)."""

    method: str
    samples: int
    target_sparsity: float | None = None
    target_error: float | None = None
    per_head: bool = False
    holdout: int = 0
    grid: tuple[float, ...] | None = None
    base_fields: dict[str, Any] = field(default_factory=dict)  # the base setting's [method_config]
    base_run: dict[str, Any] = field(default_factory=dict)  # its [run] table, carried into the written configs
    base_name: str = ""
    compare: list[str] = field(default_factory=list)  # run configs also measured on the held-out samples
    info: dict[str, Any] = field(default_factory=dict)  # provenance for the [calibration] table (model, bench, ...)


def check_spec(spec: CalibrationSpec) -> Knob:
    """``ValueError`` (one line) for a spec that cannot run; returns the method's knob with the grid set."""
    knob = knob_for(spec.method)
    if (spec.target_sparsity is None) == (spec.target_error is None):
        raise ValueError("give exactly one of --target-sparsity and --target-error")
    for name, value in (("--target-sparsity", spec.target_sparsity), ("--target-error", spec.target_error)):
        if value is not None and not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
            raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    if not isinstance(spec.samples, int) or spec.samples < 1:
        raise ValueError(f"no samples: --samples must be at least 1, got {spec.samples!r}")
    if not isinstance(spec.holdout, int) or spec.holdout < 0:
        raise ValueError(f"--holdout must be 0 or more, got {spec.holdout!r}")
    build_config(get_method_class(spec.method), spec.base_fields)  # the base setting itself
    grid = knob.check_grid(spec.grid if spec.grid is not None else knob.grid)
    return Knob(knob.method, knob.name, grid, knob.low, knob.high)


def unit_curves(profile: Profile, per_head: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cost [U, G], err [U, G], blocks [U])`` of each unit (layer, or layer x plan head), see ``choose``."""
    share = profile.err / np.maximum(profile.norm.sum(2), 1e-300)[:, :, None, None]  # [S, L, G, H]
    if per_head:
        s, layers, g, h = profile.cost.shape
        cost = profile.cost.sum(0).transpose(0, 2, 1).reshape(layers * h, g)
        err = share.mean(0).transpose(0, 2, 1).reshape(layers * h, g)
        blocks = profile.blocks.sum(0).reshape(layers * h)
    else:
        cost, err, blocks = profile.cost.sum((0, 3)), share.sum(3).mean(0), profile.blocks.sum((0, 2))
    return cost, err, blocks


@dataclass
class Calibration:
    """Everything a calibration measured and chose (``report`` writes it out)."""

    spec: CalibrationSpec
    knob: Knob
    source: str
    num_layers: int
    heads: int  # plan heads per layer
    profile: Profile  # calibration samples x layers x grid values x heads
    choice: Choice  # per unit (layer, or layer x head)
    global_knob: float
    per_sample_knob: np.ndarray  # [S, U] (NaN where a sample alone cannot reach the target)
    per_sample_sparsity: np.ndarray  # [S, U] at the calibrated knob
    configs: dict[str, Path]  # "calibrated" / "global" -> written TOML
    heldout: Profile | None = None  # held-out samples x layers x settings x 1
    heldout_names: list[str] = field(default_factory=list)

    @property
    def values(self) -> np.ndarray:
        return np.array(self.knob.grid)

    def layer_knobs(self) -> np.ndarray:
        """Chosen knob ``[L]`` (per layer) or ``[L, H]`` (per head)."""
        k = self.choice.knob
        return k.reshape(self.num_layers, self.heads) if self.spec.per_head else k


def _target_cost(target_sparsity: float, cost: np.ndarray, blocks: np.ndarray, values: np.ndarray) -> float:
    """The total block cost of ``target_sparsity``, after checking the knob grid reaches it."""
    total = float(blocks.sum())
    lo = 1.0 - float(cost[:, int(np.argmax(values))].sum()) / total
    hi = 1.0 - float(cost.min(1).sum()) / total
    if not lo <= target_sparsity <= hi:
        side = "sparser" if target_sparsity > hi else "denser"
        raise ValueError(
            f"--target-sparsity {target_sparsity} is outside what the knob grid reaches on these samples "
            f"(sparsity {lo:.3f} to {hi:.3f}); "
            + ("no knob value skips anything on them: give longer samples, with key blocks "
               "to skip (--tokens for --bench synthetic, --bench-option lengths=... for vniah, more --frames for "
               "videomme) or smaller blocks in the --config" if hi <= 0.0 else f"add {side} values to --grid")
        )
    return (1.0 - target_sparsity) * total


def calibrate(spec: CalibrationSpec, source: Source, out: Path, *, progress: bool = True) -> Calibration:
    """Run the whole calibration on ``source`` (samples ``0..N-1`` calibrate, ``N..N+K-1`` are held out)."""
    from .report import write_configs

    knob = check_spec(spec)
    values = np.array(knob.grid)
    base_cfg = build_config(get_method_class(spec.method), spec.base_fields)
    grid_planners = [get_method(spec.method, **{**spec.base_fields, **knob.fields(v, base_cfg)}) for v in values]
    profile = profile_samples(source, range(spec.samples), lambda layer: grid_planners, desc="calibration",
                              progress=progress)
    heads = profile.cost.shape[3]
    cost, err, blocks = unit_curves(profile, spec.per_head)
    budget_err = None
    if spec.target_error is not None:  # RMS over layers <= E: summed squared layer errors <= L * E^2
        budget_err = spec.target_error**2 * source.num_layers
        floor = float(err[:, int(np.argmax(values))].sum())
        if floor > budget_err:
            raise ValueError(
                f"--target-error {spec.target_error} is below the error of the densest knob value on these samples "
                f"(RMS {math.sqrt(floor / source.num_layers):.4f}); add denser values to --grid"
            )
        target_cost = None
    else:
        target_cost = _target_cost(spec.target_sparsity, cost, blocks, values)
    choice = allocate(values, cost, err, target_cost=target_cost, error_budget=budget_err)
    glob = uniform_knob(values, cost, err, target_cost=target_cost, error_budget=budget_err)

    # input stability: the same choice made from each sample alone
    s_count = profile.samples
    per_knob = np.full((s_count, cost.shape[0]), np.nan)
    per_sparsity = np.full((s_count, cost.shape[0]), np.nan)
    for s in range(s_count):
        one = Profile(*(getattr(profile, n)[s : s + 1] for n in ("cost", "err", "kept", "blocks", "norm", "rows")))
        c_s, e_s, b_s = unit_curves(one, spec.per_head)
        try:
            tc = None if spec.target_sparsity is None else _target_cost(spec.target_sparsity, c_s, b_s, values)
            per_knob[s] = allocate(values, c_s, e_s, target_cost=tc, error_budget=budget_err).knob
        except ValueError:
            pass
        per_sparsity[s] = [1.0 - curve_at(values, c_s[u], choice.knob[u]) / max(b_s[u], 1.0) for u in range(len(b_s))]

    result = Calibration(
        spec=spec, knob=knob, source=source.describe(), num_layers=source.num_layers, heads=heads, profile=profile,
        choice=choice, global_knob=glob, per_sample_knob=per_knob, per_sample_sparsity=per_sparsity, configs={},
    )
    result.configs = write_configs(result, base_cfg, out)

    if spec.holdout:
        settings = [("calibrated", get_planners(spec.method, config_file=result.configs["calibrated"])),
                    ("global", get_planners(spec.method, config_file=result.configs["global"]))]
        for path in spec.compare:
            from vlmsparse.methods import load_run_config

            run = load_run_config(path)
            settings.append((run.name, get_planners(run.method, config_file=path)))
        for _, planners in settings:
            planners.check_model(source.num_layers, *source.heads)
        result.heldout_names = [name for name, _ in settings]
        result.heldout = profile_samples(
            source, range(spec.samples, spec.samples + spec.holdout),
            lambda layer: [p.for_layer(layer) for _, p in settings], by_head=False, desc="held-out", progress=progress,
        )
    return result
