"""Learning dynamics: deep linear networks, the neural tangent kernel, lazy vs rich, grokking.

The reference implementations of chapter 6 (``book/06-learning-dynamics.ipynb``).

**Deep linear networks** (Saxe, McClelland and Ganguli 2014). With whitened inputs
(:math:`\\Sigma_{xx} = I`) the loss :math:`L = \\frac{1}{2P}\\sum_\\mu \\|y_\\mu - W_D \\cdots W_1
x_\\mu\\|^2` equals :math:`\\tfrac12 \\|\\Sigma_{yx} - W_D\\cdots W_1\\|_F^2` up to a constant, so
gradient descent only sees the input-output correlation :math:`\\Sigma_{yx} = \\frac1P \\sum_\\mu
y_\\mu x_\\mu^\\top = U S V^\\top`. From a balanced initialisation aligned with the singular vectors,
each mode strength :math:`u_\\alpha = u_\\alpha^\\top W_D\\cdots W_1 v_\\alpha` obeys its own
scalar equation :math:`\\dot u = D\\, u^{2 - 2/D}(s - u)` (time = learning rate x steps).

**The neural tangent kernel** (Jacot, Gabriel and Hongler 2018):
:math:`\\Theta(x, x') = \\langle \\nabla_\\theta f(x), \\nabla_\\theta f(x') \\rangle`. Under
gradient flow on :math:`L = \\frac12 \\sum_i (f(x_i) - y_i)^2`, the outputs move as
:math:`\\dot f = -\\Theta (f - y)`; with the kernel frozen (the lazy regime) this integrates to
:math:`f_t = f_0 + (I - e^{-\\Theta t})(y - f_0)` on the training set.

**Grokking** on modular addition (Power et al. 2022): a small network fits its training pairs
at once and generalises to the held-out pairs much later, when weight decay has driven it from a
memorising solution to one built on a few Fourier frequencies of :math:`\\mathbb{Z}_p`.
"""

from __future__ import annotations

import argparse
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap
from tqdm.auto import tqdm

from labcore import one_thread
from labcore.mlp import linear_cka
from labcore.validation import check_positive_int, check_tensor

__all__ = [
    "input_output_correlation",
    "saxe_mode_strength",
    "saxe_learning_time",
    "aligned_balanced_init",
    "random_init",
    "network_map",
    "mode_strengths",
    "deep_linear_descent",
    "empirical_ntk",
    "TwoLayerReLU",
    "relu_ntk",
    "kernel_gd_predict",
    "kernel_change",
    "kernel_alignment",
    "train_lazy_rich",
    "ModularSplit",
    "modular_addition_data",
    "ModularMLP",
    "fourier_power",
    "fourier_concentration",
    "train_modular_addition",
    "GROKKING_SWEEP",
    "grokking_sweep",
    "load_grokking_sweep",
]


# --------------------------------------------------------------------------------------------
# Deep linear networks
# --------------------------------------------------------------------------------------------


def input_output_correlation(x: Tensor, y: Tensor) -> Tensor:
    """The input-output correlation :math:`\\Sigma_{yx} = \\frac1P \\sum_\\mu y_\\mu x_\\mu^\\top`.

    Args:
        x: inputs, ``(P, n_in)``.
        y: targets, ``(P, n_out)``.

    Returns:
        ``(n_out, n_in)``, on the inputs' device and dtype.
    """
    x = check_tensor("x", x, ndim=2, floating=True)
    y = check_tensor("y", y, ndim=2, floating=True)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same number of rows (samples), got {x.shape[0]} and {y.shape[0]}"
        )
    return y.mT @ x / x.shape[0]


