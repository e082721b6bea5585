"""What a calibration writes: the run configs (TOML), the profile / choice / held-out CSVs, a PNG, a summary.

Files under the output folder:

- ``calibrated.toml``: the per-layer (per-head) setting, a run config for ``vlmsparse.patch(config_file=...)``,
  ``python -m vlmsparse.eval --config`` and the lmms-eval plugin's ``config_file=``;
- ``global.toml``: the one setting for every layer that reaches the same target on the calibration samples;
- ``profile.csv``: per layer, head (``all`` = the whole layer) and knob value: sparsity, relative L2 error and
  recall (means over the calibration samples) with their standard deviations across samples;
- ``choice.csv``: per layer (or head): the chosen knob, its predicted sparsity and error, the spread across
  samples of the knob each sample alone would get and of the sparsity the chosen knob gives each sample, and the
  global setting's figures for the same layer;
- ``heldout.csv``: per setting, held-out sample and layer: measured sparsity, error, recall (``all`` rows: overall);
- ``summary.json`` and ``calibration.png`` (per-layer sparsity chosen, per-layer error, per-layer error curves).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vlmsparse.methods import MethodConfig

from .choose import curve_at
from .run import Calibration, unit_curves

__all__ = ["toml_text", "write_configs", "write_reports", "summary_table"]


# -- TOML ----------------------------------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write a {type(value).__name__} to TOML")


def toml_text(doc: dict[str, Any], header: str = "") -> str:
    """A TOML document: plain keys first, then ``[tables]``, then ``[[arrays of tables]]`` (one level deep)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    plain = {k: v for k, v in doc.items() if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict))}
    lines += [f"{k} = {_toml_value(v)}" for k, v in plain.items()]
    for key, table in doc.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for key, tables in doc.items():
        if isinstance(tables, list) and tables and isinstance(tables[0], dict):
            for table in tables:
                lines += ["", f"[[{key}]]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _group_overrides(entries: list[tuple[int, tuple[int, ...] | None, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Merge ``(layer, heads, fields)`` entries with the same heads and fields into one table each."""
    groups: dict[str, dict[str, Any]] = {}
    for layer, heads, fields in entries:
        key = json.dumps([heads, fields], sort_keys=True)
        if key not in groups:
            groups[key] = {"layers": [], **({"heads": list(heads)} if heads is not None else {}), **fields}
        groups[key]["layers"].append(layer)
    return list(groups.values())


def _target_text(cal: Calibration) -> str:
    spec = cal.spec
    return f"sparsity {spec.target_sparsity}" if spec.target_sparsity is not None else f"error {spec.target_error}"


def write_configs(cal: Calibration, base: MethodConfig, out: Path) -> dict[str, Path]:
    """Write ``calibrated.toml`` and ``global.toml`` under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    spec, knob = cal.spec, cal.knob
    values = cal.values
    knobs = cal.layer_knobs()
    entries: list[tuple[int, tuple[int, ...] | None, dict[str, Any]]] = []
    for layer in range(cal.num_layers):
        if not spec.per_head:
            entries.append((layer, None, knob.fields(knobs[layer], base)))
            continue
        fields = [knob.fields(v, base) for v in knobs[layer]]
        keys = [json.dumps(f, sort_keys=True) for f in fields]
        common = Counter(keys).most_common(1)[0][0]
        entries.append((layer, None, json.loads(common)))
        for key in dict.fromkeys(keys):
            if key != common:
                heads = tuple(h for h, k in enumerate(keys) if k == key)
                entries.append((layer, heads, json.loads(key)))
    cost, err, blocks = unit_curves(cal.profile, spec.per_head)
    predicted = 1.0 - float(cal.choice.cost.sum()) / float(blocks.sum())
    info = {
        "method": spec.method, "knob": knob.name, "target": _target_text(cal), "per_head": spec.per_head,
        "samples": spec.samples, "grid": [float(v) for v in values], "source": cal.source,
        "predicted_sparsity": round(predicted, 4),
        "predicted_rms_error": round(math.sqrt(float(cal.choice.err.sum()) / cal.num_layers), 4),
        "global_knob": round(cal.global_knob, 4), "date": _dt.date.today().isoformat(),
        **{k: v for k, v in spec.info.items() if v is not None},
    }
    common = {"method": spec.method}
    run = dict(spec.base_run)
    target = _target_text(cal)
    name = spec.base_name or spec.method
    calibrated = {
        "name": f"{name}-calibrated", "description": f"{spec.method} per-{'head' if spec.per_head else 'layer'} "
        f"{knob.name} calibrated for {target} ({cal.source})", **common, "num_layers": cal.num_layers,
        "method_config": dict(spec.base_fields), **({"run": run} if run else {}), "calibration": info,
        "layer_overrides": _group_overrides(entries),
    }
    glob = {
        "name": f"{name}-global", "description": f"{spec.method} one {knob.name} = {cal.global_knob:.4f} for every "
        f"layer, aimed at {target} on the same calibration samples", **common,
        "method_config": {**spec.base_fields, **knob.fields(cal.global_knob, base)}, **({"run": run} if run else {}),
        "calibration": {**info, "per_head": False},
    }
    header = "Written by python -m vlmsparse.calibrate; [calibration] records how (the planners do not read it)."
    paths = {"calibrated": out / "calibrated.toml", "global": out / "global.toml"}
    paths["calibrated"].write_text(toml_text(calibrated, header))
    paths["global"].write_text(toml_text(glob, header))
    return paths


# -- CSVs, summary, plot -------------------------------------------------------------------------------------
def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def _r(x: float) -> float:
    return round(float(x), 6) if math.isfinite(float(x)) else float("nan")


def _profile_rows(cal: Calibration) -> list[dict[str, Any]]:
    p, values = cal.profile, cal.values
    rows = []
    for layer in range(cal.num_layers):
        for head in ["all", *range(cal.heads)]:
            sel = slice(None) if head == "all" else slice(head, head + 1)
            cost = p.cost[:, layer, :, sel].sum(-1)  # [S, G]
            blocks = p.blocks[:, layer, sel].sum(-1)[:, None]
            err = p.err[:, layer, :, sel].sum(-1)
            norm = np.maximum(p.norm[:, layer, sel].sum(-1)[:, None], 1e-300)
            kept = p.kept[:, layer, :, sel].sum(-1)
            n_rows = p.rows[:, layer, sel].sum(-1)[:, None]
            sp, e, rec = 1 - cost / blocks, np.sqrt(err / norm), kept / n_rows
            for g, value in enumerate(values):
                rows.append({
                    "layer": layer, "head": head, "knob": cal.knob.name, "knob_value": float(value),
                    "sparsity": _r(1 - cost[:, g].sum() / blocks.sum()), "sparsity_std": _r(sp[:, g].std()),
                    "error": _r(e[:, g].mean()), "error_std": _r(e[:, g].std()),
                    "recall": _r(kept[:, g].sum() / n_rows.sum()), "recall_std": _r(rec[:, g].std()),
                    "samples": p.samples,
                })
    return rows


def _choice_rows(cal: Calibration) -> list[dict[str, Any]]:
    cost, err, blocks = unit_curves(cal.profile, cal.spec.per_head)
    values = cal.values
    rows = []
    for u in range(len(blocks)):
        layer, head = (divmod(u, cal.heads) if cal.spec.per_head else (u, "all"))
        ks = cal.per_sample_knob[:, u]
        ks = ks[np.isfinite(ks)]
        g_cost = curve_at(values, cost[u], cal.global_knob)
        rows.append({
            "layer": layer, "head": head, "knob": cal.knob.name, "knob_value": _r(cal.choice.knob[u]),
            "sparsity": _r(1 - cal.choice.cost[u] / blocks[u]), "sq_error": _r(cal.choice.err[u]),
            "knob_samples_mean": _r(ks.mean()) if ks.size else "", "knob_samples_std": _r(ks.std()) if ks.size else "",
            "knob_samples_min": _r(ks.min()) if ks.size else "", "knob_samples_max": _r(ks.max()) if ks.size else "",
            "sparsity_samples_std": _r(np.nanstd(cal.per_sample_sparsity[:, u])),
            "global_knob_value": _r(cal.global_knob), "global_sparsity": _r(1 - g_cost / blocks[u]),
            "global_sq_error": _r(curve_at(values, err[u], cal.global_knob)),
        })
    return rows


def _heldout_rows(cal: Calibration) -> list[dict[str, Any]]:
    h = cal.heldout
    if h is None:
        return []
    rows = []
    sq = h.layer_sq_error()  # [K, L, P]
    summary = h.summary()
    for p, name in enumerate(cal.heldout_names):
        rows.append({"setting": name, "sample": "all", "layer": "all", "sparsity": _r(summary["sparsity"][p]),
                     "error": _r(summary["mean_error"][p]), "rms_error": _r(summary["rms_error"][p]),
                     "recall": _r(summary["recall"][p])})
        for s in range(h.samples):
            for layer in range(cal.num_layers):
                rows.append({
                    "setting": name, "sample": cal.spec.samples + s, "layer": layer,
                    "sparsity": _r(1 - h.cost[s, layer, p].sum() / h.blocks[s, layer].sum()),
                    "error": _r(math.sqrt(sq[s, layer, p])), "rms_error": "",
                    "recall": _r(h.kept[s, layer, p].sum() / h.rows[s, layer].sum()),
                })
    return rows


def _layer_view(cal: Calibration) -> dict[str, np.ndarray]:
    """Per layer: calibrated and global sparsity / error predicted on the calibration samples."""
    cost, err, blocks = unit_curves(cal.profile, cal.spec.per_head)
    values = cal.values
    g_cost = np.array([curve_at(values, cost[u], cal.global_knob) for u in range(len(blocks))])
    g_err = np.array([curve_at(values, err[u], cal.global_knob) for u in range(len(blocks))])
    c_cost, c_err = cal.choice.cost, cal.choice.err
    if cal.spec.per_head:
        shape = (cal.num_layers, cal.heads)
        blocks, g_cost, g_err, c_cost, c_err = (x.reshape(shape).sum(1) for x in (blocks, g_cost, g_err, c_cost, c_err))
    return {
        "calibrated_sparsity": 1 - c_cost / blocks, "global_sparsity": 1 - g_cost / blocks,
        "calibrated_error": np.sqrt(c_err), "global_error": np.sqrt(g_err),
    }


def summary_dict(cal: Calibration) -> dict[str, Any]:
    """The numbers a calibration ends with (also ``summary.json``)."""
    view = _layer_view(cal)
    cost, err, blocks = unit_curves(cal.profile, cal.spec.per_head)
    values = cal.values
    total = float(blocks.sum())
    g_cost = sum(curve_at(values, cost[u], cal.global_knob) for u in range(len(blocks)))
    knob_std = np.nanstd(cal.per_sample_knob, axis=0) if cal.profile.samples > 1 else np.zeros(len(blocks))
    sp_std = np.nanstd(cal.per_sample_sparsity, axis=0)
    out: dict[str, Any] = {
        "method": cal.spec.method, "knob": cal.knob.name, "target": _target_text(cal), "per_head": cal.spec.per_head,
        "source": cal.source, "samples": cal.spec.samples, "holdout": cal.spec.holdout, "layers": cal.num_layers,
        "calibration": {
            "calibrated": {"sparsity": 1 - float(cal.choice.cost.sum()) / total,
                           "rms_error": math.sqrt(float(cal.choice.err.sum()) / cal.num_layers),
                           "mean_error": float(view["calibrated_error"].mean())},
            "global": {"knob": cal.global_knob, "sparsity": 1 - float(g_cost) / total,
                       "rms_error": math.sqrt(float((view["global_error"] ** 2).sum()) / cal.num_layers),
                       "mean_error": float(view["global_error"].mean())},
        },
        "stability": {
            "knob_std_median": float(np.nanmedian(knob_std)) if np.isfinite(knob_std).any() else None,
            "knob_std_max": float(np.nanmax(knob_std)) if np.isfinite(knob_std).any() else None,
            "unit_sparsity_std_median": float(np.nanmedian(sp_std)),
            "unit_sparsity_std_max": float(np.nanmax(sp_std)),
            "samples_that_reach_target_alone": int(np.isfinite(cal.per_sample_knob).all(1).sum()),
        },
        "files": {k: str(v) for k, v in cal.configs.items()},
    }
    if cal.heldout is not None:
        s = cal.heldout.summary()
        out["heldout"] = {
            name: {"sparsity": float(s["sparsity"][p]), "rms_error": float(s["rms_error"][p]),
                   "mean_error": float(s["mean_error"][p]), "recall": float(s["recall"][p])}
            for p, name in enumerate(cal.heldout_names)
        }
    return out


def summary_table(summary: dict[str, Any]) -> str:
    """A short printable table of a calibration's outcome."""
    held = summary.get("heldout", {})
    names = list(dict.fromkeys(["calibrated", "global", *held]))
    labels = {name: name if name != "global" else
              f"global ({summary['knob']} {summary['calibration']['global']['knob']:.3f})" for name in names}
    width = max(26, *(len(label) for label in labels.values()))
    lines = [
        f"calibration: {summary['method']} {summary['knob']}, target {summary['target']}, "
        f"{'per head' if summary['per_head'] else 'per layer'}, {summary['layers']} layers, "
        f"{summary['samples']} samples (+{summary['holdout']} held out); {summary['source']}",
        f"{'setting':<{width}} {'calib sparsity':>14} {'calib rms err':>13} {'held-out sparsity':>17} "
        f"{'held-out rms err':>16} {'mean err':>9} {'recall':>7}",
    ]

    def f(d, key, cells):
        return f"{d[key]:>{cells}.4f}" if key in d else f"{'-':>{cells}}"

    for name in names:
        c = summary["calibration"].get(name, {})
        h = held.get(name, {})
        lines.append(
            f"{labels[name]:<{width}} {f(c, 'sparsity', 14)} {f(c, 'rms_error', 13)} {f(h, 'sparsity', 17)} "
            f"{f(h, 'rms_error', 16)} {f(h, 'mean_error', 9)} {f(h, 'recall', 7)}"
        )
    st = summary["stability"]
    if st["knob_std_median"] is not None:
        lines.append(
            f"input stability: std across samples of each unit's own best {summary['knob']}: median "
            f"{st['knob_std_median']:.3f}, max {st['knob_std_max']:.3f}; of its sparsity at the calibrated knob: "
            f"median {st['unit_sparsity_std_median']:.3f}, max {st['unit_sparsity_std_max']:.3f}"
        )
    return "\n".join(lines)


def _plot(cal: Calibration, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = _layer_view(cal)
    layers = np.arange(cal.num_layers)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    ax.bar(layers - 0.2, view["calibrated_sparsity"], width=0.4, label="calibrated")
    ax.bar(layers + 0.2, view["global_sparsity"], width=0.4, label=f"global ({cal.knob.name} {cal.global_knob:.3f})")
    ax.set(xlabel="layer", ylabel="sparsity", title=f"per-layer sparsity chosen (target {_target_text(cal)})")
    ax.legend()
    ax = axes[1]
    ax.plot(layers, view["calibrated_error"], "o-", label="calibrated")
    ax.plot(layers, view["global_error"], "s--", label="global")
    ax.set(xlabel="layer", ylabel="relative L2 error", title="per-layer attention error (calibration samples)")
    ax.legend()
    ax = axes[2]
    p = cal.profile
    sp = 1 - p.cost.sum((0, 3)) / p.blocks.sum((0, 2))[:, None]  # [L, G]
    e = np.sqrt(p.layer_sq_error()).mean(0)  # [L, G]
    cmap = plt.get_cmap("viridis")
    for layer in layers:
        ax.plot(sp[layer], e[layer], "-", color=cmap(layer / max(1, cal.num_layers - 1)), lw=1)
        ax.plot(view["calibrated_sparsity"][layer], view["calibrated_error"][layer], "o",
                color=cmap(layer / max(1, cal.num_layers - 1)))
    ax.set(xlabel="layer sparsity", ylabel="relative L2 error",
           title=f"per-layer error curves over {cal.knob.name} (dots: chosen)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(cal: Calibration, out: Path) -> dict[str, Any]:
    """Write the CSVs, ``summary.json`` and ``calibration.png`` under ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "profile.csv", _profile_rows(cal))
    _write_csv(out / "choice.csv", _choice_rows(cal))
    if cal.heldout is not None:
        _write_csv(out / "heldout.csv", _heldout_rows(cal))
    summary = summary_dict(cal)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(cal, out / "calibration.png")
    return summary
