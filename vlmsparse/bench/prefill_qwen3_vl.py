"""Decoder prefill of a Qwen3-VL-8B-shaped model on a CUDA GPU, each method against the unpatched model, with
Qwen3-VL's frame timestamps, DeepStack and M-RoPE.

The model has Qwen3-VL-8B's decoder shapes (36 layers, hidden 4096, 32 q / 8 kv heads of dim 128, MLP 12288;
``vlmsparse.testing.qwen3_vl_8b_config``) and random bfloat16 weights. The prompt is laid out as Qwen3-VL's
processor writes a video: ``[text | per frame pair: <t seconds> <|vision_start|> N video tokens <|vision_end|>
| text]``, the timestamps being interleaved text. The visual features enter as precomputed vision outputs
(``mm_encoder_outputs``: random embeddings and DeepStack features), so the vision tower is not run but DeepStack
injection (into the first three decoder layers) and the interleaved M-RoPE positions (from ``mm_token_type_ids``
and ``video_grid_thw``) are the model's own: the figure is the decoder prefill up to the first token's logits.

Each method is timed with CUDA events against the unpatched model (``sdpa``) in the same run, with peak memory
and achieved sparsity. ``psa-old-rule`` runs PSA with the timestamps treated as ordinary text (every block holding
one planned dense), the rule before interleaved text: the gap to ``psa`` is what the layout decision buys.
Random weights give attention maps unlike a trained model's, so the sparsity a method reaches here is not what it
reaches on real videos; the time for a given sparsity is what this measures.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from .common import RunOutput, add_output_arguments, environment, print_table

SETTINGS: dict[str, dict[str, Any]] = {
    "dense": dict(name="dense"),
    "psa": dict(name="psa"),
    "psa-old-rule": dict(name="psa", old_rule=True),
    "psa-videomme": dict(name="psa", preset="videomme-0.65"),
    "xattention": dict(name="xattention"),
    "sparge": dict(name="sparge"),
}
DEFAULT_METHODS = ["dense", "psa", "psa-old-rule", "psa-videomme"]


#: Shown under ``--help``; every example needs a CUDA GPU (the 8B-shaped model takes about 18 GB).
EXAMPLES = """\
examples:
  python -m vlmsparse.bench prefill-qwen3-vl                          # 16384 video tokens in 64 frame pairs
  python -m vlmsparse.bench prefill-qwen3-vl --frame-pairs 32 64 --methods psa psa-old-rule --layers 4
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    p.add_argument("--frame-pairs", type=int, nargs="+", default=[64], metavar="N",
                   help="frame pairs (temporal patches) of the video, one timestamp each (default 64)")
    p.add_argument("--tokens-per-pair", type=int, default=256,
                   help="video tokens per frame pair, a square (default 256: 512 x 512 frames)")
    p.add_argument("--text-prefix", type=int, default=64, help="text tokens before the video (default 64)")
    p.add_argument("--text-suffix", type=int, default=32, help="text tokens after the video (default 32)")
    p.add_argument("--layers", type=int, default=36, help="decoder layers (default 36, as Qwen3-VL-8B)")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(SETTINGS),
                   help=f"methods to time (default: {' '.join(DEFAULT_METHODS)}); psa-old-rule plans the "
                   "timestamps as text")
    p.add_argument("--repeats", type=int, default=3, help="timed prefills per setting, after one warm-up (default 3)")
    add_output_arguments(p, "prefill")


def check_args(args: argparse.Namespace) -> None:
    """``ValueError`` naming the first bad flag (called before anything runs)."""
    from .common import check_writable_output, require_positive

    require_positive(args, "frame_pairs", "tokens_per_pair", "layers", "repeats")
    require_positive(args, "text_prefix", "text_suffix", allow_zero=True)
    if round(args.tokens_per_pair**0.5) ** 2 != args.tokens_per_pair:
        raise ValueError(f"--tokens-per-pair must be a square (a merged patch grid), got {args.tokens_per_pair}")
    check_writable_output(args)


def build_model(layers: int, device: str = "cuda", dtype: torch.dtype = torch.bfloat16):
    """A random-weight Qwen3-VL with 8B decoder shapes and a one-block vision tower (never run)."""
    from transformers import Qwen3VLForConditionalGeneration

    from vlmsparse.testing import qwen3_vl_8b_config

    config = qwen3_vl_8b_config(num_hidden_layers=layers)
    config.vision_config.depth = 1
    config.vision_config.deepstack_visual_indexes = [0]  # the tower is not run; its DeepStack mergers stay small
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def _timestamp_length(seconds: float) -> int:
    """Tokens of ``<12.5 seconds>`` in Qwen's tokenizer: ``<``, one per digit, ``.``, ``seconds``, ``>``."""
    return len(f"{seconds:.1f}") + 3


