"""Compile the attention kernel once (bf16, D = 128, causal) and write its Triton GPU IR, to see which loops
the compiler pipelined (async copies, async dots). Run on a GPU: python notes/ab/dump_ttgir.py OUT_DIR"""

import pathlib
import sys

import torch

from vlmsparse.bench.kernel import random_mixed_plan
from vlmsparse.kernels import pyramid as kernel_module
from vlmsparse.kernels import pyramid_attention

q = torch.randn(1, 28, 1024, 128, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, 4, 1024, 128, device="cuda", dtype=torch.bfloat16)
pyramid_attention(q, k, k, random_mixed_plan(1, 4, 1024, 128, 0.5))
out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
for device_cache in kernel_module._pyramid_attention_fwd.device_caches.values():
    for i, compiled in enumerate(device_cache[0].values()):
        (out / f"pyramid_{i}.ttgir").write_text(compiled.asm["ttgir"])
        print("wrote", out / f"pyramid_{i}.ttgir", "n_regs", getattr(compiled, "n_regs", "?"),
              "n_spills", getattr(compiled, "n_spills", "?"), "shared", compiled.metadata.shared)
