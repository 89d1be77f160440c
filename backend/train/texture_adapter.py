"""Texture adapter training: the MV-Adapter processors (`_mv`, `_ref`) and the T2I-adapter on a
frozen SDXL, epsilon-prediction with the SNR-shifted DDPM schedule (step1x3d-reference.md §4.13).

Per object and step: the 6 target views are VAE-encoded and noised at one shared timestep; one
UNet pass over the reference latent (t = 0, with grad only through the `_ref` key/value
projections) fills the per-layer reference keys/values; the control maps go through the
T2I-adapter; the adapted UNet predicts the noise. Prompt, reference and control are each dropped
with probability 0.1 (empty prompt; no reference attention, as the CFG-negative branch at
inference; zero control maps). Objects of a batch run one after another (the reference cache
holds one reference per UNet call) and their losses are averaged.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, T2IAdapter, UNet2DConditionModel
from safetensors.torch import save_file
from torch import nn

from backend.texture.adapter import ADAPTER_FILE, T2I_PREFIX, init_adapter_from_base, install_mv_processors, t2i_adapter_config
from backend.texture.mv_attention import NUM_VIEWS, MVCall, ReferenceCache
from backend.texture.mv_pipeline import MultiViewPipeline
from backend.texture.prompt import encode_prompts, micro_conditioning
from backend.texture.weights import BASE_FILES, resolve, weights_variant

from shared.errors import BackendError

from .config import TextureAdapterConfig, TrainConfig
from .export import assemble_folder
from .loop import TrainTask, compute_dtype


class MultiViewObjective(nn.Module):
    def __init__(self, unet: UNet2DConditionModel, t2i: T2IAdapter, vae, text_encoders, tokenizers,
                 scheduler: DDPMScheduler, cfg: TextureAdapterConfig):
        super().__init__()
        self.unet, self.t2i_adapter, self.vae = unet, t2i, vae
        self.text_encoders = nn.ModuleList(text_encoders)
        self.tokenizers, self.cfg = tuple(tokenizers), cfg
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.float().clone(), persistent=False)
        self.rng = random.Random(torch.initial_seed())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter file's tensors under the released names."""
        state = {k: v for k, v in self.unet.state_dict().items() if ".processor." in k}
        state.update(self.t2i_adapter.state_dict())
        return state

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        latent = self.vae.encode((images * 2.0 - 1.0).to(self.vae.dtype)).latent_dist.sample()
        return latent * self.vae.config.scaling_factor

    def _one(self, views: torch.Tensor, control: torch.Tensor, reference: torch.Tensor, prompt: str) -> torch.Tensor:
        cfg, dtype = self.cfg, self.unet.dtype
        with torch.no_grad():
            latents = self._encode(views)
            text = encode_prompts(self.tokenizers, tuple(self.text_encoders),
                                  ("" if self.rng.random() < cfg.prompt_drop else prompt,))
        height, width = views.shape[-2:]
        latent_size = tuple(latents.shape[-2:])
        added = {"text_embeds": text.pooled.to(dtype),
                 "time_ids": micro_conditioning(height, width).to(latents.device, dtype)[None]}
        cache = ReferenceCache()
        use_reference = self.rng.random() >= cfg.reference_drop
        if use_reference:
            with torch.no_grad():
                ref_latent = self._encode(reference[None])
            self.unet(ref_latent.to(dtype), 0, encoder_hidden_states=text.hidden.to(dtype), added_cond_kwargs=added,
                      cross_attention_kwargs={"mv": MVCall("record", latent_size, cache)}, return_dict=False)
        if self.rng.random() < cfg.control_drop:
            control = torch.zeros_like(control)
        features = self.t2i_adapter(control.to(self.t2i_adapter.dtype))
        t = torch.randint(*cfg.timestep_range, (), device=latents.device)
        a = self.alphas_cumprod[t]
        noise = torch.randn_like(latents)
        noisy = a.sqrt() * latents + (1.0 - a).sqrt() * noise
        views_added = {k: v.expand(NUM_VIEWS, -1) for k, v in added.items()}
        eps = self.unet(noisy.to(dtype), t.expand(NUM_VIEWS), encoder_hidden_states=text.hidden.to(dtype).expand(NUM_VIEWS, -1, -1),
                        added_cond_kwargs=views_added,
                        cross_attention_kwargs={"mv": MVCall("generate", latent_size, cache, ref_groups=(use_reference,))},
                        down_intrablock_additional_residuals=list(features), return_dict=False)[0]
        return F.mse_loss(eps.float(), noise.float())

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        losses = [self._one(v, c, r, p) for v, c, r, p in
                  zip(batch["views"], batch["control"], batch["reference"], batch["prompt"])]
        return {"loss": torch.stack(losses).mean()}


