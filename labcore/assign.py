"""Generate the student labs from the solution notebooks, and keep every notebook's header in sync.

The solution notebooks in ``solutions/`` are the single source of every exercise. In a solution, the
code a student must write sits between nbgrader's markers::

    def fit_line(x, y):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

``python -m labcore.assign`` then

1. writes the Colab badge (first cell) and the setup cell (first code cell) of every notebook in
   ``book/``, ``solutions/`` and ``labs/`` from the repository URL and ref in ``_config.yml``;
2. writes ``labs/<name>.ipynb`` for every ``solutions/<name>.ipynb``: each marked region becomes a stub
   that raises ``NotImplementedError``, outputs are stripped, exercise cells carry nbgrader metadata,
   and exactly the cells that depend on an exercise (directly, or through names defined by cells that
   do) are tagged ``raises-exception`` so that nbval expects them to fail.

``python -m labcore.assign --check`` changes nothing and exits with status 1, naming the files and the
command that fixes them, when any notebook is out of date. ``python -m labcore.assign --execute``
first re-executes the book and solution notebooks (nbclient) and stores their outputs, which nbval
compares in ``make test`` and the book shows as they are.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

__all__ = [
    "CourseConfig",
    "load_config",
    "find_root",
    "setup_cell_source",
    "badge_cell_source",
    "sync_header",
    "make_lab",
    "cells_expected_to_raise",
    "execute_notebook",
    "check",
    "main",
]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
RAISES_TAG = "raises-exception"
BADGE_ID = "colab-badge"
SETUP_ID = "setup"
NOTEBOOK_DIRS = ("book", "solutions", "labs")
FIX_COMMAND = "make labs   (or: python -m labcore.assign)"


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class CourseConfig:
    """The course's canonical repository and the ref that students install and open.

    Attributes:
        repo_url: ``https://github.com/<owner>/<name>`` (from ``repository.url`` in _config.yml).
        ref: branch or tag (``repository.branch``); a release tag while a class runs.
        seed: the seed every notebook's setup cell passes to :func:`labcore.seed_everything`.
    """

    repo_url: str
    ref: str
    seed: int = 0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", self.repo_url):
            raise ValueError(
                "repository.url in _config.yml must look like https://github.com/<owner>/<name>, "
                f"got {self.repo_url!r}"
            )
        if not re.fullmatch(r"[\w./-]+", self.ref):
            raise ValueError(f"repository.branch in _config.yml is not a valid ref: {self.ref!r}")

    @property
    def github_path(self) -> str:
        """``<owner>/<name>``."""
        return self.repo_url.removeprefix("https://github.com/")

    def colab_url(self, relpath: str) -> str:
        """The URL that opens the notebook at ``relpath`` (from the repository root) in Colab."""
        return (
            f"https://colab.research.google.com/github/{self.github_path}/blob/{self.ref}/{relpath}"
        )

    @property
    def pip_spec(self) -> str:
        """The pip requirement that installs labcore at the configured ref."""
        return f"labcore @ git+{self.repo_url}@{self.ref}"


def find_root(start: Path | None = None) -> Path:
    """Return the nearest directory at or above ``start`` holding ``_config.yml`` and ``_toc.yml``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "_config.yml").is_file() and (candidate / "_toc.yml").is_file():
            return candidate
    raise ValueError(f"no course repository (_config.yml and _toc.yml) at or above {here}")


def load_config(root: Path) -> CourseConfig:
    """Read the repository URL and ref from ``root/_config.yml``."""
    data = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    repo = (data or {}).get("repository") or {}
    if "url" not in repo or "branch" not in repo:
        raise ValueError("_config.yml must set repository.url and repository.branch")
    return CourseConfig(repo_url=str(repo["url"]).rstrip("/"), ref=str(repo["branch"]))


