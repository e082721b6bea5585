"""Per-request sparsity for lmms-eval: which requests went into each ``generate`` call, and what it achieved.

lmms-eval's Qwen2.5-VL ``generate_until`` batches and reorders the requests itself. To know which requests a
``model.generate`` call served, each request's first callable argument (``doc_to_messages`` for chat models,
``doc_to_visual`` for simple ones) is wrapped so that it announces its request when the model builds its batch;
``model.generate`` is wrapped for the duration of the call to read the patch statistics right after each
prefill. The figures ride back to lmms-eval in the ``token_counts`` of each ``GenerationResult``, which lmms-eval
writes into every logged sample (``--log_samples``) as ``token_counts[0]["vlmsparse"]``.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, TokenCounts

from .lmms_eval_leaderboard import summarize_records  # plain Python: the exporter needs no lmms-eval

__all__ = ["RequestSparsity", "SparsityTokenCounts", "SparsityRecorder", "summarize_records"]


@dataclass
class RequestSparsity:
    """What one request's prefill achieved.

    ``sparsity`` is the request's own figure (exact over layers and heads); ``visual_sparsity`` is that of
    its ``generate`` call, which is the request's own when ``batch_size`` is 1 (lmms-eval's default).
    ``prefill_s``: seconds from the call to the first token's logits (vision tower included), as
    ``vlmsparse.eval`` measures it.
    """

    method: str
    sparsity: float | None
    visual_sparsity: float | None
    batch_size: int
    input_tokens: int | None = None
    visual_tokens: int | None = None
    prefill_s: float | None = None
    generate_s: float | None = None
    peak_mem_gib: float | None = None
    device: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SparsityTokenCounts(TokenCounts):
    """lmms-eval's per-request ``TokenCounts`` that also carries the request's sparsity into the samples."""

    vlmsparse: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = super().to_dict()
        if self.vlmsparse is not None:
            out["vlmsparse"] = self.vlmsparse
        return out


class _Announcing:
    """A request's callable argument that notes, when called, that its request is being batched."""

    def __init__(self, fn: Callable, index: int, announce: Callable[[int], None]) -> None:
        self._fn, self._index, self._announce = fn, index, announce
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._announce(self._index)
        return self._fn(*args, **kwargs)


class _FirstLogits:
    """Logits processor noting when the first token's logits exist (the end of the prefill)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.at: float | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.at is None:
            _sync(self.device)
            self.at = time.perf_counter()
        return scores


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


@dataclass
class _Call:
    """Book-keeping of one ``generate_until`` call."""

    pending: list[int] = field(default_factory=list)
    by_request: dict[int, RequestSparsity] = field(default_factory=dict)

    def announce(self, index: int) -> None:
        self.pending.append(index)


class SparsityRecorder:
    """Records each request's sparsity around a model's ``generate_until`` (see the module docstring).

    ``handle`` is the ``vlmsparse.patch`` handle, or None for ``dense`` (the model's own attention, whose
    sparsity is 0 by definition, as in ``vlmsparse.eval``).
    """

    def __init__(self, method: str, handle: Any | None, visual_token_ids: Sequence[int]) -> None:
        self.method = method
        self.handle = handle
        self.visual_token_ids = [int(t) for t in visual_token_ids if t is not None]
        self.records: list[dict[str, Any]] = []

    # -- one generate_until call ----------------------------------------------------------------------
    def run(self, model: torch.nn.Module, requests: list, generate_until: Callable[[list], list]) -> list:
        """``generate_until(requests)`` with each output's ``token_counts`` carrying its request's sparsity."""
        call = _Call()
        wrapped = [self._announcing(req, i, call.announce) for i, req in enumerate(requests)]
        with self._watch_generate(model, call):
            outputs = generate_until(wrapped)
        results = []
        for i, output in enumerate(outputs):
            record = call.by_request.get(i)
            if record is not None:
                self.records.append(record.as_dict())
            results.append(_attach(output, record))
        return results

    @staticmethod
    def _announcing(request: Any, index: int, announce: Callable[[int], None]) -> Any:
        args = list(request.args)
        for pos, value in enumerate(args):
            if callable(value):
                args[pos] = _Announcing(value, index, announce)
                clone = copy.copy(request)
                clone.arguments = tuple(args)
                return clone
        return request

    @contextlib.contextmanager
    def _watch_generate(self, model: torch.nn.Module, call: _Call) -> Iterator[None]:
        original = model.generate

        def generate(*args: Any, **kwargs: Any):
            return self._generate(original, model, call, args, kwargs)

        model.generate = generate  # an instance attribute shadows the class's method for this call only
        try:
            yield
        finally:
            del model.generate

    def _generate(self, original: Callable, model: torch.nn.Module, call: _Call, args: tuple, kwargs: dict):
        from transformers import LogitsProcessorList

        device = model.device
        timer = _FirstLogits(device)
        processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        processors.append(timer)
        if self.handle is not None:
            self.handle.stats.reset()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        out = original(*args, logits_processor=processors, **kwargs)
        _sync(device)
        end = time.perf_counter()
        requests, call.pending = list(call.pending), []
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        self._record(call, requests, input_ids, kwargs.get("attention_mask"), start, timer.at, end, device)
        return out

    def _record(self, call, requests, input_ids, attention_mask, start, first, end, device) -> None:
        batch = int(input_ids.shape[0]) if input_ids is not None else len(requests)
        if self.handle is None:
            overall, visual, rows = 0.0, 0.0, [0.0] * batch
        else:
            stats = self.handle.stats
            overall, visual, rows = stats.sparsity(), stats.visual_sparsity(), stats.per_sample()
        exact_rows = len(requests) == batch
        tokens = visual_tokens = None
        if input_ids is not None and exact_rows:
            mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
            tokens = mask.sum(1).tolist()
            is_visual = torch.zeros_like(mask)
            for token_id in self.visual_token_ids:
                is_visual |= input_ids == token_id
            visual_tokens = (is_visual & mask).sum(1).tolist()
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        for row, index in enumerate(requests):
            own = rows[row] if exact_rows and len(rows) == batch and batch > 1 else overall
            call.by_request[index] = RequestSparsity(
                method=self.method,
                sparsity=own,
                visual_sparsity=visual,
                batch_size=batch,
                input_tokens=tokens[row] if tokens is not None else None,
                visual_tokens=visual_tokens[row] if visual_tokens is not None else None,
                prefill_s=(first if first is not None else end) - start,
                generate_s=end - start,
                peak_mem_gib=peak,
                device=_device_name(device),
            )

    # -- the run ----------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Means over the requests recorded so far (see :func:`summarize_records`)."""
        return summarize_records(self.records)


def _attach(output: Any, record: RequestSparsity | None) -> Any:
    """The model's output with the record in its ``token_counts`` (a plain string becomes a GenerationResult)."""
    if record is None:
        return output
    extra = record.as_dict()
    if isinstance(output, GenerationResult):
        counts = output.token_counts
        base = asdict(counts) if counts is not None else {}
        base.pop("vlmsparse", None)
        if base.get("input_tokens") is None:
            base["input_tokens"] = record.input_tokens
        return GenerationResult(text=output.text, token_counts=SparsityTokenCounts(**base, vlmsparse=extra))
    if isinstance(output, str):
        return GenerationResult(
            text=output, token_counts=SparsityTokenCounts(input_tokens=record.input_tokens, vlmsparse=extra)
        )
    return output
