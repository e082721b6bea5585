"""Profiling: each sample's layers measured at every grid value of the knob, one layer at a time.

A *source* hands a sample's layers to an observer one by one (``source.run(sample, observer)``, the observer
getting a :class:`vlmsparse.model.attention.PrefillAttention`): the synthetic model generates them, a real model
runs its dense prefill under ``vlmsparse.model.observe``. The observer measures the layer at once and keeps only
its figures (sums per plan head), so no two layers' q/k/v are ever held together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from vlmsparse.methods.base import planning_visual
from vlmsparse.model.attention import PrefillAttention

from .measure import LayerFigures, Planner, measure_layer

__all__ = ["Source", "Profile", "profile_samples"]


class Source(Protocol):
    num_layers: int
    heads: tuple[int, int]  # query heads, key/value heads

    def run(self, sample: int, observer: Callable[[PrefillAttention], None]) -> None: ...

    def describe(self) -> str: ...


@dataclass
class Profile:
    """Figures of ``S`` samples x ``L`` layers x ``P`` planners x ``H`` heads (float64; see ``measure``)."""

    cost: np.ndarray  # [S, L, P, H]
    err: np.ndarray  # [S, L, P, H]
    kept: np.ndarray  # [S, L, P, H]
    blocks: np.ndarray  # [S, L, H]
    norm: np.ndarray  # [S, L, H]
    rows: np.ndarray  # [S, L, H]

    @property
    def samples(self) -> int:
        return self.cost.shape[0]

    def sparsity(self) -> np.ndarray:
        """Overall sparsity per planner ``[P]`` (all samples, layers, heads)."""
        return 1.0 - self.cost.sum((0, 1, 3)) / self.blocks.sum()

    def layer_sq_error(self) -> np.ndarray:
        """Squared relative L2 error per ``[S, L, P]``."""
        return self.err.sum(3) / np.maximum(self.norm.sum(2)[:, :, None], 1e-300)

    def summary(self) -> dict[str, np.ndarray]:
        """Per planner ``[P]``: overall sparsity, RMS and mean of the per-layer relative L2 error, recall."""
        sq = self.layer_sq_error()
        return {
            "sparsity": self.sparsity(),
            "rms_error": np.sqrt(sq.mean((0, 1))),
            "mean_error": np.sqrt(sq).mean((0, 1)),
            "recall": self.kept.sum((0, 1, 3)) / self.rows.sum(),
        }


def profile_samples(
    source: Source,
    samples: Sequence[int],
    planners_for_layer: Callable[[int], Sequence[Planner]],
    *,
    by_head: bool = True,
    desc: str = "profile",
    progress: bool = True,
) -> Profile:
    """Measure ``samples`` of ``source``: each layer with the planners ``planners_for_layer(layer)``."""
    from tqdm.auto import tqdm

    figures: dict[tuple[int, int], LayerFigures] = {}
    n_layers = source.num_layers
    outer = tqdm(samples, desc=desc, unit="sample", disable=not progress, dynamic_ncols=True)
    for i, sample in enumerate(outer):
        inner = tqdm(total=n_layers, desc=f"sample {sample}", unit="layer", leave=False, disable=not progress,
                     dynamic_ncols=True)

        def observe(att: PrefillAttention, i: int = i, inner=inner) -> None:
            if not 0 <= att.layer < n_layers:
                raise ValueError(f"layer {att.layer} is outside the source's {n_layers} layers")
            visual = planning_visual(att.visual, att.interleaved_text)  # text inside a video span planned as visual
            figures[i, att.layer] = measure_layer(
                att.q, att.k, att.v, visual, planners_for_layer(att.layer), att.scaling, by_head=by_head
            )
            inner.update(1)

        try:
            source.run(sample, observe)
        finally:
            inner.close()
        missing = [layer for layer in range(n_layers) if (i, layer) not in figures]
        if missing:
            raise ValueError(
                f"sample {sample} gave no prefill attention for layers {missing}: does its prompt hold visual tokens?"
            )
    return _stack(figures, len(samples), n_layers)


def _stack(figures: dict[tuple[int, int], LayerFigures], n_samples: int, n_layers: int) -> Profile:
    def grab(name: str) -> np.ndarray:
        return np.stack([np.stack([getattr(figures[s, l], name) for l in range(n_layers)]) for s in range(n_samples)])

    return Profile(*(grab(n) for n in ("cost", "err", "kept", "blocks", "norm", "rows")))
