"""Decoder prefill of a Qwen2.5-VL-7B-shaped model on a CUDA GPU, each method against the unpatched model.

The model has Qwen2.5-VL-7B's real decoder shapes (28 layers, hidden 3584, 28 q / 4 kv heads of dim 128, MLP
18944) and random bfloat16 weights; the prompt is ``[text | N video tokens | text]``. The video tokens enter
as token ids (their embeddings random), so the vision tower is not run: the figure is the decoder prefill,
the part vlmsparse changes, up to the first token's logits. Each method is timed with CUDA events against the
unpatched model (``sdpa``) in the same run, with peak memory and achieved sparsity. Random weights give
attention maps unlike a trained model's, so the sparsity a method reaches here is not what it reaches on real
videos; the time for a given sparsity is what this measures.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any, Callable

import torch

from .common import RunOutput, add_output_arguments, environment, print_table

#: Shown under ``--help``; every example needs a CUDA GPU (the 7B-shaped model takes about 16 GB).
EXAMPLES = """\
examples:
  python -m vlmsparse.bench prefill                                 # 8k, 16k and 32k visual tokens, every method
  python -m vlmsparse.bench prefill --visual-tokens 8192 --methods psa xattention --layers 4
"""

SETTINGS = {
    "dense": dict(name="dense"),
    "psa": dict(name="psa"),
    "psa-videomme": dict(name="psa", preset="videomme-0.65"),
    "xattention": dict(name="xattention"),
    "sparge": dict(name="sparge"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    p.add_argument("--visual-tokens", type=int, nargs="+", default=[8192, 16384, 32768], metavar="N",
                   help="video tokens of the prompt; the text around them adds --text-prefix + --text-suffix "
                   "(default 8192 16384 32768)")
    p.add_argument("--text-prefix", type=int, default=64, help="text tokens before the video (default 64)")
    p.add_argument("--text-suffix", type=int, default=32, help="text tokens after the video (default 32)")
    p.add_argument("--layers", type=int, default=28, help="decoder layers (default 28, as Qwen2.5-VL-7B)")
    p.add_argument("--methods", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                   help=f"methods to time (default: {' '.join(SETTINGS)})")
    p.add_argument("--repeats", type=int, default=3, help="timed prefills per setting, after one warm-up (default 3)")
    add_output_arguments(p, "prefill")


def check_args(args: argparse.Namespace) -> None:
    """``ValueError`` naming the first bad flag (called before anything runs)."""
    from .common import check_writable_output, require_positive

    require_positive(args, "visual_tokens", "layers", "repeats")
    require_positive(args, "text_prefix", "text_suffix", allow_zero=True)
    check_writable_output(args)


def _build_model(layers: int):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vlmsparse.testing import qwen2_5_vl_7b_config

    config = qwen2_5_vl_7b_config(num_hidden_layers=layers)
    config.vision_config.depth = 1  # the vision tower is not run: keep its random weights small
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa"
        )
    return model.eval()


def forward_prefill(model, inputs: dict[str, Any]) -> None:
    """One prefill forward, no cache, up to the first token's logits."""
    with torch.inference_mode():
        model(**inputs, use_cache=False, logits_to_keep=1)


def time_prefill(model, inputs: dict[str, Any], repeats: int) -> tuple[float, float]:
    """Median milliseconds of one prefill forward on the GPU (CUDA events, after one warm-up), and the peak memory
    in GiB."""
    times = []
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for i in range(repeats + 1):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        forward_prefill(model, inputs)
        end.record()
        torch.cuda.synchronize()
        if i:
            times.append(start.elapsed_time(end))
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**30


def patch_setting(model, label: str, timing: bool = False):
    """``vlmsparse.patch`` for one of ``SETTINGS``."""
    import vlmsparse

    setting = dict(SETTINGS[label])
    return vlmsparse.patch(model, setting.pop("name"), timing=timing, **setting)


def method_rows(model, inputs: dict[str, Any], labels: list[str], patch: Callable, base: dict, dense_ms: float,
                repeats: int, time_fn: Callable = time_prefill) -> list[dict]:
    """One row per method label: the patched model's prefill time (``time_fn``: median ms and peak GiB) against
    the unpatched model's ``dense_ms``, the sparsity it reached there, and from one more pass with the patch's
    timers on, its planning and sparse-attention milliseconds. ``patch(model, label, timing=...)`` patches;
    the model is left unpatched."""
    rows = []
    for label in labels:
        handle = patch(model, label)
        try:
            t, mem = time_fn(model, inputs, repeats)
            sparsity, visual = handle.stats.sparsity(), handle.stats.visual_sparsity()
            handle.unpatch()
            handle = patch(model, label, timing=True)  # one timed pass: planning, attention
            forward_prefill(model, inputs)
            plan_ms = 1e3 * (handle.stats.planning_seconds() or 0.0)
            attn_ms = 1e3 * (handle.stats.attention_seconds() or 0.0)
        finally:
            handle.unpatch()
        rows.append(dict(base, method=label, prefill_ms=t, speedup=dense_ms / t, peak_gib=mem, sparsity=sparsity,
                         visual_sparsity=visual, planning_ms=plan_ms, sparse_attention_ms=attn_ms,
                         attention_share=(plan_ms + attn_ms) / t if t else None))
    return rows


def _dense_attention_ms(length: int, heads_q: int, heads_kv: int, head_dim: int) -> float:
    """One layer's attention as the unpatched model runs it (SDPA, its default backend choice), in ms."""
    from .common import time_ms

    q = torch.randn(1, heads_q, length, head_dim, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, heads_kv, length, head_dim, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    return time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))


def run(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        raise SystemExit("the prefill benchmark needs a CUDA GPU")
    env = environment()
    model = _build_model(args.layers)
    text_cfg = model.config.text_config
    video_id = model.config.video_token_id
    output = RunOutput(args, "prefill")
    rows = output.rows  # each row saved to the run folder as it is measured
    for n_visual in args.visual_tokens:
        g = torch.Generator().manual_seed(n_visual)
        prefix = torch.randint(0, 150000, (args.text_prefix,), generator=g)
        suffix = torch.randint(0, 150000, (args.text_suffix,), generator=g)
        ids = torch.cat([prefix, torch.full((n_visual,), video_id), suffix])[None].cuda()
        length = ids.shape[1]
        base = dict(env, layers=args.layers, hidden=text_cfg.hidden_size, Hq=text_cfg.num_attention_heads,
                    Hkv=text_cfg.num_key_value_heads, L=length, visual_tokens=n_visual, dtype="bfloat16")
        inputs = {"input_ids": ids}
        t_sdpa, mem_sdpa = time_prefill(model, inputs, args.repeats)
        attn_layer = _dense_attention_ms(length, text_cfg.num_attention_heads, text_cfg.num_key_value_heads,
                                         text_cfg.hidden_size // text_cfg.num_attention_heads)
        rows.append(dict(base, method="sdpa (unpatched)", prefill_ms=t_sdpa, speedup=1.0, peak_gib=mem_sdpa,
                         sparsity=0.0, attention_share=args.layers * attn_layer / t_sdpa))
        rows += method_rows(model, inputs, args.methods, patch_setting, base, t_sdpa, args.repeats)
        del ids, inputs
        torch.cuda.empty_cache()
    print_table(rows, ["L", "method", "prefill_ms", "speedup", "sparsity", "planning_ms", "sparse_attention_ms",
                       "attention_share", "peak_gib"])
    print(output.finish())  # results/prefill.csv (--results): the whole run's rows once it has ended
    return 0
