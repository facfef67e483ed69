"""What the grader reads off a notebook before running it.

- Which code cell each exercise is tested after (:func:`exercise_cells`) and how feedback names a
  cell (:func:`cell_labels`, :func:`exercise_title`): "Exercise 3: one attention head, cell 14",
  never a hidden cell id.
- Whether a submission uses labcore's own implementation of a graded function
  (:func:`find_reference_use`): flagged for the instructor, never penalised, because hidden tests
  cannot tell a student's correct function from labcore's own.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat

from labcore.rubrics import Rubric

__all__ = [
    "baseline_findings",
    "cell_labels",
    "exercise_cells",
    "exercise_title",
    "find_reference_use",
    "is_code",
    "is_labcore",
    "reference_findings",
]


def parse_cell(source: Any) -> ast.Module | None:
    """Parse a code cell, treating IPython magics and shell escapes as ``pass``; None if invalid."""
    if isinstance(source, list):
        source = "".join(str(line) for line in source)
    if not isinstance(source, str):
        return None
    lines = [re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except (SyntaxError, ValueError):
        return None


_EXERCISE_HEADING = re.compile(r"^\s*#{1,6}\s*(Exercise\s+\d+\b.*?)\s*$", re.MULTILINE)


def cell_labels(nb: Any) -> list[str]:
    """What a student can find: each code cell's position among all cells, with its exercise.

    ``"14, Exercise 3: one attention head"`` for the 14th cell of the notebook, counted from 1
    with the Markdown cells, under the nearest ``Exercise N...`` heading above it; just ``"14"``
    before the first exercise. One label per code cell, in order (never the hidden cell ids).
    """
    labels: list[str] = []
    title = ""
    for position, cell in enumerate(getattr(nb, "cells", []) or [], start=1):
        if not isinstance(cell, dict):
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(line) for line in source)
        if cell.get("cell_type") == "markdown" and isinstance(source, str):
            headings = _EXERCISE_HEADING.findall(source)
            if headings:
                title = " ".join(headings[-1].replace("`", "'").split())[:80]
        elif is_code(cell):
            labels.append(f"{position}, {title}" if title else str(position))
    return labels


def is_code(cell: Any) -> bool:
    """Whether a notebook cell is a code cell (tolerating malformed cells)."""
    return isinstance(cell, dict) and cell.get("cell_type") == "code"


def is_labcore(module: str) -> bool:
    """Whether a module name is labcore or one of its submodules."""
    return module == "labcore" or module.startswith("labcore.")


def reference_findings(nb: Any, rubric: Rubric) -> list[tuple[str, str]]:
    """Find where a notebook's code refers to labcore's implementation of a graded function.

    Flags, per code cell: importing a graded function's name from a labcore module (or ``*``);
    an attribute access ``<labcore module>. ... .<graded name>`` (``fa.gaussian_nll``,
    ``checks.ref.gaussian_nll``) where the student's own answer is made (in that exercise's cell,
    in a ``def`` of that name, or assigned to that name) or where it is replaced (monkeypatching);
    and a string naming a graded function or a labcore module passed to ``getattr``,
    ``__import__`` or ``import_module`` (dynamic lookups). Using labcore's version of *another*
    exercise's function, as a later exercise may, or a string that merely equals a function's
    name (a dictionary key), is not flagged. A determined student can hide such a reference
    (``exec`` of an encoded string), so a clean result proves nothing; a hit is a reason to look,
    not proof of cheating.

    Returns:
        ``(cell label, finding)`` pairs, the label as :func:`cell_labels` gives it.
    """
    graded = {e.function: e.grade_id for e in rubric.exercises}
    named = {e.function: f"exercise `{e.function}`" for e in rubric.exercises}
    aliases: set[str] = set()
    findings: list[tuple[str, str]] = []
    trees: list[tuple[str, Any, ast.Module]] = []
    cells = [c for c in getattr(nb, "cells", []) if is_code(c)]
    labels = cell_labels(nb)
    for index, cell in enumerate(cells):
        tree = parse_cell(cell.get("source", ""))
        if tree is None:
            continue
        label = labels[index]
        trees.append((label, nbgrader_id(cell), tree))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if is_labcore(alias.name):
                        aliases.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                if not is_labcore(node.module or ""):
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        findings.append((label, f"all exercises: `from {node.module} import *`"))
                    elif alias.name in graded:
                        findings.append(
                            (
                                label,
                                f"{named[alias.name]}: imports `{alias.name}` from `{node.module}`",
                            )
                        )
                    else:
                        aliases.add(alias.asname or alias.name)
    for label, grade_id, tree in trees:
        for scope, name in _answer_scopes(tree, graded, grade_id):
            for node in ast.walk(scope):
                if isinstance(node, ast.Attribute) and node.attr == name:
                    root: ast.expr = node
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    if isinstance(root, ast.Name) and root.id in aliases:
                        findings.append((label, f"{named[name]}: uses `{ast.unparse(node)}`"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in graded:
                root = node
                while isinstance(root, ast.Attribute):
                    root = root.value
                if (
                    isinstance(root, ast.Name)
                    and root.id in aliases
                    and isinstance(node.ctx, ast.Store | ast.Del)
                ):
                    findings.append((label, f"{named[node.attr]}: replaces `{ast.unparse(node)}`"))
            elif isinstance(node, ast.Call) and _is_dynamic_lookup(node.func):
                for arg in node.args:
                    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                        continue
                    if arg.value in graded:
                        findings.append(
                            (label, f"{named[arg.value]}: the string {arg.value!r} (getattr?)")
                        )
                    elif arg.value in rubric.reference_modules or is_labcore(arg.value):
                        findings.append(
                            (label, f"all exercises: the string {arg.value!r} (dynamic import?)")
                        )
    return list(dict.fromkeys(findings))


def find_reference_use(nb: Any, rubric: Rubric) -> list[str]:
    """Where a notebook refers to labcore's reference implementation of a graded function.

    See :func:`reference_findings`; one line per finding: ``"cell <label>, <exercise>: <what>"``.
    """
    return [f"cell {label}, {what}" for label, what in reference_findings(nb, rubric)]


def _answer_scopes(tree: ast.Module, graded: dict[str, str], grade_id: Any):
    """``(node, name)`` pairs: the code that makes the student's answer for graded ``name``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in graded:
            yield node, node.name
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in graded:
                    yield node.value, target.id
    for name, exercise in graded.items():
        if grade_id is not None and exercise == grade_id:
            yield tree, name


