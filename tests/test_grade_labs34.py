"""The rubrics of lab 3 (attribution) and lab 4 (dynamics): full marks, zero, exact partial credit.

Submissions are lean copies of ``solutions/`` and ``labs/``: the setup, the imports and helpers the
exercises use, and the exercise cells (the slow demo cells are dropped; the digits classifier of
lab 3 is not trained). Both labs are graded at the same time through the command line. The
reference implementations are also run through the kernel-side harness on every hidden case
(no kernel).
"""

from __future__ import annotations

import copy
import csv
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
import torch
from submissions import lean_submission

from labcore import attribution, dynamics, mean_field, probabilistic
from labcore.checks import attribution as attribution_checks
from labcore.checks import dynamics as dynamics_checks
from labcore.grading.worker import score_locally
from labcore.rubrics import load_rubric

ROOT = Path(__file__).resolve().parents[1]
LABS = ("03-attribution", "04-dynamics")
#: cells kept besides the exercises (the helpers they call); lab 3's cell-1 is cut before the data
KEEP = {
    "03-attribution": ("setup", "cell-1", "cell-14"),
    "04-dynamics": ("setup", "imports", "cell-19"),
}
FLAG = "flagged: references labcore's reference implementation (see feedback)"
#: one wrong exercise per lab, with the number of its hidden cases it still passes
WRONG = {
    "03-attribution": (
        "ex-shapley-permutations",
        """
        def shapley_permutations(model, x, baseline, perms, target=None):
            m, n = perms.shape
            rank = perms.argsort(1)
            sizes = torch.arange(n + 1, device=x.device)
            masks = (rank.unsqueeze(1) < sizes.view(1, -1, 1)).reshape(m * (n + 1), n)
            v = coalition_values(model, x, baseline, target, masks).view(m, n + 1, -1)
            marginal = v[:, 1:] - v[:, :-1]
            by_feature = marginal.gather(1, rank.unsqueeze(2).expand_as(marginal))
            return by_feature.sum(0).T.to(x.dtype)  # summed, not averaged
        """,
        2,  # only the two single-permutation cases
    ),
    "04-dynamics": (
        "ex-integrate",
        """
        def integrate(velocity, x0, t_max, n_steps, step, renormalize=True):
            dt = t_max / n_steps
            frames = [x0]
            x = x0
            for _ in range(n_steps):
                x = step(velocity, x, dt)
                x = x / x.norm(dim=-1, keepdim=True)  # renormalize ignored
                frames.append(x)
            return torch.stack(frames)
        """,
        3,  # all but the renormalize=False case
    ),
}


def lean(lab: str, base: str, replace: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """``base``/``lab``.ipynb reduced to its setup, helpers and exercise cells."""
    nb = lean_submission(ROOT / base / f"{lab}.ipynb", KEEP[lab], replace)
    if lab == "03-attribution":  # keep the imports of cell-1, not the data loading after them
        for cell in nb.cells:
            if cell.get("id") == "cell-1":
                cell.source = cell.source.split("X_train, y_train")[0]
    return nb


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict[str, str]]]:
    """Grade solution, untouched lab and one wrong answer of both labs (two commands at once)."""
    folder = tmp_path_factory.mktemp("grading34")
    runs = {}
    for lab in LABS:
        grade_id, source, _ = WRONG[lab]
        notebooks = {
            "solution": lean(lab, "solutions"),
            "stubs": lean(lab, "labs"),
            "wrong": lean(lab, "solutions", {grade_id: source}),
        }
        paths = []
        for name, nb in notebooks.items():
            path = folder / lab / f"{name}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, path)
            paths.append(str(path))
        cmd = [sys.executable, "-m", "labcore.grade", lab, *paths, "--jobs", "2",
               "--out", str(folder / lab / "grades.csv"), "--timeout", "60"]  # fmt: skip
        runs[lab] = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    result = {}
    for lab, process in runs.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        with open(folder / lab / "grades.csv", newline="", encoding="utf-8") as handle:
            result[lab] = {row["submission"]: row for row in csv.DictReader(handle)}
    return result


def points(lab: str, row: dict[str, str]) -> dict[str, float]:
    return {e.grade_id: float(row[e.grade_id]) for e in load_rubric(lab).exercises}


