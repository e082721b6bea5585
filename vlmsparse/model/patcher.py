"""``vlmsparse.patch``: sparse prefill attention for a loaded Hugging Face VLM, and its undo.

Through transformers' own extension points only: the sparse attention function is registered with
``AttentionInterface`` and the text decoder's attention implementation is switched to it with
``model.set_attn_implementation({"text_config": ...})``; a forward pre-hook on the model reads the token layout
from ``input_ids``. By default the vision tower's windowed / per-frame attention is switched too, to one kernel
launch per layer, its blocks compiled on CUDA (``vision="compiled"``, :mod:`vlmsparse.model.vision`;
``vision="segment"``: the one launch alone; ``vision="unpatched"`` leaves the tower alone).
No model code is copied and no class is modified.

    handle = vlmsparse.patch(model, method="psa")     # keywords: fields of the method's config
    model.generate(**inputs)
    print(handle.stats.summary())
    handle.unpatch()                                  # or: with vlmsparse.patch(model, ...): ...

A run config with per-layer settings (``config_file="calibrated.toml"``, see ``vlmsparse.methods.layers``) gives
each decoder layer its own planner; ``observe(model, callback)`` hands each layer's prefill q/k/v to a callback
and changes nothing (calibration profiles layers through it).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from vlmsparse.methods import LayerPlanners, Method, get_method_class, get_planners

from .attention import (
    _STATES,
    PatchState,
    PrefillAttention,
    original_implementation,
    register_implementation,
    unregister_implementation,
)
from .families import ModelFamily, family_for_model
from .layout import LayoutTracker
from .stats import PatchStats
from .vision import VisionPatch, check_vision_mode, patch_vision

__all__ = ["patch", "observe", "PatchHandle", "active_handle"]

#: id(text config) -> the active handle of that model
_HANDLES: dict[int, "PatchHandle"] = {}


def active_handle(model: torch.nn.Module) -> "PatchHandle | None":
    """The active patch handle of ``model``, if it is patched."""
    family = family_for_model(model)
    return _HANDLES.get(id(family.text_config(model.config)))


def _text_model(model: torch.nn.Module, text_config) -> PreTrainedModel:
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module.config is text_config:
            return module
    raise ValueError(f"{type(model).__name__} holds no sub-model with the decoder config; cannot switch its attention")


def _dense_function(family: ModelFamily, original: str):
    if original == "eager":
        return family.eager_attention
    if original not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(
            f"the model's attention implementation {original!r} is not registered with transformers; "
            "load it with attn_implementation='sdpa' (or 'eager', or a flash implementation)"
        )
    return ALL_ATTENTION_FUNCTIONS[original]


class PatchHandle:
    """An active patch: ``stats``, ``method``, ``unpatch()``; also a context manager that unpatches on exit."""

    def __init__(
        self,
        model: torch.nn.Module,
        family: ModelFamily,
        state: PatchState,
        implementation: str,
        hook: torch.utils.hooks.RemovableHandle,
        vision: VisionPatch | None = None,
    ) -> None:
        self._model_ref = weakref.ref(model)
        self._key = id(family.text_config(model.config))
        self.family = family
        self._state = state
        self._implementation = implementation
        self._hook = hook
        self.vision = vision
        self._finalizer = weakref.finalize(model, _forget, self._key, implementation)

    # -- what users read -------------------------------------------------------------------------------
    @property
    def method(self) -> Method:
        """The planner in use (``handle.method.config`` holds its settings); with per-layer settings, the planner
        of the layers without their own (``handle.planners`` has every layer's)."""
        return self._state.method

    @property
    def planners(self) -> LayerPlanners:
        """Every decoder layer's planner (``planners.for_layer(i)``)."""
        return self._state.planners

    @property
    def stats(self) -> PatchStats:
        """Sparsity and time statistics (see :class:`vlmsparse.model.stats.PatchStats`)."""
        return self._state.stats

    @property
    def model(self) -> torch.nn.Module | None:
        return self._model_ref()

    @property
    def active(self) -> bool:
        """True until ``unpatch()`` (or until the model is patched again)."""
        return _HANDLES.get(self._key) is self

    @property
    def original_attn_implementation(self) -> str:
        """The decoder attention implementation the model had (and gets back on ``unpatch()``)."""
        return self._state.original

    def __repr__(self) -> str:
        status = "active" if self.active else "inactive"
        return (
            f"PatchHandle({self.family.name}, method={self.method.name!r}, "
            f"dense={self._state.original!r}, {status})"
        )

    # -- undo ------------------------------------------------------------------------------------------
    def unpatch(self) -> None:
        """Restore the model exactly: attention implementation, hook and registrations. Idempotent."""
        if not self.active:
            return
        model = self._model_ref()
        self._hook.remove()
        if model is not None:
            _switch(model, self.family, self._state.original)
        if self.vision is not None:
            self.vision.restore()
        _HANDLES.pop(self._key, None)
        _STATES.pop(self._key, None)
        unregister_implementation(self._implementation)
        self._finalizer.detach()

    def __enter__(self) -> "PatchHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.unpatch()


def _forget(key: int, implementation: str) -> None:
    """The model was garbage-collected while patched: drop what refers to it."""
    if _HANDLES.pop(key, None) is not None:
        _STATES.pop(key, None)
        unregister_implementation(implementation)


def _switch(model: torch.nn.Module, family: ModelFamily, implementation: str) -> None:
    """Set the decoder's attention implementation (only its sub-config) and check that it took."""
    request: Any = {family.text_config_key: implementation} if family.text_config_key else implementation
    model.set_attn_implementation(request)
    got = family.text_config(model.config)._attn_implementation
    if got != implementation:
        raise ValueError(
            f"could not set the decoder attention of {type(model).__name__} to {implementation!r} (it is {got!r}); "
            "its decoder does not dispatch through transformers' AttentionInterface"
        )


def patch(
    model: torch.nn.Module,
    method: str | Method | LayerPlanners | None = None,
    *,
    config_file: str | Path | None = None,
    timing: bool = False,
    vision: str = "compiled",
    **config: Any,
) -> PatchHandle:
    """Make the prefill attention of ``model``'s text decoder sparse with ``method``; returns a :class:`PatchHandle`.

    Args:
        model: a loaded model of a supported family (``vlmsparse.model.supported_families()``: Qwen2-VL,
            Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, LLaVA-OneVision), ``*ForConditionalGeneration`` or base ``*Model``.
        method: a method name (``vlmsparse.methods.available_methods()``), a built ``Method``, or built
            ``LayerPlanners`` (``vlmsparse.methods.get_planners``); default: the method ``config_file`` names,
            else ``"psa"``. A name that differs from the file's method raises ``ValueError``.
        config_file: a run config TOML (``evals/*.toml``) whose ``[method_config]`` sets the method's fields and
            whose ``[[layer_overrides]]`` (if any) set some layers' own; a config made for another decoder layer
            count raises ``ValueError``.
        timing: measure planning and attention time (synchronises the device around them).
        vision: ``"compiled"`` (default) runs the vision tower's windows and frames in one kernel launch per layer
            where it would otherwise loop over them, and on CUDA compiles each vision block (``torch.compile``;
            the first forward pays the compilation); ``"segment"``: the one launch alone; both exact up to
            rounding and restored by ``unpatch()``; ``"unpatched"`` leaves the tower alone.
        config: fields of the method's config (override the file), e.g. ``block_m=64, thresholds=[...]``.

    Prefill with visual tokens runs the planner and the pyramid kernel; decode steps and text-only prompts run
    the model's original attention. Patching a patched model replaces the earlier patch.
    """
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a loaded transformers model, got {type(model).__name__}")
    check_vision_mode(vision)
    family = family_for_model(model)
    text_config = family.text_config(model.config)
    layers = list(family.attention_modules(model))
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no {', '.join(c.__name__ for c in family.attention_classes)} module; "
            "is this a model of the family it claims to be?"
        )
    text_model = _text_model(model, text_config)
    if not text_model._can_set_attn_implementation():
        raise ValueError(
            f"{type(text_model).__name__} does not dispatch attention through transformers' AttentionInterface; "
            f"supported families: {sorted([family.name])}"
        )
    if isinstance(method, (Method, LayerPlanners)):
        if config_file is not None or config:
            raise ValueError("pass either a built Method or a method name with config, not both")
        planners = method if isinstance(method, LayerPlanners) else LayerPlanners(method)
    elif method is None or isinstance(method, str):
        planners = get_planners(method, config_file=config_file, **config)  # None: the file's method, or psa
    else:
        raise ValueError(f"method must be a method name or a vlmsparse Method, got {type(method).__name__}")
    planners.check_model(len(layers), text_config.num_attention_heads, text_config.num_key_value_heads)
    return _install(model, family, planners, timing=bool(timing), vision=vision)


