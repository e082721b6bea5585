"""LLaVA-OneVision / LLaVA-Video: a Qwen2 decoder (``Qwen2Attention``) behind a SigLIP tower.

Every visual position is a placeholder token: a video is ``frames x pooled grid`` ``<video>`` tokens plus one
more ``<video>`` token that receives the learned image-newline vector; images (any-res) carry their newline
vectors on ``<image>`` tokens too. So no text sits inside a visual span and the layout needs no interleaved
text. LLaVA-Video checkpoints converted for transformers load as ``LlavaOnevisionForConditionalGeneration``.
"""

from transformers.models.qwen2 import modeling_qwen2 as modeling

from vlmsparse.model.families import ModelFamily

FAMILY = ModelFamily(
    name="llava_onevision",
    model_types=("llava_onevision",),
    text_config_key="text_config",
    visual_token_id_fields=("image_token_id", "video_token_id"),
    attention_classes=(modeling.Qwen2Attention,),
    eager_attention=modeling.eager_attention_forward,
    notes="LlavaOnevisionForConditionalGeneration / LlavaOnevisionModel; the SigLIP tower keeps its own attention.",
)
