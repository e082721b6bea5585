"""What every planner shares: its config base, the ``Plan`` it returns, and the text-dense / visual-sparse layout.

A method turns ``q [B, Hq, Lq, D]``, ``k [B, Hkv, Lk, D]`` and the token layout (``visual [B, Lk]``, True for
visual tokens; queries are the last ``Lq`` positions) into ``levels [B, Hm, nQB, nKB]`` for
:func:`vlmsparse.kernels.pyramid_attention`. The layout rules are applied here, after the method, so they hold
for every method alike:

- a query block holding any text query is planned dense (all its visible key blocks at level 1);
- a key block holding any text key is level 1 in every row;
- the first key block (attention sink) and the blocks on the causal diagonal are level 1;
- blocks above the diagonal (``INVISIBLE``) are set to 0 (the kernel never visits them; they are not counted).

Only the remaining *free* blocks (visual query block x visual key block, wholly before the diagonal, not the
first key block) are left to the method.

Text inside a visual span (*interleaved text*, e.g. Qwen3-VL's frame timestamps; the model side finds it) counts
as visual for these rules (:func:`planning_visual`): a block whose only text tokens are interleaved text is
planned like a visual block, as a query block and as a key block. The plan keeps those positions
(``Plan.interleaved_text``) so that the kernel can attend them exactly beside the plan.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from vlmsparse.kernels.blocks import INVISIBLE, PARTIAL, VALID_BLOCK_SIZES, block_classes, cdiv
from vlmsparse.kernels.plan_lists import CompiledPlan, compile_plan
from vlmsparse.kernels.validation import triton_can_run

from .sparsity import PlanSparsity, plan_sparsity

__all__ = [
    "MethodConfig",
    "Method",
    "Plan",
    "PlanSparsity",
    "BlockLayout",
    "block_layout",
    "apply_layout_rules",
    "planning_visual",
    "PLAN_HEADS",
]

#: Granularities of a plan: one per query head, or one per key/value head (shared by its query group).
PLAN_HEADS = ("q", "kv")


@dataclass
class MethodConfig:
    """Fields every method has.

    Attributes:
        block_m: query rows per block (16, 32, 64 or 128).
        block_n: keys per block (16, 32, 64 or 128).
        causal: causal attention (query ``i`` sees key ``j`` iff ``j <= i + Lk - Lq``).
        tail: ask the kernel for tail aggregation (the keys a row skips become one mean key).
        plan_heads: ``"q"`` (one plan per query head) or ``"kv"`` (one per key/value head, the group's block
            importance averaged before selection).
    """

    block_m: int = 128
    block_n: int = 128
    causal: bool = True
    tail: bool = False
    plan_heads: str = "q"

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if value not in VALID_BLOCK_SIZES:
                raise ValueError(f"{name} must be one of {VALID_BLOCK_SIZES}, got {value!r}")
        for name in ("causal", "tail"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.plan_heads not in PLAN_HEADS:
            raise ValueError(f"plan_heads must be one of {PLAN_HEADS}, got {self.plan_heads!r}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class Plan:
    """A block plan for the pyramid kernel, with what is needed to account for its sparsity.

    ``levels`` is int8 ``[B, Hm, ceil(Lq / block_m), ceil(Lk / block_n)]`` with values in {0, 1, 2, 4, 8};
    ``query_block_visual [B, nQB]`` / ``key_block_visual [B, nKB]`` mark blocks holding no text token
    (``None``: all visual). ``compiled`` is the kernel's form of ``levels`` (per query block, the kept key blocks
    by category), made once by the planner where the Triton kernel can run; :meth:`run` hands it to the kernel,
    which then neither re-checks nor re-compiles the plan (plan once, run fast).
    """

    levels: torch.Tensor
    block_m: int
    block_n: int
    q_len: int
    k_len: int
    causal: bool = True
    tail: bool = False
    query_block_visual: torch.Tensor | None = None
    key_block_visual: torch.Tensor | None = None
    #: bool ``[B, Lk]``: text keys planned as visual (interleaved text), to be attended exactly; None: none
    interleaved_text: torch.Tensor | None = None
    compiled: CompiledPlan | None = field(default=None, repr=False)
    #: every block meeting the causal diagonal is kept (the layout rules make it so; :meth:`Method.plan` sets it).
    #: Tail aggregation then runs without its passes over skipped diagonal blocks. Clear it after editing
    #: ``levels`` to skip one.
    diagonal_kept: bool = False
    #: ``levels`` may hold pooled blocks (2, 4, 8). ``False`` (the planner makes binary plans:
    #: :meth:`Method.plans_pooled`) runs the kernel compiled without its pooled loops and builds no pooled K/V.
    #: Set it back to ``True`` after editing ``levels`` to pool a block.
    pooled: bool = True
    #: ``levels`` may skip a visible block. ``False`` (the planner never skips one: :meth:`Method.plans_skip`, e.g.
    #: PSA with a last threshold of 1): tail aggregation has nothing to add to any row, so the kernel runs without
    #: it (the same output, without the tail's launch and code). Set it back to ``True`` after editing ``levels``
    #: to skip a block.
    skips: bool = True

    def compile(self) -> CompiledPlan:
        """The kernel's lists of this plan (made on first use when the planner did not make them)."""
        if self.compiled is None:
            self.compiled = compile_plan(self.levels, self.q_len, self.k_len, self.block_m, self.block_n, self.causal)
        return self.compiled

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, sm_scale: float | None = None, **kernel):
        """The pyramid kernel on this plan: ``pyramid_attention(q, k, v, levels, ...)`` with the compiled lists."""
        from vlmsparse.kernels import pyramid_attention

        return pyramid_attention(q, k, v, self.levels, sm_scale=sm_scale, plan=self.compile(), check_levels=False,
                                 diagonal_kept=self.diagonal_kept, pooled=self.pooled, **self.kernel_kwargs(),
                                 **kernel)

    def sparsity(self) -> PlanSparsity:
        """Cost sums and counted blocks per ``[batch, plan head]`` (see :mod:`vlmsparse.methods.sparsity`)."""
        return plan_sparsity(
            self.levels, self.q_len, self.k_len, self.block_m, self.block_n, self.causal,
            self.query_block_visual, self.key_block_visual,
        )

    def kernel_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``pyramid_attention`` (besides q, k, v, levels) that this plan needs."""
        return {"causal": self.causal, "block_m": self.block_m, "block_n": self.block_n, "tail": self.runs_tail}

    @property
    def runs_tail(self) -> bool:
        """Whether the kernel runs tail aggregation for this plan: asked for (``tail``) and something to aggregate
        (``skips``)."""
        return self.tail and self.skips

    @property
    def plan_heads(self) -> int:
        return self.levels.shape[1]


@dataclass
class BlockLayout:
    """Block-level token layout of one prefill.

    Attributes:
        classes: int8 ``[nQB, nKB]``: INVISIBLE / FULL / PARTIAL (see ``vlmsparse.kernels.blocks``).
        query_block_visual: bool ``[B, nQB]``: the query block holds no text query.
        key_block_visual: bool ``[B, nKB]``: the key block holds no text key.
        forced: bool ``[B, nQB, nKB]``: visible blocks the layout rules keep at level 1.
        free: bool ``[B, nQB, nKB]``: visible blocks left to the method.
    """

    classes: torch.Tensor
    query_block_visual: torch.Tensor
    key_block_visual: torch.Tensor
    forced: torch.Tensor
    free: torch.Tensor

    @property
    def visible(self) -> torch.Tensor:
        return self.classes != INVISIBLE


def _blocks_all_true(mask: torch.Tensor, block: int) -> torch.Tensor:
    """``[B, L] -> [B, ceil(L / block)]``: True where every position of the block is True (padding counts True)."""
    b, length = mask.shape
    n = cdiv(length, block)
    pad = n * block - length
    padded = torch.nn.functional.pad(mask, (0, pad), value=True) if pad else mask
    return padded.reshape(b, n, block).all(-1)


@functools.lru_cache(maxsize=64)
def _static_layout(
    q_len: int, k_len: int, block_m: int, block_n: int, causal: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block classes and the blocks forced whatever the tokens are (diagonal, first key block); cached."""
    classes = block_classes(q_len, k_len, block_m, block_n, causal, device)
    n_qb, n_kb = classes.shape
    # blocks meeting the diagonal, plus (also without causal masking) key blocks holding the queries' own positions
    offset = k_len - q_len
    q_first = torch.arange(n_qb, device=device) * block_m + offset
    q_last = torch.clamp(torch.arange(1, n_qb + 1, device=device) * block_m, max=q_len) - 1 + offset
    k_first = torch.arange(n_kb, device=device) * block_n
    k_last = torch.clamp(torch.arange(1, n_kb + 1, device=device) * block_n, max=k_len) - 1
    own = (k_first[None, :] <= q_last[:, None]) & (k_last[None, :] >= q_first[:, None])
    always = (classes == PARTIAL) | own
    always[:, 0] = True
    return classes, always & (classes != INVISIBLE)