def video_prompt(
    config,
    frame_pairs: int,
    tokens_per_pair: int,
    *,
    text_prefix: int = 64,
    text_suffix: int = 32,
    deepstack_layers: int = 3,
    fps: float = 2.0,
    seed: int = 0,
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, Any]:
    """Model keywords of one Qwen3-VL video prompt with precomputed vision outputs (see the module docstring).

    ``tokens_per_pair`` must be a square (the merged patch grid of a frame pair).
    """
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    side = round(tokens_per_pair**0.5)
    if side * side != tokens_per_pair:
        raise ValueError(f"tokens_per_pair must be a square (a merged patch grid), got {tokens_per_pair}")
    g = torch.Generator().manual_seed(seed)
    start, end, video = config.vision_start_token_id, config.vision_end_token_id, config.video_token_id
    specials = torch.tensor([start, end, video, config.image_token_id])
    high = min(config.text_config.vocab_size, 150000)

    def text(n: int) -> torch.Tensor:  # random text ids, none of them a vision placeholder or delimiter
        ids = torch.randint(0, high, (n,), generator=g)
        return torch.where(torch.isin(ids, specials), torch.zeros_like(ids), ids)

    parts = [text(text_prefix), torch.tensor([start])]
    for i in range(frame_pairs):
        seconds = (2 * i + 0.5) / fps  # the middle of the pair, as the processor writes it
        parts += [text(_timestamp_length(seconds)), torch.tensor([start]), torch.full((tokens_per_pair,), video),
                  torch.tensor([end])]
    parts += [torch.tensor([end]), text(text_suffix)]
    input_ids = torch.cat(parts)[None].to(device)
    n_visual = frame_pairs * tokens_per_pair
    hidden = config.text_config.hidden_size
    embeds = torch.randn(n_visual, hidden, generator=g).mul_(0.02).to(device=device, dtype=dtype)
    deepstack = [(torch.randn(n_visual, hidden, generator=g).mul_(0.02).to(device=device, dtype=dtype),)
                 for _ in range(deepstack_layers)]
    merge = config.vision_config.spatial_merge_size
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": (input_ids == video).to(torch.int32) * 2,
        "video_grid_thw": torch.tensor([[frame_pairs, side * merge, side * merge]], device=device),
        "mm_encoder_outputs": {
            "video": BaseModelOutputWithDeepstackFeatures(pooler_output=(embeds,), deepstack_features=deepstack)
        },
    }


def patch_setting(model, label: str, timing: bool = False, **overrides: Any):
    """``vlmsparse.patch`` for one of ``SETTINGS`` (``psa-old-rule``: interleaved text planned as text);
    ``overrides``: method config fields (e.g. block sizes)."""
    import vlmsparse

    setting = dict(SETTINGS[label], **overrides)
    old_rule = setting.pop("old_rule", False)
    handle = vlmsparse.patch(model, setting.pop("name"), timing=timing, **setting)
    if old_rule:
        handle._state.tracker.interleaved_text_max_run = 0  # no text counts as inside the video span
    return handle


def layout_rows(model, inputs: dict[str, Any], block: int = 128) -> dict[str, int]:
    """Interleaved-text tokens, and the blocks left to the method under the old and the new rule."""
    from vlmsparse.model.families import get_family
    from vlmsparse.model.layout import LayoutTracker, planned_block_counts

    family = get_family("qwen3_vl")
    tracker = LayoutTracker(
        family.visual_token_ids(model.config),
        interleaved_token_ids=family.interleaved_token_ids(model.config),
        interleaved_text_max_run=family.interleaved_text_max_run,
    )
    tracker.pre_hook(model, (), {"input_ids": inputs["input_ids"]})
    layout = tracker.layout
    old = planned_block_counts(layout.visual, layout.interleaved_text, block, block, interleaved_as_visual=False)
    new = planned_block_counts(layout.visual, layout.interleaved_text, block, block)
    inter = 0 if layout.interleaved_text is None else int(layout.interleaved_text.sum())
    return {"interleaved_text": inter, "causal_blocks": new["visible"], "free_blocks_old_rule": old["free"],
            "free_blocks_new_rule": new["free"]}


def run(args: argparse.Namespace) -> int:
    from .prefill import _dense_attention_ms, method_rows, time_prefill

    if not torch.cuda.is_available():
        raise SystemExit("the prefill benchmark needs a CUDA GPU")
    env = environment()
    model = build_model(args.layers)
    text_cfg = model.config.text_config
    output = RunOutput(args, "prefill")
    rows = output.rows  # each row saved to the run folder as it is measured
    for pairs in args.frame_pairs:
        inputs = video_prompt(model.config, pairs, args.tokens_per_pair, text_prefix=args.text_prefix,
                              text_suffix=args.text_suffix, seed=pairs)
        length = inputs["input_ids"].shape[1]
        blocks = layout_rows(model, inputs)
        base = dict(env, model="Qwen3-VL-8B-shaped (random weights)", layers=args.layers, hidden=text_cfg.hidden_size,
                    Hq=text_cfg.num_attention_heads, Hkv=text_cfg.num_key_value_heads, L=length,
                    visual_tokens=pairs * args.tokens_per_pair, dtype="bfloat16", **blocks)
        t_sdpa, mem_sdpa = time_prefill(model, inputs, args.repeats)
        attn_layer = _dense_attention_ms(length, text_cfg.num_attention_heads, text_cfg.num_key_value_heads,
                                         text_cfg.head_dim)
        rows.append(dict(base, method="sdpa (unpatched)", prefill_ms=t_sdpa, speedup=1.0, peak_gib=mem_sdpa,
                         sparsity=0.0, attention_share=args.layers * attn_layer / t_sdpa))
        rows += method_rows(model, inputs, args.methods, patch_setting, base, t_sdpa, args.repeats)
        del inputs
        torch.cuda.empty_cache()
    print_table(rows, ["L", "visual_tokens", "method", "prefill_ms", "speedup", "sparsity", "visual_sparsity",
                       "planning_ms", "sparse_attention_ms", "peak_gib"])
    print(f"interleaved text tokens {rows[0]['interleaved_text']}; blocks left to the method (128-blocks, of "
          f"{rows[0]['causal_blocks']}): old rule {rows[0]['free_blocks_old_rule']}, new rule "
          f"{rows[0]['free_blocks_new_rule']}")
    print(output.finish())  # results/prefill.csv (--results): the whole run's rows once it has ended
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m vlmsparse.bench prefill-qwen3-vl", description=__doc__)
    add_arguments(p)
    raise SystemExit(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
