"""Hidden tests of lab 2, attention and transformers (``labs/02-attention.ipynb``).

Seven exercises, 17 points. The hidden inputs are drawn from the grader's ``--seed`` with the case
builders of :mod:`labcore.checks.attention`, and every case is judged by the same rule as the
notebook check (:func:`labcore.checks.attention.judge`), after the same kernel-side call (the
check's call source runs in the student's kernel): the check and the grader cannot disagree.
Modules travel as a configuration and a state dict and are rebuilt in the kernel. Each exercise is
graded on its own: ``self_attention`` runs with labcore's ``attention``, ``causal_mask``,
``split_heads`` and ``merge_heads`` bound under those names in the student's namespace, and
``block_forward`` with labcore's ``self_attention`` too, so one mistake costs points once.
"""

from __future__ import annotations

from typing import Any

from labcore.checks import attention as rules
from labcore.rubrics import Exercise, HiddenCase, Opaque, Rubric, TensorResult, case_generator

__all__ = ["RUBRIC", "plain"]

LAB = "02-attention"


def plain(value: Any) -> Any:
    """A value shipped back by the kernel, as the notebook check sees it: tensors for
    :class:`TensorResult`, lists, tuples and dicts recursively; an :class:`Opaque` stays."""
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

    # the first use of the meta device in a fresh kernel loads torch's meta kernels (about 3 s)
    return Exercise(
        grade_id, function, points, make_cases, score, call_source=source, case_timeout=30.0
    )


RUBRIC = Rubric(
    lab=LAB,
    exercises=(
        _exercise(1, "ex-attention", "attention", 3),
        _exercise(2, "ex-causal-mask", "causal_mask", 1),
        _exercise(3, "ex-split-merge-heads", "split_heads", 2),
        _exercise(4, "ex-self-attention", "self_attention", 3),
        _exercise(5, "ex-block", "block_forward", 3),
        _exercise(6, "ex-attention-to", "attention_to", 2),
        _exercise(7, "ex-ablate-head", "ablate_head", 3),
    ),
    reference_modules=("labcore.attention", "labcore.transformer", "labcore.checks.attention"),
)
