"""Hidden tests of lab 6, learning dynamics (``labs/06-learning-dynamics.ipynb``).

Eight exercises, 15 points. The hidden inputs are drawn from the grader's ``--seed`` with the case
builders of :mod:`labcore.checks.learning_dynamics`, and every case is judged by the same rule as
the notebook check (:func:`labcore.checks.learning_dynamics.judge`), after the same kernel-side call
(the check's ``CALL_SOURCE`` runs in the student's kernel): the check and the grader cannot
disagree. Expected values come from :mod:`labcore.learning_dynamics` in float64, in the grader's
process.
"""

from __future__ import annotations

from typing import Any

from labcore.checks import learning_dynamics as rules
from labcore.rubrics import Exercise, HiddenCase, Opaque, Rubric, TensorResult, case_generator

__all__ = ["RUBRIC", "plain"]

LAB = "06-learning-dynamics"


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


def _exercise(index: int, grade_id: str, function: str, points: float) -> Exercise:
    builder = rules.CASES[function]
    source = rules.EXERCISES[function][0]

    def make_cases(seed: int) -> list[HiddenCase]:
        g = case_generator(LAB, seed, index)
        return [HiddenCase(name, spec) for name, spec in builder(g, None)]

    def score(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
        extra = plain(extra) if isinstance(extra, dict) else {}
        return rules.judge(function, case.inputs, plain(value), extra)

    return Exercise(grade_id, function, points, make_cases, score, call_source=source)


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
