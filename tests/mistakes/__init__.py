"""Catalogues of realistic wrong answers and valid alternatives, one module per lab.

Each module defines ``MISTAKES`` (exercise -> list of ``(name, function, hint)``: what the mistake
is, a wrong implementation, and a substring that the failure message must contain) and ``VALID``
(exercise -> list of ``(name, function)``: other correct routes). ``tests/test_mistakes_<lab>.py``
runs each entry through the notebook check and the grader's rubric. :func:`notebook` writes an entry
whose function calls an earlier exercise (the earlier one right or wrong), as in a notebook.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any


def notebook(space: dict[str, Any], main: str, **functions: Callable) -> Callable:
    """``main`` as a notebook would hold it beside ``functions``: one new namespace with what
    ``space`` holds (a catalogue module's globals: its solutions, helpers and imports) and
    ``functions`` bound under their keys (an earlier exercise, right or wrong; ``main`` itself
    if given), every function re-created on that namespace, so that each finds the others there as
    a notebook's functions do. Returns the new ``main``."""
    namespace: dict[str, Any] = {}
    namespace.update(space)
    namespace.update(functions)
    namespace["__name__"] = "notebook"
    for name, fn in list(namespace.items()):
        if isinstance(fn, types.FunctionType) and (fn.__globals__ is space or name in functions):
            copy = types.FunctionType(fn.__code__, namespace, name, fn.__defaults__, fn.__closure__)
            copy.__kwdefaults__ = fn.__kwdefaults__
            namespace[name] = copy
    return namespace[main]
