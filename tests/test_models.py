"""Tests of the shipped tiny models (labcore.models), their training script and their corpus
(labcore.data.coref)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from labcore.data.coref import (
    ANIMATE,
    ANIMATE_PROPERTIES,
    INANIMATE,
    TEMPLATES,
    WordTokenizer,
    coref_accuracy,
    coref_examples,
    coref_tokenizer,
    evaluation_set,
    lm_tensors,
    split_pairs,
)
from labcore.models import MODELS, load, model_record
from labcore.transformer import GPT


@pytest.fixture(scope="module")
def tiny():
    return load("tiny-coref")


# ---- the shipped model ---------------------------------------------------------------------------
def test_load_returns_a_hooked_gpt_and_its_tokenizer(tiny) -> None:
    model, tokenizer = tiny
    assert isinstance(model, GPT) and isinstance(tokenizer, WordTokenizer)
    assert not model.training
    assert model.config.vocab_size == tokenizer.vocab_size == coref_tokenizer().vocab_size
    assert tokenizer.vocab == coref_tokenizer().vocab
    assert "blocks.1.attn.hook_pattern" in model.hook_names()
    tokens = torch.tensor(tokenizer.encode("the cat chased the ball because it was hungry . it ="))
    logits, cache = model.run_with_cache(tokens)
    assert cache["blocks.0.attn.hook_pattern"].shape == (1, model.config.n_head, 13, 13)
    assert tokenizer.decode([int(logits[0, -1].argmax())]) == "cat"
    completed = model.generate(tokens, 1, temperature=0)
    assert tokenizer.decode(completed[0], skip_special=True).endswith("hungry . it = cat")


def test_held_out_accuracy(tiny) -> None:
    model, tokenizer = tiny
    eval_set = evaluation_set("held_out", 400, seed=7, tokenizer=tokenizer)
    metrics = coref_accuracy(model, eval_set)
    assert metrics["accuracy"] >= 0.95
    assert metrics["argmax_accuracy"] >= 0.95
    assert metrics["logit_diff"] > 0


def test_recorded_metrics_and_recipe() -> None:
    record = model_record("tiny-coref")
    assert record["metrics"]["held_out"]["accuracy"] >= 0.95
    assert record["recipe"]["steps"] > 0 and record["tokenizer"]["type"] == "word"


def test_ablating_every_head_of_layer_0_breaks_it(tiny) -> None:
    """Hooks work on the shipped model: without layer 0's attention, nothing moves the nouns."""
    model, tokenizer = tiny
    eval_set = evaluation_set("held_out", 200, seed=8, tokenizer=tokenizer)

    def ablated(tokens: torch.Tensor) -> torch.Tensor:
        return model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: torch.zeros_like(z))]
        )

    assert coref_accuracy(ablated, eval_set)["accuracy"] < 0.8


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match=r"name must be one of \['tiny-coref'\], got 'gpt2'"):
        load("gpt2")
    assert list(MODELS) == ["tiny-coref"]


def test_training_is_deterministic(tmp_path) -> None:
    """A few steps of the recipe, twice: the same weights; the writer makes the three files."""
    from labcore.models.train import RECIPES, train_tiny_coref, write_model

    recipe = {**RECIPES["tiny-coref"], "steps": 5, "n_train": 128, "n_eval": 32}
    model_a, record = train_tiny_coref(recipe, progress=False)
    model_b, _ = train_tiny_coref(recipe, progress=False)
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_b.state_dict()[key]), key
    paths = write_model(model_a, record, "tiny-test", tmp_path)
    assert sorted(p.name for p in paths) == [
        "tiny-test.json",
        "tiny-test.md",
        "tiny-test.safetensors",
    ]
    assert "held-out pairs" in paths[2].read_text()
    loaded = GPT.load(tmp_path / "tiny-test")
    assert torch.equal(loaded.embed.weight, model_a.embed.weight)


