"""Hidden tests of lab 2, attention and transformers (``labs/02-attention.ipynb``).

Seven exercises, 17 points. The hidden inputs differ from the in-notebook checks of
:mod:`labcore.checks.attention` and are drawn from the grader's ``--seed``. Modules
(:class:`~labcore.attention.MultiHeadAttention`, :class:`~labcore.transformer.Block`,
:class:`~labcore.transformer.GPT`) travel as a configuration and a state dict and are rebuilt in
the kernel; the expected results come from labcore's modules, computed in the grader's process.
"""

from __future__ import annotations

from typing import Any

import torch

from labcore import attention as ref
from labcore.rubrics import (
    Exercise,
    HiddenCase,
    Rubric,
    TensorResult,
    case_generator,
    describe,
    hook_left_message,
    mutation_message,
    tensor_mismatch,
)
from labcore.transformer import GPT, Block, GPTConfig

__all__ = ["RUBRIC"]


def _generator(seed: int, exercise: int) -> torch.Generator:
    """A generator for one exercise's hidden inputs, derived from the grading seed."""
    return case_generator("02-attention", seed, exercise)


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-9, "rtol": 1e-7} if dtype == torch.float64 else {"atol": 2e-5, "rtol": 1e-4}


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _randomize(module: torch.nn.Module, g: torch.Generator, scale: float = 0.3) -> None:
    """Random values everywhere (biases and LayerNorm gains too) to expose omissions."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            p.copy_(
                1.0 + 0.2 * noise if name.endswith(("ln1.weight", "ln2.weight")) else scale * noise
            )


# --------------------------------------------------------------------------- 1: attention
def _attention_cases(seed: int) -> list[HiddenCase]:
    """Heads, cross-attention, one query, float64, a causal, a padding and a dead-row mask."""
    g = _generator(seed, 1)

    def qkv(lead, T, S, d_k, d_v, dtype=torch.float32):
        return (torch.randn(*lead, T, d_k, generator=g, dtype=dtype),
                torch.randn(*lead, S, d_k, generator=g, dtype=dtype),
                torch.randn(*lead, S, d_v, generator=g, dtype=dtype))  # fmt: skip

    padding = (torch.arange(5) < torch.tensor([5, 2])[:, None])[:, None, None, :]
    dead_row = ref.causal_mask(3, 4).clone()
    dead_row[0] = False  # query 0 may attend to no key: zero weights, zero output
    settings = [
        ("batch 2, 2 heads, T = S = 4, d_k = 6, no mask", *qkv((2, 2), 4, 4, 6, 6), None),
        ("cross-attention: 3 queries, 5 keys, d_v = 2", *qkv((2,), 3, 5, 6, 2), None),
        ("float64, a single query, d_k = 24", *qkv((1,), 1, 6, 24, 5, torch.float64), None),
        ("causal bool mask (T, T), broadcast", *qkv((2, 3), 5, 5, 8, 4), ref.causal_mask(5)),
        ("padding mask (batch, 1, 1, S)", *qkv((2, 3), 4, 5, 8, 8), padding),
        ("a query whose keys are all masked", *qkv((2,), 3, 4, 8, 5), dead_row),
    ]
    cases = []
    for name, q, k, v, mask in settings:
        out, weights = ref.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
        cases.append(HiddenCase(name, {"args": [q, k, v, mask]}, {"out": out, "weights": weights}))
    return cases


def _score_attention(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = mutation_message(extra, ["q", "k", "v", "mask"])
    if problem:
        return problem
    if not isinstance(value, list | tuple) or len(value) != 2:
        return f"expected a pair (out, weights), got {describe(value)}."
    tol = _tolerance(case.expected["out"].dtype)
    return tensor_mismatch(
        value[1], case.expected["weights"], **tol, what="the weights",
        hint="weights = softmax(q k^T / sqrt(d_k)) over the keys (dim=-1), with the scores set "
        "to -inf where mask is False, and zero weights in a row whose keys are all masked "
        "(not the NaN of 0/0)",
    ) or tensor_mismatch(
        value[0], case.expected["out"], **tol, what="out", hint="out = weights @ v",
    )  # fmt: skip


# --------------------------------------------------------------------------- 2: causal mask
def _mask_cases(seed: int) -> list[HiddenCase]:
    """Sizes 1, 3, 7 and 16."""
    return [HiddenCase(f"T = {T}", {"args": [T]}, ref.causal_mask(T)) for T in (3, 1, 7, 16)]


def _score_mask(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    expected = case.expected
    if not isinstance(value, TensorResult) or value.type_name == "numpy.ndarray":
        return f"the mask should be a torch.Tensor, got {describe(value)}."
    if value.tensor.dtype != torch.bool:
        return (
            "the mask should be a bool tensor (True where attention is allowed), "
            f"got {value.tensor.dtype}."
        )
    if tuple(value.tensor.shape) != tuple(expected.shape):
        return (
            f"the mask should have shape {tuple(expected.shape)}, got {tuple(value.tensor.shape)}."
        )
    if not torch.equal(value.tensor, expected):
        return (
            f"wrong entries: expected {expected[:4, :4].int().tolist()}, got "
            f"{value.tensor[:4, :4].int().tolist()} (top-left corner). Hint: mask[i, j] is True "
            "exactly when j <= i."
        )
    return None


# --------------------------------------------------------------------------- 3: split and merge
#: Kernel side: ``fn`` is split_heads; merge_heads is read from the same (the student's) namespace.
_SPLIT_MERGE_CALL = """
def call(fn, spec):
    import torch

    op, x = spec["op"], spec["x"]
    before = x.clone()
    merge = getattr(fn, "__globals__", {}).get("merge_heads")
    if op != "split" and not callable(merge):
        raise NameError("merge_heads is not defined")
    if op == "split":
        value = fn(x, spec["n_heads"])
    elif op == "merge":
        value = merge(x)
    elif op == "roundtrip":
        value = merge(fn(x, spec["n_heads"]))
    else:
        try:
            fn(x, spec["n_heads"])
        except NotImplementedError:
            raise
        except ValueError:
            value = "ValueError"
        except Exception as err:
            value = type(err).__name__
        else:
            value = "returned normally"
    return value, {"mutated": [] if torch.equal(x, before) else [0]}
