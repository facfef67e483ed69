"""Lab 1's mistake catalogue (``tests/mistakes/lab1.py``) through the notebook check and the rubric.

Every catalogued mistake must fail the check, with a message naming the likely cause, and lose
points in the grader; every valid alternative must pass both; no check may change the global RNG
state or the default dtype. The tests are written by :func:`mistakes.runner.define_tests`; the solution's
``train_classifier`` is graded by the rubric only (its check trains for about 5 s: nbval runs it
in the solution notebook and ``tests/test_checks_mlp.py`` runs it too).
"""

from __future__ import annotations

import textwrap
from typing import Any

from mistakes import lab1, runner

from labcore.checks import mlp as checks

CATALOGUE = runner.Catalogue(
    lab1, "01-mlp", runner.check_by_name(checks), rubric_only=["train_classifier"]
)
runner.define_tests(globals(), CATALOGUE)


def test_a_wrong_layer_forward_costs_points_in_exercise_1_only():
    """mlp_forward calls the student's layer_forward: the check and the rubric run it with the
    reference in that name's place (and put the student's back), so a float32 cast in
    layer_forward does not cost the correct mlp_forward anything."""
    namespace: dict[str, Any] = {}
    exec(
        textwrap.dedent(
            """
            def layer_forward(x, W, b, activation):
                z = (x @ W.T).float()
                return activation(z if b is None else z + b.float())

            def mlp_forward(params, x, activation):
                for W, b in params[:-1]:
                    x = layer_forward(x, W, b, activation)
                W, b = params[-1]
                return layer_forward(x, W, b, lambda z: z)
            """
        ),
        namespace,
    )
    wrong_layer = namespace["layer_forward"]
    wrong = CATALOGUE.verdict("layer_forward", wrong_layer)
    assert "keep x's dtype" in wrong.message
    assert wrong.points < CATALOGUE.full("layer_forward")
    verdict = CATALOGUE.verdict("mlp_forward", namespace["mlp_forward"])
    assert verdict.message is None
    assert verdict.points == CATALOGUE.full("mlp_forward"), verdict.messages
    assert namespace["layer_forward"] is wrong_layer  # the student's function is put back
