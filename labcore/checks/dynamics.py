"""Checks for lab 4, transformers as dynamical systems (``labs/04-dynamics.ipynb``).

One check per exercise. Each runs the student's function and a reference (``labcore.dynamics``,
``labcore.mean_field`` or a few lines here) on the same inputs, edge cases included (one particle,
a batch of one system, float64, large ``beta``, the device in use), and prints one line starting with
✔ or raises :class:`~labcore.checks.CheckFailed` saying which input failed, what was expected, what
came and, where a typical mistake gives a recognisable result, what the likely cause is (the seed
presentation's projection ``<x, y> y``, a softmax over the wrong axis, half steps missing in RK4,
the first clusters' spacing taken as ``pi / k*``, ...). While the student's code runs, the
labcore function that the exercise rebuilds is switched off, so that calling it fails with a
clear message instead of passing silently.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import labcore
from labcore import dynamics as D
from labcore import mean_field as MF
from labcore.checks import (
    CheckFailed,
    assert_unchanged,
    compare,
    passed,
    rules,
    run_case,
    snapshot,
    without,
)
from labcore.checks import diagnose as _diagnose

__all__ = [
    "check_project_tangent",
    "check_attention_velocity",
    "check_euler_step",
    "check_rk4_step",
    "check_integrate",
    "check_convergence_order",
    "check_cluster_counts",
    "check_circle_velocity",
    "check_continuity_rhs",
    "check_first_merge_time",
    "CALL_SOURCE",
    "judge",
    "order_rule",
    "counts_rule",
    "reference_integrate",
    "REFERENCES",
    "IN_PLACE",
]

Tensor = torch.Tensor
F64 = torch.float64


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _random_sphere(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
    x = torch.randn(*shape, generator=g, dtype=F64)
    return (x / x.norm(dim=-1, keepdim=True)).to(dtype)


class _Counted:
    """A velocity field that counts its calls (to check how often a step evaluates it)."""

    def __init__(self, velocity: Callable[[Tensor], Tensor]) -> None:
        self.velocity = velocity
        self.calls = 0

    def __call__(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.velocity(x)


# --------------------------------------------------------------------------------------------------
# reference steps and the exact two-particle solution (also used by the lab)
# --------------------------------------------------------------------------------------------------
def _euler_step(velocity: Callable[[Tensor], Tensor], x: Tensor, dt: float) -> Tensor:
    """Reference explicit Euler step ``x + dt v(x)``."""
    return x + dt * velocity(x)


def _rk4_step(velocity: Callable[[Tensor], Tensor], x: Tensor, dt: float) -> Tensor:
    """Reference classical Runge-Kutta step."""
    k1 = velocity(x)
    k2 = velocity(x + (dt / 2) * k1)
    k3 = velocity(x + (dt / 2) * k2)
    k4 = velocity(x + dt * k3)
    return x + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


def _midpoint_step(velocity: Callable[[Tensor], Tensor], x: Tensor, dt: float) -> Tensor:
    """The explicit midpoint rule ``x + dt v(x + (dt/2) v(x))``, a method of order 2."""
    return x + dt * velocity(x + (dt / 2) * velocity(x))


def _two_particle_gap(phi0: float, t: float) -> float:
    """Exact angle between two particles on the circle at ``beta = 0``.

    With ``beta = 0`` each particle moves towards the other with speed ``sin(phi) / 2``, so the gap
    obeys ``dphi/dt = -sin(phi)``, whose solution is ``tan(phi / 2) = tan(phi0 / 2) e^{-t}``.
    """
    return 2 * math.atan(math.tan(phi0 / 2) * math.exp(-t))


def _integrate(
    velocity, x0: Tensor, t_max: float, n_steps: int, method: str, renormalize: bool = True
) -> Tensor:
    return D.simulate(
        x0, t_max, t_max / n_steps, velocity, method=method, renormalize=renormalize, progress=False
    )


def reference_integrate(
    velocity: Callable[[Tensor], Tensor],
    x0: Tensor,
    t_max: float,
    n_steps: int,
    step: Callable[[Callable[[Tensor], Tensor], Tensor, float], Tensor],
    renormalize: bool = True,
) -> Tensor:
    """labcore's ``integrate`` of exercise 5, with the notebook's signature: ``n_steps + 1``
    frames ``(n_steps + 1, *x0.shape)`` from ``x0`` with ``step(velocity, x, t_max / n_steps)``,
    each renormalised onto the sphere if ``renormalize``."""
    dt = t_max / n_steps
    frames, x = [x0], x0
    for _ in range(n_steps):
        x = step(velocity, x, dt)
        if renormalize:
            x = x / x.norm(dim=-1, keepdim=True)
        frames.append(x)
    return torch.stack(frames)


#: labcore's version of each exercise that a later exercise calls, under the notebook's name.
REFERENCES: dict[str, Callable[..., Tensor]] = {
    "project_tangent": D.project_tangent,
    "attention_velocity": D.attention_velocity,
    "integrate": reference_integrate,
    "circle_velocity": MF.circle_velocity,
}

#: exercise -> the earlier exercises it calls, which the check and the grader replace by
#: :data:`REFERENCES` during the call (the student's are put back): each exercise is graded on its
#: own, so that one mistake costs points once.
IN_PLACE: dict[str, list[str]] = {
    "attention_velocity": ["project_tangent"],
    "convergence_order": ["integrate", "attention_velocity"],
    "continuity_rhs": ["circle_velocity"],
}


def _in_place(function: str) -> dict[str, Callable[..., Tensor]]:
    return {name: REFERENCES[name] for name in IN_PLACE[function]}


def _gap(x: Tensor) -> float:
    """Angle from particle 0 to particle 1 in ``[0, 2 pi)``; ``x: (2, 2)``."""
    return float(torch.remainder(D.to_angles(x[1]) - D.to_angles(x[0]), 2 * math.pi))


def _reference_order(method: str, dts: list[float], t_max: float, phi0: float) -> float:
    if method == "midpoint":

        def simulate(x0: Tensor, dt: float) -> Tensor:
            x = x0
            for _ in range(round(t_max / dt)):
                x = _midpoint_step(lambda y: D.attention_velocity(y, 0.0), x, dt)
                x = x / x.norm(dim=-1, keepdim=True)
            return x
    else:

        def simulate(x0: Tensor, dt: float) -> Tensor:
            return _integrate(
                lambda y: D.attention_velocity(y, 0.0), x0, t_max, round(t_max / dt), method
            )[-1]

    x0 = D.from_angles(torch.tensor([0.0, phi0], dtype=F64))
    exact = _two_particle_gap(phi0, t_max)
    errors = [abs(_gap(simulate(x0, dt)) - exact) for dt in dts]
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


# --------------------------------------------------------------------------------------------------
# one acceptance rule for exercises 1, 2, 8 and 9, shared with the grader (the rubric)
# --------------------------------------------------------------------------------------------------
#: How exercises 1, 2, 8 and 9 call the student's function, in the notebook (by the checks) and in
#: the grader's kernel (by the rubric): positional ``spec["args"]``. An error raised inside the
#: function is reported as ``extra["raised"]`` (then explained by :func:`judge`), with the positions
#: of tensor arguments changed in place, whether the global RNG or the default dtype changed, and
#: with ``spec["meta"]`` the devices of what the function returns for the same inputs as ``meta``
#: tensors (shapes only: a stand-in for a GPU that catches tensors created on the CPU). The names in
#: ``spec["in_place"]`` are bound to labcore's :data:`REFERENCES` in the student's namespace during
#: the call (exercises 2 and 9 call exercises 1 and 8).
CALL_SOURCE = """
def call(fn, spec):
    from labcore.checks.dynamics import REFERENCES
    from labcore.checks.rules import (
        changed,
        copies,
        on_meta,
        reference_in_place,
        watch_global_state,
    )

    args = list(spec["args"])
    before = copies(args)
    raised = ""
    in_place = {name: REFERENCES[name] for name in spec.get("in_place", ())}
    with reference_in_place(fn, in_place):
        with watch_global_state() as extra:  # a probe RNG state; the caller's is put back
            try:
                value = fn(*args)
            except NotImplementedError:
                raise
            except Exception as err:
                value, raised = None, (type(err).__name__ + ": " + str(err))[:400]
        extra["raised"] = raised
        extra["mutated"] = changed(args, before)
        if spec.get("meta") and not raised:
            extra["meta"] = on_meta(fn, *args)
    return value, extra
