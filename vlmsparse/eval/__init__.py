"""The evaluation harness: ``python -m vlmsparse.eval --bench videomme --method psa --data-dir ...``.

Modules, one idea each: ``videomme`` (questions and video files), ``frames`` (decord + Qwen2.5-VL's sampling
rules), ``prompts`` and ``answers`` (lmms-eval's Video-MME prompt and answer extraction), ``model_io`` (load and
generate), ``records`` (resumable JSONL, safe for several processes), ``record_fields`` (what a whole record
holds), ``locks`` (run-folder locks and per-video claims), ``errors`` (errors a user can fix), ``aggregate``
(scores), ``leaderboard`` (the row type and CSVs), ``reported`` (the PSA paper's reported numbers), ``runner``
(the run), ``benchmarks`` (benchmarks by name), ``plots`` (PNG figures of a run folder), ``synthetic_videomme`` (a generated Video-MME-shaped dataset), ``demo``
(``--demo``: the main job on that dataset) and ``cli``.
"""

from .leaderboard import LEADERBOARD_COLUMNS, LeaderboardRow, append_row

__all__ = ["LEADERBOARD_COLUMNS", "LeaderboardRow", "append_row"]