# ---- the corpus ----------------------------------------------------------------------------------
def test_tokenizer_round_trip_and_errors() -> None:
    tokenizer = coref_tokenizer()
    text = "in the garden , the dog kicked the box . it looked dented . it = box"
    ids = tokenizer.encode(text)
    assert ids[0] == tokenizer.bos_id and tokenizer.decode(ids, skip_special=True) == text
    assert WordTokenizer.from_dict(tokenizer.to_dict()).vocab == tokenizer.vocab
    with pytest.raises(ValueError, match="'elephant' is not in the vocabulary"):
        tokenizer.encode("the elephant")
    with pytest.raises(ValueError, match="vocab must start with"):
        WordTokenizer(["the", "<pad>"])
    tokens, lengths = tokenizer.encode_batch(["the cat", "the cat was hungry"])
    assert tokens.shape == (2, 5) and lengths.tolist() == [3, 5]
    assert (tokens[0, 3:] == tokenizer.pad_id).all()


def test_split_pairs_is_a_seeded_partition() -> None:
    train, held = split_pairs(0)
    assert len(train) + len(held) == len(ANIMATE) * len(INANIMATE)
    assert not set(train) & set(held) and len(held) == round(0.2 * len(ANIMATE) * len(INANIMATE))
    assert {a for a, _ in train} == set(ANIMATE) and {i for _, i in train} == set(INANIMATE)
    assert split_pairs(0) == (train, held) and split_pairs(1) != (train, held)
    with pytest.raises(ValueError, match="held_out_fraction"):
        split_pairs(0, held_out_fraction=1.0)


def test_neither_position_nor_noun_gives_the_answer() -> None:
    train, _ = split_pairs(0)
    examples = coref_examples(4000, train, seed=3)
    assert abs(sum(e.answer_first for e in examples) / 4000 - 0.5) < 0.04
    assert abs(sum(e.animate_answer for e in examples) / 4000 - 0.5) < 0.04
    assert set(Counter(e.template for e in examples)) == set(range(len(TEMPLATES)))
    as_answer = Counter(e.answer for e in examples)
    as_distractor = Counter(e.distractor for e in examples)
    for noun in (*ANIMATE, *INANIMATE):  # every noun is sometimes right, sometimes wrong
        assert as_answer[noun] > 0 and as_distractor[noun] > 0
    for e in examples:  # the property names the answer's class
        adjective = e.text.split()[-2]
        assert (adjective in ANIMATE_PROPERTIES) == e.animate_answer == (e.answer in ANIMATE)
        assert f"the {e.answer}" in e.text and f"the {e.distractor}" in e.text
    assert coref_examples(4000, train, seed=3) == examples  # seeded
    assert coref_examples(50, train, seed=4) != coref_examples(50, train, seed=3)


def test_lm_tensors_and_evaluation_set() -> None:
    tokenizer = coref_tokenizer()
    train, held = split_pairs(0)
    examples = coref_examples(8, train, seed=0)
    inputs, targets = lm_tensors(examples, tokenizer)
    assert inputs.shape == targets.shape
    for row, e in enumerate(examples):
        n = len(tokenizer.encode(e.full))
        assert targets[row, n - 2] == tokenizer.token_id(e.answer)  # the last target is the answer
        assert (targets[row, n - 1 :] == -100).all()
    _, answer_only = lm_tensors(examples, tokenizer, answer_only=True)
    assert ((answer_only != -100).sum(1) == 1).all()
    eval_set = evaluation_set("held_out", 16, seed=2)
    assert len(eval_set) == 16 and eval_set.tokens.shape[0] == 16
    for e in eval_set.examples:
        assert (e.answer, e.distractor) in held or (e.distractor, e.answer) in held
    last = eval_set.tokens[torch.arange(16), eval_set.lengths - 1]
    assert (last == tokenizer.token_id("=")).all()
    with pytest.raises(ValueError, match="split"):
        evaluation_set("test")
