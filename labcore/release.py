"""Write the student edition of the course: this repository without its solutions.

An instructor keeps the full repository private (``solutions/``, the instructor guide, the grader's
tests) and publishes a student repository that this module writes::

    python -m labcore.release ../course-student --tag v2026-fall \\
        --repository-url https://github.com/<owner>/<course-student>

**What goes in.** Every file of a commit of the course repository (``HEAD`` unless ``--source-ref``
names another; ``git archive`` reads it, so never ``.venv``, ``_build``, ``node_modules``,
untracked files or uncommitted changes: a release is a commit, and it is reproducible), except

1. the instructor-only paths of :data:`INSTRUCTOR_ONLY` (``solutions/``, the instructor guide, the
   student README's template);
2. Python files outside ``labcore/`` (tests, benchmarks) that need the solutions: a file that holds
   the code of a solution region, reads ``solutions/`` (a string ``"solutions"`` or
   ``"solutions/<name>.ipynb"``) or imports a module left out; a package that holds solution code
   goes whole (``tests/mistakes/``, whose catalogues hold every exercise's answer).

The rule reads the files, so a new test that grades the solutions is left out without a list to
update.

**What changes.** ``_toc.yml`` keeps only the documents released (no Solutions part, no instructor
guide); ``README.md`` is ``README-student.md`` filled in; ``--repository-url`` and ``--tag`` set
``repository.url`` and ``repository.branch`` in ``_config.yml`` and every notebook's Colab badge and
setup cell is regenerated from them (:func:`labcore.assign.sync_header`; the setup cell keeps its
stored output); the build files (``Makefile``, ``.ci/``, ``.github/``) lose their ``solutions``
path arguments and mentions and the ``book-student`` target; markdown between
``<!-- instructor-only -->`` and ``<!-- end instructor-only -->`` is removed; and in the tests kept,
a list element alone on its line that names a ``solutions/`` page (a parametrized case of a page
the student site does not have) is removed.

**What is checked** (:func:`verify`; the release raises ``ValueError`` and names the file): no
``solutions/`` folder; no file outside ``labcore/`` holding the code of a solution region; no
page, notebook or configuration naming a path in ``solutions/``; no build file naming
``solutions``; ``labcore.assign --check`` clean.

``labcore/`` is copied whole: every notebook imports it, and its checks and rubrics hold reference
implementations by design (students install it in Colab anyway). :func:`labcore_references` lists
the solution regions whose code appears there.
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import re
import shutil
import string
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import nbformat
import yaml

from labcore import assign

__all__ = [
    "INSTRUCTOR_ONLY",
    "SolutionRegion",
    "Release",
    "TrackedFile",
    "tracked_files",
    "solution_regions",
    "find_leaks",
    "left_out",
    "student_toc",
    "edit_build_file",
    "strip_instructor_only",
    "drop_solution_cases",
    "set_repository",
    "verify",
    "labcore_references",
    "release",
    "main",
]

SOLUTIONS = "solutions"
PACKAGE = "labcore/"
STUDENT_README = "README-student.md"
#: Paths (a trailing slash: a folder) that only the instructor's repository holds.
INSTRUCTOR_ONLY: tuple[str, ...] = (f"{SOLUTIONS}/", "book/instructor-guide.md", STUDENT_README)
#: Markdown between these two comments is left out of the student edition.
ONLY_BEGIN = "<!-- instructor-only -->"
ONLY_END = "<!-- end instructor-only -->"
#: The private repository's target that builds the student site (the release has no use for it).
STUDENT_TARGET = "book-student"
#: Files whose text is checked for a path in solutions/ (pages, notebooks, configuration).
LINK_SUFFIXES = frozenset({".md", ".ipynb", ".yml", ".yaml", ".toml", ".cfg", ".json", ".html"})
#: A solution region shorter than this (whitespace removed) is too generic to search for.
MIN_REGION_CHARS = 16

_SOLUTION_PATH = re.compile(rf"(?<![\w-]){SOLUTIONS}/")
_SOLUTION_WORD = re.compile(rf"\b{SOLUTIONS}\b")
#: A trailing comment: a '#' after whitespace with no quote after it on the line.
_INLINE_COMMENT = re.compile(r"""\s#(?=[^"']*$).*$""")