"""


def _split_merge_cases(seed: int) -> list[HiddenCase]:
    """split_heads, merge_heads, their composition, and a d_model not divisible by n_heads."""
    g = _generator(seed, 3)
    x1 = torch.randn(2, 4, 12, generator=g)
    x2 = torch.randn(1, 1, 10, generator=g, dtype=torch.float64)
    z1 = torch.randn(3, 5, 4, 2, generator=g)
    z2 = torch.randn(2, 2, 1, 6, generator=g, dtype=torch.float64)
    x3 = torch.randn(2, 3, 8, generator=g)
    return [
        HiddenCase("split_heads, batch 2, pos 4, d_model 12, 4 heads",
                   {"op": "split", "x": x1, "n_heads": 4}, ref.split_heads(x1, 4)),
        HiddenCase("split_heads, batch 1, pos 1, float64, 5 heads",
                   {"op": "split", "x": x2, "n_heads": 5}, ref.split_heads(x2, 5)),
        HiddenCase("merge_heads, 4 heads of width 2", {"op": "merge", "x": z1}, ref.merge_heads(z1)),
        HiddenCase("merge_heads, one head, float64", {"op": "merge", "x": z2}, ref.merge_heads(z2)),
        HiddenCase("merge_heads(split_heads(x, 8)) == x (d_head = 1)",
                   {"op": "roundtrip", "x": x3, "n_heads": 8}, x3.clone()),
        HiddenCase("split_heads with d_model = 12, n_heads = 5 (should raise ValueError)",
                   {"op": "error", "x": x1, "n_heads": 5}, "ValueError"),
    ]  # fmt: skip


def _score_split_merge(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = mutation_message(extra, ["x"])
    if problem:
        return problem
    if isinstance(case.expected, str):
        if value != "ValueError":
            what = value if value == "returned normally" else f"raised {value}"
            return (
                f"expected split_heads to raise ValueError, but it {what}. "
                "Hint: check d_model % n_heads yourself and raise ValueError with a message."
            )
        return None
    return tensor_mismatch(
        value, case.expected, atol=0.0, rtol=0.0,
        hint="split_heads: (batch, pos, d_model) -> (batch, pos, n_heads, d_head), reshaping the "
        "last axis only; merge_heads concatenates the heads back along the last axis",
    )  # fmt: skip


# --------------------------------------------------------------------------- 4: self-attention
#: Kernel side: rebuild the attention module; calling the module itself is refused.
_SELF_ATTENTION_CALL = """
def call(fn, spec):
    import torch
    from labcore.attention import MultiHeadAttention

    x = spec["x"]
    attn = MultiHeadAttention(spec["d_model"], spec["n_heads"]).to(x.dtype)
    attn.load_state_dict(spec["state"])

    def forbidden(*args, **kwargs):
        raise RuntimeError("compute the attention from the weights; do not call attn itself")

    attn.forward = forbidden
    before = x.clone()
    with torch.no_grad():
        value = fn(x, attn)
    return value, {"mutated": [] if torch.equal(x, before) else [0]}
