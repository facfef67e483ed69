"""A GPT-2 transformer with TransformerLens-style hook points, in one readable file (chapter 2).

The model is GPT-2 (Radford et al., 2019, "Language models are unsupervised multitask learners"),
itself the decoder of Vaswani et al. (2017) with LayerNorm moved before each sublayer. For tokens
``t: (batch, pos)``::

    x_0     = W_E[t] + W_pos[0:pos]                          residual stream (batch, pos, d_model)
    x_mid_l = x_l + Attn_l(LN1_l(x_l))                       for l = 0 .. n_layer - 1
    x_l+1   = x_mid_l + MLP_l(LN2_l(x_mid_l))
    logits  = LN_final(x_n_layer) W_E^T                  (batch, pos, d_vocab), tied unembedding

with ``MLP(x) = GELU(x W_fc + b_fc) W_proj + b_proj`` (``d_mlp = 4 d_model`` by default) and causal
multi-head attention (:class:`labcore.attention.MultiHeadAttention`). The residual stream is the
shared channel that every attention head and MLP reads from and writes to (Elhage et al., 2021,
"A mathematical framework for transformer circuits"); chapters 4 and 5 come back to it.

Every intermediate activation passes through a :class:`HookPoint` named as in TransformerLens
(Nanda and Bloom, 2022), so that students can move on to it::

    hook_embed, hook_pos_embed                                (batch, pos, d_model)
    blocks.{l}.hook_resid_pre / hook_resid_mid / hook_resid_post (batch, pos, d_model)
    blocks.{l}.ln1.hook_normalized, blocks.{l}.ln2.hook_normalized (batch, pos, d_model)
    blocks.{l}.attn.hook_q / hook_k / hook_v / hook_z          (batch, pos, n_heads, d_head)
    blocks.{l}.attn.hook_attn_scores / hook_pattern            (batch, n_heads, query_pos, key_pos)
    blocks.{l}.hook_attn_out, blocks.{l}.hook_mlp_out          (batch, pos, d_model)
    blocks.{l}.mlp.hook_pre / hook_post                        (batch, pos, d_mlp)
    ln_final.hook_normalized                                   (batch, pos, d_model)

``ln*.hook_normalized`` is the LayerNorm's output, gain and bias included (the sublayer's input).

Pretrained GPT-2 weights are imported key by key from Hugging Face ``transformers``
(:meth:`GPT.from_hf`, :meth:`GPT.from_pretrained`); a test checks that the logits agree.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labcore.attention import HookPoint, MultiHeadAttention
from labcore.validation import check_in, check_positive_int

__all__ = [
    "GPT",
    "ActivationCache",
    "Block",
    "GPTConfig",
    "HookPoint",
    "LayerNorm",
    "MLP",
    "sinusoidal_positions",
]

HookFn = Callable[[torch.Tensor, HookPoint], "torch.Tensor | None"]
NamesFilter = str | Sequence[str] | Callable[[str], bool] | None


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, the tanh approximation: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    return F.gelu(x, approximate="tanh")


def sinusoidal_positions(
    n_pos: int,
    d_model: int,
    *,
    base: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The fixed position encoding of Vaswani et al. (2017, section 3.5), ``(n_pos, d_model)``.

    ``PE[t, 2i] = sin(t w_i)`` and ``PE[t, 2i + 1] = cos(t w_i)`` with ``w_i = base^(-2i / d_model)``,
    for ``t = 0, ..., n_pos - 1`` and ``i = 0, ..., d_model / 2 - 1``. Each pair of coordinates
    turns at its own frequency, so ``PE[t + k]`` is a fixed rotation of ``PE[t]`` (one 2 x 2
    rotation by the angle ``k w_i`` per pair), whatever ``t``.

    Args:
        n_pos: number of positions.
        d_model: width, even.
        base: the longest wavelength is ``2 pi base``.
        device, dtype: of the result (torch's defaults when ``None``).
    """
    check_positive_int("n_pos", n_pos)
    check_positive_int("d_model", d_model)
    if d_model % 2:
        raise ValueError(f"d_model must be even (sine and cosine pairs), got {d_model}")
    if not base > 1:
        raise ValueError(f"base must be > 1, got {base}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    t = torch.arange(n_pos, device=device, dtype=dtype).unsqueeze(-1)  # (n_pos, 1)
    i = torch.arange(d_model // 2, device=device, dtype=dtype)  # (d_model / 2,)
    angle = t * base ** (-2 * i / d_model)  # (n_pos, d_model / 2)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2)  # (n_pos, d_model)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_new": gelu_new,  # GPT-2's
    "gelu": F.gelu,  # exact: x Phi(x)
    "relu": F.relu,
    "silu": F.silu,
}


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------
@dataclass
class GPTConfig:
    """Hyperparameters of a :class:`GPT`; GPT-2 small is ``GPTConfig(50257, 1024, 768, 12, 12)``.

    Args:
        vocab_size: number of tokens, ``d_vocab``.
        n_ctx: longest sequence (number of learned positions).
        d_model: width of the residual stream; divisible by ``n_head``.
        n_layer: number of transformer blocks.
        n_head: attention heads per block; ``d_head = d_model / n_head``.
        d_mlp: hidden width of the MLPs; ``None`` means ``4 * d_model`` (set in ``__post_init__``,
            so ``dataclasses.replace(cfg, d_model=...)`` keeps the old ``d_mlp``: pass both).
        layer_norm_eps: the ``eps`` in ``(x - mean) / sqrt(var + eps)``.
        activation: the MLP's nonlinearity, one of ``"gelu_new"`` (GPT-2), ``"gelu"``, ``"relu"``,
            ``"silu"``.
        tie_embeddings: unembed with the transpose of the token embedding ``W_E`` (GPT-2) instead
            of a separate ``unembed`` matrix.
        init_std: standard deviation of the GPT-2 initialisation (output projections get
            ``init_std / sqrt(2 n_layer)``).
    """

    vocab_size: int
    n_ctx: int
    d_model: int
    n_layer: int
    n_head: int
    d_mlp: int | None = None
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_new"
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_ctx", "d_model", "n_layer", "n_head"):
            check_positive_int(name, getattr(self, name))
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model must be divisible by n_head={self.n_head}, got d_model={self.d_model}"
            )
        if self.d_mlp is None:
            self.d_mlp = 4 * self.d_model
        check_positive_int("d_mlp", self.d_mlp)
        for name in ("layer_norm_eps", "init_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive float, got {value!r}")
        check_in("activation", self.activation, list(ACTIVATIONS))
        if not isinstance(self.tie_embeddings, bool):
            raise TypeError(
                f"tie_embeddings must be a bool, got {type(self.tie_embeddings).__name__}"
            )

    @property
    def d_head(self) -> int:
        """Width of one head, ``d_model / n_head``."""
        return self.d_model // self.n_head

    @property
    def d_vocab(self) -> int:
        """TransformerLens's name for ``vocab_size``."""
        return self.vocab_size

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)


