"""Tests of labcore.learning_dynamics: deep linear networks, the NTK, lazy vs rich, grokking."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import labcore
from labcore import learning_dynamics as ld

F64 = torch.float64


def _orthonormal(n: int, r: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    return q[:, :r]


# ---------------------------------------------------------------- deep linear networks


@pytest.mark.parametrize("depth", [2, 3])
def test_saxe_mode_strength_matches_simulated_aligned_network(depth: int) -> None:
    """Gradient descent from the aligned balanced init follows the analytic curve to 1% of s."""
    u, v = _orthonormal(5, 3, 0), _orthonormal(6, 3, 1)
    s = torch.tensor([4.0, 2.5, 1.5], dtype=F64)
    a0 = torch.full((3,), 1e-3, dtype=F64)
    weights = ld.aligned_balanced_init(u, v, a0, depth, hidden=4)
    times, maps = ld.deep_linear_descent(
        u * s @ v.mT, weights, lr=1e-3, steps=8000, record_every=50
    )
    simulated = ld.mode_strengths(maps, u, v)
    analytic = torch.stack([ld.saxe_mode_strength(times, si, 1e-3, depth) for si in s], dim=1)
    assert ((simulated - analytic).abs() / s).max() < 0.01
    # the strong modes are learned first: each mode is half-learned before the next one
    half = [int((simulated[:, i] >= s[i] / 2).nonzero()[0]) for i in range(3)]
    assert half == sorted(half) and len(set(half)) == 3


def test_aligned_balanced_init_product_and_balance() -> None:
    u, v = _orthonormal(4, 2, 2), _orthonormal(3, 2, 3)
    a0 = torch.tensor([0.5, 0.1], dtype=F64)
    weights = ld.aligned_balanced_init(u, v, a0, depth=3, hidden=5)
    assert [tuple(w.shape) for w in weights] == [(5, 3), (5, 5), (4, 5)]
    torch.testing.assert_close(ld.network_map(weights), u * a0 @ v.mT)
    # balanced: W_{l+1}^T W_{l+1} = W_l W_l^T, the invariant that gradient flow preserves
    for lower, upper in zip(weights[:-1], weights[1:], strict=True):
        torch.testing.assert_close(upper.mT @ upper, lower @ lower.mT)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_saxe_mode_strength_solves_its_ode(depth: int) -> None:
    """du/dt = D u^(2-2/D) (s - u), checked by central differences, and u(0) = a0."""
    s, a0, eps = 2.0, 0.01, 1e-4
    t = torch.linspace(0.2, 6.0, 30, dtype=F64)
    u = ld.saxe_mode_strength(t, s, a0, depth)
    du = (
        ld.saxe_mode_strength(t + eps, s, a0, depth) - ld.saxe_mode_strength(t - eps, s, a0, depth)
    ) / (2 * eps)
    torch.testing.assert_close(du, depth * u ** (2 - 2 / depth) * (s - u), rtol=1e-5, atol=1e-8)
    assert float(ld.saxe_mode_strength(torch.zeros(1, dtype=F64), s, a0, depth)) == pytest.approx(
        a0
    )
    assert 0 < float(u.min()) and float(u.max()) <= s and bool((u.diff() >= 0).all())


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_saxe_learning_time_is_the_half_time(depth: int) -> None:
    s = torch.tensor([0.5, 2.0, 4.0], dtype=F64)
    half = ld.saxe_learning_time(s, 1e-3, depth)
    u = torch.stack(
        [
            ld.saxe_mode_strength(h.reshape(1), si, 1e-3, depth)[0]
            for h, si in zip(half, s, strict=True)
        ]
    )
    torch.testing.assert_close(u, s / 2, rtol=1e-6, atol=0)


def test_saxe_learning_time_scalings() -> None:
    """Depth 2: (1/2s) log(s/a0 - 1), so ~(1/2s) log(s/a0); depth D > 2: a power of 1/a0."""
    s = 2.0
    for a0 in (1e-2, 1e-4, 1e-6):
        assert float(ld.saxe_learning_time(s, a0, 2)) == pytest.approx(
            math.log(s / a0 - 1) / (2 * s)
        )
    for depth in (3, 4):
        q = 1 - 2 / depth
        small = 1e-8
        asymptote = (s / small) ** q / ((depth - 2) * s ** (2 - 2 / depth))
        assert float(ld.saxe_learning_time(s, small, depth)) == pytest.approx(asymptote, rel=0.02)


def test_deep_linear_descent_loss_is_the_data_loss() -> None:
    """With whitened inputs, 1/(2P) sum ||y - W x||^2 = 1/2 ||Sigma_yx - W||^2 + const."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(200, 4, generator=g, dtype=F64)
    x = x - x.mean(0)
    evals, evecs = torch.linalg.eigh(x.mT @ x / 200)
    x = x @ evecs @ torch.diag(evals.rsqrt()) @ evecs.mT  # whitened: x^T x / P = I
    torch.testing.assert_close(x.mT @ x / 200, torch.eye(4, dtype=F64))
    y = x @ torch.randn(4, 3, generator=g, dtype=F64) + 0.1 * torch.randn(
        200, 3, generator=g, dtype=F64
    )
    sigma = ld.input_output_correlation(x, y)
    w1, w2 = (torch.randn(3, 4, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64))
    data_gap = ((y - x @ w1.mT).square().sum() - (y - x @ w2.mT).square().sum()) / 400
    corr_gap = ((sigma - w1).square().sum() - (sigma - w2).square().sum()) / 2
    torch.testing.assert_close(data_gap, corr_gap)


