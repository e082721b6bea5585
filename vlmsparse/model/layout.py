"""The token layout of the sequence being run: which key positions are visual, which are padding.

A forward pre-hook on the patched model reads ``input_ids`` (and the 2-D ``attention_mask``) at every forward.
With a KV cache, each forward brings only the new tokens, so the layout is extended while the cache grows and
started afresh when a forward begins with an empty cache. The attention function then reads the layout of all
``Lk`` key positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["TokenLayout", "LayoutTracker"]


@dataclass
class TokenLayout:
    """Layout of the key positions seen so far (``None`` fields: unknown).

    Attributes:
        visual: bool ``[B, L]``, True at image / video placeholder tokens.
        valid: bool ``[B, L]``, False at padding (from the 2-D attention mask), or None if no mask was given.
        has_visual: whether any position is visual (read once per forward, not per layer).
        unknown_reason: why the layout is unknown (no ``input_ids``, a 4-D mask, a cache it cannot follow).
    """

    visual: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    has_visual: bool = False
    unknown_reason: str | None = None

    @property
    def length(self) -> int:
        return 0 if self.visual is None else int(self.visual.shape[1])


def _past_length(past_key_values) -> int:
    if past_key_values is None:
        return 0
    if hasattr(past_key_values, "get_seq_length"):
        return int(past_key_values.get_seq_length())
    raise TypeError(f"cannot read the length of a {type(past_key_values).__name__} cache")


@dataclass
class LayoutTracker:
    """Keeps the layout of the current sequence; ``pre_hook`` is registered on the patched model."""

    visual_token_ids: tuple[int, ...]
    layout: TokenLayout = field(default_factory=TokenLayout)
    #: incremented at every forward of the patched model (statistics group layer records by it)
    forward_index: int = 0

    def pre_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """``register_forward_pre_hook(..., with_kwargs=True)`` hook: read this forward's tokens."""
        self.forward_index += 1
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        try:
            past = _past_length(kwargs.get("past_key_values"))
        except TypeError as err:
            self.layout = TokenLayout(unknown_reason=str(err))
            return
        if input_ids is None or not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            self.layout = TokenLayout(unknown_reason="the forward got no 2-D input_ids (inputs_embeds only?)")
            return
        ids = torch.tensor(self.visual_token_ids, device=input_ids.device)
        visual = torch.isin(input_ids, ids)
        if past == 0:
            pass
        elif self.layout.visual is not None and self.layout.length == past and self.layout.visual.shape[0] == visual.shape[0]:
            visual = torch.cat([self.layout.visual, visual], dim=1)
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
        self.layout = TokenLayout(visual=visual, valid=valid, has_visual=bool(visual.any()))

    def reset(self) -> None:
        self.layout = TokenLayout()
