"""The batch autograder: full marks for the solution, zero for the lab, hostile submissions contained.

Submissions are built from ``solutions/`` and ``labs/`` (the slow, ungraded demo cells dropped) and
graded through the command line, several at once with ``--jobs 2``; each test then checks one
property of the CSV and the feedback files. Unit tests cover the detector, the transport of results
(no kernel) and the rubric's agreement with the lab.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch

from labcore import function_approximation as fa
from labcore.grade import CaseOutcome, SubmissionGrade, find_reference_use, main, submission_names
from labcore.grading import transport as grade_module
from labcore.grading.canvas import CANVAS_STUDENT_COLUMNS
from labcore.grading.detect import cell_labels, exercise_cells, exercise_title, reference_findings
from labcore.grading.inkernel import harness
from labcore.grading.pool import socket_safe_tempdir
from labcore.grading.records import WorkerSpec
from labcore.grading.sandbox import (
    KernelLimits,
    Sandbox,
    kernel_prefix,
    kill_leftovers,
    resolve_sandbox,
)
from labcore.grading.transport import MAX_TENSOR_ELEMENTS, read_record
from labcore.grading.worker import Worker
from labcore.rubrics import RUBRICS, HiddenCase, load_rubric

ROOT = Path(__file__).resolve().parents[1]
LAB = "00-function-approximation"
SOLUTION = ROOT / "solutions" / f"{LAB}.ipynb"
STUBS = ROOT / "labs" / f"{LAB}.ipynb"
DEMO_CELLS = ("cell-4", "cell-7", "cell-13", "cell-17")  # plots and fits: slow and not graded
RUBRIC = load_rubric(LAB)
POINTS = {e.grade_id: e.points for e in RUBRIC.exercises}
FULL = RUBRIC.max_total
#: Generous over what a right cell needs on a loaded machine (the setup cell imports torch in a
#: fresh kernel while other kernels run): only cells that never end reach it.
CELL_TIMEOUT = 40
#: The slow submission's total limit: wide over a kernel start and one exercise on a loaded machine.
TOTAL_TIMEOUT = 90


# --------------------------------------------------------------------------- building submissions
def build(
    base: Path = SOLUTION,
    *,
    replace: dict[str, str] | None = None,
    after: dict[str, list[str]] | None = None,
    drop: tuple[str, ...] = DEMO_CELLS,
) -> nbformat.NotebookNode:
    """A submission: ``base`` without ``drop``, cell sources replaced, new cells inserted after ids."""
    nb = nbformat.read(base, as_version=4)
    cells = []
    for cell in nb.cells:
        if cell.get("id") in drop:
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if replace and cell.get("id") in replace:
            cell.source = textwrap.dedent(replace[cell.id]).strip()
        cells.append(cell)
        for source in (after or {}).get(cell.get("id"), []):
            cells.append(nbformat.v4.new_code_cell(textwrap.dedent(source).strip()))
    nb.cells = cells
    return nb


NAIVE_MIXTURE = """
    def mixture_nll(x, logits, means, log_stds):
        weights, stds = torch.softmax(logits, dim=-1), log_stds.exp()
        z = (x.unsqueeze(-1) - means) / stds
        density = weights * torch.exp(-0.5 * z**2) / (stds * math.sqrt(2 * math.pi))
        return -density.sum(-1).log().mean()
"""

#: A wrong Gaussian NLL that also rewires the kernel's labcore: the reference returns the
#: student's values, the check prints a pass, the comparison helper accepts anything.
WRONG_NLL_PATCHED = """
    import math

    import labcore.checks
    import labcore.function_approximation as reference


    def gaussian_nll(x, mean, std):
        return torch.zeros((), dtype=x.dtype)


    reference.gaussian_nll = gaussian_nll
    checks.ref.gaussian_nll = gaussian_nll
    checks.check_gaussian_nll = lambda fn: print("\\u2714 gaussian_nll: all 5 cases passed")
    labcore.checks.compare = lambda *args, **kwargs: None
"""

#: A biased-in-the-wrong-way MLE (n - 1), with the same rewiring.
WRONG_MLE_PATCHED = """
    def gaussian_mle(x):
        return x.mean(), x.std()


    reference.gaussian_mle = gaussian_mle
    checks.ref.gaussian_mle = gaussian_mle
    checks.check_gaussian_mle = lambda fn: print("\\u2714 gaussian_mle: all 4 cases passed")
