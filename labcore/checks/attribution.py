"""Checks for lab 3, attribution methods (``labs/03-attribution.ipynb``).

One check per exercise, and **one acceptance rule** per exercise shared with the grader: the
notebook check and the rubric (:mod:`labcore.rubrics.attribution`) call the student's function
through the same kernel-side source (:data:`CALL_SOURCE`, :data:`CASCADE_CALL_SOURCE`), on inputs
drawn by the same case builders (:data:`CASES`), and judge what came back with the same function
(:func:`judge`), so they cannot disagree. A rule covers the return type (a tensor, a pair of
tensors, a dict of Python floats, a list of models), the shape, the dtype and device (the input's),
the values against labcore's reference (:mod:`labcore.attribution`, :mod:`labcore.probabilistic`),
the caller's tensors left exactly as they were (values, ``requires_grad`` and ``.grad``), the
model's parameters untouched, the global RNG and the default dtype untouched. The checks
themselves never touch the global RNG: models are built on the ``meta`` device and filled from
local generators.

The student's functions follow the chapter's convention: ``model`` maps ``(batch, n_features)`` to
``(batch, n_classes)`` (or ``(batch, 1)``), ``target`` is an int, a ``(batch,)`` tensor of class
indices or ``None`` for a single output, and results have ``x``'s shape, dtype and device.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import torch

import labcore
from labcore import attribution as ref
from labcore import probabilistic
from labcore.checks import rules, run_judged
from labcore.mlp import MLP

__all__ = [
    "CALL_SOURCE",
    "CASCADE_CALL_SOURCE",
    "CASES",
    "EXERCISES",
    "judge",
    "call_function",
    "build_mlp",
    "REFERENCES",
    "IN_PLACE",
    "check_saliency",
    "check_gradient_x_input",
    "check_integrated_gradients",
    "check_shapley_exact",
    "check_shapley_permutations",
    "check_relu_moments",
    "check_table_gaps",
    "check_cascading_randomization",
]

Tensor = torch.Tensor
F32, F64 = torch.float32, torch.float64

#: labcore's version of each exercise that a later exercise may call, under the notebook's name.
REFERENCES: dict[str, Callable[..., Any]] = {"saliency": ref.saliency}

#: exercise -> the earlier exercises it may call, which the check and the grader replace by
#: :data:`REFERENCES` during the call (the student's are put back): one mistake costs points once.
IN_PLACE: dict[str, list[str]] = {"gradient_x_input": ["saliency"]}

# ----------------------------------------------------------------------------- kernel-side calls
#: How the function is called, in the notebook (by the checks) and in the grader's kernel (by the
#: rubric). With ``spec["model"]`` (sizes, activation, state) an ``MLP`` is rebuilt on the
#: ``meta`` device (no draw from the global RNG) and passed first; then the positional
#: ``spec["args"]``. Reported: the positions of tensor arguments whose values changed, whose
#: ``requires_grad`` changed or that were given a ``.grad``; whether the model's parameters
#: changed; whether the global RNG or the default dtype changed. The names in ``spec["in_place"]``
#: are bound to labcore's :data:`REFERENCES` in the student's namespace during the call (exercise 2
#: may call the student's ``saliency``), so that each exercise is graded on its own.
CALL_SOURCE = """
def call(fn, spec):
    import torch

    from labcore.checks.attribution import REFERENCES
    from labcore.checks.rules import reference_in_place, watch_global_state
    from labcore.mlp import MLP

    args = list(spec["args"])
    lead = []
    model = None
    if spec.get("model") is not None:
        m = spec["model"]
        state = m["state"]
        first = next(iter(state.values()))
        with torch.device("meta"):
            model = MLP(m["sizes"], m["activation"])
        model = model.to_empty(device=first.device).to(first.dtype)
        model.load_state_dict(state)
        model.eval()
        lead = [model]
    def tensors(a):  # the tensors of an argument (a dict of tensors counts too)
        if isinstance(a, torch.Tensor):
            return [a]
        if isinstance(a, dict):
            return [v for v in a.values() if isinstance(v, torch.Tensor)]
        return []

    def changed(a, b):
        return not (a.shape == b[0].shape and torch.equal(a.detach(), b[0]))

    def flagged(a, b):
        return a.requires_grad != b[1] or (a.grad is None) != b[2]

    before = [[(t.detach().clone(), t.requires_grad, t.grad is None) for t in tensors(a)]
              for a in args]
    in_place = {name: REFERENCES[name] for name in spec.get("in_place", ())}
    with reference_in_place(fn, in_place), watch_global_state() as extra:
        value = fn(*lead, *args)  # a probe RNG state in the watch; the caller's is put back
    after = [tensors(a) for a in args]
    extra["mutated"] = [i for i, (a, b) in enumerate(zip(after, before))
                        if len(a) != len(b) or any(changed(t, c) for t, c in zip(a, b))]
    extra["grad_flag"] = [i for i, (a, b) in enumerate(zip(after, before))
                          if len(a) == len(b) and any(flagged(t, c) for t, c in zip(a, b))]
    extra["params_changed"] = model is not None and any(
        not torch.equal(p.detach(), state[n]) for n, p in model.named_parameters())
    if isinstance(value, torch.Tensor):
        value = value.detach()
    elif isinstance(value, (list, tuple)):
        value = type(value)(v.detach() if isinstance(v, torch.Tensor) else v for v in value)
    return value, extra
"""

#: Cascading randomisation: the rebuilt MLP and a generator seeded with ``spec["seeds"][0]``;
#: called again with the same seed and with ``spec["seeds"][1]``. Every returned model travels as
#: its linear layers' ``[weight, bias]`` (a string naming the type of anything that is not a
#: ``torch.nn.Module``), the original model's parameters after the calls too.
CASCADE_CALL_SOURCE = """
def call(fn, spec):
    import torch

    from labcore.checks.rules import watch_global_state
    from labcore.mlp import MLP

    m = spec["model"]
    state = m["state"]
    first = next(iter(state.values()))
    with torch.device("meta"):
        model = MLP(m["sizes"], m["activation"])
    model = model.to_empty(device=first.device).to(first.dtype)
    model.load_state_dict(state)
    model.eval()

    def params(stage):
        if not isinstance(stage, torch.nn.Module):
            return "not a model: " + type(stage).__name__
        return [[l.weight.detach().clone(), l.bias.detach().clone()]
                for l in stage.modules() if isinstance(l, torch.nn.Linear)]

    def listed(models):
        if isinstance(models, (list, tuple)):
            return [params(stage) for stage in models]
        return "not a list: " + type(models).__name__

    with watch_global_state() as extra:  # a probe RNG state; the caller's is put back
        got = fn(model, torch.Generator().manual_seed(spec["seeds"][0]))
    extra["type"] = type(got).__name__
    value = listed(got)
    with watch_global_state():  # the caller's RNG state is put back after these calls too
        again = listed(fn(model, torch.Generator().manual_seed(spec["seeds"][0])))
        other = listed(fn(model, torch.Generator().manual_seed(spec["seeds"][1])))
    extra["again"] = again[-1] if isinstance(again, list) and again else None
    extra["other"] = other[-1] if isinstance(other, list) and other else None
    extra["original"] = params(model)
    return value, extra
