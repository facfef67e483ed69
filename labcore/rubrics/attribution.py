"""Rubric of lab 3, attribution methods (``labs/03-attribution.ipynb``).

Eight exercises, 18 points. The hidden models are small random ``labcore.mlp.MLP``\\ s, sent to the
kernel as their sizes, activation and weights (the kernel rebuilds them); inputs, baselines,
targets and permutations are drawn from the grader's ``--seed``. The expected results come from
:mod:`labcore.attribution`, :mod:`labcore.probabilistic` and the exercise checks'
grader-side references (:mod:`labcore.checks.attribution`), computed in the grader's process.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from labcore import attribution as ref
from labcore import probabilistic
from labcore.checks import attribution as checks
from labcore.mlp import MLP
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

F64 = torch.float64


def _generator(seed: int, exercise: int) -> torch.Generator:
    """A generator for one exercise's hidden inputs, derived from the grading seed."""
    return case_generator("03-attribution", seed, exercise)


def _mlp(
    sizes: list[int], seed: int, activation: str = "relu", dtype: torch.dtype = torch.float32
) -> MLP:
    """A random MLP in eval mode with non-zero biases, built without touching the global state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP(sizes, activation)
        with torch.no_grad():
            for layer in model.layers:
                layer.bias.normal_(0.0, 0.5)
    return model.to(dtype).eval()


def _model_spec(model: MLP, sizes: list[int], activation: str) -> dict[str, Any]:
    """What the kernel needs to rebuild ``model``."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"sizes": list(sizes), "activation": activation, "state": state}


#: Kernel side: rebuild the hidden MLP, call ``fn(model, *args, **kwargs)`` and report which tensor
#: arguments (after the model) were changed in place.
_MODEL_CALL = """
def call(fn, spec):
    import torch
    from labcore.mlp import MLP

    m = spec["model"]
    dtype = next(iter(m["state"].values())).dtype
    model = MLP(m["sizes"], m["activation"]).to(dtype)
    model.load_state_dict(m["state"])
    model.eval()
    args = list(spec.get("args", ()))
    kwargs = dict(spec.get("kwargs", {}))
    before = [a.clone() if isinstance(a, torch.Tensor) else None for a in args]
    value = fn(model, *args, **kwargs)
    if isinstance(value, torch.Tensor):
        value = value.detach()
    elif isinstance(value, (list, tuple)):
        value = type(value)(v.detach() if isinstance(v, torch.Tensor) else v for v in value)
    mutated = [
        index
        for index, (arg, copy) in enumerate(zip(args, before))
        if copy is not None and not (arg.shape == copy.shape and torch.equal(arg, copy))
    ]
    return value, {"mutated": mutated}
"""


def _model_case(
    name: str,
    sizes: list[int],
    model_seed: int,
    activation: str,
    dtype: torch.dtype,
    args: list[Any],
    kwargs: dict[str, Any] | None = None,
) -> tuple[HiddenCase, MLP]:
    """A hidden case calling the student's function on a rebuilt MLP; the MLP for the reference."""
    model = _mlp(sizes, model_seed, activation, dtype)
    spec = {"model": _model_spec(model, sizes, activation), "args": args, "kwargs": kwargs or {}}
    return HiddenCase(name, spec), model


# --------------------------------------------------------------------------- exercises 1 and 2
def _gradient_inputs(seed: int, exercise: int) -> list[tuple[Any, ...]]:
    g = _generator(seed, exercise)
    s = 100 * seed + 10 * exercise
    return [
        ("ReLU MLP [7, 12, 4], batch of 5, target=3", [7, 12, 4], s + 1, "relu", torch.float32,
         torch.randn(5, 7, generator=g), 3),
        ("batch of 1, target as a (batch,) tensor", [4, 10, 3], s + 2, "relu", torch.float32,
         torch.randn(1, 4, generator=g), torch.tensor([1])),
        ("tanh MLP in float64, one target per sample", [5, 9, 3], s + 3, "tanh", F64,
         torch.randn(4, 5, generator=g, dtype=F64), torch.tensor([2, 0, 1, 2])),
        ("a model with one output, target=None", [4, 8, 1], s + 4, "relu", torch.float32,
         torch.randn(6, 4, generator=g), None),
        ("three layers [6, 10, 10, 5], target=0", [6, 10, 10, 5], s + 5, "relu", torch.float32,
         torch.randn(3, 6, generator=g), 0),
    ]  # fmt: skip


