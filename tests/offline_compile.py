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


#: The Triton kernels the capture below launches (the main attention kernel has its own check with a launch's
#: flags, ``pyramid.compile_for``: under the interpreter it is launched with float32 products).
CAPTURED = {"antidiagonal:_split_reduce_kernel", "antidiagonal:_split_tiles_kernel", "block_stats:_block_stats_kernel",
            "kv_pyramid:_pool_kernel", "plan_lists:_plan_lists_kernel", "pyramid:_skipped_sums_kernel",
            "segment_attention:_segment_attention_fwd", "select_levels:_select_levels_kernel"}
_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float64": "fp64", "int32": "i32",
           "int64": "i64", "int8": "i8", "int16": "i16", "uint8": "u8", "bool": "i1"}


def _describe(x) -> dict:
    import torch

    if isinstance(x, torch.Tensor):
        return {"t": "ptr", "dtype": str(x.dtype).replace("torch.", "")}
    if type(x).__name__ == "TensorDescriptor":
        return {"t": "desc", "dtype": str(x.base.dtype).replace("torch.", ""), "block": list(x.block_shape)}
    for kind in (bool, int, float):
        if isinstance(x, kind):
            return {"t": kind.__name__, "v": x}
    if isinstance(x, str):  # a constexpr only (a precision's name)
        return {"t": "str", "v": x}
    if x is None:
        return {"t": "none"}
    raise TypeError(f"an argument of type {type(x).__name__}")


def _index_loaded_scalars() -> None:
    """Triton 3.6's interpreter holds a loaded scalar as a one-element array and indexes it with ``int()``, which
    NumPy 2 refuses, so a loop bound read from memory stops the run (3.9 squeezes the array first). Give the older
    interpreter 3.9's behaviour, so the capture runs on the Triton a GPU machine carries."""
    from triton.runtime import interpreter

    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if patch is None or getattr(patch, "squeezes_index", False):
        return

    def patched(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patched.squeezes_index = True
    interpreter._patch_lang_tensor = patched


def capture(path: str) -> None:
    """Under the interpreter: run the package's GPU paths on small inputs (the three methods' plans and runs, the
    planners' kernels, the tail's sums, a segmented attention) and write every distinct Triton launch (kernel,
    argument kinds, constexpr values, launch options) to ``path`` as JSON."""
    import json

    import torch
    from triton.runtime.interpreter import InterpretedFunction

    launches = {}
    run = InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        names = list(self.arg_names)
        bound = dict(zip(names, args), **{k: v for k, v in kwargs.items() if k in names})
        spec = {"kernel": f"{self.fn.__module__}:{self.fn.__name__}",
                "args": {n: _describe(bound[n]) for n in names if n in bound},
                "options": {k: v for k, v in kwargs.items() if k in ("num_warps", "num_stages", "launch_pdl")}}
        launches.setdefault(json.dumps(spec, sort_keys=True), spec)
        if self.fn.__name__ in ("_pyramid_attention_fwd", "_segment_attention_fwd"):
            return None  # their outputs feed nothing here: recorded, not run
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording_run
    _index_loaded_scalars()
    from vlmsparse.kernels import build_kv_pyramid, plan_shape
    from vlmsparse.kernels.antidiagonal import antidiagonal_block_scores_triton
    from vlmsparse.kernels.block_stats import block_stats_triton
    from vlmsparse.kernels.pyramid import skipped_key_sums
    from vlmsparse.kernels.segment_attention import segment_attention
    from vlmsparse.kernels.select_levels import cumulative_levels_triton
    from vlmsparse.methods import get_method

    torch.manual_seed(0)
    b, hq, hkv, length, d, dtype = 1, 4, 2, 512, 128, torch.bfloat16
    q, k, v = (torch.randn(b, h, length, d, dtype=dtype) for h in (hq, hkv, hkv))
    visual = torch.zeros(b, length, dtype=torch.bool)
    visual[:, 64:448] = True
    for name in ("psa", "xattention", "sparge"):
        get_method(name).plan(q, k, visual).run(q, k, v)
    antidiagonal_block_scores_triton(q.float(), k.float(), stride=8, block_m=128, block_n=128)
    block_stats_triton(k, 128)
    n = length // 128
    cumulative_levels_triton(torch.rand(b, hq, n, n), torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool),
                             (0.5, 0.7, 0.8, 0.9))
    levels = torch.randint(0, 3, plan_shape(b, hq, length, length, 128, 128)).to(torch.int8)
    pyramid = build_kv_pyramid(k, v, tail=True, block_n=128)
    skipped_key_sums(levels, pyramid, length, length, 128, 128, True)
    skipped_key_sums(levels, pyramid, length, length, 128, 128, True, means=dtype)
    from vlmsparse.kernels import pyramid as pyramid_module

    pyramid_module.SUMS_FORM = pyramid_module.sums_form(256, 256)  # the 32-row form of long plans
    try:
        skipped_key_sums(levels, pyramid, length, length, 128, 128, True, means=dtype)
    finally:
        pyramid_module.SUMS_FORM = None
    cu = torch.tensor([0, 100, 220, 300], dtype=torch.int32)
    segment_attention(*(torch.randn(1, hq, 300, 64, dtype=dtype) for _ in range(3)), cu)
    with open(path, "w") as f:
        json.dump(list(launches.values()), f)


