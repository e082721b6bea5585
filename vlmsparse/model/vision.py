"""The vision tower's windowed and per-frame attention in one kernel launch per layer.

Qwen2.5-VL's vision tower attends within windows (most layers) and within frames (a few), given as
``cu_seqlens``. Unless a flash implementation is set, transformers runs that as a Python loop of one SDPA call per
window: thousands of small calls per layer on a long video. transformers hands the boundaries to the attention
function in one call only when the implementation's name contains "flash", so the segment kernel is registered
with ``AttentionInterface`` under :data:`IMPLEMENTATION` (``"vlmsparse_flash_segment"``) and the vision tower's own
sub-config is switched to it (``model.set_attn_implementation({"vision_config": ...})``); the decoder is not
touched. It receives ``q, k, v [1, H, N, D]`` and ``cu_seq_lens_q`` and runs
:func:`vlmsparse.kernels.segment_attention.segment_attention` (on CUDA, or on CPU under ``TRITON_INTERPRET=1``;
elsewhere the float64 reference, exact).

    vp = patch_vision(model)        # None where there is nothing to patch (see patch_vision)
    ...
    vp.restore()                    # the vision tower's own implementation again

``vision="compiled"`` (the default of ``vlmsparse.patch`` and of the harness) also compiles each vision block with
``torch.compile`` where the tower is on a CUDA device, the attention call left outside the graph: the block's
float32 RMSNorm, rotary embedding and SiLU-gated MLP then run as a few fused kernels instead of about twenty
elementwise passes over the activations each (on an H200 at 24,768 visual tokens the tower went from 0.75 s to
0.31 s; ``notes/vision_profile.py``). Shapes are compiled as dynamic, so videos of other lengths reuse the
compiled code; the first forward in a process pays the compilation (about 10 s there). Where the tower is not on
CUDA, or compilation fails, the blocks run as ``"segment"`` (a warning says why). ``"segment"`` is the segment
kernel alone, ``"unpatched"`` the model's own path. ``vlmsparse.patch(model, ...)`` does this by default, and
its ``unpatch()`` undoes it. :class:`VisionTimer` times the vision tower's forwards (CUDA events; no extra
synchronisation while it runs).
"""

from __future__ import annotations

import functools
import logging
import time
import weakref

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.generic import is_flash_attention_requested

from vlmsparse.kernels.segment_attention import SegmentLayout, segment_attention, segment_attention_ref, segment_layout
from vlmsparse.kernels.validation import triton_can_run

from .families import ModelFamily, family_for_model

__all__ = [
    "VISION_MODES",
    "IMPLEMENTATION",
    "check_vision_mode",
    "patch_vision",
    "VisionPatch",
    "vision_tower",
    "VisionTimer",
    "segment_attention_forward",
]

logger = logging.getLogger("vlmsparse")

#: ``compiled``: one launch per layer and each block compiled (on CUDA; the default); ``segment``: one launch per
#: layer; ``unpatched``: the model's own attention.
VISION_MODES = ("compiled", "segment", "unpatched")
#: ``torch.compile`` backend of the vision blocks (tests use ``"aot_eager"``: the same graph capture, no codegen).
COMPILE_BACKEND = "inductor"
#: Compile the blocks whatever their device (tests on CPU); otherwise only where the tower is on CUDA.
COMPILE_ANY_DEVICE = False
#: The name registered with AttentionInterface ("flash" in it makes transformers pass ``cu_seqlens`` in one call).
IMPLEMENTATION = "vlmsparse_flash_segment"

#: id(vision config) -> its active VisionPatch
_PATCHES: dict[int, "VisionPatch"] = {}
_said: set[str] = set()


def _say_once(key: str, message: str) -> None:
    if key not in _said:
        _said.add(key)
        logger.warning("vlmsparse: %s", message)


