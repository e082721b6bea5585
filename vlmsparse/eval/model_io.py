"""Loading a model of a supported family and answering one video question with it (greedy, timed).

``load_model`` takes a hub id or a local folder and loads it with its family's class
(:mod:`vlmsparse.eval.families`). Frames arrive already sampled by :mod:`vlmsparse.eval.frames`; for Qwen's
families they are sized too (multiples of 28 or 32), so the processor is told not to resize them again, and it
gets the sampling's metadata so the model's temporal positions (and Qwen3-VL's timestamps) follow the real
frame rate.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .families import EvalFamily, family_of_model
from .frames import SampledVideo
from .prompts import LETTERS, chat_messages

DTYPES = ("auto", "bfloat16", "float16", "float32")


def resolve_dtype(name: str) -> torch.dtype | str:
    """``"auto"`` (the checkpoint's own dtype) or a torch dtype from its name."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    return name if name == "auto" else getattr(torch, name)


def load_processor(model_id: str):
    """The model's processor; where torchvision is missing, the project's torch-only video processor."""
    import vlmsparse.model  # noqa: F401  (registers the torch-only video processor with transformers)

    try:
        from vlmsparse.model.processor import load_processor as _load
    except ImportError:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(model_id)
    return _load(model_id)


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def check_model_source(model_id: str) -> None:
    """Raise :class:`~vlmsparse.eval.errors.ModelError` unless ``model_id`` can be a model to load: a folder
    with ``config.json`` and weights, or a hub id (``owner/name``; in the local cache when ``HF_HUB_OFFLINE``
    is set). Cheap: reads no weights."""
    from .errors import ModelError

    if model_id == "testbed":
        try:
            model_id = resolve_model(model_id)
        except FileNotFoundError as exc:
            raise ModelError(str(exc)) from None
    path = Path(model_id).expanduser()
    what = (
        "pass --model a folder of a supported model (config.json, weights, processor files) or a hub id such as "
        "Qwen/Qwen2.5-VL-7B-Instruct"
    )
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"--model {model_id} is a file, not a model folder; {what}")
        config = path / "config.json"
        if not config.is_file():
            state = "is empty" if not any(path.iterdir()) else "has no config.json"
            raise ModelError(f"model folder {model_id} {state}; {what}")
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{config} cannot be read as JSON ({exc}); {what}") from None
        if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
            raise ModelError(f"model folder {model_id} has a config.json but no weights (*.safetensors or *.bin); {what}")
        return
    looks_like_path = model_id.startswith((".", "/", "~")) or "\\" in model_id or not _HUB_ID.match(model_id)
    if looks_like_path:
        raise ModelError(f"model folder {model_id} does not exist; {what}")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model_id, "config.json"), str):
            raise ModelError(
                f"--model {model_id} is neither a local folder nor in the hub cache, and HF_HUB_OFFLINE is set; "
                f"{what}, or download it first"
            )


#: ``--model`` names that are not hub ids or folders: the project's own testbed checkpoint.
MODEL_ALIASES = ("testbed",)


def resolve_model(model_id: str) -> str:
    """``testbed`` -> the shipped testbed checkpoint's folder; any other hub id or folder unchanged."""
    if model_id == "testbed":
        from ..testbed import require_checkpoint  # the testbed ships inside the package, beside eval

        return str(require_checkpoint())
    return model_id


