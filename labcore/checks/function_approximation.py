"""Checks for lab 0, learning as function approximation (``labs/00-function-approximation.ipynb``).

One check per exercise, and **one acceptance rule** per exercise shared with the grader: the
notebook check and the rubric (:mod:`labcore.rubrics.function_approximation`) call the student's
function through the same kernel-side source (:data:`CALL_SOURCE`, :data:`TRAIN_CALL_SOURCE`) and
judge what came back with the same function (:func:`judge`), so they cannot disagree. A rule covers
the return type the statement fixes (a tensor, a 0-d tensor, a pair of 0-d tensors, a list of
Python floats), the shape, the dtype (the input's) and, for ``polynomial_features``, the device (one
case runs the function on ``meta`` tensors, which catches a tensor created on the default device
without a GPU), the values against a float64 reference from :mod:`labcore.function_approximation`,
inputs left unchanged, the global RNG and the default dtype left untouched. The checks themselves
never touch the global RNG (local generators only; models are built inside
``torch.random.fork_rng``).
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Any

import torch

from labcore import function_approximation as ref
from labcore.checks import rules, run_judged

__all__ = [
    "CALL_SOURCE",
    "TRAIN_CALL_SOURCE",
    "EXERCISES",
    "CASES",
    "judge",
    "call_function",
    "check_polynomial_features",
    "check_train_regressor",
    "check_gaussian_nll",
    "check_gaussian_mle",
    "check_mixture_nll",
]

Tensor = torch.Tensor
F64 = torch.float64

# The first operation on a 'meta' tensor in a process imports torch's meta kernels (torch._dynamo
# and friends: 2-4 s here, more on a loaded machine). Done here, at import in a kernel, it happens
# in the student's exercise cell (which imports this module) and not inside the grader's timed
# hidden case that runs polynomial_features on 'meta' tensors. The grader's own processes, which
# import this module through the rubric but never run on 'meta', skip it.
if "ipykernel" in sys.modules:
    torch.empty(1, device="meta").mul(2)

# ----------------------------------------------------------------------------- kernel-side calls
#: How the function is called, in the notebook (by the checks) and in the grader's kernel (by the
#: rubric): positional ``spec["args"]``, the positions in ``spec["requires_grad"]`` made leaves
#: that require gradients; the call reports the positions of tensor arguments changed in place,
#: whether the global RNG or the default dtype changed, whether the result requires grad, and
#: with ``spec["meta"]`` the devices of what the function returns for the inputs on ``meta``. The
#: helpers come from :mod:`labcore.checks.rules` (torch and NumPy only: no extra import cost).
CALL_SOURCE = """
def call(fn, spec):
    import torch

    from labcore.checks.rules import changed, copies, on_meta, watch_global_state

    args = list(spec["args"])
    for index in spec.get("requires_grad", ()):
        args[index] = args[index].detach().clone().requires_grad_(True)
    before = copies(args)
    with watch_global_state() as extra:  # a probe RNG state; the caller's is put back
        value = fn(*args)
    extra["mutated"] = changed(args, before)
    extra["requires_grad"] = bool(isinstance(value, torch.Tensor) and value.requires_grad)
    if spec.get("meta"):
        extra["meta"] = on_meta(fn, *args)
    return value, extra