def check_vision_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`VISION_MODES`; otherwise a ``ValueError`` that lists them."""
    if mode not in VISION_MODES:
        raise ValueError(f"vision must be one of {', '.join(map(repr, VISION_MODES))}, got {mode!r}")
    return mode


# -- the attention function ---------------------------------------------------------------------------------------
class _LayoutCache:
    """Segment layouts of the last few ``cu_seqlens`` tensors: the layers of one forward share two of them."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._entries: list[tuple[weakref.ref, int, int, SegmentLayout]] = []

    def get(self, cu_seqlens: torch.Tensor, n: int) -> SegmentLayout:
        for ref, ptr, length, layout in self._entries:
            if ref() is cu_seqlens and ptr == cu_seqlens.data_ptr() and length == n:
                return layout
        layout = segment_layout(cu_seqlens, n)
        self._entries = [(weakref.ref(cu_seqlens), cu_seqlens.data_ptr(), n, layout)] + self._entries[: self.size - 1]
        return layout


_LAYOUTS = _LayoutCache()


def _per_segment(module, query, key, value, cu_seqlens, scaling, dropout, **kwargs):
    """The model's own path: one SDPA call per segment (kept for what the kernel does not cover)."""
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    parts = zip(*(torch.split(t, lengths, dim=2) for t in (query, key, value)))
    outs = [sdpa(module, q, k, v, None, scaling=scaling, dropout=dropout, is_causal=False, **kwargs)[0] for q, k, v in parts]
    return torch.cat(outs, dim=1), None


def segment_attention_forward(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    is_causal: bool = False,
    **kwargs,
):
    """The function registered as :data:`IMPLEMENTATION`: one vision layer's attention over all its segments.

    ``query, key, value [1, H, N, D]``; returns ``([1, N, H, D], None)`` as transformers' flash functions do.
    """
    n = query.shape[2]
    cu = cu_seq_lens_q
    if cu is None:
        cu = torch.tensor([0, n], dtype=torch.int32, device=query.device)
    if cu_seq_lens_k is not None and cu_seq_lens_k is not cu and not torch.equal(cu_seq_lens_k, cu):
        raise ValueError("segment attention needs the same segments for queries and keys (cu_seq_lens_q == cu_seq_lens_k)")
    scale = float(scaling) if scaling is not None else None
    if attention_mask is not None or is_causal or query.shape[0] != 1 or (dropout and module.training):
        _say_once("vision-fallback", "vision attention with a mask, causal, batched or with dropout: one SDPA call per segment")
        return _per_segment(module, query, key, value, cu, scale, dropout, **kwargs)
    if triton_can_run(query.device):
        out = segment_attention(query, key, value, layout=_LAYOUTS.get(cu, n), sm_scale=scale)
    else:
        _say_once(
            "vision-reference",
            f"vision tensors on {query.device.type} and TRITON_INTERPRET is not set: the vision tower's segment "
            "attention uses the plain-PyTorch reference (exact, slow)",
        )
        out = segment_attention_ref(query, key, value, cu, sm_scale=scale)
    return out.transpose(1, 2), None


def _attention_outside_graph(*args, **kwargs):
    """The registered function: :func:`segment_attention_forward`, kept out of ``torch.compile``'s graphs (its
    launcher reads the segment layout on the host and calls a Triton kernel)."""
    return segment_attention_forward(*args, **kwargs)


_attention_outside_graph = torch.compiler.disable(_attention_outside_graph)


class _CompiledForward:
    """One ``torch.compile`` of a vision block class's ``forward``, shared by every block and every patch in the
    process (the blocks' weights are graph inputs, shapes are dynamic), so it is compiled once per process.

    If compiling or running it raises and the class's own forward then answers the call, that forward answers
    every later one too, after one warning; if the own forward raises as well, the error is the inputs', it
    propagates and the compiled path stays.
    """

    def __init__(self, cls: type) -> None:
        self.eager = cls.forward
        self.failed: str | None = None
        try:
            self.compiled = torch.compile(cls.forward, backend=COMPILE_BACKEND, dynamic=True)
        except Exception as exc:  # no such backend, or torch.compile unavailable here
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.failed = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]
        logger.warning("vlmsparse: compiling the vision blocks failed (%s); they run uncompiled", self.failed)

    def __call__(self, block, *args, **kwargs):
        if self.failed is None:
            try:
                return self.compiled(block, *args, **kwargs)
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # compilation or a compiled kernel failed: the eager path answers
                out = self.eager(block, *args, **kwargs)  # raises where the inputs, not the compilation, are at fault
                self._fail(exc)
                return out
        return self.eager(block, *args, **kwargs)


