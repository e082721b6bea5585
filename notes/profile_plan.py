"""Where a planner's time goes on the GPU: torch.profiler tables of ``method.plan`` and of the kernel call.

Run on a GPU: python notes/profile_plan.py [--host] [psa psa-videomme xattention sparge]
(``--host``: the planner alone, ops sorted by host time, for planners that are bound by launch overhead)
"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from vlmsparse.bench.kernel import METHOD_SETTINGS, VIDEO_GRIDS
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import pyramid_attention
from vlmsparse.methods import get_method


def main(labels, host=False):
    for length in (8192, 32768):
        frames, height, width = VIDEO_GRIDS[length]
        q, k, v, visual = video_qkv(frames, height, width, heads_q=28, heads_kv=4, head_dim=128, device="cuda",
                                    dtype=torch.bfloat16, seed=length)
        for label in labels:
            setting = dict(METHOD_SETTINGS[label])
            method = get_method(setting.pop("name"), **setting)

            def step():
                plan = method.plan(q, k, visual)
                if host:
                    return plan
                return pyramid_attention(q, k, v, plan.levels, check_levels=False, **plan.kernel_kwargs())

            for _ in range(3):
                step()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    step()
                torch.cuda.synchronize()
            print(f"=== L={q.shape[2]} {label}: 5 steps ({'plan' if host else 'plan + kernel'}) ===")
            if host:
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
                continue
            try:
                table = prof.key_averages().table(sort_by="device_time_total", row_limit=16, max_name_column_width=60)
            except Exception:  # older torch names the column after CUDA
                table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=16, max_name_column_width=60)
            print(table)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--host"]
    main(args or ["psa", "xattention"], host="--host" in sys.argv[1:])
