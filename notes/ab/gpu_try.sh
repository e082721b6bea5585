#!/usr/bin/env bash
# Try kernel versions on a Hopper GPU in one call: each version's GPU tests of the warp-specialized kernel, then one
# same-run quick tail A/B (notes/ab/tail_ab.py, timed in --rounds rounds, 3 by default) against the tree's kernel of
# those that passed, and its verdict. Before the A/B, a run-to-run bit-equality check of those versions and the tree's
# (notes/ab/repeat_check.py, 8k, --repeats calls each; 0 leaves it out): a race shows there, where a single call may
# pass the tests.
#
#   bash notes/ab/gpu_try.sh [--lengths "8192 32768"] [--budget SECONDS] [--repeats N] [--rounds N] VERSION...
#
# VERSION: a folder name under notes/ab/.variants (materialise it here first: python notes/ab/variants.py TAG-or-COMMIT,
# then carry notes/ab/.variants with the run). Writes tests_<version>.txt, repeat.txt, tail_ab_quick.{csv,txt} and verdict.txt to
# $OUT (or ./gpu_try_out). pytest and pytest-xdist: installed from the wheels in .wheels/ where missing
# (pip download -d .wheels pytest pytest-xdist execnet iniconfig pluggy, and carry .wheels).
set -u
lengths="8192 32768"
budget=570
repeats=10
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --lengths) lengths=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) break ;;
  esac
done
usage='usage: bash notes/ab/gpu_try.sh [--lengths "8192 32768"] [--budget S] [--repeats N] [--rounds N] VERSION...'
[ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }
T0=$(date +%s)
OUT=${OUT:-$PWD/gpu_try_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 VLMSPARSE_TEST_DEVICE=cuda
[ -e vlmsparse/patches ] || ln -s ../patches vlmsparse/patches
python -c "import xdist" 2>/dev/null || pip install -q --no-deps .wheels/*.whl 2>&1 | tail -1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/device.txt"
ROOT=$PWD
passed=""
for name in "$@"; do
  var=notes/ab/.variants/$name
  [ -d "$var" ] || { echo "$name: no folder $var (materialise it with notes/ab/variants.py and carry it)" | tee -a "$OUT/tests.txt"; continue; }
  w=/tmp/gpu_try_$name
  rm -rf "$w" && mkdir -p "$w" && cp -r vlmsparse tests pyproject.toml "$w"/
  rm -rf "$w/vlmsparse/kernels" && cp -r "$var" "$w/vlmsparse/kernels"
  rm -f "$w/vlmsparse/patches" && ln -s "$ROOT/patches" "$w/vlmsparse/patches"
  # the tree's offline-compile test calls pyramid_ws.compile_for_sm90, which older versions lack (not their kernels)
  skip=()
  grep -q "def compile_for_sm90" "$var/pyramid_ws.py" || skip=(--deselect tests/test_kernel_ws.py::test_compiles_for_sm90_with_this_triton)
  (cd "$w" && PYTHONPATH=$w timeout 240 python -m pytest -q -p no:cacheprovider -n 4 tests/test_kernel_ws.py \
     tests/test_pdl.py ${skip[@]+"${skip[@]}"} > "$OUT/tests_$name.txt" 2>&1)
  rc=$?
  echo "$name rc=$rc $(tail -1 "$OUT/tests_$name.txt") [$(( $(date +%s) - T0 )) s]" | tee -a "$OUT/tests.txt"
  [ $rc -eq 0 ] && passed="$passed $name"
done
echo "passed:$passed" | tee -a "$OUT/tests.txt"
if [ -n "$passed" ] && [ "$repeats" -gt 0 ]; then
  # shellcheck disable=SC2086
  (cd notes/ab && PYTHONPATH=$ROOT:$ROOT/notes/ab timeout 150 python repeat_check.py $passed --lengths 8192 \
     --repeats "$repeats" > "$OUT/repeat.txt" 2>&1)
  echo "repeat_check rc=$? $(tail -1 "$OUT/repeat.txt") [$(( $(date +%s) - T0 )) s]" | tee -a "$OUT/tests.txt"
fi
left=$(( budget - ($(date +%s) - T0) ))
if [ -n "$passed" ] && [ $left -gt 60 ]; then
  # shellcheck disable=SC2086
  timeout $left python notes/ab/tail_ab.py $passed --device-time --no-diagonal-passes --quick --one-levels 8 0 \
    --rounds "$rounds" --lengths $lengths --csv "$OUT/tail_ab_quick.csv" > "$OUT/tail_ab_quick.txt" 2>&1
  echo "tail_ab rc=$? [$(( $(date +%s) - T0 )) s]" | tee -a "$OUT/tests.txt"
  python notes/ab/tail_verdict.py "$OUT/tail_ab_quick.csv" > "$OUT/verdict.txt" 2>&1
  tail -40 "$OUT/verdict.txt"
fi
grep -hE "^FAILED" "$OUT"/tests_*.txt 2>/dev/null | head -10
