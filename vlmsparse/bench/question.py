"""Where a whole question's time goes, per method, on a Qwen2.5-VL-7B-shaped model (CUDA GPU).

A Qwen2.5-VL-7B-shaped model with random bfloat16 weights (the real vision tower: 32 layers, hidden 1280, 16 heads
of dim 80, windows of 112 pixels, full attention at layers 7, 15, 23, 31; the real decoder: 28 layers), loaded with
``attn_implementation="sdpa"`` as the harness loads it, answers one question about a random video of about N
visual tokens: the vision tower, the decoder prefill and 16 generated tokens, timed with CUDA events. Settings:

- ``unpatched``: the model as loaded (the vision tower's windows one SDPA call each, the decoder's own attention,
  transformers' default dynamic KV cache);
- ``dense``: the vision tower's windows in one launch per layer and its blocks compiled (``vision="compiled"``), the
  decoder unpatched: what the harness's ``dense`` row runs;
- ``dense-segment``: the same with the blocks uncompiled (``vision="segment"``): what compiling adds;
- each method (``psa``, ``xattention``, ``sparge``): the decoder's prefill patched too.

Every setting but ``unpatched`` generates with ``--kv-cache`` (default ``static``, as the harness does on CUDA:
transformers' preallocated cache, its decode step compiled once and replayed from CUDA graphs); the compilation
falls in the untimed warm-up question, whose wall time is the row's ``warmup_wall_s``.

Before the questions, one layer's vision attention is timed alone at real shapes (per-window SDPA loop against the
segment kernel, both checked against float32 SDPA per segment). Each setting's vision tower output is checked
against the unpatched one's (``vision_rel_err``), beside the yardstick ``vision_rel_err_floor``: the unpatched tower
on another exact SDPA backend against itself. Random weights give attention maps unlike a trained model's, so the sparsity a
method reaches here is not what it reaches on real videos. Rows go to a run folder (``--out``), and to
``results/question.csv`` with ``--results``; a stacked-bar PNG is drawn beside the CSV.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from vlmsparse.argtypes import patch_grid
from vlmsparse.runs import new_run_folder

from .common import RESULTS_DIR, RunTable, add_output_arguments, environment, print_table, write_csv

#: Shown under ``--help``; every example needs a CUDA GPU (the 7B-shaped model takes about 17 GB).
EXAMPLES = """\
examples:
  python -m vlmsparse.bench question                                # 24k, 12k and 48k visual tokens, every setting
  python -m vlmsparse.bench question --visual-tokens 12288 --settings unpatched dense psa --no-floor
"""

#: label -> (decoder method or None for the model's own attention, vision mode)
#: (run in this order: ``dense`` before ``unpatched``, so that the first large allocations at a size, if they cost
#: anything, fall on the patched model, not on the baseline)
SETTINGS: dict[str, tuple[str | None, str]] = {
    "dense": (None, "compiled"),
    "dense-segment": (None, "segment"),
    "unpatched": (None, "unpatched"),
    "psa": ("psa", "compiled"),
    "xattention": ("xattention", "compiled"),
    "sparge": ("sparge", "compiled"),
}
PARTS = ("vision_s", "decoder_prefill_s", "generation_s")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    p.add_argument("--visual-tokens", type=int, nargs="+", default=[24576, 12288, 49152], metavar="N",
                   help="visual tokens per question, rounded to whole frames of the frame grid "
                   "(default 24576 12288 49152)")
    p.add_argument("--frame", type=patch_grid, default=(36, 64), metavar="HxW",
                   help="patches per frame, even sides (default 36x64: 504x896 pixels, 16:9)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                   help=f"settings to run, always in this order (default: {' '.join(SETTINGS)})")
    p.add_argument("--layers", type=int, default=28, help="decoder layers (default 28, as Qwen2.5-VL-7B)")
    p.add_argument("--vision-layers", type=int, default=32, help="vision tower layers (default 32, as Qwen2.5-VL-7B)")
    p.add_argument("--new-tokens", type=int, default=16, help="tokens generated per question (default 16)")
    p.add_argument("--kv-cache", choices=("static", "dynamic"), default="static",
                   help="the KV cache of every setting but unpatched (default static, as the harness on CUDA)")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed questions per setting and size, after a warm-up (default 1)")
    p.add_argument("--no-kernel", action="store_true", help="skip the one-layer vision attention timing")
    p.add_argument("--no-floor", action="store_true",
                   help="skip the unpatched tower on a second SDPA backend (the yardstick of the vision check)")
    add_output_arguments(p, "question")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: a tiny model, CPU allowed


def video_grid(visual_tokens: int, frame: tuple[int, int]) -> tuple[int, int, int]:
    """``(t, h, w)`` of a video of about ``visual_tokens`` merged tokens in frames of ``frame`` patches."""
    per_frame = frame[0] * frame[1] // 4
    return max(1, round(visual_tokens / per_frame)), frame[0], frame[1]


def build_model(layers: int, vision_layers: int):
    """Random bfloat16 Qwen2.5-VL-7B-shaped model on the GPU, ``sdpa`` attention (as the harness loads it)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vlmsparse.testing import qwen2_5_vl_7b_config

    config = qwen2_5_vl_7b_config(num_hidden_layers=layers)
    config.vision_config.depth = vision_layers
    config.vision_config.fullatt_block_indexes = [i for i in config.vision_config.fullatt_block_indexes if i < vision_layers]
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.generation_config.pad_token_id = 151643
    return model.eval()


