"""Past kernel versions for the A/B scripts beside it, from git tags (never kept as copies in the tree).

A version is the ``vlmsparse/kernels`` package as it was at a tag (``kernel-v7``, ``kernel-exp-lazy``, ...;
``git tag -l 'kernel-*' 'antidiagonal-*'`` lists them, notes/kernel.md says what each was). ``materialise`` writes
it with ``git archive`` into ``notes/ab/.variants/<tag>/`` (ignored by git); ``load`` imports that folder as a
package of its own, so the version runs with its own helpers (pyramid, plan lists, validation) and the current
package is untouched. On a machine without the git history, materialise here first and carry the folder:
``python notes/ab/variants.py kernel-v7`` then run with ``notes/ab/.variants`` carried.

The scripts run as ``python notes/ab/<script>.py`` from the repository root (this folder is then on the import
path).
"""

import ast
import importlib.util
import io
import pathlib
import subprocess
import sys
import tarfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VARIANTS = HERE / ".variants"
KERNELS = "vlmsparse/kernels"


def precomputed_sums(pyramid_module):
    """Make ``pyramid_module.skipped_key_sums`` (the tree's or a version's) compute each form it is asked for once,
    the float32 sums or a version's tail-key means (``means=``), and hand that back on every later call: the
    skipped-sums launch leaves the timed or profiled calls after the first. Returns the original, to put back."""
    original = pyramid_module.skipped_key_sums
    computed = {}

    def given(*args, **kwargs):
        key = kwargs.get("means")
        if key not in computed:
            computed[key] = original(*args, **{n: x for n, x in kwargs.items() if n != "chained"})
        return computed[key]

    pyramid_module.skipped_key_sums = given
    return original


def revision(tag: str) -> str:
    """``tag`` itself where git knows it, else its commit in notes/tags.tsv (a copy of the repository has no tags)."""
    from tags import INDEX, is_commit, read_index  # notes/ab/tags.py, beside this file

    if is_commit(tag) or not INDEX.is_file():
        return tag
    return next((commit for name, commit, _ in read_index() if name == tag and commit != "-"), tag)


def materialise(tag: str) -> pathlib.Path:
    """Write the kernels package at ``tag`` (a revision, or a name in notes/tags.tsv) to
    ``notes/ab/.variants/<tag>/`` (replacing what was there)."""
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", revision(tag), KERNELS], cwd=ROOT, check=True,
                                 capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        raise SystemExit(f"cannot read {KERNELS} at {tag!r} from git ({detail.decode().strip() or e}); "
                         "pass a commit, or a tag (`python notes/ab/tags.py --apply` makes them from "
                         "notes/tags.tsv)") from None
    out = VARIANTS / tag
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".py"):
                (out / pathlib.Path(member.name).name).write_bytes(tar.extractfile(member).read())
    return out


def load(tag: str, module: str = "pyramid"):
    """The ``module`` (``pyramid``, ``antidiagonal``, ...) of the kernels package at ``tag``, materialised if
    it is not yet and git is at hand."""
    folder = VARIANTS / tag
    if not (folder / "__init__.py").is_file():
        folder = materialise(tag)
    name = "kernels_" + tag.replace("-", "_").replace(".", "_")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.{module}")


def _code(path: pathlib.Path) -> str:
    """The code of a Python file without its comments and docstrings (its syntax tree, dumped)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def same_as_tree(tag: str) -> bool:
    """Whether the materialised version ``tag`` is the tree's own kernels (every ``.py`` of both folders the same
    code, comments and docstrings aside): an A/B of it against the tree measures nothing (a call run from a checkout
    of the version's own branch does that)."""
    folder, tree = VARIANTS / tag, ROOT / KERNELS
    mine = {f.name: _code(f) for f in folder.glob("*.py")}
    theirs = {f.name: _code(f) for f in tree.glob("*.py")}
    return bool(mine) and mine == theirs


def package_of(module):
    """The kernels package a loaded version's module belongs to (its own ``build_kv_pyramid``, ...)."""
    return sys.modules[module.__package__]


def compiled_kernels(jit_fn):
    """Every compiled specialisation of a Triton ``@jit`` function, handles initialised (to read registers)."""
    for cache in getattr(jit_fn, "device_caches", {}).values():
        for kernel in cache[0].values():
            kernel._init_handles()
            yield kernel


def resources(jit_fn) -> list[tuple[int, int, int, int]]:
    """(num_warps, shared bytes, registers, spills) of each compiled specialisation, sorted, no repeats."""
    return sorted({(k.metadata.num_warps, k.metadata.shared, k.n_regs, k.n_spills) for k in compiled_kernels(jit_fn)})


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python notes/ab/variants.py TAG [TAG ...]  (tags: git tag -l 'kernel-*')")
    for tag in sys.argv[1:]:
        print("wrote", materialise(tag).relative_to(ROOT))
