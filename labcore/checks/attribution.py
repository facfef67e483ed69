"""Checks for lab 3, attribution methods (``labs/03-attribution.ipynb``).

One check per exercise. Each runs the student's function and labcore's reference
(``labcore.attribution``, ``labcore.probabilistic``) on the same inputs, edge cases included (a batch
of one sample, float64, a tensor of targets, a single-output model, the device in use), and prints
one line starting with ✔ or raises :class:`~labcore.checks.CheckFailed` saying which input failed,
what was expected, what came and what the likely cause is. The models are built inside
``torch.random.fork_rng``, so a check never changes the notebook's random numbers.

The student's functions follow the chapter's convention: ``model`` maps ``(batch, n_features)`` to
``(batch, n_classes)`` (or ``(batch, 1)``), ``target`` is an int, a ``(batch,)`` tensor of class
indices or ``None`` for a single output, and results have ``x``'s shape, dtype and device.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

import labcore
from labcore import attribution as ref
from labcore import probabilistic
from labcore.checks import CheckFailed, assert_unchanged, compare, passed, run_case, snapshot
from labcore.mlp import MLP

__all__ = [
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


# ------------------------------------------------------------------ shared helpers
def _mlp(
    sizes: list[int],
    seed: int,
    *,
    activation: str = "relu",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> MLP:
    """A random ``MLP`` in eval mode, built without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP(sizes, activation)
        with torch.no_grad():  # non-zero biases, so that baselines and ReLU kinks matter
            for layer in model.layers:
                layer.bias.normal_(0.0, 0.5)
    return model.to(device=device, dtype=dtype).eval()


def _randn(g: torch.Generator, *shape: int, dtype=torch.float32, device="cpu") -> Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype).to(device)


def _agrees(got: object, mistake: Callable[..., Tensor], *args: object, **kwargs: object) -> bool:
    """Whether ``got`` equals ``mistake(*args, **kwargs)``, the result of a typical mistake (to
    pick a hint); never raises."""
    try:
        other = mistake(*args, **kwargs)
        return (
            isinstance(got, Tensor)
            and got.shape == other.shape
            and torch.allclose(got.detach().to(other.dtype), other.detach(), atol=1e-5)
        )
    except Exception:  # the mistake cannot be computed for this input: no match
        return False


def _device_case() -> tuple[str, torch.device]:
    device = labcore.get_device()
    return f"on the device in use ({device})", device


def _explained(model: Callable, x: Tensor, target) -> Tensor:
    """``f_target(x)``, ``(batch,)``, as the reference functions select it."""
    with torch.no_grad():
        return ref._select(model(x), ref._check_inputs(model, x, target).target, x.shape[0])


# ------------------------------------------------------------------ exercises 1 and 2: gradients
def _gradient_cases() -> list[tuple[str, nn.Module, Tensor, object]]:
    g = torch.Generator().manual_seed(30)
    case_device, device = _device_case()
    return [
        ("ReLU MLP [6, 16, 3], batch of 4, target=2", _mlp([6, 16, 3], 1), _randn(g, 4, 6), 2),
        (
            "batch of 1, target as a (batch,) tensor",
            _mlp([5, 8, 4], 2),
            _randn(g, 1, 5),
            torch.tensor([3]),
        ),
        (
            "tanh MLP in float64, one target per sample",
            _mlp([4, 8, 3], 3, activation="tanh", dtype=torch.float64),
            _randn(g, 3, 4, dtype=torch.float64),
            torch.tensor([0, 2, 1]),
        ),
        ("a model with one output, target=None", _mlp([3, 6, 1], 4), _randn(g, 5, 3), None),
        (
            case_device,
            _mlp([6, 16, 3], 5, device=device),
            _randn(g, 4, 6, device=device),
            torch.tensor([1, 0, 2, 1], device=device),
        ),
    ]


def _check_gradient_method(
    name: str,
    fn: Callable,
    reference: Callable,
    hint: Callable[[Tensor, nn.Module, Tensor, object], str],
) -> None:
    cases = _gradient_cases()
    for case, model, x, target in cases:
        before = snapshot(x)
        got = run_case(case, fn, model, x, target)
        assert_unchanged(case, before, x, "x")
        expected = reference(model, x, target)
        if isinstance(got, Tensor) and got.requires_grad:
            got = got.detach()
        compare(case, got, expected, atol=1e-5, rtol=1e-4, hint=hint(got, model, x, target))
    passed(name, len(cases))


