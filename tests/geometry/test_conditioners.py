"""Visual and label conditioners at tiny width: token layout, preprocessing, zero uncond, labels."""
import numpy as np
import pytest
import torch
from PIL import Image

from backend.geometry.conditioners import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, DinoClipEncoder,
                                           DinoEncoder, LabelEncoder, ShapeLabels, pixel_values)

from .tiny import TINY_CLIP, TINY_DINO


def random_image(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(300, 300), (300, 401), (500, 333)])
def test_pixel_values_equal_transformers_processors(size):
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image = random_image(*size)
    bit = BitImageProcessorPil(size={"shortest_edge": 518}, crop_size={"height": 518, "width": 518},
                               image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))
    expected = bit(images=image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixel_values([image], 518, IMAGENET_MEAN, IMAGENET_STD), expected)
    clip = CLIPImageProcessorPil()  # openai/clip-vit-large-patch14's defaults: 224, bicubic, CLIP mean/std
    expected = clip(images=image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixel_values([image], 224, CLIP_MEAN, CLIP_STD), expected)


def test_dino_tokens_drop_registers():
    torch.manual_seed(0)
    enc = DinoEncoder(image_size=28, dino_config=TINY_DINO).eval()
    image = random_image(40, 40)
    with torch.no_grad():
        tokens = enc([image])
        hidden = enc.dino_model(pixel_values(
            [image], 28, IMAGENET_MEAN, IMAGENET_STD)).last_hidden_state  # [CLS, 4 registers, 4 patches]
    assert hidden.shape[1] == 1 + 4 + 4 and tokens.shape == (1, 5, 16)
    torch.testing.assert_close(tokens, hidden[:, [0, 5, 6, 7, 8]])
    assert torch.equal(enc.unconditional(tokens), torch.zeros_like(tokens))


def test_dino_clip_tokens_concatenate_in_order():
    torch.manual_seed(0)
    # 42 px DINO input against a 28 px position table: interpolated, as the Label model's 224 vs 518
    enc = DinoClipEncoder(image_size=42, dino_config=TINY_DINO, clip_config=TINY_CLIP).eval()
    image = random_image(50, 50)
    with torch.no_grad():
        tokens = enc([image])
        clip = enc.clip_model.vision_model(pixel_values([image], 28, CLIP_MEAN, CLIP_STD)).last_hidden_state
    assert tokens.shape == (1, 1 + 9 + 1 + 4, 16)
    torch.testing.assert_close(tokens[:, 10:], clip)  # CLIP tokens last, before the post-LayerNorm


def test_labels_reach_their_tokens():
    torch.manual_seed(0)
    enc = LabelEncoder(hidden_size=8)
    out = enc([ShapeLabels(symmetry="asymmetry", geometry_quality="sharp"),
               ShapeLabels(pose="a-pose", symmetry="x", geometry_quality="smooth"),
               ShapeLabels(geometry_quality="")])
    assert out.shape == (3, 3, 8)
    w_pose, w_sym, w_q = (enc.embedding_table_tpose.weight, enc.embedding_table_symmetry_type.weight,
                          enc.embedding_table_geometry_quality.weight)
    torch.testing.assert_close(out[0], torch.stack([w_pose[0], w_sym[0], w_q[2]]))
    torch.testing.assert_close(out[1], torch.stack([w_pose[2], w_sym[1], w_q[1]]))
    torch.testing.assert_close(out[2, 2], torch.zeros(8))  # empty label -> zero token, as in training
    with pytest.raises(ValueError, match="geometry_quality"):
        enc([ShapeLabels(geometry_quality="jagged")])