# --------------------------------------------------------------------------- what the solutions are
@dataclass(frozen=True)
class SolutionRegion:
    """The code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in one solution cell.

    Attributes:
        notebook: the solution notebook, relative to the repository (``solutions/01-mlp.ipynb``).
        cell_id: the cell's id (its nbgrader ``grade_id`` in the lab).
        code: the region's lines as written.
    """

    notebook: str
    cell_id: str
    code: str

    @property
    def key(self) -> str:
        """The code without comments, blank lines or any whitespace (what :func:`find_leaks` seeks)."""
        return _squeeze(self.code.splitlines())

    def __str__(self) -> str:
        return f"{self.notebook} cell {self.cell_id}"


def _squeeze(lines: Iterable[str]) -> str:
    """Code lines without comment lines, trailing comments and whitespace, joined."""
    out = []
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            out.append(re.sub(r"\s+", "", _INLINE_COMMENT.sub("", stripped)))
    return "".join(out)


def solution_regions(contents: Mapping[str, bytes]) -> list[SolutionRegion]:
    """Every marked region of every notebook ``solutions/*.ipynb`` in ``contents`` (relative POSIX
    path -> bytes; none when there is no such notebook).

    Raises:
        ValueError: a region is never closed, or an END marker has no BEGIN.
    """
    regions = []
    for rel in sorted(contents):
        if not re.fullmatch(rf"{SOLUTIONS}/[^/]+\.ipynb", rel):
            continue
        nb = nbformat.reads(contents[rel].decode("utf-8"), as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            where = f"{rel} cell {cell.get('id')}"
            lines: list[str] | None = None
            for line in cell.source.splitlines():
                if line.strip() == assign.BEGIN:
                    lines = []
                elif line.strip() == assign.END:
                    if lines is None:
                        raise ValueError(f"{where}: {assign.END!r} without {assign.BEGIN!r}")
                    regions.append(SolutionRegion(rel, str(cell.get("id")), "\n".join(lines)))
                    lines = None
                elif lines is not None:
                    lines.append(line)
            if lines is not None:
                raise ValueError(f"{where}: {assign.BEGIN!r} is never closed")
    return regions


def _code_text(rel: str, data: bytes) -> str | None:
    """The text a leak is sought in: a notebook's cell sources, a text file's text, else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if rel.endswith(".ipynb"):
        nb = nbformat.reads(text, as_version=4)
        return "\n".join(cell.source for cell in nb.cells)
    return text


def find_leaks(
    files: Mapping[str, bytes], regions: Sequence[SolutionRegion]
) -> dict[str, list[SolutionRegion]]:
    """The files (relative path -> content) holding the code of a solution region.

    A file holds a region when the region's code, without comments and whitespace, appears in the
    file's code treated the same way (so reformatting or re-wrapping does not hide a copy).
    Regions shorter than :data:`MIN_REGION_CHARS` are too generic to count. Binary files hold none.
    """
    keys = [(region, region.key) for region in regions]
    keys = [(region, key) for region, key in keys if len(key) >= MIN_REGION_CHARS]
    leaks: dict[str, list[SolutionRegion]] = {}
    for rel, data in files.items():
        text = _code_text(rel, data)
        if text is None:
            continue
        squeezed = _squeeze(text.splitlines())
        found = [region for region, key in keys if key in squeezed]
        if found:
            leaks[rel] = found
    return leaks


# --------------------------------------------------------------------------- what is left out
@dataclass(frozen=True)
class TrackedFile:
    """One file of a commit: its bytes, its permission bits and the commit's time (``git archive``
    stamps every file with it)."""

    data: bytes
    mode: int
    mtime: float


def tracked_files(root: Path, ref: str = "HEAD") -> tuple[str, dict[str, TrackedFile]]:
    """The commit ``ref`` of the repository at ``root`` names, and its files (POSIX path -> file).

    Raises:
        ValueError: ``root`` is not in a git repository, ``ref`` names no commit, or the commit
            holds a symbolic link (the student edition copies plain files only).
    """
    git = ["git", "-C", str(root)]
    run = subprocess.run([*git, "rev-parse", "--verify", f"{ref}^{{commit}}"], capture_output=True)
    if run.returncode != 0:
        raise ValueError(f"{ref!r} is not a commit of {root}: {run.stderr.decode().strip()}")
    commit = run.stdout.decode().strip()
    archive = subprocess.run([*git, "archive", "--format=tar", commit], capture_output=True)
    if archive.returncode != 0:
        raise ValueError(f"git archive {commit} failed: {archive.stderr.decode().strip()}")
    files = {}
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        for member in tar.getmembers():
            if member.issym() or member.islnk():
                raise ValueError(f"{member.name} is a link: the student edition copies plain files")
            if member.isfile():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                files[member.name] = TrackedFile(data, member.mode & 0o777, float(member.mtime))
    return commit, dict(sorted(files.items()))


def _instructor_only(rel: str) -> bool:
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in INSTRUCTOR_ONLY)


def _module_names(rel: str, files: set[str]) -> set[str]:
    """The names ``rel`` (a .py file) is imported by: from the repository root, and from the first
    folder above it that is not a package (pytest puts ``tests/`` on the path)."""
    parts = list(PurePosixPath(rel).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    names = {".".join(parts)}
    start = len(parts) - 1  # the module's own folder is parts[:start]
    while start > 0 and "/".join([*parts[:start], "__init__.py"]) in files:
        start -= 1
    names.add(".".join(parts[start:]))
    return {name for name in names if name}


def _imports(tree: ast.AST, rel: str) -> set[str]:
    """Every module name an import statement anywhere in ``tree`` can load (``from a import b``
    gives ``a`` and ``a.b``); relative imports resolved against ``rel``'s package."""
    package = list(PurePosixPath(rel).parent.parts)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            names.add(base)
            names |= {f"{base}.{alias.name}" if base else alias.name for alias in node.names}
    return {name for name in names if name}


