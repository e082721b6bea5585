"""Per-family patch descriptions (installed as ``vlmsparse.patches``).

One module per supported model family, each defining ``FAMILY = vlmsparse.model.families.ModelFamily(...)``:
the config fields of its visual token ids, its decoder attention classes and its eager attention function.
The generic patcher (``vlmsparse.model.patcher``) does the rest.
"""
