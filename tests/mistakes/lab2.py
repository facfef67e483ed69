"""Lab 2 (attention and transformers): realistic wrong answers and valid alternatives.

``MISTAKES[exercise]`` lists ``(name, function, hint)``: the hint is a substring the check's
message must contain. ``VALID[exercise]`` lists ``(name, function)``. For ``split_heads`` (exercise
3, two functions) each entry is a ``split_heads`` whose namespace holds the matching
``merge_heads`` (:func:`with_merge`), as in a notebook. ``self_attention`` and ``block_forward`` call
``attention``, ``causal_mask``, ``split_heads``, ``merge_heads`` and ``self_attention`` by their
global names, as a student's notebook does; the check and the rubric bind labcore's references
under these names during the call.
"""

from __future__ import annotations

import math
import types

import numpy as np
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- solutions
def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    return weights @ v, weights


def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def split_heads(x, n_heads):
    batch, pos, d_model = x.shape
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
    return x.reshape(batch, pos, n_heads, d_model // n_heads)


def merge_heads(z):
    batch, pos, n_heads, d_head = z.shape
    return z.reshape(batch, pos, n_heads * d_head)


def self_attention(x, attn):
    q, k, v = attn.c_attn(x).split(attn.d_model, dim=-1)
    q, k, v = (split_heads(t, attn.n_heads).transpose(1, 2) for t in (q, k, v))
    z, _ = attention(q, k, v, causal_mask(x.shape[1], device=x.device))
    return attn.c_proj(merge_heads(z.transpose(1, 2)))


def _ln(h, m, eps=None):
    return F.layer_norm(h, (h.shape[-1],), m.weight, m.bias, m.eps if eps is None else eps)


def block_forward(x, block):
    mlp = block.mlp
    mid = x + self_attention(_ln(x, block.ln1), block.attn)
    return mid + mlp.c_proj(F.gelu(mlp.c_fc(_ln(mid, block.ln2)), approximate="tanh"))


def attention_to(pattern, query_pos, key_pos):
    return pattern[torch.arange(pattern.shape[0], device=pattern.device), :, query_pos, key_pos]


def ablate_head(model, tokens, layer, head):
    def zero(z, hook):
        z[:, :, head] = 0.0
        return z

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])


def with_merge(split, merge):
    """``split`` with ``merge`` as ``merge_heads`` in its namespace (the check reads it there)."""
    space = dict(split.__globals__)
    space["merge_heads"] = merge
    return types.FunctionType(split.__code__, space, split.__name__, split.__defaults__)


SOLUTIONS = {
    "attention": attention,
    "causal_mask": causal_mask,
    "split_heads": split_heads,
    "self_attention": self_attention,
    "block_forward": block_forward,
    "attention_to": attention_to,
    "ablate_head": ablate_head,
}


# ----------------------------------------------------------------------------- exercise 1
def _att(scale=True, dim=-1, mask_mode="ok", zero_dead=True):
    def fn(q, k, v, mask=None):
        d_k = q.shape[-1]
        scores = q @ k.transpose(-2, -1)
        if scale == "d":
            scores = scores / d_k
        elif scale:
            scores = scores / math.sqrt(d_k)
        if mask is not None and mask_mode == "ok":
            scores = scores.masked_fill(~mask, float("-inf"))
        elif mask is not None and mask_mode == "reversed":
            scores = scores.masked_fill(mask, float("-inf"))
        weights = torch.softmax(scores, dim=dim)
        if mask is not None and zero_dead and mask_mode == "ok":
            weights = weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)
        return weights @ v, weights

    return fn


def _att_in_place(q, k, v, mask=None):
    q /= math.sqrt(q.shape[-1])  # changes the caller's q
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, -1))
    return weights @ v, weights


def _att_swapped(q, k, v, mask=None):
    out, weights = attention(q, k, v, mask)
    return weights, out


def _att_only_out(q, k, v, mask=None):
    return attention(q, k, v, mask)[0]


