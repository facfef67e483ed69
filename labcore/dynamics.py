"""Transformers as dynamical systems: residual networks as ODEs, attention as particles (chapter 4).

**Residual networks are Euler schemes.** A residual network updates its state layer by layer,
``x_{k+1} = x_k + h w_k sigma(a_k x_k + b_k)``. Read ``k`` as time ``t = k h``: this is one explicit
Euler step of size ``h`` for the ODE ``dx/dt = w(t) sigma(a(t) x + b(t))`` (E, 2017; Haber and
Ruthotto, 2017; Chen et al., 2018). The network *is* the ODE's flow only in the limit ``h -> 0``
with ``n_layers = t_max / h -> infinity`` and parameters ``w(t), a(t), b(t)`` that vary smoothly in
``t``; a real network (``h = 1``, fixed depth) is one coarse discretisation of it.
:func:`residual_network` and :func:`residual_ode_flow` compute both so that the chapter can compare
them.

**Attention moves particles on the sphere.** With a normalisation after every layer the ``n``
tokens ``x_1 .. x_n`` live on the unit sphere ``S^{d-1}``, and a self-attention layer becomes a
system of interacting particles (Geshkovski, Letrouit, Polyanskiy and Rigollet, "A mathematical
perspective on Transformers", 2023; Lu et al., 2019; Sander et al., 2022)::

    dx_i/dt = P_perp_{x_i}( sum_j softmax_j(beta <Q x_i, K x_j>) V x_j ),
    P_perp_x y = y - <x, y> x,

where ``softmax_j(s_ij) = exp(s_ij) / Z_i`` with ``Z_i = sum_k exp(s_ik)``. The projection
``P_perp_x`` removes the radial part, so the velocity is tangent to the sphere
(``<x, P_perp_x y> = <x, y> - <x, y> |x|^2 = 0`` when ``|x| = 1``) and the flow stays on it.
For ``Q = K = V = I`` the particles attract each other and (almost surely) collapse to one point;
for large ``beta`` they first gather in several clusters, and two clusters at a fixed angle take a
time exponential in ``beta`` to merge (metastability; :func:`two_cluster_merge_time`).

Shapes use one vocabulary everywhere: ``batch`` (any number of leading dimensions: independent
systems simulated at once), ``n_particles``, ``d`` (the sphere's ambient dimension), ``n_heads``,
``d_head``, ``d_mlp``. The mean-field limit ``n_particles -> infinity`` lives in
:mod:`labcore.mean_field`.

References:
    Weinan E (2017), "A proposal on machine learning via dynamical systems".
    Haber and Ruthotto (2017), "Stable architectures for deep neural networks".
    Chen, Rubanova, Bettencourt and Duvenaud (2018), "Neural ordinary differential equations".
    Lu et al. (2019), "Understanding and improving Transformer from a multi-particle dynamic system
    point of view".
    Sander, Ablin, Blondel and Peyre (2022), "Sinkformers: Transformers with doubly stochastic
    attention".
    Geshkovski, Letrouit, Polyanskiy and Rigollet (2023), "A mathematical perspective on
    Transformers" and "The emergence of clusters in self-attention dynamics".
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from labcore.validation import check_in, check_positive_int, check_same_device, check_tensor

__all__ = [
    "attention_velocity",
    "count_clusters",
    "from_angles",
    "project_tangent",
    "random_sphere",
    "residual_network",
    "residual_ode_flow",
    "simulate",
    "time_grid",
    "to_angles",
    "transformer_velocity",
    "two_cluster_merge_time",
]

Velocity = Callable[[torch.Tensor], torch.Tensor]
Activation = Callable[[torch.Tensor], torch.Tensor]

# Query chunks are sized so that one block of attention scores holds about this many entries
# (2**19: 2 MiB in float32, 4 MiB in float64), but never fewer than _MIN_CHUNK queries. Blocks stay
# in the CPU's L2/L3 caches, memory stays bounded for large n_particles, and each of the few ops
# per block is large enough that per-op and thread-synchronisation overheads are small (measured
# at n_particles = 2000 on 1-2 threads: 2**17 entries was 1.3x slower, 2**21 up to 1.5x slower).
_BLOCK_ENTRIES = 2**19
_MIN_CHUNK = 32
# Below this many attention scores (batch * n_heads * n_particles^2; 2**17: one system of 363
# particles) the exact path runs: there the fast path's extra small ops cost about what they save
# (measured crossover: 2**16 to 2**17 scores), and small problems, such as most of the notebooks'
# simulations, keep their results bit for bit.
_FAST_MIN_ENTRIES = 2**17
_LOG2E = 1.0 / math.log(2.0)  # exp(s) = 2 ** (s log2(e)); exp2 is 1.3-2x faster than exp on a CPU
# The fast path keeps its block of scores between calls (one per thread, device and dtype, up to
# this many entries): a fresh multi-MiB block per call costs page faults that, on a CPU, took 20%
# of a velocity evaluation at n_particles = 2000.
_SCRATCH_MAX_ENTRIES = 2**22
_scratch_cache = threading.local()


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------
def _check_real(name: str, value: object, *, positive: bool = False) -> float:
    """Check that ``value`` is a real number (not a bool), optionally > 0; return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _check_like(name: str, m: torch.Tensor, x: torch.Tensor) -> None:
    """Check that ``m`` has the dtype and device of ``x`` (the particles)."""
    if m.dtype != x.dtype:
        raise TypeError(f"{name} must have the dtype of x ({x.dtype}), got {m.dtype}")
    check_same_device(x=x, **{name: m})