"""

#: The training exercise: the model travels as ``spec["model"]`` (``hidden``, ``depth``, ``state``)
#: and is rebuilt as ``make_regressor`` builds it (inside ``fork_rng``: building it leaves the
#: global RNG alone); the call is ``fn(model, x, y, steps=..., lr=...)`` and reports the trained
#: weights, the inputs changed in place, the global RNG and the default dtype.
TRAIN_CALL_SOURCE = """
def call(fn, spec):
    import torch

    from labcore.checks.rules import changed, copies, watch_global_state

    info = spec["model"]
    dtype = next(iter(info["state"].values())).dtype
    with torch.random.fork_rng(devices=[]):
        layers, width = [], 1
        for _ in range(info["depth"]):
            layers += [torch.nn.Linear(width, info["hidden"]), torch.nn.Tanh()]
            width = info["hidden"]
        layers.append(torch.nn.Linear(width, 1))
        model = torch.nn.Sequential(*layers).to(dtype)
    model.load_state_dict(info["state"])
    x, y = spec["args"]
    before = copies([x, y])
    with watch_global_state() as extra:  # a probe RNG state; the caller's is put back
        losses = fn(model, x, y, steps=spec["steps"], lr=spec["lr"])
    extra["mutated"] = changed([x, y], before)
    extra["state"] = {name: value.detach().clone() for name, value in model.state_dict().items()}
    return losses, extra
