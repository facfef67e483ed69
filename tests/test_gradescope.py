"""The Gradescope autograder: the zip's contents, and its ``run_autograder`` run on a fake ``/autograder``.

The zip of lab 0 is built once and unpacked, as Gradescope does, into one fake tree per submission
(``<tmp>/<case>/autograder/{source,submission,results}``, with ``run_autograder`` copied to the
top). Each tree's ``run_autograder`` is then run as it is on Gradescope (working folder the tree),
with ``LABCORE_AUTOGRADER_ROOT`` in place of ``/autograder`` and ``LABCORE_PYTHON`` (this Python)
in place of the virtual environment that ``setup.sh`` would make: the solution (without its slow,
ungraded demo cells), the untouched lab, a partial submission (that solution with one exercise back
to the lab's stub) and a submission with no notebook, all at once, beside the CSV grader
(``python -m labcore.grade``) on the partial one.

Every ``results.json`` is checked against the fields and types of Gradescope's documented format
(:func:`check_results`, written from https://gradescope-autograders.readthedocs.io/en/latest/specs/,
independent of the code under test), and its scores against the rubric and the CSV grader.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import nbformat
import pytest

from labcore.grading.gradescope import (
    AutograderConfig,
    build_autograder,
    find_submission,
    main,
    results_json,
    run,
)
from labcore.grading.records import CaseOutcome, ExerciseGrade, SubmissionGrade
from labcore.rubrics import load_rubric

ROOT = Path(__file__).resolve().parents[1]
LAB = "00-function-approximation"
SOLUTION = ROOT / "solutions" / f"{LAB}.ipynb"
STUBS = ROOT / "labs" / f"{LAB}.ipynb"
RUBRIC = load_rubric(LAB)
POINTS = {e.grade_id: e.points for e in RUBRIC.exercises}
#: The exercise that the partial submission leaves as the lab's stub.
STUB_EXERCISE = "ex-gaussian-nll"
#: The solution's plots and demo fits: slow and not graded, dropped to keep the runs cheap.
DEMO_CELLS = ("cell-4", "cell-7", "cell-13", "cell-17")
#: Wide over what a right submission needs on a loaded machine (five processes share the CPUs).
RUN_TIMEOUT_S = 600

# What Gradescope's specification allows (docs/specs.md of gradescope/autograder_samples:
# "Output format", "Controlling Test Case Visibility", "Output String Formatting" (PR #92), and
# the test case "status", which is "passed" or "failed").
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
FORMATS = {"text", "html", "simple_format", "md", "ansi"}
STATUSES = {"passed", "failed"}
TOP_LEVEL = {
    "score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
    "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard",
}  # fmt: skip
TEST_FIELDS = {
    "score", "max_score", "status", "name", "name_format", "number", "output", "output_format",
    "tags", "visibility", "extra_data",
}  # fmt: skip


# --------------------------------------------------------------------------- the format
def is_number(value: Any) -> bool:
    """A JSON number (a bool is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_results(data: Any) -> list[str]:
    """What breaks Gradescope's ``results.json`` format in ``data`` (empty when nothing does).

    Ours must have a top-level ``score`` (a number, the sum of the tests' scores), numeric
    ``execution_time``, string ``output``, documented formats and visibilities, and ``tests``
    whose entries have string ``name`` and ``output``, numeric ``score`` and ``max_score`` with
    ``0 <= score <= max_score``, a documented ``status`` and ``visibility``; no unknown fields.
    """
    if not isinstance(data, dict):
        return [f"not an object: {type(data).__name__}"]
    problems = [f"unknown field {key!r}" for key in sorted(set(data) - TOP_LEVEL)]
    for key in ("score", "execution_time"):
        if not is_number(data.get(key)):
            problems.append(f"{key} is not a number: {data.get(key)!r}")
    if not isinstance(data.get("output"), str):
        problems.append("output is not a string")
    for key in ("output_format", "test_output_format", "test_name_format"):
        if key in data and data[key] not in FORMATS:
            problems.append(f"{key} {data[key]!r} is not a documented format")
    for key in ("visibility", "stdout_visibility"):
        if data.get(key) not in VISIBILITIES:
            problems.append(f"{key} {data.get(key)!r} is not a documented visibility")
    if "extra_data" in data and not isinstance(data["extra_data"], dict):
        problems.append("extra_data is not an object")
    tests = data.get("tests")
    if not isinstance(tests, list):
        return [*problems, "tests is not a list"]
    for i, test in enumerate(tests):
        if not isinstance(test, dict):
            problems.append(f"tests[{i}] is not an object")
            continue
        problems += [f"tests[{i}]: unknown field {k!r}" for k in sorted(set(test) - TEST_FIELDS)]
        for key in ("score", "max_score"):
            if not is_number(test.get(key)):
                problems.append(f"tests[{i}].{key} is not a number: {test.get(key)!r}")
        if is_number(test.get("score")) and is_number(test.get("max_score")):
            if not 0 <= test["score"] <= test["max_score"]:
                problems.append(f"tests[{i}].score is outside [0, max_score]")
        for key in ("name", "output"):
            if not isinstance(test.get(key), str):
                problems.append(f"tests[{i}].{key} is not a string")
        if test.get("status") not in STATUSES:
            problems.append(f"tests[{i}].status {test.get('status')!r} is not passed/failed")
        if test.get("visibility") not in VISIBILITIES:
            problems.append(f"tests[{i}].visibility {test.get('visibility')!r} is not documented")
        if "output_format" in test and test["output_format"] not in FORMATS:
            problems.append(f"tests[{i}].output_format {test['output_format']!r} is undocumented")
    scores = [t.get("score") for t in tests if isinstance(t, dict)]
    if is_number(data.get("score")) and all(is_number(s) for s in scores):
        if abs(data["score"] - sum(scores)) > 1e-9:
            problems.append(f"score {data['score']} is not the sum of the tests' {sum(scores)}")
    return problems


def test_the_format_check_can_fail():
    good = {
        "score": 1.0,
        "execution_time": 3,
        "output": "ok",
        "output_format": "md",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [
            {"name": "a", "score": 1.0, "max_score": 2, "status": "failed", "output": "",
             "visibility": "visible"},
        ],
    }  # fmt: skip
    assert check_results(good) == []
    broken = [
        {**good, "score": "1"},
        {**good, "score": 2.0},  # not the sum of the tests
        {**good, "visibility": "sometimes"},
        {**good, "output_format": "markdown"},
        {**good, "surprise": 1},
        {**good, "tests": [{**good["tests"][0], "status": "partial"}]},
        {**good, "tests": [{**good["tests"][0], "score": True}]},
        {**good, "tests": [{**good["tests"][0], "score": 3.0}], "score": 3.0},
    ]
    assert all(check_results(data) for data in broken)


# --------------------------------------------------------------------------- results_json alone
def test_results_json_sums_the_exercises_and_names_them_as_the_student_sees_them():
    grade = SubmissionGrade(
        submission="alice",
        path="alice.ipynb",
        lab=LAB,
        exercises=[
            ExerciseGrade("ex-a", "f", 2, 2.0, [CaseOutcome("one", True)], "all passed", True,
                          "Exercise 1: f, cell 3"),
            ExerciseGrade("ex-b", "g", 3, 1.5, [CaseOutcome("x", True), CaseOutcome("y", False,
                          "expected 1.0, got 2.0")], "1 of 2 passed", True),
            ExerciseGrade("ex-c", "h", 1.5, 0.0),
        ],
        seconds=12.4,
        finished=True,
        isolation="none",
    )  # fmt: skip
    data = results_json(grade)
    assert check_results(data) == []
    assert data["score"] == grade.total == 3.5
    assert [t["name"] for t in data["tests"]] == ["Exercise 1: f, cell 3", "g", "h"]
    assert [t["max_score"] for t in data["tests"]] == [2, 3, 1.5]
    assert [t["status"] for t in data["tests"]] == ["passed", "failed", "failed"]
    assert "FAILED, y: expected 1.0, got 2.0" in data["tests"][1]["output"]
    assert data["output"].startswith("# Feedback on lab") and data["output_format"] == "md"
    json.dumps(data)  # plain JSON


# --------------------------------------------------------------------------- finding the notebook
def test_find_submission(tmp_path: Path):
    folder = tmp_path / "submission"
    assert find_submission(folder, LAB)[0] is None  # no folder
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / f"{LAB}-checkpoint.ipynb").write_text("{}")
    path, note = find_submission(folder, LAB)
    assert path is None and "No notebook" in note and f"{LAB}.ipynb" in note
    (folder / "work").mkdir()
    (folder / "work" / "mine.ipynb").write_text("{}")
    assert find_submission(folder, LAB) == (folder / "work" / "mine.ipynb", "")
    (folder / "scratch.ipynb").write_text("{}")
    path, note = find_submission(folder, LAB)
    assert path is None and "2 notebooks" in note and "exactly one" in note
    (folder / f"{LAB}.ipynb").write_text("{}")
    path, note = find_submission(folder, LAB)
    assert path == folder / f"{LAB}.ipynb" and "3 notebooks" in note


