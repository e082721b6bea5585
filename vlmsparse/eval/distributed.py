"""Several processes (``accelerate launch -m vlmsparse.eval ...``): who does which question.

Questions are dealt out by video, round-robin over the sorted video ids, so a video is decoded by one
process only and every process gets about the same number of videos. One process (a plain
``python -m vlmsparse.eval``) does everything.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

from .videomme import Question

T = TypeVar("T", bound=Question)


def shard_by_video(questions: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The questions process ``rank`` of ``world_size`` answers (order kept)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    videos = sorted({q.video_file_id for q in questions})
    mine = {v for i, v in enumerate(videos) if i % world_size == rank}
    return [q for q in questions if q.video_file_id in mine]


def group_by_video(questions: Sequence[T]) -> list[tuple[str, list[T]]]:
    """Consecutive work units: each video once, with its questions, in first-seen order."""
    groups: dict[str, list[T]] = {}
    for q in questions:
        groups.setdefault(q.video_file_id, []).append(q)
    return list(groups.items())


def process_state():
    """accelerate's ``PartialState`` (one process when not launched through accelerate or torchrun).

    Without a GPU the processes talk over gloo (accelerate's multi-CPU mode needs ``cpu=True``).
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def close_process_group() -> None:
    """Tear down the process group a launched run started (NCCL warns at exit otherwise); no-op when alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
