"""Lab 6's mistake catalogue (``tests/mistakes/lab6.py``) through the notebook check and the rubric.

Every catalogued mistake must fail the check, with a message naming the likely cause, and lose
points in the grader; every valid alternative must pass both; no check may change the global RNG
state or the default dtype. The tests are written by :func:`mistakes.runner.define_tests`.
"""

from __future__ import annotations

from mistakes import lab6, runner

from labcore.checks import learning_dynamics as checks

CATALOGUE = runner.Catalogue(lab6, "06-learning-dynamics", runner.check_by_name(checks))
runner.define_tests(globals(), CATALOGUE)
