"""Checks for lab 5, transcoders and circuits (``labs/05-transcoders.ipynb``).

One check per exercise. Each runs the student's function and a reference (``labcore.transcoder``
or a few lines here) on the same inputs, edge cases included (a batch of one, a 3-D input, float64,
constant features, the device in use), and prints one line starting with ✔ or raises
:class:`~labcore.checks.CheckFailed` saying which input failed, what was expected, what came and,
where a typical mistake gives a recognisable result, what the likely cause is (the residual stream
read instead of the MLP's normalised input, a forgotten bias, the mean squared error averaged over
the output dimensions, an L2 penalty where L1 was asked, decoder columns normalised instead of
rows, the transcoder's error term dropped, ...). While the student's code runs, the labcore function
that the exercise rebuilds is switched off, so that calling it fails with a clear message instead
of passing silently. Models are small random GPTs whose every weight (LayerNorm gains and biases
included) is drawn at random, so that a forgotten term always shows.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import labcore
from labcore import transcoder as ref
from labcore.checks import (
    CheckFailed,
    assert_unchanged,
    compare,
    diagnose,
    meta_check,
    passed,
    rules,
    run_case,
    snapshot,
    without,
)
from labcore.transformer import GPT, GPTConfig

__all__ = [
    "check_mlp_io",
    "check_transcoder_forward",
    "check_transcoder_loss",
    "check_metrics",
    "check_penalty",
    "check_splice",
    "check_animacy_correlation",
    "check_ablate_features",
]

Tensor = torch.Tensor
F64 = torch.float64


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _without_ref(*names: str, what: str) -> contextlib.AbstractContextManager[None]:
    """Make the ``labcore.transcoder`` functions ``names`` fail while the student's code runs."""
    return without(*((ref, name) for name in names), what=what)


def _pair(case: str, got: object, names: str) -> tuple[object, object]:
    problem = rules.tuple_rule(got, 2, names.strip("()"))
    if problem:
        raise CheckFailed(
            f"[{case}] {problem}\n  hint: the result is the pair {names}, in this order"
        )
    return got[0], got[1]


def _random_gpt(
    seed: int,
    *,
    vocab: int = 23,
    n_ctx: int = 12,
    d_model: int = 16,
    n_layer: int = 2,
    n_head: int = 4,
    d_mlp: int = 32,
    config: dict | None = None,
) -> GPT:
    """A small GPT with every parameter random (LayerNorm gains near 1), in eval mode, on the CPU."""
    config = config or {"vocab_size": vocab, "n_ctx": n_ctx, "d_model": d_model,
                        "n_layer": n_layer, "n_head": n_head, "d_mlp": d_mlp}  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # the constructor's draw, overwritten below
        model = GPT(GPTConfig(**config))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            p.copy_(1.0 + 0.2 * noise if name.endswith(".weight") and p.ndim == 1 else 0.3 * noise)
    return model.eval()


def _random_transcoder(
    d_in: int,
    d_hidden: int,
    d_out: int,
    g: torch.Generator,
    dtype: torch.dtype = torch.float32,
    enc_bias: float = 0.0,
) -> ref.Transcoder:
    """A :class:`Transcoder` with random weights and biases (some features active, some not)."""
    with torch.random.fork_rng(devices=[]):  # the constructor's draw would use the global RNG
        tc = ref.Transcoder(d_in, d_hidden, d_out)
    tc.reset_parameters(g)
    with torch.no_grad():
        tc.b_enc.copy_(enc_bias + 0.3 * torch.randn(d_hidden, generator=g))
        tc.b_dec.copy_(0.5 * torch.randn(d_out, generator=g))
    return tc.to(dtype).eval()


class _ExactMLP(nn.Module):
    """A 'transcoder' that computes the MLP exactly: ``encode(x) = x``, ``decode(f) = MLP(f)``.

    ``forward(x)`` returns ``(MLP(x), x)`` like a :class:`Transcoder`; splicing it must leave the
    model unchanged.
    """

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def encode(self, x: Tensor) -> Tensor:
        return x

    def decode(self, features: Tensor) -> Tensor:
        return self.mlp(features)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.mlp(x), x


def _check_no_hook_left(case: str, model: GPT, tokens: Tensor, clean: Tensor) -> None:
    with torch.no_grad():
        after = model(tokens)
    if not torch.equal(after, clean):
        model.reset_hooks()
        raise CheckFailed(
            f"[{case}] the model's output changed after your function returned: a hook is still "
            "attached\n  hint: model.run_with_hooks(tokens, fwd_hooks=[(name, fn), ...]) removes "
            "its hooks when it returns"
        )


# --------------------------------------------------------------------------------------------------
# references (also used by labcore.rubrics.transcoder and the tests)
# --------------------------------------------------------------------------------------------------
def _transcoder_forward(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor):
    """Reference ``(y_hat, f)`` with ``f = relu(x W_enc + b_enc)``, ``y_hat = f W_dec + b_dec``."""
    f = F.relu(x @ W_enc + b_enc)
    return f @ W_dec + b_dec, f


