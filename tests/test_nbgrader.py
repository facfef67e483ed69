"""nbgrader on the course's labs, for real: generate_assignment, autograde and export on lab 0.

nbgrader lives in its own environment, ``.venv-nbgrader`` (``make nbgrader-env``, from
requirements-nbgrader.txt), so that its Jupyter server and notebook pins stay out of ``.venv``. It
executes the notebooks through a kernelspec named ``python3`` (the name in the labs' metadata)
that this test writes into the course folder and puts first on ``JUPYTER_PATH``: the kernel runs
``.venv``'s Python, where torch and labcore are installed.

The course folder follows nbgrader's layout (https://nbgrader.readthedocs.io/, "Managing
assignment files"): ``source/<assignment>/<lab>.ipynb``, ``release/``, ``submitted/<student>/
<assignment>/``, ``autograded/``, with ``nbgrader_config.py`` naming the course. The source
notebook is ``labs/<lab>.ipynb`` whose exercise cells hold the solution's code, markers
included; the submissions are the solution notebook as it is and the blank release.

What nbgrader gives for these labs, asserted below: the release is ``labs/<lab>.ipynb`` cell for
cell; the exercise cells are nbgrader "autograded answer" cells (grade_id = the rubric's), and the
labs have no "autograder tests" cells, so nbgrader's score is 0 out of 0 for every submission.
The points come from ``labcore.grade``, run here on the same autograded notebooks.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from labcore.grade import grade_submissions
from labcore.rubrics import load_rubric

ROOT = Path(__file__).resolve().parents[1]
NBGRADER_BIN = ROOT / ".venv-nbgrader" / "bin"
LAB = "00-function-approximation"  # the lab whose solution runs fastest (about 10 s)
ASSIGNMENT = "lab0"
COURSE_ID = "sss-test"
SOLVED, BLANK = "alice", "bob"  # alice submits the solution, bob the untouched release
RAISES_TAG = "raises-exception"

# Read in nbgrader's environment: what its gradebook recorded about the assignment and each submission.
GRADEBOOK_DUMP = """
import json, sys
from nbgrader.api import Gradebook
lab, assignment, students = sys.argv[1], sys.argv[2], sys.argv[3:]
with Gradebook("sqlite:///gradebook.db") as gb:
    nb = gb.find_notebook(lab, assignment)
    out = {
        "solution_cells": [c.name for c in nb.solution_cells],
        "grade_cells": [c.name for c in nb.grade_cells],
        "submissions": {},
    }
    for student in students:
        sub = gb.find_submission_notebook(lab, assignment, student)
        out["submissions"][student] = {"score": sub.score, "max_score": sub.max_score}
