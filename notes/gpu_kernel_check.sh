#!/usr/bin/env bash
# On a GPU machine, from the repository root, with OUT set to a folder for the outputs:
# the kernel tests on the GPU, the per-level marginal costs, plan + kernel timings, a planning profile and the
# time vs error frontier. Each step has its own time limit so that one slow step does not lose the others.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
VLMSPARSE_TEST_DEVICE=cuda TRITON_INTERPRET=0 timeout ${TEST_S:-150} python3 -m pytest -q -x \
  tests/test_kernel.py tests/test_kernel_parts.py 2>&1 | tail -4 | tee "$OUT/tests.log"
timeout ${KERNEL_S:-150} python3 -m vlmsparse.bench kernel --skip-random --lengths 8192 32768 \
  --methods ${METHODS:-psa xattention} --out "$OUT" 2>&1 | tee "$OUT/kernel.log" | grep -v "^L="
timeout ${PROFILE_S:-60} python3 notes/profile_plan.py --host psa > "$OUT/profile.txt" 2>&1
timeout ${PARETO_S:-240} python3 -m vlmsparse.bench pareto --lengths ${PARETO_LENGTHS:-16384 32768} \
  --seeds ${SEEDS:-0} --out "$OUT" 2>&1 | tee "$OUT/pareto.log" | grep -v "^L="