def check_saliency(saliency: Callable) -> None:
    """``saliency(model, x, target) -> |d f_target / d x|``, ``(batch, n_features)``."""

    def hint(got: Tensor, model: nn.Module, x: Tensor, target: object) -> str:
        if _agrees(got, ref.saliency, model, x, target, abs=False):
            return "this is the signed gradient: saliency is its absolute value"
        if _agrees(got, lambda *a: ref.gradient_x_input(*a).abs(), model, x, target):
            return "you multiplied by x: saliency is |gradient| alone"
        return (
            "differentiate the selected output f_target (select(model(x), target)), summed over "
            "the batch, with respect to x; then take the absolute value"
        )

    _check_gradient_method("saliency", saliency, ref.saliency, hint)


def check_gradient_x_input(gradient_x_input: Callable) -> None:
    """``gradient_x_input(model, x, target) -> x * d f_target / d x``, ``(batch, n_features)``."""

    def hint(got: Tensor, model: nn.Module, x: Tensor, target: object) -> str:
        if _agrees(got, lambda *a: ref.gradient_x_input(*a).abs(), model, x, target):
            return "keep the sign: gradient x input is x * gradient, no absolute value"
        if _agrees(got, ref.saliency, model, x, target, abs=False):
            return "this is the gradient alone: multiply it by x, elementwise"
        return "multiply the gradient of f_target with respect to x by x, elementwise"

    _check_gradient_method("gradient_x_input", gradient_x_input, ref.gradient_x_input, hint)


# ------------------------------------------------------------------ exercise 3: integrated gradients
def check_integrated_gradients(integrated_gradients: Callable) -> None:
    """``integrated_gradients(model, x, baseline, target, steps) -> (attributions, delta)``.

    The midpoint rule: ``alpha_s = (s + 1/2) / steps``, weights ``1 / steps``; ``delta`` is
    ``sum_i IG_i - (f(x) - f(baseline))``, ``(batch,)``.
    """
    g = torch.Generator().manual_seed(31)
    case_device, device = _device_case()
    cases = [
        (
            "tanh MLP [5, 16, 3], zero baseline, 16 steps",
            _mlp([5, 16, 3], 11, activation="tanh"),
            _randn(g, 4, 5),
            torch.zeros(5),
            1,
            16,
        ),
        (
            "ReLU MLP, a random baseline of shape (batch, n_features), 32 steps",
            _mlp([6, 16, 3], 12),
            _randn(g, 3, 6),
            _randn(g, 3, 6),
            torch.tensor([0, 1, 2]),
            32,
        ),
        (
            "one step (the midpoint alone)",
            _mlp([4, 8, 2], 13),
            _randn(g, 2, 4),
            torch.zeros(4),
            0,
            1,
        ),
        (
            "batch of 1, float64, baseline of shape (n_features,)",
            _mlp([3, 8, 1], 14, dtype=torch.float64),
            _randn(g, 1, 3, dtype=torch.float64),
            torch.full((3,), 0.5, dtype=torch.float64),
            None,
            20,
        ),
        (
            case_device,
            _mlp([6, 16, 3], 15, device=device),
            _randn(g, 4, 6, device=device),
            torch.zeros(6, device=device),
            torch.tensor([2, 0, 1, 1], device=device),
            24,
        ),
    ]
    for case, model, x, baseline, target, steps in cases:
        before, before_baseline = snapshot(x), snapshot(baseline)
        got = run_case(case, integrated_gradients, model, x, baseline, target, steps)
        assert_unchanged(case, before, x, "x")
        assert_unchanged(case, before_baseline, baseline, "baseline")
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise CheckFailed(
                f"[{case}] expected a pair (attributions, delta), got {type(got).__name__}"
            )
        attributions, delta = (t.detach() if isinstance(t, Tensor) else t for t in got)
        expected, expected_delta = ref.integrated_gradients(
            model, x, baseline, target, steps=steps, method="riemann_middle", return_delta=True
        )
        if steps > 1 and _agrees(
            attributions,
            ref.integrated_gradients,
            model,
            x,
            baseline,
            target,
            steps=steps,
            method="riemann_left",
        ):
            hint = "these are the left Riemann nodes s / steps: use the midpoints (s + 1/2) / steps"
        elif _agrees(attributions, torch.div, expected, x - baseline):
            hint = "multiply the averaged gradient by (x - baseline)"
        else:
            hint = (
                "IG_i = (x_i - x'_i) * (1/steps) sum_s d f/d x_i at x' + alpha_s (x - x'), "
                "alpha_s = (s + 1/2) / steps"
            )
        compare(case, attributions, expected, atol=1e-5, rtol=1e-4, hint=hint)
        compare(
            f"{case}: delta",
            delta,
            expected_delta,
            atol=1e-4,
            rtol=1e-4,
            hint="delta = attributions summed over the features - (f(x) - f(baseline)), one per "
            "sample, shape (batch,)",
        )
    passed("integrated_gradients", len(cases))