def compile_captured(path: str) -> None:
    """Outside the interpreter: compile every launch in ``path`` (``capture``'s) but the main attention kernel's for
    sm_80 and sm_90, printing ``kernel arch cubin-bytes shared-bytes`` a line."""
    import importlib
    import json

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    with open(path) as f:
        specs = json.load(f)
    for spec in specs:
        module, name = spec["kernel"].split(":")
        if name == "_pyramid_attention_fwd":
            continue
        fn = getattr(importlib.import_module(module), name)
        signature, constexprs = {}, {}
        for i, p in enumerate(fn.params):
            a = spec["args"].get(p.name)
            if a is None:
                continue
            if p.is_constexpr or a["t"] == "none":
                signature[p.name], constexprs[(i,)] = "constexpr", a.get("v")
            elif a["t"] == "ptr":
                signature[p.name] = "*" + _DTYPES[a["dtype"]]
            elif a["t"] == "desc":
                signature[p.name] = f"tensordesc<{_DTYPES[a['dtype']]}[{', '.join(map(str, a['block']))}]>"
            else:
                small = a["t"] != "int" or -2**31 <= a["v"] < 2**31
                signature[p.name] = {"bool": "i1", "int": "i32" if small else "i64", "float": "fp32"}[a["t"]]
        attrs = {(i,): [["tt.divisibility", 16]] for i, p in enumerate(fn.params)
                 if signature.get(p.name, "").startswith("*")}
        for arch in (80, 90):
            kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs),
                                    target=GPUTarget("cuda", arch, 128 if arch >= 90 else 64), options=spec["options"])
            short = spec["kernel"].replace("vlmsparse.kernels.", "")
            print(short, arch, len(kernel.asm["cubin"]), kernel.metadata.shared)


def compile_launched_kernels(folder) -> list[tuple[str, int, int, int]]:
    """``capture`` under the interpreter, then ``compile_captured`` outside it, each in a process of its own:
    ``(kernel, arch, cubin bytes, shared bytes)`` of every launch. Fails the test with either step's error."""
    path = str(folder / "launches.json")
    rows = []
    for step, interpret in (("capture", "1"), ("compile", "0")):
        env = dict(os.environ, TRITON_INTERPRET=interpret)
        done = subprocess.run([sys.executable, __file__, step, path], capture_output=True, text=True, env=env,
                              timeout=900)
        assert done.returncode == 0, f"{step}: {done.stderr[-3000:]}"
        rows = [line.split() for line in done.stdout.split("\n") if line.strip()]
    return [(name, int(arch), int(cubin), int(shared)) for name, arch, cubin, shared in rows]


if __name__ == "__main__":
    {"capture": capture, "compile": compile_captured}[sys.argv[1]](sys.argv[2])
