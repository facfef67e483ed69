"""The rubrics of labs 1 and 2: full marks for the solution, zero for the lab, exact partial credit.

One grading command (``--jobs 2``) per lab, both labs at once, grades three submissions built from
``solutions/`` and ``labs/``, the slow ungraded demo and check cells dropped: the solution, the
untouched lab, and a solution with one exercise wrong in a way that fails exactly one hidden case.
The command, the gradebook's points and the expected partial credit come from
``tests/grading_fixtures.py``, which the grader tests of labs 5 and 6 share.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grading_fixtures as grading
import pytest

from labcore.rubrics import load_rubric

#: The cells kept besides the exercises: lab 2's imports cell is ``cell-1``, not ``imports``.
KEEP = (*grading.KEEP, "cell-1")

#: lab -> (exercise made wrong, its wrong source, number of hidden cases it fails)
WRONG = {
    "01-mlp": (
        "ex-layer-forward",
        """
        def layer_forward(x, W, b, activation):
            return activation(x @ W.T + b)  # fails when b is None
        """,
        1,
    ),
    "02-attention": (  # self_attention and block_forward call it: graded with labcore's instead
        "ex-attention",
        """
        def attention(q, k, v, mask=None):
            scores = q @ k.transpose(-2, -1)  # no 1 / sqrt(d_k): wrong in every hidden case
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            if mask is not None:
                weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
            return weights @ v, weights
        """,
        6,
    ),
}


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict[str, str]]]:
    """Grade both labs (two commands at once, each with ``--jobs 2``); CSV rows per lab."""
    folders = {lab: tmp_path_factory.mktemp(lab) for lab in WRONG}
    with ThreadPoolExecutor(len(WRONG)) as pool:
        runs = {
            lab: pool.submit(
                grading.grade_solution_stubs_and_wrong,
                lab,
                folders[lab],
                {grade_id: (source, n_failed)},
                KEEP,
            )
            for lab, (grade_id, source, n_failed) in WRONG.items()
        }
        return {lab: run.result() for lab, run in runs.items()}


@pytest.mark.parametrize("lab", list(WRONG))
def test_solution_gets_full_marks(rows, lab):
    rubric = load_rubric(lab)
    row = rows[lab]["solution"]
    assert grading.points(rubric, row) == grading.full(rubric)
    assert row["status"] == "ok"


@pytest.mark.parametrize("lab", list(WRONG))
def test_untouched_lab_gets_zero_without_crashing(rows, lab):
    row = rows[lab]["stubs"]
    assert float(row["total"]) == 0
    functions = ", ".join(f"`{e.function}`" for e in load_rubric(lab).exercises)
    assert "not implemented: " + functions in row["status"]  # never the hidden ids
    assert "the kernel" not in row["status"]  # no kernel trouble (a function may be kernel_...)


@pytest.mark.parametrize("lab", list(WRONG))
def test_one_wrong_exercise_gets_exact_partial_credit(rows, lab):
    grade_id, source, n_failed = WRONG[lab]
    rubric = load_rubric(lab)
    expected = grading.partial(rubric, {grade_id: (source, n_failed)})
    assert expected[grade_id] < rubric.exercise(grade_id).points  # the mistake costs points
    assert grading.points(rubric, rows[lab]["wrong"]) == expected
