"""Checks for lab 2, attention and transformers (``labs/02-attention.ipynb``).

One check per exercise, and **one acceptance rule** per exercise shared with the grader: the
notebook check and the rubric (:mod:`labcore.rubrics.attention`) call the student's function through
the same kernel-side source (:data:`CALL_SOURCE`, :data:`SPLIT_CALL_SOURCE`,
:data:`MODULE_CALL_SOURCE`, :data:`ABLATE_CALL_SOURCE`) and judge what came back with the same
function (:func:`judge`), so they cannot disagree. A rule covers the return type, shape, dtype and
device (the input's; ``causal_mask``, ``attention`` and ``attention_to`` also run on ``meta``
tensors, which catches a tensor created on the default device without a GPU), the values against
labcore's reference, inputs (and the model) left unchanged, the global RNG and the default dtype
left untouched.

While the student's function runs, torch's and labcore's fused attention raise (the exercises ask
for attention from its formula), and the modules' own ``forward`` raises (exercises 4 and 5 ask for
the computation from the weights). **Each exercise is graded on its own**: ``self_attention`` runs
with labcore's ``attention``, ``causal_mask``, ``split_heads`` and ``merge_heads`` bound under those
names in the student's namespace during the call (restored afterwards), and ``block_forward`` with
labcore's ``self_attention`` too, so that one mistake costs points once. The checks themselves
never touch the global RNG (local generators; modules are built inside ``fork_rng``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import labcore
from labcore import attention as ref
from labcore.checks import rules, run_judged
from labcore.transformer import GPT, Block, GPTConfig

__all__ = [
    "CALL_SOURCE",
    "SPLIT_CALL_SOURCE",
    "MODULE_CALL_SOURCE",
    "ABLATE_CALL_SOURCE",
    "EXERCISES",
    "CASES",
    "judge",
    "call_function",
    "check_attention",
    "check_causal_mask",
    "check_split_merge_heads",
    "check_self_attention",
    "check_block_forward",
    "check_attention_to",
    "check_ablate_head",
]

Tensor = torch.Tensor
F64 = torch.float64

# ----------------------------------------------------------------------------- kernel-side calls
#: Shared preamble of the call sources: the fused attention made to raise, labcore's references
#: of exercises 1-4 (bound in the student's namespace where an exercise calls an earlier one), and
#: the report of what the call changed (global RNG, default dtype).
_PREAMBLE = '''
import contextlib

import torch
import torch.nn.functional as F

import labcore.attention as _la
from labcore.checks.rules import (
    changed,
    copies,
    on_meta,
    reference_in_place,
    watch_global_state,
    what_raised,
)

_SDPA = _la.scaled_dot_product_attention  # the original, captured before it is forbidden


def _stub(message):
    def forbidden(*args, **kwargs):
        raise RuntimeError(message)

    return forbidden


@contextlib.contextmanager
def _no_fused_attention():
    text = ("this exercise asks for attention written from its formula; do not call {} "
            "(the check compares your result with it)")
    saved = F.scaled_dot_product_attention, _la.scaled_dot_product_attention
    F.scaled_dot_product_attention = _stub(text.format(
        "torch.nn.functional.scaled_dot_product_attention"))
    _la.scaled_dot_product_attention = _stub(text.format(
        "labcore.attention.scaled_dot_product_attention"))
    try:
        yield
    finally:
        F.scaled_dot_product_attention, _la.scaled_dot_product_attention = saved


def _ref_attention(q, k, v, mask=None):
    return _SDPA(q, k, v, mask, return_weights=True)


def _ref_causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def _ref_split_heads(x, n_heads):
    if x.shape[-1] % n_heads:
        raise ValueError("d_model must be divisible by n_heads")
    return x.unflatten(-1, (n_heads, x.shape[-1] // n_heads))


def _ref_merge_heads(z):
    return z.flatten(-2)


def _ref_self_attention(x, attn):
    q, k, v = attn.c_attn(x).split(attn.d_model, dim=-1)
    q, k, v = (_ref_split_heads(t, attn.n_heads).transpose(1, 2) for t in (q, k, v))
    z, _ = _ref_attention(q, k, v, _ref_causal_mask(x.shape[1], device=x.device))
    return attn.c_proj(_ref_merge_heads(z.transpose(1, 2)))


_REFERENCES = {"attention": _ref_attention, "causal_mask": _ref_causal_mask,
               "split_heads": _ref_split_heads, "merge_heads": _ref_merge_heads,
               "self_attention": _ref_self_attention}


def _bound(fn, names):
    """labcore's references under ``names`` in ``fn``'s namespace during the call."""
    return reference_in_place(fn, {name: _REFERENCES[name] for name in names})
'''

#: ``attention``, ``causal_mask``, ``attention_to``: positional ``spec["args"]``, keyword
#: ``spec["kwargs"]``; with ``spec["meta"]`` the function also runs on ``meta`` tensors (for
#: ``causal_mask``: with ``device="meta"``).
CALL_SOURCE = (
    _PREAMBLE
    + """

