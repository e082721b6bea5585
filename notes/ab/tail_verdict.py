"""Read a `tail_ab.py` CSV (one run's, or `results/tail_ab.csv` with `--date`) as the tail target asks: for each
version, the tail's overhead on every plan (time with tail over time without, -1), and its time against the tree's
kernel without and with tail, so a version that cuts the tail by slowing the plans without it shows as such.

    python notes/ab/tail_verdict.py $OUT/tail_ab_8192.csv
    python notes/ab/tail_verdict.py results/tail_ab.csv --date 2026-12-05 --length 8192 --device H200

Prints one table per length (plans as rows, versions as columns) and one line per version: its largest tail
overhead, on how many plans it is at most the target (5%), and its geometric-mean time against the tree's; for runs
timed in rounds (`tail_ab.py --rounds`), on how many plans it was faster or slower with tail than the tree's kernel
in every round. Rows of several runs of one version and plan are averaged. A version whose output differs from
the tree's by more than ``WRONG`` (relative L2, on any plan, with or without tail) is marked: its times are of a
kernel that computes something else, and say nothing about the tail's cost.
"""

import argparse
import math
import re

import pandas as pd

TARGET = 0.05
WRONG = 5e-3  # versions that order the same maths differently differed by 1.8e-3 at most (results/tail_ab.csv)


def short(version: str) -> str:
    """A column label: the tag a version names, "tree" for the tree's kernel, a run's own label (a tag or folder
    name, one word) whole, else its first words."""
    match = re.search(r"tag (kernel-[\w.-]+)", version)
    if match:
        return match.group(1).removeprefix("kernel-")
    if version == "current" or "the tree" in version:
        return "tree"
    return version.removeprefix("kernel-") if " " not in version else version[:24]


def nearest(length: int) -> int:
    """The power of two nearest ``length``."""
    return 2 ** round(math.log2(length))


def verdict(frame: pd.DataFrame) -> None:
    # video-like inputs run a few tokens past the length asked for (8,288 for 8k): grouped with it
    frame = frame.assign(version=frame["version"].map(short), near=frame["length"].map(nearest))
    for length, rows in frame.groupby("near"):
        builds = rows[rows["plan"] == "pyramid build"]
        rows = rows[~rows["plan"].isin(["cudnn", "pyramid build"])]
        versions = list(dict.fromkeys(rows["version"]))
        for _, b in builds.iterrows():
            print(f"L={length}: pyramid build, {b['version']}: {b['ms']:.3f} ms, with tail {b['ms_tail']:.3f} ms "
                  f"(timed alone; in the plans' times below only with tail_ab.py --build-in-call)")
        print(f"L={length}: tail overhead (time with tail / without - 1), plans x versions")
        table = rows.pivot_table(index="plan", columns="version", values="tail_overhead", sort=False)[versions]
        print((100 * table).round(1).to_string(float_format=lambda x: f"{x:+.1f}%"))
        for version in versions:
            mine = rows[rows["version"] == version]
            over = mine["tail_overhead"].dropna()
            vs, vs_tail = mine["vs_current"].dropna(), mine["vs_current_tail"].dropna()
            gmean = lambda s: math.exp(s.map(math.log).mean()) if len(s) else float("nan")  # noqa: E731
            print(f"  {version:28s} largest {100 * over.max():+.1f}%, <= {100 * TARGET:.0f}% on "
                  f"{int((over <= TARGET).sum())} of {len(over)} plans; time against the tree: without tail "
                  f"{gmean(vs):.3f}, with tail {gmean(vs_tail):.3f} (geometric means)")
            if version != versions[0] and "vs_current_tail_lo" in mine and mine["vs_current_tail_lo"].notna().any():
                # runs with rounds (tail_ab.py --rounds): a plan counts only where every round agrees
                lo, hi = mine["vs_current_tail_lo"].dropna(), mine["vs_current_tail_hi"].dropna()
                faster, slower = int((hi < 1).sum()), int((lo > 1).sum())
                print(f"  {'':28s} with tail, in every round against the tree's: faster on {faster}, slower on "
                      f"{slower}, either way on {len(lo) - faster - slower} of {len(lo)} plans")
            wrong = [f"{r['plan']}{' with tail' if tail else ''} {d:.2g}" for _, r in mine.iterrows()
                     for tail, d in ((False, r.get("diff")), (True, r.get("diff_tail"))) if pd.notna(d) and d > WRONG]
            if wrong:
                print(f"  {'':28s} WRONG OUTPUT against the tree's (relative L2 > {WRONG:g}): {'; '.join(wrong)}")
        print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv")
    p.add_argument("--date", help="only rows of this date (results/tail_ab.csv holds many runs)")
    p.add_argument("--length", type=int, help="only rows of this length (the power of two nearest it)")
    p.add_argument("--device", help="only rows whose device names this (H100, H200: runs on two cards never mix)")
    args = p.parse_args()
    frame = pd.read_csv(args.csv)
    if args.date is not None:
        frame = frame[frame["date"] == args.date]
    if args.device is not None:
        frame = frame[frame["device"].str.contains(args.device, regex=False)]
    if args.length is not None:
        frame = frame[frame["length"].map(nearest) == nearest(args.length)]
    if frame.empty:
        raise SystemExit(f"{args.csv}: no rows (check --date and --length)")
    verdict(frame)


if __name__ == "__main__":
    main()
