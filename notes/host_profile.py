"""Host time of one planned attention call (``method.plan`` then ``plan.run``), per planner, with cProfile.

At 8k tokens a call's GPU work is about 0.6 ms, so Python work per call shows up in eager timings. Prints, per
planner, the host time per call (submitted back to back, one synchronisation at the end) and the functions that
take it (cProfile, by own time).

Run on a GPU: python notes/host_profile.py [psa xattention ...]
"""

import cProfile
import pstats
import sys
import time

import torch

from vlmsparse.bench.kernel import METHOD_SETTINGS, VIDEO_GRIDS
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.methods import get_method


def main(labels):
    frames, height, width = VIDEO_GRIDS[8192]
    q, k, v, visual = video_qkv(frames, height, width, heads_q=28, heads_kv=4, head_dim=128, device="cuda",
                                dtype=torch.bfloat16, seed=8192)
    for label in labels:
        setting = dict(METHOD_SETTINGS[label])
        method = get_method(setting.pop("name"), **setting)
        for what, fn in (("plan", lambda: method.plan(q, k, visual)),
                         ("plan+run", lambda: method.plan(q, k, visual).run(q, k, v))):
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
            n = 200
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            host = (time.perf_counter() - t0) / n
            torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) / n
            print(f"{label} {what}: host {host * 1e3:.3f} ms per call, with the GPU done {wall * 1e3:.3f} ms", flush=True)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(100):
            method.plan(q, k, visual).run(q, k, v)
        prof.disable()
        torch.cuda.synchronize()
        pstats.Stats(prof).sort_stats("tottime").print_stats(22)


if __name__ == "__main__":
    main(sys.argv[1:] or ["psa", "xattention"])
