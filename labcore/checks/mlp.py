"""Checks for lab 1, multilayer perceptrons (``labs/01-mlp.ipynb``).

One check per exercise. Each runs the student's function and labcore's reference (``labcore.mlp``)
on the same inputs, edge cases included (a batch of one sample, float64, the device in use), and
prints one line starting with ✔ or raises :class:`~labcore.checks.CheckFailed` saying which input
failed, what was expected, what came and what the likely cause is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import labcore
from labcore import mlp as ref
from labcore.checks import (
    CheckFailed,
    assert_unchanged,
    compare,
    meta_check,
    passed,
    rules,
    run_case,
    snapshot,
)
from labcore.data import digits

__all__ = [
    "ACTIVATION_CALL_SOURCE",
    "CLASSIFIER_CALL_SOURCE",
    "classifier_probe",
    "judge_classifier",
    "cka_type_problem",
    "check_layer_forward",
    "check_mlp_forward",
    "check_mlp_backward",
    "check_relu_interpolant_params",
    "check_train_classifier",
    "check_linear_cka",
    "check_geometry_experiment",
]

Tensor = torch.Tensor

# ----------------------------------------------------------------------------- kernel-side calls
#: How a function that takes an activation is called, in the notebook (by the checks) and in the
#: grader's kernel (by the rubric): the activation travels by name (``spec["act_index"]`` names its
#: position). With ``spec["reference_layer"]`` the student's ``mlp_forward`` runs with labcore's
#: reference ``layer_forward`` bound under that name in its own namespace (restored afterwards), so
#: a mistake in exercise 1 costs points in exercise 1 only. With ``spec["meta"]`` the function runs
#: once more on ``meta`` copies of the tensors (:func:`labcore.checks.rules.on_meta`).
ACTIVATION_CALL_SOURCE = """
def call(fn, spec):
    import torch

    from labcore.checks.rules import changed, copies, on_meta, reference_in_place

    def reference_layer_forward(x, W, b, activation):
        return activation(torch.nn.functional.linear(x, W, b))

    activations = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
                   "identity": lambda z: z}
    args = list(spec["args"])
    args[spec["act_index"]] = activations[args[spec["act_index"]]]
    before = copies(args)
    in_place = {"layer_forward": reference_layer_forward} if spec.get("reference_layer") else {}
    with reference_in_place(fn, in_place):
        value = fn(*args)
        extra = {"mutated": changed(args, before)}
        if spec.get("meta"):
            extra["meta"] = on_meta(fn, *args)
    return value, extra
"""

#: The training exercise: rebuild the MLP from ``spec["state"]`` (on the data's device), train it
#: once with the student's loop, and report the losses, the trained weights, the gradients left in
#: ``.grad``, whether the inputs changed and whether the global RNG was drawn from.
CLASSIFIER_CALL_SOURCE = """
def call(fn, spec):
    import torch

    from labcore.checks.rules import changed, copies, watch_global_state
    from labcore.mlp import MLP

    X, y = spec["args"]
    with torch.random.fork_rng(devices=[]):  # the weights come from spec["state"]
        model = MLP(spec["sizes"], spec["activation"])
    model.load_state_dict(spec["state"])
    model.to(X.device)
    before = copies([X, y])
    with watch_global_state() as extra:  # a probe RNG state; the caller's is put back
        losses = fn(model, X, y, **spec["kwargs"])
    extra["mutated"] = changed([X, y], before)
    extra["state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    extra["grads"] = {k: (p.grad.detach().cpu().clone() if p.grad is not None else None)
                      for k, p in model.named_parameters()}
    return losses, extra
"""


_ACTIVATION_CALL = rules.compile_call(ACTIVATION_CALL_SOURCE)
_CLASSIFIER_CALL = rules.compile_call(CLASSIFIER_CALL_SOURCE)
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
               "identity": lambda z: z}  # fmt: skip


def _plain(value: object) -> object:
    """A tensor shipped back by the grader's kernel (a ``TensorResult``) as a plain tensor."""
    tensor = getattr(value, "tensor", None)
    return tensor if isinstance(tensor, Tensor) else value


def cka_type_problem(value: object) -> str | None:
    """The return-type rule of ``linear_cka`` (check and rubric): a 0-d tensor, not a float."""
    if isinstance(value, bool | int | float):
        return (
            f"expected a 0-d torch.Tensor, got a Python {type(value).__name__} ({value!r}): the "
            "statement asks for the tensor itself (converting with .item() drops its dtype, "
            "device and autograd graph)"
        )
    return None


# ----------------------------------------------------------------------------- training probe
#: The probe of ``train_classifier``: ``lr=1e-9`` leaves the weights where they are (to 1e-6), so
#: every recorded loss must equal the cross-entropy of the initial logits on all samples (two equal
#: halves per epoch), and what is left in ``.grad`` tells whether gradients were zeroed between
#: steps.
PROBE_KWARGS = {"epochs": 2, "batch_size": 64, "lr": 1e-9, "seed": 3}
PROBE_SIZES = [64, 24, 10]


