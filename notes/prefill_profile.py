"""Where a patched prefill spends its time beyond the attention kernel: CUDA kernels of one forward of a
Qwen2.5-VL-7B-shaped decoder (random weights, few layers) unpatched and patched, from the profiler, and any
host-device synchronisation inside the patched forward (torch's sync debug mode).

Run on a GPU from the repository root: python notes/prefill_profile.py [visual tokens, default 8192] [layers, 4]
"""

import sys
import traceback
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

import vlmsparse
from vlmsparse.bench.prefill import _build_model


def forward(model, ids):
    with torch.inference_mode():
        model(input_ids=ids, use_cache=False, logits_to_keep=1)


def main(n_visual=8192, layers=4):
    model = _build_model(layers)
    ids = torch.cat([torch.randint(0, 150000, (64,)), torch.full((n_visual,), model.config.video_token_id),
                     torch.randint(0, 150000, (32,))])[None].cuda()
    for method in (None, "dense", "psa"):
        handle = vlmsparse.patch(model, method) if method else None
        for _ in range(2):
            forward(model, ids)
        torch.cuda.synchronize()
        if handle is not None:
            torch.cuda.set_sync_debug_mode("warn")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                forward(model, ids)
                torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode(0)
            syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
            print(f"{method}: {len(syncs)} synchronising calls in one forward of {layers} layers")
            torch.cuda.set_sync_debug_mode("error")
            try:
                forward(model, ids)
            except RuntimeError:
                print("the first one:", "".join(traceback.format_exc().splitlines(True)[-14:]))
            finally:
                torch.cuda.set_sync_debug_mode(0)
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU], with_stack=False) as prof:
            forward(model, ids)
            torch.cuda.synchronize()
        print(f"--- {method or 'sdpa (unpatched)'}: L={ids.shape[1]}, {layers} layers")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=60))
        if handle is not None:
            handle.unpatch()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
