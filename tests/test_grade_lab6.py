"""The rubric of lab 6 (learning dynamics): full marks for the solution, zero for the lab, exact
partial credit, and the hidden cases a function of the grader's seed.

One grading command (``--jobs 2``) grades three lean submissions built from ``solutions/`` and
``labs/`` (the setup, the imports and the exercise cells): the solution, the untouched lab, and the
solution with two exercises wrong in ways that fail a known number of hidden cases. The other tests
run the kernel-side harness in this process (no kernel) on the solution's own functions; the
catalogue of typical mistakes is ``tests/test_mistakes_lab6.py``.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch
from submissions import lean_submission

from labcore.grade import (
    _HARNESS,
    MAX_TENSOR_ELEMENTS,
    SubmissionGrade,
    _load_cases,
    _read_record,
    _save_cases,
    _Worker,
)
from labcore.rubrics import load_rubric

ROOT = Path(__file__).resolve().parents[1]
LAB = "06-learning-dynamics"
KEEP = ("setup", "imports")  # besides the exercise cells
RUBRIC = load_rubric(LAB)

#: exercise made wrong -> (its wrong source, number of its hidden cases that fail)
WRONG = {
    "ex-mode-strength": (
        """
        def mode_strength(t, s, a0):
            grow = torch.exp(2 * s * t)  # overflows for large s t: inf / inf = nan
            return s * grow / (grow - 1 + s / a0)
        """,
        2,  # the two cases with 2 s t beyond the dtype's range (float64 and float32)
    ),
    "ex-alignment": (
        """
        def alignment(k, y):
            return ((y @ k @ y) / (k.norm() * y.square().sum())).item()  # a float, not a tensor
        """,
        4,
    ),
}


def lean(base: str, replace: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """``base``/06-learning-dynamics.ipynb reduced to its setup, imports and exercise cells."""
    return lean_submission(ROOT / base / f"{LAB}.ipynb", KEEP, replace)


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Grade the solution, the untouched lab and the wrong submission in one command."""
    folder = tmp_path_factory.mktemp("grading6")
    notebooks = {
        "solution": lean("solutions"),
        "stubs": lean("labs"),
        "wrong": lean("solutions", {grade_id: source for grade_id, (source, _) in WRONG.items()}),
    }
    paths = []
    for name, nb in notebooks.items():
        paths.append(folder / f"{name}.ipynb")
        nbformat.write(nb, paths[-1])
    cmd = [sys.executable, "-m", "labcore.grade", LAB, *map(str, paths),
           "--out", str(folder / "grades.csv"), "--feedback-dir", str(folder / "feedback"),
           "--jobs", "2", "--timeout", "60", "--memory-mb", "3000"]  # fmt: skip
    process = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    with open(folder / "grades.csv", newline="", encoding="utf-8") as handle:
        return {row["submission"]: row for row in csv.DictReader(handle)}


def points(row: dict[str, str]) -> dict[str, float]:
    return {e.grade_id: float(row[e.grade_id]) for e in RUBRIC.exercises}


def full() -> dict[str, float]:
    return {e.grade_id: e.points for e in RUBRIC.exercises}


def test_rubric_points_and_exercises():
    assert RUBRIC.max_total == 15
    assert [e.grade_id for e in RUBRIC.exercises] == [
        "ex-input-output-modes", "ex-gradient-step", "ex-mode-strength", "ex-ntk-by-loop",
        "ex-arccos-ntk", "ex-kernel-predict", "ex-alignment", "ex-modular-split",
    ]  # fmt: skip


def test_solution_gets_full_marks(rows):
    row = rows["solution"]
    assert points(row) == full()
    assert float(row["total"]) == RUBRIC.max_total == float(row["max_total"])
    assert row["status"] == "ok"