def classifier_probe(X: Tensor, y: Tensor, g: torch.Generator) -> tuple[dict, dict]:
    """``(spec, expected)`` of the ``lr = 1e-9`` probe on the first 128 samples of ``(X, y)``.

    The output layer is scaled up (confident logits), so that the cross-entropy of the logits
    (several nats) and that of softmax probabilities (between ``log(e + 9) - 1`` and
    ``log(e + 9)``, 1.46 and 2.46 nats) differ.
    """
    X, y = X[:128], y[:128]
    with torch.random.fork_rng(devices=[]):
        model = ref.MLP(PROBE_SIZES, "tanh")
    with torch.no_grad():
        for layer in model.layers:
            bound = 1.0 / math.sqrt(layer.weight.shape[1])
            for p in (layer.weight, layer.bias):
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
        model.layers[-1].weight.mul_(25.0)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    Xc, yc = X.cpu(), y.cpu()
    logits = model(Xc)
    ce = F.cross_entropy(logits, yc)
    model.zero_grad()
    ce.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    with torch.no_grad():
        softmax_ce = float(F.cross_entropy(torch.softmax(logits, -1), yc))
    spec = {"sizes": PROBE_SIZES, "activation": "tanh", "state": state, "args": [X, y],
            "kwargs": dict(PROBE_KWARGS)}  # fmt: skip
    expected = {"probe": True, "epochs": PROBE_KWARGS["epochs"], "state": state,
                "ce": float(ce.detach()), "softmax_ce": softmax_ce, "grads": grads}  # fmt: skip
    return spec, expected


def judge_classifier(expected: dict, losses: object, extra: dict) -> str | None:
    """The rules of ``train_classifier`` shared by the check and the rubric (``None``: accepted).

    Always: a list of ``epochs`` finite Python floats, ``X`` and ``y`` unchanged, the global RNG
    untouched. On the ``lr = 1e-9`` probe also: the weights unchanged, every loss equal to the mean
    cross-entropy of the logits, and no gradient accumulated across steps.
    """
    epochs = expected["epochs"]
    if not isinstance(losses, list | tuple) or len(losses) != epochs:
        got = f"{type(losses).__name__}" + (
            f" of length {len(losses)}" if isinstance(losses, list | tuple) else ""
        )
        return (
            f"expected a list of {epochs} losses, one per epoch (epochs={epochs}), got {got}: "
            "record the mean of each epoch's mini-batch losses, not every step's"
        )
    if not all(isinstance(v, float) and math.isfinite(v) for v in losses):
        kinds = sorted({type(v).__name__ for v in losses})
        return (
            f"the losses must be finite Python floats, got {', '.join(kinds)}: a tensor loss "
            "keeps its autograd graph alive; convert each mini-batch loss with .item()"
        )
    mutated = extra.get("mutated")
    if mutated:
        names = ", ".join(repr(("X", "y")[i]) for i in mutated if i in (0, 1))
        return f"your function modified its input {names} in place: work on copies"
    if extra.get("global_rng") is not False:
        return (
            "your function drew from torch's global random generator (a shuffle such as "
            "torch.randperm without a generator, or torch.manual_seed): the order of the samples "
            "must come from the torch.Generator seeded with `seed` alone, which makes the run "
            "reproducible and leaves the caller's random stream untouched"
        )
    if not expected.get("probe"):
        return None
    state = {k: _plain(v) for k, v in (extra.get("state") or {}).items()}
    if set(state) != set(expected["state"]) or not all(
        isinstance(state[k], Tensor)
        and state[k].shape == expected["state"][k].shape
        and torch.allclose(state[k].float(), expected["state"][k], rtol=0, atol=1e-6)
        for k in state
    ):
        return (
            f"with lr=1e-9 ({PROBE_KWARGS}) the weights moved by more than 1e-6: the optimizer "
            "must use the `lr` "
            "argument (and no other update may touch the weights)"
        )
    ce, soft = expected["ce"], expected["softmax_ce"]
    for epoch, value in enumerate(losses, start=1):
        if abs(value - ce) > 1e-4 * ce + 1e-4:
            hint = "record the mean cross-entropy of each mini-batch, F.cross_entropy on the logits"
            if abs(value - soft) < 1e-3 * soft + 1e-3:
                hint = (
                    "this is the cross-entropy of softmax probabilities: F.cross_entropy applies "
                    "log-softmax itself, so a softmax before it squashes the logits into [0, 1] "
                    "and the loss can never fall below log(e + 9) - 1 ~ 1.46 for 10 classes"
                )
            return (
                f"with lr=1e-9 ({PROBE_KWARGS}) the weights stay at their initial values, so every "
                f"epoch's loss must equal the mean cross-entropy of the initial logits, {ce:.4f}; "
                f"epoch {epoch} recorded {value:.4f}. Hint: {hint}"
            )
    grads = {k: _plain(v) for k, v in (extra.get("grads") or {}).items()}
    want = expected["grads"]
    if set(grads) == set(want) and all(isinstance(v, Tensor) for v in grads.values()):
        got = torch.cat([grads[k].double().flatten() for k in want])
        full = torch.cat([want[k].double().flatten() for k in want])
        ratio = float(got @ full / (full @ full))
        if ratio > 1.5 and (got - ratio * full).norm() <= 1e-3 * ratio * full.norm():
            return (
                f"with lr=1e-9 every epoch's two steps average to the same gradient g, and after "
                f"{PROBE_KWARGS['epochs']} epochs of 2 mini-batches the parameters' .grad held "
                f"{ratio:.2f} g: the gradients accumulated across steps, because backward() adds "
                "to .grad. Zero the gradients before every backward() (or after every step)"
            )
    return None


