"""Tests of labcore.attention: parity with torch's fused attention and nn.MultiheadAttention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from labcore.attention import (
    HookPoint,
    MultiHeadAttention,
    attention_scores,
    causal_mask,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)

B, H, T, S, D = 2, 3, 5, 7, 8


def qkv(*, t: int = T, s: int = S, dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, t, D, generator=g, dtype=dtype)
    k = torch.randn(B, H, s, D, generator=g, dtype=dtype)
    v = torch.randn(B, H, s, D + 1, generator=g, dtype=dtype)  # d_v != d_k on purpose
    return q, k, v


def random_bool_mask(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) > 0.4
    mask[..., 0] = True  # every query row keeps at least one key
    return mask


MASKS = {
    "none": lambda: None,
    "bool_full": lambda: random_bool_mask((B, H, T, S)),
    "bool_2d_broadcast": lambda: random_bool_mask((T, S)),
    "bool_padding": lambda: random_bool_mask((B, 1, 1, S)),
    "bool_per_head": lambda: random_bool_mask((1, H, T, S)),
    "causal": lambda: causal_mask(T, S),
    "float": lambda: torch.randn(B, 1, T, S, generator=torch.Generator().manual_seed(2)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_kind", list(MASKS))
def test_sdpa_matches_torch(mask_kind: str, dtype: torch.dtype) -> None:
    q, k, v = qkv(dtype=dtype)
    mask = MASKS[mask_kind]()
    if mask is not None and mask.is_floating_point():
        mask = mask.to(dtype)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    torch.testing.assert_close(got, expected)
    assert got.dtype == dtype and weights.shape == (B, H, T, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T, dtype=dtype))
    if mask is not None and mask.dtype == torch.bool:
        assert (weights[~mask.expand(B, H, T, S)] == 0).all()


def test_sdpa_causal_matches_is_causal() -> None:
    q, k, v = qkv(s=T)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, causal_mask(T)), expected)


def test_sdpa_scale_and_unbatched() -> None:
    q, k, v = qkv()
    expected = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, scale=0.3), expected)
    # no leading dimensions at all: (T, d)
    got = scaled_dot_product_attention(q[0, 0], k[0, 0], v[0, 0])
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q[0, 0], k[0, 0], v[0, 0]))


def test_sdpa_is_the_formula() -> None:
    q, k, v = qkv(dtype=torch.float64)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D), dim=-1)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v), weights @ v)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_row_gives_zero_like_torch(kind: str) -> None:
    q, k, v = qkv()
    mask = torch.ones(T, S, dtype=torch.bool)
    mask[2] = False
    if kind == "float":
        mask = torch.zeros(T, S).masked_fill(~mask, float("-inf"))
    out, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert not out.isnan().any()
    assert (out[..., 2, :] == 0).all() and (weights[..., 2, :] == 0).all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_torch_mask_conventions_quoted_in_chapter_2() -> None:
    """SDPA's bool mask is True where attention is allowed, nn.MultiheadAttention's where it is not;
    a fully masked query gets zeros from SDPA and NaN from nn.MultiheadAttention's weights path."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8)
    keep = causal_mask(4)
    keep_dead = keep.clone()
    keep_dead[1] = False
    ours = scaled_dot_product_attention(x, x, x, keep)
    torch.testing.assert_close(F.scaled_dot_product_attention(x, x, x, attn_mask=keep), ours)
    sdpa_dead = F.scaled_dot_product_attention(x, x, x, attn_mask=keep_dead)
    assert (sdpa_dead[:, 1] == 0).all() and not sdpa_dead.isnan().any()
    mha = torch.nn.MultiheadAttention(8, 1, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.eye(8).repeat(3, 1))
        mha.out_proj.weight.copy_(torch.eye(8))
        out, _ = mha(x, x, x, attn_mask=~keep)  # True = NOT allowed
        torch.testing.assert_close(out, ours)
        dead, _ = mha(x, x, x, attn_mask=~keep_dead)
    assert dead[:, 1].isnan().all() and not dead[:, [0, 2, 3]].isnan().any()


