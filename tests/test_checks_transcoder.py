"""The checks of lab 5 accept correct solutions and reject typical mistakes with a precise message."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mistakes.lab5 import (
    animacy_correlation,
    fvu,
    l0,
    loss_recovered,
    mlp_io,
    normalize_decoder_rows,
    penalty,
    spliced_logits,
    transcoder_forward,
    transcoder_loss,
)

from labcore import transcoder as T
from labcore.checks import CheckFailed
from labcore.checks import transcoder as checks

# ------------------------------------------------------------------------------- correct solutions
# the mistake catalogue's solutions (tests/mistakes/lab5.py), and one ablation written here


def _ablate(model, transcoder, layer, tokens, positions, features, *, keep_error=True,
            everywhere=False):  # fmt: skip
    rows = torch.arange(tokens.shape[0], device=tokens.device)

    def edit(f):
        f = f.clone()
        if everywhere:
            f[..., features] = 0.0
            return f
        picked = f[rows, positions]
        picked[:, features] = 0.0
        f[rows, positions] = picked
        return f

    hooks = T.splice_hooks(transcoder, layer, edit=edit, keep_error=keep_error)
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


def ablate_features(model, transcoder, layer, tokens, positions, features):
    return _ablate(model, transcoder, layer, tokens, positions, features)


def test_checks_accept_correct_solutions(capsys):
    checks.check_mlp_io(mlp_io)
    checks.check_transcoder_forward(transcoder_forward)
    checks.check_transcoder_loss(transcoder_loss, normalize_decoder_rows)
    checks.check_metrics(fvu, l0)
    checks.check_penalty(penalty)
    checks.check_splice(spliced_logits, loss_recovered)
    checks.check_animacy_correlation(animacy_correlation)
    checks.check_ablate_features(ablate_features)
    out = capsys.readouterr().out
    assert out.count("\u2714") == 8, out
    assert len(out.strip().splitlines()) == 8  # one line per check


def test_checks_accept_other_correct_solutions():
    """Equivalent code that the checks must not reject."""

    def mlp_io_hooks(model, tokens, layer):
        seen = {}

        def keep(name):
            def hook(act, hook):
                seen[name] = act.detach().reshape(-1, act.shape[-1])

            return hook

        names = (f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out")
        model.run_with_hooks(tokens, fwd_hooks=[(n, keep(n)) for n in names])
        return seen[names[0]], seen[names[1]]

    def forward_einsum(x, W_enc, b_enc, W_dec, b_dec):
        f = F.relu(torch.einsum("...i,ih->...h", x, W_enc) + b_enc)
        return torch.einsum("...h,ho->...o", f, W_dec) + b_dec, f

    def loss_with_mse(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
        y_hat, f = forward_einsum(x, W_enc, b_enc, W_dec, b_dec)
        return F.mse_loss(y_hat, y) * y.shape[-1] + l1_coeff * f.sum(-1).mean()  # f >= 0

    def l0_double(f):
        return (f > 0).to(f.dtype).sum(-1).mean()

    def correlation_corrcoef(features, animate):
        a = animate.to(features.dtype)
        r = torch.corrcoef(torch.cat([features.T, a[None]]))[-1, :-1]
        return torch.nan_to_num(r, nan=0.0)

    def ablate_by_hand(model, transcoder, layer, tokens, positions, features):
        stored = {}
        rows = torch.arange(tokens.shape[0])

        def save(x, hook):
            stored["x"] = x

        def replace(y, hook):
            f = transcoder.encode(stored["x"])
            edited = f.clone()
            for j in features:
                edited[rows, positions, j] = 0.0
            return y + transcoder.decode(edited) - transcoder.decode(f)

        hooks = [(f"blocks.{layer}.ln2.hook_normalized", save),
                 (f"blocks.{layer}.hook_mlp_out", replace)]  # fmt: skip
        return model.run_with_hooks(tokens, fwd_hooks=hooks)

    checks.check_mlp_io(mlp_io_hooks)
    checks.check_transcoder_forward(forward_einsum)
    checks.check_transcoder_loss(loss_with_mse, lambda w: F.normalize(w, dim=1))
    checks.check_metrics(fvu, l0_double)
    checks.check_animacy_correlation(correlation_corrcoef)
    checks.check_ablate_features(ablate_by_hand)
    checks.check_splice(spliced_logits, lambda o, a, s: 1 - (s - o) / (a - o))


# ------------------------------------------------------------------------------- typical mistakes
def _io(read, write, flatten=True, swap=False):
    def fn(model, tokens, layer):
        names = [read.format(layer=layer), write.format(layer=layer)]
        _, cache = model.run_with_cache(tokens, names_filter=names)
        x, y = cache[names[0]], cache[names[1]]
        if flatten:
            x, y = x.flatten(0, 1), y.flatten(0, 1)
        return (y, x) if swap else (x, y)

    return fn


LN2, MLP_OUT = "blocks.{layer}.ln2.hook_normalized", "blocks.{layer}.hook_mlp_out"


def _forward(relu=True, b_enc=True, b_dec=True, relu_out=False):
    def fn(x, W_enc, b_enc_, W_dec, b_dec_):
        pre = x @ W_enc + (b_enc_ if b_enc else 0)
        f = torch.relu(pre) if relu else pre
        y = f @ W_dec + (b_dec_ if b_dec else 0)
        return (torch.relu(y) if relu_out else y), f

    return fn


def _loss(kind="good"):
    def fn(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
        y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
        sq = (y - y_hat).pow(2)
        if kind == "mse":
            return F.mse_loss(y_hat, y) + l1_coeff * f.sum(-1).mean()
        if kind == "l2":
            return (sq.sum(-1) + l1_coeff * f.pow(2).sum(-1)).mean()
        if kind == "item":
            return torch.tensor((sq.sum(-1) + l1_coeff * f.sum(-1)).mean().item())
        if kind == "sum":
            return (sq.sum(-1) + l1_coeff * f.sum(-1)).sum()
        return (sq.sum(-1) + l1_coeff * f.sum(-1)).mean()

    return fn


def _fvu_uncentred(y_hat, y):
    return (y - y_hat).pow(2).sum() / y.pow(2).sum()


def _fvu_scalar_mean(y_hat, y):
    return (y - y_hat).pow(2).sum() / (y - y.mean()).pow(2).sum()


def _splice_from_resid_mid(model, transcoder, layer, tokens):
    stored = {}

    def save(x, hook):
        stored["x"] = x

    def replace(y, hook):
        return transcoder(stored.pop("x"))[0]

    hooks = [(f"blocks.{layer}.hook_resid_mid", save), (f"blocks.{layer}.hook_mlp_out", replace)]
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


def _splice_adds(model, transcoder, layer, tokens):
    stored = {}

    def save(x, hook):
        stored["x"] = x

    def replace(y, hook):
        return y + transcoder(stored.pop("x"))[0]

    hooks = [(f"blocks.{layer}.ln2.hook_normalized", save),
             (f"blocks.{layer}.hook_mlp_out", replace)]  # fmt: skip
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


def _splice_returns_none(model, transcoder, layer, tokens):
    def replace(y, hook):
        y.clone()  # forgets to return

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", replace)])


def _splice_leaves_hook(model, transcoder, layer, tokens):
    stored = {}
    model.blocks[layer].ln2.hook_normalized.add_hook(lambda x, hook: stored.update(x=x))
    model.blocks[layer].hook_mlp_out.add_hook(lambda y, hook: transcoder(stored["x"])[0])
    return model(tokens)


def _correlation_nan(features, animate):
    a = animate.to(features.dtype)
    fc, ac = features - features.mean(0), a - a.mean()
    return (fc * ac[:, None]).sum(0) / (fc.pow(2).sum(0).sqrt() * ac.pow(2).sum().sqrt())


def _correlation_mixed(features, animate):
    a = animate.to(features.dtype)
    cov = ((features - features.mean(0)) * (a - a.mean())[:, None]).mean(0)  # 1/n
    r = cov / (features.std(0) * a.std())  # 1/(n-1)
    return torch.nan_to_num(r, nan=0.0)


@pytest.mark.parametrize(
    "check, wrong, message",
    [
        (checks.check_mlp_io, _io("blocks.{layer}.hook_resid_mid", MLP_OUT), "normalised"),
        (checks.check_mlp_io, _io(LN2, MLP_OUT, flatten=False), "flatten batch and position"),
        (checks.check_mlp_io, _io(LN2, MLP_OUT, swap=True), "inputs come first"),
        (checks.check_mlp_io, _io(LN2, "blocks.{layer}.hook_resid_post"), "hook_resid_post"),
        (checks.check_mlp_io, _io(LN2, "blocks.{layer}.mlp.hook_post"), "neurons inside"),
        (checks.check_mlp_io, _io("blocks.{layer}.ln1.hook_normalized", MLP_OUT), r"\(ln1\)"),
        (checks.check_mlp_io, lambda m, t, layer: T.collect_mlp_io(m, t, layer), "do not call"),
        (checks.check_transcoder_forward, _forward(relu=False), "go through a ReLU"),
        (checks.check_transcoder_forward, _forward(b_enc=False), "encoder bias"),
        (checks.check_transcoder_forward, _forward(b_dec=False), "decoder bias"),
        (checks.check_transcoder_forward, _forward(relu_out=True), "no ReLU on the output"),
        (checks.check_transcoder_forward, lambda *a: transcoder_forward(*a)[::-1], "in this order"),
        (checks.check_transcoder_forward, lambda *a: transcoder_forward(*a)[0], "expected a pair"),
        (
            checks.check_transcoder_loss,
            (_loss("mse"), normalize_decoder_rows),
            "sums over the output dimensions",
        ),
        (checks.check_transcoder_loss, (_loss("l2"), normalize_decoder_rows), "penalty is L1"),
        (
            checks.check_transcoder_loss,
            (_loss("sum"), normalize_decoder_rows),
            "not a sum over the batch",
        ),
        (
            checks.check_transcoder_loss,
            (_loss("item"), normalize_decoder_rows),
            "does not require gradients",
        ),
        (
            checks.check_transcoder_loss,
            (transcoder_loss, lambda w: w / w.norm(dim=0, keepdim=True)),
            "not each column",
        ),
        (
            checks.check_transcoder_loss,
            (transcoder_loss, lambda w: w.div_(w.norm(dim=1, keepdim=True))),
            "modified its input 'W_dec' in place",
        ),
        (checks.check_metrics, (_fvu_uncentred, l0), "centre y"),
        (checks.check_metrics, (_fvu_scalar_mean, l0), "mean output vector"),
        (checks.check_metrics, (lambda y_hat, y: 1 - fvu(y_hat, y), l0), "unexplained"),
        (checks.check_metrics, (lambda y_hat, y: T.fvu(y_hat, y), l0), "do not call"),
        (checks.check_metrics, (fvu, lambda f: (f != 0).sum().float()), "not the total"),
        (checks.check_metrics, (fvu, lambda f: (f != 0).float().mean()), "not the fraction"),
        (
            checks.check_metrics,
            (fvu, lambda f: (f != 0).sum() // (f.numel() // f.shape[-1])),
            "float tensor",
        ),
        (
            checks.check_penalty,
            lambda f, kind: penalty(f.relu(), kind) if kind == "l1" else penalty(f, kind),
            "values differ",
        ),
        (
            checks.check_penalty,
            lambda f, kind: f.sum(-1).mean() if kind == "l1" else penalty(f, kind),
            "absolute values",
        ),
        (checks.check_penalty, lambda f, kind: penalty(f, "l1"), "swapped"),
        (
            checks.check_penalty,
            lambda f, kind: f.norm(dim=-1).mean() if kind == "l2" else penalty(f, kind),
            "not the Euclidean norm",
        ),
        (
            checks.check_penalty,
            lambda f, kind: penalty(f, kind) * f.shape[0] if f.ndim == 2 else penalty(f, kind),
            "average over the tokens",
        ),
        (
            checks.check_penalty,
            lambda f, kind: torch.tensor(penalty(f, kind).item()),
            "does not require gradients",
        ),
        (
            checks.check_penalty,
            lambda f, kind: penalty(f, kind if kind == "l2" else "l1"),
            "expected a ValueError",
        ),
        (checks.check_splice, (_splice_from_resid_mid, loss_recovered), "ln2.hook_normalized"),
        (checks.check_splice, (_splice_adds, loss_recovered), "do not add y_hat"),
        (checks.check_splice, (_splice_returns_none, loss_recovered), "returned the clean logits"),
        (checks.check_splice, (_splice_leaves_hook, loss_recovered), "a hook is still attached"),
        (
            checks.check_splice,
            (lambda m, tc, layer, t: spliced_logits(m, tc, 0, t), loss_recovered),
            "the argument `layer`",
        ),
        (
            checks.check_splice,
            (
                lambda m, tc, layer, t: m.run_with_hooks(t, fwd_hooks=T.splice_hooks(tc, layer)),
                loss_recovered,
            ),
            "do not call labcore.transcoder.splice_hooks",
        ),
        (
            checks.check_splice,
            (spliced_logits, lambda o, a, s: (s - o) / (a - o)),
            r"fraction \*lost\*",
        ),
        (checks.check_animacy_correlation, _correlation_nan, "has nan"),
        (checks.check_animacy_correlation, lambda f, a: -animacy_correlation(f, a), "flipped"),
        (checks.check_animacy_correlation, _correlation_mixed, "same normalisation"),
        (
            checks.check_animacy_correlation,
            lambda f, a: (
                animacy_correlation(f.T, a[: f.shape[1]])
                if f.shape[0] != f.shape[1]
                else animacy_correlation(f, a)
            ),
            "one correlation per feature",
        ),
        (
            checks.check_ablate_features,
            lambda *a: _ablate(*a, keep_error=False),
            "keep the transcoder's error term",
        ),
        (
            checks.check_ablate_features,
            lambda *a: _ablate(*a, everywhere=True),
            "not at every position",
        ),
        (checks.check_ablate_features, lambda m, tc, layer, t, p, fs: m(t), "clean logits"),
        (checks.check_transcoder_forward, lambda *a: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_checks_reject_typical_mistakes_with_a_precise_message(check, wrong, message):
    args = wrong if isinstance(wrong, tuple) else (wrong,)
    with pytest.raises(CheckFailed, match=message):
        check(*args)


def test_a_failure_shows_the_input_expected_and_got():
    with pytest.raises(CheckFailed) as info:
        checks.check_transcoder_forward(_forward(b_dec=False))
    text = str(info.value)
    assert "[x (6, 5), d_hidden 12, d_out 4: y_hat]" in text
    assert "expected:" in text and "got:" in text and "hint:" in text


def test_the_forbidden_functions_are_restored_after_a_check():
    with pytest.raises(CheckFailed):
        checks.check_metrics(lambda y_hat, y: T.fvu(y_hat, y), l0)
    y = torch.randn(5, 3)
    assert T.fvu(y, y).item() == 0.0


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    checks.check_mlp_io(mlp_io)
    checks.check_splice(spliced_logits, loss_recovered)
    checks.check_ablate_features(ablate_features)
    assert torch.equal(torch.rand(3), expected)


def test_every_check_leaves_rng_state_and_default_dtype_alone(monkeypatch):
    """No check reseeds or draws from the global generator, or changes the default dtype."""
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()

    def no_reseed(*args, **kwargs):
        raise AssertionError("a check called torch.manual_seed")

    monkeypatch.setattr(torch, "manual_seed", no_reseed)
    checks.check_mlp_io(mlp_io)
    checks.check_transcoder_forward(transcoder_forward)
    checks.check_transcoder_loss(transcoder_loss, normalize_decoder_rows)
    checks.check_metrics(fvu, l0)
    checks.check_penalty(penalty)
    checks.check_splice(spliced_logits, loss_recovered)
    checks.check_animacy_correlation(animacy_correlation)
    checks.check_ablate_features(ablate_features)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.get_default_dtype() == dtype


def test_the_loss_is_judged_with_the_reference_forward_in_place():
    """A wrong transcoder_forward (exercise 2) does not fail the loss check (exercise 3), and the
    student's function is back in its namespace afterwards."""
    namespace = {"torch": torch}
    exec(
        "def transcoder_forward(x, W_enc, b_enc, W_dec, b_dec):\n"
        "    f = torch.relu(x @ W_enc)\n"  # b_enc forgotten
        "    return f @ W_dec + b_dec, f\n"
        "def transcoder_loss(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):\n"
        "    y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)\n"
        "    return ((y - y_hat).pow(2).sum(-1) + l1_coeff * f.abs().sum(-1)).mean()\n",
        namespace,
    )
    wrong_forward = namespace["transcoder_forward"]
    checks.check_transcoder_loss(namespace["transcoder_loss"], normalize_decoder_rows)
    assert namespace["transcoder_forward"] is wrong_forward
    with pytest.raises(CheckFailed, match="encoder bias"):
        checks.check_transcoder_forward(wrong_forward)


@pytest.mark.parametrize(
    "check, n_args",
    [
        (checks.check_mlp_io, 1),
        (checks.check_transcoder_forward, 1),
        (checks.check_transcoder_loss, 2),
        (checks.check_metrics, 2),
        (checks.check_penalty, 1),
        (checks.check_splice, 2),
        (checks.check_animacy_correlation, 1),
        (checks.check_ablate_features, 1),
    ],
)
def test_an_unfinished_exercise_raises_not_implemented_error(check, n_args):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        check(*([stub] * n_args))