def _att_keys(q, k, v, mask=None):
    _, weights = attention(q, k, v, mask)
    return weights @ k, weights


def _att_fused(q, k, v, mask=None):
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out, attention(q, k, v, mask)[1]


def _att_seeded(q, k, v, mask=None):
    torch.manual_seed(0)  # "for reproducibility"
    return attention(q, k, v, mask)


def _att_float(q, k, v, mask=None):
    out, weights = attention(q.float(), k.float(), v.float(), mask)
    return out, weights


def _att_einsum(q, k, v, mask=None):
    scores = torch.einsum("...td,...sd->...ts", q, k) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = torch.where(mask, scores, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    return torch.einsum("...ts,...sv->...tv", weights, v), weights


def _att_prescaled(q, k, v, mask=None):
    scores = (q / math.sqrt(q.shape[-1])) @ k.mT
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), -math.inf)
        alive = mask.any(dim=-1, keepdim=True)
        weights = torch.where(alive, torch.softmax(scores, -1), torch.zeros_like(scores))
    else:
        weights = scores.softmax(-1)
    return torch.matmul(weights, v), weights


def _att_manual_softmax(q, k, v, mask=None):
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, -torch.inf)
    top = scores.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(scores - top)
    total = e.sum(-1, keepdim=True)
    weights = e / torch.where(total > 0, total, torch.ones_like(total))
    return weights @ v, weights


# ----------------------------------------------------------------------------- exercise 2
def _mask_triu(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).triu()


