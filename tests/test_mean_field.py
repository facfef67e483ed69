"""Tests of labcore.mean_field: spectral machinery, mass, linear growth rates, particles -> PDE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labcore.dynamics import attention_velocity, simulate, to_angles
from labcore.mean_field import (
    SphereGrid,
    circle_grid,
    circle_growth_rates,
    circle_kernel_coefficients,
    circle_velocity,
    funk_hecke_coefficients,
    particles_to_density,
    sample_from_density,
    smooth_density,
    solve_circle,
    solve_sphere,
    sphere_growth_rates,
    sphere_velocity,
)

F64 = torch.float64
C128 = torch.complex128


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP synchronisation costs (see test_dynamics)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_coefficients(grid: SphereGrid, *batch: int, seed: int = 0) -> torch.Tensor:
    """Random coefficients of a real band-limited function (c_l0 real, zero where m > l)."""
    g = torch.Generator().manual_seed(seed)
    L = grid.l_max + 1
    c = torch.complex(
        torch.randn(*batch, L, L, generator=g, dtype=F64),
        torch.randn(*batch, L, L, generator=g, dtype=F64),
    )
    c = c * torch.ones(L, L, dtype=F64).tril()
    c[..., 0] = c[..., 0].real.to(C128)
    return c


def uniform_sphere(grid: SphereGrid) -> torch.Tensor:
    return torch.full((grid.n_lat, grid.n_lon), 1 / (4 * math.pi), dtype=F64)


# --------------------------------------------------------------------------------------------------
# Kernel coefficients against closed forms (scipy is only a test dependency)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.3, 4.0, 37.0])
def test_kernel_coefficients_are_bessel_functions(beta):
    from scipy.special import ive, spherical_in

    k = np.arange(41)
    np.testing.assert_allclose(
        circle_kernel_coefficients(beta, 40).numpy(), ive(k, beta), rtol=1e-12, atol=1e-15
    )
    lam = funk_hecke_coefficients(beta, 40).numpy()
    np.testing.assert_allclose(
        lam, 4 * np.pi * np.exp(-beta) * spherical_in(k, beta), rtol=1e-10, atol=5e-13 * lam[0]
    )


def test_growth_rate_limits_as_beta_goes_to_zero():
    torch.testing.assert_close(
        circle_growth_rates(1e-6, 2), torch.tensor([0.0, 0.5, 0.0], dtype=F64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        sphere_growth_rates(1e-6, 2), torch.tensor([0.0, 2 / 3, 0.0], dtype=F64), atol=1e-6, rtol=0
    )


# --------------------------------------------------------------------------------------------------
# The spherical-harmonic transform
# --------------------------------------------------------------------------------------------------
def test_sphere_transforms_round_trip_laplacian_and_parseval():
    grid = SphereGrid(10)
    c = random_coefficients(grid, 2)
    f = grid.synthesis(c)
    assert f.shape == (2, grid.n_lat, grid.n_lon) and f.dtype == F64
    torch.testing.assert_close(grid.analysis(f), c, rtol=0, atol=1e-12)
    ell = torch.arange(grid.l_max + 1, dtype=F64)[:, None]
    torch.testing.assert_close(
        grid.divergence(*grid.gradient(c)), -ell * (ell + 1) * c, rtol=0, atol=1e-10
    )  # div grad = Laplacian
    energy = grid.integrate(f**2)
    torch.testing.assert_close(grid.power_spectrum(c).sum(-1), energy)
    torch.testing.assert_close((grid.real_coefficients(c) ** 2).sum(-1), energy)
    torch.testing.assert_close(grid.area_weights().sum(), torch.tensor(4 * math.pi, dtype=F64))


def test_sphere_harmonics_match_scipy():
    from scipy import special

    sph = getattr(special, "sph_harm_y", None)
    if sph is None:  # scipy < 1.15
        pytest.skip("scipy.special.sph_harm_y not available")
    grid = SphereGrid(8)
    theta = grid.colatitudes().numpy()[:, None]
    phi = grid.longitudes().numpy()[None, :]
    for ell, m in [(0, 0), (3, 0), (4, 2), (8, 5), (7, 7)]:
        c = torch.zeros(9, 9, dtype=C128)
        c[ell, m] = 1
        y = sph(ell, m, theta, phi)
        expected = y.real if m == 0 else 2 * y.real  # f = 2 Re(c_lm Y_lm) for m > 0
        np.testing.assert_allclose(grid.synthesis(c).numpy(), expected, atol=1e-13)


# --------------------------------------------------------------------------------------------------
# Mean-field velocities against the defining integrals
# --------------------------------------------------------------------------------------------------
def test_circle_velocity_matches_the_integral():
    beta, n = 3.0, 64
    theta = circle_grid(n, dtype=F64)
    rho = (1 + 0.7 * torch.cos(theta - 1) + 0.2 * torch.sin(3 * theta)) / (2 * math.pi)
    diff = theta[:, None] - theta[None, :]  # theta - phi
    kern = torch.exp(beta * torch.cos(diff)) * rho[None, :]
    expected = (kern * torch.sin(-diff)).sum(-1) / kern.sum(-1)  # trapezoid rule, spectral
    torch.testing.assert_close(circle_velocity(rho, beta), expected, rtol=1e-10, atol=1e-12)


def test_sphere_velocity_matches_the_attention_field():
    beta = 2.0
    grid = SphereGrid(16)
    u = grid.points(dtype=F64).reshape(-1, 3)
    rho = (1 + 0.6 * u[:, 2] + 0.3 * u[:, 0] * u[:, 1]) / (4 * math.pi)
    w = grid.area_weights().reshape(-1) * rho  # quadrature weights times the density
    e = torch.exp(beta * (u @ u.T)) * w[None, :]
    y = (e @ u) / e.sum(-1, keepdim=True)
    expected = y - (y * u).sum(-1, keepdim=True) * u  # P_perp(int e^{b<x,y>} y rho / Z)
    got = sphere_velocity(rho.reshape(grid.n_lat, grid.n_lon), grid, beta).reshape(-1, 3)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)
    assert (got * u).sum(-1).abs().max() < 1e-12


def test_mean_field_velocity_is_the_particle_velocity_of_many_particles():
    # particles sampled from rho: their attention velocity approaches v[rho] at their positions
    n_grid, beta, n = 2048, 2.0, 4000
    theta = circle_grid(n_grid, dtype=F64)
    rho = (1 + 0.8 * torch.cos(theta)) / (2 * math.pi)
    x = sample_from_density(rho, n_grid, n, seed=0)
    v_particles = attention_velocity(x, beta)  # (n, 2)
    angles = to_angles(x)
    e_theta = torch.stack([-torch.sin(angles), torch.cos(angles)], dim=-1)
    v_theta = (v_particles * e_theta).sum(-1)
    index = torch.round(angles / (2 * math.pi / n_grid)).long() % n_grid
    err = (v_theta - circle_velocity(rho, beta)[index]).abs()
    assert err.mean() < 0.02 and err.max() < 0.06  # sampling error ~ n^{-1/2}


# --------------------------------------------------------------------------------------------------
# Solvers: mass, linear growth, fastest mode
# --------------------------------------------------------------------------------------------------
def test_circle_solver_conserves_mass_and_positivity_of_a_smooth_run():
    theta = circle_grid(128, dtype=F64)
    rho0 = torch.stack(
        [
            (1 + 0.9 * torch.cos(theta)) / (2 * math.pi),
            (1 + 0.5 * torch.sin(2 * theta + 1)) / (2 * math.pi),
        ]
    )
    traj = solve_circle(rho0, 4.0, 3.0, 0.02, record_every=10, filter_order=36, progress=False)
    mass = traj.sum(-1) * (2 * math.pi / 128)
    assert (mass - 1).abs().max() < 1e-12
    assert traj.shape == (16, 2, 128)


def test_sphere_solver_conserves_mass():
    grid = SphereGrid(12)
    u = grid.points(dtype=F64)
    rho0 = torch.stack(
        [
            (1 + 0.8 * u[..., 2]) / (4 * math.pi),
            (1 + 0.5 * u[..., 0] * u[..., 1] + 0.3 * u[..., 1]) / (4 * math.pi),
        ]
    )
    traj = solve_sphere(
        rho0, grid, 4.0, 2.0, 0.02, record_every=20, filter_order=36, progress=False
    )
    mass = grid.integrate(traj)
    assert (mass - 1).abs().max() < 1e-12
    assert traj.shape == (6, 2, grid.n_lat, grid.n_lon)


def test_circle_growth_rates_match_the_solver():
    beta, n, eps, t_max = 4.0, 64, 1e-6, 1.0
    theta = circle_grid(n, dtype=F64)
    ks = torch.arange(1, 9)
    rho0 = (1 + eps * torch.cos(ks[:, None] * theta + 0.3)) / (2 * math.pi)  # one mode per row
    traj = solve_circle(rho0, beta, t_max, 0.02, record_every=1000, progress=False)
    amp = torch.fft.rfft(traj, dim=-1)[:, torch.arange(8), ks].abs()  # (T, 8)
    measured = torch.log(amp[-1] / amp[0]) / t_max
    torch.testing.assert_close(measured, circle_growth_rates(beta, 8)[1:], rtol=1e-3, atol=1e-4)


def test_sphere_growth_rates_match_the_solver():
    beta, eps, t_max = 4.0, 1e-6, 1.0
    grid = SphereGrid(10)
    c = torch.zeros(7, 11, 11, dtype=C128)
    c[:, 0, 0] = 1 / math.sqrt(4 * math.pi)  # the uniform density 1 / (4 pi)
    for ell in range(1, 8):  # one degree per problem, a mix of orders m
        c[ell - 1, ell, ell // 2] = eps * (1 + 0.5j) if ell // 2 else eps
        c[ell - 1, ell, ell] = eps * 0.7j
    traj = solve_sphere(
        grid.synthesis(c), grid, beta, t_max, 0.02, record_every=1000, progress=False
    )
    power = grid.power_spectrum(grid.analysis(traj))  # (T, 7, l_max + 1)
    ells = torch.arange(1, 8)
    measured = 0.5 * torch.log(power[-1, ells - 1, ells] / power[0, ells - 1, ells]) / t_max
    torch.testing.assert_close(measured, sphere_growth_rates(beta, 7)[1:], rtol=1e-3, atol=1e-4)


def test_fastest_growing_circle_mode_is_the_predicted_one():
    beta, n, eps = 8.0, 96, 1e-9
    rates = circle_growth_rates(beta, n // 3)
    k_star = int(rates.argmax())
    assert k_star == 4
    theta = circle_grid(n, dtype=F64)
    g = torch.Generator().manual_seed(0)
    phases = 2 * math.pi * torch.rand(n // 3, generator=g, dtype=F64)
    ks = torch.arange(1, n // 3 + 1, dtype=F64)
    noise = torch.cos(ks[:, None] * theta + phases[:, None]).sum(0)  # every mode, equal amplitude
    rho0 = (1 + eps * noise) / (2 * math.pi)
    rho = solve_circle(rho0, beta, 20.0, 0.05, record_every=10**6, progress=False)[-1]
    amp = torch.fft.rfft(rho).abs()
    assert amp[1:].max() < 1e-2 * amp[0]  # still nearly uniform: the linear regime
    assert int(amp[1:].argmax()) + 1 == k_star


def test_fastest_growing_sphere_degree_is_the_predicted_one():
    beta, eps = 6.0, 1e-9
    grid = SphereGrid(10)
    rates = sphere_growth_rates(beta, grid.l_max)
    l_star = int(rates.argmax())
    assert l_star == 3
    c = random_coefficients(grid, seed=1)
    c[0] = 0
    c = c / grid.power_spectrum(c).sqrt()[..., :, None].clamp(min=1e-300)  # equal energy per l
    c[0, 0] = 1 / math.sqrt(4 * math.pi)
    c[1:] = eps * c[1:]
    rho = solve_sphere(
        grid.synthesis(c), grid, beta, 20.0, 0.05, record_every=10**6, progress=False
    )[-1]
    power = grid.power_spectrum(grid.analysis(rho))
    assert power[1:].max() < 1e-4 * power[0]  # linear regime
    assert int(power[1:].argmax()) + 1 == l_star


# --------------------------------------------------------------------------------------------------
# Particles converge to the mean field
# --------------------------------------------------------------------------------------------------
def test_circle_particles_approach_the_mean_field_solution():
    beta, t_max, dt, kappa = 2.0, 1.0, 0.1, 10.0
    fine, n_grid, batch = 2048, 128, 8
    profile = lambda th: (1 + 0.8 * torch.cos(th) + 0.4 * torch.sin(2 * th)) / (2 * math.pi)  # noqa: E731
    rho_mf = solve_circle(
        profile(circle_grid(n_grid, dtype=F64)), beta, t_max, dt, record_every=10**6, progress=False
    )[-1]
    target = smooth_density(rho_mf, n_grid, kappa)
    errors = []
    for i, n in enumerate((64, 256, 1024)):
        x0 = sample_from_density(
            profile(circle_grid(fine, dtype=F64)).expand(batch, fine), fine, n, seed=i
        )  # (batch, n, 2), sampled on a fine grid
        x = simulate(
            x0, t_max, dt, lambda x: attention_velocity(x, beta), record_every=10**6, progress=False
        )[-1]
        kde = particles_to_density(x, n_grid, kappa)  # (batch, n_grid)
        errors.append(((kde - target) ** 2).mean(-1).sqrt().mean().item())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.5 * errors[0], errors  # ~ n^{-1/2}: a factor 4 expected


def test_sphere_particles_approach_the_mean_field_solution():
    beta, t_max, dt, kappa, batch = 2.0, 1.0, 0.1, 8.0, 8
    grid, fine = SphereGrid(12), SphereGrid(48)

    def profile(g: SphereGrid) -> torch.Tensor:
        u = g.points(dtype=F64)
        return (1 + 0.8 * u[..., 2] + 0.5 * u[..., 0] * u[..., 1]) / (4 * math.pi)

    rho_mf = solve_sphere(profile(grid), grid, beta, t_max, dt, record_every=10**6, progress=False)[
        -1
    ]
    target = smooth_density(rho_mf, grid, kappa)
    errors = []
    for i, n in enumerate((64, 256, 1024)):
        x0 = sample_from_density(
            profile(fine).expand(batch, fine.n_lat, fine.n_lon), fine, n, seed=i
        )
        x = simulate(
            x0, t_max, dt, lambda x: attention_velocity(x, beta), record_every=10**6, progress=False
        )[-1]
        kde = particles_to_density(x, grid, kappa)  # (batch, n_lat, n_lon)
        errors.append(grid.integrate((kde - target) ** 2).sqrt().mean().item())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.5 * errors[0], errors


def test_density_helpers_have_unit_mass():
    grid = SphereGrid(16)
    x3 = sample_from_density(uniform_sphere(grid), grid, 50, seed=0)
    assert x3.shape == (50, 3)
    torch.testing.assert_close(x3.norm(dim=-1), torch.ones(50, dtype=F64))
    kde = particles_to_density(x3, grid, 5.0)
    assert abs(grid.integrate(kde).item() - 1) < 1e-6
    x2 = sample_from_density(torch.ones(3, 64, dtype=F64), 64, 40, seed=0)
    assert x2.shape == (3, 40, 2)
    kde2 = particles_to_density(x2, 64, 10.0)
    torch.testing.assert_close(kde2.sum(-1) * 2 * math.pi / 64, torch.ones(3, dtype=F64))
    torch.testing.assert_close(smooth_density(kde2, 64, 3.0).sum(-1), kde2.sum(-1))


# --------------------------------------------------------------------------------------------------
# Devices and errors
# --------------------------------------------------------------------------------------------------
def test_solvers_run_on_meta_tensors():
    rho = torch.empty(3, 32, device="meta")
    assert solve_circle(rho, 2.0, 0.1, 0.05, progress=False).shape == (3, 3, 32)
    grid = SphereGrid(6)
    rho = torch.empty(2, grid.n_lat, grid.n_lon, device="meta")
    out = solve_sphere(rho, grid, 2.0, 0.1, 0.05, progress=False)
    assert out.shape == (3, 2, grid.n_lat, grid.n_lon) and out.device.type == "meta"
    x = torch.empty(2, 5, 3, device="meta")
    assert particles_to_density(x, grid).device.type == "meta"


def test_bad_arguments_raise_clear_errors():
    grid = SphereGrid(6)
    with pytest.raises(ValueError, match="rho0 must have at least 8 grid points"):
        solve_circle(torch.ones(4), 1.0, 1.0, 0.1)
    with pytest.raises(ValueError, match=r"rho0 must have shape \(\.\.\., 11, 22\)"):
        solve_sphere(torch.ones(10, 22), grid, 1.0, 1.0, 0.1)
    with pytest.raises(TypeError, match="grid must be a SphereGrid"):
        solve_sphere(torch.ones(11, 22), 6, 1.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="beta must be > 0"):
        solve_circle(torch.ones(16), 0.0, 1.0, 0.1)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., \*, 2\)"):
        particles_to_density(torch.ones(5, 3), 64)
    with pytest.raises(TypeError, match="grid must be an int"):
        particles_to_density(torch.ones(5, 3), "sphere")
    with pytest.raises(ValueError, match="n_lon must be >= 2 l_max"):
        SphereGrid(10, n_lon=12)
    with pytest.raises(ValueError, match="filter_order must be >= 1"):
        solve_circle(torch.ones(16), 1.0, 1.0, 0.1, filter_order=0)


@pytest.mark.parametrize("beta", [0.5, 4.0, 16.0, 100.0])
def test_unnormalised_rates_are_the_rates_times_the_constant_normaliser(beta):
    circle = circle_growth_rates(beta, 40)
    circle_u = circle_growth_rates(beta, 40, normalized=False)
    i0 = torch.special.i0(torch.tensor(beta, dtype=F64))
    torch.testing.assert_close(circle_u, circle * i0, rtol=1e-12, atol=0)
    sphere = sphere_growth_rates(beta, 30)
    sphere_u = sphere_growth_rates(beta, 30, normalized=False)
    torch.testing.assert_close(sphere_u, sphere * math.sinh(beta) / beta, rtol=1e-11, atol=0)
    assert int(circle_u.argmax()) == int(circle.argmax())  # the same fastest wave
    assert int(sphere_u.argmax()) == int(sphere.argmax())


def test_unnormalised_rates_linearise_the_unnormalised_equation():
    # d_t rho = -d_theta(rho Z' / beta), Z = int e^{beta cos(theta - phi)} rho(phi) dphi, computed
    # by direct sums on a grid for rho = 1/(2 pi) + eps cos(k theta): the result is eps r_k cos
    beta, n, eps = 3.0, 64, 1e-7
    theta = circle_grid(n, dtype=F64)
    diff = theta[:, None] - theta  # theta_i - phi_j
    rates = circle_growth_rates(beta, 6, normalized=False)
    for k in range(1, 7):
        rho = 1 / (2 * math.pi) + eps * torch.cos(k * theta)
        dz = (-beta * torch.sin(diff) * torch.exp(beta * torch.cos(diff)) * rho).sum(-1) * (
            2 * math.pi / n
        )
        flux = rho * dz / beta
        freq = torch.fft.rfftfreq(n, 1 / n, dtype=F64)
        dflux = torch.fft.irfft(1j * freq * torch.fft.rfft(flux), n=n)
        torch.testing.assert_close(-dflux / eps, rates[k] * torch.cos(k * theta), rtol=0, atol=1e-5)
