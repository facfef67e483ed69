"""Checks for lab 6, learning dynamics (``labs/06-learning-dynamics.ipynb``).

One check per exercise, and **one acceptance rule** per exercise shared with the grader: the
notebook check and the rubric (:mod:`labcore.rubrics.learning_dynamics`) call the student's
function through the same kernel-side source (:data:`CALL_SOURCE`, :data:`NTK_CALL_SOURCE`,
:data:`SPLIT_CALL_SOURCE`) and judge what came back with the same function (:func:`judge`), so
they cannot disagree. A rule covers the return type, the shape, the dtype and device (the input's;
one case per exercise also runs the function on ``meta`` tensors, which catches a tensor created on
the default device without a GPU), the values against a float64 reference from
:mod:`labcore.learning_dynamics`, inputs left unchanged, the global RNG and the default dtype left
untouched. The checks themselves never touch the global RNG (local generators only).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

import labcore
from labcore import learning_dynamics as ref
from labcore.checks import rules, run_judged

__all__ = [
    "CALL_SOURCE",
    "NTK_CALL_SOURCE",
    "SPLIT_CALL_SOURCE",
    "EXERCISES",
    "judge",
    "call_function",
    "check_input_output_modes",
    "check_two_layer_gradient_step",
    "check_mode_strength",
    "check_ntk_by_loop",
    "check_arccos_ntk",
    "check_kernel_predict",
    "check_alignment",
    "check_modular_split",
]

Tensor = torch.Tensor
F64 = torch.float64

# ----------------------------------------------------------------------------- kernel-side calls
#: How the function is called, in the notebook (by the checks) and in the grader's kernel (by the
#: rubric): positional ``spec["args"]``; with ``spec["no_grad"]`` autograd is off; the positions of
#: tensor arguments changed in place, whether the global RNG or the default dtype changed, and
#: with ``spec["meta"]`` what the function returns for the same inputs as ``meta`` tensors.
CALL_SOURCE = """
def call(fn, spec):
    import contextlib

    import torch

    from labcore.checks.rules import changed, copies, on_meta, watch_global_state

    args = list(spec["args"])
    before = copies(args)
    quiet = torch.no_grad if spec.get("no_grad") else contextlib.nullcontext
    with watch_global_state() as extra, quiet():  # a probe RNG state; the caller's is put back
        value = fn(*args)
    extra["mutated"] = changed(args, before)
    if spec.get("meta"):
        with quiet():
            extra["meta"] = on_meta(fn, *args)
    return value, extra
"""

#: The NTK exercise: the model travels as ``spec["model"]`` (``d_in``, ``width``, ``state``) and is
#: rebuilt as a :class:`labcore.learning_dynamics.TwoLayerReLU`; the call reports whether the
#: function changed the parameters or left gradients in their ``.grad``.
NTK_CALL_SOURCE = """
def call(fn, spec):
    import torch

    from labcore.checks.rules import changed, copies, on_meta, watch_global_state
    from labcore.learning_dynamics import TwoLayerReLU

    info = spec["model"]
    state = info["state"]
    model = TwoLayerReLU(info["d_in"], info["width"], dtype=state["weight"].dtype,
                         generator=torch.Generator())  # overwritten: leaves the global RNG alone
    model.load_state_dict(state)
    args = [model, *spec["args"]]
    before = copies(args)
    with watch_global_state() as extra:  # a probe RNG state; the caller's is put back
        value = fn(*args)
    extra["mutated"] = changed(args, before)
    extra["params_changed"] = any(not torch.equal(p.detach(), state[n])
                                  for n, p in model.named_parameters())
    extra["grad_left"] = any(p.grad is not None for p in model.parameters())
    if spec.get("meta"):
        extra["meta"] = on_meta(fn, *args)
    return value, extra
"""

#: The split exercise: called three times, twice with ``seed`` and once with ``seed + 1``.
SPLIT_CALL_SOURCE = """
def call(fn, spec):
    import torch

    from labcore.checks.rules import watch_global_state

    def same(a, b):
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
            return all(same(u, v) for u, v in zip(a, b))
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            return a.shape == b.shape and bool(torch.equal(a, b))
        return bool(a == b)

    p, frac, seed = spec["args"]
    with watch_global_state() as extra:  # a probe RNG state; the caller's is put back
        value = fn(p, frac, seed)
        again = fn(p, frac, seed)
        other = fn(p, frac, seed + 1)
    extra["mutated"] = []
    extra["same_again"] = same(value, again)
    extra["other_differs"] = not same(value, other)
    return value, extra
