"""Checks for lab 2, attention and transformers (``labs/02-attention.ipynb``).

Each check runs the student's function and a reference on the same inputs: several shapes, a batch
of one, float64, masks that broadcast, and one case on the device the notebook uses
(:func:`labcore.get_device`). Where a typical mistake gives a recognisable result (a missing
``1 / sqrt(d_k)``, the mask read the wrong way round, post-LayerNorm instead of pre-LayerNorm, ...)
the failure names it. Functions that must be written from the formula are checked with torch's fused
attention and the labcore modules switched off, so that calling them fails with a clear message.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from unittest import mock

import torch
import torch.nn.functional as F

import labcore
from labcore import attention as ref
from labcore.checks import CheckFailed, assert_unchanged, compare, passed, run_case, snapshot
from labcore.checks import forbid as _forbid
from labcore.transformer import GPT, Block, GPTConfig

__all__ = [
    "check_attention",
    "check_causal_mask",
    "check_split_merge_heads",
    "check_self_attention",
    "check_block_forward",
    "check_attention_to",
    "check_ablate_head",
]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _device() -> torch.device:
    return labcore.get_device()


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-10, "rtol": 1e-8} if dtype == torch.float64 else {"atol": 2e-5, "rtol": 1e-4}


def _close(got: object, candidate: torch.Tensor) -> bool:
    """Whether ``got`` is a tensor equal to ``candidate`` (used to recognise typical mistakes)."""
    return (
        isinstance(got, torch.Tensor)
        and got.shape == candidate.shape
        and got.dtype == candidate.dtype
        and got.device == candidate.device
        and bool(
            torch.allclose(got.detach(), candidate.detach(), atol=1e-5, rtol=1e-4, equal_nan=True)
        )
    )


def _diagnose(got: object, mistakes: dict[str, torch.Tensor], default: str) -> str:
    """The hint of the first typical mistake whose result equals ``got``, else ``default``."""
    for hint, candidate in mistakes.items():
        if _close(got, candidate):
            return hint
    return default


def _rows(mask: torch.Tensor, limit: int = 5) -> str:
    """The first rows of a bool matrix as 0/1 lists (for failure messages)."""
    rows = mask[:limit, :limit].int().tolist()
    return str(rows) + (" ..." if mask.shape[0] > limit else "")


@contextlib.contextmanager
def _no_fused_attention() -> Iterator[None]:
    """Make torch's and labcore's ready-made attention fail while the student's code runs."""
    message = (
        "this exercise asks for attention written from its formula; do not call "
        "{} (the check compares your result with it)"
    )
    with (
        mock.patch.object(
            F,
            "scaled_dot_product_attention",
            _forbid(message.format("torch.nn.functional.scaled_dot_product_attention")),
        ),
        mock.patch.object(
            ref,
            "scaled_dot_product_attention",
            _forbid(message.format("labcore.attention.scaled_dot_product_attention")),
        ),
    ):
        yield


@contextlib.contextmanager
def _no_forward(*modules: torch.nn.Module, what: str) -> Iterator[None]:
    """Make calling any of ``modules`` fail: the student must use their weights, not their forward."""
    message = (
        f"compute {what} from the weights (parameters and attributes such as eps, n_heads); "
        "do not call the module itself, whose output is what the check compares with"
    )
    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.enter_context(mock.patch.object(module, "forward", _forbid(message)))
        yield