def block_layout(
    visual: torch.Tensor | None,
    batch: int,
    q_len: int,
    k_len: int,
    block_m: int,
    block_n: int,
    causal: bool = True,
    device: torch.device | str | None = None,
) -> BlockLayout:
    """Work out which blocks the layout rules force to level 1 and which are left to the method.

    ``visual`` is bool ``[B, Lk]`` (or ``[Lk]``, shared by the batch), True for visual tokens; ``None`` means
    every token is visual. Queries are the last ``q_len`` positions.
    """
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    classes, always = _static_layout(q_len, k_len, block_m, block_n, causal, device)
    n_qb, n_kb = classes.shape
    visible = classes != INVISIBLE
    if visual is None:
        qv = torch.ones(batch, n_qb, dtype=torch.bool, device=device)
        kv = torch.ones(batch, n_kb, dtype=torch.bool, device=device)
        forced = always[None].expand(batch, -1, -1)
    else:
        if not isinstance(visual, torch.Tensor):
            raise ValueError(f"visual must be a bool tensor [batch, Lk] or None, got {type(visual).__name__}")
        visual = visual.to(device=device, dtype=torch.bool)
        if visual.dim() == 1:
            visual = visual[None].expand(batch, -1)
        if tuple(visual.shape) != (batch, k_len):
            raise ValueError(f"visual must have shape [batch, Lk] = {(batch, k_len)}, got {tuple(visual.shape)}")
        qv = _blocks_all_true(visual[:, k_len - q_len :], block_m)  # [B, nQB]
        kv = _blocks_all_true(visual, block_n)  # [B, nKB]
        forced = ((~qv[:, :, None]) | (~kv[:, None, :]) | always[None]) & visible[None]
    free = visible[None] & ~forced
    return BlockLayout(classes, qv, kv, forced, free)