"""


_CALLS = {
    source: rules.compile_call(source)
    for source in (CALL_SOURCE, NTK_CALL_SOURCE, SPLIT_CALL_SOURCE)
}


# ----------------------------------------------------------------------------- message helpers


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return rules.tolerance(dtype, float64=(1e-9, 1e-7), float32=(1e-4, 1e-4))


# ----------------------------------------------------------------------------- the rules
def _rule_modes(args: list, got: Any, extra: dict[str, Any]) -> str | None:
    x, y = args
    problem = rules.common(extra, ["x", "y"]) or rules.tuple_rule(got, 3, "U, s, V")
    if problem:
        return problem
    sigma = y.detach().to(F64).cpu().mT @ x.detach().to(F64).cpu() / x.shape[0]
    n_out, n_in = sigma.shape
    r = min(n_out, n_in)
    u_ref, s_ref, vh_ref = torch.linalg.svd(sigma, full_matrices=False)
    u, s, v = got
    for name, value, shape in (("U", u, (n_out, r)), ("s", s, (r,)), ("V", v, (n_in, r))):
        hint = {
            "U": "U holds the r = min(n_out, n_in) left singular vectors as columns (the reduced "
            "SVD: full_matrices=False)",
            "s": "one singular value per mode, r = min(n_out, n_in) of them",
            "V": "V holds the right singular vectors as columns, (n_in, r); torch.linalg.svd "
            "returns V^T (its rows are the vectors)",
        }[name]
        if isinstance(value, Tensor) and value.shape == shape[::-1] and name == "V":
            hint = "torch.linalg.svd returns V^T (Vh): its rows are the right singular vectors"
        if isinstance(value, Tensor) and name != "s" and value.shape == (shape[0], shape[0]):
            hint = "use the reduced SVD (full_matrices=False): r = min(n_out, n_in) columns"
        problem = rules.tensor_rule(
            value, torch.zeros(shape, dtype=F64), x, what=name, atol=math.inf, rtol=0.0, hint=hint
        )
        if problem:
            return problem
    tol = _tolerance(x.dtype)
    scale = float(s_ref[0])
    problem = rules.tensor_rule(
        s,
        s_ref,
        x,
        what="the singular values s",
        atol=tol["atol"] * scale * 10,
        rtol=tol["rtol"] * 10,
        hint="s are the singular values of Sigma_yx = y^T x / P, in descending order",
        diagnoses={
            "sort the singular values in descending order (the strongest mode first)": lambda: (
                s_ref.flip(0)
            ),
            "Sigma_yx is an average over the P samples: divide y^T x by P": lambda: (
                s_ref * x.shape[0]
            ),
            "these are the squares of the singular values (eigenvalues of Sigma Sigma^T): take "
            "the square root": lambda: s_ref.square(),
        },
    )
    if problem:
        return problem
    u64, v64, s64 = (t.detach().to(F64).cpu() for t in (u, v, s))
    eye = torch.eye(r, dtype=F64)
    loose = 1e-6 if x.dtype == F64 else 1e-3
    for name, q in (("U", u64), ("V", v64)):
        if not torch.allclose(q.mT @ q, eye, atol=loose):
            return (
                f"the columns of {name} are not orthonormal ({name}^T {name} != I)\n  hint: "
                "singular vectors have unit length and are orthogonal to each other"
            )
    rebuilt = u64 * s64 @ v64.mT
    if not torch.allclose(rebuilt, sigma, atol=loose * scale):
        hint = (
            "U diag(s) V^T must give back Sigma_yx: each pair (u_a, v_a) must go together (the "
            "sign of u_a fixes the sign of v_a)"
        )
        if n_out == n_in and torch.allclose(u64 * s64 @ v64, sigma, atol=loose * scale):
            hint = (
                "torch.linalg.svd returns V^T (Vh); the exercise asks for V, whose columns are v_a"
            )
        elif n_out == n_in and torch.allclose(rebuilt, sigma.mT, atol=loose * scale):
            hint = "Sigma_yx = y^T x / P has shape (n_out, n_in): x^T y / P is its transpose"
        return (
            f"U diag(s) V^T differs from Sigma_yx = y^T x / P (max abs error "
            f"{(rebuilt - sigma).abs().max().item():.3g})\n  hint: {hint}"
        )
    return rules.meta_rule(extra, 3)


def _reference_step(w1: Tensor, w2: Tensor, sigma: Tensor, lr: float) -> tuple[Tensor, Tensor]:
    error = sigma - w2 @ w1  # (n_out, n_in)
    return w1 + lr * w2.mT @ error, w2 + lr * error @ w1.mT


def _rule_step(args: list, got: Any, extra: dict[str, Any]) -> str | None:
    w1, w2, sigma, lr = args
    problem = rules.common(extra, ["w1", "w2", "sigma_yx", "lr"]) or rules.tuple_rule(
        got, 2, "new w1, new w2"
    )
    if problem:
        return problem
    a, b, c = (t.detach().to(F64).cpu() for t in (w1, w2, sigma))
    new1, new2 = _reference_step(a, b, c, lr)
    err = c - b @ a
    seq1 = a + lr * b.mT @ err  # the new w1 ...
    seq2 = b + lr * (c - b @ seq1) @ seq1.mT  # ... used for w2
    seq2b = b + lr * err @ a.mT
    seq1b = a + lr * seq2b.mT @ (c - seq2b @ a)
    tol = _tolerance(w1.dtype)
    general = (
        "dL/dW1 = -W2^T (Sigma_yx - W2 W1) and dL/dW2 = -(Sigma_yx - W2 W1) W1^T; a step is "
        "W <- W - lr dL/dW, both gradients taken at the old weights"
    )
    # what typical mistakes return, as (new w1, new w2)
    sign = (lambda: a - lr * b.mT @ err, lambda: b - lr * err @ a.mT)
    doubled = (lambda: a + 2 * lr * b.mT @ err, lambda: b + 2 * lr * err @ a.mT)
    untransposed = (lambda: a + lr * b @ err, lambda: b + lr * err @ a)  # only when shapes fit
    for index, (name, value, expected, like) in enumerate(
        (("the new w1", got[0], new1, w1), ("the new w2", got[1], new2, w2))
    ):
        other = ("w2", "w1")[index]
        diagnoses = {
            "a simultaneous update: both gradients use the OLD w1 and w2 (this one was computed "
            f"from the new {other})": lambda i=index: (seq1b, seq2)[i],
            "sign error: gradient descent moves against the gradient, W <- W - lr dL/dW with "
            "dL/dW1 = -W2^T (Sigma_yx - W2 W1)": sign[index],
            "L = 1/2 ||Sigma_yx - W2 W1||_F^2 has the factor 1/2: no factor 2 in the "
            "gradient": doubled[index],
            "a missing transpose: dL/dW1 = -W2^T E and dL/dW2 = -E W1^T with E = Sigma_yx - "
            "W2 W1": untransposed[index],
            "the step must change the weights: return W + lr (...) for both": lambda i=index: (
                a,
                b,
            )[i],
        }
        problem = rules.tensor_rule(
            value, expected, like, what=name, hint=general, diagnoses=diagnoses, **tol
        )
        if problem:
            return problem
    return rules.meta_rule(extra, 2)


def _rule_mode_strength(args: list, got: Any, extra: dict[str, Any]) -> str | None:
    t, s, a0 = args
    problem = rules.common(extra, ["t", "s", "a0"])
    if problem:
        return problem
    t64 = t.detach().to(F64).cpu()
    expected = ref.saxe_mode_strength(t64, s, a0)
    hint = "u(t) = s e^{2st} / (e^{2st} - 1 + s/a0); u(0) = a0 and u -> s"
    diagnoses = {
        "the exponent is 2 s t (depth 2: du/dt = 2 u (s - u))": lambda: (
            s / (1 - torch.exp(-s * t64) + torch.exp(-s * t64) * s / a0)
        ),
        "that is a depth-1 network (u = s - (s - a0) e^{-t}); this is depth 2": lambda: (
            s - (s - a0) * torch.exp(-t64)
        ),
        "the denominator is e^{2st} - 1 + s/a0 (not a0/s)": lambda: (
            s / (1 - torch.exp(-2 * s * t64) + torch.exp(-2 * s * t64) * a0 / s)
        ),
    }
    problem = rules.tensor_rule(
        got, expected, t, what="u(t)", hint=hint, diagnoses=diagnoses, **_tolerance(t.dtype)
    )
    if problem and isinstance(got, Tensor) and got.shape == t.shape and got.dtype == t.dtype:
        if not torch.isfinite(got.detach().cpu()).all():
            problem += (
                "\n  hint: for large s t, e^{2st} overflows to inf and inf/inf = NaN: divide "
                "numerator and denominator by e^{2st} so that only e^{-2st} (<= 1) appears"
            )
    return problem or rules.meta_rule(extra, 1)


def _ntk_model(info: dict[str, Any]) -> ref.TwoLayerReLU:
    state = info["state"]
    model = ref.TwoLayerReLU(
        info["d_in"], info["width"], dtype=state["weight"].dtype, generator=torch.Generator()
    )
    model.load_state_dict({k: v.cpu() for k, v in state.items()})
    return model


def _rule_ntk(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    x1, x2 = spec["args"]
    problem = rules.common(extra, ["model", "x1", "x2"])
    if problem:
        return problem
    if extra.get("grad_left"):
        return (
            "your function left gradients in the parameters' .grad (they were None before)\n  "
            "hint: torch.autograd.grad returns the gradients without writing .grad; .backward() "
            "accumulates into .grad"
        )
    model = _ntk_model(spec["model"])
    a, b = x1.detach().cpu().to(model.weight.dtype), x2.detach().cpu().to(model.weight.dtype)
    expected = ref.empirical_ntk(model, a, b).to(F64)

    def partial(names: set[str]) -> Tensor:
        keep = {n for n, _ in model.named_parameters()} - names
        for n, p in model.named_parameters():
            p.requires_grad_(n not in names)
        try:
            return ref.empirical_ntk(model, a, b) if keep else expected
        finally:
            for p in model.parameters():
                p.requires_grad_(True)

    def summed() -> Tensor:
        grads = torch.autograd.grad(model(a).sum(), list(model.parameters()))
        flat = torch.cat([g.flatten() for g in grads])
        grads2 = torch.autograd.grad(model(b).sum(), list(model.parameters()))
        return (flat @ torch.cat([g.flatten() for g in grads2])).expand(a.shape[0], b.shape[0])

    def input_kernel() -> Tensor:
        xa = a.clone().requires_grad_(True)
        xb = b.clone().requires_grad_(True)
        ga = torch.autograd.grad(model(xa).sum(), xa)[0]
        gb = torch.autograd.grad(model(xb).sum(), xb)[0]
        return ga @ gb.mT

    names = [n for n, _ in model.named_parameters()]
    missing = (
        "a parameter is missing from the inner product: sum over every trainable parameter "
        "(weight, bias and readout)"
    )
    diagnoses: dict[str, Callable[[], Tensor]] = {
        f"{missing} (left out: {', '.join(sorted(left))})": lambda left=left: partial(left)
        for left in ({n} for n in names)
    }
    diagnoses |= {
        f"{missing} (kept only: {kept})": lambda kept=kept: partial(set(names) - {kept})
        for kept in names
    }
    diagnoses |= {
        "one gradient per sample: differentiate f(x_i) alone, not the sum over the batch": summed,
        "the NTK differentiates with respect to the parameters theta, not the inputs x": input_kernel,
    }
    problem = rules.tensor_rule(
        got,
        expected,
        x1,
        what="the kernel",
        diagnoses=diagnoses,
        hint="Theta[i, j] = <grad_theta f(x1[i]), grad_theta f(x2[j])>, summed over every "
        "trainable parameter; the result is (n1, n2)",
        **({"atol": 1e-9, "rtol": 1e-7} if x1.dtype == F64 else {"atol": 1e-4, "rtol": 1e-3}),
    )
    return problem or rules.meta_rule(extra, 1)


def _rule_arccos(args: list, got: Any, extra: dict[str, Any]) -> str | None:
    x1, x2 = args
    problem = rules.common(extra, ["x1", "x2"])
    if problem:
        return problem
    a, b = x1.detach().to(F64).cpu(), x2.detach().to(F64).cpu()
    expected = ref.relu_ntk(a, b)
    d = a.shape[1]

    def parts(za: Tensor, zb: Tensor, scale: float = 2 * math.pi) -> tuple[Tensor, Tensor]:
        dot = za @ zb.mT
        norms = za.norm(dim=1)[:, None] * zb.norm(dim=1)[None, :]
        cos = (dot / norms).clamp(-1, 1)
        phi = torch.arccos(cos)
        return norms / scale * (torch.sin(phi) + (math.pi - phi) * cos), dot * (
            math.pi - phi
        ) / scale

    def aug(x: Tensor, root: bool = True) -> Tensor:
        return torch.cat([x / (math.sqrt(d) if root else 1.0), torch.ones_like(x[:, :1])], 1)

    diagnoses = {
        "augment the inputs with the bias coordinate: z = (x / sqrt(d), 1)": lambda: sum(
            parts(a / math.sqrt(d), b / math.sqrt(d))
        ),
        "scale the inputs: z = (x / sqrt(d), 1), as in the network's forward pass": lambda: sum(
            parts(aug(a, False), aug(b, False))
        ),
        "the NTK has two terms: the readout's (arc-cosine of degree 1) AND the hidden layer's "
        "z.z' (pi - phi) / (2 pi)": lambda: parts(aug(a), aug(b))[0],
        "the NTK has two terms: the hidden layer's AND the readout's ||z|| ||z'|| (sin phi + "
        "(pi - phi) cos phi) / (2 pi)": lambda: parts(aug(a), aug(b))[1],
        "both expectations carry 1 / (2 pi), not 1 / pi": lambda: sum(
            parts(aug(a), aug(b), math.pi)
        ),
    }
    hint = "Theta = ||z|| ||z'|| (sin phi + (pi - phi) cos phi) / (2 pi) + z.z' (pi - phi) / (2 pi)"
    tol = {"atol": 1e-9, "rtol": 1e-7} if x1.dtype == F64 else {"atol": 1e-4, "rtol": 2e-3}
    problem = rules.tensor_rule(
        got, expected, x1, what="the kernel", hint=hint, diagnoses=diagnoses, **tol
    )
    if problem and "NaN" in problem:
        problem += (
            "\n  hint: round-off can make cos phi = z.z' / (||z|| ||z'||) slightly larger than 1 "
            "(e.g. on the diagonal, x with itself) and arccos of it is NaN: clamp cos to [-1, 1]"
        )
    return problem or rules.meta_rule(extra, 1)


def _rule_predict(args: list, got: Any, extra: dict[str, Any]) -> str | None:
    k_train, k_test, y, f0_train, f0_test, t = args
    problem = rules.common(extra, ["k_train", "k_test_train", "y", "f0_train", "f0_test", "t"])
    if problem:
        return problem
    K, Ks, yy, g0, h0 = (v.detach().to(F64).cpu() for v in (k_train, k_test, y, f0_train, f0_test))
    expected = ref.kernel_gd_predict(K, Ks, yy, g0, h0, t)

    def with_matrix(
        m: Tensor, ks: Tensor = Ks, residual: Tensor = yy - g0, base: Tensor = h0
    ) -> Tensor:
        return base + ks @ torch.linalg.pinv(K) @ (residual - m @ residual)

    diagnoses = {
        "e^{-Theta t} is a matrix exponential (torch.linalg.matrix_exp or the "
        "eigendecomposition), not exp applied entry by entry": lambda: with_matrix(
            torch.exp(-K * t)
        ),
        "the network starts at f0: add f0_test, and the residual is y - f0_train": lambda: (
            ref.kernel_gd_predict(K, Ks, yy, torch.zeros_like(g0), torch.zeros_like(h0), t)
        ),
        "add f0_test: the prediction starts at the network's initial outputs": lambda: (
            ref.kernel_gd_predict(K, Ks, yy, g0, h0, t) - h0
        ),
        "the residual is y - f0_train (the network starts at f0)": lambda: ref.kernel_gd_predict(
            K, Ks, yy, torch.zeros_like(g0), h0, t
        ),
        "the time enters the exponent: e^{-Theta t}": lambda: ref.kernel_gd_predict(
            K, Ks, yy, g0, h0, 1.0
        ),
    }
    hint = (
        "f_t(x_*) = f0(x_*) + Theta(x_*, X) Theta^{-1} (I - e^{-Theta t}) (y - f0(X)), evaluated "
        "through Theta = Q diag(lambda) Q^T with (1 - e^{-lambda t}) / lambda (t where lambda = 0), "
        "so that a singular kernel is fine"
    )
    tol = {"atol": 1e-8, "rtol": 1e-6} if k_train.dtype == F64 else {"atol": 1e-3, "rtol": 1e-3}
    problem = rules.tensor_rule(
        got, expected, k_train, what="the predictions", hint=hint, diagnoses=diagnoses, **tol
    )
    return problem or rules.meta_rule(extra, 1)


def _rule_alignment(args: list, got: Any, extra: dict[str, Any]) -> str | None:
    k, y = args
    problem = rules.common(extra, ["k", "y"])
    if problem:
        return problem
    if isinstance(got, float | int) and not isinstance(got, bool):
        return (
            f"the alignment should be a 0-d torch.Tensor, got a Python {type(got).__name__}\n  "
            "hint: do not call .item() or float(): keep the result a tensor (on k's device)"
        )
    K, yy = k.detach().to(F64).cpu(), y.detach().to(F64).cpu()
    expected = ref.kernel_alignment(K, yy)
    inner = yy @ K @ yy
    yc = yy - yy.mean()
    diagnoses = {
        "||y y^T||_F = ||y||^2: divide by the squared norm of y": lambda: (
            inner / (K.norm() * yy.norm())
        ),
        "normalise by the Frobenius norm ||K||_F = sqrt(sum K_ij^2), not the trace": lambda: (
            inner / (torch.trace(K) * yy.square().sum())
        ),
        "normalise by ||K||_F and ||y||^2: the alignment is a cosine, in [-1, 1]": lambda: inner,
        "this is the centred alignment; the exercise asks for <K, y y^T>_F / (||K||_F ||y||^2) "
        "with y as given": lambda: (yc @ K @ yc) / (K.norm() * yc.square().sum()),
    }
    hint = "A(K, y) = y^T K y / (||K||_F ||y||^2), a 0-d tensor"
    problem = rules.tensor_rule(
        got,
        expected,
        k,
        what="the alignment",
        hint=hint,
        diagnoses=diagnoses,
        **_tolerance(k.dtype),
    )
    return problem or rules.meta_rule(extra, 1)


def _rule_split(args: list, got: Any, extra: dict[str, Any]) -> str | None:
    p, frac, seed = args
    problem = rules.common(extra, ["p", "train_frac", "seed"]) or rules.tuple_rule(
        got, 2, "train indices, test indices"
    )
    if problem:
        return problem
    n = p * p
    n_train = round(frac * n)
    for name, value, size in (("train", got[0], n_train), ("test", got[1], n - n_train)):
        if not isinstance(value, Tensor):
            return f"the {name} indices should be a torch.Tensor, got {rules.short(value)}"
        if value.dtype != torch.int64:
            return (
                f"the {name} indices should have dtype torch.int64 (index tensors), got "
                f"{value.dtype}\n  hint: torch.randperm returns int64; do not convert"
            )
        if value.ndim != 1 or value.numel() != size:
            hint = f"n_train = round(train_frac * p^2) = round({frac} * {n}) = {n_train}"
            if value.ndim == 1 and value.numel() == math.floor(frac * n) + (name == "test") * 0:
                hint += " (Python's round, not int(), which truncates)"
            if value.ndim == 1 and {n_train, n - n_train} == {value.numel(), size}:
                hint = "the first result holds the training pairs, round(train_frac * p^2) of them"
            return (
                f"the {name} indices should have shape ({size},), got {tuple(value.shape)}\n  "
                f"hint: {hint}"
            )
        if value.device.type != "cpu":
            return f"the {name} indices should be on the CPU, got {value.device}"
    train, test = got[0].cpu(), got[1].cpu()
    everything = torch.cat([train, test]).sort().values
    if not torch.equal(everything, torch.arange(n)):
        overlap = int(train.numel() - torch.unique(train).numel()) + int(
            torch.isin(test, train).sum()
        )
        return (
            f"train and test together should be every index 0..{n - 1} exactly once "
            f"({overlap} repeated or shared)\n  hint: a random permutation of the p^2 indices, "
            "cut in two (drawing indices with replacement repeats some)"
        )
    if not extra.get("same_again"):
        return (
            "two calls with the same seed gave different splits\n  hint: seed a local "
            "torch.Generator with the seed argument and pass it to the random function"
        )
    blocks = {tuple(range(n_train)), tuple(range(n - n_train, n))}
    if tuple(train.sort().values.tolist()) in blocks:
        return (
            "the training indices are a contiguous block of the pairs (no shuffle)\n  hint: the "
            "split must be random: permute the p^2 indices with the seeded generator first"
        )
    if not extra.get("other_differs"):
        return (
            "seeds seed and seed + 1 gave the same split\n  hint: the seed argument must seed "
            "the generator that draws the permutation"
        )
    return None


#: exercise -> (the kernel-side call source, the rule, number of returned tensors)
EXERCISES: dict[str, tuple[str, Callable[..., str | None]]] = {
    "input_output_modes": (CALL_SOURCE, _rule_modes),
    "two_layer_gradient_step": (CALL_SOURCE, _rule_step),
    "mode_strength": (CALL_SOURCE, _rule_mode_strength),
    "ntk_by_loop": (NTK_CALL_SOURCE, _rule_ntk),
    "arccos_ntk": (CALL_SOURCE, _rule_arccos),
    "kernel_predict": (CALL_SOURCE, _rule_predict),
    "alignment": (CALL_SOURCE, _rule_alignment),
    "modular_split": (SPLIT_CALL_SOURCE, _rule_split),
}


def judge(exercise: str, spec: dict[str, Any], value: Any, extra: dict[str, Any]) -> str | None:
    """The acceptance rule of ``exercise``: ``None`` if ``value`` (what the student's function
    returned for ``spec``) and ``extra`` (what the call observed) pass, else the message.

    Used by the notebook check and by the grader's rubric alike.
    """
    source, rule = EXERCISES[exercise]
    if rule is _rule_ntk:
        return rule(spec, value, extra)
    return rule(list(spec["args"]), value, extra)


def call_function(exercise: str, fn: Callable, spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Call ``fn`` on ``spec`` exactly as the grader's kernel does (the same source)."""
    return _CALLS[EXERCISES[exercise][0]](fn, spec)


