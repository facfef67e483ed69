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

import functools

from labcore.checks import attention as checks
from labcore.rubrics import Rubric, judged_exercise

__all__ = ["RUBRIC"]

LAB = "02-attention"

# the first use of the meta device in a fresh kernel loads torch's meta kernels (about 3 s)
_exercise = functools.partial(judged_exercise, LAB, checks, case_timeout=30.0)

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