def _reads_solutions(tree: ast.AST) -> bool:
    """Whether the code names the solutions folder as a path: the string ``"solutions"``, a string
    ``"solutions/<name>.ipynb"``, or an f-string opening with ``solutions/``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value == SOLUTIONS or re.fullmatch(rf"{SOLUTIONS}/.+\.ipynb", node.value):
                return True
        if isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and str(first.value).startswith(f"{SOLUTIONS}/"):
                return True
    return False


def left_out(
    contents: Mapping[str, bytes], regions: Sequence[SolutionRegion]
) -> tuple[dict[str, str], dict[str, list[SolutionRegion]]]:
    """Decide which tracked files stay out of the student edition, and why.

    Args:
        contents: every tracked file (relative POSIX path -> bytes).
        regions: the solution regions (:func:`solution_regions`).

    Returns:
        ``(dropped, leaks)``: the files left out (path -> reason), and the files kept outside
        ``labcore/`` that still hold solution code (none in a good release; :func:`release` raises).

    Raises:
        ValueError: a Python file left out by the rules cannot be parsed.
    """
    dropped = {rel: "instructor only" for rel in contents if _instructor_only(rel)}
    outside = {rel: data for rel, data in contents.items() if not rel.startswith(PACKAGE)}
    leaks = find_leaks({r: d for r, d in outside.items() if r not in dropped}, regions)
    python = {rel for rel in outside if rel.endswith(".py") and rel not in dropped}
    trees = {}
    for rel in sorted(python):
        try:
            trees[rel] = ast.parse(contents[rel].decode("utf-8"), filename=rel)
        except SyntaxError as err:
            raise ValueError(
                f"{rel}: cannot parse it to decide whether it is released: {err}"
            ) from err
    for rel in sorted(python):
        if rel in leaks:
            dropped[rel] = f"holds solution code ({leaks[rel][0]})"
            package = PurePosixPath(rel).parent
            if f"{package}/__init__.py" in contents:  # the package goes whole
                for other in python:
                    if PurePosixPath(other).is_relative_to(package) and other != rel:
                        dropped.setdefault(other, f"in {package}/, which holds solution code")
        elif _reads_solutions(trees[rel]):
            dropped[rel] = f"reads {SOLUTIONS}/"
    changed = True
    while changed:  # a file importing a module left out goes too
        changed = False
        gone = {
            name: rel for rel in dropped if rel in python for name in _module_names(rel, python)
        }
        for rel in sorted(python - set(dropped)):
            needed = sorted(name for name in _imports(trees[rel], rel) if name in gone)
            if needed:
                dropped[rel] = f"imports {needed[0]} ({gone[needed[0]]}, left out)"
                changed = True
    return dropped, {rel: found for rel, found in leaks.items() if rel not in dropped}


# --------------------------------------------------------------------------- what is changed
def student_toc(toc: dict, released: set[str]) -> dict:
    """``toc`` (a parsed ``_toc.yml``) with only the documents in ``released`` (paths with their
    suffix); a part or a chapter list left empty goes too.

    Raises:
        ValueError: the root document is not released.
    """

    def released_doc(name: str) -> bool:
        return any(f"{name}{suffix}" in released for suffix in ("", ".md", ".ipynb"))

    def entries(items: list | None) -> list:
        kept = []
        for entry in items or []:
            if "file" in entry and not released_doc(str(entry["file"])):
                continue
            entry = dict(entry)
            for key in ("sections", "chapters"):
                if key in entry:
                    entry[key] = entries(entry[key])
                    if not entry[key]:
                        del entry[key]
            kept.append(entry)
        return kept

    if not released_doc(str(toc.get("root", ""))):
        raise ValueError(f"the toc's root {toc.get('root')!r} is not in the student edition")
    out = dict(toc)
    if "parts" in out:
        out["parts"] = [
            {**part, "chapters": chapters}
            for part in out["parts"]
            if (chapters := entries(part.get("chapters")))
        ]
    if "chapters" in out:
        out["chapters"] = entries(out["chapters"])
    return out


def _drop_make_target(text: str, target: str) -> str:
    """The Makefile without ``target``: its rule, the comments just above it, its help line and its
    name in ``.PHONY``."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith(f"{target}:"):
            while out and out[-1].startswith("#"):
                out.pop()
            index += 1
            while index < len(lines) and lines[index].startswith("\t"):
                index += 1
            if index < len(lines) and not lines[index].strip() and out and not out[-1].strip():
                index += 1  # one blank line between rules, not two
            continue
        if re.match(rf'\t@echo "make {re.escape(target)}\b', line):
            index += 1
            continue
        if line.startswith(".PHONY:"):
            line = re.sub(rf"[ \t]+{re.escape(target)}(?=\s)", "", line)
        out.append(line)
        index += 1
    return "".join(out)