"""


_CALLS = {source: rules.compile_call(source) for source in (CALL_SOURCE, TRAIN_CALL_SOURCE)}


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return rules.tolerance(dtype, float64=(1e-9, 1e-7), float32=(1e-5, 1e-4))


def _f64(t: Any) -> Tensor:
    return torch.as_tensor(t).detach().to(F64).cpu()


# ----------------------------------------------------------------------------- the rules
def _rule_polynomial(args: list, got: Any, extra: dict[str, Any]) -> str | None:
    x, degree = args
    problem = rules.common(extra, ["x", "degree"])
    if problem:
        return problem
    x64 = _f64(x).reshape(-1, 1)
    expected = ref.polynomial_features(x64.reshape(-1), degree)
    batch = x64.shape[0]
    powers = torch.arange(degree + 2, dtype=F64)
    problem = rules.tensor_rule(
        got,
        expected,
        x,
        what="the features",
        hint="column k holds x**k for k = 0, ..., degree (the first column is all ones)",
        shape_hints={
            (batch, degree): "there are degree + 1 columns, x**0 up to x**degree (both included)",
            (batch, degree + 2): "there are degree + 1 columns, x**0 up to x**degree",
            (degree + 1, batch): "one row per sample and one column per power: (batch, degree + 1)",
            (batch, 1, degree + 1): "reshape x to (batch, 1) first: a (batch, 1) input stays "
            "(batch, degree + 1)",
        },
        diagnoses={
            "column k holds x**k starting with k = 0 (a column of ones), not x**(k + 1)": lambda: (
                x64 ** powers[1:]
            ),
            "the powers increase from left to right: column k holds x**k": lambda: expected.flip(1),
        },
        **_tolerance(x.dtype),
    )
    return problem or rules.meta_rule(extra, 1)


def _regressor(info: dict[str, Any]) -> torch.nn.Module:
    """The model of a training case, with its initial weights, built without the global RNG."""
    state = info["state"]
    dtype = next(iter(state.values())).dtype
    with torch.random.fork_rng(devices=[]):
        model = ref.make_regressor(hidden=info["hidden"], depth=info["depth"]).to(dtype)
    model.load_state_dict({k: v.detach().cpu() for k, v in state.items()})
    return model


def _train(spec: dict[str, Any], variant: str = "") -> tuple[list[float], torch.nn.Module]:
    """The reference training (``variant == ""``) or a typical mistake: its losses and model."""
    model = _regressor(spec["model"])
    x, y = (t.detach().cpu() for t in spec["args"])
    inputs, targets = x.reshape(-1, 1), y.reshape(-1, 1)
    if variant == "broadcast":
        targets = y.reshape(-1)
    make = torch.optim.SGD if variant == "sgd" else torch.optim.Adam
    optimizer = make(model.parameters(), lr=spec["lr"])
    losses = []
    for _ in range(spec["steps"]):
        if variant != "no_zero_grad":
            optimizer.zero_grad()
        error = (model(inputs) - targets) ** 2
        loss = error.sum() if variant == "sum" else error.mean()
        loss.backward()
        optimizer.step()
        if variant == "after_step":
            with torch.no_grad():
                loss = ((model(inputs) - targets) ** 2).mean()
        losses.append(loss.item())
    return losses, model


_TRAIN_MISTAKES = {
    "no_zero_grad": "gradients accumulate in .grad across steps: call optimizer.zero_grad() "
    "(or model.zero_grad()) every step, before backward()",
    "sgd": "the statement asks for torch.optim.Adam(model.parameters(), lr=lr), not SGD",
    "after_step": "record the loss computed before optimizer.step() (the loss that was "
    "differentiated), not the loss after the update",
    "sum": "the loss is the mean of the squared errors over the batch, not their sum",
    "broadcast": "model(x) has shape (batch, 1) and y has shape (batch,): their difference "
    "broadcasts to (batch, batch); reshape y to (batch, 1) too",
}


def _mse(model: torch.nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return ((model(x.reshape(-1, 1)) - y.reshape(-1, 1)) ** 2).mean().item()


def _rule_train(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    steps = spec["steps"]
    problem = rules.common(extra, ["x", "y"])
    if problem:
        return problem
    if not isinstance(got, list) or len(got) != steps:
        return (
            f"expected a list of {steps} losses (one per step), got {rules.short(got)}\n  hint: "
            "append one loss per step to a list; the list is the result"
        )
    if not all(isinstance(v, float) for v in got):
        return (
            f"the losses should be Python floats, got {rules.short(got)}\n  hint: append loss.item(), "
            "not the loss tensor (which also keeps its graph alive)"
        )
    reference, model = _train(spec)

    def agree(losses: list[float], upto: int | None = None) -> bool:
        return all(
            math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6)
            for a, b in zip(got[:upto], losses[:upto], strict=True)
        )

    if not agree(reference):
        hint = (
            "one full-batch step of torch.optim.Adam(model.parameters(), lr=lr) per iteration: "
            "zero_grad, loss = mean of (model(x) - y)**2 with x and y reshaped to (batch, 1), "
            "backward, step; record loss.item()"
        )
        for variant, text in _TRAIN_MISTAKES.items():
            if agree(_train(spec, variant)[0]):
                hint = text
                break
        step = next(
            i
            for i, (a, b) in enumerate(zip(got, reference, strict=True))
            if not math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6)
        )
        if step == 0:
            where = (
                f"the first loss is {got[0]:.6g}, but the initial model's MSE is {reference[0]:.6g}"
            )
        else:
            where = (
                f"the losses agree with full-batch Adam up to step {step}, where the loss is "
                f"{got[step]:.6g} instead of {reference[step]:.6g}"
            )
        return f"{where}\n  hint: {hint}"
    state = extra.get("state")
    trained = _regressor(spec["model"])
    shapes = {k: tuple(v.shape) for k, v in trained.state_dict().items()}
    if not (
        isinstance(state, dict)
        and set(state) == set(shapes)
        and all(isinstance(v, Tensor) and tuple(v.shape) == shapes[k] for k, v in state.items())
    ):
        return "after your function ran, the model's parameters were missing or had changed shape"
    dtype = next(iter(trained.state_dict().values())).dtype
    trained.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    x, y = (t.detach().cpu() for t in spec["args"])
    final, want = _mse(trained, x, y), _mse(model, x, y)
    if not math.isclose(final, want, rel_tol=1e-2, abs_tol=1e-6):
        return (
            f"the losses are right, but the model you were given ends with a mean squared error "
            f"of {final:.6g} instead of {want:.6g}\n  hint: train the model passed in, in place "
            "(no copy.deepcopy, no new model)"
        )
    return None


def _nll64(x: Tensor, mean: Any, std: Any) -> Tensor:
    x64, m, s = _f64(x), _f64(mean), _f64(std)
    return torch.log(s) + 0.5 * math.log(2 * math.pi) + ((x64 - m) ** 2).mean() / (2 * s**2)


def _rule_nll(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    x, mean, std = spec["args"]
    problem = rules.common(extra, ["x", "mean", "std"])
    if problem:
        return problem
    x64, m, s = _f64(x), _f64(mean), _f64(std)
    expected = _nll64(x, mean, std)
    square = ((x64 - m) ** 2).mean()
    problem = rules.tensor_rule(
        got,
        expected,
        x,
        what="the negative log-likelihood",
        hint="-log N(x; mu, s^2) = log s + log(2 pi)/2 + (x - mu)^2 / (2 s^2), averaged over "
        "the samples; return a 0-d tensor",
        shape_hints={
            tuple(x.shape): "average over the samples: the result is a 0-d tensor (use .mean())"
        },
        diagnoses={
            "the normaliser of N(mu, s^2) is s sqrt(2 pi): the term is log s, not log s^2": lambda: (
                expected + torch.log(s)
            ),
            "the constant log(2 pi)/2 is part of the negative log-likelihood": lambda: (
                expected - 0.5 * math.log(2 * math.pi)
            ),
            "the quadratic term divides by 2 s^2 (the variance), not 2 s": lambda: (
                torch.log(s) + 0.5 * math.log(2 * math.pi) + square / (2 * s)
            ),
            "the quadratic term has a factor 1/2: (x - mu)^2 / (2 s^2)": lambda: (
                torch.log(s) + 0.5 * math.log(2 * math.pi) + square / s**2
            ),
            "average over the samples (mean), do not sum": lambda: expected * x.shape[0],
            "the negative log-likelihood has a minus sign: -log N(x; mu, s^2)": lambda: -expected,
        },
        **_tolerance(x.dtype),
    )
    if problem:
        return problem
    if spec.get("requires_grad") and not extra.get("requires_grad"):
        return (
            "the result does not require grad although mean does\n  hint: keep the computation "
            "in torch so that it stays differentiable in mean and std: no .item(), no NumPy, no "
            "torch.tensor(...) around a tensor (torch.as_tensor keeps the graph)"
        )
    return None


def _rule_mle(args: list, got: Any, extra: dict[str, Any]) -> str | None:
    (x,) = args
    problem = rules.common(extra, ["x"])
    if problem:
        return problem
    if not isinstance(got, list | tuple) or len(got) != 2:
        return f"expected the pair (mean, std) of two 0-d tensors, got {rules.short(got)}"
    x64 = _f64(x)
    mean, std = ref.gaussian_mle(x64)
    n = x64.shape[0]
    tol = _tolerance(x.dtype)
    scalar = {tuple(x.shape): "a 0-d tensor: reduce over the samples"}
    problem = rules.tensor_rule(
        got[0],
        mean,
        x,
        what="the mean",
        hint="mu = (1/n) sum_i x_i",
        shape_hints=scalar,
        diagnoses={"the pair is (mean, std), in this order": lambda: std},
        **tol,
    )
    if problem:
        return problem
    return rules.tensor_rule(
        got[1],
        std,
        x,
        what="the standard deviation",
        hint="sigma = sqrt((1/n) sum_i (x_i - mu)^2)",
        shape_hints=scalar,
        diagnoses={
            "the maximum-likelihood variance divides by n, not n - 1 (torch.std uses n - 1 "
            "unless correction=0)": lambda: x64.std() if n > 1 else torch.tensor(math.nan),
            "that is the variance: the standard deviation is its square root": lambda: std**2,
            "subtract the mean before squaring: sigma^2 = (1/n) sum_i (x_i - mu)^2": lambda: (
                x64.square().mean().sqrt()
            ),
        },
        **tol,
    )


def _rule_mixture(args: list, got: Any, extra: dict[str, Any]) -> str | None:
    x, logits, means, log_stds = args
    problem = rules.common(extra, ["x", "logits", "means", "log_stds"])
    if problem:
        return problem
    x64, lg, mu, ls = (_f64(t) for t in args)
    expected = ref.mixture_nll(x64, lg, mu, ls)
    log_2pi = 0.5 * math.log(2 * math.pi)

    def nll(log_w: Tensor, stds: Tensor, log_norm: Tensor, reduce: str = "mean") -> Tensor:
        z = (x64[:, None] - mu) / stds
        log_p = torch.logsumexp(log_w - 0.5 * z**2 - log_norm - log_2pi, dim=-1)
        return -(log_p.sum() if reduce == "sum" else log_p.mean())

    log_w = torch.log_softmax(lg, -1)
    general = (
        "log p(x_i) = logsumexp_k(log_softmax(logits)_k + log N(x_i; mu_k, sigma_k^2)) with "
        "sigma_k = exp(log_stds_k), averaged over the samples; use torch.logsumexp, never "
        "log(sum(exp(...)))"
    )
    problem = rules.tensor_rule(
        got,
        expected,
        x,
        what="the mixture negative log-likelihood",
        hint=general,
        shape_hints={
            tuple(x.shape): "average over the samples: the result is a 0-d tensor",
            tuple(logits.shape): "take logsumexp over the components (the last dimension of a "
            "(batch, n_components) tensor), then the mean over the samples",
        },
        diagnoses={
            "the mixture weights are softmax(logits): use log_softmax(logits) as log pi, "
            "not the logits themselves": lambda: nll(lg, ls.exp(), ls),
            "sigma_k = exp(log_stds_k): log_stds holds the log of the standard deviations": (
                lambda: nll(log_w, ls, ls.log())
            ),
            "log N(x; mu, sigma^2) includes -log sigma_k (the normaliser)": lambda: nll(
                log_w, ls.exp(), torch.zeros_like(ls)
            ),
            "average over the samples (mean), do not sum": lambda: nll(log_w, ls.exp(), ls, "sum"),
            "the constant -log(2 pi)/2 belongs to every log density": lambda: expected - log_2pi,
            "take logsumexp over the components (dim=-1 of the (batch, n_components) tensor), "
            "then the mean over the samples": lambda: (
                -torch.logsumexp(
                    log_w - 0.5 * ((x64[:, None] - mu) / ls.exp()) ** 2 - ls - log_2pi, dim=0
                ).mean()
            ),
        },
        **_tolerance(x.dtype),
    )
    if problem and general in problem and not torch.isfinite(got.detach()).all():
        problem = problem.replace(
            general,
            "for a sample more than 40 standard deviations from every component, exp(-z^2/2) "
            "underflows to 0 and log(0) = -inf: stay in log space, log p(x_i) = "
            "logsumexp_k(log pi_k + log N(x_i; mu_k, sigma_k^2)) with torch.logsumexp",
        )
    return problem


#: exercise -> (kernel-side call source, rule)
EXERCISES: dict[str, tuple[str, Callable[..., str | None]]] = {
    "polynomial_features": (CALL_SOURCE, _rule_polynomial),
    "train_regressor": (TRAIN_CALL_SOURCE, _rule_train),
    "gaussian_nll": (CALL_SOURCE, _rule_nll),
    "gaussian_mle": (CALL_SOURCE, _rule_mle),
    "mixture_nll": (CALL_SOURCE, _rule_mixture),
}

_SPEC_RULES = (_rule_train, _rule_nll)


def judge(exercise: str, spec: dict[str, Any], value: Any, extra: dict[str, Any]) -> str | None:
    """The acceptance rule of ``exercise``: ``None`` if ``value`` (what the student's function
    returned for ``spec``) and ``extra`` (what the call observed) pass, else the message.

    Used by the notebook check and by the grader's rubric alike.
    """
    rule = EXERCISES[exercise][1]
    if not isinstance(extra.get("mutated"), list):  # the call's report is missing: judge the
        problem = judge(exercise, spec, value, {**extra, "mutated": []})  # value, then fail
        return problem or "the call could not tell whether your function changed its inputs"
    if rule in _SPEC_RULES:
        return rule(spec, value, extra)
    return rule(list(spec["args"]), value, extra)


def call_function(exercise: str, fn: Callable, spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Call ``fn`` on ``spec`` exactly as the grader's kernel does (the same source)."""
    return _CALLS[EXERCISES[exercise][0]](fn, spec)


