"""Training: shape VAE, geometry DiT (full or LoRA) and the texture MV-Adapter, on data from
`backend.data.prepare` and `blender_render`, writing checkpoints the inference loaders read."""
