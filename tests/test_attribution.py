"""Tests of labcore.attribution and labcore.probabilistic: axioms, convergence, parity with captum.

Properties rather than snapshots: completeness of integrated gradients and its convergence in the
number of quadrature steps, the Shapley axioms, the 1/sqrt(samples) error of permutation sampling,
DASP's exactness where it must be exact and its accuracy elsewhere, batched equals unbatched, and
agreement with captum's Saliency, InputXGradient and IntegratedGradients.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from labcore.attribution import (
    METHODS,
    dasp,
    gradient_x_input,
    integrated_gradients,
    integrated_gradients_exact,
    path_kinks,
    quadrature,
    saliency,
    shapley_exact,
    shapley_sampling,
)
from labcore.mlp import MLP
from labcore.probabilistic import (
    ProbLinear,
    ProbReLU,
    layers_of,
    relu_moments,
    to_probabilistic,
)

F64 = torch.float64


def mlp(sizes: list[int], seed: int = 0, activation: str | nn.Module = "relu") -> MLP:
    torch.manual_seed(seed)
    return MLP(sizes, activation=activation).to(F64).eval()


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def explained(model: nn.Module, x: torch.Tensor, target, baseline=None) -> torch.Tensor:
    """f_target(x) - f_target(baseline), (batch,)."""
    baseline = torch.zeros_like(x) if baseline is None else baseline.expand_as(x)
    with torch.no_grad():
        out = model(x) - model(baseline)
    if out.ndim == 1:
        return out
    if target is None:
        return out[:, 0]
    if isinstance(target, int):
        return out[:, target]
    return out.gather(1, target[:, None])[:, 0]


def relative_error(estimate: torch.Tensor, exact: torch.Tensor) -> float:
    return ((estimate - exact).norm() / exact.norm()).item()


def brute_force_shapley(f, x: torch.Tensor, baseline: torch.Tensor, groups: list[list[int]]):
    """The Shapley formula summed subset by subset, for one sample ``x: (numel,)``."""
    n = len(groups)

    def v(coalition: tuple[int, ...]) -> float:
        z = baseline.clone()
        for g in coalition:
            z[groups[g]] = x[groups[g]]
        with torch.no_grad():
            return float(f(z[None])[0])

    phi = torch.zeros(n, dtype=F64)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for S in itertools.combinations(others, size):
                phi[i] += weight * (v((*S, i)) - v(S))
    return phi


# ------------------------------------------------------------------------------------------------
# Quadrature
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("steps", [2, 7, 64])
def test_quadrature_weights_sum_to_one(method: str, steps: int) -> None:
    alphas, weights = quadrature(method, steps)
    assert alphas.shape == weights.shape == (steps,)
    assert alphas.min() >= 0 and alphas.max() <= 1
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-14)


def test_gauss_legendre_is_exact_for_polynomials_of_degree_2n_minus_1() -> None:
    alphas, weights = quadrature("gausslegendre", 5)
    for degree in range(10):
        assert (weights * alphas**degree).sum().item() == pytest.approx(1 / (degree + 1), abs=1e-14)


@pytest.mark.parametrize(
    ("method", "order"),
    [("riemann_left", 1), ("riemann_right", 1), ("riemann_middle", 2), ("riemann_trapezoid", 2)],
)
def test_riemann_rules_converge_at_their_order(method: str, order: int) -> None:
    def error(steps: int) -> float:
        alphas, weights = quadrature(method, steps)
        return abs((weights * alphas.exp()).sum().item() - (math.e - 1))

    assert error(64) / error(128) == pytest.approx(2**order, rel=0.05)
    assert error(8) > error(64)


def test_quadrature_matches_captum() -> None:
    methods = pytest.importorskip("captum.attr._utils.approximation_methods")
    steps = 16
    for method in METHODS:
        step_sizes, alphas_fn = methods.approximation_parameters(method)
        alphas, weights = quadrature(method, steps)
        torch.testing.assert_close(
            alphas, torch.tensor(alphas_fn(steps), dtype=F64), atol=1e-7, rtol=0
        )
        captum_weights = torch.tensor(step_sizes(steps), dtype=F64)
        if method == "riemann_trapezoid":  # captum's trapezoid weights sum to 1 - 1/n
            assert captum_weights.sum().item() == pytest.approx(1 - 1 / steps)
            captum_weights = captum_weights * steps / (steps - 1)
        torch.testing.assert_close(weights, captum_weights, atol=1e-15, rtol=1e-12)


def test_quadrature_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="method"):
        quadrature("simpson", 8)
    with pytest.raises(ValueError, match="steps"):
        quadrature("gausslegendre", 0)
    with pytest.raises(ValueError, match="steps"):
        quadrature("riemann_trapezoid", 1)


# ------------------------------------------------------------------------------------------------
# Gradient methods and integrated gradients: parity with captum
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net_and_inputs():
    model = mlp([6, 16, 16, 3], seed=3)
    x = randn(5, 6)
    target = torch.tensor([0, 1, 2, 1, 0])
    return model, x, target


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_gradient_methods_match_captum(net_and_inputs) -> None:
    captum = pytest.importorskip("captum.attr")
    model, x, target = net_and_inputs
    for abs_ in (True, False):
        expected = captum.Saliency(model).attribute(x, target=target, abs=abs_)
        torch.testing.assert_close(
            saliency(model, x, target, abs=abs_), expected, atol=1e-5, rtol=0
        )
    expected = captum.InputXGradient(model).attribute(x, target=target).detach()
    torch.testing.assert_close(gradient_x_input(model, x, target), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_integrated_gradients_matches_captum(net_and_inputs, method: str) -> None:
    captum = pytest.importorskip("captum.attr")
    model, x, target = net_and_inputs
    baseline = randn(1, 6, seed=9)
    steps = 24
    expected = captum.IntegratedGradients(model).attribute(
        x, baselines=baseline, target=target, n_steps=steps, method=method
    )
    got = integrated_gradients(model, x, baseline, target, steps=steps, method=method)
    if method == "riemann_trapezoid":  # captum's weights are ours times (n - 1) / n
        got = got * (steps - 1) / steps
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_saliency_gradient_x_input_relation(net_and_inputs) -> None:
    """|gradient x input| = saliency * |x|, elementwise (the seed table breaks this)."""
    model, x, target = net_and_inputs
    torch.testing.assert_close(
        gradient_x_input(model, x, target).abs(), saliency(model, x, target) * x.abs()
    )


def test_gradient_x_input_adds_up_exactly_on_an_affine_segment() -> None:
    """sum_i x_i d_i f(x) = f(x) - f(0) when f is affine on [0, x], biases or not (chapter 3).

    Inputs of all scales: the short segments cross no kink, and there gradient x input equals the
    exact integrated gradients; the long ones cross kinks and the sum misses f(x) - f(0). A
    bias-free ReLU network is positively homogeneous, hence affine on every such segment.
    """
    model = mlp([6, 16, 16, 1], seed=3)  # non-zero biases
    scale = torch.logspace(-3, 0.5, 64, dtype=F64)[:, None]
    x = randn(64, 6, seed=4) * scale
    pieces = (path_kinks(model, x).diff(dim=1) > 0).sum(1)
    gxi = gradient_x_input(model, x)
    gap = gxi.sum(1) - explained(model, x, None)
    affine = pieces == 1
    assert affine.sum() >= 5 and (~affine).sum() >= 5
    assert gap[affine].abs().max() < 1e-12
    torch.testing.assert_close(gxi[affine], integrated_gradients_exact(model, x[affine]))
    assert gap[~affine].abs().max() > 1e-3
    torch.manual_seed(5)
    homogeneous = MLP([6, 16, 16, 1], bias=False).to(F64).eval()
    gap = gradient_x_input(homogeneous, x).sum(1) - explained(homogeneous, x, None)
    assert gap.abs().max() < 1e-12


@pytest.mark.parametrize("activation", ["tanh", nn.Softplus()], ids=["tanh", "softplus"])
def test_integrated_gradients_completeness_on_smooth_networks(activation) -> None:
    model = mlp([8, 32, 32, 4], seed=1, activation=activation)
    x, baseline = randn(64, 8, seed=2), randn(8, seed=3)
    target = torch.randint(4, (64,), generator=torch.Generator().manual_seed(4))
    attributions, delta = integrated_gradients(
        model, x, baseline, target, steps=64, return_delta=True
    )
    gap = explained(model, x, target, baseline)
    torch.testing.assert_close(attributions.sum(1) - gap, delta)
    assert (delta.abs() <= 1e-3 * gap.abs()).all()


@pytest.mark.parametrize("sizes", [[16, 64, 10], [16, 64, 64, 10]], ids=["1-hidden", "2-hidden"])
def test_integrated_gradients_completeness_on_relu_networks_improves_with_steps(
    sizes: list[int],
) -> None:
    """ReLU networks give a piecewise-constant integrand: slow convergence, but convergence.

    Explaining each of 256 Gaussian samples for its predicted class (zero baseline), the relative
    gap ``|delta| / |gap|`` (``delta = sum IG - gap``, ``gap = f(x) - f(0)``) has a 95th
    percentile that falls like ``1/steps`` for every rule. Issue #7 asks for under 2% at 256
    steps. Measured over random networks at their default initialisation (10 per shape; one
    hidden layer: ``[10, 32, 1]``, ``[16, 64, 3]``, ``[16, 64, 10]``; two: ``[10, 32, 32, 1]``,
    ``[16, 32, 32, 3]``, ``[16, 64, 64, 3]``, ``[16, 64, 64, 10]``), the networks under 2% at 256
    steps are, with Gauss-Legendre / midpoint / trapezoid: 24 / 28 / 29 of 30 with one hidden
    layer (every ``[16, 64, 10]``, worst 0.6%), 15 / 28 / 20 of 40 with two (worst 5.5%); at
    1024 steps, all of them. This two-layer network (seed 0) is one of the hard ones (5.7% at
    256 steps). The misses are samples whose ``|gap|`` is tiny (about a twentieth of the mean),
    where a relative error is ill-conditioned: relative to ``max(|gap|, mean |gap|)`` instead,
    every rule is under 1.3% at 256 steps on every one of those networks.
    """
    model = mlp(sizes, seed=0)
    x = randn(256, sizes[0], seed=5)
    with torch.no_grad():
        target = model(x).argmax(1)
    gap = explained(model, x, target).abs()
    p95, p95_scaled, misses = {}, {}, {}
    for steps in (16, 64, 256, 1024):
        _, delta = integrated_gradients(  # blocks of 4096 path points: faster than one pass
            model, x, target=target, steps=steps, batch_size=4096, return_delta=True
        )
        relative = delta.abs() / gap
        p95[steps] = relative.quantile(0.95).item()
        p95_scaled[steps] = (delta.abs() / gap.clamp_min(gap.mean())).quantile(0.95).item()
        misses[steps] = gap[relative > 0.02] / gap.mean()  # |gap| of the misses, in mean |gap|
    assert list(p95.values()) == sorted(p95.values(), reverse=True)  # shrinks as steps grow
    assert p95[64] / p95[1024] > 6  # like 1/steps: 16 for an exact first-order rate
    assert p95_scaled[256] < 0.02  # the criterion, with the gap's scale as a floor
    if len(sizes) == 3:
        assert p95[256] < 0.02  # the criterion as stated, one hidden layer
    else:
        assert p95[1024] < 0.02  # two hidden layers: 4 times the steps
        assert misses[256].median() < 0.2  # the misses at 256 steps: samples with small gaps


# ------------------------------------------------------------------------------------------------
# One convention: linear models, batch_size, batched equals unbatched
# ------------------------------------------------------------------------------------------------


def test_every_method_coincides_on_a_linear_model() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(5, 3).to(F64)
    x, baseline = randn(4, 5), randn(5, seed=2)
    target = torch.tensor([2, 0, 1, 2])
    expected = linear.weight[target].detach() * (x - baseline)  # w_i (x_i - x'_i)
    for got in (
        integrated_gradients(linear, x, baseline, target, steps=3),
        integrated_gradients(linear, x, baseline, target, steps=2, method="riemann_trapezoid"),
        shapley_exact(linear, x, baseline, target),
        shapley_sampling(linear, x, baseline, target, n_permutations=3, seed=0),
        dasp(linear, x, baseline, target),
    ):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        gradient_x_input(linear, x, target), linear.weight[target].detach() * x
    )


METHOD_CALLS = {
    "integrated_gradients": lambda m, x, t, bs: integrated_gradients(
        m, x, None, t, steps=20, batch_size=bs
    ),
    "shapley_exact": lambda m, x, t, bs: shapley_exact(m, x, None, t, batch_size=bs),
    "shapley_sampling": lambda m, x, t, bs: shapley_sampling(
        m, x, None, t, n_permutations=6, seed=3, batch_size=bs, antithetic=True
    ),
    "dasp": lambda m, x, t, bs: dasp(m, x, None, t, batch_size=bs),
}


@pytest.mark.parametrize("name", list(METHOD_CALLS))
def test_results_do_not_depend_on_batch_size_or_batching(name: str) -> None:
    call = METHOD_CALLS[name]
    model = mlp([6, 12, 12, 3], seed=2)
    x = randn(5, 6, seed=4)
    target = torch.tensor([1, 0, 2, 2, 1])
    reference = call(model, x, target, None)
    for batch_size in (1, 7, 64):
        torch.testing.assert_close(
            call(model, x, target, batch_size), reference, rtol=1e-12, atol=1e-12
        )
    alone = torch.cat([call(model, x[i : i + 1], target[i : i + 1], None) for i in range(5)])
    torch.testing.assert_close(alone, reference, rtol=1e-12, atol=1e-12)


def test_int_target_equals_tensor_target_and_single_output() -> None:
    model = mlp([4, 8, 3], seed=5)
    x = randn(3, 4)
    torch.testing.assert_close(saliency(model, x, 2), saliency(model, x, torch.tensor([2, 2, 2])))
    torch.testing.assert_close(saliency(model, x, [2, 2, 2]), saliency(model, x, 2))
    single = mlp([4, 8, 1], seed=5)
    torch.testing.assert_close(
        shapley_exact(single, x), shapley_exact(lambda z: single(z)[:, 0], x)
    )


# ------------------------------------------------------------------------------------------------
# Shapley values
# ------------------------------------------------------------------------------------------------


def test_shapley_exact_matches_the_formula_with_groups_and_baseline() -> None:
    model = mlp([6, 10, 2], seed=7)
    x, baseline = randn(2, 6, seed=8), randn(6, seed=9)
    mask = torch.tensor([0, 2, 1, 1, 3, 2])
    groups = [[0], [2, 3], [1, 5], [4]]
    got = shapley_exact(model, x, baseline, 1, feature_mask=mask)
    for b in range(2):
        expected = brute_force_shapley(lambda z: model(z)[:, 1], x[b], baseline.clone(), groups)
        torch.testing.assert_close(got[b], expected[mask], rtol=1e-12, atol=1e-12)


def test_shapley_exact_axioms() -> None:
    torch.manual_seed(11)
    model = mlp([10, 16, 16, 2], seed=11)
    with torch.no_grad():  # feature 3 is a dummy; features 0 and 1 are symmetric
        model.layers[0].weight[:, 3] = 0
        model.layers[0].weight[:, 1] = model.layers[0].weight[:, 0]
    x, baseline = randn(4, 10, seed=12), randn(10, seed=13)
    x[:, 1] = x[:, 0]
    baseline[1] = baseline[0]
    phi = shapley_exact(model, x, baseline, 0)
    gap = explained(model, x, 0, baseline)
    torch.testing.assert_close(phi.sum(1), gap, atol=1e-5, rtol=0)  # efficiency
    torch.testing.assert_close(phi[:, 0], phi[:, 1], atol=1e-5, rtol=0)  # symmetry
    assert phi[:, 3].abs().max() < 1e-5  # dummy
    other = mlp([10, 8, 2], seed=12)  # linearity
    both = shapley_exact(lambda z: model(z) + 2 * other(z), x, baseline, 0)
    torch.testing.assert_close(both, phi + 2 * shapley_exact(other, x, baseline, 0))


def test_shapley_exact_refuses_too_many_players() -> None:
    with pytest.raises(ValueError, match="players"):
        shapley_exact(mlp([21, 2, 1]), randn(1, 21))


@pytest.mark.parametrize("antithetic", [False, True])
def test_shapley_sampling_converges_like_one_over_sqrt_samples(antithetic: bool) -> None:
    model = mlp([8, 16, 16, 1], seed=4)
    x = randn(8, 8, seed=5)
    exact = shapley_exact(model, x)
    gap = explained(model, x, None)
    errors = []
    for m in (8, 32, 128, 512):
        runs = [
            shapley_sampling(model, x, n_permutations=m, seed=s, antithetic=antithetic)
            for s in range(4)
        ]
        for phi in runs:  # every permutation telescopes: exactly efficient
            torch.testing.assert_close(phi.sum(1), gap, rtol=1e-10, atol=1e-10)
        errors.append(sum(relative_error(phi, exact) for phi in runs) / len(runs))
    assert errors == sorted(errors, reverse=True)
    assert 1 / 16 < errors[-1] / errors[0] < 1 / 4  # 64 times the samples: about 1/8 the error


class Recorder(nn.Module):
    """Wraps a model and keeps a copy of every input it is called with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.inputs.append(z.clone())
        return self.model(z)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_coalition_inputs_are_torch_where_bit_for_bit(dtype: torch.dtype) -> None:
    """Coalition S's input is where(element in S, x, x') exactly: signed zeros, inf and NaN too."""
    x = torch.tensor(
        [[-0.0, 1.5, float("inf"), -2.0], [3.0, -0.0, 0.25, float("nan")]], dtype=dtype
    )
    baseline = torch.tensor([0.0, -0.0, 7.0, float("-inf")], dtype=dtype)
    recorder = Recorder(mlp([4, 3, 2], seed=0).to(dtype))
    shapley_exact(recorder, x, baseline, 0)
    got = torch.cat(recorder.inputs).view(16, 2, 4)  # (coalition, sample, element)
    present = (torch.arange(16)[:, None] >> torch.arange(4)) & 1  # bit i: player i in S
    expected = torch.where(present[:, None].bool(), x, baseline)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
    assert torch.equal(got.view(bits), expected.view(bits))