"""


def _self_attention_cases(seed: int) -> list[HiddenCase]:
    """Several widths and head counts, a single token, float64."""
    g = _generator(seed, 4)
    settings = [
        ("batch 2, pos 6, d_model 12, 3 heads", 2, 6, 12, 3, torch.float32),
        ("one head", 3, 4, 8, 1, torch.float32),
        ("batch 1, pos 1 (a single token)", 1, 1, 8, 4, torch.float32),
        ("float64, 2 heads, pos 5", 2, 5, 10, 2, torch.float64),
    ]
    cases = []
    for name, batch, pos, d_model, n_heads, dtype in settings:
        attn = ref.MultiHeadAttention(d_model, n_heads).to(dtype)
        _randomize(attn, g, scale=0.5)
        x = torch.randn(batch, pos, d_model, generator=g, dtype=dtype)
        with torch.no_grad():
            expected = attn(x)
        spec = {"x": x, "d_model": d_model, "n_heads": n_heads, "state": _state(attn)}
        cases.append(HiddenCase(name, spec, expected))
    return cases


def _score_self_attention(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return mutation_message(extra, ["x"]) or tensor_mismatch(
        value, case.expected, **_tolerance(case.expected.dtype),
        hint="q, k, v from attn.c_attn split along the last axis; split the heads, causal "
        "attention per head scaled by sqrt(d_head), merge the heads, then attn.c_proj",
    )  # fmt: skip


# --------------------------------------------------------------------------- 5: a block
#: Kernel side: rebuild the block; calling the block or its sublayers' modules is refused.
_BLOCK_CALL = """
def call(fn, spec):
    import torch
    from labcore.transformer import Block, GPTConfig

    x = spec["x"]
    block = Block(GPTConfig(**spec["config"])).to(x.dtype)
    block.load_state_dict(spec["state"])

    def forbidden(*args, **kwargs):
        raise RuntimeError("compute the block from its weights; do not call the block, its "
                           "attention, MLP or LayerNorm modules")

    for module in (block, block.attn, block.mlp, block.ln1, block.ln2):
        module.forward = forbidden
    before = x.clone()
    with torch.no_grad():
        value = fn(x, block)
    return value, {"mutated": [] if torch.equal(x, before) else [0]}
"""


def _block_cases(seed: int) -> list[HiddenCase]:
    """Pre-LayerNorm GPT-2 blocks with random weights (LayerNorm gains and biases included)."""
    g = _generator(seed, 5)
    settings = [
        ("batch 2, pos 5, d_model 12, 3 heads, d_mlp 24", 2, 5, 12, 3, 24, torch.float32),
        ("batch 1, pos 1", 1, 1, 8, 2, 32, torch.float32),
        ("float64, pos 4, 4 heads", 2, 4, 16, 4, 20, torch.float64),
    ]
    cases = []
    for name, batch, pos, d_model, n_heads, d_mlp, dtype in settings:
        config = {"vocab_size": 10, "n_ctx": 8, "d_model": d_model, "n_layer": 1,
                  "n_head": n_heads, "d_mlp": d_mlp, "layer_norm_eps": 1e-3}  # fmt: skip
        block = Block(GPTConfig(**config)).to(dtype)
        _randomize(block, g)
        x = 1.5 * torch.randn(batch, pos, d_model, generator=g, dtype=dtype) - 0.3
        with torch.no_grad():
            expected = block(x)
        cases.append(HiddenCase(name, {"x": x, "config": config, "state": _state(block)}, expected))
    return cases


def _score_block(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return mutation_message(extra, ["x"]) or tensor_mismatch(
        value, case.expected, **_tolerance(case.expected.dtype),
        hint="pre-LayerNorm: mid = x + Attn(LN1(x)), out = mid + MLP(LN2(mid)), with the blocks' "
        "LayerNorm eps and GELU's tanh approximation in the MLP",
    )  # fmt: skip


# --------------------------------------------------------------------------- 6: attention_to
def _attention_to_cases(seed: int) -> list[HiddenCase]:
    """Gathers at one (query, key) pair per batch element."""
    g = _generator(seed, 6)

    def pattern(batch, n_heads, pos, dtype=torch.float32):
        scores = torch.randn(batch, n_heads, pos, pos, generator=g, dtype=dtype)
        return torch.softmax(scores.masked_fill(~ref.causal_mask(pos), float("-inf")), -1)

    settings = [
        ("batch 5, 2 heads, pos 6", pattern(5, 2, 6),
         torch.tensor([5, 4, 5, 2, 3]), torch.tensor([1, 0, 5, 2, 3])),
        ("batch of 1, 3 heads", pattern(1, 3, 4), torch.tensor([3]), torch.tensor([2])),
        ("float64, 1 head", pattern(4, 1, 5, torch.float64),
         torch.tensor([4, 1, 2, 0]), torch.tensor([0, 1, 0, 0])),
        ("batch 3 = n_heads 3 (a (batch, heads, batch) result would still be wrong)",
         pattern(3, 3, 5), torch.tensor([4, 3, 2]), torch.tensor([1, 3, 0])),
    ]  # fmt: skip
    return [
        HiddenCase(name, {"args": [p, qpos, kpos]}, p[torch.arange(p.shape[0]), :, qpos, kpos])
        for name, p, qpos, kpos in settings
    ]


def _score_attention_to(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return mutation_message(extra, ["pattern", "query_pos", "key_pos"]) or tensor_mismatch(
        value, case.expected, atol=0.0, rtol=0.0,
        hint="result[b, h] = pattern[b, h, query_pos[b], key_pos[b]], shape (batch, n_heads): "
        "index the batch axis with torch.arange(batch) together with query_pos and key_pos",
    )  # fmt: skip


# --------------------------------------------------------------------------- 7: ablation
#: Kernel side: rebuild the model, run the student's ablation, and report whether a hook stayed.
_ABLATE_CALL = """
def call(fn, spec):
    import torch
    from labcore.transformer import GPT, GPTConfig

    model = GPT(GPTConfig(**spec["config"]))
    model.load_state_dict(spec["state"])
    model.eval()
    tokens = spec["tokens"]
    before = tokens.clone()
    with torch.no_grad():
        clean = model(tokens)
        value = fn(model, tokens, spec["layer"], spec["head"])
        hook_left = not torch.equal(model(tokens), clean)
    return value, {"mutated": [] if torch.equal(tokens, before) else [1], "hook_left": hook_left}
