"""Model families the patcher supports, and what it must know of each.

A family is described by a small module in ``patches/`` (installed as ``vlmsparse.patches``) that defines
``FAMILY = ModelFamily(...)``. The generic patcher needs, per family: which ``config.model_type`` values belong to
it, which sub-config is the text decoder's (its attention implementation is the one switched), the visual token
ids (image / video placeholders) read from the config, the decoder attention module classes, and the family's
own eager attention function (the dense fallback when the model ran with ``attn_implementation="eager"``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

__all__ = ["ModelFamily", "FAMILY_MODULES", "supported_families", "get_family", "family_for_model"]

#: family name -> module defining ``FAMILY`` (imported on first use)
FAMILY_MODULES: dict[str, str] = {
    "qwen2_5_vl": "vlmsparse.patches.qwen2_5_vl",
    "qwen2_vl": "vlmsparse.patches.qwen2_vl",
}


@dataclass(frozen=True)
class ModelFamily:
    """What the generic patcher must know of one model family.

    Attributes:
        name: family name (a key of ``FAMILY_MODULES``).
        model_types: ``config.model_type`` values of the models of this family.
        text_config_key: name of the decoder's sub-config (``"text_config"``); ``""`` if the top config is it.
        visual_token_id_fields: config fields holding visual placeholder token ids (image, video).
        attention_classes: the decoder's attention module classes (each has ``layer_idx`` and calls
            ``ALL_ATTENTION_FUNCTIONS.get_interface``); the vision encoder's attention is not among them.
        eager_attention: the family's eager attention function (transformers keeps no global ``"eager"``).
        vision_config_key: name of the vision tower's sub-config, whose attention implementation
            ``vlmsparse.model.vision`` switches to the one-launch segment kernel; ``""``: the tower is left alone.
        vision_attention_classes: the vision tower's attention classes that run windows / frames as segments of
            ``cu_seqlens`` (one SDPA call per segment unless a flash implementation is set).
    """

    name: str
    model_types: tuple[str, ...]
    text_config_key: str
    visual_token_id_fields: tuple[str, ...]
    attention_classes: tuple[type[torch.nn.Module], ...]
    eager_attention: Callable
    vision_config_key: str = ""
    vision_attention_classes: tuple[type[torch.nn.Module], ...] = ()
    notes: str = field(default="", compare=False)

    def text_config(self, config):
        """The decoder's config inside the model's top config."""
        return getattr(config, self.text_config_key) if self.text_config_key else config

    def visual_token_ids(self, config) -> tuple[int, ...]:
        """Token ids of visual placeholders (image / video tokens), from the top config."""
        ids = []
        for name in self.visual_token_id_fields:
            value = getattr(config, name, None)
            if value is None:
                value = getattr(self.text_config(config), name, None)
            if value is not None:
                ids.append(int(value))
        if not ids:
            raise ValueError(
                f"{self.name}: the model config has none of {self.visual_token_id_fields}; cannot tell visual tokens"
            )
        return tuple(ids)

    def attention_modules(self, model: torch.nn.Module) -> Iterator[tuple[int, torch.nn.Module]]:
        """``(layer_idx, module)`` for every decoder attention module of ``model``."""
        for module in model.modules():
            if isinstance(module, self.attention_classes):
                yield int(module.layer_idx), module


def supported_families() -> list[str]:
    """Names of the families ``vlmsparse.patch`` supports."""
    return sorted(FAMILY_MODULES)


def get_family(name: str) -> ModelFamily:
    """The ``ModelFamily`` registered under ``name``."""
    if name not in FAMILY_MODULES:
        raise ValueError(f"unknown model family {name!r}; supported families: {supported_families()}")
    family = getattr(importlib.import_module(FAMILY_MODULES[name]), "FAMILY", None)
    if not isinstance(family, ModelFamily):
        raise ValueError(f"{FAMILY_MODULES[name]} must define FAMILY = ModelFamily(...)")
    return family


def family_for_model(model: torch.nn.Module) -> ModelFamily:
    """The family of a loaded model (from ``model.config.model_type``); ``ValueError`` if it is not supported."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    for name in supported_families():
        family = get_family(name)
        if model_type in family.model_types:
            return family
    raise ValueError(
        f"vlmsparse.patch does not support {type(model).__name__} (model_type={model_type!r}); supported "
        f"families: {supported_families()}. To add one, write a patches/<family>.py module defining "
        "FAMILY = ModelFamily(...) and list it in vlmsparse.model.families.FAMILY_MODULES."
    )
