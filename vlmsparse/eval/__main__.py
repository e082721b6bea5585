"""``python -m vlmsparse.eval``: see :mod:`vlmsparse.eval.cli`."""

from .cli import main

raise SystemExit(main())
