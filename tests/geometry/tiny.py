"""Tiny geometry checkpoints written in the release's folder layout, for CPU tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from backend.geometry.conditioners import DinoClipEncoder, DinoEncoder, LabelEncoder
from backend.geometry.dit import GeometryDenoiser
from backend.geometry.vae import ShapeVAE

CONTEXT = 16
TINY_DINO = dict(hidden_size=CONTEXT, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, image_size=28,
                 patch_size=14, num_register_tokens=4)
TINY_CLIP = dict(
    projection_dim=8,
    text_config=dict(hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=1,
                     max_position_embeddings=8, vocab_size=32),
    vision_config=dict(hidden_size=CONTEXT, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                       image_size=28, patch_size=14),
)
TINY_VAE = dict(num_latents=16, embed_dim=8, width=32, heads=2, num_encoder_layers=1, num_decoder_layers=1)
TINY_DIT = dict(input_channels=8, width=32, layers=1, num_single_layers=1, num_heads=2, condition_dim=CONTEXT,
                visual_condition_dim=CONTEXT, label_condition_dim=CONTEXT)
# Keys the release's config.json files carry that this implementation does not need.
RELEASE_EXTRAS = {
    "transformer": {"n_views": 1, "identity_init": False},
    "vae": {"n_samples": 32768, "use_flash": True, "use_checkpoint": False, "init_scale": 0.009},
    "visual_encoder": {"encode_camera": False, "n_views": 1, "empty_embeds_ratio": 0.1, "normalize_embeds": False},
    "label_encoder": {"empty_embeds_ratio": 0.1, "normalize_embeds": False},
}
RELEASE_CLASSES = {
    "transformer": ["step1x3d_geometry.models.transformers.flux_transformer_1d", "FluxDenoiser"],
    "vae": ["step1x3d_geometry.models.autoencoders.michelangelo_autoencoder", "MichelangeloAutoencoder"],
    "visual_encoder": ["step1x3d_geometry.models.conditional_encoders.dinov2_encoder", "Dinov2Encoder"],
    "label_encoder": ["step1x3d_geometry.models.conditional_encoders.label_encoder", "LabelEncoder"],
}


def tiny_components(label: bool, seed: int = 0) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    parts = {
        "transformer": GeometryDenoiser(**TINY_DIT, use_label_condition=label),
        "vae": ShapeVAE(**TINY_VAE),
        "visual_encoder": DinoClipEncoder(image_size=28, dino_config=TINY_DINO, clip_config=TINY_CLIP)
        if label else DinoEncoder(image_size=28, dino_config=TINY_DINO),
    }
    if label:
        parts["label_encoder"] = LabelEncoder(hidden_size=CONTEXT)
    return parts


BLOB_LEVEL = 2.75  # the blob is cos x + cos y + cos z > BLOB_LEVEL - latent term
LATENT_REACH = 0.15  # the latent term's bound: the level stays in [2.6, 2.9], one closed blob inside [-1, 1]^3


@torch.no_grad()
def make_blob_field(vae: ShapeVAE, seed: int = 0) -> None:
    """Random weights give a field of random sign everywhere (a foam of tiny surfaces). Rewire the
    query decoder so the field is f / sqrt(f^2 + 1) with f = cos x + cos y + cos z - BLOB_LEVEL + d,
    where d, what the cross-attention to the latents adds, is bounded by LATENT_REACH: one closed
    blob (radius 0.45-0.93) whose surface moves with the latents, so a test can tell whether the
    image and the seed reached them."""
    dec = vae.decoder
    block = dec.cross_attn_decoder
    width = dec.query_proj.out_features
    block.mlp.c_proj.weight.zero_(), block.mlp.c_proj.bias.zero_()
    dec.query_proj.weight.zero_(), dec.query_proj.bias.zero_()
    cos_f0 = [3 + 6 * dec.fourier.frequencies.numel() // 2 + axis * dec.fourier.frequencies.numel() for axis in range(3)]
    for row, sign in ((0, 1.0), (1, -1.0)):
        dec.query_proj.weight[row, cos_f0] = sign
        dec.query_proj.bias[row] = -BLOB_LEVEL * sign
    dec.query_proj.bias[2], dec.query_proj.bias[3] = 1.0, -1.0  # keeps LayerNorm's scale finite at f = 0
    for axis in range(3):  # the raw position too, so that the attention (and d) varies with direction
        dec.query_proj.weight[4 + axis, axis] = 1.0
    # d = a u . (attention output). Head h's part of that output is a convex mix of its values
    # v_h = W_h LN(token) + b_h, and |u_h . v_h| <= |W_h^T u_h| sqrt(width) + |u_h . b_h| (a
    # LayerNorm output with unit weight and no bias has norm at most sqrt(width)); a bounds the sum.
    heads, head_dim = block.attn.heads, width // block.attn.heads
    block.ln_2.weight.fill_(1.0), block.ln_2.bias.zero_()
    u = torch.randn(width, generator=torch.Generator().manual_seed(seed))
    u /= u.norm()
    reach = 0.0
    for h in range(heads):
        rows = slice(h * 2 * head_dim + head_dim, (h + 1) * 2 * head_dim)  # c_kv packs [k v] per head
        u_h = u[h * head_dim:(h + 1) * head_dim]
        bias = block.attn.c_kv.bias[rows] @ u_h if block.attn.c_kv.bias is not None else 0.0
        reach += float(torch.linalg.vector_norm(block.attn.c_kv.weight[rows].T @ u_h)) * width**0.5 + abs(float(bias))
    a = LATENT_REACH / reach
    block.attn.c_q.weight.mul_(8.0)  # sharper attention: d follows single latents, not their mean
    block.attn.c_proj.weight.zero_(), block.attn.c_proj.bias.zero_()
    block.attn.c_proj.weight[0], block.attn.c_proj.weight[1] = a * u, -a * u
    dec.ln_post.weight.fill_(1.0), dec.ln_post.bias.zero_()
    dec.output_proj.weight.zero_(), dec.output_proj.bias.zero_()
    dec.output_proj.weight[0, 0], dec.output_proj.weight[0, 1] = 2.0, -2.0


def mesh_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean distance from each vertex set to the other's nearest vertex: 0 for equal
    meshes, positive for a moved surface or another tessellation of it."""
    from scipy.spatial import cKDTree

    return 0.5 * float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


