"""Choosing per-unit knob values (a unit is a layer, or a layer's plan head) from their measured curves.

Each unit ``u`` has, at every grid value ``g`` of the knob (densest first), a block cost ``cost[u, g]`` (summed
over samples, so a unit with more blocks weighs more and the overall sparsity ``1 - sum cost / sum blocks`` is
exact) and an error ``err[u, g]``: its share of the layer's squared relative L2 error, averaged over samples
(a layer's units add up to the layer's ``||O - O_dense||^2 / ||O_dense||^2``). The objective is the total
error ``sum_u err[u, g_u]`` — the mean squared per-layer error times the layer count.

The choice is the Lagrangian (convex-hull) one: on each unit's lower convex hull of (block saving, error),
segments are taken in order of error added per block saved, across all units, until the target saving is
reached (``target_cost``) or the error budget is spent (``error_budget``). The segment that crosses the target
is taken in part: its unit gets the knob value between two grid points where its measured cost curve (linear
between grid points) gives exactly the cost still needed, so the overall sparsity lands on the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Choice", "allocate", "uniform_knob", "curve_at"]


@dataclass
class Choice:
    """Chosen knob per unit and the cost / error the curves predict for it."""

    knob: np.ndarray  # [U]
    cost: np.ndarray  # [U]
    err: np.ndarray  # [U]


def curve_at(values: np.ndarray, curve: np.ndarray, x: float | np.ndarray) -> np.ndarray:
    """A curve measured at knob ``values`` (any order), read at ``x`` (linear between grid points)."""
    order = np.argsort(values)
    return np.interp(x, values[order], curve[..., order] if curve.ndim == 1 else curve[order])


def _knob_for_cost(values: np.ndarray, cost: np.ndarray, target: float) -> float:
    """The knob value at which a unit's cost curve (linear between grid points) equals ``target``."""
    order = np.argsort(values)
    v, c = values[order], np.maximum.accumulate(cost[order])  # cost grows with the knob
    if target <= c[0]:
        return float(v[0])
    if target >= c[-1]:
        return float(v[-1])
    i = int(np.searchsorted(c, target, side="left"))
    c0, c1 = c[i - 1], c[i]
    f = 0.0 if c1 == c0 else (target - c0) / (c1 - c0)
    return float(v[i - 1] + f * (v[i] - v[i - 1]))


def _lower_hull(saving: np.ndarray, err: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of points (saving, err), from the least saving to the most."""
    order = sorted(range(len(saving)), key=lambda i: (saving[i], err[i]))
    hull: list[int] = []
    for i in order:
        if hull and saving[i] == saving[hull[-1]]:
            continue  # same saving, higher error
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (saving[b] - saving[a]) * (err[i] - err[a]) - (err[b] - err[a]) * (saving[i] - saving[a])
            if cross <= 0:  # b lies on or above the chord a-i
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def allocate(
    values: np.ndarray,
    cost: np.ndarray,
    err: np.ndarray,
    *,
    target_cost: float | None = None,
    error_budget: float | None = None,
) -> Choice:
    """Per-unit knob values: least total error at total cost ``target_cost``, or least cost within ``error_budget``.

    ``values [G]`` the grid, ``cost``/``err`` ``[U, G]``. A target the grid cannot reach gives the nearest
    end (every unit at its densest or sparsest hull point); callers check reachability first.
    """
    if (target_cost is None) == (error_budget is None):
        raise ValueError("give exactly one of target_cost and error_budget")
    units = cost.shape[0]
    dense_idx = int(np.argmax(values))
    at = np.empty(units, dtype=int)
    segments = []  # (slope, unit, from, to)
    for u in range(units):
        saving = cost[u, dense_idx] - cost[u]
        hull = _lower_hull(saving, err[u])
        at[u] = hull[0]
        for a, b in zip(hull, hull[1:]):
            segments.append(((err[u, b] - err[u, a]) / (saving[b] - saving[a]), u, a, b))
    segments.sort(key=lambda s: (s[0], s[1], -values[s[2]]))
    total_cost = float(cost[np.arange(units), at].sum())
    total_err = float(err[np.arange(units), at].sum())
    partial: tuple[int, float] | None = None  # (unit, the cost it must reach)
    if target_cost is None or total_cost > target_cost:
        for _, u, a, b in segments:
            new_cost = total_cost - cost[u, a] + cost[u, b]
            new_err = total_err - err[u, a] + err[u, b]
            if target_cost is not None and new_cost <= target_cost:
                partial = (u, cost[u, a] - (total_cost - target_cost))
                break
            if error_budget is not None and new_err > error_budget:
                f = (error_budget - total_err) / (new_err - total_err)
                partial = (u, cost[u, a] - max(0.0, f) * (cost[u, a] - cost[u, b]))
                break
            at[u], total_cost, total_err = b, new_cost, new_err
    knob = values[at].astype(float)
    if partial is not None:
        u, needed = partial
        knob[u] = _knob_for_cost(values, cost[u], needed)
    chosen_cost = np.array([curve_at(values, cost[u], knob[u]) for u in range(units)])
    chosen_err = np.array([curve_at(values, err[u], knob[u]) for u in range(units)])
    return Choice(knob, chosen_cost, chosen_err)


def uniform_knob(
    values: np.ndarray, cost: np.ndarray, err: np.ndarray, *, target_cost: float | None = None,
    error_budget: float | None = None,
) -> float:
    """One knob value for every unit: total cost ``target_cost``, or the sparsest within ``error_budget``."""
    total_cost, total_err = cost.sum(0), err.sum(0)
    if target_cost is not None:
        return _knob_for_cost(values, total_cost, target_cost)
    order = np.argsort(values)[::-1]  # densest first
    v, e = values[order], total_err[order]
    if e[0] > error_budget:
        return float(v[0])
    for i in range(1, len(v)):
        if e[i] > error_budget:
            f = (error_budget - e[i - 1]) / (e[i] - e[i - 1])
            return float(v[i - 1] + f * (v[i] - v[i - 1]))
    return float(v[-1])
