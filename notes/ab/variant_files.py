"""Loading the kernel files kept in this folder as modules, for the A/B scripts beside it (run as
``python notes/ab/<script>.py``, which puts this folder on the import path)."""

import importlib.util
import pathlib


def load(name):
    """The module of ``name``, a file in this folder (``pyramid_v7.py``)."""
    path = pathlib.Path(__file__).with_name(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass the name of a kernel file in notes/ab")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
