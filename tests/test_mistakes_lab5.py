"""Lab 5's mistake catalogue (``tests/mistakes/lab5.py``) through the notebook check and the rubric.

Every catalogued mistake must fail the check, with a message naming the likely cause, and lose
points in the grader; every valid alternative must pass both; no check may change the global RNG
state or the default dtype. The tests are written by :func:`mistakes.runner.define_tests`; exercises with
two functions (and the loss, which calls ``transcoder_forward``) find the second one in the entry's
namespace, as in a notebook (``tests/mistakes/lab5.py``'s ``notebook``).
"""

from __future__ import annotations

from collections.abc import Callable

from mistakes import lab5, runner

from labcore.checks import CheckFailed
from labcore.checks import transcoder as checks

#: exercise -> (the check, the names of the functions it takes, in order)
CHECKS = {
    "mlp_io": (checks.check_mlp_io, ["mlp_io"]),
    "transcoder_forward": (checks.check_transcoder_forward, ["transcoder_forward"]),
    "transcoder_loss": (
        checks.check_transcoder_loss, ["transcoder_loss", "normalize_decoder_rows"]
    ),
    "fvu": (checks.check_metrics, ["fvu", "l0"]),
    "penalty": (checks.check_penalty, ["penalty"]),
    "spliced_logits": (checks.check_splice, ["spliced_logits", "loss_recovered"]),
    "animacy_correlation": (checks.check_animacy_correlation, ["animacy_correlation"]),
    "ablate_features": (checks.check_ablate_features, ["ablate_features"]),
}  # fmt: skip


def check_message(function: str, fn: Callable) -> str | None:
    """``None`` if the notebook check passes, else its failure message."""
    check, names = CHECKS[function]
    try:
        check(*(fn.__globals__[name] for name in names))
    except CheckFailed as err:
        return str(err)
    return None


CATALOGUE = runner.Catalogue(lab5, "05-transcoders", check_message)
runner.define_tests(globals(), CATALOGUE)
