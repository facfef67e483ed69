"""Attention: scaled dot-product attention, masks and multi-head self-attention (chapter 2).

Scaled dot-product attention (Vaswani et al., 2017, "Attention is all you need", eq. 1) builds, for
every query position ``i``, a weighted average of the value vectors::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V

with ``Q: (..., T, d_k)``, ``K: (..., S, d_k)``, ``V: (..., S, d_v)``; the scores
``Q K^T / sqrt(d_k)`` and the weights (the *attention pattern*) have shape ``(..., T, S)`` and each
row of the weights sums to one. Dividing by ``sqrt(d_k)`` keeps the scores' variance near one when
the entries of ``q`` and ``k`` are independent with unit variance (``Var(q . k) = d_k``), so the
softmax does not saturate as ``d_k`` grows. ``M`` is a mask: ``0`` where attention is allowed and
``-inf`` where it is not.

Multi-head attention runs ``n_heads`` such attentions in parallel on ``d_head = d_model / n_heads``
dimensional subspaces and mixes their outputs with one output projection::

    MultiHead(x) = concat(head_1, ..., head_h) W_O,   head_j = Attention(x W_Q^j, x W_K^j, x W_V^j)

The module follows the GPT-2 checkpoint's layout (Radford et al., 2019): one fused ``c_attn``
projection to queries, keys and values, and one ``c_proj`` output projection. Its hook points
(``hook_q``, ``hook_k``, ``hook_v``, ``hook_attn_scores``, ``hook_pattern``, ``hook_z``) are named
as in TransformerLens, so that :class:`labcore.transformer.GPT` exposes every intermediate
activation.

Shapes use one vocabulary everywhere: ``batch``, ``pos``, ``d_model``, ``n_heads``, ``d_head``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from labcore.validation import check_positive_int, check_same_device, check_tensor

__all__ = [
    "HookPoint",
    "MultiHeadAttention",
    "attention_scores",
    "causal_mask",
    "merge_heads",
    "scaled_dot_product_attention",
    "split_heads",
]

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]


# --------------------------------------------------------------------------------------------------
# Hook points
# --------------------------------------------------------------------------------------------------
class HookPoint(nn.Module):
    """An identity module that marks a named activation, as in TransformerLens.

    ``forward(x)`` returns ``x``; functions added with :meth:`add_hook` are called with
    ``fn(activation, hook)`` (``hook`` is this module, whose ``name`` says where it sits) and may
    return a replacement tensor of the same shape, or ``None`` to keep the activation.
    The owning model sets ``name`` to the module path (``"blocks.0.attn.hook_pattern"``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def add_hook(self, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
        """Call ``fn(activation, hook)`` each time this point is reached; return the handle."""
        if not callable(fn):
            raise TypeError(f"hook for {self.name!r} must be callable, got {type(fn).__name__}")

        def wrapper(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor):
            new = fn(output, self)
            if new is None:
                return None
            if not isinstance(new, torch.Tensor):
                raise TypeError(
                    f"hook on {self.name!r} must return a tensor or None, got {type(new).__name__}"
                )
            if new.shape != output.shape:
                raise ValueError(
                    f"hook on {self.name!r} must return shape {tuple(output.shape)}, "
                    f"got {tuple(new.shape)}"
                )
            return new

        handle = self.register_forward_hook(wrapper)
        self._handles = [h for h in self._handles if h.id in self._forward_hooks]  # drop removed
        self._handles.append(handle)
        return handle

    def remove_hooks(self) -> None:
        """Remove every hook added with :meth:`add_hook`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def has_hooks(self) -> bool:
        """Whether any forward hook is registered on this point."""
        return bool(self._forward_hooks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


# --------------------------------------------------------------------------------------------------
# Masks and scaled dot-product attention
# --------------------------------------------------------------------------------------------------
def causal_mask(
    T: int, S: int | None = None, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean causal mask ``mask[i, j] = (j <= i)``: True where query ``i`` may see key ``j``.

    This is ``torch.ones(T, S).tril()`` (aligned to the top-left corner), the mask that
    ``torch.nn.functional.scaled_dot_product_attention(..., is_causal=True)`` uses.

    Args:
        T: number of queries (pos).
        S: number of keys; defaults to ``T``.
        device: where to create the mask; ``None`` is torch's default device.

    Returns:
        A bool tensor of shape ``(T, S)``.
    """
    check_positive_int("T", T)
    S = T if S is None else check_positive_int("S", S)
    rows = torch.arange(T, device=device).unsqueeze(-1)  # (T, 1)
    cols = torch.arange(S, device=device)  # (S,)
    return cols <= rows  # (T, S)


def _check_qkv(q: object, k: object, v: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = check_tensor("q", q, min_ndim=2, floating=True)
    k = check_tensor("k", k, min_ndim=2, floating=True)
    v = check_tensor("v", v, min_ndim=2, floating=True)
    check_same_device(q=q, k=k, v=v)
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"k must have the same last dimension d_k as q {tuple(q.shape)}, got {tuple(k.shape)}"
        )
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"v must have as many positions S as k {tuple(k.shape)}, got {tuple(v.shape)}"
        )
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise ValueError(
            "q, k and v must have the same leading (batch) dimensions, got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    return q, k, v


def _check_mask(mask: object, scores_shape: torch.Size, device: torch.device) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"mask must be a bool or floating-point tensor, got {mask.dtype}")
    if mask.device != device:
        raise ValueError(f"mask must be on the device of q ({device}), got {mask.device}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        broadcast = None
    if broadcast != scores_shape:
        raise ValueError(
            f"mask must broadcast to the scores' shape (..., T, S) = {tuple(scores_shape)}, "
            f"got {tuple(mask.shape)}"
        )
    return mask


def attention_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """Masked, scaled attention scores ``Q K^T / sqrt(d_k) + M`` (the input of the softmax).

    Args:
        q: queries, ``(..., T, d_k)``.
        k: keys, ``(..., S, d_k)``, with the same leading dimensions as ``q``.
        mask: ``None``; a bool tensor broadcastable to ``(..., T, S)``, True where attention is
            allowed (masked scores become ``-inf``); or a float tensor added to the scores.
        scale: multiplies ``Q K^T``; defaults to ``1 / sqrt(d_k)``.

    Returns:
        Scores of shape ``(..., T, S)``, in the dtype and on the device of ``q``.
    """
    q, k, _ = _check_qkv(q, k, k)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T, S)
    if mask is None:
        return scores
    mask = _check_mask(mask, scores.shape, q.device)
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask.to(scores.dtype)


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last axis; rows with no allowed key get zero weights (not NaN)."""
    weights = torch.softmax(scores, dim=-1)  # (..., T, S)
    if mask is None:
        return weights
    # A row of -inf gives 0/0 = NaN in the softmax; no allowed key means no information: use 0.
    if mask.dtype == torch.bool:
        dead = ~mask.any(dim=-1, keepdim=True)  # (..., T, 1), broadcastable
    else:
        dead = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., T, 1)
    return weights.masked_fill(dead, 0.0)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``softmax(Q K^T / sqrt(d_k) + M) V``, written out; equal to torch's fused version.

    Args:
        q: queries, ``(..., T, d_k)``.
        k: keys, ``(..., S, d_k)``.
        v: values, ``(..., S, d_v)``. ``q``, ``k`` and ``v`` share their leading dimensions
            (e.g. ``batch, n_heads``), dtype and device.
        mask: ``None``; a bool tensor broadcastable to ``(..., T, S)``, True where query ``i`` may
            attend to key ``j`` (the convention of ``torch.nn.functional.scaled_dot_product_attention``;
            ``torch.nn.MultiheadAttention``'s boolean masks mean the opposite, True = not allowed;
            see :func:`causal_mask`); or a float tensor added to the scores (``0`` to keep,
            ``-inf`` to mask).
        scale: multiplies ``Q K^T``; defaults to ``1 / sqrt(d_k)``.
        return_weights: also return the attention weights.

    Returns:
        The output ``(..., T, d_v)``, and with ``return_weights`` the weights ``(..., T, S)``
        (rows sum to one). A query row whose keys are all masked gets zero weights and a zero
        output, as ``torch.nn.functional.scaled_dot_product_attention`` returns on torch >= 2.5
        (earlier versions returned NaN; ``torch.nn.MultiheadAttention`` still returns NaN there
        when it computes the weights, ``need_weights=True``).

    Raises:
        TypeError: non-tensor inputs, non-floating dtypes, mismatched dtypes, an integer mask.
        ValueError: shapes that do not fit together, a mask that does not broadcast to
            ``(..., T, S)``, tensors on different devices.
    """
    q, k, v = _check_qkv(q, k, v)
    scores = attention_scores(q, k, mask, scale=scale)  # (..., T, S)
    weights = _masked_softmax(scores, mask)  # (..., T, S)
    out = weights @ v  # (..., T, d_v)
    return (out, weights) if return_weights else out


# --------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------
def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Split into heads: ``(batch, pos, d_model) -> (batch, pos, n_heads, d_head)``.

    ``d_head = d_model / n_heads``; head ``h`` gets the features ``h * d_head`` to
    ``(h + 1) * d_head - 1``.
    """
    check_positive_int("n_heads", n_heads)
    x = check_tensor("x", x, ndim=3)
    d_model = x.shape[-1]
    if d_model % n_heads:
        raise ValueError(
            f"x's last dimension d_model must be divisible by n_heads={n_heads}, got {d_model}"
        )
    return x.unflatten(-1, (n_heads, d_model // n_heads))  # (batch, pos, n_heads, d_head)


def merge_heads(z: torch.Tensor) -> torch.Tensor:
    """Concatenate the heads: ``(batch, pos, n_heads, d_head) -> (batch, pos, n_heads * d_head)``.

    The inverse of :func:`split_heads`.
    """
    z = check_tensor("z", z, ndim=4)
    return z.reshape(*z.shape[:-2], z.shape[-2] * z.shape[-1])  # (batch, pos, d_model)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with GPT-2's parameter layout and TransformerLens hook points.

    For ``x: (batch, pos, d_model)``::

        q, k, v = split(x W_attn + b_attn)              each (batch, pos, n_heads, d_head)
        z_h     = softmax(q_h k_h^T / sqrt(d_head) + M) v_h
        out     = merge(z) W_O + b_O                    (batch, pos, d_model)

    Parameters: ``c_attn`` (``nn.Linear(d_model, 3 * d_model)``: queries, keys and values stacked in
    that order along the output) and ``c_proj`` (``nn.Linear(d_model, d_model)``). Per-head views
    of the weights: :attr:`W_Q`, :attr:`W_K`, :attr:`W_V` ``(n_heads, d_model, d_head)`` and
    :attr:`W_O` ``(n_heads, d_head, d_model)``.

    Hook points: ``hook_q``, ``hook_k``, ``hook_v``, ``hook_z`` ``(batch, pos, n_heads, d_head)``;
    ``hook_attn_scores`` (masked scores, ``-inf`` where masked) and ``hook_pattern`` (softmax
    weights), both ``(batch, n_heads, query_pos, key_pos)``. When neither of these two has a hook,
    the pattern is not materialised and the fused
    ``torch.nn.functional.scaled_dot_product_attention`` computes ``z`` (same result up to
    rounding, less memory); otherwise
    :func:`scaled_dot_product_attention`'s formula is computed step by step.

    Args:
        d_model: width of the residual stream; must be divisible by ``n_heads``.
        n_heads: number of heads.
        causal: apply the causal mask (position ``i`` attends to ``j <= i``).
        bias: whether the projections have biases.
    """

    def __init__(self, d_model: int, n_heads: int, causal: bool = True, bias: bool = True) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("n_heads", n_heads)
        if d_model % n_heads:
            raise ValueError(
                f"d_model must be divisible by n_heads={n_heads}, got d_model={d_model}"
            )
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.causal = bool(causal)
        self.c_attn = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.c_proj = nn.Linear(d_model, d_model, bias=bias)
        self.hook_q = HookPoint()  # (batch, pos, n_heads, d_head)
        self.hook_k = HookPoint()  # (batch, pos, n_heads, d_head)
        self.hook_v = HookPoint()  # (batch, pos, n_heads, d_head)
        self.hook_attn_scores = HookPoint()  # (batch, n_heads, query_pos, key_pos)
        self.hook_pattern = HookPoint()  # (batch, n_heads, query_pos, key_pos)
        self.hook_z = HookPoint()  # (batch, pos, n_heads, d_head)

    # Per-head weight views (TransformerLens's W_Q, W_K, W_V, W_O), read-only conveniences.
    def _w_in(self, i: int) -> torch.Tensor:
        w = self.c_attn.weight[
            i * self.d_model : (i + 1) * self.d_model
        ]  # (d_model_out, d_model_in)
        return w.T.reshape(self.d_model, self.n_heads, self.d_head).transpose(0, 1)

    @property
    def W_Q(self) -> torch.Tensor:
        """Query weights per head, ``(n_heads, d_model, d_head)``: ``q_h = x @ W_Q[h] + b``."""
        return self._w_in(0)

    @property
    def W_K(self) -> torch.Tensor:
        """Key weights per head, ``(n_heads, d_model, d_head)``."""
        return self._w_in(1)

    @property
    def W_V(self) -> torch.Tensor:
        """Value weights per head, ``(n_heads, d_model, d_head)``."""
        return self._w_in(2)

    @property
    def W_O(self) -> torch.Tensor:
        """Output weights per head, ``(n_heads, d_head, d_model)``: ``out = sum_h z_h W_O[h]``."""
        return self.c_proj.weight.T.reshape(self.n_heads, self.d_head, self.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention of ``x: (batch, pos, d_model)``; returns ``(batch, pos, d_model)``.

        Args:
            x: the input (for a transformer block, the normalised residual stream).
            mask: optional bool mask broadcastable to ``(batch, n_heads, pos, pos)``, True where
                attention is allowed (e.g. a padding mask ``(batch, 1, 1, pos)``); combined with the
                causal mask when ``causal=True``.
        """
        x = check_tensor("x", x, ndim=3, shape=(None, None, self.d_model), floating=True)
        batch, pos, _ = x.shape
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise TypeError(f"mask must be a bool tensor, got {got}")
            mask = _check_mask(mask, torch.Size((batch, self.n_heads, pos, pos)), x.device)

        qkv = self.c_attn(x)  # (batch, pos, 3 * d_model)
        q, k, v = qkv.split(self.d_model, dim=-1)  # 3 x (batch, pos, d_model)
        q = self.hook_q(split_heads(q, self.n_heads))  # (batch, pos, n_heads, d_head)
        k = self.hook_k(split_heads(k, self.n_heads))
        v = self.hook_v(split_heads(v, self.n_heads))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, n_heads, pos, d_head)

        if self.hook_attn_scores.has_hooks or self.hook_pattern.has_hooks:
            mask = self._full_mask(mask, pos, x.device)
            scores = attention_scores(q, k, mask)  # (batch, n_heads, pos, pos)
            scores = self.hook_attn_scores(scores)
            pattern = self.hook_pattern(_masked_softmax(scores, mask))
            z = pattern @ v  # (batch, n_heads, pos, d_head)
        elif mask is None:  # fused kernel, the pattern is never stored
            z = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            mask = self._full_mask(mask, pos, x.device)
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        z = self.hook_z(z.transpose(1, 2))  # (batch, pos, n_heads, d_head)
        return self.c_proj(merge_heads(z))  # (batch, pos, d_model)

    def _full_mask(
        self, mask: torch.Tensor | None, pos: int, device: torch.device
    ) -> torch.Tensor | None:
        """The user's mask combined (logical and) with the causal mask when ``causal=True``."""
        if not self.causal:
            return mask
        causal = causal_mask(pos, device=device)  # (pos, pos)
        return causal if mask is None else mask & causal

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, causal={self.causal}"