"""


_CALL = rules.compile_call(CALL_SOURCE)

#: The argument names of the exercises judged by :func:`judge`.
ARG_NAMES = {
    "project_tangent": ["x", "v"],
    "attention_velocity": ["x", "beta", "Q", "K", "V"],
    "circle_velocity": ["rho", "beta"],
    "continuity_rhs": ["rho", "beta"],
}

_SHAPE_ERRORS = (
    "must match the size",
    "broadcast",
    "shapes cannot be multiplied",
    "size mismatch",
    "invalid for input of size",
    "dimension out of range",
    "expected size",
    "inconsistent tensor size",
)

_SHAPE_HINTS = {
    "project_tangent": (
        "x and v have the same shape (*batch, n_particles, d), batch dimensions first. A sum over "
        "the last axis without keepdim=True turns (..., n, d) into (..., n), which then broadcasts "
        "against (..., n, d) from the right: the n particles are lined up with the d coordinates. "
        "Keep the axis (keepdim=True, shape (..., n, 1)) so that each particle's inner product "
        "multiplies its own row of x"
    ),
    "attention_velocity": (
        "x is (*batch, n_particles, d), batch dimensions first; q = x @ Q.T is (..., n, d_head) "
        "(Q is (d_head, d)), the scores q @ k.transpose(-2, -1) are (..., n, n), and the inner "
        "product of the projection is taken over the last axis with keepdim=True (shape "
        "(..., n, 1)), not (..., n), which would broadcast the n particles against the d "
        "coordinates"
    ),
    "circle_velocity": (
        "rho is (*batch, N), the grid last. rfft works on the last axis and returns N // 2 + 1 "
        "coefficients, so the kernel coefficients (circle_kernel_coefficients(beta, N // 2)) and "
        "the frequencies k must have N // 2 + 1 entries, and irfft needs n=N to give N points back"
    ),
    "continuity_rhs": (
        "rho is (*batch, N), the grid last. rfft works on the last axis and returns N // 2 + 1 "
        "coefficients, so the frequencies k must have N // 2 + 1 entries, and irfft needs n=N to "
        "give N points back"
    ),
}


def _explain_raised(function: str, raised: str, args: list) -> str:
    """The message for an error raised inside the student's function; shape errors explained."""
    names = ARG_NAMES[function]
    shapes = ", ".join(
        f"{name} {tuple(a.shape)}"
        for name, a in zip(names, args, strict=False)
        if isinstance(a, Tensor)
    )
    text = f"your function raised {raised}\n  inputs: {shapes}"
    if any(pattern in raised.lower() for pattern in _SHAPE_ERRORS):
        text += (
            "\n  this is a shape (broadcasting) error inside your code: two tensors whose shapes "
            f"do not line up met in one operation\n  hint: {_SHAPE_HINTS[function]}"
        )
    return text


def _cpu(args: list) -> list:
    return [a.detach().cpu() if isinstance(a, Tensor) else a for a in args]


