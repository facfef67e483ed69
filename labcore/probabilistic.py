"""Probabilistic layers: propagate a mean and a variance through a network (chapter 3, DASP).

A *lightweight probabilistic deep network* (Gast & Roth, "Lightweight Probabilistic Deep Networks",
CVPR 2018) replaces every activation by a Gaussian ``N(mean, var)``, one independent Gaussian per
unit, and every layer by the map of those two moments that assumed density filtering gives: the
exact mean and variance of the layer's output when its input units are independent Gaussians, with
the output again treated as an independent Gaussian (moment matching). Deep Approximate Shapley
Propagation (``labcore.attribution.dasp``; Ancona, Oztireli & Gross, "Explaining Deep Neural
Networks with a Polynomial Time Algorithm for Shapley Value Approximation", ICML 2019) uses these
layers to estimate the expected output of a network over random coalitions of input features.

The module reads top to bottom:

1. ``relu_moments``: the two moments of ``max(z, 0)`` for ``z ~ N(mu, sigma^2)`` (Frey & Hinton,
   1999), with ``r = mu / sigma``, ``Phi`` and ``phi`` the standard normal CDF and density::

       E[max(z, 0)]   = mu Phi(r) + sigma phi(r)
       E[max(z, 0)^2] = (mu^2 + sigma^2) Phi(r) + mu sigma phi(r)
       Var[max(z, 0)] = sigma^2 [Phi(r) + r^2 Phi(r) Phi(-r) + r phi(r) (Phi(-r) - Phi(r)) - phi(r)^2]

   (the last line is ``E[max^2] - E[max]^2`` rearranged so that no two large terms cancel).
2. The layers ``ProbLinear``, ``ProbConv2d``, ``ProbReLU``, ``ProbFlatten``: each takes and
   returns ``(mean, var)``. For a linear map with weight ``W`` and bias ``b`` and independent inputs::

       mean_out = W mean + b,        var_out = (W * W) var

   (``W * W`` elementwise: the variance of a weighted sum of independent variables). The
   independence assumption is the approximation: after a first layer, units share inputs and are
   correlated, and the variance above ignores those covariances.
3. ``layers_of`` and ``to_probabilistic``: turn an ``labcore.mlp.MLP`` or an ``nn.Sequential`` of
   ``Linear``, ``Conv2d``, ``Flatten`` and ``ReLU`` (or ``Identity``) modules into a
   ``ProbSequential`` that shares the original parameters.

Shapes: every layer maps ``mean, var: (batch, *shape_in)`` to ``(batch, *shape_out)``; the two
tensors always have the same shape, device and dtype, and variances are never negative.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from labcore.mlp import MLP
from labcore.validation import check_tensor

__all__ = [
    "Moments",
    "relu_moments",
    "ProbLinear",
    "ProbConv2d",
    "ProbReLU",
    "ProbFlatten",
    "ProbSequential",
    "layers_of",
    "to_probabilistic",
]

Tensor = torch.Tensor
Moments = tuple[Tensor, Tensor]  # (mean, var) of independent Gaussian units

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ------------------------------------------------------------------------------------------------
# 1. The moments of a rectified Gaussian
# ------------------------------------------------------------------------------------------------


def _check_moments(mean: object, var: object) -> Moments:
    mean = check_tensor("mean", mean, floating=True)
    var = check_tensor("var", var, floating=True)
    if mean.shape != var.shape:
        raise ValueError(
            f"mean and var must have the same shape, got {tuple(mean.shape)} and {tuple(var.shape)}"
        )
    return mean, var


def relu_moments(mean: Tensor, var: Tensor) -> Moments:
    """Mean and variance of ``max(z, 0)`` for ``z ~ N(mean, var)``, elementwise.

    With ``sigma = sqrt(var)``, ``r = mean / sigma``, ``Phi`` the standard normal CDF and ``phi``
    its density::

        E[relu(z)]   = mean Phi(r) + sigma phi(r)
        Var[relu(z)] = var [Phi(r) + r^2 Phi(r) Phi(-r) + r phi(r) (Phi(-r) - Phi(r)) - phi(r)^2]

    Where ``var == 0`` the input is a point mass and the result is ``(relu(mean), 0)``.

    Args:
        mean: ``(...)``, the Gaussian's mean.
        var: ``(...)``, its variance (negative round-off is treated as zero).

    Returns:
        ``(mean_out, var_out)``, both of the input's shape, device and dtype; ``var_out >= 0``.

    Raises:
        ValueError / TypeError: if ``mean`` and ``var`` are not floating tensors of one shape.
    """
    mean, var = _check_moments(mean, var)
    var = var.clamp_min(0.0)
    random = var > 0
    sigma = torch.where(random, var, torch.ones_like(var)).sqrt()  # 1 where var = 0: no 0/0
    r = mean / sigma
    cdf = 0.5 * torch.erfc(-r / _SQRT2)  # Phi(r), accurate in the left tail
    cdf_neg = 0.5 * torch.erfc(r / _SQRT2)  # Phi(-r) = 1 - Phi(r), accurate in the right tail
    pdf = torch.exp(-0.5 * r * r) * _INV_SQRT_2PI  # phi(r)
    mean_out = mean * cdf + sigma * pdf
    scaled_var = cdf + r * r * cdf * cdf_neg + r * pdf * (cdf_neg - cdf) - pdf * pdf
    var_out = (var * scaled_var).clamp_min(0.0)
    mean_out = torch.where(random, mean_out, mean.clamp_min(0.0))
    var_out = torch.where(random, var_out, torch.zeros_like(var_out))
    return mean_out, var_out


# ------------------------------------------------------------------------------------------------
# 2. Probabilistic layers
# ------------------------------------------------------------------------------------------------


class ProbLinear(nn.Module):
    """An ``nn.Linear`` acting on independent Gaussians: ``mean W^T + b`` and ``var (W * W)^T``.

    Shares the wrapped layer's parameters (no copy). Shapes: ``(batch, in) -> (batch, out)``.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        self.linear = linear

    def forward(self, mean: Tensor, var: Tensor) -> Moments:
        weight = self.linear.weight  # (out, in)
        return F.linear(mean, weight, self.linear.bias), F.linear(var, weight * weight)


