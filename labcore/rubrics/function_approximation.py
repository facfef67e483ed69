"""Hidden tests of lab 0, learning as function approximation (``labs/00-function-approximation.ipynb``).

Five exercises, 12 points. The hidden inputs differ from the in-notebook checks of
:mod:`labcore.checks.function_approximation` (other sizes, values and seeds) and are drawn from the
grader's ``--seed``; the expected results come from :mod:`labcore.function_approximation`, computed
in the grader's process.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from labcore import function_approximation as ref
from labcore.rubrics import (
    Exercise,
    HiddenCase,
    Rubric,
    TensorResult,
    case_generator,
    describe,
    mutation_message,
    tensor_mismatch,
)

__all__ = ["RUBRIC"]


def _generator(seed: int, exercise: int) -> torch.Generator:
    """A generator for one exercise's hidden inputs, derived from the grading seed."""
    return case_generator("00-function-approximation", seed, exercise)


# --------------------------------------------------------------------------- polynomial features
def _polynomial_cases(seed: int) -> list[HiddenCase]:
    """Batch sizes 1 to 9, degrees 0 to 5, float32 and float64, a column input."""
    g = _generator(seed, 1)
    inputs = [
        ("batch of 7, degree 3, float32", 1.5 * torch.randn(7, generator=g), 3),
        ("batch of 1, degree 5", 1 + torch.rand(1, generator=g), 5),
        ("degree 0 (a single column of ones)", torch.randn(4, generator=g), 0),
        ("batch of 9, degree 4, float64", torch.randn(9, generator=g, dtype=torch.float64), 4),
        ("column input of shape (5, 1), degree 2", torch.randn(5, 1, generator=g), 2),
    ]
    return [
        HiddenCase(name, {"args": [x, degree]}, ref.polynomial_features(x, degree))
        for name, x, degree in inputs
    ]