"""


def _ablate_cases(seed: int) -> list[HiddenCase]:
    """One small random GPT, four (layer, head) choices and token batches."""
    g = _generator(seed, 7)
    config = {"vocab_size": 19, "n_ctx": 9, "d_model": 12, "n_layer": 2, "n_head": 3}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 * seed + 207)
        model = GPT(GPTConfig(**config))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    model.eval()
    state = _state(model)
    tokens = torch.randint(0, 19, (3, 7), generator=g)
    settings = [
        ("layer 0, head 1, batch 3", tokens, 0, 1),
        ("layer 1, head 2", tokens, 1, 2),
        ("layer 1, head 0, batch of 1", tokens[:1].clone(), 1, 0),
        ("layer 0, head 2, 4 positions", tokens[:, :4].clone(), 0, 2),
    ]
    cases = []
    for name, t, layer, head in settings:

        def zero(z, hook, head=head):
            z = z.clone()
            z[:, :, head] = 0.0
            return z

        with torch.no_grad():
            expected = model.run_with_hooks(t, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])
        spec = {"config": config, "state": state, "tokens": t, "layer": layer, "head": head}
        cases.append(HiddenCase(name, spec, expected))
    return cases


def _score_ablate(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = mutation_message(extra, ["model", "tokens", "layer", "head"])
    if problem:
        return problem
    problem = hook_left_message(extra)
    if problem:
        return problem
    return tensor_mismatch(
        value, case.expected, atol=1e-5, rtol=1e-4, what="the logits",
        hint="run model.run_with_hooks with a hook on f'blocks.{layer}.attn.hook_z' that sets "
        "z[:, :, head] to 0, and return the logits (batch, pos, d_vocab)",
    )  # fmt: skip


RUBRIC = Rubric(
    lab="02-attention",
    exercises=(
        Exercise("ex-attention", "attention", 3, _attention_cases, _score_attention),
        Exercise("ex-causal-mask", "causal_mask", 1, _mask_cases, _score_mask),
        Exercise(
            "ex-split-merge-heads",
            "split_heads",
            2,
            _split_merge_cases,
            _score_split_merge,
            call_source=_SPLIT_MERGE_CALL,
        ),
        Exercise(
            "ex-self-attention",
            "self_attention",
            3,
            _self_attention_cases,
            _score_self_attention,
            call_source=_SELF_ATTENTION_CALL,
        ),
        Exercise(
            "ex-block", "block_forward", 3, _block_cases, _score_block, call_source=_BLOCK_CALL
        ),
        Exercise("ex-attention-to", "attention_to", 2, _attention_to_cases, _score_attention_to),
        Exercise(
            "ex-ablate-head",
            "ablate_head",
            3,
            _ablate_cases,
            _score_ablate,
            call_source=_ABLATE_CALL,
        ),
    ),  # fmt: skip
    reference_modules=(
        "labcore.attention",
        "labcore.transformer",
        "labcore.checks.attention",
    ),
)
