"""The mean-field limit of attention dynamics: the continuity equation on the circle and on S^2.

As ``n_particles -> infinity`` the empirical measure ``mu_t = (1/n) sum_i delta_{x_i(t)}`` of the
particles of :func:`labcore.dynamics.attention_velocity` (with ``Q = K = V = I``) follows the
continuity equation (Geshkovski, Letrouit, Polyanskiy and Rigollet, 2023, section 2)::

    d_t mu + div(chi[mu] mu) = 0,
    chi[mu](x) = P_perp_x( int e^{beta <x, y>} y dmu(y) / int e^{beta <x, y>} dmu(y) ).

**One identity makes it tractable.** Because ``grad_x e^{beta <x, y>} = beta y e^{beta <x, y>}``,
the field is the spherical gradient of a log-partition function::

    chi[mu] = (1/beta) grad_S log Z,    Z(x) = (k_beta * mu)(x) = int e^{beta <x, y>} dmu(y),

and ``k_beta * mu`` is a convolution on the sphere (the kernel depends on ``<x, y>`` only), hence
diagonal in the sphere's Fourier basis:

* on the circle (``d = 2``, ``x = (cos theta, sin theta)``) ``e^{beta cos s} = sum_k I_k(beta)
  e^{i k s}`` (modified Bessel functions), so ``Z_k = 2 pi I_k(beta) rho_k`` for the Fourier
  coefficients ``rho_k`` of the density ``rho(theta)`` (with respect to ``d theta``), and the
  tangent velocity is ``v(theta) = (1/beta) d_theta log Z = int e^{beta cos(theta - phi)}
  sin(phi - theta) rho(phi) dphi / Z(theta)``;
* on ``S^2`` the Funk-Hecke formula says ``int f(<x, y>) Y_lm(y) dsigma(y) = lambda_l Y_lm(x)``
  with ``lambda_l = 2 pi int_{-1}^{1} f(t) P_l(t) dt`` for every spherical harmonic of degree
  ``l``; for ``f = e^{beta t}``, ``lambda_l = 4 pi i_l(beta)`` (modified spherical Bessel).

:func:`solve_circle` and :func:`solve_sphere` solve the equation with these facts by
pseudo-spectral methods (products on a grid, derivatives and convolutions in Fourier /
spherical-harmonic space, classical RK4 in time); both conserve mass to rounding error.
:func:`circle_growth_rates` and :func:`sphere_growth_rates` give the linear instability of the
uniform density, and :func:`particles_to_density` turns particles into a density on the same grid.

All scaled kernel coefficients carry a factor ``e^{-beta}`` (it cancels in ``grad Z / Z``), so
nothing overflows for large ``beta``. Densities are with respect to arc length on the circle
(``int rho dtheta = 1``) and area on ``S^2`` (``int rho dsigma = 1``); shapes are
``(..., n_grid)`` on the circle and ``(..., n_lat, n_lon)`` on the sphere, with any leading
(batch) dimensions.

References:
    Geshkovski, Letrouit, Polyanskiy and Rigollet (2023), "A mathematical perspective on
    Transformers".
    Bruno, Pasqualotto and Agazzi (2025), "Emergence of meta-stable clustering in mean-field
    transformer models" (the unnormalised equation around the uniform density).
    Boyd (2001), "Chebyshev and Fourier spectral methods" (dealiasing, filters).
    Atkinson and Han (2012), "Spherical harmonics and approximations on the unit sphere"
    (Funk-Hecke formula).
    Hou and Li (2007), "Computing nearly singular solutions using pseudo-spectral methods"
    (the exponential filter).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from labcore.dynamics import _check_real, _integrate
from labcore.validation import check_positive_int, check_tensor

__all__ = [
    "SphereGrid",
    "circle_grid",
    "circle_growth_rates",
    "circle_kernel_coefficients",
    "circle_velocity",
    "funk_hecke_coefficients",
    "particles_to_density",
    "sample_from_density",
    "smooth_density",
    "solve_circle",
    "solve_sphere",
    "sphere_growth_rates",
    "sphere_velocity",
]

_FILTER_ALPHA = 36.0  # exp(-36) ~ 2e-16: the filter takes the last kept mode to machine precision


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.complex64)


def _check_density(name: str, rho: object, min_ndim: int) -> torch.Tensor:
    return check_tensor(name, rho, min_ndim=min_ndim, floating=True)


def _check_filter(filter_order: int | None) -> None:
    if filter_order is not None:
        check_positive_int("filter_order", filter_order)


# --------------------------------------------------------------------------------------------------
# Kernel coefficients and the linear stability of the uniform density
# --------------------------------------------------------------------------------------------------
def circle_kernel_coefficients(
    beta: float,
    k_max: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Scaled Fourier coefficients of the circle kernel: ``e^{-beta} I_k(beta)``, ``k = 0..k_max``.

    ``e^{beta cos s} = sum_k I_k(beta) e^{i k s}``, so ``I_k(beta) = (1/2 pi) int_0^{2 pi}
    e^{beta cos s} e^{-i k s} ds``; the trapezoidal rule on ``M`` points is exact up to the aliases
    ``I_{M - k}(beta)``, negligible for ``M - k > 2 sqrt(80 beta)`` (``I_k / I_0 ~
    e^{-k^2 / (2 beta)}``). Computed with one FFT, no special-function library.

    Args:
        beta: >= 0.
        k_max: largest frequency, >= 0.

    Returns:
        ``(k_max + 1,)``: ``e^{-beta} I_k(beta)`` (absolute accuracy about 1e-16).
    """
    beta = _check_real("beta", beta)
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    check_positive_int("k_max", k_max, allow_zero=True)
    m = 2 * (k_max + math.ceil(math.sqrt(80 * max(beta, 1.0))) + 64)
    s = 2 * np.pi * np.arange(m) / m
    coef = np.fft.rfft(np.exp(beta * (np.cos(s) - 1.0))).real / m
    return torch.as_tensor(coef[: k_max + 1], dtype=dtype, device=device)


