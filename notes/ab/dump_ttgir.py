"""Compile the attention kernel once (bf16, D = 128, causal) and write its Triton GPU IR, to see which loops
the compiler pipelined (async copies, async dots). Run on a GPU: python notes/ab/dump_ttgir.py OUT_DIR [tags of
past versions, dumped too; notes/ab/variants.py]"""

import pathlib
import sys

import torch

from vlmsparse.bench.kernel import random_mixed_plan
from vlmsparse.kernels import pyramid as kernel_module

from variants import compiled_kernels, load

q = torch.randn(1, 28, 1024, 128, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, 4, 1024, 128, device="cuda", dtype=torch.bfloat16)
levels = random_mixed_plan(1, 4, 1024, 128, 0.5)
out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
modules = {"current": kernel_module}
for name in sys.argv[2:]:
    modules[name] = load(name)
for label, module in modules.items():
    module.pyramid_attention(q, k, k, levels)
    for i, compiled in enumerate(compiled_kernels(module._pyramid_attention_fwd)):
        path = out / f"{label}_{i}.ttgir"
        path.write_text(compiled.asm["ttgir"])
        print("wrote", path, "n_regs", compiled.n_regs, "n_spills", compiled.n_spills, "shared",
              compiled.metadata.shared, flush=True)