def test_shapley_default_blocks_are_cache_sized_and_change_nothing() -> None:
    """Without batch_size, the CPU gets blocks of at most 2048 inputs; the result is the same."""
    model = mlp([40, 16, 3], seed=1)
    x = randn(4, 40, seed=2)
    target = torch.tensor([0, 1, 2, 0])
    recorder = Recorder(model)
    blocked = shapley_sampling(recorder, x, None, target, n_permutations=30, seed=5)
    sizes = [len(z) for z in recorder.inputs[1:]]  # after v(empty) and v(N)
    assert sum(sizes) == 30 * 39 * 4 and max(sizes) <= 2048 and len(sizes) > 1
    whole = shapley_sampling(model, x, None, target, n_permutations=30, seed=5, batch_size=10**6)
    torch.testing.assert_close(blocked, whole, rtol=1e-12, atol=1e-12)


def test_shapley_sampling_with_one_player_and_non_contiguous_inputs() -> None:
    model = mlp([1, 8, 2], seed=3)
    x = randn(4, 1, seed=8)
    torch.testing.assert_close(  # one player: phi = f(x) - f(x')
        shapley_sampling(model, x, None, 1, n_permutations=3, seed=0),
        explained(model, x, 1)[:, None],
        rtol=1e-12,
        atol=1e-12,
    )
    model = mlp([6, 12, 3], seed=2)
    x = randn(6, 5, seed=9).T  # (5, 6), not contiguous
    target = torch.tensor([1, 0, 2, 2, 1])
    for call in (
        lambda z: shapley_sampling(model, z, 0.25, target, n_permutations=7, seed=11),
        lambda z: shapley_exact(model, z, 0.25, target, feature_mask=torch.arange(6) // 2),
    ):
        torch.testing.assert_close(call(x), call(x.contiguous()), rtol=0, atol=0)


def test_shapley_sampling_is_reproducible() -> None:
    model = mlp([5, 8, 1], seed=1)
    x = randn(3, 5)
    a = shapley_sampling(model, x, n_permutations=5, seed=7)
    b = shapley_sampling(model, x, n_permutations=5, seed=7)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    g1 = shapley_sampling(model, x, n_permutations=5, seed=torch.Generator().manual_seed(7))
    g2 = shapley_sampling(model, x, n_permutations=5, seed=torch.Generator().manual_seed(7))
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    c = shapley_sampling(model, x, n_permutations=5, seed=8)
    assert not torch.equal(a, c)


# ------------------------------------------------------------------------------------------------
# Probabilistic layers and DASP
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mu", "sigma"), [(0.0, 1.0), (1.0, 0.5), (-0.5, 2.0), (2.0, 1.0), (-1.0, 1.0)]
)
def test_relu_moments_match_monte_carlo(mu: float, sigma: float) -> None:
    z = mu + sigma * torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=F64)
    r = torch.relu(z)
    mean, var = ProbReLU()(torch.tensor([mu], dtype=F64), torch.tensor([sigma**2], dtype=F64))
    assert mean.item() == pytest.approx(r.mean().item(), rel=0.01)
    assert var.item() == pytest.approx(r.var().item(), rel=0.01)


