"""The rubric of lab 5 (transcoders): full marks for the solution, zero for the lab, exact partial
credit, and typical wrong answers detected.

One grading command (``--jobs 2``) grades three lean submissions built from ``solutions/`` and
``labs/`` (the setup, the imports and the exercise cells; the slow demo cells are dropped): the
solution, the untouched lab, and the solution with two exercises wrong in ways that fail a known
number of hidden cases. The other tests run the kernel-side harness in this process (no kernel) on
the solution's own functions and on typical mistakes.
"""

from __future__ import annotations

from typing import Any

import grading_fixtures as grading
import pytest

from labcore.rubrics import load_rubric

LAB = "05-transcoders"
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


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Grade the solution, the untouched lab and the wrong submission in one command."""
    return grading.grade_solution_stubs_and_wrong(LAB, tmp_path_factory.mktemp("grading5"), WRONG)


def points(row: dict[str, str]) -> dict[str, float]:
    return grading.points(RUBRIC, row)


def full() -> dict[str, float]:
    return grading.full(RUBRIC)


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
    expected = grading.partial(RUBRIC, WRONG)
    assert points(rows["wrong"]) == expected
    assert float(rows["wrong"]["total"]) == pytest.approx(sum(expected.values()), abs=0.011)


# --------------------------------------------------------------------------- without kernels
def _namespace(replace: dict[str, str] | None = None) -> dict[str, Any]:
    """The solution's imports and exercise cells executed in one namespace (a student's kernel)."""
    return grading.namespace(LAB, replace)


def _outcomes(
    grade_id: str, namespace: dict[str, Any], seed: int = 0
) -> list[tuple[str, bool, str]]:
    """``(case, passed, message)`` for every hidden case of ``seed``, graded through the harness."""
    return grading.outcomes(RUBRIC, grade_id, namespace, seed)


@pytest.mark.parametrize("exercise", RUBRIC.exercises, ids=lambda e: e.grade_id)
def test_the_solution_passes_every_hidden_case(exercise):
    for name, passed, message in _outcomes(exercise.grade_id, _namespace()):
        assert passed, f"{exercise.grade_id}, {name}: {message}"


def test_hidden_cases_follow_the_seed_and_survive_weights_only_loading(tmp_path):
    grading.assert_cases_follow_the_seed(RUBRIC, tmp_path / "cases.pt", numbers_count=False)


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
