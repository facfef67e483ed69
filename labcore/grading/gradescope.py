"""Gradescope: the autograder zip of a lab, and the run that grades one submission inside it.

A Gradescope programming assignment takes a zip with two files at its top level (Gradescope's
"Autograder Specifications", https://gradescope-autograders.readthedocs.io/en/latest/specs/, source
``docs/specs.md`` of github.com/gradescope/autograder_samples):

- ``setup.sh`` runs once, as root and with network, when Gradescope builds the autograder's image
  (an Ubuntu image; the zip is unpacked in ``/autograder/source``). Ours installs Python's venv
  tooling and Debian's ``bubblewrap``, the CPU build of torch, then this package from the zip.
- ``run_autograder`` runs once per submission, in ``/autograder``, with the student's files in
  ``/autograder/submission``; it must write ``/autograder/results/results.json``. Ours runs
  ``python -m labcore.grading.gradescope run``: :func:`run` finds the submitted notebook, grades it
  with :func:`labcore.grade.grade_submissions` (the grader the CSV comes from, same limits and seed)
  and writes :func:`results_json` of the grade.

Beside the two scripts the zip holds what they need: ``labcore/`` (its rubrics, checks, shipped
weights and the grader), ``pyproject.toml``, ``README.md`` and ``LICENSE`` (pip builds the package
from them), the untouched lab ``labs/<lab>.ipynb`` (the grader subtracts what it finds in the lab
from what it flags in a submission) and ``labcore-autograder.json`` (the lab and the grading limits,
:class:`AutograderConfig`). Never ``solutions/``.

Command line::

    python -m labcore.grading.gradescope build 00-function-approximation autograder.zip
    python -m labcore.grading.gradescope run        # inside Gradescope's container

To try the zip without Gradescope, unpack it into ``<root>/source``, put a notebook in
``<root>/submission`` and run ``run_autograder`` (from ``<root>``, as Gradescope does) with
``LABCORE_AUTOGRADER_ROOT=<root>`` (instead of ``/autograder``) and ``LABCORE_PYTHON`` set to a
Python that has labcore's dependencies (instead of the virtual environment ``setup.sh`` makes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labcore.grading.records import ExerciseGrade, SubmissionGrade
from labcore.grading.report import feedback_markdown, points_text
from labcore.rubrics import Rubric, available_labs, load_rubric

__all__ = [
    "AutograderConfig",
    "build_autograder",
    "find_submission",
    "main",
    "results_json",
    "run",
]

#: Where Gradescope puts everything (the specification's file hierarchy); tests set the variable.
DEFAULT_ROOT = Path("/autograder")
ROOT_ENV = "LABCORE_AUTOGRADER_ROOT"
#: The Python that ``run_autograder`` runs (default: the virtual environment of ``setup.sh``).
PYTHON_ENV = "LABCORE_PYTHON"
VENV = "/opt/labcore-venv"
CONFIG_NAME = "labcore-autograder.json"
TORCH_VERSION = "2.13.0"  # the Makefile's TORCH_SPEC: the torch that the course is tested with
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
#: ``isolation`` of :class:`AutograderConfig`.
ISOLATIONS = ("auto", "bwrap", "none")
#: Files of the repository that pip needs to build labcore (pyproject.toml names the other two).
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE")

#: Fixed timestamps in the zip: the same lab and limits always give the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root and with network, when it builds the autograder image
# (lab {lab}); the zip is unpacked in /autograder/source. Made by labcore.grading.gradescope.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
# Python's venv tooling, and bubblewrap (bwrap), the sandbox the grader runs kernels in.
apt-get install -y --no-install-recommends python3 python3-venv python3-pip bubblewrap
python3 -m venv {venv}
{venv}/bin/python -m pip install --upgrade pip
# The CPU build of torch: a plain `pip install torch` would pull a multi-GB CUDA build.
{venv}/bin/python -m pip install torch=={torch} --index-url {index}
# labcore (rubrics, checks, grader) with its dependencies (nbclient, ipykernel, nbformat, ...).
{venv}/bin/python -m pip install /autograder/source
# Fail the build here rather than at the first submission (pip refuses a Python older than 3.10).
{venv}/bin/python -m labcore.grading.gradescope --help > /dev/null
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this once per submission (the student's files are in /autograder/submission);
# it writes /autograder/results/results.json. Made by labcore.grading.gradescope.
# {root_env} replaces /autograder and {python_env} the Python of setup.sh (tests).
set -euo pipefail
ROOT="${{{root_env}:-{root}}}"
# Not from source/: python -m would import labcore from there, not the installed one.
cd "$ROOT"
exec "${{{python_env}:-{venv}/bin/python}}" -m labcore.grading.gradescope run --root "$ROOT"
"""


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class AutograderConfig:
    """What ``labcore-autograder.json`` says: the lab and the limits of :func:`grade_submissions`.

    Attributes:
        lab: the lab's file stem (it must have a rubric).
        cell_timeout: seconds a student's cell may run.
        total_timeout: seconds for the whole submission (Gradescope's own limit, 10 minutes by
            default, must leave room for it plus about 2 minutes).
        memory_mb: address-space limit of the kernel (0: none).
        seed: seed of the hidden inputs.
        isolation: ``auto`` (bubblewrap where the container lets it make namespaces, else none:
            the container, which holds one submission, is then the only sandbox), ``bwrap``
            (bubblewrap or no grade: a submission then gets zero and the reason) or ``none``.
    """

    lab: str
    cell_timeout: float = 60.0
    total_timeout: float = 300.0
    memory_mb: int = 4096
    seed: int = 0
    isolation: str = "auto"

    def __post_init__(self) -> None:
        if self.lab not in available_labs():
            raise ValueError(
                f"lab: no rubric for {self.lab!r}; labs: {', '.join(available_labs())}"
            )
        for name in ("cell_timeout", "total_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.memory_mb, int) or self.memory_mb < 0:
            raise ValueError(f"memory_mb must be an integer >= 0, got {self.memory_mb!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {self.isolation!r}")

    def to_json(self) -> str:
        """The file's text."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> AutograderConfig:
        """Read ``labcore-autograder.json``.

        Raises:
            ValueError: if the file is not a JSON object with the fields of this class.
        """
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"{path}: {err}") from None


# --------------------------------------------------------------------------- building the zip
def _repository() -> Path:
    """The course repository that this labcore was imported from (it must have pyproject.toml)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise ValueError(
            f"building an autograder needs the course repository (pyproject.toml, labs/), but "
            f"labcore was imported from {root}: run it from a clone, with labcore installed "
            "editable (pip install -e .)"
        )
    return root


def _package_files(package: Path) -> list[Path]:
    """Every file of the package folder, without caches, compiled files and hidden files."""
    files = []
    for path in sorted(package.rglob("*")):
        parts = path.relative_to(package).parts
        if not path.is_file() or path.suffix in (".pyc", ".pyo"):
            continue
        if any(p == "__pycache__" or p.startswith(".") for p in parts):
            continue
        files.append(path)
    return files


def _zip_entry(archive: zipfile.ZipFile, name: str, data: bytes, executable: bool) -> None:
    """Add one file with Unix permissions (0755 or 0644) that unzip restores."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix: the high 16 bits of external_attr are the file's mode
    info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
    archive.writestr(info, data)


def build_autograder(
    lab: str,
    out: Path,
    *,
    cell_timeout: float = 60.0,
    total_timeout: float = 300.0,
    memory_mb: int = 4096,
    seed: int = 0,
    isolation: str = "auto",
) -> Path:
    """Write the Gradescope autograder zip of ``lab`` to ``out`` and return ``out``.

    The zip holds, at its top level, ``setup.sh`` and ``run_autograder`` (both executable), the
    package ``labcore/``, ``pyproject.toml``, ``README.md``, ``LICENSE``, ``labs/<lab>.ipynb`` and
    ``labcore-autograder.json`` (the lab and the limits given here, passed to
    :func:`labcore.grade.grade_submissions` for every submission, and ``isolation``: see
    :class:`AutograderConfig`). No solutions, no caches.

    Raises:
        ValueError: for a lab without a rubric, bad limits, or a labcore that was not imported
            from the course repository.
    """
    config = AutograderConfig(lab, cell_timeout, total_timeout, memory_mb, seed, isolation)
    repo = _repository()
    lab_notebook = repo / "labs" / f"{lab}.ipynb"
    missing = [p for p in (lab_notebook, *(repo / f for f in PROJECT_FILES)) if not p.is_file()]
    if missing:
        raise ValueError(f"the autograder of {lab} needs {', '.join(map(str, missing))}")
    setup = SETUP_SH.format(lab=lab, venv=VENV, torch=TORCH_VERSION, index=TORCH_INDEX)
    runner = RUN_AUTOGRADER.format(
        venv=VENV, root=DEFAULT_ROOT, root_env=ROOT_ENV, python_env=PYTHON_ENV
    )
    entries: list[tuple[str, bytes, bool]] = [  # (name in the zip, content, executable)
        ("setup.sh", setup.encode(), True),
        ("run_autograder", runner.encode(), True),
        (CONFIG_NAME, config.to_json().encode(), False),
    ]
    for path in [
        *(repo / f for f in PROJECT_FILES),
        lab_notebook,
        *_package_files(repo / "labcore"),
    ]:
        name = path.relative_to(repo).as_posix()
        if "solutions" in Path(name).parts:
            raise ValueError(f"refusing to ship {name}: solutions never go into an autograder")
        entries.append((name, path.read_bytes(), False))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(handle)
    try:
        with zipfile.ZipFile(partial, "w") as archive:
            for name, data, executable in entries:
                _zip_entry(archive, name, data, executable)
        os.chmod(partial, 0o644)
        os.replace(partial, out)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return out


# --------------------------------------------------------------------------- results.json
def _test_output(exercise: ExerciseGrade) -> str:
    """What a student reads under one test: the summary, then one line per hidden case."""
    lines = [exercise.summary]
    for case in exercise.cases:
        mark = "passed" if case.passed else "FAILED"
        detail = f": {case.message}" if case.message else ""
        lines.append(f"- {mark}, {case.name}{detail}")
    return "\n".join(lines)


def results_json(grade: SubmissionGrade) -> dict[str, Any]:
    """The ``results.json`` of one graded submission, in Gradescope's documented format.

    Top level: ``score`` (the sum of the tests' scores, which is the CSV's ``total``),
    ``execution_time`` (seconds), ``output`` (the Markdown feedback of
    :func:`~labcore.grading.report.feedback_markdown`, ``output_format`` ``md``), ``visibility``
    and ``stdout_visibility`` (the log stays with the instructor), ``extra_data`` (isolation,
    notes, flags), and ``tests``: one per exercise, in rubric order, with ``name`` (the
    exercise's title as the student sees it, else its function), ``score``, ``max_score``,
    ``status`` (``passed`` for full points, else ``failed``), ``output`` (the summary and the
    message of every hidden case, plain text) and ``visibility`` ``visible``.
    """
    tests = [
        {
            "name": e.title or e.function,
            "score": e.points,
            "max_score": e.max_points,
            "status": "passed" if e.graded and e.points >= e.max_points else "failed",
            "output": _test_output(e),
            "output_format": "text",
            "visibility": "visible",
        }
        for e in grade.exercises
    ]
    return {
        "score": round(sum(t["score"] for t in tests), 2),
        "execution_time": round(grade.seconds),
        "output": feedback_markdown(grade),
        "output_format": "md",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "extra_data": {
            "lab": grade.lab,
            "isolation": grade.isolation,
            "status": grade.status,
            "flags": list(grade.flags),
        },
        "tests": tests,
    }


# --------------------------------------------------------------------------- one submission
def find_submission(folder: Path, lab: str) -> tuple[Path | None, str]:
    """The notebook to grade in a submission folder, and a note for the student.

    Exactly one ``.ipynb`` (in any subfolder, except hidden ones such as ``.ipynb_checkpoints``)
    is graded whatever its name. Among several, the one named ``<lab>.ipynb`` is graded if there
    is exactly one such; otherwise nothing is graded and the note says why (as it does when
    there is no notebook).

    Returns:
        ``(path, note)``: ``path`` is None when nothing can be graded; ``note`` is empty when
        the submission is as expected.
    """
    expected = f"{lab}.ipynb"
    if not folder.is_dir():
        return None, f"No submission folder was found; upload your lab notebook {expected}."
    notebooks = sorted(
        p
        for p in folder.rglob("*.ipynb")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if len(notebooks) == 1:
        return notebooks[0], ""
    names = ", ".join(p.relative_to(folder).as_posix() for p in notebooks[:20])
    if not notebooks:
        return None, (
            f"No notebook (.ipynb file) was found in your submission, so nothing was graded. "
            f"Upload your lab notebook {expected}."
        )
    named = [p for p in notebooks if p.name == expected]
    if len(named) == 1:
        return named[0], (
            f"Your submission holds {len(notebooks)} notebooks ({names}); "
            f"{named[0].relative_to(folder).as_posix()} was graded, the one named like the lab."
        )
    return None, (
        f"Your submission holds {len(notebooks)} notebooks ({names}), so nothing was graded: "
        f"upload exactly one, your lab notebook {expected}."
    )


def _ungraded(rubric: Rubric, message: str) -> dict[str, Any]:
    """The results of a submission that could not be graded: zero for every exercise, and why."""
    grade = SubmissionGrade.empty("submission", "", rubric)
    for exercise in grade.exercises:
        exercise.summary = "not graded: " + message
    result = results_json(grade)
    result["output"] = f"**Score: 0 / {points_text(grade.max_total)}**\n\n{message}\n"
    return result


def autograder_root() -> Path:
    """``$LABCORE_AUTOGRADER_ROOT`` if set, else ``/autograder``."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def _write_results(result: dict[str, Any], path: Path) -> None:
    """Write ``results.json`` at once (a half-written file would read as a failed autograder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _grade(config: AutograderConfig, notebook: Path, root: Path) -> SubmissionGrade:
    """Grade ``notebook`` with the limits of ``config``, its kernel unable to see ``results/``.

    With ``isolation`` ``auto``, a container where bubblewrap cannot make namespaces (the grader
    then refuses ``bwrap``) is graded without isolation, said in the log and in the grade's
    ``isolation``: the container, which holds this one submission, is the sandbox.
    """
    from labcore.grade import grade_submissions

    def grade(isolation: str) -> SubmissionGrade:
        (graded,) = grade_submissions(
            config.lab,
            [notebook],
            jobs=1,
            cell_timeout=config.cell_timeout,
            total_timeout=config.total_timeout,
            memory_mb=config.memory_mb,
            seed=config.seed,
            isolation=isolation,
            protect=[root / "results"],
        )
        return graded

    previous = Path.cwd()
    os.chdir(root / "source")  # where the grader finds the untouched lab, labs/<lab>.ipynb
    try:
        if config.isolation != "auto":
            return grade(config.isolation)
        try:
            return grade("auto")
        except ValueError as err:
            print(
                f"labcore.grading.gradescope: {err}\nlabcore.grading.gradescope: grading without "
                "isolation inside this container (isolation 'auto' in labcore-autograder.json)",
                file=sys.stderr,
            )
            return grade("none")
    finally:
        os.chdir(previous)


def run(root: Path | None = None) -> dict[str, Any]:
    """Grade the submission in ``<root>/submission`` and write ``<root>/results/results.json``.

    ``root`` defaults to :func:`autograder_root`. The lab, the limits and the isolation come from
    ``<root>/source/labcore-autograder.json``; the notebook is graded by
    :func:`labcore.grade.grade_submissions` with ``jobs=1``, from ``<root>/source`` (where the
    untouched lab is) and with ``<root>/results`` hidden from the kernel. A submission without
    exactly one notebook gets zero and a note saying why; an error of the grader itself gets zero
    and its message (the traceback goes to the log, which only instructors see). Never raises.

    Returns:
        The results written.
    """
    root = Path(root).absolute() if root is not None else autograder_root()
    start = time.monotonic()
    rubric: Rubric | None = None
    try:
        config = AutograderConfig.load(root / "source" / CONFIG_NAME)
        rubric = load_rubric(config.lab)
        notebook, note = find_submission(root / "submission", config.lab)
        if notebook is None:
            result = _ungraded(rubric, note)
        else:
            result = results_json(_grade(config, notebook.absolute(), root))
            if note:
                result["output"] = f"{note}\n\n{result['output']}"
    except Exception as err:  # the student must still get a results.json that says what happened
        traceback.print_exc()
        message = (
            f"The autograder could not grade this submission ({type(err).__name__}: "
            f"{str(err)[:300]}). Please tell your instructor."
        )
        if rubric is not None:
            result = _ungraded(rubric, message)
        else:
            result = {
                "score": 0.0,
                "output": message,
                "output_format": "text",
                "visibility": "visible",
                "stdout_visibility": "hidden",
                "tests": [],
            }
    result["execution_time"] = round(time.monotonic() - start)
    _write_results(result, root / "results" / "results.json")
    return result


# --------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    """``build <lab> OUT.zip`` (with the grading limits) or ``run`` (inside Gradescope)."""
    parser = argparse.ArgumentParser(
        prog="python -m labcore.grading.gradescope",
        description="Gradescope autograder of a lab: build its zip, or grade one submission.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write the autograder zip of a lab")
    build.add_argument("lab", help=f"the lab's file stem ({', '.join(available_labs())})")
    build.add_argument("out", type=Path, help="the zip to write, e.g. autograder.zip")
    build.add_argument("--timeout", type=float, default=60.0, help="seconds per cell (60)")
    build.add_argument(
        "--total-timeout", type=float, default=300.0, help="seconds per submission (300)"
    )
    build.add_argument(
        "--memory-mb", type=int, default=4096, help="address-space limit of the kernel (4096)"
    )
    build.add_argument("--seed", type=int, default=0, help="seed of the hidden inputs (0)")
    build.add_argument(
        "--isolation",
        choices=ISOLATIONS,
        default="auto",
        help="auto: bubblewrap where the container allows it, else none (the container is the "
        "sandbox); bwrap: bubblewrap or no grade; none: never",
    )
    grade = commands.add_parser("run", help="grade <root>/submission into <root>/results")
    grade.add_argument(
        "--root", type=Path, default=None, help=f"default: ${ROOT_ENV}, else {DEFAULT_ROOT}"
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        try:
            out = build_autograder(
                args.lab,
                args.out,
                cell_timeout=args.timeout,
                total_timeout=args.total_timeout,
                memory_mb=args.memory_mb,
                seed=args.seed,
                isolation=args.isolation,
            )
        except ValueError as err:
            parser.error(str(err))
        print(f"wrote {out}: upload it as the autograder of a Gradescope programming assignment")
        return 0
    result = run(args.root)
    print(f"score {points_text(result['score'])}; wrote results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