def test_scaling_keeps_unit_variance() -> None:
    """With unit-variance q and k, Var(q.k) = d_k and Var(q.k / sqrt(d_k)) = 1."""
    g = torch.Generator().manual_seed(0)
    d_k = 256
    q, k = torch.randn(64, 1, d_k, generator=g), torch.randn(64, 128, d_k, generator=g)
    scores = attention_scores(q, k)  # (64, 1, 128)
    assert abs(scores.var().item() - 1.0) < 0.1
    assert abs((q @ k.transpose(-2, -1)).var().item() / d_k - 1.0) < 0.1


def test_causal_mask() -> None:
    assert torch.equal(causal_mask(4), torch.ones(4, 4).tril().bool())
    assert torch.equal(causal_mask(3, 5), torch.ones(3, 5).tril().bool())
    assert causal_mask(3, device="meta").device.type == "meta"
    with pytest.raises(ValueError, match="T"):
        causal_mask(0)


@pytest.mark.parametrize(
    "change, exc, word",
    [
        (lambda q, k, v: (q, k[..., :-1], v), ValueError, "^k must"),
        (lambda q, k, v: (q, k, v[..., :-1, :]), ValueError, "^v must"),
        (lambda q, k, v: (q, k[:1], v[:1]), ValueError, "leading"),
        (lambda q, k, v: (q[0, 0, 0], k, v), ValueError, "^q must"),
        (lambda q, k, v: (q.long(), k, v), TypeError, "^q must"),
        (lambda q, k, v: (q, k.double(), v), TypeError, "dtype"),
        (lambda q, k, v: (q.numpy(), k, v), TypeError, "^q must"),
    ],
)
def test_sdpa_bad_inputs(change, exc, word) -> None:
    with pytest.raises(exc, match=word):
        scaled_dot_product_attention(*change(*qkv()))