def test_deep_linear_descent_leaves_weights_alone() -> None:
    weights = ld.random_init(3, 4, 2, 3, 0.1, generator=torch.Generator().manual_seed(0))
    before = [w.clone() for w in weights]
    times, maps = ld.deep_linear_descent(
        torch.ones(2, 3, dtype=F64), weights, lr=0.1, steps=20, record_every=5
    )
    assert times.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert maps.shape == (5, 2, 3)
    assert all(torch.equal(a, b) for a, b in zip(before, weights, strict=True))


# ---------------------------------------------------------------- the neural tangent kernel


def _mlp(outputs: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, outputs)
    ).to(F64)


def _per_sample_kernel(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """The NTK by a loop of per-sample autograd calls: the reference."""
    params = [p for p in model.parameters() if p.requires_grad]

    def jac(x: torch.Tensor) -> torch.Tensor:
        rows = []
        for xi in x:
            out = model(xi.unsqueeze(0)).reshape(-1)
            rows.append(
                torch.stack(
                    [
                        torch.cat(
                            [g.flatten() for g in torch.autograd.grad(o, params, retain_graph=True)]
                        )
                        for o in out
                    ]
                )
            )
        return torch.stack(rows)  # (n, k, P)

    j1, j2 = jac(x1), jac(x2)
    return torch.einsum("akp,blp->abkl", j1, j2)


@pytest.mark.parametrize("outputs", [1, 3])
def test_empirical_ntk_equals_per_sample_autograd(outputs: int) -> None:
    model = _mlp(outputs)
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(7, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    expected = _per_sample_kernel(model, x1, x2)
    got = ld.empirical_ntk(model, x1, x2, batch_size=3)
    if outputs == 1:
        expected = expected[:, :, 0, 0]
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-6 * expected.abs().max()
    # x2=None is the kernel of x1 with itself, symmetric
    own = ld.empirical_ntk(model, x1)
    torch.testing.assert_close(own, ld.empirical_ntk(model, x1, x1.clone()))
    torch.testing.assert_close(
        own, own.transpose(0, 1) if outputs == 1 else own.permute(1, 0, 3, 2)
    )


def test_empirical_ntk_leaves_model_and_gradients_alone() -> None:
    model = _mlp(1)
    model[0].weight.requires_grad_(False)  # frozen parameters are not part of the kernel
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    model(x).sum().backward()
    before = {
        n: (p.detach().clone(), p.grad.clone() if p.grad is not None else None)
        for n, p in model.named_parameters()
    }
    model.eval()
    kernel = ld.empirical_ntk(model, x)
    assert not model.training
    for name, p in model.named_parameters():
        value, grad = before[name]
        assert torch.equal(p.detach(), value)
        assert (p.grad is None and grad is None) or torch.equal(p.grad, grad)
    torch.testing.assert_close(kernel, _per_sample_kernel(model, x, x)[:, :, 0, 0])


def test_empirical_ntk_converges_to_the_arc_cosine_ntk() -> None:
    """At width 20000 the empirical kernel is within 5% of the infinite-width one."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, generator=g, dtype=F64)
    model = ld.TwoLayerReLU(3, 20_000, generator=g, dtype=F64)
    analytic = ld.relu_ntk(x)
    assert (ld.empirical_ntk(model, x) - analytic).norm() / analytic.norm() < 0.05


def test_relu_ntk_terms_by_monte_carlo() -> None:
    """The two arc-cosine expectations, estimated with 400k Gaussian weights."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 2, generator=g, dtype=F64)
    z = torch.cat([x / math.sqrt(2), torch.ones(4, 1, dtype=F64)], dim=1)
    w = torch.randn(400_000, 3, generator=g, dtype=F64)
    pre = z @ w.mT  # (4, N)
    readout = torch.relu(pre) @ torch.relu(pre).mT / w.shape[0]
    hidden = (z @ z.mT) * ((pre > 0).to(F64) @ (pre > 0).to(F64).mT) / w.shape[0]
    torch.testing.assert_close(ld.relu_ntk(x), readout + hidden, rtol=0.02, atol=0.01)


def test_kernel_predictor_matches_the_trained_wide_network() -> None:
    """Gradient descent on a wide TwoLayerReLU = kernel gradient descent with its initial NTK."""
    x = torch.linspace(-2, 2, 12, dtype=F64).reshape(-1, 1)
    y = torch.sin(2 * x[:, 0])
    x_test = torch.linspace(-2.5, 2.5, 40, dtype=F64).reshape(-1, 1)
    model = ld.TwoLayerReLU(1, 8192, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        f0, f0_test = model(x), model(x_test)
    k, k_test = ld.empirical_ntk(model, x), ld.empirical_ntk(model, x_test, x)
    lr, steps = 0.5 / float(torch.linalg.eigvalsh(k).max()), 600
    params = list(model.parameters())
    with labcore.one_thread():
        for _ in range(steps):
            grads = torch.autograd.grad(0.5 * (model(x) - y).square().sum(), params)
            with torch.no_grad():
                for p, grad in zip(params, grads, strict=True):
                    p -= lr * grad
    with torch.no_grad():
        trained = model(x_test)
    predicted = ld.kernel_gd_predict(k, k_test, y, f0, f0_test, lr * steps)
    assert (trained - predicted).norm() / (predicted - f0_test).norm() < 0.03
    assert float(ld.kernel_change(k, ld.empirical_ntk(model, x))) < 0.03


def test_kernel_gd_predict_closed_forms() -> None:
    g = torch.Generator().manual_seed(6)
    a = torch.randn(6, 6, generator=g, dtype=F64)
    k = a @ a.mT + 0.1 * torch.eye(6, dtype=F64)
    y, f0 = torch.randn(6, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64)
    t = 0.7
    # training set: y - e^{-K t}(y - f0)
    torch.testing.assert_close(
        ld.kernel_gd_predict(k, k, y, f0, f0, t), y - torch.linalg.matrix_exp(-k * t) @ (y - f0)
    )
    torch.testing.assert_close(ld.kernel_gd_predict(k, k, y, f0, f0, 0.0), f0)
    # t = inf on new points: kernel regression f0* + K*X K^{-1} (y - f0)
    k_star = torch.randn(3, 6, generator=g, dtype=F64)
    f0_star = torch.randn(3, generator=g, dtype=F64)
    torch.testing.assert_close(
        ld.kernel_gd_predict(k, k_star, y, f0, f0_star, math.inf),
        f0_star + k_star @ torch.linalg.solve(k, y - f0),
    )
    many = ld.kernel_gd_predict(k, k_star, y, f0, f0_star, torch.tensor([0.0, t, 2 * t], dtype=F64))
    assert many.shape == (3, 3)
    torch.testing.assert_close(many[1], ld.kernel_gd_predict(k, k_star, y, f0, f0_star, t))
    # a singular kernel: the null-space component of the residual grows like t (gain -> t)
    singular = torch.diag(torch.tensor([2.0, 0.0], dtype=F64))
    got = ld.kernel_gd_predict(
        singular,
        singular,
        torch.ones(2, dtype=F64),
        torch.zeros(2, dtype=F64),
        torch.zeros(2, dtype=F64),
        1.0,
    )
    torch.testing.assert_close(got, torch.tensor([1 - math.exp(-2.0), 0.0], dtype=F64))


def test_kernel_alignment_and_change() -> None:
    y = torch.tensor([1.0, -1.0, 2.0], dtype=F64)
    assert float(ld.kernel_alignment(5 * torch.outer(y, y), y)) == pytest.approx(1.0)
    eye = torch.eye(3, dtype=F64)
    assert float(ld.kernel_alignment(eye, y)) == pytest.approx(
        float(y.square().sum() / (math.sqrt(3) * y.square().sum()))
    )
    assert float(ld.kernel_change(eye, eye)) == 0.0
    assert float(ld.kernel_change(eye, 2 * eye)) == pytest.approx(1.0)


def test_lazy_rich_kernel_moves_less_as_alpha_grows() -> None:
    x = torch.linspace(-2, 2, 10, dtype=F64).reshape(-1, 1)
    y = torch.sin(2 * x[:, 0])
    changes, weights = [], []
    for alpha in (0.3, 3.0, 30.0):
        model = ld.TwoLayerReLU(1, 128, generator=torch.Generator().manual_seed(1), dtype=F64)
        lr = 0.5 / float(torch.linalg.eigvalsh(ld.empirical_ntk(model, x)).max())
        history = ld.train_lazy_rich(
            model, x, y, alpha=alpha, lr=lr, steps=400, record_every=200, progress=False
        )
        assert history["step"] == [0, 200, 400]
        assert history["loss"][-1] < 0.05 * history["loss"][0]  # every alpha fits the data
        changes.append(history["kernel_change"][-1])
        weights.append(history["weight_change"][-1])
    assert changes[0] > 3 * changes[1] > 9 * changes[2] > 0
    # the parameters move O(1/alpha) once alpha is large
    assert weights[1] / weights[2] == pytest.approx(10, rel=0.2)


# ---------------------------------------------------------------- grokking


def test_modular_addition_data() -> None:
    state = torch.random.get_rng_state()
    split = ld.modular_addition_data(7, 0.4, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert split.pairs.shape == (49, 2) and split.pairs.dtype == torch.int64
    assert torch.equal(split.labels, (split.pairs[:, 0] + split.pairs[:, 1]) % 7)
    assert len(split.train) == round(0.4 * 49)
    assert sorted(torch.cat([split.train, split.test]).tolist()) == list(range(49))
    assert torch.equal(split.train, ld.modular_addition_data(7, 0.4, seed=3).train)
    assert not torch.equal(split.train, ld.modular_addition_data(7, 0.4, seed=4).train)


def test_fourier_power_and_concentration() -> None:
    p = 11
    a = torch.arange(p, dtype=F64)
    waves = torch.stack(
        [torch.cos(2 * math.pi * 3 * a / p + 0.4), 2 * torch.sin(2 * math.pi * 5 * a / p)], dim=1
    )
    power = ld.fourier_power(waves)
    assert power.shape == (p // 2 + 1, 2)
    assert int(power[:, 0].argmax()) == 3 and int(power[:, 1].argmax()) == 5
    # Parseval: sum_k P_k = p * sum_a e(a)^2
    torch.testing.assert_close(power.sum(0), p * waves.square().sum(0))
    assert float(ld.fourier_concentration(waves)) == pytest.approx(1.0)
    noise = torch.randn(p, 500, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert float(ld.fourier_concentration(noise)) < 0.5


def test_grokking_delayed_generalisation() -> None:
    """The default run fits the training pairs long before it generalises, and then does."""
    model, history = ld.train_modular_addition(progress=False)
    p = history["p"]
    split = ld.modular_addition_data(p, history["train_frac"], seed=0)
    with torch.no_grad():
        correct = model(split.pairs).argmax(1) == split.labels
    train = torch.zeros(p * p, dtype=torch.bool)
    train[history["train"]] = True
    assert float(correct[train].double().mean()) == 1.0
    assert float(correct[~train].double().mean()) >= 0.95  # from the returned model, all p^2 pairs
    fitted = next(
        s for s, acc in zip(history["step"], history["train_acc"], strict=True) if acc == 1.0
    )
    general = next(
        s for s, acc in zip(history["step"], history["test_acc"], strict=True) if acc >= 0.95
    )
    test_when_fitted = history["test_acc"][history["step"].index(fitted)]
    assert test_when_fitted < 0.1 and general >= max(fitted + 500, 4 * fitted)
    # the hidden units become single sinusoids of Z_p, and that measure moves first
    assert history["fourier_concentration"][-1] > 0.6 > 0.2 > history["fourier_concentration"][0]


def test_no_weight_decay_no_generalisation() -> None:
    _, history = ld.train_modular_addition(
        weight_decay=0.0, steps=1500, log_every=500, progress=False
    )
    assert history["train_acc"][-1] == 1.0 and history["test_acc"][-1] < 0.05


def test_shipped_grokking_sweep() -> None:
    sweep = ld.load_grokking_sweep()
    assert {k: sweep[k] for k in ld.GROKKING_SWEEP} == ld.GROKKING_SWEEP
    assert len(sweep["cells"]) == len(sweep["train_fracs"]) * len(sweep["weight_decays"])
    cell = next(c for c in sweep["cells"] if c["train_frac"] == 0.5 and c["weight_decay"] == 1.0)
    assert cell["final_test_acc"] >= 0.95
    assert all(c["final_test_acc"] < 0.5 for c in sweep["cells"] if c["weight_decay"] == 0.0)


# ---------------------------------------------------------------- bad input and devices


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ld.saxe_mode_strength(torch.ones(2), 1.0, 2.0), "0 < a0 < s"),
        (lambda: ld.saxe_mode_strength(torch.ones(2), -1.0, 0.1), "s"),
        (lambda: ld.saxe_mode_strength(-torch.ones(2), 1.0, 0.1), "t must be >= 0"),
        (lambda: ld.saxe_mode_strength(torch.ones(2), 1.0, 0.1, depth=0), "depth"),
        (lambda: ld.saxe_learning_time(1.0, 0.1, n_points=10), "odd"),
        (
            lambda: ld.input_output_correlation(torch.ones(3, 2), torch.ones(4, 2)),
            "same number of rows",
        ),
        (
            lambda: ld.aligned_balanced_init(
                torch.ones(3, 2), torch.ones(4, 2), torch.ones(2), 3, 1
            ),
            "hidden",
        ),
        (lambda: ld.network_map([torch.ones(3, 2), torch.ones(4, 4)]), "do not chain"),
        (
            lambda: ld.empirical_ntk(
                _mlp(1), torch.ones(2, 3, dtype=F64), torch.ones(2, 4, dtype=F64)
            ),
            "x2",
        ),
        (
            lambda: ld.kernel_gd_predict(
                torch.ones(3, 4), torch.ones(2, 4), torch.ones(3), torch.ones(3), torch.ones(2), 1.0
            ),
            "square",
        ),
        (lambda: ld.kernel_alignment(torch.ones(3, 3), torch.ones(4)), "n = len"),
        (lambda: ld.modular_addition_data(7, 1.5), "train_frac"),
        (
            lambda: ld.train_lazy_rich(
                _mlp(1),
                torch.ones(3, 3, dtype=F64),
                torch.ones(3, dtype=F64),
                alpha=0.0,
                lr=0.1,
                steps=1,
            ),
            "alpha",
        ),
    ],
)
def test_bad_input_raises_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_public_functions_run_on_meta_tensors() -> None:
    meta = torch.device("meta")
    t = torch.empty(5, device=meta)
    for depth in (1, 2, 3):
        assert ld.saxe_mode_strength(t, 2.0, 0.01, depth).device == meta
    x = torch.empty(4, 3, device=meta)
    assert ld.relu_ntk(x).device == meta
    assert ld.empirical_ntk(ld.TwoLayerReLU(3, 8, device=meta), x).shape == (4, 4)
    k = torch.empty(4, 4, device=meta)
    vec = torch.empty(4, device=meta)
    assert (
        ld.kernel_gd_predict(
            k, torch.empty(2, 4, device=meta), vec, vec, torch.empty(2, device=meta), 1.0
        ).device
        == meta
    )
    assert ld.kernel_alignment(k, vec).device == meta
    assert ld.fourier_concentration(torch.empty(7, 5, device=meta)).device == meta
    pairs = torch.zeros(3, 2, dtype=torch.long, device=meta)
    assert ld.ModularMLP(7, 5, device=meta)(pairs).shape == (3, 7)
    weights = ld.aligned_balanced_init(
        torch.empty(3, 2, device=meta),
        torch.empty(4, 2, device=meta),
        torch.empty(2, device=meta),
        3,
        5,
    )
    assert {w.device for w in weights} == {meta}
    assert (
        ld.mode_strengths(
            ld.network_map(weights), torch.empty(3, 2, device=meta), torch.empty(4, 2, device=meta)
        ).device
        == meta
    )