def _random_params(
    sizes: list[int], g: torch.Generator, dtype: torch.dtype, device: torch.device
) -> list[tuple[Tensor, Tensor]]:
    """``[(W_1, b_1), ...]`` laid out as ``nn.Linear``, entries ~ N(0, 1/fan_in)."""
    params = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
        W = torch.randn(d_out, d_in, generator=g, dtype=dtype) / math.sqrt(d_in)
        b = 0.5 * torch.randn(d_out, generator=g, dtype=dtype)
        params.append((W.to(device), b.to(device)))
    return params


def _agrees(got: object, other: Tensor | None, atol: float = 1e-5) -> bool:
    """Whether ``got`` equals ``other`` (e.g. the value of a typical mistake, for the hint)."""
    return (
        isinstance(got, Tensor)
        and isinstance(other, Tensor)
        and got.shape == other.shape
        and got.dtype == other.dtype
        and got.device == other.device
        and torch.allclose(got.detach(), other.detach(), atol=atol)
    )


def _transposed_layer(x: Tensor, W: Tensor, b: Tensor | None, sigma) -> Tensor | None:
    """The typical mistake ``sigma(x W + b)``, or ``None`` where its shapes do not fit."""
    if b is None or W.shape[0] != W.shape[1]:
        return None
    return sigma(x @ W + b)


def _reference_forward(params, x: Tensor, sigma: Callable[[Tensor], Tensor]) -> Tensor:
    for l, (W, b) in enumerate(params):
        x = F.linear(x, W, b)
        if l < len(params) - 1:
            x = sigma(x)
    return x


# ------------------------------------------------------------------ exercise 1: one layer
def check_layer_forward(layer_forward: Callable) -> None:
    """``layer_forward(x, W, b, activation) -> activation(x W^T + b)``, shapes ``(batch, d_out)``."""
    g = torch.Generator().manual_seed(10)
    device = labcore.get_device()
    cases = [
        ("batch of 5, 3 -> 4 features, tanh", 5, 3, 4, torch.tanh, torch.float32, "cpu", True),
        ("batch of 1, relu", 1, 6, 2, torch.relu, torch.float32, "cpu", True),
        ("square W (4 x 4), sigmoid", 3, 4, 4, torch.sigmoid, torch.float32, "cpu", True),
        ("float64, identity", 7, 5, 3, lambda z: z, torch.float64, "cpu", True),
        ("no bias (b is None), relu, also run on 'meta' tensors", 4, 3, 5, torch.relu,
         torch.float32, "cpu", False),
        (f"on the device in use ({device}), also run on 'meta' tensors", 8, 16, 8, torch.tanh,
         torch.float32, device, True),
    ]  # fmt: skip
    for case, batch, d_in, d_out, sigma, dtype, dev, with_bias in cases:
        x = torch.randn(batch, d_in, generator=g, dtype=dtype).to(dev)
        W = torch.randn(d_out, d_in, generator=g, dtype=dtype).to(dev)
        b = torch.randn(d_out, generator=g, dtype=dtype).to(dev) if with_bias else None
        before = (snapshot(x), snapshot(W), snapshot(b))
        try:
            got = run_case(case, layer_forward, x, W, b, sigma)
        except CheckFailed as err:
            if "cannot be multiplied" in str(err):
                hint = "W has shape (d_out, d_in) as in nn.Linear: z = x W^T + b multiplies by W^T"
            elif b is None:
                hint = "b may be None: then z = x W^T"
            else:
                hint = "z = x W^T has shape (batch, d_out), and b, of shape (d_out,), is added to every row"
            raise CheckFailed(f"{err}\n  hint: {hint}") from None
        for name, old, new in zip(("x", "W", "b"), before, (x, W, b), strict=True):
            assert_unchanged(case, old, new, name)
        expected = sigma(F.linear(x, W, b))
        hint = "z = x W^T + b has shape (batch, d_out): W is (d_out, d_in) as in nn.Linear"
        if _agrees(got, _transposed_layer(x, W, b, sigma)) and not _agrees(got, expected):
            hint = "you multiplied by W instead of W^T: the rows of W are the output units"
        elif _agrees(got, F.linear(x, W, b)) and not _agrees(got, expected):
            hint = "apply the activation to z = x W^T + b"
        elif isinstance(got, Tensor) and got.dtype != expected.dtype:
            hint = "keep x's dtype (float64 in, float64 out): no cast to another precision"
        compare(case, got, expected, atol=1e-5, hint=hint)
        if "meta" in case:
            meta_check(case, layer_forward, x, W, b, sigma, n_outputs=1)
    passed("layer_forward", len(cases))


