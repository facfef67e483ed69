"""The rubrics of labs 1 and 2: full marks for the solution, zero for the lab, exact partial credit.

One grading command (``--jobs 2``) per lab grades three submissions built from ``solutions/`` and
``labs/``, the slow ungraded demo and check cells dropped: the solution, the untouched lab, and a
solution with one exercise wrong in a way that fails exactly one hidden case.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from submissions import lean_submission

from labcore.rubrics import load_rubric

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("setup", "imports", "cell-1")  # imports; every other cell but the exercises is dropped

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
    runs = {}
    for lab, (grade_id, source, _) in WRONG.items():
        folder = tmp_path_factory.mktemp(lab)
        notebooks = {
            "solution": lean_submission(ROOT / "solutions" / f"{lab}.ipynb", KEEP),
            "stubs": lean_submission(ROOT / "labs" / f"{lab}.ipynb", KEEP),
            "wrong": lean_submission(ROOT / "solutions" / f"{lab}.ipynb", KEEP, {grade_id: source}),
        }
        paths = []
        for name, nb in notebooks.items():
            paths.append(folder / f"{name}.ipynb")
            nbformat.write(nb, paths[-1])
        cmd = [sys.executable, "-m", "labcore.grade", lab, *map(str, paths),
               "--out", str(folder / "grades.csv"), "--feedback-dir", str(folder / "feedback"),
               "--jobs", "2", "--timeout", "60", "--memory-mb", "3000"]  # fmt: skip
        process = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        runs[lab] = (process, folder)
    result = {}
    for lab, (process, folder) in runs.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        with open(folder / "grades.csv", newline="", encoding="utf-8") as handle:
            result[lab] = {row["submission"]: row for row in csv.DictReader(handle)}
    return result


def points(lab: str, row: dict[str, str]) -> dict[str, float]:
    return {e.grade_id: float(row[e.grade_id]) for e in load_rubric(lab).exercises}


def full(lab: str) -> dict[str, float]:
    return {e.grade_id: e.points for e in load_rubric(lab).exercises}


@pytest.mark.parametrize("lab", list(WRONG))
def test_solution_gets_full_marks(rows, lab):
    row = rows[lab]["solution"]
    assert points(lab, row) == full(lab)
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
    grade_id, _, n_failed = WRONG[lab]
    exercise = load_rubric(lab).exercise(grade_id)
    n_cases = len(exercise.make_cases(0))
    partial = round(exercise.points * (n_cases - n_failed) / n_cases, 2)
    assert points(lab, rows[lab]["wrong"]) == {**full(lab), grade_id: partial}