"""


_CALLS = {source: rules.compile_call(source) for source in (CALL_SOURCE, CASCADE_CALL_SOURCE)}


# ----------------------------------------------------------------------------- models
def build_mlp(
    sizes: list[int],
    g: torch.Generator,
    activation: str = "relu",
    dtype: torch.dtype = F32,
    device: torch.device | str = "cpu",
) -> MLP:
    """A random ``MLP`` in eval mode drawn from ``g`` alone (the global RNG is never used).

    Weights ``W_l ~ N(0, 1 / fan_in)``, biases ``b_l ~ N(0, 0.25)`` (non-zero, so that baselines
    and ReLU kinks matter); built on ``meta`` and materialised on ``device`` in ``dtype``.
    """
    with torch.device("meta"):
        model = MLP(sizes, activation)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for layer in model.layers:
            n_out, n_in = layer.weight.shape
            layer.weight.copy_(torch.randn(n_out, n_in, generator=g) / math.sqrt(n_in))
            layer.bias.copy_(0.5 * torch.randn(n_out, generator=g))
    return model.to(device=device, dtype=dtype).eval()


def _model_spec(model: MLP, activation: str) -> dict[str, Any]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"sizes": list(model.sizes), "activation": activation, "state": state}


def _rebuild(info: dict[str, Any]) -> MLP:
    """The grader-side copy of a case's model (CPU, the case's dtype)."""
    state = {k: v.detach().cpu() for k, v in info["state"].items()}
    with torch.device("meta"):
        model = MLP(info["sizes"], info["activation"])
    model = model.to_empty(device="cpu").to(next(iter(state.values())).dtype)
    model.load_state_dict(state)
    return model.eval()


def _tensor_rule(got: Any, expected: Tensor, like: Tensor, **kwargs: Any) -> str | None:
    """:func:`labcore.checks.rules.tensor_rule` with this lab's tolerance (1e-5 + 1e-4 |x|
    unless given: the references differentiate through float32 models)."""
    return rules.tensor_rule(got, expected, like, **{"atol": 1e-5, "rtol": 1e-4, **kwargs})


def _cpu(value: Any) -> Any:
    return value.detach().cpu() if isinstance(value, Tensor) else value


def _explained(model: MLP, x: Tensor, target: Any) -> Tensor:
    """``f_target(x)``, ``(batch,)``, as the reference functions select it."""
    with torch.no_grad():
        return ref._select(model(x), ref._check_inputs(model, x, target).target, x.shape[0])


# ----------------------------------------------------------------------------- the rules
def _model_args(spec: dict[str, Any]) -> tuple[MLP, list[Any]]:
    return _rebuild(spec["model"]), [_cpu(a) for a in spec["args"]]


def _gradient(model: MLP, x: Tensor, target: Any, all_outputs: bool = False) -> Tensor:
    z = x.detach().clone().requires_grad_(True)
    out = model(z)
    chosen = out.sum() if all_outputs else ref._select(out, target, x.shape[0]).sum()
    return torch.autograd.grad(chosen, z)[0]


def _rule_saliency(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    problem = rules.common(extra, ["x", "target"])
    if problem:
        return problem
    model, (x, target) = _model_args(spec)
    like = spec["args"][0]
    grad = _gradient(model, x, ref._check_inputs(model, x, target).target)
    diagnoses = {
        "this is the signed gradient: saliency is its absolute value": lambda: grad,
        "you multiplied by x: saliency is |gradient| alone": lambda: (x * grad).abs(),
        "you differentiated the sum of all outputs: differentiate the selected output f_target "
        "of each sample only": lambda: _gradient(model, x, None, all_outputs=True).abs(),
        "you divided by the batch size: the gradient of the sum over the batch already holds "
        "each sample's own gradient (samples do not interact)": lambda: grad.abs() / x.shape[0],
    }
    return _tensor_rule(
        got,
        ref.saliency(model, x, target),
        like,
        what="the saliency map",
        hint="differentiate the selected output f_target (select(model(x), target)), summed over "
        "the batch, with respect to x; then take the absolute value",
        diagnoses=diagnoses,
    )


def _rule_gxi(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    problem = rules.common(extra, ["x", "target"])
    if problem:
        return problem
    model, (x, target) = _model_args(spec)
    like = spec["args"][0]
    grad = _gradient(model, x, ref._check_inputs(model, x, target).target)
    diagnoses = {
        "keep the sign: gradient x input is x * gradient, no absolute value": lambda: (
            x * grad
        ).abs(),
        "this is the gradient alone: multiply it by x, elementwise": lambda: grad,
        "you differentiated the sum of all outputs: differentiate the selected output f_target "
        "of each sample only": lambda: x * _gradient(model, x, None, all_outputs=True),
    }
    return _tensor_rule(
        got,
        ref.gradient_x_input(model, x, target),
        like,
        what="gradient x input",
        hint="multiply the gradient of f_target with respect to x by x, elementwise",
        diagnoses=diagnoses,
    )


def _ig_nodes(
    model: MLP, x: Tensor, baseline: Tensor, target: Any, alphas: Tensor, weights: Tensor
) -> Tensor:
    """sum_s w_s grad f(x' + alpha_s (x - x')) * (x - x'), one autograd call for every node."""
    diff = x - baseline
    steps, (batch, n) = alphas.shape[0], x.shape
    a = alphas.to(x.dtype).view(-1, 1, 1)
    points = (baseline + a * diff).reshape(steps * batch, n)
    tiled = target.repeat(steps) if isinstance(target, Tensor) else target
    grads = _gradient(model, points, tiled).view(steps, batch, n)
    return diff * (weights.to(x.dtype).view(-1, 1, 1) * grads).sum(0)


def _rule_ig(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    problem = rules.common(extra, ["x", "baseline", "target", "steps"]) or rules.tuple_rule(
        got, 2, "attributions, delta"
    )
    if problem:
        return problem
    model, (x, baseline, target, steps) = _model_args(spec)
    like = spec["args"][0]
    target = ref._check_inputs(model, x, target).target
    expected, delta = ref.integrated_gradients(
        model, x, baseline, target, steps=steps, method="riemann_middle", return_delta=True
    )
    base = baseline.expand_as(x)
    gain = _explained(model, x, target) - _explained(model, base, target)
    s = torch.arange(steps, dtype=F64)
    uniform = torch.full((steps,), 1.0 / steps, dtype=F64)
    diagnoses = {
        "these are the left Riemann nodes s / steps: use the midpoints (s + 1/2) / steps": lambda: (
            _ig_nodes(model, x, base, target, s / steps, uniform)
        ),
        "these are the right Riemann nodes (s + 1) / steps: use the midpoints (s + 1/2) / "
        "steps": lambda: _ig_nodes(model, x, base, target, (s + 1) / steps, uniform),
        "the nodes include both ends 0 and 1 (linspace): the midpoint rule uses "
        "(s + 1/2) / steps": lambda: _ig_nodes(
            model, x, base, target, torch.linspace(0, 1, steps, dtype=F64), uniform
        ),
        "multiply the averaged gradient by (x - baseline)": lambda: expected / (x - base),
        "you summed the gradients over the steps: average them (weights 1 / steps)": lambda: (
            expected * steps
        ),
    }
    problem = _tensor_rule(
        got[0],
        expected,
        like,
        what="the attributions",
        hint="IG_i = (x_i - x'_i) * (1/steps) sum_s d f/d x_i at x' + alpha_s (x - x'), "
        "alpha_s = (s + 1/2) / steps",
        diagnoses=diagnoses,
    )
    if problem:
        return problem
    attributions = got[0].detach().cpu().to(x.dtype)
    return _tensor_rule(
        got[1],
        delta,
        like,
        what="delta",
        atol=1e-4,
        hint="delta = attributions summed over the features - (f(x) - f(baseline)), one per "
        "sample, shape (batch,)",
        diagnoses={
            "the sign of delta: it is sum_i IG_i - (f(x) - f(baseline)), not the reverse": lambda: (
                -delta
            ),
            "delta subtracts the gain f(x) - f(baseline) from the attributions' sum": lambda: (
                attributions.sum(1)
            ),
            "delta is the completeness gap: sum_i IG_i - (f(x) - f(baseline)), not its "
            "absolute value": lambda: delta.abs(),
        }
        | {"you returned f(x) - f(baseline) itself: delta is sum_i IG_i minus it": lambda: gain},
    )


def _shapley_with(model: MLP, x: Tensor, baseline: Tensor, target: Any, weight) -> Tensor:
    """sum_S weight(|S|, n) [v(S + i) - v(S)] by enumeration (for the diagnoses)."""
    batch, n = x.shape
    base = baseline.expand_as(x)
    codes = torch.arange(2**n)
    masks = ((codes.unsqueeze(1) >> torch.arange(n)) & 1).bool()
    z = torch.where(masks.unsqueeze(1), x, base)
    t = target.repeat(len(masks)) if isinstance(target, Tensor) else target
    v = _explained(model, z.reshape(-1, n), t).view(len(masks), batch)
    size = masks.sum(1)
    phi = torch.zeros_like(x)
    for i in range(n):
        without = codes[~masks[:, i]]
        w = torch.tensor([weight(int(k), n) for k in size[without]], dtype=x.dtype)
        phi[:, i] = (w.unsqueeze(1) * (v[without | (1 << i)] - v[without])).sum(0)
    return phi


def _rule_shapley_exact(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    problem = rules.common(extra, ["x", "baseline", "target"])
    if problem:
        return problem
    model, (x, baseline, target) = _model_args(spec)
    like = spec["args"][0]
    target = ref._check_inputs(model, x, target).target
    expected = ref.shapley_exact(model, x, baseline, target)
    n = x.shape[1]
    hint = "phi_i = sum over S without i of |S|! (n - |S| - 1)! / n! [v(S u {i}) - v(S)]"
    diagnoses = {
        "equal weights 1 / 2^(n-1) give the Banzhaf value: the Shapley weight of a coalition S "
        "is |S|! (n - |S| - 1)! / n!": lambda: _shapley_with(
            model, x, baseline, target, lambda s, n: 1 / 2 ** (n - 1)
        ),
        "the weight uses |S| + 1 in place of |S|: w(|S|) = |S|! (n - |S| - 1)! / n! with S the "
        "coalition WITHOUT i": lambda: _shapley_with(
            model,
            x,
            baseline,
            target,
            lambda s, n: 1 / (n * math.comb(n - 1, s + 1)) if s + 1 < n else 0.0,
        ),
        "the coalition is reversed: the features in S take their value from x, the others from "
        "the baseline": lambda: ref.shapley_exact(model, baseline.expand_as(x), x, target),
    }
    if isinstance(got, Tensor) and got.shape == x.shape[::-1] and n != x.shape[0]:
        hint = "the result is (batch, n_features): one row per sample"
    problem = _tensor_rule(got, expected, like, what="phi", hint=hint, diagnoses=diagnoses)
    if problem and isinstance(got, Tensor) and got.shape == expected.shape:
        total = got.detach().cpu().to(x.dtype).sum(1)
        gain = _explained(model, x, target) - _explained(model, baseline.expand_as(x), target)
        if not torch.allclose(total, gain, atol=1e-4, rtol=1e-4):
            problem += (
                f"\n  efficiency fails: your values sum to {_short_list(total)} per sample, "
                f"f(x) - f(baseline) is {_short_list(gain)} (check the weights and which "
                "features take x's value in a coalition)"
            )
    return problem


def _short_list(t: Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in t.flatten()[:4].tolist()) + "]"


def _permutation_reference(model, x: Tensor, baseline: Tensor, perms: Tensor, target) -> Tensor:
    """Average marginal contributions along the given permutations, ``(batch, n_features)``."""
    batch, n = x.shape
    base = baseline.expand_as(x)
    m = perms.shape[0]
    rank = perms.argsort(dim=1)  # rank[j, i]: position of feature i in permutation j
    sizes = torch.arange(n + 1, device=x.device)
    present = rank.unsqueeze(1) < sizes.view(1, -1, 1)  # (m, n + 1, n): prefixes of size 0 .. n
    z = torch.where(present.unsqueeze(2), x.view(1, 1, batch, n), base.view(1, 1, batch, n))
    t = target
    if isinstance(t, Tensor):
        t = t.repeat(m * (n + 1))
    v = _explained(model, z.reshape(-1, n), t).view(m, n + 1, batch)
    marginal = v[:, 1:] - v[:, :-1]  # (m, n, batch): contribution of the feature at position k
    by_feature = marginal.gather(1, rank.unsqueeze(2).expand(m, n, batch))
    return by_feature.mean(0).T.to(x.dtype)


def _rule_shapley_permutations(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    problem = rules.common(extra, ["x", "baseline", "perms", "target"])
    if problem:
        return problem
    model, (x, baseline, perms, target) = _model_args(spec)
    like = spec["args"][0]
    expected = _permutation_reference(model, x, baseline, perms, target)
    m = perms.shape[0]
    diagnoses = {
        "you summed over the permutations: average instead (divide by n_permutations)": lambda: (
            expected * m
        ),
        "you read perms as ranks: perms[j, k] is the feature added k-th in permutation j, not "
        "the position of feature k": lambda: _permutation_reference(
            model, x, baseline, perms.argsort(1), target
        ),
        "the marginal contribution has the wrong sign: v(with the feature) - v(without it)": (
            lambda: -expected
        ),
        "only the first permutation was used: average over all of them": lambda: (
            _permutation_reference(model, x, baseline, perms[:1], target)
        ),
        "the roles of x and the baseline are swapped: a feature added to the coalition takes "
        "its value from x": lambda: _permutation_reference(
            model, baseline.expand_as(x), x, perms, target
        ),
    }
    return _tensor_rule(
        got,
        expected,
        like,
        what="phi",
        hint="for permutation pi, the feature pi[k] contributes v({pi[0..k]}) - v({pi[0..k-1]}); "
        "average each feature's contributions over the permutations",
        diagnoses=diagnoses,
    )


_CANCELLATION = (
    "var_out = E[relu(z)^2] - E[relu(z)]^2 subtracts two nearly equal numbers when the mean is "
    "several sigmas below 0 (both are tiny) or |mean| >> sigma: round-off (catastrophic "
    "cancellation) can then make the difference slightly negative, and its square root NaN; a "
    "variance is never negative: clamp it at 0"
)


def _rule_relu_moments(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    problem = rules.common(extra, ["mean", "var"]) or rules.tuple_rule(got, 2, "mean_out, var_out")
    if problem:
        return problem
    mean, var = spec["args"]
    mu, v = mean.detach().cpu(), var.detach().cpu()
    expected_mean, expected_var = probabilistic.relu_moments(mu.to(F64), v.to(F64))
    sigma64 = v.to(F64).sqrt()
    hint_mean = (
        "E[relu(z)] = mu Phi(r) + sigma phi(r), r = mu / sigma; where var = 0 the output is relu(mu) "
        "(avoid dividing by sigma = 0)"
    )
    diagnoses = {
        "use sigma = sqrt(var) (var is a variance, not a standard deviation)": lambda: (
            probabilistic.relu_moments(mu.to(F64), v.to(F64).square())[0]
        ),
        "where var = 0 the input is the point mass mean: the output is relu(mean), not mean": (
            lambda: torch.where(v > 0, expected_mean, mu.to(F64))
        ),
        "E[relu(z)] = mu Phi(r) + sigma phi(r): phi is the standard normal density "
        "exp(-r^2 / 2) / sqrt(2 pi)": lambda: torch.where(
            v > 0,
            mu * torch.special.ndtr(mu / sigma64) + sigma64 * torch.exp(-0.5 * (mu / sigma64) ** 2),
            mu.clamp_min(0).to(F64),
        ),
    }
    tol = 1e-5 if mean.dtype == F32 else 1e-9
    problem = _tensor_rule(
        got[0],
        expected_mean.to(mean.dtype),
        mean,
        what="mean_out",
        atol=tol,
        hint=hint_mean,
        diagnoses=diagnoses,
    )
    if problem:
        if "NaN" in problem and bool((v == 0).any()):
            problem += (
                "\n  hint: where var = 0, r = mean / sigma divides by 0 (NaN): compute r with "
                "sigma replaced by 1 there and choose relu(mean) with torch.where"
            )
        return problem
    out = got[1]
    if not isinstance(out, Tensor) or out.shape != mean.shape:
        # type and shape only (the values follow): an impossible reference never matches
        return _tensor_rule(out, torch.full(mean.shape, math.nan, dtype=F64), mean, what="var_out")
    if out.dtype != mean.dtype or out.device != mean.device:
        return _tensor_rule(out, expected_var, mean, what="var_out")
    values = out.detach().cpu().to(F64)
    bad = ~torch.isfinite(values) | (values < 0)
    if bad.any():
        i = int(bad.flatten().nonzero()[0])
        where = f"mean = {mu.flatten()[i].item():.4g}, var = {v.flatten()[i].item():.3g}"
        got_v = values.flatten()[i].item()
        if bool((v.flatten()[bad.flatten()] == 0).all()) and not math.isfinite(got_v):
            return (
                f"var_out is NaN where var = 0 ({where})\n  hint: where var = 0 the input is a "
                "point mass: its variance is 0, computed without dividing by sigma = 0 (torch.where)"
            )
        return (
            f"var_out has {int(bad.sum())} negative or NaN entries of {values.numel()}, e.g. "
            f"{got_v:.3g} at {where} (expected {expected_var.flatten()[i].item():.3g})\n  hint: "
            + _CANCELLATION
        )
    # the round-off of E[relu(z)^2] - E[relu(z)]^2 is about eps * E[relu(z)^2]: allowed on top
    eps = torch.finfo(mean.dtype).eps
    second_ref = expected_var + expected_mean.square()  # E[relu(z)^2]
    allowed = tol + 1e-4 * expected_var.abs() + 16 * eps * second_ref
    error = (values - expected_var).abs()
    if (error <= allowed).all():
        return None
    hint = (
        "Var = E[relu(z)^2] - E[relu(z)]^2 with E[relu(z)^2] = (mu^2 + sigma^2) Phi(r) + "
        "mu sigma phi(r); clamp it at 0; 0 where var = 0"
    )
    second = (mu.to(F64) ** 2 + v.to(F64)) * torch.special.ndtr(mu / sigma64) + mu * sigma64 * (
        torch.exp(-0.5 * (mu / sigma64) ** 2) / math.sqrt(2 * math.pi)
    )
    candidates = {
        "this is E[relu(z)^2]: the variance subtracts E[relu(z)]^2": torch.where(
            v > 0, second, mu.clamp_min(0).to(F64) ** 2
        ),
        "this is the input variance: the ReLU changes it (Var[relu(z)] <= var)": v.to(F64),
    }
    for text, candidate in candidates.items():
        if torch.allclose(values, candidate, atol=10 * tol, rtol=1e-3):
            hint = text
            break
    worst = int(error.flatten().argmax())
    return (
        f"var_out: values differ (max abs error {error.max().item():.3g} at mean = "
        f"{mu.flatten()[worst].item():.4g}, var = {v.flatten()[worst].item():.3g})\n"
        f"  expected: {rules.short(expected_var.to(mean.dtype))}\n  got:      {rules.short(out)}\n"
        f"  hint: {hint}"
    )


_TABLE_KEYS = ("saliency", "gradient_x_input", "integrated_gradients", "shapley")
_GAP_KEYS = ("gxi_vs_saliency", "ig_vs_shapley")


def _table_gaps_reference(table: dict[str, Tensor], x: Tensor) -> dict[str, float]:
    gxi_gap = (table["gradient_x_input"].abs() - table["saliency"] * x.abs()).abs().max()
    ig_gap = (table["integrated_gradients"].sum() - table["shapley"].sum()).abs()
    return {"gxi_vs_saliency": float(gxi_gap), "ig_vs_shapley": float(ig_gap)}


def _rule_table_gaps(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    table, x = spec["args"]
    problem = rules.common(extra, ["table", "x"])
    if problem:
        return problem
    if not isinstance(got, dict) or set(got) != set(_GAP_KEYS):
        keys = sorted(got) if isinstance(got, dict) else rules.short(got)
        return f"expected a dict with keys {list(_GAP_KEYS)}, got {keys}"
    table = {k: _cpu(v) for k, v in table.items()}
    x = _cpu(x)
    expected = _table_gaps_reference(table, x)
    gxi, sal = table["gradient_x_input"], table["saliency"]
    hints = {
        "gxi_vs_saliency": "the largest |(|gxi_i| - saliency_i * |x_i|)| over the features; "
        "gradient x input may have either sign",
        "ig_vs_shapley": "|sum of the IG row - sum of the Shapley row|: both sum to "
        "f(x) - f(baseline)",
    }
    mistakes = {
        "gxi_vs_saliency": {
            "gradient x input may have either sign: compare |gxi_i| with saliency_i * |x_i|": [
                float((gxi - sal * x).abs().max()),
                float((gxi.abs() - sal * x).abs().max()),
            ],
            "the gap is the LARGEST difference over the features (a maximum, not a sum or a "
            "mean)": [
                float((gxi.abs() - sal * x.abs()).abs().sum()),
                float((gxi.abs() - sal * x.abs()).abs().mean()),
            ],
        },
        "ig_vs_shapley": {
            "the gap is an absolute value: |sum IG - sum Shapley| >= 0": [
                float(table["integrated_gradients"].sum() - table["shapley"].sum()),
                float(table["shapley"].sum() - table["integrated_gradients"].sum()),
            ],
            "compare the two rows' SUMS (both equal f(x) - f(baseline)), not feature by feature": [
                float((table["integrated_gradients"] - table["shapley"]).abs().max()),
                float((table["integrated_gradients"] - table["shapley"]).abs().sum()),
            ],
        },
    }
    for key in _GAP_KEYS:
        value = got[key]
        if not isinstance(value, float) or isinstance(value, bool):
            return (
                f"{key!r} should be a Python float, got {rules.short(value)}\n  hint: the statement "
                "asks for Python floats: turn a one-element tensor into a number with .item() "
                "(or float(...))"
            )
        want = expected[key]
        if not math.isclose(value, want, rel_tol=1e-4, abs_tol=1e-6):
            hint = hints[key]
            for text, values in mistakes[key].items():
                if any(
                    math.isclose(value, m, rel_tol=1e-4, abs_tol=1e-6)
                    and not math.isclose(m, want, rel_tol=1e-4, abs_tol=1e-6)
                    for m in values
                ):
                    hint = text
                    break
            return f"{key!r}: expected {want:.6g}, got {value:.6g}\n  hint: {hint}"
    return None


def _rule_cascade(spec: dict[str, Any], got: Any, extra: dict[str, Any]) -> str | None:
    layers = [[t.detach().cpu() for t in pair] for pair in _layers_of(spec["model"]["state"])]
    n = len(layers)
    if extra.get("default_dtype"):
        return f"your function changed the default dtype to {extra['default_dtype']}"
    original = extra.get("original")
    if not _params_ok(original, layers) or not all(
        torch.equal(t.cpu(), r) for p, pair in zip(original, layers, strict=True)
        for t, r in zip(p, pair, strict=True)
    ):  # fmt: skip
        return (
            "your function changed the original model's parameters\n  hint: randomise copies "
            "(a deep copy of the model), never the model itself"
        )
    if extra.get("global_rng"):
        return (
            "your function changed the global random state (a draw from the global generator, "
            "e.g. torch.randn without generator=, normal_ without generator=, or "
            "reset_parameters)\n  hint: draw every number from the `generator` argument, so that "
            "the result is reproducible and the caller's random stream untouched"
        )
    if extra.get("type") != "list" or not isinstance(got, list):
        return (
            f"expected a list of {n + 1} models (the original and one per randomised layer, top "
            f"down), got {extra.get('type', rules.short(got))}"
        )
    if len(got) != n + 1:
        return (
            f"expected a list of {n + 1} models (model k randomises the last k of the {n} layers, "
            f"k = 0 .. {n}: the unchanged copy first), got a list of {len(got)}"
        )
    for k, stage in enumerate(got):
        if isinstance(stage, str):
            return f"model {k} is {stage}: each entry must be a copy of the model (torch.nn.Module)"
        if not _params_ok(stage, layers):
            return (
                f"model {k} is not a copy of the model (same linear layers, shapes, dtype and "
                "device as the original)"
            )
        for index, ((weight, bias), (w0, b0)) in enumerate(zip(stage, layers, strict=True)):
            where = f"model {k}, layer {index}"
            w, b = weight.cpu(), bias.cpu()
            if index < n - k:
                if not (torch.equal(w, w0) and torch.equal(b, b0)):
                    return (
                        f"{where}: this layer must keep its trained parameters\n  hint: model k "
                        "randomises only its last k layers, counting from the output (the "
                        "layers closest to the input stay trained longest)"
                    )
                continue
            same_w = (w == w0).float().mean().item()
            same_b = bool(torch.equal(b, b0))
            if same_w > 0.01 and same_b:
                return (
                    f"{where}: this layer must be randomised but kept its trained weights and "
                    "biases\n  hint: model k randomises the last k layers, counting from the "
                    "output, and the randomisation is cumulative (model k + 1 = model k with one "
                    "more layer redrawn)"
                )
            if same_b:
                return (
                    f"{where}: the weights were redrawn but the biases were left at their trained "
                    "values\n  hint: a randomised layer gets new weights AND new biases, both from "
                    "N(0, s^2) with s the original weights' standard deviation"
                )
            if same_w > 0.01:
                return (
                    f"{where}: the biases were redrawn but {same_w:.0%} of the weights were left "
                    "at their trained values\n  hint: a randomised layer gets new weights AND new "
                    "biases"
                )
            if not bool(b.any()):
                return (
                    f"{where}: the biases were set to zero\n  hint: draw them from N(0, s^2) too, "
                    "with s the original weights' standard deviation"
                )
            ratio = (w.std() / w0.std()).item()
            if not 0.5 < ratio < 2.0:
                return (
                    f"{where}: the new weights have standard deviation {ratio:.2f} times the "
                    "original's\n  hint: draw them from N(0, s^2) with s = the standard deviation "
                    "of that layer's ORIGINAL weights (measured before redrawing)"
                )
    again, other = extra.get("again"), extra.get("other")
    if not (_params_ok(again, layers) and _params_ok(other, layers)):
        return (
            "calling your function again gave something other than the same kind of list of models"
        )
    last = got[-1][0][0].cpu()
    if not torch.equal(last, again[0][0].cpu()):
        return (
            "two calls with generators seeded alike gave different weights\n  hint: draw every "
            "random number from `generator` (generator=generator), nothing else"
        )
    if torch.equal(last, other[0][0].cpu()):
        return (
            "generators with different seeds gave the same weights\n  hint: draw the new "
            "weights from `generator`"
        )
    return None


def _layers_of(state: dict[str, Tensor]) -> list[list[Tensor]]:
    count = len([k for k in state if k.endswith(".weight")])
    return [[state[f"layers.{i}.weight"], state[f"layers.{i}.bias"]] for i in range(count)]


def _params_ok(params: Any, layers: list[list[Tensor]]) -> bool:
    """Whether ``params`` is one (weight, bias) pair of the right shapes and dtype per layer."""
    return (
        isinstance(params, list)
        and len(params) == len(layers)
        and all(
            isinstance(p, list) and len(p) == 2
            and all(isinstance(t, Tensor) and t.shape == r.shape and t.dtype == r.dtype
                    for t, r in zip(p, pair, strict=True))
            for p, pair in zip(params, layers, strict=True)
        )
    )  # fmt: skip


# ----------------------------------------------------------------------------- judge and run
#: exercise -> (the kernel-side call source, the rule)
EXERCISES: dict[str, tuple[str, Callable[[dict, Any, dict], str | None]]] = {
    "saliency": (CALL_SOURCE, _rule_saliency),
    "gradient_x_input": (CALL_SOURCE, _rule_gxi),
    "integrated_gradients": (CALL_SOURCE, _rule_ig),
    "shapley_exact": (CALL_SOURCE, _rule_shapley_exact),
    "shapley_permutations": (CALL_SOURCE, _rule_shapley_permutations),
    "relu_moments": (CALL_SOURCE, _rule_relu_moments),
    "table_gaps": (CALL_SOURCE, _rule_table_gaps),
    "cascading_randomization": (CASCADE_CALL_SOURCE, _rule_cascade),
}


def judge(exercise: str, spec: dict[str, Any], value: Any, extra: dict[str, Any]) -> str | None:
    """The acceptance rule of ``exercise``: ``None`` if ``value`` (what the student's function
    returned for ``spec``) and ``extra`` (what the call observed) pass, else the message.

    Used by the notebook check and by the grader's rubric alike.
    """
    return EXERCISES[exercise][1](spec, value, extra)


def call_function(exercise: str, fn: Callable, spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Call ``fn`` on ``spec`` exactly as the grader's kernel does (the same source)."""
    return _CALLS[EXERCISES[exercise][0]](fn, spec)


# ----------------------------------------------------------------------------- the cases
def _model_spec_case(
    g: torch.Generator,
    sizes: list[int],
    activation: str,
    dtype: torch.dtype,
    args: list[Any],
    device: torch.device | None = None,
) -> dict[str, Any]:
    model = build_mlp(sizes, g, activation, dtype)
    if device is not None:
        model = model.to(device)
        args = [a.to(device) if isinstance(a, Tensor) else a for a in args]
    return {"model": _model_spec(model, activation), "args": args}


def _on_device(device: torch.device | None) -> torch.device | None:
    """The notebook checks always add a case on the device in use (the CPU too, so that the
    number of cases they print is the same on every machine); the rubric passes ``None``."""
    return device


def gradient_cases(
    g: torch.Generator, device: torch.device | None = None
) -> list[tuple[str, dict]]:
    """Inputs of ``saliency`` and ``gradient_x_input``: (name, spec)."""

    def randn(*shape: int, dtype: torch.dtype = F32) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    out = [
        ("ReLU MLP [6, 12, 3], batch of 4, target=2",
         _model_spec_case(g, [6, 12, 3], "relu", F32, [randn(4, 6), 2])),
        ("batch of 1, target as a (batch,) tensor",
         _model_spec_case(g, [5, 8, 4], "relu", F32, [randn(1, 5), torch.tensor([3])])),
        ("tanh MLP in float64, one target per sample",
         _model_spec_case(g, [4, 8, 3], "tanh", F64, [randn(3, 4, dtype=F64),
                                                      torch.tensor([0, 2, 1])])),
        ("a model with one output, target=None",
         _model_spec_case(g, [3, 6, 1], "relu", F32, [randn(5, 3), None])),
        ("three layers [5, 8, 8, 4], target=0",
         _model_spec_case(g, [5, 8, 8, 4], "relu", F32, [randn(3, 5), 0])),
    ]  # fmt: skip
    if _on_device(device):
        out.append(
            (f"on the device in use ({device})",
             _model_spec_case(g, [6, 12, 3], "relu", F32, [randn(4, 6), torch.tensor([1, 0, 2, 1])],
                              device))
        )  # fmt: skip
    return out


def gxi_cases(g: torch.Generator, device: torch.device | None = None) -> list[tuple[str, dict]]:
    """Inputs of ``gradient_x_input``: those of ``saliency``, called with labcore's ``saliency``
    in place of the student's (:data:`IN_PLACE`)."""
    in_place = IN_PLACE["gradient_x_input"]
    return [(name, {**spec, "in_place": in_place}) for name, spec in gradient_cases(g, device)]


def ig_cases(g: torch.Generator, device: torch.device | None = None) -> list[tuple[str, dict]]:
    """Inputs of ``integrated_gradients``."""

    def randn(*shape: int, dtype: torch.dtype = F32) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    out = [
        ("tanh MLP [5, 12, 3], zero baseline, 16 steps",
         _model_spec_case(g, [5, 12, 3], "tanh", F32, [randn(4, 5), torch.zeros(5), 1, 16])),
        ("ReLU MLP, a baseline per sample of shape (batch, n_features), 24 steps",
         _model_spec_case(g, [6, 12, 3], "relu", F32,
                          [randn(3, 6), randn(3, 6), torch.tensor([0, 1, 2]), 24])),
        ("one step (the midpoint alone)",
         _model_spec_case(g, [4, 8, 2], "relu", F32, [randn(2, 4), torch.zeros(4), 0, 1])),
        ("batch of 1, float64, one output, baseline of shape (n_features,)",
         _model_spec_case(g, [3, 8, 1], "tanh", F64,
                          [randn(1, 3, dtype=F64), torch.full((3,), 0.5, dtype=F64), None, 20])),
        ("7 steps, target as a tensor",
         _model_spec_case(g, [6, 10, 4], "relu", F32,
                          [randn(3, 6), torch.zeros(6), torch.tensor([3, 0, 2]), 7])),
    ]  # fmt: skip
    if _on_device(device):
        out.append(
            (f"on the device in use ({device})",
             _model_spec_case(g, [6, 12, 3], "relu", F32,
                              [randn(4, 6), torch.zeros(6), torch.tensor([2, 0, 1, 1]), 12],
                              device))
        )  # fmt: skip
    return out


def shapley_exact_cases(
    g: torch.Generator, device: torch.device | None = None
) -> list[tuple[str, dict]]:
    """Inputs of ``shapley_exact``."""

    def randn(*shape: int, dtype: torch.dtype = F32) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    out = [
        ("3 features, batch of 2, target=1",
         _model_spec_case(g, [3, 8, 2], "relu", F32, [randn(2, 3), torch.zeros(3), 1])),
        ("5 features, float64, a baseline per sample",
         _model_spec_case(g, [5, 10, 3], "relu", F64,
                          [randn(3, 5, dtype=F64), randn(3, 5, dtype=F64), torch.tensor([0, 2, 1])])),
        ("batch of 1, one output, target=None",
         _model_spec_case(g, [4, 8, 1], "relu", F32, [randn(1, 4), torch.ones(4), None])),
        ("one feature: phi = f(x) - f(baseline)",
         _model_spec_case(g, [1, 4, 2], "relu", F32, [randn(3, 1), torch.zeros(1), 0])),
        ("4 features, batch of 3, target as a tensor",
         _model_spec_case(g, [4, 8, 3], "relu", F32,
                          [randn(3, 4), torch.full((4,), 0.5), torch.tensor([1, 2, 0])])),
    ]  # fmt: skip
    if _on_device(device):
        out.append(
            (f"on the device in use ({device})",
             _model_spec_case(g, [4, 8, 3], "relu", F32,
                              [randn(2, 4), torch.zeros(4), torch.tensor([1, 2])], device))
        )  # fmt: skip
    return out


def permutation_cases(
    g: torch.Generator, device: torch.device | None = None
) -> list[tuple[str, dict]]:
    """Inputs of ``shapley_permutations``."""

    def randn(*shape: int, dtype: torch.dtype = F32) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    def perms(m: int, n: int) -> Tensor:
        return torch.rand(m, n, generator=g).argsort(dim=1)

    out = [
        ("one permutation, the identity",
         _model_spec_case(g, [4, 8, 2], "relu", F32,
                          [randn(2, 4), torch.zeros(4), torch.arange(4).unsqueeze(0), 0])),
        ("a permutation and another that is not its inverse",
         _model_spec_case(g, [5, 8, 3], "relu", F32,
                          [randn(3, 5), torch.zeros(5),
                           torch.tensor([[2, 0, 4, 1, 3], [3, 1, 4, 0, 2]]), torch.tensor([2, 1, 0])])),
        ("12 random permutations, float64, a baseline per sample",
         _model_spec_case(g, [6, 10, 3], "relu", F64,
                          [randn(3, 6, dtype=F64), randn(3, 6, dtype=F64), perms(12, 6), 1])),
        ("all 6 permutations of 3 features (= exact Shapley), batch of 1, one output",
         _model_spec_case(g, [3, 6, 1], "relu", F32,
                          [randn(1, 3), torch.full((3,), -0.5),
                           torch.tensor(list(itertools.permutations(range(3)))), None])),
        ("one permutation, reversed order",
         _model_spec_case(g, [4, 8, 2], "relu", F32,
                          [randn(3, 4), torch.zeros(4), torch.tensor([[3, 2, 1, 0]]), 1])),
    ]  # fmt: skip
    if _on_device(device):
        out.append(
            (f"on the device in use ({device})",
             _model_spec_case(g, [5, 8, 3], "relu", F32,
                              [randn(2, 5), torch.zeros(5), perms(6, 5), torch.tensor([0, 2])],
                              device))
        )  # fmt: skip
    return out


def moment_cases(g: torch.Generator, device: torch.device | None = None) -> list[tuple[str, dict]]:
    """Inputs of ``relu_moments``; two cases have means many standard deviations below 0, where
    ``E[relu(z)^2]`` and ``E[relu(z)]^2`` are tiny and nearly equal: without the clamp their
    difference comes out negative (in float32 for most such entries, in float64 for some)."""

    def left_tail(count: int, dtype: torch.dtype) -> list[Tensor]:
        sigma = 10 ** (-2 + 2 * torch.rand(count, generator=g, dtype=dtype))  # 0.01 .. 1
        r = -(3 + 6 * torch.rand(count, generator=g, dtype=dtype))  # mean / sigma in [-9, -3]
        return [r * sigma, sigma.square()]

    out = [
        ("standard normal: mean 0, var 1 (and 4)",
         {"args": [torch.tensor([0.0, 0.0]), torch.tensor([1.0, 4.0])]}),
        ("means far from 0 on both sides",
         {"args": [torch.tensor([-6.0, -2.0, 2.0, 6.0]), torch.tensor([1.0, 0.25, 4.0, 1.0])]}),
        ("zero variance (a point mass): relu(mean) and 0",
         {"args": [torch.tensor([-1.0, 0.0, 1.5]), torch.zeros(3)]}),
        ("shape (2, 3, 4), float64",
         {"args": [torch.randn(2, 3, 4, generator=g, dtype=F64),
                   2 * torch.rand(2, 3, 4, generator=g, dtype=F64)]}),
        ("24 means 3 to 9 standard deviations below 0, float32 (E[relu(z)^2] and E[relu(z)]^2 "
         "are tiny and nearly cancel)", {"args": left_tail(24, F32)}),
        ("48 means 3 to 9 standard deviations below 0, float64", {"args": left_tail(48, F64)}),
        ("shape (6, 5), some variances 0",
         {"args": [torch.randn(6, 5, generator=g),
                   torch.rand(6, 5, generator=g) * (torch.rand(6, 5, generator=g) > 0.3)]}),
    ]  # fmt: skip
    if _on_device(device):
        out.append(
            (f"on the device in use ({device})",
             {"args": [torch.randn(5, 3, generator=g).to(device),
                       torch.rand(5, 3, generator=g).to(device)]})
        )  # fmt: skip
    return out


def table_cases(g: torch.Generator, device: torch.device | None = None) -> list[tuple[str, dict]]:
    """Inputs of ``table_gaps``: consistent and inconsistent tables."""

    def table(
        n: int,
        dtype: torch.dtype = F32,
        ig_shift: float = 0.0,
        noise: float = 0.0,
        flip: bool = False,
    ) -> list[Any]:
        x = torch.randn(n, generator=g, dtype=dtype)
        grad = torch.randn(n, generator=g, dtype=dtype)
        phi = torch.randn(n, generator=g, dtype=dtype)
        ig = torch.randn(n, generator=g, dtype=dtype)
        ig = ig - (ig.sum() - phi.sum()) / n + ig_shift
        gxi = grad * x * (-1 if flip else 1) + noise * torch.randn(n, generator=g, dtype=dtype)
        return [
            {"saliency": grad.abs(), "gradient_x_input": gxi, "integrated_gradients": ig,
             "shapley": phi},
            x,
        ]  # fmt: skip

    seed_table = {
        "saliency": torch.tensor([0.15, 0.02]),
        "gradient_x_input": torch.tensor([0.12, -0.03]),
        "integrated_gradients": torch.tensor([0.10, -0.01]),
        "shapley": torch.tensor([0.08, 0.00]),
    }
    return [
        ("a consistent table of 5 features (both gaps 0)", {"args": table(5)}),
        ("the seed presentation's table, x = [0.5, -0.5]",
         {"args": [seed_table, torch.tensor([0.5, -0.5])]}),
        ("gradient x input with every sign flipped (still consistent)",
         {"args": table(4, flip=True)}),
        ("float64, integrated gradients shifted by -0.1 per feature, gradient x input with noise "
         "0.05", {"args": table(4, F64, ig_shift=-0.1, noise=0.05)}),
        ("6 features, gradient x input with noise 0.2, integrated gradients shifted by 0.3",
         {"args": table(6, ig_shift=0.3, noise=0.2)}),
    ]  # fmt: skip


def cascade_cases(g: torch.Generator, device: torch.device | None = None) -> list[tuple[str, dict]]:
    """Inputs of ``cascading_randomization``: a model and two generator seeds."""
    seed = int(torch.randint(0, 10_000, (), generator=g))
    out = [
        ("MLP [6, 24, 24, 3] (3 layers)", [6, 24, 24, 3], F32, None),
        ("float64 MLP [5, 20, 2] (2 layers)", [5, 20, 2], F64, None),
        ("MLP [4, 16, 16, 16, 2] (4 layers)", [4, 16, 16, 16, 2], F32, None),
    ]
    if _on_device(device):
        out.append((f"on the device in use ({device})", [8, 32, 16, 4], F32, device))
    cases = []
    for index, (name, sizes, dtype, where) in enumerate(out):
        model = build_mlp(sizes, g, "relu", dtype)
        if where is not None:
            model = model.to(where)
        spec = {"model": _model_spec(model, "relu"), "seeds": [seed + index, seed + index + 100]}
        cases.append((name, spec))
    return cases


#: exercise -> the case builder (the rubric draws its hidden cases with the same builders)
CASES: dict[str, Callable[..., list[tuple[str, dict]]]] = {
    "saliency": gradient_cases,
    "gradient_x_input": gxi_cases,
    "integrated_gradients": ig_cases,
    "shapley_exact": shapley_exact_cases,
    "shapley_permutations": permutation_cases,
    "relu_moments": moment_cases,
    "table_gaps": table_cases,
    "cascading_randomization": cascade_cases,
}

#: the seeds of the in-notebook cases (the grader draws others from its --seed)
_CHECK_SEEDS = {name: 300 + i for i, name in enumerate(CASES)}


def _check(exercise: str, fn: Callable) -> None:
    g = torch.Generator().manual_seed(_CHECK_SEEDS[exercise])
    call, rule = functools.partial(call_function, exercise, fn), functools.partial(judge, exercise)
    run_judged(
        exercise, CASES[exercise](g, labcore.get_device()), call, rule,
        shape_hint="check how a baseline of shape (n_features,) and a tensor target broadcast",
    )  # fmt: skip


# ----------------------------------------------------------------------------- the checks
def check_saliency(saliency: Callable) -> None:
    """``saliency(model, x, target) -> |d f_target / d x|``, ``(batch, n_features)``; the caller's
    ``x`` comes back unchanged (values, ``requires_grad``, ``.grad``)."""
    _check("saliency", saliency)


def check_gradient_x_input(gradient_x_input: Callable) -> None:
    """``gradient_x_input(model, x, target) -> x * d f_target / d x``, ``(batch, n_features)``."""
    _check("gradient_x_input", gradient_x_input)


def check_integrated_gradients(integrated_gradients: Callable) -> None:
    """``integrated_gradients(model, x, baseline, target, steps) -> (attributions, delta)``.

    The midpoint rule: ``alpha_s = (s + 1/2) / steps``, weights ``1 / steps``; ``delta`` is
    ``sum_i IG_i - (f(x) - f(baseline))``, ``(batch,)``.
    """
    _check("integrated_gradients", integrated_gradients)


def check_shapley_exact(shapley_exact: Callable) -> None:
    """``shapley_exact(model, x, baseline, target) -> phi``, ``(batch, n_features)``, all 2^n."""
    _check("shapley_exact", shapley_exact)


def check_shapley_permutations(shapley_permutations: Callable) -> None:
    """``shapley_permutations(model, x, baseline, perms, target) -> phi``: the permutation estimate.

    ``perms``: ``(n_permutations, n_features)`` long, each row a permutation of ``0 .. n - 1``.
    """
    _check("shapley_permutations", shapley_permutations)


def check_relu_moments(relu_moments: Callable) -> None:
    """``relu_moments(mean, var) -> (mean_out, var_out)`` of ``max(z, 0)``, ``z ~ N(mean, var)``;
    ``var_out >= 0`` everywhere (clamped against cancellation)."""
    _check("relu_moments", relu_moments)


def check_table_gaps(table_gaps: Callable) -> None:
    """``table_gaps(table, x) -> {"gxi_vs_saliency": float, "ig_vs_shapley": float}`` (Python
    floats)."""
    _check("table_gaps", table_gaps)


def check_cascading_randomization(cascading_randomization: Callable) -> None:
    """``cascading_randomization(model, generator) -> [model_0, ..., model_L]`` (a list).

    ``model_k`` is a copy of ``model`` whose last ``k`` linear layers have new weights and biases
    drawn from ``N(0, s^2)`` with ``generator``, ``s`` the standard deviation of that layer's
    original weights.
    """
    _check("cascading_randomization", cascading_randomization)