def _reference(function: str, args: list) -> tuple[Tensor, str, dict[str, Callable[[], Tensor]]]:
    """Expected result (CPU, the input's dtype), default hint and typical mistakes."""
    if function == "project_tangent":
        x, v = args
        return (
            D.project_tangent(x, v),
            "P_perp_x v = v - <x, v> x, the inner product over the last dimension (keepdim=True)",
            _projection_mistakes(x, v),
        )
    if function == "attention_velocity":
        x, beta, *qkv = args
        Q, K, V = (qkv + [None, None, None])[:3]
        hint = "y_i = sum_j softmax_j(beta <Q x_i, K x_j>) V x_j, then P_perp_{x_i} y_i"
        if beta >= 100:
            hint = (
                f"exp({beta:g} <x_i, x_j>) overflows in float32 (inf / inf = nan): use "
                "torch.softmax, which subtracts the largest score first"
            )
        return D.attention_velocity(x, beta, Q, K, V), hint, _attention_mistakes(x, beta, Q, K, V)
    rho, beta = args
    if function == "circle_velocity":
        expected = MF.circle_velocity(rho, beta)
        return (
            expected,
            "v = Z' / (beta Z) with Z = k_beta * rho: multiply the rfft coefficients of rho by the "
            "kernel's (circle_kernel_coefficients, in rho's dtype and on its device), set the "
            "Nyquist coefficient to zero, differentiate with 1j * k",
            _velocity_mistakes(rho, beta, expected),
        )
    expected = _continuity_rhs(rho, beta)
    return (
        expected,
        "the flux is rho * v[rho]; differentiate it spectrally (1j * k, the Nyquist coefficient "
        "set to zero) and change the sign",
        _rhs_mistakes(rho, beta, expected),
    )


def judge(function: str, args: list, got: Any, extra: dict[str, Any]) -> str | None:
    """The acceptance rule of exercises 1, 2, 8 and 9, shared by the check and the rubric.

    ``args`` are the inputs as sent (``spec["args"]``), ``got`` what came back (a tensor) and
    ``extra`` what :data:`CALL_SOURCE` reported. ``None`` when the answer is accepted, else the
    message (what went wrong, expected, got, a hint).
    """
    if extra.get("raised"):
        return _explain_raised(function, str(extra["raised"]), args)
    problem = rules.common(extra, ARG_NAMES[function])
    if problem:
        return problem
    cpu = _cpu(args)
    expected, hint, diagnoses = _reference(function, cpu)
    like = args[0]
    problem = rules.tensor_rule(
        got, expected, like, **rules.tolerance(like.dtype), hint=hint, diagnoses=diagnoses
    )
    if problem and function == "attention_velocity" and _is_worked_example(args):
        problem += (
            "\n  by hand: softmax weights of x1 are (e, 1) / (1 + e), y1 = (e, 1) / (1 + e), "
            "<x1, y1> = e / (1 + e), so dx1/dt = y1 - <x1, y1> x1 = (0, 1 / (1 + e))"
        )
    return problem or rules.meta_rule(extra)


def _is_worked_example(args: list) -> bool:
    x, beta, *qkv = args
    return (
        x.shape == (2, 2)
        and beta == 1.0
        and all(m is None for m in qkv)
        and torch.equal(x.detach().cpu().to(F64), torch.eye(2, dtype=F64))
    )


def _run_judged(function: str, fn: Callable, cases: list[tuple[str, list, bool]], patches) -> None:
    """Call ``fn`` on each case through :data:`CALL_SOURCE` and raise the first failure."""
    for case, args, meta in cases:
        with patches():
            spec = {"args": args, "meta": meta, "in_place": IN_PLACE.get(function, [])}
            got, extra = _CALL(fn, spec)
        problem = judge(function, args, got, extra)
        if problem:
            raise CheckFailed(f"[{case}] {problem}")
    passed(function, len(cases))


# --------------------------------------------------------------------------------------------------
# exercise 1: the tangent projection
# --------------------------------------------------------------------------------------------------
def _projection_mistakes(x: Tensor, v: Tensor) -> dict[str, Callable[[], Tensor]]:
    inner = (x * v).sum(-1, keepdim=True)
    return {
        "subtract <x, v> x (the component along x), not <x, v> v: the seed presentation made "
        "this slip, and (1 - <x, v>) v is not orthogonal to x": lambda: v - inner * v,
        "P_perp_x v = v - <x, v> x removes the radial part; <x, v> x is the radial part itself": lambda: (
            inner * x
        ),
        "the inner product <x, v> sums over the last dimension only (the d coordinates of each "
        "particle): (x * v).sum(-1, keepdim=True)": lambda: v - (x * v).sum() * x,
    }


def check_project_tangent(project_tangent: Callable) -> None:
    """``project_tangent(x, v) -> v - <x, v> x``, inner product over the last dimension."""
    g = torch.Generator().manual_seed(40)
    device = labcore.get_device()
    cases = [
        ("one point of the circle, x = (1, 0), v = (0.3, 0.5)",
         [torch.tensor([1.0, 0.0]), torch.tensor([0.3, 0.5])], False),
        ("8 particles on S^2, shape (8, 3)",
         [_random_sphere(g, 8, 3), torch.randn(8, 3, generator=g)], False),
        ("3 particles in R^3, shape (3, 3) (as many particles as coordinates)",
         [_random_sphere(g, 3, 3, dtype=F64), torch.randn(3, 3, generator=g, dtype=F64)], False),
        ("a batch of 4 systems of 5 particles, shape (4, 5, 3)",
         [_random_sphere(g, 4, 5, 3), torch.randn(4, 5, 3, generator=g)], False),
        ("a batch of 1 system with 1 particle in R^4, shape (1, 1, 4)",
         [_random_sphere(g, 1, 1, 4), torch.randn(1, 1, 4, generator=g)], False),
        ("float64, shape (3, 6, 2)",
         [_random_sphere(g, 3, 6, 2, dtype=F64), torch.randn(3, 6, 2, generator=g, dtype=F64)],
         False),
        (f"on the notebook's device ({device}), shape (2, 16, 8), also run on 'meta' tensors",
         [_random_sphere(g, 2, 16, 8).to(device), torch.randn(2, 16, 8, generator=g).to(device)],
         True),
    ]  # fmt: skip
    _run_judged(
        "project_tangent",
        project_tangent,
        cases,
        lambda: without((D, "project_tangent"), what="the projection"),
    )