@pytest.mark.parametrize("lab", LABS)
def test_solution_gets_full_marks(rows, lab):
    rubric = load_rubric(lab)
    row = rows[lab]["solution"]
    assert points(lab, row) == {e.grade_id: e.points for e in rubric.exercises}
    assert float(row["total"]) == rubric.max_total == float(row["max_total"])
    # not flagged: table_gaps reads the keys "saliency", ... of its table, and cluster_counts is
    # meant to call labcore's D.attention_velocity (another exercise's function)
    assert row["status"] == "ok"


@pytest.mark.parametrize("lab", LABS)
def test_untouched_lab_gets_zero(rows, lab):
    row = rows[lab]["stubs"]
    assert float(row["total"]) == 0
    functions = [f"`{e.function}`" for e in load_rubric(lab).exercises]  # never the hidden ids
    assert "not implemented: " + ", ".join(functions) in row["status"]
    assert "the kernel" not in row["status"]  # no kernel trouble (a function may be kernel_...)


@pytest.mark.parametrize("lab", LABS)
def test_one_wrong_exercise_gets_exact_partial_credit(rows, lab):
    rubric = load_rubric(lab)
    grade_id, _, n_passed = WRONG[lab]
    exercise = rubric.exercise(grade_id)
    n_cases = len(exercise.make_cases(0))
    expected = {e.grade_id: e.points for e in rubric.exercises}
    expected[grade_id] = round(exercise.points * n_passed / n_cases, 2)
    assert points(lab, rows[lab]["wrong"]) == expected


# --------------------------------------------------------------------------- without kernels
def _cascade(model: torch.nn.Module, generator: torch.Generator) -> list[torch.nn.Module]:
    models, current = [copy.deepcopy(model)], copy.deepcopy(model)
    for layer in reversed(current.layers):
        with torch.no_grad():
            s = layer.weight.std()
            for p in (layer.weight, layer.bias):
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * s)
        models.append(copy.deepcopy(current))
    return models


def _integrate(velocity, x0, t_max, n_steps, step, renormalize=True):
    frames, x = [x0], x0
    for _ in range(n_steps):
        x = step(velocity, x, t_max / n_steps)
        x = x / x.norm(dim=-1, keepdim=True) if renormalize else x
        frames.append(x)
    return torch.stack(frames)


def _order(step, dts, t_max=2.0, phi0=1.5):
    x0 = dynamics.from_angles(torch.tensor([0.0, phi0], dtype=torch.float64))
    exact = dynamics_checks._two_particle_gap(phi0, t_max)
    errors = [
        abs(dynamics_checks._gap(_integrate(lambda y: dynamics.attention_velocity(y, 0.0), x0,
                                            t_max, round(t_max / dt), step)[-1]) - exact)
        for dt in dts
    ]  # fmt: skip
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


REFERENCES: dict[str, Any] = {
    "saliency": attribution.saliency,
    "gradient_x_input": attribution.gradient_x_input,
    "integrated_gradients": lambda m, x, b, t=None, steps=64: attribution.integrated_gradients(
        m, x, b, t, steps=steps, method="riemann_middle", return_delta=True
    ),
    "shapley_exact": attribution.shapley_exact,
    "shapley_permutations": attribution_checks._permutation_reference,
    "relu_moments": probabilistic.relu_moments,
    "table_gaps": attribution_checks._table_gaps_reference,
    "cascading_randomization": _cascade,
    "project_tangent": dynamics.project_tangent,
    "attention_velocity": dynamics.attention_velocity,
    "euler_step": dynamics_checks._euler_step,
    "rk4_step": dynamics_checks._rk4_step,
    "integrate": _integrate,
    "convergence_order": _order,
    "cluster_counts": dynamics_checks._reference_counts,
    "circle_velocity": mean_field.circle_velocity,
    "continuity_rhs": dynamics_checks._continuity_rhs,
    "first_merge_time": dynamics_checks._reference_first_merge_times,
}


@pytest.mark.parametrize("lab", LABS)
def test_references_pass_every_hidden_case_and_inputs_follow_the_seed(lab):
    rubric = load_rubric(lab)
    with tempfile.TemporaryDirectory() as folder:
        for exercise in rubric.exercises:
            namespace = {exercise.function: REFERENCES[exercise.function]}
            for case in exercise.make_cases(0):
                outcome = score_locally(rubric, exercise, case, namespace, Path(folder))
                assert outcome.passed, f"{exercise.grade_id}, {case.name}: {outcome.message}"
    first, other = (rubric.exercises[0].make_cases(s) for s in (0, 1))
    assert not torch.equal(first[0].inputs["args"][0], other[0].inputs["args"][0])
