"""IPython startup code of every kernel: printed text beyond a budget is dropped at once.

It is also not copied into IPython's in-memory output history, so that a flood of prints cannot
exhaust the kernel's memory limit. The grader writes this module's source, with a call of
:func:`install`, as the startup file of the kernel's IPython profile.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


class CappedStream:
    """A text stream that passes on the first ``budget`` characters written, then drops the rest."""

    def __init__(self, stream: TextIO, budget: int) -> None:
        self._stream, self._left, self._told = stream, budget, False

    def write(self, text: str) -> int:
        """Write what the budget allows; say once that the rest is dropped."""
        if self._left <= 0:
            if not self._told:
                self._told = True
                self._stream.write("\n[grader: output limit reached, the rest is dropped]\n")
            return len(text)
        kept = text[: self._left]
        self._left -= len(kept)
        self._stream.write(kept)
        return len(text)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "write":  # IPython 9 patches write to keep every printed byte in memory
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install(budget: int) -> None:
    """Cap ``sys.stdout`` and ``sys.stderr`` at ``budget`` characters each."""
    sys.stdout = CappedStream(sys.stdout, budget)
    sys.stderr = CappedStream(sys.stderr, budget)
