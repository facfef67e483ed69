"""Tests of labcore.data: shapes, ranges, determinism and balance of every data set."""

from __future__ import annotations

import pytest
import torch

from labcore.data import (
    DigitsSplit,
    coref,
    digits,
    gaussian_mixture_1d,
    regression_1d,
    spirals,
    two_moons,
)

# ------------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_dtypes_and_ranges():
    split = digits()
    assert isinstance(split, DigitsSplit)
    X_train, y_train, X_test, y_test = split
    assert X_train.shape == (1347, 64) and X_test.shape == (450, 64)
    assert y_train.shape == (1347,) and y_test.shape == (450,)
    assert X_train.dtype == torch.float32 and y_train.dtype == torch.int64
    for X in (X_train, X_test):
        assert X.min() >= 0 and X.max() <= 1
    assert X_train.max() == 1  # scaled by 16, not per image
    assert set(y_train.tolist()) == set(range(10)) == set(y_test.tolist())


def test_digits_is_deterministic_and_seeded():
    a, b, c = digits(seed=0), digits(seed=0), digits(seed=1)
    assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))
    assert not torch.equal(a.y_train, c.y_train)


def test_digits_split_is_stratified_and_a_partition():
    from sklearn.datasets import load_digits

    X_train, y_train, X_test, y_test = digits(test_size=0.3, dtype=torch.float64)
    total = torch.bincount(torch.cat([y_train, y_test]), minlength=10)
    test_counts = torch.bincount(y_test, minlength=10)
    assert ((test_counts - 0.3 * total).abs() <= 1).all()  # each class keeps its proportion

    # train and test together hold every (image, label) of the bundled set exactly once
    bunch = load_digits()
    full = torch.cat([torch.as_tensor(bunch.data) / 16, torch.as_tensor(bunch.target)[:, None]], 1)
    ours = torch.cat([torch.cat([X_train, X_test]), torch.cat([y_train, y_test])[:, None]], 1)
    rows_full, counts_full = torch.unique(full, dim=0, return_counts=True)
    rows_ours, counts_ours = torch.unique(ours, dim=0, return_counts=True)
    assert torch.equal(rows_full, rows_ours) and torch.equal(counts_full, counts_ours)


def test_digits_dtype_and_device():
    split = digits(dtype=torch.float64, device="meta")
    assert split.X_train.dtype == torch.float64 and split.X_train.device.type == "meta"
    assert split.y_test.dtype == torch.int64


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"test_size": 1.5}, ValueError, r"test_size must be in \(0, 1\), got 1.5"),
        ({"test_size": "a"}, TypeError, "test_size must be a float"),
        ({"seed": -1}, ValueError, "seed must be a non-negative int"),
        ({"dtype": torch.int64}, TypeError, "dtype must be a floating"),
    ],
)
def test_digits_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        digits(**kwargs)


# ------------------------------------------------------------------------------------------------
# synthetic sets


def test_regression_1d_shapes_range_and_noise_free_values():
    x, y = regression_1d(100, "sin", noise=0.0, seed=3, x_range=(-2.0, 1.0))
    assert x.shape == (100, 1) and y.shape == (100, 1) and x.dtype == torch.float32
    assert x.min() >= -2 and x.max() <= 1
    assert (x[1:] >= x[:-1]).all()  # sorted
    assert torch.allclose(y, torch.sin(x), atol=1e-6)


def test_regression_1d_noise_has_the_requested_scale():
    x, y = regression_1d(4000, "cubic", noise=0.3, seed=0, dtype=torch.float64)
    residual = y - x**3
    assert residual.std().item() == pytest.approx(0.3, rel=0.05)


def test_regression_1d_accepts_a_callable_and_checks_its_shape():
    x, y = regression_1d(50, lambda t: 2 * t + 1, noise=0.0, dtype=torch.float64)
    assert torch.allclose(y, 2 * x + 1)
    with pytest.raises(ValueError, match=r"fn must map x of shape \(50, 1\) to the same shape"):
        regression_1d(50, lambda t: t[:, 0], noise=0.0)
    with pytest.raises(ValueError, match="fn must be one of"):
        regression_1d(50, "tan")


def test_two_moons_shapes_balance_and_geometry():
    X, y = two_moons(101, noise=0.0, seed=0, dtype=torch.float64)
    assert X.shape == (101, 2) and y.shape == (101,) and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [50, 51]
    outer, inner = X[y == 0], X[y == 1]
    assert torch.allclose(outer.norm(dim=1), torch.ones(50, dtype=torch.float64))
    assert torch.allclose((inner - torch.tensor([1.0, 0.5]).double()).norm(dim=1),
                          torch.ones(51, dtype=torch.float64))  # fmt: skip


def test_spirals_shapes_balance_and_radius():
    X, y = spirals(301, n_classes=3, noise=0.0, seed=0)
    assert X.shape == (301, 2) and y.shape == (301,)
    assert torch.bincount(y).tolist() == [101, 100, 100]
    assert X.norm(dim=1).max() <= 1 + 1e-6
    with pytest.raises(ValueError, match="n must be >= 3"):
        spirals(2, n_classes=3)
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        spirals(10, n_classes=1)