# ------------------------------------------------------------------ exercise 2: the composition
def check_mlp_forward(mlp_forward: Callable) -> None:
    """``mlp_forward(params, x, activation)``: layers composed, no activation after the last.

    Your ``mlp_forward`` runs with labcore's reference ``layer_forward`` in place of yours (as in
    the grader), so that a mistake in exercise 1 is reported there only.
    """
    g = torch.Generator().manual_seed(11)
    device = labcore.get_device()
    cases = [
        ("one layer (an affine map, no activation)", [3, 2], 4, "tanh", torch.float32, "cpu"),
        ("sizes [4, 8, 8, 3], tanh", [4, 8, 8, 3], 5, "tanh", torch.float32, "cpu"),
        ("batch of 1, sizes [2, 5, 1], relu", [2, 5, 1], 1, "relu", torch.float32, "cpu"),
        ("float64, sizes [3, 6, 6, 6, 2], sigmoid", [3, 6, 6, 6, 2], 6, "sigmoid",
         torch.float64, "cpu"),
        (f"on the device in use ({device}), relu, also run on 'meta' tensors", [8, 16, 4], 10,
         "relu", torch.float32, device),
    ]  # fmt: skip
    for case, sizes, batch, act, dtype, dev in cases:
        params = _random_params(sizes, g, dtype, dev)
        x = torch.randn(batch, sizes[0], generator=g, dtype=dtype).to(dev)
        spec = {"args": [params, x, act], "act_index": 2, "reference_layer": True}
        spec["meta"] = "meta" in case
        try:
            got, extra = run_case(case, _ACTIVATION_CALL, mlp_forward, spec)
        except CheckFailed as err:
            raise CheckFailed(
                f"{err}\n  hint: each layer takes the previous layer's output a_(l-1), of shape "
                "(batch, d_(l-1)), and W_l has shape (d_l, d_(l-1))"
            ) from None
        if extra["mutated"]:
            raise CheckFailed(f"[{case}] your function modified its input x in place")
        sigma = ACTIVATIONS[act]
        expected = _reference_forward(params, x, sigma)
        hint = "a_0 = x, a_l = sigma(a_{l-1} W_l^T + b_l) for l < L, and f(x) = a_{L-1} W_L^T + b_L"
        if _agrees(got, sigma(expected)) and not _agrees(got, expected):
            hint = "no activation after the last layer: the output is z_L itself (logits)"
        elif isinstance(got, Tensor) and got.dtype != expected.dtype:
            hint = "keep x's dtype (float64 in, float64 out): no cast to another precision"
        compare(case, got, expected, atol=1e-5, hint=hint)
        problem = rules.meta_rule(extra, 1)
        if problem:
            raise CheckFailed(f"[{case}] {problem}")
    passed("mlp_forward", len(cases))


# ------------------------------------------------------------------ exercise 3: backpropagation
def _autograd_gradients(params, x: Tensor, grad_out: Tensor, activation: str):
    leaves = [(W.detach().clone().requires_grad_(), b.detach().clone().requires_grad_())
              for W, b in params]  # fmt: skip
    with torch.enable_grad():
        out = _reference_forward(leaves, x, ref.ACTIVATION_FUNCTIONS[activation])
        flat = [t for pair in leaves for t in pair]
        grads = torch.autograd.grad(out, flat, grad_outputs=grad_out)
    return [(grads[2 * l], grads[2 * l + 1]) for l in range(len(params))]


def _max_rel_error(got: Tensor, want: Tensor) -> float:
    scale = want.abs().max().clamp_min(torch.finfo(want.dtype).tiny)
    return float((got - want).abs().max() / scale)