def test_relu_moments_of_point_masses_and_extreme_ratios() -> None:
    mean = torch.tensor([1.5, -2.0, 0.0, 1e4, -1e4], dtype=torch.float32)
    var = torch.tensor([0.0, 0.0, 0.0, 1e-2, 1e-2], dtype=torch.float32)
    m, v = relu_moments(mean, var)
    torch.testing.assert_close(m, torch.tensor([1.5, 0.0, 0.0, 1e4, 0.0]))
    torch.testing.assert_close(v, torch.tensor([0.0, 0.0, 0.0, 1e-2, 0.0]))
    assert (v >= 0).all()


def test_prob_linear_moments_are_exact_for_independent_inputs() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(3, 2).to(F64)
    mean, std = randn(3, seed=1), randn(3, seed=2).abs()
    z = mean + std * torch.randn(
        1_000_000, 3, generator=torch.Generator().manual_seed(3), dtype=F64
    )
    with torch.no_grad():
        out = linear(z)
        m, v = ProbLinear(linear)(mean, std**2)
    torch.testing.assert_close(m, out.mean(0), rtol=0.01, atol=0.01)
    torch.testing.assert_close(v, out.var(0), rtol=0.01, atol=0)


def test_probabilistic_twin_of_a_deterministic_input_is_the_model() -> None:
    model = mlp([5, 7, 7, 2], seed=3)
    cnn = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 2, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8, 2),
    ).to(F64)
    for net, x in ((model, randn(4, 5)), (cnn, randn(4, 1, 4, 4))):
        mean, var = to_probabilistic(net)(x)
        with torch.no_grad():
            torch.testing.assert_close(mean, net(x))
        assert (var == 0).all()


