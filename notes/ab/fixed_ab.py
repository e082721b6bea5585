"""Same-run A/B of the per-program fixed costs: the kernel at a past revision (default the v10 commit 696b54e:
three span loops, tail work in every program) against the current one with the spans of all levels in one loop
(``ONE_SPAN_LOOP``) and against the current one with one loop per level; tail aggregation on the one-level
plans; and planning, eager and on the device (``device_time_ms``), with the layout rules and the lone level-2
step in the level-assignment launch against the same steps as separate PyTorch ops.

Run on a GPU from the repository root: python notes/ab/fixed_ab.py [revision]  (materialise the revision first
where the machine has no git history: python notes/ab/variants.py REV, then carry notes/ab/.variants)
"""

import sys

import torch
import triton

import vlmsparse.kernels.pyramid as cur
from vlmsparse.bench.common import device_time_ms
from vlmsparse.bench.kernel import VIDEO_GRIDS, random_mixed_plan
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan
from vlmsparse.methods import get_method
from vlmsparse.methods.base import apply_layout_rules
from vlmsparse.methods.psa import PSA_LEVELS, lone_level2_exact
from vlmsparse.methods.scoring import antidiagonal_block_scores
from vlmsparse.methods.selection import cumulative_levels

from variants import load, package_of

REV = sys.argv[1] if len(sys.argv) > 1 else "696b54e"
OLD = load(REV)


def t_ms(fn):
    return triton.testing.do_bench(fn, warmup=30, rep=200, return_mode="median")


def one_level(shape, p, device):
    """Every wholly visible block at level ``p`` (0: skipped), first key block and diagonal exact."""
    n = shape[2]
    lv = torch.tril(torch.full((n, n), p, dtype=torch.int8, device=device), -1)
    lv[:, 0] = 1
    lv.diagonal().fill_(1)
    return lv.expand(shape).contiguous()


def compare(label, q, k, v, levels, tail=False):
    pyr = build_kv_pyramid(k, v, tail=tail)
    plan = compile_plan(levels, q.shape[2], k.shape[2], 128, 128, True)
    own = package_of(OLD)
    pyr_old = own.build_kv_pyramid(k, v, tail=tail)
    plan_old = own.compile_plan(levels, q.shape[2], k.shape[2], 128, 128, True)
    runs = {
        "old": lambda: OLD.pyramid_attention(q, k, v, levels, pyramid=pyr_old, plan=plan_old, check_levels=False, tail=tail),
        "loops": lambda: cur.pyramid_attention(q, k, v, levels, pyramid=pyr, plan=plan, check_levels=False, tail=tail),
        "one": lambda: cur.pyramid_attention(q, k, v, levels, pyramid=pyr, plan=plan, check_levels=False, tail=tail),
    }
    flags = {"old": True, "loops": False, "one": True}
    outs, times = {}, {}
    for rnd in range(2):
        for name in (runs if rnd == 0 else reversed(list(runs))):
            cur.ONE_SPAN_LOOP = flags[name]
            if rnd == 0:
                outs[name] = runs[name]().float()
            times[name] = min(times.get(name, 1e9), t_ms(runs[name]))
    cur.ONE_SPAN_LOOP = True
    d1 = float((outs["one"] - outs["old"]).abs().max())
    d2 = float((outs["loops"] - outs["old"]).abs().max())
    print(f"{label}{' tail' if tail else ''}: old {times['old']:.3f} ms | one loop per level {times['loops']:.3f} "
          f"({times['loops'] / times['old']:.3f}) | one span loop {times['one']:.3f} ({times['one'] / times['old']:.3f})"
          f" | max diff {d1:.1e} / {d2:.1e}", flush=True)
    return times


def old_select(method, q, k, layout, hm):
    """PSA's select as it was: levels, then the lone level-2 step and the layout rules as PyTorch ops."""
    cfg = method.config
    share = method.importance(q, k, layout)
    lv = cumulative_levels(share, layout.forced[:, None], layout.free[:, None], cfg.thresholds, levels=PSA_LEVELS,
                           mode=cfg.mode)
    if cfg.lone_level2_exact:
        lv = lone_level2_exact(lv)
    return apply_layout_rules(lv, layout)


def main():
    print(torch.cuda.get_device_name(), "triton", triton.__version__, "old revision", REV, flush=True)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for length in (8192, 32768):
        q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        dense = t_ms(lambda: sdpa(q, k, v, is_causal=True, enable_gqa=True))
        print(f"L={length} cuDNN dense {dense:.3f} ms", flush=True)
        n = length // 128
        for p in (1, 0, 2, 4, 8):
            t = compare(f"L={length} one level {p}", q, k, v, one_level((1, 4, n, n), p, q.device))
            tt = compare(f"L={length} one level {p}", q, k, v, one_level((1, 4, n, n), p, q.device), tail=True)
            print(f"   tail overhead: old {tt['old'] / t['old'] - 1:+.3f}, one span loop {tt['one'] / t['one'] - 1:+.3f}"
                  + (f" | all-level-1 vs cuDNN: old {dense / t['old']:.3f}, one span loop {dense / t['one']:.3f}"
                     if p == 1 else ""), flush=True)
        for keep in (0.5, 0.1):
            compare(f"L={length} random keep {keep}", q, k, v, random_mixed_plan(1, 4, length, 128, keep, seed=length))
        frames, height, width = VIDEO_GRIDS[length]
        for family in ("diffuse", "medium", "peaked"):
            q, k, v, visual = video_qkv(frames, height, width, device="cuda", dtype=torch.bfloat16, seed=length,
                                        **FAMILIES[family])
            dense = t_ms(lambda: sdpa(q, k, v, is_causal=True, enable_gqa=True))
            for name, kw in (("psa", {}), ("psa-exact 0.6", dict(thresholds=(0.6, 0.6, 0.76, 0.88), stride=16))):
                compare(f"L={q.shape[2]} {family} {name}", q, k, v, get_method("psa", **kw).plan(q, k, visual).levels)
            for name in ("psa", "xattention"):
                method = get_method(name)
                layout = method.layout(visual, 1, q.shape[2], k.shape[2], q.device)
                hm = q.shape[1]
                cfg = method.config
                fused = lambda: method.plan(q, k, visual)
                if name == "psa":
                    def unfused():
                        lv = old_select(method, q, k, layout, hm)
                        return compile_plan(lv, q.shape[2], k.shape[2], 128, 128, True)
                    assert torch.equal(old_select(method, q, k, layout, hm), fused().levels)
                else:
                    def unfused():
                        imp = antidiagonal_block_scores(q, k, stride=cfg.stride, block_m=128, block_n=128)
                        lv = cumulative_levels(imp, layout.forced[:, None], layout.free[:, None], (cfg.threshold,),
                                               levels=(1,))
                        return compile_plan(apply_layout_rules(lv, layout), q.shape[2], k.shape[2], 128, 128, True)
                res = {}
                for tag, fn in (("fused", fused), ("separate", unfused), ("fused again", fused)):
                    res[tag] = (t_ms(fn), device_time_ms(fn))
                print(f"L={q.shape[2]} {family} plan {name}: " + " | ".join(
                    f"{tag} eager {a:.3f} ms ({a / dense:.1%}) device {b:.3f} ms ({b / dense:.1%})" for tag, (a, b) in res.items()),
                    flush=True)
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
