"""Per-layer (and per-head) settings of one method: which planner serves each decoder layer.

A run config may give some decoder layers (or some heads of a layer) their own values of the method's fields::

    method = "psa"
    num_layers = 28                 # the decoder layer count the overrides were made for (checked at patch time)
    [method_config]                 # every layer not listed below
    thresholds = [0.7, 0.8, 0.9, 0.9]
    [[layer_overrides]]
    layers = [0, 1]
    thresholds = [0.9, 0.95, 1.0, 1.0]
    [[layer_overrides]]
    layers = [5]
    heads = [0, 3]                  # plan heads: query heads (plan_heads = "q") or key/value heads ("kv")
    thresholds = [0.4, 0.5, 0.6, 0.6]

A layer's planner starts from ``[method_config]``, then its layer-wide override (no ``heads``), then the
override naming its heads; keyword overrides (``patch(..., thresholds=...)``) win over all of them. One planner
is built per distinct setting and shared by the layers that use it. A head override may not change what the
heads of one plan must share (``block_m``, ``block_n``, ``causal``, ``tail``, ``plan_heads``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vlmsparse.kernels.plan_lists import compile_plan

from .base import Method, Plan

__all__ = ["LayerOverride", "LayerPlanners", "HeadSplitPlanner", "parse_layer_overrides", "build_planners"]

#: Fields every head of one layer's plan must share.
SHARED_BY_HEADS = ("block_m", "block_n", "causal", "tail", "plan_heads")


def _index_list(value: Any, what: str, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{where}: {what} must be a non-empty list of integers, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise ValueError(f"{where}: {what} must be integers >= 0, got {value!r}")
        out.append(int(item))
    if len(set(out)) != len(out):
        raise ValueError(f"{where}: {what} lists an index twice: {value!r}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class LayerOverride:
    """Field values for some decoder layers (all their heads, or only ``heads``)."""

    layers: tuple[int, ...]
    fields: dict[str, Any] = field(default_factory=dict)
    heads: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The TOML table of this override."""
        out: dict[str, Any] = {"layers": list(self.layers)}
        if self.heads is not None:
            out["heads"] = list(self.heads)
        out.update(self.fields)
        return out


def parse_layer_overrides(
    raw: Any, num_layers: Any, method_cls: type[Method], base: dict[str, Any], where: str
) -> tuple[int | None, list[LayerOverride]]:
    """Check a config's ``num_layers`` and ``[[layer_overrides]]`` tables; returns them typed.

    Every override's setting is built once here (``base`` then its fields), so a bad value fails at load time.
    """
    from .config import build_config

    if raw is None:
        raw = []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ValueError(f"{where}: layer_overrides must be an array of tables ([[layer_overrides]])")
    if num_layers is not None and (isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1):
        raise ValueError(f"{where}: num_layers must be a positive integer, got {num_layers!r}")
    if raw and num_layers is None:
        raise ValueError(f"{where}: layer_overrides need num_layers = <the model's decoder layer count>")
    overrides: list[LayerOverride] = []
    whole: dict[int, int] = {}
    headed: dict[tuple[int, int], int] = {}
    for i, table in enumerate(raw):
        at = f"{where}: layer_overrides[{i}]"
        if "layers" not in table:
            raise ValueError(f"{at} must name its layers = [...]")
        layers = _index_list(table["layers"], "layers", at)
        if max(layers) >= num_layers:
            raise ValueError(f"{at}: layer {max(layers)} is out of range for num_layers = {num_layers}")
        heads = _index_list(table["heads"], "heads", at) if "heads" in table else None
        fields = {k: v for k, v in table.items() if k not in ("layers", "heads")}
        if "preset" in fields:
            raise ValueError(f"{at}: a layer override cannot name a preset; set the fields themselves")
        if heads is not None:
            shared = sorted(set(fields) & set(SHARED_BY_HEADS))
            if shared:
                raise ValueError(f"{at}: a head override cannot set {shared} (every head of a layer shares them)")
        build_config(method_cls, base, fields)  # unknown field or bad value: ValueError now
        for layer in layers:
            if heads is None:
                if layer in whole:
                    raise ValueError(f"{at}: layer {layer} is already set by layer_overrides[{whole[layer]}]")
                whole[layer] = i
            else:
                for head in heads:
                    if (layer, head) in headed:
                        raise ValueError(
                            f"{at}: head {head} of layer {layer} is already set by layer_overrides[{headed[layer, head]}]"
                        )
                    headed[layer, head] = i
        overrides.append(LayerOverride(layers=layers, fields=fields, heads=heads))
    return (int(num_layers) if num_layers is not None else None), overrides


