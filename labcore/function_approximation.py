"""Chapter 0, learning as function approximation: fitting a function and fitting a distribution.

Two problems run through the chapter:

* **Regression.** Given pairs ``(x_i, y_i)`` with ``y = f(x) + noise``, choose ``f_theta`` from a
  hypothesis class (polynomials, small networks) by minimising the mean squared error
  ``L(theta) = (1/n) sum_i (f_theta(x_i) - y_i)^2``. With Gaussian noise of fixed variance this is
  maximum likelihood (Bishop 2006, sec. 1.2.5; Goodfellow, Bengio and Courville 2016, sec. 5.5.1).
* **Classification.** The categorical model ``p_theta(y = k | x) = softmax(z)_k`` with logits
  ``z = f_theta(x)``; its negative log-likelihood is the cross-entropy, whose gradient in the logits
  is ``softmax(z) - onehot(y)`` (Bishop 2006, sec. 4.3.4).
* **Model selection and regularisation.** Ridge regression ``(X^T X + lambda I)^{-1} X^T y``
  (Hoerl and Kennard 1970) and k-fold cross-validation (Stone 1974) to choose a capacity without
  looking at the test set.
* **Density estimation.** Given samples ``x_i ~ p``, choose ``p_theta`` by maximising the average
  log-likelihood ``(1/n) sum_i log p_theta(x_i)``: in closed form for one Gaussian, by gradient
  descent for a mixture. The mixture's likelihood is unbounded (a component centred on a sample
  with ``sigma_k -> 0``; Bishop 2006, sec. 9.2.1), so :func:`mixture_nll` is written to stay exact
  (finite, or ``-inf``, never NaN) down to that limit.

Every function is batched, creates its results on the input's device and dtype, and validates its
arguments with ``ValueError``/``TypeError`` messages that name them.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from labcore import one_thread
from labcore.validation import check_positive_int, check_tensor

__all__ = [
    "polynomial_features",
    "fit_least_squares",
    "fit_ridge",
    "kfold_indices",
    "cross_entropy_grad",
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


def fit_ridge(features: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge regression: ``w = argmin ||features @ w - y||^2 + lam ||w||^2``.

    Setting the gradient ``2 X^T (X w - y) + 2 lam w`` to zero gives the closed form
    ``w = (X^T X + lam I)^{-1} X^T y`` (Hoerl and Kennard 1970), solved here by a Cholesky
    factorisation of the symmetric positive definite ``X^T X + lam I``. Every coefficient,
    the intercept included, is penalised.

    Args:
        features: ``(batch, n_features)``, the matrix ``X``.
        y: ``(batch,)`` targets.
        lam: the penalty ``lambda > 0``.

    Returns:
        ``(n_features,)`` weights, on ``features``' device and dtype.
    """
    check_tensor("features", features, ndim=2, floating=True)
    check_tensor("y", y, ndim=1, floating=True)
    if y.shape[0] != features.shape[0]:
        raise ValueError(
            f"features and y must have the same batch size, got {features.shape[0]} and {y.shape[0]}"
        )
    if not isinstance(lam, int | float) or not lam > 0:
        raise ValueError(f"lam must be a positive number, got {lam!r}")
    n_features = features.shape[1]
    eye = torch.eye(n_features, dtype=features.dtype, device=features.device)
    gram = features.T @ features + lam * eye  # (n_features, n_features)
    rhs = (features.T @ y).unsqueeze(-1)  # (n_features, 1)
    return torch.cholesky_solve(rhs, torch.linalg.cholesky(gram)).squeeze(-1)


