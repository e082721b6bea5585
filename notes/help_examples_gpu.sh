#!/usr/bin/env bash
# On a GPU machine, from the repository root, with OUT set to a folder for the outputs: run every example that
# `python -m vlmsparse.bench <name> --help` and `python -m vlmsparse.eval --help` show (each in its own folder
# under $OUT, so run folders and results/ land there), then the demo on the GPU (Triton kernel, bfloat16).
# Each command has a time limit (EXAMPLE_S, default 60 s); one still running then counts as "ran, cut".
# Prints one line per command: exit status, seconds, the command.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
REPO=$PWD
python3 - > "$OUT/examples.txt" <<'PY'
import importlib
from vlmsparse.bench import SUBCOMMANDS
from vlmsparse.eval.cli import EXAMPLES as EVAL_EXAMPLES
texts = [getattr(importlib.import_module(m), "EXAMPLES", "") for m in SUBCOMMANDS.values()] + [EVAL_EXAMPLES]
for text in texts:
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("python -m vlmsparse.bench ") or line == "python -m vlmsparse.eval --demo":
            print(line)
PY
n=0
printf '%-6s %-7s %s\n' status seconds command | tee "$OUT/summary.txt"
while IFS= read -r cmd; do
  n=$((n + 1)); dir="$OUT/example-$n"; mkdir -p "$dir"
  start=$(date +%s)
  (cd "$dir" && timeout "${EXAMPLE_S:-60}" bash -c "${cmd/python /python3 }" > out.log 2>&1); rc=$?
  secs=$(( $(date +%s) - start ))
  [ "$rc" -eq 124 ] && rc="cut"
  printf '%-6s %-7s %s\n' "$rc" "$secs" "$cmd" | tee -a "$OUT/summary.txt"
  tail -3 "$dir/out.log" | sed 's/^/    /'
done < "$OUT/examples.txt"
