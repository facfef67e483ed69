"""Train the tiny models that labcore ships, deterministically, on the CPU.

Run from the repository root (writes ``labcore/weights/<name>.{safetensors,json,md}``)::

    python -m labcore.models.train tiny-coref

``tiny-coref`` is a 2-layer GPT (:class:`labcore.transformer.GPT`) trained with the full
next-token loss on the pronoun-resolution corpus of :mod:`labcore.data.coref`. Every sentence is
``<bos> clause it = answer``; the loss is the mean cross-entropy of every next token of the
sentence (padding ignored). Most tokens are unpredictable (which noun, which verb), so the loss
stays well above zero, but the answer after ``it =`` is determined by the sentence, and the held-out
pronoun-resolution accuracy (answer logit > distractor logit, on noun pairs never seen together in
training) is what the recipe is judged by. Training uses ``labcore.mlp.train`` (AdamW, shuffled
mini-batches seeded by the recipe), one CPU thread and ``torch.use_deterministic_algorithms`` so
that the same command gives the same weights on the same platform.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import labcore
from labcore.data.coref import (
    coref_accuracy,
    coref_examples,
    coref_tokenizer,
    evaluation_set,
    lm_tensors,
    split_pairs,
)
from labcore.mlp import train
from labcore.transformer import GPT, GPTConfig
from labcore.validation import check_in

__all__ = ["RECIPES", "WEIGHTS_DIR", "train_tiny_coref", "main"]

WEIGHTS_DIR = Path(labcore.__file__).resolve().parent / "weights"

RECIPES: dict[str, dict[str, Any]] = {
    "tiny-coref": {
        "model": {"n_ctx": 24, "d_model": 64, "n_layer": 2, "n_head": 4},
        "seed": 0,  # initialisation and shuffling
        "split_seed": 0,  # which noun pairs are held out
        "data_seed": 100,  # the training sentences
        "n_train": 40_000,
        "loss": "full next-token cross-entropy (padding ignored)",
        "optimizer": "adamw",
        "lr": 3e-3,
        "weight_decay": 0.01,
        "batch_size": 64,
        "steps": 3000,
        "eval_seed": 1,  # the held-out evaluation sentences
        "n_eval": 2000,
    },
}


@contextmanager
def deterministic(threads: int = 1) -> Iterator[None]:
    """Single-threaded, deterministic torch for the duration of the block (restored after)."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; ``logits (batch, pos, d_vocab)``, ``targets (batch, pos)``.

    Targets equal to ``-100`` (padding) are ignored.
    """
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def train_tiny_coref(
    recipe: dict[str, Any] | None = None, *, progress: bool = True
) -> tuple[GPT, dict[str, Any]]:
    """Train ``tiny-coref`` from ``recipe`` (default ``RECIPES["tiny-coref"]``).

    Returns:
        ``(model, record)``: the trained :class:`GPT` (eval mode, CPU) and a JSON-serialisable
        record with the recipe, the tokenizer, the metrics and the training time.
    """
    recipe = dict(RECIPES["tiny-coref"] if recipe is None else recipe)
    tokenizer = coref_tokenizer()
    with deterministic():
        labcore.seed_everything(recipe["seed"])
        config = GPTConfig(vocab_size=tokenizer.vocab_size, **recipe["model"])
        model = GPT(config)
        train_pairs, _ = split_pairs(recipe["split_seed"])
        examples = coref_examples(recipe["n_train"], train_pairs, seed=recipe["data_seed"])
        inputs, targets = lm_tensors(examples, tokenizer)  # (n_train, pos) each
        start = time.perf_counter()
        history = train(
            model,
            (inputs, targets),
            loss=lm_loss,
            steps=recipe["steps"],
            lr=recipe["lr"],
            batch_size=recipe["batch_size"],
            optimizer=recipe["optimizer"],
            weight_decay=recipe["weight_decay"],
            seed=recipe["seed"],
            progress=progress,
        )
        seconds = time.perf_counter() - start
        metrics = {}
        for split in ("held_out", "train"):
            eval_set = evaluation_set(
                split,
                recipe["n_eval"],
                seed=recipe["eval_seed"],
                split_seed=recipe["split_seed"],
                tokenizer=tokenizer,
            )
            metrics[split] = coref_accuracy(model, eval_set)
    final_loss = sum(history.train_loss[-100:]) / len(history.train_loss[-100:])
    record = {
        "tokenizer": tokenizer.to_dict(),
        "recipe": recipe,
        "metrics": metrics,
        "final_train_loss": round(final_loss, 4),
        "training_seconds": round(seconds, 1),
        "n_parameters": model.num_parameters(),
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    }
    return model.eval(), record


MODEL_CARD = """# tiny-coref

