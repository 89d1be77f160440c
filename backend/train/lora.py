"""LoRA on the geometry DiT (peft), as the reference fine-tunes it: rank 128, alpha 128, on every
attention projection of both block kinds and the MLPs of the double-stream blocks.

Saved format (a folder): `adapter_config.json` (peft's LoraConfig) + `adapter_model.safetensors`
with keys relative to the `transformer/` component, e.g.
`dit_model.transformer_blocks.0.attn.to_q.lora_A.weight` - peft's own state-dict naming, so
`peft.set_peft_model_state_dict` reads it too. `merged_denoiser` folds the adapter into plain
weights under the release's key names, for a checkpoint any inference loader reads unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file

from backend.geometry.dit import GeometryDenoiser
from shared.errors import BackendError

TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
           "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
           "ff_context.net.2")
ADAPTER = "default"
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def lora_config(rank: int = 128, alpha: float = 128.0, dropout: float = 0.0) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(TARGETS),
                      init_lora_weights=True)


def add_lora(denoiser: GeometryDenoiser, config: LoraConfig) -> list[torch.nn.Parameter]:
    """Inject the adapter (fp32, trainable), freeze everything else; returns the LoRA parameters."""
    denoiser.requires_grad_(False)
    inject_adapter_in_model(config, denoiser, adapter_name=ADAPTER)
    params = [p for n, p in denoiser.named_parameters() if "lora_" in n]
    if not params:
        raise ValueError("no LoRA target module found in the denoiser")
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def save_lora(denoiser: GeometryDenoiser, folder: Path, config: LoraConfig) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(denoiser, adapter_name=ADAPTER).items()}
    save_file(state, str(folder / WEIGHTS_NAME))
    settings = config.to_dict()
    settings["target_modules"] = sorted(settings["target_modules"])
    (folder / CONFIG_NAME).write_text(json.dumps(settings, indent=2, default=str))
    return folder


def read_lora_config(folder: Path) -> LoraConfig:
    try:
        raw = json.loads((Path(folder) / CONFIG_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise BackendError("weights_not_found", f"LoRA folder {folder}: {exc}") from None
    fields = {k: v for k, v in raw.items() if k in LoraConfig.__dataclass_fields__ and k != "peft_type"}
    return LoraConfig(**fields)


def load_lora(denoiser: GeometryDenoiser, folder: str | Path, merge: bool = False) -> GeometryDenoiser:
    """Add a saved adapter to `denoiser` (strictly: every saved tensor must find its place);
    `merge=True` folds it into the base weights and removes the adapter modules."""
    folder = Path(folder)
    config = read_lora_config(folder)
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except (OSError, ValueError) as exc:
        raise BackendError("weights_not_found", f"LoRA weights in {folder}: {exc}") from None
    inject_adapter_in_model(config, denoiser, adapter_name=ADAPTER)
    try:
        result = set_peft_model_state_dict(denoiser, state, adapter_name=ADAPTER)
    except RuntimeError as exc:  # shapes of another model width
        raise BackendError("weights_not_found", f"LoRA {folder} does not fit this denoiser: {exc}") from None
    lora_keys = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or lora_keys:
        raise BackendError("weights_not_found", f"LoRA {folder} does not fit this denoiser: "
                           f"unexpected {list(result.unexpected_keys)[:3]}, missing {lora_keys[:3]}")
    denoiser.to(denoiser.dtype)
    if merge:
        merged = merged_denoiser(denoiser)
        return merged
    return denoiser


def merged_state_dict(denoiser: GeometryDenoiser) -> dict[str, torch.Tensor]:
    """Release-named weights with every LoRA delta added to its base layer."""
    state: dict[str, torch.Tensor] = {}
    lora_modules = {name: m for name, m in denoiser.named_modules() if isinstance(m, LoraLayer)}
    for name, tensor in denoiser.state_dict().items():
        if "lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = tensor
    for name, module in lora_modules.items():
        base = module.get_base_layer()
        delta = sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
        state[f"{name}.weight"] = (base.weight.float() + delta.float()).to(base.weight.dtype)
    return state


def merged_denoiser(denoiser: GeometryDenoiser) -> GeometryDenoiser:
    """A plain `GeometryDenoiser` (no adapter modules) holding the merged weights."""
    state = merged_state_dict(denoiser)
    with torch.device("meta"):
        plain = GeometryDenoiser.from_config(denoiser.config)
    plain.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True, assign=True)
    return plain.eval()
