"""Compile the warp-specialized kernel for sm_90 on a machine without a GPU, and read what the compiler made.

For each kernels package given (the tree's ``vlmsparse/kernels``, or a version materialised by variants.py under
``notes/ab/.variants/<tag>``) and each configuration (pooled or binary, with or without tail, the chained-launch
flag), it writes the cubin and its SASS to ``--out`` and prints the shared memory, the registers and stack from
``cuobjdump -res-usage``, and every loop of the SASS (found by its backward branch) with its instruction, HGMMA,
MUFU, global-load and local-memory counts. ``--same A B`` says whether two packages' SASS are instruction for
instruction the same (addresses and encodings left out): a change that compiles to the same code needs no GPU run.

Needs a Triton with Gluon for the target the device runs (``python -m venv /tmp/t36`` with the project's packages
visible, ``pip install triton==3.6.0``), which ships ptxas and cuobjdump:

    /tmp/t36/bin/python notes/ab/compile_sm90.py vlmsparse/kernels notes/ab/.variants/kernel-v22 --out /tmp/cc
    /tmp/t36/bin/python notes/ab/compile_sm90.py vlmsparse/kernels notes/ab/.variants/kernel-v22 --same
"""

import argparse
import importlib.util
import pathlib
import re
import subprocess
import sys

CONFIGS = {"pooled_tail": (True, True, 2), "pooled": (True, False, 0), "binary": (False, False, 0),
           "binary_tail": (False, True, 2)}


def load_package(path: pathlib.Path):
    """The kernels package at ``path`` as a module of its own (its ``pyramid_ws``)."""
    name = "compile_sm90_" + re.sub(r"\W", "_", str(path))
    spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(name + ".pyramid_ws")


def compile_kernel(ws, pooled: bool, tail: bool, pdl: int):
    if hasattr(ws, "compile_for_sm90"):  # a package that says itself how it is launched (the tree since v23's)
        return ws.compile_for_sm90(pooled, tail, pdl)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    def desc(rows):
        return f"tensordesc<bf16[1, 1, {rows}, 128],{ws._box_layout(rows)!r}>"

    fn = ws._pyramid_ws_fwd
    # every descriptor argument a 128-row box but Q's and the tail key's (a version may say, Q_ROWS and TAIL_ROWS;
    # Q's 64 to date); the tail's float32 operand by either of its names
    rows = dict(desc_q=getattr(ws, "Q_ROWS", 64), desc_kt=getattr(ws, "TAIL_ROWS", 128),
                desc_vt=getattr(ws, "TAIL_ROWS", 128))
    types = {n: desc(rows.get(n, 128)) for n in fn.arg_names if n.startswith("desc_")}
    # versions that copy the tail's mean value (TAIL_VALUE_ROWS), or its mean key and value (TAIL_FLAT_ROWS), as
    # unswizzled rows
    flat_rows = {n: getattr(ws, attr) for attr, names in (("TAIL_VALUE_ROWS", ("desc_vt",)),
                                                          ("TAIL_FLAT_ROWS", ("desc_kt", "desc_vt")))
                 if getattr(ws, attr, None) for n in names}
    if flat_rows:
        from triton.experimental.gluon import language as gl
        flat = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=4)
        types.update({n: f"tensordesc<bf16[1, 1, {r}, 128],{flat!r}>" for n, r in flat_rows.items()})
    types.update(BlockIdx="*i32", CatOff="*i32", Out="*bf16", SkipSums="*fp32", TailN="*fp32", qk_scale="fp32",
                 Sched="*i32", MeanK="*bf16", MeanV="*bf16")
    flags = dict(CAUSAL=True, POOLED=pooled, TAIL=tail, PDL=pdl, STAGES=ws.STAGES, CONSUMER_REGS=ws.REGS[0],
                 PRODUCER_REGS=ws.REGS[1])
    signature = {n: "constexpr" if n in flags else types.get(n, "i32") for n in fn.arg_names}
    constexprs = {(fn.arg_names.index(n),): v for n, v in flags.items()}
    # pointers 16-byte aligned, as a launch specialises them (else no load is vectorised)
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if signature[n].startswith("*")}
    source = GluonASTSource(fn, signature, constexprs, attrs)
    # the launch's num_warps: the consumer partition's warps (a version may say, NUM_WARPS; the kernels to date 4)
    num_warps = getattr(ws, "NUM_WARPS", 4)
    return triton.compile(source, target=GPUTarget("cuda", 90, 128),
                          options=dict(num_warps=num_warps, maxnreg=ws.REGS[2]))


def tool(name: str) -> str:
    import triton

    return str(pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def instructions(sass: str) -> list[tuple[int, str]]:
    return [(int(m.group(1), 16), m.group(2).strip())
            for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]


def loops(code: list[tuple[int, str]]) -> list[tuple[int, int, list[str]]]:
    found = []
    for address, text in code:
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < address:
            start = int(m.group(1), 16)
            found.append((start, address, [t for a, t in code if start <= a <= address]))
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("packages", nargs="+", type=pathlib.Path, help="kernels package folders")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("compile_sm90_out"))
    p.add_argument("--same", action="store_true", help="only say whether the packages' SASS is the same")
    p.add_argument("--min-loop", type=int, default=250, help="list loops of at least this many instructions")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sass_of = {}
    for package in args.packages:
        ws = load_package(package.resolve())
        for config in args.configs:
            kernel = compile_kernel(ws, *CONFIGS[config])
            stem = args.out / f"{re.sub(r'[^A-Za-z0-9_-]', '_', str(package))}_{config}"
            stem.with_suffix(".cubin").write_bytes(kernel.asm["cubin"])
            sass = subprocess.run([tool("cuobjdump"), "-sass", str(stem.with_suffix(".cubin"))], capture_output=True,
                                  text=True, check=True).stdout
            stem.with_suffix(".sass").write_text(sass)
            code = instructions(sass)
            sass_of[package, config] = [t for _, t in code]
            if args.same:
                continue
            usage = subprocess.run([tool("cuobjdump"), "-res-usage", str(stem.with_suffix(".cubin"))],
                                   capture_output=True, text=True, check=True).stdout
            regs = re.search(r"REG:(\d+) STACK:(\d+)", usage)
            print(f"{package} {config}: shared {kernel.metadata.shared} B, registers {regs.group(1)}, "
                  f"stack {regs.group(2)} B, {len(code)} instructions")
            for start, end, body in loops(code):
                if args.min_loop <= len(body) <= 1500:
                    count = lambda key: sum(key in t for t in body)  # noqa: E731
                    print(f"  loop {start:#07x}-{end:#07x}: {len(body)} instructions, HGMMA {count('HGMMA')}, "
                          f"MUFU {count('MUFU')}, LDG {count('LDG')}, LDL {count('LDL')}, STL {count('STL')}")
    if args.same:
        first = args.packages[0]
        for package in args.packages[1:]:
            for config in args.configs:
                same = sass_of[first, config] == sass_of[package, config]
                print(f"{first} and {package}, {config}: {'the same SASS' if same else 'different SASS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