# --------------------------------------------------------------------------- the zip
@pytest.fixture(scope="module")
def autograder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The autograder zip of lab 0, built once."""
    out = tmp_path_factory.mktemp("zip") / "autograder.zip"
    assert main(["build", LAB, str(out)]) == 0
    return out


def unpack(archive: Path, root: Path) -> None:
    """Set up ``root`` as Gradescope does: the zip in ``source/`` (Unix modes restored, as
    ``unzip`` does), ``run_autograder`` copied to the top, empty ``submission/`` and ``results/``."""
    with zipfile.ZipFile(archive) as handle:
        for info in handle.infolist():
            target = Path(handle.extract(info, root / "source"))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(target, mode)
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    (root / "submission").mkdir()
    (root / "results").mkdir()


def test_zip_has_what_gradescope_and_the_grader_need_and_no_solution(autograder: Path):
    with zipfile.ZipFile(autograder) as handle:
        infos = {info.filename: info for info in handle.infolist()}
        config = json.loads(handle.read("labcore-autograder.json"))
    for script in ("setup.sh", "run_autograder"):  # top level, executable
        assert (infos[script].external_attr >> 16) & 0o111 == 0o111, script
    names = set(infos)
    assert {"pyproject.toml", "README.md", "LICENSE", f"labs/{LAB}.ipynb"} <= names
    package = {p.relative_to(ROOT).as_posix() for p in (ROOT / "labcore").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}  # fmt: skip
    assert package <= names  # rubrics, checks, the grader, the shipped weights
    with zipfile.ZipFile(autograder) as handle:  # the code the runs below grade with
        assert all(handle.read(n) == (ROOT / n).read_bytes() for n in package)
    assert any(n.startswith("labcore/weights/") and n.endswith(".safetensors") for n in names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if "solution" in n.lower()]
    assert [n for n in names if n.startswith("labs/")] == [f"labs/{LAB}.ipynb"]
    assert config == json.loads(AutograderConfig(LAB).to_json())
    assert not [n for n in names if n.startswith("/") or ".." in n.split("/")]


def test_setup_script_is_valid_bash_and_pins_the_cpu_torch_of_the_makefile(autograder: Path):
    with zipfile.ZipFile(autograder) as handle:
        setup = handle.read("setup.sh").decode()
        runner = handle.read("run_autograder").decode()
    for text in (setup, runner):
        assert text.startswith("#!/usr/bin/env bash\n")
        assert subprocess.run(["bash", "-n"], input=text, text=True, check=False).returncode == 0
    pins = re.findall(r"pip install (torch==\S+) --index-url (\S+)", setup)
    make = re.search(r"^TORCH_SPEC \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert make is not None
    assert pins == [(make.group(1), "https://download.pytorch.org/whl/cpu")]
    assert pins[0][0] == "torch==2.13.0"
    assert re.search(r"apt-get install -y .*\bbubblewrap\b", setup)
    assert re.search(r"pip install /autograder/source$", setup, re.M)
    assert "-m labcore.grading.gradescope run" in runner


def test_grader_command_line_builds_the_same_zip(autograder: Path, tmp_path: Path):
    import labcore.grade

    out = tmp_path / "cli.zip"
    assert labcore.grade.main([LAB, "--gradescope-autograder", str(out)]) == 0
    assert out.read_bytes() == autograder.read_bytes()  # and the zip is reproducible
    config = AutograderConfig(LAB, cell_timeout=5, total_timeout=50, memory_mb=0, seed=7)
    build_autograder(LAB, out, cell_timeout=5, total_timeout=50, memory_mb=0, seed=7)
    with zipfile.ZipFile(out) as handle:
        assert AutograderConfig(**json.loads(handle.read("labcore-autograder.json"))) == config


def test_build_refuses_unknown_labs_and_bad_limits(tmp_path: Path):
    with pytest.raises(ValueError, match="no rubric"):
        build_autograder("99-nothing", tmp_path / "a.zip")
    with pytest.raises(ValueError, match="total_timeout"):
        build_autograder(LAB, tmp_path / "a.zip", total_timeout=0)
    assert not list(tmp_path.iterdir())


def fake_tree(root: Path, config: AutograderConfig | None) -> Path:
    """A tree with only ``labcore-autograder.json`` (if given) and one notebook."""
    (root / "source").mkdir(parents=True)
    (root / "submission").mkdir()
    if config is not None:
        (root / "source" / "labcore-autograder.json").write_text(config.to_json())
    nbformat.write(nbformat.v4.new_notebook(), root / "submission" / "mine.ipynb")
    return root


def test_run_falls_back_to_no_isolation_where_the_container_forbids_bubblewrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import labcore.grade

    calls = []

    def fake(lab, paths, **options):
        calls.append(options["isolation"])
        assert Path.cwd() == root / "source"  # where the grader finds labs/<lab>.ipynb
        assert options["protect"] == [root / "results"]
        if options["isolation"] != "none":
            raise ValueError("kernels cannot be isolated with bubblewrap here")
        grade = SubmissionGrade.empty("mine", str(paths[0]), RUBRIC)
        grade.isolation = "none"
        return [grade]

    monkeypatch.setattr(labcore.grade, "grade_submissions", fake)
    root = fake_tree(tmp_path / "auto", AutograderConfig(LAB))
    data = run(root)
    assert calls == ["auto", "none"] and data["extra_data"]["isolation"] == "none"
    assert check_results(data) == [] and Path.cwd() != root / "source"
    calls.clear()
    root = fake_tree(tmp_path / "strict", AutograderConfig(LAB, isolation="bwrap"))
    data = run(root)  # no grade without the sandbox: zero, and why
    assert calls == ["bwrap"] and data["score"] == 0 and "bubblewrap" in data["output"]
    assert check_results(data) == []
    written = json.loads((root / "results" / "results.json").read_text())
    assert written == data


def test_run_without_configuration_still_writes_results(tmp_path: Path):
    data = run(fake_tree(tmp_path / "bare", None))
    assert data["score"] == 0 and "could not grade" in data["output"]
    assert check_results(data) == []


# --------------------------------------------------------------------------- runs
def solution(stub: str | None = None) -> nbformat.NotebookNode:
    """The solution without its demo cells; with the exercise ``stub`` back to the lab's stub."""
    notebook = nbformat.read(SOLUTION, as_version=4)
    notebook.cells = [c for c in notebook.cells if c.get("id") not in DEMO_CELLS]
    if stub is not None:
        lab = nbformat.read(STUBS, as_version=4)
        (cell,) = [c for c in notebook.cells if c.get("id") == stub]
        cell.source = next(c.source for c in lab.cells if c.get("id") == stub)
        assert "### BEGIN SOLUTION" not in cell.source
    return notebook


