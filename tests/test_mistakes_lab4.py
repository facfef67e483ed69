"""Lab 4's mistake catalogue (``tests/mistakes/lab4.py``) through the notebook check and the rubric.

Every catalogued mistake must fail the check, with a message naming the likely cause, and lose
points in the grader; every valid alternative must pass both; no check may change the global RNG
state or the default dtype. The tests are written by :func:`mistakes.runner.define_tests`.
"""

from __future__ import annotations

import pytest
from mistakes import lab4, runner

from labcore.checks import dynamics as checks

CATALOGUE = runner.Catalogue(lab4, "04-dynamics", runner.check_by_name(checks))
runner.define_tests(globals(), CATALOGUE)

CHAINED = runner.chained_entries(CATALOGUE, checks.IN_PLACE)


@pytest.mark.parametrize("function, name, fn", CHAINED, ids=[f"{c[0]}: {c[1]}" for c in CHAINED])
def test_a_wrong_earlier_exercise_costs_points_once(function, name, fn, monkeypatch):
    """attention_velocity calls project_tangent, convergence_order calls integrate and
    attention_velocity, continuity_rhs calls circle_velocity: their checks and rubrics run them
    with labcore's versions in those names' places, so a wrong earlier exercise costs points in
    its own exercise only."""
    assert {c[0] for c in CHAINED} == set(checks.IN_PLACE)
    runner.assert_graded_on_its_own(CATALOGUE, function, fn, checks.IN_PLACE, monkeypatch)