"""

#: Forge results: print a perfect score, drop fake result files wherever it can, and rewrite
#: whatever the grader's injected code saves so that it claims success.
FORGE = """
    import glob
    import os

    import torch

    print("\\u2714 all exercises passed\\nTOTAL: 12/12")
    fake = {"status": "ok", "value": (torch.tensor(2.0), torch.tensor(3.0)), "extra": {}}
    for folder in (".", "..", os.environ.get("TMPDIR", ".")):
        for name in ("results.pt", "grades.csv", "state.json", "0.out.pt"):
            try:
                torch.save(fake, os.path.join(folder, name))
            except OSError:
                pass
    _real_save = torch.save


    def _forged_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "nonce" in obj:
            obj = {**obj, **fake}
        for path in glob.glob("../*.out.pt") + glob.glob("*.out.pt"):
            _real_save(fake, path)
        return _real_save(obj, f, *args, **kwargs)


    torch.save = _forged_save
"""

#: Allocates without bound (100 GB if nothing stopped it). The limit is on address space, so the
#: blocks need not be touched: the test does not depend on how fast this machine fills memory.
MEMORY_HOG = """
    import torch


    def hog():
        blocks = []
        for _ in range(200):
            blocks.append(torch.empty(2**27))


    hog()
"""

#: 20 MB of printed text: a fixed amount, whatever the speed of the machine.
FLOOD = """
    for _ in range(1000):
        print("spam " * 4000)
"""

VANDAL = """
    import os
    import shutil

    for entry in os.listdir("."):
        if os.path.isdir(entry):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            os.remove(entry)
    for target in ("../escaped.txt", "../../escaped.txt"):
        try:
            with open(target, "w") as handle:
                handle.write("written outside the working directory")
        except OSError:
            pass
    os.chmod(".", 0o500)
"""

#: Calls labcore's reference through the module the lab imports, and imports it by name too.
REFERENCE_USE = """
    import math

    from labcore.function_approximation import gaussian_nll as _reference_nll


    def gaussian_nll(x, mean, std):
        return fa.gaussian_nll(x, mean, std)
"""

#: Never ends (it sleeps rather than spins: same effect on the grader, no CPU taken from the tests).
ENDLESS_LOOP = """
    import time

    while True:
        time.sleep(0.1)
"""

#: Ignores the interrupt that ends a timed-out cell (it sleeps rather than spins: same effect on the
#: grader, no CPU taken from the other tests).
DEAF_LOOP = """
    import signal
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        time.sleep(1)
"""


def snoop(me: str, other: str, everywhere: bool) -> str:
    """Write a secret, look for the other submission's files for 3 s, and keep what it found."""
    roots = "['/tmp', '/var/tmp']" if everywhere else "[]"
    return f"""
        import os
        import sys
        import time

        for folder in (".", ".."):
            with open(os.path.join(folder, "secret-{me}.txt"), "w") as handle:
                handle.write("{me}")
        FOUND = []
        deadline = time.time() + 3
        while time.time() < deadline and not FOUND:
            for folder in (".", ".."):
                FOUND += [f for f in os.listdir(folder) if f in ("secret-{other}.txt", "{other}.ipynb")]
            for root in {roots}:
                for path, dirs, files in os.walk(root):
                    FOUND += [f for f in files if f == "secret-{other}.txt"]
                    dirs[:] = [d for d in dirs if os.path.join(path, d) != sys.prefix]
            time.sleep(0.2)
    """


#: Appended to the polynomial exercise: it scores nothing if the other submission was seen.
IF_FOUND_BREAK = """

if FOUND:
    def polynomial_features(x, degree):
        return None
"""


def isolated() -> bool:
    """Whether this machine isolates kernels (bubblewrap works here)."""
    try:
        return resolve_sandbox("bwrap").mode != "none"
    except ValueError:
        return False


