"""Transcoders: sparse, interpretable replacements of a transformer's MLP layers (chapter 5).

An MLP sublayer of a GPT maps the normalised residual stream ``x = LN2(resid_mid)`` (the hook
``blocks.{l}.ln2.hook_normalized``) to its output ``y = MLP(x)`` (``blocks.{l}.hook_mlp_out``), both
``(batch, pos, d_model)``. Its ``d_mlp`` neurons are dense and polysemantic, which makes the layer
hard to read. A *transcoder* (Dunefsky, Chlenski and Nanda, "Transcoders find interpretable LLM
feature circuits", NeurIPS 2024) is a wider, sparsely activating layer trained to imitate it::

    f     = act(x W_enc + b_enc)          features (..., d_hidden), mostly zero
    y_hat = f W_dec + b_dec               (..., d_out), should be close to y = MLP(x)

with ``W_enc: (d_in, d_hidden)``, ``W_dec: (d_hidden, d_out)`` whose rows (one output direction
per feature) have unit norm, and ``act`` a ReLU (or TopK: keep the ``k`` largest pre-activations,
then ReLU; Gao et al., "Scaling and evaluating sparse autoencoders", 2024). It is trained on pairs
``(x, y)`` collected with hooks by minimising, averaged over a batch of tokens::

    L = ||y - y_hat||^2 + lambda * sum_i |f_i|          (penalty="l1")
    L = ||y - y_hat||^2 + lambda * sum_i f_i^2          (penalty="l2", the seed presentation's)

The decoder rows are renormalised to unit norm after every optimizer step; without that, the
penalty could be dodged by shrinking ``f`` and growing ``W_dec``. Unlike a sparse autoencoder, which
reconstructs its own input, a transcoder's output is a different activation (the MLP's output), so
it replaces the MLP as a computation: splicing ``y_hat`` in place of ``hook_mlp_out`` gives a model
whose MLP is made of interpretable features, and the connections between features of different
layers become input-invariant products ``W_dec^(l) W_enc^(l')`` (:func:`feature_connections`).

How a transcoder is judged (all measurable on chosen positions, such as the answer after "it ="):

- sparsity: ``L0 = E[#{i : f_i > 0}]``, active features per token (:func:`l0`);
- fidelity: fraction of variance unexplained against the MLP's output,
  ``FVU = sum ||y - y_hat||^2 / sum ||y - mean(y)||^2`` (:func:`fvu`);
- dead features, never active on a data set (:func:`dead_fraction`);
- the next-token loss with the transcoder spliced in (:func:`spliced_loss`), against the original
  model and the model with the MLP zero-ablated (:func:`zero_ablated_loss`):
  ``CE loss recovered = (L_ablated - L_spliced) / (L_ablated - L_original)``
  (:func:`ce_loss_recovered`).

Cross-layer transcoders and attribution graphs over their features extend this to whole circuits
(Ameisen, Lindsey, Pearce et al., "Circuit tracing: revealing computational graphs in language
models", Transformer Circuits Thread, 2025). The functions take a :class:`labcore.transformer.GPT`
and work the same on the tiny ``tiny-coref`` model (offline; a trained transcoder ships as package
data, :func:`load_tiny_transcoder`) and on GPT-2 small (``GPT.from_pretrained("gpt2")``).

Shapes use the course vocabulary: ``batch``, ``pos``, ``d_model``, ``d_mlp``, ``d_vocab``;
``n`` counts tokens (flattened ``batch x pos``), ``d_in``/``d_out`` the transcoder's input and output
widths (``d_model`` for an MLP) and ``d_hidden`` its number of features.

Command line (trains the shipped transcoders, see :func:`train_tiny_transcoder`)::

    python -m labcore.transcoder train-tiny --layer 1
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from labcore import one_thread
from labcore.validation import check_in, check_positive_int, check_tensor

__all__ = [
    "Transcoder",
    "TranscoderHistory",
    "collect_mlp_io",
    "train_transcoder",
    "l0",
    "fvu",
    "dead_fraction",
    "splice_hooks",
    "next_token_loss",
    "zero_ablated_loss",
    "spliced_loss",
    "ce_loss_recovered",
    "evaluate_transcoder",
    "sweep_penalty",
    "l0_at_fvu",
    "feature_activations",
    "ActivatingExample",
    "top_activating_examples",
    "feature_logit_effects",
    "feature_connections",
    "plot_feature_dashboard",
    "AttributionGraph",
    "attribution_graph",
    "TINY_RECIPES",
    "tiny_coref_data",
    "train_tiny_transcoder",
    "load_tiny_transcoder",
    "TINY_SWEEP",
    "sweep_tiny",
    "load_tiny_sweep",
]

Tensor = torch.Tensor
HookFn = Callable[[Tensor, Any], "Tensor | None"]

# --------------------------------------------------------------------------------------------------
# 1. The transcoder
# --------------------------------------------------------------------------------------------------


class Transcoder(nn.Module):
    """A sparse replacement of an MLP: ``f = act(x W_enc + b_enc)``, ``y_hat = f W_dec + b_dec``.

    Args:
        d_in: input width (``d_model``: the MLP reads ``ln2.hook_normalized``).
        d_hidden: number of features (wider than ``d_mlp`` is usual).
        d_out: output width (``d_model``: the MLP writes ``hook_mlp_out``).
        activation: ``"relu"`` (``f = ReLU(pre)``) or ``"topk"`` (keep the ``k`` largest entries of
            ``pre = x W_enc + b_enc`` per token, zero the rest, then ReLU; at most ``k`` features
            are active, exactly ``k`` whenever ``k`` pre-activations are positive).
        k: the number of kept features; required for ``"topk"``, must be ``None`` for ``"relu"``.

    Attributes:
        W_enc: ``(d_in, d_hidden)``, column ``i`` is the direction feature ``i`` reads.
        b_enc: ``(d_hidden,)``.
        W_dec: ``(d_hidden, d_out)``, row ``i`` (unit norm) is the direction feature ``i`` writes.
        b_dec: ``(d_out,)``, the output when no feature is active.

    Shapes: ``x: (..., d_in) -> (y_hat: (..., d_out), features: (..., d_hidden))``.
    """

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        d_out: int,
        activation: str = "relu",
        k: int | None = None,
    ) -> None:
        super().__init__()
        self.d_in = check_positive_int("d_in", d_in)
        self.d_hidden = check_positive_int("d_hidden", d_hidden)
        self.d_out = check_positive_int("d_out", d_out)
        self.activation = str(check_in("activation", activation, ["relu", "topk"]))
        if activation == "topk":
            if k is None:
                raise ValueError('k must be given with activation="topk", got k=None')
            check_positive_int("k", k)
            if k > d_hidden:
                raise ValueError(f"k must be <= d_hidden={d_hidden}, got k={k}")
        elif k is not None:
            raise ValueError(
                f'k is only used with activation="topk", got k={k} with "{activation}"'
            )
        self.k = k
        self.W_enc = nn.Parameter(torch.empty(d_in, d_hidden))
        self.b_enc = nn.Parameter(torch.zeros(d_hidden))
        self.W_dec = nn.Parameter(torch.empty(d_hidden, d_out))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """``W_enc ~ U(-1/sqrt(d_in), 1/sqrt(d_in))``, unit-norm random decoder rows, zero biases.

        Args:
            generator: a CPU ``torch.Generator`` for a reproducible draw (``None``: the global RNG).
        """
        bound = 1.0 / math.sqrt(self.d_in)
        w_enc = torch.rand(self.W_enc.shape, generator=generator) * (2 * bound) - bound
        w_dec = torch.randn(self.W_dec.shape, generator=generator)
        self.W_enc.copy_(w_enc.to(self.W_enc.device))
        self.W_dec.copy_(w_dec.to(self.W_dec.device))
        self.b_enc.zero_()
        self.b_dec.zero_()
        self.normalize_decoder_()

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every row of ``W_dec`` to unit Euclidean norm, in place: ``||W_dec[i]|| = 1``."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def config(self) -> dict[str, Any]:
        """The constructor's arguments, JSON-serialisable."""
        return {
            "d_in": self.d_in,
            "d_hidden": self.d_hidden,
            "d_out": self.d_out,
            "activation": self.activation,
            "k": self.k,
        }

    def encode(self, x: Tensor) -> Tensor:
        """Features ``f = act(x W_enc + b_enc)``: ``x (..., d_in) -> (..., d_hidden)``, ``f >= 0``."""
        check_tensor("x", x, min_ndim=1, shape=(self.d_in,), floating=True)
        return self.activate(x @ self.W_enc + self.b_enc)  # (..., d_hidden)

    def activate(self, pre: Tensor) -> Tensor:
        """The activation applied to pre-activations ``(..., d_hidden)``: ReLU, or TopK then ReLU."""
        if self.activation == "relu":
            return F.relu(pre)
        values, indices = pre.topk(self.k, dim=-1)  # (..., k) each
        return torch.zeros_like(pre).scatter(-1, indices, F.relu(values))  # (..., d_hidden)

    def decode(self, features: Tensor) -> Tensor:
        """``y_hat = f W_dec + b_dec``: ``features (..., d_hidden) -> (..., d_out)``."""
        check_tensor("features", features, min_ndim=1, shape=(self.d_hidden,), floating=True)
        return features @ self.W_dec + self.b_dec  # (..., d_out)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (..., d_in) -> (y_hat (..., d_out), features (..., d_hidden))``."""
        features = self.encode(x)
        return self.decode(features), features

    def extra_repr(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return (
            f"d_in={self.d_in}, d_hidden={self.d_hidden}, d_out={self.d_out}, "
            f"activation={self.activation!r}{k}"
        )

    # ---- saving ----------------------------------------------------------------------------------
    @staticmethod
    def _paths(path: str | Path) -> tuple[Path, Path]:
        path = Path(path)
        if path.suffix in (".safetensors", ".json"):
            path = path.with_suffix("")
        return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> tuple[Path, Path]:
        """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (config and ``metadata``)."""
        from safetensors.torch import save_file

        weights, record_path = self._paths(path)
        weights.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(weights), metadata={"format": "pt", "model": "labcore Transcoder"})
        record = {"config": self.config(), **(metadata or {})}
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        return weights, record_path

    @classmethod
    def load(
        cls, path: str | Path, *, device: torch.device | str | None = None
    ) -> tuple[Transcoder, dict[str, Any]]:
        """Inverse of :meth:`save`: returns ``(transcoder, record)``, the record being the json."""
        from safetensors.torch import load_file

        weights, record_path = cls._paths(path)
        for file in (weights, record_path):
            if not file.is_file():
                raise ValueError(f"path must name a saved Transcoder, but {file} does not exist")
        record = json.loads(record_path.read_text())
        transcoder = cls(**record["config"])
        transcoder.load_state_dict(load_file(str(weights)))
        return transcoder.to(device).eval(), record


