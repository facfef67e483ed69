"""Multilayer perceptrons: activations, the MLP, backpropagation by hand, training, representations.

Chapter 1 of the course. The module reads top to bottom, from the smallest piece to the largest:

1. **Activations** — ReLU, tanh, sigmoid, GELU (exact erf form; Hendrycks & Gimpel, 2016), SiLU
   (Elfwing et al., 2018; Ramachandran et al., 2017), the identity, and the two polynomial
   composition activations PolyReLU and PolyNorm of Zhuo et al., "Polynomial Composition
   Activations: Unleashing the Dynamics of Large Language Models", ICLR 2025 (arXiv:2411.03884).
2. **The MLP** ``f = f_L o ... o f_1`` with ``f_l(a) = sigma(W_l a + b_l)`` (no nonlinearity after
   the last layer), its initialisation (Glorot & Bengio, 2010; He et al., 2015), per-layer
   activation statistics, and a one-hidden-layer ReLU network written down by formula that equals
   any piecewise-linear interpolant (the constructive half of universal approximation in 1-D), a
   counter of linear pieces (for the depth-versus-width sawtooth of Telgarsky, COLT 2016) and the
   piecewise-linear interpolant on a grid of ``[0, 1]^d`` (for the curse of dimensionality).
3. **Backpropagation by hand** (Rumelhart, Hinton & Williams, 1986): ``manual_forward`` and
   ``manual_backward`` compute every gradient with explicit matrix formulas, no autograd.
4. **Training** — ``train`` (mini-batch SGD or Adam, Kingma & Ba, 2015), ``evaluate``, ``accuracy``:
   a loop as fast as a hand-written one, used by later chapters too.
5. **Representational geometry** — linear centred kernel alignment (Kornblith et al., "Similarity of
   Neural Network Representations Revisited", ICML 2019) and representational similarity analysis
   (Kriegeskorte et al., 2008), for the experiment of Alleman, Lindsey & Fusi, "Task structure and
   nonlinearity jointly determine learned representational geometry", ICLR 2024.

Shapes use the course vocabulary: ``batch`` (samples), ``n_features`` (input width), ``d_hidden``,
``n_out``; every tensor is batch-first and every result lives on its input's device and dtype.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from labcore.validation import check_in, check_positive_int, check_tensor

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_FUNCTIONS",
    "ACTIVATION_DERIVATIVES",
    "PolyReLU",
    "PolyNorm",
    "Lambda",
    "get_activation",
    "MLP",
    "init_weights_",
    "activation_statistics",
    "relu_interpolant",
    "count_linear_pieces",
    "simplex_interpolate",
    "ForwardCache",
    "manual_forward",
    "manual_backward",
    "History",
    "evaluate",
    "accuracy",
    "train",
    "linear_cka",
    "rdm",
    "rsa",
]

Tensor = torch.Tensor

# ------------------------------------------------------------------------------------------------
# 1. Activations
# ------------------------------------------------------------------------------------------------


class PolyReLU(nn.Module):
    """PolyReLU of Zhuo et al. (2025): a learnable polynomial of ReLU, applied elementwise.

    ``PolyReLU(x) = a_0 + sum_{i=1}^{r} a_i ReLU(x)^i``

    with learnable coefficients initialised as in the authors' code: ``a_i = 1/r`` for ``i >= 1``
    and ``a_0 = 0`` (for the paper's default order ``r = 3``: ``a_1 = a_2 = a_3 = 1/3``).

    Attributes:
        weight: ``(order,)``, ``weight[i - 1] = a_i``.
        bias: ``(1,)``, ``a_0``.

    Shapes: ``x: (..., d_hidden) -> (..., d_hidden)``.
    """

    def __init__(self, order: int = 3) -> None:
        super().__init__()
        self.order = check_positive_int("order", order)
        self.weight = nn.Parameter(torch.full((order,), 1.0 / order))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        r = torch.relu(x)
        out = self.bias + self.weight[0] * r
        power = r
        for i in range(1, self.order):  # a loop over the polynomial degree, not over samples
            power = power * r
            out = out + self.weight[i] * power
        return out

    def extra_repr(self) -> str:
        return f"order={self.order}"


class PolyNorm(nn.Module):
    """PolyNorm of Zhuo et al. (2025): a learnable sum of normalised powers of the input.

    ``PolyNorm(x) = a_0 + sum_{i=1}^{r} a_i norm(x^i)``,  with
    ``norm(v) = v / sqrt(mean_j v_j^2 + eps)``

    where ``x^i`` is the elementwise power and ``norm`` is an RMS normalisation over the last
    (feature) dimension, exactly as in the authors' released code (``eps = 1e-6``). The paper
    writes the normaliser as ``||x^i||_2``; the RMS differs from it by the constant
    ``sqrt(d_hidden)``, which the learnable ``a_i`` absorb. Coefficients are initialised as in that
    code: ``a_i = 1/r``, ``a_0 = 0``. Unlike the other activations, PolyNorm mixes the features of
    one sample (through the norm), so it is not elementwise.

    Attributes:
        weight: ``(order,)``, ``weight[i - 1] = a_i``.
        bias: ``(1,)``, ``a_0``.

    Shapes: ``x: (..., d_hidden) -> (..., d_hidden)``.
    """

    def __init__(self, order: int = 3, eps: float = 1e-6) -> None:
        super().__init__()
        self.order = check_positive_int("order", order)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.full((order,), 1.0 / order))
        self.bias = nn.Parameter(torch.zeros(1))

    def _norm(self, v: Tensor) -> Tensor:
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., d_hidden)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bias + self.weight[0] * self._norm(x)
        power = x
        for i in range(1, self.order):  # a loop over the polynomial degree, not over samples
            power = power * x
            out = out + self.weight[i] * self._norm(power)
        return out

    def extra_repr(self) -> str:
        return f"order={self.order}, eps={self.eps}"


class Lambda(nn.Module):
    """Wrap a plain function (``torch.tanh``, ``lambda z: z.clamp(0, 1)``) as an ``nn.Module``."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


#: name -> class (a zero-argument factory) of the activation module.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,  # exact form x * Phi(x), Phi the standard normal CDF
    "silu": nn.SiLU,
    "identity": nn.Identity,
    "polyrelu": PolyReLU,
    "polynorm": PolyNorm,
}