# --------------------------------------------------------------------------------------------------
# Layers, from the smallest to the largest
# --------------------------------------------------------------------------------------------------
class LayerNorm(nn.Module):
    """``LN(x) = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias`` over the last axis (d_model).

    ``hook_normalized`` sees the output ``(batch, pos, d_model)``, gain and bias included.
    """

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.eps = eps
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        return self.hook_normalized(x)  # (batch, pos, d_model)


class MLP(nn.Module):
    """``MLP(x) = act(x W_fc + b_fc) W_proj + b_proj``: ``(batch, pos, d_model) -> same``.

    ``hook_pre`` sees ``x W_fc + b_fc`` and ``hook_post`` the activation, both
    ``(batch, pos, d_mlp)``.
    """

    def __init__(self, d_model: int, d_mlp: int, activation: str = "gelu_new") -> None:
        super().__init__()
        self.c_fc = nn.Linear(d_model, d_mlp)
        self.hook_pre = HookPoint()
        self.act = ACTIVATIONS[check_in("activation", activation, list(ACTIVATIONS))]
        self.hook_post = HookPoint()
        self.c_proj = nn.Linear(d_mlp, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(self.c_fc(x))  # (batch, pos, d_mlp)
        post = self.hook_post(self.act(pre))  # (batch, pos, d_mlp)
        return self.c_proj(post)  # (batch, pos, d_model)


class Block(nn.Module):
    """One pre-LayerNorm GPT-2 block: ``mid = x + Attn(LN1(x))``, ``out = mid + MLP(LN2(mid))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.hook_resid_pre = HookPoint()
        self.ln1 = LayerNorm(config.d_model, config.layer_norm_eps)
        self.attn = MultiHeadAttention(config.d_model, config.n_head, causal=True, bias=True)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln2 = LayerNorm(config.d_model, config.layer_norm_eps)
        self.mlp = MLP(config.d_model, config.d_mlp, config.activation)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid_pre: torch.Tensor) -> torch.Tensor:
        resid_pre = self.hook_resid_pre(resid_pre)  # (batch, pos, d_model)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre)))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)  # (batch, pos, d_model)


class ActivationCache(dict):
    """Activations by hook name (a ``dict[str, Tensor]``), as :meth:`GPT.run_with_cache` returns.

    Besides full names, ``cache["pattern", 0]`` means ``cache["blocks.0.attn.hook_pattern"]`` and
    ``cache["normalized", 1, "ln2"]`` means ``cache["blocks.1.ln2.hook_normalized"]``
    (TransformerLens's shorthand); ``cache["normalized"]`` is ``ln_final.hook_normalized``.
    """

    def _full_name(self, key: tuple) -> str:
        name, layer, sub = (*key, None, None)[:3]
        suffix = name if name.startswith("hook_") else f"hook_{name}"
        if layer is None:
            found = [k for k in self if not k.startswith("blocks.") and k.split(".")[-1] == suffix]
        else:
            prefix = f"blocks.{layer}." + (f"{sub}." if sub else "")
            found = [k for k in self if k.startswith(prefix) and k.split(".")[-1] == suffix]
        if len(found) != 1:
            raise KeyError(f"{key!r} matches {found or 'no'} cached names; use a full name")
        return found[0]

    def __getitem__(self, key: str | tuple) -> torch.Tensor:
        if isinstance(key, tuple):
            key = self._full_name(key)
        elif isinstance(key, str) and key not in self and "." not in key:
            key = self._full_name((key,))
        if key not in self:
            close = difflib.get_close_matches(str(key), list(self), n=3)
            raise KeyError(f"{key!r} is not in the cache; closest cached names: {close}")
        return super().__getitem__(key)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------
class GPT(nn.Module):
    """A GPT-2-architecture language model with hook points at every activation.

    Parameters: ``embed`` (``W_E``, ``(d_vocab, d_model)``), ``pos_embed`` (``W_pos``,
    ``(n_ctx, d_model)``), ``blocks[l]`` (:class:`Block`), ``ln_final``, and ``unembed`` only when
    ``config.tie_embeddings`` is False (GPT-2 ties it to ``W_E``). There is no dropout: the model is
    the same in training and evaluation mode.

    Example::

        model = GPT(GPTConfig(vocab_size=100, n_ctx=32, d_model=64, n_layer=2, n_head=4))
        logits, cache = model.run_with_cache(tokens)      # tokens: (batch, pos) integers
        cache["blocks.0.attn.hook_pattern"]               # (batch, n_heads, pos, pos)
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)  # W_E
        self.pos_embed = nn.Embedding(config.n_ctx, config.d_model)  # W_pos
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_final = LayerNorm(config.d_model, config.layer_norm_eps)
        self.unembed = (
            None
            if config.tie_embeddings
            else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )
        self._hook_points: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self._hook_points[name] = module
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """GPT-2's initialisation: N(0, init_std^2) weights, zero biases, unit LayerNorm gains, and
        N(0, init_std^2 / (2 n_layer)) for the projections that write into the residual stream."""
        std = self.config.init_std
        for name, p in self.named_parameters():
            module_name = name.rsplit(".", 2)[-2] if name.count(".") else name
            if name.endswith(".bias"):
                p.zero_()
            elif module_name.startswith("ln"):
                p.fill_(1.0)
            elif name.endswith("c_proj.weight"):
                p.normal_(0.0, std / math.sqrt(2 * self.config.n_layer))
            else:
                p.normal_(0.0, std)

    # ---- properties ------------------------------------------------------------------------------
    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding matrix ``(d_model, d_vocab)``: ``logits = LN_final(x) @ W_U``."""
        return (self.embed.weight if self.unembed is None else self.unembed.weight).T

    @property
    def device(self) -> torch.device:
        """The device of the parameters."""
        return self.embed.weight.device

    def num_parameters(self) -> int:
        """Number of parameters (the tied unembedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    # ---- forward ---------------------------------------------------------------------------------
    def _check_tokens(self, tokens: object) -> torch.Tensor:
        """Validate ``tokens`` and return them as ``(batch, pos)``."""
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must have an integer dtype (torch.long), got {tokens.dtype}")
        if tokens.ndim == 1:
            tokens = tokens.unsqueeze(0)
        elif tokens.ndim != 2:
            raise ValueError(
                f"tokens must have shape (batch, pos) or (pos,), got {tuple(tokens.shape)}"
            )
        if not 1 <= tokens.shape[1] <= self.config.n_ctx:
            raise ValueError(
                f"tokens must have between 1 and n_ctx={self.config.n_ctx} positions, "
                f"got shape {tuple(tokens.shape)}"
            )
        if tokens.device != self.device:
            raise ValueError(
                f"tokens must be on the model's device {self.device}, got {tokens.device}"
            )
        if tokens.device.type != "meta" and tokens.numel():
            low, high = (int(t) for t in torch.aminmax(tokens))
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(
                    f"tokens must be ids in [0, vocab_size={self.config.vocab_size}), "
                    f"got values in [{low}, {high}]"
                )
        return tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the next token at every position.

        Args:
            tokens: integer ids, ``(batch, pos)``, or ``(pos,)`` treated as a batch of one (as in
                TransformerLens), with ``pos <= n_ctx``.

        Returns:
            ``(batch, pos, d_vocab)`` logits; ``logits[b, i]`` scores the token at ``i + 1``.
        """
        tokens = self._check_tokens(tokens)  # (batch, pos)
        batch, pos = tokens.shape
        embed = self.hook_embed(self.embed(tokens))  # (batch, pos, d_model)
        pos_embed = self.pos_embed.weight[:pos].expand(batch, pos, -1)  # (batch, pos, d_model)
        resid = embed + self.hook_pos_embed(pos_embed)
        for block in self.blocks:
            resid = block(resid)  # (batch, pos, d_model)
        x = self.ln_final(resid)
        if self.unembed is None:
            return F.linear(x, self.embed.weight)  # (batch, pos, d_vocab) = x @ W_E^T
        return self.unembed(x)

    # ---- hooks -----------------------------------------------------------------------------------
    def hook_names(self) -> list[str]:
        """Names of every hook point, in the order the forward pass reaches them."""
        return list(self._hook_points)

    def _resolve_names(self, names: NamesFilter, arg: str = "names_filter") -> list[str]:
        """Turn a name, a list of names, a predicate or ``None`` (all) into a list of hook names."""
        if names is None:
            return self.hook_names()
        if callable(names):
            return [n for n in self._hook_points if names(n)]
        if isinstance(names, str):
            names = [names]
        names = list(names)
        for n in names:
            if n not in self._hook_points:
                close = difflib.get_close_matches(str(n), self.hook_names(), n=3)
                raise ValueError(
                    f"{arg} must name hook points (see GPT.hook_names()), got {n!r}; "
                    f"did you mean one of {close}?"
                )
        return names

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[NamesFilter, HookFn]]) -> Iterator[GPT]:
        """Context manager adding ``fwd_hooks`` for the duration of the ``with`` block.

        Each entry is ``(name, fn)``: ``name`` is a hook name, or a predicate ``name -> bool``
        selecting several; ``fn(activation, hook)`` returns a replacement of the same shape or
        ``None``. The hooks are removed when the block ends, also when it raises.
        """
        handles = []
        try:
            for entry in fwd_hooks:
                if not (isinstance(entry, tuple) and len(entry) == 2):
                    raise ValueError(f"fwd_hooks must hold (name, fn) pairs, got {entry!r}")
                name, fn = entry
                for n in self._resolve_names(name, "fwd_hooks"):
                    handles.append(self._hook_points[n].add_hook(fn))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def reset_hooks(self) -> None:
        """Remove every hook added through :meth:`HookPoint.add_hook` on this model."""
        for point in self._hook_points.values():
            point.remove_hooks()

    def run_with_hooks(
        self, tokens: torch.Tensor, fwd_hooks: Iterable[tuple[NamesFilter, HookFn]] = ()
    ) -> torch.Tensor:
        """``forward(tokens)`` with ``fwd_hooks`` (see :meth:`hooks`) active; returns the logits.

        Example (ablate head 3 of layer 0)::

            def zero_head(z, hook):            # z: (batch, pos, n_heads, d_head)
                z[:, :, 3] = 0.0
                return z
            logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", zero_head)])
        """
        with self.hooks(fwd_hooks):
            return self(tokens)

    def run_with_cache(
        self, tokens: torch.Tensor, names_filter: NamesFilter = None, *, detach: bool = True
    ) -> tuple[torch.Tensor, ActivationCache]:
        """Run the model and record activations.

        Args:
            tokens: ``(batch, pos)`` or ``(pos,)`` integer ids.
            names_filter: which hook points to record: ``None`` (all), a name, a list of names or a
                predicate ``name -> bool``.
            detach: store detached tensors (no gradient), as TransformerLens does.

        Returns:
            ``(logits, cache)``: logits ``(batch, pos, d_vocab)`` and an :class:`ActivationCache`
            mapping each recorded hook name to its activation (shapes in the module docstring).
        """
        names = self._resolve_names(names_filter)
        cache = ActivationCache()

        def save(activation: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = activation.detach() if detach else activation

        with self.hooks([(n, save) for n in names]):
            logits = self(tokens)
        return logits, cache

    # ---- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        tokens: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens autoregressively (as nanoGPT).

        At each step the last ``n_ctx`` tokens are fed to the model and the next token is drawn from
        ``softmax(logits / temperature)`` restricted to the ``top_k`` most likely tokens;
        ``temperature=0`` picks the argmax (greedy decoding).

        Args:
            tokens: prompt ``(batch, pos)`` or ``(pos,)``.
            max_new_tokens: number of tokens to append (>= 0).
            temperature: >= 0.
            top_k: keep only the ``top_k`` largest logits; ``None`` keeps all.
            generator: a ``torch.Generator`` on the model's device, for reproducible sampling.

        Returns:
            ``(batch, pos + max_new_tokens)`` token ids (the prompt followed by the samples).
        """
        tokens = self._check_tokens(tokens)
        check_positive_int("max_new_tokens", max_new_tokens, allow_zero=True)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"temperature must be a float, got {type(temperature).__name__}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None:
            check_positive_int("top_k", top_k)
        for _ in range(max_new_tokens):
            logits = self(tokens[:, -self.config.n_ctx :])[:, -1, :]  # (batch, d_vocab)
            if temperature == 0:
                next_token = logits.argmax(dim=-1, keepdim=True)  # (batch, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                next_token = torch.multinomial(probs, 1, generator=generator)  # (batch, 1)
            tokens = torch.cat([tokens, next_token], dim=1)
        return tokens

    # ---- loading and saving ----------------------------------------------------------------------
    def _load_checked(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Copy ``state`` into the parameters, checking that keys and shapes match exactly."""
        ours = self.state_dict()
        missing = sorted(set(ours) - set(state))
        unexpected = sorted(set(state) - set(ours))
        if missing or unexpected:
            raise ValueError(
                f"{source} does not match GPT's parameters: "
                f"missing {missing}, unexpected {unexpected}"
            )
        for key, tensor in state.items():
            if tensor.shape != ours[key].shape:
                raise ValueError(
                    f"{source}: {key} must have shape {tuple(ours[key].shape)}, "
                    f"got {tuple(tensor.shape)}"
                )
        self.load_state_dict(state, assign=True)

    # Conv1D layers of Hugging Face's GPT-2 store weights as (in, out); nn.Linear stores (out, in).
    HF_TRANSPOSED = (
        "attn.c_attn.weight",
        "attn.c_proj.weight",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    )
    # Our key -> Hugging Face's key (regular expression substitutions, applied in order).
    HF_KEYS = (
        (r"^embed\.", "transformer.wte."),
        (r"^pos_embed\.", "transformer.wpe."),
        (r"^blocks\.(\d+)\.ln1\.", r"transformer.h.\1.ln_1."),
        (r"^blocks\.(\d+)\.ln2\.", r"transformer.h.\1.ln_2."),
        (r"^blocks\.(\d+)\.", r"transformer.h.\1."),
        (r"^ln_final\.", "transformer.ln_f."),
        (r"^unembed\.", "lm_head."),
    )

    @classmethod
    def hf_config(cls, hf_config: Any) -> GPTConfig:
        """The :class:`GPTConfig` of a Hugging Face ``GPT2Config``; unsupported options raise."""
        unsupported = {
            "add_cross_attention": False,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
        }
        for option, supported in unsupported.items():
            if getattr(hf_config, option, supported) != supported:
                raise ValueError(
                    f"hf_model.config.{option} must be {supported} for GPT, "
                    f"got {getattr(hf_config, option)}"
                )
        act = {"gelu_pytorch_tanh": "gelu_new", "gelu_fast": "gelu_new", "swish": "silu"}.get(
            hf_config.activation_function, hf_config.activation_function
        )
        if act not in ACTIVATIONS:
            raise ValueError(
                f"hf_model.config.activation_function must be one of {list(ACTIVATIONS)}, "
                f"got {hf_config.activation_function!r}"
            )
        return GPTConfig(
            vocab_size=hf_config.vocab_size,
            n_ctx=hf_config.n_positions,
            d_model=hf_config.n_embd,
            n_layer=hf_config.n_layer,
            n_head=hf_config.n_head,
            d_mlp=hf_config.n_inner,
            layer_norm_eps=float(hf_config.layer_norm_epsilon),
            activation=act,
            tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", True)),
            init_std=float(getattr(hf_config, "initializer_range", 0.02)),
        )

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> GPT:
        """Convert a Hugging Face ``GPT2LMHeadModel`` (any size) into a :class:`GPT`, key by key.

        Every parameter is copied from its Hugging Face counterpart (see ``HF_KEYS``), with its
        shape checked; the four Conv1D weights listed in ``HF_TRANSPOSED`` are transposed. The
        result has the dtype and device of ``hf_model`` and shares no memory with it.

        Raises:
            TypeError: ``hf_model`` is not a GPT-2 model.
            ValueError: unsupported configuration options, or keys or shapes that do not match.
        """
        hf_config = getattr(hf_model, "config", None)
        if getattr(hf_config, "model_type", None) != "gpt2" or not hasattr(hf_model, "transformer"):
            raise TypeError(f"hf_model must be a GPT2LMHeadModel, got {type(hf_model).__name__}")
        config = cls.hf_config(hf_config)
        with torch.device("meta"):
            model = cls(config)  # no time spent on a random initialisation
        hf_state = hf_model.state_dict()
        state, used = {}, set()
        for key in model.state_dict():
            hf_key = key
            for pattern, repl in cls.HF_KEYS:
                hf_key, n = re.subn(pattern, repl, hf_key)
                if n:
                    break
            if hf_key not in hf_state:
                raise ValueError(f"hf_model has no {hf_key!r} for GPT's {key!r}")
            tensor = hf_state[hf_key].detach()
            if key.endswith(cls.HF_TRANSPOSED):
                tensor = tensor.T
            state[key] = tensor.clone().contiguous()
            used.add(hf_key)
        # Non-persistent attention-mask buffers of older transformers versions, and the tied head.
        ignored = {k for k in hf_state if k.endswith((".attn.bias", ".attn.masked_bias"))}
        if config.tie_embeddings:
            ignored.add("lm_head.weight")
        left = sorted(set(hf_state) - used - ignored)
        if left:
            raise ValueError(f"hf_model has parameters that GPT does not use: {left}")
        model._load_checked(state, "hf_model")
        return model.eval()

    @classmethod
    def from_pretrained(
        cls,
        name: str = "gpt2",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[GPT, Any]:
        """Load pretrained GPT-2 weights and tokenizer through Hugging Face ``transformers``.

        Needs ``transformers`` and access to the Hugging Face hub (e.g. in Colab) or a local
        directory saved with ``save_pretrained``.

        Args:
            name: a hub name (``"gpt2"``, ``"gpt2-medium"``, ``"distilgpt2"``, ...) or a directory.
            device: where to put the model (default: where ``transformers`` loads it, the CPU).
            dtype: e.g. ``torch.float16`` on a GPU.

        Returns:
            ``(model, tokenizer)``: a :class:`GPT` in eval mode and the Hugging Face tokenizer.
        """
        try:
            from transformers import AutoTokenizer, GPT2LMHeadModel
        except ImportError as err:  # pragma: no cover - transformers is in the course environment
            raise ImportError("from_pretrained needs transformers (pip install it)") from err
        hf_model = GPT2LMHeadModel.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = cls.from_hf(hf_model)
        del hf_model
        return model.to(device=device, dtype=dtype), tokenizer

    @staticmethod
    def _paths(path: str | Path) -> tuple[Path, Path]:
        path = Path(path)
        if path.suffix in (".safetensors", ".json"):
            path = path.with_suffix("")
        return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> tuple[Path, Path]:
        """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (config and metadata).

        ``metadata`` must be JSON-serialisable (e.g. a tokenizer's vocabulary, a training recipe).
        Returns the two paths.
        """
        from safetensors.torch import save_file

        weights, config = self._paths(path)
        weights.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(weights), metadata={"format": "pt", "model": "labcore GPT"})
        record = {"config": self.config.to_dict(), **(metadata or {})}
        config.write_text(json.dumps(record, indent=2) + "\n")
        return weights, config

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str | None = None) -> GPT:
        """Inverse of :meth:`save`: read ``<path>.json`` and ``<path>.safetensors``; eval mode."""
        from safetensors.torch import load_file

        weights, config = cls._paths(path)
        for file in (weights, config):
            if not file.is_file():
                raise ValueError(f"path must name a saved GPT, but {file} does not exist")
        record = json.loads(config.read_text())
        with torch.device("meta"):
            model = cls(GPTConfig.from_dict(record["config"]))
        model._load_checked(load_file(str(weights)), str(weights))
        return model.to(device).eval()