def test_untouched_lab_gets_zero_without_crashing(rows):
    row = rows["stubs"]
    assert float(row["total"]) == 0
    functions = ", ".join(f"`{e.function}`" for e in RUBRIC.exercises)  # never the hidden ids
    assert "not implemented: " + functions in row["status"]
    assert "the kernel" not in row["status"]  # no kernel trouble (a function may be kernel_...)


def test_wrong_exercises_get_exact_partial_credit(rows):
    expected = full()
    for grade_id, (_, n_failed) in WRONG.items():
        exercise = RUBRIC.exercise(grade_id)
        n_cases = len(exercise.make_cases(0))
        expected[grade_id] = round(exercise.points * (n_cases - n_failed) / n_cases, 2)
    assert points(rows["wrong"]) == expected
    assert float(rows["wrong"]["total"]) == pytest.approx(sum(expected.values()), abs=0.011)


# --------------------------------------------------------------------------- without kernels
def _namespace(replace: dict[str, str] | None = None) -> dict[str, Any]:
    """The solution's imports and exercise cells executed in one namespace (a student's kernel)."""
    namespace: dict[str, Any] = {}
    for cell in lean("solutions", replace).cells:
        if cell.id != "setup":
            exec(cell.source, namespace)  # the course's own solution code
    return namespace


def _outcomes(
    grade_id: str, namespace: dict[str, Any], seed: int = 0
) -> list[tuple[str, bool, str]]:
    """``(case, passed, message)`` for every hidden case of ``seed``, graded through the harness."""
    exercise = RUBRIC.exercise(grade_id)
    worker = _Worker.__new__(_Worker)
    worker.grade = SubmissionGrade.empty("x", "x", RUBRIC)
    outcomes = []
    with tempfile.TemporaryDirectory() as folder:
        in_path, out_path = Path(folder) / "in.pt", Path(folder) / "out.pt"
        for case in exercise.make_cases(seed):
            torch.save(case.inputs, in_path)
            constants = {
                "NONCE": "n0", "IN_PATH": str(in_path), "OUT_PATH": str(out_path),
                "NAME": exercise.function, "CALL_SOURCE": exercise.call_source,
                "MAX_ELEMENTS": MAX_TENSOR_ELEMENTS, "__labcore_ns": namespace,
            }  # fmt: skip
            exec(_HARNESS, constants)  # the grader's own kernel-side code
            outcome = worker._score(exercise, case, _read_record(out_path, "n0"))
            outcomes.append((case.name, outcome.passed, outcome.message))
    return outcomes


@pytest.mark.parametrize("exercise", RUBRIC.exercises, ids=lambda e: e.grade_id)
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_the_solution_passes_every_hidden_case(exercise, seed):
    for name, passed, message in _outcomes(exercise.grade_id, _namespace(), seed):
        assert passed, f"{exercise.grade_id}, {name}: {message}"


@pytest.mark.parametrize("grade_id", list(WRONG))
def test_the_wrong_answers_fail_the_expected_cases_in_process(grade_id):
    source, n_failed = WRONG[grade_id]
    outcomes = _outcomes(grade_id, _namespace({grade_id: source}))
    assert sum(not passed for _, passed, _ in outcomes) == n_failed, outcomes


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return []


def _numbers(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def test_hidden_cases_follow_the_seed_and_survive_weights_only_loading(tmp_path):
    path = tmp_path / "cases.pt"
    _save_cases(RUBRIC, 0, path)  # what the grader hands to its workers
    loaded = _load_cases(path)
    for exercise in RUBRIC.exercises:
        assert [c.name for c in loaded[exercise.grade_id]] == [
            c.name for c in exercise.make_cases(0)
        ]
        same, again, other = (exercise.make_cases(s)[0].inputs for s in (0, 0, 1))
        assert all(torch.equal(a, b) for a, b in zip(_tensors(same), _tensors(again), strict=True))
        changed_tensor = any(
            a.shape != b.shape or not torch.equal(a, b)
            for a, b in zip(_tensors(same), _tensors(other), strict=True)
        )
        assert changed_tensor or _numbers(same) != _numbers(other), exercise.grade_id