def edit_build_file(rel: str, text: str) -> str:
    """A build file (Makefile, ``.ci/``, ``.github/``) of the student edition.

    ``book/ and solutions/`` becomes ``book/``, ``solutions/ and _config.yml`` becomes
    ``_config.yml``, a ``solutions`` argument of a command (pytest's or nbval's paths) goes, and the
    Makefile loses its ``book-student`` target and the nbgrader venv as a prerequisite of ``test``.

    Raises:
        ValueError: the file still names ``solutions`` afterwards (a rule to add here).
    """
    if PurePosixPath(rel).name == "Makefile":
        text = _drop_make_target(text, STUDENT_TARGET)
        # tests/test_nbgrader.py reads solutions/ and is left out: no nbgrader venv before tests
        text = re.sub(r"^(test:.*?) \$\(NBGRADER_STAMP\)", r"\1", text, flags=re.M)
    text = re.sub(rf"\bbook/ and {SOLUTIONS}/", "book/", text)
    text = re.sub(rf"\b{SOLUTIONS}/ and (?=_config\.yml)", "", text)
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.lstrip().startswith("#") and "echo" not in line:
            line = re.sub(rf"[ \t]+{SOLUTIONS}(?=[ \t]|\\?$)", "", line, flags=re.M)
        lines.append(line)
    text = "".join(lines)
    left = [
        f"{rel}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if _SOLUTION_WORD.search(line)
    ]
    if left:
        raise ValueError(
            "the student edition's build files still name the solutions (add a rule to "
            "labcore/release.py, edit_build_file):\n  " + "\n  ".join(left)
        )
    return text


def strip_instructor_only(text: str, where: str = "text") -> str:
    """``text`` without the passages between ``<!-- instructor-only -->`` and
    ``<!-- end instructor-only -->`` (markers included).

    Raises:
        ValueError: a marker without its partner, or nested markers.
    """
    pattern = re.compile(re.escape(ONLY_BEGIN) + r".*?" + re.escape(ONLY_END), re.DOTALL)
    out = pattern.sub("", text)
    if ONLY_BEGIN in out or ONLY_END in out:
        raise ValueError(f"{where}: {ONLY_BEGIN!r} and {ONLY_END!r} do not pair up")
    return out