def test_dasp_is_exact_for_affine_models() -> None:
    torch.manual_seed(0)
    x, baseline = randn(3, 7, seed=4), randn(7, seed=5)
    for model in (nn.Linear(7, 3), MLP([7, 3]), nn.Sequential(nn.Linear(7, 4), nn.Linear(4, 3))):
        model = model.to(F64)
        with torch.no_grad():
            weight = model(torch.eye(7, dtype=F64)) - model(torch.zeros(1, 7, dtype=F64))  # (7, 3)
        torch.testing.assert_close(
            dasp(model, x, target=2), weight[:, 2] * x, rtol=1e-12, atol=1e-12
        )
        torch.testing.assert_close(
            dasp(model, x, baseline, 1), weight[:, 1] * (x - baseline), rtol=1e-12, atol=1e-12
        )


def test_dasp_is_exact_for_two_players() -> None:
    """With n = 2 players both coalition sizes are deterministic: no approximation is left."""
    model = mlp([2, 16, 16, 3], seed=6)
    x = torch.tensor([[0.5, -0.5], [1.0, 2.0]], dtype=F64)
    torch.testing.assert_close(dasp(model, x, target=1), shapley_exact(model, x, target=1))
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 2, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8, 2),
    ).to(F64)
    images = randn(3, 1, 4, 4, seed=7)
    halves = torch.zeros(1, 4, 4, dtype=torch.long)
    halves[:, :, 2:] = 1
    torch.testing.assert_close(
        dasp(cnn, images, target=0, feature_mask=halves),
        shapley_exact(cnn, images, target=0, feature_mask=halves),
    )