# --------------------------------------------------------------------------------------------------
# 2. Collecting the MLP's inputs and outputs
# --------------------------------------------------------------------------------------------------


def _check_layer(model: nn.Module, layer: object) -> int:
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "run_with_hooks"):
        raise TypeError(f"model must be a labcore GPT (with hooks), got {type(model).__name__}")
    check_positive_int("layer", layer, allow_zero=True)
    if layer >= len(blocks):
        raise ValueError(
            f"layer must be in [0, {len(blocks) - 1}] (n_layer={len(blocks)}), got {layer}"
        )
    return int(layer)


def _hook_names(layer: int) -> tuple[str, str]:
    """The hook the MLP reads (its input) and the hook it writes (its output) in block ``layer``."""
    return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"


def _token_mask(tokens: Tensor, mask: Tensor | None, lengths: Tensor | None) -> Tensor | None:
    """A ``(batch, pos)`` bool mask of real tokens from ``mask`` or ``lengths`` (or ``None``)."""
    if mask is not None and lengths is not None:
        raise ValueError("give at most one of mask and lengths, got both")
    if mask is not None:
        check_tensor("mask", mask, ndim=2)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
        if mask.shape != tokens.shape:
            raise ValueError(
                f"mask must have the shape of tokens {tuple(tokens.shape)}, got {tuple(mask.shape)}"
            )
        return mask
    if lengths is not None:
        check_tensor("lengths", lengths, ndim=1)
        if lengths.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"lengths must have shape ({tokens.shape[0]},) (batch of tokens), "
                f"got {tuple(lengths.shape)}"
            )
        positions = torch.arange(tokens.shape[1], device=tokens.device)  # (pos,)
        return positions < lengths.to(tokens.device).unsqueeze(1)  # (batch, pos)
    return None


def _check_tokens(tokens: object) -> Tensor:
    check_tensor("tokens", tokens, ndim=2)
    if tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must have an integer dtype (torch.long), got {tokens.dtype}")
    return tokens


