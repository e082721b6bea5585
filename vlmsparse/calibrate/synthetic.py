"""A synthetic many-layer "model" of video-like attention inputs, for calibration without a model.

Each layer draws its q / k / v from :func:`vlmsparse.bench.synthetic.video_qkv` with parameters of one of three
families (how the layer attends), fixed per layer by the model seed:

- ``diffuse``: flat logits (sharpness 0.2-0.6), a mostly global field: attention spread over the whole video;
- ``medium``: ``video_qkv``'s own defaults (sharpness 0.5-1.5);
- ``peaked``: sharp logits (1.5-3.0) on a mostly local field: each query looks at its space-time neighbours.

Within its family each layer gets its own jitter of sharpness and sink strength, so layers of one family differ
too. Each sample is a new draw (content seed) with its own input style: the temporal length scale of the local
field (slow or fast motion) and the noise level vary from sample to sample. These families describe no real
model; they only give calibration per-layer differences to find.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.model.attention import PrefillAttention

__all__ = ["FAMILIES", "SyntheticLayers", "LayerProfile"]

#: family -> (sharpness range, share of variance of the local field)
FAMILIES: dict[str, tuple[tuple[float, float], float]] = {
    "diffuse": ((0.2, 0.6), 0.3),
    "medium": ((0.5, 1.5), 0.6),
    "peaked": ((1.5, 3.0), 0.85),
}


@dataclass(frozen=True)
class LayerProfile:
    """How one synthetic layer attends."""

    family: str
    sharpness: tuple[float, float]
    local_weight: float
    sink: float


class SyntheticLayers:
    """``num_layers`` layers of video-like q/k/v on a ``frames x height x width`` token grid (plus text)."""

    def __init__(
        self,
        num_layers: int = 8,
        frames: int = 4,
        height: int = 8,
        width: int = 8,
        *,
        heads_q: int = 4,
        heads_kv: int = 1,
        head_dim: int = 64,
        text_prefix: int = 32,
        text_suffix: int = 16,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"the synthetic model needs at least one layer, got {num_layers}")
        self.num_layers = num_layers
        self.shape = dict(frames=frames, height=height, width=width, text_prefix=text_prefix, text_suffix=text_suffix,
                          heads_q=heads_q, heads_kv=heads_kv, head_dim=head_dim)
        self.device, self.dtype, self.seed = torch.device(device), dtype, seed
        rng = np.random.default_rng(seed)
        names = list(FAMILIES)
        families = [names[i % len(names)] for i in range(num_layers)]
        rng.shuffle(families)
        self.layers: list[LayerProfile] = []
        for family in families:
            (lo, hi), local = FAMILIES[family]
            jitter = float(rng.uniform(0.8, 1.25))
            self.layers.append(LayerProfile(family, (lo * jitter, hi * jitter), local, float(rng.uniform(4.0, 10.0))))

    @property
    def heads(self) -> tuple[int, int]:
        return self.shape["heads_q"], self.shape["heads_kv"]

    @property
    def tokens(self) -> int:
        s = self.shape
        return s["frames"] * s["height"] * s["width"] + s["text_prefix"] + s["text_suffix"]

    def describe(self) -> str:
        s = self.shape
        return (
            f"synthetic {self.num_layers} layers ({', '.join(p.family for p in self.layers)}), "
            f"{self.tokens} tokens ({s['frames']}x{s['height']}x{s['width']} visual + {s['text_prefix'] + s['text_suffix']} text), "
            f"{s['heads_q']}/{s['heads_kv']} heads of {s['head_dim']}, {str(self.dtype).replace('torch.', '')}"
        )

    def layer_inputs(self, sample: int, layer: int) -> PrefillAttention:
        """Layer ``layer``'s prefill inputs for sample ``sample`` (deterministic from the seeds)."""
        p = self.layers[layer]
        style = np.random.default_rng([self.seed, sample, 7919])  # the sample's input style, shared by its layers
        t_scale = float(style.uniform(0.8, 3.0))
        noise = float(style.uniform(0.3, 0.5))
        s = self.shape
        q, k, v, visual = video_qkv(
            s["frames"], s["height"], s["width"], s["text_prefix"], s["text_suffix"], heads_q=s["heads_q"],
            heads_kv=s["heads_kv"], head_dim=s["head_dim"], device=self.device, dtype=self.dtype,
            seed=(self.seed * 1_000_003 + sample * 1009 + layer) % (2**31),
            local_scale=(t_scale, 2.0, 2.0), local_weight=p.local_weight, noise=noise, sharpness=p.sharpness,
            sink=p.sink,
        )
        return PrefillAttention(layer, q, k, v, visual, None)

    def run(self, sample: int, observer: Callable[[PrefillAttention], None]) -> None:
        """Hand every layer of sample ``sample`` to ``observer``, one layer at a time."""
        for layer in range(self.num_layers):
            observer(self.layer_inputs(sample, layer))

    def __iter__(self) -> Iterator[LayerProfile]:
        return iter(self.layers)
