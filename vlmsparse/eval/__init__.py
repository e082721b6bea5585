"""The evaluation harness: ``python -m vlmsparse.eval --bench videomme --method psa --data-dir ...``.

Modules, one idea each: ``videomme`` (questions and video files), ``frames`` (decord + Qwen2.5-VL's sampling
rules), ``prompts`` and ``answers`` (lmms-eval's Video-MME prompt and answer extraction), ``model_io`` (load and
generate), ``records`` (resumable JSONL), ``aggregate`` (scores), ``leaderboard`` (CSV rows), ``reference``
(the PSA paper's numbers), ``runner`` (the run), ``registry`` (benchmarks by name) and ``cli``.
"""

from .leaderboard import LEADERBOARD_COLUMNS, append_row

__all__ = ["LEADERBOARD_COLUMNS", "append_row"]