# --------------------------------------------------------------------------------------------------
# exercise 2: the attention velocity field
# --------------------------------------------------------------------------------------------------
def _attention_mistakes(x: Tensor, beta: float, Q, K, V) -> dict[str, Callable[[], Tensor]]:
    q = x if Q is None else x @ Q.mT
    k = x if K is None else x @ K.mT
    v = x if V is None else x @ V.mT
    scores = beta * q @ k.mT  # (..., n, n)
    y = torch.softmax(scores, dim=-1) @ v  # unprojected
    return {
        "project with P_perp_x y = y - <x, y> x: you subtracted <x, y> y, the seed "
        "presentation's slip, which gives (e, 1) / (1 + e)^2 for x1 in the worked example, "
        "a vector that is not tangent to the circle": lambda: y - (x * y).sum(-1, keepdim=True) * y,
        "project the attention output onto the tangent space: velocity = P_perp_x(y) with "
        "y_i = sum_j softmax_j(beta <Q x_i, K x_j>) V x_j": lambda: y,
        "the softmax normalises over the keys j (the last axis, dim=-1): each particle's "
        "weights sum to one": lambda: D.project_tangent(x, torch.softmax(scores, dim=-2) @ v),
        "multiply the scores by beta (the inverse temperature)": lambda: D.attention_velocity(
            x, 1.0, Q, K, V
        ),
        "the values are V x_j; for rows x_j this is x @ V.T (not x @ V)": lambda: (
            D.attention_velocity(x, beta, Q, K, V.mT)
        ),
    }


def check_attention_velocity(attention_velocity: Callable) -> None:
    """``attention_velocity(x, beta, Q=None, K=None, V=None)``: single-head attention, projected."""
    g = torch.Generator().manual_seed(41)
    device = labcore.get_device()

    def mats(d: int, d_head: int, dtype: torch.dtype = torch.float32):
        return [
            torch.randn(d_head, d, generator=g, dtype=F64).to(dtype) / math.sqrt(d),
            torch.randn(d_head, d, generator=g, dtype=F64).to(dtype) / math.sqrt(d),
            torch.randn(d, d, generator=g, dtype=F64).to(dtype) / math.sqrt(d),
        ]

    example = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    cases = [
        ("the worked example: x1 = (1, 0), x2 = (0, 1), Q = K = V = I, beta = 1",
         [example, 1.0], False),
        ("4 particles on S^2, beta = 2, Q = K = V = I", [_random_sphere(g, 4, 3), 2.0], False),
        ("a batch of 3 systems of 5 particles in R^3, Q, K: (2, 3), V: (3, 3), beta = 1.5",
         [_random_sphere(g, 3, 5, 3), 1.5, *mats(3, 2)], False),
        ("a batch of 1 system with a single particle (its velocity is 0)",
         [_random_sphere(g, 1, 1, 3), 1.0, *mats(3, 3)], False),
        ("float64, beta = 0 (uniform weights), shape (2, 6, 4)",
         [_random_sphere(g, 2, 6, 4, dtype=F64), 0.0, *mats(4, 4, F64)], False),
        ("beta = 200 in float32, 7 particles on S^2 (the scores reach 200: e^200 overflows)",
         [_random_sphere(g, 7, 3), 200.0], False),
        (f"on the notebook's device ({device}), shape (2, 32, 8), Q, K: (4, 8), also run on "
         "'meta' tensors",
         [_random_sphere(g, 2, 32, 8).to(device), 3.0, *(m.to(device) for m in mats(8, 4))], True),
    ]  # fmt: skip
    _run_judged(
        "attention_velocity",
        attention_velocity,
        cases,
        lambda: without(
            (D, "attention_velocity"), (D, "transformer_velocity"), what="the attention velocity"
        ),
    )


# --------------------------------------------------------------------------------------------------
# exercises 3 and 4: one Euler step, one RK4 step
# --------------------------------------------------------------------------------------------------
def _step_cases(g: torch.Generator) -> list[tuple[str, Callable[[Tensor], Tensor], Tensor, float]]:
    device = labcore.get_device()
    A = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # a rotation: dx/dt = A x
    return [
        ("a rotation field v(x) = A x in R^2, 5 points, dt = 0.1",
         lambda x: x @ A.mT, torch.randn(5, 2, generator=g), 0.1),
        ("attention velocity, beta = 2, a batch of 3 systems of 4 particles on S^2, dt = 0.05",
         lambda x: D.attention_velocity(x, 2.0), _random_sphere(g, 3, 4, 3), 0.05),
        ("a nonlinear field v(x) = sin(x) in float64, batch of 1, dt = 0.3",
         torch.sin, torch.randn(1, 3, generator=g, dtype=F64), 0.3),
        (f"on the notebook's device ({device}): attention velocity, beta = 4, dt = 0.1",
         lambda x: D.attention_velocity(x, 4.0), _random_sphere(g, 2, 8, 3).to(device), 0.1),
    ]  # fmt: skip


def _euler_mistakes(velocity, x: Tensor, dt: float) -> dict[str, Callable[[], Tensor]]:
    v = velocity(x)
    return {
        "move along the velocity: x + dt v(x), not x - dt v(x)": lambda: x - dt * v,
        "scale the velocity by the time step: x + dt v(x)": lambda: x + v,
        "do not renormalise inside the step (integrate does that after each step)": lambda: (
            (x + dt * v) / (x + dt * v).norm(dim=-1, keepdim=True)
        ),
    }


def check_euler_step(euler_step: Callable) -> None:
    """``euler_step(velocity, x, dt) -> x + dt * velocity(x)``, one velocity evaluation."""
    g = torch.Generator().manual_seed(42)
    cases = _step_cases(g)
    for case, velocity, x, dt in cases:
        before = snapshot(x)
        counted = _Counted(velocity)
        with without((D, "simulate"), what="the Euler step"):
            got = run_case(case, euler_step, counted, x, dt)
        assert_unchanged(case, before, x, "x")
        if counted.calls != 1:
            raise CheckFailed(
                f"[{case}] your step evaluated the velocity {counted.calls} times"
                "\n  hint: an explicit Euler step evaluates the velocity once, at x"
            )
        expected = _euler_step(velocity, x, dt)
        hint = _diagnose(
            got, expected, _euler_mistakes(velocity, x, dt), "x_{k+1} = x_k + dt v(x_k)"
        )
        compare(case, got, expected, **rules.tolerance(x.dtype), hint=hint)
    passed("euler_step", len(cases))