def get_activation(activation: str | nn.Module | type | Callable[[Tensor], Tensor]) -> nn.Module:
    """Turn a name, module, module class or function into a fresh activation module.

    Args:
        activation: a key of ``ACTIVATIONS`` (case-insensitive), an ``nn.Module`` instance (a deep
            copy is returned, so that learnable activations are not shared by accident), an
            ``nn.Module`` subclass (instantiated without arguments) or a callable on tensors
            (wrapped in ``Lambda``).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
        TypeError: for anything else.
    """
    if isinstance(activation, str):
        key = activation.lower()
        if key not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, an nn.Module or a callable, "
                f"got {activation!r}"
            )
        return ACTIVATIONS[key]()
    if isinstance(activation, nn.Module):
        return copy.deepcopy(activation)
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    if callable(activation):
        return Lambda(activation)
    raise TypeError(
        f"activation must be a name, an nn.Module or a callable, got {type(activation).__name__}"
    )


def _gelu(z: Tensor) -> Tensor:
    return 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0)))


def _gelu_prime(z: Tensor) -> Tensor:
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))  # Phi(z)
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)  # phi(z)
    return cdf + z * pdf


def _silu_prime(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


#: name -> sigma, the elementwise activations that ``manual_forward`` supports.
ACTIVATION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": _gelu,
    "silu": F.silu,
    "identity": lambda z: z,
}

#: name -> sigma', written out by formula (ReLU'(0) = 0, as autograd has it).
ACTIVATION_DERIVATIVES: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": lambda z: (z > 0).to(z.dtype),  # 1[z > 0]
    "tanh": lambda z: 1.0 - torch.tanh(z) ** 2,  # 1 - tanh(z)^2
    "sigmoid": lambda z: torch.sigmoid(z) * (1.0 - torch.sigmoid(z)),  # s(1 - s)
    "gelu": _gelu_prime,  # Phi(z) + z phi(z)
    "silu": _silu_prime,  # s(z)(1 + z(1 - s(z)))
    "identity": torch.ones_like,
}


# ------------------------------------------------------------------------------------------------
# 2. The MLP
# ------------------------------------------------------------------------------------------------


def _check_sizes(sizes: object) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"sizes must be a list of ints, got {type(sizes).__name__}")
    if len(sizes) < 2:
        raise ValueError(
            f"sizes must have at least 2 entries [n_features, ..., n_out], got {list(sizes)}"
        )
    for i, s in enumerate(sizes):
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"sizes[{i}] must be an int, got {type(s).__name__} ({s!r})")
        if s < 1:
            raise ValueError(f"sizes must be positive ints, got sizes[{i}] = {s} in {list(sizes)}")
    return [int(s) for s in sizes]


class MLP(nn.Module):
    """A multilayer perceptron: affine maps with a nonlinearity between them.

    ``a_0 = x``,  ``z_l = a_{l-1} W_l^T + b_l``,  ``a_l = sigma(z_l)`` for ``l < L``,
    ``f(x) = z_L``.

    There is no nonlinearity after the last layer (the output is logits or a regression value).

    Args:
        sizes: ``[n_features, d_hidden_1, ..., n_out]``, at least two positive ints; the network has
            ``L = len(sizes) - 1`` linear layers.
        activation: see ``get_activation``; each hidden layer gets its own copy.
        bias: whether the linear layers have biases.

    Attributes:
        layers: ``nn.ModuleList`` of the ``L`` ``nn.Linear`` layers; ``layers[l].weight`` has shape
            ``(sizes[l+1], sizes[l])``.
        activations: ``nn.ModuleList`` of the ``L - 1`` activation modules.
        sizes: the tuple of layer widths.
        activation_name: the activation's name when given by name, else ``None``.

    Shapes: ``x: (..., n_features) -> (..., n_out)``; any number of leading dimensions.

    Raises:
        ValueError / TypeError: for bad ``sizes`` or ``activation``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | nn.Module | Callable[[Tensor], Tensor] = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        sizes = _check_sizes(sizes)
        self.sizes = tuple(sizes)
        self.activation_name = activation.lower() if isinstance(activation, str) else None
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out, bias=bias)
            for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.activations = nn.ModuleList(get_activation(activation) for _ in sizes[1:-1])

    @property
    def n_features(self) -> int:
        return self.sizes[0]

    @property
    def n_out(self) -> int:
        return self.sizes[-1]

    def _check_input(self, x: Tensor) -> None:
        ok = (
            isinstance(x, Tensor)
            and x.ndim >= 1
            and x.shape[-1] == self.sizes[0]
            and x.is_floating_point()
        )
        if not ok:  # the fast test above passes on every good call; this one explains the failure
            check_tensor("x", x, min_ndim=1, shape=(self.sizes[0],), floating=True)

    def _mismatch_error(self, x: Tensor) -> Exception | None:
        """A clear error if ``x`` and the parameters disagree on device or dtype, else ``None``."""
        w = self.layers[0].weight
        if x.device != w.device:
            return ValueError(
                f"x is on {x.device} but the MLP's parameters are on {w.device}; "
                "move one of them (x.to(device) or model.to(device))"
            )
        if x.dtype != w.dtype:
            return TypeError(
                f"x has dtype {x.dtype} but the MLP's parameters have dtype {w.dtype}; "
                f"convert one of them (x.to({w.dtype}) or model.to({x.dtype}))"
            )
        return None

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        try:
            for layer, act in zip(self.layers, self.activations, strict=False):
                x = act(layer(x))  # (..., d_hidden); zip stops before the last layer
            return self.layers[-1](x)  # (..., n_out)
        except RuntimeError:
            error = self._mismatch_error(x)  # checked only on failure: free on the fast path
            if error is not None:
                raise error from None
            raise

    def forward_with_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Forward pass that also returns every pre-activation and hidden representation.

        Returns:
            ``(out, zs, hs)``: ``out`` is ``f(x)``, ``(..., n_out)``; ``zs[l]`` is the
            pre-activation ``z_{l+1}`` of layer ``l+1`` (``L`` tensors, the last one is ``out``);
            ``hs[l] = sigma(zs[l])`` is the hidden representation after layer ``l+1``
            (``L - 1`` tensors, ``(..., sizes[l+1])``).
        """
        self._check_input(x)
        zs, hs = [], []
        try:
            for layer, act in zip(self.layers, self.activations, strict=False):
                zs.append(layer(x))
                x = act(zs[-1])
                hs.append(x)
            zs.append(self.layers[-1](x))
        except RuntimeError:
            error = self._mismatch_error(x)
            if error is not None:
                raise error from None
            raise
        return zs[-1], zs, hs

    def parameters_list(self) -> list[tuple[Tensor, Tensor | None]]:
        """The parameters as ``[(W_1, b_1), ..., (W_L, b_L)]`` for ``manual_forward``.

        These are the module's own ``nn.Parameter`` objects (not copies); ``b_l`` is ``None``
        when the MLP has no biases. ``W_l``: ``(sizes[l], sizes[l-1])``, ``b_l``: ``(sizes[l],)``.
        """
        return [(layer.weight, layer.bias) for layer in self.layers]

    def extra_repr(self) -> str:
        return f"sizes={list(self.sizes)}"


