"""Sparsity and time statistics of a patched model (``handle.stats``).

Every sparse prefill layer call adds its plan's cost sums and counted blocks (see
``vlmsparse.methods.sparsity``): per layer and plan head (accumulated since ``reset()``), and per batch row for the
last prefill. Figures stay device tensors until read, so recording never synchronises the device; time is
measured (with a device synchronisation around planning and attention) only when the patch asked for timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vlmsparse.methods import PlanSparsity

__all__ = ["PatchStats", "LayerTotals"]


@dataclass
class LayerTotals:
    """Sums over the prefills of one layer: cost and counted blocks per plan head (float64 device tensors)."""

    cost: torch.Tensor
    blocks: torch.Tensor
    visual_cost: torch.Tensor
    visual_blocks: torch.Tensor
    calls: int = 0

    def add(self, s: PlanSparsity) -> None:
        self.cost += s.cost.sum(0)
        self.blocks += s.blocks.sum(0)
        self.visual_cost += s.visual_cost.sum(0)
        self.visual_blocks += s.visual_blocks.sum(0)
        self.calls += 1


def _ratio(cost: float, blocks: float) -> float | None:
    return None if blocks <= 0 else 1.0 - cost / blocks


@dataclass
class PatchStats:
    """Achieved sparsity (per layer, per head, per sample, overall) and prefill time of a patched model.

    Attributes:
        num_prefills: prefill forwards served by the sparse path (at least one layer planned).
        num_dense_prefills: prefill forwards served densely (text only, or a case the sparse path cannot serve).
        timing: whether planning / attention time is measured.
    """

    timing: bool = False
    num_prefills: int = 0
    num_dense_prefills: int = 0
    _layers: dict[int, LayerTotals] = field(default_factory=dict)
    _last_cost: torch.Tensor | None = None  # [B] float64, this prefill, all layers and heads
    _last_blocks: torch.Tensor | None = None
    _last_visual_cost: torch.Tensor | None = None
    _last_visual_blocks: torch.Tensor | None = None
    _last_forward: int = -1
    _last_dense_forward: int = -1
    _plan_s: float = 0.0
    _attn_s: float = 0.0
    _dense_s: float = 0.0
    _free_blocks: torch.Tensor | None = None  # blocks left to the method, summed over sparse layer calls
    _last_layout: tuple | None = None  # (tokens, visual tokens, block_m, block_n) of the last sparse layer call

    # -- recording (called by the attention function) ---------------------------------------------------
    def record(self, forward_index: int, layer_idx: int, s: PlanSparsity) -> None:
        """Add one layer's plan figures (``s``: ``[B, Hm]`` sums) of the prefill ``forward_index``."""
        if forward_index != self._last_forward:
            self._last_forward = forward_index
            self.num_prefills += 1
            self._last_cost = self._last_blocks = self._last_visual_cost = self._last_visual_blocks = None
        totals = self._layers.get(layer_idx)
        if totals is None or totals.cost.shape != s.cost.shape[1:] or totals.cost.device != s.cost.device:
            if totals is not None and totals.calls:
                raise ValueError(
                    f"layer {layer_idx}: plans changed from {tuple(totals.cost.shape)} to {tuple(s.cost.shape[1:])} "
                    "heads or device since the last reset(); call handle.stats.reset() first"
                )
            zeros = torch.zeros_like(s.cost[0])
            totals = LayerTotals(zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone())
            self._layers[layer_idx] = totals
        totals.add(s)
        per_row = (s.cost.sum(1), s.blocks.sum(1), s.visual_cost.sum(1), s.visual_blocks.sum(1))
        if self._last_cost is None or self._last_cost.shape != per_row[0].shape:
            self._last_cost, self._last_blocks, self._last_visual_cost, self._last_visual_blocks = (
                t.clone() for t in per_row
            )
        else:
            self._last_cost += per_row[0]
            self._last_blocks += per_row[1]
            self._last_visual_cost += per_row[2]
            self._last_visual_blocks += per_row[3]

    def record_layout(
        self, tokens: int, visual_tokens: torch.Tensor, free_blocks: torch.Tensor, block_m: int, block_n: int
    ) -> None:
        """Note one sparse layer call's layout: its length, its visual tokens (a device tensor, the batch's
        largest count) and how many blocks the layout rules left to the method (a device tensor)."""
        free = free_blocks.to(torch.float64)
        self._free_blocks = free if self._free_blocks is None else self._free_blocks + free
        self._last_layout = (tokens, visual_tokens, block_m, block_n)

    def record_dense_prefill(self, forward_index: int) -> None:
        """Count a prefill forward that ran densely (once per forward, whatever the number of layers)."""
        if forward_index != self._last_dense_forward:
            self._last_dense_forward = forward_index
            self.num_dense_prefills += 1

    def add_time(self, planning: float = 0.0, attention: float = 0.0, dense: float = 0.0) -> None:
        self._plan_s += planning
        self._attn_s += attention
        self._dense_s += dense

    # -- reading -----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything recorded so far."""
        self.num_prefills = self.num_dense_prefills = 0
        self._layers.clear()
        self._last_cost = self._last_blocks = self._last_visual_cost = self._last_visual_blocks = None
        self._last_forward = self._last_dense_forward = -1
        self._plan_s = self._attn_s = self._dense_s = 0.0
        self._free_blocks = self._last_layout = None

    def _sums(self, visual: bool = False) -> tuple[float, float]:
        cost = blocks = 0.0
        for t in self._layers.values():
            cost += float((t.visual_cost if visual else t.cost).sum())
            blocks += float((t.visual_blocks if visual else t.blocks).sum())
        return cost, blocks

    def sparsity(self) -> float | None:
        """Overall sparsity since ``reset()``: 1 - summed cost / counted blocks over layers, heads, samples."""
        return _ratio(*self._sums())

    def visual_sparsity(self) -> float | None:
        """Sparsity of the visual x visual region alone since ``reset()`` (None if there was none)."""
        return _ratio(*self._sums(visual=True))

    def per_layer(self) -> dict[int, float]:
        """Sparsity per decoder layer since ``reset()``."""
        out = {}
        for idx in sorted(self._layers):
            t = self._layers[idx]
            value = _ratio(float(t.cost.sum()), float(t.blocks.sum()))
            if value is not None:
                out[idx] = value
        return out

    def per_head(self) -> dict[int, list[float]]:
        """Sparsity per layer and plan head (query heads, or KV heads for ``plan_heads="kv"``) since ``reset()``."""
        out = {}
        for idx in sorted(self._layers):
            t = self._layers[idx]
            out[idx] = (1.0 - t.cost / t.blocks.clamp(min=1)).tolist()
        return out

    def per_sample(self) -> list[float]:
        """Sparsity of each batch row of the last sparse prefill (all layers and heads)."""
        if self._last_cost is None:
            return []
        return (1.0 - self._last_cost / self._last_blocks.clamp(min=1)).tolist()

    def last_prefill_sparsity(self) -> float | None:
        """Overall sparsity of the last sparse prefill."""
        if self._last_cost is None:
            return None
        return _ratio(float(self._last_cost.sum()), float(self._last_blocks.sum()))

    def last_prefill_visual_sparsity(self) -> float | None:
        """Visual x visual sparsity of the last sparse prefill."""
        if self._last_visual_cost is None:
            return None
        return _ratio(float(self._last_visual_cost.sum()), float(self._last_visual_blocks.sum()))

    def planning_seconds(self) -> float | None:
        """Time spent planning since ``reset()`` (None unless the patch was made with ``timing=True``)."""
        return self._plan_s if self.timing else None

    def attention_seconds(self) -> float | None:
        """Time spent in the sparse attention kernel since ``reset()`` (None unless ``timing=True``)."""
        return self._attn_s if self.timing else None

    def prefill_seconds(self) -> float | None:
        """Planning + sparse attention time of the prefills since ``reset()`` (None unless ``timing=True``)."""
        return self._plan_s + self._attn_s if self.timing else None

    def dense_seconds(self) -> float | None:
        """Time in the dense fallback attention (decode steps included) since ``reset()`` (``timing=True``)."""
        return self._dense_s if self.timing else None

    def why_not_sparse(self) -> str | None:
        """Why the prefills since ``reset()`` reached no sparsity at all, in words; None if they did (or none ran).

        The usual cause is a prompt too short to be sparse: the layout rules keep every block exact that holds
        text, the first key block and the blocks on the diagonal, so only visual x visual blocks wholly before
        the diagonal are left to the method, and a prompt whose visual tokens span fewer than about three
        blocks has none.
        """
        if self.num_prefills == 0:
            if self.num_dense_prefills:
                return (
                    "no prefill reached the sparse path: text-only prompts (and cases it cannot serve, said once in "
                    "the log) run the model's own dense attention"
                )
            return None
        sparsity = self.sparsity()
        if sparsity is None or sparsity > 0 or self._last_layout is None:
            return None
        tokens, visual, block_m, block_n = self._last_layout
        visual, free = int(visual), float(self._free_blocks)
        block = max(block_m, block_n)
        if free == 0:
            return (
                f"too short to be sparse: the last prompt had {tokens} tokens, {visual} of them visual "
                f"({visual / block_n:.1f} key blocks of {block_n}). The layout rules keep exact every block that "
                "holds text, the first key block and the diagonal, so no block was left to the method. Sparsity "
                f"needs visual tokens over at least about 3 blocks ({3 * block} at blocks of {block}): more or "
                "larger frames, or smaller blocks (block_m / block_n)"
            )
        return (
            f"the method kept every block left to it ({free:.0f} block positions over the layers since reset()): "
            "its thresholds asked for all of them on these inputs"
        )

    def as_dict(self) -> dict:
        """The figures as plain numbers (for records and CSV rows)."""
        return {
            "sparsity": self.sparsity(),
            "visual_sparsity": self.visual_sparsity(),
            "num_prefills": self.num_prefills,
            "num_dense_prefills": self.num_dense_prefills,
            "per_layer": self.per_layer(),
            "per_sample_last": self.per_sample(),
            "planning_seconds": self.planning_seconds(),
            "attention_seconds": self.attention_seconds(),
            "dense_seconds": self.dense_seconds(),
        }

    def summary(self) -> str:
        """A small printable table: sparsity per layer (overall and visual x visual), totals and time."""
        lines = [f"{'layer':>6} {'sparsity':>9} {'visual':>8} {'heads min..max':>15}"]
        for idx in sorted(self._layers):
            t = self._layers[idx]
            overall = _ratio(float(t.cost.sum()), float(t.blocks.sum()))
            visual = _ratio(float(t.visual_cost.sum()), float(t.visual_blocks.sum()))
            heads = 1.0 - t.cost / t.blocks.clamp(min=1)
            lines.append(
                f"{idx:>6} {_fmt(overall):>9} {_fmt(visual):>8} "
                f"{_fmt(float(heads.min())) + '..' + _fmt(float(heads.max())):>15}"
            )
        lines.append(f"{'all':>6} {_fmt(self.sparsity()):>9} {_fmt(self.visual_sparsity()):>8}")
        lines.append(f"sparse prefills: {self.num_prefills}, dense prefills: {self.num_dense_prefills}")
        if self.per_sample():
            lines.append("last prefill per sample: " + ", ".join(_fmt(x) for x in self.per_sample()))
        why = self.why_not_sparse()
        if why is not None:
            lines.append(f"sparsity 0: {why}")
        if self.timing:
            lines.append(
                f"time: planning {self._plan_s * 1e3:.1f} ms, sparse attention {self._attn_s * 1e3:.1f} ms, "
                f"dense attention {self._dense_s * 1e3:.1f} ms"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