def _rk4_mistakes(f, x: Tensor, dt: float) -> dict[str, Callable[[], Tensor]]:
    return {
        "k2 and k3 are evaluated half a step ahead: k2 = v(x + (dt/2) k1), "
        "k3 = v(x + (dt/2) k2)": lambda: _rk4_variant(f, x, dt, half=1.0),
        "the weights are (k1 + 2 k2 + 2 k3 + k4) / 6": lambda: _rk4_variant(
            f, x, dt, weights=(1, 1, 1, 1), divide=4
        ),
        "k3 uses k2 and k4 uses k3 (each stage uses the previous one), not k1": lambda: (
            _rk4_variant(f, x, dt, chain=False)
        ),
        "multiply the weighted average by dt: x + (dt / 6)(k1 + 2 k2 + 2 k3 + k4)": lambda: (
            _rk4_variant(f, x, dt, scale=False)
        ),
        "that is one Euler step; RK4 combines four slopes": lambda: x + dt * f(x),
    }


def check_rk4_step(rk4_step: Callable) -> None:
    """``rk4_step(velocity, x, dt)``: the classical fourth-order Runge-Kutta step."""
    g = torch.Generator().manual_seed(43)
    cases = _step_cases(g)
    for case, velocity, x, dt in cases:
        before = snapshot(x)
        counted = _Counted(velocity)
        with without((D, "simulate"), what="the RK4 step"):
            got = run_case(case, rk4_step, counted, x, dt)
        assert_unchanged(case, before, x, "x")
        if counted.calls != 4:
            raise CheckFailed(
                f"[{case}] your step evaluated the velocity {counted.calls} times"
                "\n  hint: RK4 evaluates it four times: k1, k2, k3, k4"
            )
        mistakes = _rk4_mistakes(velocity, x, dt)
        expected = _rk4_step(velocity, x, dt)
        hint = _diagnose(
            got,
            expected,
            mistakes,
            "k1 = v(x), k2 = v(x + dt/2 k1), k3 = v(x + dt/2 k2), "
            "k4 = v(x + dt k3), x + dt/6 (k1 + 2 k2 + 2 k3 + k4)",
        )
        compare(case, got, expected, **rules.tolerance(x.dtype), hint=hint)
    passed("rk4_step", len(cases))


def _rk4_variant(
    f,
    x: Tensor,
    dt: float,
    *,
    half: float = 0.5,
    weights=(1, 2, 2, 1),
    divide: float = 6,
    chain: bool = True,
    scale: bool = True,
) -> Tensor:
    k1 = f(x)
    k2 = f(x + half * dt * k1)
    k3 = f(x + half * dt * (k2 if chain else k1))
    k4 = f(x + dt * (k3 if chain else k1))
    combo = sum(w * k for w, k in zip(weights, (k1, k2, k3, k4), strict=True)) / divide
    return x + (dt if scale else 1.0) * combo


# --------------------------------------------------------------------------------------------------
# exercise 5: the time loop
# --------------------------------------------------------------------------------------------------
def _integrate_mistakes(
    velocity, x0: Tensor, t_max: float, n_steps: int, method: str, renormalize: bool
) -> dict[str, Callable[[], Tensor]]:
    return {
        "the trajectory starts with x0: n_steps + 1 frames (x0, x1, ..., x_n)": lambda: _integrate(
            velocity, x0, t_max, n_steps, method, renormalize
        )[1:],
        "renormalise only when renormalize=True": lambda: _integrate(
            velocity, x0, t_max, n_steps, method, True
        ),
        "after each step divide every particle by its norm (over the last dimension): "
        "x / x.norm(dim=-1, keepdim=True)": lambda: _integrate(
            velocity, x0, t_max, n_steps, method, False
        ),
        "the step size is dt = t_max / n_steps": lambda: _integrate(
            velocity, x0, n_steps * 1.0, n_steps, method, renormalize
        ),
    }


def check_integrate(integrate: Callable) -> None:
    """``integrate(velocity, x0, t_max, n_steps, step, renormalize=True) -> (n_steps + 1, ...)``."""
    g = torch.Generator().manual_seed(44)
    device = labcore.get_device()
    A = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)
    cases = [
        ("Euler, attention velocity beta = 1, 6 particles on the circle (float64), "
         "t_max = 1, 10 steps", lambda x: D.attention_velocity(x, 1.0),
         _random_sphere(g, 6, 2, dtype=F64), 1.0, 10, "euler", True),
        ("RK4, beta = 4, a batch of 2 systems of 5 particles on S^2, t_max = 0.5, 5 steps",
         lambda x: D.attention_velocity(x, 4.0), _random_sphere(g, 2, 5, 3), 0.5, 5, "rk4", True),
        ("Euler without renormalisation on a rotation field (the norm grows by sqrt(1 + dt^2) "
         "per step), 3 points, t_max = 2, 8 steps", lambda x: x @ A.mT,
         _random_sphere(g, 3, 2, dtype=F64), 2.0, 8, "euler", False),
        ("RK4, a single step, batch of 1 system", lambda x: D.attention_velocity(x, 2.0),
         _random_sphere(g, 1, 4, 3), 0.2, 1, "rk4", True),
        (f"on the notebook's device ({device}), RK4, beta = 9, 4 steps",
         lambda x: D.attention_velocity(x, 9.0), _random_sphere(g, 2, 16, 3).to(device), 0.4, 4,
         "rk4", True),
    ]  # fmt: skip
    steps = {"euler": _euler_step, "rk4": _rk4_step}
    for case, velocity, x0, t_max, n_steps, method, renormalize in cases:
        before = snapshot(x0)
        calls = 0

        def step(v, x, dt, method=method):
            nonlocal calls
            calls += 1
            return steps[method](v, x, dt)

        with without((D, "simulate"), what="the time loop"):
            got = run_case(
                case, integrate, velocity, x0, t_max, n_steps, step, renormalize=renormalize
            )
        assert_unchanged(case, before, x0, "x0")
        if calls != n_steps:
            raise CheckFailed(
                f"[{case}] step was called {calls} times, expected {n_steps}"
                "\n  hint: call step(velocity, x, dt) once per time step, with "
                "dt = t_max / n_steps"
            )
        expected = _integrate(velocity, x0, t_max, n_steps, method, renormalize)
        mistakes = _integrate_mistakes(velocity, x0, t_max, n_steps, method, renormalize)
        hint = _diagnose(
            got,
            expected,
            mistakes,
            "frames[0] = x0, frames[k+1] = step(velocity, "
            "frames[k], dt), renormalised if asked; stack them along a new first axis",
        )
        compare(case, got, expected, **rules.tolerance(x0.dtype), hint=hint)
    # the device rule, on 'meta' tensors (shapes only: a stand-in for a GPU)
    velocity, x0, t_max, n_steps = cases[1][1], cases[1][2], cases[1][3], cases[1][4]
    with without((D, "simulate"), what="the time loop"):
        report = rules.on_meta(integrate, velocity, x0, t_max, n_steps, _rk4_step)
    problem = rules.meta_rule({"meta": report})
    if problem:
        raise CheckFailed(f"[{cases[1][0]}, the same call with x0 on 'meta'] {problem}")
    passed("integrate", len(cases))


