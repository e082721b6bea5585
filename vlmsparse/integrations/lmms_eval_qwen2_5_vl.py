"""``vlmsparse_qwen2_5_vl``: lmms-eval's own Qwen2.5-VL chat model with a vlmsparse method patched in.

Everything lmms-eval's ``qwen2_5_vl`` model does stays as it is (loading, prompts through the task's messages,
``qwen-vl-utils`` frame sampling, batching, generation); :class:`~vlmsparse.integrations.lmms_eval_sparse.SparsePlugin`
adds the method arguments (per-layer settings of a config file included), the patch and the per-request sparsity
(``token_counts[0]["vlmsparse"]`` in the logged samples, ``avg_vlmsparse_sparsity`` /
``avg_vlmsparse_visual_sparsity`` in the results file's ``throughput``).
"""

from __future__ import annotations

from typing import Any

from lmms_eval.models.chat import qwen2_5_vl as _lmms_qwen2_5_vl
from lmms_eval.models.chat.qwen2_5_vl import Qwen2_5_VL as _LmmsQwen2_5_VL

from .lmms_eval_args import DEFAULT_PRETRAINED
from .lmms_eval_sparse import SparsePlugin

__all__ = ["Qwen2_5_VLSparse", "require_qwen_vl_utils"]


def require_qwen_vl_utils(module) -> None:
    """``ImportError`` (what to do) when lmms-eval's ``module`` could not import qwen-vl-utils."""
    if getattr(module, "process_vision_info", None) is None:
        raise ImportError(
            "lmms-eval's Qwen models read images and video frames with qwen-vl-utils, which did not import: "
            "it needs a torchvision built for your torch (PyPI's torchvision wheels are CUDA builds; with a CPU-only "
            "torch, install the matching torchvision from the PyTorch CPU wheel index). "
            "Check with: python -c 'import qwen_vl_utils'"
        )


class Qwen2_5_VLSparse(SparsePlugin, _LmmsQwen2_5_VL):
    """lmms-eval's Qwen2.5-VL (chat) with its decoder's prefill attention replaced by a vlmsparse method.

    ``--model_args`` as lmms-eval's ``qwen2_5_vl`` (``pretrained`` defaults to Qwen2.5-VL-7B-Instruct) plus
    ``method`` (``psa``, ``xattention``, ``sparge``, ``dense``), ``config_file`` (``evals/*.toml``),
    ``timing`` and the method's config fields, e.g.
    ``pretrained=Qwen/Qwen2.5-VL-7B-Instruct,method=psa,thresholds=[0.7,0.8,0.9,0.9]``.
    """

    is_simple = False
    lmms_base = _LmmsQwen2_5_VL
    default_pretrained = DEFAULT_PRETRAINED
    left_out_note = (
        "max_new_tokens: pass --gen_kwargs max_new_tokens=N; total_pixels: qwen-vl-utils caps a video at "
        "MODEL_SEQ_LEN * 784 * 0.9 pixels, MODEL_SEQ_LEN=128000 unless set in the environment"
    )

    def check_dependencies(self, base: dict[str, Any]) -> None:
        require_qwen_vl_utils(_lmms_qwen2_5_vl)