# --------------------------------------------------------------------------- the header cells
def badge_cell_source(config: CourseConfig, relpath: str) -> str:
    """Markdown of the 'Open in Colab' badge for the notebook at ``relpath``."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({config.colab_url(relpath)})"
    )


def setup_cell_source(config: CourseConfig) -> str:
    """The first code cell of every notebook: install labcore in Colab, seed, pick the device.

    In Colab it installs labcore from the course repository at the configured ref. labcore's
    dependencies have lower bounds only, which Colab already satisfies, so the install never
    replaces Colab's torch, numpy or matplotlib. Elsewhere it installs nothing. The source is
    stable under ``ruff format`` (``make lint`` checks every notebook's cells).
    """
    return "\n".join(
        [
            "# Setup: generated from _config.yml by `python -m labcore.assign`; do not edit.",
            "import subprocess",
            "import sys",
            "",
            'if "google.colab" in sys.modules:  # install the course package, keep Colab\'s torch',
            f'    package = "{config.pip_spec}"',
            '    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", package], check=True)',
            "",
            "import labcore",
            "",
            f"generator = labcore.seed_everything({config.seed})",
            "device = labcore.get_device()",
            'print(f"device: {device}")',
        ]
    )


def sync_header(nb: nbformat.NotebookNode, config: CourseConfig, relpath: str) -> None:
    """Make the badge the first cell and the setup cell the first code cell of ``nb`` (in place).

    The badge cell has id ``colab-badge`` and the setup cell id ``setup``; existing cells with these
    ids are rewritten, missing ones are inserted. The setup cell's outputs are kept when its source
    does not change.
    """
    badge = _find_cell(nb, BADGE_ID)
    if badge is None:
        badge = nbformat.v4.new_markdown_cell(id=BADGE_ID)
        nb.cells.insert(0, badge)
    elif nb.cells[0] is not badge:
        nb.cells.remove(badge)
        nb.cells.insert(0, badge)
    badge.source = badge_cell_source(config, relpath)

    setup = _find_cell(nb, SETUP_ID)
    first_code = next((c for c in nb.cells if c.cell_type == "code"), None)
    if setup is None:
        setup = nbformat.v4.new_code_cell(id=SETUP_ID)
        index = nb.cells.index(first_code) if first_code is not None else len(nb.cells)
        nb.cells.insert(index, setup)
    elif first_code is not setup:
        raise ValueError(f"{relpath}: the setup cell must be the first code cell")
    source = setup_cell_source(config)
    if setup.source != source:
        setup.source = source
        setup.outputs = []
        setup.execution_count = None


# --------------------------------------------------------------------------- figures' text alternatives
#: A figure's caption: the next markdown cell opens with **Figure 1.2.** or *Figure 1.2.* ...
_CAPTION = re.compile(r"\s*(\*\*|\*)Figure (\d+\.\d+)\.?(?:\*\*)?\s*(.*)", re.DOTALL)
#: Hand-written alternative text of a figure cell (cell metadata); it wins over the caption.
ALT_KEY = "alt"


def _has_image(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and any(
        output.get("output_type") in ("display_data", "execute_result")
        and any(mime.startswith("image/") for mime in output.get("data", {}))
        for output in cell.get("outputs", [])
    )


def plain_text(markdown: str) -> str:
    """Markdown with inline TeX as plain text for a screen reader: ``$\\beta = 1$`` -> ``beta = 1``."""
    text = re.sub(r"\\(operatorname|mathrm|text|mathbf|boldsymbol)\{([^{}]*)\}", r"\2", markdown)
    words = {"approx": "about", "propto": "proportional to", "varphi": "phi", "cdot": "times"}
    # \beta -> beta, \cos\theta -> cos theta, \approx -> about
    text = re.sub(r"\\([A-Za-z]+)", lambda m: f" {words.get(m[1], m[1])} ", text)
    text = re.sub(r"[$*`{}]|\\", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = re.sub(r"\s+([_^,.;:)])", r"\1", " ".join(text.split()))  # phi _0 -> phi_0
    return text.replace("( ", "(")


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return match.group(1) if match else text


def figure_alt(nb: nbformat.NotebookNode, index: int) -> str | None:
    """The text alternative of the figure cell ``nb.cells[index]`` (None: it has none).

    The cell's hand-written ``metadata["alt"]`` if it has one, else "Figure N.M: " and the first
    sentence of the caption in the next markdown cell, as plain text.
    """
    cell = nb.cells[index]
    written = cell.metadata.get(ALT_KEY)
    if isinstance(written, str) and written.strip():
        return " ".join(written.split())
    following = next((c for c in nb.cells[index + 1 :] if c.cell_type == "markdown"), None)
    match = _CAPTION.match(following.source) if following is not None else None
    if match is None:
        return None
    return f"Figure {match.group(2)}: {_first_sentence(plain_text(match.group(3)))}"


def sync_figure_alts(nb: nbformat.NotebookNode, where: str) -> list[str]:
    """Set myst-nb's image ``alt`` option on every figure cell of ``nb`` (in place).

    Returns the figure cells that have neither a caption nor a hand-written ``alt`` (as
    ``where: cell <id>``); they keep no alternative text, and ``--check`` reports them.
    """
    missing = []
    for index, cell in enumerate(nb.cells):
        if not _has_image(cell):
            continue
        alt = figure_alt(nb, index)
        if alt is None:
            missing.append(f"{where}: cell {cell.get('id')}")
            continue
        options = cell.metadata.setdefault("mystnb", {}).setdefault("image", {})
        options["alt"] = alt
    return missing


def _find_cell(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode | None:
    return next((c for c in nb.cells if c.get("id") == cell_id), None)


# --------------------------------------------------------------------------- stubbing exercises
def stub_solution(source: str, where: str = "cell") -> tuple[str, int]:
    """Replace every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region by a stub.

    Returns the new source and the number of regions replaced. The stub keeps the indentation of
    the BEGIN marker. Raises ``ValueError`` on unbalanced or nested markers.
    """
    out: list[str] = []
    regions = 0
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: nested {BEGIN!r}")
            inside = True
            regions += 1
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + stub_line for stub_line in STUB)
        elif stripped == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END!r} without {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN!r} is never closed by {END!r}")
    return "\n".join(out), regions


# --------------------------------------------------------------------------- dependency analysis
def _parse(source: str, where: str) -> ast.Module:
    """Parse a cell, turning IPython magics and shell escapes into ``pass``."""
    lines = [re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError as err:
        raise ValueError(f"{where}: cannot parse the cell: {err}") from err


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _stored_names(nodes: Iterable[ast.AST]) -> set[str]:
    """Names assigned anywhere in ``nodes`` (targets, parameters of nested code included)."""
    return {
        n.id
        for node in nodes
        for n in ast.walk(node)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }


def _parameters(args: ast.arguments) -> set[str]:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return {a.arg for a in every if a is not None}


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def _loads(tree: ast.AST, *, top_level_only: bool) -> set[str]:
    """Free names read in ``tree``; with ``top_level_only``, skip code inside function bodies.

    Names bound locally before they are read do not count: a function's parameters and local
    assignments, a ``for`` loop's target inside the loop, a comprehension's variables.
    """
    names: set[str] = set()

    def visit(node: ast.AST, bound: frozenset[str]) -> None:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in bound:
                names.add(node.id)
            return
        if isinstance(node, _SCOPES):
            # decorators and default values run when the function is defined; the body later
            outer = [*getattr(node, "decorator_list", []), *node.args.defaults]
            outer += [d for d in node.args.kw_defaults if d is not None]
            for part in outer:
                visit(part, bound)
            if not top_level_only:
                body = node.body if isinstance(node.body, list) else [node.body]
                local = bound | _parameters(node.args) | _stored_names(body)
                for statement in body:
                    visit(statement, frozenset(local))
            return
        if isinstance(node, ast.For | ast.AsyncFor):
            visit(node.iter, bound)
            inner = frozenset(bound | _stored_names([node.target]))
            for child in [*node.body, *node.orelse]:
                visit(child, inner)
            return
        if isinstance(node, _COMPREHENSIONS):
            inner = frozenset(bound | _stored_names([g.target for g in node.generators]))
            for child in ast.iter_child_nodes(node):
                visit(child, inner)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, bound)

    visit(tree, frozenset())
    return names


def _definitions(tree: ast.AST) -> set[str]:
    """Names a cell's top-level code binds (assignments, defs, imports, loops) or changes in place."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            return
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        # an object changed in place counts as defined too: x[i] = ..., x.a = ..., x.append(...)
        if isinstance(node, ast.Subscript | ast.Attribute) and isinstance(node.ctx, ast.Store):
            root = _root_name(node)
            if root is not None:
                names.add(root)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method in _MUTATORS or (method.endswith("_") and not method.startswith("_")):
                root = _root_name(node.func.value)
                if root is not None:
                    names.add(root)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


_MUTATORS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "update",
        "add",
        "setdefault",
        "pop",
        "remove",
        "clear",
        "discard",
        "sort",
        "reverse",
        "popitem",
    }
)


