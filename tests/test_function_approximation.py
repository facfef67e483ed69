"""labcore.function_approximation and its exercise checks (chapter 0)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labcore import function_approximation as fa
from labcore.checks import CheckFailed
from labcore.checks import function_approximation as checks


def test_polynomial_features_equal_numpys_vandermonde():
    x = torch.randn(7, dtype=torch.float64)
    expected = np.vander(x.numpy(), 5, increasing=True)
    np.testing.assert_allclose(fa.polynomial_features(x, 4).numpy(), expected, rtol=1e-12)
    assert fa.polynomial_features(x.reshape(-1, 1), 0).shape == (7, 1)


def test_least_squares_recovers_a_noiseless_polynomial():
    x = torch.linspace(-2, 2, 30, dtype=torch.float64)
    w_true = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
    y = fa.polynomial_features(x, 3) @ w_true
    w = fa.fit_least_squares(fa.polynomial_features(x, 3), y)
    torch.testing.assert_close(w, w_true, atol=1e-10, rtol=0)


def test_gaussian_nll_equals_torch_distributions_and_the_mse_identity():
    x = torch.randn(50, dtype=torch.float64)
    expected = -torch.distributions.Normal(0.3, 1.7).log_prob(x).mean()
    torch.testing.assert_close(fa.gaussian_nll(x, 0.3, 1.7), expected)
    # Gaussian NLL of residuals = MSE / (2 sigma^2) + log sigma + log(2 pi) / 2
    sigma = 0.4
    nll = fa.gaussian_nll(x, 0.0, sigma)
    mse = (x**2).mean()
    torch.testing.assert_close(
        nll, mse / (2 * sigma**2) + math.log(sigma) + 0.5 * math.log(2 * math.pi)
    )


def test_gaussian_mle_is_a_stationary_point_of_the_nll():
    x = 2 + 3 * torch.randn(200, dtype=torch.float64)
    mean, std = fa.gaussian_mle(x)
    mean, std = mean.clone().requires_grad_(True), std.clone().requires_grad_(True)
    fa.gaussian_nll(x, mean, std).backward()
    assert abs(mean.grad.item()) < 1e-12 and abs(std.grad.item()) < 1e-12
    torch.testing.assert_close(std.detach() ** 2, x.var(correction=0))


def test_mixture_nll_equals_torch_mixture_and_stays_finite_far_away():
    x = torch.tensor([-3.0, 0.0, 1.0, 60.0], dtype=torch.float64)
    logits = torch.tensor([0.2, -0.4, 1.0], dtype=torch.float64)
    means = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    log_stds = torch.tensor([0.0, -0.5, 0.3], dtype=torch.float64)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits),
        torch.distributions.Normal(means, log_stds.exp()),
    )
    got = fa.mixture_nll(x, logits, means, log_stds)
    torch.testing.assert_close(got, -mixture.log_prob(x).mean())
    assert torch.isfinite(got)
    density = fa.mixture_density(x[:3], logits, means, log_stds)
    torch.testing.assert_close(density, mixture.log_prob(x[:3]).exp())


def _mixture(logits, means, log_stds):
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits),
        torch.distributions.Normal(means, log_stds.exp()),
    )


@pytest.mark.parametrize("seed", range(5))
def test_mixture_nll_and_its_gradients_equal_torch_distributions_on_random_mixtures(seed):
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(40, generator=g, dtype=torch.float64)
    params = [torch.randn(4, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3)]
    got = fa.mixture_nll(x, *params)
    expected = -_mixture(*params).log_prob(x).mean()
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad(got, params)
    expected_grads = torch.autograd.grad(expected, params)
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b)


def _degenerate_nll(x, logits, means, log_stds, k, j):
    """The NLL of a mixture whose component k sits on x[j] with sigma_k -> 0, by hand.

    Component k's density vanishes at every other sample; at x[j] its log density is
    log pi_k - log sigma_k - log(2 pi) / 2, added to the others' by logaddexp."""
    log_pi = torch.log_softmax(logits, 0)
    others = [i for i in range(len(means)) if i != k]
    rest = _mixture(logits[others], means[others], log_stds[others]).log_prob(x)
    rest = rest + torch.logsumexp(log_pi[others], 0)  # the weights of the other components
    spike = log_pi[k] - log_stds[k] - 0.5 * math.log(2 * math.pi)
    log_p = rest.clone()
    log_p[j] = torch.logaddexp(rest[j], spike)
    return -log_p.mean()