# ------------------------------------------------------------------ exercise 4: exact Shapley
def check_shapley_exact(shapley_exact: Callable) -> None:
    """``shapley_exact(model, x, baseline, target) -> phi``, ``(batch, n_features)``, all 2^n."""
    g = torch.Generator().manual_seed(32)
    case_device, device = _device_case()
    cases = [
        (
            "3 features, batch of 2, target=1",
            _mlp([3, 8, 2], 21),
            _randn(g, 2, 3),
            torch.zeros(3),
            1,
        ),
        (
            "6 features, float64, a random baseline per sample",
            _mlp([6, 16, 3], 22, dtype=torch.float64),
            _randn(g, 3, 6, dtype=torch.float64),
            _randn(g, 3, 6, dtype=torch.float64),
            torch.tensor([0, 2, 1]),
        ),
        (
            "batch of 1, one output, target=None",
            _mlp([5, 8, 1], 23),
            _randn(g, 1, 5),
            torch.ones(5),
            None,
        ),
        (
            "one feature: phi = f(x) - f(baseline)",
            _mlp([1, 4, 2], 24),
            _randn(g, 3, 1),
            torch.zeros(1),
            0,
        ),
        (
            case_device,
            _mlp([4, 8, 3], 25, device=device),
            _randn(g, 2, 4, device=device),
            torch.zeros(4, device=device),
            torch.tensor([1, 2], device=device),
        ),
    ]
    for case, model, x, baseline, target in cases:
        before = snapshot(x)
        got = run_case(case, shapley_exact, model, x, baseline, target)
        assert_unchanged(case, before, x, "x")
        expected = ref.shapley_exact(model, x, baseline, target)
        hint = "phi_i = sum over S without i of |S|! (n - |S| - 1)! / n! [v(S u {i}) - v(S)]"
        if isinstance(got, Tensor) and got.shape == expected.shape:
            total = got.detach().to(x.dtype).sum(1)
            gain = _explained(model, x, target) - _explained(model, baseline.expand_as(x), target)
            if not torch.allclose(total, gain, atol=1e-4, rtol=1e-4):
                hint += (
                    f"; efficiency fails: your values sum to {_short_list(total)} per sample, "
                    f"f(x) - f(baseline) is {_short_list(gain)} (check the weights and which "
                    "features take x's value in a coalition)"
                )
        compare(case, got, expected, atol=1e-5, rtol=1e-4, hint=hint)
    passed("shapley_exact", len(cases))


def _short_list(t: Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in t.flatten()[:4].tolist()) + "]"


# ------------------------------------------------------------------ exercise 5: permutations
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


