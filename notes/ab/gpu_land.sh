#!/usr/bin/env bash
# The numbers a kernel version lands with, in one GPU call: `python -m vlmsparse.bench kernel` (per-level marginal
# costs, tail overhead, plan + kernel against cuDNN, checked against the float64 reference) with the version's
# kernels in place of the tree's, then, in the time left, the full same-run tail A/B against the tree's kernel.
#
#   bash notes/ab/gpu_land.sh [--budget SECONDS] [--bench-only] VERSION
#
# VERSION: a folder under notes/ab/.variants (python notes/ab/variants.py TAG-or-COMMIT; carry notes/ab/.variants).
# Writes kernel/ (the bench's CSV), tail_ab.{csv,txt}, verdict.txt and log.txt to $OUT (or ./gpu_land_out).
set -u
budget=560
bench_share=2  # the bench's share of the budget: 1/2, or all of it with --bench-only
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) budget=$2; shift 2 ;;
    --bench-only) bench_share=1; shift ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: bash notes/ab/gpu_land.sh [--budget S] [--bench-only] VERSION" >&2; exit 2; }
name=$1
T0=$(date +%s)
OUT=${OUT:-$PWD/gpu_land_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
ROOT=$PWD
var=notes/ab/.variants/$name
[ -d "$var" ] || { echo "$name: no folder $var (materialise it with notes/ab/variants.py and carry it)" >&2; exit 2; }
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/device.txt"
w=/tmp/gpu_land_$name
rm -rf "$w" && mkdir -p "$w" && cp -r vlmsparse pyproject.toml "$w"/
rm -rf "$w/vlmsparse/kernels" && cp -r "$var" "$w/vlmsparse/kernels"
rm -f "$w/vlmsparse/patches" && ln -s "$ROOT/patches" "$w/vlmsparse/patches"
(cd "$w" && PYTHONPATH=$w timeout $(( budget / bench_share )) python -m vlmsparse.bench kernel --lengths 8192 32768 \
   --skip-random --methods psa xattention --out "$OUT/kernel" > "$OUT/kernel.txt" 2>&1)
echo "bench kernel rc=$? [$(( $(date +%s) - T0 )) s]" | tee -a "$OUT/log.txt"
tail -30 "$OUT/kernel.txt"
left=$(( budget - ($(date +%s) - T0) ))
if [ $bench_share -gt 1 ] && [ $left -gt 90 ]; then
  export PYTHONPATH=$ROOT
  [ -e vlmsparse/patches ] || ln -s ../patches vlmsparse/patches
  timeout $left python notes/ab/tail_ab.py "$name" --device-time --no-diagonal-passes --lengths 8192 32768 \
    --csv "$OUT/tail_ab.csv" > "$OUT/tail_ab.txt" 2>&1
  echo "tail_ab rc=$? [$(( $(date +%s) - T0 )) s]" | tee -a "$OUT/log.txt"
  python notes/ab/tail_verdict.py "$OUT/tail_ab.csv" > "$OUT/verdict.txt" 2>&1
  tail -30 "$OUT/verdict.txt"
fi