def test_gaussian_mixture_moments_match_the_parameters():
    means, stds, weights = (-2.0, 1.0, 4.0), (0.5, 1.0, 0.3), (0.2, 0.5, 0.3)
    x, z = gaussian_mixture_1d(20000, means, stds, weights, seed=0, dtype=torch.float64)
    assert x.shape == (20000,) and z.shape == (20000,) and z.dtype == torch.int64
    freq = torch.bincount(z, minlength=3).double() / 20000
    assert torch.allclose(freq, torch.tensor(weights, dtype=torch.float64), atol=0.015)
    for k in range(3):
        assert x[z == k].mean().item() == pytest.approx(means[k], abs=0.05)
        assert x[z == k].std().item() == pytest.approx(stds[k], rel=0.05)
    mixture_mean = sum(w * m for w, m in zip(weights, means, strict=True))
    assert x.mean().item() == pytest.approx(mixture_mean, abs=0.05)


def test_gaussian_mixture_rejects_bad_parameters():
    with pytest.raises(ValueError, match="weights must be > 0 and sum to 1"):
        gaussian_mixture_1d(10, (0.0, 1.0), (1.0, 1.0), (0.5, 0.6))
    with pytest.raises(ValueError, match="one entry per component"):
        gaussian_mixture_1d(10, (0.0, 1.0), (1.0,), (0.5, 0.5))
    with pytest.raises(ValueError, match="stds must all be > 0"):
        gaussian_mixture_1d(10, (0.0, 1.0), (1.0, 0.0), (0.5, 0.5))


SYNTHETIC = [
    lambda seed, **kw: regression_1d(64, seed=seed, **kw),
    lambda seed, **kw: two_moons(64, seed=seed, **kw),
    lambda seed, **kw: spirals(64, seed=seed, **kw),
    lambda seed, **kw: gaussian_mixture_1d(64, seed=seed, **kw),
]


@pytest.mark.parametrize("make", SYNTHETIC, ids=["regression_1d", "two_moons", "spirals", "gmm"])
def test_synthetic_sets_are_reproducible_by_seed_only(make):
    a = make(0)
    torch.manual_seed(123)  # the global RNG must not matter
    b = make(0)
    c = make(1)
    assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    # the same samples in float64 and on another device, up to rounding
    d = make(0, dtype=torch.float64)
    assert torch.allclose(d[0].float(), a[0])
    meta = make(0, device="meta")
    assert meta[0].device.type == "meta" and meta[0].shape == a[0].shape


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: two_moons(0), ValueError, "n must be >= 2"),
        (lambda: two_moons(10, noise=-1.0), ValueError, "noise must be >= 0"),
        (lambda: regression_1d(10, seed=1.5), TypeError, "seed must be an int"),
        (lambda: regression_1d(10, x_range=(1.0, 0.0)), ValueError, "low < high"),
        (lambda: gaussian_mixture_1d(10, dtype=torch.int32), TypeError, "dtype must be"),
    ],
)
def test_synthetic_sets_reject_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_two_moons_are_not_linearly_separable_but_close_to_it():
    # a sanity check of the geometry: the best linear classifier errs on a clear fraction
    X, y = two_moons(400, noise=0.05, seed=0, dtype=torch.float64)
    A = torch.cat([X, torch.ones(400, 1, dtype=torch.float64)], dim=1)
    w = torch.linalg.lstsq(A, (2 * y - 1).double()[:, None]).solution
    linear_accuracy = ((A @ w)[:, 0].sign() == (2 * y - 1)).double().mean().item()
    assert 0.75 < linear_accuracy < 0.95


# ------------------------------------------------------------------------------------------------
# coref: the evaluation set for a subword tokenizer (GPT-2's), tested with fake tokenizers


class FakeSubwordTokenizer:
    """A stand-in for a Hugging Face tokenizer, built on the corpus's word tokenizer.

    Each word gets its word-tokenizer id (so a consistent fake lays prompts out exactly like the
    tiny model's tokenizer), except that the words in ``split`` become two tokens (their own id,
    then a fresh one) and the pairs in ``merge`` become one fresh token, as BPE would do.
    """

    def __init__(self, split=(), merge=()):
        self.words = coref.coref_tokenizer()
        self.split, self.merge = set(split), set(merge)
        self.bos_token_id, self.eos_token_id, self.pad_token_id = 1, 0, None
        self.calls_with_special_tokens = 0

    def encode(self, text, add_special_tokens=True):
        self.calls_with_special_tokens += bool(add_special_tokens)
        words, ids, k = text.split(), [], 0
        while k < len(words):  # one word (or merged pair) at a time
            if tuple(words[k : k + 2]) in self.merge:
                ids.append(1000 + len(self.words) + k)
                k += 2
                continue
            ids.append(self.words.token_id(words[k]))
            if words[k] in self.split:
                ids.append(500 + self.words.token_id(words[k]))
            k += 1
        return ids


def _held_out(n=60, seed=3):
    return coref.coref_examples(n, coref.split_pairs(0)[1], seed=seed)