def check_mlp_backward(mlp_backward: Callable) -> None:
    """``mlp_backward(params, x, grad_out, activation) -> [(dW_1, db_1), ...]`` equal to autograd.

    The student's function runs with autograd switched off (``torch.no_grad``): the gradients
    must come from the matrix formulas. Tolerance: max relative error 1e-6 in float64.
    """
    g = torch.Generator().manual_seed(12)
    device = labcore.get_device()
    f64 = torch.float64
    cases = [
        ("one layer, no activation", [3, 2], 4, "relu", f64, "cpu"),
        ("two layers, tanh", [4, 6, 3], 5, "tanh", f64, "cpu"),
        ("three layers, relu", [5, 8, 8, 2], 7, "relu", f64, "cpu"),
        ("batch of 1, four layers, sigmoid", [3, 5, 5, 5, 2], 1, "sigmoid", f64, "cpu"),
        ("two layers, gelu", [2, 7, 4], 6, "gelu", f64, "cpu"),
        (
            f"on the device in use ({device}), silu, also run on 'meta' tensors",
            [6, 10, 3],
            9,
            "silu",
            f64,
            device,
        ),
        ("float32, tanh (tolerance 1e-4)", [4, 6, 3], 5, "tanh", torch.float32, "cpu"),
    ]
    for case, sizes, batch, activation, dtype, dev in cases:
        params = _random_params(sizes, g, dtype, dev)
        x = torch.randn(batch, sizes[0], generator=g, dtype=dtype).to(dev)
        grad_out = torch.randn(batch, sizes[-1], generator=g, dtype=dtype).to(dev)
        before = (snapshot(x), snapshot(grad_out))
        try:
            with torch.no_grad():
                got = run_case(case, mlp_backward, params, x, grad_out, activation)
        except CheckFailed as err:
            if "does not require grad" in str(err) or "grad_fn" in str(err):
                raise CheckFailed(
                    f"{err}\n  hint: autograd is switched off in this check: compute the gradients "
                    "with the matrix formulas (delta_l, then dW_l = delta_l^T a_{l-1})"
                ) from None
            raise CheckFailed(
                f"{err}\n  hint: delta_l has shape (batch, d_l) like z_l; the step down, "
                "delta_(l-1) = (delta_l W_l) * sigma'(z_(l-1)), has shape (batch, d_(l-1))"
            ) from None
        assert_unchanged(case, before[0], x, "x")
        assert_unchanged(case, before[1], grad_out, "grad_out")
        expected = _autograd_gradients(params, x, grad_out, activation)
        L = len(params)
        if not isinstance(got, (list, tuple)) or len(got) != L:
            raise CheckFailed(
                f"[{case}] expected a list of {L} pairs (dW_l, db_l), one per layer, got "
                f"{type(got).__name__}{f' of length {len(got)}' if hasattr(got, '__len__') else ''}"
            )
        tol = 1e-6 if dtype == torch.float64 else 1e-4
        # compare from the last layer down: the first mismatch tells where the recursion breaks
        for l in range(L - 1, -1, -1):
            pair = got[l]
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise CheckFailed(f"[{case}] entry {l} must be a pair (dW_{l + 1}, db_{l + 1})")
            for name, g_l, e_l in ((f"dW_{l + 1}", pair[0], expected[l][0]),
                                   (f"db_{l + 1}", pair[1], expected[l][1])):  # fmt: skip
                label = f"{case}, {name}"
                if not isinstance(g_l, Tensor) or g_l.shape != e_l.shape:
                    shape_hint = (
                        "dW_l = delta_l^T a_{l-1} has the shape of W_l, (d_l, d_{l-1})"
                        if name.startswith("dW")
                        else "db_l = the sum of delta_l over the batch, shape (d_l,)"
                    )
                    compare(label, g_l, e_l, hint=shape_hint)
                compare(label, g_l, e_l, atol=float("inf"))  # dtype and device
                error = _max_rel_error(g_l.detach(), e_l)
                if error > tol:
                    if (
                        name.startswith("db")
                        and _max_rel_error(pair[0].detach(), expected[l][0]) <= tol
                    ):
                        hint = (
                            f"dW_{l + 1} is right, so delta_{l + 1} is: db_{l + 1} is the *sum* "
                            f"of delta_{l + 1} over the batch (dim 0), the bias being added to "
                            "every sample"
                        )
                    elif l == L - 1:
                        hint = "in the last layer delta_L = grad_out (no activation there)"
                    else:
                        hint = (
                            f"layer {l + 2} is right, so check the step down: delta_{l + 1} = "
                            f"(delta_{l + 2} W_{l + 2}) * sigma'(z_{l + 1}), with sigma' taken at "
                            "the pre-activation z, not at a = sigma(z)"
                        )
                    raise CheckFailed(
                        f"[{label}] max relative error {error:.3g} > {tol:g} against autograd"
                        f"\n  expected: {e_l.flatten()[:4].tolist()}"
                        f"\n  got:      {g_l.detach().flatten()[:4].tolist()}\n  hint: {hint}"
                    )
        if "meta" in case:
            with torch.no_grad():
                meta_check(case, mlp_backward, params, x, grad_out, activation, n_outputs=2 * L)
    passed("mlp_backward", len(cases))