def _mask_strict(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril(-1)


def _mask_inverted(T, device=None):
    return torch.arange(T, device=device)[:, None] < torch.arange(T, device=device)


def _mask_float(T, device=None):
    return torch.tril(torch.ones(T, T, device=device))


def _mask_no_device(T, device=None):
    return torch.ones(T, T, dtype=torch.bool).tril()


def _mask_numpy(T, device=None):
    return np.tril(np.ones((T, T), dtype=bool))


def _mask_arange(T, device=None):
    i = torch.arange(T, device=device)
    return i[None, :] <= i[:, None]


def _mask_not_triu(T, device=None):
    return ~torch.ones(T, T, dtype=torch.bool, device=device).triu(diagonal=1)


def _mask_tril_fn(T, device=None):
    return torch.tril(torch.ones((T, T), device=device)).bool()


# ----------------------------------------------------------------------------- exercise 3
def _split_transposed(x, n_heads):
    batch, pos, d_model = x.shape
    if d_model % n_heads:
        raise ValueError("d_model must be divisible by n_heads")
    return x.reshape(batch, n_heads, pos, d_model // n_heads).transpose(1, 2)


def _split_interleaved(x, n_heads):
    batch, pos, d_model = x.shape
    if d_model % n_heads:
        raise ValueError("d_model must be divisible by n_heads")
    return x.reshape(batch, pos, d_model // n_heads, n_heads).transpose(-1, -2)


def _split_no_check(x, n_heads):
    batch, pos, d_model = x.shape
    return x.reshape(batch, pos, n_heads, -1)


def _split_assert(x, n_heads):
    batch, pos, d_model = x.shape
    assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
    return x.reshape(batch, pos, n_heads, d_model // n_heads)


def _split_float(x, n_heads):
    return split_heads(x, n_heads).float()


def _merge_interleaved(z):
    return z.transpose(-1, -2).flatten(-2)


def _merge_no_reshape(z):
    return z.flatten(1, 2)


def _split_unflatten(x, n_heads):
    if x.shape[-1] % n_heads != 0:
        raise ValueError("n_heads must divide d_model")
    return x.unflatten(-1, (n_heads, -1))


def _split_chunks(x, n_heads):
    if x.shape[-1] % n_heads:
        raise ValueError("n_heads must divide d_model")
    return torch.stack(x.chunk(n_heads, dim=-1), dim=-2)


def _merge_cat(z):
    return torch.cat(z.unbind(dim=-2), dim=-1)


def _merge_view(z):
    return z.contiguous().view(*z.shape[:-2], -1)


# ----------------------------------------------------------------------------- exercise 4
def _sa(mask=True, proj=True, order="qkv", transpose=True):
    def fn(x, attn):
        q, k, v = attn.c_attn(x).split(attn.d_model, dim=-1)
        if order == "kqv":
            k, q, v = q, k, v
        q, k, v = (split_heads(t, attn.n_heads) for t in (q, k, v))
        if transpose:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        m = causal_mask(x.shape[1], device=x.device) if mask else None
        z, _ = attention(q, k, v, m)
        if transpose:
            z = z.transpose(1, 2)
        out = merge_heads(z)
        return attn.c_proj(out) if proj else out

    return fn


def _sa_dmodel_scale(x, attn):
    q, k, v = attn.c_attn(x).split(attn.d_model, dim=-1)
    q, k, v = (split_heads(t, attn.n_heads).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(attn.d_model)
    mask = causal_mask(x.shape[1], device=x.device)
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return attn.c_proj(merge_heads((weights @ v).transpose(1, 2)))


def _sa_calls_module(x, attn):
    return attn(x)


def _sa_fused(x, attn):
    q, k, v = attn.c_attn(x).split(attn.d_model, dim=-1)
    q, k, v = (split_heads(t, attn.n_heads).transpose(1, 2) for t in (q, k, v))
    z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return attn.c_proj(merge_heads(z.transpose(1, 2)))


def _sa_explicit(x, attn):
    W, b = attn.c_attn.weight, attn.c_attn.bias
    qkv = x @ W.T + b
    d, h = attn.d_model, attn.n_heads
    q, k, v = (qkv[..., i * d : (i + 1) * d] for i in range(3))
    q, k, v = (split_heads(t, h).permute(0, 2, 1, 3) for t in (q, k, v))
    z, _ = attention(q, k, v, causal_mask(x.shape[1], x.device))
    return F.linear(merge_heads(z.permute(0, 2, 1, 3)), attn.c_proj.weight, attn.c_proj.bias)


def _sa_per_head(x, attn):
    q, k, v = attn.c_attn(x).chunk(3, dim=-1)
    d_head = attn.d_model // attn.n_heads
    mask = causal_mask(x.shape[1], device=x.device)
    heads = []
    for h in range(attn.n_heads):
        part = slice(h * d_head, (h + 1) * d_head)
        z, _ = attention(q[..., part], k[..., part], v[..., part], mask)
        heads.append(z)
    return attn.c_proj(torch.cat(heads, dim=-1))


def _sa_einsum(x, attn):
    q, k, v = attn.c_attn(x).split(attn.d_model, dim=-1)
    q, k, v = (split_heads(t, attn.n_heads) for t in (q, k, v))  # (batch, pos, h, d_head)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    mask = causal_mask(x.shape[1], device=x.device)
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    z = torch.einsum("bhqk,bkhd->bqhd", weights, v)
    return attn.c_proj(merge_heads(z))


# ----------------------------------------------------------------------------- exercise 5
def _blk(gelu="tanh", pre=True, residual=True, mlp_input="mid", eps=None):
    def fn(x, block):
        mlp = block.mlp

        def ffn(h):
            return mlp.c_proj(F.gelu(mlp.c_fc(h), approximate=gelu))

        if not pre:
            mid = _ln(x + self_attention(x, block.attn), block.ln1)
            return _ln(mid + ffn(mid), block.ln2)
        a = self_attention(_ln(x, block.ln1, eps), block.attn)
        if not residual:
            return ffn(_ln(a, block.ln2, eps))
        mid = x + a
        return mid + ffn(_ln(mid if mlp_input == "mid" else x, block.ln2, eps))

    return fn


def _blk_no_affine(x, block):
    d = x.shape[-1]
    mid = x + self_attention(F.layer_norm(x, (d,), eps=block.ln1.eps), block.attn)
    h = F.layer_norm(mid, (d,), eps=block.ln2.eps)
    return mid + block.mlp.c_proj(F.gelu(block.mlp.c_fc(h), approximate="tanh"))


def _blk_calls_ln(x, block):
    mid = x + self_attention(block.ln1(x), block.attn)
    return mid + block.mlp.c_proj(F.gelu(block.mlp.c_fc(block.ln2(mid)), approximate="tanh"))


def _blk_unbiased_var(x, block):
    def ln(h, m):
        mu = h.mean(-1, keepdim=True)
        var = h.var(-1, keepdim=True)  # unbiased: divides by d - 1
        return (h - mu) / torch.sqrt(var + m.eps) * m.weight + m.bias

    mid = x + self_attention(ln(x, block.ln1), block.attn)
    return mid + block.mlp.c_proj(F.gelu(block.mlp.c_fc(ln(mid, block.ln2)), approximate="tanh"))


def _blk_manual(x, block):
    def ln(h, m):
        mu = h.mean(-1, keepdim=True)
        var = ((h - mu) ** 2).mean(-1, keepdim=True)
        return (h - mu) / torch.sqrt(var + m.eps) * m.weight + m.bias

    def gelu(h):
        return 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))

    fc, proj = block.mlp.c_fc, block.mlp.c_proj
    mid = x + self_attention(ln(x, block.ln1), block.attn)
    return mid + gelu(ln(mid, block.ln2) @ fc.weight.T + fc.bias) @ proj.weight.T + proj.bias


def _blk_linear(x, block):
    ln1, ln2, mlp = block.ln1, block.ln2, block.mlp
    d = (x.shape[-1],)
    h = x + self_attention(F.layer_norm(x, d, ln1.weight, ln1.bias, ln1.eps), block.attn)
    u = F.linear(F.layer_norm(h, d, ln2.weight, ln2.bias, ln2.eps), mlp.c_fc.weight, mlp.c_fc.bias)
    return h + F.linear(F.gelu(u, approximate="tanh"), mlp.c_proj.weight, mlp.c_proj.bias)


def _blk_sum(x, block):
    attn_out = self_attention(_ln(x, block.ln1), block.attn)
    mid = torch.add(x, attn_out)
    mlp_out = block.mlp.c_proj(F.gelu(block.mlp.c_fc(_ln(mid, block.ln2)), approximate="tanh"))
    return torch.add(mid, mlp_out)


# ----------------------------------------------------------------------------- exercise 6
def _to_pairs(pattern, query_pos, key_pos):
    return pattern[:, :, query_pos, key_pos]


def _to_swapped(pattern, query_pos, key_pos):
    return pattern[torch.arange(pattern.shape[0]), :, key_pos, query_pos]


def _to_list(pattern, query_pos, key_pos):
    return [pattern[b, :, query_pos[b], key_pos[b]] for b in range(pattern.shape[0])]


def _to_float(pattern, query_pos, key_pos):
    return attention_to(pattern, query_pos, key_pos).float()


def _to_head_mean(pattern, query_pos, key_pos):
    return attention_to(pattern, query_pos, key_pos).mean(-1)


def _to_permute(pattern, query_pos, key_pos):
    rows = torch.arange(len(query_pos), device=pattern.device)
    return pattern.permute(0, 2, 3, 1)[rows, query_pos, key_pos]  # (batch, n_heads)


def _to_gather(pattern, query_pos, key_pos):
    batch, n_heads, pos, _ = pattern.shape
    rows = pattern.gather(2, query_pos.view(batch, 1, 1, 1).expand(batch, n_heads, 1, pos))
    return rows.gather(3, key_pos.view(batch, 1, 1, 1).expand(batch, n_heads, 1, 1))[..., 0, 0]


def _to_diagonal(pattern, query_pos, key_pos):
    return pattern[:, :, query_pos, key_pos].diagonal(dim1=0, dim2=2).T


# ----------------------------------------------------------------------------- exercise 7
def _abl_all(model, tokens, layer, head):
    def zero(z, hook):
        return torch.zeros_like(z)

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])


def _abl_position(model, tokens, layer, head):
    def zero(z, hook):
        z[:, head] = 0.0
        return z

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])