def drop_solution_cases(source: str) -> str:
    """A test module's source without the list or tuple elements, alone on their line, that name a
    page in ``solutions/`` (``"solutions/00-function-approximation",``): the student site has no
    such page. Other code is left as it is."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    remove: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.List | ast.Tuple):
            continue
        for element in node.elts:
            if (
                isinstance(element, ast.Constant)
                and isinstance(element.value, str)
                and element.value.startswith(f"{SOLUTIONS}/")
                and element.lineno == element.end_lineno
            ):
                segment = ast.get_source_segment(source, element)
                if lines[element.lineno - 1].strip() in (segment, f"{segment},"):
                    remove.add(element.lineno - 1)
    return "".join(line for number, line in enumerate(lines) if number not in remove)


def set_repository(config_text: str, url: str | None, ref: str | None) -> str:
    """``_config.yml``'s text with ``repository.url`` and/or ``repository.branch`` replaced (comments
    and layout kept).

    Raises:
        ValueError: the file has no ``repository:`` block with the key, or the new values are not a
            GitHub repository URL and a ref (:class:`labcore.assign.CourseConfig`'s rules).
    """
    lines = config_text.splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if re.match(r"repository:\s*$", line))
    except StopIteration:
        raise ValueError("_config.yml has no top-level 'repository:' block") from None
    for key, value in (("url", url), ("branch", ref)):
        if value is None:
            continue
        for index in range(start + 1, len(lines)):
            if lines[index].strip() and not lines[index][0].isspace():
                raise ValueError(f"_config.yml: 'repository:' has no '{key}:'")
            match = re.match(rf"(\s+{key}:)\s*\S.*?(\s*)$", lines[index])
            if match:
                lines[index] = f"{match.group(1)} {value}{match.group(2)}"
                break
        else:
            raise ValueError(f"_config.yml: 'repository:' has no '{key}:'")
    text = "".join(lines)
    repo = yaml.safe_load(text)["repository"]
    assign.CourseConfig(repo_url=str(repo["url"]), ref=str(repo["branch"]))  # validates
    return text


def _sync_headers(root: Path) -> list[str]:
    """Regenerate the badge and setup cell of every notebook of ``root/book`` and ``root/labs`` from
    ``root/_config.yml``, keeping the setup cell's stored output (it prints the device only)."""
    config = assign.load_config(root)
    changed = []
    for path in sorted([*(root / "book").glob("*.ipynb"), *(root / "labs").glob("*.ipynb")]):
        rel = path.relative_to(root).as_posix()
        nb = nbformat.read(path, as_version=4)
        setup = next((c for c in nb.cells if c.get("id") == assign.SETUP_ID), None)
        kept = (setup.outputs, setup.execution_count) if setup is not None else None
        assign.sync_header(nb, config, rel)
        if kept is not None:
            setup = next(c for c in nb.cells if c.get("id") == assign.SETUP_ID)
            setup.outputs, setup.execution_count = kept
        nbformat.validate(nb)
        text = nbformat.writes(nb) + "\n"
        if text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
            changed.append(rel)
    return changed


# --------------------------------------------------------------------------- checks
def verify(dest: Path, regions: Sequence[SolutionRegion]) -> list[str]:
    """Every way the student edition in ``dest`` shows the solutions (empty: none).

    No ``solutions/`` folder; no file outside ``labcore/`` with the code of a solution region;
    no page, notebook or configuration file naming a path in ``solutions/``; no build file naming
    ``solutions``; the toc names only files that exist; every notebook's header agrees with
    ``_config.yml`` (``labcore.assign --check``).
    """
    problems = []
    if (dest / SOLUTIONS).exists():
        problems.append(f"{SOLUTIONS}/ exists")
    files = sorted(p for p in dest.rglob("*") if p.is_file() and ".git" not in p.parts)
    contents = {p.relative_to(dest).as_posix(): p.read_bytes() for p in files}
    outside = {rel: data for rel, data in contents.items() if not rel.startswith(PACKAGE)}
    for rel, found in find_leaks(outside, regions).items():
        problems.append(f"{rel} holds the code of {', '.join(map(str, found))}")
    for rel, data in contents.items():
        text = data.decode("utf-8", errors="replace")
        if PurePosixPath(rel).suffix in LINK_SUFFIXES and _SOLUTION_PATH.search(text):
            problems.append(f"{rel} names a path in {SOLUTIONS}/")
        if _is_build_file(rel) and _SOLUTION_WORD.search(text):
            problems.append(f"{rel} (a build file) names {SOLUTIONS}")
    toc = yaml.safe_load((dest / "_toc.yml").read_text(encoding="utf-8"))
    if student_toc(toc, set(contents)) != toc:
        problems.append("_toc.yml names a document that the student edition does not have")
    problems += [f"labcore.assign --check: {p}" for p in assign.check(dest)]
    return problems


def _is_build_file(rel: str) -> bool:
    return PurePosixPath(rel).name == "Makefile" or rel.startswith((".ci/", ".github/"))


def labcore_references(root: Path, regions: Sequence[SolutionRegion]) -> dict[str, list[str]]:
    """The solution regions whose code labcore holds (region -> labcore files): its reference
    implementations, checks and rubrics, which the student edition ships by design."""
    files = {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted((root / PACKAGE).rglob("*.py"))
    }
    found: dict[str, list[str]] = {}
    for rel, hits in find_leaks(files, regions).items():
        for region in hits:
            found.setdefault(str(region), []).append(rel)
    return dict(sorted(found.items()))


# --------------------------------------------------------------------------- the release
@dataclass
class Release:
    """What :func:`release` wrote.

    Attributes:
        dest: the student repository.
        commit: the commit of the course that was released (its full hash).
        files: the files written, relative to ``dest``.
        dropped: the tracked files left out, with the reason.
        edited: the files written differently from the source.
        references: solution regions whose code labcore holds (region -> labcore files).
    """

    dest: Path
    commit: str
    files: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    edited: list[str] = field(default_factory=list)
    references: dict[str, list[str]] = field(default_factory=dict)


def _check_dest(dest: Path, source: Path, replace: bool) -> list[Path]:
    """What ``dest`` holds that the release replaces (its ``.git`` stays).

    Raises:
        ValueError: ``dest`` is the course or holds it, is a file, or is not empty without
            ``replace``.
    """
    if dest == source or dest in source.parents:
        raise ValueError(f"the student edition cannot be written to {dest}: it holds the course")
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"{dest} exists and is not a folder")
    entries = [p for p in dest.iterdir() if p.name != ".git"] if dest.exists() else []
    if entries and not replace:
        raise ValueError(
            f"{dest} is not empty: pass --replace to replace what it holds (its .git is kept)"
        )
    return entries


