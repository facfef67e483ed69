"""Lab 0's mistake catalogue (``tests/mistakes/lab0.py``) through the notebook check and the rubric.

Every catalogued mistake must fail the check, with a message naming the likely cause, and lose
points in the grader; every valid alternative must pass both. The rubric runs in this process
through the grader's own kernel-side harness (no kernel). Each entry is run once (cached) and
shared by its test and ``test_catalogue_table``, which prints the per-exercise table (mistakes
caught / tried, valid accepted / tried). Training runs on one thread: on a busy machine torch's
thread pool only adds contention to these tiny models.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from mistakes import lab0, runner

from labcore.checks import CheckFailed
from labcore.checks import function_approximation as checks
from labcore.rubrics import load_rubric

RUBRIC = load_rubric("00-function-approximation")
EXERCISES = {e.function: e for e in RUBRIC.exercises}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rubric_points(function: str, fn: Callable) -> tuple[float, list[str]]:
    """The points ``fn`` earns on the hidden cases of seed 0, and the failure messages."""
    return runner.rubric_points(RUBRIC, function, {function: fn})


def check_message(function: str, fn: Callable) -> str | None:
    """``None`` if the notebook check passes, else its failure message."""
    try:
        getattr(checks, f"check_{function}")(fn)
    except CheckFailed as err:
        return str(err)
    return None


@functools.cache
def outcome(function: str, fn: Callable) -> tuple[str | None, float, list[str]]:
    """The check's message and the rubric's points and messages for ``fn`` (run once)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return (check_message(function, fn), *rubric_points(function, fn))
    finally:
        torch.set_num_threads(threads)


MISTAKES = [(f, *entry) for f, entries in lab0.MISTAKES.items() for entry in entries]
VALID = [(f, *entry) for f, entries in lab0.VALID.items() for entry in entries]


def test_the_catalogue_covers_every_exercise():
    assert set(lab0.MISTAKES) == set(lab0.VALID) == set(EXERCISES) == set(lab0.SOLUTIONS)
    for function in EXERCISES:
        assert len(lab0.MISTAKES[function]) >= 5, function
        assert len(lab0.VALID[function]) >= 3, function


@pytest.mark.parametrize("function", list(EXERCISES))
def test_the_solution_passes_check_and_rubric(function):
    message, points, messages = outcome(function, lab0.SOLUTIONS[function])
    assert message is None, message
    assert points == EXERCISES[function].points, messages


@pytest.mark.parametrize(
    "function, name, fn, hint", MISTAKES, ids=[f"{m[0]}: {m[1]}" for m in MISTAKES]
)
def test_mistake_is_rejected_by_check_and_rubric(function, name, fn, hint):
    message, points, messages = outcome(function, fn)
    assert message is not None, f"the check accepted: {name}"
    assert hint in message, message
    assert "def " not in message and "return " not in message  # never the answer's code
    assert points < EXERCISES[function].points, f"the rubric gave full points to: {name}"


@pytest.mark.parametrize("function, name, fn", VALID, ids=[f"{v[0]}: {v[1]}" for v in VALID])
def test_valid_alternative_passes_check_and_rubric(function, name, fn):
    message, points, messages = outcome(function, fn)
    assert message is None, message
    assert points == EXERCISES[function].points, messages


def test_catalogue_table(capsys):
    """The per-exercise table of the closing note (printed; run with -s to see it)."""
    rows = []
    for function in EXERCISES:
        full = EXERCISES[function].points
        caught = 0
        for _, fn, _ in lab0.MISTAKES[function]:
            message, points, _ = outcome(function, fn)
            caught += message is not None and points < full
        accepted = 0
        for _, fn in lab0.VALID[function]:
            message, points, _ = outcome(function, fn)
            accepted += message is None and points == full
        rows.append(
            (function, caught, len(lab0.MISTAKES[function]), accepted, len(lab0.VALID[function]))
        )
    with capsys.disabled():
        print("\nexercise | mistakes caught / tried | valid accepted / tried")
        for function, caught, tried, accepted, valid in rows:
            print(f"{function} | {caught} / {tried} | {accepted} / {valid}")
    assert all(c == t and a == v for _, c, t, a, v in rows)