#: (block class, backend) -> its compiled forward
_COMPILED: dict[tuple[type, object], _CompiledForward] = {}


class _CompiledBlocks:
    """The blocks of one patched tower, each calling the shared :class:`_CompiledForward`; ``restore()`` undoes it."""

    def __init__(self, blocks: list[torch.nn.Module]) -> None:
        self.blocks = blocks
        key = (type(blocks[0]), COMPILE_BACKEND)
        if key not in _COMPILED:
            _COMPILED[key] = _CompiledForward(key[0])
        self.forward = _COMPILED[key]
        for block in blocks:
            block.forward = functools.partial(self.forward, block)

    @property
    def failed(self) -> str | None:
        return self.forward.failed

    def restore(self) -> None:
        for block in self.blocks:
            if "forward" in block.__dict__:
                del block.forward


def _compile_blocks(tower: torch.nn.Module) -> _CompiledBlocks | None:
    """Compile ``tower.blocks`` where that pays (see the module docstring); None where nothing was compiled."""
    blocks = getattr(tower, "blocks", None)
    if not isinstance(blocks, torch.nn.ModuleList) or len(blocks) == 0:
        return None
    if len({type(b) for b in blocks}) != 1 or any("forward" in b.__dict__ for b in blocks):
        _say_once("vision-compile-mixed", "the vision blocks are of several classes or already wrapped: not compiled")
        return None
    device = next(tower.parameters()).device
    if device.type != "cuda" and not COMPILE_ANY_DEVICE:
        _say_once(
            "vision-compile-device",
            f"vision='compiled' compiles the vision blocks on CUDA only; the tower is on {device.type}, so it runs as "
            "vision='segment'",
        )
        return None
    return _CompiledBlocks(list(blocks))


# -- patching -----------------------------------------------------------------------------------------------------
def vision_tower(model: torch.nn.Module, family: ModelFamily | None = None) -> PreTrainedModel | None:
    """The vision tower sub-model of ``model`` (the module whose config is the vision sub-config), if any."""
    family = family or family_for_model(model)
    if not family.vision_config_key:
        return None
    config = getattr(model.config, family.vision_config_key, None)
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module.config is config:
            return module
    return None


def _skip_flash_preload() -> None:
    """Let transformers' attention checks pass over :data:`IMPLEMENTATION`.

    From transformers 5.25 on, every ``set_attn_implementation`` call checks each sub-model's implementation and,
    for a name with "flash" in it, preloads a flash kernel (from the flash-attn packages or the hub), which fails
    for a registered function: the call that patches the tower, and every later one on the model (the decoder's
    patch and unpatch, a user's own) would raise. The preload is wrapped once so that it does nothing for this one
    name and what it did before for every other."""
    import transformers.modeling_utils as modeling_utils

    preload = getattr(modeling_utils, "lazy_import_flash_attention", None)
    if preload is None or getattr(preload, "_skips", None) == IMPLEMENTATION:
        return

    @functools.wraps(preload)
    def guarded(implementation, *args, **kwargs):
        if implementation == IMPLEMENTATION:
            return None
        return preload(implementation, *args, **kwargs)

    guarded._skips = IMPLEMENTATION
    modeling_utils.lazy_import_flash_attention = guarded


def _set_vision_implementation(model, family: ModelFamily, implementation: str) -> None:
    key = family.vision_config_key
    model.set_attn_implementation({key: implementation})
    got = getattr(model.config, key)._attn_implementation
    if got != implementation:
        raise ValueError(
            f"could not set the vision attention of {type(model).__name__} to {implementation!r} (it is {got!r}); "
            "pass vision='unpatched' to leave the vision tower alone"
        )