def _prepare(dest: Path, source: Path, replace: bool) -> None:
    if dest.exists():
        for entry in _check_dest(dest, source, replace):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    dest.mkdir(parents=True, exist_ok=True)


def release(
    source: Path,
    dest: Path,
    *,
    tag: str | None = None,
    repository_url: str | None = None,
    replace: bool = False,
    source_ref: str = "HEAD",
) -> Release:
    """Write the student edition of a commit of the course repository at ``source`` into ``dest``.

    Args:
        source: the course repository (or a folder inside it).
        dest: the student repository: missing, empty, or (with ``replace``) a previous release,
            whose ``.git`` is kept.
        tag: the ref students open and install from (``repository.branch``), e.g. ``v2026-fall``.
        repository_url: the public repository (``repository.url``), e.g.
            ``https://github.com/<owner>/<course-student>``.
        replace: replace what ``dest`` holds.
        source_ref: the commit to release (a branch, tag or hash of the course repository).

    Raises:
        ValueError: ``dest`` is the course or holds it, or is not empty without ``replace``; the
            source is not a git repository; a kept file other than a Python file holds solution
            code; a build file still names the solutions; the result fails :func:`verify`.
    """
    source = assign.find_root(source)
    dest = dest.resolve()
    _check_dest(dest, source, replace)
    commit, tracked = tracked_files(source, source_ref)
    contents = {rel: file.data for rel, file in tracked.items()}
    regions = solution_regions(contents)
    dropped, leaks = left_out(contents, regions)
    if leaks:
        raise ValueError(
            "these files would carry solution code into the student edition:\n  "
            + "\n  ".join(f"{rel}: {', '.join(map(str, f))}" for rel, f in sorted(leaks.items()))
        )
    if STUDENT_README not in contents:
        raise ValueError(f"{STUDENT_README} (the student README's template) is missing")
    kept = [rel for rel in tracked if rel not in dropped]
    if tag is not None or repository_url is not None:
        text = set_repository(
            contents["_config.yml"].decode("utf-8"),
            repository_url.rstrip("/") if repository_url else None,
            tag,
        )
        contents["_config.yml"] = text.encode("utf-8")

    written: dict[str, bytes] = {}
    for rel in kept:
        data = contents[rel]
        if _is_build_file(rel):
            data = edit_build_file(rel, data.decode("utf-8")).encode("utf-8")
        elif rel.endswith(".md") and not rel.startswith(PACKAGE):
            data = strip_instructor_only(data.decode("utf-8"), rel).encode("utf-8")
        elif rel.endswith(".ipynb") and ONLY_BEGIN.encode() in data:
            nb = nbformat.reads(data.decode("utf-8"), as_version=4)
            for cell in nb.cells:
                if cell.cell_type == "markdown":
                    cell.source = strip_instructor_only(cell.source, f"{rel} cell {cell.get('id')}")
            data = (nbformat.writes(nb) + "\n").encode("utf-8")
        elif rel.endswith(".py") and not rel.startswith(PACKAGE):
            data = drop_solution_cases(data.decode("utf-8")).encode("utf-8")
        written[rel] = data
    config = yaml.safe_load(written["_config.yml"])
    repo = config["repository"]
    template = string.Template(contents[STUDENT_README].decode("utf-8"))
    owner, _, name = str(repo["url"]).removeprefix("https://github.com/").partition("/")
    written["README.md"] = template.substitute(
        repository_url=repo["url"],
        ref=repo["branch"],
        site_url=f"https://{owner.lower()}.github.io/{name}/",
    ).encode("utf-8")
    toc = student_toc(yaml.safe_load(contents["_toc.yml"]), set(written))
    written["_toc.yml"] = (
        "# Table of contents of the student edition, written by `python -m labcore.release` from\n"
        "# the course's _toc.yml: only the documents this repository holds.\n"
        + yaml.safe_dump(toc, sort_keys=False)
    ).encode("utf-8")

    _prepare(dest, source, replace)
    result = Release(dest=dest, commit=commit, dropped=dict(sorted(dropped.items())))
    for rel, data in sorted(written.items()):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        origin = tracked.get(rel)
        if origin is not None:
            target.chmod(origin.mode)
        if origin is not None and data == origin.data:
            os.utime(target, (origin.mtime, origin.mtime))  # the commit's time, as git archive
        else:
            result.edited.append(rel)
        result.files.append(rel)
    result.edited += [rel for rel in _sync_headers(dest) if rel not in result.edited]
    result.edited.sort()
    result.references = labcore_references(dest, regions)
    problems = verify(dest, regions)
    if problems:
        raise ValueError(
            f"the student edition in {dest} shows the solutions:\n  " + "\n  ".join(problems)
        )
    return result


