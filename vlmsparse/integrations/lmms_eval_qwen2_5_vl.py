"""``vlmsparse_qwen2_5_vl``: lmms-eval's own Qwen2.5-VL chat model with a vlmsparse method patched in.

Everything lmms-eval's ``qwen2_5_vl`` model does stays as it is (loading, prompts through the task's messages,
``qwen-vl-utils`` frame sampling, batching, generation); this subclass only

1. takes ``method=``, ``config_file=``, ``timing=`` and the method's config fields through ``--model_args``
   (see :mod:`vlmsparse.integrations.lmms_eval_args`) and builds the method before loading the model, so a
   typo fails at once;
2. calls ``vlmsparse.patch(self.model, planners)`` once the model is loaded (per-layer settings of the
   config file included; a config made for another layer count stops here) (``dense``: left unpatched, the
   full-attention baseline, as ``vlmsparse.eval`` runs it);
3. records each request's achieved sparsity into lmms-eval's logged samples (``token_counts[0]["vlmsparse"]``,
   see :mod:`vlmsparse.integrations.lmms_eval_recording`) and, at the end of the run, logs a summary and adds it
   to the results file's ``throughput`` section (``avg_vlmsparse_sparsity``, ``avg_vlmsparse_visual_sparsity``).
"""

from __future__ import annotations

from typing import Any

from lmms_eval.models.chat import qwen2_5_vl as _lmms_qwen2_5_vl
from lmms_eval.models.chat.qwen2_5_vl import Qwen2_5_VL as _LmmsQwen2_5_VL
from loguru import logger as eval_logger

from .lmms_eval_args import SparseArgs, effective_model_args
from .lmms_eval_recording import SparsityRecorder, summarize_records

__all__ = ["Qwen2_5_VLSparse"]


class Qwen2_5_VLSparse(_LmmsQwen2_5_VL):
    """lmms-eval's Qwen2.5-VL (chat) with its decoder's prefill attention replaced by a vlmsparse method.

    ``--model_args`` as lmms-eval's ``qwen2_5_vl`` (``pretrained`` defaults to Qwen2.5-VL-7B-Instruct) plus
    ``method`` (``psa``, ``xattention``, ``sparge``, ``dense``), ``config_file`` (``evals/*.toml``),
    ``timing`` and the method's config fields, e.g.
    ``pretrained=Qwen/Qwen2.5-VL-7B-Instruct,method=psa,thresholds=[0.7,0.8,0.9,0.9]``.
    """

    is_simple = False

    def __init__(self, **kwargs: Any) -> None:
        base, sparse, left_out = effective_model_args(kwargs, _LmmsQwen2_5_VL)
        if getattr(_lmms_qwen2_5_vl, "process_vision_info", None) is None:
            raise ImportError(
                "lmms-eval's Qwen2.5-VL model reads images and video frames with qwen-vl-utils, which did not import: "
                "it needs a torchvision built for your torch (PyPI's torchvision wheels are CUDA builds; with a CPU-only "
                "torch, install the matching torchvision from the PyTorch CPU wheel index). "
                "Check with: python -c 'import qwen_vl_utils'"
            )
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
                "not applied (max_new_tokens: pass --gen_kwargs max_new_tokens=N; total_pixels: qwen-vl-utils caps a "
                "video at MODEL_SEQ_LEN * 784 * 0.9 pixels, MODEL_SEQ_LEN=128000 unless set in the environment)"
            )
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
