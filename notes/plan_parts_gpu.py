"""Where a planner's time goes, host against device (GPU): each part of ``method.plan`` timed alone, the whole
plan timed eagerly (what ``bench kernel`` reports) and replayed from a CUDA graph (device time only).

Run on a GPU: python notes/plan_parts_gpu.py [psa xattention ...]
"""

from __future__ import annotations

import sys

import torch
import triton.testing

from vlmsparse.bench.common import sdpa_dense
from vlmsparse.bench.kernel import METHOD_SETTINGS, VIDEO_GRIDS
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels.plan_lists import compile_plan
from vlmsparse.methods import get_method
from vlmsparse.methods.base import apply_layout_rules
from vlmsparse.methods.sparsity import plan_sparsity


def ms(fn) -> float:
    return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))


def graph_ms(fn) -> float | str:
    """Median replay time of ``fn`` captured in a CUDA graph; the error's name where it cannot be captured."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(g):
            fn()
    except Exception as exc:  # a host sync or an unsupported op inside
        return f"not capturable ({type(exc).__name__}: {str(exc)[:80]})"
    return ms(g.replay)


def main(labels: list[str]) -> None:
    for length in (8192, 32768):
        frames, height, width = VIDEO_GRIDS[length]
        q, k, v, visual = video_qkv(frames, height, width, heads_q=28, heads_kv=4, head_dim=128, device="cuda",
                                    dtype=torch.bfloat16, seed=length)
        cudnn = sdpa_dense("cudnn")
        t_dense = ms(lambda: cudnn(q, k, v))
        print(f"=== L={q.shape[2]}: cuDNN dense {t_dense:.3f} ms", flush=True)
        for label in labels:
            setting = dict(METHOD_SETTINGS[label])
            method = get_method(setting.pop("name"), **setting)
            b, hq, lq, _ = q.shape
            layout = method.layout(visual, b, lq, k.shape[2], q.device)
            hm = hq if method.config.plan_heads == "q" else k.shape[1]
            cfg = method.config
            parts = {}
            parts["plan (eager)"] = ms(lambda: method.plan(q, k, visual))
            parts["plan (graph replay)"] = graph_ms(lambda: method.plan(q, k, visual))
            if hasattr(method, "importance"):
                parts["  importance"] = ms(lambda: method.importance(q, k, layout))
            parts["  select"] = ms(lambda: method.select(q, k, layout, hm))
            levels = apply_layout_rules(method.select(q, k, layout, hm), layout)
            parts["  layout rules"] = ms(lambda: apply_layout_rules(method.select(q, k, layout, hm), layout)) - parts["  select"]
            parts["  plan lists"] = ms(lambda: compile_plan(levels, lq, k.shape[2], cfg.block_m, cfg.block_n, cfg.causal))
            parts["  sparsity (not in plan)"] = ms(lambda: plan_sparsity(levels, lq, k.shape[2], cfg.block_m, cfg.block_n,
                                                                        cfg.causal, layout.query_block_visual,
                                                                        layout.key_block_visual))
            for name, t in parts.items():
                share = f"{t / t_dense:6.1%} of dense" if isinstance(t, float) else ""
                print(f"{label:<12} {name:<26} {t if isinstance(t, str) else f'{t:.3f} ms'} {share}", flush=True)
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:] or ["psa", "xattention"])