# ------------------------------------------------------------------ exercise 4: the interpolant
def _one_hidden_layer(params, x: Tensor) -> Tensor:
    W1, b1, W2, b2 = params
    return F.linear(torch.relu(F.linear(x, W1, b1)), W2, b2)


def check_relu_interpolant_params(relu_interpolant_params: Callable) -> None:
    """``relu_interpolant_params(knots_x, knots_y) -> (W1, b1, W2, b2)`` of a ReLU network equal
    to the piecewise-linear interpolant, continued linearly beyond the end knots."""
    f64 = torch.float64
    cases = [
        ("two knots (one segment)", torch.tensor([0.0, 1.0]), torch.tensor([1.0, 3.0])),
        ("four uneven knots", torch.tensor([-2.0, -0.5, 0.0, 3.0]), torch.tensor([0.0, 2.0, -1.0, 1.0])),
        ("a constant piece", torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 3.0])),
        ("float64, nine knots of sin, also run on 'meta' tensors",
         torch.linspace(-math.pi, math.pi, 9, dtype=f64),
         torch.sin(torch.linspace(-math.pi, math.pi, 9, dtype=f64))),
    ]  # fmt: skip
    for case, kx, ky in cases:
        before = (snapshot(kx), snapshot(ky))
        got = run_case(case, relu_interpolant_params, kx, ky)
        assert_unchanged(case, before[0], kx, "knots_x")
        assert_unchanged(case, before[1], ky, "knots_y")
        if not isinstance(got, (tuple, list)) or len(got) != 4:
            raise CheckFailed(
                f"[{case}] expected a tuple (W1, b1, W2, b2), got {type(got).__name__}"
            )
        W1, b1, W2, b2 = got
        if not all(isinstance(t, Tensor) for t in got):
            raise CheckFailed(f"[{case}] W1, b1, W2, b2 must all be tensors")
        shapes = tuple(tuple(t.shape) for t in got)
        h = W1.shape[0] if W1.ndim == 2 else -1
        if W1.shape != (h, 1) or b1.shape != (h,) or W2.shape != (1, h) or b2.shape != (1,):
            raise CheckFailed(
                f"[{case}] expected shapes W1 (hidden, 1), b1 (hidden,), W2 (1, hidden), b2 (1,) "
                f"as in nn.Linear, got {shapes}"
            )
        if any(t.dtype != kx.dtype for t in got):
            raise CheckFailed(
                f"[{case}] expected the parameters in the knots' dtype {kx.dtype}, got "
                f"{[t.dtype for t in got]}"
            )
        inside = torch.linspace(float(kx[0]), float(kx[-1]), 201, dtype=kx.dtype)[:, None]
        span = float(kx[-1] - kx[0])
        outside = torch.cat([
            torch.linspace(float(kx[0]) - span, float(kx[0]), 50, dtype=kx.dtype),
            torch.linspace(float(kx[-1]), float(kx[-1]) + span, 50, dtype=kx.dtype),
        ])[:, None]  # fmt: skip
        with torch.random.fork_rng(devices=[]):  # nn.Linear's initialisation, overwritten
            net = ref.relu_interpolant(kx, ky)
        with torch.no_grad():
            compare(
                f"{case}, on [x_0, x_K]",
                _one_hidden_layer(got, inside),
                net(inside),
                atol=1e-5,
                hint="on [x_0, x_K] the network must equal the piecewise-linear interpolant: "
                "one unit per knot x_k (k < K) whose output weight is the change of slope there",
            )
            compare(
                f"{case}, beyond the end knots",
                _one_hidden_layer(got, outside),
                net(outside),
                atol=1e-5,
                hint="beyond x_K the network continues with the last slope, and left of x_0 with "
                "the first: a unit s_0 ReLU(x - x_0) alone is flat left of x_0; add -s_0 ReLU(x_0 - x)",
            )
        if "meta" in case:
            meta_check(case, relu_interpolant_params, kx, ky, n_outputs=4)
    passed("relu_interpolant_params", len(cases))


