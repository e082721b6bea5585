"""Summarise an Nsight Compute profile written by notes/ab/ncu_profile.sh: warp stall reasons and where they fall.

    python notes/ab/ncu_stalls.py OUT/NAME [--top 12]

Reads ``OUT/NAME_raw.csv`` (``ncu --page raw --csv``: the kernel's duration and its warp-state ratios, cycles per
issued instruction stalled for each reason) and ``OUT/NAME_sass.csv`` (``ncu --page source --csv --print-source
sass``: per SASS instruction, its sampled warps). Prints the stall reasons, largest first; then the sampled warps per
loop of the SASS (a backward branch and the instructions it spans, as in notes/kernel.md's instruction counts) and
outside any loop; then the ``--top`` instructions with the most samples and their leading reasons. Either file
may be missing or in another layout: what can be read is printed, the rest is said.
"""

import argparse
import csv
import pathlib
import re
import sys


def number(text):
    """A CSV cell as a float (thousands separators dropped), or None."""
    try:
        return float(str(text).replace(",", "").strip())
    except ValueError:
        return None


def read_rows(path):
    text = path.read_text(errors="replace").splitlines()
    # ncu may print lines of its own before the table: start at the first line that looks like a CSV header
    # (a source page export opens with a line of its own, "Kernel Name","<name>", of three cells with its trailing
    # comma: the header is the first line of more than three)
    for i, line in enumerate(text):
        if line.startswith('"') and len(next(csv.reader([line]))) > 3:
            return list(csv.reader(text[i:]))
    return []


def stall_reasons(raw_path):
    rows = read_rows(raw_path)
    if len(rows) < 3:
        print(f"{raw_path.name}: no table")
        return
    names, data = rows[0], rows[2]  # the second row holds the units
    values = dict(zip(names, data))
    for key in ("gpu__time_duration.sum", "sm__warps_active.avg.pct_of_peak_sustained_active",
                "smsp__issue_active.avg.pct_of_peak_sustained_active",
                "smsp__average_warp_latency_per_inst_issued.ratio"):
        if key in values:
            print(f"  {key} = {values[key]}")
    stalls = []
    for name, value in values.items():
        m = re.match(r"smsp__average_warps?_(?:issue_stalled|latency_issue_stalled)_(\w+?)_per_issue_active\.ratio$",
                     name)
        v = number(value)
        if m and v is not None:
            stalls.append((v, m.group(1)))
    if not stalls:
        print(f"  {raw_path.name}: no warp-state ratios (smsp__average_warps_issue_stalled_*) in it")
        return
    total = sum(v for v, _ in stalls)
    print(f"  warp cycles per issued instruction, by stall reason (sum {total:.2f}):")
    for v, reason in sorted(stalls, reverse=True)[:12]:
        print(f"    {reason:28s} {v:7.3f}  {v / total:6.1%}")


def loops(addresses, sources):
    """(first, last) index pairs of the backward branches' spans, innermost first."""
    index = {a: i for i, a in enumerate(addresses)}
    spans = []
    for i, src in enumerate(sources):
        m = re.search(r"BRA\s+(?:`\(\.L_x_\d+\)\s*)?(?:0x)?([0-9a-fA-F]+)", src)
        if m:
            target = int(m.group(1), 16)
            if target in index and index[target] < i:
                spans.append((index[target], i))
    return sorted(spans, key=lambda s: s[1] - s[0])


def per_instruction(sass_path, top):
    rows = read_rows(sass_path)
    if len(rows) < 2:
        print(f"  {sass_path.name}: no table")
        return
    header, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    col = {name: i for i, name in enumerate(header)}
    addr_col = next((i for n, i in col.items() if n.lower() in ("address", "# address")), None)
    src_col = next((i for n, i in col.items() if n.lower() in ("source", "sass")), None)
    sample_cols = [i for n, i in col.items() if "sampl" in n.lower()]
    if addr_col is None or src_col is None or not sample_cols:
        print(f"  {sass_path.name}: columns not recognised: {header[:12]}")
        return
    main = next((i for i in sample_cols if "all" in header[i].lower()), sample_cols[0])
    reason_cols = [i for n, i in col.items() if n.lower().startswith("stall") or "stalled" in n.lower()]
    addresses = [int(r[addr_col], 16) if re.fullmatch(r"(0x)?[0-9a-fA-F]+", r[addr_col].strip()) else -1
                 for r in body]
    sources = [r[src_col] for r in body]
    samples = [number(r[main]) or 0.0 for r in body]
    total = sum(samples) or 1.0
    print(f"  {header[main]}: {total:.0f} samples over {len(body)} instructions")
    spans = loops(addresses, sources)
    covered = [None] * len(body)  # the innermost loop each instruction belongs to
    for k, (a, b) in enumerate(spans):
        for i in range(a, b + 1):
            if covered[i] is None:
                covered[i] = k
    by_loop = {}
    for i, k in enumerate(covered):
        by_loop[k] = by_loop.get(k, 0.0) + samples[i]
    for k, s in sorted(by_loop.items(), key=lambda kv: -kv[1])[:10]:
        if k is None:
            print(f"    outside loops            {s / total:6.1%}")
        else:
            a, b = spans[k]
            hg = sum("HGMMA" in sources[i] for i in range(a, b + 1))
            print(f"    loop {k:2d} ({b - a + 1:4d} instr, {hg:2d} HGMMA) {s / total:6.1%}")
    print(f"  top {top} instructions:")
    for i in sorted(range(len(body)), key=lambda i: -samples[i])[:top]:
        reasons = sorted(((number(body[i][c]) or 0.0, header[c]) for c in reason_cols), reverse=True)[:3]
        why = ", ".join(f"{n} {v:.0f}" for v, n in reasons if v > 0)
        print(f"    {samples[i] / total:6.1%} {hex(addresses[i]) if addresses[i] >= 0 else '?':>8s} "
              f"{sources[i][:60]:60s} {why}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prefix", help="OUT/NAME, as notes/ab/ncu_profile.sh wrote it")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    prefix = pathlib.Path(args.prefix)
    found = False
    for suffix, fn in (("_raw.csv", stall_reasons), ("_sass.csv", lambda p: per_instruction(p, args.top))):
        path = prefix.parent / (prefix.name + suffix)
        if path.is_file():
            found = True
            print(f"{path.name}:")
            fn(path)
        else:
            print(f"{path.name}: missing")
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