def call(fn, spec):
    args = list(spec["args"])
    kwargs = dict(spec.get("kwargs", {}))
    before = copies(args)
    with watch_global_state() as extra, _no_fused_attention(), torch.no_grad():
        value = fn(*args, **kwargs)
    extra["mutated"] = changed(args, before)
    if spec.get("meta"):
        if not any(isinstance(a, torch.Tensor) for a in args):
            kwargs["device"] = "meta"  # causal_mask(T, device=...)
        with _no_fused_attention(), torch.no_grad():
            extra["meta"] = on_meta(fn, *args, **kwargs)
    return value, extra
"""
)

#: ``split_heads`` (``fn``) and ``merge_heads`` (the argument ``merge``, else read from the
#: student's namespace): ``spec["op"]`` is ``split``, ``merge``, ``roundtrip`` or ``error`` (a
#: ``d_model`` not divisible by ``n_heads``: what was raised).
SPLIT_CALL_SOURCE = (
    _PREAMBLE
    + """

def call(fn, spec, merge=None):
    op, x = spec["op"], spec["x"]
    before = x.clone()
    if merge is None:
        merge = getattr(fn, "__globals__", {}).get("merge_heads")
    if op != "split" and op != "error" and not callable(merge):
        raise NameError("merge_heads is not defined")
    with watch_global_state() as extra:
        if op == "split":
            value = fn(x, spec["n_heads"])
        elif op == "merge":
            value = merge(x)
        elif op == "roundtrip":
            value = merge(fn(x, spec["n_heads"]))
        else:
            value = what_raised(fn, x, spec["n_heads"])
    extra["mutated"] = changed([x], [before])
    return value, extra
"""
)

#: ``self_attention`` and ``block_forward``: the module is rebuilt from ``spec["config"]`` and
#: ``spec["state"]`` (inside ``fork_rng``) on ``spec["device"]``; its ``forward`` (and its
#: sublayers') raises; labcore's references of the earlier exercises are bound under their names.
MODULE_CALL_SOURCE = (
    _PREAMBLE
    + """

def call(fn, spec):
    from labcore.attention import MultiHeadAttention
    from labcore.transformer import Block, GPTConfig

    device = spec.get("device") or "cpu"
    x = spec["x"].to(device)
    config = spec["config"]
    with torch.random.fork_rng(devices=[]):
        if spec["kind"] == "self_attention":
            module = MultiHeadAttention(config["d_model"], config["n_heads"])
        else:
            module = Block(GPTConfig(**config))
    module = module.to(x.dtype)
    module.load_state_dict(spec["state"])
    module = module.to(device)
    if spec["kind"] == "self_attention":
        forbidden = [module]
        message = ("compute the attention from the weights; do not call attn itself (the check "
                   "compares your result with attn(x))")
        names = ["attention", "causal_mask", "split_heads", "merge_heads"]
    else:
        forbidden = [module, module.attn, module.mlp, module.ln1, module.ln2]
        message = ("compute the block from the weights; do not call the block, its attention, MLP "
                   "or LayerNorm modules (the check compares your result with block(x))")
        names = ["attention", "causal_mask", "split_heads", "merge_heads", "self_attention"]
    for m in forbidden:
        m.forward = _stub(message)
    before = x.clone()
    with watch_global_state() as extra, _bound(fn, names), _no_fused_attention(), torch.no_grad():
        value = fn(x, module)
    extra["mutated"] = changed([x], [before])
    extra["params_changed"] = any(not torch.equal(p.detach().cpu(), spec["state"][n])
                                  for n, p in module.state_dict().items())
    return value, extra
"""
)

#: ``ablate_head``: the GPT is rebuilt from ``spec["config"]`` and ``spec["state"]``; the call
#: reports a hook left attached, changed tokens and changed weights.
ABLATE_CALL_SOURCE = (
    _PREAMBLE
    + """

def call(fn, spec):
    from labcore.transformer import GPT, GPTConfig

    device = spec.get("device") or "cpu"
    with torch.random.fork_rng(devices=[]):
        model = GPT(GPTConfig(**spec["config"]))
    model.load_state_dict(spec["state"])
    model = model.to(device).eval()
    tokens = spec["tokens"].to(device)
    before = tokens.clone()
    with torch.no_grad():
        clean = model(tokens)
    with watch_global_state() as extra, torch.no_grad():
        value = fn(model, tokens, spec["layer"], spec["head"])
    with torch.no_grad():
        after = model(tokens)
    extra["mutated"] = [1 + i for i in changed([tokens], [before])]  # fn(model, tokens, ...)
    extra["params_changed"] = any(not torch.equal(p.detach().cpu(), spec["state"][n])
                                  for n, p in model.state_dict().items())
    extra["hook_left"] = (not extra["params_changed"]) and not torch.equal(after, clean)
    if hasattr(model, "reset_hooks"):
        model.reset_hooks()
    return value, extra