# ----------------------------------------------------------------------------- the cases


def modes_cases(g: torch.Generator, device: torch.device | None = None) -> list[tuple[str, dict]]:
    """Inputs of ``input_output_modes``: (name, spec)."""

    def data(p: int, n_in: int, n_out: int, dtype: torch.dtype) -> list[Tensor]:
        return [
            torch.randn(p, n_in, generator=g, dtype=dtype),
            torch.randn(p, n_out, generator=g, dtype=dtype),
        ]

    out = [
        ("P = 50 samples, n_in = 6, n_out = 4, float64", {"args": data(50, 6, 4, F64)}),
        (
            "P = 40, n_in = 3, n_out = 5 (more outputs than inputs), float64",
            {"args": data(40, 3, 5, F64)},
        ),
        ("P = 30, n_in = n_out = 4 (square), float64", {"args": data(30, 4, 4, F64), "meta": True}),
        ("P = 64, n_in = 8, n_out = 3, float32", {"args": data(64, 8, 3, torch.float32)}),
    ]
    if device is not None and device.type != "cpu":
        out.append(
            (
                f"on the device in use ({device})",
                {"args": [a.to(device) for a in data(20, 5, 3, torch.float32)]},
            )
        )
    return out


def step_cases(g: torch.Generator, device: torch.device | None = None) -> list[tuple[str, dict]]:
    """Inputs of ``two_layer_gradient_step``."""

    def setting(n_in: int, h: int, n_out: int, lr: float, dtype: torch.dtype) -> dict:
        w1 = 0.5 * torch.randn(h, n_in, generator=g, dtype=dtype)
        w2 = 0.5 * torch.randn(n_out, h, generator=g, dtype=dtype)
        sigma = torch.randn(n_out, n_in, generator=g, dtype=dtype)
        return {"args": [w1, w2, sigma, lr], "no_grad": True}

    out = [
        ("n_in = 5, hidden = 3, n_out = 4, lr = 0.1, float64", setting(5, 3, 4, 0.1, F64)),
        (
            "n_in = n_out = hidden = 3 (square), lr = 0.05, float64",
            {**setting(3, 3, 3, 0.05, F64), "meta": True},
        ),
        ("n_in = 2, hidden = 6, n_out = 1, lr = 0.3, float64", setting(2, 6, 1, 0.3, F64)),
        (
            "n_in = 4, hidden = 4, n_out = 2, lr = 0.1, float32",
            setting(4, 4, 2, 0.1, torch.float32),
        ),
    ]
    if device is not None and device.type != "cpu":
        spec = setting(4, 3, 2, 0.1, torch.float32)
        spec["args"] = [a.to(device) if isinstance(a, Tensor) else a for a in spec["args"]]
        out.append((f"on the device in use ({device})", spec))
    return out


