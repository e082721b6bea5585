"""Per-layer attention error of each method on a trained model's own q/k/v (one dense prefill of a needle sample).

The model runs one dense prefill with its attention observed (``vlmsparse.model.patcher.observe``): every
decoder layer's post-rotary ``q``, ``k``, ``v`` and the token layout are kept as a planner would receive them. Each method then plans on those tensors, the plan is run, and its
output is compared with dense attention by :func:`vlmsparse.bench.fidelity.evaluate_plan` (relative L2
error over all rows, attention recall, sparsity): the same measures as ``results/fidelity.csv``, but on
attention that was learned instead of synthetic q/k.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Sequence

from vlmsparse.model.capture import LayerQKV, capture_qkv

__all__ = ["LayerQKV", "capture_qkv", "layer_errors", "mean_rows", "COLUMNS"]

COLUMNS = (
    "model", "method", "setting", "layer", "frames", "visual_tokens", "seq_len", "sample", "sparsity",
    "visual_sparsity", "rel_l2_error", "recall", "heads_q", "heads_kv", "head_dim", "dtype", "backend", "device",
    "date", "seed",
)


def layer_errors(
    layers: Sequence[LayerQKV],
    settings: Sequence[tuple[str, str, dict[str, Any]]],
    *,
    backend: str,
    meta: dict[str, Any],
) -> list[dict]:
    """One row per (setting, layer): sparsity, relative L2 error and recall against dense attention.

    ``settings``: ``(setting name, method, method config)``; ``meta``: columns shared by every row.
    """
    from vlmsparse.bench.fidelity import dense_attention_stats, evaluate_dense_kernel, evaluate_plan
    from vlmsparse.methods import get_method

    rows = []
    date = _dt.date.today().isoformat()
    for layer in layers:
        q, k, v, visual = layer.q, layer.k, layer.v, layer.visual
        dense_ref, mass = dense_attention_stats(q, k, v)
        if backend == "triton":  # like for like: the dense output through the same kernel
            dense_out = evaluate_dense_kernel(get_method("dense").plan(q, k, visual), q, k, v)
        else:
            dense_out = dense_ref
        for name, method, config in settings:
            plan = get_method(method, **config).plan(q, k, visual)
            metrics = evaluate_plan(plan, q, k, v, dense_out, mass, backend)
            rows.append({
                **meta, "method": method, "setting": name, "layer": layer.layer, "seq_len": q.shape[2],
                **{key: round(value, 6) for key, value in metrics.items()}, "heads_q": q.shape[1],
                "heads_kv": k.shape[1], "head_dim": q.shape[3], "dtype": str(q.dtype).replace("torch.", ""),
                "backend": backend, "date": date,
            })
    return rows


def mean_rows(rows: Sequence[dict]) -> list[dict]:
    """Per (setting, sample) means over layers, as rows with ``layer = "mean"``."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["setting"], row["sample"], row["frames"]), []).append(row)
    out = []
    for group in groups.values():
        first = dict(group[0])
        for key in ("sparsity", "visual_sparsity", "rel_l2_error", "recall"):
            values = [float(r[key]) for r in group if r[key] == r[key]]  # NaN-free
            first[key] = round(sum(values) / len(values), 6) if values else float("nan")
        first["layer"] = "mean"
        out.append(first)
    return out