class ProbConv2d(nn.Module):
    """An ``nn.Conv2d`` acting on independent Gaussians: the mean goes through the convolution,
    the variance through the same convolution with squared weights and no bias.

    Shares the wrapped layer's parameters. Shapes: ``(batch, C_in, H, W) -> (batch, C_out, H', W')``.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"conv must use padding_mode='zeros', got {conv.padding_mode!r}")
        self.conv = conv

    def forward(self, mean: Tensor, var: Tensor) -> Moments:
        c = self.conv
        weight = c.weight
        options = dict(stride=c.stride, padding=c.padding, dilation=c.dilation, groups=c.groups)
        return (
            F.conv2d(mean, weight, c.bias, **options),
            F.conv2d(var, weight * weight, None, **options),
        )


class ProbReLU(nn.Module):
    """A ReLU acting on independent Gaussians, by ``relu_moments``. Shapes are preserved."""

    def forward(self, mean: Tensor, var: Tensor) -> Moments:
        return relu_moments(mean, var)


class ProbFlatten(nn.Module):
    """An ``nn.Flatten``: reshapes mean and variance alike."""

    def __init__(self, flatten: nn.Flatten | None = None) -> None:
        super().__init__()
        self.flatten = flatten if flatten is not None else nn.Flatten()

    def forward(self, mean: Tensor, var: Tensor) -> Moments:
        return self.flatten(mean), self.flatten(var)


class ProbSequential(nn.Module):
    """Probabilistic layers applied in order to ``(mean, var)``.

    ``forward(mean, var=None)``: ``var`` defaults to zeros (a deterministic input), so that
    ``prob_model(x)[0]`` equals ``model(x)`` for a network without ReLUs and is the moment-matched
    mean otherwise.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, mean: Tensor, var: Tensor | None = None) -> Moments:
        if var is None:
            var = torch.zeros_like(mean)
        mean, var = _check_moments(mean, var)
        for layer in self.layers:
            mean, var = layer(mean, var)
        return mean, var


# ------------------------------------------------------------------------------------------------
# 3. From a network to its probabilistic twin
# ------------------------------------------------------------------------------------------------

_AFFINE = (nn.Linear, nn.Conv2d, nn.Flatten, nn.Identity)


def layers_of(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` in order, nested ``nn.Sequential`` flattened out.

    Accepts an ``labcore.mlp.MLP`` whose activations are ReLU (or identity), an ``nn.Sequential``
    of ``Linear``, ``Conv2d``, ``Flatten``, ``Identity`` and ``ReLU`` modules, or one such module.
    These are the networks that ``to_probabilistic`` and ``labcore.attribution.dasp`` support.

    Raises:
        TypeError: naming the first layer that is not supported (e.g. a ``Tanh``).
    """
    if isinstance(model, MLP):
        named: list[tuple[str, nn.Module]] = []
        for l, layer in enumerate(model.layers):
            named.append((f"layers.{l}", layer))
            if l < len(model.activations):
                named.append((f"activations.{l}", model.activations[l]))
    elif isinstance(model, nn.Sequential):
        named = []
        for name, child in model.named_children():
            if isinstance(child, nn.Sequential):
                named.extend((f"{name}.{i}", m) for i, m in enumerate(layers_of(child)))
            else:
                named.append((name, child))
    elif isinstance(model, nn.Module):
        named = [(type(model).__name__, model)]
    else:
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    for name, layer in named:
        if not isinstance(layer, (*_AFFINE, nn.ReLU)):
            raise TypeError(
                "probabilistic propagation supports Linear, Conv2d, Flatten, Identity and ReLU "
                f"layers; layer {name!r} of model is {type(layer).__name__}"
            )
    return [layer for _, layer in named]


def _to_prob_layer(layer: nn.Module) -> nn.Module | None:
    if isinstance(layer, nn.Linear):
        return ProbLinear(layer)
    if isinstance(layer, nn.Conv2d):
        return ProbConv2d(layer)
    if isinstance(layer, nn.ReLU):
        return ProbReLU()
    if isinstance(layer, nn.Flatten):
        return ProbFlatten(layer)
    return None  # nn.Identity


def to_probabilistic(model: nn.Module | list[nn.Module]) -> ProbSequential:
    """The probabilistic twin of a ReLU network (see ``layers_of`` for what is supported).

    The twin shares the model's parameters: training the model changes the twin too.

    Args:
        model: an ``MLP``, an ``nn.Sequential``, one supported layer, or a list from ``layers_of``.

    Returns:
        A ``ProbSequential`` mapping ``(mean, var): (batch, *shape_in)`` to ``(batch, *shape_out)``.

    Raises:
        TypeError: for an unsupported layer.
    """
    layers = layers_of(nn.Sequential(*model)) if isinstance(model, list) else layers_of(model)
    prob = (_to_prob_layer(layer) for layer in layers)
    return ProbSequential(*(p for p in prob if p is not None))