def init_weights_(
    model: nn.Module,
    scheme: str = "xavier",
    *,
    gain: float = 1.0,
    std: float = 1.0,
    seed: int | None = None,
) -> nn.Module:
    """Re-initialise every ``nn.Linear`` in ``model`` in place; biases become zero.

    Weights are drawn from ``N(0, s^2)`` with

    - ``"xavier"`` (Glorot & Bengio, 2010): ``s = gain * sqrt(2 / (fan_in + fan_out))``;
    - ``"he"`` (He et al., 2015): ``s = gain * sqrt(2 / fan_in)``, which keeps the second moment of
      ReLU pre-activations constant across depth;
    - ``"lecun"``: ``s = gain * sqrt(1 / fan_in)``;
    - ``"normal"``: ``s = gain * std``, independent of the width (activations explode or vanish).

    Args:
        model: any module; every ``nn.Linear`` inside it is re-initialised.
        scheme: one of the above.
        gain: a multiplier on the standard deviation.
        std: the standard deviation of ``"normal"``.
        seed: seeds a generator on the parameters' device; ``None`` uses torch's global RNG.

    Returns:
        ``model`` itself.
    """
    check_in("scheme", scheme, ["xavier", "he", "lecun", "normal"])
    if not gain > 0 or not std > 0:
        raise ValueError(f"gain and std must be > 0, got gain={gain}, std={std}")
    generators: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, nn.Linear):
                continue
            fan_out, fan_in = module.weight.shape
            s = {
                "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
                "he": math.sqrt(2.0 / fan_in),
                "lecun": math.sqrt(1.0 / fan_in),
                "normal": std,
            }[scheme] * gain
            gen = None
            if seed is not None:
                dev = module.weight.device
                if dev not in generators:
                    generators[dev] = torch.Generator(device=dev).manual_seed(seed)
                gen = generators[dev]
            module.weight.normal_(0.0, s, generator=gen)
            if module.bias is not None:
                module.bias.zero_()
    return model


