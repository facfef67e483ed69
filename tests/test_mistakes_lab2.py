"""Lab 2's mistake catalogue (``tests/mistakes/lab2.py``) through the notebook check and the rubric.

Every catalogued mistake must fail the check, with a message naming the likely cause, and lose
points in the grader; every valid alternative must pass both; no check may change the global RNG
state or the default dtype. The tests are written by :func:`mistakes.runner.define_tests` (exercise 3 is
checked with its two functions, ``split_heads`` and ``merge_heads``).
"""

from __future__ import annotations

from collections.abc import Callable

from mistakes import lab2, runner

from labcore.checks import CheckFailed
from labcore.checks import attention as checks


def check_message(function: str, fn: Callable) -> str | None:
    """``None`` if the notebook check passes, else its failure message."""
    try:
        if function == "split_heads":  # exercise 3 checks two functions
            checks.check_split_merge_heads(fn, fn.__globals__["merge_heads"])
        else:
            getattr(checks, f"check_{function}")(fn)
    except CheckFailed as err:
        return str(err)
    return None


CATALOGUE = runner.Catalogue(lab2, "02-attention", check_message)
runner.define_tests(globals(), CATALOGUE)
