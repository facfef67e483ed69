"""What the grader tests of labs 5 and 6 share: lean submissions graded in one command, the
solution's namespace graded in this process, and the seed rule of the hidden cases.

A test module names its lab and the exercises it makes wrong, then uses
:func:`grade_solution_stubs_and_wrong` in a module-scoped fixture (one ``labcore.grade`` command
with ``--jobs 2`` on the solution, the untouched lab and the solution with the wrong exercises)
and :func:`outcomes` for the grader's verdict on every hidden case without a kernel (the grader's
own kernel-side harness and scoring, through ``tests/mistakes/runner.py``).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import torch
from mistakes import runner
from submissions import lean_submission

from labcore.grading.transport import load_cases, save_cases
from labcore.rubrics import Rubric

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("setup", "imports")  # besides the exercise cells


def lean(
    lab: str, base: str, replace: dict[str, str] | None = None, keep: tuple[str, ...] = KEEP
) -> nbformat.NotebookNode:
    """``base``/``lab``.ipynb (``base`` is ``solutions`` or ``labs``) reduced to the cells of
    ``keep`` and the exercise cells, the cells of ``replace`` (grade_id -> source) replaced."""
    return lean_submission(ROOT / base / f"{lab}.ipynb", keep, replace)


def grade_solution_stubs_and_wrong(
    lab: str, folder: Path, wrong: dict[str, tuple[str, int]], keep: tuple[str, ...] = KEEP
) -> dict[str, dict[str, str]]:
    """Grade three lean submissions of ``lab`` in one command: ``solution``, ``stubs`` (the
    untouched lab) and ``wrong`` (the solution with each cell of ``wrong``, grade_id -> (source,
    number of failing cases), replaced), each with the cells of ``keep`` besides its exercise
    cells. Returns the gradebook rows by submission name."""
    notebooks = {
        "solution": lean(lab, "solutions", keep=keep),
        "stubs": lean(lab, "labs", keep=keep),
        "wrong": lean(
            lab, "solutions", {grade_id: source for grade_id, (source, _) in wrong.items()}, keep
        ),
    }
    paths = []
    for name, nb in notebooks.items():
        paths.append(folder / f"{name}.ipynb")
        nbformat.write(nb, paths[-1])
    cmd = [sys.executable, "-m", "labcore.grade", lab, *map(str, paths),
           "--out", str(folder / "grades.csv"), "--feedback-dir", str(folder / "feedback"),
           "--jobs", "2", "--timeout", "60", "--memory-mb", "3000"]  # fmt: skip
    process = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    with open(folder / "grades.csv", newline="", encoding="utf-8") as handle:
        return {row["submission"]: row for row in csv.DictReader(handle)}


def points(rubric: Rubric, row: dict[str, str]) -> dict[str, float]:
    """A gradebook row's points per exercise."""
    return {e.grade_id: float(row[e.grade_id]) for e in rubric.exercises}


def full(rubric: Rubric) -> dict[str, float]:
    """Full points per exercise."""
    return {e.grade_id: e.points for e in rubric.exercises}


def partial(rubric: Rubric, wrong: dict[str, tuple[str, int]]) -> dict[str, float]:
    """The points per exercise of the solution with ``wrong``'s exercises failing their stated
    number of hidden cases (of seed 0), rounded as the gradebook rounds them."""
    expected = full(rubric)
    for grade_id, (_, n_failed) in wrong.items():
        exercise = rubric.exercise(grade_id)
        n_cases = len(exercise.make_cases(0))
        expected[grade_id] = round(exercise.points * (n_cases - n_failed) / n_cases, 2)
    return expected


def namespace(lab: str, replace: dict[str, str] | None = None) -> dict[str, Any]:
    """The solution's imports and exercise cells executed in one namespace (a student's kernel)."""
    space: dict[str, Any] = {}
    for cell in lean(lab, "solutions", replace).cells:
        if cell.id != "setup":
            exec(cell.source, space)  # the course's own solution code
    return space


def outcomes(
    rubric: Rubric, grade_id: str, space: dict[str, Any], seed: int = 0
) -> list[tuple[str, bool, str]]:
    """``(case, passed, message)`` for every hidden case of ``seed``, graded in this process."""
    found = runner.case_outcomes(rubric, rubric.exercise(grade_id), space, seed=seed)
    return [(o.name, o.passed, o.message) for o in found]


def tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in ``value`` (nested dicts, lists and tuples), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in tensors(v)]
    return []


def numbers(value: Any) -> list[Any]:
    """Every int and float in ``value`` (nested dicts, lists and tuples), in order."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def assert_cases_follow_the_seed(rubric: Rubric, path: Path, *, numbers_count: bool) -> None:
    """The hidden cases survive the grader's save and weights-only load (same names), are equal
    for equal seeds, and the first case of every exercise changes with the seed: a tensor
    changes, or (``numbers_count``) one of its numbers does."""
    save_cases(rubric, 0, path)  # what the grader hands to its workers
    loaded = load_cases(path)
    for exercise in rubric.exercises:
        assert [c.name for c in loaded[exercise.grade_id]] == [
            c.name for c in exercise.make_cases(0)
        ]
        same, again, other = (exercise.make_cases(s)[0].inputs for s in (0, 0, 1))
        assert all(torch.equal(a, b) for a, b in zip(tensors(same), tensors(again), strict=True))
        changed_tensor = any(
            a.shape != b.shape or not torch.equal(a, b)
            for a, b in zip(tensors(same), tensors(other), strict=True)
        )
        changed_number = numbers_count and numbers(same) != numbers(other)
        assert changed_tensor or changed_number, exercise.grade_id