"""
)


_SOURCES = (CALL_SOURCE, SPLIT_CALL_SOURCE, MODULE_CALL_SOURCE, ABLATE_CALL_SOURCE)
_CALLS = {source: rules.compile_call(source) for source in _SOURCES}


# ----------------------------------------------------------------------------- exercise 1
def _rule_attention(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    q, k, v, mask = spec["args"]
    problem = rules.common(extra, ["q", "k", "v", "mask"])
    if problem:
        return problem
    if not isinstance(got, list | tuple) or len(got) != 2:
        return (
            f"expected a pair (out, weights), got {rules.short(got)}\n  hint: the statement asks for "
            "both the output and the attention weights, in that order"
        )
    out, weights = got
    q64, k64, v64 = (t.detach().cpu().to(F64) for t in (q, k, v))
    m = None if mask is None else mask.cpu()
    out_ref, w_ref = ref.scaled_dot_product_attention(q64, k64, v64, m, return_weights=True)
    d_k = q.shape[-1]
    scores = q64 @ k64.transpose(-2, -1)

    def masked(s: Tensor) -> Tensor:
        return s if m is None else s.masked_fill(~m, float("-inf"))

    def soft(s: Tensor, dim: int = -1) -> Tensor:
        return torch.nan_to_num(torch.softmax(s, dim=dim), nan=0.0)

    diagnoses: dict[str, Callable[[], Tensor]] = {}
    if m is not None and not m.any(-1).all():
        diagnoses[
            "a query whose keys are all masked gets softmax(-inf, ..., -inf) = 0/0 = NaN; the "
            "exercise asks for zero weights (and so a zero output) in such a row"
        ] = lambda: torch.softmax(masked(scores / math.sqrt(d_k)), dim=-1)
    diagnoses |= {
        "the scores must be scaled by 1/sqrt(d_k), d_k = the width of the queries and keys": (
            lambda: soft(masked(scores))
        ),
        "the scale is the square root of d_k, not d_k itself": lambda: soft(masked(scores / d_k)),
        "the softmax normalises over the keys (the last axis), so that each query's row sums "
        "to one": lambda: soft(masked(scores / math.sqrt(d_k)), dim=-2),
    }
    if m is not None:
        diagnoses[
            "the mask is True where attention is *allowed*: the masked scores (set to -inf) are "
            "where mask is False"
        ] = lambda: soft((scores / math.sqrt(d_k)).masked_fill(m, float("-inf")))
        diagnoses[
            "the mask acts on the scores before the softmax (masked scores get weight exactly 0)"
        ] = lambda: soft(scores / math.sqrt(d_k))
    problem = rules.tensor_rule(
        weights,
        w_ref,
        what="weights",
        dtype=q.dtype,
        device=q.device,
        hint="weights = softmax of the scaled scores over the keys, -inf where mask is False, a "
        "zero row where all keys are masked; shape (..., T, S)",
        diagnoses=diagnoses,
    )
    if problem:
        return problem
    problem = rules.tensor_rule(
        out,
        out_ref,
        what="out",
        dtype=q.dtype,
        device=q.device,
        hint="out = weights v, shape (..., T, d_v): each query's output is the weighted average "
        "of the values",
        diagnoses={
            "out is the weights times the values (v), not the keys": lambda: w_ref @ k64,
        },
    )
    return problem or rules.meta_rule(extra, 2)


# ----------------------------------------------------------------------------- exercise 2
def _rule_causal_mask(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    (T,) = spec["args"]
    device = spec.get("kwargs", {}).get("device") or "cpu"
    problem = rules.common(extra, ["T"])
    if problem:
        return problem
    expected = torch.ones(T, T, dtype=torch.bool).tril()
    if isinstance(got, Tensor) and got.dtype != torch.bool:
        return (
            f"the mask should be a bool tensor, got dtype {got.dtype}\n  hint: torch's "
            "convention is a bool mask, True where attention is allowed"
        )
    problem = rules.tensor_rule(
        got,
        expected,
        what="the mask",
        dtype=torch.bool,
        device=device,
        hint="mask[i, j] is True exactly when key j is not in the future of query i (j <= i)",
        diagnoses={
            "query i may see keys j <= i: the lower triangle, not the upper one": lambda: (
                expected.T
            ),
            "a token may attend to itself: the diagonal is allowed": lambda: (
                expected & ~torch.eye(T, dtype=torch.bool)
            ),
            "True marks the allowed keys (j <= i), not the masked ones": lambda: ~expected,
        },
    )
    return problem or rules.meta_rule(extra, 1)


# ----------------------------------------------------------------------------- exercise 3
def _rule_split(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    problem = rules.common(extra, ["x"])
    if problem:
        return problem
    op, x = spec["op"], spec["x"].cpu()
    if op == "error":
        if got != "ValueError":
            what = got if got == "returned normally" else f"raised {got}"
            return (
                f"split_heads with d_model = {x.shape[-1]}, n_heads = {spec['n_heads']}: "
                f"expected a ValueError, but it {what}\n  hint: check that d_model is divisible "
                "by n_heads yourself and raise ValueError with a message"
            )
        return None
    if op == "split":
        n = spec["n_heads"]
        batch, pos, d_model = x.shape
        expected = ref.split_heads(x, n)
        wrong = x.reshape(batch, n, pos, d_model // n)
        return rules.tensor_rule(
            got,
            expected,
            what=f"split_heads(x, {n})",
            dtype=x.dtype,
            device=spec["x"].device,
            exact=True,
            hint="(batch, pos, d_model) -> (batch, pos, n_heads, d_head): head h holds features "
            "h*d_head to (h+1)*d_head - 1 of each position",
            diagnoses={
                "reshaping x to (batch, n_heads, pos, d_head) mixes positions into heads: only the "
                "last axis is cut into (n_heads, d_head)": lambda: wrong.transpose(1, 2),
                "head h holds a contiguous block of d_head features, not every n_heads-th "
                "feature": lambda: x.reshape(batch, pos, d_model // n, n).transpose(-1, -2),
            },
        )
    expected = ref.merge_heads(x) if op == "merge" else x
    what = "merge_heads(z)" if op == "merge" else "merge_heads(split_heads(x)), which should be x,"
    return rules.tensor_rule(
        got,
        expected,
        what=what,
        dtype=x.dtype,
        device=spec["x"].device,
        exact=True,
        hint="merge_heads is the inverse of split_heads: (batch, pos, n_heads, d_head) -> "
        "(batch, pos, n_heads * d_head), the heads side by side along the last axis",
        diagnoses={
            "the heads go side by side (head 0's features first), not interleaved feature by "
            "feature": lambda: x.transpose(-1, -2).flatten(-2) if op == "merge" else x.flip(0),
        },
    )


# ----------------------------------------------------------------------------- exercises 4 and 5
def _module(spec: dict[str, Any]) -> torch.nn.Module:
    """The module of ``spec``, rebuilt in float64 on the CPU (global RNG untouched)."""
    config = spec["config"]
    with torch.random.fork_rng(devices=[]):
        if spec["kind"] == "self_attention":
            module: torch.nn.Module = ref.MultiHeadAttention(config["d_model"], config["n_heads"])
        else:
            module = Block(GPTConfig(**config))
    module = module.to(F64)
    module.load_state_dict({k: v.cpu().to(F64) for k, v in spec["state"].items()})
    return module.eval()


def _self_attention_mistakes(x: Tensor, attn: ref.MultiHeadAttention) -> dict:
    n_heads, d_model = attn.n_heads, attn.d_model
    d_head = d_model // n_heads
    q, k, v = F.linear(x, attn.c_attn.weight, attn.c_attn.bias).split(d_model, dim=-1)
    q, k, v = (ref.split_heads(t, n_heads).transpose(1, 2) for t in (q, k, v))
    mask = ref.causal_mask(x.shape[1])
    scores = q @ k.transpose(-2, -1)

    def finish(z: Tensor, proj: bool = True) -> Tensor:
        merged = ref.merge_heads(z.transpose(1, 2))
        return F.linear(merged, attn.c_proj.weight, attn.c_proj.bias) if proj else merged

    def attend(s: Tensor) -> Tensor:
        return torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ v

    return {
        "self-attention in a language model is causal: position i attends to positions j <= i "
        "only (the mask)": lambda: finish(torch.softmax(scores / math.sqrt(d_head), -1) @ v),
        "each head's scores are scaled by the square root of its own width d_head, not of "
        "d_model": lambda: finish(attend(scores / math.sqrt(d_model))),
        "attention runs in every head separately: the head axis must come before pos, "
        "(batch, n_heads, pos, d_head)": lambda: finish(
            ref.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            ).transpose(1, 2)
        ),
        "the merged heads still go through the output projection c_proj": lambda: finish(
            attend(scores / math.sqrt(d_head)), proj=False
        ),
        "c_attn's output stacks queries, keys, values in that order": lambda: finish(
            torch.softmax(
                (k @ q.transpose(-2, -1) / math.sqrt(d_head)).masked_fill(~mask, float("-inf")),
                -1,
            )
            @ v
        ),
    }


def _block_mistakes(x: Tensor, block: Block) -> dict:
    def ln(t: Tensor, m: torch.nn.Module, eps: float | None = None) -> Tensor:
        return F.layer_norm(t, m.weight.shape, m.weight, m.bias, m.eps if eps is None else eps)

    def mlp(t: Tensor, exact: bool = False) -> Tensor:
        h = F.linear(t, block.mlp.c_fc.weight, block.mlp.c_fc.bias)
        h = F.gelu(h) if exact else F.gelu(h, approximate="tanh")
        return F.linear(h, block.mlp.c_proj.weight, block.mlp.c_proj.bias)

    attn = block.attn
    mid = x + attn(ln(x, block.ln1))
    post = ln(x + attn(x), block.ln1)
    return {
        "GPT-2's MLP uses the tanh approximation of GELU": lambda: (
            mid + mlp(ln(mid, block.ln2), exact=True)
        ),
        "GPT-2 is pre-LayerNorm: each sublayer reads the normalised residual stream and adds its "
        "output to the unnormalised stream (post-LN normalises the sum)": lambda: ln(
            post + mlp(post), block.ln2
        ),
        "each sublayer's output is added to the residual stream (x + ...)": lambda: mlp(
            ln(attn(ln(x, block.ln1)), block.ln2)
        ),
        "the MLP reads the stream after the attention has been added (mid), not the block's "
        "input": lambda: mid + mlp(ln(x, block.ln2)),
        "LayerNorm uses the block's own eps (block.ln1.eps), not the default": lambda: (
            lambda m2: m2 + mlp(ln(m2, block.ln2, 1e-5))
        )(x + attn(ln(x, block.ln1, 1e-5))),
    }


def _rule_module(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    problem = rules.common(extra, ["x"])
    if problem:
        return problem
    x = spec["x"]
    module = _module(spec)
    x64 = x.detach().cpu().to(F64)
    with torch.no_grad():
        expected = module(x64)
        if spec["kind"] == "self_attention":
            mistakes = _self_attention_mistakes(x64, module)
            hint = (
                "q, k, v are the three d_model-wide chunks of c_attn(x); split into heads, causal "
                "attention per head, merge the heads, then c_proj"
            )
            what = "self_attention(x, attn)"
        else:
            mistakes = _block_mistakes(x64, module)
            hint = (
                "mid = x + Attn(LN1(x)), out = mid + MLP(LN2(mid)), with each LayerNorm's own "
                "weight, bias and eps and GPT-2's tanh GELU"
            )
            what = "block_forward(x, block)"
        evaluated = {}
        for text, make in mistakes.items():
            try:
                evaluated[text] = make()
            except Exception:
                continue
    if isinstance(got, Tensor):
        got = got.detach()
    return rules.tensor_rule(
        got,
        expected,
        what=what,
        dtype=x.dtype,
        device=spec.get("device") or "cpu",
        hint=hint,
        diagnoses={text: (lambda t=t: t) for text, t in evaluated.items()},
    )


# ----------------------------------------------------------------------------- exercise 6
def _rule_attention_to(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    problem = rules.common(extra, ["pattern", "query_pos", "key_pos"])
    if problem:
        return problem
    p, qpos, kpos = (t.cpu() for t in spec["args"])
    batch = p.shape[0]
    expected = p[torch.arange(batch), :, qpos, kpos]
    if isinstance(got, Tensor) and got.shape == (batch, p.shape[1], batch) != expected.shape:
        return (
            f"the result should have shape {tuple(expected.shape)}, got {tuple(got.shape)}\n  "
            "hint: indexing with query_pos and key_pos alone pairs every batch element with every "
            "prompt's positions: the batch axis must be indexed together with them, element by "
            "element (advanced indexing)"
        )
    problem = rules.tensor_rule(
        got,
        expected,
        what="attention_to(pattern, query_pos, key_pos)",
        dtype=p.dtype,
        device=spec["args"][0].device,
        exact=True,
        hint="result[b, h] is the weight from prompt b's query position to its key position, in "
        "head h; shape (batch, n_heads)",
        diagnoses={
            "the pattern's axes are (batch, head, query, key): query_pos indexes the third axis, "
            "key_pos the fourth": lambda: p[torch.arange(batch), :, kpos, qpos],
            "prompt b's positions select prompt b's pattern: index the batch axis with 0..batch-1 "
            "in order": lambda: p[torch.arange(batch).flip(0), :, qpos, kpos],
        },
    )
    return problem or rules.meta_rule(extra, 1)


# ----------------------------------------------------------------------------- exercise 7
def _gpt(spec: dict[str, Any]) -> GPT:
    with torch.random.fork_rng(devices=[]):
        model = GPT(GPTConfig(**spec["config"]))
    model.load_state_dict({k: v.cpu() for k, v in spec["state"].items()})
    return model.eval()


def _ablated(model: GPT, tokens: Tensor, layer: int, heads: Any, where: str = "z") -> Tensor:
    def zero(z: Tensor, hook: Any) -> Tensor:
        z = z.clone()
        if where == "pos":
            z[:, heads] = 0.0
        else:
            z[:, :, heads] = 0.0
        return z

    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])


def _rule_ablate(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    problem = rules.common(extra, ["model", "tokens", "layer", "head"])
    if problem:
        return problem
    if extra.get("hook_left"):
        return (
            "the model's output changed after your function returned: a hook is still attached\n"
            "  hint: a hook added for one forward pass must be removed when it ends; "
            "model.run_with_hooks attaches and removes its hooks around one call"
        )
    model = _gpt(spec)
    tokens, layer, head = spec["tokens"].cpu(), spec["layer"], spec["head"]
    n_layer, n_head = model.config.n_layer, model.config.n_head
    expected = _ablated(model, tokens, layer, head)
    with torch.no_grad():
        clean = model(tokens)
    diagnoses: dict[str, Callable[[], Tensor]] = {
        "only one head is ablated: hook_z holds every head of the layer, (batch, pos, n_heads, "
        "d_head), and the others must keep their output": lambda: _ablated(
            model, tokens, layer, slice(None)
        ),
        "the head index selects the third axis of hook_z (batch, pos, n_heads, d_head); the "
        "second axis is the position": lambda: _ablated(model, tokens, layer, head, where="pos"),
        "your function returned the unablated logits: the hook's change never reached the "
        "forward pass (a hook changes the activation only if it hands the changed tensor back, "
        "or changes the given tensor itself)": lambda: clean,
    }
    for other in range(n_layer):
        if other != layer:
            diagnoses[
                "the ablation hit another layer: the hook point must be the one of the layer "
                "given by the argument"
            ] = lambda other=other: _ablated(model, tokens, other, head)
    for other in range(n_head):
        if other != head:
            diagnoses[
                f"the ablated head is {other}, not the head given by the argument ({head})"
            ] = lambda other=other: _ablated(model, tokens, layer, other)
    if isinstance(got, Tensor):
        got = got.detach()
    return rules.tensor_rule(
        got,
        expected,
        what="the logits",
        dtype=expected.dtype,
        device=spec.get("device") or spec["tokens"].device,
        hint="return the logits (batch, pos, d_vocab) of one forward pass in which head `head` "
        "of layer `layer` contributes nothing (its hook_z output is zero)",
        diagnoses=diagnoses,
    )


# ----------------------------------------------------------------------------- rules and calls
#: exercise -> (the kernel-side call source, the acceptance rule)
EXERCISES: dict[str, tuple[str, Callable[[dict, Any, dict], str | None]]] = {
    "attention": (CALL_SOURCE, _rule_attention),
    "causal_mask": (CALL_SOURCE, _rule_causal_mask),
    "split_heads": (SPLIT_CALL_SOURCE, _rule_split),
    "self_attention": (MODULE_CALL_SOURCE, _rule_module),
    "block_forward": (MODULE_CALL_SOURCE, _rule_module),
    "attention_to": (CALL_SOURCE, _rule_attention_to),
    "ablate_head": (ABLATE_CALL_SOURCE, _rule_ablate),
}


def judge(exercise: str, spec: dict[str, Any], value: Any, extra: dict[str, Any]) -> str | None:
    """The acceptance rule of ``exercise``: ``None`` if ``value`` (what the student's function
    returned for ``spec``) and ``extra`` (what the call observed) pass, else the message.

    Used by the notebook check and by the grader's rubric alike.
    """
    return EXERCISES[exercise][1](spec, value, extra)


def call_function(
    exercise: str, fn: Callable, spec: dict[str, Any], *extra_args: Any
) -> tuple[Any, dict[str, Any]]:
    """Call ``fn`` on ``spec`` exactly as the grader's kernel does (the same source)."""
    return _CALLS[EXERCISES[exercise][0]](fn, spec, *extra_args)


