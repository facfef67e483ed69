"""Checks for lab 0, learning as function approximation (``labs/00-function-approximation.ipynb``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from labcore import function_approximation as ref
from labcore.checks import CheckFailed, assert_unchanged, compare, passed, run_case, snapshot

__all__ = [
    "check_polynomial_features",
    "check_train_regressor",
    "check_gaussian_nll",
    "check_gaussian_mle",
    "check_mixture_nll",
]


def check_polynomial_features(polynomial_features: Callable) -> None:
    """``polynomial_features(x, degree) -> (batch, degree + 1)`` with columns ``x**0 .. x**degree``."""
    g = torch.Generator().manual_seed(1)
    cases = [
        ("batch of 5, degree 3", torch.randn(5, generator=g), 3),
        ("batch of 1, degree 4", torch.tensor([2.0]), 4),
        ("degree 0 (a constant column)", torch.randn(4, generator=g), 0),
        ("float64 input, degree 2", torch.randn(6, generator=g, dtype=torch.float64), 2),
        ("column input (batch, 1)", torch.randn(3, 1, generator=g), 2),
    ]
    for case, x, degree in cases:
        before = snapshot(x)
        got = run_case(case, polynomial_features, x, degree)
        assert_unchanged(case, before, x, "x")
        compare(
            case,
            got,
            ref.polynomial_features(x, degree),
            hint="column k holds x**k, starting with k = 0 (a column of ones)",
        )
    passed("polynomial_features", len(cases))


def check_train_regressor(train_regressor: Callable) -> None:
    """``train_regressor(model, x, y, steps, lr) -> losses``: full-batch Adam on the MSE."""
    torch.manual_seed(0)
    x = torch.linspace(-3, 3, 64)
    y = torch.sin(x)
    model = ref.make_regressor(hidden=16, depth=1)
    before = snapshot(x)
    losses = run_case("sin on [-3, 3], 300 steps", train_regressor, model, x, y, steps=300, lr=0.02)
    assert_unchanged("sin", before, x, "x")
    if not isinstance(losses, list | tuple) or len(losses) != 300:
        raise CheckFailed(
            f"[sin, 300 steps] expected a list of 300 losses (one per step), got "
            f"{type(losses).__name__} of length {len(losses) if hasattr(losses, '__len__') else '?'}"
        )
    if not all(isinstance(v, float) for v in losses):
        raise CheckFailed("[sin] the losses must be Python floats: use loss.item()")
    with torch.no_grad():
        final = ((model(x.reshape(-1, 1)) - y.reshape(-1, 1)) ** 2).mean().item()
    if final > 0.05:
        raise CheckFailed(
            f"[sin on [-3, 3], 300 steps] the trained model's MSE is {final:.3f}, expected < 0.05"
            "\n  hint: zero the gradients every step, call backward() on the mean squared error, "
            "then optimizer.step(); reshape x and y to (batch, 1)"
        )
    if not losses[-1] < losses[0]:
        raise CheckFailed("[sin] the loss did not decrease: is optimizer.step() called?")
    passed("train_regressor", 1)


def check_gaussian_nll(gaussian_nll: Callable) -> None:
    """``gaussian_nll(x, mean, std)``: average negative log-likelihood under N(mean, std^2)."""
    g = torch.Generator().manual_seed(2)
    cases = [
        ("standard normal, 100 samples", torch.randn(100, generator=g), 0.0, 1.0),
        ("mean 3, std 0.5", 3 + 0.5 * torch.randn(50, generator=g), 3.0, 0.5),
        ("one sample", torch.tensor([1.5]), -1.0, 2.0),
        ("float64", torch.randn(20, generator=g, dtype=torch.float64), 0.3, 1.7),
    ]
    for case, x, mean, std in cases:
        got = run_case(case, gaussian_nll, x, mean, std)
        expected = (
            -torch.distributions.Normal(
                torch.tensor(mean, dtype=x.dtype), torch.tensor(std, dtype=x.dtype)
            )
            .log_prob(x)
            .mean()
        )
        compare(
            case,
            torch.as_tensor(got),
            expected,
            atol=1e-5,
            hint="-log N(x; mu, s^2) = log s + log(2 pi)/2 + (x - mu)^2 / (2 s^2); "
            "average over the samples",
        )
    mean = torch.tensor(0.5, requires_grad=True)
    loss = run_case("gradient", gaussian_nll, torch.randn(10, generator=g), mean, 1.0)
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        raise CheckFailed(
            "[gradient] the result must be differentiable in mean: avoid .item() "
            "and numpy inside the function"
        )
    passed("gaussian_nll", len(cases) + 1)


def check_gaussian_mle(gaussian_mle: Callable) -> None:
    """``gaussian_mle(x) -> (mean, std)``: the maximum-likelihood estimates, in closed form."""
    g = torch.Generator().manual_seed(3)
    cases = [
        ("1000 samples of N(2, 3^2)", 2 + 3 * torch.randn(1000, generator=g)),
        ("two samples", torch.tensor([0.0, 2.0])),
        ("float64", torch.randn(30, generator=g, dtype=torch.float64)),
    ]
    for case, x in cases:
        got = run_case(case, gaussian_mle, x)
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise CheckFailed(f"[{case}] expected a pair (mean, std), got {type(got).__name__}")
        mean, std = ref.gaussian_mle(x)
        compare(case, torch.as_tensor(got[0]), mean, atol=1e-5)
        compare(
            case,
            torch.as_tensor(got[1]),
            std,
            atol=1e-5,
            hint="the maximum-likelihood variance divides by n, not n - 1 "
            "(torch.std uses n - 1 unless correction=0)",
        )
    passed("gaussian_mle", len(cases))


def check_mixture_nll(mixture_nll: Callable) -> None:
    """``mixture_nll(x, logits, means, log_stds)``: average NLL under a Gaussian mixture."""
    g = torch.Generator().manual_seed(4)
    cases = [
        (
            "two components",
            torch.randn(50, generator=g) * 2,
            torch.tensor([0.3, -0.3]),
            torch.tensor([-1.0, 1.5]),
            torch.tensor([0.0, -0.5]),
        ),
        (
            "one component",
            torch.randn(20, generator=g),
            torch.tensor([0.0]),
            torch.tensor([0.5]),
            torch.tensor([0.2]),
        ),
        (
            "a sample 40 standard deviations away (needs logsumexp)",
            torch.tensor([0.0, 40.0]),
            torch.tensor([0.0, 0.0]),
            torch.tensor([0.0, 1.0]),
            torch.tensor([0.0, 0.0]),
        ),
        (
            "three components, float64",
            torch.randn(30, generator=g, dtype=torch.float64),
            torch.randn(3, generator=g, dtype=torch.float64),
            torch.randn(3, generator=g, dtype=torch.float64),
            0.3 * torch.randn(3, generator=g, dtype=torch.float64),
        ),
    ]
    for case, x, logits, means, log_stds in cases:
        got = run_case(case, mixture_nll, x, logits, means, log_stds)
        mixture = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=logits),
            torch.distributions.Normal(means, log_stds.exp()),
        )
        compare(
            case,
            torch.as_tensor(got),
            -mixture.log_prob(x).mean(),
            atol=1e-4,
            hint="weights = softmax(logits), stds = exp(log_stds); take "
            "logsumexp over components of log weight + log normal density",
        )
    passed("mixture_nll", len(cases))
