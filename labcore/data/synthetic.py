"""Small synthetic data sets in one and two dimensions, reproducible from a seed.

Every function draws from its own ``torch.Generator`` seeded by ``seed`` (in float64 on the CPU,
then converted), so the same seed gives the same samples whatever ``device`` and ``dtype`` are asked
for and whatever else has used the global random number generators.

- ``regression_1d``: noisy samples of a function of one variable, for fitting curves.
- ``two_moons`` and ``spirals``: two-dimensional classification sets that no linear model separates.
- ``gaussian_mixture_1d``: samples of a mixture of normal distributions, for maximum likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["REGRESSION_FUNCTIONS", "gaussian_mixture_1d", "regression_1d", "spirals", "two_moons"]

Tensor = torch.Tensor

#: name -> target function of ``regression_1d``.
REGRESSION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sin": torch.sin,
    "cos": torch.cos,
    "abs": torch.abs,
    "cubic": lambda x: x**3,
    "step": lambda x: (x >= 0).to(x.dtype),
}


def _generator(seed: object) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    return torch.Generator().manual_seed(seed)


def _check_n(name: str, n: object, least: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < least:
        raise ValueError(f"{name} must be >= {least}, got {n}")
    return n


def _check_noise(noise: object) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)):
        raise TypeError(f"noise must be a float, got {type(noise).__name__}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    return float(noise)


def _check_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


def regression_1d(
    n: int = 200,
    fn: str | Callable[[Tensor], Tensor] = "sin",
    noise: float = 0.1,
    seed: int = 0,
    x_range: tuple[float, float] = (-math.pi, math.pi),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Noisy samples ``y = fn(x) + noise * eps`` of a function of one variable.

    ``x`` is uniform on ``x_range`` (sorted, for easy plotting) and ``eps ~ N(0, 1)``.

    Args:
        n: number of samples.
        fn: a key of ``REGRESSION_FUNCTIONS`` (``"sin"``, ``"cos"``, ``"abs"``, ``"cubic"``,
            ``"step"``) or a callable mapping a float64 tensor ``(n, 1)`` to ``(n, 1)``.
        noise: standard deviation of the additive Gaussian noise.
        seed: seeds the sampling.
        x_range: ``(low, high)`` with ``low < high``.
        device, dtype: of the returned tensors.

    Returns:
        ``(x, y)``, both ``(n, 1)``: ready for ``MLP([1, ..., 1])`` and ``loss="mse"``.
    """
    _check_n("n", n)
    noise = _check_noise(noise)
    dtype = _check_dtype(dtype)
    if isinstance(fn, str):
        if fn not in REGRESSION_FUNCTIONS:
            raise ValueError(
                f"fn must be one of {sorted(REGRESSION_FUNCTIONS)} or a callable, got {fn!r}"
            )
        fn = REGRESSION_FUNCTIONS[fn]
    elif not callable(fn):
        raise TypeError(f"fn must be a name or a callable, got {type(fn).__name__}")
    if len(x_range) != 2 or not x_range[0] < x_range[1]:
        raise ValueError(f"x_range must be (low, high) with low < high, got {x_range}")
    g = _generator(seed)
    low, high = float(x_range[0]), float(x_range[1])
    x = low + (high - low) * torch.rand(n, 1, generator=g, dtype=torch.float64)  # (n, 1)
    x, _ = x.sort(dim=0)
    y = fn(x)
    if not isinstance(y, Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"fn must map x of shape {tuple(x.shape)} to the same shape, got {got}")
    y = y + noise * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


