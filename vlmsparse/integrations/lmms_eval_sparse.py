"""What every vlmsparse lmms-eval model shares: method arguments, the patch, per-request sparsity, the summary.

Each plugin model (``vlmsparse_qwen2_5_vl``, ``vlmsparse_qwen3_vl``, ``vlmsparse_qwen3_vl_moe``,
``vlmsparse_llava_onevision``) is lmms-eval's own model class for its family with :class:`SparsePlugin` mixed in
before it. lmms-eval's class keeps everything it does (loading, prompts, frame sampling, batching,
generation); the mixin

1. splits ``--model_args`` into lmms-eval's own arguments and the method's (``method=``, ``config_file=``,
   ``timing=`` and the method's config fields; :mod:`vlmsparse.integrations.lmms_eval_args`) and builds every
   layer's planner before the model loads, so a typo (or a missing model folder) fails at once;
2. patches the loaded model with ``vlmsparse.patch`` (per-layer settings of the config file included; a config
   made for another layer count stops here; ``dense``: left unpatched, the full-attention baseline, as
   ``vlmsparse.eval`` runs it);
3. records each request's achieved sparsity into lmms-eval's logged samples and, at the end of the run, logs a
   summary and adds it to the results file's ``throughput`` section.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

from loguru import logger as eval_logger

from .lmms_eval_args import RUN_KEY_TO_MODEL_ARG, SparseArgs, effective_model_args
from .lmms_eval_leaderboard import summarize_records
from .lmms_eval_recording import SparsityRecorder

__all__ = ["SparsePlugin"]


class SparsePlugin:
    """Mixin for an lmms-eval model class (put it first among the bases); see the module docstring.

    Subclasses set ``lmms_base`` (lmms-eval's model class, whose ``__init__`` arguments are passed on),
    ``default_pretrained``, ``run_key_map`` (``[run]`` keys of a run config -> lmms-eval's argument names) and
    ``left_out_note`` (what to say about ``[run]`` keys it has no argument for); they may override
    :meth:`check_dependencies`, :meth:`base_arguments` and :meth:`loading`.
    """

    lmms_base: ClassVar[type]
    default_pretrained: ClassVar[str]
    run_key_map: ClassVar[dict[str, str]] = RUN_KEY_TO_MODEL_ARG
    left_out_note: ClassVar[str] = ""

    def __init__(self, **kwargs: Any) -> None:
        base, sparse, left_out = effective_model_args(
            kwargs, self.lmms_base, default_pretrained=self.default_pretrained, run_key_map=self.run_key_map
        )
        self.check_dependencies(base)
        import vlmsparse
        from vlmsparse.eval.errors import ModelError
        from vlmsparse.eval.model_io import check_model_source

        planners = sparse.planners()
        try:  # an empty or missing model folder: say so before lmms-eval tries to load it
            check_model_source(str(base["pretrained"]))
        except ModelError as exc:
            raise ValueError(str(exc).replace("--model", "pretrained=")) from None
        if left_out:
            eval_logger.warning(
                f"vlmsparse: [run] keys {left_out} of {sparse.config_file} have no lmms-eval model argument and are "
                f"not applied ({self.left_out_note or 'pass them as lmms-eval arguments where it has them'})"
            )
        base = self.base_arguments(base)
        with self.loading(base):
            super().__init__(**base)
        self.sparse_args: SparseArgs = sparse
        self.model_args_used: dict[str, Any] = dict(base)
        self._patch_handle = None
        if not sparse.setting.unpatched:
            self._patch_handle = vlmsparse.patch(self.model, planners, timing=sparse.timing)
        config = self.model.config
        visual_ids = [getattr(config, "image_token_id", None), getattr(config, "video_token_id", None)]
        self.sparsity_recorder = SparsityRecorder(sparse.method, self._patch_handle, visual_ids)
        eval_logger.info(
            f"vlmsparse: {base['pretrained']} with method {sparse.method!r} "
            f"({'unpatched, full attention' if self._patch_handle is None else planners.describe()})"
        )

    # -- hooks for subclasses -------------------------------------------------------------------------
    def check_dependencies(self, base: dict[str, Any]) -> None:
        """Raise ``ImportError`` (one line, what to install) before anything loads; nothing by default."""

    def base_arguments(self, base: dict[str, Any]) -> dict[str, Any]:
        """The arguments lmms-eval's ``__init__`` gets; as parsed by default."""
        return base

    @contextlib.contextmanager
    def loading(self, base: dict[str, Any]) -> Iterator[None]:
        """Context around lmms-eval's ``__init__`` (which loads the model); nothing by default."""
        yield

    # -- what lmms-eval calls -------------------------------------------------------------------------
    @property
    def patch_handle(self):
        """The ``vlmsparse.patch`` handle (None for ``method=dense``)."""
        return self._patch_handle

    def generate_until(self, requests: list) -> list:
        """lmms-eval's generation, each result carrying its request's sparsity in ``token_counts``."""
        parent = super().generate_until
        return self.sparsity_recorder.run(self.model, requests, parent)

    def sparsity_summary(self) -> dict[str, Any]:
        """Means over the requests answered so far, on every process (gathered when running distributed)."""
        records = list(self.sparsity_recorder.records)
        import torch.distributed as dist

        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, records)
            records = [r for part in gathered for r in (part or [])]
        summary = summarize_records(records)
        summary["method"] = self.sparse_args.method
        return summary

    def clean(self) -> None:
        """End of the run: log and record the sparsity summary, undo the patch, then lmms-eval's clean-up."""
        summary = self.sparsity_summary()
        if self.rank == 0 and summary["requests"]:
            from lmms_eval.models.model_utils.gen_metrics import log_metrics

            eval_logger.info(
                f"vlmsparse summary: method {summary['method']}, {summary['requests']} requests, "
                f"mean sparsity {_fmt(summary['sparsity'])}, mean visual sparsity {_fmt(summary['visual_sparsity'])}, "
                f"mean prefill {_fmt(summary['prefill_s_mean'])} s"
            )
            extra = {
                "vlmsparse_sparsity": summary["sparsity"],
                "vlmsparse_visual_sparsity": summary["visual_sparsity"],
            }
            extra = {k: v for k, v in extra.items() if v is not None}
            if extra:  # appears in the results file as throughput.avg_vlmsparse_*
                log_metrics(total_elapsed_time=0.0, total_gen_tokens=0, avg_speed=0.0, additional_metrics=extra)
        if self._patch_handle is not None:
            self._patch_handle.unpatch()
        super().clean()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
