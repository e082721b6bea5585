"""Qwen3-VL-MoE: decoder ``Qwen3VLMoeTextAttention``; the same token layout as dense Qwen3-VL (see ``qwen3_vl``).

The experts change the MLP only; attention, DeepStack and the interleaved M-RoPE are those of Qwen3-VL.
"""

from transformers.models.qwen3_vl_moe import modeling_qwen3_vl_moe as modeling

from vlmsparse.model.families import ModelFamily

FAMILY = ModelFamily(
    name="qwen3_vl_moe",
    model_types=("qwen3_vl_moe",),
    text_config_key="text_config",
    visual_token_id_fields=("image_token_id", "video_token_id"),
    attention_classes=(modeling.Qwen3VLMoeTextAttention,),
    eager_attention=modeling.eager_attention_forward,
    interleaved_token_id_fields=("video_token_id",),
    interleaved_text_max_run=32,
    vision_config_key="vision_config",
    vision_attention_classes=(modeling.Qwen3VLMoeVisionAttention,),
    notes="Qwen3VLMoeForConditionalGeneration / Qwen3VLMoeModel; the vision tower's frames run as segments in "
    "one launch per layer (vlmsparse.model.vision).",
)