@pytest.mark.parametrize("log_std", [-50.0, -400.0, -1000.0, -1e6])
def test_mixture_nll_is_exact_and_differentiable_on_the_degenerate_path(log_std):
    # a component centred on a sample with sigma -> 0: exp(log_std) underflows to 0 below -745
    x = torch.tensor([-1.0, 0.5, 2.0, 3.5], dtype=torch.float64)
    logits = torch.tensor([0.1, -0.2], dtype=torch.float64, requires_grad=True)
    means = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    log_stds = torch.tensor([0.3, log_std], dtype=torch.float64, requires_grad=True)
    got = fa.mixture_nll(x, logits, means, log_stds)
    assert torch.isfinite(got)
    torch.testing.assert_close(
        got, _degenerate_nll(x, logits, means, log_stds, k=1, j=2), rtol=1e-12, atol=1e-9
    )
    # the NLL falls like log_std / n along the path: unbounded below, so no MLE exists
    assert got.item() < log_std / len(x) + 10
    grads = torch.autograd.grad(got, (logits, means, log_stds))
    assert all(torch.isfinite(g).all() for g in grads)
    # d/d log_std_k of -(1/n) log(pi_k N(x_j; mu_k, sigma_k^2)) = 1/n once the spike dominates
    assert abs(grads[2][1].item() - 1 / len(x)) < 1e-12
    assert grads[1][1].item() == 0.0  # z = 0 at the centre: no pull on the mean


def test_mixture_nll_is_minus_infinity_at_zero_width_and_never_nan():
    x = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    logits = torch.zeros(2, dtype=torch.float64)
    means = torch.tensor([1.0, 0.0], dtype=torch.float64)
    at_limit = fa.mixture_nll(x, logits, means, torch.tensor([0.0, -math.inf], dtype=torch.float64))
    assert at_limit.item() == -math.inf
    # a zero-width component on no sample just drops out; float32 underflows sooner and stays exact
    for dtype in (torch.float32, torch.float64):
        off = fa.mixture_nll(
            x.to(dtype),
            logits.to(dtype),
            torch.tensor([1.0, 7.0], dtype=dtype),
            torch.tensor([0.0, -1000.0], dtype=dtype),
        )
        expected = -(torch.distributions.Normal(1.0, 1.0).log_prob(x) + math.log(0.5)).mean()
        torch.testing.assert_close(off, expected.to(dtype))
    # every sample far from every component: the likelihood is 0, the NLL +inf (not NaN)
    far = fa.mixture_nll(
        torch.tensor([5.0], dtype=torch.float64),
        logits,
        means,
        torch.tensor([-1000.0, -1000.0], dtype=torch.float64),
    )
    assert far.item() == math.inf


def test_ridge_closed_form_solves_the_augmented_least_squares_problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 6, generator=g, dtype=torch.float64)
    y = torch.randn(30, generator=g, dtype=torch.float64)
    lam = 0.7
    w = fa.fit_ridge(X, y, lam)
    # ||X w - y||^2 + lam ||w||^2 = ||[X; sqrt(lam) I] w - [y; 0]||^2
    X_aug = torch.cat([X, math.sqrt(lam) * torch.eye(6, dtype=torch.float64)])
    y_aug = torch.cat([y, torch.zeros(6, dtype=torch.float64)])
    torch.testing.assert_close(w, fa.fit_least_squares(X_aug, y_aug))
    # the gradient of the penalised loss vanishes, and the penalty shrinks the norm
    assert (X.T @ (X @ w - y) + lam * w).abs().max() < 1e-10
    assert w.norm() < fa.fit_least_squares(X, y).norm()
    torch.testing.assert_close(fa.fit_ridge(X, y, 1e-12), fa.fit_least_squares(X, y))


def test_kfold_indices_partition_the_examples():
    splits = fa.kfold_indices(11, 3, generator=torch.Generator().manual_seed(0))
    assert len(splits) == 3
    validated = torch.cat([val for _, val in splits])
    assert sorted(validated.tolist()) == list(range(11))
    for train, val in splits:
        assert sorted(torch.cat([train, val]).tolist()) == list(range(11))
        assert len(val) in (3, 4)


