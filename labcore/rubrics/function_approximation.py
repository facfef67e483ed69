"""Hidden tests of lab 0, learning as function approximation (``labs/00-function-approximation.ipynb``).

Five exercises, 12 points. The hidden inputs are drawn from the grader's ``--seed`` with the case
builders of :mod:`labcore.checks.function_approximation`, and every case is judged by the same rule
as the notebook check (:func:`labcore.checks.function_approximation.judge`), after the same
kernel-side call (the check's ``CALL_SOURCE`` or ``TRAIN_CALL_SOURCE`` runs in the student's
kernel): the check and the grader cannot disagree. Expected values come from
:mod:`labcore.function_approximation` in float64 (the training exercise: a reference run of Adam
from the same initial weights), in the grader's process.

The first exercise's hidden cases run right after the first graded cell of a fresh kernel, so they
get a wide time limit (``case_timeout=30``). Each takes milliseconds, except that the first
operation on a ``meta`` tensor in a process imports torch's meta kernels (2-4 s here, about 15 s
once with the machine loaded by a grading batch): the checks module does that at import, in the
student's exercise cell (under the cell limit), and the meta run is the exercise's last case, so a
slow import costs one case at most. An endless loop still ends at the limit; the cell limit and
the total limit of the grader are untouched.
"""

from __future__ import annotations

import functools

from labcore.checks import function_approximation as checks
from labcore.rubrics import Rubric, judged_exercise

__all__ = ["RUBRIC"]

LAB = "00-function-approximation"

_exercise = functools.partial(judged_exercise, LAB, checks, device_argument=False)

RUBRIC = Rubric(
    lab=LAB,
    exercises=(
        _exercise(1, "ex-polynomial-features", "polynomial_features", 2, case_timeout=30.0),
        _exercise(2, "ex-train-regressor", "train_regressor", 3, case_timeout=20.0),
        _exercise(3, "ex-gaussian-nll", "gaussian_nll", 2),
        _exercise(4, "ex-gaussian-mle", "gaussian_mle", 2),
        _exercise(5, "ex-mixture-nll", "mixture_nll", 3),
    ),
    reference_modules=("labcore.function_approximation", "labcore.checks.function_approximation"),
)
