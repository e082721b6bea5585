"""The git tags the notes name, made again from notes/tags.tsv (a copy of the repository carries no tags).

notes/tags.tsv has one row per tag name that README.md and notes/*.md refer to: the name, the full commit whose
tree holds that version's ``vlmsparse/kernels`` (``-`` where it is not in this history, e.g. a branch-only
experiment) and how the commit was found.

    python notes/ab/tags.py --apply   # make the missing tags (lightweight, local), print each one made
    python notes/ab/tags.py --check   # names in the docs missing from the index, rows whose commit git lacks
"""

import argparse
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
INDEX = ROOT / "notes" / "tags.tsv"
DOCS = [ROOT / "README.md", *sorted((ROOT / "notes").glob("*.md"))]
NAME = re.compile(r"`((?:kernel|antidiagonal|prefix)-[a-z0-9][a-z0-9.-]*[a-z0-9])`")


def read_index(path: pathlib.Path = INDEX) -> list[tuple[str, str, str]]:
    """The rows of the index (name, commit or ``-``, how it was found), header left out."""
    return [tuple(line.split("\t", 2)) for line in path.read_text().splitlines()[1:] if line.strip()]


def doc_names() -> set[str]:
    """Tag names the docs refer to in backticks."""
    return {name for doc in DOCS for name in NAME.findall(doc.read_text())}


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def is_commit(rev: str) -> bool:
    return git("rev-parse", "--verify", "--quiet", rev + "^{commit}").returncode == 0


def apply(rows) -> int:
    made = 0
    for name, commit, _ in rows:
        if commit == "-" or git("rev-parse", "--verify", "--quiet", "refs/tags/" + name).returncode == 0:
            continue
        if not is_commit(commit):
            print(f"skipped {name}: commit {commit} is not in this history", file=sys.stderr)
            continue
        result = git("tag", name, commit)
        if result.returncode:
            print(f"skipped {name}: {result.stderr.strip()}", file=sys.stderr)
            continue
        print(f"tagged {name} {commit[:10]}")
        made += 1
    print(f"{made} tags made")
    return 0


def check(rows) -> int:
    indexed = {name for name, _, _ in rows}
    missing = sorted(doc_names() - indexed)
    for name in missing:
        print(f"not in the index: {name}")
    absent = [(name, commit) for name, commit, _ in rows if commit != "-" and not is_commit(commit)]
    for name, commit in absent:
        print(f"commit not in this history: {name} {commit}")
    resolved = sum(commit != "-" for _, commit, _ in rows)
    print(f"{len(rows)} names indexed, {resolved} with a commit; {len(missing)} missing, {len(absent)} absent")
    return 1 if missing or absent else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--apply", action="store_true", help="make the index's tags that git does not have yet")
    mode.add_argument("--check", action="store_true", help="names missing from the index, commits git lacks")
    args = p.parse_args()
    rows = read_index()
    sys.exit(apply(rows) if args.apply else check(rows))


if __name__ == "__main__":
    main()
