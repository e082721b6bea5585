#!/bin/bash
# Kernel experiments in one GPU call: for each version given (a tag or commit, materialised first with
# `python notes/ab/variants.py REV ...` and carried as notes/ab/.variants), run the warp-specialized kernel's GPU
# tests with that version's kernels package in place of the tree's, then one same-run A/B (notes/ab/tail_ab.py) of
# the versions that passed against the tree's kernel. The tree's package is put back in every case.
#
#   bash notes/ab/try_variants.sh kernel-exp-full-spans [more ...]
#   env: LENGTHS (default "8192 32768"), WORKERS (pytest-xdist workers, default 12; 0 runs without xdist),
#        TEST_LIMIT / AB_LIMIT (seconds per test run / per A/B length), CSV_DIR (default $OUT or .), AB=0 skips the A/B
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TRITON_INTERPRET=${TRITON_INTERPRET:-0}
export VLMSPARSE_TEST_DEVICE=${VLMSPARSE_TEST_DEVICE:-cuda}
[ $# -gt 0 ] || { echo "usage: bash notes/ab/try_variants.sh REV [REV ...] (materialise them first: python notes/ab/variants.py REV ...)"; exit 2; }
for rev in "$@"; do
  [ -f "notes/ab/.variants/$rev/__init__.py" ] || { echo "notes/ab/.variants/$rev is missing: run python notes/ab/variants.py $rev first"; exit 2; }
done
keep=$(mktemp -d)
cp -r vlmsparse/kernels "$keep/kernels"
restore() { rm -rf vlmsparse/kernels && cp -r "$keep/kernels" vlmsparse/kernels; }
trap restore EXIT
xdist=()
[ "${WORKERS:-12}" != 0 ] && python -c "import xdist" 2>/dev/null && xdist=(-n "${WORKERS:-12}")
passed=()
for rev in "$@"; do
  restore
  cp "notes/ab/.variants/$rev/"*.py vlmsparse/kernels/
  echo "== $rev: tests/test_kernel_ws.py tests/test_pdl.py"
  if timeout -s KILL "${TEST_LIMIT:-180}" python -m pytest -q -x -p no:cacheprovider tests/test_kernel_ws.py tests/test_pdl.py \
      "${xdist[@]}" 2>&1 | tail -4; [ "${PIPESTATUS[0]}" = 0 ]; then
    passed+=("$rev")
  else
    echo "== $rev failed its tests: left out of the A/B"
  fi
done
restore
[ "${AB:-1}" = 0 ] && { echo "passed: ${passed[*]:-none}"; exit 0; }
[ ${#passed[@]} -gt 0 ] || { echo "no version passed its tests"; exit 1; }
for length in ${LENGTHS:-8192 32768}; do
  timeout -s KILL "${AB_LIMIT:-300}" python notes/ab/tail_ab.py "${passed[@]}" --device-time --quick --one-levels 1 2 4 8 0 \
    --lengths "$length" --csv "${CSV_DIR:-${OUT:-.}}/try_variants_$length.csv" 2>&1 | grep -v Warning
done