A GPT-2-architecture model (`labcore.transformer.GPT`) trained to resolve the pronoun "it" in the
synthetic corpus of `labcore.data.coref`: {n_layer} layers, {n_head} heads, d_model = {d_model},
d_mlp = {d_mlp}, n_ctx = {n_ctx}, vocabulary of {vocab_size} words, {n_parameters:,} parameters.

    the cat chased the ball because it was hungry . it = cat

Load it with `model, tokenizer = labcore.models.load("tiny-coref")`.

## Held-out metrics
Evaluated on {n_eval} sentences built from (animal, object) noun pairs that never occur together
in training, reading the prediction after `it =`
(`labcore.data.coref.evaluation_set("held_out", {n_eval}, seed={eval_seed})`):

| split | accuracy (answer > distractor) | argmax accuracy (whole vocabulary) | mean logit diff |
|---|---|---|---|
| held-out pairs | {ho_acc:.4f} | {ho_arg:.4f} | {ho_diff:.2f} |
| training pairs, new sentences | {tr_acc:.4f} | {tr_arg:.4f} | {tr_diff:.2f} |

## Recipe
- Command: `python -m labcore.models.train tiny-coref` (writes this file, the weights and the json).
- Data: {n_train:,} sentences (`coref_examples(..., seed={data_seed})`) from the training pairs of
  `split_pairs(seed={split_seed})` ({n_pairs_train} pairs; {n_pairs_held} pairs held out).
- Loss: {loss}: every token after `<bos>`,
  the answer included.
- Optimiser: {optimizer}, lr {lr}, weight decay {weight_decay}, batch size {batch_size}, {steps} steps
  (`labcore.mlp.train`), GPT-2 initialisation (std 0.02), seed {seed}.
- Determinism: one CPU thread and `torch.use_deterministic_algorithms(True)`.
- Final training loss (mean of the last 100 steps): {final_train_loss}.
- Training time: {training_seconds} s on {machine} (torch {torch}).
"""


def write_model(model: GPT, record: dict[str, Any], name: str, out_dir: Path) -> list[Path]:
    """Write ``<name>.safetensors``, ``<name>.json`` and ``<name>.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, config = model.save(out_dir / name, metadata=record)
    recipe, metrics, cfg = record["recipe"], record["metrics"], model.config
    train_pairs, held_pairs = split_pairs(recipe["split_seed"])
    card = MODEL_CARD.format(
        **recipe,
        **cfg.to_dict(),
        **record["environment"],
        n_parameters=record["n_parameters"],
        final_train_loss=record["final_train_loss"],
        training_seconds=record["training_seconds"],
        n_pairs_train=len(train_pairs),
        n_pairs_held=len(held_pairs),
        ho_acc=metrics["held_out"]["accuracy"],
        ho_arg=metrics["held_out"]["argmax_accuracy"],
        ho_diff=metrics["held_out"]["logit_diff"],
        tr_acc=metrics["train"]["accuracy"],
        tr_arg=metrics["train"]["argmax_accuracy"],
        tr_diff=metrics["train"]["logit_diff"],
    )
    card_path = out_dir / f"{name}.md"
    card_path.write_text(card)
    return [weights, config, card_path]


TRAINERS = {"tiny-coref": train_tiny_coref}


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m labcore.models.train NAME [--out DIR] [--steps N]``."""
    parser = argparse.ArgumentParser(description="Train a tiny model that labcore ships.")
    parser.add_argument("name", choices=sorted(TRAINERS))
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    check_in("name", args.name, sorted(TRAINERS))
    recipe = dict(RECIPES[args.name])
    if args.steps is not None:
        recipe["steps"] = args.steps
    model, record = TRAINERS[args.name](recipe, progress=not args.no_progress)
    paths = write_model(model, record, args.name, args.out)
    print(json.dumps(record["metrics"], indent=2))
    print(f"trained in {record['training_seconds']} s; wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
