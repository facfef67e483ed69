"""The rubric of lab 6 (learning dynamics): full marks for the solution, zero for the lab, exact
partial credit, and the hidden cases a function of the grader's seed.

One grading command (``--jobs 2``) grades three lean submissions built from ``solutions/`` and
``labs/`` (the setup, the imports and the exercise cells): the solution, the untouched lab, and the
solution with two exercises wrong in ways that fail a known number of hidden cases. The other tests
run the kernel-side harness in this process (no kernel) on the solution's own functions; the
catalogue of typical mistakes is ``tests/test_mistakes_lab6.py``.
"""

from __future__ import annotations

from typing import Any

import grading_fixtures as grading
import pytest

from labcore.rubrics import load_rubric

LAB = "06-learning-dynamics"
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


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Grade the solution, the untouched lab and the wrong submission in one command."""
    return grading.grade_solution_stubs_and_wrong(LAB, tmp_path_factory.mktemp("grading6"), WRONG)


def points(row: dict[str, str]) -> dict[str, float]:
    return grading.points(RUBRIC, row)


def full() -> dict[str, float]:
    return grading.full(RUBRIC)


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
    expected = grading.partial(RUBRIC, WRONG)
    assert points(rows["wrong"]) == expected
    assert float(rows["wrong"]["total"]) == pytest.approx(sum(expected.values()), abs=0.011)


# --------------------------------------------------------------------------- without kernels
def _namespace(replace: dict[str, str] | None = None) -> dict[str, Any]:
    """The solution's imports and exercise cells executed in one namespace (a student's kernel)."""
    return grading.namespace(LAB, replace)


def _outcomes(
    grade_id: str, namespace: dict[str, Any], seed: int = 0
) -> list[tuple[str, bool, str]]:
    """``(case, passed, message)`` for every hidden case of ``seed``, graded through the harness."""
    return grading.outcomes(RUBRIC, grade_id, namespace, seed)


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


def test_hidden_cases_follow_the_seed_and_survive_weights_only_loading(tmp_path):
    grading.assert_cases_follow_the_seed(RUBRIC, tmp_path / "cases.pt", numbers_count=True)
