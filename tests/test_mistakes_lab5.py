"""Lab 5's mistake catalogue (``tests/mistakes/lab5.py``) through the notebook check and the rubric.

Every catalogued mistake must fail the check, with a message naming the likely cause, and lose
points in the grader; every valid alternative must pass both. The rubric runs in this process
through the grader's own kernel-side harness (no kernel), with the entry's namespace as the
student's: exercises with two functions find the second one there, as in a kernel.
``test_catalogue_table`` prints the per-exercise table (mistakes caught / tried, valid accepted /
tried).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mistakes import lab5, runner

import labcore
from labcore.checks import CheckFailed
from labcore.checks import transcoder as checks
from labcore.rubrics import load_rubric

RUBRIC = load_rubric("05-transcoders")
EXERCISES = {e.function: e for e in RUBRIC.exercises}

#: exercise -> (the check, the names of the functions it takes, in order)
CHECKS = {
    "mlp_io": (checks.check_mlp_io, ["mlp_io"]),
    "transcoder_forward": (checks.check_transcoder_forward, ["transcoder_forward"]),
    "transcoder_loss": (
        checks.check_transcoder_loss, ["transcoder_loss", "normalize_decoder_rows"]
    ),
    "fvu": (checks.check_metrics, ["fvu", "l0"]),
    "penalty": (checks.check_penalty, ["penalty"]),
    "spliced_logits": (checks.check_splice, ["spliced_logits", "loss_recovered"]),
    "animacy_correlation": (checks.check_animacy_correlation, ["animacy_correlation"]),
    "ablate_features": (checks.check_ablate_features, ["ablate_features"]),
}  # fmt: skip


_RUBRIC_MEMO: dict[tuple[str, int], tuple[float, list[str]]] = {}
_CHECK_MEMO: dict[tuple[str, int], str | None] = {}


def rubric_points(function: str, fn: Callable) -> tuple[float, list[str]]:
    """The points ``fn`` earns on the hidden cases of seed 0, and the failure messages (computed
    once per entry: the table reuses what the other tests found)."""
    key = (function, id(fn))
    if key not in _RUBRIC_MEMO:
        with labcore.one_thread():  # tiny tensors: threads only contend on a busy machine
            _RUBRIC_MEMO[key] = _rubric_points(function, fn)
    return _RUBRIC_MEMO[key]


def _rubric_points(function: str, fn: Callable) -> tuple[float, list[str]]:
    return runner.rubric_points(RUBRIC, function, fn.__globals__)


def check_message(function: str, fn: Callable) -> str | None:
    """``None`` if the notebook check passes, else its failure message (computed once per entry)."""
    key = (function, id(fn))
    if key not in _CHECK_MEMO:
        with labcore.one_thread():
            _CHECK_MEMO[key] = _check_message(function, fn)
    return _CHECK_MEMO[key]


def _check_message(function: str, fn: Callable) -> str | None:
    check, names = CHECKS[function]
    try:
        check(*(fn.__globals__[name] for name in names))
    except CheckFailed as err:
        return str(err)
    return None


MISTAKES = [(f, *entry) for f, entries in lab5.MISTAKES.items() for entry in entries]
VALID = [(f, *entry) for f, entries in lab5.VALID.items() for entry in entries]


def test_the_catalogue_covers_every_exercise():
    assert set(lab5.MISTAKES) == set(lab5.VALID) == set(EXERCISES) == set(lab5.SOLUTIONS)
    for function in EXERCISES:
        assert len(lab5.MISTAKES[function]) >= 5, function
        assert len(lab5.VALID[function]) >= 3, function


@pytest.mark.parametrize("function", list(EXERCISES))
def test_the_solution_passes_check_and_rubric(function):
    assert check_message(function, lab5.SOLUTIONS[function]) is None
    points, messages = rubric_points(function, lab5.SOLUTIONS[function])
    assert points == EXERCISES[function].points, messages


@pytest.mark.parametrize(
    "function, name, fn, hint", MISTAKES, ids=[f"{m[0]}: {m[1]}" for m in MISTAKES]
)
def test_mistake_is_rejected_by_check_and_rubric(function, name, fn, hint):
    message = check_message(function, fn)
    assert message is not None, f"the check accepted: {name}"
    assert hint in message, message
    assert "def " not in message and "return " not in message  # never the answer's code
    points, messages = rubric_points(function, fn)
    assert points < EXERCISES[function].points, f"the rubric gave full points to: {name}"


@pytest.mark.parametrize("function, name, fn", VALID, ids=[f"{v[0]}: {v[1]}" for v in VALID])
def test_valid_alternative_passes_check_and_rubric(function, name, fn):
    assert check_message(function, fn) is None, check_message(function, fn)
    points, messages = rubric_points(function, fn)
    assert points == EXERCISES[function].points, messages


def test_catalogue_table(capsys):
    """The per-exercise table of the closing note (printed; run with -s to see it)."""
    rows = []
    for function in EXERCISES:
        caught = sum(
            check_message(function, fn) is not None
            and rubric_points(function, fn)[0] < EXERCISES[function].points
            for _, fn, _ in lab5.MISTAKES[function]
        )
        accepted = sum(
            check_message(function, fn) is None
            and rubric_points(function, fn)[0] == EXERCISES[function].points
            for _, fn in lab5.VALID[function]
        )
        rows.append(
            (function, caught, len(lab5.MISTAKES[function]), accepted, len(lab5.VALID[function]))
        )
    with capsys.disabled():
        print("\nexercise | mistakes caught / tried | valid accepted / tried")
        for function, caught, tried, accepted, valid in rows:
            print(f"{function} | {caught} / {tried} | {accepted} / {valid}")
    assert all(c == t and a == v for _, c, t, a, v in rows)