def submissions() -> dict[str, nbformat.NotebookNode]:
    """Every submission of the batch; the first two run at the same time and look for each other."""
    everywhere = isolated()
    solution = nbformat.read(SOLUTION, as_version=4)
    polynomial = next(c.source for c in solution.cells if c.get("id") == "ex-polynomial-features")
    return {
        # one wrong exercise (partial credit), one that calls labcore's reference (flagged)
        "wrong": build(
            replace={
                "ex-polynomial-features": polynomial + IF_FOUND_BREAK,
                "ex-gaussian-nll": REFERENCE_USE,
                "ex-mixture-nll": NAIVE_MIXTURE,
            },
            after={"setup": [snoop("wrong", "survivor", everywhere)]},
        ),
        # every misbehaviour the kernel survives, at once; all its functions are right
        "survivor": build(
            replace={"ex-polynomial-features": polynomial + IF_FOUND_BREAK},
            after={
                "setup": [snoop("survivor", "wrong", everywhere)],
                "ex-polynomial-features": ["1 / 0", MEMORY_HOG, VANDAL],
                "ex-train-regressor": ["import sys\nsys.exit()", FLOOD],
                "ex-gaussian-nll": [ENDLESS_LOOP],
            },
        ),
        # then the longest first, so that both workers finish at about the same time
        "deaf": build(after={"ex-polynomial-features": [DEAF_LOOP]}),
        "solution": build(drop=()),
        "stubs": build(STUBS, drop=()),
        "exit": build(after={"ex-gaussian-nll": ["import os\nos._exit(1)"]}),
        "kill": build(after={"ex-train-regressor": ["import os\nos.kill(os.getpid(), 9)"]}),
        "forger": build(
            replace={"ex-gaussian-nll": WRONG_NLL_PATCHED, "ex-gaussian-mle": WRONG_MLE_PATCHED},
            after={"ex-gaussian-mle": [FORGE]},
        ),
    }


# --------------------------------------------------------------------------- one batch, many checks
def start_grader(folder: Path, notebooks: dict, *options: str) -> subprocess.Popen[str]:
    """Write the submissions into ``folder`` and start ``python -m labcore.grade`` on them."""
    (folder / "submissions").mkdir()
    for name, nb in notebooks.items():
        nbformat.write(nb, folder / "submissions" / f"{name}.ipynb")
    cmd = [
        sys.executable, "-m", "labcore.grade", LAB,
        *[str(folder / "submissions" / f"{n}.ipynb") for n in notebooks],
        "--out", str(folder / "out" / "grades.csv"),
        "--feedback-dir", str(folder / "out" / "feedback"),
        "--memory-mb", "2500",
        *options,
    ]  # fmt: skip
    (folder / "tmp").mkdir()  # the grader's temporary folders go here, to check their removal
    env = {**os.environ, "TMPDIR": str(folder / "tmp")}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_grader(process: subprocess.Popen[str], folder: Path) -> dict[str, dict[str, str]]:
    """Wait for a grading run; its CSV rows by submission, in order."""
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    with open(folder / "out" / "grades.csv", newline="", encoding="utf-8") as handle:
        return {row["submission"]: row for row in csv.DictReader(handle)}


