"""Chapter 0, learning as function approximation: fitting a function and fitting a distribution.

Two problems run through the chapter:

* **Regression.** Given pairs ``(x_i, y_i)`` with ``y = f(x) + noise``, choose ``f_theta`` from a
  hypothesis class (polynomials, small networks) by minimising the mean squared error
  ``L(theta) = (1/n) sum_i (f_theta(x_i) - y_i)^2``. With Gaussian noise of fixed variance this is
  maximum likelihood (Bishop 2006, sec. 1.2.5; Goodfellow, Bengio and Courville 2016, sec. 5.5.1).
* **Density estimation.** Given samples ``x_i ~ p``, choose ``p_theta`` by maximising the average
  log-likelihood ``(1/n) sum_i log p_theta(x_i)``: in closed form for one Gaussian, by gradient
  descent for a mixture.

Every function is batched, creates its results on the input's device and dtype, and validates its
arguments with ``ValueError``/``TypeError`` messages that name them.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from labcore.validation import check_positive_int, check_tensor

__all__ = [
    "polynomial_features",
    "fit_least_squares",
    "make_regressor",
    "train_regressor",
    "gaussian_nll",
    "gaussian_mle",
    "mixture_nll",
    "mixture_density",
    "fit_mixture",
]


# --------------------------------------------------------------------------- regression
def polynomial_features(x: torch.Tensor, degree: int) -> torch.Tensor:
    """The Vandermonde features ``[1, x, x^2, ..., x^degree]`` of each input.

    Args:
        x: ``(batch,)`` or ``(batch, 1)`` inputs.
        degree: the largest power, ``>= 0``.

    Returns:
        ``(batch, degree + 1)`` with ``out[i, k] = x_i ** k``.
    """
    check_tensor("x", x, ndim=(1, 2), floating=True)
    if x.ndim == 2 and x.shape[1] != 1:
        raise ValueError(f"x must have shape (batch,) or (batch, 1), got {tuple(x.shape)}")
    check_positive_int("degree", degree, allow_zero=True)
    powers = torch.arange(degree + 1, device=x.device, dtype=x.dtype)  # (degree + 1,)
    return x.reshape(-1, 1) ** powers  # (batch, degree + 1)


def fit_least_squares(features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The weights ``w`` minimising ``||features @ w - y||^2`` (the normal equations, solved stably).

    Args:
        features: ``(batch, n_features)``.
        y: ``(batch,)`` targets.

    Returns:
        ``(n_features,)`` weights.
    """
    check_tensor("features", features, ndim=2, floating=True)
    check_tensor("y", y, ndim=1, floating=True)
    if y.shape[0] != features.shape[0]:
        raise ValueError(
            f"features and y must have the same batch size, got {features.shape[0]} and {y.shape[0]}"
        )
    return torch.linalg.lstsq(features, y.unsqueeze(-1)).solution.squeeze(-1)


def make_regressor(
    hidden: int = 32, depth: int = 2, activation: type[nn.Module] = nn.Tanh
) -> nn.Module:
    """A small fully connected network ``R -> R``: ``depth`` hidden layers of ``hidden`` units."""
    check_positive_int("hidden", hidden)
    check_positive_int("depth", depth)
    layers: list[nn.Module] = []
    width_in = 1
    for _ in range(depth):
        layers += [nn.Linear(width_in, hidden), activation()]
        width_in = hidden
    layers.append(nn.Linear(width_in, 1))
    return nn.Sequential(*layers)