def strength_cases(
    g: torch.Generator, device: torch.device | None = None
) -> list[tuple[str, dict]]:
    """Inputs of ``mode_strength``: ordinary times, very long times (overflow), shapes, dtypes."""
    s1 = 1.0 + float(torch.rand((), generator=g, dtype=F64)) * 2
    out = [
        (
            f"t = 0..6 (11 times), s = {s1:.3f}, a0 = 1e-3, float64",
            {"args": [torch.linspace(0, 6, 11, dtype=F64), s1, 1e-3]},
        ),
        (
            "t up to 1000 with s = 5, a0 = 1e-4 (e^{2st} overflows), float64",
            {"args": [torch.tensor([0.0, 1.0, 10.0, 200.0, 1000.0], dtype=F64), 5.0, 1e-4]},
        ),
        (
            "t of shape (2, 3), s = 0.8, a0 = 0.4 (a0 close to s), float32",
            {"args": [torch.rand(2, 3, generator=g) * 5, 0.8, 0.4], "meta": True},
        ),
        ("a 0-d t = 2.5, s = 3, a0 = 0.01, float32", {"args": [torch.tensor(2.5), 3.0, 0.01]}),
        (
            "t up to 60 with s = 8, a0 = 1e-3, float32 (e^{2st} overflows float32)",
            {"args": [torch.linspace(0, 60, 7), 8.0, 1e-3]},
        ),
    ]
    if device is not None and device.type != "cpu":
        out.append(
            (
                f"on the device in use ({device})",
                {"args": [torch.linspace(0, 5, 6, device=device), 2.0, 0.01]},
            )
        )
    return out