def activation_statistics(model: MLP, x: Tensor) -> dict[str, Tensor]:
    """Mean and standard deviation of every layer's pre- and post-activations on a batch.

    For the initialisation-across-depth plot: with the right initialisation the standard deviation
    of ``z_l`` stays of order one as ``l`` grows; with the wrong one it explodes or vanishes.

    Args:
        model: an ``MLP``.
        x: ``(batch, n_features)`` (or any leading dimensions).

    Returns:
        ``{"pre_mean", "pre_std", "post_mean", "post_std"}``, each ``(L,)`` on ``x``'s device:
        statistics of ``z_l`` and of ``a_l = sigma(z_l)`` over all samples and units of layer ``l``
        (for the last layer ``a_L = z_L``). Computed without gradients.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a labcore.mlp.MLP, got {type(model).__name__}")
    with torch.no_grad():
        out, zs, hs = model.forward_with_intermediates(x)
        posts = [*hs, out]
        return {
            "pre_mean": torch.stack([z.mean() for z in zs]),
            "pre_std": torch.stack([z.std() for z in zs]),
            "post_mean": torch.stack([a.mean() for a in posts]),
            "post_std": torch.stack([a.std() for a in posts]),
        }


def relu_interpolant(
    knots_x: Sequence[float] | np.ndarray | Tensor,
    knots_y: Sequence[float] | np.ndarray | Tensor,
    *,
    dtype: torch.dtype | None = None,
) -> MLP:
    """A one-hidden-layer ReLU network, written down by formula, equal to a piecewise-linear map.

    With knots ``x_0 < x_1 < ... < x_K``, values ``y_k`` and slopes
    ``s_k = (y_{k+1} - y_k) / (x_{k+1} - x_k)``, the interpolant is

    ``f(x) = y_0 + s_0 ReLU(x - x_0) - s_0 ReLU(x_0 - x)
    + sum_{k=1}^{K-1} (s_k - s_{k-1}) ReLU(x - x_k)``

    i.e. an ``MLP([1, K + 1, 1], "relu")`` with

    - ``W_1 = [1, -1, 1, ..., 1]^T``, ``b_1 = [-x_0, x_0, -x_1, ..., -x_{K-1}]``;
    - ``W_2 = [s_0, -s_0, s_1 - s_0, ..., s_{K-1} - s_{K-2}]``, ``b_2 = y_0``.

    It equals ``np.interp`` on ``[x_0, x_K]`` and continues linearly with slope ``s_0`` to the left
    and ``s_{K-1}`` to the right. Each hidden unit adds one "kink": the change of slope at its knot.

    Args:
        knots_x: ``(K + 1,)`` strictly increasing, ``K >= 1``.
        knots_y: ``(K + 1,)``.
        dtype: of the network; default: the knots' dtype if they are a floating tensor, else torch's
            default dtype.

    Returns:
        The ``MLP``; input ``(..., 1)``, output ``(..., 1)``, on the knots' device (if a tensor).
    """
    kx = knots_x if isinstance(knots_x, Tensor) else torch.as_tensor(np.asarray(knots_x))
    ky = knots_y if isinstance(knots_y, Tensor) else torch.as_tensor(np.asarray(knots_y))
    if dtype is None:
        dtype = kx.dtype if kx.is_floating_point() else torch.get_default_dtype()
    check_tensor("knots_x", kx, ndim=1)
    check_tensor("knots_y", ky, ndim=1)
    if kx.shape != ky.shape:
        raise ValueError(
            f"knots_x and knots_y must have the same shape, got {tuple(kx.shape)} and "
            f"{tuple(ky.shape)}"
        )
    if kx.shape[0] < 2:
        raise ValueError(f"knots_x must have at least 2 knots, got {kx.shape[0]}")
    kx = kx.to(dtype=torch.float64)
    ky = ky.to(device=kx.device, dtype=torch.float64)
    if not bool((kx[1:] > kx[:-1]).all()):
        raise ValueError(f"knots_x must be strictly increasing, got {kx.tolist()}")
    K = kx.shape[0] - 1
    slopes = (ky[1:] - ky[:-1]) / (kx[1:] - kx[:-1])  # (K,)
    w1 = torch.ones(K + 1, dtype=torch.float64, device=kx.device)
    w1[1] = -1.0
    b1 = torch.cat([-kx[:1], kx[:1], -kx[1:K]])  # (K + 1,)
    w2 = torch.cat([slopes[:1], -slopes[:1], slopes[1:] - slopes[:-1]])  # (K + 1,)
    model = MLP([1, K + 1, 1], activation="relu").to(device=kx.device, dtype=dtype)
    with torch.no_grad():
        model.layers[0].weight.copy_(w1[:, None])  # (K + 1, 1)
        model.layers[0].bias.copy_(b1)
        model.layers[1].weight.copy_(w2[None, :])  # (1, K + 1)
        model.layers[1].bias.copy_(ky[:1])
    return model


def count_linear_pieces(x: Tensor, y: Tensor, *, tol: float = 1e-9) -> int:
    """The number of linear pieces of the polyline through the points ``(x_i, y_i)``.

    With the slopes ``s_i = (y_{i+1} - y_i) / (x_{i+1} - x_i)``, the count is
    ``1 + #{i : |s_{i+1} - s_i| > tol}``: one piece plus one per change of slope. For a continuous
    piecewise-linear function sampled on a grid that contains every kink, this is exactly its number
    of pieces on ``[x_0, x_{n-1}]``; a kink strictly between two grid points shows up as two changes
    of slope (the chord across it has a slope of its own), so choose the grid accordingly.

    Args:
        x: ``(n,)`` strictly increasing, ``n >= 2``.
        y: ``(n,)``, the function's values at ``x``.
        tol: slope changes at most ``tol`` in absolute value count as round-off.

    Returns:
        The number of pieces, a Python int ``>= 1``.

    Raises:
        TypeError / ValueError: for non-tensors, other shapes, fewer than two points or ``x`` not
            strictly increasing.
    """
    check_tensor("x", x, ndim=1, floating=True)
    check_tensor("y", y, ndim=1, floating=True)
    if x.shape != y.shape or x.shape[0] < 2:
        raise ValueError(
            f"x and y must have the same shape (n,) with n >= 2, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    dx = torch.diff(x)  # (n - 1,)
    if not bool((dx > 0).all()):
        raise ValueError("x must be strictly increasing")
    slopes = torch.diff(y) / dx  # (n - 1,)
    return 1 + int((torch.diff(slopes).abs() > tol).sum())


def simplex_interpolate(fn: Callable[[Tensor], Tensor], m: int, points: Tensor) -> Tensor:
    """The continuous piecewise-linear interpolant of ``fn`` on a grid of ``[0, 1]^d``, at ``points``.

    The grid ``{0, 1/m, ..., 1}^d`` cuts the cube into ``m^d`` cells of side ``h = 1/m``; each cell
    is cut into ``d!`` simplices (Kuhn's triangulation: the simplex of a point is given by the order
    of its local coordinates ``t = m x - floor(m x)``). On each simplex the interpolant is the affine
    function that agrees with ``fn`` at its ``d + 1`` vertices. Walking from the cell's lower corner
    ``v_0`` along the axes ``j_1, ..., j_d`` in decreasing order of ``t``,

    ``f(x) = fn(v_0) + sum_k t_{j_k} (fn(v_k) - fn(v_{k-1}))``,  ``v_k = v_{k-1} + e_{j_k} / m``.

    It reproduces affine functions exactly, equals ``fn`` at the grid points, and for ``fn`` with
    bounded second derivatives errs by ``O(h^2) = O(N^{-2/d})`` in the number of cells ``N = m^d``:
    the curse of dimensionality of chapter 1. ``fn`` is evaluated ``d + 1`` times on ``(n, d)``
    batches; the loop runs over the ``d`` coordinates, not over the points.

    Args:
        fn: maps ``(n, d)`` points to ``(n,)`` values, on the points' device and dtype.
        m: cells per axis, ``m >= 1``.
        points: ``(n, d)`` floating, every coordinate in ``[0, 1]``.

    Returns:
        ``(n,)``, the interpolant at ``points``, on their device and dtype.

    Raises:
        TypeError / ValueError: for a bad ``m``, ``points`` of another rank, dtype or outside the
            cube, or ``fn`` returning another shape.
    """
    check_positive_int("m", m)
    check_tensor("points", points, ndim=2, floating=True)
    if points.device.type != "meta" and not bool(((points >= 0) & (points <= 1)).all()):
        raise ValueError("points must lie in [0, 1]^d")
    n, d = points.shape
    rows = torch.arange(n, device=points.device)
    vertex = torch.floor(points * m).clamp(
        max=m - 1
    )  # (n, d): the cell's lower corner, in units of h
    t = points * m - vertex  # (n, d): local coordinates in [0, 1]
    value = fn(vertex / m)  # (n,)
    if value.shape != (n,):
        raise ValueError(
            f"fn must map (n, d) points to (n,) values, got shape {tuple(value.shape)}"
        )
    out = value
    step = torch.ones(n, dtype=vertex.dtype, device=vertex.device)
    for j in torch.argsort(t, dim=1, descending=True).T:  # d steps: (n,) axis indices
        vertex = vertex.index_put((rows, j), step, accumulate=True)
        new_value = fn(vertex / m)  # (n,)
        out = out + (new_value - value) * t[rows, j]
        value = new_value
    return out


# ------------------------------------------------------------------------------------------------
# 3. Backpropagation by hand
# ------------------------------------------------------------------------------------------------


@dataclass
class ForwardCache:
    """What ``manual_forward`` keeps for ``manual_backward``.

    Attributes:
        a: ``[a_0, ..., a_{L-1}]``, the input of each layer (``a_0 = x``),
            ``a_l: (batch, sizes[l])``.
        z: ``[z_1, ..., z_L]``, the pre-activation of each layer, ``z_l: (batch, sizes[l])``.
        activation: the activation's name.
    """

    a: list[Tensor]
    z: list[Tensor]
    activation: str


def _check_params(params: object) -> list[tuple[Tensor, Tensor | None]]:
    if not isinstance(params, Sequence) or len(params) == 0:
        raise ValueError("params must be a non-empty list of (W, b) pairs, one per layer")
    checked = []
    for l, pair in enumerate(params):
        if not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"params[{l}] must be a pair (W, b), got {type(pair).__name__}")
        W, b = pair
        check_tensor(f"params[{l}][0] (W_{l + 1})", W, ndim=2, floating=True)
        if b is not None:
            check_tensor(f"params[{l}][1] (b_{l + 1})", b, shape=(W.shape[0],), ndim=1)
        if l > 0 and W.shape[1] != checked[-1][0].shape[0]:
            raise ValueError(
                f"params[{l}][0] (W_{l + 1}) must have shape (*, {checked[-1][0].shape[0]}) to "
                f"follow W_{l} of shape {tuple(checked[-1][0].shape)}, got {tuple(W.shape)}"
            )
        checked.append((W, b))
    return checked


def manual_forward(
    params: Sequence[tuple[Tensor, Tensor | None]],
    x: Tensor,
    activation: str = "relu",
) -> tuple[Tensor, ForwardCache]:
    """The forward pass of an MLP written out, keeping what the backward pass needs.

    ``a_0 = x``;  ``z_l = a_{l-1} W_l^T + b_l``;  ``a_l = sigma(z_l)`` for ``l < L``;
    ``out = z_L``.

    Args:
        params: ``[(W_1, b_1), ..., (W_L, b_L)]`` laid out like ``nn.Linear``: ``W_l`` is
            ``(d_l, d_{l-1})``, ``b_l`` is ``(d_l,)`` or ``None`` (``MLP.parameters_list()``).
        x: ``(batch, n_features)`` with ``n_features = d_0``.
        activation: a key of ``ACTIVATION_FUNCTIONS`` (elementwise activations only).

    Returns:
        ``(out, cache)``: ``out`` is ``(batch, d_L)``; ``cache`` a ``ForwardCache``.
    """
    params = _check_params(params)
    check_in("activation", activation, list(ACTIVATION_FUNCTIONS))
    check_tensor("x", x, ndim=2, shape=(params[0][0].shape[1],), floating=True)
    sigma = ACTIVATION_FUNCTIONS[activation]
    a, zs, inputs = x, [], []
    for l, (W, b) in enumerate(params):
        inputs.append(a)
        z = a @ W.T  # (batch, d_l)
        if b is not None:
            z = z + b
        zs.append(z)
        a = sigma(z) if l < len(params) - 1 else z
    return a, ForwardCache(a=inputs, z=zs, activation=activation)


def manual_backward(
    params: Sequence[tuple[Tensor, Tensor | None]],
    cache: ForwardCache,
    grad_out: Tensor,
    activation: str | None = None,
    *,
    return_input_grad: bool = False,
) -> list[tuple[Tensor, Tensor | None]] | tuple[list[tuple[Tensor, Tensor | None]], Tensor]:
    """Backpropagation with explicit matrix formulas (no autograd).

    With ``delta_l = dLoss/dz_l`` (``(batch, d_l)``, one row per sample):

    - ``delta_L = grad_out``  (``grad_out = dLoss/dout``);
    - ``dW_l = delta_l^T a_{l-1}``  (``(d_l, d_{l-1})``, summed over the batch by the product);
    - ``db_l = sum_batch delta_l``  (``(d_l,)``);
    - ``delta_{l-1} = (delta_l W_l) * sigma'(z_{l-1})``  (elementwise product);
    - ``dLoss/dx = delta_1 W_1``  (``(batch, n_features)``).

    Each layer costs two matrix products backward against one forward, so a backward pass costs
    about twice a forward pass.

    Args:
        params: the ``params`` given to ``manual_forward``.
        cache: the ``ForwardCache`` it returned.
        grad_out: ``(batch, d_L)``, the gradient of the loss with respect to the output.
        activation: a key of ``ACTIVATION_DERIVATIVES``; default: the one used in the forward pass.
        return_input_grad: also return ``dLoss/dx``.

    Returns:
        ``[(dW_1, db_1), ..., (dW_L, db_L)]`` (``db_l`` is ``None`` where ``b_l`` is), and with
        ``return_input_grad=True`` the pair ``(grads, grad_x)``.
    """
    params = _check_params(params)
    if not isinstance(cache, ForwardCache):
        raise TypeError(f"cache must be the ForwardCache of manual_forward, got {type(cache)}")
    if len(cache.z) != len(params):
        raise ValueError(
            f"cache holds {len(cache.z)} layers but params has {len(params)}; "
            "pass the cache of manual_forward on the same params"
        )
    activation = cache.activation if activation is None else activation
    check_in("activation", activation, list(ACTIVATION_DERIVATIVES))
    if activation != cache.activation:
        raise ValueError(
            f"activation={activation!r} differs from {cache.activation!r} used in manual_forward"
        )
    check_tensor("grad_out", grad_out, ndim=2)
    if grad_out.shape != cache.z[-1].shape:
        raise ValueError(
            f"grad_out must have the output's shape {tuple(cache.z[-1].shape)}, "
            f"got {tuple(grad_out.shape)}"
        )
    sigma_prime = ACTIVATION_DERIVATIVES[activation]
    grads: list[tuple[Tensor, Tensor | None]] = []
    delta = grad_out  # delta_L: (batch, d_L)
    for l in range(len(params) - 1, -1, -1):
        W, b = params[l]
        dW = delta.T @ cache.a[l]  # (d_l, d_{l-1})
        db = delta.sum(0) if b is not None else None  # (d_l,)
        grads.append((dW, db))
        delta = delta @ W  # (batch, d_{l-1}): dLoss/da_{l-1}
        if l > 0:
            delta = delta * sigma_prime(cache.z[l - 1])  # dLoss/dz_{l-1}
    grads.reverse()
    return (grads, delta) if return_input_grad else grads


# ------------------------------------------------------------------------------------------------
# 4. Training
# ------------------------------------------------------------------------------------------------


@dataclass
class History:
    """What ``train`` records.

    Attributes:
        train_loss: the mini-batch loss of every step (``len == steps``).
        eval_step: the steps (1-based) after which the model was evaluated on ``eval_data``.
        eval_loss: the mean loss on ``eval_data`` at those steps.
        eval_accuracy: the accuracy at those steps (classification only, else empty).
        steps_per_epoch: ``ceil(n_train / batch_size)``.
        seconds: wall-clock training time (ignored when histories are compared with ``==``).
    """

    train_loss: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)
    steps_per_epoch: int = 0
    seconds: float = field(default=0.0, compare=False)

    def epoch_loss(self) -> list[float]:
        """The mean training loss of each (complete or final partial) epoch."""
        k = max(self.steps_per_epoch, 1)
        losses = self.train_loss
        return [float(np.mean(losses[i : i + k])) for i in range(0, len(losses), k)]


LossSpec = str | Callable[[Tensor, Tensor], Tensor]


def _cross_entropy(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    # logits (..., n_classes) with labels (...) or probabilities (..., n_classes): flatten the
    # leading dimensions, so that sequence models (batch, pos, d_vocab) work as well
    n_classes = pred.shape[-1]
    logits = pred.reshape(-1, n_classes)  # (n_predictions, n_classes)
    target = target.reshape(-1, n_classes) if target.is_floating_point() else target.reshape(-1)
    return F.cross_entropy(logits, target, reduction=reduction)


def _mse(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    return F.mse_loss(pred, target, reduction=reduction)


_LOSSES = {"cross_entropy": _cross_entropy, "mse": _mse}


def _resolve_loss(loss: LossSpec) -> tuple[Callable[..., Tensor], str | None]:
    if isinstance(loss, str):
        check_in("loss", loss, list(_LOSSES))
        return _LOSSES[loss], loss
    if callable(loss):
        return loss, None
    raise TypeError(f"loss must be 'cross_entropy', 'mse' or a callable, got {type(loss).__name__}")


def _check_loss_shapes(loss_name: str | None, pred: Tensor, target: Tensor) -> None:
    if loss_name == "mse" and pred.shape != target.shape:
        raise ValueError(
            f"loss='mse' needs the model output and y to have the same shape, got output "
            f"{tuple(pred.shape)} and y {tuple(target.shape)} (reshape y, e.g. y[:, None])"
        )
    if loss_name == "cross_entropy":
        want = pred.shape if target.is_floating_point() else pred.shape[:-1]
        if target.shape != want:
            raise ValueError(
                "loss='cross_entropy' needs logits (..., n_classes) and integer labels (...) or "
                f"probabilities (..., n_classes), got output {tuple(pred.shape)} and y "
                f"{tuple(target.shape)}"
            )


def _model_device_dtype(model: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    p = next(iter(model.parameters()), None)
    return (p.device, p.dtype) if p is not None else (None, None)


def _prepare_data(name: str, data: object, model: nn.Module) -> tuple[Tensor, Tensor]:
    """``(X, y)`` or a ``TensorDataset`` -> tensors on the model's device (X in its float dtype)."""
    if isinstance(data, torch.utils.data.TensorDataset):
        data = data.tensors
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(
            f"{name} must be a pair (X, y) of tensors or a TensorDataset of two tensors, "
            f"got {type(data).__name__}"
        )
    X, y = data
    check_tensor(f"{name}[0] (X)", X, min_ndim=1)
    check_tensor(f"{name}[1] (y)", y, min_ndim=1)
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: X and y must have the same number of samples, got X {tuple(X.shape)} "
            f"and y {tuple(y.shape)}"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got X {tuple(X.shape)}")
    device, dtype = _model_device_dtype(model)
    X = X.to(device=device or X.device, dtype=dtype if X.is_floating_point() and dtype else None)
    y = y.to(device=X.device, dtype=dtype if y.is_floating_point() and dtype else None)
    return X, y


