"""Lab 1's mistake catalogue (``tests/mistakes/lab1.py``) through the notebook check and the rubric.

Every catalogued mistake must fail the check, with a message naming the likely cause, and lose
points in the grader; every valid alternative must pass both. The rubric runs in this process
through the grader's own kernel-side harness (no kernel). Each function is run once (results are
cached), and ``test_catalogue_table`` prints the per-exercise table (mistakes caught / tried, valid
accepted / tried).
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
import torch
from mistakes import lab1, runner

from labcore.checks import CheckFailed
from labcore.checks import mlp as checks
from labcore.rubrics import load_rubric

RUBRIC = load_rubric("01-mlp")
EXERCISES = {e.function: e for e in RUBRIC.exercises}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models train fastest on one thread (as in the notebook and the grader's kernel)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache  # the table reuses the verdicts of the other tests
def rubric_points(function: str, fn: Callable) -> tuple[float, list[str]]:
    """The points ``fn`` earns on the hidden cases of seed 0, and the failure messages."""
    return runner.rubric_points(RUBRIC, function, {function: fn})


@functools.cache  # the table reuses the verdicts of the other tests
def check_message(function: str, fn: Callable) -> str | None:
    """``None`` if the notebook check passes, else its failure message."""
    try:
        with torch.random.fork_rng(devices=[]):  # some exercises seed the global RNG themselves
            getattr(checks, f"check_{function}")(fn)
    except CheckFailed as err:
        return str(err)
    return None


_RESULTS: dict[tuple[str, str], tuple[str | None, float, list[str]]] = {}


def outcome(function: str, name: str, fn: Callable) -> tuple[str | None, float, list[str]]:
    """(check message, rubric points, rubric messages) of one catalogue entry, computed once."""
    key = (function, name)
    if key not in _RESULTS:
        with torch.random.fork_rng(devices=[]):
            _RESULTS[key] = (check_message(function, fn), *rubric_points(function, fn))
    return _RESULTS[key]


MISTAKES = [(f, *entry) for f, entries in lab1.MISTAKES.items() for entry in entries]
VALID = [(f, *entry) for f, entries in lab1.VALID.items() for entry in entries]


def test_the_catalogue_covers_every_exercise():
    assert set(lab1.MISTAKES) == set(lab1.VALID) == set(EXERCISES) == set(lab1.SOLUTIONS)
    for function in EXERCISES:
        assert len(lab1.MISTAKES[function]) >= 5, function
        assert len(lab1.VALID[function]) >= 3, function


@pytest.mark.parametrize("function", list(EXERCISES))
def test_the_solution_passes_check_and_rubric(function):
    if function == "train_classifier":
        # The check trains the solution's defaults (30 epochs, about 5 s): nbval runs it in the
        # solution notebook and tests/test_checks_mlp.py runs it too; here the rubric only.
        points, messages = rubric_points(function, lab1.SOLUTIONS[function])
        assert points == EXERCISES[function].points, messages
        return
    message, points, messages = outcome(function, "solution", lab1.SOLUTIONS[function])
    assert message is None, message
    assert points == EXERCISES[function].points, messages


@pytest.mark.parametrize(
    "function, name, fn, hint", MISTAKES, ids=[f"{m[0]}: {m[1]}" for m in MISTAKES]
)
def test_mistake_is_rejected_by_check_and_rubric(function, name, fn, hint):
    message, points, _ = outcome(function, name, fn)
    assert message is not None, f"the check accepted: {name}"
    assert hint in message, message
    assert "def " not in message and "return " not in message  # never the answer's code
    assert points < EXERCISES[function].points, f"the rubric gave full points to: {name}"


@pytest.mark.parametrize("function, name, fn", VALID, ids=[f"{v[0]}: {v[1]}" for v in VALID])
def test_valid_alternative_passes_check_and_rubric(function, name, fn):
    message, points, messages = outcome(function, name, fn)
    assert message is None, message
    assert points == EXERCISES[function].points, messages


def test_a_wrong_layer_forward_costs_points_in_exercise_1_only():
    """mlp_forward calls the student's layer_forward: the check and the rubric run it with the
    reference in that name's place (and put the student's back), so a float32 cast in
    layer_forward does not cost the correct mlp_forward anything."""
    namespace: dict[str, Any] = {}
    exec(
        textwrap.dedent(
            """
            def layer_forward(x, W, b, activation):
                z = (x @ W.T).float()
                return activation(z if b is None else z + b.float())

            def mlp_forward(params, x, activation):
                for W, b in params[:-1]:
                    x = layer_forward(x, W, b, activation)
                W, b = params[-1]
                return layer_forward(x, W, b, lambda z: z)
            """
        ),
        namespace,
    )
    wrong_layer = namespace["layer_forward"]
    assert "keep x's dtype" in check_message("layer_forward", wrong_layer)
    assert rubric_points("layer_forward", wrong_layer)[0] < EXERCISES["layer_forward"].points
    assert check_message("mlp_forward", namespace["mlp_forward"]) is None
    points, messages = rubric_points("mlp_forward", namespace["mlp_forward"])
    assert points == EXERCISES["mlp_forward"].points, messages
    assert namespace["layer_forward"] is wrong_layer  # the student's function is put back


def test_catalogue_table(capsys):
    """The per-exercise table of the closing note (printed; run with -s to see it)."""
    rows = []
    for function in EXERCISES:
        caught = 0
        for name, fn, _ in lab1.MISTAKES[function]:
            message, points, _ = outcome(function, name, fn)
            caught += message is not None and points < EXERCISES[function].points
        accepted = 0
        for name, fn in lab1.VALID[function]:
            message, points, _ = outcome(function, name, fn)
            accepted += message is None and points == EXERCISES[function].points
        rows.append(
            (function, caught, len(lab1.MISTAKES[function]), accepted, len(lab1.VALID[function]))
        )
    with capsys.disabled():
        print("\nexercise | mistakes caught / tried | valid accepted / tried")
        for function, caught, tried, accepted, valid in rows:
            print(f"{function} | {caught} / {tried} | {accepted} / {valid}")
    assert all(c == t and a == v for _, c, t, a, v in rows)
