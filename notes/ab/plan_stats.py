"""What PSA's plans hold per query tile, on CPU: steps by kind, the share of tiles with a tail, the share of those
that also hold a single pooled block (of level 8, of any level) and the K/V bytes the producer copies a tile.

For PSA's ``videomme-0.65`` preset and its default on the video-like families (inputs as `tail_ab.py` and
`timeline.py` draw them, seed L + 11), and random mixed plans, it compiles each plan's lists in plain PyTorch
(`compile_plan_torch`) and prints per tile the mean number of exact blocks, spans, single pooled blocks (narrow
steps) and masked blocks, the share of tiles that have a tail step, and those per program of a 132-SM launch.

Run from the repository root: python notes/ab/plan_stats.py [--lengths 8192]
"""

import argparse

import torch

from vlmsparse.bench.kernel import VIDEO_GRIDS, random_mixed_plan
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels.plan_lists import compile_plan_torch
from vlmsparse.kernels.pyramid_ws import BLOCK, HEAD_DIM, TAIL_ROWS
from vlmsparse.methods import get_method

SMS = 132  # an H100's SMs: one program each
TILE_KB = 2 * BLOCK * HEAD_DIM * 2 / 1024  # one ring step's K and V copies, 128 rows of bfloat16: 64 KB
TAIL_KB = TILE_KB * TAIL_ROWS / BLOCK  # the tail key's boxes


def stats(label: str, levels: torch.Tensor, length: int, heads_q: int = 28) -> None:
    off = compile_plan_torch(levels, length, length, 128, 128, True).cat_offsets.long()
    exact, spans = off[:, 1], off[:, 4] - off[:, 1]
    singles, masked = off[:, 7] - off[:, 4], off[:, 8] - off[:, 7]
    by_level = [off[:, 5 + i] - off[:, 4 + i] for i in range(3)]  # single blocks of level 2, 4, 8
    tail = off[:, 10] > off[:, 8]
    # tailed tiles whose tail could ride a single block of level 8 (kernel-exp-tail-in-narrow8b) or of any level
    # (kernel-exp-tail-in-narrow-any): no tail step of their own
    n_tail = tail.float().sum().clamp(min=1)
    rides8 = (tail & (by_level[2] > 0)).float().sum() / n_tail
    rides = (tail & (singles > 0)).float().sum() / n_tail
    steps = exact + spans + singles + masked
    per_program = tail.sum().item() * (heads_q // levels.shape[1]) / SMS
    # what the producer copies a tile: every step a 128-row tile, or single blocks in boxes of their own 128 / p rows
    whole = (steps * TILE_KB + tail * TAIL_KB).float().mean()
    own = ((exact + spans + masked) * TILE_KB + sum(n * TILE_KB / p for n, p in zip(by_level, (2, 4, 8)))
           + tail * TAIL_KB).float().mean()
    print(f"L={length} {label:30s} steps/tile {steps.float().mean():5.1f} (exact {exact.float().mean():4.1f}, "
          f"spans {spans.float().mean():4.1f}, singles {singles.float().mean():4.1f} = "
          + " + ".join(f"{n.float().mean():.1f}" for n in by_level) + f" of level 2 + 4 + 8, masked "
          f"{masked.float().mean():3.1f})  tiles with a tail {tail.float().mean():.2f}  tails a program "
          f"{per_program:5.1f} (with a single block of level 8 {rides8:.2f}, of any level {rides:.2f})  KB copied a "
          f"tile {whole:5.0f}, single blocks in their own boxes {own:5.0f}",
          flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[8192])
    args = p.parse_args()
    for length in args.lengths:
        frames, h, w = VIDEO_GRIDS[length]
        for family in ("diffuse", "medium", "peaked"):
            q, k, _, visual = video_qkv(frames, h, w, device="cpu", dtype=torch.float32, seed=length + 11,
                                        **FAMILIES[family])
            for name, kw in (("videomme-0.65", dict(preset="videomme-0.65")), ("default", {})):
                stats(f"psa {name} {family}", get_method("psa", **kw).plan(q, k, visual).levels, q.shape[2])
        for keep in (0.5, 0.25, 0.1):
            for seed in (0, 1):
                stats(f"random keep {keep} seed {seed}", random_mixed_plan(1, 4, length, 128, keep, seed=seed,
                                                                           device="cpu"), length)


if __name__ == "__main__":
    main()