def _forget(key: int) -> None:
    """Drop the patch of one vision config; remove the registration when no model uses it any more."""
    _PATCHES.pop(key, None)
    if not _PATCHES:
        # transformers has no public way to unregister: remove the entry `register` added.
        AttentionInterface._global_mapping.pop(IMPLEMENTATION, None)


class VisionPatch:
    """The vision tower switched to the segment kernel; ``restore()`` gives it back its own implementation."""

    def __init__(
        self, model: torch.nn.Module, family: ModelFamily, original: str, compiled: _CompiledBlocks | None = None
    ) -> None:
        self._model_ref = weakref.ref(model)
        self.family = family
        self.original = original
        self.compiled = compiled
        self._key = id(getattr(model.config, family.vision_config_key))
        self._finalizer = weakref.finalize(model, _forget, self._key)

    @property
    def active(self) -> bool:
        return _PATCHES.get(self._key) is self

    def restore(self) -> None:
        """Set the vision tower's attention implementation back to what it was. Idempotent."""
        if not self.active:
            return
        if self.compiled is not None:
            self.compiled.restore()
        model = self._model_ref()
        if model is not None:
            _set_vision_implementation(model, self.family, self.original)
        _forget(self._key)
        self._finalizer.detach()

    def __repr__(self) -> str:
        compiled = "" if self.compiled is None else ", blocks compiled"
        return f"VisionPatch({self.family.name}, {IMPLEMENTATION!r} over {self.original!r}{compiled}, active={self.active})"


def patch_vision(model: torch.nn.Module, mode: str = "compiled") -> VisionPatch | None:
    """Run the vision tower's windows and frames in one launch per layer (``"compiled"``: and compile its blocks
    on CUDA); returns a :class:`VisionPatch`.

    Returns None (and changes nothing) for ``mode="unpatched"``, for a family whose vision tower is not described
    (``ModelFamily.vision_config_key``), where a flash implementation already runs the segments in one call, or
    where the tower is already patched.
    """
    check_vision_mode(mode)
    if mode == "unpatched":
        return None
    family = family_for_model(model)
    if not family.vision_config_key:
        return None
    config = getattr(model.config, family.vision_config_key, None)
    if config is None or id(config) in _PATCHES:
        return None
    original = config._attn_implementation
    if original == IMPLEMENTATION or is_flash_attention_requested(requested_attention_implementation=original):
        return None
    tower = vision_tower(model, family)
    if tower is None:
        raise ValueError(f"{type(model).__name__} holds no vision tower sub-model; pass vision='unpatched'")
    if IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(IMPLEMENTATION, _attention_outside_graph)
    _skip_flash_preload()
    _set_vision_implementation(model, family, IMPLEMENTATION)
    compiled = _compile_blocks(tower) if mode == "compiled" else None
    patch = VisionPatch(model, family, original, compiled)
    _PATCHES[patch._key] = patch
    return patch


# -- timing -------------------------------------------------------------------------------------------------------
class VisionTimer:
    """Seconds spent in the vision tower's forwards since :meth:`reset` (CUDA events on a GPU, a clock on CPU).

    ``seconds()`` waits for the device; it is None when the model has no vision tower.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.tower = vision_tower(model)
        self._spans: list[tuple[object, object]] = []
        self._open: object | None = None
        self._hooks = []
        if self.tower is not None:
            self._hooks = [
                self.tower.register_forward_pre_hook(self._start),
                self.tower.register_forward_hook(self._stop),
            ]

    def _mark(self, device: torch.device):
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(device))
            return event
        return time.perf_counter()

    def _device(self) -> torch.device:
        return next(self.tower.parameters()).device

    def _start(self, module, args) -> None:
        self._open = self._mark(self._device())

    def _stop(self, module, args, output) -> None:
        if self._open is not None:
            self._spans.append((self._open, self._mark(self._device())))
            self._open = None

    def reset(self) -> None:
        self._spans, self._open = [], None

    def seconds(self) -> float | None:
        if self.tower is None:
            return None
        total = 0.0
        for start, end in self._spans:
            if isinstance(start, float):
                total += end - start
            else:
                end.synchronize()
                total += start.elapsed_time(end) / 1e3
        return total

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __enter__(self) -> "VisionTimer":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
