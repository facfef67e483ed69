"""Lab 3's mistake catalogue (``tests/mistakes/lab3.py``) through the notebook check and the rubric.

Every catalogued mistake must fail the check, with a message naming the likely cause, and lose
points in the grader; every valid alternative must pass both. The rubric runs in this process
through the grader's own kernel-side harness (no kernel). ``test_catalogue_table`` prints the
per-exercise table (mistakes caught / tried, valid accepted / tried).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from mistakes import lab3, runner

from labcore.checks import CheckFailed
from labcore.checks import attribution as checks
from labcore.rubrics import load_rubric

RUBRIC = load_rubric("03-attribution")
EXERCISES = {e.function: e for e in RUBRIC.exercises}


@functools.cache
def rubric_points(function: str, fn: Callable) -> tuple[float, list[str]]:
    """The points ``fn`` earns on the hidden cases of seed 0, and the failure messages."""
    return runner.rubric_points(RUBRIC, function, {function: fn})


@functools.cache
def check_message(function: str, fn: Callable) -> str | None:
    """``None`` if the notebook check passes, else its failure message."""
    try:
        getattr(checks, f"check_{function}")(fn)
    except CheckFailed as err:
        return str(err)
    return None


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight the other tests for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MISTAKES = [(f, *entry) for f, entries in lab3.MISTAKES.items() for entry in entries]
VALID = [(f, *entry) for f, entries in lab3.VALID.items() for entry in entries]


def test_the_catalogue_covers_every_exercise():
    assert set(lab3.MISTAKES) == set(lab3.VALID) == set(EXERCISES) == set(lab3.SOLUTIONS)
    for function in EXERCISES:
        assert len(lab3.MISTAKES[function]) >= 5, function
        assert len(lab3.VALID[function]) >= 3, function


@pytest.mark.parametrize("function", list(EXERCISES))
def test_the_solution_passes_check_and_rubric(function):
    assert check_message(function, lab3.SOLUTIONS[function]) is None
    points, messages = rubric_points(function, lab3.SOLUTIONS[function])
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
    for function, fn in lab3.SOLUTIONS.items():
        getattr(checks, f"check_{function}")(fn)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.get_default_dtype() == dtype


def test_catalogue_table(capsys):
    """The per-exercise table of the closing note (printed; run with -s to see it)."""
    rows = []
    for function in EXERCISES:
        caught = sum(
            check_message(function, fn) is not None
            and rubric_points(function, fn)[0] < EXERCISES[function].points
            for _, fn, _ in lab3.MISTAKES[function]
        )
        accepted = sum(
            check_message(function, fn) is None
            and rubric_points(function, fn)[0] == EXERCISES[function].points
            for _, fn in lab3.VALID[function]
        )
        rows.append(
            (function, caught, len(lab3.MISTAKES[function]), accepted, len(lab3.VALID[function]))
        )
    with capsys.disabled():
        print("\nexercise | mistakes caught / tried | valid accepted / tried")
        for function, caught, tried, accepted, valid in rows:
            print(f"{function} | {caught} / {tried} | {accepted} / {valid}")
    assert all(c == t and a == v for _, c, t, a, v in rows)