class HeadSplitPlanner:
    """One layer whose plan heads use different planners: each planner plans its heads, the levels are joined.

    A query head's plan depends only on that head's queries and its key/value head's keys, so planning a subset
    of heads gives the same levels as planning all of them and keeping the subset.
    """

    def __init__(self, default: Method, parts: Sequence[tuple[tuple[int, ...], Method]]) -> None:
        self.default = default
        self.parts = list(parts)

    @property
    def config(self):
        return self.default.config

    @property
    def name(self) -> str:
        return self.default.name

    def max_head(self) -> int:
        return max(max(heads) for heads, _ in self.parts)

    def plan(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        visual: torch.Tensor | None = None,
        interleaved_text: torch.Tensor | None = None,
    ) -> Plan:
        """Plan ``q [B, Hq, Lq, D]``, ``k [B, Hkv, Lk, D]`` head group by head group (see the class docstring)."""
        hq, hkv = q.shape[1], k.shape[1]
        group = hq // hkv
        per_q = self.default.config.plan_heads == "q"
        hm = hq if per_q else hkv
        owner = torch.zeros(hm, dtype=torch.long)
        planners = [self.default] + [p for _, p in self.parts]
        for i, (heads, _) in enumerate(self.parts, start=1):
            if max(heads) >= hm:
                raise ValueError(f"a head override names head {max(heads)}, but this layer's plans have {hm} heads")
            owner[list(heads)] = i
        levels = None
        first: Plan | None = None
        diagonal_kept = True
        pooled = False
        skips = False
        for i, planner in enumerate(planners):
            heads = (owner == i).nonzero().flatten()
            if heads.numel() == 0:
                continue
            if per_q:  # each chosen query head with a copy of its own key/value head
                qs, ks = q[:, heads.to(q.device)], k[:, (heads // group).to(k.device)]
            else:
                q_heads = (heads[:, None] * group + torch.arange(group)).flatten()
                qs, ks = q[:, q_heads.to(q.device)], k[:, heads.to(k.device)]
            part = planner.plan(qs, ks, visual, interleaved_text)
            diagonal_kept = diagonal_kept and part.diagonal_kept
            pooled = pooled or part.pooled
            skips = skips or part.skips
            if levels is None:
                first = part
                levels = torch.empty((part.levels.shape[0], hm, *part.levels.shape[2:]), dtype=part.levels.dtype,
                                     device=part.levels.device)
            levels[:, heads.to(levels.device)] = part.levels
        assert first is not None and levels is not None
        # the parts' compiled lists cover their own heads only: the joined levels are compiled anew
        compiled = compile_plan(levels, first.q_len, first.k_len, first.block_m, first.block_n, first.causal) if (
            first.compiled is not None) else None
        return dataclasses.replace(first, levels=levels, compiled=compiled, diagonal_kept=diagonal_kept,
                                   pooled=pooled, skips=skips)

    def __repr__(self) -> str:
        return f"HeadSplitPlanner(default={self.default!r}, parts={self.parts!r})"


class LayerPlanners:
    """The planner of every decoder layer: ``for_layer(i)``; ``default`` serves the layers not overridden."""

    def __init__(
        self,
        default: Method,
        layers: dict[int, Method | HeadSplitPlanner] | None = None,
        num_layers: int | None = None,
        source: str = "",
    ) -> None:
        self.default = default
        self.layers = dict(layers or {})
        self.num_layers = num_layers
        self.source = source

    @property
    def name(self) -> str:
        return self.default.name

    @property
    def per_layer(self) -> bool:
        """True when some layer has its own setting."""
        return bool(self.layers)

    def for_layer(self, layer: int) -> Method | HeadSplitPlanner:
        """The planner that plans decoder layer ``layer``."""
        return self.layers.get(layer, self.default)

    def distinct(self) -> list[Method]:
        """Every distinct planner (one per distinct setting)."""
        seen: dict[int, Method] = {id(self.default): self.default}
        for planner in self.layers.values():
            subs = [planner] if isinstance(planner, Method) else [planner.default] + [p for _, p in planner.parts]
            for sub in subs:
                seen.setdefault(id(sub), sub)
        return list(seen.values())

    def check_model(self, num_layers: int, heads_q: int, heads_kv: int) -> None:
        """``ValueError`` (one line, what to do) unless these settings fit a decoder of this shape."""
        where = f" of {self.source}" if self.source else ""
        if self.num_layers is not None and self.num_layers != num_layers:
            raise ValueError(
                f"the per-layer settings{where} are for a model with {self.num_layers} decoder layers, but this model "
                f"has {num_layers}; calibrate for this model (python -m vlmsparse.calibrate --model ...) or drop "
                "num_layers and layer_overrides from the config"
            )
        for layer, planner in self.layers.items():
            if layer >= num_layers:
                raise ValueError(f"the per-layer settings{where} set layer {layer}, but this model has {num_layers} layers")
            if isinstance(planner, HeadSplitPlanner):
                hm = heads_q if planner.config.plan_heads == "q" else heads_kv
                if planner.max_head() >= hm:
                    raise ValueError(
                        f"the per-head settings{where} set head {planner.max_head()} of layer {layer}, but this "
                        f"model's plans have {hm} heads per layer; calibrate for this model"
                    )

    def __repr__(self) -> str:
        return f"LayerPlanners(default={self.default!r}, layers={len(self.layers)}, distinct={len(self.distinct())})"

    def describe(self) -> str:
        """One line: the default config, and how many layers have their own."""
        if not self.layers:
            return str(self.default.config)
        return f"{self.default.config} with per-layer settings for {len(self.layers)} of {self.num_layers} layers " \
               f"({len(self.distinct())} distinct planners)"


def build_planners(
    method_cls: type[Method],
    base_layers: Iterable[dict[str, Any]],
    overrides: Sequence[LayerOverride] = (),
    num_layers: int | None = None,
    keywords: dict[str, Any] | None = None,
    source: str = "",
) -> LayerPlanners:
    """Build the planners: ``base_layers`` (defaults < file ``[method_config]``), each override's fields, then
    ``keywords`` (they win); one planner per distinct resulting config."""
    from .config import build_config

    base = list(base_layers)
    keywords = dict(keywords or {})
    built: dict[str, Method] = {}

    def make(*extra: dict[str, Any]) -> Method:
        config = build_config(method_cls, *base, *extra, keywords)
        key = repr(config)
        if key not in built:
            built[key] = method_cls(config)
        return built[key]

    default = make()
    whole = {layer: o for o in overrides if o.heads is None for layer in o.layers}
    headed: dict[int, list[LayerOverride]] = {}
    for o in overrides:
        if o.heads is not None:
            for layer in o.layers:
                headed.setdefault(layer, []).append(o)
    layers: dict[int, Method | HeadSplitPlanner] = {}
    for layer in sorted(set(whole) | set(headed)):
        layer_fields = whole[layer].fields if layer in whole else {}
        layer_planner = make(layer_fields)
        parts = []
        for o in headed.get(layer, []):
            planner = make(layer_fields, o.fields)
            if planner is not layer_planner:
                parts.append((o.heads, planner))
        layers[layer] = HeadSplitPlanner(layer_planner, parts) if parts else layer_planner
    layers = {i: p for i, p in layers.items() if p is not default}
    return LayerPlanners(default, layers, num_layers, source)
