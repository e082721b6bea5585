"""Offline per-layer calibration: ``python -m vlmsparse.calibrate``.

Runs a model dense on calibration samples (or the synthetic many-layer source), measures for each decoder layer
(and head) how attention error, recall and sparsity grow with the method's knob, chooses per-layer knob values
that reach a target overall sparsity with the least total error (or the most sparsity within an error budget),
and writes a run config with per-layer settings plus a profile, a plot and held-out figures.

- ``knobs``: the knob of each method and its grid;
- ``measure``: one layer's figures for a list of planners (cost, error against dense, recall, per plan head);
- ``profile``: samples x layers through a source, one layer at a time;
- ``choose``: the allocation over the per-layer curves (convex hull, exact target);
- ``synthetic``: the synthetic source; ``model_source``: a loaded model on a benchmark's samples;
- ``run``: one calibration end to end; ``report``: the files it writes; ``cli``: the command line.
"""
