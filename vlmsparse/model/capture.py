"""A model's own prefill attention inputs, captured and saved, so the benchmarks can run on learned attention.

:func:`capture_qkv` runs one dense prefill with the decoder's attention observed
(:func:`vlmsparse.model.patcher.observe`) and keeps each chosen layer's post-rotary ``q``, ``k``, ``v`` and token
layout, exactly as a planner receives them. :func:`save_capture` writes them to one file (format
``vlmsparse-qkv/1``: a ``torch.save`` dictionary of plain tensors and strings, read back with
``weights_only=True``), and :func:`load_capture` reads and checks one. ``python -m vlmsparse.bench capture``
makes such a file from a model and a video; ``bench fidelity --inputs`` and ``bench pareto --inputs`` take it
in place of their generated inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

__all__ = ["FORMAT", "LayerQKV", "Capture", "capture_qkv", "save_capture", "load_capture"]

#: The file format's name and version, stored in every file.
FORMAT = "vlmsparse-qkv/1"


@dataclass
class LayerQKV:
    """What one decoder layer's attention saw in a prefill."""

    layer: int
    q: torch.Tensor  # [1, Hq, L, D]
    k: torch.Tensor  # [1, Hkv, L, D]
    v: torch.Tensor  # [1, Hkv, L, D]
    visual: torch.Tensor  # [1, L] bool
    #: bool [1, L]: text inside a visual span (Qwen3-VL's frame timestamps), planned as visual; None: none
    interleaved_text: torch.Tensor | None = None
    #: the softmax scale the model uses (None: 1 / sqrt(D))
    scaling: float | None = None


@dataclass
class Capture:
    """A saved capture: its layers (in layer order), where it came from, and the file's stem as its name."""

    layers: list[LayerQKV]
    meta: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    @property
    def seq_len(self) -> int:
        return int(self.layers[0].q.shape[2])


@torch.no_grad()
def capture_qkv(model, inputs: dict, layers: Iterable[int] | None = None) -> list[LayerQKV]:
    """Run one prefill of ``inputs`` (batch of one) with its attention observed; the q/k/v of the decoder layers
    ``layers`` (every layer when None), in layer order.

    The model's own attention computes the output, so the prefill is dense. Layers not asked for are not copied.
    """
    from vlmsparse.model.patcher import observe

    wanted = None if layers is None else set(layers)
    seen: list[LayerQKV] = []

    def keep(att) -> None:
        if wanted is None or int(att.layer) in wanted:
            inter = None if att.interleaved_text is None else att.interleaved_text.detach().clone()
            seen.append(LayerQKV(int(att.layer), att.q.detach().clone(), att.k.detach().clone(),
                                 att.v.detach().clone(), att.visual.detach().clone(), inter, att.scaling))

    handle = observe(model, keep)
    try:
        model(**inputs, logits_to_keep=1)
    finally:
        handle.unpatch()
    return sorted(seen, key=lambda layer: layer.layer)


def save_capture(path: str | Path, layers: list[LayerQKV], meta: dict[str, Any], dtype: torch.dtype | None = None) -> Path:
    """Write ``layers`` (on the CPU, in ``dtype`` if given) and ``meta`` (strings and numbers) to ``path``; the
    file appears whole or not at all (written beside it, then renamed)."""
    if not layers:
        raise ValueError("nothing to save: no layer was captured")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def cpu(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to("cpu")
        return (t.to(dtype) if dtype is not None else t).contiguous()

    payload = {
        "format": FORMAT,
        "meta": dict(meta),
        "visual": layers[0].visual.detach().to("cpu", torch.bool).contiguous(),
        "layers": [{"layer": int(x.layer), "q": cpu(x.q), "k": cpu(x.k), "v": cpu(x.v),
                    "scaling": None if x.scaling is None else float(x.scaling)} for x in layers],
    }
    if layers[0].interleaved_text is not None:
        payload["interleaved_text"] = layers[0].interleaved_text.detach().to("cpu", torch.bool).contiguous()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_capture(path: str | Path, layers: Iterable[int] | None = None) -> Capture:
    """The capture in ``path`` (only ``layers`` of it when given); ``ValueError`` with one line saying what is
    wrong for a missing file, another kind of file, or tensors that do not fit together."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--inputs {path}: no such file; make one with python -m vlmsparse.bench capture")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, other formats
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"--inputs {path}: not a capture file ({first[:160]}); make one with "
                         "python -m vlmsparse.bench capture") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"--inputs {path}: not a {FORMAT} capture (found {found!r}); make one with "
                         "python -m vlmsparse.bench capture")
    visual = payload.get("visual")
    entries = payload.get("layers") or []
    if not isinstance(visual, torch.Tensor) or visual.dim() != 2 or not entries:
        raise ValueError(f"--inputs {path}: the capture holds no layers or no token layout")
    inter = payload.get("interleaved_text")
    if inter is not None and (not isinstance(inter, torch.Tensor) or tuple(inter.shape) != tuple(visual.shape)):
        raise ValueError(f"--inputs {path}: its interleaved-text mask does not have the layout's shape")
    wanted = None if layers is None else set(layers)
    out = []
    for entry in entries:
        q, k, v = entry["q"], entry["k"], entry["v"]
        ok = (q.dim() == k.dim() == v.dim() == 4 and q.shape[0] == k.shape[0] == 1 and k.shape == v.shape
              and q.shape[2] == k.shape[2] == visual.shape[1] and q.shape[3] == k.shape[3]
              and q.shape[1] % k.shape[1] == 0)
        if not ok:
            raise ValueError(f"--inputs {path}: layer {entry['layer']}'s q {tuple(q.shape)}, k {tuple(k.shape)}, "
                             f"v {tuple(v.shape)} and layout {tuple(visual.shape)} do not fit together")
        scaling = entry.get("scaling")
        if scaling is not None and abs(float(scaling) * q.shape[3] ** 0.5 - 1.0) > 1e-4:
            raise ValueError(f"--inputs {path}: layer {entry['layer']} uses softmax scale {scaling}, not "
                             f"1/sqrt({q.shape[3]}); the sweeps compare against 1/sqrt(head dim) attention")
        if wanted is None or int(entry["layer"]) in wanted:
            out.append(LayerQKV(int(entry["layer"]), q, k, v, visual, inter, scaling))
    if not out:
        have = [int(e["layer"]) for e in entries]
        raise ValueError(f"--inputs {path}: none of layers {sorted(wanted or [])} is in the capture (it has {have})")
    return Capture(sorted(out, key=lambda x: x.layer), dict(payload.get("meta") or {}), path.stem)
