#!/usr/bin/env bash
# Kernel versions on a Hopper GPU in one short call, the timing first: a same-run quick tail A/B against the tree's
# kernel (notes/ab/tail_ab.py at 8k, PSA's plans on three input families) and its verdict, then each version's GPU
# tests of the warp-specialized kernel (tests/test_kernel_ws.py, tests/test_pdl.py) while time is left. For calls
# with little device time: gpu_try.sh runs the tests first and the A/B only for versions that passed.
#
#   bash notes/ab/gpu_ab_first.sh [--budget SECONDS] [--rounds N] [--ab-limit SECONDS] VERSION...
#
# VERSION: a folder under notes/ab/.variants (python notes/ab/variants.py TAG, then carry notes/ab/.variants and
# .wheels, the pytest and pytest-xdist wheels). Writes ab.csv, ab.txt, verdict.txt, tests_<version>.txt and
# tests.txt to $OUT/r, packs them into $OUT/all.tgz and copies verdict.txt, ab.csv and tests.txt to $OUT.
set -u
budget=560
rounds=3
ab_limit=330
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) budget=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --ab-limit) ab_limit=$2; shift 2 ;;
    *) break ;;
  esac
done
usage='usage: bash notes/ab/gpu_ab_first.sh [--budget S] [--rounds N] [--ab-limit S] VERSION...'
[ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }
O=${OUT:-$PWD/gpu_try_out}
mkdir -p "$O/r"
T0=$(date +%s)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
[ -e vlmsparse/patches ] || ln -s ../patches vlmsparse/patches
python -c "import xdist" 2>/dev/null || pip install -q --no-deps .wheels/*.whl 2>&1 | tail -1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$O/r/device.txt"
timeout "$ab_limit" python notes/ab/tail_ab.py "$@" --device-time --no-diagonal-passes --quick --one-levels 8 0 \
  --rounds "$rounds" --lengths 8192 --families diffuse medium peaked --csv "$O/r/ab.csv" > "$O/r/ab.txt" 2>&1
echo "tail_ab rc=$? [$(( $(date +%s) - T0 )) s]"
python notes/ab/tail_verdict.py "$O/r/ab.csv" > "$O/r/verdict.txt" 2>&1
for name in "$@"; do
  left=$(( budget - ($(date +%s) - T0) ))
  [ "$left" -gt 30 ] || break
  w=/tmp/gpu_ab_$name
  rm -rf "$w" && mkdir -p "$w" && cp -r vlmsparse tests pyproject.toml "$w"/
  rm -rf "$w/vlmsparse/kernels" && cp -r "notes/ab/.variants/$name" "$w/vlmsparse/kernels"
  rm -f "$w/vlmsparse/patches" && ln -s "$PWD/patches" "$w/vlmsparse/patches"
  (cd "$w" && PYTHONPATH=$w VLMSPARSE_TEST_DEVICE=cuda timeout $(( left < 120 ? left : 120 )) python -m pytest -q \
     -p no:cacheprovider -n 8 tests/test_kernel_ws.py tests/test_pdl.py > "$O/r/tests_$name.txt" 2>&1)
  echo "$name tests rc=$? $(tail -1 "$O/r/tests_$name.txt") [$(( $(date +%s) - T0 )) s]" | tee -a "$O/r/tests.txt"
done
grep -h "^FAILED" "$O"/r/tests_*.txt 2>/dev/null | head
(cd "$O/r" && tar czf ../all.tgz . && cp verdict.txt ab.csv tests.txt .. 2>/dev/null)
tail -50 "$O/r/verdict.txt"
