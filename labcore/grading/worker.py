"""The worker: grades one submission in a process of its own.

It reads the notebook, flags use of labcore's reference implementation
(:mod:`labcore.grading.detect`), starts a sandboxed kernel (:mod:`labcore.grading.kernel`), runs
the student's code cells one by one with a per-cell time limit inside a total limit (errors do not
stop the run; a cell that times out is interrupted and grading goes on; a kernel that dies or ignores
the interrupt ends the run), and right after an exercise's cell has run, sends each of the
exercise's hidden inputs to the kernel and scores what comes back in this process
(:mod:`labcore.grading.transport`). Nothing the kernel prints or claims counts. Points are saved
exercise by exercise (:attr:`WorkerSpec.state`), so a later crash keeps the points already earned.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import nbformat
import torch

from labcore.grading.detect import (
    cell_labels,
    exercise_cells,
    exercise_title,
    is_code,
    is_labcore,
    reference_findings,
)
from labcore.grading.inkernel import source
from labcore.grading.kernel import PROBE_TIMEOUT_S, KernelSession, KernelStartError, kernel_env
from labcore.grading.records import (
    CaseOutcome,
    CaseStatus,
    CellOutcome,
    ExerciseGrade,
    SubmissionGrade,
    WorkerSpec,
)
from labcore.grading.sandbox import TOKEN_ENV
from labcore.grading.transport import (
    MAX_TENSOR_ELEMENTS,
    decode,
    harness_cell,
    load_cases,
    read_record,
    write_input,
)
from labcore.rubrics import Exercise, HiddenCase, Rubric, load_rubric

__all__ = ["Worker", "score_locally", "worker_entry", "worker_main"]

MAX_NOTEBOOK_BYTES = 20 * 2**20  # larger submissions are refused
OUTPUT_NOTE_BYTES = 2**20  # more printed output than this is reported in the status
KERNEL_OUTPUT_BYTES = 8 * 2**20  # printed text per stream beyond this is dropped in the kernel
MEMORY_ERRORS = ("MemoryError", "OutOfMemoryError")
MEMORY_TEXT = ("can't allocate memory", "cannot allocate memory", "bad_alloc", "out of memory")
NOT_IMPLEMENTED = "not implemented (the function raises NotImplementedError)"
FORGET_SOURCE = source("forget")


def forget_cell(full: bool) -> str:
    """Run after a student's cell raised (see :mod:`labcore.grading.inkernel.forget`)."""
    code = f"{FORGET_SOURCE}\nforget(full={full})\n"
    return f"exec({code!r}, {{}})"


class _Stop(Exception):
    """Grading of a submission cannot go on (the reason is the message)."""


