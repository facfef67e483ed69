"""Code that runs inside a student's kernel.

These modules are never imported by the grader itself: the grader reads their source with
:mod:`importlib.resources` (:func:`source`) and sends it to the kernel, where it runs in a fresh
namespace (``exec``), so that names a student shadowed or modules a student patched do not matter.
They are ordinary modules for ``ruff`` and the unit tests, which import and call them directly.

- :mod:`.harness`: call the student's function on one hidden input, save the raw result.
- :mod:`.output_cap`: an IPython startup file that drops printed text beyond a budget.
- :mod:`.forget`: drop IPython's references to a failed cell's frames (and their memory).
- :mod:`.probe`: run in a fresh sandbox to check that it works (imports, hidden files, capabilities).
"""

from __future__ import annotations

from importlib import resources


def source(module: str) -> str:
    """The source text of ``labcore/grading/inkernel/<module>.py``.

    Raises:
        ValueError: for a name that is not one of this package's modules.
    """
    if module not in ("harness", "output_cap", "forget", "probe"):
        raise ValueError(f"no kernel-side module {module!r}")
    return resources.files(__package__).joinpath(f"{module}.py").read_text(encoding="utf-8")
