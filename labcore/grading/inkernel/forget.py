"""Drop IPython's references to a failed cell's frames, so that their memory is freed.

IPython keeps the last exception (``sys.last_*``, the shell, its traceback formatters, the last
execution result), and with it the failed frames' locals: a list that filled the memory, say. The
grader runs :func:`forget` after a student's cell raised, which gives later exercises their memory
back.

A full collection walks every object of the kernel (torch's included): 0.15 to 0.3 s, paid after
every failing cell of a blank lab. Reference cycles among the failed frames are rare, and their
objects are young, so only the two youngest generations are collected, unless the cell ran out of
memory (``full``), where whatever it allocated must go.
"""

from __future__ import annotations

import gc
import sys
import types


def forget(full: bool = False) -> None:
    """Clear every reference IPython and ``sys`` hold to the last exception, then collect
    (everything if ``full``, else generations 0 and 1)."""
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        setattr(sys, name, None)
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            shell._last_traceback = None
            for holder in (shell.InteractiveTB, getattr(shell, "SyntaxTB", None)):
                for key, value in list(vars(holder).items()):
                    if isinstance(value, types.TracebackType):
                        setattr(holder, key, None)
            result = getattr(shell, "last_execution_result", None)
            if result is not None:
                result.error_in_exec = None
    except Exception:  # nothing to forget outside IPython
        pass
    gc.collect() if full else gc.collect(1)