# ----------------------------------------------------------------------------- the cases


def _state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _randomize(module: torch.nn.Module, g: torch.Generator, scale: float = 0.3) -> None:
    """Random values everywhere (biases and LayerNorm gains too) to expose omissions."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            gain = name.endswith(("ln1.weight", "ln2.weight"))
            p.copy_(1.0 + 0.2 * noise if gain else scale * noise)


def attention_cases(g: torch.Generator, device: torch.device | None = None) -> list:
    """Heads, cross-attention, one query, float64, a causal, a padding and a dead-row mask."""

    def qkv(lead, T, S, d_k, d_v, dtype=torch.float32):
        return [torch.randn(*lead, n, d, generator=g, dtype=dtype)
                for n, d in ((T, d_k), (S, d_k), (S, d_v))]  # fmt: skip

    padding = (torch.arange(5) < torch.tensor([5, 2])[:, None])[:, None, None, :]
    dead_row = ref.causal_mask(3, 4).clone()
    dead_row[0] = False  # query 0 may attend to no key: zero weights, zero output
    out = [
        ("batch 2, 2 heads, T = S = 4, d_k = 6, no mask", qkv((2, 2), 4, 4, 6, 6) + [None]),
        ("cross-attention: 3 queries, 5 keys, d_v = 2", qkv((2,), 3, 5, 6, 2) + [None]),
        ("float64, a single query, d_k = 24", qkv((1,), 1, 6, 24, 5, F64) + [None]),
        ("causal bool mask (T, T), broadcast over batch and heads",
         qkv((2, 3), 5, 5, 8, 4) + [ref.causal_mask(5)]),
        ("padding mask (batch, 1, 1, S)", qkv((2, 3), 4, 5, 8, 8) + [padding]),
        ("a query whose keys are all masked (row 0 of a (3, 4) mask is all False)",
         qkv((2,), 3, 4, 8, 5) + [dead_row]),
    ]  # fmt: skip
    cases = [(name, {"args": args}) for name, args in out]
    cases[3][1]["meta"] = True
    if device is not None and device.type != "cpu":
        args = [t.to(device) for t in qkv((2, 2), 5, 5, 8, 8)] + [ref.causal_mask(5, device=device)]
        cases.append((f"on the notebook's device ({device}), causal mask", {"args": args}))
    return cases


def mask_cases(g: torch.Generator, device: torch.device | None = None) -> list:
    """Sizes 1, 3, 7 and 16; one call with ``device='meta'``."""
    out = [(f"T = {T}", {"args": [T]}) for T in (3, 1, 7, 16)]
    out[2][1]["meta"] = True
    if device is not None and device.type != "cpu":
        out.append((f"T = 4 on {device}", {"args": [4], "kwargs": {"device": str(device)}}))
    return out


def split_cases(g: torch.Generator, device: torch.device | None = None) -> list:
    """split_heads, merge_heads, their composition, and a d_model not divisible by n_heads."""
    x1 = torch.randn(2, 4, 12, generator=g)
    x2 = torch.randn(1, 1, 10, generator=g, dtype=F64)
    z1 = torch.randn(3, 5, 4, 2, generator=g)
    z2 = torch.randn(2, 2, 1, 6, generator=g, dtype=F64)
    x3 = torch.randn(2, 3, 8, generator=g)
    return [
        ("split_heads, batch 2, pos 4, d_model 12, 4 heads", {"op": "split", "x": x1, "n_heads": 4}),
        ("split_heads, batch 1, pos 1, float64, 5 heads", {"op": "split", "x": x2, "n_heads": 5}),
        ("merge_heads, 4 heads of width 2", {"op": "merge", "x": z1}),
        ("merge_heads, one head, float64", {"op": "merge", "x": z2}),
        ("merge_heads(split_heads(x, 8)) == x (d_head = 1)",
         {"op": "roundtrip", "x": x3, "n_heads": 8}),
        ("split_heads with d_model = 12, n_heads = 5 (should raise ValueError)",
         {"op": "error", "x": x1, "n_heads": 5}),
    ]  # fmt: skip


def self_attention_cases(g: torch.Generator, device: torch.device | None = None) -> list:
    """Several widths and head counts, a single token, float64."""
    settings = [
        ("batch 2, pos 6, d_model 12, 3 heads", 2, 6, 12, 3, torch.float32),
        ("one head", 3, 4, 8, 1, torch.float32),
        ("batch 1, pos 1 (a single token)", 1, 1, 8, 4, torch.float32),
        ("float64, 2 heads, pos 5", 2, 5, 10, 2, F64),
    ]
    if device is not None and device.type != "cpu":
        settings.append((f"on the notebook's device ({device})", 2, 4, 8, 2, torch.float32))
    cases = []
    for name, batch, pos, d_model, n_heads, dtype in settings:
        with torch.random.fork_rng(devices=[]):
            attn = ref.MultiHeadAttention(d_model, n_heads).to(dtype)
        _randomize(attn, g, scale=0.5)
        x = torch.randn(batch, pos, d_model, generator=g, dtype=dtype)
        on = str(device) if name.startswith("on the") else None
        spec = {"kind": "self_attention", "x": x, "state": _state(attn), "device": on,
                "config": {"d_model": d_model, "n_heads": n_heads}}  # fmt: skip
        cases.append((name, spec))
    return cases


def block_cases(g: torch.Generator, device: torch.device | None = None) -> list:
    """Pre-LayerNorm GPT-2 blocks with random weights (LayerNorm gains and biases included)."""
    settings = [
        ("batch 2, pos 5, d_model 12, 3 heads, d_mlp 24", 2, 5, 12, 3, 24, torch.float32),
        ("batch 1, pos 1", 1, 1, 8, 2, 32, torch.float32),
        ("float64, pos 4, 4 heads", 2, 4, 16, 4, 20, F64),
    ]
    if device is not None and device.type != "cpu":
        settings.append((f"on the notebook's device ({device})", 2, 3, 8, 2, 16, torch.float32))
    cases = []
    for name, batch, pos, d_model, n_heads, d_mlp, dtype in settings:
        config = {"vocab_size": 10, "n_ctx": 8, "d_model": d_model, "n_layer": 1,
                  "n_head": n_heads, "d_mlp": d_mlp, "layer_norm_eps": 1e-3}  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            block = Block(GPTConfig(**config)).to(dtype)
        _randomize(block, g)
        x = 1.5 * torch.randn(batch, pos, d_model, generator=g, dtype=dtype) - 0.3
        on = str(device) if name.startswith("on the") else None
        spec = {"kind": "block", "x": x, "config": config, "state": _state(block), "device": on}
        cases.append((name, spec))
    return cases


def attention_to_cases(g: torch.Generator, device: torch.device | None = None) -> list:
    """Gathers at one (query, key) pair per batch element."""

    def pattern(batch, n_heads, pos, dtype=torch.float32):
        scores = torch.randn(batch, n_heads, pos, pos, generator=g, dtype=dtype)
        return torch.softmax(scores.masked_fill(~ref.causal_mask(pos), float("-inf")), -1)

    out = [
        ("batch 5, 2 heads, pos 6", [pattern(5, 2, 6),
         torch.tensor([5, 4, 5, 2, 3]), torch.tensor([1, 0, 5, 2, 3])]),
        ("batch of 1, 3 heads", [pattern(1, 3, 4), torch.tensor([3]), torch.tensor([2])]),
        ("float64, 1 head", [pattern(4, 1, 5, F64),
         torch.tensor([4, 1, 2, 0]), torch.tensor([0, 1, 0, 0])]),
        ("batch 3 = n_heads 3", [pattern(3, 3, 5), torch.tensor([4, 3, 2]), torch.tensor([1, 3, 0])]),
    ]  # fmt: skip
    cases = [(name, {"args": args}) for name, args in out]
    cases[0][1]["meta"] = True
    if device is not None and device.type != "cpu":
        args = [pattern(3, 2, 5).to(device), torch.tensor([4, 3, 2], device=device),
                torch.tensor([0, 1, 2], device=device)]  # fmt: skip
        cases.append((f"on the notebook's device ({device})", {"args": args}))
    return cases


def ablate_cases(g: torch.Generator, device: torch.device | None = None) -> list:
    """One small random GPT, four (layer, head) choices and token batches."""
    config = {"vocab_size": 19, "n_ctx": 9, "d_model": 12, "n_layer": 2, "n_head": 3}
    with torch.random.fork_rng(devices=[]):
        model = GPT(GPTConfig(**config))
    with torch.no_grad():  # larger weights than GPT-2's initialisation, so that every head matters
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    state = _state(model)
    tokens = torch.randint(0, 19, (3, 7), generator=g)
    settings = [
        ("layer 0, head 1, batch 3", tokens, 0, 1),
        ("layer 1, head 2", tokens, 1, 2),
        ("layer 1, head 0, batch of 1", tokens[:1].clone(), 1, 0),
        ("layer 0, head 2, 4 positions", tokens[:, :4].clone(), 0, 2),
    ]
    on = str(device) if device is not None and device.type != "cpu" else None
    return [
        (name, {"config": config, "state": state, "tokens": t, "layer": layer, "head": head,
                "device": on})
        for name, t, layer, head in settings
    ]  # fmt: skip


#: exercise -> the case builder (the rubric draws its hidden cases with the same builders)
CASES: dict[str, Callable[..., list[tuple[str, dict]]]] = {
    "attention": attention_cases,
    "causal_mask": mask_cases,
    "split_heads": split_cases,
    "self_attention": self_attention_cases,
    "block_forward": block_cases,
    "attention_to": attention_to_cases,
    "ablate_head": ablate_cases,
}

#: the seeds of the in-notebook cases (the grader draws others from its --seed)
_CHECK_SEEDS = {name: 200 + i for i, name in enumerate(CASES)}


def _check(exercise: str, fn: Callable, *extra_args: Any, label: str | None = None) -> None:
    g = torch.Generator().manual_seed(_CHECK_SEEDS[exercise])
    run_judged(
        exercise,
        CASES[exercise](g, labcore.get_device()),
        lambda spec: call_function(exercise, fn, spec, *extra_args),
        functools.partial(judge, exercise),
        shape_hint="check transposes and the axes you split or index",
        label=label,
    )


# ----------------------------------------------------------------------------- the checks
def check_attention(attention: Callable) -> None:
    """``attention(q, k, v, mask=None) -> (out, weights)``: softmax(q k^T / sqrt(d_k)) v, masked;
    a query whose keys are all masked gets zero weights and a zero output."""
    _check("attention", attention)


def check_causal_mask(causal_mask: Callable) -> None:
    """``causal_mask(T, device=None)``: bool ``(T, T)``, True where query i may attend to key j,
    on ``device``."""
    _check("causal_mask", causal_mask)


def check_split_merge_heads(split_heads: Callable, merge_heads: Callable) -> None:
    """``split_heads(x, n_heads)``: ``(batch, pos, d_model) -> (batch, pos, n_heads, d_head)``,
    ValueError if ``d_model % n_heads``; ``merge_heads(z)``: the inverse."""
    _check("split_heads", split_heads, merge_heads, label="split_heads and merge_heads")


def check_self_attention(self_attention: Callable) -> None:
    """``self_attention(x, attn)``: causal multi-head self-attention from the weights of a
    :class:`labcore.attention.MultiHeadAttention`; equals ``attn(x)``. Runs with labcore's
    ``attention``, ``causal_mask``, ``split_heads`` and ``merge_heads`` in place of yours."""
    _check("self_attention", self_attention)


def check_block_forward(block_forward: Callable) -> None:
    """``block_forward(x, block)``: one pre-LayerNorm GPT-2 block from a
    :class:`labcore.transformer.Block`'s weights; equals ``block(x)``. Runs with labcore's
    ``self_attention`` (and exercises 1-3) in place of yours."""
    _check("block_forward", block_forward)


def check_attention_to(attention_to: Callable) -> None:
    """``attention_to(pattern, query_pos, key_pos) -> (batch, n_heads)``:
    ``pattern[b, h, query_pos[b], key_pos[b]]`` for every b and h."""
    _check("attention_to", attention_to)


def check_ablate_head(ablate_head: Callable) -> None:
    """``ablate_head(model, tokens, layer, head)``: the logits of one forward pass with head
    ``head`` of layer ``layer`` zeroed at its ``hook_z``; the model is left as it was."""
    _check("ablate_head", ablate_head)
