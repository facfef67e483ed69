"""A synthetic pronoun-resolution corpus, its word-level tokenizer and its evaluation (chapter 2).

Every sentence names two nouns, one animal (animate) and one object (inanimate), then says
something about "it" that only one of them can be; the model must complete ``it =`` with that noun::

    the cat chased the ball because it was hungry . it = cat
    the ball was next to the dog and it looked broken . it = ball
    in the garden , the box fell on the fox . it seemed curious . it = fox

The property decides the answer: *hungry, tired, ...* hold for animals, *broken, empty, ...* for
objects. The answer is the animal half of the time, in either position half of the time, and every
noun is the answer in some sentences and the distractor in others, so neither the position nor the
noun alone predicts it; a model has to combine the property's class with each noun's class (the
coreference case study of chapter 5 starts from this task, cf. Winograd schemas, Levesque et al.,
2012, in a form simple enough for a two-layer model).

Grammar (every word is one token; ``[x]`` is a choice from the list ``X`` below)::

    sentence  := <bos> clause " it = " answer
    clause    := "the" n1 verb "the" n2 conn "it" cop adj "."                  (template 0)
               | "the" n1 "and the" n2 "were" place ". it" cop adj "."          (template 1)
               | place ", the" n1 verb "the" n2 ". it" cop adj "."              (template 2)
    verb      := [RELATIONS]                      (n1, n2 in either order)
               | [ANIMATE_FIRST_VERBS]            (n1 animal, n2 object: "chased", ...)
               | [INANIMATE_FIRST_VERBS]          (n1 object, n2 animal: "fell on", ...)
    adj       := [ANIMATE_PROPERTIES] (answer = the animal) | [INANIMATE_PROPERTIES] (the object)
    conn := [CONNECTIVES]   cop := [COPULAS]   place := [PLACES]

Splits: the 16 x 16 (animal, object) pairs are split by a seed into training pairs and held-out
pairs (a fifth); every noun occurs in both, so held-out accuracy measures whether the model resolves
the pronoun for *combinations* of nouns it never saw together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from labcore.validation import check_in, check_positive_int

__all__ = [
    "ANIMATE",
    "INANIMATE",
    "ANIMATE_PROPERTIES",
    "INANIMATE_PROPERTIES",
    "TEMPLATES",
    "CorefExample",
    "CorefEvalSet",
    "WordTokenizer",
    "coref_accuracy",
    "coref_examples",
    "coref_tokenizer",
    "evaluation_set",
    "gpt2_evaluation_set",
    "lm_tensors",
    "single_token_ids",
    "split_pairs",
]

PAD, BOS = "<pad>", "<bos>"
ANIMATE = (
    "cat",
    "dog",
    "bird",
    "horse",
    "mouse",
    "rabbit",
    "fox",
    "cow",
    "duck",
    "goat",
    "sheep",
    "pig",
    "frog",
    "owl",
    "bear",
    "lion",
)
INANIMATE = (
    "ball",
    "box",
    "cup",
    "rock",
    "chair",
    "book",
    "bottle",
    "lamp",
    "car",
    "bag",
    "hat",
    "table",
    "bucket",
    "kite",
    "bell",
    "shoe",
)
ANIMATE_PROPERTIES = (
    "hungry",
    "tired",
    "sleepy",
    "scared",
    "angry",
    "curious",
    "thirsty",
    "lonely",
)
INANIMATE_PROPERTIES = (
    "broken",
    "empty",
    "cracked",
    "rusty",
    "full",
    "leaking",
    "dented",
    "wooden",
)
RELATIONS = ("was near", "was next to", "was behind", "was beside")
ANIMATE_FIRST_VERBS = ("chased", "watched", "found", "pushed", "kicked", "carried")
INANIMATE_FIRST_VERBS = ("fell on", "rolled toward", "landed near", "hit")
CONNECTIVES = ("because", "and", "since", "but")
COPULAS = ("was", "looked", "seemed")
PLACES = ("in the garden", "on the floor", "in the kitchen", "near the river", "at the park")
TEMPLATES = (
    "the {n1} {verb} the {n2} {conn} it {cop} {adj} .",
    "the {n1} and the {n2} were {place} . it {cop} {adj} .",
    "{place} , the {n1} {verb} the {n2} . it {cop} {adj} .",
)
QUERY = "it ="


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------
class WordTokenizer:
    """A word-level tokenizer: whitespace-separated words, each a token; ``<pad>`` = 0, ``<bos>`` = 1.

    Args:
        vocab: the words, in id order; must start with ``"<pad>", "<bos>"`` and hold no duplicates.

    Example::

        tok = coref_tokenizer()
        ids = tok.encode("the cat chased the ball")      # [1, ...]: <bos> first
        tok.decode(ids)                                   # "<bos> the cat chased the ball"
    """

    def __init__(self, vocab: Sequence[str]) -> None:
        vocab = list(vocab)
        if vocab[:2] != [PAD, BOS]:
            raise ValueError(f"vocab must start with {[PAD, BOS]}, got {vocab[:2]}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab must not hold duplicate words")
        self.vocab = vocab
        self.ids = {word: i for i, word in enumerate(vocab)}
        self.pad_id, self.bos_id = 0, 1

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        """Number of tokens, ``d_vocab``."""
        return len(self.vocab)

    def token_id(self, word: str) -> int:
        """The id of one word; unknown words raise ``ValueError``."""
        if word not in self.ids:
            close = [w for w in self.vocab if w[:2] == word[:2]][:5]
            raise ValueError(f"word {word!r} is not in the vocabulary (similar: {close})")
        return self.ids[word]

    def encode(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Ids of the whitespace-separated words of ``text``, after ``<bos>`` if ``add_bos``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = [self.token_id(word) for word in text.split()]
        return [self.bos_id, *ids] if add_bos else ids

    def decode(self, ids: Sequence[int] | torch.Tensor, *, skip_special: bool = False) -> str:
        """The words of ``ids`` joined by spaces (``<pad>``/``<bos>`` dropped with ``skip_special``)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        words = [self.vocab[i] for i in ids]
        if skip_special:
            words = [w for w in words if w not in (PAD, BOS)]
        return " ".join(words)

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        add_bos: bool = True,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode several texts, right-padded with ``<pad>``.

        Returns:
            ``tokens (batch, pos)`` (``pos`` = the longest) and ``lengths (batch,)``, both int64.
        """
        encoded = [self.encode(t, add_bos=add_bos) for t in texts]
        if not encoded:
            raise ValueError("texts must hold at least one text")
        lengths = torch.tensor([len(e) for e in encoded], device=device)
        tokens = torch.full((len(encoded), int(lengths.max())), self.pad_id, device=device)
        for row, ids in enumerate(encoded):  # ragged Python lists: one copy per sequence
            tokens[row, : len(ids)] = torch.tensor(ids, device=device)
        return tokens, lengths

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form (saved next to the model's weights)."""
        return {"type": "word", "vocab": self.vocab}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> WordTokenizer:
        """Inverse of :meth:`to_dict`."""
        if d.get("type") != "word" or not isinstance(d.get("vocab"), list):
            raise ValueError(f"tokenizer must be a dict with type 'word' and a vocab list, got {d}")
        return cls(d["vocab"])

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"