def _gradient_cases(seed: int, exercise: int, reference) -> list[HiddenCase]:
    cases = []
    for name, sizes, model_seed, activation, dtype, x, target in _gradient_inputs(seed, exercise):
        case, model = _model_case(name, sizes, model_seed, activation, dtype, [x, target])
        cases.append(HiddenCase(case.name, case.inputs, reference(model, x, target)))
    return cases


def _saliency_cases(seed: int) -> list[HiddenCase]:
    return _gradient_cases(seed, 1, ref.saliency)


def _gxi_cases(seed: int) -> list[HiddenCase]:
    return _gradient_cases(seed, 2, ref.gradient_x_input)


def _score_saliency(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return mutation_message(extra, ["x", "target"]) or tensor_mismatch(
        value, case.expected, atol=1e-5, rtol=1e-4,
        hint="differentiate the selected output f_target (summed over the batch) with respect "
        "to x, then take the absolute value",
    )  # fmt: skip


def _score_gxi(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return mutation_message(extra, ["x", "target"]) or tensor_mismatch(
        value, case.expected, atol=1e-5, rtol=1e-4,
        hint="multiply the gradient of f_target with respect to x by x, elementwise, keeping "
        "the sign",
    )  # fmt: skip


# --------------------------------------------------------------------------- exercise 3
def _ig_cases(seed: int) -> list[HiddenCase]:
    g = _generator(seed, 3)
    s = 100 * seed + 30
    inputs = [
        ("tanh MLP [4, 12, 3], zero baseline, 20 steps", [4, 12, 3], s + 1, "tanh", torch.float32,
         torch.randn(3, 4, generator=g), torch.zeros(4), 2, 20),
        ("ReLU MLP, a baseline per sample, 40 steps", [5, 12, 3], s + 2, "relu", torch.float32,
         torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g),
         torch.tensor([0, 2, 1, 1]), 40),
        ("one step (the midpoint alone)", [3, 6, 2], s + 3, "relu", torch.float32,
         torch.randn(2, 3, generator=g), torch.zeros(3), 1, 1),
        ("batch of 1, float64, one output, baseline of shape (n_features,)", [4, 8, 1], s + 4,
         "tanh", F64, torch.randn(1, 4, generator=g, dtype=F64), torch.full((4,), -0.3, dtype=F64),
         None, 16),
        ("7 steps, target as a tensor", [6, 10, 4], s + 5, "relu", torch.float32,
         torch.randn(3, 6, generator=g), torch.zeros(6), torch.tensor([3, 0, 2]), 7),
    ]  # fmt: skip
    cases = []
    for name, sizes, model_seed, activation, dtype, x, baseline, target, steps in inputs:
        case, model = _model_case(
            name, sizes, model_seed, activation, dtype, [x, baseline, target, steps]
        )
        attributions, delta = ref.integrated_gradients(
            model, x, baseline, target, steps=steps, method="riemann_middle", return_delta=True
        )
        cases.append(HiddenCase(case.name, case.inputs, (attributions, delta)))
    return cases


def _score_ig(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return f"expected a pair (attributions, delta), got {describe(value)}."
    attributions, delta = case.expected
    return (
        mutation_message(extra, ["x", "baseline", "target", "steps"])
        or tensor_mismatch(
            value[0], attributions, atol=1e-5, rtol=1e-4, what="the attributions",
            hint="IG_i = (x_i - x'_i) * (1/steps) sum_s d f/d x_i at x' + alpha_s (x - x'), with "
            "the midpoints alpha_s = (s + 1/2) / steps",
        )
        or tensor_mismatch(
            value[1], delta, atol=1e-4, rtol=1e-4, what="delta",
            hint="delta = attributions summed over the features - (f(x) - f(baseline)), one per "
            "sample, shape (batch,)",
        )
    )  # fmt: skip


# --------------------------------------------------------------------------- exercise 4
def _shapley_exact_cases(seed: int) -> list[HiddenCase]:
    g = _generator(seed, 4)
    s = 100 * seed + 40
    inputs = [
        ("4 features, batch of 3, target=0", [4, 8, 2], s + 1, torch.float32,
         torch.randn(3, 4, generator=g), torch.zeros(4), 0),
        ("5 features, float64, a baseline per sample", [5, 10, 3], s + 2, F64,
         torch.randn(2, 5, generator=g, dtype=F64), torch.randn(2, 5, generator=g, dtype=F64),
         torch.tensor([2, 1])),
        ("batch of 1, one output, target=None", [6, 8, 1], s + 3, torch.float32,
         torch.randn(1, 6, generator=g), torch.full((6,), 0.5), None),
        ("one feature: phi = f(x) - f(baseline)", [1, 5, 2], s + 4, torch.float32,
         torch.randn(4, 1, generator=g), torch.zeros(1), 1),
        ("two features, target as a tensor", [2, 6, 3], s + 5, torch.float32,
         torch.randn(3, 2, generator=g), torch.ones(2), torch.tensor([0, 1, 2])),
    ]  # fmt: skip
    cases = []
    for name, sizes, model_seed, dtype, x, baseline, target in inputs:
        case, model = _model_case(name, sizes, model_seed, "relu", dtype, [x, baseline, target])
        cases.append(
            HiddenCase(case.name, case.inputs, ref.shapley_exact(model, x, baseline, target))
        )
    return cases


def _score_shapley_exact(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return mutation_message(extra, ["x", "baseline", "target"]) or tensor_mismatch(
        value, case.expected, atol=1e-5, rtol=1e-4,
        hint="phi_i = sum over S without i of |S|! (n - |S| - 1)! / n! [v(S u {i}) - v(S)]; the "
        "values of a sample sum to f(x) - f(baseline)",
    )  # fmt: skip


# --------------------------------------------------------------------------- exercise 5
def _shapley_permutation_cases(seed: int) -> list[HiddenCase]:
    g = _generator(seed, 5)
    s = 100 * seed + 50
    inputs = [
        ("one permutation, reversed order", [4, 8, 2], s + 1, torch.float32,
         torch.randn(2, 4, generator=g), torch.zeros(4), torch.tensor([[3, 2, 1, 0]]), 1),
        ("12 random permutations of 5 features, target as a tensor", [5, 8, 3], s + 2,
         torch.float32, torch.randn(3, 5, generator=g), torch.zeros(5),
         torch.rand(12, 5, generator=g).argsort(dim=1), torch.tensor([1, 0, 2])),
        ("20 permutations, float64, a baseline per sample", [6, 10, 3], s + 3, F64,
         torch.randn(2, 6, generator=g, dtype=F64), torch.randn(2, 6, generator=g, dtype=F64),
         torch.rand(20, 6, generator=g).argsort(dim=1), 2),
        ("all 6 permutations of 3 features (= exact Shapley), one output", [3, 6, 1], s + 4,
         torch.float32, torch.randn(1, 3, generator=g), torch.full((3,), 0.25),
         torch.tensor(list(itertools.permutations(range(3)))), None),
        ("two permutations that are not each other's inverse", [4, 8, 2], s + 5, torch.float32,
         torch.randn(3, 4, generator=g), torch.zeros(4), torch.tensor([[1, 2, 3, 0], [2, 0, 3, 1]]), 0),
    ]  # fmt: skip
    cases = []
    for name, sizes, model_seed, dtype, x, baseline, perms, target in inputs:
        case, model = _model_case(
            name, sizes, model_seed, "relu", dtype, [x, baseline, perms, target]
        )
        expected = checks._permutation_reference(model, x, baseline, perms, target)
        cases.append(HiddenCase(case.name, case.inputs, expected))
    return cases


def _score_shapley_permutations(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return mutation_message(extra, ["x", "baseline", "perms", "target"]) or tensor_mismatch(
        value, case.expected, atol=1e-5, rtol=1e-4,
        hint="perms[j, k] is the feature added k-th in permutation j; it contributes "
        "v(first k + 1 features) - v(first k features); average over the permutations",
    )  # fmt: skip


# --------------------------------------------------------------------------- exercise 6
def _relu_moment_cases(seed: int) -> list[HiddenCase]:
    g = _generator(seed, 6)
    inputs = [
        ("mean 0, variance 1 (and 4)", torch.tensor([0.0, 0.0]), torch.tensor([1.0, 4.0])),
        ("means far from 0 on both sides", torch.tensor([-5.0, -1.5, 1.5, 5.0]),
         torch.tensor([0.5, 1.0, 2.0, 0.25])),
        ("zero variance (a point mass): relu(mean) and 0", torch.tensor([-0.5, 0.0, 2.0]),
         torch.zeros(3)),
        ("shape (3, 2, 4), float64", torch.randn(3, 2, 4, generator=g, dtype=F64),
         torch.rand(3, 2, 4, generator=g, dtype=F64) * 2),
        ("shape (6, 5), some variances 0", torch.randn(6, 5, generator=g),
         torch.rand(6, 5, generator=g) * (torch.rand(6, 5, generator=g) > 0.3)),
    ]  # fmt: skip
    return [
        HiddenCase(name, {"args": [mean, var]}, tuple(probabilistic.relu_moments(mean, var)))
        for name, mean, var in inputs
    ]


def _score_relu_moments(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return f"expected a pair (mean_out, var_out), got {describe(value)}."
    mean, var = case.expected
    return (
        mutation_message(extra, ["mean", "var"])
        or tensor_mismatch(
            value[0], mean, atol=1e-5, rtol=1e-4, what="mean_out",
            hint="E[relu(z)] = mu Phi(r) + sigma phi(r), r = mu / sigma, sigma = sqrt(var); where "
            "var = 0 return relu(mu) (avoid dividing by 0)",
        )
        or tensor_mismatch(
            value[1], var, atol=1e-5, rtol=1e-4, what="var_out",
            hint="Var = E[relu(z)^2] - E[relu(z)]^2 with E[relu(z)^2] = (mu^2 + sigma^2) Phi(r) + "
            "mu sigma phi(r); clamp it at 0; 0 where var = 0",
        )
    )  # fmt: skip


# --------------------------------------------------------------------------- exercise 7
_GAP_KEYS = ("gxi_vs_saliency", "ig_vs_shapley")


def _table_gap_cases(seed: int) -> list[HiddenCase]:
    g = _generator(seed, 7)

    def table(
        n: int, dtype: torch.dtype = torch.float32, ig_shift: float = 0.0, noise: float = 0.0
    ):
        x = torch.randn(n, generator=g, dtype=dtype)
        grad = torch.randn(n, generator=g, dtype=dtype)
        phi = torch.randn(n, generator=g, dtype=dtype)
        ig = torch.randn(n, generator=g, dtype=dtype)
        ig = ig - (ig.sum() - phi.sum()) / n + ig_shift
        gxi = grad * x + noise * torch.randn(n, generator=g, dtype=dtype)
        return {"saliency": grad.abs(), "gradient_x_input": gxi, "integrated_gradients": ig,
                "shapley": phi}, x  # fmt: skip

    inputs = [
        ("a consistent table of 6 features (both gaps 0)", *table(6)),
        ("float64, integrated gradients shifted by 0.1 per feature", *table(4, F64, ig_shift=0.1)),
        ("gradient x input perturbed by noise of size 0.05", *table(5, noise=0.05)),
        ("a single feature, both relations broken", *table(1, ig_shift=-0.3, noise=0.2)),
    ]
    return [
        HiddenCase(name, {"args": [t, x]}, checks._table_gaps_reference(t, x))
        for name, t, x in inputs
    ]


def _number(value: Any) -> float | None:
    """A returned number (a float, an int or a one-element tensor) as a float; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if (
        isinstance(value, TensorResult)
        and value.tensor.numel() == 1
        and value.type_name != "numpy.ndarray"
    ):
        return float(value.tensor.item())
    return None


def _score_table_gaps(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    if not isinstance(value, dict) or set(value) != set(_GAP_KEYS):
        keys = sorted(value) if isinstance(value, dict) else describe(value)
        return f"expected a dict with keys {list(_GAP_KEYS)}, got {keys}."
    hints = {
        "gxi_vs_saliency": "the largest |(|gxi_i| - saliency_i * |x_i|)| over the features; "
        "gradient x input may have either sign",
        "ig_vs_shapley": "|sum of the IG row - sum of the Shapley row|",
    }
    for key in _GAP_KEYS:
        got, want = _number(value[key]), case.expected[key]
        if got is None:
            return f"{key!r} should be a number, got {describe(value[key])}."
        if not math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6):
            return f"{key!r}: expected {want:.6g}, got {got:.6g}. Hint: {hints[key]}"
    return None


# --------------------------------------------------------------------------- exercise 8
#: Kernel side: call the function on a rebuilt MLP with a seeded generator, twice more (same seed,
#: another seed), and ship the parameters of every returned model's linear layers, the last
#: model's of the other two calls, and the original model's after the calls.
_CASCADE_CALL = """
def call(fn, spec):
    import torch
    from labcore.mlp import MLP

    m = spec["model"]
    dtype = next(iter(m["state"].values())).dtype
    model = MLP(m["sizes"], m["activation"]).to(dtype)
    model.load_state_dict(m["state"])
    model.eval()

    def params(stage):
        if not isinstance(stage, torch.nn.Module):
            return type(stage).__name__
        return [[l.weight.detach().clone(), l.bias.detach().clone()]
                for l in stage.modules() if isinstance(l, torch.nn.Linear)]

    def last(models):
        return params(models[-1]) if isinstance(models, (list, tuple)) and models else None

    got = fn(model, torch.Generator().manual_seed(spec["seeds"][0]))
    if isinstance(got, (list, tuple)):
        value = [params(stage) for stage in got]
    else:
        value = got
    again = fn(model, torch.Generator().manual_seed(spec["seeds"][0]))
    other = fn(model, torch.Generator().manual_seed(spec["seeds"][1]))
    return value, {"again": last(again), "other": last(other), "original": params(model)}
"""


def _cascade_cases(seed: int) -> list[HiddenCase]:
    inputs = [
        ("MLP [6, 24, 24, 3] (3 layers)", [6, 24, 24, 3], torch.float32),
        ("float64 MLP [5, 20, 2] (2 layers)", [5, 20, 2], F64),
        ("MLP [4, 16, 16, 16, 2] (4 layers)", [4, 16, 16, 16, 2], torch.float32),
    ]
    cases = []
    for index, (name, sizes, dtype) in enumerate(inputs):
        model = _mlp(sizes, 100 * seed + 80 + index, "relu", dtype)
        layers = [
            [layer.weight.detach().clone(), layer.bias.detach().clone()] for layer in model.layers
        ]
        spec = {"model": _model_spec(model, sizes, "relu"), "seeds": [seed + 11, seed + 12]}
        cases.append(HiddenCase(name, spec, layers))
    return cases


def _params_ok(params: Any, layers: list[list[torch.Tensor]]) -> bool:
    """Whether ``params`` is one (weight, bias) pair of the right shapes and dtype per layer."""
    return (
        isinstance(params, list)
        and len(params) == len(layers)
        and all(
            isinstance(p, list) and len(p) == 2
            and all(isinstance(t, TensorResult) and t.tensor.shape == r.shape and t.tensor.dtype == r.dtype
                    for t, r in zip(p, pair, strict=True))
            for p, pair in zip(params, layers, strict=True)
        )
    )  # fmt: skip


def _score_cascade(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    layers = case.expected
    n = len(layers)
    if not isinstance(value, list | tuple) or len(value) != n + 1:
        return (
            f"expected a list of {n + 1} models (the original and one per randomised layer, top "
            f"down), got {describe(value)}."
        )
    original = extra.get("original")
    if not _params_ok(original, layers) or not all(
        torch.equal(t.tensor, r) for p, pair in zip(original, layers, strict=True)
        for t, r in zip(p, pair, strict=True)
    ):  # fmt: skip
        return (
            "your function changed the original model's parameters: randomise copies "
            "(copy.deepcopy(model)), never the model itself."
        )
    for k, stage in enumerate(value):
        if not _params_ok(stage, layers):
            return (
                f"model {k} is not a copy of the model (a torch.nn.Module with the same linear "
                f"layers, shapes and dtype): got {describe(stage)}."
            )
        for index, ((weight, bias), (w0, b0)) in enumerate(zip(stage, layers, strict=True)):
            where = f"model {k}, layer {index}"
            if index < n - k:
                if not (torch.equal(weight.tensor, w0) and torch.equal(bias.tensor, b0)):
                    return (
                        f"{where}: this layer must keep its trained parameters (model k "
                        "randomises only its last k layers, counting from the output)."
                    )
                continue
            same = (weight.tensor == w0).float().mean().item()
            if same > 0.01 or torch.equal(bias.tensor, b0):
                return (
                    f"{where}: this layer must be randomised (model k randomises the last k "
                    f"layers, counting from the output); {same:.0%} of its weights are unchanged."
                )
            ratio = (weight.tensor.std() / w0.std()).item()
            if not 0.5 < ratio < 2.0:
                return (
                    f"{where}: the new weights have {ratio:.2f} times the original weights' "
                    "standard deviation; draw them from N(0, s^2), s = the original weights' std."
                )
    again, other = extra.get("again"), extra.get("other")
    if not (_params_ok(again, layers) and _params_ok(other, layers)):
        return "calling your function again did not return the same kind of list of models."
    last = value[-1][0][0].tensor
    if not torch.equal(last, again[0][0].tensor):
        return (
            "two calls with generators seeded alike gave different weights: draw every random "
            "number from `generator` (torch.randn(..., generator=generator))."
        )
    if torch.equal(last, other[0][0].tensor):
        return "generators with different seeds gave the same weights: use `generator`."
    return None


RUBRIC = Rubric(
    lab="03-attribution",
    exercises=(
        Exercise(
            "ex-saliency", "saliency", 2, _saliency_cases, _score_saliency, call_source=_MODEL_CALL
        ),
        Exercise(
            "ex-gradient-x-input",
            "gradient_x_input",
            2,
            _gxi_cases,
            _score_gxi,
            call_source=_MODEL_CALL,
        ),
        Exercise(
            "ex-integrated-gradients",
            "integrated_gradients",
            3,
            _ig_cases,
            _score_ig,
            call_source=_MODEL_CALL,
        ),
        Exercise(
            "ex-shapley-exact",
            "shapley_exact",
            3,
            _shapley_exact_cases,
            _score_shapley_exact,
            call_source=_MODEL_CALL,
        ),
        Exercise(
            "ex-shapley-permutations",
            "shapley_permutations",
            3,
            _shapley_permutation_cases,
            _score_shapley_permutations,
            call_source=_MODEL_CALL,
        ),
        Exercise("ex-relu-moments", "relu_moments", 2, _relu_moment_cases, _score_relu_moments),
        Exercise("ex-table-gaps", "table_gaps", 1, _table_gap_cases, _score_table_gaps),
        Exercise(
            "ex-cascading-randomization",
            "cascading_randomization",
            2,
            _cascade_cases,
            _score_cascade,
            call_source=_CASCADE_CALL,
        ),
    ),  # fmt: skip
    reference_modules=(
        "labcore.attribution",
        "labcore.probabilistic",
        "labcore.checks.attribution",
    ),
)
