"""Host time per call of the warp-specialized kernel's launch against the Triton kernel's (the device kept busy so
the host never waits), and where the host time goes (cProfile of the launch path).

Run on a Hopper GPU from the repository root: python notes/ab/ws_host.py
"""

import cProfile
import pstats
import time

import torch

from vlmsparse.bench.kernel import one_level_plan
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention


def host_us(fn, n=200):
    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000 // 1000 * 200)  # keep the device busy while the host queues the calls
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6


def main():
    length = 8192
    torch.manual_seed(0)
    q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
    levels = one_level_plan(4, length, 128, 8)
    pyr = build_kv_pyramid(k, v, block_n=128)
    plan = compile_plan(levels, length, length, 128, 128, True)
    for kern in ("triton", "ws", "triton", "ws"):
        fn = lambda: pyramid_attention(q, k, v, levels, pyramid=pyr, plan=plan, check_levels=False, pooled=True,
                                       kernel=kern)
        print(f"{kern:7s} host {host_us(fn):7.1f} us per call (prebuilt plan and pyramid)", flush=True)
    fn = lambda: pyramid_attention(q, k, v, levels, pyramid=pyr, plan=plan, check_levels=False, pooled=True,
                                   kernel="ws")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(200):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
