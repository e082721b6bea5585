"""One GPU session for the testbed: train it, then measure every method on it, within a wall-clock budget.

    python notes/testbed_gpu.py --out $OUT                     # train (shipped recipe) + vniah grid + fidelity
    python notes/testbed_gpu.py --out $OUT --init CKPT --train-seconds 0   # measure an existing checkpoint

Steps: (1) ``vlmsparse.testbed`` training with the ``gpu`` preset under a time limit; the checkpoint is
installed as the package's testbed (so rows name the model ``testbed``); (2) ``--bench vniah`` over the
length x depth grid for each setting of ``vlmsparse.testbed.sweep`` in priority order, starting a setting
only while the budget allows; (3) per-layer attention error of every setting on the model's own q/k/v.
Everything lands in ``OUT/work`` and is packed as ``OUT/bundle.tgz`` (the device returns few files).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

T0 = time.perf_counter()
#: vniah settings in the order they are run (the budget may cut the tail): (method, setting name)
PRIORITY = (
    ("dense", "dense"), ("psa", "default"), ("psa", "videomme-0.65"), ("xattention", "tau-0.9"), ("sparge", "default"),
    ("psa", "thresholds-x0.5"), ("xattention", "tau-0.7"), ("psa", "thresholds-x0.7"), ("sparge", "sim-off-cdf-0.9"),
    ("psa", "thresholds-x0.3"), ("xattention", "tau-0.5"), ("sparge", "sim-off-cdf-0.7"),
    ("psa", "thresholds-x0.15"), ("xattention", "tau-0.3"), ("sparge", "sim-off-cdf-0.5"),
    ("psa", "thresholds-x0.05"), ("xattention", "tau-0.1"), ("sparge", "sim-off-cdf-0.3"),
)


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--budget-seconds", type=float, default=560.0, help="wall clock of the whole script")
    p.add_argument("--train-seconds", type=float, default=210.0, help="training time limit (0: no training)")
    p.add_argument("--init", default=None, help="start from this checkpoint")
    p.add_argument("--lengths", default="64,128,256,512,1024")
    p.add_argument("--depths", default="0,0.25,0.5,0.75,1")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--fidelity-frames", default="512")
    p.add_argument("--reserve-seconds", type=float, default=45.0, help="kept for fidelity and packing")
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="gpu")
    p.add_argument("--no-install", action="store_true", help="measure the folder, do not install it as the testbed")
    p.add_argument("--settings", default=None, help="METHOD/NAME,... of the sweep to run (default: all, in priority order)")
    p.add_argument("--skip-fidelity", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="seed of the vniah samples")
    p.add_argument("--fidelity-samples", type=int, default=1, help="needle samples per length for the q/k errors")
    args = p.parse_args()

    import torch

    from vlmsparse.eval.needle import NeedleConfig
    from vlmsparse.eval.runner import EvalOptions
    from vlmsparse.eval.vniah import VniahSpec
    from vlmsparse.eval.vniah_run import VniahRun
    from vlmsparse.testbed import CHECKPOINT_DIR
    from vlmsparse.testbed.sweep import settings
    from vlmsparse.testbed.train import PRESETS, train

    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    log(f"torch {torch.__version__}, {torch.cuda.get_device_name(0) if args.device == 'cuda' else 'cpu'}")
    ckpt = work / "testbed"
    if args.train_seconds > 0:
        cfg = PRESETS[args.preset]
        cfg = dataclasses.replace(cfg, time_limit_s=args.train_seconds)
        train(cfg, ckpt, device=args.device, init=args.init, log=log)
    else:
        shutil.copytree(args.init, ckpt, dirs_exist_ok=True)
    model = str(ckpt)
    if not args.no_install:
        CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
        for f in ckpt.iterdir():
            shutil.copy2(f, CHECKPOINT_DIR / f.name)
        model = "testbed"
        log(f"checkpoint installed as the package testbed ({CHECKPOINT_DIR})")
    from vlmsparse.eval.vniah import trained_needle

    needle = NeedleConfig(**trained_needle(str(ckpt)))

    results = work / "results"
    spec = VniahSpec(
        lengths=tuple(int(x) for x in args.lengths.split(",")),
        depths=tuple(float(x) for x in args.depths.split(",")),
        samples=args.samples,
        seed=args.seed,
        needle=needle,
    )
    opts = EvalOptions(model=model, out=str(results), dtype="bfloat16", vniah=spec, progress=False, log=log)
    run = VniahRun(opts)
    run.prepare()
    by_key = {(s.method, s.name): s for s in settings()}
    rows, skipped = [], []
    per_setting = None
    order = PRIORITY if args.settings is None else [tuple(x.split("/", 1)) for x in args.settings.split(",")]
    unknown = [k for k in order if k not in by_key]
    if unknown:
        raise SystemExit(f"--settings: unknown {unknown}; known: {sorted(by_key)}")
    for key in order:
        left = args.budget_seconds - (time.perf_counter() - T0) - args.reserve_seconds
        if per_setting is not None and left < per_setting * 1.1:
            skipped.append(key)
            continue
        start = time.perf_counter()
        row = run.run_setting(by_key[key])
        took = time.perf_counter() - start
        per_setting = took if per_setting is None else max(per_setting * 0.5, took)  # the first carries model load
        if row is not None:
            rows.append(row)
            log(f"{key[0]}/{key[1]}: acc {row['acc_overall']:.3f} by length {row['acc_by_length']} | by depth "
                f"{row['acc_by_depth']} | sparsity {row['sparsity']:.3f} visual {row['visual_sparsity'] or 0:.3f} "
                f"| prefill {row['prefill_s_mean']:.4f}s | {took:.0f}s")
    if skipped:
        log(f"not run (budget): {skipped}")
    from vlmsparse.eval import vniah_report

    if rows:
        print(vniah_report.table(rows), flush=True)
    (results / "skipped.json").write_text(json.dumps([list(k) for k in skipped]) + "\n")

    if not args.skip_fidelity:
        log("per-layer attention error on the model's own q/k/v")
        subprocess.run(
            [sys.executable, "-m", "vlmsparse.testbed", "fidelity", "--model", model, "--device", args.device,
             "--lengths", args.fidelity_frames, "--samples", str(args.fidelity_samples), "--out", str(results / "testbed_fidelity.csv")],
            check=False,
        )
    with tarfile.open(out / "bundle.tgz", "w:gz") as tar:
        tar.add(work, arcname="work")
    log(f"packed {out / 'bundle.tgz'} ({(out / 'bundle.tgz').stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