@pytest.fixture(scope="module")
def runs(autograder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every ``run_autograder`` run, at once."""
    base = tmp_path_factory.mktemp("gradescope")
    env = {**os.environ, "LABCORE_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    submissions = {
        "solution": solution(),
        "blank": nbformat.read(STUBS, as_version=4),
        "partial": solution(stub=STUB_EXERCISE),
        "none": None,
    }
    processes = {}
    for case, notebook in submissions.items():
        root = base / case / "autograder"
        unpack(autograder, root)
        if notebook is None:
            (root / "submission" / "README.txt").write_text("forgot the notebook")
        else:
            nbformat.write(notebook, root / "submission" / f"{LAB}.ipynb")
        processes[case] = subprocess.Popen(
            [str(root / "run_autograder")],
            cwd=root,  # as on Gradescope
            env={**env, "LABCORE_AUTOGRADER_ROOT": str(root)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    logs = {
        case: process.communicate(timeout=RUN_TIMEOUT_S)[0] for case, process in processes.items()
    }
    for case, process in processes.items():
        assert process.returncode == 0, f"{case}: {logs[case][-3000:]}"
    results = {
        case: json.loads((base / case / "autograder" / "results" / "results.json").read_text())
        for case in submissions
    }
    return {"results": results, "logs": logs, "base": base}


@pytest.mark.parametrize("case", ["solution", "blank", "partial", "none"])
def test_results_follow_gradescopes_format(runs: dict[str, Any], case: str):
    data = runs["results"][case]
    assert check_results(data) == [], runs["logs"][case][-2000:]
    assert [t["max_score"] for t in data["tests"]] == list(POINTS.values())


def test_solution_gets_full_marks(runs: dict[str, Any]):
    data = runs["results"]["solution"]
    assert data["score"] == RUBRIC.max_total
    assert all(t["status"] == "passed" for t in data["tests"])
    # exercises named as the student sees them, each test listing its hidden cases
    assert all(re.match(r"Exercise \d+: .+, cell \d+$", t["name"]) for t in data["tests"])
    assert all(t["output"].count("\n- passed, ") >= 1 for t in data["tests"])
    assert "FAILED" not in json.dumps(data["tests"])


def test_untouched_lab_gets_zero(runs: dict[str, Any]):
    data = runs["results"]["blank"]
    assert data["score"] == 0
    assert all(t["status"] == "failed" and "not implemented" in t["output"] for t in data["tests"])


def test_partial_submission_loses_exactly_the_unanswered_exercise(runs: dict[str, Any]):
    """The same grade as the CSV grader's (one grade_submissions): all but the stub's points."""
    data = runs["results"]["partial"]
    assert 0 < data["score"] < RUBRIC.max_total
    assert data["score"] == RUBRIC.max_total - POINTS[STUB_EXERCISE]
    expected = {g: 0.0 if g == STUB_EXERCISE else p for g, p in POINTS.items()}
    assert [t["score"] for t in data["tests"]] == list(expected.values())
    failed = [t for t in data["tests"] if t["status"] == "failed"]
    assert len(failed) == 1 and "FAILED" in failed[0]["output"]


def test_submission_without_notebook_gets_zero_and_says_why(runs: dict[str, Any]):
    data = runs["results"]["none"]
    assert data["score"] == 0
    assert "No notebook" in data["output"] and f"{LAB}.ipynb" in data["output"]
    assert all(t["score"] == 0 and t["status"] == "failed" for t in data["tests"])
    assert "Traceback" not in runs["logs"]["none"]


def test_runs_write_only_results(runs: dict[str, Any]):
    """Nothing but results.json in results/ (no partial file left), and the source untouched."""
    for case in ("solution", "blank", "partial", "none"):
        root = runs["base"] / case / "autograder"
        assert sorted(p.name for p in (root / "results").iterdir()) == ["results.json"]
        assert not (root / "source" / "solutions").exists()
        assert (root / "source" / "run_autograder").stat().st_mode & stat.S_IXUSR