def check_shapley_permutations(shapley_permutations: Callable) -> None:
    """``shapley_permutations(model, x, baseline, perms, target) -> phi``: the permutation estimate.

    ``perms``: ``(n_permutations, n_features)`` long, each row a permutation of ``0 .. n - 1``.
    """
    g = torch.Generator().manual_seed(33)
    case_device, device = _device_case()
    all_perms = torch.tensor(list(itertools.permutations(range(4))))
    cases = [
        (
            "one permutation, the identity",
            _mlp([4, 8, 2], 41),
            _randn(g, 2, 4),
            torch.zeros(4),
            torch.arange(4).unsqueeze(0),
            0,
        ),
        (
            "a permutation and its reverse",
            _mlp([5, 8, 3], 42),
            _randn(g, 3, 5),
            torch.zeros(5),
            torch.tensor([[2, 0, 4, 1, 3], [3, 1, 4, 0, 2]]),
            torch.tensor([2, 1, 0]),
        ),
        (
            "30 random permutations, float64, a baseline per sample",
            _mlp([6, 16, 3], 43, dtype=torch.float64),
            _randn(g, 3, 6, dtype=torch.float64),
            _randn(g, 3, 6, dtype=torch.float64),
            torch.rand(30, 6, generator=g).argsort(dim=1),
            1,
        ),
        (
            "all 24 permutations of 4 features (= exact Shapley), batch of 1",
            _mlp([4, 8, 1], 44),
            _randn(g, 1, 4),
            torch.full((4,), -0.5),
            all_perms,
            None,
        ),
        (
            case_device,
            _mlp([5, 8, 3], 45, device=device),
            _randn(g, 2, 5, device=device),
            torch.zeros(5, device=device),
            torch.rand(10, 5, generator=g).argsort(dim=1).to(device),
            torch.tensor([0, 2], device=device),
        ),
    ]
    for case, model, x, baseline, perms, target in cases:
        before, before_perms = snapshot(x), snapshot(perms)
        got = run_case(case, shapley_permutations, model, x, baseline, perms, target)
        assert_unchanged(case, before, x, "x")
        assert_unchanged(case, before_perms, perms, "perms")
        expected = _permutation_reference(model, x, baseline, perms, target)
        hint = (
            "for permutation pi, the feature pi[k] contributes v({pi[0..k]}) - v({pi[0..k-1]}); "
            "average each feature's contributions over the permutations"
        )
        if _agrees(got, torch.mul, expected, perms.shape[0]) and perms.shape[0] > 1:
            hint = "you summed over the permutations: average instead (divide by n_permutations)"
        elif _agrees(got, _permutation_reference, model, x, baseline, perms.argsort(1), target):
            hint = (
                "you read perms as ranks: perms[j, k] is the feature added k-th in permutation "
                "j, not the position of feature k"
            )
        compare(case, got, expected, atol=1e-5, rtol=1e-4, hint=hint)
    exact = ref.shapley_exact(cases[3][1], cases[3][2], cases[3][3], None)
    if not torch.allclose(
        _permutation_reference(*cases[3][1:4], all_perms, None), exact, atol=1e-5
    ):
        raise AssertionError("internal: the permutation reference disagrees with shapley_exact")
    passed("shapley_permutations", len(cases))


# ------------------------------------------------------------------ exercise 6: ReLU moments
def check_relu_moments(relu_moments: Callable) -> None:
    """``relu_moments(mean, var) -> (mean_out, var_out)`` of ``max(z, 0)``, ``z ~ N(mean, var)``."""
    g = torch.Generator().manual_seed(34)
    case_device, device = _device_case()
    cases = [
        ("standard normal: mean 0, var 1", torch.tensor([0.0]), torch.tensor([1.0])),
        (
            "means far from 0 on both sides",
            torch.tensor([-6.0, -2.0, 2.0, 6.0]),
            torch.tensor([1.0, 0.25, 4.0, 1.0]),
        ),
        (
            "zero variance (a point mass): relu(mean) and 0",
            torch.tensor([-1.0, 0.0, 1.5]),
            torch.tensor([0.0, 0.0, 0.0]),
        ),
        (
            "shape (2, 3, 4), float64",
            _randn(g, 2, 3, 4, dtype=torch.float64),
            _randn(g, 2, 3, 4, dtype=torch.float64).abs(),
        ),
        (case_device, _randn(g, 5, 3, device=device), _randn(g, 5, 3, device=device).abs()),
    ]
    for case, mean, var in cases:
        before_mean, before_var = snapshot(mean), snapshot(var)
        got = run_case(case, relu_moments, mean, var)
        assert_unchanged(case, before_mean, mean, "mean")
        assert_unchanged(case, before_var, var, "var")
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise CheckFailed(
                f"[{case}] expected a pair (mean_out, var_out), got {type(got).__name__}"
            )
        expected_mean, expected_var = probabilistic.relu_moments(mean, var)
        hint_mean = (
            "E[relu(z)] = mu Phi(r) + sigma phi(r), r = mu / sigma; where var = 0 return relu(mu) "
            "(avoid dividing by sigma = 0)"
        )
        if not torch.allclose(var, var.sqrt()) and _agrees(
            got[0], lambda *a: probabilistic.relu_moments(*a)[0], mean, var * var
        ):
            hint_mean = "use sigma = sqrt(var) (var is a variance, not a standard deviation)"
        compare(f"{case}: mean_out", got[0], expected_mean, atol=1e-5, rtol=1e-4, hint=hint_mean)
        compare(
            f"{case}: var_out",
            got[1],
            expected_var,
            atol=1e-5,
            rtol=1e-4,
            hint="Var = E[relu(z)^2] - E[relu(z)]^2 with E[relu(z)^2] = (mu^2 + sigma^2) Phi(r) + "
            "mu sigma phi(r); clamp it at 0; 0 where var = 0",
        )
    passed("relu_moments", len(cases))