def load_model(
    model_id: str,
    *,
    dtype: str = "bfloat16",
    device_map: str | dict | None = "auto",
    attn_implementation: str = "sdpa",
    family: EvalFamily | None = None,
):
    """``(model, processor)`` for a checkpoint of a supported family (hub id or local path), in eval mode.

    ``family``: the checkpoint's family (read from its config when None).
    """
    model_id = resolve_model(model_id)
    family = family if family is not None else family_of_model(model_id)
    kwargs = {"dtype": resolve_dtype(dtype), "attn_implementation": attn_implementation}
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = family.load_class().from_pretrained(model_id, **kwargs)
    return model.eval(), load_processor(model_id)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Generation:
    """A model reply and what it cost."""

    text: str
    prefill_s: float
    generate_s: float
    num_input_tokens: int
    num_visual_tokens: int
    num_generated: int
    preprocess_s: float | None = None  # chat template, video processor and the copy to the device
    vision_s: float | None = None  # the vision tower's forward (inside prefill_s)
    kv_cache: str | None = None  # "static" (preallocated, decode steps compiled and replayed) or "dynamic"
    #: probabilities of the option letters A-D as the first reply token (the decode's first step, all processors
    #: applied), or None where a letter is not one token of the tokenizer
    option_probs: list[float] | None = None


class _FirstStepTimer:
    """Logits processor that notes when the first token's logits exist (the end of the prefill) and, given the
    option letters' token ids, their probabilities as the first reply token."""

    def __init__(self, device: torch.device, letter_ids: list[int] | None = None):
        self.device = device
        self.letter_ids = letter_ids
        self.at: float | None = None
        self.option_probs: list[float] | None = None

    def __call__(self, input_ids, scores):
        if self.at is None:
            synchronize(self.device)
            self.at = time.perf_counter()
            if self.letter_ids is not None:
                probs = torch.softmax(scores[0].float(), dim=-1)[self.letter_ids]
                self.option_probs = [float(p) for p in probs.tolist()]
        return scores


def option_letter_ids(tokenizer) -> list[int] | None:
    """Token ids of the replies ``A`` ... ``D`` (each one token, as in Qwen's and LLaVA's vocabularies), or None."""
    ids = [tokenizer.encode(letter, add_special_tokens=False) for letter in LETTERS]
    return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None


#: ``kv_cache`` choices of :class:`VideoQA` (and the harness's ``--kv-cache``).
KV_CACHES = ("auto", "static", "dynamic")


def resolve_kv_cache(kv_cache: str, device: torch.device) -> str:
    """``"static"`` or ``"dynamic"`` for ``kv_cache`` on ``device`` (``"auto"``: static on CUDA, else dynamic)."""
    if kv_cache not in KV_CACHES:
        raise ValueError(f"kv_cache must be one of {KV_CACHES}, got {kv_cache!r}")
    if kv_cache == "auto":
        return "static" if torch.device(device).type == "cuda" else "dynamic"
    return kv_cache