def tiny_model():
    """A tiny random Qwen2.5-VL (``vlmsparse.testing``) on the GPU if there is one: for tests of this benchmark."""
    from vlmsparse.testing import tiny_qwen2_5_vl

    model, _ = tiny_qwen2_5_vl(seed=0)
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def question_inputs(model, grid: tuple[int, int, int], seed: int = 0) -> dict:
    """``[64 text | vision_start | video | vision_end | 32 text]`` ids, random patches and the grid, on its device."""
    cfg, vcfg = model.config, model.config.vision_config
    device = model.device
    special = min(cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id)
    text_ids = min(150000, special - 32)  # ordinary tokens, below the special ones
    t, h, w = grid
    g = torch.Generator().manual_seed(seed)
    width = vcfg.in_channels * vcfg.temporal_patch_size * vcfg.patch_size**2
    pixels = torch.randn(t * h * w, width, generator=g).to(model.dtype)
    n_visual = t * h * w // vcfg.spatial_merge_size**2
    ids = torch.cat([
        torch.randint(0, text_ids, (64,), generator=g),
        torch.tensor([cfg.vision_start_token_id]),
        torch.full((n_visual,), cfg.video_token_id),
        torch.tensor([cfg.vision_end_token_id]),
        torch.randint(0, text_ids, (32,), generator=g),
    ])[None]
    return dict(
        input_ids=ids.to(device),
        attention_mask=torch.ones_like(ids).to(device),
        pixel_values_videos=pixels.to(device),
        video_grid_thw=torch.tensor([[t, h, w]], device=device),
        second_per_grid_ts=torch.tensor([1.0], device=device),
    )