@torch.no_grad()
def collect_mlp_io(
    model: nn.Module,
    tokens: Tensor,
    layer: int,
    *,
    batch_size: int = 256,
    mask: Tensor | None = None,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The MLP of block ``layer``'s input and output at every (real) token, through hooks.

    Runs the model on chunks of ``batch_size`` sequences and records
    ``blocks.{layer}.ln2.hook_normalized`` (the MLP's input ``x``) and ``blocks.{layer}.hook_mlp_out``
    (its output ``y = MLP(x)``), flattening batch and position.

    Args:
        model: a :class:`labcore.transformer.GPT`.
        tokens: ``(batch, pos)`` token ids.
        layer: the block, ``0 <= layer < n_layer``.
        batch_size: sequences per forward pass (bounds memory).
        mask: optional ``(batch, pos)`` bool, True on the tokens to keep (e.g. not padding).
        lengths: optional ``(batch,)`` lengths of right-padded sequences (keeps ``pos < length``);
            at most one of ``mask`` and ``lengths``.

    Returns:
        ``(inputs, targets)``, both ``(n, d_model)`` with ``n`` the number of kept tokens, in
        row-major (batch, pos) order, detached, on the model's device.
    """
    layer = _check_layer(model, layer)
    tokens = _check_tokens(tokens)
    check_positive_int("batch_size", batch_size)
    keep = _token_mask(tokens, mask, lengths)
    in_name, out_name = _hook_names(layer)
    inputs, targets = [], []
    for start in range(0, tokens.shape[0], batch_size):  # chunks of sequences, not single tokens
        chunk = slice(start, start + batch_size)
        _, cache = model.run_with_cache(tokens[chunk], names_filter=[in_name, out_name])
        x, y = cache[in_name], cache[out_name]  # (chunk, pos, d_model) each
        if keep is None:
            inputs.append(x.flatten(0, 1))
            targets.append(y.flatten(0, 1))
        else:
            inputs.append(x[keep[chunk]])  # (n_chunk, d_model)
            targets.append(y[keep[chunk]])
    return torch.cat(inputs), torch.cat(targets)


# --------------------------------------------------------------------------------------------------
# 3. Metrics
# --------------------------------------------------------------------------------------------------


def l0(features: Tensor) -> Tensor:
    """Mean number of active features per token, ``E_tokens[#{i : f_i != 0}]``.

    Args:
        features: ``(..., d_hidden)``; every leading position is one token.

    Returns:
        A 0-d float tensor on the input's device.
    """
    check_tensor("features", features, min_ndim=1)
    return (features != 0).sum(-1).to(torch.float32).mean()


def fvu(y_hat: Tensor, y: Tensor) -> Tensor:
    """Fraction of variance unexplained, ``sum ||y - y_hat||^2 / sum ||y - mean(y)||^2``.

    ``y`` is the MLP's output (the transcoder's target) and the mean is over all tokens, so
    predicting the mean output everywhere gives 1 and predicting ``y`` exactly gives 0.

    Args:
        y_hat: ``(..., d_out)`` prediction; ``y``: the same shape, the target.

    Returns:
        A 0-d tensor (the inputs' dtype and device).
    """
    check_tensor("y", y, min_ndim=1, floating=True)
    check_tensor("y_hat", y_hat, min_ndim=1, floating=True)
    if y_hat.shape != y.shape:
        raise ValueError(
            f"y_hat must have the shape of y {tuple(y.shape)}, got {tuple(y_hat.shape)}"
        )
    y2, e2 = y.reshape(-1, y.shape[-1]), (y - y_hat).reshape(-1, y.shape[-1])  # (n, d_out)
    return e2.pow(2).sum() / (y2 - y2.mean(0)).pow(2).sum()


def dead_fraction(features: Tensor) -> Tensor:
    """Fraction of features that are zero on every token of ``features`` ``(..., d_hidden)``.

    Measure it on a large data set: a feature that fires once in a million tokens is alive.

    Returns:
        A 0-d float tensor on the input's device.
    """
    check_tensor("features", features, min_ndim=1)
    alive = (features != 0).reshape(-1, features.shape[-1]).any(0)  # (d_hidden,)
    return (~alive).to(torch.float32).mean()


# --------------------------------------------------------------------------------------------------
# 4. Training
# --------------------------------------------------------------------------------------------------


@dataclass
class TranscoderHistory:
    """What :func:`train_transcoder` records, one entry per step (on the step's mini-batch).

    Attributes:
        loss: ``mse + lambda * penalty`` (``lambda`` ramped during ``l1_warmup_steps``).
        mse: ``mean_batch ||y - y_hat||^2``.
        penalty: ``mean_batch sum_i |f_i|`` (L1) or ``mean_batch sum_i f_i^2`` (L2).
        l0: mean active features per token.
        fvu: the batch's ``mse`` over the variance of all targets, ``E||y - mean(y)||^2``.
        dead_fraction: fraction of features that fired on no token of the last ``dead_window`` steps
            (0 before step ``dead_window``).
        tokens_per_step: the batch size; ``seconds``: wall-clock training time.
    """

    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    penalty: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    fvu: list[float] = field(default_factory=list)
    dead_fraction: list[float] = field(default_factory=list)
    tokens_per_step: int = 0
    seconds: float = field(default=0.0, compare=False)

    @property
    def tokens_per_second(self) -> float:
        """Training throughput: tokens processed per second of wall-clock time."""
        return len(self.loss) * self.tokens_per_step / max(self.seconds, 1e-12)


PENALTIES: dict[str, Callable[[Tensor], Tensor]] = {
    "l1": lambda f: f.sum(-1),  # sum_i |f_i| = sum_i f_i, as features are >= 0; (batch,)
    "l2": lambda f: f.pow(2).sum(-1),  # sum_i f_i^2, (batch,)
}


def _check_io(inputs: object, targets: object) -> tuple[Tensor, Tensor]:
    check_tensor("inputs", inputs, ndim=2, floating=True)
    check_tensor("targets", targets, ndim=2, floating=True)
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"inputs and targets must have the same number of tokens, got inputs "
            f"{tuple(inputs.shape)} and targets {tuple(targets.shape)}"
        )
    if inputs.shape[0] == 0:
        raise ValueError("inputs must hold at least one token, got 0 rows")
    if inputs.device != targets.device:
        raise ValueError(
            f"inputs and targets must be on one device, got {inputs.device} and {targets.device}"
        )
    return inputs, targets


def _check_nonneg_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def train_transcoder(
    inputs: Tensor,
    targets: Tensor,
    d_hidden: int,
    *,
    l1_coeff: float = 1e-3,
    steps: int = 2000,
    lr: float = 1e-3,
    batch_size: int = 512,
    penalty: str = "l1",
    activation: str = "relu",
    k: int | None = None,
    l1_warmup_steps: int = 0,
    dead_window: int = 200,
    seed: int | None = None,
    progress: bool = True,
) -> tuple[Transcoder, TranscoderHistory]:
    """Train a :class:`Transcoder` that maps ``inputs`` to ``targets`` with a sparsity penalty.

    Minimises, with Adam, on shuffled mini-batches of tokens (a new permutation every epoch)::

        L = mean_batch ( ||y - y_hat||^2 + lambda * P(f) ),   P(f) = sum_i |f_i|   ("l1")
                                                              P(f) = sum_i f_i^2   ("l2")

    and rescales the decoder rows to unit norm after every step, so that ``P`` measures the
    features and cannot be lowered by growing ``W_dec``. ``b_dec`` starts at the mean target.
    Near ``f_i = 0`` the L1 penalty's gradient is ``lambda`` (it pushes small activations to zero,
    which the ReLU then keeps at zero), while the L2 penalty's is ``2 lambda f_i``, vanishing: it
    shrinks large activations but lets many small ones live. Compare them at matched FVU with
    :func:`sweep_penalty` and :func:`l0_at_fvu`.

    Args:
        inputs: ``(n, d_in)`` MLP inputs (from :func:`collect_mlp_io`).
        targets: ``(n, d_out)`` MLP outputs, the same device.
        d_hidden: number of features.
        l1_coeff: ``lambda`` (for either penalty; 0 with ``activation="topk"`` is usual). Its scale
            is that of ``||y||^2``: compare values only for the same targets.
        steps: optimizer steps; lr: Adam's learning rate; batch_size: tokens per step.
        penalty: ``"l1"`` or ``"l2"``.
        activation, k: see :class:`Transcoder`.
        l1_warmup_steps: ramp ``lambda`` linearly from 0 over the first steps (fewer features die
            early, when the random features are large; Anthropic's "April update", 2024).
        dead_window: a feature counts as dead in ``history.dead_fraction`` when it fired on no
            token of the last ``dead_window`` steps.
        seed: seeds the initialisation and the shuffling; ``None`` uses torch's global RNG.
        progress: show a tqdm progress bar.

    Returns:
        ``(transcoder, history)``: the trained transcoder (eval mode, on the inputs' device and
        dtype) and a :class:`TranscoderHistory`.
    """
    inputs, targets = _check_io(inputs, targets)
    check_positive_int("d_hidden", d_hidden)
    l1_coeff = _check_nonneg_float("l1_coeff", l1_coeff)
    check_positive_int("steps", steps)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    check_positive_int("batch_size", batch_size)
    check_in("penalty", penalty, list(PENALTIES))
    check_positive_int("l1_warmup_steps", l1_warmup_steps, allow_zero=True)
    check_positive_int("dead_window", dead_window)
    if seed is not None:
        check_positive_int("seed", seed, allow_zero=True)
    penalty_fn = PENALTIES[penalty]

    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device, dtype = inputs.device, inputs.dtype
    transcoder = Transcoder(inputs.shape[1], d_hidden, targets.shape[1], activation, k)
    transcoder.reset_parameters(generator)
    transcoder.to(device=device, dtype=dtype)
    with torch.no_grad():
        transcoder.b_dec.copy_(targets.mean(0))
    opt = torch.optim.Adam(transcoder.parameters(), lr=lr)

    n = inputs.shape[0]
    batch_size = min(batch_size, n)
    variance = (targets - targets.mean(0)).pow(2).sum(-1).mean()  # FVU's denominator, all tokens
    losses: list[Tensor] = []  # detached per step: no host-device sync inside the loop
    active_counts: list[Tensor] = []
    dead_counts: list[Tensor] = []
    last_fired = torch.zeros(d_hidden, dtype=torch.long, device=device)  # step of the last firing
    history = TranscoderHistory(tokens_per_step=batch_size)
    transcoder.train()
    bar = tqdm(total=steps, desc="transcoder", disable=not progress, leave=False)
    start = time.perf_counter()
    pos = n  # forces a shuffle before the first step
    try:
        for step in range(1, steps + 1):
            if pos + batch_size > n:  # a new epoch (full batches only)
                perm = torch.randperm(n, generator=generator).to(device)
                pos = 0
            idx = perm[pos : pos + batch_size]
            pos += batch_size
            x, y = inputs[idx], targets[idx]  # (batch, d_in), (batch, d_out)

            y_hat, f = transcoder(x)
            mse = (y - y_hat).pow(2).sum(-1).mean()
            pen = penalty_fn(f).mean()
            coeff = l1_coeff * min(1.0, step / l1_warmup_steps) if l1_warmup_steps else l1_coeff
            loss = mse + coeff * pen
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            transcoder.normalize_decoder_()

            with torch.no_grad():
                # (d_hidden,) tokens each feature fired on (f >= 0, so sign(f) = 1[f > 0]);
                # sign-then-sum is several times faster on a CPU than comparing and counting
                fired = f.sign().sum(0)
                last_fired.masked_fill_(fired > 0, step)
                losses.append(torch.stack([loss.detach(), mse.detach(), pen.detach()]))
                active_counts.append(fired.sum())
                dead_counts.append((last_fired <= step - dead_window).sum())
            if progress:
                bar.update(1)
                if step % max(1, steps // 100) == 0:
                    l0_now = active_counts[-1].item() / batch_size
                    bar.set_postfix(mse=f"{mse.item():.3g}", l0=f"{l0_now:.1f}")
    finally:
        bar.close()
    history.seconds = time.perf_counter() - start
    loss_table = torch.stack(losses).T  # (3, steps)
    history.loss, history.mse, history.penalty = loss_table.tolist()
    history.fvu = (loss_table[1] / variance).tolist()
    history.l0 = (torch.stack(active_counts) / batch_size).tolist()
    history.dead_fraction = (torch.stack(dead_counts).to(dtype) / d_hidden).tolist()
    return transcoder.eval(), history


# --------------------------------------------------------------------------------------------------
# 5. Splicing into the model and the next-token loss
# --------------------------------------------------------------------------------------------------


def splice_hooks(
    transcoder: nn.Module,
    layer: int,
    *,
    edit: Callable[[Tensor], Tensor] | None = None,
    keep_error: bool = False,
) -> list[tuple[str, HookFn]]:
    """Forward hooks that replace the MLP of block ``layer`` by ``transcoder``.

    The hook on ``blocks.{layer}.ln2.hook_normalized`` stores the MLP's input ``x``; the hook on
    ``blocks.{layer}.hook_mlp_out`` returns ``y_hat = transcoder(x)[0]`` instead of ``MLP(x)``.

    Args:
        transcoder: a :class:`Transcoder`, or any module whose ``forward(x)`` returns
            ``(y_hat, features)`` (``edit`` needs ``encode``/``decode``).
        layer: the block.
        edit: optional ``features (batch, pos, d_hidden) -> features`` applied before decoding,
            e.g. to zero (ablate) or scale (steer) one feature: the output is
            ``decode(edit(encode(x)))``.
        keep_error: add the transcoder's error ``y - y_hat`` back, so that the output is
            ``MLP(x) + decode(edit(f)) - decode(f)``: the model is unchanged except for the edit
            (the error term stands in for what the transcoder misses).

    Returns:
        ``[(name, fn), (name, fn)]`` for :meth:`GPT.run_with_hooks` / :meth:`GPT.hooks`.
    """
    check_positive_int("layer", layer, allow_zero=True)
    if edit is not None and not callable(edit):
        raise TypeError(f"edit must be a callable features -> features, got {type(edit).__name__}")
    in_name, out_name = _hook_names(layer)
    stored: dict[str, Tensor] = {}

    def save_input(x: Tensor, hook: Any) -> None:
        stored["x"] = x  # (batch, pos, d_model)

    def replace_output(y: Tensor, hook: Any) -> Tensor:
        x = stored.pop("x")
        if edit is None:
            y_hat = transcoder(x)[0]  # (batch, pos, d_model)
            return y if keep_error else y_hat
        f = transcoder.encode(x)  # (batch, pos, d_hidden)
        y_edit = transcoder.decode(edit(f))
        return y + y_edit - transcoder.decode(f) if keep_error else y_edit

    return [(in_name, save_input), (out_name, replace_output)]


def next_token_loss(
    model: nn.Module,
    tokens: Tensor,
    *,
    targets: Tensor | None = None,
    positions: Tensor | None = None,
    fwd_hooks: Iterable[tuple[str, HookFn]] = (),
    batch_size: int = 256,
) -> Tensor:
    """Mean next-token cross-entropy of ``model`` (with ``fwd_hooks``) on chosen positions.

    Three ways to say which predictions count:

    - neither ``targets`` nor ``positions``: every position but the last predicts the next token,
      ``-mean log p(tokens[b, t+1] | tokens[b, :t+1])`` (padding counts: prefer ``targets``);
    - ``targets (batch, pos)``: ``targets[b, t]`` is the token to predict after position ``t``;
      ``-100`` marks positions to skip (as :func:`labcore.data.coref.lm_tensors` makes them);
    - ``positions (batch,)``: one prediction per sequence, read at ``positions[b]`` (e.g.
      ``lengths - 1``, the ``=`` of "it ="), of ``targets (batch,)`` (e.g. the answer ids).

    Args:
        model: a :class:`labcore.transformer.GPT`; tokens: ``(batch, pos)``.
        fwd_hooks: hooks active during the forward passes (see :func:`splice_hooks`).
        batch_size: sequences per forward pass.

    Returns:
        A 0-d tensor: the mean over the counted predictions (exact across chunks).
    """
    tokens = _check_tokens(tokens)
    check_positive_int("batch_size", batch_size)
    batch, n_pos = tokens.shape
    if positions is not None:
        check_tensor("positions", positions, ndim=1)
        if positions.shape[0] != batch:
            raise ValueError(
                f"positions must have shape ({batch},), one position per sequence, "
                f"got {tuple(positions.shape)}"
            )
        if targets is None:
            raise ValueError("targets (batch,) must be given with positions, got None")
        check_tensor("targets", targets, ndim=1)
        if targets.shape[0] != batch:
            raise ValueError(f"targets must have shape ({batch},), got {tuple(targets.shape)}")
    elif targets is not None:
        check_tensor("targets", targets, ndim=2)
        if targets.shape != tokens.shape:
            raise ValueError(
                f"targets must have the shape of tokens {tuple(tokens.shape)} (or give positions), "
                f"got {tuple(targets.shape)}"
            )
    else:
        targets = F.pad(tokens[:, 1:], (0, 1), value=-100)  # (batch, pos): the next token
    fwd_hooks = list(fwd_hooks)
    total, count = None, 0
    with torch.no_grad():
        for start in range(0, batch, batch_size):
            chunk = slice(start, start + batch_size)
            logits = model.run_with_hooks(tokens[chunk], fwd_hooks=fwd_hooks)  # (b, pos, d_vocab)
            if positions is not None:
                rows = torch.arange(logits.shape[0], device=logits.device)
                logits = logits[rows, positions[chunk].to(logits.device)]  # (b, d_vocab)
            t = targets[chunk].to(logits.device)
            s = F.cross_entropy(
                logits.flatten(0, -2).float(), t.flatten(), ignore_index=-100, reduction="sum"
            )
            total = s if total is None else total + s
            count = count + (t != -100).sum()
    return total / count


def zero_ablated_loss(model: nn.Module, layer: int, tokens: Tensor, **kwargs: Any) -> Tensor:
    """:func:`next_token_loss` with the MLP of block ``layer`` replaced by zero.

    ``kwargs`` are those of :func:`next_token_loss` (``targets``, ``positions``, ``batch_size``).
    """
    layer = _check_layer(model, layer)
    hook = (_hook_names(layer)[1], lambda y, hook: torch.zeros_like(y))
    return next_token_loss(model, tokens, fwd_hooks=[hook], **kwargs)


def spliced_loss(
    model: nn.Module, transcoder: nn.Module, layer: int, tokens: Tensor, **kwargs: Any
) -> Tensor:
    """:func:`next_token_loss` with ``blocks.{layer}.hook_mlp_out`` replaced by the transcoder's
    output ``y_hat`` computed from ``blocks.{layer}.ln2.hook_normalized`` (:func:`splice_hooks`).

    ``kwargs`` are those of :func:`next_token_loss` (``targets``, ``positions``, ``batch_size``).
    """
    layer = _check_layer(model, layer)
    return next_token_loss(model, tokens, fwd_hooks=splice_hooks(transcoder, layer), **kwargs)


def ce_loss_recovered(
    original: float | Tensor, ablated: float | Tensor, spliced: float | Tensor
) -> float | Tensor:
    """Fraction of the loss gap that the transcoder recovers, ``(L_abl - L_spl) / (L_abl - L_orig)``.

    1 when splicing keeps the original loss, 0 when it is as bad as deleting the MLP; it can leave
    ``[0, 1]``. It means something only when ablating the MLP clearly hurts (``L_abl >> L_orig``).

    Raises:
        ValueError: when ``ablated == original`` (numbers), where the ratio is undefined.
    """
    for name, value in (("original", original), ("ablated", ablated), ("spliced", spliced)):
        if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
            raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    if not isinstance(ablated, Tensor) and not isinstance(original, Tensor) and ablated == original:
        raise ValueError(
            f"ablated must differ from original (got both {original}): if ablating the MLP does "
            "not change the loss, the recovered fraction is undefined"
        )
    return (ablated - spliced) / (ablated - original)


@torch.no_grad()
def evaluate_transcoder(
    model: nn.Module,
    transcoder: Transcoder,
    layer: int,
    tokens: Tensor,
    *,
    positions: Tensor | None = None,
    targets: Tensor | None = None,
    mask: Tensor | None = None,
    lengths: Tensor | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Every judgement of a transcoder on one set of sequences, as a dict of floats.

    ``fvu``, ``l0`` and ``dead_fraction`` over the kept tokens (``mask``/``lengths``, as in
    :func:`collect_mlp_io`); ``fvu_at_positions`` and ``l0_at_positions`` over the tokens at
    ``positions`` when given; ``loss_original``, ``loss_zero_ablated``, ``loss_spliced`` (from
    :func:`next_token_loss` with ``targets``/``positions``) and ``ce_loss_recovered``.
    """
    layer = _check_layer(model, layer)
    inputs, outputs = collect_mlp_io(
        model, tokens, layer, batch_size=batch_size, mask=mask, lengths=lengths
    )
    y_hat, f = transcoder(inputs)
    result = {
        "fvu": fvu(y_hat, outputs).item(),
        "l0": l0(f).item(),
        "dead_fraction": dead_fraction(f).item(),
    }
    if positions is not None:
        check_tensor("positions", positions, ndim=1)
        at = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
        at[torch.arange(tokens.shape[0], device=tokens.device), positions.to(tokens.device)] = True
        x_at, y_at = collect_mlp_io(model, tokens, layer, batch_size=batch_size, mask=at)
        y_hat_at, f_at = transcoder(x_at)
        result["fvu_at_positions"] = fvu(y_hat_at, y_at).item()
        result["l0_at_positions"] = l0(f_at).item()
    loss_kwargs = dict(targets=targets, positions=positions, batch_size=batch_size)
    original = next_token_loss(model, tokens, **loss_kwargs).item()
    ablated = zero_ablated_loss(model, layer, tokens, **loss_kwargs).item()
    spliced = spliced_loss(model, transcoder, layer, tokens, **loss_kwargs).item()
    result.update(
        loss_original=original,
        loss_zero_ablated=ablated,
        loss_spliced=spliced,
        ce_loss_recovered=float(ce_loss_recovered(original, ablated, spliced)),
    )
    return result


# --------------------------------------------------------------------------------------------------
# 6. The sparsity-fidelity trade-off
# --------------------------------------------------------------------------------------------------


def sweep_penalty(
    inputs: Tensor,
    targets: Tensor,
    d_hidden: int,
    l1_coeffs: Sequence[float],
    *,
    eval_inputs: Tensor | None = None,
    eval_targets: Tensor | None = None,
    **train_kwargs: Any,
) -> list[dict[str, float]]:
    """Train one transcoder per ``lambda`` in ``l1_coeffs``; measure FVU, L0 and dead features.

    Args:
        inputs, targets: training data ``(n, d_in)``, ``(n, d_out)``.
        d_hidden: number of features.
        l1_coeffs: the values of ``lambda``.
        eval_inputs, eval_targets: held-out tokens to measure on (default: the training tokens).
        train_kwargs: passed to :func:`train_transcoder` (``penalty``, ``steps``, ``lr``, ...).

    Returns:
        One dict per ``lambda``: ``l1_coeff``, ``fvu``, ``l0``, ``dead_fraction``, ``seconds``.
    """
    if isinstance(l1_coeffs, (str, bytes)) or not isinstance(l1_coeffs, Sequence) or not l1_coeffs:
        raise ValueError(f"l1_coeffs must be a non-empty sequence of numbers, got {l1_coeffs!r}")
    if (eval_inputs is None) != (eval_targets is None):
        raise ValueError("give both eval_inputs and eval_targets, or neither")
    if eval_inputs is None:
        eval_inputs, eval_targets = inputs, targets
    eval_inputs, eval_targets = _check_io(eval_inputs, eval_targets)
    rows = []
    for coeff in l1_coeffs:  # one training run per lambda
        transcoder, history = train_transcoder(
            inputs, targets, d_hidden, l1_coeff=coeff, **train_kwargs
        )
        with torch.no_grad():
            y_hat, f = transcoder(eval_inputs)
        rows.append(
            {
                "l1_coeff": float(coeff),
                "fvu": fvu(y_hat, eval_targets).item(),
                "l0": l0(f).item(),
                "dead_fraction": dead_fraction(f).item(),
                "seconds": history.seconds,
            }
        )
    return rows


def l0_at_fvu(curve: Sequence[dict[str, float]], target_fvu: float) -> float:
    """L0 at a given FVU on a sparsity-fidelity curve, interpolating ``log L0`` linearly in FVU.

    Args:
        curve: rows with ``"fvu"`` and ``"l0"`` (from :func:`sweep_penalty`).
        target_fvu: the fidelity at which to compare (e.g. 0.1).

    Returns:
        The interpolated L0, or ``nan`` when ``target_fvu`` is outside the curve's FVU range.
    """
    if not curve:
        raise ValueError("curve must hold at least one row")
    points = sorted((row["fvu"], row["l0"]) for row in curve)
    for (f0, a0), (f1, a1) in pairwise(points):  # a few points: plain Python
        if f0 <= target_fvu <= f1:
            if f1 == f0:
                return min(a0, a1)
            t = (target_fvu - f0) / (f1 - f0)
            return math.exp((1 - t) * math.log(max(a0, 1e-9)) + t * math.log(max(a1, 1e-9)))
    if len(points) == 1 and points[0][0] == target_fvu:
        return points[0][1]
    return math.nan


# --------------------------------------------------------------------------------------------------
# 7. Reading features
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def feature_activations(
    model: nn.Module,
    transcoder: Transcoder,
    layer: int,
    tokens: Tensor,
    *,
    batch_size: int = 256,
) -> Tensor:
    """The transcoder's features at every token: ``tokens (batch, pos) -> (batch, pos, d_hidden)``."""
    inputs, _ = collect_mlp_io(model, tokens, layer, batch_size=batch_size)  # (batch*pos, d_model)
    return transcoder.encode(inputs).reshape(*tokens.shape, -1)


@dataclass
class ActivatingExample:
    """One token on which a feature fires.

    Attributes:
        activation: the feature's value there; batch, position: where.
        context: the text up to and including the token, the token in ``[[ ]]`` (token ids when
            no tokenizer was given).
    """

    activation: float
    batch: int
    position: int
    context: str


def top_activating_examples(
    features: Tensor,
    tokens: Tensor,
    feature: int,
    k: int = 10,
    *,
    tokenizer: Any = None,
    window: int = 12,
    distinct: bool = True,
) -> list[ActivatingExample]:
    """The ``k`` tokens on which ``feature`` is largest, with their preceding context.

    Args:
        features: ``(batch, pos, d_hidden)`` (from :func:`feature_activations`).
        tokens: ``(batch, pos)`` the token ids the features were computed on.
        feature: which feature, ``0 <= feature < d_hidden``.
        k: how many examples (fewer when fewer tokens exist); only tokens where it fires count.
        tokenizer: anything with ``decode(list[int]) -> str``, to show text.
        window: tokens of context shown, the activating one included.
        distinct: keep only the first (largest) example of each context text. Templated data
            repeat short contexts ("<bos> in the [[kitchen]]" starts many prompts, with the same
            activation each time); without this, one context can fill the whole list.

    Returns:
        A list of :class:`ActivatingExample`, largest activation first.
    """
    check_tensor("features", features, ndim=3)
    check_tensor("tokens", tokens, ndim=2)
    if features.shape[:2] != tokens.shape:
        raise ValueError(
            f"features must have shape (batch, pos, d_hidden) matching tokens "
            f"{tuple(tokens.shape)}, got {tuple(features.shape)}"
        )
    check_positive_int("feature", feature, allow_zero=True)
    if feature >= features.shape[-1]:
        raise ValueError(f"feature must be < d_hidden={features.shape[-1]}, got {feature}")
    check_positive_int("k", k)
    check_positive_int("window", window)
    values = features[..., feature].flatten()  # (batch * pos,)
    n_active = int((values > 0).sum())
    order = values.topk(n_active if distinct else min(k, n_active))  # largest first
    examples: list[ActivatingExample] = []
    seen: set[str] = set()
    for value, flat in zip(order.values.tolist(), order.indices.tolist(), strict=True):
        if len(examples) == k:  # stops after k (distinct) examples: a loop over what is shown
            break
        b, p = divmod(flat, tokens.shape[1])
        ids = tokens[b, max(0, p - window + 1) : p + 1].tolist()
        if tokenizer is None:
            context = f"{ids[:-1]} [[{ids[-1]}]]"
        else:
            context = f"{tokenizer.decode(ids[:-1])} [[{tokenizer.decode(ids[-1:])}]]"
        context = context.strip()
        if distinct and context in seen:
            continue
        seen.add(context)
        examples.append(ActivatingExample(value, b, p, context))
    return examples


def feature_logit_effects(model: nn.Module, transcoder: Transcoder, feature: int) -> Tensor:
    """The direct effect of one feature on the logits: its decoder row through the unembedding.

    Feature ``i`` adds ``f_i W_dec[i]`` to the residual stream. Along the *direct path* (ignoring
    the later blocks) it reaches the logits through ``ln_final`` and ``W_U``. ``ln_final`` centres
    its input, divides by a per-token scale ``sigma`` and multiplies by the gain ``gamma``; treating
    ``sigma`` as a constant (the usual linear approximation), the logits change by
    ``(f_i / sigma) * ((W_dec[i] - mean(W_dec[i])) * gamma) W_U``. This function returns that
    vector without the ``f_i / sigma`` factor, so compare entries within one feature (which tokens
    it promotes or suppresses), not magnitudes across models.

    Returns:
        ``(d_vocab,)``, on the transcoder's device.
    """
    check_positive_int("feature", feature, allow_zero=True)
    if feature >= transcoder.d_hidden:
        raise ValueError(f"feature must be < d_hidden={transcoder.d_hidden}, got {feature}")
    direction = transcoder.W_dec[feature].detach()  # (d_model,)
    direction = (direction - direction.mean()) * model.ln_final.weight.detach()
    return direction @ model.W_U.detach()  # (d_vocab,)


def feature_connections(
    upstream: Transcoder, downstream: Transcoder, ln_weight: Tensor | None = None
) -> Tensor:
    """Input-invariant connections from the features of an earlier layer to those of a later one.

    Upstream feature ``i`` writes ``W_dec_up[i]`` into the residual stream; downstream feature ``j``
    reads ``W_enc_down[:, j]`` from ``LN2`` of its block. Treating that LayerNorm as linear (centre,
    divide by the token's scale ``sigma``, multiply by the gain ``ln_weight``) and ignoring
    attention in between, feature ``j``'s pre-activation moves by ``C_ij / sigma`` per unit of
    ``f_i``, with ``C = ((W_dec_up - mean) * gamma) W_enc_down`` (Dunefsky et al., 2024, sec. 4).
    This function returns ``C``, the input-invariant part: ``sigma`` is one positive number per
    token, the same for every pair ``(i, j)``, so it rescales a token's connections without
    reordering them; divide by it to compare with gradients on a given token.

    Args:
        upstream, downstream: transcoders of layers ``l < l'`` (``d_out`` of the first =
            ``d_in`` of the second).
        ln_weight: ``(d_model,)``, the gain of block ``l'``'s ``ln2`` (``None``: no gain, no
            centring).

    Returns:
        ``(d_hidden_up, d_hidden_down)``.
    """
    if upstream.d_out != downstream.d_in:
        raise ValueError(
            f"upstream.d_out ({upstream.d_out}) must equal downstream.d_in ({downstream.d_in})"
        )
    w_dec = upstream.W_dec.detach()  # (d_hidden_up, d_model)
    if ln_weight is not None:
        check_tensor("ln_weight", ln_weight, ndim=1, shape=(upstream.d_out,), floating=True)
        w_dec = (w_dec - w_dec.mean(-1, keepdim=True)) * ln_weight.detach()
    return w_dec @ downstream.W_enc.detach()  # (d_hidden_up, d_hidden_down)


@dataclass
class AttributionGraph:
    """Activation-times-gradient attributions between transcoder features on one prompt.

    Attributes:
        position: the position whose prediction the metric reads.
        metric: the metric's value (e.g. a logit difference) on the prompt.
        activations: ``layer -> (pos, d_hidden)`` the features of each spliced layer.
        to_metric: ``layer -> (pos, d_hidden)``: ``f_i * d metric / d f_i`` along paths that do not
            go through the features of later spliced layers (those are nodes of their own).
        targets: ``layer -> (k,)`` the later-layer features at ``position`` that edges point to.
        edges: ``(l, l') -> (pos, d_hidden_l, k)``: ``f_i * d z_j / d f_i`` from feature ``i`` of
            layer ``l`` (any position) to the pre-activation ``z_j`` of target ``j`` of layer
            ``l'`` at ``position``, along paths that avoid the features of layers in between.
    """

    position: int
    metric: float
    activations: dict[int, Tensor]
    to_metric: dict[int, Tensor]
    targets: dict[int, Tensor]
    edges: dict[tuple[int, int], Tensor]


def attribution_graph(
    model: nn.Module,
    transcoders: dict[int, Transcoder],
    tokens: Tensor,
    metric: Callable[[Tensor], Tensor],
    position: int,
    *,
    k: int = 8,
) -> AttributionGraph:
    """A minimal attribution graph over transcoder features for one prompt.

    Every MLP of a layer in ``transcoders`` is replaced by its transcoder plus a frozen error
    term, ``MLP(x) -> decode(f(x)) + e`` with ``e = MLP(x) - decode(f(x))`` computed on this prompt
    and held constant: the *replacement model* gives exactly the original logits, and is linear in
    each layer's features ``f``. Attention patterns and LayerNorm scales stay live, so the
    attributions are input-dependent, in contrast with :func:`feature_connections`. Each layer's
    features are made leaves of the autograd graph, so that an attribution ``f_i * dY / df_i`` counts
    only the paths that avoid the features of the other spliced layers; the graph's nodes are the
    features, its edges these products (a simplified version of the attribution graphs of Ameisen,
    Lindsey, Pearce et al., 2025, who also freeze attention and normalisation to make the graph
    exactly linear).

    Args:
        model: a :class:`labcore.transformer.GPT`.
        transcoders: ``layer -> Transcoder`` for one or more MLP layers.
        tokens: ``(1, pos)`` one prompt.
        metric: ``logits (1, pos, d_vocab) -> 0-d tensor``, e.g. a logit difference at ``position``.
        position: where the target features of later layers are read (``0 <= position < pos``).
        k: the number of most active features of each later layer at ``position`` used as targets.

    Returns:
        An :class:`AttributionGraph`.
    """
    check_tensor("tokens", tokens, ndim=2)
    if tokens.shape[0] != 1:
        raise ValueError(f"tokens must hold one prompt, shape (1, pos), got {tuple(tokens.shape)}")
    if not transcoders:
        raise ValueError("transcoders must map at least one layer to a Transcoder, got none")
    layers = sorted(_check_layer(model, layer) for layer in transcoders)
    check_positive_int("position", position, allow_zero=True)
    if position >= tokens.shape[1]:
        raise ValueError(f"position must be < pos={tokens.shape[1]}, got {position}")
    check_positive_int("k", k)
    leaves: dict[int, Tensor] = {}
    pre: dict[int, Tensor] = {}
    hooks: list[tuple[str, HookFn]] = []
    for layer in layers:
        transcoder = transcoders[layer]
        in_name, out_name = _hook_names(layer)
        stored: dict[str, Tensor] = {}

        def save_input(x: Tensor, hook: Any, stored: dict[str, Tensor] = stored) -> None:
            stored["x"] = x

        def replace(
            y: Tensor,
            hook: Any,
            layer: int = layer,
            transcoder: Transcoder = transcoder,
            stored: dict[str, Tensor] = stored,
        ) -> Tensor:
            z = stored.pop("x") @ transcoder.W_enc + transcoder.b_enc  # (1, pos, d_hidden)
            f = transcoder.activate(z)
            pre[layer] = z
            leaves[layer] = f.detach().requires_grad_(True)
            error = (y - transcoder.decode(f)).detach()
            return transcoder.decode(leaves[layer]) + error

        hooks += [(in_name, save_input), (out_name, replace)]
    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
        value = metric(logits)
        if not isinstance(value, Tensor) or value.ndim != 0:
            raise ValueError("metric must return a 0-d tensor (one number)")
        grads = torch.autograd.grad(value, [leaves[layer] for layer in layers], retain_graph=True)
        to_metric = {
            layer: (leaves[layer] * g)[0].detach() for layer, g in zip(layers, grads, strict=True)
        }
        targets: dict[int, Tensor] = {}
        edges: dict[tuple[int, int], Tensor] = {}
        for later in layers[1:]:
            active = leaves[later][0, position]  # (d_hidden,)
            top = active.topk(min(k, active.numel())).indices
            targets[later] = top
            earlier = [layer for layer in layers if layer < later]
            rows = [
                torch.autograd.grad(
                    pre[later][0, position, j],
                    [leaves[e] for e in earlier],
                    retain_graph=True,
                    allow_unused=True,
                )
                for j in top.tolist()
            ]  # k backward passes, one per target feature
            for index, layer in enumerate(earlier):
                per_target = [
                    torch.zeros_like(leaves[layer]) if row[index] is None else row[index]
                    for row in rows
                ]
                edges[(layer, later)] = torch.stack(
                    [(leaves[layer] * g)[0].detach() for g in per_target], dim=-1
                )  # (pos, d_hidden_layer, k)
    return AttributionGraph(
        position=position,
        metric=value.item(),
        activations={layer: leaves[layer][0].detach() for layer in layers},
        to_metric=to_metric,
        targets=targets,
        edges=edges,
    )


def plot_feature_dashboard(
    feature: int,
    activations: Tensor,
    logit_effects: Tensor,
    *,
    tokenizer: Any = None,
    examples: Sequence[ActivatingExample] = (),
    n_tokens: int = 8,
    bins: int = 40,
) -> Any:
    """A one-figure summary of a feature: its activation histogram, the tokens it promotes and
    suppresses (direct logit effects), and its top-activating contexts.

    Args:
        feature: the feature's index (for the title).
        activations: the feature's values on many tokens, any shape (only nonzero ones plotted).
        logit_effects: ``(d_vocab,)`` from :func:`feature_logit_effects`.
        tokenizer: anything with ``decode(list[int])`` to label tokens (else ids).
        examples: from :func:`top_activating_examples` (shown as text).
        n_tokens: how many most promoted and most suppressed tokens to show.
        bins: histogram bins.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    check_tensor("logit_effects", logit_effects, ndim=1)
    check_positive_int("n_tokens", n_tokens)
    values = activations.detach().flatten().float().cpu()
    values = values[values != 0]
    effects = logit_effects.detach().float().cpu()
    n_tokens = min(n_tokens, effects.numel() // 2 or 1)
    order = effects.argsort()
    picked = torch.cat([order[:n_tokens], order[-n_tokens:]]).tolist()  # suppressed, promoted
    labels = [tokenizer.decode([i]) if tokenizer is not None else str(i) for i in picked]

    fig = plt.figure(figsize=(11, 3.6 + 0.25 * len(examples)), layout="constrained")
    grid = fig.add_gridspec(2 if examples else 1, 2, height_ratios=[3, 1] if examples else [1])
    ax_hist, ax_logit = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_hist.hist(values.numpy(), bins=bins, color="tab:blue")
    density = values.numel() / max(activations.numel(), 1)
    ax_hist.set(
        title=f"feature {feature}: nonzero activations ({100 * density:.2f}% of tokens)",
        xlabel="activation",
        ylabel="tokens",
    )
    colors = ["tab:red"] * n_tokens + ["tab:green"] * n_tokens
    ax_logit.barh(range(len(picked)), effects[picked].numpy(), color=colors)
    ax_logit.set_yticks(range(len(picked)), labels)
    ax_logit.set(
        title="direct logit effect (decoder row through W_U)",
        xlabel="logit change per unit",
    )
    if examples:
        ax_text = fig.add_subplot(grid[1, :])
        ax_text.axis("off")
        lines = [f"{e.activation:7.2f}  {e.context}" for e in examples]
        ax_text.text(
            0, 1, "top activations\n" + "\n".join(lines), va="top", family="monospace", fontsize=8
        )
    return fig


# --------------------------------------------------------------------------------------------------
# 8. The shipped transcoders of the tiny model
# --------------------------------------------------------------------------------------------------

#: How the shipped transcoders of ``tiny-coref`` are trained, per layer.
TINY_RECIPES: dict[int, dict[str, Any]] = {
    layer: {
        "model": "tiny-coref",
        "layer": layer,
        "split_seed": 0,
        "data_seed": 200,  # not a seed the model was trained on
        "n_sentences": 20_000,
        "d_hidden": 512,
        "activation": "relu",
        "penalty": "l1",
        "l1_coeff": 2.0,
        "l1_warmup_steps": 1000,
        "steps": 4000,
        "lr": 1e-3,
        "batch_size": 512,
        "seed": 0,
        "eval_seed": 1,
        "n_eval": 1000,
    }
    for layer in (0, 1)
}

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def tiny_coref_data(
    n_sentences: int, *, seed: int, split_seed: int = 0, tokenizer: Any = None
) -> tuple[Tensor, Tensor]:
    """Full training sentences of the coref corpus (training noun pairs), as ``(tokens, lengths)``.

    ``tokens (n_sentences, pos)`` right-padded ``<bos> clause it = answer``; ``lengths (n_sentences,)``.
    """
    from labcore.data.coref import coref_examples, coref_tokenizer, split_pairs

    tokenizer = tokenizer or coref_tokenizer()
    train_pairs, _ = split_pairs(split_seed)
    examples = coref_examples(n_sentences, train_pairs, seed=seed)
    return tokenizer.encode_batch([e.full for e in examples])


def _environment() -> dict[str, str]:
    """Where a shipped result was made: torch and Python versions, the machine's architecture."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def _tiny_data(recipe: dict[str, Any]) -> tuple[nn.Module, Tensor, Tensor, Any, float]:
    """What a recipe of :data:`TINY_RECIPES` trains and evaluates on.

    Returns:
        ``(model, inputs, targets, eval_set, collect_seconds)``: the model; the MLP's inputs and
        outputs at block ``recipe["layer"]`` on every real token of the training sentences; the
        held-out prompts of :func:`labcore.data.coref.evaluation_set`; and the seconds taken to
        make and collect the training data.
    """
    from labcore.data.coref import evaluation_set
    from labcore.models import load

    model, tokenizer = load(recipe["model"])
    start = time.perf_counter()
    tokens, lengths = tiny_coref_data(
        recipe["n_sentences"],
        seed=recipe["data_seed"],
        split_seed=recipe["split_seed"],
        tokenizer=tokenizer,
    )
    inputs, targets = collect_mlp_io(model, tokens, recipe["layer"], lengths=lengths)
    collect_seconds = time.perf_counter() - start
    eval_set = evaluation_set(
        "held_out",
        recipe["n_eval"],
        seed=recipe["eval_seed"],
        split_seed=recipe["split_seed"],
        tokenizer=tokenizer,
    )
    return model, inputs, targets, eval_set, collect_seconds


def train_tiny_transcoder(
    layer: int = 1, *, recipe: dict[str, Any] | None = None, progress: bool = True
) -> tuple[Transcoder, dict[str, Any]]:
    """Train a transcoder for an MLP of ``tiny-coref`` and measure it; one CPU thread.

    Collects the MLP's inputs and outputs on ``n_sentences`` full sentences of training noun pairs
    (every real token), trains with ``recipe`` (default ``TINY_RECIPES[layer]``), then evaluates on
    the held-out prompts of :func:`labcore.data.coref.evaluation_set`: FVU, L0 and dead features over
    all their tokens, and the loss on the answer after "it =" (original, MLP zero-ablated,
    transcoder spliced, CE loss recovered).

    Returns:
        ``(transcoder, record)`` with the recipe, the metrics and the timings (JSON-serialisable).
    """
    recipe = dict(
        TINY_RECIPES[check_in("layer", layer, list(TINY_RECIPES))] if recipe is None else recipe
    )
    with one_thread():
        model, inputs, targets, eval_set, collect_seconds = _tiny_data(recipe)
        transcoder, history = train_transcoder(
            inputs,
            targets,
            recipe["d_hidden"],
            l1_coeff=recipe["l1_coeff"],
            steps=recipe["steps"],
            l1_warmup_steps=recipe["l1_warmup_steps"],
            lr=recipe["lr"],
            batch_size=recipe["batch_size"],
            penalty=recipe["penalty"],
            activation=recipe["activation"],
            seed=recipe["seed"],
            progress=progress,
        )
        metrics = evaluate_transcoder(
            model,
            transcoder,
            recipe["layer"],
            eval_set.tokens,
            positions=eval_set.lengths - 1,
            targets=eval_set.answer,
            lengths=eval_set.lengths,
        )
        with torch.no_grad():
            metrics["train_dead_fraction"] = dead_fraction(transcoder.encode(inputs)).item()
    record = {
        "recipe": recipe,
        "metrics": {key: round(value, 5) for key, value in metrics.items()},
        "n_train_tokens": int(inputs.shape[0]),
        "collect_seconds": round(collect_seconds, 2),
        "training_seconds": round(history.seconds, 2),
        "tokens_per_second": round(history.tokens_per_second),
        "environment": _environment(),
    }
    return transcoder, record


MODEL_CARD = """# tiny-coref transcoder, layer {layer}

A {activation} transcoder (`labcore.transcoder.Transcoder`) with d_hidden = {d_hidden} features
that imitates the MLP of block {layer} of `tiny-coref`: input `blocks.{layer}.ln2.hook_normalized`,
output `blocks.{layer}.hook_mlp_out` (d_model = 64). Load it with
`transcoder, record = labcore.transcoder.load_tiny_transcoder({layer})`.

## Metrics
On the {n_eval} held-out prompts of `evaluation_set("held_out", {n_eval}, seed={eval_seed})`
(noun pairs never seen in training); losses are the cross-entropy of the answer after `it =`.

| FVU (all tokens) | mean L0 | dead features | FVU at `=` | L0 at `=` |
|---|---|---|---|---|
| {fvu:.4f} | {l0:.2f} | {dead_fraction:.3f} | {fvu_at_positions:.4f} | {l0_at_positions:.2f} |

| loss: original | MLP zero-ablated | transcoder spliced | CE loss recovered |
|---|---|---|---|
| {loss_original:.4f} | {loss_zero_ablated:.4f} | {loss_spliced:.4f} | {ce_loss_recovered:.4f} |

## Recipe
- Command: `python -m labcore.transcoder train-tiny --layer {layer}` (writes this file, the
  weights and the json).
- Data: the MLP's inputs and outputs at every real token of {n_sentences:,} full sentences
  (`coref_examples(..., seed={data_seed})`, training noun pairs of `split_pairs({split_seed})`):
  {n_train_tokens:,} tokens, collected in {collect_seconds} s.
- Loss: mean over the batch of ||y - y_hat||^2 + {l1_coeff} * sum_i |f_i| ({penalty}), decoder
  rows renormalised to unit norm after every step; b_dec starts at the mean output; lambda ramps
  up linearly over the first {l1_warmup_steps} steps.
- Adam, lr {lr}, batch size {batch_size} tokens, {steps} steps, seed {seed}: {training_seconds} s
  on one CPU thread ({tokens_per_second:,} tokens/s) on {machine} (torch {torch}).
"""


def _write_tiny(transcoder: Transcoder, record: dict[str, Any], out_dir: Path) -> list[Path]:
    recipe = record["recipe"]
    name = f"tiny-coref-transcoder-l{recipe['layer']}"
    weights, json_path = transcoder.save(out_dir / name, metadata=record)
    card = MODEL_CARD.format(
        **recipe,
        **record["metrics"],
        **record["environment"],
        n_train_tokens=record["n_train_tokens"],
        collect_seconds=record["collect_seconds"],
        training_seconds=record["training_seconds"],
        tokens_per_second=record["tokens_per_second"],
    )
    card_path = out_dir / f"{name}.md"
    card_path.write_text(card)
    return [weights, json_path, card_path]


def load_tiny_transcoder(
    layer: int = 1, *, device: torch.device | str | None = None
) -> tuple[Transcoder, dict[str, Any]]:
    """The shipped transcoder of ``tiny-coref``'s MLP ``layer`` and its record (recipe, metrics).

    Made by ``python -m labcore.transcoder train-tiny --layer {layer}``; no download.
    """
    check_in("layer", layer, list(TINY_RECIPES))
    name = f"tiny-coref-transcoder-l{layer}"
    files = resources.files("labcore").joinpath("weights", f"{name}.safetensors")
    with resources.as_file(files) as path:
        return Transcoder.load(path, device=device)


#: The penalty sweep behind chapter 5's sparsity-fidelity curve (see :func:`sweep_tiny`).
TINY_SWEEP: dict[str, Any] = {
    "layer": 1,
    "d_hidden": 512,
    "grids": {"l1": [0.3, 1.0, 2.0, 3.0, 10.0], "l2": [0.3, 1.0, 3.0, 10.0, 30.0]},
    "steps": 2000,
    "lr": 1e-3,
    "batch_size": 512,
    "seed": 0,
}


def sweep_tiny(sweep: dict[str, Any] | None = None, *, progress: bool = True) -> dict[str, Any]:
    """The sparsity-fidelity curves of ``tiny-coref``'s MLP ``layer`` for the L1 and L2 penalties.

    Trains one transcoder per ``(penalty, lambda)`` of ``sweep["grids"]`` on the data of the shipped
    transcoder's recipe (:data:`TINY_RECIPES`), with ``steps`` steps each on one CPU thread, and
    measures FVU, L0 and dead features on every real token of the held-out evaluation prompts.

    Returns:
        ``{"sweep": ..., "curves": {"l1": rows, "l2": rows}, "environment": ...}`` with the rows
        of :func:`sweep_penalty`; JSON-serialisable.
    """
    sweep = dict(TINY_SWEEP if sweep is None else sweep)
    recipe = TINY_RECIPES[check_in("layer", sweep["layer"], list(TINY_RECIPES))]
    with one_thread():
        model, inputs, targets, eval_set, _ = _tiny_data(recipe)
        x_eval, y_eval = collect_mlp_io(
            model, eval_set.tokens, sweep["layer"], lengths=eval_set.lengths
        )
        curves = {
            name: sweep_penalty(
                inputs,
                targets,
                sweep["d_hidden"],
                grid,
                eval_inputs=x_eval,
                eval_targets=y_eval,
                penalty=name,
                steps=sweep["steps"],
                lr=sweep["lr"],
                batch_size=sweep["batch_size"],
                seed=sweep["seed"],
                progress=progress,
            )
            for name, grid in sweep["grids"].items()
        }
    rounded = {
        name: [{key: round(value, 5) for key, value in row.items()} for row in rows]
        for name, rows in curves.items()
    }
    return {
        "sweep": sweep,
        "curves": rounded,
        "environment": _environment(),
    }


def load_tiny_sweep() -> dict[str, Any]:
    """The shipped result of :func:`sweep_tiny` (``python -m labcore.transcoder sweep-tiny``)."""
    files = resources.files("labcore").joinpath("weights", "tiny-coref-transcoder-sweep.json")
    return json.loads(files.read_text())


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m labcore.transcoder train-tiny [--layer L] [--out DIR]`` or
    ``python -m labcore.transcoder sweep-tiny [--out DIR]`` (the curve of chapter 5)."""
    parser = argparse.ArgumentParser(description="Train the transcoders that labcore ships.")
    parser.add_argument("command", choices=["train-tiny", "sweep-tiny"])
    parser.add_argument("--layer", type=int, default=1, choices=sorted(TINY_RECIPES))
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    args = parser.parse_args(argv)
    if args.command == "sweep-tiny":
        result = sweep_tiny()
        path = args.out / "tiny-coref-transcoder-sweep.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
        print(json.dumps(result["curves"], indent=2))
        return
    recipe = dict(TINY_RECIPES[args.layer])
    if args.steps is not None:
        recipe["steps"] = args.steps
    transcoder, record = train_tiny_transcoder(args.layer, recipe=recipe)
    for path in _write_tiny(transcoder, record, args.out):
        print(f"wrote {path}")
    print(json.dumps(record["metrics"], indent=2))


if __name__ == "__main__":
    main()