# --------------------------------------------------------------------------------------------------
# exercise 6: the measured order of convergence
# --------------------------------------------------------------------------------------------------
def order_rule(value: Any, expected: float) -> str | None:
    """The rule of exercise 6, shared with the rubric: a Python ``float`` within 0.02 of the
    reference slope."""
    if isinstance(value, bool) or not isinstance(value, float | int):
        return (
            f"expected a Python float (the fitted slope), got {rules.short(value)}\n  hint: the "
            "statement asks for a float: convert the slope with float(...) (a tensor or an "
            "array is not a float)"
        )
    if not (math.isfinite(value) and abs(value - expected) < 0.02):
        return (
            f"expected a slope of {expected:.3f}, got {value:.3f}\n  hint: for each dt integrate "
            "the two particles at beta = 0 from angles (0, phi0) to t_max with n_steps = "
            "round(t_max / dt), renormalised (use the t_max and phi0 given); the error is "
            "|gap - two_particle_gap(phi0, t_max)|; fit a line to (log dt, log error) and take "
            "its slope"
        )
    return None


def check_convergence_order(convergence_order: Callable) -> None:
    """``convergence_order(step, dts, t_max=2.0, phi0=1.5) -> float``: slope of log error vs log dt."""
    cases = [
        ("Euler, dts = 0.2, 0.1, 0.05, 0.025", "euler", _euler_step, [0.2, 0.1, 0.05, 0.025]),
        ("RK4, dts = 0.5, 0.25, 0.125, 0.0625", "rk4", _rk4_step, [0.5, 0.25, 0.125, 0.0625]),
        ("the midpoint rule (a method of order 2), dts = 0.4, 0.2, 0.1, 0.05", "midpoint",
         _midpoint_step, [0.4, 0.2, 0.1, 0.05]),
    ]  # fmt: skip
    cases.append(
        ("Euler with t_max = 1.5 and phi0 = 1.2 (not the defaults), dts = 0.15, 0.075, 0.0375",
         "euler", _euler_step, [0.15, 0.075, 0.0375], {"t_max": 1.5, "phi0": 1.2})
    )  # fmt: skip
    for case, method, step, dts, *given in cases:
        kwargs = given[0] if given else {}
        with rules.reference_in_place(convergence_order, _in_place("convergence_order")):
            got = run_case(case, convergence_order, step, dts, **kwargs)
        problem = order_rule(
            got, _reference_order(method, dts, **{"t_max": 2.0, "phi0": 1.5, **kwargs})
        )
        if problem:
            raise CheckFailed(f"[{case}] {problem}")
    passed("convergence_order", len(cases))


# --------------------------------------------------------------------------------------------------
# exercise 7: cluster counts over time, for several beta
# --------------------------------------------------------------------------------------------------
def _reference_counts(
    x0: Tensor, betas, t_max: float, dt: float, tol: float, record_every: int
) -> Tensor:
    counts = []
    for beta in betas:
        traj = D.simulate(
            x0,
            t_max,
            dt,
            lambda x, beta=beta: D.attention_velocity(x, beta),
            record_every=record_every,
            progress=False,
        )
        counts.append(D.count_clusters(traj, tol))
    return torch.stack(counts)


def counts_rule(got: Any, expected: Tensor) -> str | None:
    """The rule of exercise 7, shared with the rubric: an int64 tensor equal to the reference."""
    hint = (
        "shape (len(betas), T, *batch): for each beta simulate with D.simulate (one frame every "
        "record_every steps, frame 0 = x0) and count with D.count_clusters(trajectory, tol)"
    )
    if not isinstance(got, Tensor):
        return f"expected a torch.Tensor of counts, got {rules.short(got)}\n  hint: {hint}"
    if got.shape == expected.transpose(0, 1).shape and got.shape != expected.shape:
        hint = "stack the counts as (len(betas), T, *batch): one row per beta, then time"
    if got.shape != expected.shape:
        return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}\n  hint: {hint}"
    if got.dtype != torch.int64:
        return (
            f"expected dtype torch.int64 (counts are integers), got {got.dtype}\n  hint: the "
            "statement asks for an int64 tensor; D.count_clusters already returns int64"
        )
    if got.device != expected.device:
        return f"expected the result on {expected.device} (x0's device), got {got.device}"
    if not torch.equal(got.cpu(), expected.cpu()):
        wrong = int((got.cpu() != expected.cpu()).sum())
        return (
            f"{wrong} of {expected.numel()} counts differ\n  expected: {rules.short(expected)}\n  "
            f"got:      {rules.short(got)}\n  hint: {hint}"
        )
    return None