MOVED = 2e-3  # a mesh_gap above this is another mesh, not float noise (~1e-7)


def on_blob_surface(vertices: np.ndarray, tolerance: float = 0.05) -> bool:
    """Whether vertices lie on a level the latent term can reach: |sum cos - BLOB_LEVEL| <= LATENT_REACH."""
    return bool(np.abs(np.cos(vertices).sum(axis=1) - BLOB_LEVEL).max() <= LATENT_REACH + tolerance)


def write_release_folder(root: Path, parts: dict[str, torch.nn.Module], subfolder: str) -> Path:
    """model_index.json + scheduler + one folder per component, as on the hub."""
    folder = root / subfolder
    folder.mkdir(parents=True)
    index = {
        "_class_name": "Step1X3DGeometryPipeline",
        "_diffusers_version": "0.32.2",
        "caption_encoder": [None, None],
        "label_encoder": [None, None],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "visual_eature_extractor": ["transformers", "BitImageProcessor"],
    }
    for name, module in parts.items():
        module.save_release(folder / name)
        config_path = folder / name / "config.json"
        config = json.loads(config_path.read_text())
        config.update(RELEASE_EXTRAS[name])
        config_path.write_text(json.dumps(config))
        index[name] = list(RELEASE_CLASSES[name])
    if isinstance(parts["visual_encoder"], DinoClipEncoder):
        index["visual_encoder"][1] = "Dinov2CLIPEncoder"
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.32.2",
         "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}))
    (folder / "visual_eature_extractor").mkdir()
    (folder / "visual_eature_extractor" / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 518}}))
    return folder
