"""The rubric of lab 5 (transcoders): full marks for the solution, zero for the lab, exact partial
credit, and typical wrong answers detected.

One grading command (``--jobs 2``) grades three lean submissions built from ``solutions/`` and
``labs/`` (the setup, the imports and the exercise cells; the slow demo cells are dropped): the
solution, the untouched lab, and the solution with two exercises wrong in ways that fail a known
number of hidden cases. The other tests run the kernel-side harness in this process (no kernel) on
the solution's own functions and on typical mistakes.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch
from submissions import lean_submission

from labcore.grade import (
    _HARNESS,
    MAX_TENSOR_ELEMENTS,
    SubmissionGrade,
    _load_cases,
    _read_record,
    _save_cases,
    _Worker,
)
from labcore.rubrics import load_rubric

ROOT = Path(__file__).resolve().parents[1]
LAB = "05-transcoders"
KEEP = ("setup", "imports")  # besides the exercise cells
RUBRIC = load_rubric(LAB)

#: exercise made wrong -> (its wrong source, number of its hidden cases that fail)
WRONG = {
    "ex-metrics": (
        """
        def fvu(y_hat, y):
            y = y.reshape(-1, y.shape[-1])
            y_hat = y_hat.reshape(y.shape)
            return (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum()


        def l0(f):
            return (f != 0).float().mean()  # the fraction of active entries, not a count
        """,
        2,  # the two l0 cases with active features (all zero: 0 either way)
    ),
    "ex-penalty": (
        """
        def penalty(f, kind):
            if kind == "l1":
                return f.abs().sum(-1).mean()
            return f.pow(2).sum(-1).mean()  # no ValueError for an unknown kind
        """,
        1,
    ),
}


def lean(base: str, replace: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """``base``/05-transcoders.ipynb reduced to its setup, imports and exercise cells."""
    return lean_submission(ROOT / base / f"{LAB}.ipynb", KEEP, replace)


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Grade the solution, the untouched lab and the wrong submission in one command."""
    folder = tmp_path_factory.mktemp("grading5")
    notebooks = {
        "solution": lean("solutions"),
        "stubs": lean("labs"),
        "wrong": lean("solutions", {grade_id: source for grade_id, (source, _) in WRONG.items()}),
    }
    paths = []
    for name, nb in notebooks.items():
        paths.append(folder / f"{name}.ipynb")
        nbformat.write(nb, paths[-1])
    cmd = [sys.executable, "-m", "labcore.grade", LAB, *map(str, paths),
           "--out", str(folder / "grades.csv"), "--feedback-dir", str(folder / "feedback"),
           "--jobs", "2", "--timeout", "60", "--memory-mb", "3000"]  # fmt: skip
    process = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    with open(folder / "grades.csv", newline="", encoding="utf-8") as handle:
        return {row["submission"]: row for row in csv.DictReader(handle)}


def points(row: dict[str, str]) -> dict[str, float]:
    return {e.grade_id: float(row[e.grade_id]) for e in RUBRIC.exercises}


def full() -> dict[str, float]:
    return {e.grade_id: e.points for e in RUBRIC.exercises}


def test_rubric_points_and_exercises():
    assert RUBRIC.max_total == 19
    assert [e.grade_id for e in RUBRIC.exercises] == [
        "ex-mlp-io", "ex-transcoder-forward", "ex-transcoder-loss", "ex-metrics", "ex-penalty",
        "ex-splice", "ex-animacy-correlation", "ex-ablate-features",
    ]  # fmt: skip


def test_solution_gets_full_marks(rows):
    row = rows["solution"]
    assert points(row) == full()
    assert float(row["total"]) == RUBRIC.max_total == float(row["max_total"])
    assert row["status"] == "ok"  # not flagged: splice_hooks is a tool, not a graded function


def test_untouched_lab_gets_zero_without_crashing(rows):
    row = rows["stubs"]
    assert float(row["total"]) == 0
    functions = ", ".join(f"`{e.function}`" for e in RUBRIC.exercises)  # never the hidden ids
    assert "not implemented: " + functions in row["status"]
    assert "the kernel" not in row["status"]  # no kernel trouble (a function may be kernel_...)


def test_wrong_exercises_get_exact_partial_credit(rows):
    expected = full()
    for grade_id, (_, n_failed) in WRONG.items():
        exercise = RUBRIC.exercise(grade_id)
        n_cases = len(exercise.make_cases(0))
        expected[grade_id] = round(exercise.points * (n_cases - n_failed) / n_cases, 2)
    assert points(rows["wrong"]) == expected
    assert float(rows["wrong"]["total"]) == pytest.approx(sum(expected.values()), abs=0.011)


# --------------------------------------------------------------------------- without kernels
def _namespace(replace: dict[str, str] | None = None) -> dict[str, Any]:
    """The solution's imports and exercise cells executed in one namespace (a student's kernel)."""
    namespace: dict[str, Any] = {}
    for cell in lean("solutions", replace).cells:
        if cell.id != "setup":
            exec(cell.source, namespace)  # the course's own solution code
    return namespace


def _outcomes(grade_id: str, namespace: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """``(case, passed, message)`` for every hidden case of seed 0, graded through the harness."""
    exercise = RUBRIC.exercise(grade_id)
    worker = _Worker.__new__(_Worker)
    worker.grade = SubmissionGrade.empty("x", "x", RUBRIC)
    outcomes = []
    with tempfile.TemporaryDirectory() as folder:
        in_path, out_path = Path(folder) / "in.pt", Path(folder) / "out.pt"
        for case in exercise.make_cases(0):
            torch.save(case.inputs, in_path)
            constants = {
                "NONCE": "n0", "IN_PATH": str(in_path), "OUT_PATH": str(out_path),
                "NAME": exercise.function, "CALL_SOURCE": exercise.call_source,
                "MAX_ELEMENTS": MAX_TENSOR_ELEMENTS, "__labcore_ns": namespace,
            }  # fmt: skip
            exec(_HARNESS, constants)  # the grader's own kernel-side code
            outcome = worker._score(exercise, case, _read_record(out_path, "n0"))
            outcomes.append((case.name, outcome.passed, outcome.message))
    return outcomes


@pytest.mark.parametrize("exercise", RUBRIC.exercises, ids=lambda e: e.grade_id)
def test_the_solution_passes_every_hidden_case(exercise):
    for name, passed, message in _outcomes(exercise.grade_id, _namespace()):
        assert passed, f"{exercise.grade_id}, {name}: {message}"


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return []


def test_hidden_cases_follow_the_seed_and_survive_weights_only_loading(tmp_path):
    path = tmp_path / "cases.pt"
    _save_cases(RUBRIC, 0, path)  # what the grader hands to its workers
    loaded = _load_cases(path)
    for exercise in RUBRIC.exercises:
        assert [c.name for c in loaded[exercise.grade_id]] == [
            c.name for c in exercise.make_cases(0)
        ]
        same, again, other = (_tensors(exercise.make_cases(s)[0].inputs) for s in (0, 0, 1))
        assert all(torch.equal(a, b) for a, b in zip(same, again, strict=True))
        assert any(
            a.shape != b.shape or not torch.equal(a, b) for a, b in zip(same, other, strict=True)
        ), exercise.grade_id


WRONG_ANSWERS = [
    (
        "ex-mlp-io",
        """
        def mlp_io(model, tokens, layer):
            names = [f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.hook_mlp_out"]
            _, cache = model.run_with_cache(tokens, names_filter=names)
            return cache[names[0]].flatten(0, 1), cache[names[1]].flatten(0, 1)
        """,
        4,
        "inputs differs",
    ),
    (
        "ex-mlp-io",
        """
        def mlp_io(model, tokens, layer):
            names = [f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"]
            _, cache = model.run_with_cache(tokens, names_filter=names)
            return cache[names[0]], cache[names[1]]
        """,
        4,
        "should have shape",
    ),
    (
        "ex-transcoder-forward",
        """
        def transcoder_forward(x, W_enc, b_enc, W_dec, b_dec):
            f = torch.relu(x @ W_enc + b_enc)
            return f @ W_dec, f
        """,
        4,
        "y_hat differs",
    ),
    (
        "ex-transcoder-loss",
        """
        def transcoder_loss(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
            y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
            return ((y - y_hat).pow(2).sum(-1) + l1_coeff * f.pow(2).sum(-1)).mean()


        def normalize_decoder_rows(W_dec):
            return W_dec / W_dec.norm(dim=0, keepdim=True)
        """,
        4,
        "differs",  # L2 where L1 was asked (not visible with l1_coeff 0), columns normalised
    ),
    (
        "ex-transcoder-loss",
        """
        def transcoder_loss(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
            y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
            return torch.tensor(((y - y_hat).pow(2).sum(-1) + l1_coeff * f.sum(-1)).mean().item(),
                                dtype=x.dtype)


        def normalize_decoder_rows(W_dec):
            return W_dec / W_dec.norm(dim=1, keepdim=True)
        """,
        3,
        "does not require gradients",
    ),
    (
        "ex-penalty",
        """
        def penalty(f, kind):
            if kind == "l1":
                return f.sum(-1).mean()  # no absolute value
            if kind == "l2":
                return f.pow(2).sum(-1).mean()
            raise ValueError(kind)
        """,
        2,
        "the penalty differs",
    ),
    (
        "ex-splice",
        """
        def spliced_logits(model, transcoder, layer, tokens):
            stored = {}

            def save_input(x, hook):
                stored["x"] = x

            def replace_output(y, hook):
                return y + transcoder(stored.pop("x"))[0]  # added, not replaced

            hooks = [(f"blocks.{layer}.ln2.hook_normalized", save_input),
                     (f"blocks.{layer}.hook_mlp_out", replace_output)]
            return model.run_with_hooks(tokens, fwd_hooks=hooks)


        def loss_recovered(original, ablated, spliced):
            return (spliced - original) / (ablated - original)
        """,
        6,
        "",
    ),
    (
        "ex-animacy-correlation",
        """
        def animacy_correlation(features, animate):
            a = animate.to(features.dtype)
            fc, ac = features - features.mean(0), a - a.mean()
            return (fc * ac[:, None]).sum(0) / (fc.norm(dim=0) * ac.norm())  # nan if constant
        """,
        4,
        "nan",
    ),
    (
        "ex-ablate-features",
        """
        def ablate_features(model, transcoder, layer, tokens, positions, features):
            batch = torch.arange(tokens.shape[0])

            def edit(f):
                f = f.clone()
                picked = f[batch, positions]
                picked[:, features] = 0.0
                f[batch, positions] = picked
                return f

            hooks = T.splice_hooks(transcoder, layer, edit=edit, keep_error=False)
            return model.run_with_hooks(tokens, fwd_hooks=hooks)
        """,
        4,
        "keep the transcoder's error",
    ),
    (
        "ex-ablate-features",
        """
        def ablate_features(model, transcoder, layer, tokens, positions, features):
            def edit(f):
                f = f.clone()
                f[..., features] = 0.0  # at every position
                return f

            hooks = T.splice_hooks(transcoder, layer, edit=edit, keep_error=True)
            return model.run_with_hooks(tokens, fwd_hooks=hooks)
        """,
        3,
        "the logits differs",  # the case without features passes
    ),
]


@pytest.mark.parametrize(
    "grade_id, source, n_failed, message",
    WRONG_ANSWERS,
    ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG_ANSWERS)],
)
def test_typical_wrong_answers_fail_the_expected_hidden_cases(grade_id, source, n_failed, message):
    failed = [(name, text) for name, passed, text in _outcomes(grade_id, _namespace({grade_id: source}))
              if not passed]  # fmt: skip
    assert len(failed) == n_failed, failed
    assert all(message in text for _, text in failed), failed