def apply_layout_rules(levels: torch.Tensor, layout: BlockLayout) -> torch.Tensor:
    """Force the layout's blocks to level 1, invisible blocks to 0, keep the method's levels elsewhere (int8)."""
    lv = levels.to(torch.int8).masked_fill(~layout.free[:, None], 0)
    return lv.masked_fill_(layout.forced[:, None], 1)


def planning_visual(visual: torch.Tensor | None, interleaved_text: torch.Tensor | None) -> torch.Tensor | None:
    """The visual mask the layout rules plan with: visual tokens and the interleaved text (text inside a visual
    span), so that a block whose only text is interleaved text is planned as visual (query and key blocks alike).

    ``visual`` and ``interleaved_text`` are bool ``[B, Lk]`` (or ``[Lk]``); either may be None.
    """
    if interleaved_text is None or visual is None:
        return visual
    if tuple(interleaved_text.shape) != tuple(visual.shape):
        raise ValueError(
            f"interleaved_text must have the shape of visual {tuple(visual.shape)}, got {tuple(interleaved_text.shape)}"
        )
    return visual | interleaved_text.to(device=visual.device, dtype=torch.bool)


def _tensor_version(t: torch.Tensor | None) -> int | None:
    """The in-place version counter of ``t``; None where there is none (inference tensors)."""
    try:
        return None if t is None else t._version
    except RuntimeError:  # inference-mode tensors do not track versions
        return None


