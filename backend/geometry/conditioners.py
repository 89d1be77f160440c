"""Image and label conditioners: what the denoiser attends to.

The visual encoders wrap transformers' DINOv2-with-registers (and, for the Label model, CLIP-L)
under the release's parameter names (`dino_model.*`, `clip_model.*`). Their architecture configs
are written here instead of being fetched from the hub (the release fetched only the *configs* of
`facebook/dinov2-with-registers-large` and `openai/clip-vit-large-patch14`; the weights live in the
checkpoint), so loading works offline. The unconditional branch of classifier-free guidance is all
zeros, as in training (`zero_uncond_embeds`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from PIL import Image
from torch import nn
from transformers import CLIPConfig, CLIPModel, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from .loading import StrictLoadMixin

HF_ARCHITECTURES: dict[str, dict] = {
    "facebook/dinov2-with-registers-large": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, image_size=518,
        patch_size=14, num_register_tokens=4, layerscale_value=1.0, layer_norm_eps=1e-6, qkv_bias=True,
        hidden_act="gelu",
    ),
    "openai/clip-vit-large-patch14": dict(
        projection_dim=768,
        text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                         max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", projection_dim=768),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                           image_size=224, patch_size=14, hidden_act="quick_gelu", projection_dim=768),
    ),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def pixel_values(images: list[Image.Image], size: int, mean, std) -> torch.Tensor:
    """What transformers' Bit/CLIP image processors do: shortest edge to `size` (bicubic on
    8-bit RGB), centre crop to size x size, scale to [0, 1], normalise."""
    out = []
    for image in images:
        image = image.convert("RGB")
        w, h = image.size
        target = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)  # long side truncated
        resized = image.resize(target, Image.Resampling.BICUBIC)
        left, top = (resized.width - size) // 2, (resized.height - size) // 2
        crop = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        out.append(torch.from_numpy((crop - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)))
    return torch.stack(out).permute(0, 3, 1, 2).contiguous()


def _architecture(name: str, override: dict | None) -> dict:
    if override is not None:
        return dict(override)
    if name not in HF_ARCHITECTURES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(HF_ARCHITECTURES)}")
    return dict(HF_ARCHITECTURES[name])


def build_dino(dino_type: str, override: dict | None) -> Dinov2WithRegistersModel:
    config = Dinov2WithRegistersConfig(**_architecture(dino_type, override))
    config._attn_implementation = "sdpa"
    return Dinov2WithRegistersModel(config)


def dino_tokens(model: Dinov2WithRegistersModel, pixels: torch.Tensor) -> torch.Tensor:
    """Final-LayerNorm tokens with the register tokens removed: [CLS, patches...]."""
    hidden = model(pixel_values=pixels.to(model.dtype)).last_hidden_state
    return torch.cat([hidden[:, :1], hidden[:, 1 + model.config.num_register_tokens:]], dim=1)


# Recent transformers renamed DINOv2's attention parameters; checkpoints keep the release's names.
# Which names the installed transformers uses is read off the model, so either works.
DINO_RENAMES = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
)


def _rename(key: str, pairs) -> str:
    for old, new in pairs:
        if old in key:
            return key.replace(old, new)
    return key


class VisualEncoderBase(StrictLoadMixin, ModelMixin, ConfigMixin):
    """Shared by both visual encoders: image list -> condition tokens, zeros for unconditional."""

    def _dino_renames(self) -> tuple[tuple[str, str], ...]:
        """The release-to-installed renames, empty when transformers still uses the release's names."""
        renamed = any(new in name for name, _ in self.named_parameters() for _, new in DINO_RENAMES)
        return DINO_RENAMES if renamed else ()

    def _fix_state_dict_keys_on_load(self, state_dict) -> None:
        super()._fix_state_dict_keys_on_load(state_dict)
        renames = self._dino_renames()
        for key in [k for k in state_dict if k.startswith("dino_model.")]:
            new = _rename(key, renames)
            if new != key:
                state_dict[new] = state_dict.pop(key)

    def release_state_dict(self) -> dict[str, torch.Tensor]:
        inverse = tuple((new, old) for old, new in self._dino_renames())
        return {_rename(k, inverse): v for k, v in self.state_dict().items()}

    def _check_release_options(self, zero_uncond_embeds: bool) -> None:
        if not zero_uncond_embeds:
            raise ValueError("only zero_uncond_embeds=True (the released encoders) is supported")

    def unconditional(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(cond)


class DinoEncoder(VisualEncoderBase):
    """`visual_encoder/` of the base model (the release's `Dinov2Encoder`): 1370 x 1024 tokens at 518 px."""

    @register_to_config
    def __init__(
        self,
        image_size: int = 518,
        dino_type: str = "facebook/dinov2-with-registers-large",
        zero_uncond_embeds: bool = True,
        dino_config: dict | None = None,
    ):
        super().__init__()
        self._check_release_options(zero_uncond_embeds)
        self.dino_model = build_dino(dino_type, dino_config)

    def forward(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = pixel_values(images, self.config.image_size, IMAGENET_MEAN, IMAGENET_STD).to(self.device)
        return dino_tokens(self.dino_model, pixels)


class DinoClipEncoder(VisualEncoderBase):
    """`visual_encoder/` of the Label model (the release's `Dinov2CLIPEncoder`): DINO tokens at
    `image_size`, then CLIP-L vision tokens (257, before the post-LayerNorm) at CLIP's 224 px."""

    @register_to_config
    def __init__(
        self,
        image_size: int = 224,
        dino_type: str = "facebook/dinov2-with-registers-large",
        clip_type: str = "openai/clip-vit-large-patch14",
        zero_uncond_embeds: bool = True,
        dino_config: dict | None = None,
        clip_config: dict | None = None,
    ):
        super().__init__()
        self._check_release_options(zero_uncond_embeds)
        self.dino_model = build_dino(dino_type, dino_config)
        config = CLIPConfig(**_architecture(clip_type, clip_config))
        config._attn_implementation = "sdpa"
        self.clip_model = CLIPModel(config)
        if self.dino_model.config.hidden_size != config.vision_config.hidden_size:
            raise ValueError("DINO and CLIP token widths differ; the release concatenates them unprojected")

    def forward(self, images: list[Image.Image]) -> torch.Tensor:
        dino = pixel_values(images, self.config.image_size, IMAGENET_MEAN, IMAGENET_STD).to(self.device)
        size = self.clip_model.config.vision_config.image_size
        clip = pixel_values(images, size, CLIP_MEAN, CLIP_STD).to(self.device)
        vision = self.clip_model.vision_model(pixel_values=clip.to(self.clip_model.dtype)).last_hidden_state
        return torch.cat([dino_tokens(self.dino_model, dino), vision], dim=1)


POSE = {"unknown": 0, "t-pose": 1, "a-pose": 2}
SYMMETRY = {"asymmetry": 0, "x": 1, "y": 0, "z": 0}
GEOMETRY_QUALITY = {"normal": 0, "smooth": 1, "sharp": 2}


@dataclass(frozen=True)
class ShapeLabels:
    """The Label model's controls. An empty string means "no label": a zero token, as in training."""

    pose: str = "unknown"
    symmetry: str = "asymmetry"  # an empty label set is the release's `{}`: no symmetry
    geometry_quality: str = "normal"  # the user-facing "edge type"


class LabelEncoder(StrictLoadMixin, ModelMixin, ConfigMixin):
    """`label_encoder/`: three tokens [pose, symmetry, geometry quality].

    Unlike the release (which reads `geometry_type` while its callers pass `edge_type`, so the
    quality token is always "normal"), the quality label here always reaches its token.
    """

    TABLES = (
        ("pose", "embedding_table_tpose", POSE),
        ("symmetry", "embedding_table_symmetry_type", SYMMETRY),
        ("geometry_quality", "embedding_table_geometry_quality", GEOMETRY_QUALITY),
    )

    @register_to_config
    def __init__(self, hidden_size: int = 1024, zero_uncond_embeds: bool = True):
        super().__init__()
        if not zero_uncond_embeds:
            raise ValueError("only zero_uncond_embeds=True (the released encoder) is supported")
        for _, name, vocabulary in self.TABLES:
            self.add_module(name, nn.Embedding(max(vocabulary.values()) + 1, hidden_size))

    def forward(self, labels: list[ShapeLabels]) -> torch.Tensor:
        tokens = []
        for field, name, vocabulary in self.TABLES:
            table: nn.Embedding = getattr(self, name)
            values = [getattr(label, field) for label in labels]
            unknown = sorted({v for v in values if v and v not in vocabulary})
            if unknown:
                raise ValueError(f"unknown {field} label(s) {unknown}; expected one of {', '.join(vocabulary)}")
            index = torch.tensor([vocabulary.get(v, 0) for v in values], device=table.weight.device)
            present = torch.tensor([bool(v) for v in values], device=table.weight.device)
            tokens.append(table(index) * present[:, None].to(table.weight.dtype))
        return torch.stack(tokens, dim=1)

    def unconditional(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(cond)
