"""Qwen3-VL (dense): decoder ``Qwen3VLTextAttention`` (text sub-config), image / video placeholders from the config.

Qwen3-VL writes a timestamp before every frame of a video (``<0.5 seconds><|vision_start|>`` + the frame's
``<|video_pad|>`` tokens + ``<|vision_end|>``), so short text runs sit between the frames: they are the
*interleaved text* of the token layout (``vlmsparse.model.layout``), planned as visual. DeepStack (visual
features added to the hidden states of the first decoder layers) and the interleaved multimodal RoPE happen
outside the attention function, which is all the patch swaps.
"""

from transformers.models.qwen3_vl import modeling_qwen3_vl as modeling

from vlmsparse.model.families import ModelFamily

FAMILY = ModelFamily(
    name="qwen3_vl",
    model_types=("qwen3_vl",),
    text_config_key="text_config",
    visual_token_id_fields=("image_token_id", "video_token_id"),
    attention_classes=(modeling.Qwen3VLTextAttention,),
    eager_attention=modeling.eager_attention_forward,
    interleaved_token_id_fields=("video_token_id",),
    interleaved_text_max_run=32,
    vision_config_key="vision_config",
    vision_attention_classes=(modeling.Qwen3VLVisionAttention,),
    notes="Qwen3VLForConditionalGeneration / Qwen3VLModel; the vision tower's frames run as segments in "
    "one launch per layer (vlmsparse.model.vision).",
)
