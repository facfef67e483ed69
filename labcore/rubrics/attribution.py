"""Hidden tests of lab 3, attribution methods (``labs/03-attribution.ipynb``).

Eight exercises, 18 points. The hidden inputs (small random ``labcore.mlp.MLP``\\ s sent to the
kernel as their sizes, activation and weights, inputs, baselines, targets, permutations, moments,
tables) are drawn from the grader's ``--seed`` with the case builders of
:mod:`labcore.checks.attribution`, and every case is judged by the same rule as the notebook check
(:func:`labcore.checks.attribution.judge`), after the same kernel-side call (the check's
``CALL_SOURCE`` or ``CASCADE_CALL_SOURCE`` runs in the student's kernel): the check and the grader
cannot disagree. Expected values come from :mod:`labcore.attribution` and
:mod:`labcore.probabilistic`, computed in the grader's process.
"""

from __future__ import annotations

import functools

from labcore.checks import attribution as checks
from labcore.rubrics import Rubric, judged_exercise

__all__ = ["RUBRIC"]

LAB = "03-attribution"

_exercise = functools.partial(judged_exercise, LAB, checks)

RUBRIC = Rubric(
    lab=LAB,
    exercises=(
        _exercise(1, "ex-saliency", "saliency", 2),
        _exercise(2, "ex-gradient-x-input", "gradient_x_input", 2),
        _exercise(3, "ex-integrated-gradients", "integrated_gradients", 3),
        _exercise(4, "ex-shapley-exact", "shapley_exact", 3),
        _exercise(5, "ex-shapley-permutations", "shapley_permutations", 3),
        _exercise(6, "ex-relu-moments", "relu_moments", 2),
        _exercise(7, "ex-table-gaps", "table_gaps", 1),
        _exercise(8, "ex-cascading-randomization", "cascading_randomization", 2),
    ),
    reference_modules=(
        "labcore.attribution",
        "labcore.probabilistic",
        "labcore.checks.attribution",
    ),
)
