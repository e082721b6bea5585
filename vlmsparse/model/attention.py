"""The attention function registered with transformers' ``AttentionInterface``.

It is registered under ``"vlmsparse+<original>"`` (e.g. ``"vlmsparse+sdpa"``): the part after ``+`` is the
implementation the model had, which serves every call the sparse path does not take. The mask function
registered under the same name is the original one's, so the model builds the masks it always built.

Per call (one decoder layer), with ``q [B, Hq, Lq, D]`` and ``k, v [B, Hkv, Lk, D]`` (queries are the last
``Lq`` of the ``Lk`` positions):

- prefill (``Lq > 1``) with visual tokens among the keys: ``planners.for_layer(module.layer_idx).plan(q, k,
  visual, interleaved_text)`` (one planner per distinct per-layer setting; see ``vlmsparse.methods.layers``) then
  ``vlmsparse.kernels.pyramid_attention`` (the Triton kernel on CUDA, or on CPU under ``TRITON_INTERPRET=1``;
  otherwise the same maths in plain PyTorch, ``pyramid_attention_blockwise``, said once in the log). Padded samples are served one by one on their
  unpadded slice, so padding is never attended.
  With a static KV cache (``cache_implementation="static"``) the keys are the cache's whole preallocated length:
  the sparse path takes the sequence's first ``Lk`` of them (the rest are slots not written yet).
- everything else (decode steps, text-only prompts, training with dropout, sliding windows, a layout that could
  not be read, non-contiguous padding) goes to the original implementation untouched; why is logged once.

An *observer* patch (``vlmsparse.model.observe``) plans nothing: each decoder layer's prefill ``q, k, v`` and
token layout are handed to a callback, then the original implementation runs (calibration profiles layers so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from vlmsparse.kernels.blockwise import pyramid_attention_blockwise
from vlmsparse.kernels.validation import triton_can_run
from vlmsparse.methods import LayerPlanners, Method, PlanSparsity

from .families import ModelFamily
from .layout import LayoutTracker
from .stats import PatchStats

__all__ = [
    "NAME_PREFIX", "implementation_name", "original_implementation", "PatchState", "PrefillAttention",
    "sparse_attention_forward",
]

logger = logging.getLogger("vlmsparse")

NAME_PREFIX = "vlmsparse+"

#: id(text config) -> state of the patch on that model
_STATES: dict[int, "PatchState"] = {}
#: registered implementation name -> number of patched models using it
_REGISTERED: dict[str, int] = {}


def implementation_name(original: str) -> str:
    """The name this package registers for a model whose attention implementation was ``original``."""
    return NAME_PREFIX + original


def original_implementation(name: str) -> str | None:
    """Inverse of :func:`implementation_name` (None if ``name`` is not one of ours)."""
    return name[len(NAME_PREFIX) :] if isinstance(name, str) and name.startswith(NAME_PREFIX) else None


def register_implementation(original: str) -> str:
    """Register the sparse attention function (and the original's mask function) for ``original``."""
    name = implementation_name(original)
    if original not in ALL_MASK_ATTENTION_FUNCTIONS:
        raise ValueError(
            f"cannot patch a model whose attention implementation is {original!r}: transformers has no mask "
            f"function for it; load the model with attn_implementation='sdpa', 'eager' or a flash implementation"
        )
    if _REGISTERED.get(name, 0) == 0:
        AttentionInterface.register(name, sparse_attention_forward)
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    _REGISTERED[name] = _REGISTERED.get(name, 0) + 1
    return name


def unregister_implementation(name: str) -> None:
    """Drop one use of ``name``; remove the registrations when no patched model uses it any more."""
    count = _REGISTERED.get(name, 0) - 1
    if count > 0:
        _REGISTERED[name] = count
        return
    _REGISTERED.pop(name, None)
    # transformers has no public way to unregister: remove the entries `register` added.
    AttentionInterface._global_mapping.pop(name, None)
    AttentionMaskInterface._global_mapping.pop(name, None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PrefillAttention:
    """One decoder layer's prefill attention inputs, as an observer gets them (batch 1, no padding).

    ``q [1, Hq, Lq, D]``, ``k, v [1, Hkv, Lk, D]`` (after rotary embedding), ``visual`` bool ``[1, Lk]``,
    ``scaling`` the softmax scale the model uses (None: ``1 / sqrt(D)``), ``interleaved_text`` bool ``[1, Lk]``
    (text inside a visual span, planned as visual; None: none).
    """

    layer: int
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    visual: torch.Tensor
    scaling: float | None
    interleaved_text: torch.Tensor | None = None


@dataclass
class PatchState:
    """Everything the attention function needs for one patched model."""

    planners: LayerPlanners
    family: ModelFamily
    original: str
    dense_fn: Callable
    tracker: LayoutTracker
    stats: PatchStats
    #: set for an observer patch: called with each layer's PrefillAttention, then the original attention runs
    observer: Callable[[PrefillAttention], None] | None = None
    _said: set[str] = field(default_factory=set)

    @property
    def method(self) -> Method:
        """The planner of the layers without a setting of their own."""
        return self.planners.default

    def say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            logger.warning("vlmsparse: %s", message)

    # -- dense -----------------------------------------------------------------------------------------
    def dense(self, module, query, key, value, attention_mask, why: str | None, **kwargs):
        if why is not None:
            self.say_once(why, f"{why}: this case runs the model's own dense attention ({self.original})")
            if query.shape[2] > 1:
                self.stats.record_dense_prefill(self.tracker.forward_index)
        if not self.stats.timing:
            return self.dense_fn(module, query, key, value, attention_mask, **kwargs)
        _sync(query.device)
        start = time.perf_counter()
        out = self.dense_fn(module, query, key, value, attention_mask, **kwargs)
        _sync(query.device)
        self.stats.add_time(dense=time.perf_counter() - start)
        return out

    # -- sparse ----------------------------------------------------------------------------------------
    def _kernel(self, q, k, v, plan, scaling):
        if triton_can_run(q.device):
            return plan.run(q, k, v, sm_scale=scaling)
        kwargs = dict(sm_scale=scaling, **plan.kernel_kwargs())
        self.say_once(
            "reference",
            f"tensors on {q.device.type} and TRITON_INTERPRET is not set: using pyramid_attention_blockwise "
            "(the same maths in plain PyTorch, float32) instead of the Triton kernel",
        )
        return pyramid_attention_blockwise(q, k, v, plan.levels, **kwargs)

    def _plan_and_run(self, q, k, v, visual, interleaved, scaling, layer: int):
        timing = self.stats.timing
        if timing:
            _sync(q.device)
            t0 = time.perf_counter()
        plan = self.planners.for_layer(layer).plan(q, k, visual, interleaved)
        if timing:
            _sync(q.device)
            t1 = time.perf_counter()
        layout = self.method.layout(visual, q.shape[0], q.shape[2], k.shape[2], q.device)  # the plan's, memoised
        self.stats.record_layout(
            k.shape[2], visual.sum(-1).max(), layout.free.sum(), plan.block_m, plan.block_n
        )
        out = self._kernel(q, k, v, plan, scaling)
        if timing:
            _sync(q.device)
            self.stats.add_time(planning=t1 - t0, attention=time.perf_counter() - t1)
        return out, plan.sparsity()

    def sparse(self, module, query, key, value, visual, valid, scaling, interleaved=None):
        """Sparse prefill of one layer; returns ``[B, Lq, Hq, D]`` or None when a sample cannot be served."""
        lq, lk = query.shape[2], key.shape[2]
        layer = int(module.layer_idx)
        if valid is None:
            out, s = self._plan_and_run(query, key, value, visual, interleaved, scaling, layer)
        else:
            out = torch.zeros_like(query)
            parts = []
            for b in range(query.shape[0]):
                positions = valid[b].nonzero().flatten()
                if positions.numel() == 0:
                    return None
                start, end = int(positions[0]), int(positions[-1]) + 1
                if end - start != positions.numel():
                    return None  # holes in the mask: not a padded sequence
                q_start = max(start, lk - lq)
                if end <= q_start:
                    return None  # no real query in this sample
                qs = query[b : b + 1, :, q_start - (lk - lq) : end - (lk - lq)]
                ks, vs = key[b : b + 1, :, start:end], value[b : b + 1, :, start:end]
                inter = None if interleaved is None else interleaved[b : b + 1, start:end]
                o, s_b = self._plan_and_run(qs, ks, vs, visual[b : b + 1, start:end], inter, scaling, layer)
                out[b : b + 1, :, q_start - (lk - lq) : end - (lk - lq)] = o
                parts.append(s_b)
            s = PlanSparsity(*(torch.cat([getattr(p, f) for p in parts]) for f in ("cost", "blocks", "visual_cost", "visual_blocks")))
        self.stats.record(self.tracker.forward_index, layer, s)
        return out.transpose(1, 2).contiguous()

    # -- dispatch --------------------------------------------------------------------------------------
    def __call__(self, module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None, **kwargs):
        dense_kwargs = dict(dropout=dropout, scaling=scaling, sliding_window=sliding_window, **kwargs)
        lq, lk = query.shape[2], key.shape[2]
        if lq == 1:
            return self.dense(module, query, key, value, attention_mask, None, **dense_kwargs)
        if not isinstance(module, self.family.attention_classes):
            return self.dense(module, query, key, value, attention_mask, f"module {type(module).__name__} is not a decoder attention", **dense_kwargs)
        if dropout and module.training:
            return self.dense(module, query, key, value, attention_mask, "attention dropout (training)", **dense_kwargs)
        if sliding_window is not None:
            return self.dense(module, query, key, value, attention_mask, "sliding-window attention layer", **dense_kwargs)
        if any(kwargs.get(n) is not None for n in ("cu_seq_lens_q", "cu_seq_lens_k")):
            return self.dense(module, query, key, value, attention_mask, "packed sequences (cu_seq_lens)", **dense_kwargs)
        layout = self.tracker.layout
        if layout.visual is None:
            why = f"token layout unknown ({layout.unknown_reason or 'no forward of the patched model seen'})"
            return self.dense(module, query, key, value, attention_mask, why, **dense_kwargs)
        if layout.preallocated and lq <= layout.length < lk:
            lk = layout.length  # a static cache: the slots past the sequence are not written yet
        if layout.length != lk or layout.visual.shape[0] != query.shape[0]:
            why = f"token layout covers {layout.length} positions but attention sees {lk}"
            return self.dense(module, query, key, value, attention_mask, why, **dense_kwargs)
        if not layout.has_visual:
            self.stats.record_dense_prefill(self.tracker.forward_index)
            return self.dense(module, query, key, value, attention_mask, None, **dense_kwargs)
        visual = layout.visual.to(query.device)
        valid = None if layout.valid is None else layout.valid.to(query.device)
        interleaved = None if layout.interleaved_text is None else layout.interleaved_text.to(query.device)
        scale = float(scaling) if scaling is not None else None
        # from here every path sees the sequence's keys only (transformers' own implementations, which the dense
        # fallbacks call, cut the cache's mask to the keys they get)
        if key.shape[2] != lk:
            key, value = key[:, :, :lk], value[:, :, :lk]
        if self.observer is not None:
            if valid is not None or query.shape[0] != 1:
                return self.dense(module, query, key, value, attention_mask, "observing a padded or batched prefill", **dense_kwargs)
            self.observer(PrefillAttention(int(module.layer_idx), query, key, value, visual, scale, interleaved))
            return self.dense(module, query, key, value, attention_mask, None, **dense_kwargs)
        out = self.sparse(module, query, key, value, visual, valid, scale, interleaved)
        if out is None:
            return self.dense(module, query, key, value, attention_mask, "padding that is not a contiguous run per sample", **dense_kwargs)
        return out, None


def sparse_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """The function registered with ``AttentionInterface`` (one call per decoder layer)."""
    state = _STATES.get(id(module.config))
    if state is None:
        # A model whose config still names this function but which was never (or is no longer) patched.
        original = original_implementation(getattr(module.config, "_attn_implementation", "")) or "sdpa"
        fn = ALL_ATTENTION_FUNCTIONS[original] if original in ALL_ATTENTION_FUNCTIONS else None
        if fn is None:
            raise RuntimeError(
                f"{type(module).__name__} runs vlmsparse's attention but its model is not patched; call "
                "vlmsparse.patch(model) again or model.set_attn_implementation(...) to restore it"
            )
        return fn(module, query, key, value, attention_mask, **kwargs)
    return state(module, query, key, value, attention_mask, **kwargs)
