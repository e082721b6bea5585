"""Compile kernels for a GPU on a machine without one, in a process of its own (under the interpreter nothing is
compiled): what the offline compile tests share."""

import os
import subprocess
import sys

#: The most shared memory one block may take: sm_80 163 KB, sm_90 227 KB.
MAX_SHARED = {80: 166912, 90: 232448}


def compiled_sizes(call: str, configs: list[tuple]) -> list[tuple[int, int]]:
    """``(cubin bytes, shared memory bytes)`` of ``call`` (a Python expression of ``c``, one of ``configs``, that
    returns Triton's compiled kernel, after ``from vlmsparse.kernels import pyramid, pyramid_ws``) for each config,
    compiled with Triton's own ptxas outside the interpreter. Fails the test with the compiler's error."""
    code = ("from vlmsparse.kernels import pyramid, pyramid_ws\n"
            f"for c in {configs!r}:\n"
            f"    k = {call}\n"
            "    print(len(k.asm['cubin']), k.metadata.shared)\n")
    env = dict(os.environ, TRITON_INTERPRET="0")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sizes = [tuple(int(x) for x in line.split()) for line in done.stdout.split("\n") if line.strip()]
    assert len(sizes) == len(configs), done.stdout
    return sizes
