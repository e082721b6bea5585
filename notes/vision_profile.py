"""Where the vision tower's time goes (GPU): a Qwen2.5-VL-7B-shaped tower (random bf16 weights) on one video of
about N visual tokens, timed as loaded, with the segment kernel, and with each option of ``vlmsparse.patch``'s
``vision=`` that exists; then a torch.profiler table of one forward, by kernel, and an optional torch.compile try.

Run on a GPU:  python notes/vision_profile.py [--tokens 24576] [--compile] [--profile]
"""

from __future__ import annotations

import argparse
import time

import torch


def profile_once(run, rows: int) -> None:
    """A torch.profiler table of one call of ``run``, kernels sorted by device time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="device_time_total", row_limit=rows, max_name_column_width=70))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=24576)
    p.add_argument("--frame", default="36x64")
    p.add_argument("--modes", nargs="+", default=["unpatched", "segment"])
    p.add_argument("--profile", action="store_true")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of each block (segment attention)")
    args = p.parse_args()

    from vlmsparse.bench.question import build_model, frame_grid, question_inputs, video_grid
    from vlmsparse.model.vision import patch_vision, vision_tower

    model = build_model(layers=1, vision_layers=32)
    grid = video_grid(args.tokens, frame_grid(args.frame))
    inputs = question_inputs(model, grid)
    tower = vision_tower(model)
    px, thw = inputs["pixel_values_videos"], inputs["video_grid_thw"]
    print(f"grid {grid}: {grid[0] * grid[1] * grid[2]} patches, {grid[0] * grid[1] * grid[2] // 4} visual tokens")

    def run():
        with torch.no_grad():
            return tower(px, grid_thw=thw).pooler_output

    def timed(label, repeats=3):
        run()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = run()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        print(f"{label:<28} {min(times):.3f} s (min of {repeats}; all {', '.join(f'{t:.3f}' for t in times)})")
        return out

    ref = timed("unpatched") if "unpatched" in args.modes else None
    outs = {}
    for mode in args.modes:
        if mode == "unpatched":
            continue
        vp = patch_vision(model, mode)
        outs[mode] = timed(mode)
        if ref is not None:
            err = ((outs[mode].float() - ref.float()).norm() / ref.float().norm()).item()
            print(f"{'':<28} rel. err vs unpatched {err:.2e}")
        if args.profile:
            profile_once(run, rows=30)
        if vp is not None:
            vp.restore()

    if args.compile:
        vp = patch_vision(model, "segment")
        from vlmsparse.model import vision as vision_mod

        fn = vision_mod.segment_attention_forward
        from transformers import AttentionInterface

        AttentionInterface.register(vision_mod.IMPLEMENTATION, torch.compiler.disable(fn))
        t0 = time.perf_counter()
        for blk in tower.blocks:
            blk.forward = torch.compile(blk.forward, dynamic=False)
        timed("segment + compile (first)", repeats=1)
        print(f"compile and first run: {time.perf_counter() - t0:.1f} s")
        out = timed("segment + compile")
        if ref is not None:
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            print(f"{'':<28} rel. err vs unpatched {err:.2e}")
        if args.profile:
            profile_once(run, rows=20)


if __name__ == "__main__":
    main()
