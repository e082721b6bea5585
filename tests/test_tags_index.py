"""notes/tags.tsv: well-formed rows, and every tag name the docs refer to has one (no git history needed)."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "notes" / "tags.tsv"
# the index's own script (notes/ab/tags.py: what counts as a tag name, which docs name them); it calls git only in
# its --apply and --check paths, which the tests leave alone
_spec = importlib.util.spec_from_file_location("notes_ab_tags", ROOT / "notes" / "ab" / "tags.py")
tags = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tags)


def _rows() -> list[list[str]]:
    lines = INDEX.read_text().splitlines()
    assert lines[0].split("\t")[:2] == ["name", "commit"]
    return [line.split("\t") for line in lines[1:]]


def test_every_row_has_a_name_a_commit_and_how_it_was_found():
    rows = _rows()
    assert rows
    for row in rows:
        assert len(row) == 3, row
        name, commit, how = row
        assert name and how.strip(), row
        assert commit == "-" or re.fullmatch(r"[0-9a-f]{40}", commit), row
    names = [row[0] for row in rows]
    assert len(names) == len(set(names)), "a name indexed twice"


def test_every_tag_name_in_the_docs_is_indexed():
    named = tags.doc_names()
    assert named
    assert sorted(named - {row[0] for row in _rows()}) == []