def test_cross_entropy_grad_equals_autograd():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (8,), generator=g)
    loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    (expected,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(fa.cross_entropy_grad(logits.detach(), labels), expected)
    # each row sums to zero: the gradient moves probability mass, it does not create any
    assert fa.cross_entropy_grad(logits.detach(), labels).sum(-1).abs().max() < 1e-12


def test_fit_mixture_recovers_well_separated_components():
    g = torch.Generator().manual_seed(0)
    component = torch.multinomial(torch.tensor([0.3, 0.7]), 2000, replacement=True, generator=g)
    x = torch.tensor([-3.0, 2.0])[component] + torch.tensor([0.5, 0.8])[component] * torch.randn(
        2000, generator=g
    )
    params, losses = fa.fit_mixture(x, 2, steps=500, seed=0)
    order = params["means"].argsort()
    torch.testing.assert_close(params["means"][order], torch.tensor([-3.0, 2.0]), atol=0.1, rtol=0)
    weights = torch.softmax(params["logits"], 0)[order]
    torch.testing.assert_close(weights, torch.tensor([0.3, 0.7]), atol=0.03, rtol=0)
    assert losses[-1] < losses[0]


def test_train_regressor_fits_a_smooth_function():
    x = torch.linspace(-2, 2, 50)
    model = fa.make_regressor(hidden=16, depth=1)
    losses = fa.train_regressor(model, x, torch.tanh(2 * x), steps=300, lr=0.02)
    assert len(losses) == 300 and losses[-1] < 0.01 * losses[0]


def test_functions_keep_device_and_dtype_on_meta_tensors():
    x = torch.empty(5, device="meta", dtype=torch.float64)
    out = fa.polynomial_features(x, 3)
    assert out.device.type == "meta" and out.dtype == torch.float64 and out.shape == (5, 4)
    params = [torch.empty(2, device="meta", dtype=torch.float64) for _ in range(3)]
    assert fa.mixture_nll(x, *params).device.type == "meta"
    assert fa.gaussian_nll(x, 0.0, 1.0).device.type == "meta"
    assert fa.fit_ridge(
        torch.empty(5, 3, device="meta"), torch.empty(5, device="meta"), 1.0
    ).shape == (3,)
    grad = fa.cross_entropy_grad(
        torch.empty(4, 3, device="meta", dtype=torch.float64),
        torch.zeros(4, dtype=torch.long, device="meta"),
    )
    assert grad.device.type == "meta" and grad.dtype == torch.float64


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fa.polynomial_features(torch.zeros(3, 2), 2), r"x must have shape \(batch,\)"),
        (lambda: fa.polynomial_features(torch.zeros(3), -1), "degree must be >= 0"),
        (lambda: fa.fit_least_squares(torch.zeros(3, 2), torch.zeros(4)), "same batch size"),
        (lambda: fa.gaussian_nll(torch.zeros(3), 0.0, -1.0), "std must be positive"),
        (
            lambda: fa.mixture_nll(torch.zeros(3), torch.zeros(2), torch.zeros(3), torch.zeros(2)),
            "must all have shape",
        ),
        (lambda: fa.fit_mixture(torch.zeros(1), 2), "at least n_components"),
        (lambda: fa.fit_ridge(torch.zeros(3, 2), torch.zeros(3), 0.0), "lam must be a positive"),
        (lambda: fa.kfold_indices(5, 6), "k must satisfy"),
        (
            lambda: fa.cross_entropy_grad(torch.zeros(3, 2), torch.zeros(3)),
            "labels must be a 1-d integer tensor",
        ),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ------------------------------------------------------------------ the exercise checks
def test_checks_accept_the_reference_implementations(capsys):
    checks.check_polynomial_features(fa.polynomial_features)
    checks.check_gaussian_nll(fa.gaussian_nll)
    checks.check_gaussian_mle(fa.gaussian_mle)
    checks.check_mixture_nll(fa.mixture_nll)
    checks.check_train_regressor(
        lambda model, x, y, steps, lr: fa.train_regressor(model, x, y, steps=steps, lr=lr)
    )
    assert capsys.readouterr().out.count("\u2714") == 5


def _naive_mixture_nll(x, logits, means, log_stds):
    weights = torch.softmax(logits, 0)
    densities = torch.distributions.Normal(means, log_stds.exp()).log_prob(x[:, None]).exp()
    return -torch.log((weights * densities).sum(-1)).mean()


@pytest.mark.parametrize(
    "check, wrong, message",
    [
        (
            checks.check_polynomial_features,
            lambda x, d: x.reshape(-1, 1) ** torch.arange(1, d + 2),
            "column k holds x\\*\\*k",
        ),
        (
            checks.check_polynomial_features,
            lambda x, d: x.reshape(-1, 1).double() ** torch.arange(d + 1),
            "should have dtype torch.float32",
        ),
        (checks.check_gaussian_mle, lambda x: (x.mean(), x.std()), "divides by n"),
        (checks.check_gaussian_nll, lambda x, m, s: torch.tensor(0.0), "values differ"),
        (checks.check_mixture_nll, _naive_mixture_nll, "40 standard deviations"),
        (checks.check_train_regressor, lambda model, x, y, steps, lr: [0.0] * steps, "MSE is"),
        (
            checks.check_polynomial_features,
            lambda x, d: x.mul_(2).reshape(-1, 1) ** torch.arange(d + 1),
            "modified its input",
        ),
        (checks.check_gaussian_mle, lambda x: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_checks_reject_typical_mistakes_with_a_precise_message(check, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check(wrong)


def test_an_unfinished_exercise_raises_not_implemented_error():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        checks.check_gaussian_nll(stub)


def test_compare_reports_differing_boolean_and_integer_tensors():
    from labcore.checks import compare

    mask = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    compare("same", mask.clone(), mask)
    with pytest.raises(CheckFailed, match="6 of 9 entries differ"):
        compare("transposed", mask.T.contiguous(), mask)
    with pytest.raises(CheckFailed, match="1 of 3 entries differ"):
        compare("ints", torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]))