def _abl_layer0(model, tokens, layer, head):
    def zero(z, hook):
        z[:, :, head] = 0.0
        return z

    return model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", zero)])


def _abl_head0(model, tokens, layer, head):
    def zero(z, hook):
        z[:, :, 0] = 0.0
        return z

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])


def _abl_copy_unused(model, tokens, layer, head):
    def zero(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0  # modifies a copy and returns nothing: the activation is kept

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])


def _abl_hook_left(model, tokens, layer, head):
    def zero(z, hook):
        z[:, :, head] = 0.0
        return z

    model.blocks[layer].attn.hook_z.add_hook(zero)
    return model(tokens)


def _abl_weights(model, tokens, layer, head):
    attn = model.blocks[layer].attn
    d_head = attn.d_model // attn.n_heads
    attn.c_proj.weight[:, head * d_head : (head + 1) * d_head] = 0.0  # changes the model for good
    return model(tokens)


def _abl_clone(model, tokens, layer, head):
    def zero(z, hook):
        z = z.clone()
        z[..., head, :] = 0
        return z

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])


def _abl_context(model, tokens, layer, head):
    keep = torch.ones(model.config.n_head, 1)
    keep[head] = 0.0

    def scale(z, hook):
        return z * keep.to(z)

    with model.hooks([(f"blocks.{layer}.attn.hook_z", scale)]):
        return model(tokens)


