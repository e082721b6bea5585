"""Where the vision tower's time goes (GPU): a Qwen2.5-VL-7B-shaped tower (random bf16 weights) on one video of
about N visual tokens, timed as loaded and with each ``vision=`` mode of ``vlmsparse.patch`` (``segment``,
``compiled``); ``--profile`` adds a torch.profiler table of one forward per mode, by kernel.

Run on a GPU:  python notes/vision_profile.py [--tokens 24576] [--profile]
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
    from vlmsparse.argtypes import patch_grid

    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=24576)
    p.add_argument("--frame", type=patch_grid, default=(36, 64), metavar="HxW")
    p.add_argument("--modes", nargs="+", default=["unpatched", "segment", "compiled"])
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()

    from vlmsparse.bench.question import build_model, question_inputs, video_grid
    from vlmsparse.model.vision import patch_vision, vision_tower

    model = build_model(layers=1, vision_layers=32)
    grid = video_grid(args.tokens, args.frame)
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


if __name__ == "__main__":
    main()
