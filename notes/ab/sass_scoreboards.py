"""Print a range of an sm_90 SASS listing (cuobjdump -sass, as compile_sm90.py writes it) with each instruction's
scoreboard use decoded from its control bits: the write barrier it sets (``wb``), the read barrier (``rb``) and the
mask of barriers it waits on before it issues (``wait``, barrier 5 the leftmost bit). Reading a load's ``wb`` and
the first later instruction whose ``wait`` has that bit shows where the load's round trip is waited for.

    python notes/ab/sass_scoreboards.py /tmp/cc/KERNEL_pooled_tail.sass c500 cac0

Control bits (Volta and later, 128-bit instructions): bits 105-108 stall cycles, 109 yield, 110-112 write barrier
(7: none), 113-115 read barrier, 116-121 wait mask, 122-125 operand reuse.
"""
import re
import sys


def parse(path: str) -> list[tuple[int, str, int, int, int]]:
    lines = open(path).read().split("\n")
    out = []
    for i, line in enumerate(lines[:-1]):
        m = re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);\s*/\* (0x[0-9a-f]+) \*/", line)
        hi = re.search(r"/\* (0x[0-9a-f]+) \*/", lines[i + 1]) if m else None
        if m and hi:
            ctrl = int(hi.group(1), 16) >> 41
            out.append((int(m.group(1), 16), m.group(2).strip(), (ctrl >> 5) & 7, (ctrl >> 8) & 7, (ctrl >> 11) & 0x3F))
    return out


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: python notes/ab/sass_scoreboards.py LISTING.sass FIRST_HEX LAST_HEX", file=sys.stderr)
        return 2
    lo, hi = int(sys.argv[2], 16), int(sys.argv[3], 16)
    for address, text, wb, rb, wait in parse(sys.argv[1]):
        if lo <= address <= hi:
            print(f"{address:05x} wb={wb if wb != 7 else '-'} rb={rb if rb != 7 else '-'} wait={wait:06b} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