def train_regressor(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 500,
    lr: float = 1e-2,
    progress: bool = False,
) -> list[float]:
    """Fit ``model`` to ``(x, y)`` by full-batch Adam on the mean squared error.

    ``L(theta) = (1/n) sum_i (model(x_i) - y_i)^2``; one Adam step per iteration
    (Kingma and Ba 2015).

    Args:
        model: maps ``(batch, 1) -> (batch, 1)``.
        x: ``(batch,)`` or ``(batch, 1)`` inputs; y: targets of the same shape.
        steps: number of gradient steps; lr: Adam's learning rate.
        progress: show a tqdm progress bar.

    Returns:
        The training loss before each step (``steps`` floats).
    """
    check_tensor("x", x, ndim=(1, 2), floating=True)
    check_tensor("y", y, ndim=(1, 2), floating=True)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}"
        )
    check_positive_int("steps", steps)
    inputs, targets = x.reshape(-1, 1), y.reshape(-1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in tqdm(range(steps), disable=not progress, desc="training"):
        optimizer.zero_grad()
        loss = ((model(inputs) - targets) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


# --------------------------------------------------------------------------- densities
def gaussian_nll(
    x: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float
) -> torch.Tensor:
    """Average negative log-likelihood of samples under ``N(mean, std^2)``.

    ``-(1/n) sum_i log N(x_i; mu, sigma^2) = log sigma + (1/2) log(2 pi) + mean_i (x_i - mu)^2 / (2 sigma^2)``

    Args:
        x: ``(batch,)`` samples; mean, std: scalars or 0-d tensors (std > 0).

    Returns:
        A 0-d tensor (differentiable in ``mean`` and ``std``).
    """
    check_tensor("x", x, ndim=1, floating=True)
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    if std.device.type != "meta" and bool((std <= 0).any()):
        raise ValueError(f"std must be positive, got {std}")
    return torch.log(std) + 0.5 * math.log(2 * math.pi) + ((x - mean) ** 2).mean() / (2 * std**2)


def gaussian_mle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum-likelihood Gaussian fit: ``mu = mean(x)``, ``sigma = sqrt(mean((x - mu)^2))``.

    Note the ``1/n`` (not ``1/(n-1)``): the maximum-likelihood variance is the biased one.

    Args:
        x: ``(batch,)`` samples, ``batch >= 1``.

    Returns:
        ``(mean, std)``, two 0-d tensors.
    """
    check_tensor("x", x, ndim=1, floating=True)
    if x.shape[0] < 1:
        raise ValueError("x must hold at least one sample")
    mean = x.mean()
    return mean, ((x - mean) ** 2).mean().sqrt()


def _check_mixture(x: torch.Tensor, logits, means, log_stds) -> None:
    check_tensor("x", x, ndim=1, floating=True)
    for name, value in (("logits", logits), ("means", means), ("log_stds", log_stds)):
        check_tensor(name, value, ndim=1, floating=True)
    if not logits.shape == means.shape == log_stds.shape:
        raise ValueError(
            "logits, means and log_stds must all have shape (n_components,), got "
            f"{tuple(logits.shape)}, {tuple(means.shape)} and {tuple(log_stds.shape)}"
        )


def _mixture_log_prob(x, logits, means, log_stds) -> torch.Tensor:
    """``(batch,)`` log densities: ``logsumexp_k [log pi_k + log N(x; mu_k, sigma_k^2)]``."""
    z = (x.unsqueeze(-1) - means) / log_stds.exp()  # (batch, n_components)
    log_normal = -0.5 * z**2 - log_stds - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(torch.log_softmax(logits, dim=-1) + log_normal, dim=-1)


def mixture_nll(
    x: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_stds: torch.Tensor
) -> torch.Tensor:
    """Average negative log-likelihood under a 1-D Gaussian mixture.

    ``p(x) = sum_k pi_k N(x; mu_k, sigma_k^2)`` with ``pi = softmax(logits)`` and
    ``sigma_k = exp(log_stds_k)``, so every real parameter vector is a valid mixture. The log of
    the sum is computed with ``logsumexp`` so that far-away samples do not underflow to ``log 0``.

    Args:
        x: ``(batch,)``; logits, means, log_stds: ``(n_components,)``.

    Returns:
        A 0-d tensor, ``-(1/n) sum_i log p(x_i)``.
    """
    _check_mixture(x, logits, means, log_stds)
    return -_mixture_log_prob(x, logits, means, log_stds).mean()


def mixture_density(
    x: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_stds: torch.Tensor
) -> torch.Tensor:
    """The mixture's density ``p(x)`` at each point of ``x`` (shape ``(batch,)``), for plots."""
    _check_mixture(x, logits, means, log_stds)
    return _mixture_log_prob(x, logits, means, log_stds).exp()


def fit_mixture(
    x: torch.Tensor,
    n_components: int,
    *,
    steps: int = 500,
    lr: float = 5e-2,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Fit a Gaussian mixture to samples by gradient descent (Adam) on :func:`mixture_nll`.

    The means start at ``n_components`` samples drawn with ``seed``, the scales at the samples'
    standard deviation and the weights uniform.

    Returns:
        ``(params, losses)`` with ``params`` holding ``logits``, ``means``, ``log_stds``
        (detached, shape ``(n_components,)``) and ``losses`` the NLL before each step.
    """
    check_tensor("x", x, ndim=1, floating=True)
    check_positive_int("n_components", n_components)
    if x.shape[0] < n_components:
        raise ValueError(f"need at least n_components={n_components} samples, got {x.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    start = torch.randperm(x.shape[0], generator=generator)[:n_components].to(x.device)
    logits = torch.zeros(n_components, dtype=x.dtype, device=x.device, requires_grad=True)
    means = x[start].detach().clone().requires_grad_(True)
    log_stds = torch.full_like(logits, float(x.std().log())).requires_grad_(True)
    optimizer = torch.optim.Adam([logits, means, log_stds], lr=lr)
    losses = []
    for _ in tqdm(range(steps), disable=not progress, desc="fitting"):
        optimizer.zero_grad()
        loss = mixture_nll(x, logits, means, log_stds)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    params = {"logits": logits.detach(), "means": means.detach(), "log_stds": log_stds.detach()}
    return params, losses
