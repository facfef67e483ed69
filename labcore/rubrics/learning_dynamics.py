"""Hidden tests of lab 6, learning dynamics (``labs/06-learning-dynamics.ipynb``).

Eight exercises, 15 points. The hidden inputs are drawn from the grader's ``--seed`` with the case
builders of :mod:`labcore.checks.learning_dynamics`, and every case is judged by the same rule as
the notebook check (:func:`labcore.checks.learning_dynamics.judge`), after the same kernel-side call
(the check's ``CALL_SOURCE`` runs in the student's kernel): the check and the grader cannot
disagree. Expected values come from :mod:`labcore.learning_dynamics` in float64, in the grader's
process.
"""

from __future__ import annotations

import functools

from labcore.checks import learning_dynamics as checks
from labcore.rubrics import Rubric, judged_exercise

__all__ = ["RUBRIC"]

LAB = "06-learning-dynamics"

_exercise = functools.partial(judged_exercise, LAB, checks)

RUBRIC = Rubric(
    lab=LAB,
    exercises=(
        _exercise(1, "ex-input-output-modes", "input_output_modes", 2),
        _exercise(2, "ex-gradient-step", "two_layer_gradient_step", 2),
        _exercise(3, "ex-mode-strength", "mode_strength", 2),
        _exercise(4, "ex-ntk-by-loop", "ntk_by_loop", 2),
        _exercise(5, "ex-arccos-ntk", "arccos_ntk", 2),
        _exercise(6, "ex-kernel-predict", "kernel_predict", 2),
        _exercise(7, "ex-alignment", "alignment", 1),
        _exercise(8, "ex-modular-split", "modular_split", 2),
    ),
    reference_modules=("labcore.learning_dynamics",),
)
