"""A loaded model as a calibration source: each sample's dense prefill, its layers observed one at a time."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch

from vlmsparse.eval.samples import PromptSample
from vlmsparse.model.attention import PrefillAttention

__all__ = ["ModelLayers"]


class ModelLayers:
    """Runs ``model`` dense on benchmark samples; ``run(i, observer)`` hands sample i's decoder layers over."""

    def __init__(self, model, processor, samples: Sequence[PromptSample], name: str = "") -> None:
        from vlmsparse.eval.model_io import VideoQA
        from vlmsparse.model.families import family_for_model

        family = family_for_model(model)
        self.model = model
        self.samples = list(samples)
        self.num_layers = len(list(family.attention_modules(model)))
        text = family.text_config(model.config)
        self.heads = (int(text.num_attention_heads), int(text.num_key_value_heads))
        self.qa = VideoQA(model, processor, max_new_tokens=1)
        self.name = name or type(model).__name__
        self._tokens: list[int] = []
        self._keep_one = "logits_to_keep" in inspect.signature(model.forward).parameters

    def describe(self) -> str:
        tokens = f", {min(self._tokens)}-{max(self._tokens)} tokens per prompt" if self._tokens else ""
        return f"{self.name}, {self.num_layers} layers, {self.heads[0]}/{self.heads[1]} heads{tokens}"

    def run(self, sample: int, observer: Callable[[PrefillAttention], None]) -> None:
        from vlmsparse.model import observe

        video, prompt = self.samples[sample].load()
        batch = self.qa.inputs(video, prompt)
        self._tokens.append(int(batch["input_ids"].shape[1]))
        handle = observe(self.model, observer)
        try:
            with torch.no_grad():
                extra = {"logits_to_keep": 1} if self._keep_one else {}
                self.model(**batch, use_cache=False, **extra)
        finally:
            handle.unpatch()
