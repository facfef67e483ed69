"""Lab 4's mistake catalogue (``tests/mistakes/lab4.py``) through the notebook check and the rubric.

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
from mistakes import lab4, runner

from labcore.checks import CheckFailed
from labcore.checks import dynamics as checks
from labcore.rubrics import load_rubric

RUBRIC = load_rubric("04-dynamics")
EXERCISES = {e.function: e for e in RUBRIC.exercises}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids synchronisation costs on a busy machine."""
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
def _verdict(function: str, kind: str, index: int) -> tuple[str | None, float, list[str]]:
    """Check message and rubric points of one catalogue entry, computed once per session."""
    entries = lab4.MISTAKES[function] if kind == "mistake" else lab4.VALID[function]
    fn = entries[index][1]
    message = check_message(function, fn)
    points, messages = rubric_points(function, fn)
    return message, points, messages


MISTAKES = [
    (f, i, *entry) for f, entries in lab4.MISTAKES.items() for i, entry in enumerate(entries)
]
VALID = [(f, i, *entry) for f, entries in lab4.VALID.items() for i, entry in enumerate(entries)]


def test_the_catalogue_covers_every_exercise():
    assert set(lab4.MISTAKES) == set(lab4.VALID) == set(EXERCISES) == set(lab4.SOLUTIONS)
    for function in EXERCISES:
        assert len(lab4.MISTAKES[function]) >= 5, function
        assert len(lab4.VALID[function]) >= 3, function


@pytest.mark.parametrize("function", list(EXERCISES))
def test_the_solution_passes_check_and_rubric(function):
    assert check_message(function, lab4.SOLUTIONS[function]) is None
    points, messages = rubric_points(function, lab4.SOLUTIONS[function])
    assert points == EXERCISES[function].points, messages


@pytest.mark.parametrize(
    "function, index, name, fn, hint", MISTAKES, ids=[f"{m[0]}: {m[2]}" for m in MISTAKES]
)
def test_mistake_is_rejected_by_check_and_rubric(function, index, name, fn, hint):
    message, points, _ = _verdict(function, "mistake", index)
    assert message is not None, f"the check accepted: {name}"
    assert hint in message, message
    assert "def " not in message and "return " not in message  # never the answer's code
    assert points < EXERCISES[function].points, f"the rubric gave full points to: {name}"


@pytest.mark.parametrize("function, index, name, fn", VALID, ids=[f"{v[0]}: {v[2]}" for v in VALID])
def test_valid_alternative_passes_check_and_rubric(function, index, name, fn):
    message, points, messages = _verdict(function, "valid", index)
    assert message is None, message
    assert points == EXERCISES[function].points, messages


def test_checks_leave_rng_and_default_dtype_alone():
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    for function, fn in lab4.SOLUTIONS.items():
        getattr(checks, f"check_{function}")(fn)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.get_default_dtype() == dtype


def test_catalogue_table(capsys):
    """The per-exercise table of the closing note (printed; run with -s to see it)."""
    rows = []
    for function in EXERCISES:
        full = EXERCISES[function].points
        caught = 0
        for index in range(len(lab4.MISTAKES[function])):
            message, points, _ = _verdict(function, "mistake", index)
            caught += message is not None and points < full
        accepted = 0
        for index in range(len(lab4.VALID[function])):
            message, points, _ = _verdict(function, "valid", index)
            accepted += message is None and points == full
        rows.append(
            (function, caught, len(lab4.MISTAKES[function]), accepted, len(lab4.VALID[function]))
        )
    with capsys.disabled():
        print("\nexercise | mistakes caught / tried | valid accepted / tried")
        for function, caught, tried, accepted, valid in rows:
            print(f"{function} | {caught} / {tried} | {accepted} / {valid}")
    assert all(c == t and a == v for _, c, t, a, v in rows)