# ------------------------------------------------------------------ exercise 5: training loop
def _fresh_mlp(sizes: list[int], seed: int) -> nn.Module:
    """``MLP(sizes)`` with nn.Linear's default uniform initialisation drawn from a local generator
    (the global RNG is left alone)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        model = ref.MLP(sizes)
    with torch.no_grad():
        for layer in model.layers:
            bound = 1.0 / math.sqrt(layer.weight.shape[1])
            for p in (layer.weight, layer.bias):
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
    return model


def check_train_classifier(train_classifier: Callable, *, time_limit: float = 30.0) -> None:
    """``train_classifier(model, X, y)`` (the student's defaults) must bring ``MLP([64, 64, 10])``
    to at least 95% accuracy on the held-out digits, in under ``time_limit`` seconds.

    First a short probe with ``lr=1e-9`` (shared with the grader, :func:`judge_classifier`): the
    losses must be the cross-entropy of the logits, gradients must not accumulate across steps,
    the global RNG must stay untouched. The training runs with one CPU thread
    (``torch.set_num_threads(1)``, restored afterwards).
    """
    device = labcore.get_device()
    X_train, y_train, X_test, y_test = digits(device=device)
    spec, expected = classifier_probe(X_train, y_train, torch.Generator().manual_seed(5))
    case = f"probe: MLP({PROBE_SIZES}) on 128 training digits with {PROBE_KWARGS}"
    losses, extra = run_case(case, _CLASSIFIER_CALL, train_classifier, spec)
    problem = judge_classifier(expected, losses, extra)
    if problem:
        raise CheckFailed(f"[{case}] {problem}")

    model = _fresh_mlp([64, 64, 10], seed=0).to(device)
    initial = [p.detach().clone() for p in model.parameters()]
    before = (snapshot(X_train), snapshot(y_train))
    case = f"MLP([64, 64, 10]) on {X_train.shape[0]} training digits ({device})"
    threads = torch.get_num_threads()
    # One CPU thread: fastest for a model this small, and the time limit then measures the loop
    # rather than how busy the machine's other cores are. Restored afterwards.
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        with rules.watch_global_state() as report:  # the caller's RNG state is put back
            losses = run_case(case, train_classifier, model, X_train, y_train)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    assert_unchanged(case, before[0], X_train, "X")
    assert_unchanged(case, before[1], y_train, "y")
    if not isinstance(losses, (list, tuple)) or len(losses) < 2:
        raise CheckFailed(
            f"[{case}] expected a list of losses, one per epoch (at least 2), got "
            f"{type(losses).__name__}"
        )
    problem = judge_classifier(
        {"epochs": len(losses)},
        losses,
        {"mutated": [], "global_rng": report["global_rng"]},
    )
    if problem:
        raise CheckFailed(f"[{case}] {problem}")
    if all(torch.equal(p.detach(), q) for p, q in zip(model.parameters(), initial, strict=True)):
        raise CheckFailed(
            f"[{case}] the model's parameters did not change: build the optimizer on "
            "model.parameters() and call optimizer.step() after loss.backward()"
        )
    if not losses[-1] < losses[0]:
        raise CheckFailed(
            f"[{case}] the loss did not decrease (first {losses[0]:.3f}, last {losses[-1]:.3f}): "
            "check the learning rate and the sign of the update"
        )
    acc = ref.accuracy(model, X_test, y_test)
    if acc < 0.95:
        raise CheckFailed(
            f"[{case}] test accuracy {acc:.3f} < 0.95 (final training loss {losses[-1]:.3f})"
            "\n  hint: shuffle every epoch, and choose the default epochs and learning rate on a "
            "validation split (Adam, lr ~ 1e-3 to 1e-2)"
        )
    if seconds > time_limit:
        raise CheckFailed(
            f"[{case}] training took {seconds:.0f} s, more than {time_limit:.0f} s: use larger "
            "mini-batches or fewer epochs, and no Python loop over samples"
        )
    n = y_test.numel()
    print(f"\u2714 train_classifier: test accuracy {acc:.3f} (>= 0.95) on {n} held-out digits")


# ------------------------------------------------------------------ exercise 6: CKA
def check_linear_cka(linear_cka: Callable) -> None:
    """``linear_cka(X, Y)``: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with centred columns."""
    g = torch.Generator().manual_seed(13)
    device = labcore.get_device()
    X = torch.randn(20, 5, generator=g)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    shifted = torch.randn(30, 4, generator=g) + 5.0
    cases = [
        ("20 samples, 5 and 3 features", X, torch.randn(20, 3, generator=g)),
        ("X with itself (CKA = 1)", X, X.clone()),
        ("a rotated and scaled copy (CKA = 1)", X, 3.0 * X @ Q),
        ("features far from zero mean (needs centring)", shifted,
         shifted[:, :2] ** 2 + torch.randn(30, 2, generator=g)),
        ("three samples", torch.randn(3, 4, generator=g), torch.randn(3, 2, generator=g)),
        ("float64", torch.randn(15, 6, generator=g, dtype=torch.float64),
         torch.randn(15, 2, generator=g, dtype=torch.float64)),
        (f"on the device in use ({device}), also run on 'meta' tensors",
         torch.randn(25, 8, generator=g).to(device), torch.randn(25, 8, generator=g).to(device)),
    ]  # fmt: skip
    for case, A, B in cases:
        before = (snapshot(A), snapshot(B))
        got = run_case(case, linear_cka, A, B)
        assert_unchanged(case, before[0], A, "X")
        assert_unchanged(case, before[1], B, "Y")
        expected = ref.linear_cka(A, B)
        hint = "CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with Xc = X - X.mean(0)"
        problem = cka_type_problem(got)
        if problem:
            raise CheckFailed(f"[{case}] {problem}")
        uncentred = (B.mT @ A).square().sum() / ((A.mT @ A).norm() * (B.mT @ B).norm())
        if _agrees(got, uncentred) and not _agrees(got, expected):
            hint = "centre each feature first: subtract the mean over the samples (dim 0)"
        compare(case, got, expected, atol=1e-5, hint=hint)
        if "meta" in case:
            meta_check(case, linear_cka, A, B, n_outputs=1)
    passed("linear_cka", len(cases))


# ------------------------------------------------------------------ exercise 7: the experiment
def _cluster_task(seed: int, n_clusters: int = 8, d: int = 16, per: int = 8):
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(n_clusters, d, generator=g)
    labels = (torch.randperm(n_clusters, generator=g) < n_clusters // 2).long()
    cluster = torch.arange(n_clusters).repeat_interleave(per)
    X = prototypes[cluster] + 0.2 * torch.randn(len(cluster), d, generator=g)
    return X, labels[cluster]


def check_geometry_experiment(geometry_experiment: Callable) -> None:
    """``geometry_experiment(activation, X, y, width=..., steps=..., seed=...) -> (model, scores)``.

    The check trains on a small clustered task with ``"tanh"`` and ``"relu"`` and verifies that
    ``model`` is a one-hidden-layer ``MLP`` with that activation which fits the labels, and that
    ``scores["input"]`` and ``scores["target"]`` are the linear CKA of its hidden layer with the
    inputs and with the one-hot labels.
    """
    device = labcore.get_device()
    X, y = _cluster_task(0)
    X, y = X.to(device), y.to(device)
    Y = F.one_hot(y, 2).to(X.dtype)
    expected_act = {"tanh": nn.Tanh, "relu": nn.ReLU}
    for activation in ("tanh", "relu"):
        case = f"{activation}, 8 clusters of 8 points in R^16, a random dichotomy ({device})"
        before = (snapshot(X), snapshot(y))
        with torch.random.fork_rng(devices=[]):  # the exercise seeds the global RNG itself
            out = run_case(case, geometry_experiment, activation, X, y, width=32, steps=200, seed=0)
        assert_unchanged(case, before[0], X, "X")
        assert_unchanged(case, before[1], y, "y")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailed(f"[{case}] expected a pair (model, scores), got {type(out).__name__}")
        model, scores = out
        if not isinstance(model, ref.MLP) or len(model.sizes) != 3:
            raise CheckFailed(
                f"[{case}] expected the trained labcore.mlp.MLP with one hidden layer, "
                f"sizes [n_features, width, n_classes], got {model!r:.120}"
            )
        if model.sizes != (X.shape[1], 32, 2):
            raise CheckFailed(
                f"[{case}] expected sizes (16, 32, 2) for width=32 and two classes, "
                f"got {model.sizes}"
            )
        if not isinstance(model.activations[0], expected_act[activation]):
            raise CheckFailed(
                f"[{case}] the hidden layer uses {type(model.activations[0]).__name__}, "
                f"expected {expected_act[activation].__name__}: pass activation to MLP"
            )
        acc = ref.accuracy(model, X, y)
        if acc < 1.0:
            raise CheckFailed(
                f"[{case}] the trained network classifies {acc:.0%} of its training points "
                "correctly, expected 100%: train with cross-entropy on all samples at once "
                "(batch_size = n) for `steps` steps"
            )
        if not isinstance(scores, dict) or set(scores) != {"input", "target"}:
            raise CheckFailed(
                f"[{case}] scores must be a dict with keys 'input' and 'target', got {scores!r:.120}"
            )
        with torch.no_grad():
            H = model.forward_with_intermediates(X)[2][0]
        for key, other in (("input", X), ("target", Y)):
            value = scores[key]
            if not isinstance(value, float):
                raise CheckFailed(f"[{case}] scores[{key!r}] must be a float: use .item()")
            want = ref.linear_cka(H, other)
            compare(
                f"{case}, scores[{key!r}]",
                torch.tensor(value, dtype=want.dtype, device=want.device),
                want,
                atol=1e-4,
                hint="measure the hidden layer sigma(x W_1^T + b_1) of the *trained* model, on "
                f"all of X, against {'X' if key == 'input' else 'the one-hot labels (n, 2)'}",
            )
    passed("geometry_experiment", 2)