# ----------------------------------------------------------------------------- the cases
def polynomial_cases(g: torch.Generator) -> list[tuple[str, dict]]:
    """Inputs of ``polynomial_features``: degrees 0 to 5, float32 and float64, a column input."""
    return [
        ("batch of 7, degree 3, float32", {"args": [1.5 * torch.randn(7, generator=g), 3]}),
        ("batch of 1, degree 5", {"args": [1 + torch.rand(1, generator=g), 5]}),
        ("degree 0 (a single column of ones)", {"args": [torch.randn(4, generator=g), 0]}),
        (
            "batch of 9, degree 4, float64",
            {"args": [torch.randn(9, generator=g, dtype=F64), 4]},
        ),
        (
            "column input of shape (5, 1), degree 2 (run again on the 'meta' device, a stand-in "
            "for a GPU)",
            {"args": [torch.randn(5, 1, generator=g), 2], "meta": True},
        ),
    ]


def _train_spec(
    g: torch.Generator,
    x: Tensor,
    y: Tensor,
    hidden: int,
    depth: int,
    steps: int,
    lr: float,
) -> dict[str, Any]:
    seed = int(torch.randint(0, 2**31 - 1, (), generator=g))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # inside fork_rng: the caller's global RNG is restored
        model = ref.make_regressor(hidden=hidden, depth=depth).to(x.dtype)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {
        "model": {"hidden": hidden, "depth": depth, "state": state},
        "args": [x, y],
        "steps": steps,
        "lr": lr,
    }