def funk_hecke_coefficients(
    beta: float,
    l_max: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Scaled Funk-Hecke eigenvalues of ``e^{beta <x, y>}`` on ``S^2``: ``e^{-beta} lambda_l``.

    Funk-Hecke: ``int_{S^2} f(<x, y>) Y_l(y) dsigma(y) = lambda_l Y_l(x)`` for every spherical
    harmonic of degree ``l``, with ``lambda_l = 2 pi int_{-1}^{1} f(t) P_l(t) dt`` (``P_l`` the
    Legendre polynomial). For ``f(t) = e^{beta t}`` this is ``4 pi i_l(beta)``; here it is
    computed by Gauss-Legendre quadrature of ``2 pi e^{beta (t - 1)} P_l(t)`` with enough nodes
    to integrate the exponential's polynomial part exactly to rounding.

    Args:
        beta: >= 0.
        l_max: largest degree, >= 0.

    Returns:
        ``(l_max + 1,)``: ``e^{-beta} lambda_l``, with absolute errors about ``1e-13`` times
        ``e^{-beta} lambda_0`` for ``beta <= 40`` (``1e-11`` at ``beta = 200``: the nodes' own
        rounding, amplified by the kernel's slope ``beta``). Tiny ``lambda_l`` are therefore not
        accurate relative to themselves, which does not matter next to ``lambda_0``.
    """
    beta = _check_real("beta", beta)
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    check_positive_int("l_max", l_max, allow_zero=True)
    # e^{beta t} is a polynomial of degree ~ beta + 10 sqrt(beta) to rounding (its Chebyshev
    # coefficients are I_k(beta)); n nodes integrate degree 2 n - 1 exactly. More nodes do not
    # help: numpy's Gauss-Legendre nodes themselves lose accuracy (~1e-14) for large n.
    n = math.ceil((l_max + beta + 10 * math.sqrt(beta)) / 2) + 24
    t, w = np.polynomial.legendre.leggauss(n)
    f = 2 * np.pi * w * np.exp(beta * (t - 1.0))
    out = np.empty(l_max + 1)
    p_prev, p = np.zeros_like(t), np.ones_like(t)  # P_{-1}, P_0
    for ell in range(l_max + 1):
        out[ell] = f @ p
        p_prev, p = p, ((2 * ell + 1) * t * p - ell * p_prev) / (ell + 1)
    return torch.as_tensor(out, dtype=dtype, device=device)


def circle_growth_rates(beta: float, k_max: int, *, normalized: bool = True) -> torch.Tensor:
    """Growth rates of Fourier modes around the uniform density on the circle (``Q = K = V = I``).

    Derivation. Write ``rho = 1/(2 pi) + eps cos(k theta)`` and ``Z = k_beta * rho``. The Fourier
    multiplier of ``k_beta`` is ``2 pi I_k(beta)``, so ``Z = I_0(beta) + eps 2 pi I_k(beta)
    cos(k theta)``. The velocity is ``v = (1/beta) d_theta log Z``; at the uniform density
    ``v = 0`` (the numerator ``d_theta Z`` vanishes), so at first order only the unperturbed
    normaliser ``Z_0 = I_0(beta)`` enters (the perturbation of ``Z`` in the denominator multiplies
    a zero numerator): ``v = -eps (2 pi k I_k / (beta I_0)) sin(k theta) + O(eps^2)``. The
    continuity equation ``d_t rho = -d_theta(rho v) = -(1/2 pi) d_theta v + O(eps^2)`` gives::

        d_t rho = eps rate_k cos(k theta),   rate_k = k^2 I_k(beta) / (beta I_0(beta)).

    Every mode ``k >= 1`` grows (the uniform state is unstable: attention attracts); as
    ``beta -> 0``, ``rate_1 -> 1/2`` and ``rate_k -> 0`` for ``k >= 2``; for large ``beta``,
    ``I_k / I_0 ~ exp(-k^2 / (2 beta))``, so the fastest mode is near ``k* = sqrt(2 beta)``:
    a nearly uniform start first forms about ``sqrt(2 beta)`` clusters.

    **Without the normaliser** (``normalized=False``): the unnormalised dynamics
    ``dx_i/dt = P_perp_{x_i}((1/n) sum_j e^{beta <x_i, x_j>} x_j)``, whose mean-field equation
    Bruno, Pasqualotto and Agazzi (2025) analyse, has the field ``(1/beta) d_theta Z`` instead of
    ``(1/beta) d_theta log Z``. At the uniform density ``Z = I_0(beta)`` is a constant, so the
    same steps give ``k^2 I_k(beta) / beta``: every rate multiplied by ``I_0(beta)``, which only
    rescales time; the fastest ``k`` is the same.

    Args:
        beta: > 0.
        k_max: largest frequency.
        normalized: the softmax dynamics (True) or the unnormalised one (False; overflows to
            ``inf`` for ``beta`` above about 700).

    Returns:
        ``(k_max + 1,)`` float64: ``rate_k`` for ``k = 0 .. k_max`` (``rate_0 = 0``: mass).
    """
    beta = _check_real("beta", beta, positive=True)
    check_positive_int("k_max", k_max, allow_zero=True)
    c = circle_kernel_coefficients(beta, k_max)  # e^{-beta} I_k(beta)
    k = torch.arange(k_max + 1, dtype=torch.float64)
    if normalized:
        return k**2 * c / (beta * c[0])
    return k**2 * (c * math.exp(beta)) / beta


def sphere_growth_rates(beta: float, l_max: int, *, normalized: bool = True) -> torch.Tensor:
    """Growth rates of spherical-harmonic degrees around the uniform density on ``S^2``.

    Derivation (as on the circle, :func:`circle_growth_rates`). Write ``rho = 1/(4 pi) + eps Y_l``
    with ``Y_l`` any spherical harmonic of degree ``l``. By Funk-Hecke, ``Z = k_beta * rho =
    lambda_0 / (4 pi) + eps lambda_l Y_l``. The field ``chi = (1/beta) grad_S log Z`` vanishes at
    the uniform density, so ``chi = eps (4 pi lambda_l / (beta lambda_0)) grad_S Y_l + O(eps^2)``
    and ``d_t rho = -div(rho chi) = -(1/(4 pi)) div chi + O(eps^2)``. With
    ``Delta_S Y_l = -l (l + 1) Y_l``::

        d_t rho = eps rate_l Y_l,   rate_l = l (l + 1) lambda_l / (beta lambda_0)
                                           = l (l + 1) i_l(beta) / (beta i_0(beta)).

    (On ``S^{d-1}`` the same steps give ``l (l + d - 2) lambda_l / (beta lambda_0)``; ``d = 2``
    is the circle's ``k^2 I_k / (beta I_0)``.) As ``beta -> 0``, ``rate_1 -> 2/3``; for large
    ``beta``, ``lambda_l / lambda_0 ~ exp(-l (l + 1) / (2 beta))`` and the fastest degree is near
    ``l (l + 1) = 2 beta``. The ``2 l + 1`` harmonics of one degree grow at the same rate.

    With ``normalized=False`` (the unnormalised dynamics, see :func:`circle_growth_rates`) the
    constant normaliser ``lambda_0 / (4 pi) = i_0(beta)`` is not divided out:
    ``rate_l = l (l + 1) i_l(beta) / beta``, the same rates times ``i_0(beta) = sinh(beta) /
    beta`` and the same fastest degree.

    Args:
        beta: > 0.
        l_max: largest degree.
        normalized: the softmax dynamics (True) or the unnormalised one (False; overflows to
            ``inf`` for ``beta`` above about 700).

    Returns:
        ``(l_max + 1,)`` float64: ``rate_l`` for ``l = 0 .. l_max``.
    """
    beta = _check_real("beta", beta, positive=True)
    check_positive_int("l_max", l_max, allow_zero=True)
    lam = funk_hecke_coefficients(beta, l_max)  # e^{-beta} lambda_l = 4 pi e^{-beta} i_l(beta)
    ell = torch.arange(l_max + 1, dtype=torch.float64)
    if normalized:
        return ell * (ell + 1) * lam / (beta * lam[0])
    return ell * (ell + 1) * (lam * math.exp(beta) / (4 * math.pi)) / beta


# --------------------------------------------------------------------------------------------------
# The circle: Fourier pseudo-spectral solver
# --------------------------------------------------------------------------------------------------
def circle_grid(
    n_grid: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Uniform grid ``theta_j = 2 pi j / n_grid``, ``j = 0 .. n_grid - 1``; ``(n_grid,)``."""
    check_positive_int("n_grid", n_grid)
    return torch.arange(n_grid, dtype=dtype, device=device) * (2 * math.pi / n_grid)


class _CircleOperators:
    """FFT multipliers of one circle problem, on the density's device and dtype."""

    def __init__(self, rho: torch.Tensor, beta: float, dealias: bool, filter_order: int | None):
        n = rho.shape[-1]
        n_freq = n // 2 + 1
        self.n = n
        self.beta = beta
        kern = 2 * math.pi * circle_kernel_coefficients(beta, n_freq - 1)  # 2 pi e^-b I_k(b)
        k = torch.arange(n_freq, dtype=torch.float64)
        # highest kept frequency: the 2/3 rule (|k| <= n/3) or all but the Nyquist mode
        self.k_cut = n // 3 if dealias else (n - 1) // 2
        keep = (k <= self.k_cut).to(torch.float64)
        ik = 1j * k * keep  # spectral derivative; the Nyquist mode's derivative is set to 0
        cdt = _complex_dtype(rho.dtype)
        self.keep = keep.to(dtype=rho.dtype, device=rho.device)
        self.ik = ik.to(dtype=cdt, device=rho.device)
        self.kern = (kern * keep).to(dtype=rho.dtype, device=rho.device)
        self.filter = None
        if filter_order is not None:
            sigma = torch.exp(-_FILTER_ALPHA * (k / self.k_cut) ** filter_order) * keep
            self.filter = sigma.to(dtype=rho.dtype, device=rho.device)

    def velocity(self, rho_hat: torch.Tensor) -> torch.Tensor:
        """``v = (1/beta) Z' / Z`` on the grid, ``Z = k_beta * rho`` (scaled by ``e^{-beta}``)."""
        z_hat = self.kern * rho_hat
        z = torch.fft.irfft(z_hat, n=self.n)
        dz = torch.fft.irfft(self.ik * z_hat, n=self.n)
        return dz / (self.beta * z)

    def rhs(self, rho: torch.Tensor) -> torch.Tensor:
        """``d_t rho = -d_theta(rho v[rho])``, products on the grid, derivatives spectral."""
        rho_hat = torch.fft.rfft(rho) * self.keep
        flux = torch.fft.irfft(rho_hat, n=self.n) * self.velocity(rho_hat)
        return -torch.fft.irfft(self.ik * torch.fft.rfft(flux), n=self.n)

    def project(self, rho: torch.Tensor, multiplier: torch.Tensor | None = None) -> torch.Tensor:
        return torch.fft.irfft(
            torch.fft.rfft(rho) * (self.keep if multiplier is None else multiplier), n=self.n
        )


def circle_velocity(rho: torch.Tensor, beta: float) -> torch.Tensor:
    """The mean-field velocity on the circle, evaluated on the grid of ``rho``.

    ``v[rho](theta) = int e^{beta cos(theta - phi)} sin(phi - theta) rho(phi) dphi / Z(theta)``,
    ``Z(theta) = int e^{beta cos(theta - phi)} rho(phi) dphi``: the angular component of the
    attention field for ``Q = K = V = I`` (the particle moves by ``v e_theta``,
    ``e_theta = (-sin theta, cos theta)``). Computed as ``(1/beta) d_theta log Z`` with FFTs.

    Args:
        rho: density on :func:`circle_grid`, ``(..., n_grid)`` (``n_grid >= 3``).
        beta: > 0.

    Returns:
        ``(..., n_grid)``.
    """
    rho = _check_density("rho", rho, 1)
    beta = _check_real("beta", beta, positive=True)
    if rho.shape[-1] < 3:
        raise ValueError(f"rho must have at least 3 grid points, got shape {tuple(rho.shape)}")
    ops = _CircleOperators(rho, beta, dealias=False, filter_order=None)
    return ops.velocity(torch.fft.rfft(rho) * ops.keep)


def solve_circle(
    rho0: torch.Tensor,
    beta: float,
    t_max: float,
    dt: float,
    *,
    record_every: int = 1,
    filter_order: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Solve ``d_t rho + d_theta(rho v[rho]) = 0`` on the circle (Fourier pseudo-spectral, RK4).

    Right-hand side: ``rho_hat = FFT(rho)``; ``Z_hat_k = 2 pi e^{-beta} I_k(beta) rho_hat_k``
    (the convolution by FFT); ``v = Z' / (beta Z)`` with ``Z, Z'`` from inverse FFTs; the flux
    ``rho v`` is formed on the grid and differentiated spectrally. Time: classical RK4, step
    ``t_max / ceil(t_max / dt)``.

    Dealiasing: the 2/3 rule. Only frequencies ``|k| <= n_grid / 3`` are kept, in the initial
    density and in every right-hand side, so the aliases of the product ``rho v`` (``v`` is
    smooth: a ratio of two kernel convolutions) fall on discarded modes. With ``filter_order=p``
    the exponential (Hou-Li) filter ``exp(-36 (|k| / k_cut)^p)`` also multiplies the coefficients
    after every step; it damps the Gibbs oscillations once clusters become sharper than the grid
    (use it for long runs at large ``beta``; ``p = 36`` is customary).

    Mass: the ``k = 0`` coefficient of ``d_theta(rho v)`` is exactly zero, and the filter leaves
    ``k = 0`` alone, so ``int rho dtheta = (2 pi / n_grid) sum_j rho_j`` is conserved to rounding.
    Stability: ``|v| <= 1``, so RK4 needs about ``dt <= 2.8 / k_cut`` (CFL).

    Validity: the exact solution concentrates into clusters that sharpen exponentially in time
    (it tends to Dirac masses). A fixed grid resolves them only while they are wider than about
    ``2 pi / k_cut``; after that Gibbs oscillations make ``rho`` negative and the run loses its
    meaning (without a filter it soon overflows). Watch ``rho.min()``: the solver is for the
    onset of clustering (linear growth, the first nonlinear stage), particles for what follows.

    Args:
        rho0: initial density on :func:`circle_grid`, ``(..., n_grid)`` (``n_grid >= 8``);
            leading dimensions are independent problems.
        beta: > 0.
        t_max: final time, > 0.
        dt: largest time step, > 0.
        record_every: keep one frame every ``record_every`` steps (and the last one).
        filter_order: order ``p`` of the exponential filter, or ``None`` for none.
        progress: show a tqdm progress bar.

    Returns:
        ``(T, ..., n_grid)``: the density at the times of :func:`labcore.dynamics.time_grid`;
        frame 0 is ``rho0`` with the frequencies above ``n_grid / 3`` removed.
    """
    rho0 = _check_density("rho0", rho0, 1)
    if rho0.shape[-1] < 8:
        raise ValueError(f"rho0 must have at least 8 grid points, got shape {tuple(rho0.shape)}")
    beta = _check_real("beta", beta, positive=True)
    t_max = _check_real("t_max", t_max, positive=True)
    dt = _check_real("dt", dt, positive=True)
    check_positive_int("record_every", record_every)
    _check_filter(filter_order)
    ops = _CircleOperators(rho0, beta, dealias=True, filter_order=filter_order)
    after = None if ops.filter is None else (lambda r: ops.project(r, ops.filter))
    return _integrate(
        ops.project(rho0),
        lambda _t, r: ops.rhs(r),
        t_max,
        dt,
        "rk4",
        record_every,
        progress,
        after_step=after,
        desc="solve_circle",
    )


# --------------------------------------------------------------------------------------------------
# The sphere S^2: spherical harmonics on a Gauss-Legendre x uniform-longitude grid
# --------------------------------------------------------------------------------------------------
def _legendre_tables(l_max: int, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal associated Legendre functions and their theta-derivatives at ``mu = cos theta``.

    ``P[l, m]`` is normalised so that ``Y_lm = P[l, m](cos theta) e^{i m phi}`` is orthonormal on
    ``S^2`` (Condon-Shortley phase included, as in scipy); ``dP[l, m] = d/dtheta P[l, m]``. Standard
    three-term recurrences:
    ``P_00 = 1/sqrt(4 pi)``, ``P_mm = -sqrt((2m+1)/(2m)) sin(theta) P_{m-1,m-1}``,
    ``P_{m+1,m} = sqrt(2m+3) mu P_mm``,
    ``P_lm = a_lm (mu P_{l-1,m} - b_lm P_{l-2,m})`` with ``a_lm = sqrt((4l^2-1)/(l^2-m^2))``,
    ``b_lm = sqrt(((l-1)^2-m^2)/(4(l-1)^2-1))``; and
    ``dP_lm/dtheta = (l mu P_lm - sqrt((2l+1)/(2l-1) (l^2-m^2)) P_{l-1,m}) / sin(theta)``.

    Returns:
        ``P, dP``: ``(l_max + 1, l_max + 1, n)`` indexed ``[l, m, i]``, zero where ``m > l``.
    """
    n = mu.shape[0]
    s = np.sqrt(1.0 - mu**2)
    P = np.zeros((l_max + 1, l_max + 1, n))
    P[0, 0] = math.sqrt(1 / (4 * math.pi))
    for m in range(1, l_max + 1):
        P[m, m] = -math.sqrt((2 * m + 1) / (2 * m)) * s * P[m - 1, m - 1]
    for m in range(l_max):
        P[m + 1, m] = math.sqrt(2 * m + 3) * mu * P[m, m]
    for m in range(l_max + 1):
        for ell in range(m + 2, l_max + 1):
            a = math.sqrt((4 * ell**2 - 1) / (ell**2 - m**2))
            b = math.sqrt(((ell - 1) ** 2 - m**2) / (4 * (ell - 1) ** 2 - 1))
            P[ell, m] = a * (mu * P[ell - 1, m] - b * P[ell - 2, m])
    dP = np.zeros_like(P)
    for ell in range(1, l_max + 1):
        for m in range(ell + 1):
            c = math.sqrt((2 * ell + 1) / (2 * ell - 1) * (ell**2 - m**2))
            dP[ell, m] = (ell * mu * P[ell, m] - c * P[ell - 1, m]) / s
    return P, dP


class SphereGrid:
    """Spherical harmonics up to degree ``l_max`` on a Gauss-Legendre x uniform-longitude grid.

    Grid: ``n_lat`` colatitudes ``theta_i = arccos(mu_i)`` at the Gauss-Legendre nodes ``mu_i``
    (ordered from the north pole down; no node sits on a pole) and ``n_lon`` longitudes
    ``phi_j = 2 pi j / n_lon``. The quadrature ``int f dsigma ~ sum_ij w_i (2 pi / n_lon) f_ij``
    is exact for polynomials of degree ``<= 2 n_lat - 1`` in ``mu`` and ``< n_lon`` in ``phi``.
    The defaults ``n_lat = 3 l_max // 2 + 2`` and ``n_lon = 2 n_lat`` integrate products of three
    degree-``l_max`` functions exactly (the 3/2 rule: quadratic terms are dealiased).

    Coefficients: ``c[..., l, m]`` for ``0 <= m <= l <= l_max`` in the complex orthonormal basis
    ``Y_lm = P_lm(cos theta) e^{i m phi}``; a real function is
    ``f = sum_l (c_l0 Y_l0 + 2 Re sum_{m > 0} c_lm Y_lm)``. This is the real basis in disguise:
    the coefficients of ``sqrt(2) P_lm cos(m phi)`` and ``sqrt(2) P_lm sin(m phi)`` are
    ``sqrt(2) Re c_lm`` and ``-sqrt(2) Im c_lm`` (:meth:`real_coefficients`). Transforms are an
    FFT in longitude followed by a Legendre sum in latitude, ``O(l_max^2 n_lat)`` per field.

    Args:
        l_max: largest degree, >= 1.
        n_lat: number of latitudes, >= l_max + 1 (default ``3 l_max // 2 + 2``).
        n_lon: number of longitudes, >= 2 l_max + 2 (default ``2 n_lat``).
    """

    def __init__(self, l_max: int, n_lat: int | None = None, n_lon: int | None = None):
        check_positive_int("l_max", l_max)
        n_lat = 3 * l_max // 2 + 2 if n_lat is None else n_lat
        check_positive_int("n_lat", n_lat)
        n_lon = 2 * n_lat if n_lon is None else n_lon
        check_positive_int("n_lon", n_lon)
        if n_lat < l_max + 1:
            raise ValueError(f"n_lat must be >= l_max + 1 = {l_max + 1}, got {n_lat}")
        if n_lon < 2 * l_max + 2:
            raise ValueError(f"n_lon must be >= 2 l_max + 2 = {2 * l_max + 2}, got {n_lon}")
        self.l_max, self.n_lat, self.n_lon = l_max, n_lat, n_lon
        mu, w = np.polynomial.legendre.leggauss(n_lat)
        mu, w = mu[::-1].copy(), w[::-1].copy()  # north to south
        self._mu, self._w = mu, w
        self._theta = np.arccos(mu)
        self._phi = 2 * np.pi * np.arange(n_lon) / n_lon
        P, dP = _legendre_tables(l_max, mu)
        dphi = 2 * np.pi / n_lon
        m = np.arange(l_max + 1)
        self._np = {
            "P": P,  # [l, m, i]
            "dP": dP,  # d/dtheta
            "P_sin": P / np.sqrt(1 - mu**2),  # P / sin(theta)
            "Pw": P * (w * dphi),  # with the quadrature weights (analysis)
            "dPw": dP * (w * dphi),
            "P_sin_w": P / np.sqrt(1 - mu**2) * (w * dphi),
            "im": 1j * m,  # d/dphi on e^{i m phi}
            "area": np.outer(w * dphi, np.ones(n_lon)),  # (n_lat, n_lon) quadrature weights
            "theta": self._theta,
            "phi": self._phi,
        }
        self._cache: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"SphereGrid(l_max={self.l_max}, n_lat={self.n_lat}, n_lon={self.n_lon})"

    # tables on the device and dtype of a reference tensor ---------------------------------------
    def _t(self, name: str, ref: torch.Tensor, complex_: bool = False) -> torch.Tensor:
        dtype = ref.dtype
        if dtype.is_complex:
            dtype = ref.real.dtype
        if complex_ or np.iscomplexobj(self._np[name]):
            dtype = _complex_dtype(dtype)
        key = (name, dtype, ref.device)
        if key not in self._cache:
            self._cache[key] = torch.as_tensor(self._np[name], dtype=dtype, device=ref.device)
        return self._cache[key]

    def _check_field(self, name: str, f: object) -> torch.Tensor:
        return check_tensor(name, f, min_ndim=2, shape=(self.n_lat, self.n_lon), floating=True)

    def _check_coefficients(self, name: str, c: object) -> torch.Tensor:
        c = check_tensor(name, c, min_ndim=2, shape=(self.l_max + 1, self.l_max + 1))
        if not c.is_complex():
            raise TypeError(f"{name} must be a complex tensor of coefficients, got {c.dtype}")
        return c

    # grid -------------------------------------------------------------------------------------
    def colatitudes(
        self, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``(n_lat,)``: the colatitudes ``theta_i`` in ``(0, pi)``, north to south."""
        return torch.as_tensor(self._theta, dtype=dtype or torch.float64, device=device)

    def longitudes(
        self, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``(n_lon,)``: the longitudes ``phi_j = 2 pi j / n_lon``."""
        return torch.as_tensor(self._phi, dtype=dtype or torch.float64, device=device)

    def area_weights(
        self, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``(n_lat, n_lon)``: quadrature weights ``w_i 2 pi / n_lon`` (they sum to ``4 pi``)."""
        return torch.as_tensor(self._np["area"], dtype=dtype or torch.float64, device=device)

    def points(
        self, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``(n_lat, n_lon, 3)``: the grid points ``(sin t cos p, sin t sin p, cos t)``."""
        t, p = torch.meshgrid(
            self.colatitudes(dtype=dtype, device=device),
            self.longitudes(dtype=dtype, device=device),
            indexing="ij",
        )  # (n_lat, n_lon) each
        return torch.stack(
            [torch.sin(t) * torch.cos(p), torch.sin(t) * torch.sin(p), torch.cos(t)], dim=-1
        )

    def integrate(self, f: torch.Tensor) -> torch.Tensor:
        """``int f dsigma`` by the grid's quadrature; ``f: (..., n_lat, n_lon)`` -> ``(...)``."""
        f = self._check_field("f", f)
        return (f * self._t("area", f)).sum(dim=(-2, -1))

    # transforms -------------------------------------------------------------------------------
    def _rfft(self, f: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(f, dim=-1)[..., : self.l_max + 1]  # (..., n_lat, l_max + 1)

    def _irfft(self, g: torch.Tensor) -> torch.Tensor:
        """``sum_m g_m e^{i m phi}`` (real part, ``m > 0`` counted twice) on the longitudes."""
        pad = self.n_lon // 2 + 1 - g.shape[-1]
        g = torch.cat([g, g.new_zeros((*g.shape[:-1], pad))], dim=-1)
        return torch.fft.irfft(g * self.n_lon, n=self.n_lon, dim=-1)

    def analysis(self, f: torch.Tensor) -> torch.Tensor:
        """Coefficients ``c_lm = int f conj(Y_lm) dsigma`` by quadrature.

        Args:
            f: ``(..., n_lat, n_lon)``, real.

        Returns:
            ``(..., l_max + 1, l_max + 1)`` complex, ``[l, m]``, zero where ``m > l``. Exact for
            band-limited ``f`` (degree <= ``l_max``).
        """
        f = self._check_field("f", f)
        return torch.einsum("lmi,...im->...lm", self._t("Pw", f, True), self._rfft(f))

    def synthesis(self, c: torch.Tensor) -> torch.Tensor:
        """The real function ``sum_l (c_l0 Y_l0 + 2 Re sum_{m>0} c_lm Y_lm)`` on the grid.

        Args:
            c: ``(..., l_max + 1, l_max + 1)`` complex.

        Returns:
            ``(..., n_lat, n_lon)`` real.
        """
        c = self._check_coefficients("c", c)
        return self._irfft(torch.einsum("lmi,...lm->...im", self._t("P", c, True), c))

    def gradient(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Components ``(d_theta f, (1/sin theta) d_phi f)`` of ``grad_S f`` on the grid.

        Args:
            c: the coefficients of ``f``, ``(..., l_max + 1, l_max + 1)``.

        Returns:
            Two ``(..., n_lat, n_lon)`` tensors: along ``e_theta`` (southward) and ``e_phi``
            (eastward).
        """
        c = self._check_coefficients("c", c)
        g_theta = torch.einsum("lmi,...lm->...im", self._t("dP", c, True), c)
        g_phi = torch.einsum("lmi,...lm->...im", self._t("P_sin", c, True), c) * self._t("im", c)
        return self._irfft(g_theta), self._irfft(g_phi)

    def divergence(self, f_theta: torch.Tensor, f_phi: torch.Tensor) -> torch.Tensor:
        """Coefficients of ``div_S F`` for a tangent field ``F = f_theta e_theta + f_phi e_phi``.

        Weak form (integration by parts on the closed sphere)::

            (div F)_lm = int div(F) conj(Y_lm) dsigma = -int F . grad conj(Y_lm) dsigma

        evaluated with the grid's quadrature. ``grad Y_00 = 0``, so ``(div F)_00 = 0`` exactly:
        a flux never changes the mass.

        Returns:
            ``(..., l_max + 1, l_max + 1)`` complex.
        """
        f_theta = self._check_field("f_theta", f_theta)
        f_phi = self._check_field("f_phi", f_phi)
        a = torch.einsum("lmi,...im->...lm", self._t("dPw", f_theta, True), self._rfft(f_theta))
        b = torch.einsum("lmi,...im->...lm", self._t("P_sin_w", f_phi, True), self._rfft(f_phi))
        return -(a - b * self._t("im", f_phi))

    def real_coefficients(self, c: torch.Tensor) -> torch.Tensor:
        """The same function's coefficients in the real orthonormal basis.

        Order ``(l, m)`` with ``m = -l .. l``: ``m = 0`` is ``Y_l0``, ``m > 0`` is
        ``sqrt(2) P_lm cos(m phi)`` with coefficient ``sqrt(2) Re c_lm``, ``m < 0`` is
        ``sqrt(2) P_l|m| sin(|m| phi)`` with coefficient ``-sqrt(2) Im c_l|m|``.

        Returns:
            ``(..., (l_max + 1)^2)`` real.
        """
        c = self._check_coefficients("c", c)
        out = []
        for ell in range(self.l_max + 1):
            row = c[..., ell, : ell + 1]
            sin = -math.sqrt(2) * row[..., 1:].imag.flip(-1)
            cos = math.sqrt(2) * row[..., 1:].real
            out.append(torch.cat([sin, row[..., :1].real, cos], dim=-1))
        return torch.cat(out, dim=-1)

    def power_spectrum(self, c: torch.Tensor) -> torch.Tensor:
        """Energy per degree ``E_l = sum_{m=-l}^{l} |a_lm|^2 = |c_l0|^2 + 2 sum_{m>0} |c_lm|^2``.

        Returns:
            ``(..., l_max + 1)``; ``sum_l E_l = int f^2 dsigma`` (Parseval).
        """
        c = self._check_coefficients("c", c)
        e = c.abs() ** 2
        return e[..., 0] + 2 * e[..., 1:].sum(dim=-1)

    def tangent_to_cartesian(self, f_theta: torch.Tensor, f_phi: torch.Tensor) -> torch.Tensor:
        """``f_theta e_theta + f_phi e_phi`` as vectors of ``R^3``: ``(..., n_lat, n_lon, 3)``.

        ``e_theta = (cos t cos p, cos t sin p, -sin t)``, ``e_phi = (-sin p, cos p, 0)``.
        """
        f_theta = self._check_field("f_theta", f_theta)
        f_phi = self._check_field("f_phi", f_phi)
        t, p = torch.meshgrid(self._t("theta", f_theta), self._t("phi", f_theta), indexing="ij")
        e_theta = torch.stack(
            [torch.cos(t) * torch.cos(p), torch.cos(t) * torch.sin(p), -torch.sin(t)], dim=-1
        )  # (n_lat, n_lon, 3)
        e_phi = torch.stack([-torch.sin(p), torch.cos(p), torch.zeros_like(p)], dim=-1)
        return f_theta[..., None] * e_theta + f_phi[..., None] * e_phi


class _SphereOperators:
    """The continuity equation's right-hand side in spherical-harmonic coefficients."""

    def __init__(self, grid: SphereGrid, ref: torch.Tensor, beta: float, filter_order: int | None):
        self.grid = grid
        self.beta = beta
        lam = funk_hecke_coefficients(beta, grid.l_max)  # e^{-beta} lambda_l
        self.lam = lam[:, None].to(dtype=ref.dtype, device=ref.device)  # (l_max + 1, 1)
        self.filter = None
        if filter_order is not None:
            ell = torch.arange(grid.l_max + 1, dtype=torch.float64)
            sigma = torch.exp(-_FILTER_ALPHA * (ell / grid.l_max) ** filter_order)
            self.filter = sigma[:, None].to(dtype=ref.dtype, device=ref.device)

    def velocity(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``chi = grad_S Z / (beta Z)`` on the grid, ``Z = k_beta * rho`` by Funk-Hecke."""
        z_c = c * self.lam
        z = self.grid.synthesis(z_c)
        z_theta, z_phi = self.grid.gradient(z_c)
        return z_theta / (self.beta * z), z_phi / (self.beta * z)

    def rhs(self, c: torch.Tensor) -> torch.Tensor:
        rho = self.grid.synthesis(c)
        v_theta, v_phi = self.velocity(c)
        return -self.grid.divergence(rho * v_theta, rho * v_phi)


def _check_grid(grid: object) -> SphereGrid:
    if not isinstance(grid, SphereGrid):
        raise TypeError(f"grid must be a SphereGrid, got {type(grid).__name__}")
    return grid


def sphere_velocity(rho: torch.Tensor, grid: SphereGrid, beta: float) -> torch.Tensor:
    """The mean-field field ``chi[rho]`` on the grid of ``S^2``, as vectors of ``R^3``.

    ``chi[rho](x) = P_perp_x( int e^{beta <x, y>} y rho(y) dsigma / int e^{beta <x, y>} rho(y)
    dsigma ) = (1/beta) grad_S log Z`` with ``Z`` by Funk-Hecke from the coefficients of ``rho``
    up to degree ``grid.l_max``.

    Args:
        rho: density, ``(..., n_lat, n_lon)``.
        grid: the :class:`SphereGrid` of ``rho``.
        beta: > 0.

    Returns:
        ``(..., n_lat, n_lon, 3)``: tangent vectors.
    """
    grid = _check_grid(grid)
    rho = grid._check_field("rho", rho)
    beta = _check_real("beta", beta, positive=True)
    ops = _SphereOperators(grid, rho, beta, None)
    return grid.tangent_to_cartesian(*ops.velocity(grid.analysis(rho)))


def solve_sphere(
    rho0: torch.Tensor,
    grid: SphereGrid,
    beta: float,
    t_max: float,
    dt: float,
    *,
    record_every: int = 1,
    filter_order: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Solve ``d_t rho + div_S(rho chi[rho]) = 0`` on ``S^2`` with spherical harmonics and RK4.

    The unknowns are the coefficients ``c_lm``, ``l <= l_max`` (a Galerkin truncation). Right-hand
    side: ``Z_lm = e^{-beta} lambda_l c_lm`` (Funk-Hecke, :func:`funk_hecke_coefficients`);
    ``Z``, ``grad_S Z`` and ``rho`` are synthesised on the grid; the flux
    ``rho chi = rho grad_S Z / (beta Z)`` is formed pointwise; its divergence is projected back on
    the harmonics in weak form (:meth:`SphereGrid.divergence`). Time: classical RK4, step
    ``t_max / ceil(t_max / dt)``.

    Dealiasing: the default grid integrates products of three degree-``l_max`` functions exactly
    (3/2 rule). With ``filter_order=p`` the coefficients are multiplied after each step by
    ``exp(-36 (l / l_max)^p)``, which damps the ringing once clusters become sharper than the
    truncation can resolve.

    Mass: ``(div F)_00 = 0`` exactly and the filter leaves ``l = 0`` alone, so
    ``int rho dsigma = sqrt(4 pi) c_00`` is conserved to rounding.

    Validity: as on the circle (:func:`solve_circle`), clusters sharpen exponentially; once they
    are narrower than about ``pi / l_max`` the truncated expansion rings, ``rho`` turns negative
    and the run loses its meaning. Watch ``rho.min()``.

    Args:
        rho0: initial density on ``grid``, ``(..., n_lat, n_lon)`` (projected on degrees
            ``<= l_max``).
        grid: a :class:`SphereGrid`.
        beta: > 0.
        t_max: final time, > 0.
        dt: largest step, > 0 (``|chi| <= 1``; about ``dt <= 2 / l_max`` is stable).
        record_every: keep one frame every ``record_every`` steps (and the last one).
        filter_order: order of the exponential filter, or ``None``.
        progress: show a tqdm progress bar.

    Returns:
        ``(T, ..., n_lat, n_lon)``: the density at the times of
        :func:`labcore.dynamics.time_grid`; frame 0 is ``rho0`` projected on degrees
        ``<= l_max``.
    """
    grid = _check_grid(grid)
    rho0 = grid._check_field("rho0", rho0)
    beta = _check_real("beta", beta, positive=True)
    t_max = _check_real("t_max", t_max, positive=True)
    dt = _check_real("dt", dt, positive=True)
    check_positive_int("record_every", record_every)
    _check_filter(filter_order)
    ops = _SphereOperators(grid, rho0, beta, filter_order)
    after: Callable[[torch.Tensor], torch.Tensor] | None = None
    if ops.filter is not None:
        sigma = ops.filter

        def after(c: torch.Tensor) -> torch.Tensor:
            return c * sigma

    coefficients = _integrate(
        grid.analysis(rho0),
        lambda _t, c: ops.rhs(c),
        t_max,
        dt,
        "rk4",
        record_every,
        progress,
        after_step=after,
        desc="solve_sphere",
    )
    return grid.synthesis(coefficients)


# --------------------------------------------------------------------------------------------------
# Particles <-> densities
# --------------------------------------------------------------------------------------------------
def _check_grid_arg(grid: object) -> int | SphereGrid:
    if isinstance(grid, SphereGrid):
        return grid
    if isinstance(grid, bool) or not isinstance(grid, int):
        raise TypeError(
            f"grid must be an int (n_grid, the circle) or a SphereGrid, got {type(grid).__name__}"
        )
    check_positive_int("grid", grid)
    return grid


def particles_to_density(
    x: torch.Tensor, grid: int | SphereGrid, kappa: float = 20.0
) -> torch.Tensor:
    """Kernel density estimate of particles, on the solvers' grid.

    Circle (``grid = n_grid``, ``x: (..., n_particles, 2)``): the von Mises kernel
    ``rho(theta) = (1/n) sum_i e^{kappa cos(theta - theta_i)} / (2 pi I_0(kappa))``.
    Sphere (``grid`` a :class:`SphereGrid`, ``x: (..., n_particles, 3)``): the von Mises-Fisher
    kernel ``rho(u) = (1/n) sum_i kappa e^{kappa <u, x_i>} / (4 pi sinh kappa)``.
    Each kernel has mass one; its width is about ``1 / sqrt(kappa)``. The estimate is the
    empirical measure convolved with the kernel, so compare it with
    ``smooth_density(rho, grid, kappa)`` of a mean-field solution: both then carry the same
    smoothing and differ only by the sampling error (``O(n^{-1/2})``) and the dynamics.

    Args:
        x: particles (unit vectors), ``(..., n_particles, d)`` with ``d = 2`` or ``3``.
        grid: ``n_grid`` for the circle or a :class:`SphereGrid`.
        kappa: kernel concentration, > 0.

    Returns:
        ``(..., n_grid)`` or ``(..., n_lat, n_lon)``.
    """
    grid = _check_grid_arg(grid)
    kappa = _check_real("kappa", kappa, positive=True)
    d = 2 if isinstance(grid, int) else 3
    x = check_tensor("x", x, min_ndim=2, shape=(None, d), floating=True)
    if isinstance(grid, int):
        theta = circle_grid(grid, dtype=x.dtype, device=x.device)
        u = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)  # (n_grid, 2)
        const = 1 / (2 * math.pi * circle_kernel_coefficients(kappa, 0)[0].item())
    else:
        u = grid.points(dtype=x.dtype, device=x.device).reshape(-1, 3)  # (n_lat * n_lon, 3)
        const = kappa / (2 * math.pi * -math.expm1(-2 * kappa))
    # (..., n_particles, n_points) -> mean over particles
    rho = const * torch.exp(kappa * (x @ u.mT - 1)).mean(dim=-2)
    return rho if isinstance(grid, int) else rho.reshape(*rho.shape[:-1], grid.n_lat, grid.n_lon)


def smooth_density(rho: torch.Tensor, grid: int | SphereGrid, kappa: float = 20.0) -> torch.Tensor:
    """Convolve a density with the kernel of :func:`particles_to_density`, spectrally.

    Circle: ``rho_hat_k *= I_k(kappa) / I_0(kappa)``; sphere: ``c_lm *= lambda_l(kappa) /
    lambda_0(kappa)`` (Funk-Hecke for ``e^{kappa <x, y>}``; the sphere's result is band-limited to
    ``grid.l_max``).

    Args:
        rho: ``(..., n_grid)`` with ``n_grid == grid``, or ``(..., n_lat, n_lon)``.
        grid: ``n_grid`` or a :class:`SphereGrid`.
        kappa: > 0.

    Returns:
        The smoothed density, same shape.
    """
    grid = _check_grid_arg(grid)
    kappa = _check_real("kappa", kappa, positive=True)
    if isinstance(grid, int):
        rho = check_tensor("rho", rho, min_ndim=1, shape=(grid,), floating=True)
        c = circle_kernel_coefficients(kappa, grid // 2, dtype=rho.dtype, device=rho.device)
        return torch.fft.irfft(torch.fft.rfft(rho) * (c / c[0]), n=grid)
    rho = grid._check_field("rho", rho)
    lam = funk_hecke_coefficients(kappa, grid.l_max, dtype=rho.dtype, device=rho.device)
    return grid.synthesis(grid.analysis(rho) * (lam / lam[0])[:, None])


def sample_from_density(
    rho: torch.Tensor,
    grid: int | SphereGrid,
    n_particles: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw particles from a density on the solvers' grid (piecewise constant on grid cells).

    A cell is chosen with probability proportional to ``max(rho, 0)`` times its area, then a point
    uniformly inside it: on the circle the cell of ``theta_j`` is
    ``[theta_j - pi / n_grid, theta_j + pi / n_grid)``; on ``S^2`` the cell of ``(theta_i, phi_j)``
    spans ``phi_j +- pi / n_lon`` in longitude and, in ``mu = cos theta``, the band between the
    partial sums of the Gauss-Legendre weights around ``mu_i`` (area ``w_i 2 pi / n_lon``,
    uniform in ``mu`` = uniform in area).

    Args:
        rho: ``(..., n_grid)`` or ``(..., n_lat, n_lon)``.
        grid: ``n_grid`` or a :class:`SphereGrid`.
        n_particles: particles per density.
        seed / generator: randomness (a generator on ``rho``'s device).

    Returns:
        ``(..., n_particles, 2)`` or ``(..., n_particles, 3)`` unit vectors.
    """
    grid = _check_grid_arg(grid)
    check_positive_int("n_particles", n_particles)
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both")
    if isinstance(grid, int):
        rho = check_tensor("rho", rho, min_ndim=1, shape=(grid,), floating=True)
        batch = rho.shape[:-1]
        weights = rho.clamp(min=0).reshape(-1, grid)
    else:
        rho = grid._check_field("rho", rho)
        batch = rho.shape[:-2]
        weights = (rho.clamp(min=0) * grid._t("area", rho)).reshape(-1, grid.n_lat * grid.n_lon)
    if seed is not None:
        generator = torch.Generator(device=rho.device).manual_seed(seed)
    cells = torch.multinomial(weights, n_particles, replacement=True, generator=generator)
    jitter = torch.rand((*cells.shape, 2), generator=generator, dtype=rho.dtype, device=rho.device)
    if isinstance(grid, int):
        theta = (cells.to(rho.dtype) + jitter[..., 0] - 0.5) * (2 * math.pi / grid)
        x = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)
    else:
        i, j = cells // grid.n_lon, cells % grid.n_lon
        phi = (j.to(rho.dtype) + jitter[..., 0] - 0.5) * (2 * math.pi / grid.n_lon)
        edges = 1 - np.concatenate([[0.0], np.cumsum(grid._w)])  # mu from 1 down to -1
        top = torch.as_tensor(edges[:-1], dtype=rho.dtype, device=rho.device)[i]
        bottom = torch.as_tensor(edges[1:], dtype=rho.dtype, device=rho.device)[i]
        mu = bottom + jitter[..., 1] * (top - bottom)
        s = torch.sqrt((1 - mu**2).clamp(min=0))
        x = torch.stack([s * torch.cos(phi), s * torch.sin(phi), mu], dim=-1)
    return x.reshape(*batch, n_particles, x.shape[-1])
