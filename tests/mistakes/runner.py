"""Run a catalogue entry through the grader's rubric in this process, as the grader would.

The grader sends each hidden input to the student's kernel, where its own kernel-side harness
(:mod:`labcore.grading.inkernel.harness`) calls the function and writes a record that the grader
scores. Here :func:`labcore.grading.worker.score_locally` runs the same harness on the entry's
namespace (no kernel, no sandbox), with the same transport and the same scoring, so a catalogue
test sees exactly the grader's verdict.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from labcore.grading.records import CaseOutcome
from labcore.grading.worker import score_locally
from labcore.rubrics import Exercise, HiddenCase, Rubric

_CASES: dict[tuple[str, str, int], list[HiddenCase]] = {}


def case_outcomes(
    rubric: Rubric, exercise: Exercise, namespace: dict[str, Any], *, seed: int = 0
) -> list[CaseOutcome]:
    """The grader's outcome of every hidden case of ``seed`` (built once per exercise and seed)
    for ``namespace[exercise.function]``. ``namespace`` plays the student's kernel: a later
    exercise finds the earlier functions it calls there."""
    key = (rubric.lab, exercise.grade_id, seed)
    if key not in _CASES:
        _CASES[key] = list(exercise.make_cases(seed))
    with tempfile.TemporaryDirectory() as folder:
        return [
            score_locally(rubric, exercise, case, namespace, Path(folder)) for case in _CASES[key]
        ]


def rubric_points(
    rubric: Rubric, function: str, namespace: dict[str, Any], *, seed: int = 0
) -> tuple[float, list[str]]:
    """The points that ``namespace[function]`` earns on the hidden cases of ``seed``, and the
    failure messages (``"<case>: <message>"``)."""
    exercise = next(e for e in rubric.exercises if e.function == function)
    outcomes = case_outcomes(rubric, exercise, namespace, seed=seed)
    messages = [f"{o.name}: {o.message}" for o in outcomes if not o.passed]
    return exercise.points * (len(outcomes) - len(messages)) / len(outcomes), messages