def _check_particles(name: str, x: object) -> torch.Tensor:
    """Particles: a floating tensor of shape ``(..., n_particles, d)``."""
    return check_tensor(name, x, min_ndim=2, floating=True)


# --------------------------------------------------------------------------------------------------
# The tangent projection and the velocity fields
# --------------------------------------------------------------------------------------------------
def project_tangent(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Project ``v`` onto the tangent space of the sphere at ``x``: ``P_perp_x v = v - <x, v> x``.

    For a unit vector ``x`` the result is orthogonal to ``x``: ``<x, P_perp_x v> = 0``.

    Args:
        x: points on the sphere, ``(..., d)`` (for particles ``(..., n_particles, d)``).
        v: vectors at those points, the same shape as ``x``.

    Returns:
        ``(..., d)``: the tangent components.

    Raises:
        TypeError: if ``x`` or ``v`` is not a floating tensor.
        ValueError: if their shapes differ.
    """
    check_tensor("x", x, min_ndim=1, floating=True)
    check_tensor("v", v, min_ndim=1, floating=True)
    if v.shape != x.shape:
        raise ValueError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
    return v - (x * v).sum(-1, keepdim=True) * x


def _parse_attention_matrices(
    x: torch.Tensor, Q: torch.Tensor | None, K: torch.Tensor | None, V: torch.Tensor | None
) -> int | None:
    """Validate ``Q, K, V`` against ``x``; return ``n_heads`` (``None`` for single-head)."""
    d = x.shape[-1]
    heads: dict[str, int] = {}
    d_head: dict[str, int] = {}
    for name, m in (("Q", Q), ("K", K)):
        if m is None:
            continue
        check_tensor(name, m, ndim=(2, 3))
        _check_like(name, m, x)
        if m.shape[-1] != d:
            raise ValueError(
                f"{name} must have shape (d_head, d) or (n_heads, d_head, d) with d = {d} "
                f"(the last dimension of x), got {tuple(m.shape)}"
            )
        d_head[name] = m.shape[-2]
        if m.ndim == 3:
            heads[name] = m.shape[0]
    if V is not None:
        check_tensor("V", V, ndim=(2, 3))
        _check_like("V", V, x)
        if tuple(V.shape[-2:]) != (d, d):
            raise ValueError(
                f"V must have shape (d, d) or (n_heads, d, d) with d = {d}, got {tuple(V.shape)}"
            )
        if V.ndim == 3:
            heads["V"] = V.shape[0]
    dq = d_head.get("Q", d)
    dk = d_head.get("K", d)
    if dq != dk:
        raise ValueError(
            f"Q and K must map to the same d_head (None counts as the identity, d_head = {d}), "
            f"got Q: {None if Q is None else tuple(Q.shape)}, "
            f"K: {None if K is None else tuple(K.shape)}"
        )
    if len(set(heads.values())) > 1:
        listed = ", ".join(f"{k} has {v}" for k, v in heads.items())
        raise ValueError(f"Q, K and V must agree on n_heads (their first dimension), got {listed}")
    if heads:
        for name, m in (("Q", Q), ("K", K), ("V", V)):
            if m is not None and m.ndim == 2:
                raise ValueError(
                    f"{name} must also have a head dimension (n_heads, ...) when another of "
                    f"Q, K, V has one (n_heads = {next(iter(heads.values()))}), got "
                    f"{tuple(m.shape)}; pass None for the identity"
                )
    return next(iter(heads.values())) if heads else None


def _chunk_size(n: int, rows: int, chunk_size: int | None) -> int:
    """Queries per block: ``chunk_size``, or about ``_BLOCK_ENTRIES / rows`` balanced over ``n``.

    ``rows`` is the number of score rows one query contributes (``batch * n_heads * n_keys``).
    The automatic size is evened out (``ceil(n / ceil(n / c))``) so the last block is not tiny.
    """
    if chunk_size is not None:
        return min(n, chunk_size)
    c = min(n, max(_MIN_CHUNK, _BLOCK_ENTRIES // max(1, rows)))
    return -(-n // -(-n // c))


def _scratch(like: torch.Tensor, numel: int) -> torch.Tensor:
    """A flat uninitialised buffer of ``numel`` entries with ``like``'s dtype and device.

    Reused between calls on the same thread (see ``_SCRATCH_MAX_ENTRIES``); callers overwrite it
    before reading it and never return it.
    """
    if numel > _SCRATCH_MAX_ENTRIES or like.device.type == "meta":
        return like.new_empty(numel)
    cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = _scratch_cache.__dict__
    key = (like.device, like.dtype)
    buffer = cache.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = cache[key] = like.new_empty(numel)
    return buffer[:numel]


def _queries_keys_values(
    x: torch.Tensor,
    Q: torch.Tensor | None,
    K: torch.Tensor | None,
    V: torch.Tensor | None,
    n_heads: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q = Q x, k = K x, v = V x`` as rows, ``(..., [n_heads], n, d_head / d)``; ``k is q`` when
    ``Q is K`` (both ``None`` included), so that symmetric scores can be recognised."""
    xh = x.unsqueeze(-3) if n_heads is not None else x  # (..., [1], n, d)
    q = xh if Q is None else xh @ Q.mT
    k = q if K is Q else (xh if K is None else xh @ K.mT)
    v = xh if V is None else xh @ V.mT
    return q, k, v


def _attention_field_exact(
    x: torch.Tensor,
    beta: float,
    Q: torch.Tensor | None,
    K: torch.Tensor | None,
    V: torch.Tensor | None,
    n_heads: int | None,
    chunk_size: int | None,
) -> torch.Tensor:
    """Reference path: exact max-shifted softmax by chunks of queries (any ``beta``, autograd).

    Computed in the key-major layout ``s^T = k q_c^T`` (``(..., n_keys, c)``): one matmul for the
    scores, a shift by each query's largest score and an exp, and one matmul ``[V x, 1]^T s^T``
    that yields numerator and normaliser ``Z_i`` together. Used when autograd is on (the shift is
    detached: softmax is shift-invariant) and as the fallback of :func:`_attention_field_fast`.
    """
    n, d = x.shape[-2], x.shape[-1]
    q, k, v = _queries_keys_values(x, Q, K, V, n_heads)
    q = beta * q
    if n_heads is not None:  # identity matrices: broadcast over heads explicitly
        q, k, v = (t.expand(*t.shape[:-3], n_heads, n, t.shape[-1]) for t in (q, k, v))
    ones = torch.ones_like(v[..., :1])
    v1t = torch.cat([v, ones], dim=-1).mT.contiguous()  # (..., [n_heads], d + 1, n)
    k = k.contiguous()
    chunk_size = _chunk_size(n, math.prod(k.shape[:-1]), chunk_size)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, Q, K, V)
    )
    buffer = None if needs_grad else k.new_empty((*k.shape[:-1], chunk_size))
    outs = []
    for start in range(0, n, chunk_size):
        q_c = q[..., start : start + chunk_size, :]  # (..., [n_heads], c, d_head)
        c = q_c.shape[-2]
        if buffer is None:
            s = k @ q_c.mT  # (..., [n_heads], n_keys, c): scores beta <Q x_i, K x_j>
            s = s - s.amax(dim=-2, keepdim=True).detach()  # softmax is shift-invariant
            s = s.exp_()
        else:
            s = buffer if c == chunk_size else k.new_empty((*k.shape[:-1], c))
            torch.matmul(k, q_c.mT, out=s)  # (..., [n_heads], n_keys, c)
            s.sub_(s.amax(dim=-2, keepdim=True)).exp_()
        o = v1t @ s  # (..., [n_heads], d + 1, c): [sum_j e^{s_ij} V x_j ; Z_i]
        o = o[..., :d, :] / o[..., d:, :]  # per-head softmax average
        if n_heads is not None:
            o = o.sum(dim=-3)  # (..., d, c): sum over heads
        outs.append(o)
    return torch.cat(outs, dim=-1).mT  # (..., n, d)


