"""Where the generated tokens' time goes on a GPU, and what a static KV cache with a compiled decode step buys.

7B-shaped random-weight Qwen2.5-VL, compiled vision tower, unpatched decoder (the ``dense`` setting of
``bench question``). Prints, for one question of ``--visual-tokens`` tokens and ``--new-tokens`` tokens:
the split (vision, decoder prefill, generation) with the default dynamic cache and with
``cache_implementation="static"`` (transformers then compiles the decode step and replays it from CUDA graphs),
whether both generate the same tokens, and the host-side ops of a few eager decode steps.

    python notes/decode_steps_gpu.py --visual-tokens 24576 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vlmsparse.bench.question import build_model, question_inputs, time_question, video_grid
from vlmsparse.model.vision import VisionTimer, patch_vision


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--visual-tokens", type=int, default=24576)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    t0 = time.perf_counter()
    model = build_model(28, 32)
    print(f"built in {time.perf_counter() - t0:.1f} s", flush=True)
    timer = VisionTimer(model)
    vision = patch_vision(model, "compiled")
    inputs = question_inputs(model, video_grid(args.visual_tokens, (36, 64)))
    print("tokens", inputs["input_ids"].shape[1], flush=True)

    def report(label, runs):
        med = {k: statistics.median(r[k] for r in runs) for k in ("vision_s", "decoder_prefill_s", "generation_s", "question_s")}
        print(label, " ".join(f"{k}={v:.3f}" for k, v in med.items()), "all gen:", [round(r["generation_s"], 3) for r in runs], flush=True)

    w = time.perf_counter()
    time_question(model, inputs, args.new_tokens, timer)
    print(f"dynamic warm-up {time.perf_counter() - w:.1f} s", flush=True)
    runs = [time_question(model, inputs, args.new_tokens, timer) for _ in range(args.repeats)]
    report("dynamic", runs)
    with torch.no_grad():
        ref = model.generate(**inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), flush=True)

    model.generation_config.cache_implementation = "static"
    for i in range(2):
        w = time.perf_counter()
        r = time_question(model, inputs, args.new_tokens, timer)
        print(f"static warm-up {i}: {time.perf_counter() - w:.1f} s gen {r['generation_s']:.3f} prefill {r['decoder_prefill_s']:.3f}", flush=True)
    runs = [time_question(model, inputs, args.new_tokens, timer) for _ in range(args.repeats)]
    report("static", runs)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    n = ref.shape[1] - args.new_tokens
    print("same tokens:", torch.equal(out, ref), ref[0, n:].tolist(), out[0, n:].tolist(), flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=30), flush=True)
    # a question of another length reuses the cache (and the graphs) when it is no longer
    other = question_inputs(model, video_grid(args.visual_tokens - 2304, (36, 64)), seed=1)
    for i in range(2):
        w = time.perf_counter()
        r = time_question(model, other, args.new_tokens, timer)
        print(f"static other length {i}: wall {time.perf_counter() - w:.1f} s gen {r['generation_s']:.3f} prefill {r['decoder_prefill_s']:.3f}", flush=True)
    vision.restore()


if __name__ == "__main__":
    main()
