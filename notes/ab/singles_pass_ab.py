"""Same-run A/B of the single pooled blocks visited in a launch of their own before the main kernel
(``vlmsparse.kernels.pyramid.SINGLES_PASS``) against the main kernel's own single-block loops, over the knobs
``SINGLES_SUB_M`` (query rows per program), ``SINGLES_WARPS`` and ``SINGLES_MAXNREG`` (registers per thread, so
that more programs share an SM).

Kernel time (pyramid and compiled plan built outside the timing) on plans of isolated pooled blocks (every other
wholly visible block at one level), on PSA's plans over three families (seed 0) and on the all-level-1 plan (no
single blocks: what the extra launch and arguments cost), with the largest difference between the outputs.
Run on a GPU from the repository root of this branch: python notes/ab/singles_pass_ab.py
"""

import itertools

import torch
import triton

import vlmsparse.kernels.pyramid as pyr
from vlmsparse.bench.kernel import VIDEO_GRIDS
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.methods import get_method

KNOBS = [dict(SINGLES_PASS=False)] + [
    dict(SINGLES_PASS=True, SINGLES_SUB_M=sub, SINGLES_WARPS=warps, SINGLES_MAXNREG=reg)
    for sub, warps, reg in itertools.product((64, 128), (4, 8), (None, 128)) if not (sub == 128 and warps == 4)
]
PLANS = {
    "psa default": dict(),
    "psa-exact-lone-exact 0.6": dict(thresholds=(0.6, 0.6, 0.76, 0.88), stride=16, lone_pooled="exact"),
    "psa-exact 0.6": dict(thresholds=(0.6, 0.6, 0.76, 0.88), stride=16),
    "psa-all-levels 0.6": dict(thresholds=(0.6, 0.75, 0.85, 0.95), lone_level2_exact=False),
}


def bench(fn):
    return triton.testing.do_bench(fn, warmup=30, rep=150, return_mode="median")


def isolated(shape, p, device):
    b, h, nq, nk = shape
    lv = torch.zeros(shape, dtype=torch.int8, device=device)
    for i in range(nq):
        lv[:, :, i, 1:i:2] = p
        lv[:, :, i, 0] = 1
        lv[:, :, i, i] = 1
    return lv


def main():
    print(torch.cuda.get_device_name(), "triton", triton.__version__, flush=True)
    for length in (8192, 32768):
        frames, height, width = VIDEO_GRIDS[length]
        for family in ("diffuse", "medium", "peaked"):
            q, k, v, visual = video_qkv(frames, height, width, device="cuda", dtype=torch.bfloat16, seed=length,
                                        **FAMILIES[family])
            cases = {name: get_method("psa", **kw).plan(q, k, visual).levels for name, kw in PLANS.items()}
            if family == "medium":
                n = -(-q.shape[2] // 128)
                for p in (2, 4, 8):
                    cases[f"isolated level {p}"] = isolated((1, 28, n, n), p, q.device)
                cases["all level 1"] = torch.tril(torch.ones(n, n, dtype=torch.int8, device=q.device)).expand(1, 28, n, n).contiguous()
            pyramid = build_kv_pyramid(k, v)
            for name, levels in cases.items():
                plan = compile_plan(levels, q.shape[2], k.shape[2], 128, 128, True)
                base, times = None, []
                for knobs in KNOBS:
                    for key, value in knobs.items():
                        setattr(pyr, key, value)
                    try:
                        out = pyramid_attention(q, k, v, levels, pyramid=pyramid, plan=plan, check_levels=False)
                        t = bench(lambda: pyramid_attention(q, k, v, levels, pyramid=pyramid, plan=plan, check_levels=False))
                    except Exception as exc:  # a knob the compiler refuses
                        times.append(f"{knobs}: {type(exc).__name__}")
                        continue
                    if base is None:
                        base = (out.float(), t)
                        times.append(f"off {t:.3f} ms")
                    else:
                        diff = float((out.float() - base[0]).abs().max())
                        times.append(f"sub {knobs['SINGLES_SUB_M']} w {knobs['SINGLES_WARPS']} reg "
                                     f"{knobs['SINGLES_MAXNREG']}: {t / base[1]:.3f} (diff {diff:.1e})")
                print(f"L={q.shape[2]} {family} {name}: " + " | ".join(times), flush=True)
            del q, k, v, pyramid
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