def _score_polynomial(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    """Input unchanged, then shape, dtype and values of the features."""
    return mutation_message(extra, ["x", "degree"]) or tensor_mismatch(
        value,
        case.expected,
        hint="column k holds x**k for k = 0, ..., degree (the first column is all ones); "
        "reshape x to (batch, 1) and broadcast against the powers",
    )


# --------------------------------------------------------------------------- training loop
#: Kernel side: rebuild the model from the hidden initial weights, train it with the student's
#: loop, and send back the losses and the trained weights.
_REGRESSOR_CALL = """
def call(fn, spec):
    import torch

    layers, width = [], 1
    for _ in range(spec["depth"]):
        layers += [torch.nn.Linear(width, spec["hidden"]), torch.nn.Tanh()]
        width = spec["hidden"]
    layers.append(torch.nn.Linear(width, 1))
    dtype = next(iter(spec["state"].values())).dtype
    model = torch.nn.Sequential(*layers).to(dtype)
    model.load_state_dict(spec["state"])
    x, y = spec["args"]
    before = (x.clone(), y.clone())
    losses = fn(model, x, y, **spec["kwargs"])
    state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    mutated = [i for i, (a, b) in enumerate(zip((x, y), before)) if not torch.equal(a, b)]
    return losses, {"state": state, "mutated": mutated}
"""


def _mse(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean squared error of ``model`` on ``(x, y)``."""
    with torch.no_grad():
        return ((model(x.reshape(-1, 1)) - y.reshape(-1, 1)) ** 2).mean().item()


def _regressor_cases(seed: int) -> list[HiddenCase]:
    """Three trainings from hidden initial weights; the reference run gives the expected losses."""
    g = _generator(seed, 2)
    x1 = torch.linspace(-3, 3, 64)
    x2 = 4 * torch.rand(40, generator=g, dtype=torch.float64) - 2
    y2 = x2**2 - 1 + 0.1 * torch.randn(40, generator=g, dtype=torch.float64)
    x3 = torch.randn(10, generator=g)
    settings = [
        (
            "sin x on [-3, 3], 64 points, float32, 60 steps, lr 0.02",
            x1,
            torch.sin(x1),
            16,
            1,
            60,
            0.02,
        ),
        (
            "noisy parabola, 40 points, float64, two hidden layers, 50 steps, lr 0.05",
            x2,
            y2,
            8,
            2,
            50,
            0.05,
        ),
        ("a single step (steps=1), 10 points", x3, torch.cos(x3), 4, 1, 1, 0.1),
    ]
    cases = []
    for index, (name, x, y, hidden, depth, steps, lr) in enumerate(settings):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1000 * seed + 20 + index)
            model = ref.make_regressor(hidden=hidden, depth=depth).to(x.dtype)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        losses = ref.train_regressor(model, x, y, steps=steps, lr=lr)
        expected = {
            "hidden": hidden,
            "depth": depth,
            "state": state,
            "x": x,
            "y": y,
            "losses": losses,
            "final_mse": _mse(model, x, y),
        }
        spec = {
            "hidden": hidden,
            "depth": depth,
            "state": state,
            "args": [x, y],
            "kwargs": {"steps": steps, "lr": lr},
        }
        cases.append(HiddenCase(name, spec, expected))
    return cases


def _score_regressor(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    """Losses: count, type, first value and Adam's path; then the trained weights' error."""
    expected = case.expected
    steps = len(expected["losses"])
    if not isinstance(value, list | tuple) or len(value) != steps:
        return f"expected a list of {steps} losses (one per step), got {describe(value)}."
    if not all(isinstance(v, float) for v in value):
        return (
            f"the losses should be Python floats, got {describe(value)}. "
            "Hint: append loss.item(), not the tensor."
        )
    problem = mutation_message(extra, ["x", "y"])
    if problem:
        return problem
    state = extra.get("state")
    model = ref.make_regressor(hidden=expected["hidden"], depth=expected["depth"])
    model = model.to(expected["x"].dtype)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not (
        isinstance(state, dict)
        and set(state) == set(shapes)
        and all(
            isinstance(v, TensorResult) and tuple(v.tensor.shape) == shapes[k]
            for k, v in state.items()
        )
    ):
        return "after your function ran, the model's parameters were missing or had changed shape."
    model.load_state_dict({k: v.tensor.to(expected["x"].dtype) for k, v in state.items()})
    reference = expected["losses"]
    if not math.isclose(value[0], reference[0], rel_tol=1e-4, abs_tol=1e-6):
        return (
            f"the first loss is {value[0]:.6g}, but the mean squared error of the initial model "
            f"is {reference[0]:.6g}. Hint: the loss is the mean of (model(x) - y)**2 over the "
            "batch, with x and y reshaped to (batch, 1), recorded before optimizer.step()."
        )
    for step, (got, want) in enumerate(zip(value, reference, strict=True)):
        if not math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-6):
            return (
                f"the losses agree with full-batch Adam up to step {step}, where the loss is "
                f"{got:.6g} instead of {want:.6g}. Hint: use torch.optim.Adam(model.parameters(), "
                "lr=lr), call optimizer.zero_grad() every step, one step per iteration."
            )
    final = _mse(model, expected["x"], expected["y"])
    if not math.isclose(final, expected["final_mse"], rel_tol=1e-2, abs_tol=1e-6):
        return (
            f"the model you were given ends with a mean squared error of {final:.6g} instead of "
            f"{expected['final_mse']:.6g}: train the model passed in, in place (no copy)."
        )
    return None


# --------------------------------------------------------------------------- Gaussian NLL
def _nll(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The expected average negative log-likelihood, from torch.distributions."""
    mean_t = torch.as_tensor(mean, dtype=x.dtype)
    std_t = torch.as_tensor(std, dtype=x.dtype)
    return -torch.distributions.Normal(mean_t, std_t).log_prob(x).mean()


def _nll_cases(seed: int) -> list[HiddenCase]:
    """Floats and 0-d tensors as parameters, one sample, float64, and a differentiable mean."""
    g = _generator(seed, 3)
    x1 = 0.7 + 1.3 * torch.randn(100, generator=g)
    x2 = -2 + 0.4 * torch.randn(30, generator=g)
    x4 = torch.randn(25, generator=g, dtype=torch.float64)
    x5 = torch.randn(12, generator=g)
    cases = [
        (
            "100 samples, mean 0.7 and std 1.3 as Python floats",
            {"args": [x1, 0.7, 1.3]},
            x1,
            0.7,
            1.3,
        ),
        (
            "30 samples, mean and std as 0-d tensors",
            {"args": [x2, torch.tensor(-2.0), torch.tensor(0.4)]},
            x2,
            -2.0,
            0.4,
        ),
        ("one sample", {"args": [torch.tensor([2.5]), -0.5, 3.0]}, torch.tensor([2.5]), -0.5, 3.0),
        ("25 samples, float64", {"args": [x4, 0.2, 0.8]}, x4, 0.2, 0.8),
        (
            "mean given as a tensor that requires grad (the result must be differentiable)",
            {"args": [x5, torch.tensor(0.3), 1.1], "requires_grad": [1]},
            x5,
            0.3,
            1.1,
        ),
    ]
    return [
        HiddenCase(name, spec, {"value": _nll(x, m, s), "grad": "requires_grad" in spec})
        for name, spec, x, m, s in cases
    ]


def _score_nll(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    """A 0-d tensor of the input's dtype with the right value (and a gradient path if needed)."""
    problem = mutation_message(extra, ["x", "mean", "std"]) or tensor_mismatch(
        value,
        case.expected["value"],
        atol=1e-5,
        hint="-log N(x; mu, s^2) = log s + log(2 pi)/2 + (x - mu)^2 / (2 s^2), averaged over the "
        "samples; return a 0-d tensor",
    )
    if problem:
        return problem
    if case.expected["grad"] and not value.requires_grad:
        return (
            "the result does not require grad although mean does: keep the computation in torch "
            "(no .item(), no NumPy, no torch.tensor(...) around the result)."
        )
    return None


# --------------------------------------------------------------------------- Gaussian MLE
def _mle_cases(seed: int) -> list[HiddenCase]:
    """A large sample, two samples, float64, and a single sample (zero spread)."""
    g = _generator(seed, 4)
    inputs = [
        ("1000 samples of N(2, 3^2)", 2 + 3 * torch.randn(1000, generator=g)),
        ("two samples", torch.tensor([-1.0, 3.0])),
        ("30 samples, float64", torch.randn(30, generator=g, dtype=torch.float64)),
        ("one sample (the standard deviation is 0)", torch.tensor([1.25])),
    ]
    return [HiddenCase(name, {"args": [x]}, ref.gaussian_mle(x)) for name, x in inputs]


def _score_mle(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    """A pair of 0-d tensors: the mean, then the biased standard deviation."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return f"expected a pair (mean, std), got {describe(value)}."
    mean, std = case.expected
    return (
        mutation_message(extra, ["x"])
        or tensor_mismatch(value[0], mean, atol=1e-5, what="the mean")
        or tensor_mismatch(
            value[1],
            std,
            atol=1e-5,
            what="the standard deviation",
            hint="the maximum-likelihood variance divides by n, not n - 1 "
            "(torch.std uses n - 1 unless correction=0)",
        )
    )


# --------------------------------------------------------------------------- mixture NLL
def _mixture_cases(seed: int) -> list[HiddenCase]:
    """One to four components, float64, a batch of 1, and a sample far from every component."""
    g = _generator(seed, 5)

    def randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal samples from the exercise's generator."""
        return torch.randn(*shape, generator=g, dtype=dtype)

    inputs = [
        ("two components, 50 samples", 2 * randn(50), randn(2), randn(2), 0.3 * randn(2)),
        ("one component, 20 samples", randn(20), torch.tensor([0.4]), randn(1), 0.2 * randn(1)),
        (
            "a sample 44 standard deviations from every component (summing densities underflows)",
            torch.tensor([0.5, 45.0]),
            torch.tensor([0.0, 0.0]),
            torch.tensor([-1.0, 1.0]),
            torch.tensor([0.0, 0.0]),
        ),
        (
            "three components, float64",
            randn(30, dtype=torch.float64),
            randn(3, dtype=torch.float64),
            randn(3, dtype=torch.float64),
            0.3 * randn(3, dtype=torch.float64),
        ),
        ("four components, a batch of 1", randn(1), randn(4), 2 * randn(4), 0.5 * randn(4)),
    ]
    return [
        HiddenCase(name, {"args": list(args)}, ref.mixture_nll(*args)) for name, *args in inputs
    ]


def _score_mixture(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    """A 0-d tensor equal to the reference (finite where summing densities would underflow)."""
    return mutation_message(extra, ["x", "logits", "means", "log_stds"]) or tensor_mismatch(
        value,
        case.expected,
        atol=1e-4,
        hint="log p(x_i) = logsumexp_k(log_softmax(logits)_k + log N(x_i; mu_k, sigma_k^2)) with "
        "sigma_k = exp(log_stds_k); use torch.logsumexp, never log(sum(exp(...)))",
    )


RUBRIC = Rubric(
    lab="00-function-approximation",
    exercises=(
        Exercise(
            "ex-polynomial-features", "polynomial_features", 2, _polynomial_cases, _score_polynomial
        ),
        Exercise(
            "ex-train-regressor",
            "train_regressor",
            3,
            _regressor_cases,
            _score_regressor,
            call_source=_REGRESSOR_CALL,
            case_timeout=20.0,
        ),
        Exercise("ex-gaussian-nll", "gaussian_nll", 2, _nll_cases, _score_nll),
        Exercise("ex-gaussian-mle", "gaussian_mle", 2, _mle_cases, _score_mle),
        Exercise("ex-mixture-nll", "mixture_nll", 3, _mixture_cases, _score_mixture),
    ),
    reference_modules=("labcore.function_approximation", "labcore.checks.function_approximation"),
)
