#!/bin/bash
# Where the warp-specialized kernel's warps stall: Nsight Compute on one call per configuration
# (notes/ab/ncu_profile.py), with the warp-state and per-instruction (source counter) sections, exported as text.
#
#   bash notes/ab/ncu_profile.sh [VERSION ...]     # VERSION: tags materialised by notes/ab/variants.py (carry
#                                                   # notes/ab/.variants): their one-level plans, with tail too
#   env: LENGTH (default 8192), OUT (default ./ncu_out), NCU (the ncu binary; found on PATH or under
#        /opt/nvidia/nsight-compute), LIMIT (seconds per configuration, default 120), ONLY (an extended regex:
#        run only the configurations whose name matches it)
#
# For each configuration NAME it writes OUT/NAME.ncu-rep, OUT/NAME_details.csv (every section's metrics),
# OUT/NAME_raw.csv (the raw metrics, the warp-state ratios among them) and OUT/NAME_sass.csv (per SASS instruction:
# its samples by stall reason), and prints notes/ab/ncu_stalls.py's summary of them. ncu leaves the clocks alone
# (--clock-control none), as the device's METHOD.md asks.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NCU=${NCU:-$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -1)}
[ -n "$NCU" ] && [ -x "$NCU" ] || { echo "ncu not found: set NCU=/path/to/ncu"; exit 2; }
OUT=${OUT:-./ncu_out}
mkdir -p "$OUT"
L=${LENGTH:-8192}
configs=(
  "level1|--plan level1"
  "level8|--plan level8"
  "level8_tail_sums_given|--plan level8 --tail --sums-given"
  "level4|--plan level4"
  "sinkdiag|--plan sinkdiag"
  "sinkdiag_tail_sums_given|--plan sinkdiag --tail --sums-given"
  "random10|--plan random10"
  "random10_tail|--plan random10 --tail"
)
for v in "$@"; do
  [ -f "notes/ab/.variants/$v/__init__.py" ] || { echo "notes/ab/.variants/$v is missing: python notes/ab/variants.py $v"; exit 2; }
  configs+=("${v}_level8|--plan level8 --version $v" "${v}_level4|--plan level4 --version $v"
            "${v}_level1|--plan level1 --version $v" "${v}_level8_tail|--plan level8 --tail --version $v"
            "${v}_sinkdiag_tail|--plan sinkdiag --tail --version $v")
done
"$NCU" --version | tail -1
for c in "${configs[@]}"; do
  name=${c%%|*}_$L
  [ -n "${ONLY:-}" ] && ! [[ ${c%%|*} =~ ${ONLY} ]] && continue
  args=${c#*|}
  echo "== $name: $args"
  # shellcheck disable=SC2086
  timeout -s KILL "${LIMIT:-120}" "$NCU" --clock-control none --kernel-name regex:pyramid_ws_fwd --launch-skip 3 \
    --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    --section SourceCounters --section ComputeWorkloadAnalysis --section InstructionStats --section LaunchStats \
    -f -o "$OUT/$name" python notes/ab/ncu_profile.py $args --length "$L" --warmup 3 2>&1 | grep -v "^==PROF==" | tail -3
  [ -f "$OUT/$name.ncu-rep" ] || { echo "   no report"; continue; }
  "$NCU" --import "$OUT/$name.ncu-rep" --page details --csv > "$OUT/${name}_details.csv" 2>&1
  "$NCU" --import "$OUT/$name.ncu-rep" --page raw --csv > "$OUT/${name}_raw.csv" 2>&1
  "$NCU" --import "$OUT/$name.ncu-rep" --page source --csv --print-source sass > "$OUT/${name}_sass.csv" 2>&1 \
    || echo "   (no per-instruction export: $(head -c 200 "$OUT/${name}_sass.csv"))"
  python notes/ab/ncu_stalls.py "$OUT/$name" --top 12 2>&1 | head -40
done