def _attention_field_fast(
    x: torch.Tensor,
    beta: float,
    Q: torch.Tensor | None,
    K: torch.Tensor | None,
    V: torch.Tensor | None,
    n_heads: int | None,
    chunk_size: int | None,
) -> torch.Tensor | None:
    """The same field without autograd, about 2x (symmetric scores: 2.5x) faster on a CPU.

    Three changes to :func:`_attention_field_exact`, none of which changes the mathematics:

    1. **A shift known in advance, folded into the matmul.** Softmax is invariant under a shift
       ``m_i`` of query ``i``'s scores, and any ``m_i >= max_j s_ij`` keeps every exponential
       ``<= 1``. Cauchy-Schwarz gives one without looking at the scores,
       ``m_i = |beta| |Q x_i| max_j |K x_j| >= beta <Q x_i, K x_j>``, and appending ``-m_i`` to the
       query and ``1`` to the key (``[q_i, -m_i] . [k_j, 1] = s_ij - m_i``) lets the score matmul
       produce the shifted scores: no ``amax`` and no subtraction pass over the scores.
    2. **exp2.** ``e^s = 2^(s log2 e)``: ``log2 e`` is folded into the queries, and ``exp2`` is
       1.3x (float64) to 2x (float32) faster than ``exp`` on a CPU.
    3. **Symmetric scores** (``Q is K``, ``None`` for both included): ``s_ij = s_ji``. With the
       symmetric shift ``s_ij - a_i - a_j`` (``a_i = |beta| |K x_i|^2 / 2``, again an upper bound:
       ``|<k_i, k_j>| <= (|k_i|^2 + |k_j|^2) / 2``), the matrix ``E_ij = 2^(s_ij - a_i - a_j)`` is
       symmetric, and the factor ``2^(-a_j)`` is undone by the values
       ``u_j [V x_j, 1]`` with ``u_j = 2^(a_j - max_k a_k) <= 1`` (the remaining factor
       ``2^(-a_i - max a)`` is common to query ``i``'s numerator and ``Z_i``). Only the blocks
       ``j >= i`` are computed; block ``(I, J)`` serves queries ``I`` (through ``E_IJ``) and, by
       symmetry, queries ``J`` (through ``E_IJ^T``): half the exponentials and score products.

    With a bound instead of the exact maximum, a query whose largest exponential is very small
    could lose precision to underflow (only when ``|beta| |Q x| |K x|`` is large and ``Q x_i`` is
    far from every ``K x_j``; never for unit vectors with ``Q = K`` and ``beta >= 0``, where
    ``Z_i >= 2^(a_i - max a)``). Then every ``Z_i`` is checked: if one is below
    ``n_keys * tiny / eps`` (``tiny, eps``: the dtype's smallest normal number and its epsilon;
    above it, underflowed terms change ``Z_i`` by less than one rounding), this returns ``None``
    and the caller uses the exact path.

    Returns:
        ``(..., n, d)``, or ``None`` when the bound shift could underflow.
    """
    n, d = x.shape[-2], x.shape[-1]
    q, k, v = _queries_keys_values(x, Q, K, V, n_heads)
    symmetric = k is q
    b2 = beta * _LOG2E
    if n_heads is not None:  # identity matrices: broadcast over heads explicitly
        q, k, v = (t.expand(*t.shape[:-3], n_heads, n, t.shape[-1]) for t in (q, k, v))
    ones = torch.ones_like(v[..., :1])  # (..., [n_heads], n, 1)
    chunk_size = _chunk_size(n, math.prod(k.shape[:-1]), chunk_size)
    if symmetric:
        a = (abs(b2) / 2) * (k * k).sum(dim=-1, keepdim=True)  # (..., [n_heads], n, 1)
        u = torch.exp2(a - a.amax(dim=-2, keepdim=True))  # in (0, 1]
        keys = torch.cat([k, ones, -a], dim=-1)  # [k_j, 1, -a_j]
        queries = torch.cat([b2 * k, -a, ones], dim=-1).contiguous()  # [b2 k_i, -a_i, 1]
        values = torch.cat([v * u, u], dim=-1).mT.contiguous()  # (..., d + 1, n): u_j [v_j, 1]
        out = values.new_zeros(values.shape)
        lead = keys.shape[:-2]
        buffer = _scratch(keys, math.prod(lead) * n * chunk_size)
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            c = stop - start
            # E[j, i] for keys j >= start and queries i in the block: (..., n - start, c)
            e = buffer[: math.prod(lead) * (n - start) * c].view(*lead, n - start, c)
            torch.matmul(keys[..., start:, :], queries[..., start:stop, :].mT, out=e)
            e.exp2_()
            out[..., start:stop] += values[..., start:] @ e  # the block's queries
            if stop < n:  # keys after the block, as queries, by symmetry E[i, j] = E[j, i]
                out[..., stop:] += values[..., start:stop] @ e[..., c:, :].mT
    else:
        q_norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True)  # (..., n, 1)
        k_max = torch.linalg.vector_norm(k, dim=-1, keepdim=True).amax(dim=-2, keepdim=True)
        keys = torch.cat([k, ones], dim=-1).contiguous()  # [k_j, 1]
        queries = torch.cat([b2 * q, -abs(b2) * q_norm * k_max], dim=-1)  # [b2 q_i, -m_i]
        values = torch.cat([v, ones], dim=-1).mT.contiguous()  # (..., d + 1, n)
        buffer = _scratch(keys, math.prod(keys.shape[:-1]) * chunk_size)
        outs = []
        for start in range(0, n, chunk_size):
            q_c = queries[..., start : start + chunk_size, :]  # (..., c, d_head + 1)
            c = q_c.shape[-2]
            e = buffer[: math.prod(keys.shape[:-1]) * c].view(*keys.shape[:-1], c)
            torch.matmul(keys, q_c.mT, out=e)  # (..., n_keys, c): log2(e) (s_ij - m_i)
            e.exp2_()
            outs.append(values @ e)  # (..., d + 1, c): [sum_j 2^(...) V x_j ; Z_i 2^(-m_i)]
        out = torch.cat(outs, dim=-1)
    z = out[..., d:, :]  # (..., [n_heads], 1, n)
    if x.device.type != "meta":  # no data on meta tensors: nothing to check
        finfo = torch.finfo(x.dtype)
        if not bool((z >= n * finfo.tiny / finfo.eps).all()):
            return None
    out = out[..., :d, :] / z  # per-head softmax average
    if n_heads is not None:
        out = out.sum(dim=-3)  # (..., d, n): sum over heads
    return out.mT  # (..., n, d)


