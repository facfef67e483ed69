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

from typing import Any

from labcore.checks import attribution as rules
from labcore.rubrics import Exercise, HiddenCase, Opaque, Rubric, TensorResult, case_generator

__all__ = ["RUBRIC", "plain"]

LAB = "03-attribution"


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