@pytest.mark.parametrize(
    ("sizes", "tolerance"),
    [([12, 32, 1], 0.05), ([12, 64, 3], 0.05), ([12, 32, 32, 1], 0.10), ([12, 64, 64, 3], 0.10)],
)
def test_dasp_approximates_shapley_better_than_sampling_at_equal_cost(sizes, tolerance) -> None:
    n = sizes[0]
    model = mlp(sizes, seed=0)
    x = randn(16, n, seed=1)
    target = None if sizes[-1] == 1 else torch.arange(16) % sizes[-1]
    exact = shapley_exact(model, x, target=target)
    error = relative_error(dasp(model, x, target=target), exact)
    assert error <= tolerance
    # DASP: 2 n^2 probabilistic passes per sample, each counted as two forward passes (mean and
    # variance); sampling: 2 + n_permutations (n - 1) forward passes per sample.
    n_permutations = (4 * n * n - 2) // (n - 1)
    sampling = [
        relative_error(
            shapley_sampling(model, x, target=target, n_permutations=n_permutations, seed=s), exact
        )
        for s in range(3)
    ]
    assert error < sum(sampling) / len(sampling)


def test_dasp_supports_only_relu_networks() -> None:
    with pytest.raises(TypeError, match="Tanh"):
        dasp(mlp([3, 4, 1], activation="tanh"), randn(2, 3))
    with pytest.raises(TypeError, match="Sigmoid"):
        layers_of(nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Sigmoid())))