def mark_trainable(unet: UNet2DConditionModel, t2i: T2IAdapter, patterns: tuple[str, ...]) -> bool:
    """Train the UNet parameters whose names contain a pattern (fp32 master weights) and the T2I
    adapter; freeze the rest. Returns whether parameters outside the adapter processors train."""
    unet.requires_grad_(False)
    base_trained = False
    for name, param in unet.named_parameters():
        if any(p in name for p in patterns):
            param.data = param.data.float()
            param.requires_grad_(True)
            base_trained |= ".processor." not in name
    if not any(p.requires_grad for p in unet.parameters()):
        raise BackendError("invalid_setting", f"texture_adapter.trainable_modules {list(patterns)} match no UNet parameter")
    t2i.float().requires_grad_(True)
    return base_trained


def initial_adapter_file(cfg: TextureAdapterConfig, out: Path) -> Path:
    """MV-Adapter's initialisation written as an adapter file: q/k/v copied from each attn1,
    zero output projections, a freshly initialised T2I-adapter."""
    base_dir = resolve(cfg.base, BASE_FILES, "SDXL base")
    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet",
                                                variant=weights_variant(base_dir / "unet", "diffusion_pytorch_model", False))
    install_mv_processors(unet)
    init_adapter_from_base(unet)
    t2i = T2IAdapter(**t2i_adapter_config(unet.config))
    state = {k: v.float().contiguous() for k, v in unet.state_dict().items() if ".processor." in k}
    state.update({k: v.float().contiguous() for k, v in t2i.state_dict().items()})
    path = out / ADAPTER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def save_adapter(module: MultiViewObjective, folder: Path) -> Path:
    """`<folder>/Step1X-3D-Texture/step1x-3d-ig2v.safetensors` (fp32): what `MultiViewPipeline.load`
    and the texture stage read when given `folder` as the adapter source."""
    state = {k: v.detach().float().contiguous().cpu() for k, v in module.trainable_state_dict().items()}
    if not any(k.startswith(T2I_PREFIX) for k in state):
        raise ValueError("the T2I adapter's keys are missing from the adapter state")
    path = Path(folder) / ADAPTER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def save_unet(unet: UNet2DConditionModel, folder: Path) -> None:
    """A diffusers `unet/` folder (fp32) without the adapter processors' weights."""
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_config(folder)
    state = {k: v.detach().float().contiguous().cpu() for k, v in unet.state_dict().items() if ".processor." not in k}
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))


def build(config: TrainConfig, accelerator) -> TrainTask:
    cfg: TextureAdapterConfig = config.texture_adapter
    from .texture_data import MultiViewRenders, collate_views

    dataset = MultiViewRenders(cfg.renders_dir, cfg.resolution, cfg.reference_views, cfg.captions, cfg.prompt)
    adapter = cfg.adapter
    if adapter is None:
        init_dir = Path(config.output_dir) / "init"
        if accelerator.is_main_process and not (init_dir / ADAPTER_FILE).is_file():
            initial_adapter_file(cfg, init_dir)
        accelerator.wait_for_everyone()
        adapter = str(init_dir)
    pipe = MultiViewPipeline.load(cfg.base, cfg.vae, adapter, device="cpu", dtype=compute_dtype(accelerator.mixed_precision))
    unet, t2i = pipe.unet, pipe.t2i_adapter
    base_trained = mark_trainable(unet, t2i, cfg.trainable_modules)
    if config.loop.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    for frozen in (pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        frozen.eval().requires_grad_(False)
    objective = MultiViewObjective(unet, t2i, pipe.vae, (pipe.text_encoder, pipe.text_encoder_2),
                                   (pipe.tokenizer, pipe.tokenizer_2), pipe.scheduler, cfg)

    def save(module: MultiViewObjective, folder: Path) -> None:
        save_adapter(module, folder)
        if base_trained:  # a complete SDXL folder with the trained UNet: the `base` for inference
            assemble_folder(resolve(cfg.base, BASE_FILES, "SDXL base"), folder / "sdxl",
                            {"unet": lambda f: save_unet(module.unet, f)})

    return TrainTask(objective, dataset, save, collate=collate_views, find_unused_parameters=True,
                     description=f"texture MV-Adapter + T2I-adapter at {cfg.resolution} px")
