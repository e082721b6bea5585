"""Model families the patcher supports, and what it must know of each.

A family is described by a small module in ``patches/`` (installed as ``vlmsparse.patches``) that defines
``FAMILY = ModelFamily(...)``. The generic patcher needs, per family: which ``config.model_type`` values belong to
it, which sub-config is the text decoder's (its attention implementation is the one switched), the visual token
ids (image / video placeholders) read from the config, the decoder attention module classes, and the family's
own eager attention function (the dense fallback when the model ran with ``attn_implementation="eager"``), and
whether text tokens sit inside its visual spans (Qwen3-VL's frame timestamps: ``interleaved_*`` below).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

__all__ = [
    "ModelFamily", "FAMILY_MODULES", "supported_families", "get_family", "family_for_model", "family_for_model_type",
]

#: family name -> module defining ``FAMILY`` (imported on first use)
FAMILY_MODULES: dict[str, str] = {
    "qwen2_5_vl": "vlmsparse.patches.qwen2_5_vl",
    "qwen2_vl": "vlmsparse.patches.qwen2_vl",
    "qwen3_vl": "vlmsparse.patches.qwen3_vl",
    "qwen3_vl_moe": "vlmsparse.patches.qwen3_vl_moe",
    "llava_onevision": "vlmsparse.patches.llava_onevision",
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
        interleaved_token_id_fields: config fields of the placeholder ids whose spans may hold text (Qwen3-VL:
            the video token, its frames separated by timestamps); empty: the family interleaves no text.
        interleaved_text_max_run: a run of at most this many text tokens between two such placeholders is
            interleaved text (planned as visual, see ``vlmsparse.model.layout``); a longer run is ordinary text.
    """

    name: str
    model_types: tuple[str, ...]
    text_config_key: str
    visual_token_id_fields: tuple[str, ...]
    attention_classes: tuple[type[torch.nn.Module], ...]
    eager_attention: Callable
    vision_config_key: str = ""
    vision_attention_classes: tuple[type[torch.nn.Module], ...] = ()
    interleaved_token_id_fields: tuple[str, ...] = ()
    interleaved_text_max_run: int = 0
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.interleaved_text_max_run < 0:
            raise ValueError(f"{self.name}: interleaved_text_max_run must be >= 0, got {self.interleaved_text_max_run}")
        if bool(self.interleaved_token_id_fields) != bool(self.interleaved_text_max_run):
            raise ValueError(
                f"{self.name}: set interleaved_token_id_fields and interleaved_text_max_run together (or neither)"
            )

    def text_config(self, config):
        """The decoder's config inside the model's top config."""
        return getattr(config, self.text_config_key) if self.text_config_key else config

    def _token_ids(self, config, names: tuple[str, ...]) -> tuple[int, ...]:
        ids = []
        for name in names:
            value = getattr(config, name, None)
            if value is None:
                value = getattr(self.text_config(config), name, None)
            if value is not None:
                ids.append(int(value))
        return tuple(ids)

    def visual_token_ids(self, config) -> tuple[int, ...]:
        """Token ids of visual placeholders (image / video tokens), from the top config."""
        ids = self._token_ids(config, self.visual_token_id_fields)
        if not ids:
            raise ValueError(
                f"{self.name}: the model config has none of {self.visual_token_id_fields}; cannot tell visual tokens"
            )
        return ids

    def interleaved_token_ids(self, config) -> tuple[int, ...]:
        """Placeholder ids whose spans may hold interleaved text (empty when the family has none)."""
        if not self.interleaved_token_id_fields:
            return ()
        ids = self._token_ids(config, self.interleaved_token_id_fields)
        if not ids:
            raise ValueError(
                f"{self.name}: the model config has none of {self.interleaved_token_id_fields}; cannot find its "
                "video spans"
            )
        return ids

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


def family_for_model_type(model_type: str | None, what: str = "this model") -> ModelFamily:
    """The family whose ``model_types`` hold ``model_type``; ``ValueError`` listing the supported families."""
    for name in supported_families():
        family = get_family(name)
        if model_type in family.model_types:
            return family
    raise ValueError(
        f"vlmsparse does not support {what} (model_type={model_type!r}); supported families: "
        f"{supported_families()}. To add one, write a patches/<family>.py module defining "
        "FAMILY = ModelFamily(...) and list it in vlmsparse.model.families.FAMILY_MODULES."
    )


def family_for_model(model: torch.nn.Module) -> ModelFamily:
    """The family of a loaded model (from ``model.config.model_type``); ``ValueError`` if it is not supported."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    return family_for_model_type(model_type, what=f"{type(model).__name__}")
