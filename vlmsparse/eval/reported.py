"""Reported Video-MME numbers the harness prints beside a user's own rows.

Source: the PSA paper (Pyramid Sparse Attention for Efficient Video Understanding and Generation,
arXiv 2512.04025), its Video-MME table for Qwen2.5-VL-7B-Instruct without subtitles: accuracy on the short,
medium and long splits and overall, and each method's reported sparsity. These are the paper's numbers,
not measurements of this project.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

REPORTED_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
REPORTED_SOURCE = "PSA paper (arXiv 2512.04025), Video-MME w/o subtitles, Qwen2.5-VL-7B"


@dataclass(frozen=True)
class ReportedRow:
    """One reported row: the method as this project names it, the paper's label, accuracies, sparsity."""

    method: str
    label: str
    short: float
    medium: float
    long: float
    overall: float
    sparsity: float


PSA_PAPER_VIDEOMME: tuple[ReportedRow, ...] = (
    ReportedRow("dense", "Full attention", 0.752, 0.663, 0.537, 0.651, 0.0),
    ReportedRow("xattention", "XAttention", 0.748, 0.661, 0.544, 0.651, 0.58),
    ReportedRow("sparge", "SpargeAttention", 0.749, 0.663, 0.539, 0.650, 0.37),
    ReportedRow("psa", "PSA", 0.748, 0.673, 0.542, 0.654, 0.65),
)


def reported_for(method: str) -> ReportedRow | None:
    """The paper's row for ``method`` (``dense``, ``xattention``, ``sparge``, ``psa``), if it has one."""
    for row in PSA_PAPER_VIDEOMME:
        if row.method == method:
            return row
    return None


def _fmt(value) -> str:
    if value in (None, ""):
        return "-"
    try:
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return str(value)


def comparison_table(rows: Sequence[dict]) -> str:
    """Plain-text table: the paper's rows, then the given leaderboard rows (dicts with LEADERBOARD_COLUMNS)."""
    header = ("source", "method", "setting", "short", "medium", "long", "overall", "sparsity", "n", "p(right)")
    lines: list[tuple[str, ...]] = [header]
    for paper in PSA_PAPER_VIDEOMME:
        lines.append(
            ("paper", paper.label, "reported", _fmt(paper.short), _fmt(paper.medium), _fmt(paper.long), _fmt(paper.overall),
             _fmt(paper.sparsity), "2700", "-")
        )
    for row in rows:
        lines.append(
            (
                "this run",
                str(row.get("method", "")),
                str(row.get("setting", "")),
                _fmt(row.get("acc_short")),
                _fmt(row.get("acc_medium")),
                _fmt(row.get("acc_long")),
                _fmt(row.get("acc_overall")),
                _fmt(row.get("sparsity")),
                str(row.get("n_overall", "")),
                _fmt(row.get("answer_prob")),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    model_note = f"Rows marked paper are reported numbers: {REPORTED_SOURCE}."
    models = sorted({str(r.get("model", "")) for r in rows if r.get("model")})
    if models:
        model_note += f" Rows marked this run: {', '.join(models)}."
    return "\n".join([*out, model_note])
