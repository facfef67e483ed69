"""Lab 3's mistake catalogue (``tests/mistakes/lab3.py``) through the notebook check and the rubric.

Every catalogued mistake must fail the check, with a message naming the likely cause, and lose
points in the grader; every valid alternative must pass both; no check may change the global RNG
state or the default dtype. The tests are written by :func:`mistakes.runner.define_tests`.
"""

from __future__ import annotations

import pytest
from mistakes import lab3, runner

from labcore.checks import attribution as checks

CATALOGUE = runner.Catalogue(lab3, "03-attribution", runner.check_by_name(checks))
runner.define_tests(globals(), CATALOGUE)

CHAINED = runner.chained_entries(CATALOGUE, checks.IN_PLACE)


@pytest.mark.parametrize("function, name, fn", CHAINED, ids=[f"{c[0]}: {c[1]}" for c in CHAINED])
def test_a_wrong_saliency_costs_points_in_exercise_1_only(function, name, fn, monkeypatch):
    """gradient_x_input may call the student's saliency: its check and rubric run it with
    labcore's saliency in that name's place, so a wrong saliency costs points in exercise 1 only."""
    assert len(CHAINED) >= 2
    runner.assert_graded_on_its_own(CATALOGUE, function, fn, checks.IN_PLACE, monkeypatch)