def observe(model: torch.nn.Module, observer: Callable[[PrefillAttention], None]) -> PatchHandle:
    """Hand each decoder layer's prefill ``q, k, v`` and token layout to ``observer``; the model's own attention
    still computes everything (outputs unchanged). Batch 1, unpadded prefills only; returns a handle to undo it."""
    family = family_for_model(model)
    if not list(family.attention_modules(model)):
        raise ValueError(f"{type(model).__name__} has no decoder attention module to observe")
    dense = LayerPlanners(get_method_class("dense")())
    return _install(model, family, dense, timing=False, observer=observer, vision="unpatched")


def _install(
    model: torch.nn.Module,
    family: ModelFamily,
    planners: LayerPlanners,
    *,
    timing: bool,
    observer: Callable[[PrefillAttention], None] | None = None,
    vision: str = "unpatched",
) -> PatchHandle:
    text_config = family.text_config(model.config)
    key = id(text_config)
    if (previous := _HANDLES.get(key)) is not None:
        previous.unpatch()
    original = text_config._attn_implementation
    if (inner := original_implementation(original)) is not None:
        original = inner  # the config still names our function from a patch that was not undone
    dense_fn = _dense_function(family, original)
    name = register_implementation(original)
    state = PatchState(
        planners=planners,
        family=family,
        original=original,
        dense_fn=dense_fn,
        tracker=LayoutTracker(
            family.visual_token_ids(model.config),
            interleaved_token_ids=family.interleaved_token_ids(model.config),
            interleaved_text_max_run=family.interleaved_text_max_run,
        ),
        stats=PatchStats(timing=timing),
        observer=observer,
    )
    hook = model.register_forward_pre_hook(state.tracker.pre_hook, with_kwargs=True)
    vision_patch = None
    try:
        _switch(model, family, name)
        vision_patch = patch_vision(model, vision)
    except Exception:
        hook.remove()
        unregister_implementation(name)
        if family.text_config(model.config)._attn_implementation != original:
            _switch(model, family, original)
        raise
    _STATES[key] = state
    handle = PatchHandle(model, family, state, name, hook, vision=vision_patch)
    _HANDLES[key] = handle
    return handle