def _check_strengths(s: Tensor | float, a0: Tensor | float, like: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.as_tensor(s, dtype=like.dtype, device=like.device)
    a0 = torch.as_tensor(a0, dtype=like.dtype, device=like.device)
    if like.device.type != "meta":
        if not bool((s > 0).all()):
            raise ValueError(f"s (the singular value) must be > 0, got {s.tolist()}")
        if not bool(((a0 > 0) & (a0 < s)).all()):
            raise ValueError(
                "a0 (the initial mode strength) must satisfy 0 < a0 < s, "
                f"got a0={a0.tolist()} and s={s.tolist()}"
            )
    return s, a0


def saxe_mode_strength(
    t: Tensor, s: Tensor | float, a0: Tensor | float, depth: int = 2, *, n_steps: int = 2048
) -> Tensor:
    """The strength :math:`u(t)` of one mode of a deep linear network under gradient flow.

    A balanced network of ``depth`` = D weight matrices aligned with the singular vectors of
    :math:`\\Sigma_{yx}` (whitened inputs) has, along a mode of singular value ``s``,
    :math:`u = w^D` and :math:`\\dot u = D\\, u^{2-2/D} (s - u)`, :math:`u(0) = a_0`. Time is the
    learning rate times the number of gradient-descent steps on
    :math:`L = \\frac{1}{2P}\\sum_\\mu \\|y_\\mu - W_D \\cdots W_1 x_\\mu\\|^2`.

    - D = 1: :math:`u = s - (s - a_0) e^{-t}`.
    - D = 2 (Saxe et al. 2014, eq. 6): :math:`u = \\dfrac{s\\, e^{2st}}{e^{2st} - 1 + s/a_0}`.
    - D > 2: the logit :math:`z = \\log(u / (s - u))` obeys
      :math:`\\dot z = D s^{2 - 2/D} \\sigma(z)^{1 - 2/D}`, a smooth bounded right-hand side that
      classical Runge-Kutta (RK4) integrates with ``n_steps`` steps per time, all times at once.

    Args:
        t: times, any shape, floating point (``t >= 0``).
        s: the singular value (> 0), a float or a tensor broadcastable with ``t``.
        a0: the initial strength, ``0 < a0 < s``, a float or a tensor broadcastable with ``t``.
        depth: the number of weight matrices D (>= 1).
        n_steps: RK4 steps from 0 to each ``t`` (only for D > 2).

    Returns:
        :math:`u(t)`, the broadcast shape of ``t``, ``s`` and ``a0``, on ``t``'s device and dtype.
    """
    t = check_tensor("t", t, floating=True)
    depth = check_positive_int("depth", depth)
    n_steps = check_positive_int("n_steps", n_steps)
    if t.device.type != "meta" and bool((t < 0).any()):
        raise ValueError("t must be >= 0 (times since the start of training)")
    s, a0 = _check_strengths(s, a0, t)
    if depth == 1:
        return s - (s - a0) * torch.exp(-t)
    if depth == 2:
        # s e^{2st} / (e^{2st} - 1 + s/a0), written with e^{-2st} so that it never overflows
        decay = torch.exp(-2 * s * t)
        return s / (1 - decay + decay * s / a0)
    q = 1 - 2 / depth
    rate = depth * s ** (2 - 2 / depth)  # D s^{2-2/D}
    z = torch.log(a0) - torch.log(s - a0)
    z = (z + torch.zeros_like(t)).clone()
    h = t / n_steps

    def velocity(z: Tensor) -> Tensor:
        return rate * torch.sigmoid(z) ** q

    for _ in range(n_steps):
        k1 = velocity(z)
        k2 = velocity(z + 0.5 * h * k1)
        k3 = velocity(z + 0.5 * h * k2)
        k4 = velocity(z + h * k3)
        z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return s * torch.sigmoid(z)


def saxe_learning_time(
    s: Tensor | float, a0: Tensor | float, depth: int = 2, *, n_points: int = 4097
) -> Tensor:
    """The time a mode takes to grow from ``a0`` to half its target, :math:`u(t_{1/2}) = s/2`.

    Separating variables in :math:`\\dot u = D u^{2-2/D}(s - u)` and substituting the logit
    :math:`z = \\log(u/(s-u))` gives

    .. math:: t_{1/2} = \\frac{1}{D s^{2-2/D}} \\int_{z_0}^{0} (1 + e^{-z})^{1-2/D}\\, dz,
       \\qquad z_0 = \\log\\frac{a_0}{s - a_0}.

    For D = 2 the integrand is 1 and :math:`t_{1/2} = \\frac{1}{2s}\\log\\frac{s - a_0}{a_0}
    \\approx \\frac{1}{2s}\\log\\frac{s}{a_0}`; for D > 2 and small :math:`a_0` it grows like a
    power, :math:`t_{1/2} \\approx \\frac{(s/a_0)^{1-2/D}}{(D - 2)\\, s^{2-2/D}}`. The integral is
    computed with Simpson's rule on ``n_points`` points (odd).

    Args:
        s: singular value(s), > 0 (float or tensor).
        a0: initial strength(s), ``0 < a0 < s``.
        depth: the number of weight matrices D (>= 1; D = 1 gives :math:`\\log(2(s-a_0)/s)`).
        n_points: Simpson points (odd, >= 3).

    Returns:
        the broadcast shape of ``s`` and ``a0`` (a 0-d tensor for floats).
    """
    depth = check_positive_int("depth", depth)
    n_points = check_positive_int("n_points", n_points)
    if n_points < 3 or n_points % 2 == 0:
        raise ValueError(f"n_points must be odd and >= 3, got {n_points}")
    like = next((v for v in (s, a0) if isinstance(v, Tensor)), None)
    like = (
        like
        if like is not None and like.is_floating_point()
        else torch.zeros((), dtype=torch.float64)
    )
    s, a0 = _check_strengths(s, a0, like)
    if depth == 1:
        return torch.log(2 * (s - a0) / s)
    z0 = torch.log(a0) - torch.log(s - a0)
    if depth == 2:
        return -z0 / (2 * s)
    q = 1 - 2 / depth
    grid = torch.linspace(0, 1, n_points, dtype=z0.dtype, device=z0.device)
    z = z0.unsqueeze(-1) * (1 - grid)  # from z0 to 0
    values = (1 + torch.exp(-z)) ** q
    weights = torch.ones(n_points, dtype=z0.dtype, device=z0.device)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    integral = (values * weights).sum(-1) * (-z0) / (3 * (n_points - 1))
    return integral / (depth * s ** (2 - 2 / depth))


def aligned_balanced_init(
    u: Tensor, v: Tensor, a0: Tensor, depth: int, hidden: int
) -> list[Tensor]:
    """Weights ``[W_1, ..., W_D]`` whose product is :math:`U \\operatorname{diag}(a_0) V^\\top`,
    balanced (every layer carries :math:`a_0^{1/D}` on each mode) and aligned with ``u``, ``v``.

    :math:`W_1 = E\\, \\mathrm{diag}(a_0^{1/D}) V^\\top`, :math:`W_l = E\\, \\mathrm{diag}(a_0^{1/D})
    E^\\top` for 1 < l < D, :math:`W_D = U \\mathrm{diag}(a_0^{1/D}) E^\\top`, where
    :math:`E = I_{h \\times r}` embeds the r modes into the ``hidden`` units.

    Args:
        u: left singular vectors, ``(n_out, r)`` (orthonormal columns).
        v: right singular vectors, ``(n_in, r)``.
        a0: initial strengths, ``(r,)``, > 0.
        depth: number of weight matrices D >= 2.
        hidden: hidden width h >= r.

    Returns:
        D tensors of shapes ``(h, n_in), (h, h), ..., (n_out, h)``.
    """
    u = check_tensor("u", u, ndim=2, floating=True)
    v = check_tensor("v", v, ndim=2, floating=True)
    a0 = check_tensor("a0", a0, ndim=1, floating=True)
    depth = check_positive_int("depth", depth)
    hidden = check_positive_int("hidden", hidden)
    r = a0.shape[0]
    if depth < 2:
        raise ValueError(f"depth must be >= 2 (a network with hidden units), got {depth}")
    if u.shape[1] != r or v.shape[1] != r:
        raise ValueError(
            f"u and v must have one column per mode (r = {r}), got {tuple(u.shape)} and {tuple(v.shape)}"
        )
    if hidden < r:
        raise ValueError(f"hidden must be >= the number of modes {r}, got {hidden}")
    w = a0 ** (1 / depth)
    embed = torch.eye(hidden, r, dtype=a0.dtype, device=a0.device)
    weights = [embed * w @ v.mT]
    weights += [embed * w @ embed.mT for _ in range(depth - 2)]
    weights.append(u * w @ embed.mT)
    return weights


def random_init(
    n_in: int,
    hidden: int,
    n_out: int,
    depth: int,
    scale: float,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """Small random weights ``[W_1, ..., W_D]``, entries i.i.d. :math:`N(0, \\text{scale}^2 / h)`.

    Not aligned with anything and not balanced: the initialisation of a real network.
    Shapes ``(hidden, n_in), (hidden, hidden), ..., (n_out, hidden)``.
    """
    for name, value in (("n_in", n_in), ("hidden", hidden), ("n_out", n_out), ("depth", depth)):
        check_positive_int(name, value)
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    sizes = [n_in] + [hidden] * (depth - 1) + [n_out]
    return [
        torch.randn(d_out, d_in, generator=generator, dtype=dtype, device=device)
        * (scale / math.sqrt(hidden))
        for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def network_map(weights: list[Tensor]) -> Tensor:
    """The end-to-end map :math:`W_D \\cdots W_1` of a deep linear network, ``(n_out, n_in)``."""
    if not weights:
        raise ValueError("weights must hold at least one matrix")
    product = weights[0]
    for w in weights[1:]:
        if w.shape[-1] != product.shape[-2]:
            raise ValueError(
                f"weights do not chain: {tuple(w.shape)} cannot follow {tuple(product.shape)}"
            )
        product = w @ product
    return product


def mode_strengths(product: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Mode strengths :math:`u_\\alpha^\\top W v_\\alpha`: the diagonal of :math:`U^\\top W V`.

    Args:
        product: end-to-end maps ``(..., n_out, n_in)`` (e.g. a recorded trajectory).
        u: ``(n_out, r)``; v: ``(n_in, r)``.

    Returns:
        ``(..., r)``.
    """
    product = check_tensor("product", product, min_ndim=2, floating=True)
    if (
        u.shape[0] != product.shape[-2]
        or v.shape[0] != product.shape[-1]
        or u.shape[1] != v.shape[1]
    ):
        raise ValueError(
            f"u {tuple(u.shape)} and v {tuple(v.shape)} do not fit maps of shape {tuple(product.shape)}"
        )
    return torch.einsum("or,...oi,ir->...r", u, product, v)


def deep_linear_descent(
    sigma_yx: Tensor,
    weights: list[Tensor],
    *,
    lr: float,
    steps: int,
    record_every: int = 1,
) -> tuple[Tensor, Tensor]:
    """Gradient descent on :math:`L = \\tfrac12 \\|\\Sigma_{yx} - W_D\\cdots W_1\\|_F^2`.

    With whitened inputs this is the loss :math:`\\frac{1}{2P}\\sum_\\mu \\|y_\\mu - W x_\\mu\\|^2`
    up to a constant, so the trajectory is that of the network trained on the data. The gradient
    of layer l is :math:`-(W_D\\cdots W_{l+1})^\\top (\\Sigma_{yx} - W) (W_{l-1} \\cdots W_1)^\\top`
    (autograd computes it). The weights are not modified.

    Args:
        sigma_yx: ``(n_out, n_in)``.
        weights: the initial ``[W_1, ..., W_D]``.
        lr: learning rate; time after k steps is ``lr * k``.
        steps: number of steps.
        record_every: record the end-to-end map every this many steps (and at step 0).

    Returns:
        ``(times, maps)``: ``(n_rec,)`` and ``(n_rec, n_out, n_in)``.
    """
    sigma_yx = check_tensor("sigma_yx", sigma_yx, ndim=2, floating=True)
    steps = check_positive_int("steps", steps, allow_zero=True)
    record_every = check_positive_int("record_every", record_every)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if network_map(weights).shape != sigma_yx.shape:
        raise ValueError(
            f"the network maps {tuple(network_map(weights).shape)} but sigma_yx is {tuple(sigma_yx.shape)}"
        )
    params = [w.detach().clone().requires_grad_(True) for w in weights]
    times, maps = [], []
    with one_thread():
        for step in range(steps + 1):
            if step % record_every == 0:
                times.append(step * lr)
                maps.append(network_map([p.detach() for p in params]))
            if step == steps:
                break
            loss = 0.5 * (sigma_yx - network_map(params)).square().sum()
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p -= lr * g
    return torch.tensor(times, dtype=sigma_yx.dtype, device=sigma_yx.device), torch.stack(maps)


# --------------------------------------------------------------------------------------------
# The neural tangent kernel
# --------------------------------------------------------------------------------------------


def _jacobians(
    model: nn.Module, params: dict[str, Tensor], x: Tensor, batch_size: int
) -> list[Tensor]:
    """Per-input Jacobians of the outputs, one ``(n, k, P_i)`` tensor per parameter tensor."""

    def one(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return functional_call(model, p, (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(one), in_dims=(None, 0))
    chunks = [
        [j.flatten(2) for j in jac(params, x[start : start + batch_size]).values()]
        for start in range(0, x.shape[0], batch_size)
    ]
    if len(chunks) == 1:
        return chunks[0]
    return [torch.cat(parts) for parts in zip(*chunks, strict=True)]


#: Jacobian entries per ``vmap`` chunk when ``batch_size`` is not given (64 MiB in float32).
NTK_CHUNK_ENTRIES = 2**24


def empirical_ntk(
    model: nn.Module, x1: Tensor, x2: Tensor | None = None, *, batch_size: int | None = None
) -> Tensor:
    """The empirical neural tangent kernel :math:`\\Theta(x, x') = J(x) J(x')^\\top`.

    :math:`J(x) = \\partial f_\\theta(x) / \\partial \\theta` over every trainable parameter of
    ``model`` (those with ``requires_grad``), computed per input with ``torch.func`` (``vmap`` of
    ``jacrev``) in chunks of ``batch_size`` inputs, then contracted with one matrix product per
    parameter tensor. The
    model, its parameters and their ``.grad`` are left untouched. With ``x2=None`` the kernel of
    ``x1`` with itself is computed from one set of Jacobians.

    Args:
        model: maps a batch ``(n, *in_shape)`` to ``(n,)``, ``(n, 1)`` or ``(n, k)``.
        x1: ``(n1, *in_shape)``.
        x2: ``(n2, *in_shape)`` or ``None`` (then ``x2 = x1``).
        batch_size: inputs per ``vmap`` chunk (bounds memory); by default as many as keep a
            chunk's Jacobian within ``NTK_CHUNK_ENTRIES`` entries.

    Returns:
        ``(n1, n2)`` for one output per input; ``(n1, n2, k, k)`` for k > 1 outputs, where
        ``[a, b, i, j]`` is :math:`\\langle \\nabla_\\theta f_i(x_a), \\nabla_\\theta f_j(x_b)\\rangle`.
        On the inputs' device, in the parameters' dtype.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x1 = check_tensor("x1", x1, min_ndim=1)
    if x2 is not None:
        x2 = check_tensor("x2", x2, min_ndim=1)
        if x2.shape[1:] != x1.shape[1:] or x2.device != x1.device:
            raise ValueError(
                "x2 must have x1's input shape and device, got "
                f"{tuple(x2.shape)} on {x2.device} and {tuple(x1.shape)} on {x1.device}"
            )
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (none with requires_grad)")
    if batch_size is None:
        n_params = sum(p.numel() for p in params.values())
        batch_size = max(1, NTK_CHUNK_ENTRIES // n_params)
    batch_size = check_positive_int("batch_size", batch_size)
    devices = {p.device for p in params.values()}
    if devices != {x1.device}:
        raise ValueError(
            f"model parameters are on {sorted(map(str, devices))}, inputs on {x1.device}"
        )
    if x2 is None:
        j1 = j2 = _jacobians(model, params, x1, batch_size)
    else:  # one pass over both sets (fewer vmap calls), then views of the two parts
        both = _jacobians(model, params, torch.cat([x1, x2]), batch_size)
        j1, j2 = [j[: x1.shape[0]] for j in both], [j[x1.shape[0] :] for j in both]
    n1, k, _ = j1[0].shape
    n2 = j2[0].shape[0]
    # sum over parameter tensors of J1_i J2_i^T: one matrix product each, no concatenated copy
    kernel = sum(
        a.reshape(n1 * k, -1) @ b.reshape(n2 * k, -1).mT for a, b in zip(j1, j2, strict=True)
    )
    kernel = kernel.reshape(n1, k, n2, k)
    if k == 1:
        return kernel[:, 0, :, 0]
    return kernel.permute(0, 2, 1, 3)


class TwoLayerReLU(nn.Module):
    """A two-layer ReLU network in the NTK parametrisation (Jacot et al. 2018).

    :math:`f(x) = \\frac{1}{\\sqrt m} \\sum_{j=1}^m a_j\\, \\mathrm{relu}\\big(w_j^\\top x /
    \\sqrt{d} + b_j\\big)`, with every parameter initialised i.i.d. :math:`N(0, 1)` (the scale
    factors live in the forward pass, not in the initialisation). As the width m grows, the
    empirical NTK converges to :func:`relu_ntk`.

    Args:
        d_in: input dimension d.
        width: hidden width m.
        generator: for the initialisation (reproducible).

    Shapes: ``(n, d_in) -> (n,)``.
    """

    def __init__(
        self,
        d_in: int,
        width: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("d_in", d_in)
        check_positive_int("width", width)
        kw: dict[str, Any] = {"generator": generator, "dtype": dtype, "device": device}
        self.d_in, self.width = d_in, width
        self.weight = nn.Parameter(torch.randn(width, d_in, **kw))
        self.bias = nn.Parameter(torch.randn(width, **kw))
        self.readout = nn.Parameter(torch.randn(width, **kw))

    def features(self, x: Tensor) -> Tensor:
        """The hidden activations :math:`\\mathrm{relu}(W x/\\sqrt d + b)`, ``(n, width)``."""
        x = check_tensor("x", x, ndim=2, shape=(None, self.d_in))
        return torch.relu(x @ self.weight.mT / math.sqrt(self.d_in) + self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x) @ self.readout / math.sqrt(self.width)


def relu_ntk(x1: Tensor, x2: Tensor | None = None) -> Tensor:
    """The infinite-width NTK of :class:`TwoLayerReLU`, from the arc-cosine kernels.

    With :math:`z = (x/\\sqrt d, 1)` (the bias is a weight on a constant input), the angle
    :math:`\\varphi` between :math:`z` and :math:`z'`, and :math:`w \\sim N(0, I)`:

    .. math::
        \\Theta(x, x') = \\underbrace{\\frac{\\|z\\|\\|z'\\|}{2\\pi}\\big(\\sin\\varphi + (\\pi -
        \\varphi)\\cos\\varphi\\big)}_{E[\\mathrm{relu}(w\\cdot z)\\,\\mathrm{relu}(w\\cdot z')]}
        + z\\cdot z'\\, \\underbrace{\\frac{\\pi - \\varphi}{2\\pi}}_{E[1_{w\\cdot z > 0}\\,
        1_{w\\cdot z' > 0}]}

    (Cho and Saul 2009 for the two expectations). The first term is the readout's gradient, the
    second the hidden layer's.

    Args:
        x1: ``(n1, d)``; x2: ``(n2, d)`` or ``None`` (``x1``).

    Returns:
        ``(n1, n2)``, on the inputs' device and dtype.
    """
    x1 = check_tensor("x1", x1, ndim=2, floating=True)
    x2 = (
        x1
        if x2 is None
        else check_tensor("x2", x2, ndim=2, shape=(None, x1.shape[1]), floating=True)
    )
    d = x1.shape[1]

    def augment(x: Tensor) -> Tensor:
        return torch.cat([x / math.sqrt(d), torch.ones_like(x[:, :1])], dim=1)

    z1, z2 = augment(x1), augment(x2)
    dot = z1 @ z2.mT
    norms = z1.norm(dim=1)[:, None] * z2.norm(dim=1)[None, :]
    cos = (dot / norms).clamp(-1, 1)
    phi = torch.arccos(cos)
    readout = norms / (2 * math.pi) * (torch.sin(phi) + (math.pi - phi) * cos)
    hidden = dot * (math.pi - phi) / (2 * math.pi)
    return readout + hidden


def kernel_gd_predict(
    k_train: Tensor,
    k_test_train: Tensor,
    y_train: Tensor,
    f0_train: Tensor,
    f0_test: Tensor,
    time: float | Tensor,
) -> Tensor:
    """Outputs of kernel gradient descent with a frozen kernel, at ``time`` = lr x steps.

    Gradient flow on :math:`L = \\frac12 \\sum_i (f(x_i) - y_i)^2` with a fixed kernel
    :math:`\\Theta` gives :math:`f_t(X) = y - e^{-\\Theta t}(y - f_0(X))` on the training inputs
    and, on any input :math:`x`,

    .. math:: f_t(x) = f_0(x) + \\Theta(x, X)\\, \\Theta^{-1}(I - e^{-\\Theta t})\\,(y - f_0(X)),

    evaluated through the eigendecomposition :math:`\\Theta = Q \\Lambda Q^\\top` with
    :math:`(1 - e^{-\\lambda t})/\\lambda` (equal to ``t`` at :math:`\\lambda = 0`), so a singular
    kernel is fine. ``time=inf`` gives kernel regression, :math:`\\Theta(x,X)\\Theta^{-1}`
    applied to the residual (pseudo-inverse).

    Args:
        k_train: :math:`\\Theta(X, X)`, ``(n, n)``, symmetric positive semi-definite.
        k_test_train: :math:`\\Theta(X_*, X)`, ``(m, n)`` (pass ``k_train`` for the training set).
        y_train: targets ``(n,)``.
        f0_train: initial outputs on the training set ``(n,)``.
        f0_test: initial outputs on the test inputs ``(m,)``.
        time: a float or a tensor of times ``(T,)``.

    Returns:
        ``(m,)`` for a float time, ``(T, m)`` for a tensor of times.
    """
    k_train = check_tensor("k_train", k_train, ndim=2, floating=True)
    n = k_train.shape[0]
    if k_train.shape != (n, n):
        raise ValueError(f"k_train must be square, got {tuple(k_train.shape)}")
    k_test_train = check_tensor(
        "k_test_train", k_test_train, ndim=2, shape=(None, n), floating=True
    )
    y_train = check_tensor("y_train", y_train, ndim=1, shape=(n,), floating=True)
    f0_train = check_tensor("f0_train", f0_train, ndim=1, shape=(n,), floating=True)
    f0_test = check_tensor(
        "f0_test", f0_test, ndim=1, shape=(k_test_train.shape[0],), floating=True
    )
    times = torch.as_tensor(time, dtype=k_train.dtype, device=k_train.device)
    if times.ndim > 1:
        raise ValueError(
            f"time must be a float or a 1-d tensor of times, got shape {tuple(times.shape)}"
        )
    if k_train.device.type != "meta" and bool((times < 0).any()):
        raise ValueError("time must be >= 0")
    eigvals, eigvecs = torch.linalg.eigh((k_train + k_train.mT) / 2)
    eigvals = eigvals.clamp_min(0)
    lam, t = eigvals, times.reshape(-1, 1)
    safe = torch.where(lam > 0, lam, torch.ones_like(lam))
    # (1 - e^{-lambda t}) / lambda, its limit t at lambda = 0, and 0 there at t = inf (pseudo-inverse)
    flat = torch.where(torch.isinf(t), torch.zeros_like(t), t).expand(-1, n)
    gain = torch.where(lam > 0, -torch.expm1(-lam * t) / safe, flat)
    residual = eigvecs.mT @ (y_train - f0_train)  # (n,)
    out = f0_test + (gain * residual) @ (k_test_train @ eigvecs).mT  # (T, m)
    return out[0] if times.ndim == 0 else out


def kernel_change(k0: Tensor, k1: Tensor) -> Tensor:
    """The relative change of a kernel, :math:`\\|K_1 - K_0\\|_F / \\|K_0\\|_F` (a 0-d tensor)."""
    k0 = check_tensor("k0", k0, min_ndim=2, floating=True)
    k1 = check_tensor("k1", k1, floating=True)
    if k1.shape != k0.shape:
        raise ValueError(
            f"k0 and k1 must have one shape, got {tuple(k0.shape)} and {tuple(k1.shape)}"
        )
    return (k1 - k0).norm() / k0.norm()


def kernel_alignment(k: Tensor, y: Tensor) -> Tensor:
    """Kernel-target alignment :math:`\\langle K, y y^\\top\\rangle_F / (\\|K\\|_F \\|y\\|^2)`.

    Cristianini et al. (2001): the cosine between the kernel matrix and the target's outer product,
    in [-1, 1] (in [0, 1] for a positive semi-definite K); 1 means K is a multiple of
    :math:`y y^\\top`. For several targets ``y: (n, k)``, :math:`y y^\\top` is :math:`Y Y^\\top`.

    Args:
        k: ``(n, n)``; y: ``(n,)`` or ``(n, k)``.
    """
    k = check_tensor("k", k, ndim=2, floating=True)
    y = check_tensor("y", y, ndim=(1, 2), floating=True)
    if k.shape != (y.shape[0], y.shape[0]):
        raise ValueError(f"k must be (n, n) with n = len(y) = {y.shape[0]}, got {tuple(k.shape)}")
    y = y.reshape(y.shape[0], -1)
    target = y @ y.mT
    return (k * target).sum() / (k.norm() * target.norm())


def train_lazy_rich(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    alpha: float,
    lr: float,
    steps: int,
    record_every: int = 50,
    x_test: Tensor | None = None,
    y_test: Tensor | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train ``model`` (in place) in the scaled form of Chizat, Oyallon and Bach (2019).

    The trained function is :math:`f_\\alpha(x) = \\alpha\\,(h_\\theta(x) - h_{\\theta_0}(x))`
    (it starts at zero) and the loss :math:`L = \\frac{1}{2\\alpha^2}\\sum_i (f_\\alpha(x_i) -
    y_i)^2`. Then :math:`\\dot f_\\alpha = -\\Theta_h (f_\\alpha - y)` at initialisation for every
    :math:`\\alpha`: the functions start out alike, but the parameters must move only
    :math:`O(1/\\alpha)` to fit the data, so a large :math:`\\alpha` stays lazy (the kernel barely
    moves) and a small one must learn features. Plain gradient descent, full batch.

    Args:
        model: maps ``(n, *in_shape)`` to ``(n,)`` (one output per input).
        x: training inputs ``(n, *in_shape)``; y: targets ``(n,)``.
        alpha: the output scale (> 0).
        lr: learning rate; ``steps``: gradient steps; ``record_every``: log period.
        x_test, y_test: optional held-out inputs and targets, scored at every log.

    Returns:
        a history with lists ``"step"``, ``"loss"`` (training mean squared error),
        ``"test_loss"`` (held-out mean squared error; empty without ``x_test``),
        ``"kernel_change"`` (relative Frobenius change
        of :math:`\\Theta_h` on ``x`` since step 0), ``"alignment"`` (:func:`kernel_alignment` of
        :math:`\\Theta_h` with ``y``) and ``"weight_change"`` (:math:`\\|\\theta - \\theta_0\\| /
        \\|\\theta_0\\|`).
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    steps = check_positive_int("steps", steps)
    record_every = check_positive_int("record_every", record_every)
    y = check_tensor("y", y, ndim=1, shape=(x.shape[0],), floating=True)
    params = [p for p in model.parameters() if p.requires_grad]
    theta0 = torch.cat([p.detach().flatten() for p in params]).clone()
    if (x_test is None) != (y_test is None):
        raise ValueError("pass both x_test and y_test, or neither")
    with torch.no_grad():
        h0 = model(x).reshape(-1)
        h0_test = None if x_test is None else model(x_test).reshape(-1)
    k0 = empirical_ntk(model, x)
    history: dict[str, list[float]] = {
        k: [] for k in ("step", "loss", "test_loss", "kernel_change", "alignment", "weight_change")
    }
    with one_thread():
        for step in tqdm(range(steps + 1), disable=not progress, desc=f"alpha={alpha:g}"):
            out = alpha * (model(x).reshape(-1) - h0)
            loss = 0.5 * (out - y).square().sum() / alpha**2
            if step % record_every == 0 or step == steps:
                k = empirical_ntk(model, x)
                theta = torch.cat([p.detach().flatten() for p in params])
                history["step"].append(step)
                history["loss"].append(float(loss.detach() * 2 * alpha**2 / y.shape[0]))
                if x_test is not None and y_test is not None and h0_test is not None:
                    with torch.no_grad():
                        out_test = alpha * (model(x_test).reshape(-1) - h0_test)
                    history["test_loss"].append(float((out_test - y_test).square().mean()))
                history["kernel_change"].append(float(kernel_change(k0, k)))
                history["alignment"].append(float(kernel_alignment(k, y)))
                history["weight_change"].append(float((theta - theta0).norm() / theta0.norm()))
            if step == steps:
                break
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p -= lr * g
    return history


# --------------------------------------------------------------------------------------------
# Grokking on modular addition
# --------------------------------------------------------------------------------------------


class ModularSplit(NamedTuple):
    """All pairs of :math:`\\mathbb{Z}_p^2`, their sums mod p, and a random train/test split."""

    pairs: Tensor  #: ``(p*p, 2)`` int64, row ``a*p + b`` is ``(a, b)``
    labels: Tensor  #: ``(p*p,)`` int64, ``(a + b) % p``
    train: Tensor  #: indices of the training pairs, ``(n_train,)``
    test: Tensor  #: indices of the held-out pairs, ``(p*p - n_train,)``


def modular_addition_data(
    p: int, train_frac: float, *, seed: int = 0, device: torch.device | str | None = None
) -> ModularSplit:
    """Every pair ``(a, b)`` of :math:`\\{0..p-1\\}^2` labelled ``(a + b) % p``, split at random.

    ``round(train_frac * p * p)`` pairs train, the rest are held out; the split is a permutation
    drawn from a generator seeded with ``seed`` (the global RNG is untouched).
    """
    p = check_positive_int("p", p)
    if p < 2:
        raise ValueError(f"p must be >= 2, got {p}")
    if not 0 < train_frac < 1:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
    a, b = torch.meshgrid(
        torch.arange(p, device=device), torch.arange(p, device=device), indexing="ij"
    )
    pairs = torch.stack([a.flatten(), b.flatten()], dim=1)
    labels = (pairs[:, 0] + pairs[:, 1]) % p
    n_train = round(train_frac * p * p)
    if not 0 < n_train < p * p:
        raise ValueError(f"train_frac={train_frac} leaves an empty train or test set for p={p}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(p * p, generator=generator).to(pairs.device)
    return ModularSplit(pairs, labels, order[:n_train], order[n_train:])


class ModularMLP(nn.Module):
    """A one-hidden-layer network for :math:`(a, b) \\mapsto (a + b) \\bmod p`.

    :math:`h = \\mathrm{relu}(E_a[a] + E_b[b])`, logits :math:`= h\\, W_\\text{out}`: the first
    layer acting on the concatenated one-hot codes of a and b is the sum of two embeddings
    ``embed[0]`` and ``embed[1]`` (each ``(p, width)``). Embeddings are initialised
    :math:`N(0, \\text{init\\_scale}^2)`, the readout :math:`N(0, \\text{init\\_scale}^2/\\text{width})`.

    Shapes: ``(N, 2)`` int64 -> ``(N, p)``.
    """

    def __init__(
        self,
        p: int,
        width: int,
        *,
        init_scale: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.p, self.width = check_positive_int("p", p), check_positive_int("width", width)
        kw: dict[str, Any] = {"generator": generator, "device": device}
        self.embed = nn.Parameter(init_scale * torch.randn(2, p, width, **kw))
        self.unembed = nn.Parameter(init_scale * torch.randn(width, p, **kw) / math.sqrt(width))

    def hidden(self, pairs: Tensor) -> Tensor:
        """The hidden layer ``(N, width)``."""
        pairs = check_tensor("pairs", pairs, ndim=2, shape=(None, 2))
        if pairs.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"pairs must hold integers (int64), got {pairs.dtype}")
        return torch.relu(self.embed[0][pairs[:, 0]] + self.embed[1][pairs[:, 1]])

    def forward(self, pairs: Tensor) -> Tensor:
        return self.hidden(pairs) @ self.unembed


def fourier_power(embedding: Tensor) -> Tensor:
    """Power of each column of an embedding of :math:`\\mathbb{Z}_p` at frequencies k = 0..p//2.

    For a column :math:`e_j(a)`, :math:`P_{kj} = |\\hat e_j(k)|^2` with the DFT over a,
    :math:`\\hat e_j(k) = \\sum_a e_j(a) e^{-2\\pi i k a / p}`, where frequencies k and p - k
    (complex conjugates for a real column) are added together.

    Args:
        embedding: ``(p, width)``: one row per residue.

    Returns:
        ``(p // 2 + 1, width)``: row 0 is the mean (DC), row k the frequency k.
    """
    embedding = check_tensor("embedding", embedding, ndim=2, floating=True)
    p = embedding.shape[0]
    power = torch.fft.rfft(embedding, dim=0).abs().square()  # (p // 2 + 1, width)
    doubled = torch.ones(power.shape[0], 1, dtype=power.dtype, device=power.device)
    doubled[1 : (p + 1) // 2] = 2  # k and p - k; for even p the Nyquist term stands alone
    return power * doubled


def fourier_concentration(embedding: Tensor) -> Tensor:
    """How single-frequency the hidden units are: the mean over units j of
    :math:`\\max_k P_{kj} / \\sum_{k \\ge 1} P_{kj}` (:func:`fourier_power`, constant term left out).

    1 when every unit's embedding is one sinusoid of :math:`\\mathbb{Z}_p` (the generalising
    solution of modular addition, Gromov 2023; Nanda et al. 2023), about 0.14 for a random
    Gaussian embedding with p = 59. A 0-d tensor in (0, 1].
    """
    power = fourier_power(embedding)[1:]
    return (power.max(dim=0).values / power.sum(dim=0)).mean()


def train_modular_addition(
    p: int = 59,
    train_frac: float = 0.5,
    *,
    width: int = 128,
    lr: float = 1e-2,
    weight_decay: float = 1.0,
    steps: int = 3000,
    init_scale: float = 1.0,
    log_every: int = 50,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[ModularMLP, dict[str, Any]]:
    """Train a :class:`ModularMLP` on a fraction of the sums mod p: the grokking experiment.

    Full-batch AdamW (betas 0.9, 0.98) on the cross-entropy of the training pairs. The
    defaults fit the training pairs within about 150 steps and reach 95% accuracy on the held-out
    pairs about 900 steps later (the chapter's run), in well under a minute on
    one CPU thread. Without weight decay the held-out accuracy stays near chance.

    Args:
        p: the modulus; ``train_frac``: the fraction of the p^2 pairs trained on.
        width: hidden units; ``lr``, ``weight_decay``: AdamW's; ``steps``: full-batch steps.
        init_scale: scale of the initial weights.
        log_every: record the history every this many steps.
        seed: seeds the split and the initialisation (the global RNG is untouched).

    Returns:
        ``(model, history)``: the trained model (pairs ``(N, 2)`` -> logits ``(N, p)``) and a dict
        with ``"p"``, ``"train_frac"``, ``"weight_decay"``, the split's ``"train"`` indices, and per
        logged step the lists ``"step"``, ``"train_loss"``, ``"test_loss"``, ``"train_acc"``,
        ``"test_acc"``, ``"weight_norm"`` (of all parameters), ``"fourier_concentration"``
        (:func:`fourier_concentration` of ``embed[0]``) and ``"feature_similarity"`` (linear CKA
        between the hidden layer on all p^2 pairs now and at step 0: 1 while the features have not
        changed, as in the lazy regime).
    """
    steps = check_positive_int("steps", steps)
    log_every = check_positive_int("log_every", log_every)
    width = check_positive_int("width", width)
    if not lr > 0 or not weight_decay >= 0 or not init_scale > 0:
        raise ValueError(
            f"lr and init_scale must be > 0 and weight_decay >= 0, got lr={lr}, "
            f"init_scale={init_scale}, weight_decay={weight_decay}"
        )
    split = modular_addition_data(p, train_frac, seed=seed, device=device)
    generator = torch.Generator().manual_seed(seed + 1)
    model = ModularMLP(p, width, init_scale=init_scale, generator=generator).to(split.pairs.device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98)
    )
    x_train, y_train = split.pairs[split.train], split.labels[split.train]
    x_test, y_test = split.pairs[split.test], split.labels[split.test]
    keys = (
        "step",
        "train_loss",
        "test_loss",
        "train_acc",
        "test_acc",
        "weight_norm",
        "fourier_concentration",
        "feature_similarity",
    )
    with torch.no_grad():
        hidden0 = model.hidden(split.pairs).double()
    history: dict[str, Any] = {
        "p": p,
        "train_frac": train_frac,
        "weight_decay": weight_decay,
        "train": split.train.tolist(),
        **{k: [] for k in keys},
    }
    with one_thread():
        for step in tqdm(range(steps + 1), disable=not progress, desc="modular addition"):
            logits = model(x_train)
            loss = F.cross_entropy(logits, y_train)
            if step % log_every == 0 or step == steps:
                with torch.no_grad():
                    test_logits = model(x_test)
                    history["step"].append(step)
                    history["train_loss"].append(float(loss))
                    history["test_loss"].append(float(F.cross_entropy(test_logits, y_test)))
                    history["train_acc"].append(
                        float((logits.argmax(1) == y_train).double().mean())
                    )
                    history["test_acc"].append(
                        float((test_logits.argmax(1) == y_test).double().mean())
                    )
                    norm = torch.cat([q.flatten() for q in model.parameters()]).norm()
                    history["weight_norm"].append(float(norm))
                    history["fourier_concentration"].append(
                        float(fourier_concentration(model.embed[0]))
                    )
                    similarity = linear_cka(model.hidden(split.pairs).double(), hidden0)
                    history["feature_similarity"].append(float(similarity))
            if step == steps:
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model, history


#: The phase diagram of chapter 6: held-out accuracy after ``steps`` for each (fraction, decay).
GROKKING_SWEEP: dict[str, Any] = {
    "p": 59,
    "steps": 4000,
    "train_fracs": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    "weight_decays": [0.0, 0.1, 0.3, 1.0, 3.0],
    "seed": 0,
}


def _first_step(history: dict[str, Any], key: str, level: float) -> int | None:
    return next((s for s, v in zip(history["step"], history[key], strict=True) if v >= level), None)


def grokking_sweep(sweep: dict[str, Any] | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Run :func:`train_modular_addition` over a grid of train fractions x weight decays.

    For each cell records the final held-out accuracy and the first logged steps at which the
    training and the held-out accuracies reach 95% (``None`` if never). Runs on one CPU thread.
    ``python -m labcore.learning_dynamics sweep`` writes the shipped result.
    """
    sweep = dict(GROKKING_SWEEP if sweep is None else sweep)
    cells = []
    with one_thread():
        grid = [(f, wd) for f in sweep["train_fracs"] for wd in sweep["weight_decays"]]
        for frac, wd in tqdm(grid, disable=not progress, desc="grokking sweep"):
            _, history = train_modular_addition(
                sweep["p"],
                frac,
                weight_decay=wd,
                steps=sweep["steps"],
                seed=sweep["seed"],
                progress=False,
            )
            cells.append(
                {
                    "train_frac": frac,
                    "weight_decay": wd,
                    "final_test_acc": round(history["test_acc"][-1], 4),
                    "train_95": _first_step(history, "train_acc", 0.95),
                    "test_95": _first_step(history, "test_acc", 0.95),
                }
            )
    return {**sweep, "cells": cells}


def load_grokking_sweep() -> dict[str, Any]:
    """The shipped result of :func:`grokking_sweep` (``python -m labcore.learning_dynamics sweep``)."""
    files = resources.files("labcore").joinpath("weights", "grokking-sweep.json")
    return json.loads(files.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m labcore.learning_dynamics",
        description="Make the shipped data of chapter 6 (the grokking phase diagram).",
    )
    parser.add_argument("command", choices=["sweep"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "weights")
    args = parser.parse_args(argv)
    result = grokking_sweep()
    path = args.out / "grokking-sweep.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