def kfold_indices(
    n: int, k: int, *, generator: torch.Generator | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split ``range(n)`` into ``k`` folds for k-fold cross-validation (Stone 1974).

    The indices are shuffled once (with ``generator``) and cut into ``k`` folds whose sizes differ
    by at most one; fold ``j`` is the validation part of split ``j`` and the other folds its
    training part, so every index is validated exactly once.

    Args:
        n: number of examples; k: number of folds, ``2 <= k <= n``.
        generator: a ``torch.Generator`` for the shuffle (the global RNG if ``None``).

    Returns:
        ``k`` pairs ``(train_index, val_index)`` of int64 tensors.
    """
    check_positive_int("n", n)
    check_positive_int("k", k)
    if not 2 <= k <= n:
        raise ValueError(f"k must satisfy 2 <= k <= n = {n}, got {k}")
    order = torch.randperm(n, generator=generator)
    folds = order.tensor_split(k)
    return [(torch.cat([f for i, f in enumerate(folds) if i != j]), folds[j]) for j in range(k)]


def cross_entropy_grad(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy in the logits: ``softmax(z) - onehot(y)``.

    For one example, ``L(z) = -log softmax(z)_y = -z_y + logsumexp(z)``, so
    ``dL/dz_k = softmax(z)_k - [k = y]``.

    Args:
        logits: ``(batch, n_classes)``; labels: ``(batch,)`` integers in ``[0, n_classes)``.

    Returns:
        ``(batch, n_classes)``, the gradient of ``sum_i L(z_i)`` (divide by ``batch`` for the mean).
    """
    check_tensor("logits", logits, ndim=2, floating=True)
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be a 1-d integer tensor, got {labels!r}")
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"logits and labels must have the same batch size, got {logits.shape[0]} and "
            f"{labels.shape[0]}"
        )
    onehot = torch.nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return torch.softmax(logits, dim=-1) - onehot  # (batch, n_classes)


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
    with one_thread():
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
    """``(batch,)`` log densities: ``logsumexp_k [log pi_k + log N(x; mu_k, sigma_k^2)]``.

    ``log N(x; mu, sigma^2) = -z^2 / 2 - log sigma - log(2 pi) / 2`` with ``z = (x - mu) / sigma``,
    all in log space, so it stays exact when ``sigma = exp(log_std)`` underflows to 0 (the
    degenerate maximum of the likelihood): where ``x == mu`` the quadratic term is 0 and the log
    density ``-log sigma - log(2 pi) / 2`` is large but finite (``+inf`` at ``log_std = -inf``);
    where ``z`` overflows the log density is ``-inf``. Both cases are masked before the arithmetic
    (the "double where"), so the backward pass sees no ``0 * inf`` and the gradient stays finite.
    """
    diff = x.unsqueeze(-1) - means  # (batch, n_components)
    log_stds = log_stds.expand_as(diff)  # (batch, n_components)
    with torch.no_grad():
        z_raw = diff * torch.exp(-log_stds)  # NaN where diff == 0 and sigma == 0, inf on overflow
        regular = torch.isfinite(z_raw)
        overflow = torch.isinf(z_raw)
    zero = torch.zeros((), dtype=diff.dtype, device=diff.device)
    z = torch.where(regular, diff, zero) * torch.exp(-torch.where(regular, log_stds, zero))
    log_normal = -0.5 * z**2 - log_stds - 0.5 * math.log(2 * math.pi)
    log_normal = torch.where(overflow, -math.inf, log_normal)
    return torch.logsumexp(torch.log_softmax(logits, dim=-1) + log_normal, dim=-1)


def mixture_nll(
    x: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_stds: torch.Tensor
) -> torch.Tensor:
    """Average negative log-likelihood under a 1-D Gaussian mixture.

    ``p(x) = sum_k pi_k N(x; mu_k, sigma_k^2)`` with ``pi = softmax(logits)`` and
    ``sigma_k = exp(log_stds_k)``, so every real parameter vector is a valid mixture. The log of
    the sum is computed with ``logsumexp`` so that far-away samples do not underflow to ``log 0``.

    The likelihood is unbounded: with ``mu_k`` on a sample and ``log_stds_k -> -inf`` the NLL
    tends to ``-inf`` (about ``log_stds_k / batch``). The value stays exact along that path: finite
    while ``log_stds`` is finite (even where ``exp(log_stds)`` underflows to 0), ``-inf`` at
    ``log_stds_k = -inf``, never NaN; the gradient is finite wherever the value is.

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
    with one_thread():
        for _ in tqdm(range(steps), disable=not progress, desc="fitting"):
            optimizer.zero_grad()
            loss = mixture_nll(x, logits, means, log_stds)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    params = {"logits": logits.detach(), "means": means.detach(), "log_stds": log_stds.detach()}
    return params, losses