def canvas_roster(path: Path, logins: list[str]) -> Path:
    """A Canvas gradebook export (Canvas's student columns, the lab's column) of ``logins``."""
    with open(path, "w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CANVAS_STUDENT_COLUMNS, "Lab 0 (12345)"])
        writer.writerow(["    Points Possible", "", "", "", "", str(FULL)])
        for i, login in enumerate(logins):
            writer.writerow([f"Student {i}", str(100 + i), f"S{i}", login, "Section A", ""])
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Grade every submission of :func:`submissions` in one command with ``--jobs 2``.

    Meanwhile a second command grades a submission that sleeps forever after its first exercise
    against a total time limit (with no cell limit before it): the limit ends it, and it leaves
    the first exercise's points. Sleeping, it takes no CPU from the batch.
    """
    folder = tmp_path_factory.mktemp("grading")
    slow_folder = tmp_path_factory.mktemp("slow")
    notebooks = submissions()
    slow = build(after={"ex-polynomial-features": [ENDLESS_LOOP]})
    slow_run = start_grader(
        slow_folder, {"slow": slow}, "--timeout", "1000", "--total-timeout", str(TOTAL_TIMEOUT)
    )
    roster = canvas_roster(folder / "roster.csv", ["solution", "stubs", "kill", "absent"])
    main_run = start_grader(
        folder, notebooks, "--jobs", "2", "--timeout", str(CELL_TIMEOUT),
        "--canvas-roster", str(roster), "--canvas-assignment", "Lab 0 (12345)",
    )  # fmt: skip
    rows = finish_grader(main_run, folder)
    slow_rows = finish_grader(slow_run, slow_folder)
    with open(folder / "out" / "grades.csv", newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    return {
        "folder": folder,
        "rows": rows,
        "order": list(rows),
        "header": header,
        "feedback": folder / "out" / "feedback",
        "leftover": [p for f in (folder, slow_folder) for p in (f / "tmp").glob("labcore-*")],
        "names": list(notebooks),
        "slow": slow_rows["slow"],
    }


def points(row: dict[str, str]) -> dict[str, float]:
    """The points of each exercise in a CSV row."""
    return {grade_id: float(row[grade_id]) for grade_id in POINTS}


def test_csv_is_well_formed(batch):
    assert batch["header"] == ["submission", *POINTS, "total", "max_total", "status"]
    assert batch["order"] == batch["names"]  # one row per submission, in the order given
    for row in batch["rows"].values():
        earned = points(row)
        assert all(0 <= earned[g] <= POINTS[g] for g in POINTS)
        assert float(row["total"]) == pytest.approx(sum(earned.values()))
        assert float(row["max_total"]) == FULL
        assert row["status"]


def test_feedback_files_are_well_formed_and_never_show_solution_code(batch):
    solution_lines = [
        line.strip()
        for cell in nbformat.read(SOLUTION, as_version=4).cells
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source
        for line in cell.source.split("### BEGIN SOLUTION")[1]
        .split("### END SOLUTION")[0]
        .splitlines()
        if len(line.strip()) > 12
    ]
    for name, row in batch["rows"].items():
        text = (batch["feedback"] / f"{name}.md").read_text(encoding="utf-8")
        assert text.startswith("# Feedback on lab")
        assert f"**Score: {row['total']} / {row['max_total']}**" in text
        # exercises are named as the student sees them (title and cell), never by hidden cell ids
        assert text.count("\n## Exercise ") == len(POINTS), text
        assert not [grade_id for grade_id in POINTS if grade_id in text]
        assert not [line for line in solution_lines if line in text]


def test_canvas_export_holds_the_rostered_students_totals(batch):
    """The same command wrote canvas.csv: the roster's students who handed in, with their totals."""
    with open(batch["folder"] / "out" / "canvas.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [*CANVAS_STUDENT_COLUMNS, "Lab 0 (12345)"]
    assert rows[1][0].strip() == "Points Possible" and float(rows[1][-1]) == FULL
    scores = {row[3]: float(row[-1]) for row in rows[2:]}
    assert scores == {n: float(batch["rows"][n]["total"]) for n in ("solution", "stubs", "kill")}
    assert scores["solution"] == FULL and scores["stubs"] == 0


def test_solution_gets_full_marks(batch):
    row = batch["rows"]["solution"]
    assert points(row) == POINTS
    assert row["status"] == "ok"


def test_untouched_lab_gets_zero_and_says_not_implemented(batch):
    row = batch["rows"]["stubs"]
    assert float(row["total"]) == 0
    functions = ", ".join(f"`{e.function}`" for e in RUBRIC.exercises)  # never the hidden ids
    assert "not implemented: " + functions in row["status"]
    assert "the kernel" not in row["status"]  # no kernel trouble (a function may be kernel_...)


def only(*grade_ids: str) -> dict[str, float]:
    """Full points for ``grade_ids``, zero for the other exercises."""
    return {g: POINTS[g] if g in grade_ids else 0.0 for g in POINTS}


def test_one_wrong_exercise_gets_exact_partial_credit(batch):
    row = batch["rows"]["wrong"]
    n_cases = len(RUBRIC.exercise("ex-mixture-nll").make_cases(0))
    partial = round(POINTS["ex-mixture-nll"] * (n_cases - 1) / n_cases, 2)
    assert points(row) == {**POINTS, "ex-mixture-nll": partial}
    assert float(row["total"]) == pytest.approx(FULL - POINTS["ex-mixture-nll"] / n_cases)
    feedback = (batch["feedback"] / "wrong.md").read_text(encoding="utf-8")
    failed = [line for line in feedback.splitlines() if line.startswith("- FAILED")]
    assert len(failed) == 1 and "44 standard deviations" in failed[0] and "logsumexp" in failed[0]


def test_errors_and_sys_exit_do_not_stop_grading(batch):
    row = batch["rows"]["survivor"]
    assert points(row) == POINTS
    assert "ZeroDivisionError" in row["status"] and "sys.exit" in row["status"]


def test_unbounded_allocation_hits_the_memory_limit(batch):
    assert "memory limit (2500 MB) reached" in batch["rows"]["survivor"]["status"]


def test_flooding_stdout_is_ignored(batch):
    assert "MB of printed output ignored" in batch["rows"]["survivor"]["status"]


def test_deleting_files_and_writing_outside_cwd_harms_nobody(batch):
    assert points(batch["rows"]["survivor"]) == POINTS
    assert not batch["leftover"], f"temporary folders left behind: {batch['leftover']}"
    assert sorted(p.name for p in (batch["folder"] / "submissions").iterdir()) == sorted(
        f"{n}.ipynb" for n in batch["names"]
    )


def test_endless_loop_is_interrupted_and_grading_goes_on(batch):
    row = batch["rows"]["survivor"]
    assert points(row) == POINTS
    assert f"timed out after {CELL_TIMEOUT} s and was interrupted" in row["status"]


def test_kernel_deaf_to_interrupts_is_abandoned_keeping_earlier_points(batch):
    row = batch["rows"]["deaf"]
    assert points(row) == only("ex-polynomial-features")
    assert "did not respond to an interrupt" in row["status"]


def test_os_exit_keeps_the_points_earned_before(batch):
    row = batch["rows"]["exit"]
    assert points(row) == only("ex-polynomial-features", "ex-train-regressor", "ex-gaussian-nll")
    assert "the kernel exited with code 1" in row["status"]
    feedback = (batch["feedback"] / "exit.md").read_text(encoding="utf-8")
    assert "not graded: the kernel exited with code 1" in feedback


def test_killed_kernel_keeps_the_points_earned_before(batch):
    row = batch["rows"]["kill"]
    assert points(row) == only("ex-polynomial-features", "ex-train-regressor")
    assert "killed by SIGKILL" in row["status"]


def test_monkeypatching_and_forging_award_nothing(batch):
    row = batch["rows"]["forger"]
    # nll and mle are wrong although the kernel's reference and checks agree with them;
    # the mixture is right, but the forged torch.save replaced its result: no points either
    assert points(row) == only("ex-polynomial-features", "ex-train-regressor")
    feedback = (batch["feedback"] / "forger.md").read_text(encoding="utf-8")
    assert "n - 1" in feedback  # the real comparison ran, with its hint
    assert "got tuple of length 2" in feedback  # the forged value reached the comparison, and lost


def test_reference_use_is_flagged_not_penalised(batch):
    row = batch["rows"]["wrong"]
    assert float(row["ex-gaussian-nll"]) == POINTS["ex-gaussian-nll"]
    assert "flagged" in row["status"]
    feedback = (batch["feedback"] / "wrong.md").read_text(encoding="utf-8")
    assert "gaussian_nll' from 'labcore.function_approximation'" in feedback
    assert "uses 'fa.gaussian_nll'" in feedback
    forger = (batch["feedback"] / "forger.md").read_text(encoding="utf-8")
    assert "replaces 'reference.gaussian_nll'" in forger  # monkeypatching is flagged too
    flagged = {name for name, r in batch["rows"].items() if "flagged" in r["status"]}
    assert flagged == {"wrong", "forger"}


def test_parallel_submissions_cannot_see_each_other(batch):
    """They ran at the same time; each scores nothing for exercise 1 if it saw the other's files.

    Under isolation (grader run as root) they also search the whole of /tmp; otherwise their own
    folder and its parent. ``test_grade_isolation.py`` tries much harder.
    """
    for name in ("wrong", "survivor"):
        row = batch["rows"][name]
        assert float(row["ex-polynomial-features"]) == POINTS["ex-polynomial-features"]


def test_total_time_limit_keeps_earlier_points(batch):
    row = batch["slow"]
    assert points(row) == only("ex-polynomial-features")
    assert f"total time limit of {TOTAL_TIMEOUT} s reached" in row["status"]


# --------------------------------------------------------------------------- without kernels
def test_every_rubric_matches_its_lab():
    for lab in RUBRICS:
        rubric = load_rubric(lab)
        nb = nbformat.read(ROOT / "labs" / f"{lab}.ipynb", as_version=4)
        graded = {
            c.metadata["nbgrader"]["grade_id"]: c.source
            for c in nb.cells
            if "nbgrader" in c.metadata
        }
        assert [e.grade_id for e in rubric.exercises] == list(graded)
        for exercise in rubric.exercises:
            assert f"def {exercise.function}(" in graded[exercise.grade_id]


@functools.cache
def hidden_cases(exercise_id: str) -> list[HiddenCase]:
    """The hidden cases of seed 0 (built once: the training cases take a moment)."""
    return list(RUBRIC.exercise(exercise_id).make_cases(0))


def harness_record(
    function: Callable[..., Any], exercise_id: str, case_index: int, tmp_path: Path
) -> dict[str, Any] | None:
    """Run the kernel-side harness in this process (no kernel) and load its record."""
    exercise = RUBRIC.exercise(exercise_id)
    case = hidden_cases(exercise_id)[case_index]
    in_path, out_path = tmp_path / "in.pt", tmp_path / "out.pt"
    torch.save(case.inputs, in_path)
    namespace = {exercise.function: function}
    harness.run(  # the grader's own kernel-side code
        namespace, "n0", str(in_path), str(out_path), exercise.function, exercise.call_source,
        MAX_TENSOR_ELEMENTS,
    )  # fmt: skip
    return read_record(out_path, "n0")


def score(
    function: Callable[..., Any], exercise_id: str, case_index: int, tmp_path: Path
) -> CaseOutcome:
    """Score ``function`` on one hidden case as the worker would, without a kernel."""
    worker = Worker.__new__(Worker)
    worker.grade = SubmissionGrade.empty("x", "x", RUBRIC)
    exercise = RUBRIC.exercise(exercise_id)
    record = harness_record(function, exercise_id, case_index, tmp_path)
    return worker._score(exercise, hidden_cases(exercise_id)[case_index], record)


@pytest.fixture
def one_thread():
    """Train on one thread: on a busy machine, torch's thread pool only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("exercise", RUBRIC.exercises, ids=lambda e: e.grade_id)
def test_reference_passes_every_hidden_case(exercise, tmp_path, one_thread):
    function = getattr(fa, exercise.function)
    for index in range(len(hidden_cases(exercise.grade_id))):
        outcome = score(function, exercise.grade_id, index, tmp_path)
        assert outcome.passed, outcome.message


def test_hidden_cases_depend_on_the_seed():
    first, again, other = (RUBRIC.exercise("ex-gaussian-mle").make_cases(s) for s in (0, 0, 1))
    assert torch.equal(first[0].inputs["args"][0], again[0].inputs["args"][0])
    assert not torch.equal(first[0].inputs["args"][0], other[0].inputs["args"][0])


def test_scoring_explains_failures(tmp_path, one_thread):
    unbiased = score(lambda x: (x.mean(), x.std()), "ex-gaussian-mle", 0, tmp_path)
    assert not unbiased.passed and "n - 1" in unbiased.message
    numpy = score(
        lambda x, d: fa.polynomial_features(x, d).numpy(), "ex-polynomial-features", 0, tmp_path
    )
    assert not numpy.passed and "torch.Tensor" in numpy.message

    def in_place(x, degree):
        x.mul_(2)
        return fa.polynomial_features(x / 2, degree)

    assert "in place" in score(in_place, "ex-polynomial-features", 0, tmp_path).message
    detached = score(
        lambda x, m, s: fa.gaussian_nll(x, m, s).detach(), "ex-gaussian-nll", 4, tmp_path
    )
    assert not detached.passed and "require grad" in detached.message

    def sgd(model, x, y, steps, lr):
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            optimizer.zero_grad()
            loss = ((model(x.reshape(-1, 1)) - y.reshape(-1, 1)) ** 2).mean()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    outcome = score(sgd, "ex-train-regressor", 0, tmp_path)
    assert not outcome.passed and "Adam" in outcome.message
    raised = score(lambda x: 1 / 0, "ex-gaussian-mle", 0, tmp_path)
    assert "ZeroDivisionError" in raised.message
    stub = score(
        lambda x: (_ for _ in ()).throw(NotImplementedError()), "ex-gaussian-mle", 0, tmp_path
    )
    assert stub.message.startswith("not implemented")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_results_are_loaded_safely(tmp_path, monkeypatch):
    path = tmp_path / "out.pt"
    torch.save({"nonce": "n0", "status": "ok", "value": None, "extra": None}, path)
    assert read_record(path, "n0") is not None
    assert read_record(path, "another nonce") is None  # a stale or forged file
    monkeypatch.setattr(grade_module, "MAX_RESULT_BYTES", 64)
    assert read_record(path, "n0") is None  # too large to be loaded at all
    monkeypatch.undo()
    path.write_bytes(pickle.dumps({"nonce": "n0", "status": "ok", "value": _Evil()}, protocol=2))
    assert read_record(path, "n0") is None  # arbitrary objects are never unpickled
    link = tmp_path / "link.pt"
    torch.save({"nonce": "n0"}, tmp_path / "elsewhere.pt")
    link.symlink_to(tmp_path / "elsewhere.pt")
    assert read_record(link, "n0") is None
    assert read_record(tmp_path / "missing.pt", "n0") is None
    # a returned object of an unknown type reaches the grader as its type name only
    outcome = score(lambda x: (_Evil(), 1), "ex-gaussian-mle", 0, tmp_path)
    assert not outcome.passed and "_Evil" in outcome.message


def test_detector_flags_references_to_the_reference_implementation():
    def notebook(*sources: str) -> nbformat.NotebookNode:
        return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])

    assert find_reference_use(nbformat.read(SOLUTION, as_version=4), RUBRIC) == []
    assert find_reference_use(nbformat.read(STUBS, as_version=4), RUBRIC) == []
    hits = find_reference_use(
        notebook(
            "from labcore import function_approximation as f\nimport labcore.checks as c",
            "mixture_nll = f.mixture_nll",
            "def gaussian_mle(x):\n    return c.function_approximation.ref.gaussian_mle(x)",
            "from labcore.function_approximation import *",
            "import importlib\nm = importlib.import_module('labcore.function_approximation')\n"
            "polynomial_features = getattr(m, 'polynomial_features')",
            "%time x = 1\nmean = fa_like.mean  # unrelated",
        ),
        RUBRIC,
    )
    text = "\n".join(hits)
    for expected in (
        "cell 2, exercise `mixture_nll`: uses `f.mixture_nll`",
        "cell 3, exercise `gaussian_mle`: uses `c.function_approximation.ref.gaussian_mle`",
        "import *",
        "cell 5, exercise `polynomial_features`: the string 'polynomial_features'",
        "the string 'labcore.function_approximation'",
    ):
        assert expected in text
    assert len(hits) == 5


def test_malformed_cells_do_not_crash_the_grader():
    """Cells as a hostile JSON file may hold them (nbformat only logs such schema errors)."""
    nb = nbformat.from_dict(
        {
            "cells": [
                {"cell_type": "code", "id": "=cmd|' /C calc'!A0", "metadata": 5, "source": "7"},
                {"cell_type": "code", "metadata": {"nbgrader": "x"}, "source": 12},
                {"cell_type": "code", "metadata": {}, "source": ["def gaussian_mle(x):\n",
                                                               "    return fa.gaussian_mle(x)"]},
                "not a cell",
            ]
        }
    )  # fmt: skip
    cells = [c for c in nb.cells if isinstance(c, dict) and c.get("cell_type") == "code"]
    assert exercise_cells(cells, RUBRIC) == {"ex-gaussian-mle": 2}
    assert cell_labels(nb) == ["1", "2", "3"]  # positions: an id could smuggle a formula
    assert find_reference_use(nb, RUBRIC) == []  # `fa` was never imported from labcore here


def test_submission_names_are_short_and_unique(tmp_path):
    paths = [
        tmp_path / "alice" / "lab.ipynb",
        tmp_path / "bob" / "lab.ipynb",
        tmp_path / "carol.ipynb",
    ]
    assert submission_names(paths) == ["alice/lab", "bob/lab", "carol"]
    assert submission_names([paths[2], paths[2]]) == ["carol", "carol#2"]


def test_unknown_lab_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["99-nothing", str(SOLUTION), "--out", str(tmp_path / "g.csv")])
    assert exit_info.value.code == 2 and LAB in capsys.readouterr().err
    assert not (tmp_path / "g.csv").exists()


@pytest.mark.parametrize("mode", ["bwrap", "none"])
def test_kernel_prefix_sets_limits_and_drops_privileges(mode, tmp_path):
    """The kernel's command prefix limits what it runs; under bwrap as root, as its own uid."""
    if mode == "bwrap" and not isolated():
        pytest.skip("bubblewrap does not work here")
    sandbox = Sandbox("none") if mode == "none" else resolve_sandbox("bwrap")
    uid = 123_457 if sandbox.own_uid else None
    box = tmp_path / "box"
    box.mkdir(mode=0o711)
    if uid is not None:
        os.chown(box, uid, uid)
    limits = KernelLimits(memory_bytes=2**30, file_bytes=2**20, cpu_seconds=30, nproc=64)
    prefix = kernel_prefix(sandbox, limits, own=[box], hide=[], workdir=box, uid=uid)
    probe = (
        "import os, resource as r; print(os.getuid(), *(r.getrlimit(getattr(r, k))[0] "
        "for k in ('RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_CPU', 'RLIMIT_CORE', 'RLIMIT_NPROC')))"
    )
    result = subprocess.run(
        [*prefix, sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    fields = result.stdout.split()
    assert fields[0] == str(uid if uid is not None else os.getuid())
    assert fields[1:5] == [str(2**30), str(2**20), "30", "0"]
    assert fields[5] == "64"


def test_leftover_processes_are_killed():
    token = "test-token-0123"
    sleeper = subprocess.Popen(
        ["sleep", "600"], env={**os.environ, "LABCORE_GRADER_TOKEN": token}, start_new_session=True
    )
    environ = Path(f"/proc/{sleeper.pid}/environ")
    while token.encode() not in environ.read_bytes():  # until the exec: fork copies our environ
        time.sleep(0.05)
    assert kill_leftovers(token, None) >= 1
    assert sleeper.wait(timeout=10) == -9


def test_unreadable_submission_is_a_status(tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not json", encoding="utf-8")
    state = tmp_path / "state.json"
    spec = WorkerSpec(
        lab=LAB, name="broken", path=str(broken), state=str(state), box=str(tmp_path),
        channels=str(tmp_path), specs=str(tmp_path / "specs"), kernel_log=str(tmp_path / "k.log"),
        cases="", token="t", uid=None, prefix=[], cell_timeout=5, total_timeout=5, memory_mb=0,
        seed=0,
    )  # fmt: skip
    worker = Worker(spec)
    worker.run()
    grade = SubmissionGrade.from_json(state.read_text(encoding="utf-8"))
    assert grade.total == 0 and grade.status.startswith("unreadable notebook")
    assert json.loads(state.read_text(encoding="utf-8"))["finished"]


def test_cells_are_named_by_position_andexercise_title():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import torch"),
            nbformat.v4.new_markdown_cell("Some prose.\n\n## Exercise 2: a `softmax`, stably"),
            nbformat.v4.new_code_cell("def softmax(z):\n    ..."),
            nbformat.v4.new_markdown_cell("### Check"),
            nbformat.v4.new_code_cell("check(softmax)"),
        ]
    )
    assert cell_labels(nb) == [
        "1",
        "3, Exercise 2: a 'softmax', stably",
        "5, Exercise 2: a 'softmax', stably",
    ]
    assert exercise_title(cell_labels(nb)[1]) == "Exercise 2: a 'softmax', stably, cell 3"
    assert exercise_title("1") == "cell 1"
    # the detector's findings without their cells: a student's added cell shifts positions only
    rubric = load_rubric("02-attention")
    lab = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("from labcore.checks import attention as checks")]
    )
    moved = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), *lab.cells])
    assert find_reference_use(lab, rubric)[0].startswith("cell 1, exercise `attention`")
    assert find_reference_use(moved, rubric)[0].startswith("cell 2, exercise `attention`")
    assert reference_findings(lab, rubric)[0][1] == reference_findings(moved, rubric)[0][1]


def test_forkserver_socket_fits_under_a_deep_tmpdir(tmp_path, monkeypatch):
    """A Unix socket path holds 107 bytes: a deep TMPDIR once gave 'AF_UNIX path too long'."""
    deep = tmp_path / ("d" * 70)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with socket_safe_tempdir():
        assert tempfile.gettempdir() == "/tmp"
    assert tempfile.gettempdir() == str(deep)
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")
    with socket_safe_tempdir():
        assert tempfile.gettempdir() == "/tmp"