class Worker:
    """Grades one submission; runs in its own process (see :func:`worker_main`)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.rubric = load_rubric(spec.lab)
        self.grade = SubmissionGrade.empty(spec.name, spec.path, self.rubric)
        self.start = time.monotonic()
        self.deadline = self.start + float(spec.total_timeout)
        self.state_path = Path(spec.state)
        self.box = Path(spec.box)
        self.channels = Path(spec.channels)
        self.uid: int | None = spec.uid
        self.kernel: KernelSession | None = None
        self.kernel_log: Any = None
        self.stopped = ""
        self._cases: dict[str, list[HiddenCase]] | None = None

    # ------------------------------------------------------------------ bookkeeping
    def cases(self) -> dict[str, list[HiddenCase]]:
        """The hidden cases, computed once by the main process (see :func:`save_cases`)."""
        if self._cases is None:
            if self.spec.cases:
                self._cases = load_cases(Path(self.spec.cases))
            else:
                seed = int(self.spec.seed)
                self._cases = {e.grade_id: list(e.make_cases(seed)) for e in self.rubric.exercises}
        return self._cases

    def remaining(self) -> float:
        """Seconds left of the submission's total time limit."""
        return self.deadline - time.monotonic()

    def save(self) -> None:
        """Write the grade so far for the main process (atomically: a kill never leaves half a file)."""
        self.grade.seconds = round(time.monotonic() - self.start, 2)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(self.grade.to_json(), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def note(self, text: str) -> None:
        """Add a note to the status, once."""
        if text not in self.grade.notes:
            self.grade.notes.append(text)

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        """Grade the submission: read it, run it, test each exercise, summarise."""
        nb = self._read_notebook()
        if nb is not None:
            self._run_notebook(nb)
        self._summarise()

    def _run_notebook(self, nb: Any) -> None:
        """Flag reference use, then run the cells in a kernel, testing each exercise after its cell."""
        baseline = set(self.spec.baseline)
        self.grade.flags = [
            f"cell {label}, {what}"
            for label, what in reference_findings(nb, self.rubric)
            if what not in baseline
        ]
        self.save()
        cells = [c for c in nb.cells if is_code(c)]
        labels = cell_labels(nb)
        where = exercise_cells(cells, self.rubric)
        after: dict[int, list[str]] = {}
        for grade_id, index in where.items():
            after.setdefault(index, []).append(grade_id)
            self.grade.exercise(grade_id).title = exercise_title(labels[index])
        self._prepare_box()
        try:
            self._start_kernel()
            for index, cell in enumerate(cells):
                source = cell.get("source", "")
                if isinstance(source, list):
                    source = "".join(str(line) for line in source)
                self._run_student_cell(source, labels[index])
                for grade_id in after.get(index, []):
                    self._grade_exercise(grade_id)
            for exercise in self.rubric.exercises:
                if not self.grade.exercise(exercise.grade_id).graded:
                    self._grade_exercise(exercise.grade_id)
        except _Stop as stop:
            self.stopped = str(stop)
            self.note(self.stopped)
        finally:
            self._stop_kernel()

    def _read_notebook(self) -> Any:
        """The submission as a notebook, or None (noted in the status) if it cannot be read."""
        path = Path(self.spec.path)
        try:
            size = path.stat().st_size
            if size > MAX_NOTEBOOK_BYTES:
                raise ValueError(
                    f"{size / 2**20:.0f} MB, more than {MAX_NOTEBOOK_BYTES // 2**20} MB"
                )
            nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
            if not isinstance(getattr(nb, "cells", None), list):
                raise ValueError("no list of cells")
            return nb
        except Exception as err:  # any unreadable file is a status, not a crash
            self.stopped = "unreadable notebook"
            self.note(f"unreadable notebook: {type(err).__name__}: {str(err)[:200]}")
            return None

    def _prepare_box(self) -> None:
        """Copy the notebook into the working folder and install the output cap."""
        work = self.box / "work"
        name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(self.spec.path).name) or "submission.ipynb"
        startup = self.box / ".ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        cap = source("output_cap") + f"\ninstall({KERNEL_OUTPUT_BYTES})\n"
        # run in a namespace of its own: the student's namespace gets no names from it
        (startup / "00-labcore-grader.py").write_text(f"exec({cap!r}, {{}})\n", encoding="utf-8")
        shutil.copyfile(self.spec.path, work / name)
        if self.uid is not None:
            for path in (work / name, *startup.parents[:3], startup, *startup.iterdir()):
                if self.box in path.parents:
                    os.chown(path, self.uid, self.uid)

    def _start_kernel(self) -> None:
        """Start the kernel in its sandbox, in the working folder, with a clean environment."""
        self.kernel = KernelSession(
            self.channels,
            Path(self.spec.specs),
            self.spec.prefix,
            timeout=int(self.spec.cell_timeout),
            startup_timeout=max(10, min(60, int(self.remaining()))),
            uid=self.uid,
        )
        self.kernel_log = open(self.spec.kernel_log, "ab")  # closed in _stop_kernel
        env = kernel_env(self.box, self.spec.token, TOKEN_ENV)
        try:
            self.kernel.start(env, self.box / "work", self.kernel_log)
        except KernelStartError as err:  # reported as the submission's status
            raise _Stop(str(err)) from err

    def _stop_kernel(self) -> None:
        """Stop the kernel and whatever it started."""
        if self.kernel is not None:
            self.kernel.stop()
        if self.kernel_log is not None:
            self.kernel_log.close()

    def _death(self) -> str:
        """Why the kernel died."""
        return self.kernel.death() if self.kernel is not None else "the kernel never started"

    def _execute(self, source: str, timeout: float, store_history: bool) -> CellOutcome:
        """Run code in the kernel (see :meth:`KernelSession.execute`)."""
        if self.kernel is None:
            return CellOutcome.DEAD
        return self.kernel.execute(source, timeout, store_history)

    @staticmethod
    def _out_of_memory(ename: str, evalue: str) -> bool:
        """Whether an error says that memory ran out."""
        return ename in MEMORY_ERRORS or any(t in evalue.lower() for t in MEMORY_TEXT)

    def _errors(self) -> list[tuple[str, str]]:
        """The errors of the last execution."""
        return self.kernel.errors if self.kernel is not None else []

    def _run_student_cell(self, source: Any, label: str) -> None:
        """Run one of the student's cells; record errors; raise _Stop when grading cannot go on."""
        if not isinstance(source, str) or not source.strip():
            return
        remaining = self.remaining()
        if remaining <= 0:
            raise _Stop(
                f"total time limit of {self.spec.total_timeout:g} s reached before cell {label}"
            )
        timeout = min(float(self.spec.cell_timeout), remaining)
        outcome = self._execute(source, timeout, store_history=True)
        errors = self._errors()
        if errors and outcome is CellOutcome.ERROR:
            full = any(self._out_of_memory(ename, evalue) for ename, evalue in errors)
            self._execute(forget_cell(full), PROBE_TIMEOUT_S, store_history=False)
        for ename, evalue in errors:
            self.grade.cell_errors.append(
                f"{label} raised {ename}" + (f": {evalue}" if evalue else "")
            )
            if self._out_of_memory(ename, evalue):
                self.note(f"memory limit ({self.spec.memory_mb} MB) reached in cell {label}")
            if ename == "SystemExit":
                self.note(f"cell {label} called sys.exit() (ignored; grading went on)")
        over_total = remaining < float(self.spec.cell_timeout)
        if outcome is CellOutcome.TIMEOUT:
            if over_total:
                raise _Stop(
                    f"total time limit of {self.spec.total_timeout:g} s reached in cell {label}"
                )
            self.note(f"cell {label} timed out after {timeout:.0f} s and was interrupted")
        elif outcome is CellOutcome.STUCK:
            raise _Stop(
                f"cell {label} timed out after {timeout:.0f} s and the kernel did not respond "
                "to an interrupt"
            )
        elif outcome is CellOutcome.DEAD:
            raise _Stop(f"{self._death()} in cell {label}")

    # ------------------------------------------------------------------ hidden tests
    def _grade_exercise(self, grade_id: str) -> None:
        """Run the exercise's hidden cases in the kernel and score them here; save the grade."""
        exercise = self.rubric.exercise(grade_id)
        grade = self.grade.exercise(grade_id)
        grade.graded = True
        cases = self.cases()[grade_id]
        outcomes: list[CaseOutcome] = []
        skip = ""
        try:
            for case in cases:
                if skip:
                    outcomes.append(CaseOutcome(case.name, False, skip))
                    continue
                outcome = self._run_case(exercise, case)
                outcomes.append(outcome)
                if outcome.message.startswith("timed out"):
                    skip = "not run: an earlier hidden case timed out"
        except _Stop as stop:
            reason = str(stop)
            outcomes += [
                CaseOutcome(c.name, False, f"not run: {reason}") for c in cases[len(outcomes) :]
            ]
            self._finish_exercise(grade, exercise, outcomes)
            raise
        self._finish_exercise(grade, exercise, outcomes)

    def _finish_exercise(
        self, grade: ExerciseGrade, exercise: Exercise, outcomes: list[CaseOutcome]
    ) -> None:
        """Record the outcomes of an exercise's cases, its points and summary; save."""
        passed = sum(o.passed for o in outcomes)
        grade.cases = outcomes
        grade.points = round(exercise.points * passed / len(outcomes), 2) if outcomes else 0.0
        unimplemented = outcomes and all(o.message == NOT_IMPLEMENTED for o in outcomes)
        if unimplemented:
            grade.summary = "not implemented"
        elif passed == len(outcomes):
            grade.summary = f"all {len(outcomes)} hidden cases passed"
        else:
            grade.summary = f"{passed} of {len(outcomes)} hidden cases passed"
        self.save()

    def _name(self, exercise: Exercise) -> str:
        """How messages name an exercise: its title and cell, else its function."""
        title = self.grade.exercise(exercise.grade_id).title
        return f"{title} (`{exercise.function}`)" if title else f"`{exercise.function}`"

    def _run_case(self, exercise: Exercise, case: HiddenCase) -> CaseOutcome:
        """Send one hidden input to the kernel, call the function there, load and score the result."""
        remaining = self.remaining()
        if remaining <= 0:
            raise _Stop(f"total time limit of {self.spec.total_timeout:g} s reached")
        nonce = secrets.token_hex(12)
        in_path = self.channels / f"{nonce}.in.pt"
        out_path = self.channels / f"{nonce}.out.pt"
        write_input(in_path, case.inputs)
        os.close(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        if self.uid is not None:
            os.chown(out_path, self.uid, self.uid)
        timeout = min(exercise.case_timeout, remaining)
        try:
            outcome = self._execute(
                harness_cell(nonce, in_path, out_path, exercise), timeout, store_history=False
            )
            answered = outcome in (CellOutcome.OK, CellOutcome.ERROR)
            record = read_record(out_path, nonce) if answered else None
            errors = self._errors()
        finally:
            for path in (in_path, out_path):
                path.unlink(missing_ok=True)
        if outcome is CellOutcome.DEAD:
            raise _Stop(f"{self._death()} during a hidden test of {self._name(exercise)}")
        if outcome is CellOutcome.STUCK:
            raise _Stop(
                f"a hidden test of {self._name(exercise)} timed out and the kernel did not respond "
                "to an interrupt"
            )
        if outcome is CellOutcome.TIMEOUT:
            if timeout < exercise.case_timeout:
                raise _Stop(f"total time limit of {self.spec.total_timeout:g} s reached")
            return CaseOutcome(
                case.name, False, f"timed out after {timeout:.0f} s (an endless loop?)"
            )
        if record is None and errors:
            ename, evalue = errors[0]
            return CaseOutcome(
                case.name,
                False,
                f"no result came back from `{exercise.function}`: the kernel raised {ename} "
                f"{evalue[:200]}".rstrip(),
            )
        return self._score(exercise, case, record)

    def _score(
        self, exercise: Exercise, case: HiddenCase, record: dict[str, Any] | None
    ) -> CaseOutcome:
        """Turn the kernel's record of one case into an outcome, comparing in this process."""
        name = exercise.function
        if record is None:
            return CaseOutcome(
                case.name, False, f"no result came back from `{name}` (did it exit the kernel?)"
            )
        module = str(record.get("module") or "")
        if is_labcore(module):
            flag = f"at run time, {self._name(exercise)}: `{name}` is labcore's own (`{module}`)"
            if flag not in self.grade.flags:
                self.grade.flags.append(flag)
        try:
            status = CaseStatus(record.get("status"))
        except ValueError:
            status = CaseStatus.ERROR
        error = str(record.get("error") or "")[:600]
        if status is CaseStatus.MISSING:
            return CaseOutcome(
                case.name, False, f"`{name}` is not defined after its exercise cell has run"
            )
        if status is CaseStatus.NOT_CALLABLE:
            return CaseOutcome(case.name, False, f"`{name}` is a {error}, not a function")
        if status is CaseStatus.NOT_IMPLEMENTED:
            return CaseOutcome(case.name, False, NOT_IMPLEMENTED)
        if status is not CaseStatus.OK:
            return CaseOutcome(case.name, False, f"your function raised {error or 'an error'}")
        value = decode(record.get("value"))
        extra = decode(record.get("extra"))
        try:
            message = exercise.score(case, value, extra if isinstance(extra, dict) else {})
        except Exception as err:  # an unexpected value type is a failed case
            message = f"the grader could not compare your result ({type(err).__name__}: {err})"
        return CaseOutcome(case.name, message is None, message or "")

    def _summarise(self) -> None:
        """Summarise the run in the status notes and mark the grade finished."""
        for exercise in self.grade.exercises:
            if not exercise.graded and self.stopped:
                exercise.summary = f"not graded: {self.stopped}"
        if self.grade.cell_errors:
            shown = ", ".join(
                "cell {} ({})".format(label, rest.split(":")[0])
                for label, _, rest in (e.partition(" raised ") for e in self.grade.cell_errors[:3])
            )
            more = ", ..." if len(self.grade.cell_errors) > 3 else ""
            self.note(f"{len(self.grade.cell_errors)} cell(s) raised errors: {shown}{more}")
        missing = [
            f"`{e.function}`" for e in self.grade.exercises if e.summary == "not implemented"
        ]
        if missing:
            self.note(f"not implemented: {', '.join(missing)}")
        if self.kernel is not None and self.kernel.output_bytes > OUTPUT_NOTE_BYTES:
            megabytes = self.kernel.output_bytes / 2**20
            self.note(f"{megabytes:.1f} MB of printed output ignored")
        self.grade.finished = True
        self.save()


NOT_IMPLEMENTED = "not implemented (the function raises NotImplementedError)"


def worker_main(spec_path: str) -> int:
    """Entry point of a worker process: grade the submission described by a JSON spec file."""
    torch.set_num_threads(1)
    spec = WorkerSpec.from_json(Path(spec_path).read_text(encoding="utf-8"))
    worker = Worker(spec)
    try:
        worker.run()
    except BaseException as err:  # always leave a state for the main process
        traceback.print_exc()
        worker.note(f"grader error: {type(err).__name__}: {str(err)[:200]}")
        worker.save()
        return 1
    return 0


def worker_entry(spec_path: str, log_path: str) -> None:
    """Body of a worker process: its output goes to a log, its exit code says if it failed."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.exit(worker_main(spec_path))


def score_locally(
    rubric: Rubric, exercise: Exercise, case: HiddenCase, namespace: dict[str, Any], folder: Path
) -> CaseOutcome:
    """Score ``namespace[exercise.function]`` on one hidden case as a worker would, in this process.

    The kernel-side harness runs here instead of in a kernel, with the same transport and the same
    scoring: for tests, and for checking a rubric against a solution without starting kernels.
    ``folder`` holds the case's two files.
    """
    from labcore.grading.inkernel import harness

    in_path, out_path = folder / "local.in.pt", folder / "local.out.pt"
    for path in (in_path, out_path):
        path.unlink(missing_ok=True)
    write_input(in_path, case.inputs)
    harness.run(
        namespace, "local", str(in_path), str(out_path), exercise.function, exercise.call_source,
        MAX_TENSOR_ELEMENTS,
    )  # fmt: skip
    worker = Worker.__new__(Worker)
    worker.grade = SubmissionGrade.empty("local", "local", rubric)
    return worker._score(exercise, case, read_record(out_path, "local"))
