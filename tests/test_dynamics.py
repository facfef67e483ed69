"""Tests of labcore.dynamics: tangent velocities, the worked example, integrators, clustering."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labcore import dynamics
from labcore.dynamics import (
    attention_velocity,
    count_clusters,
    from_angles,
    project_tangent,
    random_sphere,
    residual_network,
    residual_ode_flow,
    simulate,
    time_grid,
    to_angles,
    transformer_velocity,
)

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one intra-op thread avoids OpenMP synchronisation costs, which on a
    busy shared machine make each small op up to 100x slower. Restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_heads(n_heads: int | None, d: int, d_head: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lead = () if n_heads is None else (n_heads,)
    Q = torch.randn(*lead, d_head, d, generator=g, dtype=F64)
    K = torch.randn(*lead, d_head, d, generator=g, dtype=F64)
    V = torch.randn(*lead, d, d, generator=g, dtype=F64)
    return Q, K, V


def loop_velocity(x, beta, Q, K, V):
    """Reference: one particle and one head at a time, straight from the formula."""
    if Q is None or Q.ndim == 2:
        heads = [(Q, K, V)]
    else:
        heads = list(zip(Q, K, V, strict=True))
    out = torch.zeros_like(x)
    for i in range(x.shape[-2]):
        xi = x[..., i, :]
        for Qh, Kh, Vh in heads:
            q = xi if Qh is None else xi @ Qh.T
            k = x if Kh is None else x @ Kh.T
            v = x if Vh is None else x @ Vh.T
            w = torch.softmax(beta * (k @ q.unsqueeze(-1)).squeeze(-1), dim=-1)
            y = (w.unsqueeze(-1) * v).sum(-2)
            out[..., i, :] += y
    return out - (out * x).sum(-1, keepdim=True) * x


# --------------------------------------------------------------------------------------------------
# Velocity fields
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_heads", [None, 3])
@pytest.mark.parametrize("beta", [0.0, 1.0, 5.0])
def test_attention_velocity_is_tangent_and_matches_the_loop(n_heads, beta):
    x = random_sphere(9, 4, (2, 3), seed=1, dtype=F64)  # (batch=2x3, n_particles, d)
    Q, K, V = random_heads(n_heads, d=4, d_head=2)
    v = attention_velocity(x, beta, Q, K, V)
    assert v.shape == x.shape and v.dtype == F64
    assert (x * v).sum(-1).abs().max() < 1e-6
    torch.testing.assert_close(v, loop_velocity(x, beta, Q, K, V), rtol=1e-10, atol=1e-12)
    # chunking the queries changes nothing
    torch.testing.assert_close(attention_velocity(x, beta, Q, K, V, chunk_size=2), v)


def test_identity_matrices_equal_none():
    x = random_sphere(6, 3, (2,), seed=2, dtype=F64)
    eye = torch.eye(3, dtype=F64)
    torch.testing.assert_close(
        attention_velocity(x, 2.0), attention_velocity(x, 2.0, eye, eye, eye)
    )
    # multi-head with identity heads = n_heads times the single head
    eyes = eye.expand(4, 3, 3)
    torch.testing.assert_close(
        attention_velocity(x, 2.0, eyes, eyes, eyes), 4 * attention_velocity(x, 2.0)
    )


def test_transformer_velocity_is_tangent_and_adds_the_mlp():
    x = random_sphere(7, 5, (3,), seed=3, dtype=F64)
    Q, K, V = random_heads(2, d=5, d_head=3)
    g = torch.Generator().manual_seed(4)
    A = torch.randn(11, 5, generator=g, dtype=F64)
    b = torch.randn(11, generator=g, dtype=F64)
    W = torch.randn(5, 11, generator=g, dtype=F64)
    v = transformer_velocity(x, 1.5, Q, K, V, W=W, A=A, b=b, activation=torch.relu)
    assert (x * v).sum(-1).abs().max() < 1e-6
    mlp = project_tangent(x, torch.relu(x @ A.T + b) @ W.T)
    torch.testing.assert_close(v, attention_velocity(x, 1.5, Q, K, V) + mlp)
    torch.testing.assert_close(
        transformer_velocity(x, 1.5, Q, K, V), attention_velocity(x, 1.5, Q, K, V)
    )


def test_project_tangent():
    x = random_sphere(5, 3, (2,), seed=5, dtype=F64)
    v = torch.randn(2, 5, 3, dtype=F64)
    p = project_tangent(x, v)
    assert (p * x).sum(-1).abs().max() < 1e-12
    torch.testing.assert_close(project_tangent(x, p), p)  # a projection: idempotent


def test_worked_two_particle_example():
    # x1 = (1, 0), x2 = (0, 1), Q = K = V = I, beta = 1. Softmax weights for particle 1:
    # (e, 1) / (1 + e), so y1 = (e, 1) / (1 + e) and <x1, y1> = e / (1 + e). The projection
    # subtracts <x1, y1> x1 (along x1!):
    #     dx1/dt = y1 - <x1, y1> x1 = (0, 1 / (1 + e)),   dx2/dt = (1 / (1 + e), 0).
    # The seed presentation subtracted <x1, y1> y1 instead of <x1, y1> x1, i.e. computed
    # (1 - <x1, y1>) y1 = (e, 1) / (1 + e)^2 -- a vector parallel to y1, not tangent to the
    # circle at x1 (its inner product with x1 is e / (1 + e)^2 != 0). Correctly, each particle
    # moves along the circle towards the other with speed 1 / (1 + e) = sigmoid(-1) ~ 0.2689.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    v = attention_velocity(x, beta=1.0)
    s = 1 / (1 + math.e)
    torch.testing.assert_close(v, torch.tensor([[0.0, s], [s, 0.0]], dtype=F64))
    wrong = torch.tensor([math.e, 1.0], dtype=F64) / (1 + math.e) ** 2  # the presentation's dx1/dt
    assert abs(float(wrong @ x[0]) - math.e / (1 + math.e) ** 2) < 1e-15  # not tangent
    assert float(v[0] @ x[0]) == 0.0

    # the same pair at angle phi and inverse temperature beta: each moves towards the other with
    # speed e^{beta cos phi} sin phi / (e^beta + e^{beta cos phi})
    for beta, phi in [(2.0, 1.0), (0.5, 2.5)]:
        x = from_angles(torch.tensor([0.0, phi], dtype=F64))
        v = attention_velocity(x, beta)
        speed = (
            math.exp(beta * math.cos(phi))
            * math.sin(phi)
            / (math.exp(beta) + math.exp(beta * math.cos(phi)))
        )
        torch.testing.assert_close(v[0], speed * torch.tensor([0.0, 1.0], dtype=F64))
        e_theta2 = torch.tensor([-math.sin(phi), math.cos(phi)], dtype=F64)
        torch.testing.assert_close(v[1], -speed * e_theta2)


def test_autograd_through_the_in_place_softmax():
    x = random_sphere(4, 3, seed=6, dtype=F64).requires_grad_()
    Q, K, V = (m.requires_grad_() for m in random_heads(2, d=3, d_head=2))
    assert torch.autograd.gradcheck(
        lambda x, Q, K, V: attention_velocity(x, 1.3, Q, K, V), (x, Q, K, V)
    )


# --------------------------------------------------------------------------------------------------
# The fast path of large problems (shift bound in the matmul, exp2, symmetric scores)
# --------------------------------------------------------------------------------------------------
def _exact(x, beta, Q=None, K=None, V=None, chunk_size=None):
    n_heads = None if all(m is None or m.ndim == 2 for m in (Q, K, V)) else 2
    field = dynamics._attention_field_exact(x, beta, Q, K, V, n_heads, chunk_size)
    return project_tangent(x, field)


def _fast(x, beta, Q=None, K=None, V=None, chunk_size=None):
    n_heads = None if all(m is None or m.ndim == 2 for m in (Q, K, V)) else 2
    field = dynamics._attention_field_fast(x, beta, Q, K, V, n_heads, chunk_size)
    assert field is not None
    return project_tangent(x, field)


@pytest.mark.parametrize("matrices", ["identity", "Q is K", "random", "identity QK, V per head"])
@pytest.mark.parametrize("beta", [0.0, 1.0, 9.0, -2.0])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_fast_path_equals_the_exact_path(matrices, beta, chunk_size):
    # off the sphere too (norms 0.8 .. 1.2): the bounds must hold for any x
    x = random_sphere(23, 3, (2, 2), seed=12, dtype=F64)
    x = x * torch.linspace(0.8, 1.2, 23, dtype=F64)[:, None]
    Q, K, V = random_heads(2, d=3, d_head=2, seed=13)
    args = {
        "identity": (None, None, None),
        "Q is K": (Q, Q, V),
        "random": (Q, K, V),
        "identity QK, V per head": (None, None, V),
    }[matrices]
    exact = _exact(x, beta, *args)
    fast = _fast(x, beta, *args, chunk_size=chunk_size)
    torch.testing.assert_close(fast, exact, rtol=0, atol=1e-13 * exact.abs().max().item())
    if matrices == "identity QK, V per head":  # the loop wants per-head Q and K: sum the heads
        loop = sum(loop_velocity(x, beta, None, None, Vh) for Vh in V)
    else:
        loop = loop_velocity(x, beta, *args)
    torch.testing.assert_close(fast, loop, rtol=0, atol=1e-13 * exact.abs().max().item())


def test_large_problems_take_the_fast_path_and_match_the_formula(monkeypatch):
    calls = []
    fast = dynamics._attention_field_fast
    monkeypatch.setattr(dynamics, "_attention_field_fast", lambda *a: calls.append(1) or fast(*a))
    small = random_sphere(64, 3, seed=14, dtype=F64)
    attention_velocity(small, 4.0)
    assert calls == []  # small problems: the exact path, unchanged results
    x = random_sphere(400, 3, seed=15, dtype=F64)  # 400^2 scores > _FAST_MIN_ENTRIES
    for beta in (4.0, -1.0):
        v = attention_velocity(x, beta)
        torch.testing.assert_close(v, loop_velocity(x, beta, None, None, None), rtol=0, atol=1e-13)
    assert len(calls) == 2
    # float32: as accurate as the exact path
    v32 = attention_velocity(x.float(), 4.0)
    exact32 = project_tangent(
        x.float(), dynamics._attention_field_exact(x.float(), 4.0, None, None, None, None, None)
    )
    truth = attention_velocity(x, 4.0)
    assert (v32.double() - truth).abs().max() < 3 * (exact32.double() - truth).abs().max() + 1e-7
    # with autograd: the exact path, and the same values
    xg = x.clone().requires_grad_()
    vg = attention_velocity(xg, 4.0)
    vg.sum().backward()
    assert len(calls) == 4  # the 4 evaluations above, none for the autograd one
    torch.testing.assert_close(vg.detach(), attention_velocity(x, 4.0), rtol=0, atol=1e-13)
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_fast_path_falls_back_where_its_shift_bound_could_underflow(dtype):
    # Q x_i far from every K x_j with a huge beta: the bound |beta| |Q x_i| max |K x_j| exceeds the
    # largest score by hundreds, every 2^(s - m) underflows, and the exact path must take over
    x = random_sphere(20, 3, seed=16, dtype=dtype)
    Q, K, _ = (m.to(dtype) for m in random_heads(None, d=3, d_head=2, seed=17))
    assert dynamics._attention_field_fast(x, 2000.0, 3 * Q, 3 * K, None, None, None) is None
    v = attention_velocity(x, 2000.0, 3 * Q, 3 * K)
    assert torch.isfinite(v).all()
    torch.testing.assert_close(v, _exact(x, 2000.0, 3 * Q, 3 * K))
    # identity matrices, particles of very different norms: the same
    y = x * torch.logspace(-1, 1, 20, dtype=dtype)[:, None]
    assert dynamics._attention_field_fast(y, 50.0, None, None, None, None, None) is None
    torch.testing.assert_close(attention_velocity(y, 50.0), _exact(y, 50.0))


def test_fast_path_reuses_its_buffer_safely():
    # alternate sizes, dtypes and batch shapes: the shared scratch block must never leak results
    cases = [
        random_sphere(n, 3, batch, seed=n, dtype=dtype)
        for n, batch, dtype in [
            (500, (), F64),
            (380, (2,), F64),
            (450, (), torch.float32),
            (500, (), F64),
        ]
    ]
    first = [_fast(x, 3.0) for x in cases]
    again = [_fast(x, 3.0) for x in reversed(cases)][::-1]
    for a, b, x in zip(first, again, cases, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, _exact(x, 3.0))


def test_fast_path_runs_on_meta_tensors():
    x = torch.empty(2, 400, 3, device="meta")
    assert attention_velocity(x, 2.0).shape == (2, 400, 3)
    V = torch.empty(3, 3, 3, device="meta")
    assert attention_velocity(x, 2.0, None, None, V).device.type == "meta"


def test_meta_device_runs():
    x = torch.empty(2, 5, 3, device="meta")
    Q = torch.empty(4, 2, 3, device="meta")
    V = torch.empty(4, 3, 3, device="meta")
    assert attention_velocity(x, 1.0, Q, Q, V).device.type == "meta"
    assert attention_velocity(x).shape == (2, 5, 3)
    mlp = dict(
        W=torch.empty(3, 7, device="meta"),
        A=torch.empty(7, 3, device="meta"),
        b=torch.empty(7, device="meta"),
    )
    assert transformer_velocity(x, 1.0, Q, Q, V, **mlp).device.type == "meta"
    traj = simulate(x, 1.0, 0.25, lambda y: attention_velocity(y, 2.0), progress=False)
    assert traj.shape == (5, 2, 5, 3) and traj.device.type == "meta"


def test_dtype_follows_the_input():
    x = random_sphere(5, 3, seed=7, dtype=torch.float32)
    assert attention_velocity(x).dtype == torch.float32
    assert simulate(x, 0.5, 0.1, attention_velocity, progress=False).dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(x=torch.zeros(3)), "x must have at least 2 dimensions"),
        (dict(Q=torch.zeros(2, 4)), r"Q must have shape \(d_head, d\)"),
        (dict(K=torch.zeros(5, 3, 4)), "K must have shape"),
        (dict(V=torch.zeros(3, 2)), r"V must have shape \(d, d\)"),
        (dict(Q=torch.zeros(2, 3), K=torch.zeros(4, 3)), "same d_head"),
        (dict(Q=torch.zeros(2, 3, 3), V=torch.zeros(3, 3, 3)), "agree on n_heads"),
        (dict(Q=torch.zeros(2, 2, 3), K=torch.zeros(2, 3)), "K must also have a head dimension"),
    ],
)
def test_bad_shapes_raise_value_errors_naming_the_argument(kwargs, match):
    args = dict(x=torch.zeros(2, 4, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        attention_velocity(**args)


def test_bad_types_and_other_arguments():
    x = torch.zeros(4, 3)
    with pytest.raises(TypeError, match="Q must have the dtype of x"):
        attention_velocity(x, Q=torch.zeros(3, 3, dtype=F64))
    with pytest.raises(TypeError, match="beta must be a real number"):
        attention_velocity(x, beta="1")
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        attention_velocity(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="v must have the shape of x"):
        project_tangent(x, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="W and A must be given together"):
        transformer_velocity(x, W=torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"W must have shape \(\.\.\., 3, 5\)"):
        transformer_velocity(x, W=torch.zeros(3, 4), A=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="method must be one of"):
        simulate(x, 1.0, 0.1, attention_velocity, method="midpoint")
    with pytest.raises(ValueError, match="dt must be > 0"):
        simulate(x, 1.0, 0.0, attention_velocity)
    with pytest.raises(ValueError, match=r"velocity\(x\) must return the shape of x"):
        simulate(x, 1.0, 0.1, lambda y: y[:2], progress=False)
    with pytest.raises(TypeError, match="velocity must be a callable"):
        simulate(x, 1.0, 0.1, velocity=3)


# --------------------------------------------------------------------------------------------------
# Integration
# --------------------------------------------------------------------------------------------------
def test_simulate_stays_on_the_sphere_and_records_frames():
    x0 = random_sphere(12, 3, (2,), seed=8, dtype=F64)
    Q, K, V = random_heads(2, d=3, d_head=3)
    traj = simulate(
        x0, 2.0, 0.1, lambda x: attention_velocity(x, 3.0, Q, K, V), record_every=3, progress=False
    )
    times = time_grid(2.0, 0.1, 3, dtype=F64)
    assert traj.shape == (len(times), 2, 12, 3)
    torch.testing.assert_close(times[-1], torch.tensor(2.0, dtype=F64))
    assert (traj[0] == x0).all()
    assert (traj.norm(dim=-1) - 1).abs().max() < 1e-12
    # without renormalisation RK4 drifts off the sphere only by its (small) local errors
    free = simulate(
        x0,
        2.0,
        0.1,
        lambda x: attention_velocity(x, 3.0, Q, K, V),
        renormalize=False,
        progress=False,
    )
    assert (free.norm(dim=-1) - 1).abs().max() < 1e-3


def two_particle_gap(beta: float, phi0: float, t: float) -> float:
    """Exact angle between two particles on the circle at time t (scipy, tight tolerances)."""
    from scipy.integrate import solve_ivp

    def rhs(_t, phi):
        e = np.exp(beta * np.cos(phi))
        return -2 * e * np.sin(phi) / (np.exp(beta) + e)

    return float(solve_ivp(rhs, (0, t), [phi0], method="DOP853", rtol=1e-13, atol=1e-14).y[0, -1])


@pytest.mark.parametrize(
    ("method", "order", "dts"),
    [
        ("euler", 1, [1 / 10, 1 / 20, 1 / 40, 1 / 80]),
        ("rk4", 4, [1 / 4, 1 / 8, 1 / 16, 1 / 32]),
    ],
)
def test_measured_convergence_order(method, order, dts):
    # two particles on the circle: the gap phi obeys the scalar ODE of two_particle_gap
    beta, phi0, t_max = 1.0, 2.5, 2.0
    exact = two_particle_gap(beta, phi0, t_max)
    x0 = from_angles(torch.tensor([0.0, phi0], dtype=F64))
    errors = []
    for dt in dts:
        x = simulate(
            x0, t_max, dt, lambda x: attention_velocity(x, beta), method=method, progress=False
        )[-1]
        gap = torch.remainder(to_angles(x[1]) - to_angles(x[0]), 2 * math.pi).item()
        errors.append(abs(gap - exact))
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.2, (errors, slope)


def test_batched_simulation_equals_each_system_alone():
    x0 = random_sphere(6, 3, (3,), seed=9, dtype=F64)
    Q, K, V = random_heads(2, d=3, d_head=2)
    g = torch.Generator().manual_seed(10)
    mlp = dict(
        W=torch.randn(3, 4, generator=g, dtype=F64), A=torch.randn(4, 3, generator=g, dtype=F64)
    )

    def field(x):
        return transformer_velocity(x, 2.0, Q, K, V, **mlp)

    together = simulate(x0, 1.0, 0.1, field, progress=False)
    for i in range(3):
        alone = simulate(x0[i], 1.0, 0.1, field, progress=False)
        torch.testing.assert_close(together[:, i], alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_single_cluster_collapse_for_identity_matrices(d):
    x0 = random_sphere(16, d, (4,), seed=11, dtype=F64)
    assert (count_clusters(x0, 1e-3) == 16).all()
    traj = simulate(
        x0, 30.0, 0.1, lambda x: attention_velocity(x, 1.0), record_every=100, progress=False
    )
    assert (count_clusters(traj[-1], 1e-3) == 1).all()
    spread = torch.cdist(traj[-1], traj[-1]).amax(dim=(-2, -1))
    assert (spread < 1e-3).all()


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def test_count_clusters_connected_components():
    angles = torch.tensor(
        [
            [0.0, 0.004, 0.008, 1.0, 1.005, 3.0, 0.012, 5.0],  # chain near 0 (one), 1.0, 3.0, 5.0
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],  # all apart
        ],
        dtype=F64,
    )
    x = from_angles(angles)
    torch.testing.assert_close(count_clusters(x, 0.0101), torch.tensor([4, 8]))
    torch.testing.assert_close(count_clusters(x, 0.11), torch.tensor([4, 1]))
    assert count_clusters(x[0], 10.0).item() == 1


def test_angles_round_trip_and_random_sphere_is_seeded():
    theta = torch.rand(10, dtype=F64) * 2 * math.pi
    torch.testing.assert_close(to_angles(from_angles(theta)), theta)
    a = random_sphere(5, 3, (2,), seed=3)
    torch.testing.assert_close(a, random_sphere(5, 3, (2,), seed=3))
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2, 5))
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(random_sphere(5, 3, (2,), generator=g), a)


def test_residual_network_is_the_euler_scheme_of_its_ode():
    # smooth parameters w(t), a(t), b(t) on [0, 1]; n_layers = 1 / h layers sample them at t = k h
    def params(n_layers):
        t = (torch.arange(n_layers, dtype=F64) / n_layers)[:, None, None]
        base = torch.linspace(-1, 1, 12, dtype=F64)
        w = torch.cos(3 * t + base.reshape(1, 3, 4))
        a = torch.sin(2 * t + base.reshape(1, 4, 3))
        b = torch.cos(t[:, :, 0] + base[:4])
        return w, a, b

    x0 = torch.tensor([[0.5, -0.2, 0.1], [1.0, 0.3, -0.7]], dtype=F64)
    errors = []
    for n_layers in (10, 20, 40):
        w, a, b = params(n_layers)
        h = 1 / n_layers
        net = residual_network(x0, w, a, b, h)
        flow = residual_ode_flow(x0, w, a, b, h, substeps=8)
        assert net.shape == flow.shape == (n_layers + 1, 2, 3)
        errors.append((net[-1] - flow[-1]).norm().item())
    assert 1.6 < errors[0] / errors[1] < 2.4 and 1.6 < errors[1] / errors[2] < 2.4  # O(h)


def test_merge_time_at_beta_zero_is_the_closed_form():
    # beta = 0: the integrand is 1 / sin(phi), whose integral is log tan(phi / 2)
    phi0 = torch.tensor([0.5, 1.5, 3.0], dtype=F64)
    exact = torch.log(torch.tan(phi0 / 2) / math.tan(0.05 / 2))
    torch.testing.assert_close(dynamics.two_cluster_merge_time(0.0, phi0), exact, rtol=1e-6, atol=0)


def test_merge_time_grows_like_its_laplace_approximation_at_fixed_separation():
    betas = torch.tensor([20.0, 40.0, 80.0, 160.0], dtype=F64)
    phi0 = math.pi / 3
    laplace = torch.exp(betas * (1 - math.cos(phi0))) / (2 * betas * math.sin(phi0) ** 2)
    ratio = dynamics.two_cluster_merge_time(betas, phi0) / laplace
    assert ((ratio - 1).abs() < 3 / betas).all()  # the relative correction is O(1 / beta)
    assert ((ratio - 1).abs().diff() < 0).all()


def test_merge_time_matches_two_simulated_particles():
    cases = [(2.0, math.pi / 2), (4.0, 1.2), (6.0, math.pi / 3)]
    pairs = from_angles(torch.tensor([[0.0, p] for _, p in cases], dtype=F64))  # (3, 2, 2)
    betas = torch.tensor([b for b, _ in cases], dtype=F64)[:, None, None]
    dt = 0.01
    path = simulate(
        pairs,
        40.0,
        dt,
        lambda x: project_tangent(x, torch.softmax(betas * x @ x.mT, dim=-1) @ x),
        progress=False,
    )
    gap = torch.arccos((path[:, :, 0] * path[:, :, 1]).sum(-1).clamp(-1, 1))  # (T, 3)
    simulated = dt * (gap > 0.05).sum(0).double()
    predicted = dynamics.two_cluster_merge_time(
        betas.flatten(), torch.tensor([p for _, p in cases], dtype=F64)
    )
    torch.testing.assert_close(simulated, predicted, rtol=0, atol=2 * dt)


def test_merge_time_shapes_dtypes_devices_and_errors():
    t = dynamics.two_cluster_merge_time(torch.tensor([1.0, 2.0]), torch.tensor([[0.5], [1.0]]))
    assert t.shape == (2, 2) and t.dtype == torch.float32
    assert dynamics.two_cluster_merge_time(3.0, 1.0).dtype == F64
    meta = dynamics.two_cluster_merge_time(torch.ones(4, device="meta"), 1.0)
    assert meta.device.type == "meta" and meta.shape == (4,)
    with pytest.raises(ValueError, match="phi0"):
        dynamics.two_cluster_merge_time(1.0, math.pi)
    with pytest.raises(ValueError, match="phi0"):
        dynamics.two_cluster_merge_time(1.0, 0.01)
    with pytest.raises(ValueError, match="beta"):
        dynamics.two_cluster_merge_time(torch.tensor([-1.0]), 1.0)
    with pytest.raises(ValueError, match="phi_end"):
        dynamics.two_cluster_merge_time(1.0, 1.0, phi_end=0.0)
    with pytest.raises(TypeError, match="beta"):
        dynamics.two_cluster_merge_time(torch.tensor([1]), 1.0)
