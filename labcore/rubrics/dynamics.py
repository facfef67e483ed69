"""Rubric of lab 4, attention dynamics (``labs/04-dynamics.ipynb``).

Ten exercises, 18 points. The hidden particles, matrices and densities are drawn from the grader's
``--seed``; velocity fields and step functions handed to the student's code are built in the kernel
from a name and a few tensors (``_FIELDS_SOURCE``), and the grader rebuilds the same ones. The
expected results come from :mod:`labcore.dynamics`, :mod:`labcore.mean_field` and the exercise
checks' grader-side references (:mod:`labcore.checks.dynamics`), computed in the grader's process.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from labcore import dynamics as D
from labcore import mean_field as MF
from labcore.checks import dynamics as checks
from labcore.checks import rules
from labcore.rubrics import (
    Exercise,
    HiddenCase,
    Rubric,
    case_generator,
    mutation_message,
    plain,
    tensor_mismatch,
)

__all__ = ["RUBRIC"]

F64 = torch.float64


def _generator(seed: int, exercise: int) -> torch.Generator:
    """A generator for one exercise's hidden inputs, derived from the grading seed."""
    return case_generator("04-dynamics", seed, exercise)


def _sphere(g: torch.Generator, *shape: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """Random points on the unit sphere (the last dimension)."""
    x = torch.randn(*shape, generator=g, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-9, "rtol": 1e-7} if dtype == F64 else {"atol": 2e-5, "rtol": 1e-4}


def _judged(function: str):
    """The score of exercises 1, 2, 8 and 9: the notebook check's own rule."""

    def score(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
        extra = plain(extra) if isinstance(extra, dict) else {}
        return checks.judge(function, case.inputs["args"], plain(value), extra)

    return score


# --------------------------------------------------------------------------- fields and steps
#: Kernel and grader side: velocity fields and steps by name. ``field(spec)`` returns the velocity
#: ``x -> v(x)``: ``linear`` is ``x A^T``, ``tanh`` is ``tanh(x A^T) + b``, ``attention`` is
#: labcore's attention field with ``beta``.
_FIELDS_SOURCE = """
def field(spec):
    import torch

    kind = spec["field"]
    if kind == "linear":
        A = spec["A"]
        return lambda x: x @ A.mT
    if kind == "tanh":
        A, b = spec["A"], spec["b"]
        return lambda x: torch.tanh(x @ A.mT) + b
    if kind == "attention":
        from labcore import dynamics

        beta = spec["beta"]
        return lambda x: dynamics.attention_velocity(x, beta)
    raise ValueError(kind)


def euler(velocity, x, dt):
    return x + dt * velocity(x)


def midpoint(velocity, x, dt):
    return x + dt * velocity(x + (dt / 2) * velocity(x))


def rk4(velocity, x, dt):
    k1 = velocity(x)
    k2 = velocity(x + (dt / 2) * k1)
    k3 = velocity(x + (dt / 2) * k2)
    k4 = velocity(x + dt * k3)
    return x + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


STEPS = {"euler": euler, "midpoint": midpoint, "rk4": rk4}
"""

_NS: dict[str, Any] = {}
exec(_FIELDS_SOURCE, _NS)  # the grader's own source, shared with the kernel
_field, _STEPS = _NS["field"], _NS["STEPS"]

#: Kernel side: a step function called with a counted velocity field.
_STEP_CALL = (
    _FIELDS_SOURCE
    + """

def call(fn, spec):
    import torch

    velocity = field(spec)
    calls = [0]

    def counted(x):
        calls[0] += 1
        return velocity(x)

    x = spec["x"]
    before = x.clone()
    value = fn(counted, x, spec["dt"])
    mutated = [] if torch.equal(x, before) else [0]
    return value, {"calls": calls[0], "mutated": mutated}
"""
)

#: Kernel side: ``integrate`` with a hidden field and a counted reference step.
_INTEGRATE_CALL = (
    _FIELDS_SOURCE
    + """

def call(fn, spec):
    import torch

    velocity = field(spec)
    step = STEPS[spec["step"]]
    calls = [0]

    def counted(v, x, dt):
        calls[0] += 1
        return step(v, x, dt)

    x0 = spec["x0"]
    before = x0.clone()
    value = fn(velocity, x0, spec["t_max"], spec["n_steps"], counted, **spec["kwargs"])
    mutated = [] if torch.equal(x0, before) else [0]
    extra = {"calls": calls[0], "mutated": mutated}
    if spec.get("meta"):  # the same call on 'meta' tensors (shapes only: a stand-in for a GPU)
        try:
            out = fn(velocity, x0.to("meta"), spec["t_max"], spec["n_steps"], step,
                     **spec["kwargs"])
            extra["meta"] = [str(out.device) if isinstance(out, torch.Tensor)
                             else "not a tensor: " + type(out).__name__]
        except Exception as err:
            extra["meta"] = "error: " + (type(err).__name__ + ": " + str(err))[:300]
    return value, extra
"""
)

#: Kernel side: ``convergence_order`` with a reference step given by name, and labcore's
#: ``integrate`` and ``attention_velocity`` in place of the student's (graded on its own).
_ORDER_CALL = (
    _FIELDS_SOURCE
    + """

def call(fn, spec):
    from labcore.checks.dynamics import IN_PLACE, REFERENCES
    from labcore.checks.rules import reference_in_place

    in_place = {name: REFERENCES[name] for name in IN_PLACE["convergence_order"]}
    with reference_in_place(fn, in_place):
        return fn(STEPS[spec["step"]], list(spec["dts"]), **spec["kwargs"]), {}
"""
)


#: Kernel side: ``first_merge_time`` with a list ``betas``, reporting whether the list changed.
_FIRST_MERGE_CALL = """
def call(fn, spec):
    betas, phi_end = list(spec["args"][0]), spec["args"][1]
    before = list(betas)
    value = fn(betas, phi_end)
    return value, {"mutated": [] if betas == before else [0]}
"""


# --------------------------------------------------------------------------- exercise 1
def _project_cases(seed: int) -> list[HiddenCase]:
    g = _generator(seed, 1)
    inputs = [
        ("7 particles on S^2, float64", _sphere(g, 7, 3), torch.randn(7, 3, generator=g, dtype=F64)),
        ("a batch of (2, 5) particles in d = 4, float32", _sphere(g, 2, 5, 4, dtype=torch.float32),
         torch.randn(2, 5, 4, generator=g)),
        ("4 particles in d = 4 (as many particles as coordinates)", _sphere(g, 4, 4),
         torch.randn(4, 4, generator=g, dtype=F64)),
        ("one particle on the circle, v along x (the projection is 0)",
         torch.tensor([[0.6, 0.8]], dtype=F64), torch.tensor([[1.2, 1.6]], dtype=F64)),
        ("10 particles in d = 6, v already tangent; also run on 'meta' tensors", _sphere(g, 10, 6),
         None),
    ]  # fmt: skip
    cases = []
    for name, x, v in inputs:
        if v is None:
            v = D.project_tangent(x, torch.randn(x.shape, generator=g, dtype=x.dtype))
        cases.append(HiddenCase(name, {"args": [x, v], "meta": "meta" in name}))
    return cases


# --------------------------------------------------------------------------- exercise 2
def _attention_cases(seed: int) -> list[HiddenCase]:
    g = _generator(seed, 2)
    x3 = _sphere(g, 5, 3)
    x4 = _sphere(g, 6, 4)
    Q, K = torch.randn(2, 4, generator=g, dtype=F64), torch.randn(2, 4, generator=g, dtype=F64)
    V = torch.randn(4, 4, generator=g, dtype=F64) / 2
    inputs = [
        ("5 particles on S^2, beta = 2, Q = K = V = identity", [x3, 2.0]),
        ("beta = 0 (uniform weights)", [x3, 0.0]),
        ("a batch of 3 systems of 4 particles on the circle, float32, beta = 5",
         [_sphere(g, 3, 4, 2, dtype=torch.float32), 5.0]),
        ("6 particles in d = 4, beta = 1.5, Q, K of shape (2, 4) and V of shape (4, 4)",
         [x4, 1.5, Q, K, V]),
        ("large beta = 120 in float32 (e^120 overflows: the softmax must not); also run on "
         "'meta' tensors", [_sphere(g, 8, 3, dtype=torch.float32), 120.0]),
    ]  # fmt: skip
    in_place = checks.IN_PLACE["attention_velocity"]
    return [
        HiddenCase(name, {"args": args, "meta": "meta" in name, "in_place": in_place})
        for name, args in inputs
    ]


# --------------------------------------------------------------------------- exercises 3 and 4
def _step_inputs(seed: int, exercise: int) -> list[tuple[str, dict[str, Any]]]:
    g = _generator(seed, exercise)
    A = torch.randn(3, 3, generator=g, dtype=F64)
    return [
        ("linear field x A^T, 4 points in d = 3, dt = 0.1",
         {"field": "linear", "A": A, "x": torch.randn(4, 3, generator=g, dtype=F64), "dt": 0.1}),
        ("tanh(x A^T) + b, a batch (2, 5, 3), dt = 0.25",
         {"field": "tanh", "A": A, "b": torch.randn(3, generator=g, dtype=F64),
          "x": torch.randn(2, 5, 3, generator=g, dtype=F64), "dt": 0.25}),
        ("the attention field, beta = 3, 6 particles on S^2, dt = 0.05",
         {"field": "attention", "beta": 3.0, "x": _sphere(g, 6, 3), "dt": 0.05}),
        ("float32, linear field, a large step dt = 1.5",
         {"field": "linear", "A": A.float(), "x": torch.randn(3, 3, generator=g), "dt": 1.5}),
    ]  # fmt: skip


def _step_cases(seed: int, exercise: int, method: str) -> list[HiddenCase]:
    step = _STEPS[method]
    return [
        HiddenCase(name, spec, step(_field(spec), spec["x"], spec["dt"]))
        for name, spec in _step_inputs(seed, exercise)
    ]


def _euler_cases(seed: int) -> list[HiddenCase]:
    return _step_cases(seed, 3, "euler")


def _rk4_cases(seed: int) -> list[HiddenCase]:
    return _step_cases(seed, 4, "rk4")


def _score_step(
    case: HiddenCase, value: Any, extra: dict[str, Any], calls: int, hint: str
) -> str | None:
    problem = mutation_message(extra, ["x"])
    if problem:
        return problem
    if extra.get("calls") != calls:
        return f"velocity was called {extra.get('calls')!r} times, expected {calls}. Hint: {hint}"
    return tensor_mismatch(value, case.expected, **_tol(case.expected.dtype), hint=hint)


def _score_euler(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return _score_step(case, value, extra, 1, "x_new = x + dt * velocity(x)")


def _score_rk4(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return _score_step(
        case, value, extra, 4,
        "k1 = v(x), k2 = v(x + dt/2 k1), k3 = v(x + dt/2 k2), k4 = v(x + dt k3); "
        "x_new = x + dt/6 (k1 + 2 k2 + 2 k3 + k4)",
    )  # fmt: skip


# --------------------------------------------------------------------------- exercise 5
def _integrate_cases(seed: int) -> list[HiddenCase]:
    g = _generator(seed, 5)
    A = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64) + 0.3 * torch.randn(
        2, 2, generator=g, dtype=F64
    )
    settings = [
        ("Euler, attention field beta = 2, 5 particles on the circle, t_max = 1, 8 steps",
         {"field": "attention", "beta": 2.0}, _sphere(g, 5, 2), 1.0, 8, "euler", {}),
        ("RK4, beta = 6, a batch of 2 systems of 4 particles on S^2, t_max = 0.6, 3 steps",
         {"field": "attention", "beta": 6.0}, _sphere(g, 2, 4, 3), 0.6, 3, "rk4", {}),
        ("Euler, renormalize=False, a linear field, 3 points, t_max = 1.5, 6 steps",
         {"field": "linear", "A": A}, _sphere(g, 3, 2), 1.5, 6, "euler", {"renormalize": False}),
        ("RK4, a single step, float32", {"field": "attention", "beta": 1.0},
         _sphere(g, 4, 3, dtype=torch.float32), 0.3, 1, "rk4", {}),
    ]  # fmt: skip
    cases = []
    for name, field_spec, x0, t_max, n_steps, step, kwargs in settings:
        renormalize = kwargs.get("renormalize", True)
        frames = checks.reference_integrate(
            _field(field_spec), x0, t_max, n_steps, _STEPS[step], renormalize
        )
        spec = {**field_spec, "x0": x0, "t_max": t_max, "n_steps": n_steps, "step": step,
                "kwargs": kwargs, "meta": field_spec["field"] == "attention"}  # fmt: skip
        cases.append(HiddenCase(name, spec, frames))
    return cases


def _score_integrate(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    n_steps = case.inputs["n_steps"]
    hint = ("frames[0] = x0, frames[k+1] = step(velocity, frames[k], dt) with dt = t_max / "
            "n_steps, divided by its norm (last dimension) if renormalize; stack the n_steps + 1 "
            "frames along a new first axis")  # fmt: skip
    problem = mutation_message(extra, ["x0"])
    if problem:
        return problem
    if extra.get("calls") != n_steps:
        return f"step was called {extra.get('calls')!r} times, expected {n_steps}. Hint: {hint}"
    return tensor_mismatch(
        value, case.expected, **_tol(case.expected.dtype), hint=hint
    ) or rules.meta_rule(plain(extra))


# --------------------------------------------------------------------------- exercise 6
def _order_cases(seed: int) -> list[HiddenCase]:
    g = _generator(seed, 6)
    phi0 = round(1.0 + 0.8 * torch.rand(1, generator=g).item(), 3)
    t_max = 1.5
    settings = [
        (f"Euler, t_max = {t_max}, phi0 = {phi0}, dts = 0.15, 0.075, 0.0375", "euler",
         [0.15, 0.075, 0.0375]),
        (f"RK4, t_max = {t_max}, phi0 = {phi0}, dts = 0.5, 0.25, 0.125", "rk4", [0.5, 0.25, 0.125]),
        (f"the midpoint rule (order 2), t_max = {t_max}, phi0 = {phi0}, dts = 0.3, 0.15, 0.075",
         "midpoint", [0.3, 0.15, 0.075]),
    ]  # fmt: skip
    return [
        HiddenCase(
            name,
            {"step": step, "dts": dts, "kwargs": {"t_max": t_max, "phi0": phi0}},
            checks._reference_order(step, dts, t_max, phi0),
        )
        for name, step, dts in settings
    ]


def _score_order(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return checks.order_rule(plain(value), case.expected)


# --------------------------------------------------------------------------- exercise 7
def _cluster_cases(seed: int) -> list[HiddenCase]:
    base = 10_000 * seed + 700
    settings = [
        ("2 systems of 6 particles on the circle, betas = [2, 12], t_max = 3, dt = 0.1, "
         "tol = 0.05, record_every = 5", D.random_sphere(6, 2, (2,), seed=base + 1, dtype=F64),
         [2.0, 12.0], 3.0, 0.1, 0.05, 5),
        ("one system of 7 particles on S^2 (no batch dimension), betas = [5], t_max = 2, dt = 0.2, "
         "tol = 0.1, record_every = 1", D.random_sphere(7, 3, seed=base + 2), [5.0], 2.0, 0.2, 0.1, 1),
        ("3 systems of 5 particles on S^2, betas = [0.5, 20], t_max = 1.5, dt = 0.1, "
         "tol = 0.05, record_every = 5", D.random_sphere(5, 3, (3,), seed=base + 3, dtype=F64),
         [0.5, 20.0], 1.5, 0.1, 0.05, 5),
    ]  # fmt: skip
    return [
        HiddenCase(name, {"args": [x0, betas, t_max, dt, tol, every]},
                   checks._reference_counts(x0, betas, t_max, dt, tol, every))
        for name, x0, betas, t_max, dt, tol, every in settings
    ]  # fmt: skip


def _score_clusters(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return mutation_message(extra, ["x0"]) or checks.counts_rule(plain(value), case.expected)


# --------------------------------------------------------------------------- exercises 8 and 9
def _densities(seed: int, exercise: int) -> list[tuple[str, torch.Tensor, float]]:
    g = _generator(seed, exercise)

    def smooth(batch: tuple[int, ...], n_grid: int, dtype: torch.dtype = F64) -> torch.Tensor:
        theta = MF.circle_grid(n_grid, dtype=F64)
        k = torch.arange(1, 5, dtype=F64)
        a = 0.15 * torch.randn(*batch, 4, 1, generator=g, dtype=F64)
        p = 2 * math.pi * torch.rand(*batch, 4, 1, generator=g, dtype=F64)
        rho = (1 + (a * torch.cos(k[:, None] * theta + p)).sum(-2)) / (2 * math.pi)
        return rho.to(dtype)

    theta = MF.circle_grid(48, dtype=F64)
    centre = 2 * math.pi * torch.rand(1, generator=g, dtype=F64).item()
    bump = torch.exp(2.5 * torch.cos(theta - centre))
    bump = bump / (bump.sum() * 2 * math.pi / 48)
    return [
        ("a von Mises bump on 48 grid points, beta = 3", bump, 3.0),
        ("a batch of 2 smooth densities on 96 points, beta = 1.5", smooth((2,), 96), 1.5),
        ("float32, a batch of 3 densities on 64 points, beta = 6", smooth((3,), 64, torch.float32), 6.0),
        ("an odd grid (51 points: no Nyquist frequency), beta = 2.5", smooth((), 51), 2.5),
        ("a batch (2, 2) on 40 points, beta = 0.75; also run on 'meta' tensors",
         smooth((2, 2), 40), 0.75),
        ("rough data: 3 random positive densities on 20 points (an even grid: the Nyquist "
         "coefficient k = 10 is as large as the others), beta = 6", checks._rough(g, (3,), 20), 6.0),
    ]  # fmt: skip


def _velocity_cases(seed: int) -> list[HiddenCase]:
    return [
        HiddenCase(name, {"args": [rho, beta], "meta": "meta" in name})
        for name, rho, beta in _densities(seed, 8)
    ]


def _rhs_cases(seed: int) -> list[HiddenCase]:
    in_place = checks.IN_PLACE["continuity_rhs"]
    return [
        HiddenCase(name, {"args": [rho, beta], "meta": "meta" in name, "in_place": in_place})
        for name, rho, beta in _densities(seed, 9)
    ]


# --------------------------------------------------------------------------- exercise 10
def _first_merge_cases(seed: int) -> list[HiddenCase]:
    g = _generator(seed, 10)

    def betas(n: int) -> list[float]:  # beta in [4, 200], multiples of 0.5 (so k* >= 3)
        return sorted(4.0 + 0.5 * round(392 * torch.rand(1, generator=g).item()) for _ in range(n))

    settings = [(betas(3), 0.05), (betas(2), 0.1), ([4.0], 0.05)]
    return [
        HiddenCase(
            f"betas = {b}, phi_end = {phi_end}",
            {"args": [b, phi_end]},
            checks._reference_first_merge_times(b, phi_end),
        )
        for b, phi_end in settings
    ]


def _score_first_merge(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    return mutation_message(extra, ["betas"]) or tensor_mismatch(
        value, case.expected, atol=0.0, rtol=1e-4,
        hint="for each beta, k* = argmax_k r_k(beta) (k >= 1), phi0 = 2 pi / k*, and T = the "
        "integral of (1 + e^{beta (1 - cos phi)}) / (2 sin phi) from phi_end to phi0; one float64 "
        "time per beta",
    )  # fmt: skip


RUBRIC = Rubric(
    lab="04-dynamics",
    exercises=(
        Exercise(
            "ex-project-tangent",
            "project_tangent",
            1,
            _project_cases,
            _judged("project_tangent"),
            call_source=checks.CALL_SOURCE,
        ),
        Exercise(
            "ex-attention-velocity",
            "attention_velocity",
            2,
            _attention_cases,
            _judged("attention_velocity"),
            call_source=checks.CALL_SOURCE,
        ),
        Exercise(
            "ex-euler-step", "euler_step", 1, _euler_cases, _score_euler, call_source=_STEP_CALL
        ),
        Exercise("ex-rk4-step", "rk4_step", 2, _rk4_cases, _score_rk4, call_source=_STEP_CALL),
        Exercise(
            "ex-integrate",
            "integrate",
            2,
            _integrate_cases,
            _score_integrate,
            call_source=_INTEGRATE_CALL,
        ),
        Exercise(
            "ex-convergence-order",
            "convergence_order",
            2,
            _order_cases,
            _score_order,
            call_source=_ORDER_CALL,
            case_timeout=20.0,
        ),
        Exercise(
            "ex-cluster-counts",
            "cluster_counts",
            2,
            _cluster_cases,
            _score_clusters,
            case_timeout=20.0,
        ),
        Exercise(
            "ex-circle-velocity",
            "circle_velocity",
            2,
            _velocity_cases,
            _judged("circle_velocity"),
            call_source=checks.CALL_SOURCE,
        ),
        Exercise(
            "ex-continuity-rhs",
            "continuity_rhs",
            2,
            _rhs_cases,
            _judged("continuity_rhs"),
            call_source=checks.CALL_SOURCE,
        ),
        Exercise(
            "ex-first-merge-time",
            "first_merge_time",
            2,
            _first_merge_cases,
            _score_first_merge,
            call_source=_FIRST_MERGE_CALL,
        ),
    ),  # fmt: skip
    reference_modules=("labcore.dynamics", "labcore.mean_field", "labcore.checks.dynamics"),
)
