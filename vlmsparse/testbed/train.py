"""Training the testbed from scratch on generated needle questions, with a curriculum of haystack lengths.

A step draws a batch of fresh samples (seeds from the training stream, never one the benchmark uses),
depths uniform in [0, 1], one haystack length per batch, and minimises the cross-entropy of the two answer
tokens (the letter and ``<|im_end|>``). The curriculum is a list of stages; a stage names the longest
haystack it trains on and its step count, and each of its steps picks a length among the curriculum's
lengths up to that one (half the time the longest), with a batch size that keeps the visual tokens of a
step near ``tokens_per_step``. AdamW, linear warm-up then cosine decay, gradient clipping, bf16 autocast on
CUDA. The vision tower's window loop is one batched call per layer while training
(:mod:`vlmsparse.testbed.vision_attention`).

At the end the dense accuracy is measured on fresh seeds over a (length x depth) grid with the harness's
greedy first token (teacher-forced argmax), written with the training log to ``testbed.json`` in the
output folder, next to the model (bf16 safetensors) and its processor.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..argtypes import require_available
from ..eval.needle import STREAM_TRAIN, NeedleConfig
from .data import needle_batch
from .model import TestbedSpec, build_testbed
from .vision_attention import batched_vision_attention

__all__ = ["Stage", "TrainConfig", "PRESETS", "CPU_SPEC", "train", "evaluate", "save_testbed", "STREAM_CHECK"]

#: Seed stream of the accuracy check at the end of training (neither the benchmark's nor the training's).
STREAM_CHECK = 2


@dataclass(frozen=True)
class Stage:
    """Train on haystacks of up to ``max_frames`` frames for ``steps`` steps, or ``seconds``, or until the
    training accuracy of a log window reaches ``advance_at``, whichever comes first."""

    max_frames: int
    steps: int
    seconds: float | None = None
    advance_at: float | None = None

    def __post_init__(self) -> None:
        if self.max_frames < 2 or self.max_frames % 2 or self.steps < 1:
            raise ValueError(f"a stage needs an even max_frames >= 2 and steps >= 1, got {self}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"a stage's seconds must be > 0, got {self.seconds}")
        if self.advance_at is not None and not 0 < self.advance_at <= 1:
            raise ValueError(f"a stage's advance_at must be within (0, 1], got {self.advance_at}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``PRESETS`` holds the shipped checkpoint's (``gpu``) and a CPU one."""

    stages: tuple[Stage, ...] = (Stage(16, 300), Stage(64, 300))
    lengths: tuple[int, ...] = (8, 16, 32, 64)
    tokens_per_step: int = 32768
    max_batch: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    #: weight of the next-token loss on the text after the video (question and options) beside the answer's
    text_loss_weight: float = 0.5
    seed: int = 0
    kind: str = "colour"
    needle_frames: int = 2
    eval_lengths: tuple[int, ...] = (16, 64)
    eval_depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    eval_samples: int = 16
    log_every: int = 25
    time_limit_s: float | None = None
    spec: TestbedSpec = field(default_factory=TestbedSpec)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a curriculum needs at least one stage")
        if any(L % 2 or L < self.needle_frames for L in self.lengths):
            raise ValueError(f"lengths must be even and at least needle_frames ({self.needle_frames}), got {self.lengths}")
        for stage in self.stages:
            if not any(L <= stage.max_frames for L in self.lengths):
                raise ValueError(f"stage {stage} has no length of the curriculum at or below its max_frames")
        if self.tokens_per_step < 1 or self.max_batch < 1 or not self.lr > 0:
            raise ValueError("tokens_per_step, max_batch and lr must be positive")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be > 0, got {self.time_limit_s}")
        self.needle  # checks frame size, needle length and kind

    @property
    def frame_size(self) -> int:
        return self.spec.frame_size

    @property
    def needle(self) -> NeedleConfig:
        return NeedleConfig(frame_size=self.frame_size, needle_frames=self.needle_frames, kind=self.kind)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def visual_tokens(self, frames: int) -> int:
        """Visual tokens of a haystack of ``frames`` frames."""
        side = self.frame_size // 28
        return frames // 2 * side * side

    def batch_size(self, frames: int) -> int:
        return max(1, min(self.max_batch, self.tokens_per_step // max(1, self.visual_tokens(frames))))

    def stage_lengths(self, stage: Stage) -> list[int]:
        return [L for L in self.lengths if L <= stage.max_frames]

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["stages"] = [dataclasses.asdict(s) for s in self.stages]
        out["spec"] = self.spec.to_dict()
        return out


#: The CPU-trained testbed's sizes: hidden 112 (7 query heads of 16 on 1 key/value head), 4 layers, a 64-wide vision
#: tower, 56-pixel frames (4 visual tokens a frame pair).
CPU_SPEC = TestbedSpec(hidden_size=112, intermediate_size=224, num_hidden_layers=4, vision_hidden_size=64,
                       vision_intermediate_size=128, vision_num_heads=2, frame_size=56)

PRESETS: dict[str, TrainConfig] = {
    # The shipped checkpoint's recipe (one H200): short haystacks until the task is learned, then longer ones,
    # up to 512 frames = 4096 visual tokens; each stage moves on early once it is mastered.
    "gpu": TrainConfig(
        stages=(
            Stage(4, 100_000, seconds=40, advance_at=0.95),
            Stage(16, 100_000, seconds=30, advance_at=0.97),
            Stage(64, 100_000, seconds=25, advance_at=0.97),
            Stage(256, 100_000, seconds=25, advance_at=0.97),
            Stage(512, 100_000),
        ),
        lengths=(2, 4, 8, 16, 32, 64, 128, 256, 512),
        time_limit_s=240,
        eval_lengths=(64, 512, 1024),
        eval_samples=16,
    ),
    # The shipped CPU checkpoint's recipe (2 cores: about 25 minutes, then "cpu-long" from it): a smaller model
    # (CPU_SPEC) on 56-pixel frames, clips and haystacks of up to 32 frames.
    "cpu": TrainConfig(
        stages=(Stage(2, 100_000, seconds=450, advance_at=0.95), Stage(8, 100_000, seconds=450, advance_at=0.97),
                Stage(32, 100_000)),
        lengths=(2, 4, 8, 16, 32),
        tokens_per_step=512,
        max_batch=16,
        lr=3e-3,
        warmup_steps=30,
        time_limit_s=1500,
        eval_lengths=(8, 32),
        eval_samples=8,
        log_every=10,
        spec=CPU_SPEC,
    ),
    # Continues the shipped CPU checkpoint (--init) on one GPU: haystacks of up to 2048 frames (4096 visual
    # tokens), each stage moving on once it is mastered.
    "gpu-long": TrainConfig(
        stages=(Stage(128, 100_000, seconds=45, advance_at=0.95), Stage(512, 100_000, seconds=60, advance_at=0.95),
                Stage(2048, 100_000)),
        lengths=(8, 32, 128, 256, 512, 1024, 2048),
        tokens_per_step=32768,
        max_batch=64,
        lr=1e-3,
        warmup_steps=10,
        time_limit_s=240,
        eval_lengths=(512, 2048),
        eval_samples=16,
        log_every=10,
        spec=CPU_SPEC,
    ),
    # Continues a "cpu" checkpoint (--init) on haystacks of up to 128 frames (256 visual tokens).
    "cpu-long": TrainConfig(
        stages=(Stage(128, 100_000),),
        lengths=(2, 8, 32, 64, 128),
        tokens_per_step=512,
        max_batch=16,
        lr=1e-3,
        warmup_steps=5,
        time_limit_s=1200,
        eval_lengths=(32, 128),
        eval_samples=8,
        log_every=10,
        spec=CPU_SPEC,
    ),
}


def progress(step: int, elapsed: float, cfg: TrainConfig) -> float:
    """How far training is, in [0, 1]: by steps, or by time when a time limit is set and nearer."""
    done = step / max(1, cfg.total_steps)
    if cfg.time_limit_s is not None:
        done = max(done, elapsed / cfg.time_limit_s)
    return min(1.0, done)


def lr_at(step: int, done: float, cfg: TrainConfig) -> float:
    """Learning rate: linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` by ``done``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * done))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def pick_length(rng: random.Random, allowed: Sequence[int]) -> int:
    """Half the time the stage's longest haystack, otherwise any of its lengths."""
    return allowed[-1] if rng.random() < 0.5 else rng.choice(list(allowed))


def answer_loss(model, batch, *, autocast: bool, text_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of a batch and whether each answer letter was the argmax.

    The loss is the cross-entropy of the two answer tokens (the letter and ``<|im_end|>``), plus
    ``text_weight`` times the next-token cross-entropy of the text between the video and the answer (the
    question and its options: predicting an option's words rewards looking at the needle).
    """
    suffix = batch.text_after_video if text_weight > 0 else 2
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = model(**batch.inputs, logits_to_keep=suffix + 1).logits.float()
    targets = batch.inputs["input_ids"][:, -suffix:]
    vocab = logits.shape[-1]
    answer = F.cross_entropy(logits[:, -3:-1].reshape(-1, vocab), targets[:, -2:].reshape(-1))
    correct = logits[:, -3].argmax(-1) == batch.answer_ids
    if suffix <= 2:
        return answer, correct
    text = F.cross_entropy(logits[:, : -3].reshape(-1, vocab), targets[:, :-2].reshape(-1))
    return answer + text_weight * text, correct


@torch.no_grad()
def evaluate(
    model,
    processor,
    cfg: TrainConfig,
    *,
    device: torch.device,
    lengths: Sequence[int] | None = None,
    depths: Sequence[float] | None = None,
    samples: int | None = None,
    stream: int = STREAM_CHECK,
    with_needle: bool = True,
) -> dict:
    """Dense accuracy (argmax of the first answer token) per (length, depth) on fresh seeds;
    ``with_needle=False``: the same questions with the needle left out of the video (the control: chance, if
    the answers come from the needle)."""
    lengths = tuple(lengths or cfg.eval_lengths)
    depths = tuple(cfg.eval_depths if depths is None else depths)
    samples = samples or cfg.eval_samples
    was_training = model.training
    model.eval()
    cells = {}
    autocast = device.type == "cuda"
    with batched_vision_attention(model):
        for length in lengths:
            per_batch = cfg.batch_size(length)
            for depth in depths:
                correct = 0
                for start in range(0, samples, per_batch):
                    n = min(per_batch, samples - start)
                    seeds = [(stream, cfg.seed, length, int(depth * 10_000), start + i) for i in range(n)]
                    batch = needle_batch(processor, seeds, length, [depth] * n, cfg.needle, device=device,
                                         with_needle=with_needle)
                    _, ok = answer_loss(model, batch, autocast=autocast)
                    correct += int(ok.sum())
                cells[f"{length}:{depth:g}"] = correct / samples
    model.train(was_training)
    by_length = {L: sum(cells[f"{L}:{d:g}"] for d in depths) / len(depths) for L in lengths}
    by_depth = {f"{d:g}": sum(cells[f"{L}:{d:g}"] for L in lengths) / len(lengths) for d in depths}
    overall = sum(cells.values()) / len(cells)
    return {"cells": cells, "by_length": by_length, "by_depth": by_depth, "overall": overall, "samples": samples}


def save_testbed(model, processor, out: Path, info: dict) -> Path:
    """Write the model (bf16 safetensors), its processor and ``testbed.json`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    dtype = model.dtype
    model.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    try:
        model.save_pretrained(out)
    finally:
        model.to(dtype)
    processor.save_pretrained(out)
    (out / "testbed.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    return out


def _log_line(step: int, stage: int, frames: int, batch: int, loss: float, acc: float, lr: float, elapsed: float) -> str:
    return (
        f"step {step:5d} stage {stage}  frames {frames:4d} x{batch:<3d}  loss {loss:.4f}  acc {acc:.3f}  lr {lr:.2e}  "
        f"{elapsed:7.1f}s"
    )


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    device: str | torch.device = "cpu",
    init: str | Path | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> dict:
    """Train a testbed by ``cfg`` (from ``init``, a testbed folder, or from scratch) and save it to ``out``."""
    device = torch.device(device)
    require_available(str(device))
    out = Path(out)
    torch.manual_seed(cfg.seed)
    if init is None:
        model, processor = build_testbed(cfg.spec, seed=cfg.seed)
    else:
        from transformers import Qwen2_5_VLForConditionalGeneration

        from ..model.processor import load_processor

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(init, dtype=torch.float32, attn_implementation="sdpa")
        processor = load_processor(init)
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    autocast = device.type == "cuda"
    rng = random.Random(cfg.seed)
    history, stages_run = [], []
    start = time.perf_counter()
    step = 0
    out_of_time = False
    log(
        f"testbed: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; curriculum "
        + ", ".join(f"<= {s.max_frames} frames" for s in cfg.stages)
        + f" (up to {cfg.visual_tokens(max(cfg.lengths))} visual tokens); device {device}"
    )
    with batched_vision_attention(model):
        for index, stage in enumerate(cfg.stages):
            allowed = cfg.stage_lengths(stage)
            stage_start, stage_steps, ended = time.perf_counter(), 0, "steps"
            window_loss, window_ok, window_n = 0.0, 0, 0
            while stage_steps < stage.steps:
                now = time.perf_counter()
                if cfg.time_limit_s is not None and now - start > cfg.time_limit_s:
                    out_of_time, ended = True, "time limit"
                    break
                if stage.seconds is not None and now - stage_start > stage.seconds:
                    ended = "seconds"
                    break
                frames = pick_length(rng, allowed)
                n = cfg.batch_size(frames)
                seeds = [(STREAM_TRAIN, cfg.seed, step, i) for i in range(n)]
                depths = [rng.random() for _ in range(n)]
                batch = needle_batch(processor, seeds, frames, depths, cfg.needle, device=device)
                lr = lr_at(step, progress(step, now - start, cfg), cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                loss, ok = answer_loss(model, batch, autocast=autocast, text_weight=cfg.text_loss_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                step += 1
                stage_steps += 1
                window_loss += float(loss.detach()) * n
                window_ok += int(ok.sum())
                window_n += n
                if stage_steps % cfg.log_every == 0:
                    elapsed = time.perf_counter() - start
                    acc = window_ok / window_n
                    entry = {"step": step, "stage": index, "frames": frames, "loss": window_loss / window_n,
                             "acc": acc, "lr": lr, "seconds": round(elapsed, 1)}
                    history.append(entry)
                    log(_log_line(step, index, frames, n, entry["loss"], acc, lr, elapsed))
                    window_loss, window_ok, window_n = 0.0, 0, 0
                    if stage.advance_at is not None and acc >= stage.advance_at and index + 1 < len(cfg.stages):
                        ended = f"accuracy {acc:.3f}"
                        break
            stages_run.append({"stage": index, "max_frames": stage.max_frames, "steps": stage_steps, "ended": ended,
                               "seconds": round(time.perf_counter() - stage_start, 1)})
            log(f"stage {index} (<= {stage.max_frames} frames): {stage_steps} steps, ended by {ended}")
            if out_of_time:
                break
    train_s = time.perf_counter() - start
    model.eval()
    t0 = time.perf_counter()
    check = evaluate(model, processor, cfg, device=device)
    log(
        f"dense accuracy on fresh seeds ({check['samples']} per cell): overall {check['overall']:.3f}; by length "
        + ", ".join(f"{L}: {a:.3f}" for L, a in check["by_length"].items())
        + "; by depth "
        + ", ".join(f"{d}: {a:.3f}" for d, a in check["by_depth"].items())
    )
    info = {
        "what": "vlmsparse testbed: a small Qwen2.5-VL trained from scratch on generated video needle questions",
        "date": _dt.date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "train_config": cfg.to_dict(),
        "init": str(init) if init else None,
        "steps_done": step,
        "stages_run": stages_run,
        "train_seconds": round(train_s, 1),
        "check_seconds": round(time.perf_counter() - t0, 1),
        "history": history,
        "dense_accuracy": check,
        "needle": dataclasses.asdict(cfg.needle),
        "frame_size": cfg.frame_size,
        "trained_lengths": sorted({L for r in stages_run for L in cfg.stage_lengths(cfg.stages[r["stage"]])}),
    }
    save_testbed(model, processor, out, info)
    log(f"saved the testbed to {out}")
    return info
