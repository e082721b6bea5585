#!/usr/bin/env bash
# Per-layer calibration on a GPU, one command:  OUT=/some/dir bash notes/calibrate_gpu.sh
# 1. synthetic video-like q/k/v at 16k tokens (64x16x16 visual + 48 text) with Qwen2.5-VL-7B head shapes (28/4 x 128),
#    8 layers of three attention families, 6 calibration + 3 held-out samples, for psa (target 0.65, the paper's
#    Video-MME sparsity; the videomme-0.65 quota preset measured beside it), xattention (0.58) and sparge (0.37,
#    similarity test off: at its default it keeps every block of these inputs);
# 2. the trained testbed on the needle benchmark, when this checkout has both (vlmsparse.testbed, --bench vniah):
#    calibration, then accuracy of the calibrated and the global setting through python -m vlmsparse.eval.
# Prints one table (held-out sparsity and RMS per-layer attention error, calibrated vs one global setting);
# every run writes its TOMLs, CSVs and PNG under $OUT/<case>.
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
CASES=" ${CASES:-psa psa-per-head xattention sparge testbed} "   # which cases to run (default: all)
want() { [[ "$CASES" == *" $1 "* ]]; }
mkdir -p "$OUT"
SYN=(--bench synthetic --device cuda --layers 8 --tokens 64x16x16 --heads 28:4 --head-dim 128 --samples 6 --holdout 3 --no-progress)
printf 'name = "sparge-nosim"\nmethod = "sparge"\n[method_config]\nsim_threshold = -1.0\n' > "$OUT/sparge-nosim.toml"

want psa && python3 -m vlmsparse.calibrate "${SYN[@]}" --method psa --target-sparsity 0.65 --compare evals/psa-videomme-065.toml \
    --out "$OUT/synthetic-psa" > "$OUT/synthetic-psa.log"
want psa-per-head && python3 -m vlmsparse.calibrate "${SYN[@]}" --method psa --target-sparsity 0.65 --per-head --out "$OUT/synthetic-psa-per-head" \
    > "$OUT/synthetic-psa-per-head.log"
want xattention && python3 -m vlmsparse.calibrate "${SYN[@]}" --method xattention --target-sparsity 0.58 --out "$OUT/synthetic-xattention" \
    > "$OUT/synthetic-xattention.log"
want sparge && python3 -m vlmsparse.calibrate "${SYN[@]}" --config "$OUT/sparge-nosim.toml" --target-sparsity 0.37 \
    --out "$OUT/synthetic-sparge" > "$OUT/synthetic-sparge.log"

if ! want testbed; then
    :
elif python3 -c "import vlmsparse.testbed" 2>/dev/null && python3 -c "from vlmsparse.eval.benchmarks import get_benchmark as g; assert g('vniah').samples" 2>/dev/null; then
    # vniah's own options (generated haystacks, seeds, lengths) go through --bench-option KEY=VALUE if it needs them
    # (12 questions index-major over 1024 / 2048 frames x 5 depths: 8 calibrate, 4 are held out, both lengths in each)
    python3 -m vlmsparse.calibrate --model testbed --bench vniah --bench-option generate=true --bench-option lengths=1024,2048 \
        --bench-option samples=2 --method psa --samples 8 --holdout 4 --target-sparsity 0.65 \
        --compare evals/psa-videomme-065.toml --no-progress --out "$OUT/testbed-psa" > "$OUT/testbed-psa.log"
    python3 -m vlmsparse.eval --bench vniah --model testbed --generate --seed 1 --lengths 1024,2048 --limit 4 \
        --config "$OUT/testbed-psa/calibrated.toml" --config "$OUT/testbed-psa/global.toml" --config evals/psa-videomme-065.toml \
        --vision segment --out "$OUT/testbed-eval" --no-progress > "$OUT/testbed-eval.log" 2>&1 || echo "testbed accuracy run failed: see $OUT/testbed-eval.log"
else
    echo "testbed or --bench vniah samples not in this checkout: synthetic cases only"
fi

python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'case':<26} {'target':<15} {'setting':<26} {'held-out sparsity':>17} {'rms err':>8} {'mean err':>8} {'recall':>7}")
for summary in sorted(out.glob("*/summary.json")):
    s = json.loads(summary.read_text())
    for name, h in s.get("heldout", {}).items():
        label = name if name != "global" else f"global {s['knob']}={s['calibration']['global']['knob']:.3f}"
        print(f"{summary.parent.name:<26} {s['target']:<15} {label:<26} {h['sparsity']:>17.4f} {h['rms_error']:>8.4f} "
              f"{h['mean_error']:>8.4f} {h['recall']:>7.4f}")
    st = s["stability"]
    print(f"{'':<26} input stability: best-knob std median {st['knob_std_median']}, layer sparsity std median "
          f"{st['unit_sparsity_std_median']:.4f}")
PY