def train_cases(g: torch.Generator) -> list[tuple[str, dict]]:
    """Inputs of ``train_regressor``: short trainings from given initial weights."""
    x1 = torch.linspace(-3, 3, 64)
    x2 = 4 * torch.rand(40, generator=g, dtype=F64) - 2
    y2 = x2**2 - 1 + 0.1 * torch.randn(40, generator=g, dtype=F64)
    x3 = torch.randn(10, generator=g)
    return [
        (
            "sin x on [-3, 3], 64 points, float32, 30 steps, lr 0.02",
            _train_spec(g, x1, torch.sin(x1), 16, 1, 30, 0.02),
        ),
        (
            "noisy parabola, 40 points, float64, two hidden layers, 25 steps, lr 0.05",
            _train_spec(g, x2, y2, 8, 2, 25, 0.05),
        ),
        ("a single step (steps=1), 10 points", _train_spec(g, x3, torch.cos(x3), 4, 1, 1, 0.1)),
    ]


def nll_cases(g: torch.Generator) -> list[tuple[str, dict]]:
    """Inputs of ``gaussian_nll``: floats and 0-d tensors as parameters, a differentiable mean."""
    x1 = 0.7 + 1.3 * torch.randn(100, generator=g)
    x2 = -2 + 0.4 * torch.randn(30, generator=g)
    x4 = torch.randn(25, generator=g, dtype=F64)
    x5 = torch.randn(12, generator=g)
    return [
        ("100 samples, mean 0.7 and std 1.3 as Python floats", {"args": [x1, 0.7, 1.3]}),
        (
            "30 samples, mean and std as 0-d tensors",
            {"args": [x2, torch.tensor(-2.0), torch.tensor(0.4)]},
        ),
        ("one sample", {"args": [torch.tensor([2.5]), -0.5, 3.0]}),
        ("25 samples, float64", {"args": [x4, 0.2, 0.8]}),
        (
            "mean given as a tensor that requires grad (the result must be differentiable)",
            {"args": [x5, torch.tensor(0.3), 1.1], "requires_grad": [1]},
        ),
    ]


