#!/usr/bin/env bash
# Try kernel versions on a Hopper GPU in one call: each version's GPU tests of the warp-specialized kernel, then one
# same-run quick tail A/B (notes/ab/tail_ab.py, timed in --rounds rounds, 3 by default) against the tree's kernel of
# those that passed, and its verdict. Before the A/B, a run-to-run bit-equality check of those versions and the tree's
# (notes/ab/repeat_check.py, 8k, --repeats calls each; 0 leaves it out): a race shows there, where a single call may
# pass the tests. With --ab-first (calls with little device time) the A/B comes first, for every version, cut at
# --ab-limit seconds, then the tests while the budget lasts, and no repeat check. --families: the input families of
# PSA's plans in the A/B (tail_ab.py's --families; its quick default is medium alone). --smoke (with --ab-first): each
# version first runs notes/ab/smoke.py in a process of its own, cut at 150 s; a version that fails or hangs there
# is left out of the A/B, so that it cannot stop the A/B of the others.
#
#   bash notes/ab/gpu_try.sh [--lengths "8192 32768"] [--budget SECONDS] [--repeats N] [--rounds N]
#                            [--families "diffuse medium peaked"] [--ab-first] [--ab-limit SECONDS] [--smoke]
#                            VERSION...
#
# VERSION: a folder name under notes/ab/.variants (materialise it here first: python notes/ab/variants.py TAG-or-COMMIT,
# then carry notes/ab/.variants with the run). Writes tests_<version>.txt, repeat.txt, tail_ab_quick.{csv,txt} and verdict.txt to
# $OUT (or ./gpu_try_out). pytest and pytest-xdist: installed from the wheels in .wheels/ where missing
# (pip download -d .wheels pytest pytest-xdist execnet iniconfig pluggy, and carry .wheels).
# AB_EXTRA (environment): more flags for tail_ab.py, e.g. --build-in-call. EXTRA_TESTS: more test files to run
# with each version's kernels (a version's own tests: git show TAG:tests/FILE > tests/FILE first).
set -u
lengths="8192 32768"
budget=570
repeats=10
rounds=3
families=""
ab_first=0
ab_limit=330
smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --lengths) lengths=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --families) families=$2; shift 2 ;;
    --ab-first) ab_first=1; shift ;;
    --ab-limit) ab_limit=$2; shift 2 ;;
    --smoke) smoke=1; shift ;;
    *) break ;;
  esac
done
usage='usage: bash notes/ab/gpu_try.sh [--lengths "8192 32768"] [--budget S] [--repeats N] [--rounds N] [--families F]
       [--ab-first] [--ab-limit S] [--smoke] VERSION...'
[ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }
T0=$(date +%s)
OUT=${OUT:-$PWD/gpu_try_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 VLMSPARSE_TEST_DEVICE=cuda
[ -e vlmsparse/patches ] || ln -s ../patches vlmsparse/patches
python -c "import xdist" 2>/dev/null || pip install -q --no-deps .wheels/*.whl 2>&1 | tail -1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/device.txt"
ROOT=$PWD

# the same-run quick tail A/B of versions "$@" against the tree's kernel, cut at $1 seconds, and its verdict
ab() {
  local limit=$1
  shift
  # shellcheck disable=SC2086
  timeout "$limit" python notes/ab/tail_ab.py "$@" --device-time --no-diagonal-passes --quick --one-levels 8 0 \
    --rounds "$rounds" --lengths $lengths ${families:+--families $families} ${AB_EXTRA:-} \
    --csv "$OUT/tail_ab_quick.csv" \
    > "$OUT/tail_ab_quick.txt" 2>&1
  echo "tail_ab rc=$? [$(( $(date +%s) - T0 )) s]" | tee -a "$OUT/tests.txt"
  grep -h "^WARNING" "$OUT/tail_ab_quick.txt" | tee -a "$OUT/tests.txt"  # a version that is the tree's own code
  python notes/ab/tail_verdict.py "$OUT/tail_ab_quick.csv" > "$OUT/verdict.txt" 2>&1
  tail -40 "$OUT/verdict.txt"
}

# one version's GPU tests in a copy of the tree with its kernels, cut at $2 seconds; 0 where they passed
tests() {
  local name=$1 limit=$2 var=notes/ab/.variants/$1 w=/tmp/gpu_try_$1 rc
  [ -d "$var" ] || { echo "$name: no folder $var (materialise it with notes/ab/variants.py and carry it)" | tee -a "$OUT/tests.txt"; return 1; }
  rm -rf "$w" && mkdir -p "$w" && cp -r vlmsparse tests pyproject.toml "$w"/
  rm -rf "$w/vlmsparse/kernels" && cp -r "$var" "$w/vlmsparse/kernels"
  rm -f "$w/vlmsparse/patches" && ln -s "$ROOT/patches" "$w/vlmsparse/patches"
  # the tree's offline-compile test calls pyramid_ws.compile_for_sm90, which older versions lack (not their kernels)
  local skip=()
  grep -q "def compile_for_sm90" "$var/pyramid_ws.py" || skip=(--deselect tests/test_kernel_ws.py::test_compiles_for_sm90_with_this_triton)
  (cd "$w" && PYTHONPATH=$w timeout "$limit" python -m pytest -q -p no:cacheprovider -n 8 tests/test_kernel_ws.py \
     tests/test_pdl.py ${EXTRA_TESTS:-} ${skip[@]+"${skip[@]}"} > "$OUT/tests_$name.txt" 2>&1)
  rc=$?
  echo "$name rc=$rc $(tail -1 "$OUT/tests_$name.txt") [$(( $(date +%s) - T0 )) s]" | tee -a "$OUT/tests.txt"
  return $rc
}

if [ "$ab_first" -eq 1 ]; then
  if [ "$smoke" -eq 1 ]; then
    kept=()
    for name in "$@"; do
      (cd notes/ab && PYTHONPATH=$ROOT:$ROOT/notes/ab timeout 150 python smoke.py "$name" > "$OUT/smoke_$name.txt" 2>&1)
      rc=$?
      echo "smoke $name rc=$rc [$(( $(date +%s) - T0 )) s]" | tee -a "$OUT/tests.txt"
      grep -h "FAILED" "$OUT/smoke_$name.txt" | head -4 | tee -a "$OUT/tests.txt"
      [ $rc -eq 0 ] && kept+=("$name")
    done
    [ ${#kept[@]} -gt 0 ] || { echo "no version passed its smoke run" | tee -a "$OUT/tests.txt"; exit 1; }
    set -- "${kept[@]}"
    ab_limit=$(( ab_limit - ($(date +%s) - T0) ))
    [ "$ab_limit" -gt 0 ] || ab_limit=1  # timeout 0 would mean no limit at all
  fi
  ab "$ab_limit" "$@"
  for name in "$@"; do
    left=$(( budget - ($(date +%s) - T0) ))
    [ $left -gt 30 ] || break
    tests "$name" $(( left < 240 ? left : 240 ))
  done
else
  passed=""
  for name in "$@"; do
    tests "$name" 240 && passed="$passed $name"
  done
  echo "passed:$passed" | tee -a "$OUT/tests.txt"
  if [ -n "$passed" ] && [ "$repeats" -gt 0 ]; then
    # shellcheck disable=SC2086
    (cd notes/ab && PYTHONPATH=$ROOT:$ROOT/notes/ab timeout 150 python repeat_check.py $passed --lengths 8192 \
       --repeats "$repeats" > "$OUT/repeat.txt" 2>&1)
    echo "repeat_check rc=$? $(tail -1 "$OUT/repeat.txt") [$(( $(date +%s) - T0 )) s]" | tee -a "$OUT/tests.txt"
  fi
  left=$(( budget - ($(date +%s) - T0) ))
  # shellcheck disable=SC2086
  [ -n "$passed" ] && [ $left -gt 60 ] && ab "$left" $passed
fi
grep -hE "^FAILED" "$OUT"/tests_*.txt 2>/dev/null | head -10
