"""The token layout of the sequence being run: which key positions are visual, which are padding, and which text
tokens sit inside a visual span (*interleaved text*).

A forward pre-hook on the patched model reads ``input_ids`` (and the 2-D ``attention_mask``) at every forward.
With a KV cache, each forward brings only the new tokens, so the layout is extended while the cache grows and
started afresh when a forward begins with an empty cache. The attention function then reads the layout of all
``Lk`` key positions.

Interleaved text: families that write text between the frames of one video (Qwen3-VL's ``<0.5 seconds>``
timestamps and the ``<|vision_start|>`` / ``<|vision_end|>`` around each frame) declare it in their
``ModelFamily``; a run of at most ``interleaved_text_max_run`` non-visual tokens with a video placeholder on both
sides is interleaved text. Text outside the visual span (system prompt, question, the answer) never is: it has
no placeholder after it, or it is a longer run. The planner treats interleaved text as visual (see
``vlmsparse.methods.base.planning_visual``); ``interleaved_text`` marks those keys so that they can be attended
exactly beside the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

try:
    from transformers.cache_utils import StaticLayer
except ImportError:  # a transformers without per-layer caches: no cache is taken as preallocated
    StaticLayer = None

__all__ = ["TokenLayout", "LayoutTracker", "interleaved_text_mask", "planned_block_counts"]


@dataclass
class TokenLayout:
    """Layout of the key positions seen so far (``None`` fields: unknown).

    Attributes:
        visual: bool ``[B, L]``, True at image / video placeholder tokens.
        valid: bool ``[B, L]``, False at padding (from the 2-D attention mask), or None if no mask was given.
        has_visual: whether any position is visual (read once per forward, not per layer).
        unknown_reason: why the layout is unknown (no ``input_ids``, a 4-D mask, a cache it cannot follow).
        interleaved_text: bool ``[B, L]``, True at text tokens inside a visual span (never where ``visual`` is);
            None when the family interleaves no text or none is present.
        span: bool ``[B, L]``, True at the placeholders whose spans may hold interleaved text (kept so that the
            layout can be extended while a KV cache grows); None when the family has none.
        preallocated: the forward's KV cache is a preallocated one (transformers' ``StaticCache``: generation with
            ``cache_implementation="static"``): attention then sees keys and values of the cache's whole length, of
            which the first ``length`` are this sequence's and the rest are slots not written yet.
    """

    visual: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    has_visual: bool = False
    unknown_reason: str | None = None
    interleaved_text: torch.Tensor | None = None
    span: torch.Tensor | None = None
    preallocated: bool = False

    @property
    def length(self) -> int:
        return 0 if self.visual is None else int(self.visual.shape[1])


def interleaved_text_mask(visual: torch.Tensor, span: torch.Tensor, max_run: int) -> torch.Tensor:
    """bool ``[B, L]``: non-visual tokens in a run of at most ``max_run`` tokens with a ``span`` token on both sides.

    ``visual`` and ``span`` are bool ``[B, L]`` (``span`` implies ``visual``). The run between two span tokens is
    measured from one to the next (visual tokens of another kind inside it count towards its length).
    """
    b, length = visual.shape
    pos = torch.arange(length, device=visual.device).expand(b, length)
    before = torch.where(span, pos, torch.full_like(pos, -1)).cummax(dim=1).values  # last span token at or before
    after = torch.where(span, pos, torch.full_like(pos, length)).flip(1).cummin(dim=1).values.flip(1)  # first at/after
    inside = (before >= 0) & (after < length) & (after - before - 1 <= max_run)
    return inside & ~visual


def _past_length(past_key_values) -> int:
    if past_key_values is None:
        return 0
    if hasattr(past_key_values, "get_seq_length"):
        return int(past_key_values.get_seq_length())
    raise TypeError(f"cannot read the length of a {type(past_key_values).__name__} cache")


def _preallocates(cache) -> bool:
    """Whether every layer of ``cache`` returns keys of its fixed, preallocated length (transformers' static layers)."""
    layers = getattr(cache, "layers", None)
    if not layers or StaticLayer is None:
        return False
    return all(isinstance(layer, StaticLayer) and not getattr(layer, "is_sliding", False) for layer in layers)


@dataclass
class LayoutTracker:
    """Keeps the layout of the current sequence; ``pre_hook`` is registered on the patched model."""

    visual_token_ids: tuple[int, ...]
    #: placeholder ids whose spans may hold interleaved text, and the longest such text run (0: none)
    interleaved_token_ids: tuple[int, ...] = ()
    interleaved_text_max_run: int = 0
    layout: TokenLayout = field(default_factory=TokenLayout)
    #: incremented at every forward of the patched model (statistics group layer records by it)
    forward_index: int = 0

    @torch.compiler.disable  # host-side bookkeeping: a compiled decode step (static cache) calls it eagerly
    def pre_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """``register_forward_pre_hook(..., with_kwargs=True)`` hook: read this forward's tokens."""
        self.forward_index += 1
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers 5 renamed it ``cache``
        try:
            past = _past_length(cache)
        except TypeError as err:
            self.layout = TokenLayout(unknown_reason=str(err))
            return
        if input_ids is None or not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            self.layout = TokenLayout(unknown_reason="the forward got no 2-D input_ids (inputs_embeds only?)")
            return
        ids = torch.tensor(self.visual_token_ids, device=input_ids.device)
        visual = torch.isin(input_ids, ids)
        span = None
        if self.interleaved_text_max_run:
            span = torch.isin(input_ids, torch.tensor(self.interleaved_token_ids, device=input_ids.device))
        if past == 0:
            pass
        elif self.layout.visual is not None and self.layout.length == past and self.layout.visual.shape[0] == visual.shape[0]:
            visual = torch.cat([self.layout.visual, visual], dim=1)
            if span is not None:
                span = torch.cat([self.layout.span, span], dim=1)
        else:
            self.layout = TokenLayout(unknown_reason="the KV cache holds tokens this hook did not see")
            return
        valid = None
        if isinstance(mask, torch.Tensor):
            if mask.dim() != 2:
                self.layout = TokenLayout(unknown_reason=f"a {mask.dim()}-D attention mask (custom masking)")
                return
            if mask.shape[1] != visual.shape[1]:
                self.layout = TokenLayout(unknown_reason="the attention mask does not cover cache + new tokens")
                return
            valid = mask.to(device=visual.device).bool()
            if bool(valid.all()):
                valid = None
        interleaved = None
        if span is not None:
            interleaved = interleaved_text_mask(visual, span, self.interleaved_text_max_run)
            interleaved = interleaved if bool(interleaved.any()) else None
        self.layout = TokenLayout(
            visual=visual, valid=valid, has_visual=bool(visual.any()), interleaved_text=interleaved, span=span,
            preallocated=_preallocates(cache),
        )

    def reset(self) -> None:
        self.layout = TokenLayout()


def planned_block_counts(
    visual: torch.Tensor,
    interleaved_text: torch.Tensor | None,
    block_m: int,
    block_n: int,
    *,
    interleaved_as_visual: bool = True,
) -> dict[str, int]:
    """How the layout rules split the causal block grid of one prefill (all keys are queries), summed over the batch.

    ``interleaved_as_visual=False`` gives the earlier rule (every text token, interleaved or not, makes its blocks
    dense). Returns ``visible`` (causal blocks), ``forced`` (kept at level 1 by the rules), ``free`` (left to the
    method) and ``dense_rows`` (query blocks planned wholly dense).
    """
    from vlmsparse.methods.base import block_layout, planning_visual

    planned = planning_visual(visual, interleaved_text) if interleaved_as_visual else visual
    b, length = visual.shape
    layout = block_layout(planned, b, length, length, block_m, block_n, True, visual.device)
    visible = layout.visible[None].expand_as(layout.forced)
    free_rows = layout.free.any(-1)
    return {
        "visible": int(visible.sum()),
        "forced": int(layout.forced.sum()),
        "free": int(layout.free.sum()),
        "dense_rows": int((~free_rows).sum()),
    }
