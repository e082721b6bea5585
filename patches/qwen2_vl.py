"""Qwen2-VL: decoder ``Qwen2VLAttention`` (text sub-config), image / video placeholders from the config."""

from transformers.models.qwen2_vl import modeling_qwen2_vl as modeling

from vlmsparse.model.families import ModelFamily

FAMILY = ModelFamily(
    name="qwen2_vl",
    model_types=("qwen2_vl",),
    text_config_key="text_config",
    visual_token_id_fields=("image_token_id", "video_token_id"),
    attention_classes=(modeling.Qwen2VLAttention,),
    eager_attention=modeling.eager_attention_forward,
    vision_config_key="vision_config",
    vision_attention_classes=(modeling.VisionAttention,),
    notes="Qwen2VLForConditionalGeneration / Qwen2VLModel; the vision tower's frames run as segments in one "
    "launch per layer (vlmsparse.model.vision).",
)
