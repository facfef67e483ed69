"""Lab 2's mistake catalogue (``tests/mistakes/lab2.py``) through the notebook check and the rubric.

Every catalogued mistake must fail the check, with a message naming the likely cause, and lose
points in the grader; every valid alternative must pass both. The rubric runs in this process
through the grader's own kernel-side harness (no kernel). ``test_catalogue_table`` prints the
per-exercise table (mistakes caught / tried, valid accepted / tried).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from mistakes import lab2, runner

import labcore
from labcore.checks import CheckFailed
from labcore.checks import attention as checks
from labcore.rubrics import load_rubric

RUBRIC = load_rubric("02-attention")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread (on a loaded two-core machine the thread pool costs 20 ms a matmul)."""
    with labcore.one_thread():
        yield


EXERCISES = {e.function: e for e in RUBRIC.exercises}


_RESULTS: dict[tuple[str, str, int], Any] = {}  # computed once: the table reuses the verdicts


def rubric_points(function: str, fn: Callable) -> tuple[float, list[str]]:
    """The points ``fn`` earns on the hidden cases of seed 0, and the failure messages."""
    key = ("rubric", function, id(fn))
    if key not in _RESULTS:
        _RESULTS[key] = _rubric_points(function, fn)
    return _RESULTS[key]


def _rubric_points(function: str, fn: Callable) -> tuple[float, list[str]]:
    return runner.rubric_points(RUBRIC, function, {function: fn})


def check_message(function: str, fn: Callable) -> str | None:
    """``None`` if the notebook check passes, else its failure message."""
    key = ("check", function, id(fn))
    if key not in _RESULTS:
        _RESULTS[key] = _check_message(function, fn)
    return _RESULTS[key]


def _check_message(function: str, fn: Callable) -> str | None:
    try:
        if function == "split_heads":  # exercise 3 checks two functions
            checks.check_split_merge_heads(fn, fn.__globals__["merge_heads"])
        else:
            getattr(checks, f"check_{function}")(fn)
    except CheckFailed as err:
        return str(err)
    return None


MISTAKES = [(f, *entry) for f, entries in lab2.MISTAKES.items() for entry in entries]
VALID = [(f, *entry) for f, entries in lab2.VALID.items() for entry in entries]


def test_the_catalogue_covers_every_exercise():
    assert set(lab2.MISTAKES) == set(lab2.VALID) == set(EXERCISES) == set(lab2.SOLUTIONS)
    for function in EXERCISES:
        assert len(lab2.MISTAKES[function]) >= 5, function
        assert len(lab2.VALID[function]) >= 3, function


@pytest.mark.parametrize("function", list(EXERCISES))
def test_the_solution_passes_check_and_rubric(function):
    assert check_message(function, lab2.SOLUTIONS[function]) is None
    points, messages = rubric_points(function, lab2.SOLUTIONS[function])
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


def test_checks_leave_rng_and_default_dtype_alone():
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    for function, fn in lab2.SOLUTIONS.items():
        assert _check_message(function, fn) is None
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.get_default_dtype() == dtype


def test_catalogue_table(capsys):
    """The per-exercise table of the closing note (printed; run with -s to see it)."""
    rows = []
    for function in EXERCISES:
        caught = sum(
            check_message(function, fn) is not None
            and rubric_points(function, fn)[0] < EXERCISES[function].points
            for _, fn, _ in lab2.MISTAKES[function]
        )
        accepted = sum(
            check_message(function, fn) is None
            and rubric_points(function, fn)[0] == EXERCISES[function].points
            for _, fn in lab2.VALID[function]
        )
        rows.append(
            (function, caught, len(lab2.MISTAKES[function]), accepted, len(lab2.VALID[function]))
        )
    with capsys.disabled():
        print("\nexercise | mistakes caught / tried | valid accepted / tried")
        for function, caught, tried, accepted, valid in rows:
            print(f"{function} | {caught} / {tried} | {accepted} / {valid}")
    assert all(c == t and a == v for _, c, t, a, v in rows)