def test_sdpa_bad_masks() -> None:
    q, k, v = qkv()
    with pytest.raises(ValueError, match="mask must broadcast"):
        scaled_dot_product_attention(q, k, v, torch.ones(S, T, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        scaled_dot_product_attention(q, k, v, torch.ones(3, B, H, T, S, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        scaled_dot_product_attention(q, k, v, torch.ones(T, S, dtype=torch.long))


def test_sdpa_on_meta() -> None:
    q, k, v = (t.to("meta") for t in qkv())
    out, weights = scaled_dot_product_attention(
        q, k, v, causal_mask(T, S, device="meta"), return_weights=True
    )
    assert out.device.type == "meta" and out.shape == (B, H, T, D + 1)
    assert weights.shape == (B, H, T, S)


def test_split_and_merge_heads() -> None:
    x = torch.randn(B, T, 12)
    z = split_heads(x, 3)
    assert z.shape == (B, T, 3, 4)
    assert torch.equal(z[:, :, 1], x[:, :, 4:8])
    assert torch.equal(merge_heads(z), x)
    with pytest.raises(ValueError, match="n_heads"):
        split_heads(x, 5)
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        split_heads(x[0], 3)
    with pytest.raises(ValueError, match="z must have 4 dimensions"):
        merge_heads(x)


def copy_to_torch_mha(mha: MultiHeadAttention) -> torch.nn.MultiheadAttention:
    ref = torch.nn.MultiheadAttention(mha.d_model, mha.n_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(mha.c_attn.weight)  # rows: W_Q, W_K, W_V stacked
        ref.in_proj_bias.copy_(mha.c_attn.bias)
        ref.out_proj.weight.copy_(mha.c_proj.weight)
        ref.out_proj.bias.copy_(mha.c_proj.bias)
    return ref.eval()


@pytest.mark.parametrize("causal", [True, False])
def test_mha_matches_torch_multihead_attention(causal: bool) -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3, causal=causal)
    ref = copy_to_torch_mha(mha)
    x = torch.randn(B, T, 12)
    # torch.nn.MultiheadAttention's attn_mask is True where attention is NOT allowed
    attn_mask = ~causal_mask(T) if causal else None
    expected, ref_weights = ref(x, x, x, attn_mask=attn_mask, average_attn_weights=False)
    torch.testing.assert_close(mha(x), expected)
    # the explicit path (taken when the pattern is observed) gives the same pattern
    patterns = []
    mha.hook_pattern.add_hook(lambda p, hook: patterns.append(p))
    torch.testing.assert_close(mha(x), expected)
    torch.testing.assert_close(patterns[0], ref_weights)
    mha.hook_pattern.remove_hooks()
    assert not mha.hook_pattern.has_hooks


def test_mha_padding_mask_matches_torch() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 4, causal=False)
    ref = copy_to_torch_mha(mha)
    x = torch.randn(B, T, 12)
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[0, 3:] = False  # sequence 0 is padded after 3 tokens
    expected, _ = ref(x, x, x, key_padding_mask=~keep)
    got = mha(x, mask=keep[:, None, None, :])  # (batch, 1, 1, key_pos)
    torch.testing.assert_close(got, expected)


def test_mha_padding_and_causal_combined() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, causal=True)
    x = torch.randn(B, T, 8)
    keep = torch.ones(B, 1, 1, T, dtype=torch.bool)
    keep[1, ..., 0] = False
    q, k, v = (split_heads(t, 2).transpose(1, 2) for t in mha.c_attn(x).split(8, dim=-1))
    z = scaled_dot_product_attention(q, k, v, keep & causal_mask(T))  # row 0 of batch 1: empty
    expected = mha.c_proj(merge_heads(z.transpose(1, 2)))
    torch.testing.assert_close(mha(x, mask=keep), expected)


def test_mha_per_head_weights() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3)
    x = torch.randn(B, T, 12)
    seen = {}
    for name in ("hook_q", "hook_k", "hook_v", "hook_z"):
        getattr(mha, name).add_hook(lambda a, hook, name=name: seen.__setitem__(name, a))
    out = mha(x)
    b_q, b_k, b_v = mha.c_attn.bias.view(3, 3, 4)  # (3, n_heads, d_head)
    torch.testing.assert_close(seen["hook_q"], torch.einsum("bpd,hde->bphe", x, mha.W_Q) + b_q)
    torch.testing.assert_close(seen["hook_k"], torch.einsum("bpd,hde->bphe", x, mha.W_K) + b_k)
    torch.testing.assert_close(seen["hook_v"], torch.einsum("bpd,hde->bphe", x, mha.W_V) + b_v)
    per_head = torch.einsum("bphe,hed->bpd", seen["hook_z"], mha.W_O)
    torch.testing.assert_close(out, per_head + mha.c_proj.bias)


def test_mha_bad_inputs() -> None:
    with pytest.raises(ValueError, match="d_model must be divisible by n_heads"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="n_heads"):
        MultiHeadAttention(10, 0)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., \*, \*, 8\)"):
        mha(torch.randn(B, T, 6))
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        mha(torch.randn(T, 8))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        mha(torch.randn(B, T, 8), mask=torch.ones(T, T))
    with pytest.raises(ValueError, match="mask must broadcast"):
        mha(torch.randn(B, T, 8), mask=torch.ones(T + 1, T, dtype=torch.bool))


def test_mha_on_meta() -> None:
    mha = MultiHeadAttention(8, 2).to("meta")
    x = torch.empty(B, T, 8, device="meta")
    assert mha(x).shape == (B, T, 8)
    mha.hook_pattern.add_hook(lambda p, hook: None)  # the explicit path builds a causal mask
    assert mha(x, mask=torch.ones(B, 1, 1, T, dtype=torch.bool, device="meta")).shape == (B, T, 8)


def test_hookpoint_replacement_checked() -> None:
    point = HookPoint()
    point.name = "here"
    point.add_hook(lambda a, hook: a[:1])
    with pytest.raises(ValueError, match="'here' must return shape"):
        point(torch.zeros(2, 3))
    point.remove_hooks()
    point.add_hook(lambda a, hook: 3.0)
    with pytest.raises(TypeError, match="tensor or None"):
        point(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="callable"):
        point.add_hook("not a function")