def ntk_cases(g: torch.Generator, device: torch.device | None = None) -> list[tuple[str, dict]]:
    """Inputs of ``ntk_by_loop``: a TwoLayerReLU (as its state) and two batches of inputs."""

    def setting(
        d: int, width: int, n1: int, n2: int | None, dtype: torch.dtype, meta: bool = False
    ) -> dict:
        model = ref.TwoLayerReLU(d, width, generator=g, dtype=dtype)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        x1 = torch.randn(n1, d, generator=g, dtype=dtype)
        x2 = x1.clone() if n2 is None else torch.randn(n2, d, generator=g, dtype=dtype)
        return {
            "args": [x1, x2],
            "model": {"d_in": d, "width": width, "state": state},
            "meta": meta,
        }

    return [
        (
            "TwoLayerReLU(3, width 16), n1 = 4, n2 = 3, float64",
            setting(3, 16, 4, 3, F64, meta=True),
        ),
        ("TwoLayerReLU(2, width 8), x2 = x1 (5 inputs), float64", setting(2, 8, 5, None, F64)),
        ("TwoLayerReLU(4, width 12), n1 = 1, n2 = 6, float64", setting(4, 12, 1, 6, F64)),
        ("TwoLayerReLU(3, width 10), n1 = 3, n2 = 2, float32", setting(3, 10, 3, 2, torch.float32)),
    ]