def coref_tokenizer() -> WordTokenizer:
    """The tokenizer of the corpus: ``<pad>``, ``<bos>``, then every word of the grammar, sorted."""
    phrases = (
        *ANIMATE,
        *INANIMATE,
        *ANIMATE_PROPERTIES,
        *INANIMATE_PROPERTIES,
        *RELATIONS,
        *ANIMATE_FIRST_VERBS,
        *INANIMATE_FIRST_VERBS,
        *CONNECTIVES,
        *COPULAS,
        *PLACES,
        *TEMPLATES,
        QUERY,
    )
    words = {w for phrase in phrases for w in phrase.split() if not w.startswith("{")}
    return WordTokenizer([PAD, BOS, *sorted(words)])


# --------------------------------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorefExample:
    """One sentence of the corpus.

    Attributes:
        text: the clause, e.g. ``"the cat chased the ball because it was hungry ."``.
        answer: the noun "it" refers to; ``distractor``: the other noun.
        animate_answer: whether the answer is the animal.
        answer_first: whether the answer is the first noun of the sentence.
        template: index into ``TEMPLATES``.
    """

    text: str
    answer: str
    distractor: str
    animate_answer: bool
    answer_first: bool
    template: int

    @property
    def prompt(self) -> str:
        """``text + " it ="``: what the model sees before it names the referent."""
        return f"{self.text} {QUERY}"

    @property
    def full(self) -> str:
        """The training sentence: ``prompt + " " + answer``."""
        return f"{self.prompt} {self.answer}"


