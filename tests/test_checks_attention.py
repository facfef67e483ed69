"""The exercise checks of lab 2 (labcore.checks.attention): they accept correct solutions, name the
typical mistakes, let an unfinished exercise's NotImplementedError through, and forbid shortcuts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import labcore
from labcore.checks import CheckFailed
from labcore.checks import attention as checks


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread (a loaded two-core machine's thread pool costs 20 ms a matmul)."""
    with labcore.one_thread():
        yield


# ---------------------------------------------------------------- correct solutions, from scratch
def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:  # a query with no allowed key: zero weights, not 0/0 = NaN
        weights = weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return weights @ v, weights


def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def split_heads(x, n_heads):
    batch, pos, d_model = x.shape
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
    return x.reshape(batch, pos, n_heads, d_model // n_heads)


def merge_heads(z):
    return z.flatten(-2)


def self_attention(x, attn, scale_by=None, causal=True):
    d_model, n_heads = attn.d_model, attn.n_heads
    q, k, v = F.linear(x, attn.c_attn.weight, attn.c_attn.bias).split(d_model, dim=-1)
    q, k, v = (split_heads(t, n_heads).transpose(1, 2) for t in (q, k, v))
    if scale_by is not None:  # a typical mistake: q is rescaled so that attention divides by it
        q = q * math.sqrt(q.shape[-1]) / math.sqrt(scale_by)
    mask = causal_mask(x.shape[1], device=x.device) if causal else None
    z, _ = attention(q, k, v, mask)
    return F.linear(merge_heads(z.transpose(1, 2)), attn.c_proj.weight, attn.c_proj.bias)


def _ln(x, m):
    return F.layer_norm(x, m.weight.shape, m.weight, m.bias, m.eps)


def _mlp(h, mlp, approximate="tanh"):
    h = F.gelu(F.linear(h, mlp.c_fc.weight, mlp.c_fc.bias), approximate=approximate)
    return F.linear(h, mlp.c_proj.weight, mlp.c_proj.bias)


def block_forward(x, block):
    mid = x + self_attention(_ln(x, block.ln1), block.attn)
    return mid + _mlp(_ln(mid, block.ln2), block.mlp)


def attention_to(pattern, query_pos, key_pos):
    return pattern[torch.arange(pattern.shape[0], device=pattern.device), :, query_pos, key_pos]


def ablate_head(model, tokens, layer, head):
    def zero(z, hook):
        z[:, :, head] = 0.0
        return z

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])


def test_checks_accept_correct_solutions(capsys):
    checks.check_attention(attention)
    checks.check_causal_mask(causal_mask)
    checks.check_split_merge_heads(split_heads, merge_heads)
    checks.check_self_attention(self_attention)
    checks.check_block_forward(block_forward)
    checks.check_attention_to(attention_to)
    checks.check_ablate_head(ablate_head)
    out = capsys.readouterr().out
    assert out.count("\u2714") == 7, out
    assert len(out.strip().splitlines()) == 7  # one line per check


def test_checks_accept_other_correct_solutions():
    """Equivalent code that the checks must not reject: a float mask, einsum, pattern ablation."""

    def attention_float_mask(q, k, v, mask=None):
        scores = torch.einsum("...td,...sd->...ts", q, k) / q.shape[-1] ** 0.5
        if mask is not None:
            scores = scores + torch.zeros_like(scores).masked_fill(~mask, float("-inf"))
        weights = scores.softmax(-1).nan_to_num(0.0)
        return weights @ v, weights

    def ablate_by_pattern(model, tokens, layer, head):
        def zero(pattern, hook):
            out = pattern.clone()
            out[:, head] = 0.0
            return out

        return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_pattern", zero)])

    def attention_nan_to_num(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
        return weights @ v, weights

    checks.check_attention(attention_float_mask)
    checks.check_attention(attention_nan_to_num)
    checks.check_ablate_head(ablate_by_pattern)
    checks.check_split_merge_heads(
        lambda x, n: split_heads(x, n).contiguous(), lambda z: z.reshape(*z.shape[:2], -1)
    )


# ---------------------------------------------------------------- typical mistakes
def _unscaled(q, k, v, mask=None):
    return attention(q * math.sqrt(q.shape[-1]), k, v, mask)


def _softmax_over_queries(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores, dim=-2)
    return weights @ v, weights


def _mask_inverted(q, k, v, mask=None):
    return attention(q, k, v, None if mask is None else ~mask)


def _nan_in_dead_rows(q, k, v, mask=None):  # the plain formula: 0/0 = NaN in a fully masked row
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def _mask_ignored(q, k, v, mask=None):
    return attention(q, k, v, None)


def _fused(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None


def _split_wrong(x, n_heads):
    batch, pos, d_model = x.shape
    if d_model % n_heads:
        raise ValueError("not divisible")
    return x.reshape(batch, n_heads, pos, d_model // n_heads).transpose(1, 2)


def _split_no_check(x, n_heads):
    return x.reshape(x.shape[0], x.shape[1], n_heads, -1) if x.shape[-1] % n_heads == 0 else x


def _block_exact_gelu(x, block):
    mid = x + self_attention(_ln(x, block.ln1), block.attn)
    return mid + _mlp(_ln(mid, block.ln2), block.mlp, approximate="none")


def _block_post_ln(x, block):
    mid = _ln(x + self_attention(x, block.attn), block.ln1)
    return _ln(mid + _mlp(mid, block.mlp), block.ln2)


def _block_no_residual(x, block):
    mid = self_attention(_ln(x, block.ln1), block.attn)
    return _mlp(_ln(mid, block.ln2), block.mlp)


def _ablate_all_heads(model, tokens, layer, head):
    def zero(z, hook):
        return torch.zeros_like(z)

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])


def _ablate_leaves_hook(model, tokens, layer, head):
    def zero(z, hook):
        z[:, :, head] = 0.0
        return z

    model.blocks[layer].attn.hook_z.add_hook(zero)
    return model(tokens)


def _ablate_layer_0(model, tokens, layer, head):
    return ablate_head(model, tokens, 0, head)


def _ablate_hook_returns_copy_unused(model, tokens, layer, head):
    def zero(z, hook):
        z.clone()[:, :, head] = 0.0  # modifies a copy that nobody uses

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])