def _root_name(node: ast.AST) -> str | None:
    """``x`` for ``x``, ``x[i]``, ``x.a.b``, ``x[i].a``; None when the root is not a name."""
    while isinstance(node, ast.Subscript | ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _stubs(node: ast.AST) -> list[tuple[ast.Raise, bool]]:
    """Every ``raise NotImplementedError`` in ``node``, with whether it runs at the top level."""
    found: list[tuple[ast.Raise, bool]] = []

    def visit(child: ast.AST, in_function: bool) -> None:
        if isinstance(child, ast.Raise) and child.exc is not None:
            exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                found.append((child, not in_function))
        for grandchild in ast.iter_child_nodes(child):
            visit(grandchild, in_function or isinstance(child, _SCOPES))

    visit(node, False)
    return found


def cells_expected_to_raise(sources: Sequence[str], exercise: Sequence[bool]) -> list[bool]:
    """Decide, for the code cells of a lab, which ones raise when run top to bottom.

    Args:
        sources: the code cells' sources after stubbing, in order.
        exercise: whether each cell holds a stubbed exercise.

    Returns:
        One flag per cell. The analysis goes statement by statement. A statement *raises* when a
        stub runs at its top level or its top-level code reads a *tainted* name; it *depends on an
        exercise* when it raises, holds a stub, or reads a tainted name anywhere (a function body
        that does fails later, when called). The names bound by a statement that depends on an
        exercise become tainted, and so do the names bound by the statements after a raise in the
        same cell, which never run. A cell raises when one of its statements does.
    """
    if len(sources) != len(exercise):
        raise ValueError(
            f"sources and exercise must have the same length, got {len(sources)} and {len(exercise)}"
        )
    tainted: set[str] = set()
    flags: list[bool] = []
    for index, (source, is_exercise) in enumerate(zip(sources, exercise, strict=True)):
        tree = _parse(source, f"code cell {index}")
        raised = False
        for statement in tree.body:
            if raised:
                tainted |= _definitions(statement)
                continue
            stubs = _stubs(statement) if is_exercise else []
            raises = any(top for _, top in stubs) or bool(
                _loads(statement, top_level_only=True) & tainted
            )
            if raises or stubs or _loads(statement, top_level_only=False) & tainted:
                tainted |= _definitions(statement)
            raised = raises
        flags.append(raised)
    return flags


# --------------------------------------------------------------------------- labs
def make_lab(solution: nbformat.NotebookNode, where: str = "solution") -> nbformat.NotebookNode:
    """Return the student notebook generated from a solution notebook (which is left unchanged).

    Stubs every solution region, strips outputs and execution metadata, adds nbgrader metadata to
    exercise cells (``grade_id`` is the cell id), and tags the cells that will raise.
    """
    lab = copy.deepcopy(solution)
    lab.metadata.pop("widgets", None)
    code_cells: list[nbformat.NotebookNode] = []
    exercise_flags: list[bool] = []
    n_exercises = 0
    for index, cell in enumerate(lab.cells):
        cell.metadata.pop("execution", None)
        tags = [t for t in cell.metadata.get("tags", []) if t != RAISES_TAG]
        if cell.cell_type == "markdown" and index <= 2:
            cell.source = re.sub(r"\s*\(solutions?\)\s*$", "", cell.source, flags=re.MULTILINE)
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        cell.source, regions = stub_solution(cell.source, f"{where}, cell {cell.get('id')}")
        if regions:
            n_exercises += 1
            cell.metadata["nbgrader"] = {
                "grade": False,
                "grade_id": cell.get("id") or f"exercise-{n_exercises}",
                "locked": False,
                "schema_version": 3,
                "solution": True,
                "task": False,
            }
        if tags:
            cell.metadata["tags"] = tags
        else:
            cell.metadata.pop("tags", None)
        code_cells.append(cell)
        exercise_flags.append(bool(regions))
    if n_exercises == 0:
        raise ValueError(f"{where}: no {BEGIN!r} region, so there is no exercise in this lab")
    flags = cells_expected_to_raise([c.source for c in code_cells], exercise_flags)
    for cell, raises in zip(code_cells, flags, strict=True):
        if raises:
            cell.metadata.setdefault("tags", []).append(RAISES_TAG)
    return lab


# --------------------------------------------------------------------------- executing
def execute_notebook(
    nb: nbformat.NotebookNode,
    cwd: Path,
    *,
    timeout: int = 120,
    allow_errors: bool = False,
    kernel_name: str = "python3",
    env: dict[str, str] | None = None,
) -> nbformat.NotebookNode:
    """Execute ``nb`` in a fresh kernel with working directory ``cwd`` and return it with outputs.

    ``env``: the kernel's environment (default: this process's).
    """
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name,
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(cwd)}},
        record_timing=False,
    )
    client.execute(**({"env": env} if env is not None else {}))
    return nb