def two_moons(
    n: int = 200,
    noise: float = 0.1,
    seed: int = 0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Two interleaved half circles, as scikit-learn's ``make_moons``.

    Class 0: ``(cos t, sin t)``; class 1: ``(1 - cos t, 1/2 - sin t)``; ``t`` evenly spaced in
    ``[0, pi]``; then Gaussian noise of standard deviation ``noise`` on both coordinates, and the
    samples are shuffled.

    Args:
        n: number of samples (``n // 2`` in class 0, the rest in class 1), at least 2.
        noise: standard deviation of the noise.
        seed: seeds noise and order.
        device, dtype: of ``X``.

    Returns:
        ``(X, y)``: ``X (n, 2)``, ``y (n,)`` int64 in ``{0, 1}``.
    """
    _check_n("n", n, least=2)
    noise = _check_noise(noise)
    dtype = _check_dtype(dtype)
    g = _generator(seed)
    n_outer = n // 2
    n_inner = n - n_outer
    t_out = torch.linspace(0.0, math.pi, n_outer, dtype=torch.float64)
    t_in = torch.linspace(0.0, math.pi, n_inner, dtype=torch.float64)
    outer = torch.stack([torch.cos(t_out), torch.sin(t_out)], dim=-1)  # (n_outer, 2)
    inner = torch.stack([1.0 - torch.cos(t_in), 0.5 - torch.sin(t_in)], dim=-1)  # (n_inner, 2)
    X = torch.cat([outer, inner]) + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.cat([torch.zeros(n_outer, dtype=torch.int64), torch.ones(n_inner, dtype=torch.int64)])
    perm = torch.randperm(n, generator=g)
    return X[perm].to(device=device, dtype=dtype), y[perm].to(device=device)


def spirals(
    n: int = 300,
    n_classes: int = 3,
    noise: float = 0.05,
    seed: int = 0,
    *,
    turns: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Interleaved spiral arms, one per class.

    Arm ``k`` is ``r (cos theta, sin theta)`` with ``r`` evenly spaced in ``[0, 1]`` and
    ``theta = 2 pi (k / n_classes + turns * r)``; Gaussian noise of standard deviation ``noise`` is
    added to both coordinates and the samples are shuffled.

    Args:
        n: number of samples, split as evenly as possible (the first ``n % n_classes`` classes get
            one more); at least ``n_classes``.
        n_classes: number of arms, at least 2.
        noise: standard deviation of the noise.
        seed: seeds noise and order.
        turns: how many turns each arm makes.
        device, dtype: of ``X``.

    Returns:
        ``(X, y)``: ``X (n, 2)``, ``y (n,)`` int64 in ``0..n_classes-1``.
    """
    _check_n("n_classes", n_classes, least=2)
    _check_n("n", n, least=n_classes)
    noise = _check_noise(noise)
    dtype = _check_dtype(dtype)
    if not turns > 0:
        raise ValueError(f"turns must be > 0, got {turns}")
    g = _generator(seed)
    counts = [n // n_classes + (k < n % n_classes) for k in range(n_classes)]
    y = torch.repeat_interleave(torch.arange(n_classes), torch.tensor(counts))  # (n,)
    r = torch.cat([torch.linspace(0.0, 1.0, c, dtype=torch.float64) for c in counts])  # (n,)
    theta = 2.0 * math.pi * (y.to(torch.float64) / n_classes + turns * r)
    X = r[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)  # (n, 2)
    X = X + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    perm = torch.randperm(n, generator=g)
    return X[perm].to(device=device, dtype=dtype), y[perm].to(device=device)


def gaussian_mixture_1d(
    n: int = 1000,
    means: Sequence[float] = (-2.0, 2.0),
    stds: Sequence[float] = (0.5, 1.0),
    weights: Sequence[float] = (0.4, 0.6),
    seed: int = 0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Samples of the mixture ``p(x) = sum_k w_k N(x; mu_k, sigma_k^2)``.

    Each sample first draws its component ``z ~ Categorical(w)``, then ``x ~ N(mu_z, sigma_z^2)``;
    the components are returned too, to check a fitted model (e.g. by EM or gradient ascent on the
    log-likelihood) against the truth.

    Args:
        n: number of samples.
        means: ``mu_k``, one per component.
        stds: ``sigma_k > 0``.
        weights: ``w_k > 0``, summing to 1 (within 1e-6).
        seed: seeds the sampling.
        device, dtype: of ``x``.

    Returns:
        ``(x, z)``: ``x (n,)`` samples, ``z (n,)`` int64 component of each.
    """
    _check_n("n", n)
    dtype = _check_dtype(dtype)
    mu = torch.as_tensor(means, dtype=torch.float64)
    sigma = torch.as_tensor(stds, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64)
    if mu.ndim != 1 or mu.numel() == 0:
        raise ValueError(f"means must be a non-empty sequence of floats, got {means}")
    if sigma.shape != mu.shape or w.shape != mu.shape:
        raise ValueError(
            "means, stds and weights must have one entry per component, got lengths "
            f"{mu.numel()}, {sigma.numel()} and {w.numel()}"
        )
    if not bool((sigma > 0).all()):
        raise ValueError(f"stds must all be > 0, got {list(stds)}")
    if not bool((w > 0).all()) or abs(float(w.sum()) - 1.0) > 1e-6:
        raise ValueError(f"weights must be > 0 and sum to 1, got {list(weights)}")
    g = _generator(seed)
    z = torch.multinomial(w, n, replacement=True, generator=g)  # (n,)
    x = mu[z] + sigma[z] * torch.randn(n, generator=g, dtype=torch.float64)
    return x.to(device=device, dtype=dtype), z.to(device=device)