# ------------------------------------------------------------------------------------------------
# Devices, dtypes, side effects and bad input
# ------------------------------------------------------------------------------------------------

ALL_CALLS = {
    "saliency": lambda m, x, t: saliency(m, x, t),
    "gradient_x_input": lambda m, x, t: gradient_x_input(m, x, t),
    "integrated_gradients": lambda m, x, t: integrated_gradients(
        m, x, 0.5, t, steps=4, batch_size=3
    ),
    "shapley_exact": lambda m, x, t: shapley_exact(m, x, None, t, batch_size=5),
    "shapley_sampling": lambda m, x, t: shapley_sampling(m, x, None, t, n_permutations=2, seed=0),
    "dasp": lambda m, x, t: dasp(m, x, None, t, batch_size=5),
}


@pytest.mark.parametrize("name", list(ALL_CALLS))
def test_results_keep_device_dtype_and_shape(name: str) -> None:
    call = ALL_CALLS[name]
    target = torch.tensor([0, 2, 1])
    for dtype in (torch.float32, F64):
        model = mlp([5, 6, 3], seed=0).to(dtype)
        out = call(model, randn(3, 5).to(dtype), target)
        assert out.dtype == dtype and out.shape == (3, 5)
    meta = mlp([5, 6, 3]).to(
        device="meta", dtype=torch.float32
    )  # a tensor made on the default device would fail here
    out = call(meta, torch.empty(3, 5, device="meta"), target)
    assert out.device.type == "meta" and out.shape == (3, 5)