def _attention_field(
    x: torch.Tensor,
    beta: float,
    Q: torch.Tensor | None,
    K: torch.Tensor | None,
    V: torch.Tensor | None,
    n_heads: int | None,
    chunk_size: int | None,
) -> torch.Tensor:
    """Unprojected attention output ``sum_h sum_j softmax_j(beta <Q_h x_i, K_h x_j>) V_h x_j``.

    ``O(batch * n_heads * n_particles^2 * (d_head + d))`` work and
    ``O(batch * n_heads * n_particles * chunk_size)`` memory. Without autograd and from
    ``_FAST_MIN_ENTRIES`` scores on, the fast path (:func:`_attention_field_fast`) runs, with the
    exact max-shifted path (:func:`_attention_field_exact`) as its fallback; otherwise the exact
    path runs. The two agree to rounding: about ``1e-14`` of the largest velocity in float64, as
    close as either is to a long-double evaluation.
    """
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, Q, K, V)
    )
    n_scores = math.prod(x.shape[:-2]) * (n_heads or 1) * x.shape[-2] ** 2
    if not needs_grad and n_scores >= _FAST_MIN_ENTRIES:
        field = _attention_field_fast(x, beta, Q, K, V, n_heads, chunk_size)
        if field is not None:
            return field
    return _attention_field_exact(x, beta, Q, K, V, n_heads, chunk_size)