def _summary(result: Release, tag: str | None) -> str:
    reasons: dict[str, list[str]] = {}
    for rel, reason in result.dropped.items():
        reasons.setdefault(reason, []).append(rel)
    lines = [
        f"wrote the student edition to {result.dest}: {len(result.files)} files, from commit "
        f"{result.commit[:12]} of the course",
        "left out:",
    ]
    for reason, paths in reasons.items():
        shown = ", ".join(paths) if len(paths) <= 3 else f"{paths[0]} and {len(paths) - 1} more"
        lines.append(f"  {shown}: {reason}")
    lines.append(f"written differently from the course: {', '.join(result.edited)}")
    lines.append(
        f"labcore holds the code of {len(result.references)} solution regions (its reference "
        "implementations, checks and rubrics, shipped by design): "
        + "; ".join(f"{region} ({', '.join(files)})" for region, files in result.references.items())
    )
    ref = tag or "<tag>"
    lines.append(
        "next: cd "
        f"{result.dest} && git init -b main && git add -A && git commit -m 'Student edition {ref}' "
        f"&& git tag {ref} && git remote add origin <public repository> && git push -u origin main {ref}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labcore.release",
        description="Write the student edition of the course (no solutions) into a folder.",
    )
    parser.add_argument("dest", type=Path, help="the student repository to write")
    parser.add_argument("--tag", help="the ref students open and install from (repository.branch)")
    parser.add_argument(
        "--repository-url",
        help="the public repository (repository.url), https://github.com/<owner>/<name>",
    )
    parser.add_argument(
        "--replace", action="store_true", help="replace what DEST holds (its .git is kept)"
    )
    parser.add_argument(
        "--source-ref", default="HEAD", help="the course's commit to release (default: HEAD)"
    )
    parser.add_argument("--root", type=Path, default=None, help="the course repository")
    args = parser.parse_args(argv)
    try:
        result = release(
            args.root or Path.cwd(),
            args.dest,
            tag=args.tag,
            repository_url=args.repository_url,
            replace=args.replace,
            source_ref=args.source_ref,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(_summary(result, args.tag))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
