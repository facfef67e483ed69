"""Building graded submissions from the course notebooks (shared by the rubric tests of every lab)."""

from __future__ import annotations

import textwrap
from collections.abc import Collection
from pathlib import Path

import nbformat


def lean_submission(
    path: Path, keep: Collection[str], replace: dict[str, str] | None = None
) -> nbformat.NotebookNode:
    """``path`` reduced to the code cells whose ids are in ``keep`` and the exercise cells
    (ids ``ex-*``), outputs cleared, the sources of ``replace``'s cell ids replaced (dedented)."""
    nb = nbformat.read(path, as_version=4)
    cells = []
    for cell in nb.cells:
        cell_id = cell.get("id", "")
        if cell.cell_type != "code" or not (cell_id in keep or cell_id.startswith("ex-")):
            continue
        cell.outputs, cell.execution_count = [], None
        if replace and cell_id in replace:
            cell.source = textwrap.dedent(replace[cell_id]).strip()
        cells.append(cell)
    nb.cells = cells
    return nb