def _is_classification(loss_name: str | None, y: Tensor) -> bool:
    return loss_name in ("cross_entropy", None) and not y.is_floating_point()


def evaluate(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    loss: LossSpec = "cross_entropy",
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean loss (and accuracy, for integer labels) of ``model`` on ``(X, y)``, in chunks.

    Args:
        model: maps ``(chunk, ...)`` to predictions; in eval mode during the call, then restored.
        X: ``(batch, ...)``, e.g. ``(batch, n_features)``; moved to the model's device.
        y: ``(batch,)`` integer labels or ``(batch, ...)`` regression targets.
        loss: ``"cross_entropy"``, ``"mse"`` or a callable ``loss(pred, y)`` returning a mean over
            the samples of its batch.
        batch_size: the chunk size that bounds memory.

    Returns:
        ``{"loss": ...}``: the mean over every label (cross-entropy) or target element (MSE), as in
        ``train``, or the sample-weighted mean of a callable's values; plus ``"accuracy"`` (fraction
        of labels with ``argmax(pred, -1) == y``) when the labels are integers and the loss is
        ``"cross_entropy"`` or a callable.
    """
    loss_fn, loss_name = _resolve_loss(loss)
    check_positive_int("batch_size", batch_size)
    X, y = _prepare_data("(X, y)", (X, y), model)
    classify = _is_classification(loss_name, y)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=X.device)  # summed loss
    correct = torch.zeros((), dtype=torch.float64, device=X.device)
    count = 0  # number of loss terms
    try:
        with torch.no_grad():
            for i in range(0, X.shape[0], batch_size):  # chunks bound memory
                pred = model(X[i : i + batch_size])
                yb = y[i : i + batch_size]
                _check_loss_shapes(loss_name, pred, yb)
                if loss_name is not None:
                    total += loss_fn(pred, yb, reduction="sum").double()
                    # cross-entropy: one term per prediction; MSE: one per target element
                    count += pred[..., 0].numel() if loss_name == "cross_entropy" else yb.numel()
                else:
                    total += loss_fn(pred, yb).double() * yb.shape[0]
                    count += yb.shape[0]
                if classify:
                    correct += (pred.argmax(-1) == yb).sum()
    finally:
        model.train(was_training)
    metrics = {"loss": float(total) / count}
    if classify:
        metrics["accuracy"] = float(correct) / y.numel()
    return metrics


def accuracy(model: nn.Module, X: Tensor, y: Tensor, *, batch_size: int = 1024) -> float:
    """Fraction of samples with ``argmax(model(X), -1) == y``.

    Shapes: ``X: (batch, n_features)``, ``y: (batch,)`` integer labels; the model returns logits
    ``(batch, n_classes)``. Evaluated in chunks of ``batch_size`` without gradients, in eval mode.
    """
    check_tensor("y", y, min_ndim=1)
    if y.is_floating_point():
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    return evaluate(model, X, y, loss="cross_entropy", batch_size=batch_size)["accuracy"]


def _make_optimizer(
    model: nn.Module, optimizer: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    check_in("optimizer", optimizer, ["adam", "adamw", "sgd"])
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not weight_decay >= 0 or not momentum >= 0:
        raise ValueError(
            f"weight_decay and momentum must be >= 0, got {weight_decay} and {momentum}"
        )
    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters to train")
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if momentum:
        raise ValueError(f"momentum is for optimizer='sgd' only, got momentum={momentum}")
    cls = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, weight_decay=weight_decay)


def train(
    model: nn.Module,
    train_data: tuple[Tensor, Tensor] | torch.utils.data.TensorDataset,
    *,
    loss: LossSpec = "cross_entropy",
    steps: int | None = None,
    epochs: int | None = None,
    lr: float = 1e-3,
    batch_size: int = 64,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    eval_data: tuple[Tensor, Tensor] | torch.utils.data.TensorDataset | None = None,
    eval_every: int | None = None,
    progress: bool = True,
    seed: int | None = None,
) -> History:
    """Train ``model`` by mini-batch gradient descent; return the ``History``.

    Each epoch shuffles the training set once (``torch.randperm`` with a generator seeded by
    ``seed``) and walks through it in slices of ``batch_size`` (the last one may be smaller); one
    step is one slice: ``loss(model(X_b), y_b)``, backward, optimizer step. No ``DataLoader``: the
    data are tensors on the model's device, so the loop costs what a hand-written one costs.

    Args:
        model: the module to train (in place). It is left in eval mode.
        train_data: ``(X, y)`` or a ``TensorDataset``; ``X: (n, ...)`` e.g. ``(n, n_features)``,
            ``y: (n,)`` integer labels or ``(n, ...)`` targets. Moved to the model's device;
            floating tensors are converted to the model's dtype.
        loss: ``"cross_entropy"`` (logits ``(..., n_classes)``, labels ``(...)``), ``"mse"``
            (output and ``y`` of the same shape) or a callable ``loss(pred, y) -> scalar``.
        steps: number of optimizer steps; exactly one of ``steps`` and ``epochs``.
        epochs: number of passes over the training set.
        lr: learning rate.
        batch_size: mini-batch size (capped at ``n``).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (with ``momentum``).
        weight_decay: L2 penalty (decoupled for ``"adamw"``).
        momentum: SGD momentum.
        eval_data: optional held-out ``(X, y)``, evaluated every ``eval_every`` steps and at the
            end.
        eval_every: in steps; default: once per epoch.
        progress: show a tqdm progress bar.
        seed: seeds the shuffling; ``None`` uses torch's global RNG. (Seed the model's
            initialisation separately, e.g. with ``labcore.seed_everything``.)

    Returns:
        ``History`` with the loss of every step and the evaluation metrics.

    Raises:
        ValueError / TypeError: for bad arguments, mismatched ``X``/``y`` lengths, or an output
            whose shape does not fit the loss (checked on the first step).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    loss_fn, loss_name = _resolve_loss(loss)
    if (steps is None) == (epochs is None):
        raise ValueError(
            f"give exactly one of steps and epochs, got steps={steps}, epochs={epochs}"
        )
    check_positive_int("batch_size", batch_size)
    X, y = _prepare_data("train_data", train_data, model)
    if eval_data is not None:
        X_eval, y_eval = _prepare_data("eval_data", eval_data, model)
    n = X.shape[0]
    batch_size = min(batch_size, n)
    steps_per_epoch = math.ceil(n / batch_size)
    if steps is not None:
        total = check_positive_int("steps", steps)
    else:
        total = check_positive_int("epochs", epochs) * steps_per_epoch
    if eval_every is None:
        eval_every = steps_per_epoch
    check_positive_int("eval_every", eval_every)
    eval_batch_size = max(1024, batch_size)
    opt = _make_optimizer(model, optimizer, lr, weight_decay, momentum)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None

    history = History(steps_per_epoch=steps_per_epoch)
    losses: list[Tensor] = []  # detached scalars: no host-device sync inside the loop
    postfix_every = max(1, total // 100)
    model.train()
    bar = tqdm(total=total, desc="train", disable=not progress, leave=False)
    start = time.perf_counter()
    pos = n  # forces a shuffle before the first step
    try:
        for step in range(1, total + 1):
            if pos >= n:  # a new epoch
                perm = torch.randperm(n, generator=generator).to(X.device)
                X_perm, y_perm = X[perm], y[perm]
                pos = 0
            xb = X_perm[pos : pos + batch_size]  # (batch, ...), a view
            yb = y_perm[pos : pos + batch_size]
            pos += batch_size

            pred = model(xb)
            if step == 1:
                _check_loss_shapes(loss_name, pred, yb)
            loss_value = loss_fn(pred, yb)
            opt.zero_grad(set_to_none=True)
            loss_value.backward()
            opt.step()
            losses.append(loss_value.detach())

            if progress:
                bar.update(1)
                if step % postfix_every == 0:
                    bar.set_postfix(loss=f"{loss_value.item():.4f}", refresh=False)
            if eval_data is not None and (step % eval_every == 0 or step == total):
                metrics = evaluate(model, X_eval, y_eval, loss=loss, batch_size=eval_batch_size)
                history.eval_step.append(step)
                history.eval_loss.append(metrics["loss"])
                if "accuracy" in metrics:
                    history.eval_accuracy.append(metrics["accuracy"])
    finally:
        bar.close()
    history.train_loss = torch.stack(losses).tolist()
    history.seconds = time.perf_counter() - start
    model.eval()
    return history


# ------------------------------------------------------------------------------------------------
# 5. Representational geometry
# ------------------------------------------------------------------------------------------------


def _check_representations(X: Tensor, Y: Tensor) -> None:
    check_tensor("X", X, min_ndim=2, floating=True)
    check_tensor("Y", Y, min_ndim=2, floating=True)
    if X.shape[:-1] != Y.shape[:-1]:
        raise ValueError(
            "X and Y must describe the same samples: shapes (..., n_samples, n_features) with the "
            f"same leading dimensions, got X {tuple(X.shape)} and Y {tuple(Y.shape)}"
        )
    if X.device != Y.device:
        raise ValueError(f"X and Y must be on the same device, got {X.device} and {Y.device}")


def linear_cka(X: Tensor, Y: Tensor) -> Tensor:
    """Linear centred kernel alignment of two representations of the same samples.

    With column-centred ``X`` (``n_samples x p``) and ``Y`` (``n_samples x q``),

    ``CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``

    (Kornblith et al., 2019, eq. for the linear kernel): the normalised HSIC between the linear
    Gram matrices ``X X^T`` and ``Y Y^T``. It lies in ``[0, 1]``, equals 1 for ``X = Y``, is
    symmetric, and is invariant to orthogonal transformations and isotropic scaling of either
    representation (but not to arbitrary invertible linear maps). A representation with zero
    variance gives ``nan``.

    Args:
        X: ``(..., n_samples, p)``.
        Y: ``(..., n_samples, q)``; the same leading dimensions and samples.

    Returns:
        ``(...)``, a 0-d tensor for 2-D inputs.
    """
    _check_representations(X, Y)
    Xc = X - X.mean(-2, keepdim=True)  # (..., n_samples, p)
    Yc = Y - Y.mean(-2, keepdim=True)  # (..., n_samples, q)
    cross = (Yc.mT @ Xc).square().sum((-2, -1))  # ||Y^T X||_F^2
    self_x = (Xc.mT @ Xc).square().sum((-2, -1)).sqrt()  # ||X^T X||_F
    self_y = (Yc.mT @ Yc).square().sum((-2, -1)).sqrt()
    return cross / (self_x * self_y)


def rdm(X: Tensor, metric: str = "correlation") -> Tensor:
    """Representational dissimilarity matrix: the dissimilarity of every pair of samples.

    - ``"correlation"``: ``1 - pearson(x_i, x_j)`` over the features (Kriegeskorte et al., 2008);
    - ``"cosine"``: ``1 - <x_i, x_j> / (|x_i| |x_j|)``;
    - ``"euclidean"``: ``|x_i - x_j|``.

    Args:
        X: ``(..., n_samples, n_features)``.

    Returns:
        ``(..., n_samples, n_samples)``, symmetric.
    """
    check_tensor("X", X, min_ndim=2, floating=True)
    check_in("metric", metric, ["correlation", "cosine", "euclidean"])
    if metric == "euclidean":
        return torch.cdist(X, X, compute_mode="donot_use_mm_for_euclid_dist")
    if metric == "correlation":
        X = X - X.mean(-1, keepdim=True)
    U = X / X.norm(dim=-1, keepdim=True)  # (..., n_samples, n_features), unit rows
    return 1.0 - U @ U.mT


def _average_ranks(v: Tensor) -> Tensor:
    """Ranks along the last dimension, 1-based, ties sharing their average rank (as scipy)."""
    s, _ = v.sort(dim=-1)
    below = torch.searchsorted(s, v.contiguous(), right=False)  # elements < v
    not_above = torch.searchsorted(s, v.contiguous(), right=True)  # elements <= v
    return (below + not_above + 1).to(v.dtype) / 2.0


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def rsa(
    X: Tensor,
    Y: Tensor,
    *,
    metric: str = "correlation",
    method: str = "spearman",
) -> Tensor:
    """Representational similarity analysis: correlate the dissimilarity matrices of X and Y.

    ``RSA(X, Y) = corr(upper(RDM(X)), upper(RDM(Y)))`` over the ``n(n-1)/2`` pairs ``i < j``, with
    ``corr`` Spearman's rank correlation (ties get their average rank) or Pearson's.

    Args:
        X: ``(..., n_samples, p)``.
        Y: ``(..., n_samples, q)``; the same samples, ``n_samples >= 3``.
        metric: the dissimilarity of ``rdm``.
        method: ``"spearman"`` or ``"pearson"``.

    Returns:
        ``(...)``, in ``[-1, 1]``.
    """
    _check_representations(X, Y)
    check_in("method", method, ["spearman", "pearson"])
    n = X.shape[-2]
    if n < 3:
        raise ValueError(f"X and Y need at least 3 samples for RSA, got n_samples={n}")
    i, j = torch.triu_indices(n, n, offset=1, device=X.device)
    dx = rdm(X, metric)[..., i, j]  # (..., n_pairs)
    dy = rdm(Y, metric)[..., i, j]
    if method == "spearman":
        dx, dy = _average_ranks(dx), _average_ranks(dy)
    return _pearson(dx, dy)