def _abl_predicate(model, tokens, layer, head):
    def zero(z, hook):
        z[:, :, head, :] = 0.0

    name = f"blocks.{layer}.attn.hook_z"
    return model.run_with_hooks(tokens, fwd_hooks=[(lambda n: n == name, zero)])


# ----------------------------------------------------------------------------- the catalogue
MISTAKES = {
    "attention": [
        ("no 1/sqrt(d_k) scale", _att(scale=False), "scaled by 1/sqrt(d_k)"),
        ("divides by d_k", _att(scale="d"), "not d_k itself"),
        ("softmax over the queries (dim=-2)", _att(dim=-2), "over the keys"),
        ("mask read the wrong way round", _att(mask_mode="reversed"), "is True where attention"),
        ("mask ignored", _att(mask_mode="ignored"), "before the softmax"),
        ("NaN in a row whose keys are all masked", _att(zero_dead=False), "0/0 = NaN"),
        ("scales q in place", _att_in_place, "modified its input 'q'"),
        ("returns (weights, out)", _att_swapped, "should have shape"),
        ("returns only out", _att_only_out, "expected a pair (out, weights)"),
        ("out = weights @ k", _att_keys, "not the keys"),
        ("calls torch's fused attention", _att_fused, "written from its formula"),
        ("reseeds the global RNG", _att_seeded, "global random state"),
        ("casts to float32", _att_float, "should have dtype torch.float64"),
    ],
    "causal_mask": [
        ("upper triangle", _mask_triu, "the lower triangle"),
        ("diagonal excluded", _mask_strict, "the diagonal is allowed"),
        ("True on the masked keys", _mask_inverted, "not the masked ones"),
        ("a float mask", _mask_float, "bool tensor"),
        ("ignores device", _mask_no_device, "device="),
        ("a NumPy array", _mask_numpy, "should be a torch.Tensor"),
    ],
    "split_heads": [
        ("reshape to (batch, n_heads, pos, d_head)", _split_transposed, "mixes positions"),
        ("heads interleaved feature by feature", _split_interleaved, "contiguous block"),
        ("no ValueError (reshape with -1)", _split_no_check, "expected a ValueError"),
        ("assert instead of ValueError", _split_assert, "expected a ValueError"),
        ("casts to float32", _split_float, "should have dtype torch.float64"),
        (
            "merge_heads interleaves the heads",
            with_merge(split_heads, _merge_interleaved),
            "side by side",
        ),
        ("merge_heads flattens pos and heads", with_merge(split_heads, _merge_no_reshape), "shape"),
    ],
    "self_attention": [
        ("no causal mask", _sa(mask=False), "causal"),
        ("scaled by sqrt(d_model)", _sa_dmodel_scale, "not of d_model"),
        ("no c_proj", _sa(proj=False), "output projection"),
        ("keys and queries swapped", _sa(order="kqv"), "queries, keys, values in that order"),
        ("head axis not moved before pos", _sa(transpose=False), "shape error"),
        ("calls attn(x)", _sa_calls_module, "from the weights"),
        ("torch's fused attention", _sa_fused, "written from its formula"),
    ],
    "block_forward": [
        ("exact GELU", _blk(gelu="none"), "tanh approximation"),
        ("post-LayerNorm", _blk(pre=False), "pre-LayerNorm"),
        ("no residual connections", _blk(residual=False), "added to the residual stream"),
        ("MLP reads LN2(x)", _blk(mlp_input="x"), "after the attention has been added"),
        ("default LayerNorm eps", _blk(eps=1e-5), "own eps"),
        ("LayerNorm without gain and bias", _blk_no_affine, "own weight"),
        ("calls block.ln1 and block.ln2", _blk_calls_ln, "from the weights"),
        ("unbiased variance in LayerNorm", _blk_unbiased_var, "values differ"),
    ],
    "attention_to": [
        ("pattern[:, :, query_pos, key_pos]", _to_pairs, "element by element"),
        ("query and key positions swapped", _to_swapped, "query_pos indexes the third axis"),
        ("a list of tensors", _to_list, "should be a torch.Tensor"),
        ("casts to float32", _to_float, "should have dtype torch.float64"),
        ("averages over heads", _to_head_mean, "should have shape"),
    ],
    "ablate_head": [
        ("zeroes every head", _abl_all, "only one head is ablated"),
        ("zeroes a position (second axis)", _abl_position, "the second axis is the position"),
        ("always layer 0", _abl_layer0, "another layer"),
        ("always head 0", _abl_head0, "not the head given by the argument"),
        ("hook modifies a copy and returns nothing", _abl_copy_unused, "unablated logits"),
        ("hook left attached", _abl_hook_left, "a hook is still attached"),
        ("zeroes c_proj's weights in place", _abl_weights, "changed the weights"),
    ],
}

