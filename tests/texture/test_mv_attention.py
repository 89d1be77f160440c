"""The MV-Adapter processor against literal, loop-based float64 readings of the specification."""
import math

import pytest
import torch
from diffusers.models.attention_processor import Attention

from backend.texture.mv_attention import (MVAttnProcessor, MVCall, ReferenceCache, latent_grid,
                                          multiview_attention)


def attend(q, k, v):
    """softmax(q k^T / sqrt(d)) v for one head: q [Lq, d], k/v [Lk, d]."""
    return torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1) @ v


def brute_multiview(q, k, v, heads, h, w):
    """Row attention across views 0-3, column attention across front (mirrored), back, top,
    bottom, combined per view as the reference describes; one row / column / head at a time."""
    bv, n, c = q.shape
    d = c // heads
    out = torch.zeros_like(q)
    for b in range(bv // 6):
        def tok(view, r, col):
            return b * 6 + view, r * w + col
        for hd in range(heads):
            sl = slice(hd * d, (hd + 1) * d)
            row = {}
            for r in range(h):
                idx = [tok(view, r, col) for view in range(4) for col in range(w)]
                res = attend(*(torch.stack([t[i, j, sl] for i, j in idx]) for t in (q, k, v)))
                row.update({key: res[m] for m, key in enumerate(idx)})
            col_out = {}
            for col in range(w):
                idx = [tok(0, r, w - 1 - col) for r in range(h)]  # column `col` of the mirrored front
                idx += [tok(view, r, col) for view in (2, 4, 5) for r in range(h)]
                res = attend(*(torch.stack([t[i, j, sl] for i, j in idx]) for t in (q, k, v)))
                col_out.update({key: res[m] for m, key in enumerate(idx)})
            for view in range(6):
                for r in range(h):
                    for col in range(w):
                        key = tok(view, r, col)
                        if view in (0, 2):
                            val = 0.5 * (row[key] + col_out[key])
                        elif view in (1, 3):
                            val = row[key]
                        else:
                            val = col_out[key]
                        out[key[0], key[1], sl] = val
    return out


@pytest.mark.parametrize("groups,h,w", [(1, 3, 3), (2, 2, 4)])
def test_multiview_attention_matches_loops(groups, h, w):
    g = torch.Generator().manual_seed(groups)
    q, k, v = (torch.randn(groups * 6, h * w, 8, generator=g, dtype=torch.float64) for _ in range(3))
    fast = multiview_attention(q, k, v, 2, h, w)
    torch.testing.assert_close(fast, brute_multiview(q, k, v, 2, h, w), rtol=1e-10, atol=1e-12)


def test_latent_grid():
    assert latent_grid(48 * 48, (96, 96)) == (48, 48)
    assert latent_grid(24 * 12, (96, 48)) == (24, 12)
    with pytest.raises(ValueError):
        latent_grid(50, (96, 96))


def _layer(c=8, heads=2, seed=0):
    torch.manual_seed(seed)
    attn = Attention(query_dim=c, heads=heads, dim_head=c // heads, out_bias=True).double().eval()
    proc = MVAttnProcessor("layer", c).double()
    with torch.no_grad():
        for p in proc.parameters():
            p.normal_(0, 0.5)
    attn.set_processor(proc)
    return attn, proc


def naive_layer(attn, proc, x, ref_feat, ref_groups, h, w):
    """Spec-literal: reference features repeated for every view, zeros in non-attending groups,
    reference keys/values projected on every call."""
    heads = attn.heads
    d = x.shape[-1] // heads

    def per_item(q, k, v):
        out = torch.zeros_like(q)
        for i in range(q.shape[0]):
            for hd in range(heads):
                sl = slice(hd * d, (hd + 1) * d)
                out[i, :, sl] = attend(q[i, :, sl], k[i, :, sl], v[i, :, sl])
        return out

    base = attn.to_out[0](per_item(attn.to_q(x), attn.to_k(x), attn.to_v(x)))
    mv = proc.to_out_mv[0](brute_multiview(proc.to_q_mv(x), proc.to_k_mv(x), proc.to_v_mv(x), heads, h, w))
    feats = torch.cat([ref_feat.expand(6, -1, -1) if on else torch.zeros_like(ref_feat).expand(6, -1, -1)
                       for on in ref_groups])
    ref = proc.to_out_ref[0](per_item(proc.to_q_ref(x), proc.to_k_ref(feats), proc.to_v_ref(feats)))
    return base + mv + ref


@pytest.mark.parametrize("ref_groups", [(False, True), (True,), (True, True)])
def test_processor_with_cached_reference_matches_recomputation(ref_groups):
    attn, proc = _layer()
    h, w = 2, 3
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6 * len(ref_groups), h * w, 8, generator=g, dtype=torch.float64)
    ref_feat = torch.randn(1, h * w, 8, generator=g, dtype=torch.float64)
    cache = ReferenceCache()
    with torch.no_grad():
        plain = attn(ref_feat, mv=MVCall("record", (h, w), cache))
        assert set(cache.kv) == {"layer"}
        torch.testing.assert_close(plain, attn(ref_feat))  # the record pass is plain self-attention
        fast = attn(x, mv=MVCall("generate", (h, w), cache, ref_groups=ref_groups))
        slow = naive_layer(attn, proc, x, ref_feat, ref_groups, h, w)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)


def test_processor_rejects_a_batch_that_is_not_whole_view_groups():
    attn, _ = _layer()
    with pytest.raises(ValueError):
        attn(torch.randn(5, 4, 8, dtype=torch.float64), mv=MVCall("generate", (2, 2), ReferenceCache()))