def split_pairs(
    seed: int = 0, held_out_fraction: float = 0.2
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split the (animal, object) pairs into training and held-out pairs.

    Args:
        seed: seeds the shuffle; the same seed gives the same split everywhere.
        held_out_fraction: the fraction of the ``16 x 16`` pairs held out, in ``(0, 1)``.

    Returns:
        ``(train_pairs, held_out_pairs)``, lists of ``(animal, object)``, disjoint. Every noun
        appears in some training pair (so the model can learn its class).
    """
    check_positive_int("seed", seed, allow_zero=True)
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    pairs = [(a, i) for a in ANIMATE for i in INANIMATE]
    n_held = round(held_out_fraction * len(pairs))
    g = torch.Generator().manual_seed(seed)
    for _ in range(1000):  # re-draw until every noun keeps a training pair (almost always at once)
        order = torch.randperm(len(pairs), generator=g).tolist()
        held = sorted(pairs[j] for j in order[:n_held])
        train = sorted(pairs[j] for j in order[n_held:])
        if {a for a, _ in train} == set(ANIMATE) and {i for _, i in train} == set(INANIMATE):
            return train, held
    raise ValueError(
        f"held_out_fraction={held_out_fraction} leaves some noun without training pairs"
    )


def coref_examples(
    n: int, pairs: Sequence[tuple[str, str]], *, seed: int = 0
) -> list[CorefExample]:
    """Draw ``n`` sentences from the grammar, using only the given (animal, object) pairs.

    Each sentence draws a pair, whether the answer is the animal (probability 1/2), a template,
    the order of the nouns (1/2 each; fixed by the verb for action verbs, which are drawn so that
    both orders stay equally likely), a verb, connective, copula, place and property, all uniformly.

    Args:
        n: number of sentences.
        pairs: ``(animal, object)`` pairs, e.g. one half of :func:`split_pairs`.
        seed: seeds a ``torch.Generator``: the same arguments give the same sentences.
    """
    check_positive_int("n", n)
    check_positive_int("seed", seed, allow_zero=True)
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs must hold at least one (animal, object) pair")
    for a, i in pairs:
        if a not in ANIMATE or i not in INANIMATE:
            raise ValueError(
                f"pairs must hold (animal, object) pairs from ANIMATE x INANIMATE, got {(a, i)}"
            )
    g = torch.Generator().manual_seed(seed)

    def draw(options: Sequence) -> list:
        return [options[j] for j in torch.randint(len(options), (n,), generator=g).tolist()]

    pair = draw(pairs)
    animate_answer = draw([True, False])
    template = draw(range(len(TEMPLATES)))
    animate_first = draw([True, False])
    use_action_verb = draw([True, False])
    relation = draw(RELATIONS)
    verb_a, verb_i = draw(ANIMATE_FIRST_VERBS), draw(INANIMATE_FIRST_VERBS)
    conn, cop, place = draw(CONNECTIVES), draw(COPULAS), draw(PLACES)
    adj_a, adj_i = draw(ANIMATE_PROPERTIES), draw(INANIMATE_PROPERTIES)

    examples = []
    for j in range(n):  # string building: one sentence at a time
        animal, thing = pair[j]
        if template[j] == 1 or not use_action_verb[j]:
            verb = relation[j]
        else:
            verb = verb_a[j] if animate_first[j] else verb_i[j]
        n1, n2 = (animal, thing) if animate_first[j] else (thing, animal)
        text = TEMPLATES[template[j]].format(
            n1=n1,
            n2=n2,
            verb=verb,
            conn=conn[j],
            cop=cop[j],
            place=place[j],
            adj=adj_a[j] if animate_answer[j] else adj_i[j],
        )
        answer, distractor = (animal, thing) if animate_answer[j] else (thing, animal)
        examples.append(
            CorefExample(
                text=text,
                answer=answer,
                distractor=distractor,
                animate_answer=animate_answer[j],
                answer_first=(answer == n1),
                template=template[j],
            )
        )
    return examples


def lm_tensors(
    examples: Sequence[CorefExample],
    tokenizer: WordTokenizer,
    *,
    answer_only: bool = False,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token training pairs for a language model.

    For ``tokens = <bos> w_1 ... w_L`` (the full sentences, right-padded), the input is
    ``tokens[:, :-1]`` and the target ``tokens[:, 1:]``, with ``-100`` (cross-entropy's
    ``ignore_index``) on padding and, with ``answer_only``, everywhere except the answer.

    Returns:
        ``inputs (batch, pos)`` and ``targets (batch, pos)``, int64.
    """
    tokens, lengths = tokenizer.encode_batch([e.full for e in examples], device=device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()  # (batch, pos)
    positions = torch.arange(targets.shape[1], device=tokens.device)  # (pos,)
    last = (lengths - 2).unsqueeze(1)  # (batch, 1): where the answer is the target
    keep = positions == last if answer_only else positions <= last  # (batch, pos)
    return inputs.contiguous(), targets.masked_fill(~keep, -100)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------
@dataclass
class CorefEvalSet:
    """Prompts ending in ``"it ="`` with the correct and the distractor token.

    Attributes:
        tokens: ``(batch, pos)`` right-padded prompts (``<bos> ... it =``).
        lengths: ``(batch,)`` prompt lengths; the prediction is read at ``lengths - 1``.
        answer, distractor: ``(batch,)`` token ids.
        examples: the sentences.
        positions: ``role -> (batch,)`` token positions in ``tokens`` (``<bos>`` is position 0) of
            the first token of a word of each prompt: ``"animal"``, ``"object"``, ``"answer"``,
            ``"distractor"`` (the two nouns), ``"property"`` (the adjective), ``"it"`` (the first
            "it") and ``"end"`` (``"="``, ``lengths - 1``). Empty when built by hand.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    answer: torch.Tensor
    distractor: torch.Tensor
    examples: list[CorefExample]
    positions: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)


def evaluation_set(
    split: str = "held_out",
    n: int = 1000,
    *,
    seed: int = 1,
    split_seed: int = 0,
    tokenizer: WordTokenizer | None = None,
    device: torch.device | str | None = None,
) -> CorefEvalSet:
    """The evaluation prompts of one split.

    Args:
        split: ``"held_out"`` (noun pairs never seen in training) or ``"train"`` (training pairs,
            fresh sentences).
        n: number of prompts.
        seed: seeds the sentences (the training corpus of ``labcore.models.train`` uses other seeds).
        split_seed: seeds :func:`split_pairs`; must match the one used for training.
        tokenizer: defaults to :func:`coref_tokenizer`.
        device: where to put the tensors.
    """
    check_in("split", split, ["held_out", "train"])
    tokenizer = tokenizer or coref_tokenizer()
    train_pairs, held_pairs = split_pairs(split_seed)
    examples = coref_examples(n, held_pairs if split == "held_out" else train_pairs, seed=seed)
    tokens, lengths = tokenizer.encode_batch([e.prompt for e in examples], device=device)
    answer = torch.tensor([tokenizer.token_id(e.answer) for e in examples], device=device)
    distractor = torch.tensor([tokenizer.token_id(e.distractor) for e in examples], device=device)
    positions = _word_positions(examples, lambda text: tokenizer.encode(text, add_bos=False))
    return CorefEvalSet(
        tokens,
        lengths,
        answer,
        distractor,
        examples,
        {role: torch.tensor(pos, device=device) for role, pos in positions.items()},
    )


# --------------------------------------------------------------------------------------------------
# Subword tokenizers (GPT-2)
# --------------------------------------------------------------------------------------------------
def _plain_encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    """``text -> ids`` without special tokens, for a WordTokenizer or a Hugging Face tokenizer."""
    if isinstance(tokenizer, WordTokenizer):
        return lambda text: tokenizer.encode(text, add_bos=False)
    if not callable(getattr(tokenizer, "encode", None)):
        raise TypeError(
            f"tokenizer must have an encode(text) method, got {type(tokenizer).__name__}"
        )

    def encode(text: str) -> list[int]:
        try:
            return list(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:  # a tokenizer without Hugging Face's keyword
            return list(tokenizer.encode(text))

    return encode


def single_token_ids(words: Sequence[str], tokenizer: Any, *, prefix: str = " ") -> dict[str, int]:
    """The token id of ``prefix + word`` for each word, checked to be exactly one token.

    The model predicts the answer as its next token, so the answer's logit is the logit of one
    token. A subword tokenizer (GPT-2's byte-pair encoding) splits rarer words into several tokens;
    reading only the first of them would compare prefixes, and two words that share a first token
    would get the same "answer id". This function refuses both.

    Args:
        words: the words, e.g. ``ANIMATE + INANIMATE``.
        tokenizer: a :class:`WordTokenizer` or anything with ``encode(text) -> list[int]`` (a
            Hugging Face tokenizer; special tokens are not added).
        prefix: prepended to each word; ``" "`` because in a sentence each of these words follows
            a space, and GPT-2 encodes ``" cat"`` and ``"cat"`` differently.

    Returns:
        ``word -> id``, in the order of ``words``.

    Raises:
        ValueError: naming every word that is not exactly one token (with its tokens), and every
            group of words that share one id.
    """
    if isinstance(words, str) or not all(isinstance(w, str) for w in words):
        raise TypeError(f"words must be a sequence of str, got {words!r}")
    encode = _plain_encoder(tokenizer)
    ids, split = {}, {}
    for word in words:  # a few dozen words: one encoding each
        encoded = encode(prefix + word)
        if len(encoded) == 1:
            ids[word] = int(encoded[0])
        else:
            split[word] = encoded
    if split:
        listed = ", ".join(f"{prefix + w!r} -> {t}" for w, t in split.items())
        raise ValueError(
            f"{len(split)} word(s) are not one token in {type(tokenizer).__name__}'s vocabulary: "
            f"{listed}. Their logit is not one token's logit; leave them out of the prompts "
            "(or read the answer's first token knowingly, and check that no two words share it)"
        )
    by_id: dict[int, list[str]] = {}
    for word, i in ids.items():
        by_id.setdefault(i, []).append(word)
    shared = [group for group in by_id.values() if len(group) > 1]
    if shared:
        raise ValueError(
            f"words that share one token id in {type(tokenizer).__name__}: {shared}; the model "
            "could not tell their answers apart"
        )
    return ids


def _word_positions(
    examples: Sequence[CorefExample], encode: Callable[[str], list[int]]
) -> dict[str, list[int]]:
    """Positions (after one ``<bos>``) of the first token of the nouns, property, first "it", "=".

    The position of word ``k`` of a prompt is ``1 + len(encode(first k words))``, which holds as
    long as the encoding of the first ``k`` words is a prefix of the encoding of the prompt (true
    of GPT-2, whose byte-pair merges never cross a space); that is checked, so a tokenizer that
    merges across words raises instead of giving wrong positions.
    """
    properties = set(ANIMATE_PROPERTIES) | set(INANIMATE_PROPERTIES)
    roles: dict[str, list[int]] = {
        r: [] for r in ("animal", "object", "answer", "distractor", "property", "it", "end")
    }
    for e in examples:  # string work, one prompt at a time
        words = e.prompt.split()
        full = encode(e.prompt)
        animal, thing = (e.answer, e.distractor) if e.animate_answer else (e.distractor, e.answer)
        index = {
            "animal": words.index(animal),
            "object": words.index(thing),
            "property": next(k for k, w in enumerate(words) if w in properties),
            "it": words.index("it"),
        }
        where = {}
        for role, k in index.items():
            before = encode(" ".join(words[:k])) if k else []
            if full[: len(before)] != before:
                raise ValueError(
                    f"the tokenizer encodes {' '.join(words[:k])!r} differently at the start of "
                    f"{e.prompt!r}: token positions cannot be read from word positions"
                )
            where[role] = 1 + len(before)  # + 1 for <bos>
        where["answer"] = where["animal"] if e.animate_answer else where["object"]
        where["distractor"] = where["object"] if e.animate_answer else where["animal"]
        where["end"] = len(full)  # "=" is the last token: 1 + len(full) - 1
        for role in roles:
            roles[role].append(where[role])
    return roles


def gpt2_evaluation_set(
    examples: Sequence[CorefExample],
    tokenizer: Any,
    *,
    device: torch.device | str | None = None,
) -> CorefEvalSet:
    """An evaluation set of the corpus for a subword tokenizer such as GPT-2's.

    Each prompt becomes ``<bos>`` followed by the tokenizer's own encoding of ``example.prompt``,
    right-padded (with the pad token, or end-of-text where there is none). Before anything else
    every noun and property word of the grammar is checked to be one token with a leading space
    (:func:`single_token_ids`), so that ``answer`` and ``distractor`` are the ids of whole words.
    Positions are read from the tokenizer's encoding, never from word counts (GPT-2 may split the
    other words, e.g. places, into several tokens).

    Args:
        examples: sentences from :func:`coref_examples`.
        tokenizer: a Hugging Face tokenizer (``encode``, ``bos_token_id``, ``eos_token_id``,
            ``pad_token_id``), e.g. the one of ``GPT.from_pretrained("gpt2")``.
        device: where to put the tensors.

    Returns:
        A :class:`CorefEvalSet` with ``positions`` filled; with a tokenizer that maps every word
        to one token it is laid out exactly as :func:`evaluation_set`.

    Raises:
        ValueError: a noun or property word that is not one token (named in the message), two
            words sharing a token, or no examples.
    """
    examples = list(examples)
    if not examples:
        raise ValueError("examples must hold at least one CorefExample, got none")
    bos = getattr(tokenizer, "bos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = getattr(tokenizer, "eos_token_id", None) if pad is None else pad
    if bos is None or pad is None:
        raise ValueError(
            "tokenizer must define bos_token_id and pad_token_id or eos_token_id, got "
            f"bos_token_id={bos}, pad/eos={pad}"
        )
    ids = single_token_ids(
        [*ANIMATE, *INANIMATE, *ANIMATE_PROPERTIES, *INANIMATE_PROPERTIES], tokenizer
    )
    encode = _plain_encoder(tokenizer)
    encoded = [[bos, *encode(e.prompt)] for e in examples]
    lengths = torch.tensor([len(i) for i in encoded], device=device)
    tokens = torch.full((len(encoded), int(lengths.max())), pad, device=device)
    for row, i in enumerate(encoded):  # ragged Python lists: one copy per prompt
        tokens[row, : len(i)] = torch.tensor(i, device=device)
    answer = torch.tensor([ids[e.answer] for e in examples], device=device)
    distractor = torch.tensor([ids[e.distractor] for e in examples], device=device)
    positions = _word_positions(examples, encode)
    return CorefEvalSet(
        tokens,
        lengths,
        answer,
        distractor,
        examples,
        {role: torch.tensor(pos, device=device) for role, pos in positions.items()},
    )


@torch.no_grad()
def coref_accuracy(
    model: Callable[[torch.Tensor], torch.Tensor],
    eval_set: CorefEvalSet,
    *,
    batch_size: int = 512,
) -> dict[str, float]:
    """Pronoun-resolution metrics of a language model on an evaluation set.

    With ``l = logits[b, lengths[b] - 1]`` (the prediction after ``"it ="``):

    - ``accuracy``: fraction with ``l[answer] > l[distractor]``;
    - ``argmax_accuracy``: fraction with ``argmax(l) == answer`` (over the whole vocabulary);
    - ``logit_diff``: mean of ``l[answer] - l[distractor]``.

    Args:
        model: maps tokens ``(batch, pos)`` to logits ``(batch, pos, d_vocab)`` (a :class:`GPT`,
            or a function calling ``run_with_hooks``), on the device of ``eval_set``.
        eval_set: from :func:`evaluation_set`.
        batch_size: prompts per forward pass.
    """
    check_positive_int("batch_size", batch_size)
    diffs, hits = [], []
    for start in range(0, len(eval_set), batch_size):
        chunk = slice(start, start + batch_size)
        tokens, lengths = eval_set.tokens[chunk], eval_set.lengths[chunk]
        logits = model(tokens[:, : int(lengths.max())])  # (batch, pos, d_vocab)
        last = logits[torch.arange(len(lengths), device=logits.device), lengths - 1]
        ans = last.gather(-1, eval_set.answer[chunk, None]).squeeze(-1)  # (batch,)
        dis = last.gather(-1, eval_set.distractor[chunk, None]).squeeze(-1)
        diffs.append(ans - dis)
        hits.append(last.argmax(-1) == eval_set.answer[chunk])
    diff, hit = torch.cat(diffs), torch.cat(hits)
    return {
        "accuracy": (diff > 0).double().mean().item(),
        "argmax_accuracy": hit.double().mean().item(),
        "logit_diff": diff.double().mean().item(),
    }
