"""Image- and geometry-conditioned multi-view SDXL (the release's "ig2mv" pipeline, §4.6).

One call turns a reference image and the 6 views' position+normal maps into 6 RGB views:
a reference UNet pass fills the per-layer reference keys/values once, the T2I-adapter features of
the geometry maps are computed once, then 50 SNR-shifted DDPM steps with classifier-free guidance
(batch = 6 negative + 6 positive views) run the MV-Adapter UNet. An optional `LatentSync`
(texture sync) replaces the per-view DDPM step where it wants to.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, T2IAdapter, UNet2DConditionModel
from diffusers.loaders import StableDiffusionXLLoraLoaderMixin
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from backend.context import JobContext
from shared.errors import BackendError
from shared.views import VIEW_NAMES

from .adapter import load_adapter
from .mv_attention import NUM_VIEWS, MVCall, ReferenceCache
from .prompt import PromptEmbeddings, encode_prompts, micro_conditioning
from .scheduler import shifted_ddpm_scheduler
from .weights import BASE_FILES, SDXL_BASE, SDXL_VAE, STEP1X3D, VAE_FILES, adapter_path, resolve, weights_variant

STAGE = "texture"
LORA_NAME = "style"


class LatentSync(Protocol):
    """Hook that keeps the views consistent through a shared texture (see sync.py)."""

    def start(self, latents: torch.Tensor, steps: int, generator: torch.Generator) -> torch.Tensor:
        """Called once with the initial noise (after the scheduler's timesteps are set); returns the
        latents to start from."""

    def step(self, index: int, t: int, latents: torch.Tensor, eps: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor | None:
        """The next latents, or None to let the pipeline take the ordinary DDPM step."""


class MultiViewPipeline(DiffusionPipeline, StableDiffusionXLLoraLoaderMixin):
    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, t2i_adapter: T2IAdapter,
                 text_encoder: CLIPTextModel, text_encoder_2: CLIPTextModelWithProjection,
                 tokenizer: CLIPTokenizer, tokenizer_2: CLIPTokenizer, scheduler: DDPMScheduler):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, t2i_adapter=t2i_adapter, text_encoder=text_encoder,
                              text_encoder_2=text_encoder_2, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
                              scheduler=scheduler)
        self._embeddings: PromptEmbeddings | None = None

    @classmethod
    def load(cls, base: str = SDXL_BASE, vae: str = SDXL_VAE, adapter: str = STEP1X3D,
             device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> MultiViewPipeline:
        """SDXL base + fp16-fix VAE + the Step1X-3D adapter, each a local folder or a hub id."""
        device = torch.device(device)
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        half = dtype == torch.float16
        base_dir = resolve(base, BASE_FILES, "SDXL base")
        vae_dir = resolve(vae, VAE_FILES, "SDXL VAE")
        adapter_file = adapter_path(adapter)
        try:
            unet = UNet2DConditionModel.from_pretrained(
                base_dir, subfolder="unet", torch_dtype=dtype,
                variant=weights_variant(base_dir / "unet", "diffusion_pytorch_model", half))
            encoders = [
                model.from_pretrained(base_dir, subfolder=sub, dtype=dtype,
                                      variant=weights_variant(base_dir / sub, "model", half))
                for model, sub in ((CLIPTextModel, "text_encoder"), (CLIPTextModelWithProjection, "text_encoder_2"))
            ]
            tokenizers = [CLIPTokenizer.from_pretrained(base_dir, subfolder=s) for s in ("tokenizer", "tokenizer_2")]
            vae_model = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=dtype)
            scheduler = shifted_ddpm_scheduler(DDPMScheduler.load_config(base_dir, subfolder="scheduler"))
        except (OSError, ValueError) as exc:
            raise BackendError("weights_not_found", f"cannot load SDXL from {base_dir} / {vae_dir}: {exc}") from None
        t2i = load_adapter(unet, adapter_file)
        pipe = cls(unet, vae_model, t2i, encoders[0], encoders[1], tokenizers[0], tokenizers[1], scheduler)
        return pipe.to(device)

    # ---- style LoRA ----

    def set_style_lora(self, source: str | None, scale: float = 1.0) -> None:
        """Load an SDXL LoRA (file, folder or hub id; diffusers/kohya formats) as the style, or
        remove it with source None/""."""
        self.unload_lora_weights()
        self._embeddings = None  # the LoRA may change the text encoders
        if not source:
            return
        path = Path(source).expanduser()
        try:
            if path.is_file():
                self.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=LORA_NAME)
            else:
                self.load_lora_weights(source, adapter_name=LORA_NAME)
        except (OSError, ValueError, KeyError) as exc:
            raise BackendError("weights_not_found", f"style LoRA {source!r} cannot be loaded: {exc}") from None
        self.set_adapters([LORA_NAME], adapter_weights=[scale])

    # ---- generation ----

    def prompt_embeddings(self) -> PromptEmbeddings:
        if self._embeddings is None:
            self._embeddings = encode_prompts((self.tokenizer, self.tokenizer_2), (self.text_encoder, self.text_encoder_2))
        return self._embeddings

    @torch.no_grad()
    def __call__(self, reference: torch.Tensor, control: torch.Tensor, *, seed: int, steps: int = 50,
                 guidance: float = 3.0, ctx: JobContext | None = None,
                 sync: LatentSync | None = None) -> torch.Tensor:
        """reference [3, H, W] and control [6 views, 6, H, W], both in [0, 1]; returns the 6 views
        [6, 3, H, W] in [0, 1] (float32, on the CPU)."""
        height, width = reference.shape[-2:]
        if control.shape != (NUM_VIEWS, 6, height, width) or reference.shape[0] != 3:
            raise ValueError(f"reference {tuple(reference.shape)} and control {tuple(control.shape)} do not fit "
                             f"[3, H, W] and [{NUM_VIEWS}, 6, H, W]")
        if height % 32 or width % 32:
            raise BackendError("invalid_setting", f"view resolution {height}x{width} is not a multiple of 32")
        device, dtype = self.unet.device, self.unet.dtype
        # The release's random draws in its order, on its device and dtype: the initial noise, then
        # the reference latent from the VAE posterior, then each DDPM step's noise (texture sync
        # draws differently: README, "Where we differ from the release").
        generator = torch.Generator(device).manual_seed(int(seed))
        cfg = guidance > 1.0
        vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        latent_size = (height // vae_factor, width // vae_factor)

        embeds = self.prompt_embeddings()
        if not cfg:
            embeds = embeds.positive()
        groups = embeds.hidden.shape[0]
        time_ids = micro_conditioning(height, width).to(device, dtype).expand(groups * NUM_VIEWS, -1)
        hidden = embeds.hidden.to(device, dtype).repeat_interleave(NUM_VIEWS, dim=0)
        added = {"text_embeds": embeds.pooled.to(device, dtype).repeat_interleave(NUM_VIEWS, dim=0),
                 "time_ids": time_ids}

        self.scheduler.set_timesteps(steps)
        shape = (NUM_VIEWS, self.unet.config.in_channels, *latent_size)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        cache = self._reference_cache(reference, latent_size, generator)
        features = [f.repeat(groups, 1, 1, 1) for f in self.t2i_adapter(control.to(device, dtype))]
        call = MVCall("generate", latent_size, cache, ref_groups=(False, True) if cfg else (True,))
        timesteps = [int(t) for t in self.scheduler.timesteps]
        if sync is not None:
            latents = sync.start(latents, len(timesteps), generator)
        for i, t in enumerate(timesteps):
            if ctx is not None:
                ctx.step(STAGE, i, len(timesteps), "multi-view denoising")
            model_in = latents.repeat(groups, 1, 1, 1)
            eps = self.unet(model_in, t, encoder_hidden_states=hidden, added_cond_kwargs=added,
                            cross_attention_kwargs={"mv": call},
                            down_intrablock_additional_residuals=list(features), return_dict=False)[0]
            if cfg:
                uncond, cond = eps.chunk(2)
                eps = uncond + guidance * (cond - uncond)
            nxt = sync.step(i, t, latents, eps, generator) if sync is not None else None
            if nxt is None:
                nxt = self.scheduler.step(eps, t, latents, generator=generator).prev_sample
            latents = nxt.to(dtype)
        if ctx is not None:
            ctx.step(STAGE, len(timesteps), len(timesteps), "decoding views")
        views = self.decode(latents)
        if ctx is not None:
            ctx.artifact("views", save_views(views, ctx.spec.output.with_name(f"{ctx.spec.output.stem}.views")))
        return views

    def _reference_cache(self, reference: torch.Tensor, latent_size: tuple[int, int],
                         generator: torch.Generator) -> ReferenceCache:
        """One UNet pass over the reference latent at t = 0 with the positive prompt; every attn1
        stores its projected reference keys/values."""
        device, dtype = self.unet.device, self.unet.dtype
        image = reference.to(device, self.vae.dtype)[None] * 2.0 - 1.0
        latent = self.vae.encode(image).latent_dist.sample(generator) * self.vae.config.scaling_factor
        pos = self.prompt_embeddings().positive()
        cache = ReferenceCache()
        added = {"text_embeds": pos.pooled.to(device, dtype),
                 "time_ids": micro_conditioning(*reference.shape[-2:]).to(device, dtype)[None]}
        self.unet(latent.to(dtype), 0, encoder_hidden_states=pos.hidden.to(device, dtype), added_cond_kwargs=added,
                  cross_attention_kwargs={"mv": MVCall("record", latent_size, cache)}, return_dict=False)
        return cache

    @torch.no_grad()
    def colour_latents(self, colours: torch.Tensor, size: int = 64) -> torch.Tensor:
        """Latents of flat images, one (C,) vector per (3,) colour in [0, 1] (the mean over the
        image's interior, away from the encoder's zero padding)."""
        image = colours.to(self.vae.device, self.vae.dtype)[:, :, None, None].expand(-1, -1, size, size) * 2.0 - 1.0
        latent = self.vae.encode(image).latent_dist.mode() * self.vae.config.scaling_factor
        n = latent.shape[-1]
        return latent[:, :, n // 4: n - n // 4, n // 4: n - n // 4].float().mean(dim=(2, 3)).to(self.unet.device)

    def decode(self, latents: torch.Tensor, batch: int = 3) -> torch.Tensor:
        """Latents -> [V, 3, H, W] in [0, 1], `batch` views per VAE call (6 one at a time left the
        GPU idle between small launches; 3 keeps the decoder's peak near the UNet's)."""
        views = []
        for chunk in latents.split(batch):
            image = self.vae.decode(chunk.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
            views.append((image.float() * 0.5 + 0.5).clamp(0, 1).cpu())
        return torch.cat(views)


def save_views(views: torch.Tensor, folder: Path) -> list[Path]:
    """Write the views as PNGs named after the canonical views (temp name, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, view in zip(VIEW_NAMES, views):
        pixels = (view.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        path = folder / f"view_{name}.png"
        tmp = path.with_suffix(".tmp.png")
        Image.fromarray(pixels).save(tmp, compress_level=1)  # previews: speed over size
        tmp.replace(path)
        paths.append(path)
    return paths
