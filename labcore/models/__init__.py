"""Tiny trained models shipped with labcore, for labs that run offline.

``load(name)`` returns a trained :class:`labcore.transformer.GPT` and its tokenizer from the package
data in ``labcore/weights/`` (``<name>.safetensors``, ``<name>.json`` with the config, the tokenizer's
vocabulary, the training recipe and the held-out metrics, and ``<name>.md``, the model card). Each
model is made by ``python -m labcore.models.train <name>`` (see :mod:`labcore.models.train`).

Models:

- ``tiny-coref``: a 2-layer GPT that resolves the pronoun "it" to one of two nouns in the synthetic
  corpus of :mod:`labcore.data.coref` ("the cat chased the ball because it was hungry . it = cat").
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import torch

from labcore.transformer import GPT

__all__ = ["MODELS", "load", "model_record"]

#: name -> one-line description of each shipped model
MODELS: dict[str, str] = {
    "tiny-coref": "2-layer GPT resolving 'it' in labcore.data.coref sentences (word tokenizer)",
}


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"name must be one of {sorted(MODELS)}, got {name!r}")
    return name


def model_record(name: str) -> dict[str, Any]:
    """The json record shipped with model ``name``: config, tokenizer, recipe and metrics."""
    _check_name(name)
    text = resources.files("labcore").joinpath("weights", f"{name}.json").read_text()
    return json.loads(text)


def load(name: str, *, device: torch.device | str | None = None) -> tuple[GPT, Any]:
    """Load a shipped model and its tokenizer.

    Args:
        name: one of ``MODELS`` (``"tiny-coref"``).
        device: where to put the model (default: the CPU, where safetensors loads it).

    Returns:
        ``(model, tokenizer)``: a :class:`GPT` in eval mode, with hook points, and the tokenizer
        (for ``tiny-coref``, a :class:`labcore.data.coref.WordTokenizer`).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    _check_name(name)
    record = model_record(name)
    tokenizer_spec = record.get("tokenizer", {})
    if tokenizer_spec.get("type") == "word":
        from labcore.data.coref import WordTokenizer

        tokenizer = WordTokenizer.from_dict(tokenizer_spec)
    else:  # pragma: no cover - every shipped model has a word tokenizer today
        raise ValueError(
            f"model {name!r} has an unknown tokenizer type {tokenizer_spec.get('type')}"
        )
    weights = resources.files("labcore").joinpath("weights", f"{name}.safetensors")
    with resources.as_file(weights) as path:
        model = GPT.load(path, device=device)
    return model, tokenizer