def check_qk(q: torch.Tensor, k: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``q [B, Hq, Lq, D]`` and ``k [B, Hkv, Lk, D]`` fit together."""
    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 4-D tensor [batch, heads, seq, head_dim], got {shape}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must share batch and head_dim")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"q heads ({q.shape[1]}) must be a multiple of k heads ({k.shape[1]})")
    if not 1 <= q.shape[2] <= k.shape[2]:
        raise ValueError(f"need 1 <= Lq <= Lk (queries are the last Lq positions), got Lq={q.shape[2]}, Lk={k.shape[2]}")
    if q.device != k.device:
        raise ValueError(f"q and k must be on one device, got {q.device} and {k.device}")


class Method:
    """A mask planner. Subclasses set ``name``, ``config_class`` (and ``presets``) and implement :meth:`select`."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    #: named settings: preset name -> field overrides of the config defaults
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: :meth:`select` returns the finished int8 plan (forced blocks 1, blocks neither free nor forced 0), so
    #: :meth:`plan` does not apply the layout rules again
    select_applies_layout_rules: ClassVar[bool] = False

    def __init__(self, config: MethodConfig | None = None) -> None:
        if config is None:
            config = self.config_class()
        if not isinstance(config, self.config_class):
            raise ValueError(f"{self.name} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self._layout_memo: tuple | None = None  # (key, visual, layout, interleaved_text) of the last call

    def layout(
        self,
        visual: torch.Tensor | None,
        batch: int,
        q_len: int,
        k_len: int,
        device: torch.device,
        interleaved_text: torch.Tensor | None = None,
    ) -> BlockLayout:
        """:func:`block_layout` for this method's blocks, reused while the same, unmodified ``visual`` (and
        ``interleaved_text``) come back (a model plans every layer of one prefill with one token layout)."""
        cfg = self.config
        key = (
            id(visual), _tensor_version(visual), id(interleaved_text), _tensor_version(interleaved_text), batch,
            q_len, k_len, cfg.block_m, cfg.block_n, cfg.causal, str(device),
        )
        memo = self._layout_memo
        if memo is not None and memo[0] == key and memo[1] is visual and memo[3] is interleaved_text:
            return memo[2]
        planned = planning_visual(visual, interleaved_text)
        layout = block_layout(planned, batch, q_len, k_len, cfg.block_m, cfg.block_n, cfg.causal, device)
        self._layout_memo = (key, visual, layout, interleaved_text)  # holding the masks keeps their ids unique
        return layout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    def plan(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        visual: torch.Tensor | None = None,
        interleaved_text: torch.Tensor | None = None,
    ) -> Plan:
        """Plan one prefill: ``q [B, Hq, Lq, D]``, ``k [B, Hkv, Lk, D]``, ``visual`` bool ``[B, Lk]`` or None;
        ``interleaved_text`` bool ``[B, Lk]``: text inside visual spans, planned as visual (None: none)."""
        check_qk(q, k)
        cfg = self.config
        b, hq, lq, _ = q.shape
        hkv, lk = k.shape[1], k.shape[2]
        layout = self.layout(visual, b, lq, lk, q.device, interleaved_text)
        hm = hq if cfg.plan_heads == "q" else hkv
        with torch.no_grad():
            levels = self.select(q, k, layout, hm)
            if not self.select_applies_layout_rules:
                levels = apply_layout_rules(levels, layout)
        compiled = (
            compile_plan(levels, lq, lk, cfg.block_m, cfg.block_n, cfg.causal) if triton_can_run(levels.device) else None
        )
        return Plan(
            levels=levels, block_m=cfg.block_m, block_n=cfg.block_n, q_len=lq, k_len=lk, causal=cfg.causal,
            tail=cfg.tail, query_block_visual=layout.query_block_visual, key_block_visual=layout.key_block_visual,
            compiled=compiled,
            interleaved_text=interleaved_text,
            diagonal_kept=True,
            pooled=self.plans_pooled(),
            skips=self.plans_skip(),
        )

    def plans_pooled(self) -> bool:
        """Whether this planner's plans may hold pooled blocks (levels 2, 4, 8); binary planners say ``False``,
        and their plans run the kernel without its pooled loops."""
        return True

    def plans_skip(self) -> bool:
        """Whether this planner's plans may skip a visible block (level 0). Those that never do say ``False``:
        their plans then run without tail aggregation, which would add nothing (:attr:`Plan.skips`)."""
        return True

    def select(self, q: torch.Tensor, k: torch.Tensor, layout: BlockLayout, plan_heads: int) -> torch.Tensor:
        """Levels ``[B, plan_heads, nQB, nKB]`` for the free blocks (others are overwritten by the layout rules,
        unless the class sets ``select_applies_layout_rules`` and returns the finished plan itself)."""
        raise NotImplementedError