print(json.dumps(out))
"""


def nbgrader_source(
    lab: nbformat.NotebookNode, solution: nbformat.NotebookNode
) -> nbformat.NotebookNode:
    """The nbgrader source notebook: ``lab`` with each exercise cell's code taken from ``solution``.

    The lab's exercise cells carry the nbgrader metadata (``solution: true``, ``grade_id``) that
    ``nbgrader generate_assignment`` requires around every ``### BEGIN SOLUTION`` region; the
    solution notebook has the code but not that metadata. Cells are matched by id.
    """
    source = nbformat.from_dict(json.loads(json.dumps(lab)))
    solution_code = {cell.get("id"): cell.source for cell in solution.cells}
    for cell in source.cells:
        if "nbgrader" in cell.metadata:
            cell.source = solution_code[cell.get("id")]
    return source


@dataclass
class Course:
    """An nbgrader course folder after generate_assignment, autograde and export."""

    root: Path
    release: Path
    autograded: dict[str, Path]
    export: list[dict[str, str]]
    gradebook: dict
    kernel_argv: list[str]


def _nbgrader(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run one nbgrader command in the course folder; fail the test with its log if it fails."""
    done = subprocess.run(
        [str(NBGRADER_BIN / "nbgrader"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"nbgrader {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Course:
    if not (NBGRADER_BIN / "nbgrader").exists():
        pytest.fail("nbgrader is not installed: run `make nbgrader-env` (builds .venv-nbgrader)")
    root = tmp_path_factory.mktemp("nbgrader-course")
    kernels = root / "jupyter" / "kernels" / "python3"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (labcore's .venv)",
                "language": "python",
            }
        ),
        encoding="utf-8",
    )
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
        "c.Execute.timeout = 120  # seconds per cell (nbgrader's default, 30, is tight on a busy CPU)\n"
        "c.Execute.iopub_timeout = 30  # for a cell's last outputs (4 s, then nbgrader gives up)\n",
        encoding="utf-8",
    )
    lab = nbformat.read(ROOT / "labs" / f"{LAB}.ipynb", as_version=4)
    solution_path = ROOT / "solutions" / f"{LAB}.ipynb"
    source = root / "source" / ASSIGNMENT / f"{LAB}.ipynb"
    source.parent.mkdir(parents=True)
    nbformat.write(nbgrader_source(lab, nbformat.read(solution_path, as_version=4)), source)

    env = {
        **os.environ,
        # nbgrader runs `alembic` from PATH when it opens its gradebook
        "PATH": f"{NBGRADER_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "JUPYTER_PATH": str(root / "jupyter"),  # searched first: our python3 kernelspec wins
        "JUPYTER_CONFIG_DIR": str(root / "jupyter-config"),  # no user configuration
        "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"),
        "OMP_NUM_THREADS": "1",
    }
    specs = subprocess.run(
        [str(NBGRADER_BIN / "jupyter"), "kernelspec", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    kernel_argv = json.loads(specs.stdout)["kernelspecs"]["python3"]["spec"]["argv"]

    _nbgrader(["generate_assignment", ASSIGNMENT], root, env)
    release = root / "release" / ASSIGNMENT / f"{LAB}.ipynb"
    for student, notebook in ((SOLVED, solution_path), (BLANK, release)):
        folder = root / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        (folder / f"{LAB}.ipynb").write_bytes(notebook.read_bytes())
    _nbgrader(["autograde", ASSIGNMENT], root, env)
    _nbgrader(["export", "--to", str(root / "grades.csv")], root, env)
    with open(root / "grades.csv", newline="", encoding="utf-8") as handle:
        export = list(csv.DictReader(handle))
    dump = subprocess.run(
        [str(NBGRADER_BIN / "python"), "-c", GRADEBOOK_DUMP, LAB, ASSIGNMENT, SOLVED, BLANK],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return Course(
        root=root,
        release=release,
        autograded={
            s: root / "autograded" / s / ASSIGNMENT / f"{LAB}.ipynb" for s in (SOLVED, BLANK)
        },
        export=export,
        gradebook=json.loads(dump.stdout),
        kernel_argv=kernel_argv,
    )


def _errors(cell: nbformat.NotebookNode) -> list[str]:
    """The errors a cell's outputs show, as ``"<ename>: <evalue>"``."""
    outputs = cell.get("outputs", [])
    return [f"{o.ename}: {o.evalue}"[:300] for o in outputs if o.output_type == "error"]


def test_nbgrader_kernel_is_the_course_venv(course: Course) -> None:
    """nbgrader's ``python3`` kernel is ours (.venv's Python), not its own environment's."""
    assert course.kernel_argv[0] == sys.executable
    assert not Path(course.kernel_argv[0]).is_relative_to(NBGRADER_BIN.parent)


def test_release_is_the_lab(course: Course) -> None:
    """generate_assignment on the solution gives labs/<lab>.ipynb: same cells, stubs, grade_ids."""
    release = nbformat.read(course.release, as_version=4)
    lab = nbformat.read(ROOT / "labs" / f"{LAB}.ipynb", as_version=4)
    assert [c.get("id") for c in release.cells] == [c.get("id") for c in lab.cells]
    for got, expected in zip(release.cells, lab.cells, strict=True):
        assert (got.cell_type, got.source) == (expected.cell_type, expected.source), got.get("id")
        assert not got.get("outputs")
        assert "### BEGIN SOLUTION" not in got.source
        if "nbgrader" in expected.metadata:
            keys = ("grade_id", "solution", "grade", "locked")
            assert {k: got.metadata["nbgrader"][k] for k in keys} == {
                k: expected.metadata["nbgrader"][k] for k in keys
            }
            assert "raise NotImplementedError()" in got.source
        else:
            assert "nbgrader" not in got.metadata
    graded = [c.metadata["nbgrader"]["grade_id"] for c in release.cells if "nbgrader" in c.metadata]
    assert graded == [e.grade_id for e in load_rubric(LAB).exercises]


def test_nbgrader_records_exercises_as_answer_cells_without_points(course: Course) -> None:
    """The gradebook holds the rubric's exercises as solution cells, and no cell worth points."""
    assert course.gradebook["solution_cells"] == [e.grade_id for e in load_rubric(LAB).exercises]
    assert course.gradebook["grade_cells"] == []


def test_nbgrader_scores_zero_out_of_zero(course: Course) -> None:
    """With no autograder-test cells, nbgrader's score is 0 / 0 for the solution and the blank."""
    rows = {row["student_id"]: row for row in course.export}
    assert set(rows) == {SOLVED, BLANK}
    for student in (SOLVED, BLANK):
        assert rows[student]["assignment"] == ASSIGNMENT
        assert float(rows[student]["score"]) == 0.0
        assert float(rows[student]["max_score"]) == 0.0
        assert course.gradebook["submissions"][student] == {"score": 0.0, "max_score": 0.0}


def test_autograded_solution_runs_without_errors(course: Course) -> None:
    nb = nbformat.read(course.autograded[SOLVED], as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "nbgrader did not execute every cell"
    assert {c.get("id"): _errors(c) for c in code if _errors(c)} == {}


def test_autograded_blank_raises_not_implemented_where_the_lab_says(course: Course) -> None:
    """The stubs only define functions; exactly the cells tagged raises-exception fail, all with
    NotImplementedError."""
    nb = nbformat.read(course.autograded[BLANK], as_version=4)
    lab = nbformat.read(ROOT / "labs" / f"{LAB}.ipynb", as_version=4)
    tagged = {c.get("id") for c in lab.cells if RAISES_TAG in c.metadata.get("tags", [])}
    failed = {c.get("id"): _errors(c) for c in nb.cells if c.cell_type == "code" and _errors(c)}
    assert tagged and set(failed) == tagged
    assert all(
        len(errors) == 1 and errors[0].startswith("NotImplementedError")
        for errors in failed.values()
    ), failed
    exercise_ids = {c.get("id") for c in nb.cells if "nbgrader" in c.metadata}
    assert not exercise_ids & set(failed)


def test_labcore_grade_scores_the_autograded_notebooks(course: Course) -> None:
    """labcore.grade on nbgrader's autograded notebooks: full marks for the solution, zero blank."""
    rubric = load_rubric(LAB)
    solved, blank = grade_submissions(
        LAB, [course.autograded[SOLVED], course.autograded[BLANK]], isolation="none", jobs=2
    )
    assert solved.submission.split("/")[0] == SOLVED
    assert solved.total == rubric.max_total, solved.status
    assert all(e.points == e.max_points for e in solved.exercises)
    assert blank.submission.split("/")[0] == BLANK
    assert blank.total == 0.0
    assert [e.grade_id for e in solved.exercises] == course.gradebook["solution_cells"]