# --------------------------------------------------------------------------- the whole repository
def _notebooks(root: Path, folder: str) -> list[Path]:
    return sorted((root / folder).glob("*.ipynb"))


def _expected(root: Path, config: CourseConfig) -> tuple[dict[Path, str], list[str]]:
    """What every notebook file should contain, serialised, keyed by path; figures without alt."""
    expected: dict[Path, str] = {}
    missing_alt: list[str] = []
    for folder in ("book", "solutions"):
        for path in _notebooks(root, folder):
            nb = nbformat.read(path, as_version=4)
            rel = path.relative_to(root).as_posix()
            sync_header(nb, config, rel)
            missing_alt += sync_figure_alts(nb, rel)
            expected[path] = _serialise(nb)
    for path in _notebooks(root, "solutions"):
        solution = nbformat.read(path, as_version=4)
        sync_figure_alts(solution, path.relative_to(root).as_posix())  # as written above
        lab_path = root / "labs" / path.name
        lab = make_lab(solution, where=path.relative_to(root).as_posix())
        sync_header(lab, config, lab_path.relative_to(root).as_posix())
        expected[lab_path] = _serialise(lab)
    if not (root / "solutions").is_dir():
        # The student edition (python -m labcore.release) has no solutions/: only the labs'
        # headers (badge and setup cell) are generated there.
        for path in _notebooks(root, "labs"):
            lab = nbformat.read(path, as_version=4)
            sync_header(lab, config, path.relative_to(root).as_posix())
            expected[path] = _serialise(lab)
    return expected, missing_alt


