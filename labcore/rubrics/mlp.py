"""Hidden tests of lab 1, multilayer perceptrons (``labs/01-mlp.ipynb``).

Seven exercises, 17 points. The hidden inputs differ from the in-notebook checks of
:mod:`labcore.checks.mlp` and are drawn from the grader's ``--seed``; expected results come from
:mod:`labcore.mlp` (or autograd), computed in the grader's process. The two training exercises
run the student's function once on a small budget in the kernel, which ships back the trained
weights; the grader rebuilds the model and measures it itself.

Shared with the notebook checks (:mod:`labcore.checks.mlp`), so that check and grader agree: the
kernel-side call sources (``mlp_forward`` runs with the reference ``layer_forward`` bound under that
name, so a mistake in exercise 1 costs points once), the ``lr = 1e-9`` probe of
``train_classifier`` and its judge (losses of the logits, no gradient accumulated across steps, the
global RNG untouched, Python floats), and the return-type rule of ``linear_cka`` (a 0-d tensor).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from labcore import mlp as ref
from labcore.checks import mlp as rules
from labcore.checks.rules import meta_rule
from labcore.rubrics import (
    Exercise,
    HiddenCase,
    Rubric,
    TensorResult,
    case_generator,
    describe,
    mutation_message,
    plain,
    tensor_mismatch,
)

__all__ = ["RUBRIC"]

_ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda z: z,
}


def _generator(seed: int, exercise: int) -> torch.Generator:
    """A generator for one exercise's hidden inputs, derived from the grading seed."""
    return case_generator("01-mlp", seed, exercise)


def _params(sizes: list[int], g: torch.Generator, dtype: torch.dtype) -> list[list[torch.Tensor]]:
    """``[[W_1, b_1], ...]`` laid out as ``nn.Linear``, entries ~ N(0, 1/fan_in)."""
    return [
        [
            torch.randn(d_out, d_in, generator=g, dtype=dtype) / math.sqrt(d_in),
            0.5 * torch.randn(d_out, generator=g, dtype=dtype),
        ]
        for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def _forward(params: list, x: torch.Tensor, sigma: Any) -> torch.Tensor:
    """The reference composition: no activation after the last layer."""
    for index, (W, b) in enumerate(params):
        x = F.linear(x, W, b)
        if index < len(params) - 1:
            x = sigma(x)
    return x


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-9, "rtol": 1e-7} if dtype == torch.float64 else {"atol": 2e-5, "rtol": 1e-4}


#: Kernel side: the activation travels by name; ``mlp_forward`` runs with the reference
#: ``layer_forward`` in place of the student's (the same source as the notebook check).
_ACTIVATION_CALL = rules.ACTIVATION_CALL_SOURCE


# --------------------------------------------------------------------------- 1: one layer
def _layer_cases(seed: int) -> list[HiddenCase]:
    """Shapes, a batch of one, a square W, float64, no bias."""
    g = _generator(seed, 1)
    settings = [
        (
            "batch of 6, 4 -> 3 features, tanh; also run on 'meta' tensors",
            6,
            4,
            3,
            "tanh",
            torch.float32,
            True,
        ),
        ("batch of 1, relu", 1, 5, 7, "relu", torch.float32, True),
        ("square W (5 x 5), sigmoid", 3, 5, 5, "sigmoid", torch.float32, True),
        ("float64, identity", 8, 6, 2, "identity", torch.float64, True),
        (
            "no bias (b is None), relu; also run on 'meta' tensors",
            4,
            3,
            6,
            "relu",
            torch.float32,
            False,
        ),
    ]
    cases = []
    for name, batch, d_in, d_out, act, dtype, with_bias in settings:
        x = torch.randn(batch, d_in, generator=g, dtype=dtype)
        W = torch.randn(d_out, d_in, generator=g, dtype=dtype)
        b = torch.randn(d_out, generator=g, dtype=dtype) if with_bias else None
        expected = _ACTIVATIONS[act](F.linear(x, W, b))
        spec = {"args": [x, W, b, act], "act_index": 3, "meta": "meta" in name}
        cases.append(HiddenCase(name, spec, expected))
    return cases