class VideoQA:
    """Greedy answers from a video model to a prompt about sampled frames.

    ``processor_kwargs``: keywords of every processor call, from the family (``{"do_resize": False}`` where the
    frames arrive sized, the default).

    ``kv_cache``: ``"static"`` generates with transformers' preallocated cache (``cache_implementation="static"``):
    on CUDA, transformers compiles the decode step once and replays it from CUDA graphs, which takes generation off
    the host's clock (16 tokens after a 24,866-token prefill of a 7B-shaped Qwen2.5-VL on an H200: 0.26 s instead of
    0.47-0.65 s). The first question pays the compilation (about 45 s there); a later, longer question allocates a
    longer cache and compiles again, shorter ones reuse it. ``"dynamic"`` is transformers' default cache; ``"auto"``
    (default) is static on CUDA and dynamic elsewhere. If a static-cache generation fails where the dynamic one
    succeeds, the answerer says so once and stays dynamic.
    """

    def __init__(
        self, model, processor, *, max_new_tokens: int = 16, processor_kwargs: dict | None = None, kv_cache: str = "auto"
    ):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.kv_cache = resolve_kv_cache(kv_cache, model.device)
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.processor_kwargs = dict({"do_resize": False} if processor_kwargs is None else processor_kwargs)
        if self.processor_kwargs.get("do_resize") is False:
            from vlmsparse.model.processor import sized_frames_kwargs

            for key, value in sized_frames_kwargs(processor).items():
                self.processor_kwargs.setdefault(key, value)
        self.video_token_id = getattr(model.config, "video_token_id", None)
        self.letter_ids = option_letter_ids(processor.tokenizer)
        gen = copy.deepcopy(model.generation_config)
        gen.do_sample = False
        gen.num_beams = 1
        gen.temperature = None
        gen.top_p = None
        gen.top_k = None
        gen.max_new_tokens = max_new_tokens
        if gen.pad_token_id is None:
            gen.pad_token_id = getattr(processor.tokenizer, "pad_token_id", None) or gen.eos_token_id
        gen.cache_implementation = "static" if self.kv_cache == "static" else None
        self.generation_config = gen
        from vlmsparse.model.vision import VisionTimer

        try:
            self.vision_timer: VisionTimer | None = VisionTimer(model)
        except ValueError:  # a model of a family vlmsparse does not describe: no vision split
            self.vision_timer = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    def inputs(self, video: SampledVideo, prompt: str):
        """Processor inputs (on the model's device) for one question about ``video``."""
        text = self.processor.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True)
        height, width = video.size
        metadata = {
            "total_num_frames": video.total_frames,
            "fps": video.video_fps,
            "frames_indices": list(video.indices),
            "height": height,
            "width": width,
            "duration": video.total_frames / video.video_fps if video.video_fps else None,
        }
        batch = self.processor(
            text=[text],
            videos=[video.frames],
            video_metadata=[metadata],
            do_sample_frames=False,
            return_tensors="pt",
            **self.processor_kwargs,
        )
        return batch.to(self.device)

    @torch.no_grad()  # not inference_mode: planners keep per-prefill caches keyed on tensor versions
    def answer(self, video: SampledVideo, prompt: str) -> Generation:
        """Generate the reply; ``prefill_s`` is the time to the first token's logits (vision tower included)."""
        from transformers import LogitsProcessorList

        synchronize(self.device)
        begin = time.perf_counter()
        batch = self.inputs(video, prompt)
        input_ids = batch["input_ids"]
        timer = _FirstStepTimer(self.device, self.letter_ids)
        if self.vision_timer is not None:
            self.vision_timer.reset()
        synchronize(self.device)
        start = time.perf_counter()
        out = self._generate(batch, LogitsProcessorList([timer]), timer)
        synchronize(self.device)
        end = time.perf_counter()
        new_tokens = out[0, input_ids.shape[1] :]
        text = self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True)
        visual = int((input_ids == self.video_token_id).sum()) if self.video_token_id is not None else 0
        return Generation(
            text=text,
            prefill_s=(timer.at if timer.at is not None else end) - start,
            generate_s=end - start,
            num_input_tokens=int(input_ids.shape[1]),
            num_visual_tokens=visual,
            num_generated=int(new_tokens.numel()),
            preprocess_s=start - begin,
            vision_s=self.vision_timer.seconds() if self.vision_timer is not None else None,
            kv_cache=self.kv_cache,
            option_probs=timer.option_probs,
        )

    def _generate(self, batch, processors, timer: "_FirstStepTimer"):
        try:
            return self.model.generate(**batch, generation_config=self.generation_config, logits_processor=processors)
        except Exception as exc:
            if self.kv_cache != "static" or isinstance(exc, torch.cuda.OutOfMemoryError):
                raise
            static_error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        # the same question with the dynamic cache: if that fails too, the error is the input's, not the cache's
        self.generation_config.cache_implementation = None
        timer.at = None
        if self.vision_timer is not None:
            self.vision_timer.reset()
        try:
            out = self.model.generate(**batch, generation_config=self.generation_config, logits_processor=processors)
        except Exception:
            self.generation_config.cache_implementation = "static"
            raise
        self.kv_cache = "dynamic"
        logging.getLogger("vlmsparse").warning(
            "vlmsparse: generation with a static KV cache failed (%s); answering with the dynamic cache from here "
            "(pass --kv-cache dynamic to skip the attempt)", static_error
        )
        return out
