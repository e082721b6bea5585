"""Would smaller query blocks help sparse plans? The same plans (128 x 128 blocks) run with 128-row query blocks
(8 warps, the default) and with 64-row query blocks (each plan row repeated for both halves, which computes the
same attention), 4 warps and 2 or 3 stages: smaller programs use less shared memory, so two can share an SM
and overlap each other's fixed per-program costs. Prints the time, the output difference and what each compiled
kernel holds (shared bytes, registers).

Run on a GPU from the repository root: python notes/ab/block_m_probe.py
"""

import torch
import triton

from vlmsparse.bench.kernel import METHOD_SETTINGS, VIDEO_GRIDS, random_mixed_plan
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, pyramid_attention
from vlmsparse.kernels import pyramid as pyramid_module
from vlmsparse.methods import get_method

from variants import resources

CONFIGS = [(128, 8, 3), (64, 4, 3), (64, 4, 2), (64, 8, 3)]  # (block_m, num_warps, num_stages)


def t_ms(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median")


def compare(label, q, k, v, levels, tail=False):
    pyr = build_kv_pyramid(k, v, tail=tail)
    ref = None
    parts = []
    for block_m, warps, stages in CONFIGS:
        lv = levels if block_m == 128 else levels.repeat_interleave(128 // block_m, dim=2)[:, :, : triton.cdiv(q.shape[2], block_m)]
        fn = lambda: pyramid_attention(q, k, v, lv, pyramid=pyr, check_levels=False, block_m=block_m, block_n=128,
                                       num_warps=warps, num_stages=stages, tail=tail)
        out = fn().float()
        if ref is None:
            ref = out
        diff = ((out - ref).norm() / ref.norm()).item()
        parts.append(f"m{block_m} w{warps} s{stages} {t_ms(fn):.3f} ms (diff {diff:.0e})")
    print(f"{label}: " + "; ".join(parts), flush=True)


def main():
    for length in (8192, 32768):
        q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        compare(f"L={length} all level 1", q, k, v, random_mixed_plan(1, 4, length, 128, 1.0, mix=(1.0, 0, 0, 0)))
        for keep in (0.5, 0.25, 0.1):
            compare(f"L={length} random keep {keep}", q, k, v, random_mixed_plan(1, 4, length, 128, keep, seed=length))
        frames, height, width = VIDEO_GRIDS[length]
        q, k, v, visual = video_qkv(frames, height, width, heads_q=28, heads_kv=4, head_dim=128, device="cuda",
                                    dtype=torch.bfloat16, seed=length)
        for label in ("psa", "psa-videomme"):
            setting = dict(METHOD_SETTINGS[label])
            plan = get_method(setting.pop("name"), **setting).plan(q, k, visual)
            assert plan.kernel_kwargs().get("block_m", 128) == 128, plan.kernel_kwargs()
            compare(f"L={q.shape[2]} {label}", q, k, v, plan.levels, tail=plan.kernel_kwargs().get("tail", False))
    print("(num_warps, shared bytes, registers, spills) per compiled kernel:",
          resources(pyramid_module._pyramid_attention_fwd))


if __name__ == "__main__":
    main()