def mle_cases(g: torch.Generator) -> list[tuple[str, dict]]:
    """Inputs of ``gaussian_mle``: a large sample, two samples, float64, a single sample."""
    return [
        ("1000 samples of N(2, 3^2)", {"args": [2 + 3 * torch.randn(1000, generator=g)]}),
        ("two samples", {"args": [torch.tensor([-1.0, 3.0])]}),
        ("30 samples, float64", {"args": [torch.randn(30, generator=g, dtype=F64)]}),
        ("one sample (the standard deviation is 0)", {"args": [torch.tensor([1.25])]}),
    ]


def mixture_cases(g: torch.Generator) -> list[tuple[str, dict]]:
    """Inputs of ``mixture_nll``: one to four components, float64, a far-away sample."""

    def randn(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    return [
        (
            "two components, 50 samples",
            {"args": [2 * randn(50), randn(2), randn(2), 0.3 * randn(2)]},
        ),
        (
            "one component, 20 samples",
            {"args": [randn(20), torch.tensor([0.4]), randn(1), 0.2 * randn(1)]},
        ),
        (
            "a sample 44 standard deviations from every component (summing densities underflows)",
            {
                "args": [
                    torch.tensor([0.5, 45.0]),
                    torch.tensor([0.0, 0.0]),
                    torch.tensor([-1.0, 1.0]),
                    torch.tensor([0.0, 0.0]),
                ]
            },
        ),
        (
            "three components, float64",
            {
                "args": [
                    randn(30, dtype=F64),
                    randn(3, dtype=F64),
                    randn(3, dtype=F64),
                    0.3 * randn(3, dtype=F64),
                ]
            },
        ),
        (
            "four components, a batch of 1",
            {"args": [randn(1), randn(4), 2 * randn(4), 0.5 * randn(4)]},
        ),
    ]


#: exercise -> the case builder (the rubric draws its hidden cases with the same builders)
CASES: dict[str, Callable[[torch.Generator], list[tuple[str, dict]]]] = {
    "polynomial_features": polynomial_cases,
    "train_regressor": train_cases,
    "gaussian_nll": nll_cases,
    "gaussian_mle": mle_cases,
    "mixture_nll": mixture_cases,
}

#: the seeds of the in-notebook cases (the grader draws others from its --seed)
_CHECK_SEEDS = {name: 10 + i for i, name in enumerate(CASES)}


def _check(exercise: str, fn: Callable) -> None:
    g = torch.Generator().manual_seed(_CHECK_SEEDS[exercise])
    call, rule = functools.partial(call_function, exercise, fn), functools.partial(judge, exercise)
    run_judged(exercise, CASES[exercise](g), call, rule, shape_hint="where it broadcasts")


# ----------------------------------------------------------------------------- the checks
def check_polynomial_features(polynomial_features: Callable) -> None:
    """``polynomial_features(x, degree) -> (batch, degree + 1)`` with columns ``x**0 .. x**degree``,
    x's dtype and device, x unchanged."""
    _check("polynomial_features", polynomial_features)


def check_train_regressor(train_regressor: Callable) -> None:
    """``train_regressor(model, x, y, steps, lr) -> list of steps floats``: full-batch Adam on the
    MSE, the losses before each update, the given model trained in place, x and y unchanged."""
    _check("train_regressor", train_regressor)


def check_gaussian_nll(gaussian_nll: Callable) -> None:
    """``gaussian_nll(x, mean, std)``: the average NLL under N(mean, std^2), a 0-d tensor of x's
    dtype, differentiable in mean and std."""
    _check("gaussian_nll", gaussian_nll)


def check_gaussian_mle(gaussian_mle: Callable) -> None:
    """``gaussian_mle(x) -> (mean, std)``: two 0-d tensors, the maximum-likelihood estimates."""
    _check("gaussian_mle", gaussian_mle)


def check_mixture_nll(mixture_nll: Callable) -> None:
    """``mixture_nll(x, logits, means, log_stds)``: the average NLL under a Gaussian mixture, a 0-d
    tensor of x's dtype, finite for samples far from every component."""
    _check("mixture_nll", mixture_nll)