# ------------------------------------------------------------------ exercise 7: the table's relations
_TABLE_KEYS = ("saliency", "gradient_x_input", "integrated_gradients", "shapley")
_GAP_KEYS = ("gxi_vs_saliency", "ig_vs_shapley")


def _table_gaps_reference(table: dict[str, Tensor], x: Tensor) -> dict[str, float]:
    gxi_gap = (table["gradient_x_input"].abs() - table["saliency"] * x.abs()).abs().max()
    ig_gap = (table["integrated_gradients"].sum() - table["shapley"].sum()).abs()
    return {"gxi_vs_saliency": float(gxi_gap), "ig_vs_shapley": float(ig_gap)}


def check_table_gaps(table_gaps: Callable) -> None:
    """``table_gaps(table, x) -> {"gxi_vs_saliency": float, "ig_vs_shapley": float}``."""
    g = torch.Generator().manual_seed(35)

    def consistent(n: int, dtype=torch.float32) -> tuple[dict[str, Tensor], Tensor]:
        x = _randn(g, n, dtype=dtype)
        grad = _randn(g, n, dtype=dtype)
        phi = _randn(g, n, dtype=dtype)
        ig = _randn(g, n, dtype=dtype)
        ig = ig - (ig.sum() - phi.sum()) / n  # same total as phi
        return {
            "saliency": grad.abs(),
            "gradient_x_input": grad * x,
            "integrated_gradients": ig,
            "shapley": phi,
        }, x

    seed_table = {
        "saliency": torch.tensor([0.15, 0.02]),
        "gradient_x_input": torch.tensor([0.12, -0.03]),
        "integrated_gradients": torch.tensor([0.10, -0.01]),
        "shapley": torch.tensor([0.08, 0.00]),
    }
    table_ok, x_ok = consistent(5)
    table64, x64 = consistent(3, torch.float64)
    table64["integrated_gradients"] = table64["integrated_gradients"] + 0.25
    flipped = dict(table_ok, gradient_x_input=-table_ok["gradient_x_input"])
    cases = [
        ("a consistent table of 5 features (both gaps 0)", table_ok, x_ok),
        ("the seed presentation's table, x = [0.5, -0.5]", seed_table, torch.tensor([0.5, -0.5])),
        ("gradient x input with every sign flipped (still consistent)", flipped, x_ok),
        ("float64, integrated gradients shifted by 0.25 per feature", table64, x64),
    ]
    for case, table, x in cases:
        before = {k: snapshot(v) for k, v in table.items()}
        got = run_case(case, table_gaps, table, x)
        for key in _TABLE_KEYS:
            assert_unchanged(case, before[key], table[key], f"table[{key!r}]")
        if not isinstance(got, dict) or set(got) != set(_GAP_KEYS):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise CheckFailed(f"[{case}] expected a dict with keys {list(_GAP_KEYS)}, got {keys}")
        expected = _table_gaps_reference(table, x)
        hints = {
            "gxi_vs_saliency": "the largest |(|gxi_i| - saliency_i * |x_i|)| over the features; "
            "gradient x input may have either sign",
            "ig_vs_shapley": "|sum of the IG row - sum of the Shapley row|: both sum to "
            "f(x) - f(baseline)",
        }
        for key in _GAP_KEYS:
            try:
                value = float(got[key])
            except (TypeError, ValueError) as err:
                raise CheckFailed(
                    f"[{case}] {key!r} must be a number, got {type(got[key]).__name__}"
                ) from err
            if not math.isclose(value, expected[key], rel_tol=1e-4, abs_tol=1e-6):
                raise CheckFailed(
                    f"[{case}] {key!r}: expected {expected[key]:.6g}, got {value:.6g}"
                    f"\n  hint: {hints[key]}"
                )
    passed("table_gaps", len(cases))


