"""Tiny random stand-ins for the texture stage's weights, written in the release layouts.

SDXL base (diffusers folders + model_index.json), the fp16-fix VAE (config + weights at the root)
and the Step1X-3D repo (`Step1X-3D-Texture/step1x-3d-ig2v.safetensors` with `_mv`/`_ref`
processor weights and `adapter.*`): the same structure as the real models, a few thousand
parameters wide, so the user-facing loading code runs unchanged on them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, T2IAdapter, UNet2DConditionModel
from safetensors.torch import save_file
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from backend.texture.adapter import ADAPTER_FILE, init_adapter_from_base, install_mv_processors, t2i_adapter_config

TEXT_WIDTH = 16  # each encoder; the UNet's cross-attention width is the sum
TIME_EMBED = 8
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

UNET_CONFIG = dict(
    sample_size=16, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    block_out_channels=(16, 32, 32), layers_per_block=1, transformer_layers_per_block=(1, 1, 2),
    attention_head_dim=(2, 2, 4), norm_num_groups=8, cross_attention_dim=2 * TEXT_WIDTH,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED,
    projection_class_embeddings_input_dim=TEXT_WIDTH + 6 * TIME_EMBED,
)
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
    "use_karras_sigmas": False,
}


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**UNET_CONFIG).eval()


def perturb_(module: torch.nn.Module, scale: float, seed: int) -> None:
    """Add noise to every parameter: freshly initialised outputs (zero to_out_mv/to_out_ref) would
    hide the branches the tests look at."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def adapter_state(unet: UNet2DConditionModel, seed: int = 1) -> dict[str, torch.Tensor]:
    """A random adapter file's tensors for `unet` (installs the processors on it)."""
    install_mv_processors(unet)
    init_adapter_from_base(unet)
    for name, module in unet.attn_processors.items():
        if isinstance(module, torch.nn.Module):
            perturb_(module, 0.2, seed + len(name))
    torch.manual_seed(seed)
    t2i = T2IAdapter(**t2i_adapter_config(unet.config))
    state = {k: v.contiguous() for k, v in unet.state_dict().items() if ".processor." in k}
    state.update(t2i.state_dict())
    return state


def _write_tokenizer(folder: Path) -> int:
    """vocab.json + merges.txt + configs, as in the SDXL repo; returns the vocabulary size."""
    chars = sorted(ByteLevel.alphabet())  # every byte has a token: any text tokenizes
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")  # no merges: a token per character
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True}))
    return len(vocab)


def _text_config(vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, projection_dim=TEXT_WIDTH,
                          bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)


@dataclass
class TinyWeights:
    base: Path
    vae: Path
    step1x: Path


def write_tiny_weights(root: Path) -> TinyWeights:
    base, vae_dir, step1x = root / "sdxl-base", root / "sdxl-vae-fp16-fix", root / "Step1X-3D"
    unet = tiny_unet()
    unet.save_pretrained(base / "unet")
    for i, (sub, cls) in enumerate((("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection))):
        vocab_size = _write_tokenizer(base / sub.replace("text_encoder", "tokenizer"))
        torch.manual_seed(10 + i)
        cls(_text_config(vocab_size)).save_pretrained(base / sub)
    (base / "scheduler").mkdir(parents=True, exist_ok=True)
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(SDXL_SCHEDULER))
    (base / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.19.0.dev0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"]}))
    torch.manual_seed(20)
    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                  sample_size=128, scaling_factor=0.13025, force_upcast=False).save_pretrained(vae_dir)
    (step1x / ADAPTER_FILE).parent.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(tiny_unet()), str(step1x / ADAPTER_FILE))
    return TinyWeights(base, vae_dir, step1x)