def _missing_alt_problems(missing_alt: list[str]) -> list[str]:
    return [
        f"{where} draws a figure with neither a caption (a markdown cell after it opening with "
        f"**Figure N.M.**) nor a text alternative in its metadata {ALT_KEY!r}"
        for where in missing_alt
    ]


def _serialise(nb: nbformat.NotebookNode) -> str:
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def check(root: Path) -> list[str]:
    """List every way the notebooks disagree with ``_config.yml`` and ``solutions/`` (empty: good)."""
    config = load_config(root)
    expected, missing_alt = _expected(root, config)
    problems = _missing_alt_problems(missing_alt)
    for path, text in expected.items():
        rel = path.relative_to(root).as_posix()
        if not path.exists():
            problems.append(f"{rel} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{rel} is out of date with solutions/ or _config.yml")
    for path in _notebooks(root, "labs"):
        if path not in expected:
            problems.append(f"{path.relative_to(root).as_posix()} has no solution in solutions/")
    return problems


def write(root: Path) -> list[Path]:
    """Bring every notebook up to date; return the paths that changed.

    Raises:
        ValueError: a figure has no text alternative (after everything else is written).
    """
    changed = []
    expected, missing_alt = _expected(root, load_config(root))
    for path, text in expected.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    if missing_alt:
        raise ValueError("\n".join(_missing_alt_problems(missing_alt)))
    return changed


def execute_all(root: Path, paths: Iterable[Path] = (), *, budget_s: float = 60.0) -> None:
    """Execute notebooks of book/ and solutions/ (all by default) and store their outputs."""
    config = load_config(root)
    targets = list(paths) or [*_notebooks(root, "book"), *_notebooks(root, "solutions")]
    slow = []
    for path in targets:
        path = path.resolve()
        nb = nbformat.read(path, as_version=4)
        sync_header(nb, config, path.relative_to(root).as_posix())
        start = time.perf_counter()
        execute_notebook(nb, path.parent)
        seconds = time.perf_counter() - start
        for cell in nb.cells:
            cell.metadata.pop("execution", None)
        sync_figure_alts(nb, path.relative_to(root).as_posix())
        path.write_text(_serialise(nb), encoding="utf-8")
        print(f"executed {path.relative_to(root)} in {seconds:.1f} s")
        if seconds > budget_s:
            slow.append(f"{path.relative_to(root)} ({seconds:.0f} s)")
    if slow:
        raise SystemExit(f"notebooks over the {budget_s:.0f} s budget: {', '.join(slow)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labcore.assign",
        description="Generate labs/ from solutions/ and sync every notebook's badge and setup cell "
        "with _config.yml.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="change nothing; fail if out of date")
    mode.add_argument(
        "--execute",
        nargs="*",
        metavar="NOTEBOOK",
        help="re-execute these book/solution notebooks (default: all) and store outputs first",
    )
    parser.add_argument("--root", type=Path, default=None, help="repository root")
    args = parser.parse_args(argv)
    root = find_root(args.root)
    if args.check:
        problems = check(root)
        if problems:
            print("Notebooks are out of date:", *problems, sep="\n  ", file=sys.stderr)
            print(f"Fix: {FIX_COMMAND}, then commit solutions/ and labs/.", file=sys.stderr)
            return 1
        print("labs/ and every notebook header are up to date with solutions/ and _config.yml")
        return 0
    if args.execute is not None:
        execute_all(root, [Path(p) for p in args.execute])
    try:
        changed = write(root)
    except ValueError as err:
        print(f"Every figure needs a text alternative:\n{err}", file=sys.stderr)
        return 1
    for path in changed:
        print(f"wrote {path.relative_to(root)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
