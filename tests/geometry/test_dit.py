"""The DiT against a float64 re-computation written from the documented equations
(step1x3d-reference.md §2.4), not from diffusers."""
import math

import pytest
import torch
import torch.nn.functional as F

from backend.geometry.dit import GeometryDenoiser

W, HEADS = 32, 2


def linear(x, layer):
    return x @ layer.weight.T + layer.bias


def layer_norm(x, eps=1e-6):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def rms(x, weight, eps=1e-6):
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * weight


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def heads(x):
    b, n, w = x.shape
    return x.view(b, n, HEADS, w // HEADS)


def attention(q, k, v):
    """q, k, v: [B, N, H, d] -> [B, N, H*d], plain softmax."""
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(q.shape[-1])
    out = torch.einsum("bhnm,bmhd->bnhd", scores.softmax(-1), v)
    return out.flatten(2)


def ref_double(block, x, c, temb):
    e = linear(F.silu(temb), block.norm1.linear)[:, None]
    ec = linear(F.silu(temb), block.norm1_context.linear)[:, None]
    sh, sc, g, sh2, sc2, g2 = e.chunk(6, -1)  # shift, scale, gate (msa), shift, scale, gate (mlp)
    csh, csc, cg, csh2, csc2, cg2 = ec.chunk(6, -1)
    a = block.attn
    nx, nc = layer_norm(x) * (1 + sc) + sh, layer_norm(c) * (1 + csc) + csh
    q = rms(heads(linear(nx, a.to_q)), a.norm_q.weight)
    k = rms(heads(linear(nx, a.to_k)), a.norm_k.weight)
    v = heads(linear(nx, a.to_v))
    cq = rms(heads(linear(nc, a.add_q_proj)), a.norm_added_q.weight)
    ck = rms(heads(linear(nc, a.add_k_proj)), a.norm_added_k.weight)
    cv = heads(linear(nc, a.add_v_proj))
    out = attention(torch.cat([cq, q], 1), torch.cat([ck, k], 1), torch.cat([cv, v], 1))  # context first
    c_out, x_out = out[:, : c.shape[1]], out[:, c.shape[1]:]
    x = x + g * linear(x_out, a.to_out[0])
    c = c + cg * linear(c_out, a.to_add_out)

    def ff(h, net):
        return linear(gelu_tanh(linear(h, net[0].proj)), net[2])

    x = x + g2 * ff(layer_norm(x) * (1 + sc2) + sh2, block.ff.net)
    c = c + cg2 * ff(layer_norm(c) * (1 + csc2) + csh2, block.ff_context.net)
    return c, x


def ref_single(block, x, c, temb):
    sh, sc, g = linear(F.silu(temb), block.norm.linear)[:, None].chunk(3, -1)
    h = torch.cat([c, x], 1)
    nh = layer_norm(h) * (1 + sc) + sh
    a = block.attn
    q = rms(heads(linear(nh, a.to_q)), a.norm_q.weight)
    k = rms(heads(linear(nh, a.to_k)), a.norm_k.weight)
    v = heads(linear(nh, a.to_v))
    mixed = torch.cat([attention(q, k, v), gelu_tanh(linear(nh, block.proj_mlp))], -1)
    h = h + g * linear(mixed, block.proj_out)
    return h[:, : c.shape[1]], h[:, c.shape[1]:]


def ref_forward(dit, latents, t, context):
    half = W // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    args = t[:, None].double() * freqs
    emb = torch.cat([torch.sin(args), torch.cos(args)], -1)  # sin first
    temb = linear(F.gelu(linear(emb, dit.time_proj.linear_1)), dit.time_proj.linear_2)  # exact GELU
    x, c = linear(latents, dit.proj_in), linear(context, dit.proj_cross_attention)
    for block in dit.transformer_blocks:
        c, x = ref_double(block, x, c, temb)
    for block in dit.single_transformer_blocks:
        c, x = ref_single(block, x, c, temb)
    scale, shift = linear(F.silu(temb), dit.norm_out.linear)[:, None].chunk(2, -1)  # scale first
    return linear(layer_norm(x) * (1 + scale) + shift, dit.proj_out), temb


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GeometryDenoiser(input_channels=8, width=W, layers=2, num_single_layers=2, num_heads=HEADS, condition_dim=12,
                         visual_condition_dim=12).double().eval()
    with torch.no_grad():  # non-zero gates/modulation so every branch contributes
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_blocks_match_float64_reference(model):
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(2, 7, W, generator=g, dtype=torch.float64), torch.randn(2, 5, W, generator=g, dtype=torch.float64)
    temb = torch.randn(2, W, generator=g, dtype=torch.float64)
    with torch.no_grad():
        block = model.dit_model.transformer_blocks[0]
        c1, x1 = block(hidden_states=x, encoder_hidden_states=c, temb=temb)
        rc1, rx1 = ref_double(block, x, c, temb)
        torch.testing.assert_close(x1, rx1, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(c1, rc1, rtol=1e-10, atol=1e-10)
        single = model.dit_model.single_transformer_blocks[0]
        c2, x2 = single(hidden_states=x, encoder_hidden_states=c, temb=temb)
        rc2, rx2 = ref_single(single, x, c, temb)
        torch.testing.assert_close(x2, rx2, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(c2, rc2, rtol=1e-10, atol=1e-10)


def test_forward_matches_float64_reference(model):
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(2, 9, 8, generator=g, dtype=torch.float64)
    context = torch.randn(2, 4, 12, generator=g, dtype=torch.float64)
    t = torch.tensor([1000.0, 37.5], dtype=torch.float64)
    with torch.no_grad():
        ours = model(latents, t, context)
        ref, _ = ref_forward(model.dit_model, latents, t, context)
    # diffusers builds the sinusoid in float32 (as the release); that alone moves results ~1e-6.
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    assert ours.shape == latents.shape


def test_latent_tokens_are_an_unordered_set(model):
    """No positional encoding: permuting the latent tokens permutes the output the same way."""
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 9, 8, generator=g, dtype=torch.float64)
    context = torch.randn(1, 4, 12, generator=g, dtype=torch.float64)
    perm = torch.randperm(9, generator=g)
    t = torch.tensor([500.0], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(latents, t, context)[:, perm], model(latents[:, perm], t, context))


def test_context_order_and_projection():
    torch.manual_seed(0)
    m = GeometryDenoiser(input_channels=8, width=W, layers=1, num_single_layers=1, num_heads=HEADS, condition_dim=12,
                         visual_condition_dim=12, use_label_condition=True, label_condition_dim=6)
    visual, label = torch.randn(1, 5, 12), torch.randn(1, 3, 6)
    ctx = m.context(visual=visual, label=label)
    assert ctx.shape == (1, 8, 12)
    torch.testing.assert_close(ctx[:, :5], visual)  # visual first, unprojected (width matches)
    torch.testing.assert_close(ctx[:, 5:], m.proj_label_condtion(label))
    with pytest.raises(ValueError, match="label condition"):
        m.context(visual=visual)
