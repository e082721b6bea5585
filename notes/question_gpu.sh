#!/usr/bin/env bash
# On a GPU machine, from the repository root, with OUT set to a folder for the outputs: the segment kernel's
# tests on the GPU, `bench question` (vision tower, decoder prefill, generation per setting at 24k, 12k and 48k
# visual tokens on a 7B-shaped model) and `bench decode` (decord on this machine's CPUs). Each step has its own
# time limit so that one slow step does not lose the others. Optional: WHEEL=<decord wheel> (installed to
# /tmp/site when decord is missing), CLIP=<video file> to decode (a synthetic clip is written otherwise).
set -o pipefail
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# an editable install maps vlmsparse.patches to patches/ (pyproject package-dir); a plain PYTHONPATH needs the link
[ -e vlmsparse/patches ] || ln -s ../patches vlmsparse/patches
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv; nproc
  VLMSPARSE_TEST_DEVICE=cuda timeout ${TEST_S:-45} python3 -m pytest -q -x -p no:cacheprovider \
    tests/test_segment_attention.py 2>&1 | tail -3; } | tee "$OUT/setup.log"
timeout ${QUESTION_S:-200} python3 -m vlmsparse.bench question --out "$OUT" ${QUESTION_ARGS:-} 2>&1 \
  | grep -v "Warning\|warn(" | tee "$OUT/question.log"
if ! python3 -c "import decord" 2>/dev/null && [ -n "$WHEEL" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEEL" && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
timeout ${DECODE_S:-60} python3 -m vlmsparse.bench decode ${CLIP:+--video "$CLIP"} --repeats 1 --parallel 1 4 \
  --out "$OUT" 2>&1 | tee "$OUT/decode.log"