def test_gpt2_evaluation_set_with_one_token_words_matches_the_tiny_layout():
    examples = _held_out()
    tiny = coref.evaluation_set("held_out", 60, seed=3)
    fake = FakeSubwordTokenizer()
    bpe = coref.gpt2_evaluation_set(examples, fake)
    assert fake.calls_with_special_tokens == 0  # no special token added inside the prompts
    assert [e.prompt for e in bpe.examples] == [e.prompt for e in tiny.examples]
    for name in ("tokens", "lengths", "answer", "distractor"):
        assert torch.equal(getattr(bpe, name), getattr(tiny, name)), name
    assert bpe.positions.keys() == tiny.positions.keys()
    for role, where in tiny.positions.items():
        assert torch.equal(bpe.positions[role], where), role


def test_evaluation_set_positions_point_at_the_words():
    tok = coref.coref_tokenizer()
    ev = coref.evaluation_set("held_out", 200, seed=5, tokenizer=tok)
    rows = torch.arange(len(ev))
    assert torch.equal(ev.tokens[rows, ev.positions["answer"]], ev.answer)
    assert torch.equal(ev.tokens[rows, ev.positions["distractor"]], ev.distractor)
    assert torch.equal(ev.positions["end"], ev.lengths - 1)
    assert (ev.tokens[rows, ev.positions["it"]] == tok.token_id("it")).all()
    assert (ev.tokens[rows, ev.positions["end"]] == tok.token_id("=")).all()
    animate = torch.tensor([e.animate_answer for e in ev.examples])
    assert torch.equal(
        ev.positions["animal"],
        torch.where(animate, ev.positions["answer"], ev.positions["distractor"]),
    )
    properties = {tok.token_id(w) for w in coref.ANIMATE_PROPERTIES + coref.INANIMATE_PROPERTIES}
    assert set(ev.tokens[rows, ev.positions["property"]].tolist()) <= properties


def test_gpt2_evaluation_set_reads_positions_from_the_tokenizer_not_from_word_counts():
    # places and connectives split into two tokens: every later position moves, the ids do not
    split = {"garden", "kitchen", "river", "because", "beside"}
    examples = _held_out(80, seed=4)
    fake = FakeSubwordTokenizer(split=split)
    ev = coref.gpt2_evaluation_set(examples, fake)
    rows = torch.arange(len(ev))
    n_split = torch.tensor([sum(w in split for w in e.prompt.split()) for e in examples])
    assert n_split.sum() > 0
    assert torch.equal(
        ev.lengths, torch.tensor([len(e.prompt.split()) + 1 for e in examples]) + n_split
    )
    assert torch.equal(ev.tokens[rows, ev.positions["answer"]], ev.answer)
    assert torch.equal(ev.tokens[rows, ev.positions["distractor"]], ev.distractor)
    assert (ev.tokens[rows, ev.positions["end"]] == fake.words.token_id("=")).all()
    assert torch.equal(ev.positions["end"], ev.lengths - 1)
    word_ids = coref.evaluation_set("held_out", 80, seed=4).positions["property"]
    assert (ev.positions["property"] >= word_ids).all() and (
        ev.positions["property"] > word_ids
    ).any()


def test_single_token_ids_names_every_word_that_is_split():
    fake = FakeSubwordTokenizer(split={"rabbit", "dented"})
    with pytest.raises(ValueError, match=r"2 word\(s\).*' rabbit'.*' dented'"):
        coref.single_token_ids([*coref.ANIMATE, *coref.INANIMATE_PROPERTIES], fake)
    with pytest.raises(ValueError, match="' rabbit'"):
        coref.gpt2_evaluation_set(_held_out(5), fake)
    ids = coref.single_token_ids(["cat", "dog"], fake)
    assert ids == {"cat": fake.words.token_id("cat"), "dog": fake.words.token_id("dog")}


def test_single_token_ids_refuses_words_that_share_a_token():
    class Lossy(FakeSubwordTokenizer):  # "cow" and "cat" both become the token of "cat"
        def encode(self, text, add_special_tokens=True):
            return super().encode(text.replace("cow", "cat"), add_special_tokens)

    with pytest.raises(ValueError, match=r"share one token id.*\['cat', 'cow'\]"):
        coref.single_token_ids(coref.ANIMATE, Lossy())


def test_gpt2_evaluation_set_refuses_a_tokenizer_that_merges_across_words():
    fake = FakeSubwordTokenizer(merge={("the", "cat"), ("the", "dog"), ("the", "fox")})
    with pytest.raises(ValueError, match="cannot be read from word positions"):
        coref.gpt2_evaluation_set(_held_out(200), fake)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: coref.gpt2_evaluation_set([], FakeSubwordTokenizer()), ValueError, "at least one"),
        (
            lambda: coref.single_token_ids("cat", FakeSubwordTokenizer()),
            TypeError,
            "sequence of str",
        ),
        (lambda: coref.single_token_ids(["cat"], object()), TypeError, "encode"),
    ],
)
def test_gpt2_evaluation_set_rejects_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