def check_cluster_counts(cluster_counts: Callable) -> None:
    """``cluster_counts(x0, betas, t_max, dt, tol, record_every=1) -> (len(betas), T, ...)``."""
    device = labcore.get_device()
    cases = [
        ("3 systems of 6 particles on the circle (float64), betas = [1, 9], t_max = 3, dt = 0.1, "
         "tol = 0.05, record_every = 10", D.random_sphere(6, 2, (3,), seed=45, dtype=F64),
         [1.0, 9.0], 3.0, 0.1, 0.05, 10),
        ("one system of 8 particles on S^2 (no batch dimension), betas = [4], t_max = 2, "
         "dt = 0.1, tol = 0.1, record_every = 5", D.random_sphere(8, 3, seed=46), [4.0], 2.0, 0.1,
         0.1, 5),
        (f"on the notebook's device ({device}): 2 systems of 10 particles, betas = [0.5, 8]",
         D.random_sphere(10, 3, (2,), seed=47, device=device), [0.5, 8.0], 2.0, 0.2, 0.05, 5),
    ]  # fmt: skip
    for case, x0, betas, t_max, dt, tol, record_every in cases:
        before = snapshot(x0)
        got = run_case(case, cluster_counts, x0, betas, t_max, dt, tol, record_every)
        assert_unchanged(case, before, x0, "x0")
        expected = _reference_counts(x0, betas, t_max, dt, tol, record_every)
        problem = counts_rule(got, expected)
        if problem:
            raise CheckFailed(f"[{case}] {problem}")
    passed("cluster_counts", len(cases))


# --------------------------------------------------------------------------------------------------
# exercises 8 and 9: the mean-field velocity and the continuity equation on the circle
# --------------------------------------------------------------------------------------------------
def _rough(g: torch.Generator, batch: tuple[int, ...], n_grid: int) -> Tensor:
    """A rough density (independent positive values on an even grid, mass 1): its Nyquist
    coefficient is as large as any other."""
    rho = 0.2 + torch.rand(*batch, n_grid, generator=g, dtype=F64)
    return rho / (rho.sum(-1, keepdim=True) * 2 * math.pi / n_grid)


def _densities(g: torch.Generator, device: torch.device):
    def smooth(batch: tuple[int, ...], n_grid: int, dtype=F64) -> Tensor:
        theta = MF.circle_grid(n_grid, dtype=F64)
        k = torch.arange(1, 5, dtype=F64)
        a = 0.15 * torch.randn(*batch, 4, 1, generator=g, dtype=F64)
        p = 2 * math.pi * torch.rand(*batch, 4, 1, generator=g, dtype=F64)
        rho = (1 + (a * torch.cos(k[:, None] * theta + p)).sum(-2)) / (2 * math.pi)
        return rho.to(dtype)

    theta64 = MF.circle_grid(64, dtype=F64)
    bump = torch.exp(3 * torch.cos(theta64 - 1.0))
    bump = bump / (bump.sum() * 2 * math.pi / 64)
    return [
        ("a von Mises bump on 64 grid points, beta = 4", [bump, 4.0], False),
        ("a batch of 3 smooth densities on 128 points, beta = 1", [smooth((3,), 128), 1.0], False),
        ("rough data: a batch of 2 random positive densities on 16 points (an even grid: the "
         "Nyquist coefficient k = 8 is as large as the others), beta = 8",
         [_rough(g, (2,), 16), 8.0], False),
        ("float32, a batch of 2 densities on 64 points, beta = 9",
         [smooth((2,), 64, torch.float32), 9.0], False),
        ("an odd grid (45 points: no Nyquist frequency), beta = 2", [smooth((), 45), 2.0], False),
        ("a batch of 1 density on 32 points, beta = 0.5", [smooth((1,), 32), 0.5], False),
        (f"on the notebook's device ({device}), 2 densities on 96 points, beta = 16, also run "
         "on 'meta' tensors", [smooth((2,), 96, torch.float32).to(device), 16.0], True),
    ]  # fmt: skip