def _is_dynamic_lookup(func: ast.expr) -> bool:
    """``getattr``, ``setattr``, ``__import__``, ``importlib.import_module`` and the like."""
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in {"getattr", "setattr", "hasattr", "__import__", "import_module"}


def lab_notebook(lab: str) -> Path | None:
    """``labs/<lab>.ipynb`` of the course repository (from the cwd, else beside labcore)."""
    candidates = [Path.cwd(), Path(__file__).resolve().parents[2]]
    for start in candidates:
        for folder in (start, *start.parents):
            path = folder / "labs" / f"{lab}.ipynb"
            if path.is_file():
                return path
    return None


def baseline_findings(lab: str, rubric: Rubric) -> list[str]:
    """What the detector finds in the untouched lab (legitimate uses, subtracted later), without
    the cells' positions, which a student's added cells would shift."""
    path = lab_notebook(lab)
    if path is None:
        return []
    return [what for _, what in reference_findings(nbformat.read(path, as_version=4), rubric)]


def defines(source: str, name: str) -> bool:
    """Whether a cell defines ``name`` at its top level (``def name`` or ``name = ...``)."""
    tree = parse_cell(source)
    if tree is None:
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
    return False


def nbgrader_id(cell: Any) -> Any:
    """The nbgrader ``grade_id`` of a cell, or None."""
    metadata = cell.get("metadata")
    nbgrader = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None


def exercise_cells(cells: Sequence[Any], rubric: Rubric) -> dict[str, int]:
    """The code cell after which each exercise is tested (absent: test after the last cell).

    The last cell whose nbgrader ``grade_id`` is the exercise's, else whose id is, else that
    defines the function at its top level (for students who rebuilt a cell in Colab).
    """
    where: dict[str, int] = {}
    for exercise in rubric.exercises:
        rules: list[Callable[[Any], bool]] = [
            lambda c, e=exercise: nbgrader_id(c) == e.grade_id,
            lambda c, e=exercise: c.get("id") == e.grade_id,
            lambda c, e=exercise: defines(c.get("source", ""), e.function),
        ]
        for rule in rules:
            matches = [i for i, cell in enumerate(cells) if rule(cell)]
            if matches:
                where[exercise.grade_id] = matches[-1]
                break
    return where


def exercise_title(label: str) -> str:
    """``"Exercise 3: one attention head, cell 14"`` from a cell label of :func:`cell_labels`."""
    position, _, title = label.partition(", ")
    return f"{title}, cell {position}" if title else f"cell {position}"