def arccos_cases(g: torch.Generator, device: torch.device | None = None) -> list[tuple[str, dict]]:
    """Inputs of ``arccos_ntk``: the diagonal (x with itself) is where a missing clamp shows."""
    x = torch.randn(40, 5, generator=g, dtype=F64) * 3
    xf = torch.randn(40, 7, generator=g) * 3
    out = [
        (
            "n1 = 6, n2 = 4, d = 3, float64",
            {
                "args": [
                    torch.randn(6, 3, generator=g, dtype=F64),
                    torch.randn(4, 3, generator=g, dtype=F64),
                ]
            },
        ),
        (
            "x2 = x1 (the diagonal: phi = 0), 40 inputs, d = 5, float64",
            {"args": [x, x.clone()], "meta": True},
        ),
        (
            "d = 1, n1 = n2 = 5, float64",
            {
                "args": [
                    torch.randn(5, 1, generator=g, dtype=F64),
                    torch.randn(5, 1, generator=g, dtype=F64),
                ]
            },
        ),
        ("x2 = x1, 40 inputs, d = 7, float32", {"args": [xf, xf.clone()]}),
    ]
    if device is not None and device.type != "cpu":
        out.append(
            (
                f"on the device in use ({device})",
                {"args": [x[:5].float().to(device), x[5:9].float().to(device)]},
            )
        )
    return out