VALID = {
    "attention": [
        ("einsum, torch.where and nan_to_num", _att_einsum),
        ("q scaled first, torch.where for dead rows", _att_prescaled),
        ("softmax by hand (max-shifted exp)", _att_manual_softmax),
    ],
    "causal_mask": [
        ("arange comparison", _mask_arange),
        ("not the strict upper triangle", _mask_not_triu),
        ("tril of ones, then bool", _mask_tril_fn),
    ],
    "split_heads": [
        ("unflatten", with_merge(_split_unflatten, merge_heads)),
        ("stack of chunks, cat of unbind", with_merge(_split_chunks, _merge_cat)),
        ("reshape, then view", with_merge(split_heads, _merge_view)),
    ],
    "self_attention": [
        ("explicit matmuls and permute", _sa_explicit),
        ("a loop over heads", _sa_per_head),
        ("einsum without moving the head axis", _sa_einsum),
    ],
    "block_forward": [
        ("LayerNorm and GELU from their formulas", _blk_manual),
        ("F.linear", _blk_linear),
        ("torch.add", _blk_sum),
    ],
    "attention_to": [
        ("heads moved last, then indexed", _to_permute),
        ("gather", _to_gather),
        ("diagonal of the all-pairs result", _to_diagonal),
    ],
    "ablate_head": [
        ("clone in the hook, ellipsis", _abl_clone),
        ("model.hooks context and a 0/1 scale", _abl_context),
        ("name predicate, in place, returns None", _abl_predicate),
    ],
}