def _transcoder_loss(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    """Reference ``mean_tokens ||y - y_hat||^2 + l1_coeff * sum_i |f_i|``."""
    y_hat, f = _transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
    return ((y - y_hat).pow(2).sum(-1) + l1_coeff * f.abs().sum(-1)).mean()


def _normalize_rows(W_dec: Tensor) -> Tensor:
    """Reference: every row of ``W_dec (d_hidden, d_out)`` divided by its Euclidean norm."""
    return W_dec / W_dec.norm(dim=1, keepdim=True)


def _penalty(f: Tensor, kind: str) -> Tensor:
    """Reference: ``mean_tokens sum_i |f_i|`` ("l1") or ``mean_tokens sum_i f_i^2`` ("l2")."""
    if kind not in ("l1", "l2"):
        raise ValueError(f'kind must be "l1" or "l2", got {kind!r}')
    per_token = f.abs().sum(-1) if kind == "l1" else f.pow(2).sum(-1)
    return per_token.mean()


def _loss_recovered(original, ablated, spliced):
    """Reference ``(L_ablated - L_spliced) / (L_ablated - L_original)``."""
    return (ablated - spliced) / (ablated - original)


def _spliced_logits(model: GPT, transcoder: nn.Module, layer: int, tokens: Tensor) -> Tensor:
    """Reference: the logits with ``blocks.{layer}.hook_mlp_out`` replaced by the transcoder's
    output, computed from ``blocks.{layer}.ln2.hook_normalized``."""
    return model.run_with_hooks(tokens, fwd_hooks=ref.splice_hooks(transcoder, layer))


def _animacy_correlation(features: Tensor, animate: Tensor) -> Tensor:
    """Reference Pearson correlation of every column of ``features (n, d_hidden)`` with
    ``animate (n,)`` (0/1); 0 for constant columns."""
    a = animate.to(features.dtype)
    fc = features - features.mean(0)  # (n, d_hidden)
    ac = a - a.mean()  # (n,)
    cov = (fc * ac[:, None]).sum(0)  # (d_hidden,)
    scale = fc.pow(2).sum(0).sqrt() * ac.pow(2).sum().sqrt()  # (d_hidden,)
    return torch.where(scale > 0, cov / scale.clamp_min(torch.finfo(features.dtype).tiny), 0.0)


def _edit_at(positions: Tensor, features: Sequence[int], value: float | Tensor = 0.0):
    """An edit ``f (batch, pos, d_hidden) -> f`` setting ``features`` to ``value`` at one position
    per prompt (``positions (batch,)``)."""
    index = torch.as_tensor(list(features), dtype=torch.long)

    def edit(f: Tensor) -> Tensor:
        f = f.clone()
        rows = torch.arange(f.shape[0], device=f.device)
        picked = f[rows, positions.to(f.device)]  # (batch, d_hidden), a copy
        picked[:, index.to(f.device)] = value
        f[rows, positions.to(f.device)] = picked
        return f

    return edit


def _ablate_features(
    model: GPT,
    transcoder: nn.Module,
    layer: int,
    tokens: Tensor,
    positions: Tensor,
    features: Sequence[int],
    keep_error: bool = True,
) -> Tensor:
    """Reference: the logits with ``features`` zeroed at ``positions`` (the error term kept)."""
    hooks = ref.splice_hooks(
        transcoder, layer, edit=_edit_at(positions, features), keep_error=keep_error
    )
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


# --------------------------------------------------------------------------------------------------
# exercise 1: the MLP's inputs and outputs
# --------------------------------------------------------------------------------------------------
def _mlp_io_mistakes(model: GPT, tokens: Tensor, layer: int, which: int):
    def cached(name: str) -> Tensor:
        _, cache = model.run_with_cache(tokens, names_filter=[name])
        return cache[name].flatten(0, 1)

    if which == 0:
        return {
            "the MLP reads the *normalised* residual stream: blocks.{layer}.ln2.hook_normalized, "
            "not hook_resid_mid": lambda: cached(f"blocks.{layer}.hook_resid_mid"),
            "inputs come first: the pair is (inputs, targets) = (ln2.hook_normalized, "
            "hook_mlp_out)": lambda: cached(f"blocks.{layer}.hook_mlp_out"),
            "use the layer argument in the hook names: f'blocks.{layer}.ln2.hook_normalized'": lambda: (
                cached(f"blocks.{1 - layer}.ln2.hook_normalized")
            ),
            "that is the input of the attention (ln1), not of the MLP (ln2)": lambda: cached(
                f"blocks.{layer}.ln1.hook_normalized"
            ),
        }
    return {
        "the MLP's output is blocks.{layer}.hook_mlp_out; hook_resid_post adds it to the "
        "residual stream": lambda: cached(f"blocks.{layer}.hook_resid_post"),
        "targets come second: the pair is (inputs, targets) = (ln2.hook_normalized, "
        "hook_mlp_out)": lambda: cached(f"blocks.{layer}.ln2.hook_normalized"),
        "use the layer argument in the hook names: f'blocks.{layer}.hook_mlp_out'": lambda: cached(
            f"blocks.{1 - layer}.hook_mlp_out"
        ),
    }


def check_mlp_io(mlp_io: Callable) -> None:
    """``mlp_io(model, tokens, layer) -> (inputs, targets)``, both ``(batch * pos, d_model)``:
    ``blocks.{layer}.ln2.hook_normalized`` and ``blocks.{layer}.hook_mlp_out``."""
    device = labcore.get_device()
    model = _random_gpt(50)
    g = torch.Generator().manual_seed(50)
    tokens = torch.randint(0, 23, (3, 7), generator=g)
    cases = [
        ("layer 0, batch 3, pos 7", model, tokens, 0),
        ("layer 1 (the last block)", model, tokens, 1),
        ("batch of 1, pos 1", model, tokens[:1, :1].clone(), 1),
        ("float64 model, layer 0", _random_gpt(51).to(F64), tokens[:2], 0),
        (f"on the notebook's device ({device}), layer 1", _random_gpt(52).to(device),
         tokens.to(device), 1),
    ]  # fmt: skip
    for case, m, t, layer in cases:
        before = snapshot(t)
        with torch.no_grad():
            expected = ref.collect_mlp_io(m, t, layer)
        with _without_ref("collect_mlp_io", what="the collection through hooks"), torch.no_grad():
            got = run_case(case, mlp_io, m, t, layer)
        assert_unchanged(case, before, t, "tokens")
        inputs, targets = _pair(case, got, "(inputs, targets)")
        batch, pos = t.shape
        d_model = m.config.d_model
        flat_hint = (
            f"flatten batch and position into one axis: (batch * pos, d_model) = "
            f"({batch * pos}, {d_model}), e.g. x.flatten(0, 1) or x.reshape(-1, d_model)"
        )
        for name, value, which in (("inputs", inputs, 0), ("targets", targets, 1)):
            if isinstance(value, Tensor) and value.shape == (batch, pos, d_model):
                raise CheckFailed(
                    f"[{case}: {name}] expected shape {(batch * pos, d_model)}, got "
                    f"{tuple(value.shape)}\n  hint: {flat_hint}"
                )
            if isinstance(value, Tensor) and value.shape[-1:] == (m.config.d_mlp,):
                raise CheckFailed(
                    f"[{case}: {name}] expected width d_model = {d_model}, got "
                    f"{tuple(value.shape)}\n  hint: mlp.hook_pre and mlp.hook_post are the "
                    f"{m.config.d_mlp} neurons inside the MLP; the transcoder imitates the map "
                    "ln2.hook_normalized -> hook_mlp_out"
                )
            with torch.no_grad():
                hint = diagnose(
                    value,
                    expected[which],
                    _mlp_io_mistakes(m, t, layer, which),
                    "inputs = cache[f'blocks.{layer}.ln2.hook_normalized'], targets = "
                    "cache[f'blocks.{layer}.hook_mlp_out'], each flattened to (batch * pos, "
                    "d_model)",
                )
            if isinstance(value, Tensor):
                value = value.detach()
            compare(
                f"{case}: {name}",
                value,
                expected[which],
                **rules.tolerance(expected[which].dtype),
                hint=hint,
            )
    passed("mlp_io", len(cases))


# --------------------------------------------------------------------------------------------------
# exercise 2: the transcoder's forward pass
# --------------------------------------------------------------------------------------------------
def _forward_mistakes(x, W_enc, b_enc, W_dec, b_dec, y_ref, f_ref):
    """Results of typical mistakes in the forward pass: for ``f``, then for ``y_hat``."""
    pre = x @ W_enc + b_enc
    f_mistakes = {
        "the features go through a ReLU: f = relu(x @ W_enc + b_enc)": lambda: pre,
        "add the encoder bias b_enc before the ReLU": lambda: F.relu(x @ W_enc),
        "the pair is (y_hat, f), in this order": lambda: y_ref,
    }
    y_mistakes = {
        "add the decoder bias: y_hat = f @ W_dec + b_dec": lambda: f_ref @ W_dec,
        "decode the features after the ReLU (f), not the pre-activations":
            lambda: pre @ W_dec + b_dec,
        "no ReLU on the output: y_hat = f @ W_dec + b_dec is linear in f":
            lambda: F.relu(f_ref @ W_dec + b_dec),
    }  # fmt: skip
    return f_mistakes, y_mistakes


def check_transcoder_forward(transcoder_forward: Callable) -> None:
    """``transcoder_forward(x, W_enc, b_enc, W_dec, b_dec) -> (y_hat, f)`` for ``x (..., d_in)``."""
    g = torch.Generator().manual_seed(51)
    device = labcore.get_device()
    settings = [
        ("x (6, 5), d_hidden 12, d_out 4", (6,), 5, 12, 4, torch.float32, "cpu"),
        ("batch of 1: x (1, 8), d_hidden 16, d_out 8", (1,), 8, 16, 8, torch.float32, "cpu"),
        ("3-D input: x (2, 3, 5) (batch, pos, d_in)", (2, 3), 5, 10, 5, torch.float32, "cpu"),
        ("float64, x (4, 6), d_hidden 9, d_out 3", (4,), 6, 9, 3, F64, "cpu"),
        (f"on the notebook's device ({device}), also run on 'meta' tensors", (3, 2), 4, 8, 4,
         torch.float32, device),
    ]  # fmt: skip
    for case, lead, d_in, d_hidden, d_out, dtype, dev in settings:
        tc = _random_transcoder(d_in, d_hidden, d_out, g, dtype).to(dev)
        x = (1.5 * torch.randn(*lead, d_in, generator=g, dtype=dtype)).to(dev)
        params = [p.detach().clone() for p in (tc.W_enc, tc.b_enc, tc.W_dec, tc.b_dec)]
        W_enc, b_enc, W_dec, b_dec = params
        inputs = {"x": x, "W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
        before = {name: snapshot(t) for name, t in inputs.items()}
        with torch.no_grad():
            y_ref, f_ref = tc(x)
        got = run_case(case, transcoder_forward, x, W_enc, b_enc, W_dec, b_dec)
        for name, t in inputs.items():
            assert_unchanged(case, before[name], t, name)
        y_hat, f = _pair(case, got, "(y_hat, f)")
        f_mistakes, y_mistakes = _forward_mistakes(x, *params, y_ref, f_ref)
        tol = rules.tolerance(dtype)
        compare(
            f"{case}: f", f, f_ref, **tol,
            hint=diagnose(f, f_ref, f_mistakes,
                           "f = relu(x @ W_enc + b_enc), shape (..., d_hidden)"),
        )  # fmt: skip
        compare(
            f"{case}: y_hat", y_hat, y_ref, **tol,
            hint=diagnose(y_hat, y_ref, y_mistakes,
                           "y_hat = f @ W_dec + b_dec, shape (..., d_out)"),
        )  # fmt: skip
        if "meta" in case:
            meta_check(case, transcoder_forward, x, *params, n_outputs=2)
    passed("transcoder_forward", len(settings))


# --------------------------------------------------------------------------------------------------
# exercise 3: the training objective and the decoder's unit norm
# --------------------------------------------------------------------------------------------------
def _loss_mistakes(x, y, params, coeff):
    """Results of typical mistakes in the training objective."""
    y_hat, f = _transcoder_forward(x, *params)
    sq = (y - y_hat).pow(2)
    return {
        "||y - y_hat||^2 sums over the output dimensions; average over tokens only "
        "(F.mse_loss also averages over the dimensions)":
            lambda: (sq.mean(-1) + coeff * f.sum(-1)).mean(),
        "the penalty is L1, sum_i |f_i|, not the sum of squares":
            lambda: (sq.sum(-1) + coeff * f.pow(2).sum(-1)).mean(),
        "multiply the penalty by l1_coeff": lambda: (sq.sum(-1) + f.sum(-1)).mean(),
        "average the penalty over tokens as well, not sum it":
            lambda: sq.sum(-1).mean() + coeff * f.sum(),
        "average over tokens: the loss is a mean, not a sum over the batch":
            lambda: (sq.sum(-1) + coeff * f.sum(-1)).sum(),
    }  # fmt: skip


def _rows_mistakes(w):
    """Results of typical mistakes in normalising the decoder rows."""
    return {
        "normalise each row (one per feature, dim=1), not each column":
            lambda: w / w.norm(dim=0, keepdim=True),
        "divide each row by its norm, not by its squared norm":
            lambda: w / w.pow(2).sum(1, keepdim=True),
        "normalise every row separately, not the whole matrix at once": lambda: w / w.norm(),
    }  # fmt: skip


def check_transcoder_loss(transcoder_loss: Callable, normalize_decoder_rows: Callable) -> None:
    """``transcoder_loss(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff)``: the mean over tokens of
    ``||y - y_hat||^2 + l1_coeff * sum_i |f_i|``, differentiable; ``normalize_decoder_rows(W_dec)``:
    ``W_dec`` with unit-norm rows."""
    g = torch.Generator().manual_seed(52)
    device = labcore.get_device()
    settings = [
        ("n 8, d_in 5, d_hidden 12, d_out 4, l1_coeff 0.1", 8, 5, 12, 4, 0.1, torch.float32, "cpu"),
        ("l1_coeff 0 (the squared error alone)", 6, 4, 8, 4, 0.0, torch.float32, "cpu"),
        ("batch of 1 token, l1_coeff 2.0", 1, 6, 10, 6, 2.0, torch.float32, "cpu"),
        ("float64, l1_coeff 0.5", 7, 3, 6, 5, 0.5, F64, "cpu"),
        (f"on the notebook's device ({device})", 5, 4, 8, 4, 0.3, torch.float32, device),
    ]
    n_cases = 0
    for case, n, d_in, d_hidden, d_out, coeff, dtype, dev in settings:
        tc = _random_transcoder(d_in, d_hidden, d_out, g, dtype, enc_bias=0.2).to(dev)
        x = torch.randn(n, d_in, generator=g, dtype=dtype).to(dev)
        y = (2.0 * torch.randn(n, d_out, generator=g, dtype=dtype)).to(dev)
        params = [p.detach().clone().requires_grad_() for p in (tc.W_enc, tc.b_enc, tc.W_dec,
                                                                 tc.b_dec)]  # fmt: skip
        expected = _transcoder_loss(x, y, *params, coeff)
        grads_ref = torch.autograd.grad(expected, params)
        before = (snapshot(x), snapshot(y))
        with rules.reference_in_place(transcoder_loss, {"transcoder_forward": _transcoder_forward}):
            got = run_case(case, transcoder_loss, x, y, *params, coeff)
        assert_unchanged(case, before[0], x, "x")
        assert_unchanged(case, before[1], y, "y")
        with torch.no_grad():
            mistakes = _loss_mistakes(x, y, [p.detach() for p in params], coeff)
        hint = diagnose(
            got.detach() if isinstance(got, Tensor) else got,
            expected.detach(),
            mistakes,
            "loss = ((y - y_hat)^2 summed over d_out + l1_coeff * |f| summed over d_hidden), "
            "averaged over the tokens; a 0-d tensor",
        )
        compare(f"{case}: loss", got, expected.detach(), **rules.tolerance(dtype), hint=hint)
        if not got.requires_grad:
            raise CheckFailed(
                f"[{case}] the loss does not require gradients, so training could not use it"
                "\n  hint: compute it with torch operations on the parameters (no .item(), "
                "no torch.no_grad(), no .detach())"
            )
        try:
            grads = torch.autograd.grad(got, params, allow_unused=True)
        except RuntimeError as err:
            raise CheckFailed(f"[{case}] backward through your loss failed: {err}") from err
        for name, grad, grad_ref in zip(
            ("W_enc", "b_enc", "W_dec", "b_dec"), grads, grads_ref, strict=True
        ):
            if grad is None:
                raise CheckFailed(
                    f"[{case}] the loss does not depend on {name}\n  hint: compute y_hat and f "
                    "from all four parameters"
                )
            compare(f"{case}: gradient with respect to {name}", grad, grad_ref,
                    **rules.tolerance(dtype), hint="the value is right but not its gradient: "
                    "use differentiable torch operations only")  # fmt: skip
        n_cases += 1

    row_settings = [
        ("W_dec (12, 5)", (12, 5), torch.float32, "cpu"),
        ("a single feature: W_dec (1, 8)", (1, 8), torch.float32, "cpu"),
        ("d_out 1: W_dec (6, 1)", (6, 1), torch.float32, "cpu"),
        ("float64, W_dec (4, 7)", (4, 7), F64, "cpu"),
        (f"on the notebook's device ({device})", (9, 4), torch.float32, device),
    ]
    for case, shape, dtype, dev in row_settings:
        w = (torch.randn(*shape, generator=g, dtype=dtype) * 3.0).to(dev)
        before = snapshot(w)
        expected = _normalize_rows(w)
        got = run_case(f"normalize_decoder_rows, {case}", normalize_decoder_rows, w)
        assert_unchanged(f"normalize_decoder_rows, {case}", before, w, "W_dec")
        hint = diagnose(
            got,
            expected,
            _rows_mistakes(before),
            "W_dec[i] / ||W_dec[i]|| for every row i, same shape as W_dec",
        )
        if isinstance(got, Tensor):
            got = got.detach()
        compare(
            f"normalize_decoder_rows, {case}", got, expected, **rules.tolerance(dtype), hint=hint
        )
        n_cases += 1
    passed("transcoder_loss and normalize_decoder_rows", n_cases)


# --------------------------------------------------------------------------------------------------
# exercise 4: the metrics
# --------------------------------------------------------------------------------------------------
def _fvu_mistakes(y_hat, y, expected):
    """Results of typical mistakes in the FVU."""
    err = (y - y_hat).pow(2).sum()
    flat = y.reshape(-1, y.shape[-1])
    return {
        "centre y with its mean over the tokens before squaring: the denominator is "
        "sum ||y - mean(y)||^2, not sum ||y||^2": lambda: err / y.pow(2).sum(),
        "mean(y) is the mean output vector (one mean per dimension, over the tokens), "
        "not the mean of all entries": lambda: err / (y - y.mean()).pow(2).sum(),
        "sum over the tokens and the dimensions before dividing (one ratio, not one per "
        "dimension)": lambda: (
            (flat - y_hat.reshape(flat.shape)).pow(2).sum(0)
            / (flat - flat.mean(0)).pow(2).sum(0)).mean(),
        "FVU is the *unexplained* fraction: errors over variance, not 1 minus it":
            lambda: 1 - expected,
    }  # fmt: skip


def _l0_mistakes(f):
    """Results of typical mistakes in L0 (in float64)."""
    active = (f != 0).to(F64)
    return {
        "average over the tokens: L0 is the *mean* number of active features per token, "
        "not the total": lambda: active.sum(),
        "count the active features of each token (sum over the last axis), not the "
        "fraction of active entries": lambda: active.mean(),
        "count over the features of each token (the last axis), then average over tokens":
            lambda: active.reshape(-1, f.shape[-1]).sum(0).mean(),
    }  # fmt: skip


def check_metrics(fvu: Callable, l0: Callable) -> None:
    """``fvu(y_hat, y)``: ``sum ||y - y_hat||^2 / sum ||y - mean(y)||^2`` (mean over tokens);
    ``l0(f)``: the mean number of nonzero features per token. Both 0-d tensors."""
    g = torch.Generator().manual_seed(53)
    device = labcore.get_device()

    def noisy(*shape, dtype=torch.float32, noise=0.3):
        y = (
            torch.randn(*shape, generator=g, dtype=dtype)
            * torch.linspace(0.5, 3, shape[-1], dtype=dtype)
            + 1.0
        )
        return y + noise * torch.randn(*shape, generator=g, dtype=dtype), y

    y_a = noisy(10, 4)[1]
    fvu_settings = [
        ("n 20, d 6", *noisy(20, 6)),
        ("3-D: (batch 3, pos 5, d 4), the mean over all 15 tokens", *noisy(3, 5, 4)),
        ("float64, n 9, d 3", *noisy(9, 3, dtype=F64)),
        ("a perfect prediction (FVU 0)", y_a.clone(), y_a),
        ("predicting the mean output everywhere (FVU 1)", y_a.mean(0).expand(10, 4).clone(), y_a),
        (f"on the notebook's device ({device})", *(t.to(device) for t in noisy(8, 5))),
    ]  # fmt: skip
    for case, y_hat, y in fvu_settings:
        before = (snapshot(y_hat), snapshot(y))
        expected = ref.fvu(y_hat, y)
        with _without_ref("fvu", what="the FVU"):
            got = run_case(f"fvu, {case}", fvu, y_hat, y)
        assert_unchanged(f"fvu, {case}", before[0], y_hat, "y_hat")
        assert_unchanged(f"fvu, {case}", before[1], y, "y")
        hint = diagnose(
            got,
            expected,
            _fvu_mistakes(y_hat, y, expected),
            "FVU = (sum over tokens of ||y - y_hat||^2) / (sum over tokens of "
            "||y - mean(y)||^2), a 0-d tensor; the tokens are all leading axes",
        )
        compare(f"fvu, {case}", got, expected, **rules.tolerance(y.dtype), hint=hint)

    def sparse(*shape, dtype=torch.float32):
        return F.relu(torch.randn(*shape, generator=g, dtype=dtype) - 0.8)

    l0_settings = [
        ("f (12, 20), ReLU features", sparse(12, 20)),
        ("3-D: f (2, 4, 16)", sparse(2, 4, 16)),
        ("a single token: f (1, 30)", sparse(1, 30)),
        ("no feature active: f (5, 8) all zero", torch.zeros(5, 8)),
        ("float64: f (6, 10)", sparse(6, 10, dtype=F64)),
        (f"on the notebook's device ({device})", sparse(7, 9).to(device)),
    ]
    for case, f in l0_settings:
        before = snapshot(f)
        expected = ref.l0(f).to(F64)  # a mean of counts: compared in float64, any float dtype
        with _without_ref("l0", what="L0"):
            got = run_case(f"l0, {case}", l0, f)
        assert_unchanged(f"l0, {case}", before, f, "f")
        if isinstance(got, Tensor) and got.is_floating_point():
            got = got.detach().to(F64)
        elif isinstance(got, Tensor):
            raise CheckFailed(
                f"[l0, {case}] expected a float tensor, got dtype {got.dtype}"
                "\n  hint: a mean of counts is not an integer: convert with .float() before .mean()"
            )
        hint = diagnose(
            got,
            expected,
            _l0_mistakes(f),
            "L0 = the mean over tokens of #{i : f_i != 0}, a 0-d float tensor",
        )
        compare(f"l0, {case}", got, expected, atol=1e-5, rtol=1e-6, hint=hint)
    passed("fvu and l0", len(fvu_settings) + len(l0_settings))


# --------------------------------------------------------------------------------------------------
# exercise 5: L1 or L2
# --------------------------------------------------------------------------------------------------
def _penalty_mistakes(f, kind):
    """Results of typical mistakes in the penalty."""
    per_entry = f.abs() if kind == "l1" else f.pow(2)
    return {
        "L1 is the sum of absolute values |f_i|: f can be negative here (the penalty "
        "is defined for any vector)": lambda: f.sum(-1).mean(),
        "for kind='l1' compute sum_i |f_i|, for kind='l2' sum_i f_i^2 (the two are "
        "swapped?)": lambda: _penalty(f, "l2" if kind == "l1" else "l1"),
        "the L2 penalty is the sum of squares, not the Euclidean norm":
            lambda: f.norm(dim=-1).mean(),
        "average over the tokens (the leading axes), not sum": lambda: per_entry.sum(),
        "sum over the features of each token (last axis), then average over tokens; "
        "not a mean over all entries": lambda: per_entry.mean(),
    }  # fmt: skip


def check_penalty(penalty: Callable) -> None:
    """``penalty(f, kind)``: ``mean_tokens sum_i |f_i|`` ("l1") or ``mean_tokens sum_i f_i^2``
    ("l2"), differentiable; another ``kind`` raises ``ValueError``."""
    g = torch.Generator().manual_seed(54)
    device = labcore.get_device()

    def values(*shape, dtype=torch.float32):
        f = torch.randn(*shape, generator=g, dtype=dtype)
        return f + 0.1 * f.sign()  # no value near 0, where |f| has a kink

    settings = [
        ("l1, f (6, 10) of both signs", "l1", values(6, 10)),
        ("l2, f (6, 10) of both signs", "l2", values(6, 10)),
        ("l1, non-negative features f (8, 5)", "l1", values(8, 5).abs()),
        ("l2, 3-D: f (2, 3, 7)", "l2", values(2, 3, 7)),
        ("l1, a single token, float64", "l1", values(1, 9, dtype=F64)),
        ("l2, float64, f (4, 4)", "l2", values(4, 4, dtype=F64)),
        (f"l1 on the notebook's device ({device})", "l1", values(5, 6).to(device)),
    ]
    for case, kind, f in settings:
        leaf = f.clone().requires_grad_()
        expected = _penalty(leaf, kind)
        (grad_ref,) = torch.autograd.grad(expected, leaf)
        x = f.clone().requires_grad_()
        before = snapshot(x)
        got = run_case(case, penalty, x, kind)
        assert_unchanged(case, before, x, "f")
        with torch.no_grad():
            hint = diagnose(
                got.detach() if isinstance(got, Tensor) else got,
                expected.detach(),
                _penalty_mistakes(f, kind),
                "l1: the mean over tokens of sum_i |f_i|; l2: the mean over tokens of "
                "sum_i f_i^2 (a 0-d tensor)",
            )
        compare(case, got, expected.detach(), **rules.tolerance(f.dtype), hint=hint)
        if not got.requires_grad:
            raise CheckFailed(
                f"[{case}] the penalty does not require gradients\n  hint: use torch operations "
                "on f only (no .item(), no torch.no_grad(), no .detach())"
            )
        (grad,) = torch.autograd.grad(got, x)
        compare(
            f"{case}: gradient with respect to f",
            grad,
            grad_ref,
            **rules.tolerance(f.dtype),
            hint="d/df_i of mean_tokens |f_i| is sign(f_i) / n_tokens; of f_i^2 it is "
            "2 f_i / n_tokens",
        )
    bad = torch.ones(2, 3)
    try:
        penalty(bad, "l3")
    except NotImplementedError:
        raise
    except ValueError:
        pass
    except Exception as err:  # any other error is feedback
        raise CheckFailed(
            f"[kind = 'l3'] expected a ValueError, got {type(err).__name__}: {err}"
            "\n  hint: raise ValueError with a message naming the accepted kinds"
        ) from err
    else:
        raise CheckFailed(
            "[kind = 'l3'] expected a ValueError (only 'l1' and 'l2' exist), but penalty "
            "returned normally"
        )
    passed("penalty", len(settings) + 1)


# --------------------------------------------------------------------------------------------------
# exercise 6: splicing the transcoder in, and the CE loss recovered
# --------------------------------------------------------------------------------------------------
def _splice_mistakes(model: GPT, tc: nn.Module, layer: int, tokens: Tensor, clean: Tensor):
    def hooked(read: str, write: str, add: bool = False) -> Tensor:
        stored = {}

        def save(x, hook):
            stored["x"] = x

        def replace(y, hook):
            y_hat = tc(stored.pop("x"))[0]
            return y + y_hat if add else y_hat

        return model.run_with_hooks(tokens, fwd_hooks=[(read, save), (write, replace)])

    in_name, out_name = f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
    return {
        "your function returned the clean logits: does the hook on hook_mlp_out *return* the "
        "transcoder's output y_hat (a hook that returns None changes nothing)?": lambda: clean,
        "the transcoder reads the MLP's input, blocks.{layer}.ln2.hook_normalized (after the "
        "LayerNorm), not hook_resid_mid": lambda: hooked(
            f"blocks.{layer}.hook_resid_mid", out_name
        ),
        "replace the MLP's output by y_hat; do not add y_hat to it": lambda: hooked(
            in_name, out_name, add=True
        ),
        "splice at the layer given by the argument `layer`": lambda: hooked(
            f"blocks.{1 - layer}.ln2.hook_normalized", f"blocks.{1 - layer}.hook_mlp_out"
        ),
    }


def check_splice(spliced_logits: Callable, loss_recovered: Callable) -> None:
    """``spliced_logits(model, transcoder, layer, tokens)``: the logits with ``hook_mlp_out``
    replaced by ``transcoder(x)[0]`` for ``x`` from ``ln2.hook_normalized``;
    ``loss_recovered(original, ablated, spliced) = (ablated - spliced) / (ablated - original)``."""
    g = torch.Generator().manual_seed(55)
    device = labcore.get_device()
    model = _random_gpt(55)
    tokens = torch.randint(0, 23, (3, 8), generator=g)
    tc = _random_transcoder(16, 24, 16, g)
    model_dev = _random_gpt(56).to(device)
    cases = [
        ("layer 0, a random transcoder with 24 features", model, tc, 0, tokens),
        ("layer 1, a random transcoder", model, _random_transcoder(16, 40, 16, g), 1, tokens),
        ("a module that computes the MLP exactly: the logits must not change", model,
         _ExactMLP(model.blocks[1].mlp), 1, tokens),
        ("batch of 1, pos 1", model, tc, 0, tokens[:1, :1].clone()),
        (f"on the notebook's device ({device})", model_dev,
         _random_transcoder(16, 24, 16, g).to(device), 1, tokens.to(device)),
    ]  # fmt: skip
    with torch.no_grad():
        for case, m, t_c, layer, t in cases:
            before = snapshot(t)
            clean = m(t)
            expected = _spliced_logits(m, t_c, layer, t)
            try:
                with _without_ref("splice_hooks", "spliced_loss", what="the splicing hooks"):
                    got = run_case(case, spliced_logits, m, t_c, layer, t)
            except CheckFailed as err:
                if "must return a tensor or None, got tuple" not in str(err):
                    raise
                raise CheckFailed(
                    f"[{case}] your hook on blocks.{layer}.hook_mlp_out gave back a tuple, not a "
                    "tensor\n  hint: a transcoder module gives the pair (y_hat, f); what the hook "
                    "on hook_mlp_out gives back replaces the MLP's output (batch, pos, d_model), so "
                    "it must be y_hat alone"
                ) from err
            assert_unchanged(case, before, t, "tokens")
            _check_no_hook_left(case, m, t, clean)
            if isinstance(got, Tensor):
                got = got.detach()
            hint = diagnose(
                got,
                expected,
                _splice_mistakes(m, t_c, layer, t, clean),
                "a hook on f'blocks.{layer}.ln2.hook_normalized' stores x; a hook on "
                "f'blocks.{layer}.hook_mlp_out' returns transcoder(x)[0]; run both with "
                "model.run_with_hooks; the result is the logits (batch, pos, d_vocab)",
            )
            if isinstance(t_c, _ExactMLP):
                compare(case, got, clean, atol=1e-5, rtol=1e-4, hint=hint)
            compare(case, got, expected, atol=1e-5, rtol=1e-4, hint=hint)
    ratio_settings = [
        ("floats: original 1.0, ablated 3.0, spliced 1.5", 1.0, 3.0, 1.5),
        ("spliced = original (everything recovered)", 0.25, 2.0, 0.25),
        ("spliced = ablated (nothing recovered)", 0.5, 1.5, 1.5),
        ("spliced worse than ablated (negative)", 0.1, 0.6, 0.9),
        ("0-d tensors", torch.tensor(0.044), torch.tensor(1.31), torch.tensor(0.054)),
    ]
    for case, original, ablated, spliced in ratio_settings:
        expected = float(_loss_recovered(original, ablated, spliced))
        with _without_ref("ce_loss_recovered", what="the CE loss recovered"):
            got = run_case(f"loss_recovered, {case}", loss_recovered, original, ablated, spliced)
        if isinstance(got, Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, int | float):
            raise CheckFailed(
                f"[loss_recovered, {case}] expected a number (or a 0-d tensor), got "
                f"{type(got).__name__}"
            )
        if not math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-6):
            flipped = math.isclose(got, 1 - expected, rel_tol=1e-5, abs_tol=1e-6)
            hint = (
                "that is the fraction *lost*: recovered = (ablated - spliced) / "
                "(ablated - original), 1 when splicing keeps the original loss"
                if flipped
                else "(L_ablated - L_spliced) / (L_ablated - L_original)"
            )
            raise CheckFailed(
                f"[loss_recovered, {case}] expected {expected:.6g}, got {got:.6g}\n  hint: {hint}"
            )
    passed("spliced_logits and loss_recovered", len(cases) + len(ratio_settings))


# --------------------------------------------------------------------------------------------------
# exercise 7: which features know the answer's animacy
# --------------------------------------------------------------------------------------------------
def _correlation_mistakes(features, animate, expected):
    """Results of typical mistakes in the correlation."""
    a = animate.to(features.dtype)
    fc = features - features.mean(0)
    ac = a - a.mean()
    cov = (fc * ac[:, None]).sum(0)
    std_f = fc.pow(2).sum(0).sqrt()
    raw = features.pow(2).sum(0).sqrt() * a.pow(2).sum().sqrt()  # uncentred norms
    n = features.shape[0]
    return {
        "correlate with animate (True = the answer is an animal); your signs are flipped":
            lambda: -expected,
        "divide the covariance by both standard deviations (Pearson's r lies in [-1, 1])":
            lambda: torch.where(std_f > 0, cov / n, 0.0),
        "use the same normalisation (1/n or 1/(n-1)) for the covariance and the standard "
        "deviations; they cancel": lambda: expected * (n - 1) / n,
        "use the same normalisation (1/n or 1/(n-1)) for the covariance and the standard "
        "deviations, so that they cancel": lambda: expected * n / (n - 1),
        "centre both variables (subtract their means over the prompts)": lambda: torch.where(
            raw > 0, (features * a[:, None]).sum(0) / raw.clamp_min(1e-30), 0.0),
    }  # fmt: skip


def check_animacy_correlation(animacy_correlation: Callable) -> None:
    """``animacy_correlation(features, animate) -> (d_hidden,)``: the Pearson correlation of each
    column of ``features (n_prompts, d_hidden)`` with the 0/1 label ``animate (n_prompts,)``;
    0 (not nan) for a feature that is constant (e.g. never fires)."""
    g = torch.Generator().manual_seed(56)
    device = labcore.get_device()

    def make(n, d, dtype=torch.float32, constants=(0.0, 0.5)):
        animate = torch.rand(n, generator=g) < 0.5
        animate[0], animate[1] = True, False  # both labels present
        noise = torch.randn(n, d, generator=g, dtype=dtype)
        signal = torch.linspace(-2, 2, d, dtype=dtype) * animate.to(dtype)[:, None]
        features = F.relu(signal + noise)  # (n, d), some columns follow the label
        for j, c in enumerate(constants):  # constant columns: a dead feature and a fixed value
            features[:, j] = c
        return features, animate

    settings = [
        ("40 prompts, 12 features (column 0 never fires, column 1 constant)", *make(40, 12)),
        ("3 prompts, 5 features", *make(3, 5)),
        ("float64, 25 prompts, 8 features", *make(25, 8, F64)),
        ("every feature constant (all correlations 0)", torch.full((6, 4), 2.0),
         torch.tensor([True, False, True, True, False, False])),
        (f"on the notebook's device ({device}), also run on 'meta' tensors",
         *(t.to(device) for t in make(30, 10))),
    ]  # fmt: skip
    for case, features, animate in settings:
        before = (snapshot(features), snapshot(animate))
        expected = _animacy_correlation(features, animate)
        got = run_case(case, animacy_correlation, features, animate)
        assert_unchanged(case, before[0], features, "features")
        assert_unchanged(case, before[1], animate, "animate")
        if isinstance(got, Tensor) and got.is_floating_point() and torch.isnan(got).any():
            raise CheckFailed(
                f"[{case}] your result has nan at features "
                f"{torch.isnan(got).nonzero().flatten().tolist()[:8]}\n  hint: a feature that is "
                "constant over the prompts (one that never fires) has zero variance: its "
                "correlation is 0 here, not nan (e.g. torch.where(std > 0, corr, 0))"
            )
        n = features.shape[0]
        hint = diagnose(
            got,
            expected,
            _correlation_mistakes(features, animate, expected),
            "r_j = sum_b (f_bj - mean_j)(a_b - mean_a) / sqrt(sum_b (f_bj - mean_j)^2 "
            "sum_b (a_b - mean_a)^2), with a = animate as 0/1 in the features' dtype",
        )
        if isinstance(got, Tensor) and got.shape == (n,) and n != features.shape[1]:
            hint = "one correlation per feature (column), over the prompts: shape (d_hidden,)"
        compare(
            case,
            got,
            expected,
            atol=1e-5 if features.dtype != F64 else 1e-10,
            rtol=1e-4 if features.dtype != F64 else 1e-8,
            hint=hint,
        )
        if "meta" in case:
            meta_check(case, animacy_correlation, features, animate)
    passed("animacy_correlation", len(settings))


# --------------------------------------------------------------------------------------------------
# exercise 8: ablating features at one position
# --------------------------------------------------------------------------------------------------
def check_ablate_features(ablate_features: Callable) -> None:
    """``ablate_features(model, transcoder, layer, tokens, positions, features)``: the logits with
    ``features`` of the transcoder set to 0 at ``positions[b]`` of each prompt ``b`` only; the
    MLP's output becomes ``MLP(x) + decode(edited f) - decode(f)`` (the error term is kept)."""
    g = torch.Generator().manual_seed(57)
    device = labcore.get_device()
    model = _random_gpt(57)
    tokens = torch.randint(0, 23, (4, 9), generator=g)
    tc0 = _random_transcoder(16, 24, 16, g, enc_bias=0.5)
    tc1 = _random_transcoder(16, 32, 16, g, enc_bias=0.5)
    positions = torch.tensor([8, 5, 3, 6])
    cases = [
        ("layer 0, features [1, 4, 7, 20], one position per prompt", model, tc0, 0, tokens,
         positions, [1, 4, 7, 20]),
        ("layer 1, features [0, 31]", model, tc1, 1, tokens, positions, [0, 31]),
        ("batch of 1, the last position, one feature", model, tc1, 1, tokens[:1].clone(),
         torch.tensor([8]), [5]),
        ("no feature (the logits must not change)", model, tc0, 0, tokens, positions, []),
        ("every feature at position 0", model, tc0, 0, tokens[:, :5].clone(),
         torch.zeros(4, dtype=torch.long), list(range(24))),
        (f"on the notebook's device ({device}), also run on 'meta' tensors",
         _random_gpt(58).to(device), _random_transcoder(16, 24, 16, g, enc_bias=0.5).to(device),
         1, tokens.to(device), positions.to(device), [2, 3, 11]),
    ]  # fmt: skip
    with torch.no_grad():
        for case, m, tc, layer, t, pos, feats in cases:
            before = (snapshot(t), snapshot(pos), list(feats))
            clean = m(t)
            expected = _ablate_features(m, tc, layer, t, pos, feats)
            got = run_case(case, ablate_features, m, tc, layer, t, pos, list(feats))
            assert_unchanged(case, before[0], t, "tokens")
            assert_unchanged(case, before[1], pos, "positions")
            _check_no_hook_left(case, m, t, clean)
            if isinstance(got, Tensor):
                got = got.detach()
            mistakes = _ablate_mistakes(m, tc, layer, t, pos, feats, clean)
            compare(
                case,
                got,
                expected,
                atol=1e-5,
                rtol=1e-4,
                hint=diagnose(
                    got,
                    expected,
                    mistakes,
                    "edit f (batch, pos, d_hidden): f[torch.arange(batch), positions, "
                    "j] = 0 for j in features; splice with the error term kept",
                ),
            )
            if "meta" in case:
                meta_check(case, ablate_features, m, tc, layer, t, pos, list(feats))
    passed("ablate_features", len(cases))


def _ablate_mistakes(model, tc, layer, tokens, positions, features, clean):
    """Results of typical mistakes in the ablation."""

    def at_all_positions():
        def edit(f):
            f = f.clone()
            f[..., features] = 0.0
            return f

        hooks = ref.splice_hooks(tc, layer, edit=edit, keep_error=True)
        return model.run_with_hooks(tokens, fwd_hooks=hooks)

    return {
        "keep the transcoder's error term: the MLP's output must become MLP(x) + "
        "decode(edited f) - decode(f), not decode(edited f) (splice_hooks(..., "
        "keep_error=True))": lambda: _ablate_features(model, tc, layer, tokens, positions,
                                                      features, keep_error=False),
        "zero the features only at positions[b] of prompt b, not at every position":
            at_all_positions,
        "your function returned the clean logits: is the edit applied (returned by the "
        "hook or the edit function)?": lambda: clean,
        "zero the features at positions[b] of prompt b, not at the last position of every "
        "prompt (the prompts have different lengths)": lambda: _ablate_features(
            model, tc, layer, tokens, torch.full_like(positions, tokens.shape[1] - 1), features),
        "f[:, positions] pairs every prompt with every position: index with "
        "f[torch.arange(batch), positions]": lambda: _ablate_features_cross(
            model, tc, layer, tokens, positions, features),
    }  # fmt: skip


def _ablate_features_cross(model, tc, layer, tokens, positions, features):
    """A typical mistake: ``f[:, positions][..., features] = 0`` pairing all prompts and positions."""

    def edit(f):
        f = f.clone()
        for j in features:
            f[:, positions, j] = 0.0
        return f

    return model.run_with_hooks(
        tokens, fwd_hooks=ref.splice_hooks(tc, layer, edit=edit, keep_error=True)
    )