# ------------------------------------------------------------------ exercise 8: randomisation
def _linear_layers(model: nn.Module) -> list[nn.Linear]:
    return (
        list(model.layers)
        if isinstance(model, MLP)
        else [m for m in model.modules() if isinstance(m, nn.Linear)]
    )


def check_cascading_randomization(cascading_randomization: Callable) -> None:
    """``cascading_randomization(model, generator) -> [model_0, ..., model_L]``.

    ``model_k`` is a copy of ``model`` whose last ``k`` linear layers have new weights and biases
    drawn from ``N(0, s^2)``, ``s`` the standard deviation of that layer's original weights.
    """
    case_device, device = _device_case()
    cases = [
        ("MLP [8, 32, 32, 3] (3 layers)", _mlp([8, 32, 32, 3], 51)),
        ("float64 MLP [6, 24, 2] (2 layers)", _mlp([6, 24, 2], 52, dtype=torch.float64)),
        (case_device, _mlp([8, 32, 16, 4], 53, device=device)),
    ]
    for case, model in cases:
        original = copy.deepcopy(model)
        layers = _linear_layers(original)
        n_layers = len(layers)
        got = run_case(case, cascading_randomization, model, torch.Generator().manual_seed(7))
        for p, q in zip(model.parameters(), original.parameters(), strict=True):
            if not torch.equal(p, q):
                raise CheckFailed(
                    f"[{case}] your function changed the original model's parameters: randomise "
                    "copies (copy.deepcopy(model)), never the model itself"
                )
        if not isinstance(got, list | tuple) or len(got) != n_layers + 1:
            length = len(got) if isinstance(got, list | tuple) else type(got).__name__
            raise CheckFailed(
                f"[{case}] expected a list of {n_layers + 1} models (the original and one per "
                f"randomised layer, top down), got {length}"
            )
        for k, stage in enumerate(got):
            if not isinstance(stage, nn.Module):
                raise CheckFailed(f"[{case}] entry {k} is a {type(stage).__name__}, not a model")
            stage_layers = _linear_layers(stage)
            for l, (new, old) in enumerate(zip(stage_layers, layers, strict=True)):
                randomised = l >= n_layers - k
                where = f"[{case}] model {k}, layer {l}"
                if new.weight.device != old.weight.device or new.weight.dtype != old.weight.dtype:
                    raise CheckFailed(
                        f"{where}: weights on {new.weight.device} in {new.weight.dtype}, expected "
                        f"the model's {old.weight.device} and {old.weight.dtype}"
                    )
                if not randomised:
                    if not (
                        torch.equal(new.weight, old.weight) and torch.equal(new.bias, old.bias)
                    ):
                        raise CheckFailed(
                            f"{where}: this layer must keep its trained parameters (model k "
                            "randomises only its last k layers, counting from the output)"
                        )
                    continue
                same = (new.weight == old.weight).float().mean().item()
                if same > 0.01 or torch.equal(new.bias, old.bias):
                    raise CheckFailed(
                        f"{where}: this layer must be randomised (model k randomises the last k "
                        f"layers, counting from the output); {same:.0%} of its weights are unchanged"
                    )
                ratio = (new.weight.std() / old.weight.std()).item()
                if not 0.5 < ratio < 2.0:
                    raise CheckFailed(
                        f"{where}: the new weights have standard deviation {ratio:.2f} times the "
                        "original's; draw them from N(0, s^2) with s = the original weights' std"
                    )
        again = run_case(case, cascading_randomization, model, torch.Generator().manual_seed(7))
        other = run_case(case, cascading_randomization, model, torch.Generator().manual_seed(8))
        last_again, last_other = _linear_layers(again[-1])[0], _linear_layers(other[-1])[0]
        first = _linear_layers(got[-1])[0]
        if not torch.equal(first.weight, last_again.weight):
            raise CheckFailed(
                f"[{case}] two calls with generators seeded alike gave different weights: draw "
                "every random number from `generator` (torch.randn(..., generator=generator))"
            )
        if torch.equal(first.weight, last_other.weight):
            raise CheckFailed(f"[{case}] generators with different seeds gave the same weights")
    passed("cascading_randomization", len(cases))