def predict_cases(g: torch.Generator, device: torch.device | None = None) -> list[tuple[str, dict]]:
    """Inputs of ``kernel_predict``: kernels of the arc-cosine NTK, one of them singular."""

    def setting(
        n: int, m: int, t: float, dtype: torch.dtype, duplicate: bool = False, f0: float = 0.3
    ) -> dict:
        x = torch.randn(n, 2, generator=g, dtype=F64)
        if duplicate:
            x[-1] = x[0]  # two equal training inputs: a singular kernel
        xs = torch.randn(m, 2, generator=g, dtype=F64)
        y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1]
        f0_train = f0 * torch.randn(n, generator=g, dtype=F64)
        f0_test = f0 * torch.randn(m, generator=g, dtype=F64)
        args = [ref.relu_ntk(x), ref.relu_ntk(xs, x), y, f0_train, f0_test, t]
        return {"args": [a.to(dtype) if isinstance(a, Tensor) else a for a in args]}

    out = [
        (
            "n = 6 training, m = 4 test inputs, t = 0.5, float64",
            {**setting(6, 4, 0.5, F64), "meta": True},
        ),
        ("n = 8, m = 3, t = 50 (close to kernel regression), float64", setting(8, 3, 50.0, F64)),
        (
            "n = 5, m = 5, t = 2, a singular kernel (two equal training inputs), float64",
            setting(5, 5, 2.0, F64, duplicate=True),
        ),
        ("n = 4, m = 2, t = 1, large f0, float64", setting(4, 2, 1.0, F64, f0=2.0)),
        ("n = 6, m = 3, t = 3, float32", setting(6, 3, 3.0, torch.float32)),
    ]
    if device is not None and device.type != "cpu":
        spec = setting(5, 2, 1.0, torch.float32)
        spec["args"] = [a.to(device) if isinstance(a, Tensor) else a for a in spec["args"]]
        out.append((f"on the device in use ({device})", spec))
    return out


