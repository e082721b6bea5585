"""The lmms-eval leaderboard exporter reads lmms-eval's logs with plain Python: it runs where lmms-eval is not
installed (the plugin's own test, which needs lmms-eval, is in test_lmms_eval.py)."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.fixture
def without_lmms_eval(monkeypatch):
    """Imports of lmms_eval fail, and the integration modules are imported afresh."""
    monkeypatch.setitem(sys.modules, "lmms_eval", None)
    for name in [n for n in sys.modules if n.startswith("vlmsparse.integrations")]:
        monkeypatch.delitem(sys.modules, name)


def test_the_exporter_needs_no_lmms_eval_and_says_what_is_wrong(without_lmms_eval, tmp_path, capsys):
    exporter = importlib.import_module("vlmsparse.integrations.lmms_eval_leaderboard")
    assert exporter.main([str(tmp_path / "nowhere")]) == 2
    assert "is not an lmms-eval results file or folder" in capsys.readouterr().err
    assert exporter.main([str(tmp_path)]) == 2
    assert "no lmms-eval *_results.json under" in capsys.readouterr().err
    summary = exporter.summarize_records([{"sparsity": 0.5, "prefill_s": 1.0, "device": "cpu"}, {"sparsity": 0.3}])
    assert summary["requests"] == 2 and summary["sparsity"] == pytest.approx(0.4) and summary["device"] == "cpu"