@pytest.mark.parametrize("name", list(ALL_CALLS))
def test_no_side_effects(name: str) -> None:
    model = mlp([5, 6, 3], seed=0).train()
    x = randn(3, 5)
    x_before = x.clone()
    ALL_CALLS[name](model, x, 1)
    assert torch.equal(x, x_before)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_images_with_feature_groups() -> None:
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    cnn = cnn.to(F64)
    images = randn(2, 1, 4, 4)
    blocks = (torch.arange(4)[:, None] // 2 * 2 + torch.arange(4)[None, :] // 2)[None]  # 2x2
    phi = shapley_exact(cnn, images, target=1, feature_mask=blocks)
    assert phi.shape == images.shape
    assert torch.equal(phi[:, :, 0, 0], phi[:, :, 1, 1])  # one value per block
    gap = explained(cnn, images, 1)
    torch.testing.assert_close(phi[:, 0, ::2, ::2].sum((1, 2)), gap)  # efficiency over groups
    approx = dasp(cnn, images, target=1, feature_mask=blocks)
    assert relative_error(approx, phi) < 0.1


BAD_CALLS = [
    ("x", lambda m: saliency(m, torch.randn(4), 0)),  # no batch dimension
    ("x", lambda m: shapley_exact(m, torch.randn(0, 4), None, 0)),
    ("target", lambda m: saliency(m, torch.randn(2, 4), 3)),
    ("target", lambda m: saliency(m, torch.randn(2, 4), -1)),
    ("target", lambda m: integrated_gradients(m, torch.randn(2, 4), None, torch.tensor([0, 5]))),
    ("target", lambda m: integrated_gradients(m, torch.randn(2, 4), None, torch.tensor([0, 1, 1]))),
    ("target", lambda m: saliency(m, torch.randn(2, 4))),  # 3 outputs need a target
    ("baseline", lambda m: integrated_gradients(m, torch.randn(2, 4), torch.zeros(3), 0)),
    ("baseline", lambda m: shapley_exact(m, torch.randn(2, 4), torch.zeros(3, 4), 0)),
    ("method", lambda m: integrated_gradients(m, torch.randn(2, 4), None, 0, method="simpson")),
    ("steps", lambda m: integrated_gradients(m, torch.randn(2, 4), None, 0, steps=0)),
    ("batch_size", lambda m: shapley_exact(m, torch.randn(2, 4), None, 0, batch_size=0)),
    (
        "feature_mask",
        lambda m: shapley_exact(
            m, torch.randn(2, 4), None, 0, feature_mask=torch.zeros(3, dtype=torch.long)
        ),
    ),
    (
        "feature_mask",
        lambda m: dasp(m, torch.randn(2, 4), None, 0, feature_mask=torch.tensor([0, 0, 2, 2])),
    ),
    (
        "n_permutations",
        lambda m: shapley_sampling(
            m, torch.randn(2, 4), None, 0, n_permutations=3, antithetic=True
        ),
    ),
    ("n_permutations", lambda m: shapley_sampling(m, torch.randn(2, 4), None, 0, n_permutations=0)),
]


@pytest.mark.parametrize(
    ("argument", "call"), BAD_CALLS, ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD_CALLS)]
)
def test_bad_input_raises_value_error_naming_the_argument(argument: str, call) -> None:
    torch.manual_seed(0)
    model = MLP([4, 5, 3])
    with pytest.raises(ValueError, match=argument):
        call(model)