def attention_velocity(
    x: torch.Tensor,
    beta: float = 1.0,
    Q: torch.Tensor | None = None,
    K: torch.Tensor | None = None,
    V: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The self-attention vector field on ``(S^{d-1})^n``, for many systems at once.

    Single head (``Q, K: (d_head, d)``, ``V: (d, d)``; ``None`` is the identity)::

        dx_i/dt = P_perp_{x_i}( sum_j softmax_j(beta <Q x_i, K x_j>) V x_j )

    Multi-head (``Q, K: (n_heads, d_head, d)``, ``V: (n_heads, d, d)``)::

        dx_i/dt = P_perp_{x_i}( sum_h sum_j softmax_j(beta <Q_h x_i, K_h x_j>) V_h x_j )

    Normalisation: **each head has its own softmax** (``Z_{beta,i,h} = sum_k exp(beta <Q_h x_i,
    K_h x_k>)``) and the heads' outputs are summed, as in a transformer, where concatenating the
    heads and applying ``W_O`` is a sum over heads of ``W_O^h head_h`` (``V_h`` here stands for
    ``W_O^h W_V^h``). The seed presentation writes one ``Z_{beta,i}`` outside the sum over heads;
    a single normaliser shared by all heads would mix the heads' scales and is not what
    multi-head attention computes.

    Cost: ``O(batch * n_heads * n_particles^2 * (d_head + d))`` in two batched matmuls per chunk of
    queries; memory ``O(batch * n_heads * n_particles * chunk_size)``. Large problems (from
    ``2**17`` scores ``beta <Q_h x_i, K_h x_j>``, without autograd) take a faster path: a shift
    bound computed in advance replaces the row maxima, ``exp2`` replaces ``exp``, and for
    ``Q is K`` (``None`` for both included) only half of the symmetric scores are exponentiated.
    About 2.5x faster on a CPU for ``Q = K = V = I``, equal to rounding (``~1e-14`` of the largest
    velocity in float64); small problems are computed exactly as before.

    Args:
        x: particles, ``(..., n_particles, d)``; leading dimensions are independent systems. The
            field is defined for any ``x`` but is tangent to the sphere only where ``|x_i| = 1``.
        beta: inverse temperature ``beta`` (any real number).
        Q, K: query and key matrices, ``(d_head, d)`` or ``(n_heads, d_head, d)``; ``None`` is
            the identity (``d_head = d``).
        V: value matrix, ``(d, d)`` or ``(n_heads, d, d)``; ``None`` is the identity.
        chunk_size: number of query particles per block (``None``: chosen so that one block of
            scores has about 2**19 entries, with at least 32 queries).

    Returns:
        ``(..., n_particles, d)``: the velocities, on ``x``'s device and dtype.

    Raises:
        TypeError: if ``x`` is not a floating tensor, a matrix's dtype differs from ``x``'s, or
            ``beta`` is not a real number.
        ValueError: on shapes that do not fit ``x`` (naming the argument) or heads that disagree.
    """
    x = _check_particles("x", x)
    beta = _check_real("beta", beta)
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    n_heads = _parse_attention_matrices(x, Q, K, V)
    field = _attention_field(x, beta, Q, K, V, n_heads, chunk_size)
    return project_tangent(x, field)


def transformer_velocity(
    x: torch.Tensor,
    beta: float = 1.0,
    Q: torch.Tensor | None = None,
    K: torch.Tensor | None = None,
    V: torch.Tensor | None = None,
    W: torch.Tensor | None = None,
    A: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    activation: Activation = torch.tanh,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The vector field of a whole transformer layer: attention plus the MLP, projected::

        dx_i/dt = P_perp_{x_i}( sum_h sum_j softmax_j(beta <Q_h x_i, K_h x_j>) V_h x_j
                                + W sigma(A x_i + b) )

    The MLP term acts on each particle alone (``A: (d_mlp, d)``, ``b: (d_mlp,)``,
    ``W: (d, d_mlp)``); the projection is linear, so projecting the sum equals summing the two
    projected fields. See :func:`attention_velocity` for the attention part and its arguments.

    Args:
        x: particles, ``(..., n_particles, d)``.
        beta, Q, K, V, chunk_size: as in :func:`attention_velocity`.
        W: MLP output matrix, ``(d, d_mlp)``; give ``W`` and ``A`` together or neither.
        A: MLP input matrix, ``(d_mlp, d)``.
        b: MLP bias, ``(d_mlp,)``; ``None`` is zero.
        activation: the nonlinearity ``sigma`` (elementwise), ``torch.tanh`` by default.

    Returns:
        ``(..., n_particles, d)``: the velocities.

    Raises:
        TypeError / ValueError: as in :func:`attention_velocity`, and for MLP shapes that do not
            fit (naming ``W``, ``A`` or ``b``) or a non-callable ``activation``.
    """
    x = _check_particles("x", x)
    beta = _check_real("beta", beta)
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    n_heads = _parse_attention_matrices(x, Q, K, V)
    d = x.shape[-1]
    if (W is None) != (A is None):
        raise ValueError(
            "W and A must be given together (the MLP term W sigma(A x + b)), got "
            f"W={'None' if W is None else tuple(W.shape)}, "
            f"A={'None' if A is None else tuple(A.shape)}"
        )
    if b is not None and A is None:
        raise ValueError("b was given without A and W; the MLP term is W sigma(A x + b)")
    field = _attention_field(x, beta, Q, K, V, n_heads, chunk_size)
    if W is not None and A is not None:
        check_tensor("A", A, ndim=2, shape=(None, d))
        _check_like("A", A, x)
        d_mlp = A.shape[0]
        check_tensor("W", W, ndim=2, shape=(d, d_mlp))
        _check_like("W", W, x)
        if b is not None:
            check_tensor("b", b, ndim=1, shape=(d_mlp,))
            _check_like("b", b, x)
        if not callable(activation):
            raise TypeError(f"activation must be callable, got {type(activation).__name__}")
        pre = x @ A.mT  # (..., n_particles, d_mlp)
        if b is not None:
            pre = pre + b
        field = field + activation(pre) @ W.mT  # (..., n_particles, d)
    return project_tangent(x, field)


# --------------------------------------------------------------------------------------------------
# Time integration
# --------------------------------------------------------------------------------------------------
def _euler_step(
    f: Callable[[float, torch.Tensor], torch.Tensor], t: float, x: torch.Tensor, dt: float
) -> torch.Tensor:
    """One explicit Euler step ``x + dt f(t, x)`` (local error O(dt^2), global O(dt))."""
    return x + dt * f(t, x)


def _rk4_step(
    f: Callable[[float, torch.Tensor], torch.Tensor], t: float, x: torch.Tensor, dt: float
) -> torch.Tensor:
    """One classical Runge-Kutta step (local error O(dt^5), global O(dt^4))."""
    k1 = f(t, x)
    k2 = f(t + dt / 2, x + (dt / 2) * k1)
    k3 = f(t + dt / 2, x + (dt / 2) * k2)
    k4 = f(t + dt, x + dt * k3)
    return x + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


_STEPPERS = {"euler": _euler_step, "rk4": _rk4_step}


def _n_steps(t_max: float, dt: float) -> int:
    """Number of steps: ``ceil(t_max / dt)`` (a tolerance absorbs rounding such as 1 / 0.1)."""
    return max(1, math.ceil(t_max / dt - 1e-9))


def _record_steps(n_steps: int, record_every: int) -> list[int]:
    """Steps at which the state is recorded: 0, r, 2r, ... and always the last step."""
    steps = list(range(0, n_steps + 1, record_every))
    if steps[-1] != n_steps:
        steps.append(n_steps)
    return steps


def time_grid(
    t_max: float,
    dt: float,
    record_every: int = 1,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The times of the frames that :func:`simulate` (and the mean-field solvers) record.

    The number of steps is ``n_steps = ceil(t_max / dt)`` and the step actually taken is
    ``t_max / n_steps`` (never larger than ``dt``), so the last frame is at exactly ``t_max``.
    Frames are the steps ``0, record_every, 2 record_every, ...`` plus the last step.

    Returns:
        ``(T,)``: the frame times.
    """
    t_max = _check_real("t_max", t_max, positive=True)
    dt = _check_real("dt", dt, positive=True)
    check_positive_int("record_every", record_every)
    n_steps = _n_steps(t_max, dt)
    steps = torch.tensor(_record_steps(n_steps, record_every), dtype=dtype, device=device)
    return steps * (t_max / n_steps)


def _integrate(
    x0: torch.Tensor,
    f: Callable[[float, torch.Tensor], torch.Tensor],
    t_max: float,
    dt: float,
    method: str,
    record_every: int,
    progress: bool,
    after_step: Callable[[torch.Tensor], torch.Tensor] | None = None,
    desc: str = "simulate",
) -> torch.Tensor:
    """Shared time loop: fixed steps, optional post-step map, frames in one preallocated tensor."""
    n_steps = _n_steps(t_max, dt)
    h = t_max / n_steps
    record = _record_steps(n_steps, record_every)
    trajectory = x0.new_empty((len(record), *x0.shape))  # (T, ...)
    trajectory[0] = x0
    step = _STEPPERS[method]
    x, frame = x0, 1
    for k in tqdm(range(1, n_steps + 1), disable=not progress, desc=desc, leave=False):
        x = step(f, (k - 1) * h, x, h)
        if after_step is not None:
            x = after_step(x)
        if frame < len(record) and record[frame] == k:
            trajectory[frame] = x
            frame += 1
    return trajectory


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """Radial projection back onto the unit sphere (last dimension)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def simulate(
    x0: torch.Tensor,
    t_max: float,
    dt: float,
    velocity: Velocity,
    method: str = "rk4",
    renormalize: bool = True,
    record_every: int = 1,
    progress: bool = True,
) -> torch.Tensor:
    """Integrate ``dx/dt = velocity(x)`` from ``x0`` with fixed steps; return the trajectory.

    ``n_steps = ceil(t_max / dt)`` steps of size ``t_max / n_steps`` (see :func:`time_grid` for
    the frame times). ``method="euler"`` takes ``x + h v(x)`` (global error ``O(h)``),
    ``method="rk4"`` the classical Runge-Kutta step (global error ``O(h^4)``). With
    ``renormalize=True`` every particle is divided by its norm after each step (the radial
    projection onto ``S^{d-1}``); the exact flow of a tangent field stays on the sphere, and the
    projection moves the numerical state by the step's own error (``O(h^2)`` for Euler, ``O(h^5)``
    for RK4), so the orders are kept.

    Args:
        x0: the initial state, ``(..., n_particles, d)`` (any ``(..., d)`` works); leading
            dimensions are independent systems when ``velocity`` treats them so (all of this
            module's fields do).
        t_max: final time, > 0.
        dt: largest step, > 0.
        velocity: a callable ``x -> dx/dt`` returning the shape of ``x``, e.g.
            ``lambda x: attention_velocity(x, beta=4.0)``.
        method: ``"rk4"`` or ``"euler"``.
        renormalize: project back onto the unit sphere after each step.
        record_every: keep one frame every ``record_every`` steps (and always the last one).
        progress: show a tqdm progress bar.

    Returns:
        ``(T, ..., n_particles, d)``: frames at the times of :func:`time_grid`; frame 0 is ``x0``.

    Raises:
        TypeError: if ``x0`` is not a floating tensor or ``velocity`` is not callable.
        ValueError: on a non-positive ``t_max``/``dt``/``record_every`` or an unknown ``method``.
    """
    x0 = check_tensor("x0", x0, min_ndim=1, floating=True)
    t_max = _check_real("t_max", t_max, positive=True)
    dt = _check_real("dt", dt, positive=True)
    if not callable(velocity):
        raise TypeError(f"velocity must be a callable x -> dx/dt, got {type(velocity).__name__}")
    check_in("method", method, tuple(_STEPPERS))
    check_positive_int("record_every", record_every)

    def f(_t: float, x: torch.Tensor) -> torch.Tensor:
        v = velocity(x)
        if not isinstance(v, torch.Tensor) or v.shape != x.shape:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"velocity(x) must return the shape of x {tuple(x.shape)}, got {got}")
        return v

    return _integrate(
        x0,
        f,
        t_max,
        dt,
        method,
        record_every,
        progress,
        after_step=_normalize if renormalize else None,
    )


# --------------------------------------------------------------------------------------------------
# Residual networks and their ODE
# --------------------------------------------------------------------------------------------------
def _check_residual_params(
    x0: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> None:
    d = x0.shape[-1]
    check_tensor("a", a, ndim=3, shape=(None, None, d))
    n_layers, d_hidden = a.shape[0], a.shape[1]
    check_tensor("w", w, ndim=3, shape=(n_layers, d, d_hidden))
    check_tensor("b", b, ndim=2, shape=(n_layers, d_hidden))
    for name, m in (("w", w), ("a", a), ("b", b)):
        _check_like(name, m, x0)


def residual_network(
    x0: torch.Tensor,
    w: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    h: float = 1.0,
    activation: Activation = torch.tanh,
) -> torch.Tensor:
    """The states of a residual network, ``x_{k+1} = x_k + h w_k sigma(a_k x_k + b_k)``.

    This is the explicit Euler scheme, with step ``h``, of ``dx/dt = w(t) sigma(a(t) x + b(t))``
    with layer ``k``'s parameters used on ``[k h, (k + 1) h)`` (compare :func:`residual_ode_flow`).

    Args:
        x0: inputs, ``(..., d)``.
        w: ``(n_layers, d, d_hidden)``.
        a: ``(n_layers, d_hidden, d)``.
        b: ``(n_layers, d_hidden)``.
        h: the step (layer "duration"), > 0; the ODE limit is ``h -> 0`` with ``n_layers h`` fixed.
        activation: the elementwise Lipschitz nonlinearity ``sigma``.

    Returns:
        ``(n_layers + 1, ..., d)``: ``x_0, x_1, ..., x_{n_layers}``.
    """
    x0 = check_tensor("x0", x0, min_ndim=1, floating=True)
    _check_residual_params(x0, w, a, b)
    h = _check_real("h", h, positive=True)
    states = [x0]
    x = x0
    for k in range(a.shape[0]):
        x = x + h * (activation(x @ a[k].mT + b[k]) @ w[k].mT)  # (..., d)
        states.append(x)
    return torch.stack(states)


def residual_ode_flow(
    x0: torch.Tensor,
    w: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    h: float = 1.0,
    activation: Activation = torch.tanh,
    substeps: int = 16,
) -> torch.Tensor:
    """The ODE ``dx/dt = w(t) sigma(a(t) x + b(t))`` behind :func:`residual_network`, solved well.

    The parameters are piecewise constant in time (layer ``k`` on ``[k h, (k + 1) h)``); each
    interval is integrated with ``substeps`` RK4 steps, and the state is returned at ``t = k h``,
    frame for frame comparable with :func:`residual_network`.

    Returns:
        ``(n_layers + 1, ..., d)``: the flow at ``t = 0, h, ..., n_layers h``.
    """
    x0 = check_tensor("x0", x0, min_ndim=1, floating=True)
    _check_residual_params(x0, w, a, b)
    h = _check_real("h", h, positive=True)
    check_positive_int("substeps", substeps)
    states = [x0]
    x = x0
    for k in range(a.shape[0]):

        def f(_t: float, y: torch.Tensor, k: int = k) -> torch.Tensor:
            return activation(y @ a[k].mT + b[k]) @ w[k].mT

        for _ in range(substeps):
            x = _rk4_step(f, 0.0, x, h / substeps)
        states.append(x)
    return torch.stack(states)


# --------------------------------------------------------------------------------------------------
# Particles: sampling, angles, clusters
# --------------------------------------------------------------------------------------------------
def random_sphere(
    n_particles: int,
    d: int,
    batch_shape: Sequence[int] = (),
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Independent uniform points on ``S^{d-1}`` (normalised standard Gaussian vectors).

    Args:
        n_particles: points per system.
        d: ambient dimension (``d = 2``: the circle, ``d = 3``: the sphere ``S^2``).
        batch_shape: leading dimensions (independent systems).
        seed: seed a fresh generator (on ``device``); give ``seed`` or ``generator``, or neither.
        generator: a ``torch.Generator`` on ``device``.
        dtype, device: of the result (``None``: torch's defaults).

    Returns:
        ``(*batch_shape, n_particles, d)`` unit vectors.
    """
    check_positive_int("n_particles", n_particles)
    check_positive_int("d", d)
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both")
    batch_shape = tuple(batch_shape)
    for i, s in enumerate(batch_shape):
        check_positive_int(f"batch_shape[{i}]", s)
    if seed is not None:
        dev = torch.empty(0, device=device).device  # the requested or the default device
        generator = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn((*batch_shape, n_particles, d), generator=generator, dtype=dtype, device=device)
    return _normalize(x)


def to_angles(x: torch.Tensor) -> torch.Tensor:
    """Angles ``theta in [0, 2 pi)`` of points on the circle: ``x = (cos theta, sin theta)``.

    Args:
        x: ``(..., 2)``.

    Returns:
        ``(...)``: the angles.
    """
    check_tensor("x", x, min_ndim=1, shape=(2,), floating=True)
    return torch.remainder(torch.atan2(x[..., 1], x[..., 0]), 2 * math.pi)


def from_angles(theta: torch.Tensor) -> torch.Tensor:
    """Points ``(cos theta, sin theta)`` on the circle; the inverse of :func:`to_angles`.

    Args:
        theta: ``(...)``.

    Returns:
        ``(..., 2)``.
    """
    check_tensor("theta", theta, floating=True)
    return torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)


def count_clusters(x: torch.Tensor, tol: float) -> torch.Tensor:
    """Number of clusters of each system: connected components of the "closer than tol" graph.

    Particles ``i`` and ``j`` are linked when ``|x_i - x_j| <= tol``; a cluster is a connected
    component of this graph (single linkage), so a chain of close particles counts as one cluster.
    Components are found for all systems at once by min-label propagation with pointer jumping:
    each particle takes the smallest label among its neighbours, then the label of its label,
    until nothing changes (at most ``n_particles`` rounds, usually a few). Work
    ``O(batch * n_particles^2)`` per round. The loop depends on the data, so this function does not
    run on ``meta`` tensors.

    Args:
        x: particles, ``(..., n_particles, d)``.
        tol: linking distance, > 0 (Euclidean distance in ``R^d``).

    Returns:
        ``(...)``: int64 cluster counts.
    """
    x = _check_particles("x", x)
    tol = _check_real("tol", tol, positive=True)
    n = x.shape[-2]
    adjacent = torch.cdist(x, x) <= tol  # (..., n, n), includes i == j
    index = torch.arange(n, device=x.device)
    labels = index.expand(x.shape[:-1]).clone()  # (..., n)
    big = torch.full_like(labels, n)
    for _ in range(n + 1):
        neighbour_labels = torch.where(adjacent, labels.unsqueeze(-2), big.unsqueeze(-2))
        new = neighbour_labels.amin(dim=-1)  # min label among the neighbours
        new = new.gather(-1, new)  # pointer jumping
        if torch.equal(new, labels):
            break
        labels = new
    return (labels == index).sum(dim=-1)


def two_cluster_merge_time(
    beta: float | torch.Tensor,
    phi0: float | torch.Tensor,
    phi_end: float = 0.05,
    *,
    n_points: int = 20001,
) -> torch.Tensor:
    """Time for two equal clusters at angle ``phi0`` to come within ``phi_end`` (``Q = K = V = I``).

    Two clusters of equal mass on a great circle move like two particles: each gives weight
    ``e^beta`` to its own cluster and ``e^{beta cos phi}`` to the other, so by the two-particle
    computation of chapter 4 (section 4.2) their angle obeys
    ``dphi/dt = -2 sin(phi) / (1 + e^{beta (1 - cos phi)})``. Separating the variables::

        T(beta, phi0) = int_{phi_end}^{phi0} (1 + e^{beta (1 - cos phi)}) / (2 sin phi) dphi
                      ~ e^{beta (1 - cos phi0)} / (2 beta sin^2 phi0)     (beta -> infinity),

    exponential in ``beta`` at a fixed separation ``phi0`` (the rate ``1 - cos phi0`` is half the
    squared chordal distance of the clusters). Computed by the trapezoidal rule on ``n_points``
    equally spaced angles (relative error about 1e-6 or less for ``beta (1 - cos phi0) <= 50``
    with the default ``n_points``); the result overflows to ``inf`` once ``beta (1 - cos phi0)``
    exceeds about 709 in float64.

    Args:
        beta: inverse temperature, >= 0: a number or a tensor.
        phi0: initial angle in ``(phi_end, pi)``: a number or a tensor, broadcast with ``beta``.
        phi_end: final angle, > 0.
        n_points: quadrature points, >= 2.

    Returns:
        The merge times, of the broadcast shape of ``beta`` and ``phi0`` (``()`` for two numbers),
        float64 unless a tensor argument is floating (then its dtype), on the tensors' device.
    """
    phi_end = _check_real("phi_end", phi_end, positive=True)
    check_positive_int("n_points", n_points)
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    tensors = [t for t in (beta, phi0) if isinstance(t, torch.Tensor)]
    for name, value in (("beta", beta), ("phi0", phi0)):
        if isinstance(value, torch.Tensor):
            check_tensor(name, value, floating=True)
        else:
            _check_real(name, value)
    if len(tensors) == 2:
        check_same_device(beta=beta, phi0=phi0)
    dtype = torch.float64
    if tensors:
        dtype = tensors[0].dtype
        for t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
    device = tensors[0].device if tensors else None
    beta_t = torch.as_tensor(beta, dtype=dtype, device=device)
    phi0_t = torch.as_tensor(phi0, dtype=dtype, device=device)
    if beta_t.device.type != "meta":
        if not bool((beta_t >= 0).all()) or not bool(torch.isfinite(beta_t).all()):
            raise ValueError("beta must be finite and >= 0")
        if not bool(((phi0_t > phi_end) & (phi0_t < math.pi)).all()):
            raise ValueError(f"phi0 must lie in (phi_end, pi) = ({phi_end}, pi), got {phi0}")
    beta_t, phi0_t = torch.broadcast_tensors(beta_t, phi0_t)
    s = torch.linspace(0.0, 1.0, n_points, dtype=dtype, device=beta_t.device)
    phi = phi_end + (phi0_t.unsqueeze(-1) - phi_end) * s  # (..., n_points)
    integrand = (1 + torch.exp(beta_t.unsqueeze(-1) * (1 - torch.cos(phi)))) / (2 * torch.sin(phi))
    return torch.trapezoid(integrand, phi, dim=-1)