def _spectral_derivative(f: Tensor, nyquist: bool = False) -> Tensor:
    """``d/dtheta`` of grid values by FFT, the Nyquist frequency dropped (kept with ``nyquist``)."""
    n = f.shape[-1]
    k = torch.arange(n // 2 + 1, device=f.device)
    ik = 1j * (k * (nyquist or (k <= (n - 1) // 2))).to(f.dtype)
    return torch.fft.irfft(ik * torch.fft.rfft(f), n=n)


def _continuity_rhs(rho: Tensor, beta: float) -> Tensor:
    return -_spectral_derivative(rho * MF.circle_velocity(rho, beta))


def _velocity_with_nyquist(rho: Tensor, beta: float) -> Tensor:
    """The velocity with the Nyquist coefficient kept (the typical slip)."""
    n = rho.shape[-1]
    k = torch.arange(n // 2 + 1, dtype=rho.dtype)
    z_hat = MF.circle_kernel_coefficients(beta, n // 2, dtype=rho.dtype) * torch.fft.rfft(rho)
    return torch.fft.irfft(1j * k * z_hat, n=n) / (beta * torch.fft.irfft(z_hat, n=n))


_NYQUIST_HINT = (
    "set the Nyquist coefficient k = N/2 (present on an even grid of N points) to zero before "
    "going back to the grid: on the grid e^{i (N/2) theta_j} = (-1)^j is real, so the derivative "
    "of that mode, i (N/2) c e^{i (N/2) theta}, cannot be represented by a real FFT (irfft drops "
    "its imaginary coefficient). Z would keep the mode while Z' loses it; rough data, with a "
    "large Nyquist coefficient, show the difference"
)


def _velocity_mistakes(
    rho: Tensor, beta: float, expected: Tensor
) -> dict[str, Callable[[], Tensor]]:
    return {
        _NYQUIST_HINT: lambda: _velocity_with_nyquist(rho, beta),
        "divide by beta: v = Z' / (beta Z)": lambda: beta * expected,
        "d/dtheta e^{i k theta} = +i k e^{i k theta}: multiply the coefficients by +1j * k": lambda: (
            -expected
        ),
        "v = Z' / (beta Z): divide the derivative by Z (the normalisation of the softmax "
        "weights)": lambda: expected * beta * _z_values(rho, beta) / beta,
    }


def _z_values(rho: Tensor, beta: float) -> Tensor:
    n = rho.shape[-1]
    k = torch.arange(n // 2 + 1)
    keep = (k <= (n - 1) // 2).to(rho.dtype)
    z_hat = (
        MF.circle_kernel_coefficients(beta, n // 2, dtype=rho.dtype) * keep * torch.fft.rfft(rho)
    )
    return torch.fft.irfft(z_hat, n=n)


def check_circle_velocity(circle_velocity: Callable) -> None:
    """``circle_velocity(rho, beta)``: ``(1/beta) d/dtheta log(k_beta * rho)`` by FFT."""
    g = torch.Generator().manual_seed(48)
    _run_judged(
        "circle_velocity",
        circle_velocity,
        _densities(g, labcore.get_device()),
        lambda: without((MF, "circle_velocity"), what="the mean-field velocity"),
    )


def _rhs_mistakes(rho: Tensor, beta: float, expected: Tensor) -> dict[str, Callable[[], Tensor]]:
    return {
        "the sign: d rho/dt = -d/dtheta(rho v) (mass flows along v)": lambda: -expected,
        "differentiate the flux rho v, not the velocity alone": lambda: (
            -_spectral_derivative(MF.circle_velocity(rho, beta))
        ),
        "the flux uses a velocity whose Nyquist coefficient was kept: " + _NYQUIST_HINT: lambda: (
            -_spectral_derivative(rho * _velocity_with_nyquist(rho, beta))
        ),
        "differentiate the flux rho v; rho dv/dtheta leaves out v drho/dtheta": lambda: (
            -rho * _spectral_derivative(MF.circle_velocity(rho, beta))
        ),
    }


def check_continuity_rhs(continuity_rhs: Callable) -> None:
    """``continuity_rhs(rho, beta) = -d/dtheta(rho v[rho])``, the derivative taken spectrally."""
    g = torch.Generator().manual_seed(49)
    _run_judged(
        "continuity_rhs",
        continuity_rhs,
        _densities(g, labcore.get_device()),
        contextlib.nullcontext,
    )


# --------------------------------------------------------------------------------------------------
# exercise 10: how long the first clusters last
# --------------------------------------------------------------------------------------------------
def _k_star(beta: float) -> int:
    """The fastest wave on the circle, ``argmax_k k^2 I_k(beta) / (beta I_0(beta))``."""
    k_max = 4 * math.ceil(math.sqrt(beta)) + 4
    return int(MF.circle_growth_rates(beta, k_max).argmax())


def _reference_first_merge_times(betas, phi_end: float = 0.05) -> Tensor:
    """``T(beta, 2 pi / k*(beta))`` for each beta: ``(len(betas),)`` float64."""
    phi0 = torch.tensor([2 * math.pi / _k_star(b) for b in betas], dtype=F64)
    return D.two_cluster_merge_time(torch.tensor(list(betas), dtype=F64), phi0, phi_end)


def _first_merge_mistakes(betas, phi_end: float) -> dict[str, Callable[[], Tensor]]:
    beta = torch.tensor(list(betas), dtype=F64)
    k = torch.tensor([_k_star(b) for b in betas], dtype=F64)
    phi0 = 2 * math.pi / k

    def merge(angle: Tensor) -> Tensor:
        return D.two_cluster_merge_time(beta, angle, phi_end)

    def without_the_one() -> Tensor:  # the integral of 1 / (2 sin phi) is log tan(phi / 2) / 2
        return merge(phi0) - 0.5 * torch.log(torch.tan(phi0 / 2) / math.tan(phi_end / 2))

    return {
        "k* clusters share the circle, so neighbours are 2 pi / k* apart (not pi / k*)": lambda: (
            merge(math.pi / k)
        ),
        "k* is the frequency k of the largest rate; the rates' index 0 is k = 0, so do not drop "
        "it before taking the argmax (or add 1 back)": lambda: merge(2 * math.pi / (k - 1)),
        "the integrand is (1 + e^{beta (1 - cos phi)}) / (2 sin phi): the 1 comes from the "
        "weight e^beta of a cluster on itself": without_the_one,
        "both clusters move, so the angle closes at twice the speed of one cluster: divide by "
        "2 sin(phi)": lambda: 2 * merge(phi0),
        "compute the integral itself, not its large-beta approximation "
        "e^{beta (1 - cos phi0)} / (2 beta sin^2 phi0)": lambda: (
            torch.exp(beta * (1 - torch.cos(phi0))) / (2 * beta * torch.sin(phi0) ** 2)
        ),
    }


def check_first_merge_time(first_merge_time: Callable) -> None:
    """``first_merge_time(betas, phi_end=0.05) -> (len(betas),)``: ``T(beta, 2 pi / k*(beta))``."""
    cases = [
        ("betas = [16, 36, 100] (the fastest waves k* = 6, 8, 14), phi_end = 0.05",
         [16.0, 36.0, 100.0], 0.05),
        ("betas = [4, 8.5] (k* = 3 and 4), phi_end = 0.05", [4.0, 8.5], 0.05),
        ("one beta = [50], phi_end = 0.1", [50.0], 0.1),
    ]  # fmt: skip
    for case, betas, phi_end in cases:
        before = list(betas)
        with without((D, "two_cluster_merge_time"), what="the merge-time integral"):
            got = run_case(case, first_merge_time, betas, phi_end)
        if betas != before:
            raise CheckFailed(f"[{case}] your function modified its input 'betas' in place")
        expected = _reference_first_merge_times(betas, phi_end)
        hint = _diagnose(
            got,
            expected,
            _first_merge_mistakes(betas, phi_end),
            "for each beta take k* = argmax_k r_k(beta), phi0 = 2 pi / k*, and integrate "
            "(1 + e^{beta (1 - cos phi)}) / (2 sin phi) from phi_end to phi0 (trapezoidal rule on "
            "20001 points); the result is a float64 tensor with one time per beta",
        )
        compare(case, got, expected, atol=0.0, rtol=1e-4, hint=hint)
    passed("first_merge_time", len(cases))