def _score_layer(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return (
        mutation_message(extra, ["x", "W", "b", "activation"])
        or tensor_mismatch(
            value,
            case.expected,
            **_tolerance(case.expected.dtype),
            hint="z = x W^T + b (W has shape (d_out, d_in) as in nn.Linear; b may be None), "
            "then apply the activation",
        )
        or meta_rule(plain(extra))
    )


# --------------------------------------------------------------------------- 2: composition
def _mlp_forward_cases(seed: int) -> list[HiddenCase]:
    """One layer, deeper networks, a batch of one, float64; graded with the reference
    ``layer_forward`` in place of the student's (one mistake costs points once)."""
    g = _generator(seed, 2)
    settings = [
        ("one layer (an affine map, no activation)", [4, 3], 5, "tanh", torch.float32),
        (
            "sizes [5, 9, 7, 2], tanh; also run on 'meta' tensors",
            [5, 9, 7, 2],
            6,
            "tanh",
            torch.float32,
        ),
        ("batch of 1, sizes [3, 4, 1], relu", [3, 4, 1], 1, "relu", torch.float32),
        ("float64, sizes [2, 5, 5, 5, 3], sigmoid", [2, 5, 5, 5, 3], 7, "sigmoid", torch.float64),
    ]
    cases = []
    for name, sizes, batch, act, dtype in settings:
        params = _params(sizes, g, dtype)
        x = torch.randn(batch, sizes[0], generator=g, dtype=dtype)
        expected = _forward(params, x, _ACTIVATIONS[act])
        spec = {"args": [params, x, act], "act_index": 2, "reference_layer": True}
        spec["meta"] = "meta" in name
        cases.append(HiddenCase(name, spec, expected))
    return cases


def _score_mlp_forward(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return (
        mutation_message(extra, ["params", "x", "activation"])
        or tensor_mismatch(
            value,
            case.expected,
            **_tolerance(case.expected.dtype),
            hint="a_l = sigma(a_{l-1} W_l^T + b_l) for the hidden layers, and no activation after "
            "the last layer (the output is z_L)",
        )
        or meta_rule(plain(extra))
    )


# --------------------------------------------------------------------------- 3: backpropagation
#: Kernel side: the student's backward pass runs with autograd switched off (with ``spec["meta"]``
#: once more on ``meta`` tensors).
_BACKWARD_CALL = """
def call(fn, spec):
    import torch

    from labcore.checks.rules import on_meta

    params, x, grad_out, activation = spec["args"]
    before = (x.clone(), grad_out.clone())
    with torch.no_grad():
        value = fn(params, x, grad_out, activation)
    mutated = [i + 1 for i, (a, c) in enumerate(zip((x, grad_out), before)) if not torch.equal(a, c)]
    extra = {"mutated": mutated}
    if spec.get("meta"):
        with torch.no_grad():
            extra["meta"] = on_meta(fn, params, x, grad_out, activation)
    return value, extra
"""


def _backward_cases(seed: int) -> list[HiddenCase]:
    """float64 networks of 1 to 4 layers, five activations, a batch of one; gradients by autograd."""
    g = _generator(seed, 3)
    f64 = torch.float64
    settings = [
        ("one layer (no activation)", [4, 3], 5, "tanh"),
        ("two layers, tanh; also run on 'meta' tensors", [5, 7, 3], 6, "tanh"),
        ("three layers, relu", [4, 9, 6, 2], 8, "relu"),
        ("batch of 1, four layers, sigmoid", [3, 4, 4, 4, 2], 1, "sigmoid"),
        ("two layers, gelu", [3, 6, 4], 5, "gelu"),
    ]
    cases = []
    for name, sizes, batch, act in settings:
        params = _params(sizes, g, f64)
        x = torch.randn(batch, sizes[0], generator=g, dtype=f64)
        grad_out = torch.randn(batch, sizes[-1], generator=g, dtype=f64)
        leaves = [[t.clone().requires_grad_() for t in pair] for pair in params]
        out = _forward(leaves, x, ref.ACTIVATION_FUNCTIONS[act])
        flat = [t for pair in leaves for t in pair]
        grads = torch.autograd.grad(out, flat, grad_outputs=grad_out)
        expected = [[grads[2 * i], grads[2 * i + 1]] for i in range(len(params))]
        spec = {"args": [params, x, grad_out, act], "meta": "meta" in name}
        cases.append(HiddenCase(f"{name}, float64", spec, expected))
    return cases


def _score_backward(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = mutation_message(extra, ["params", "x", "grad_out", "activation"])
    if problem:
        return problem
    expected = case.expected
    n_layers = len(expected)
    if not isinstance(value, list | tuple) or len(value) != n_layers:
        return f"expected a list of {n_layers} pairs (dW_l, db_l), one per layer, got {describe(value)}."
    for index in range(n_layers - 1, -1, -1):  # the first mismatch from the top tells where
        pair = value[index]
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            return f"entry {index} should be a pair (dW_{index + 1}, db_{index + 1}), got {describe(pair)}."
        for got, want, label in ((pair[0], expected[index][0], f"dW_{index + 1}"),
                                 (pair[1], expected[index][1], f"db_{index + 1}")):  # fmt: skip
            hint = (
                "in the last layer delta_L = grad_out (no activation there)"
                if index == n_layers - 1
                else "delta_l = (delta_{l+1} W_{l+1}) * sigma'(z_l), with sigma' at the "
                "pre-activation; dW_l = delta_l^T a_{l-1}, db_l = delta_l summed over the batch"
            )
            problem = tensor_mismatch(got, want, atol=1e-9, rtol=1e-6, what=label, hint=hint)
            if problem:
                return problem
    return meta_rule(plain(extra), 2 * n_layers)


# --------------------------------------------------------------------------- 4: interpolant
def _interpolant_cases(seed: int) -> list[HiddenCase]:
    """Two knots, uneven knots, a flat piece, float64 knots of a smooth function."""
    g = _generator(seed, 4)
    uneven = torch.sort(4 * torch.rand(5, generator=g) - 2).values
    dense = torch.linspace(-2.0, 2.0, 7, dtype=torch.float64)
    settings = [
        ("two knots (one segment)", torch.tensor([-1.0, 2.0]), torch.tensor([0.5, -1.0])),
        ("five uneven random knots", uneven, torch.randn(5, generator=g)),
        ("a flat piece in the middle", torch.tensor([0.0, 1.0, 2.0, 3.0]),
         torch.tensor([1.0, 2.0, 2.0, -1.0])),
        ("float64, seven knots of exp(-x^2); also run on 'meta' tensors", dense,
         torch.exp(-dense**2)),
    ]  # fmt: skip
    cases = []
    for name, kx, ky in settings:
        lo, hi = float(kx[0]), float(kx[-1])
        span = hi - lo
        grid = torch.cat([
            torch.linspace(lo - span, lo, 40, dtype=kx.dtype),
            torch.linspace(lo, hi, 161, dtype=kx.dtype),
            torch.linspace(hi, hi + span, 40, dtype=kx.dtype),
        ])[:, None]  # fmt: skip
        with torch.no_grad():
            expected = ref.relu_interpolant(kx, ky)(grid)
        spec = {"args": [kx, ky], "meta": "meta" in name}
        cases.append(HiddenCase(name, spec, {"grid": grid, "values": expected}))
    return cases


def _score_interpolant(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = mutation_message(extra, ["knots_x", "knots_y"])
    if problem:
        return problem
    if not isinstance(value, list | tuple) or len(value) != 4:
        return f"expected a tuple (W1, b1, W2, b2), got {describe(value)}."
    if not all(isinstance(t, TensorResult) for t in value):
        return f"W1, b1, W2 and b2 should all be torch tensors, got {describe(value)}."
    W1, b1, W2, b2 = (t.tensor for t in value)
    grid = case.expected["grid"]
    hidden = W1.shape[0] if W1.ndim == 2 else -1
    if (
        W1.shape != (hidden, 1)
        or b1.shape != (hidden,)
        or W2.shape != (1, hidden)
        or b2.shape != (1,)
    ):
        return (
            "expected shapes W1 (hidden, 1), b1 (hidden,), W2 (1, hidden), b2 (1,) as in "
            f"nn.Linear, got {[tuple(t.shape) for t in (W1, b1, W2, b2)]}."
        )
    if any(t.dtype != grid.dtype for t in (W1, b1, W2, b2)):
        return f"the parameters should have the knots' dtype {grid.dtype}."
    got = F.linear(torch.relu(F.linear(grid, W1, b1)), W2, b2)
    return tensor_mismatch(
        TensorResult(got),
        case.expected["values"],
        atol=1e-5,
        rtol=1e-5,
        what="the network's values on [x_0 - span, x_K + span]",
        hint="the network must equal the piecewise-linear interpolant on [x_0, x_K] and continue "
        "with the first and last slopes beyond the end knots",
    ) or meta_rule(plain(extra), 4)


# --------------------------------------------------------------------------- 5: training
#: Kernel side: rebuild the MLP from the hidden initial weights, train it once with the student's
#: loop, send back the losses, the trained weights and the gradients left (the check's source).
_CLASSIFIER_CALL = rules.CLASSIFIER_CALL_SOURCE

_MIN_ACCURACY = 0.85


def _classifier_cases(seed: int) -> list[HiddenCase]:
    """The ``lr = 1e-9`` probe of the check (losses, accumulated gradients, global RNG), then two
    short trainings on the digits from hidden initial weights (a few epochs each)."""
    from labcore.data import digits

    X_train, y_train, X_test, y_test = digits(seed=seed)
    spec, expected = rules.classifier_probe(X_train, y_train, _generator(seed, 5))
    cases = [HiddenCase("probe: lr=1e-9, 2 epochs of 2 mini-batches of 64 digits", spec, expected)]
    settings = [
        ("MLP([64, 32, 10], tanh), 4 epochs, batch 32, lr 1e-2", [64, 32, 10], "tanh",
         {"epochs": 4, "batch_size": 32, "lr": 1e-2, "seed": 1}),
        ("MLP([64, 48, 10], relu), 3 epochs, batch 64, lr 1e-2", [64, 48, 10], "relu",
         {"epochs": 3, "batch_size": 64, "lr": 1e-2, "seed": 2}),
    ]  # fmt: skip
    for index, (name, sizes, act, kwargs) in enumerate(settings):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1000 * seed + 50 + index)
            model = ref.MLP(sizes, act)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        spec = {"sizes": sizes, "activation": act, "state": state,
                "args": [X_train, y_train], "kwargs": kwargs}  # fmt: skip
        expected = {"sizes": sizes, "activation": act, "state": state, "epochs": kwargs["epochs"],
                    "X_test": X_test, "y_test": y_test}  # fmt: skip
        cases.append(HiddenCase(f"{name}, {len(y_train)} training digits", spec, expected))
    return cases


def _score_classifier(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    expected = case.expected
    problem = rules.judge_classifier(expected, value, extra if isinstance(extra, dict) else {})
    if problem or expected.get("probe"):
        return problem
    model = ref.MLP(expected["sizes"], expected["activation"])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = extra.get("state")
    if not (
        isinstance(state, dict)
        and set(state) == set(shapes)
        and all(
            isinstance(v, TensorResult) and tuple(v.tensor.shape) == shapes[k]
            for k, v in state.items()
        )
    ):
        return "after your function ran, the model's parameters were missing or had changed shape."
    trained = {k: v.tensor.to(torch.float32) for k, v in state.items()}
    if all(torch.equal(trained[k], expected["state"][k]) for k in shapes):
        return (
            "the model's parameters did not change: build the optimizer on model.parameters() "
            "and call optimizer.step() after loss.backward()."
        )
    model.load_state_dict(trained)
    accuracy = ref.accuracy(model, expected["X_test"], expected["y_test"])
    if not accuracy >= _MIN_ACCURACY:
        return (
            f"after training with these settings the model classifies {accuracy:.1%} of the "
            f"held-out digits correctly; expected at least {_MIN_ACCURACY:.0%}. Hint: Adam on "
            "model.parameters() with the given lr, cross-entropy on the logits, mini-batches of "
            "batch_size from a fresh shuffle every epoch, zero the gradients every step."
        )
    return None


# --------------------------------------------------------------------------- 6: CKA
def _cka_cases(seed: int) -> list[HiddenCase]:
    """Random features, identical and rotated copies, shifted means, three samples, float64."""
    g = _generator(seed, 6)
    X = torch.randn(24, 6, generator=g)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    shifted = torch.randn(30, 5, generator=g) - 4.0
    settings = [
        ("24 samples, 6 and 4 features; also run on 'meta' tensors", X,
         torch.randn(24, 4, generator=g)),
        ("a rotated and scaled copy (CKA = 1)", X, 2.5 * X @ Q),
        ("features far from zero mean (needs centring)", shifted,
         shifted[:, :3] ** 2 + torch.randn(30, 3, generator=g)),
        ("three samples", torch.randn(3, 5, generator=g), torch.randn(3, 2, generator=g)),
        ("float64", torch.randn(18, 7, generator=g, dtype=torch.float64),
         torch.randn(18, 3, generator=g, dtype=torch.float64)),
    ]  # fmt: skip
    return [
        HiddenCase(name, {"args": [A, B], "meta": "meta" in name}, ref.linear_cka(A, B))
        for name, A, B in settings
    ]


def _score_cka(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = rules.cka_type_problem(value)
    if problem:
        return problem + "."
    return (
        mutation_message(extra, ["X", "Y"])
        or tensor_mismatch(
            value,
            case.expected,
            atol=1e-5,
            rtol=1e-4,
            hint="CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with each feature centred "
            "over the samples (Xc = X - X.mean(0)); return a 0-d tensor",
        )
        or meta_rule(plain(extra))
    )


# --------------------------------------------------------------------------- 7: the experiment
#: Kernel side: the returned model travels as its sizes, activation class and weights.
_GEOMETRY_CALL = """
def call(fn, spec):
    import torch

    X, y = spec["args"]
    before = (X.clone(), y.clone())
    out = fn(spec["activation"], X, y, **spec["kwargs"])
    extra = {"mutated": [i for i, (a, b) in enumerate(zip((X, y), before)) if not torch.equal(a, b)]}
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        return out, extra
    model, scores = out
    info = {"type": type(model).__name__, "sizes": None, "activation": None, "state": None}
    if isinstance(model, torch.nn.Module):
        sizes = getattr(model, "sizes", None)
        if isinstance(sizes, (tuple, list)) and all(isinstance(s, int) for s in sizes):
            info["sizes"] = [int(s) for s in sizes]
        activations = getattr(model, "activations", None)
        if isinstance(activations, torch.nn.ModuleList) and len(activations):
            info["activation"] = type(activations[0]).__name__
        info["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    extra["model"] = info
    return ("model", scores), extra
"""

_ACTIVATION_CLASSES = {"tanh": "Tanh", "relu": "ReLU"}


def _geometry_cases(seed: int) -> list[HiddenCase]:
    """A small clustered dichotomy, trained with tanh and with relu (200 full-batch steps)."""
    g = _generator(seed, 7)
    n_clusters, d, per = 6, 12, 8
    centres = torch.randn(n_clusters, d, generator=g)
    labels = (torch.randperm(n_clusters, generator=g) < n_clusters // 2).long()
    cluster = torch.arange(n_clusters).repeat_interleave(per)
    X = centres[cluster] + 0.2 * torch.randn(len(cluster), d, generator=g)
    y = labels[cluster]
    cases = []
    for activation, width in (("tanh", 24), ("relu", 20)):
        kwargs = {"width": width, "steps": 200, "seed": seed}
        spec = {"activation": activation, "args": [X, y], "kwargs": kwargs}
        expected = {"activation": activation, "width": width, "X": X, "y": y}
        name = f"{activation}, width {width}, {n_clusters} clusters of {per} points in R^{d}"
        cases.append(HiddenCase(name, spec, expected))
    return cases


def _score_geometry(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = mutation_message(extra, ["X", "y"])
    if problem:
        return problem
    info = extra.get("model")
    if not isinstance(value, tuple | list) or len(value) != 2 or not isinstance(info, dict):
        return f"expected a pair (model, scores), got {describe(value)}."
    expected = case.expected
    X, y = expected["X"], expected["y"]
    sizes = [X.shape[1], expected["width"], 2]
    if info.get("type") != "MLP" or info.get("sizes") != sizes:
        return (
            f"expected the trained labcore.mlp.MLP with sizes {sizes} (width={expected['width']}, "
            f"two classes), got {info.get('type')} with sizes {info.get('sizes')}."
        )
    want_class = _ACTIVATION_CLASSES[expected["activation"]]
    if info.get("activation") != want_class:
        return (
            f"the hidden layer uses {info.get('activation')}, expected {want_class}: "
            "pass activation to MLP."
        )
    model = ref.MLP(sizes, expected["activation"])
    state = info.get("state")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not (
        isinstance(state, dict)
        and set(state) == set(shapes)
        and all(
            isinstance(v, TensorResult) and tuple(v.tensor.shape) == shapes[k]
            for k, v in state.items()
        )
    ):
        return (
            "the returned model's parameters could not be read back (unexpected names or shapes)."
        )
    model.load_state_dict({k: v.tensor.to(torch.float32) for k, v in state.items()})
    accuracy = ref.accuracy(model, X, y)
    if accuracy < 1.0:
        return (
            f"the returned model classifies {accuracy:.0%} of its training points correctly, "
            "expected 100%: train with cross-entropy on all samples at once for `steps` steps."
        )
    scores = value[1]
    if not isinstance(scores, dict) or set(scores) != {"input", "target"}:
        return f"scores should be a dict with keys 'input' and 'target', got {describe(scores)}."
    with torch.no_grad():
        H = model.forward_with_intermediates(X)[2][0]
    for key, other in (("input", X), ("target", F.one_hot(y, 2).to(X.dtype))):
        got = scores[key]
        if not isinstance(got, float):
            return f"scores[{key!r}] should be a Python float (use .item()), got {describe(got)}."
        want = ref.linear_cka(H, other).item()
        if not math.isclose(got, want, abs_tol=1e-4):
            return (
                f"scores[{key!r}] is {got:.5f}, but the linear CKA of the returned model's hidden "
                f"layer with {'X' if key == 'input' else 'the one-hot labels'} is {want:.5f}. Hint: "
                "measure the hidden layer of the *trained* model on all of X."
            )
    return None


RUBRIC = Rubric(
    lab="01-mlp",
    exercises=(
        Exercise(
            "ex-layer-forward",
            "layer_forward",
            2,
            _layer_cases,
            _score_layer,
            call_source=_ACTIVATION_CALL,
        ),
        Exercise(
            "ex-mlp-forward",
            "mlp_forward",
            2,
            _mlp_forward_cases,
            _score_mlp_forward,
            call_source=_ACTIVATION_CALL,
        ),
        Exercise(
            "ex-mlp-backward",
            "mlp_backward",
            3,
            _backward_cases,
            _score_backward,
            call_source=_BACKWARD_CALL,
        ),
        Exercise(
            "ex-relu-interpolant",
            "relu_interpolant_params",
            2,
            _interpolant_cases,
            _score_interpolant,
        ),
        Exercise(
            "ex-train-classifier",
            "train_classifier",
            3,
            _classifier_cases,
            _score_classifier,
            call_source=_CLASSIFIER_CALL,
            case_timeout=30.0,
        ),
        Exercise("ex-linear-cka", "linear_cka", 2, _cka_cases, _score_cka),
        Exercise(
            "ex-geometry-experiment",
            "geometry_experiment",
            3,
            _geometry_cases,
            _score_geometry,
            call_source=_GEOMETRY_CALL,
            case_timeout=30.0,
        ),
    ),  # fmt: skip
    reference_modules=("labcore.mlp", "labcore.checks.mlp"),
)
