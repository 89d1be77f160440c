"""SDXL text conditioning for the texture model: two CLIP encoders and the micro-conditioning.

The texture model always uses the same prompt pair (step1x3d-reference.md §4.1), so its embeddings
are computed once per pipeline (and again only when a LoRA changes the text encoders).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

PROMPT = "high quality"
NEGATIVE_PROMPT = "watermark, ugly, deformed, noisy, blurry, low contrast"


@dataclass
class PromptEmbeddings:
    """Rows in CFG batch order: [negative, positive]."""

    hidden: torch.Tensor  # [2, tokens, 2048]: penultimate layers of both encoders, concatenated
    pooled: torch.Tensor  # [2, 1280]: the projected pooled output of the second encoder

    def positive(self) -> PromptEmbeddings:
        return PromptEmbeddings(self.hidden[1:], self.pooled[1:])


@torch.no_grad()
def encode_prompts(tokenizers: tuple[CLIPTokenizer, CLIPTokenizer],
                   encoders: tuple[CLIPTextModel, CLIPTextModelWithProjection],
                   prompts: tuple[str, str] = (NEGATIVE_PROMPT, PROMPT)) -> PromptEmbeddings:
    hidden = []
    pooled = None
    for tokenizer, encoder in zip(tokenizers, encoders):
        ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(encoder.device)
        out = encoder(ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0]  # text_embeds of the projection model, which comes last
    return PromptEmbeddings(torch.cat(hidden, dim=-1), pooled)


def micro_conditioning(height: int, width: int) -> torch.Tensor:
    """SDXL's added time ids: original size, crop top-left, target size (the views are not crops)."""
    return torch.tensor([height, width, 0, 0, height, width], dtype=torch.float32)