def alignment_cases(
    g: torch.Generator, device: torch.device | None = None
) -> list[tuple[str, dict]]:
    """Inputs of ``alignment``."""
    x = torch.randn(10, 3, generator=g, dtype=F64)
    y = torch.sign(torch.randn(10, generator=g, dtype=F64))
    z = torch.randn(7, 7, generator=g, dtype=F64)
    yt = torch.randn(12, generator=g, dtype=F64) + 1.0
    out = [
        (
            "the arc-cosine NTK of 10 inputs, labels +-1, float64",
            {"args": [ref.relu_ntk(x), y], "meta": True},
        ),
        ("K = y y^T (alignment 1), float64", {"args": [torch.outer(yt, yt), yt]}),
        (
            "a symmetric K with negative entries, float64",
            {"args": [z + z.mT, torch.randn(7, generator=g, dtype=F64)]},
        ),
        (
            "a kernel of 12 inputs, targets with a nonzero mean, float32",
            {
                "args": [
                    ref.relu_ntk(torch.randn(12, 2, generator=g, dtype=F64)).float(),
                    yt.float(),
                ]
            },
        ),
    ]
    if device is not None and device.type != "cpu":
        out.append(
            (
                f"on the device in use ({device})",
                {"args": [ref.relu_ntk(x).float().to(device), y.float().to(device)]},
            )
        )
    return out


def split_cases(g: torch.Generator, device: torch.device | None = None) -> list[tuple[str, dict]]:
    """Inputs of ``modular_split``: fractions whose p^2 * fraction is not an integer."""
    seed = int(torch.randint(0, 1000, (), generator=g))
    return [
        (
            f"p = 7, train_frac = 0.3 (14.7 -> 15 training pairs), seed = {seed}",
            {"args": [7, 0.3, seed]},
        ),
        (f"p = 11, train_frac = 0.5, seed = {seed + 7}", {"args": [11, 0.5, seed + 7]}),
        (f"p = 5, train_frac = 0.9, seed = {seed + 3}", {"args": [5, 0.9, seed + 3]}),
        (
            f"p = 13, train_frac = 0.2 (33.8 -> 34 training pairs), seed = {seed + 1}",
            {"args": [13, 0.2, seed + 1]},
        ),
    ]


#: exercise -> the case builder (the rubric draws its hidden cases with the same builders)
CASES: dict[str, Callable[..., list[tuple[str, dict]]]] = {
    "input_output_modes": modes_cases,
    "two_layer_gradient_step": step_cases,
    "mode_strength": strength_cases,
    "ntk_by_loop": ntk_cases,
    "arccos_ntk": arccos_cases,
    "kernel_predict": predict_cases,
    "alignment": alignment_cases,
    "modular_split": split_cases,
}

#: the seeds of the in-notebook cases (the grader draws others from its --seed)
_CHECK_SEEDS = {name: 600 + i for i, name in enumerate(CASES)}


def _check(exercise: str, fn: Callable) -> None:
    g = torch.Generator().manual_seed(_CHECK_SEEDS[exercise])
    call, rule = functools.partial(call_function, exercise, fn), functools.partial(judge, exercise)
    no_autograd = "this exercise runs with autograd switched off: derive the gradient by hand"
    run_judged(
        exercise, CASES[exercise](g, labcore.get_device()), call, rule,
        shape_hint="check transposes",
        hints={"does not require grad": no_autograd, "element 0 of tensors": no_autograd},
    )  # fmt: skip


# ----------------------------------------------------------------------------- the checks
def check_input_output_modes(input_output_modes: Callable) -> None:
    """``input_output_modes(x, y) -> (U, s, V)``: the reduced SVD of Sigma_yx = y^T x / P, s
    descending, V as columns; signs of the pairs (u_a, v_a) are free."""
    _check("input_output_modes", input_output_modes)


def check_two_layer_gradient_step(two_layer_gradient_step: Callable) -> None:
    """``two_layer_gradient_step(w1, w2, sigma_yx, lr) -> (w1_new, w2_new)``, run with autograd
    off: one simultaneous gradient step on L = 1/2 ||Sigma_yx - W2 W1||_F^2."""
    _check("two_layer_gradient_step", two_layer_gradient_step)


def check_mode_strength(mode_strength: Callable) -> None:
    """``mode_strength(t, s, a0)``: Saxe et al.'s depth-2 mode strength, finite for any t >= 0."""
    _check("mode_strength", mode_strength)


def check_ntk_by_loop(ntk_by_loop: Callable) -> None:
    """``ntk_by_loop(model, x1, x2) -> (n1, n2)``: the empirical NTK, model and .grad untouched."""
    _check("ntk_by_loop", ntk_by_loop)


def check_arccos_ntk(arccos_ntk: Callable) -> None:
    """``arccos_ntk(x1, x2) -> (n1, n2)``: the infinite-width NTK of TwoLayerReLU."""
    _check("arccos_ntk", arccos_ntk)


def check_kernel_predict(kernel_predict: Callable) -> None:
    """``kernel_predict(k_train, k_test_train, y, f0_train, f0_test, t) -> (m,)``."""
    _check("kernel_predict", kernel_predict)


def check_alignment(alignment: Callable) -> None:
    """``alignment(k, y)``: y^T K y / (||K||_F ||y||^2), a 0-d tensor."""
    _check("alignment", alignment)


def check_modular_split(modular_split: Callable) -> None:
    """``modular_split(p, train_frac, seed) -> (train, test)``: a seeded random split of the p^2
    pairs, int64 indices, the global RNG untouched."""
    _check("modular_split", modular_split)