@pytest.mark.parametrize(
    "check, wrong, message",
    [
        (checks.check_attention, _unscaled, r"scaled by 1/sqrt\(d_k\)"),
        (
            checks.check_attention,
            lambda q, k, v, mask=None: attention(q / math.sqrt(q.shape[-1]), k, v, mask),
            "not d_k itself",
        ),
        (checks.check_attention, _softmax_over_queries, "normalises over the keys"),
        (checks.check_attention, _mask_inverted, r"True where attention is \*allowed\*"),
        (checks.check_attention, _mask_ignored, "before the softmax"),
        (checks.check_attention, _nan_in_dead_rows, "keys are all masked .* zero weights"),
        (checks.check_attention, _fused, "written from its formula"),
        (
            checks.check_attention,
            lambda q, k, v, mask=None: attention(q, k, v, mask)[0],
            "expected a pair",
        ),
        (
            checks.check_attention,
            lambda q, k, v, mask=None: attention(q.double(), k.double(), v.double(), mask),
            "should have dtype torch.float32",
        ),
        (
            checks.check_causal_mask,
            lambda T, device=None: torch.ones(T, T, dtype=torch.bool, device=device).triu(),
            "lower triangle",
        ),
        (
            checks.check_causal_mask,
            lambda T, device=None: torch.ones(T, T, dtype=torch.bool, device=device).tril(-1),
            "the diagonal is allowed",
        ),
        (
            checks.check_causal_mask,
            lambda T, device=None: torch.ones(T, T, device=device).tril(),
            "bool tensor",
        ),
        (checks.check_split_merge_heads, (_split_wrong, merge_heads), "mixes positions into heads"),
        (checks.check_split_merge_heads, (_split_no_check, merge_heads), "expected a ValueError"),
        (
            checks.check_split_merge_heads,
            (split_heads, lambda z: z.transpose(-1, -2).flatten(-2)),
            "side by side",
        ),
        (
            checks.check_self_attention,
            lambda x, attn: self_attention(x, attn, causal=False),
            "is causal",
        ),
        (
            checks.check_self_attention,
            lambda x, attn: self_attention(x, attn, scale_by=attn.d_model),
            "not of d_model",
        ),
        (checks.check_self_attention, lambda x, attn: attn(x), "from the weights"),
        (checks.check_block_forward, _block_exact_gelu, "tanh approximation"),
        (checks.check_block_forward, _block_post_ln, "pre-LayerNorm"),
        (checks.check_block_forward, _block_no_residual, "added to the residual stream"),
        (checks.check_block_forward, lambda x, block: block(x), "from the weights"),
        (
            checks.check_block_forward,
            lambda x, block: x + block.attn(block.ln1(x)) + block.mlp(block.ln2(x)),
            "from the weights",
        ),
        (checks.check_attention_to, lambda p, qp, kp: p[:, :, qp, kp], "pairs every batch element"),
        (
            checks.check_attention_to,
            lambda p, qp, kp: p[torch.arange(len(qp)), :, kp, qp],
            "values differ",
        ),
        (checks.check_ablate_head, _ablate_all_heads, "only one head is ablated"),
        (checks.check_ablate_head, _ablate_leaves_hook, "a hook is still attached"),
        (checks.check_ablate_head, _ablate_layer_0, "another layer"),
        (checks.check_ablate_head, _ablate_hook_returns_copy_unused, "unablated logits"),
        (checks.check_attention, lambda q, k, v, mask=None: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_checks_reject_typical_mistakes_with_a_precise_message(check, wrong, message):
    args = wrong if isinstance(wrong, tuple) else (wrong,)
    with pytest.raises(CheckFailed, match=message):
        check(*args)


def test_a_failure_shows_the_input_expected_and_got():
    with pytest.raises(CheckFailed) as info:
        checks.check_attention(_unscaled)
    text = str(info.value)
    assert "[batch 2, 2 heads, T = S = 4, d_k = 6, no mask] weights" in text
    assert "expected:" in text and "got:" in text and "hint:" in text


def test_checks_catch_in_place_modification_of_the_input():
    def scales_q_in_place(q, k, v, mask=None):
        q /= math.sqrt(q.shape[-1])
        return attention(q * math.sqrt(q.shape[-1]), k, v, mask)

    with pytest.raises(CheckFailed, match="modified its input 'q'"):
        checks.check_attention(scales_q_in_place)


def test_the_forbidden_shortcuts_are_restored_after_a_check():
    with pytest.raises(CheckFailed):
        checks.check_attention(_fused)
    q = torch.randn(1, 3, 4)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, q, q), attention(q, q, q)[0])


@pytest.mark.parametrize(
    "check, n_args",
    [
        (checks.check_attention, 1),
        (checks.check_causal_mask, 1),
        (checks.check_split_merge_heads, 2),
        (checks.check_self_attention, 1),
        (checks.check_block_forward, 1),
        (checks.check_attention_to, 1),
        (checks.check_ablate_head, 1),
    ],
)
def test_an_unfinished_exercise_raises_not_implemented_error(check, n_args):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        check(*([stub] * n_args))


# ---------------------------------------------------------------- shared rules (issue #13)
def _run_every_check() -> None:
    checks.check_attention(attention)
    checks.check_causal_mask(causal_mask)
    checks.check_split_merge_heads(split_heads, merge_heads)
    checks.check_self_attention(self_attention)
    checks.check_block_forward(block_forward)
    checks.check_attention_to(attention_to)
    checks.check_ablate_head(ablate_head)


def test_every_check_leaves_the_global_rng_and_default_dtype_alone():
    torch.manual_seed(1234)
    torch.rand(3)  # a state that no reseed to a round number gives back
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    _run_every_check()
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.get_default_dtype() == dtype


def test_a_reseeding_answer_is_caught_whatever_the_state():
    def reseeds(q, k, v, mask=None):
        torch.manual_seed(0)
        return attention(q, k, v, mask)

    for seed in (0, 1):
        torch.manual_seed(seed)  # seed 0: the reseed leaves the state as it was, still caught
        state = torch.random.get_rng_state()
        with pytest.raises(CheckFailed, match="global random state"):
            checks.check_attention(reseeds)
        assert torch.equal(state, torch.random.get_rng_state())


def test_a_mask_ignoring_device_is_caught_on_a_cpu_machine():
    with pytest.raises(CheckFailed, match="meta"):
        checks.check_causal_mask(lambda T, device=None: torch.ones(T, T, dtype=torch.bool).tril())


def test_each_exercise_is_graded_with_labcore_references_for_the_earlier_ones():
    """A wrong attention fails exercise 1 only: self_attention and block_forward run with
    labcore's attention (and self_attention) bound under those names, restored afterwards."""
    space = globals()
    saved = space["attention"], space["self_attention"]
    try:
        space["attention"] = lambda q, k, v, mask=None: saved[0](q * 2.0, k, v, mask)
        with pytest.raises(CheckFailed):
            checks.check_attention(space["attention"])
        wrong = space["attention"]
        checks.check_self_attention(self_attention)  # calls `attention`: labcore's during the call
        assert space["attention"] is wrong  # the student's name is restored
        space["self_attention"] = lambda x, attn: x
        checks.check_block_forward(block_forward)
        assert space["self_attention"] is not saved[1]
    finally:
        space["attention"], space["self_attention"] = saved


def test_check_and_rubric_share_one_rule_per_exercise():
    from labcore.rubrics import load_rubric

    rubric = load_rubric("02-attention")
    for exercise in rubric.exercises:
        source, _ = checks.EXERCISES[exercise.function]
        assert exercise.call_source == source
        assert {name for name, _ in checks.CASES[exercise.function](torch.Generator(), None)}


def test_devices_compare_by_type_and_index_where_both_name_one():
    from labcore.checks.rules import same_device as _same_device

    assert _same_device("cuda", "cuda:0") and _same_device(torch.device("cuda:1"), "cuda")
    assert not _same_device("cuda:0", "cuda:1") and not _same_device("cpu", "cuda")