def _randomize(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.3) -> None:
    """Fill every parameter with random values (biases and LayerNorm gains too) to expose omissions."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
            if name.endswith("ln1.weight") or name.endswith("ln2.weight"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(scale * noise)


# --------------------------------------------------------------------------------------------------
# exercise 1: scaled dot-product attention
# --------------------------------------------------------------------------------------------------
def check_attention(attention: Callable) -> None:
    """``attention(q, k, v, mask=None) -> (out, weights)``: softmax(q k^T / sqrt(d_k)) v, masked.

    A query whose keys are all masked gets zero weights and a zero output (the rule of
    :func:`labcore.attention.scaled_dot_product_attention` and of torch's fused attention).
    """
    g = torch.Generator().manual_seed(20)
    device = _device()

    def qkv(lead, T, S, d_k, d_v, dtype=torch.float32):
        q = torch.randn(*lead, T, d_k, generator=g, dtype=dtype)
        k = torch.randn(*lead, S, d_k, generator=g, dtype=dtype)
        v = torch.randn(*lead, S, d_v, generator=g, dtype=dtype)
        return q, k, v

    lengths = torch.tensor([6, 3])  # a padding mask: batch 1 has 3 real keys
    padding = (torch.arange(6) < lengths[:, None])[:, None, None, :]  # (batch, 1, 1, S)
    dead_row = ref.causal_mask(4, 5).clone()  # (T, S) = (4, 5)
    dead_row[2] = False  # query 2 may attend to no key: zero weights and a zero output
    cases = [
        ("batch 2, 3 heads, T = S = 5, d_k = 8, no mask", *qkv((2, 3), 5, 5, 8, 8), None),
        ("cross-attention: T = 4 queries, S = 6 keys, d_v = 3", *qkv((2,), 4, 6, 8, 3), None),
        ("batch of 1, a single query", *qkv((1,), 1, 7, 16, 16), None),
        ("float64, d_k = 32", *qkv((3,), 5, 5, 32, 4, torch.float64), None),
        (
            "causal bool mask (T, T), broadcast over batch and heads",
            *qkv((2, 2), 6, 6, 8, 8),
            ref.causal_mask(6),
        ),
        (
            "padding mask (batch, 1, 1, S), broadcast over heads and queries",
            *qkv((2, 4), 5, 6, 8, 8),
            padding,
        ),
        (
            "a query whose keys are all masked (row 2 of a (4, 5) mask is all False)",
            *qkv((2,), 4, 5, 8, 3),
            dead_row,
        ),
        (
            f"on the notebook's device ({device}), causal mask",
            *(t.to(device) for t in qkv((2, 2), 5, 5, 8, 8)),
            ref.causal_mask(5, device=device),
        ),
    ]
    for case, q, k, v, mask in cases:
        inputs = {"q": q, "k": k, "v": v}
        before = {name: snapshot(t) for name, t in inputs.items()}
        out_ref, w_ref = ref.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
        torch_out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        with _no_fused_attention():
            got = run_case(case, attention, q, k, v, mask)
        for name, t in inputs.items():
            assert_unchanged(case, before[name], t, name)
        if not (isinstance(got, tuple | list) and len(got) == 2):
            raise CheckFailed(
                f"[{case}] expected a pair (out, weights), got {type(got).__name__}"
                "\n  hint: return out, weights"
            )
        out, weights = got
        d_k = q.shape[-1]
        scores = q @ k.transpose(-2, -1)  # (..., T, S), unscaled

        def masked(s: torch.Tensor, mask: torch.Tensor | None = mask) -> torch.Tensor:
            return s if mask is None else s.masked_fill(~mask, float("-inf"))

        def softmax(s: torch.Tensor, dim: int = -1) -> torch.Tensor:
            return torch.nan_to_num(torch.softmax(s, dim=dim), nan=0.0)  # dead rows: zeros

        mistakes = {}
        if mask is not None and not mask.any(-1).all():
            mistakes[
                "a query whose keys are all masked gets softmax(-inf, ..., -inf) = 0/0 = NaN; "
                "the exercise asks for zero weights (and so a zero output) in such a row"
            ] = torch.softmax(masked(scores / math.sqrt(d_k)), dim=-1)
        mistakes |= {
            "divide the scores by sqrt(d_k), with d_k = q.shape[-1]": softmax(masked(scores)),
            "divide by the square root of d_k, not by d_k": softmax(masked(scores / d_k)),
            "the softmax normalises over the keys (the last axis, dim=-1), so that each row "
            "(one query) sums to one": softmax(masked(scores / math.sqrt(d_k)), dim=-2),
        }
        if mask is not None:
            mistakes[
                "the mask is True where attention is *allowed*: fill the scores with -inf "
                "where mask is False"
            ] = softmax((scores / math.sqrt(d_k)).masked_fill(mask, float("-inf")))
            mistakes["apply the mask to the scores before the softmax"] = softmax(
                scores / math.sqrt(d_k)
            )
        tol = _tolerance(q.dtype)
        compare(
            f"{case}: weights",
            weights,
            w_ref,
            **tol,
            hint=_diagnose(
                weights,
                mistakes,
                "weights = softmax(q @ k^T / sqrt(d_k)), masked with -inf where mask is False, "
                "zero in a row whose keys are all masked, shape (..., T, S)",
            ),
        )
        compare(
            f"{case}: out",
            out,
            torch_out,
            **tol,
            hint="out = weights @ v, shape (..., T, d_v); a query whose keys are all masked "
            "gets a zero output",
        )
    passed("attention", len(cases))


# --------------------------------------------------------------------------------------------------
# exercise 2: the causal mask
# --------------------------------------------------------------------------------------------------
def check_causal_mask(causal_mask: Callable) -> None:
    """``causal_mask(T, device=None)``: bool ``(T, T)``, True where query i may attend to key j."""
    device = _device()
    cases = [
        ("T = 5", 5, None),
        ("T = 1", 1, None),
        ("T = 12", 12, None),
        (f"T = 4 on the notebook's device ({device})", 4, device),
    ]
    for case, T, dev in cases:
        got = run_case(case, causal_mask, T, device=dev)
        expected = ref.causal_mask(T, device=dev)
        if isinstance(got, torch.Tensor) and got.dtype != torch.bool:
            raise CheckFailed(
                f"[{case}] expected a bool tensor, got dtype {got.dtype}"
                "\n  hint: torch's convention is a bool mask, True where attention is allowed"
            )
        mistakes = {
            "query i may see keys j <= i: keep the lower triangle (tril), not the upper one": expected.T,
            "a token may attend to itself: keep the diagonal": expected
            & ~torch.eye(T, dtype=torch.bool, device=expected.device),
            "True marks the allowed keys (j <= i), not the masked ones": ~expected,
        }
        hint = "mask[i, j] is True exactly when j <= i"
        for text, candidate in mistakes.items():
            if (
                isinstance(got, torch.Tensor)
                and got.shape == candidate.shape
                and torch.equal(got.cpu(), candidate.cpu())
            ):
                hint = text
                break
        if (
            isinstance(got, torch.Tensor)
            and got.dtype == torch.bool
            and got.shape == expected.shape
        ):
            if got.device != expected.device:
                raise CheckFailed(
                    f"[{case}] expected the mask on {expected.device}, got {got.device}"
                    "\n  hint: create it with device=device"
                )
            if not torch.equal(got, expected):
                raise CheckFailed(
                    f"[{case}] wrong entries (1 = True)\n  expected: {_rows(expected)}"
                    f"\n  got:      {_rows(got)}\n  hint: {hint}"
                )
        compare(case, got, expected, hint=hint)
    # The property that matters: with the mask, later tokens cannot change earlier outputs.
    g = torch.Generator().manual_seed(21)
    q, k, v = (torch.randn(1, 6, 4, generator=g) for _ in range(3))
    mask = run_case("T = 6", causal_mask, 6)
    k2, v2 = k.clone(), v.clone()
    k2[:, 4:], v2[:, 4:] = 10.0, -10.0  # change the last two tokens
    before = ref.scaled_dot_product_attention(q, k, v, mask)[:, :4]
    after = ref.scaled_dot_product_attention(q, k2, v2, mask)[:, :4]
    if not torch.allclose(before, after, atol=1e-6):
        raise CheckFailed(
            "[T = 6] changing tokens 4 and 5 changed the outputs at positions 0-3: "
            "the mask lets earlier positions see the future"
        )
    passed("causal_mask", len(cases) + 1)


# --------------------------------------------------------------------------------------------------
# exercise 3: splitting and merging heads
# --------------------------------------------------------------------------------------------------
def check_split_merge_heads(split_heads: Callable, merge_heads: Callable) -> None:
    """``split_heads(x, n_heads)``: ``(batch, pos, d_model) -> (batch, pos, n_heads, d_head)``;
    ``merge_heads(z)``: the inverse."""
    g = torch.Generator().manual_seed(22)
    device = _device()
    cases = [
        ("batch 2, pos 5, d_model 12, 3 heads", torch.randn(2, 5, 12, generator=g), 3),
        ("one head (d_head = d_model)", torch.randn(2, 4, 8, generator=g), 1),
        ("d_head = 1 (as many heads as features)", torch.randn(3, 2, 6, generator=g), 6),
        ("batch 1, pos 1, float64", torch.randn(1, 1, 16, generator=g, dtype=torch.float64), 4),
        (f"on the notebook's device ({device})", torch.randn(2, 3, 8, generator=g).to(device), 2),
    ]
    for case, x, n_heads in cases:
        before = snapshot(x)
        got = run_case(f"split_heads, {case}", split_heads, x, n_heads)
        assert_unchanged(case, before, x, "x")
        expected = ref.split_heads(x, n_heads)
        batch, pos, d_model = x.shape
        d_head = d_model // n_heads
        wrong = x.reshape(batch, n_heads, pos, d_head)
        hint = (
            "head h holds features h*d_head ... (h+1)*d_head - 1 of each position: reshape the "
            "last axis only (d_model -> n_heads, d_head)"
            if _close(got, wrong.transpose(1, 2)) or _close(got, wrong)
            else "the result has shape (batch, pos, n_heads, d_head), with d_head = d_model / n_heads"
        )
        compare(f"split_heads, {case}", got, expected, hint=hint)
        z = torch.randn(batch, pos, n_heads, d_head, generator=g, dtype=x.dtype).to(x.device)
        z_before = snapshot(z)
        merged = run_case(f"merge_heads, {case}", merge_heads, z)
        assert_unchanged(case, z_before, z, "z")
        compare(
            f"merge_heads, {case}",
            merged,
            ref.merge_heads(z),
            hint="concatenate the heads along the last axis: (batch, pos, n_heads * d_head)",
        )
        back = run_case(f"merge_heads(split_heads(x)), {case}", merge_heads, got)
        compare(f"merge_heads(split_heads(x)) == x, {case}", back, x)
    bad = torch.zeros(1, 2, 10)
    try:
        split_heads(bad, 3)
    except NotImplementedError:
        raise
    except ValueError:
        pass
    except Exception as err:  # any other error is feedback
        raise CheckFailed(
            f"[d_model = 10, n_heads = 3] expected a ValueError, got {type(err).__name__}: {err}"
            "\n  hint: check d_model % n_heads yourself and raise ValueError with a message"
        ) from err
    else:
        raise CheckFailed(
            "[d_model = 10, n_heads = 3] expected a ValueError (10 is not divisible by 3), "
            "but split_heads returned normally"
        )
    passed("split_heads and merge_heads", 3 * len(cases) + 1)


# --------------------------------------------------------------------------------------------------
# exercise 4: causal multi-head self-attention from the weights
# --------------------------------------------------------------------------------------------------
def _alternatives_self_attention(x: torch.Tensor, attn: ref.MultiHeadAttention) -> dict:
    """Results of typical mistakes in multi-head self-attention."""
    n_heads, d_model = attn.n_heads, attn.d_model
    d_head = d_model // n_heads
    q, k, v = F.linear(x, attn.c_attn.weight, attn.c_attn.bias).split(d_model, dim=-1)
    q, k, v = (ref.split_heads(t, n_heads).transpose(1, 2) for t in (q, k, v))
    pos = x.shape[1]
    mask = ref.causal_mask(pos, device=x.device)

    def finish(z: torch.Tensor) -> torch.Tensor:
        return F.linear(ref.merge_heads(z.transpose(1, 2)), attn.c_proj.weight, attn.c_proj.bias)

    scores = q @ k.transpose(-2, -1)
    return {
        "apply the causal mask: position i attends to j <= i only": finish(
            torch.softmax(scores / math.sqrt(d_head), -1) @ v
        ),
        "scale by sqrt(d_head), the width of one head, not sqrt(d_model)": finish(
            torch.softmax((scores / math.sqrt(d_model)).masked_fill(~mask, float("-inf")), -1) @ v
        ),
        "attention runs per head: move the head axis before pos, (batch, n_heads, pos, d_head)": (
            finish(
                ref.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
                ).transpose(1, 2)
            )
        ),
    }


def check_self_attention(self_attention: Callable) -> None:
    """``self_attention(x, attn)``: causal multi-head self-attention from the weights of a
    :class:`labcore.attention.MultiHeadAttention`; equals ``attn(x)``."""
    g = torch.Generator().manual_seed(23)
    device = _device()
    cases = [
        ("batch 2, pos 5, d_model 12, 3 heads", 2, 5, 12, 3, torch.float32, "cpu"),
        ("one head", 2, 4, 8, 1, torch.float32, "cpu"),
        ("batch 1, pos 1 (a single token attends to itself)", 1, 1, 8, 2, torch.float32, "cpu"),
        ("float64, 4 heads, pos 7", 3, 7, 16, 4, torch.float64, "cpu"),
        (f"on the notebook's device ({device})", 2, 6, 16, 4, torch.float32, device),
    ]
    for case, batch, pos, d_model, n_heads, dtype, dev in cases:
        attn = ref.MultiHeadAttention(d_model, n_heads).to(dtype)
        _randomize(attn, g, scale=0.5)
        attn = attn.to(dev)
        x = torch.randn(batch, pos, d_model, generator=g, dtype=dtype).to(dev)
        before = snapshot(x)
        with torch.no_grad():
            expected = attn(x)
            mistakes = _alternatives_self_attention(x, attn)
        with _no_forward(attn, what="the attention"), _no_fused_attention():
            got = run_case(case, self_attention, x, attn)
        assert_unchanged(case, before, x, "x")
        if isinstance(got, torch.Tensor):
            got = got.detach()
        compare(
            case,
            got,
            expected,
            **_tolerance(dtype),
            hint=_diagnose(
                got,
                mistakes,
                "q, k, v = (x @ W^T + b).split(d_model, dim=-1) with W = attn.c_attn.weight; "
                "split heads, causal attention per head, merge, then attn.c_proj",
            ),
        )
    passed("self_attention", len(cases))


# --------------------------------------------------------------------------------------------------
# exercise 5: one GPT-2 block
# --------------------------------------------------------------------------------------------------
def _alternatives_block(x: torch.Tensor, block: Block) -> dict:
    def ln(t: torch.Tensor, m) -> torch.Tensor:
        return F.layer_norm(t, m.weight.shape, m.weight, m.bias, m.eps)

    def mlp(t: torch.Tensor, exact: bool = False) -> torch.Tensor:
        h = F.linear(t, block.mlp.c_fc.weight, block.mlp.c_fc.bias)
        h = F.gelu(h) if exact else F.gelu(h, approximate="tanh")
        return F.linear(h, block.mlp.c_proj.weight, block.mlp.c_proj.bias)

    attn = block.attn
    mid = x + attn(ln(x, block.ln1))
    post_ln_mid = ln(x + attn(x), block.ln1)
    return {
        "GPT-2 uses the tanh approximation of GELU: F.gelu(h, approximate='tanh')": mid
        + mlp(ln(mid, block.ln2), exact=True),
        "GPT-2 is pre-LayerNorm: normalise the *input* of each sublayer, x + Attn(LN1(x)), "
        "not the sum (post-LN, Vaswani et al.)": ln(post_ln_mid + mlp(post_ln_mid), block.ln2),
        "each sublayer is added to the residual stream: mid = x + Attn(LN1(x)), "
        "out = mid + MLP(LN2(mid))": mlp(ln(attn(ln(x, block.ln1)), block.ln2)),
        "the MLP reads LN2(mid), where mid = x + Attn(LN1(x)) includes the attention output": mid
        + mlp(ln(x, block.ln2)),
    }


def check_block_forward(block_forward: Callable) -> None:
    """``block_forward(x, block)``: one pre-LayerNorm GPT-2 block computed from a
    :class:`labcore.transformer.Block`'s weights; equals ``block(x)``."""
    g = torch.Generator().manual_seed(24)
    device = _device()
    cases = [
        ("batch 2, pos 6, d_model 16, 4 heads, d_mlp 32", 2, 6, 16, 4, 32, torch.float32, "cpu"),
        ("batch 1, pos 1", 1, 1, 8, 2, 16, torch.float32, "cpu"),
        ("float64, pos 5", 2, 5, 12, 3, 48, torch.float64, "cpu"),
        (f"on the notebook's device ({device})", 2, 4, 16, 4, 64, torch.float32, device),
    ]
    for case, batch, pos, d_model, n_heads, d_mlp, dtype, dev in cases:
        config = GPTConfig(
            vocab_size=10,
            n_ctx=8,
            d_model=d_model,
            n_layer=1,
            n_head=n_heads,
            d_mlp=d_mlp,
            layer_norm_eps=1e-3,
        )
        block = Block(config).to(dtype)
        _randomize(block, g)
        block = block.to(dev)
        x = (2.0 * torch.randn(batch, pos, d_model, generator=g, dtype=dtype) + 0.5).to(dev)
        before = snapshot(x)
        with torch.no_grad():
            expected = block(x)
            mistakes = _alternatives_block(x, block)
        forbidden = (block, block.attn, block.mlp, block.ln1, block.ln2)
        with _no_forward(*forbidden, what="the block"), _no_fused_attention():
            got = run_case(case, block_forward, x, block)
        assert_unchanged(case, before, x, "x")
        if isinstance(got, torch.Tensor):
            got = got.detach()
        compare(
            case,
            got,
            expected,
            **_tolerance(dtype),
            hint=_diagnose(
                got,
                mistakes,
                "mid = x + Attn(LN1(x)); out = mid + MLP(LN2(mid)), with F.layer_norm(..., eps="
                "block.ln1.eps) and MLP(h) = c_proj(GELU_tanh(c_fc(h)))",
            ),
        )
    passed("block_forward", len(cases))


# --------------------------------------------------------------------------------------------------
# exercise 6: reading attention patterns
# --------------------------------------------------------------------------------------------------
def check_attention_to(attention_to: Callable) -> None:
    """``attention_to(pattern, query_pos, key_pos) -> (batch, n_heads)``:
    ``pattern[b, h, query_pos[b], key_pos[b]]`` for every b and h."""
    g = torch.Generator().manual_seed(25)
    device = _device()

    def pattern(batch, n_heads, pos, dtype=torch.float32):
        scores = torch.randn(batch, n_heads, pos, pos, generator=g, dtype=dtype)
        return torch.softmax(scores.masked_fill(~ref.causal_mask(pos), float("-inf")), -1)

    cases = [
        (
            "batch 4, 3 heads, pos 7",
            pattern(4, 3, 7),
            torch.tensor([6, 5, 6, 3]),
            torch.tensor([2, 0, 4, 1]),
        ),
        ("batch of 1", pattern(1, 4, 5), torch.tensor([4]), torch.tensor([1])),
        (
            "query attends to itself (key_pos == query_pos)",
            pattern(3, 2, 6),
            torch.tensor([5, 2, 4]),
            torch.tensor([5, 2, 4]),
        ),
        (
            "float64, 1 head",
            pattern(5, 1, 4, torch.float64),
            torch.tensor([3, 3, 2, 1, 0]),
            torch.tensor([0, 1, 2, 1, 0]),
        ),
        (
            f"on the notebook's device ({device})",
            pattern(3, 4, 6).to(device),
            torch.tensor([5, 4, 3], device=device),
            torch.tensor([0, 2, 3], device=device),
        ),
    ]
    for case, p, qpos, kpos in cases:
        before = snapshot(p)
        got = run_case(case, attention_to, p, qpos, kpos)
        assert_unchanged(case, before, p, "pattern")
        batch = p.shape[0]
        expected = p[torch.arange(batch, device=p.device), :, qpos, kpos]  # (batch, n_heads)
        hint = "result[b, h] = pattern[b, h, query_pos[b], key_pos[b]], shape (batch, n_heads)"
        if isinstance(got, torch.Tensor) and got.shape == (batch, p.shape[1], batch):
            hint = (
                "pattern[:, :, query_pos, key_pos] pairs every batch element with every query: "
                "index the batch axis with torch.arange(batch) together with query_pos and key_pos"
            )
        compare(case, got, expected, hint=hint)
    passed("attention_to", len(cases))


# --------------------------------------------------------------------------------------------------
# exercise 7: ablating a head
# --------------------------------------------------------------------------------------------------
def check_ablate_head(ablate_head: Callable) -> None:
    """``ablate_head(model, tokens, layer, head)``: the logits with head ``head`` of layer ``layer``
    zeroed (its ``hook_z`` output set to 0), through ``model.run_with_hooks``."""
    device = _device()
    torch.manual_seed(26)  # GPT's random initialisation
    model = GPT(GPTConfig(vocab_size=23, n_ctx=10, d_model=16, n_layer=2, n_head=4)).to(device)
    g = torch.Generator().manual_seed(26)
    with torch.no_grad():  # larger weights than GPT-2's initialisation, so that every head matters
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(0.3 * torch.randn(p.shape, generator=g).to(device))
    model.eval()
    tokens = torch.randint(0, 23, (3, 8), generator=g).to(device)
    cases = [
        ("layer 0, head 0, batch 3", tokens, 0, 0),
        ("layer 1, head 3", tokens, 1, 3),
        ("layer 0, head 2, batch of 1", tokens[:1], 0, 2),
        ("layer 1, head 1, 5 positions", tokens[:, :5], 1, 1),
    ]

    def reference(t, layer, head, heads=None):
        def zero(z, hook):
            z = z.clone()
            z[:, :, head if heads is None else heads] = 0.0
            return z

        return model.run_with_hooks(t, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])

    with torch.no_grad():
        for case, t, layer, head in cases:
            before = snapshot(t)
            clean = model(t)
            expected = reference(t, layer, head)
            got = run_case(case, ablate_head, model, t, layer, head)
            assert_unchanged(case, before, t, "tokens")
            if not torch.equal(model(t), clean):
                model.reset_hooks()
                raise CheckFailed(
                    f"[{case}] the model's output changed after your function returned: a hook is "
                    "still attached\n  hint: model.run_with_hooks(tokens, fwd_hooks=[(name, fn)]) "
                    "removes its hooks when it returns"
                )
            mistakes = {
                "zero one head only: z has shape (batch, pos, n_heads, d_head), "
                "so the head is the third axis": reference(t, layer, head, heads=slice(None)),
                "the hook's name must use the layer argument: f'blocks.{layer}.attn.hook_z'": reference(
                    t, 1 - layer, head
                ),
                "your function returned the clean logits: is the hook function returning the "
                "modified z (or modifying it in place)?": clean,
            }
            if head != 0:
                mistakes["zero the head given by the argument `head`"] = reference(t, layer, 0)
            if isinstance(got, torch.Tensor):
                got = got.detach()
            compare(
                case,
                got,
                expected,
                hint=_diagnose(
                    got,
                    mistakes,
                    "run model.run_with_hooks with a hook on f'blocks.{layer}.attn.hook_z' that "
                    "sets z[:, :, head] to 0; return the logits (batch, pos, d_vocab)",
                ),
            )
    passed("ablate_head", len(cases))
