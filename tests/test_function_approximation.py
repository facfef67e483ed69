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
            "expected dtype torch.float32",
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