def _mark(device: torch.device):
    """A point in time on ``device``'s stream: a recorded CUDA event, or the host clock on CPU."""
    if device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def _seconds(a, b) -> float:
    return a.elapsed_time(b) / 1e3 if isinstance(a, torch.cuda.Event) else b - a


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _FirstLogits:
    """Logits processor that marks when the first token's logits exist (the end of the prefill)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.at = None

    def __call__(self, input_ids, scores):
        if self.at is None:
            self.at = _mark(self.device)
        return scores


def time_question(model, inputs: dict, new_tokens: int, timer) -> dict:
    """One question: seconds of the vision tower, the decoder prefill, generation and the whole, and its tokens."""
    from transformers import LogitsProcessorList

    device = model.device
    first = _FirstLogits(device)
    timer.reset()
    _sync(device)
    wall = time.perf_counter()
    start = _mark(device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             logits_processor=LogitsProcessorList([first]))
    end = _mark(device)
    _sync(device)
    wall = time.perf_counter() - wall
    whole = _seconds(start, end)
    prefill = _seconds(start, first.at)
    vision = timer.seconds()
    return dict(vision_s=vision, decoder_prefill_s=prefill - vision, generation_s=whole - prefill, question_s=whole,
                wall_s=wall, generated=int(out.shape[1] - inputs["input_ids"].shape[1]))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _other_backend_output(tower, inputs: dict) -> torch.Tensor | None:
    """The unpatched tower's output with SDPA on another exact backend (memory-efficient on CUDA, math on CPU).

    How far two exact attentions in the model's dtype drift apart over the tower: the yardstick for
    ``vision_rel_err`` (a random-weight tower in bfloat16 amplifies rounding differences layer after layer).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = SDPBackend.EFFICIENT_ATTENTION if inputs["pixel_values_videos"].is_cuda else SDPBackend.MATH
    try:
        with torch.no_grad(), sdpa_kernel(backend):
            return tower(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"]).pooler_output
    except RuntimeError as exc:  # the backend refuses these shapes
        print(f"no second SDPA backend for the vision check ({exc}); vision_rel_err_floor left empty")
        return None


def _time_ms(fn, device: torch.device) -> float:
    """Median milliseconds of ``fn``: ``triton.testing.do_bench`` (CUDA events) on a GPU, the host clock on CPU."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def vision_attention_rows(model, grid: tuple[int, int, int]) -> list[dict]:
    """One vision layer's attention at real shapes: per-window SDPA loop vs the segment kernel, in ms, with errors."""
    try:
        from transformers.vision_utils import get_vision_cu_seqlens, get_vision_window_index
    except ImportError:  # older transformers: the window layout lives elsewhere
        print("transformers.vision_utils not found: one-layer vision attention timing skipped")
        return []

    from vlmsparse.kernels.segment_attention import segment_attention, segment_layout

    vcfg = model.config.vision_config
    device = model.device
    grid_thw = torch.tensor([list(grid)], device=device)
    _, cu_window = get_vision_window_index(grid_thw, vcfg.spatial_merge_size, vcfg.window_size, vcfg.patch_size)
    cu_frame = get_vision_cu_seqlens(grid_thw)
    n, heads = int(grid[0] * grid[1] * grid[2]), vcfg.num_heads
    d = vcfg.hidden_size // heads
    qkv = torch.randn(n, 3, heads, d, device=device, dtype=model.dtype)
    q, k, v = qkv.permute(1, 0, 2, 3).unbind(0)
    q, k = q.contiguous(), k.contiguous()  # as after the rotary embedding; v stays a view of qkv
    q, k, v = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    rows = []
    for kind, cu in (("window", cu_window.to(device)), ("frame", cu_frame.to(device))):
        lengths = (cu[1:] - cu[:-1]).tolist()

        def loop(dtype=model.dtype):
            parts = zip(*(torch.split(x.to(dtype), lengths, dim=2) for x in (q, k, v)))
            return torch.cat([sdpa(a, b, c) for a, b, c in parts], dim=2)

        layout = segment_layout(cu, n)
        kernel = lambda: segment_attention(q, k, v, layout=layout)  # noqa: E731
        ref = loop(torch.float32)
        out_loop, out_kernel = loop(), kernel()
        row = dict(kind=kind, N=n, heads=heads, head_dim=d, segments=len(lengths), longest=max(lengths),
                   sdpa_loop_ms=_time_ms(loop, device), segment_kernel_ms=_time_ms(kernel, device),
                   layout_ms=_time_ms(lambda: segment_layout(cu, n), device),
                   sdpa_loop_rel_err=_rel(out_loop, ref), segment_kernel_rel_err=_rel(out_kernel, ref))
        row["speedup"] = row["sdpa_loop_ms"] / row["segment_kernel_ms"]
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> Path:
    """Stacked bars (vision tower, decoder prefill, generation) per setting, one group per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["visual_tokens"] for r in rows})
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig, axes = plt.subplots(1, len(sizes), figsize=(max(7.5, 4.2 * len(sizes)), 4), sharey=False, squeeze=False)
    colors = {"vision_s": "#4c72b0", "decoder_prefill_s": "#dd8452", "generation_s": "#55a868"}
    for ax, size in zip(axes[0], sizes):
        here = [r for r in rows if r["visual_tokens"] == size]
        labels = [s for s in settings if any(r["setting"] == s for r in here)]
        bottom = [0.0] * len(labels)
        for part in PARTS:
            values = [next(r[part] for r in here if r["setting"] == s) for s in labels]
            ax.bar(labels, values, bottom=bottom, color=colors[part], label=part.removesuffix("_s").replace("_", " "))
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_title(f"{size} visual tokens")
        ax.set_ylabel("seconds per question")
        ax.tick_params(axis="x", rotation=30)
    axes[0][0].legend(loc="upper right", fontsize=8)
    first = rows[0]
    fig.suptitle(f"Where a question's time goes: {first.get('model', '')}, {first.get('dtype', '')}, "
                 f"{first.get('device', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    import vlmsparse
    from vlmsparse.model.vision import VisionTimer, patch_vision

    if not torch.cuda.is_available() and not args.tiny:
        raise SystemExit("the question benchmark needs a CUDA GPU")
    if args.repeats < 1 or args.new_tokens < 1:
        raise SystemExit("--repeats and --new-tokens must be >= 1")
    frame = args.frame
    out = Path(args.out) if args.out else new_run_folder("question")
    out.mkdir(parents=True, exist_ok=True)
    table = RunTable(out / "question.csv")  # rows of other runs already in the folder are kept
    env = environment()
    started = time.perf_counter()
    model = tiny_model() if args.tiny else build_model(args.layers, args.vision_layers)
    print(f"model built in {time.perf_counter() - started:.1f} s", flush=True)
    timer = VisionTimer(model)
    capture: dict = {}
    timer.tower.register_forward_hook(lambda m, a, o: capture.__setitem__("out", o.pooler_output))
    # first use of the GPU (handles, allocator) on a one-frame question, unpatched: kept out of the numbers
    time_question(model, question_inputs(model, video_grid(1, frame)), 1, timer)
    model_name = "tiny random Qwen2.5-VL" if args.tiny else "Qwen2.5-VL-7B-shaped, random weights"
    layers = model.config.text_config.num_hidden_layers
    vision_layers = model.config.vision_config.depth

    if not args.no_kernel:
        attn_rows = [dict(env, **r) for r in vision_attention_rows(model, video_grid(args.visual_tokens[0], frame))]
        print_table(attn_rows, ["kind", "N", "segments", "longest", "sdpa_loop_ms", "segment_kernel_ms", "speedup",
                                "layout_ms", "sdpa_loop_rel_err", "segment_kernel_rel_err"])
        RunTable(out / "vision_attention.csv").save(attn_rows)

    rows: list[dict] = []
    for n_target in args.visual_tokens:
        grid = video_grid(n_target, frame)
        inputs = question_inputs(model, grid)
        n_visual = grid[0] * grid[1] * grid[2] // 4
        outputs: dict[str, torch.Tensor] = {}
        for label in [s for s in SETTINGS if s in args.settings]:
            method, vision = SETTINGS[label]
            kv_cache = "dynamic" if label == "unpatched" else args.kv_cache
            model.generation_config.cache_implementation = "static" if kv_cache == "static" else None
            if method is None:
                handle, vision_patch = None, patch_vision(model, vision)
            else:
                handle, vision_patch = vlmsparse.patch(model, method, vision=vision), None
            try:
                # a whole untimed question per patched setting and size: Triton kernels compile for new shapes, and
                # the allocator grows for the KV cache (a one-token warm-up left that in the first setting's
                # generation time: 2.8 s instead of 0.4 s at 24k tokens on an H200). SDPA compiles nothing.
                warmup_s = None
                if label != "unpatched":  # its wall time holds the compilation where a setting compiles anything
                    warmup_s = time_question(model, inputs, args.new_tokens, timer)["wall_s"]
                if handle is not None:
                    handle.stats.reset()
                runs = [time_question(model, inputs, args.new_tokens, timer) for _ in range(args.repeats)]
                sparsity = handle.stats.sparsity() if handle is not None else 0.0
                visual_sparsity = handle.stats.visual_sparsity() if handle is not None else 0.0
                vision_out = capture["out"]
            finally:
                if handle is not None:
                    handle.unpatch()
                if vision_patch is not None:
                    vision_patch.restore()
            row = dict(env, model=model_name, setting=label, method=method or "unpatched", vision=vision, kv_cache=kv_cache,
                       visual_tokens=n_visual,
                       target_tokens=n_target, grid_thw="x".join(map(str, grid)), layers=layers,
                       vision_layers=vision_layers, new_tokens=args.new_tokens, repeats=args.repeats,
                       dtype=str(model.dtype).removeprefix("torch."))
            for key in PARTS + ("question_s", "wall_s"):
                row[key] = statistics.median(r[key] for r in runs)
            row.update(generated=runs[0]["generated"], questions_per_hour=3600.0 / row["question_s"], sparsity=sparsity,
                       visual_sparsity=visual_sparsity, warmup_wall_s=warmup_s)
            outputs[label] = vision_out
            if label == "unpatched" and n_target == args.visual_tokens[0] and not args.no_floor:
                outputs["floor"] = _other_backend_output(timer.tower, inputs)
            rows.append(row)
            table.save(rows)  # a run cut short keeps what it measured
            print_table([row], ["visual_tokens", "setting", "vision_s", "decoder_prefill_s", "generation_s",
                                "question_s", "sparsity"])
        base = {r["setting"]: r for r in rows if r["visual_tokens"] == n_visual}.get("unpatched")
        for r in rows:
            if base is not None and r["visual_tokens"] == n_visual:
                r["speedup"] = base["question_s"] / r["question_s"]
                r["vision_speedup"] = base["vision_s"] / r["vision_s"]
                if r["setting"] != "unpatched":  # the vision tower's output against the per-window SDPA path
                    r["vision_rel_err"] = _rel(outputs[r["setting"]], outputs["unpatched"])
                if outputs.get("floor") is not None:  # the same, for another exact SDPA backend
                    r["vision_rel_err_floor"] = _rel(outputs["floor"], outputs["unpatched"])
        table.save(rows)
        del inputs, outputs
        capture.clear()
        torch.cuda.empty_cache()
    print()
    print_table(rows, ["visual_tokens", "setting", "vision_s", "decoder_prefill_s", "generation_s", "question_s",
                       "speedup", "vision_speedup", "sparsity", "vision_rel_err", "vision_rel_err_floor"])
    csv_path = table.path  # saved after each size, its errors included
    png = plot(rows, out / "question.png")
    print(f"wrote {csv_path} and {png}")
    if args.results:
        write_csv(RESULTS_DIR / "question.csv", rows)
        plot([dict(r) for r in rows], RESULTS_DIR / "question.png")
        print("appended to results/question.csv, drew results/question.png")
    return 0
