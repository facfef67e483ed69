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

from typing import Any

from labcore.checks import function_approximation as rules
from labcore.rubrics import Exercise, HiddenCase, Opaque, Rubric, TensorResult, case_generator

__all__ = ["RUBRIC", "plain"]

LAB = "00-function-approximation"


def plain(value: Any) -> Any:
    """A value shipped back by the kernel, as the notebook check sees it: tensors for
    :class:`TensorResult` (a NumPy array stays an array), lists, tuples and dicts recursively."""
    if isinstance(value, TensorResult):
        return value.tensor.numpy() if value.type_name == "numpy.ndarray" else value.tensor
    if isinstance(value, list | tuple):
        items = [plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, Opaque):
        return value
    return value


def _exercise(
    index: int, grade_id: str, function: str, points: float, case_timeout: float = 10.0
) -> Exercise:
    builder = rules.CASES[function]
    source = rules.EXERCISES[function][0]

    def make_cases(seed: int) -> list[HiddenCase]:
        g = case_generator(LAB, seed, index)
        return [HiddenCase(name, spec) for name, spec in builder(g)]

    def score(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
        extra = plain(extra) if isinstance(extra, dict) else {}
        return rules.judge(function, case.inputs, plain(value), extra)

    return Exercise(
        grade_id, function, points, make_cases, score, call_source=source, case_timeout=case_timeout
    )


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