def test_bad_types_raise_type_error() -> None:
    model = MLP([4, 5, 3])
    with pytest.raises(TypeError, match="x"):
        saliency(model, [[1.0, 2.0, 3.0, 4.0]], 0)
    with pytest.raises(TypeError, match="target"):
        saliency(model, torch.randn(2, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="seed"):
        shapley_sampling(model, torch.randn(2, 4), None, 0, seed=1.5)
    with pytest.raises(TypeError, match="feature_mask"):
        shapley_exact(model, torch.randn(2, 4), None, 0, feature_mask=torch.zeros(4))


def test_shapley_sampling_permutations_are_diverse_for_small_seeds():
    """Seed 0 used to give 10 identical permutations of 2 players (correlated first draws)."""
    from labcore.attribution import _generator, _permutations

    for seed in range(4):
        perms = _permutations(40, 2, _generator(seed), antithetic=False)
        first = (perms[:, 0] == 0).float().mean().item()
        assert 0.2 < first < 0.8, f"seed {seed}: player 0 first in {first:.0%} of permutations"


# ------------------------------------------------------------------------------------------------
# Exact integrated gradients of piecewise-linear networks
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[10, 32, 1], [16, 64, 64, 10], [12, 32, 32, 32, 3]])
def test_exact_ig_is_complete_to_round_off_where_quadrature_is_not(sizes) -> None:
    torch.manual_seed(1)
    model = MLP(sizes, activation="relu").to(F64).eval()
    x = torch.randn(128, sizes[0], dtype=F64)
    target = None if sizes[-1] == 1 else model(x).argmax(1)
    attributions, delta = integrated_gradients_exact(model, x, target=target, return_delta=True)
    assert attributions.shape == x.shape
    assert delta.abs().max() < 1e-12
    # fixed-node quadrature converges to it, at first order in the number of steps
    errors = []
    for steps in (16, 256, 4096):
        quad = integrated_gradients(model, x, target=target, steps=steps, method="riemann_middle")
        errors.append(((quad - attributions).norm() / attributions.norm()).item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3
    assert errors[0] / errors[2] > 30


def test_exact_ig_on_a_conv_net_with_a_baseline_and_any_batch_size() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Sequential(nn.Linear(3 * 4 * 4, 8), nn.ReLU()),
        nn.Linear(8, 4),
    ).to(F64)
    x = torch.randn(6, 1, 6, 6, dtype=F64)
    baseline = torch.full((1, 6, 6), 0.3, dtype=F64)
    full, delta = integrated_gradients_exact(model, x, baseline, target=2, return_delta=True)
    assert delta.abs().max() < 1e-12
    for batch_size in (1, 7, 1000):
        chunked = integrated_gradients_exact(model, x, baseline, target=2, batch_size=batch_size)
        torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-14)


def test_exact_ig_of_an_affine_model_is_weight_times_displacement() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 3)).to(F64)
    x = torch.randn(4, 5, dtype=F64)
    baseline = torch.randn(5, dtype=F64)
    attributions = integrated_gradients_exact(model, x, baseline, target=1)
    torch.testing.assert_close(attributions, (x - baseline) * model[0].weight[1])
    assert path_kinks(model, x, baseline).shape == (4, 2)  # no ReLU: just the two ends


def test_path_kinks_are_sorted_and_every_interior_one_switches_a_relu() -> None:
    torch.manual_seed(4)
    model = MLP([6, 16, 16, 2], activation="relu").to(F64).eval()
    x = torch.randn(20, 6, dtype=F64)
    alphas = path_kinks(model, x)
    assert (alphas[:, 0] == 0).all() and (alphas[:, -1] == 1).all()
    assert (alphas.diff(dim=1) >= 0).all()
    layers = layers_of(model)
    for b in range(3):  # a few samples, one kink at a time (test code: loops are fine)
        interior = alphas[b][(alphas[b] > 0) & (alphas[b] < 1)].unique()
        assert len(interior) > 0
        for alpha in interior:
            h, smallest = alpha * x[b : b + 1], math.inf
            for layer in layers:
                if isinstance(layer, nn.ReLU):
                    smallest = min(smallest, h.abs().min().item())
                h = layer(h)
            assert smallest < 1e-9  # some ReLU input is exactly at zero there


def test_exact_ig_rejects_smooth_networks() -> None:
    model = MLP([4, 8, 2], activation="tanh")
    with pytest.raises(TypeError, match="Tanh"):
        integrated_gradients_exact(model, torch.randn(3, 4), target=0)
