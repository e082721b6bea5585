"""Where Triton's Gluon puts partition-wide barriers around a ring's mbarriers (sm_90, compiled here, no GPU).

A consumer partition of 4 or 8 warps runs a two-slot ring: wait for the slot's "ready" barrier, one wgmma on the
slot, wait for it, release the slot. The release is either ``mbarrier.arrive`` (one thread arrives; Triton first
syncs the partition) or ``async_copy.mbarrier_arrive(increment_count=False)`` (every thread arrives for itself,
``cp.async.mbarrier.arrive.noinc``; the barrier then counts every consumer thread). With ``--two-waits`` each step
waits on two barriers of one allocation, as the kernel's steps wait on K's and then V's. Prints the partition
barriers (``bar.sync 0, N``) and mbarrier operations inside the consumer's loop, from the PTX.

    python notes/ab/barrier_probe.py               # needs a Triton with Gluon (3.6 or later)
"""

import argparse
import re

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, warpgroup_mma, warpgroup_mma_wait


@gluon.jit
def _consumer(bufs, ready, empty, out, PER_THREAD: gl.constexpr, NW: gl.constexpr, TWO_WAITS: gl.constexpr):
    acc_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1], instr_shape=[16, 64, 16])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_l, k_width=2)
    acc = gl.zeros([16 * NW, 64], gl.float32, acc_l)
    a = gl.full([16 * NW, 64], 1.0, gl.bfloat16, a_l)
    for i in range(8):
        s = i % 2
        mbarrier.wait(ready.index(s), (i // 2) & 1)
        if TWO_WAITS:
            mbarrier.wait(ready.index(1 - s), (i // 2) & 1)
        acc = warpgroup_mma(a, bufs.index(s), acc, is_async=True)
        acc = warpgroup_mma_wait(0, deps=(acc, ))
        if PER_THREAD:
            async_copy.mbarrier_arrive(empty.index(s), increment_count=False)
        else:
            mbarrier.arrive(empty.index(s), count=1)
    rows = gl.arange(0, 16 * NW, layout=gl.SliceLayout(1, acc_l))
    cols = gl.arange(0, 64, layout=gl.SliceLayout(0, acc_l))
    gl.store(out + rows[:, None] * 64 + cols[None, :], acc)


@gluon.jit
def _producer(bufs, ready, empty, out, PER_THREAD: gl.constexpr, NW: gl.constexpr, TWO_WAITS: gl.constexpr):
    for i in range(8):
        s = i % 2
        mbarrier.wait(empty.index(s), ((i // 2) & 1) ^ 1)
        mbarrier.arrive(ready.index(s), count=1)


@gluon.jit
def _ring(out, PER_THREAD: gl.constexpr, NW: gl.constexpr, TWO_WAITS: gl.constexpr):
    smem_l: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    bufs = gl.allocate_shared_memory(gl.bfloat16, [2, 64, 64], smem_l)
    ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(2):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=(NW * 32) if PER_THREAD else 1)
    # the flags as arguments of their own (inside a tuple they would reach the partitions as run-time values)
    gl.warp_specialize([(_consumer, (bufs, ready, empty, out, PER_THREAD, NW, TWO_WAITS)),
                        (_producer, (bufs, ready, empty, out, PER_THREAD, NW, TWO_WAITS))], [1], [40])


def loop_lines(ptx: str) -> list[str]:
    """The barrier and mbarrier lines of the first loop in the PTX (the consumer's: its body comes first)."""
    lines = ptx.splitlines()
    start = next(i for i, line in enumerate(lines) if "Inner Loop Header" in line)
    label = lines[start].split(":")[0]
    end = next(i for i in range(start + 1, len(lines)) if re.search(r"bra\s+" + re.escape(label) + ";", lines[i]))
    keep = ("bar.sync", "mbarrier.try_wait", "mbarrier.arrive", "cp.async.mbarrier")
    return [line.strip() for line in lines[start:end + 1] if any(k in line for k in keep)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--two-waits", action="store_true", help="two waits a step on one barrier allocation")
    args = parser.parse_args()
    print(f"triton {triton.__version__}, sm_90")
    for per_thread in (0, 1):
        for nw in (4, 8):
            src = GluonASTSource(_ring, {"out": "*fp32", "PER_THREAD": "constexpr", "NW": "constexpr",
                                         "TWO_WAITS": "constexpr"},
                                 {(1,): per_thread, (2,): nw, (3,): int(args.two_waits)},
                                 {(0,): [["tt.divisibility", 16]]})
            ptx = triton.compile(src, target=GPUTarget("cuda", 90, 128), options=dict(num_warps=nw)).asm["ptx"]
            release = "every thread arrives" if per_thread else "one thread arrives"
            print(f"\n{nw} consumer warps, {release}; the loop's barriers and mbarrier operations:")
            for line in loop_lines(ptx):
                print("   ", line)


if __name__ == "__main__":
    main()
