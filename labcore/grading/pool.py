"""The main process: one worker process per submission, ``jobs`` at a time, and the cleanup.

For each submission the pool makes a fresh folder (the kernel's box, and beside it the folder of its
channels), a worker spec (:class:`~labcore.grading.records.WorkerSpec`) with the kernel's command
prefix (:mod:`labcore.grading.sandbox`), and starts a worker (:mod:`labcore.grading.worker`) forked
from a server that has imported torch once. When the worker ends (or overruns and is killed), the
pool kills whatever the kernel left behind, reads the grade the worker saved, and removes the
folders. Outputs are written by the caller only after every worker and kernel has ended.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import secrets
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

from labcore.grading.detect import baseline_findings
from labcore.grading.records import SubmissionGrade, WorkerSpec
from labcore.grading.sandbox import (
    KernelLimits,
    Sandbox,
    kernel_prefix,
    kill_leftovers,
    new_uid,
    remove_tree,
    resolve_sandbox,
)
from labcore.grading.transport import save_cases
from labcore.grading.worker import worker_entry
from labcore.rubrics import RUBRICS, Rubric, load_rubric

__all__ = ["grade_submissions", "submission_names"]

KERNEL_FILE_BYTES = 256 * 2**20  # RLIMIT_FSIZE of the kernel: the largest file it may write
KERNEL_NPROC = 512  # RLIMIT_NPROC of a kernel under its own uid (threads count)
WORKER_GRACE_S = 90  # a worker gets --total-timeout plus this before it is killed


def submission_names(paths: Sequence[Path]) -> list[str]:
    """Short unique names: the file stems, with parent folders added only where stems collide.

    ``alice.ipynb, bob.ipynb -> alice, bob``; ``alice/lab.ipynb, bob/lab.ipynb -> alice/lab,
    bob/lab``. The same file given twice gets ``#2`` appended.
    """
    resolved = [p.resolve().with_suffix("").parts for p in paths]
    parts = list(dict.fromkeys(resolved))  # the same file twice is named once, then numbered
    depth = [1] * len(parts)
    while True:
        names = ["/".join(p[-k:]) for p, k in zip(parts, depth, strict=True)]
        clashes = {name for name in names if names.count(name) > 1}
        for i, name in enumerate(names):
            if name in clashes:
                depth[i] += 1
        if not clashes:
            break
    short = dict(zip(parts, names, strict=True))
    seen: dict[tuple[str, ...], int] = {}
    unique = []
    for key in resolved:
        seen[key] = seen.get(key, 0) + 1
        unique.append(short[key] if seen[key] == 1 else f"{short[key]}#{seen[key]}")
    return unique


@contextlib.contextmanager
def socket_safe_tempdir() -> Iterator[None]:
    """Use ``/tmp`` for temporary folders while the ``TMPDIR`` is deeper than 40 characters.

    A Unix socket's path holds at most 107 bytes: multiprocessing's forkserver listens on one in a
    ``pymp-*`` temporary folder, and each kernel on five in the folder of its channels.
    """
    current = tempfile.gettempdir()
    if len(current) <= 40 or not os.path.isdir("/tmp"):
        yield
        return
    tempfile.tempdir = "/tmp"
    try:
        yield
    finally:
        tempfile.tempdir = current


@dataclass
class _Options:
    """The settings of one grading run, shared by its workers."""

    lab: str
    cell_timeout: float
    total_timeout: float
    memory_mb: int
    seed: int
    sandbox: Sandbox
    baseline: list[str]
    private: Path
    boxes: Path
    hide: list[Path]


class _Pool:
    """Runs one worker process per submission, at most ``jobs`` at a time."""

    def __init__(self, options: _Options, rubric: Rubric) -> None:
        self.options = options
        self.rubric = rubric
        self.lock = threading.Lock()
        self.live: dict[int, tuple[Any, str, int | None]] = {}
        self.uids: set[int] = set()
        # Workers are forked from a server that has imported torch, nbclient and the lab's rubric
        # once. It starts now and imports them while the main process builds the hidden cases.
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(
            ["torch", "nbformat", "nbclient", "jupyter_client.manager", RUBRICS[options.lab]]
        )
        with socket_safe_tempdir():
            forkserver.ensure_running()

    def grade(self, index: int, name: str, path: Path) -> SubmissionGrade:
        """Grade one submission in its own worker process; never raises."""
        try:
            return self._grade(index, name, path)
        except Exception as err:  # one failure must not stop the others
            traceback.print_exc()
            grade = SubmissionGrade.empty(name, str(path), self.rubric)
            grade.notes.append(f"grader error: {type(err).__name__}: {str(err)[:200]}")
            return grade

    def _spec(self, index: int, name: str, path: Path, token: str) -> WorkerSpec:
        """Make the submission's folders and its worker's spec."""
        options = self.options
        uid = None
        if options.sandbox.own_uid:
            with self.lock:
                uid = new_uid(self.uids)
        box = Path(tempfile.mkdtemp(prefix="box-", dir=options.boxes))
        channels = Path(f"{box}-grader")
        channels.mkdir(mode=0o700)
        for sub in ("work", "tmp"):
            (box / sub).mkdir(mode=0o700)
        if uid is not None:  # the kernel writes its sockets and results in its channels
            for folder in (box, box / "work", box / "tmp", channels):
                os.chown(folder, uid, uid)
            # bwrap, root without capabilities, must be able to enter the working folder
            for folder in (box, box / "work"):
                os.chmod(folder, 0o711)
        limits = KernelLimits(
            memory_bytes=options.memory_mb * 2**20,
            file_bytes=KERNEL_FILE_BYTES,
            cpu_seconds=int(options.total_timeout) + 60,
            nproc=KERNEL_NPROC if uid is not None else None,
        )
        prefix = kernel_prefix(
            options.sandbox,
            limits,
            own=[box, channels],
            hide=options.hide,
            workdir=box / "work",
            uid=uid,
        )
        return WorkerSpec(
            lab=options.lab,
            name=name,
            path=str(path.resolve()),
            state=str(options.private / f"{index}.state.json"),
            box=str(box),
            channels=str(channels),
            specs=str(options.private / f"{index}.kernels"),
            kernel_log=str(options.private / f"{index}.kernel.log"),
            cases=str(options.private / "cases.pt"),
            token=token,
            uid=uid,
            prefix=prefix,
            cell_timeout=options.cell_timeout,
            total_timeout=options.total_timeout,
            memory_mb=options.memory_mb,
            seed=options.seed,
            baseline=options.baseline,
        )

    def _grade(self, index: int, name: str, path: Path) -> SubmissionGrade:
        """Prepare the submission's folders, run its worker, clean up after it, collect its grade."""
        options = self.options
        token = secrets.token_hex(16)
        spec = self._spec(index, name, path, token)
        spec_path = options.private / f"{index}.spec.json"
        spec_path.write_text(spec.to_json(), encoding="utf-8")
        log_path = options.private / f"{index}.worker.log"
        limit = options.total_timeout + WORKER_GRACE_S
        worker = self.context.Process(
            target=worker_entry, args=(str(spec_path), str(log_path)), name=f"grade-{index}"
        )
        with socket_safe_tempdir():
            worker.start()
        with self.lock:
            self.live[index] = (worker, token, spec.uid)
        try:
            worker.join(timeout=limit)
            killed = worker.is_alive()
            if killed:
                worker.kill()
                worker.join()
        finally:
            with self.lock:
                self.live.pop(index, None)
        kill_leftovers(token, spec.uid)
        state = Path(spec.state)
        grade = self._collect(name, path, state, log_path, worker.exitcode or 0, killed, limit)
        grade.isolation = options.sandbox.label
        for folder in (Path(spec.box), Path(spec.channels)):
            remove_tree(folder)
        return grade

    def _collect(
        self, name: str, path: Path, state: Path, log: Path, code: int, killed: bool, limit: float
    ) -> SubmissionGrade:
        """The grade the worker saved (or an empty one), with a note if the worker failed."""
        try:
            grade = SubmissionGrade.from_json(state.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError, KeyError):
            grade = SubmissionGrade.empty(name, str(path), self.rubric)
        if killed:
            grade.notes.append(f"the grader stopped this submission after {limit:g} s")
        elif not grade.finished:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
            detail = f": {tail[0][:200]}" if tail else ""
            grade.notes.append(f"grader worker failed (exit code {code}){detail}")
        for exercise in grade.exercises:
            if not exercise.graded and (killed or not grade.finished):
                exercise.summary = "not graded: the grader's worker did not finish"
        return grade

    def kill_all(self) -> None:
        """Kill every running worker and what its kernel left behind (on errors and Ctrl-C)."""
        with self.lock:
            live = list(self.live.values())
        for worker, token, uid in live:
            worker.kill()
            kill_leftovers(token, uid)


def grade_submissions(
    lab: str,
    submissions: Sequence[Path | str],
    *,
    jobs: int = 1,
    cell_timeout: float = 60.0,
    total_timeout: float = 300.0,
    memory_mb: int = 4096,
    seed: int = 0,
    isolation: str = "bwrap",
    network: bool = False,
    progress: Callable[[int, int, SubmissionGrade], None] | None = None,
    protect: Sequence[Path | str] = (),
) -> list[SubmissionGrade]:
    """Grade notebooks of ``lab``; one fresh sandboxed kernel per submission, ``jobs`` at a time.

    Args:
        lab: the lab's file stem in ``labs/`` (it must have a rubric in :mod:`labcore.rubrics`).
        submissions: notebook paths, graded independently; the result keeps their order.
        jobs: number of worker processes.
        cell_timeout: seconds a student's cell may run before it is interrupted.
        total_timeout: seconds for a whole submission (kernel start, cells, hidden tests).
        memory_mb: address-space limit of each kernel (``RLIMIT_AS``); 0 for none.
        seed: seed of the hidden inputs.
        isolation: ``bwrap`` (each kernel in bubblewrap namespaces of its own, under its own uid
            when the grader is root; ``auto`` means the same) or ``none`` (kernels run as the
            grader's user, unisolated: only for trusted submissions). The mode used is logged
            and recorded in each grade's ``isolation``.
        network: let kernels use the network (under ``bwrap`` they have none by default).
        progress: called as ``progress(done, n, grade)`` after each submission.
        protect: more files or folders that kernels must not see (the command line gives the CSV
            and the feedback folder); a file's whole folder is hidden. The submissions' folders
            always are.

    Raises:
        ValueError: for an unknown lab, bad limits, or an isolation this machine cannot provide.
    """
    rubric = load_rubric(lab)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if cell_timeout <= 0 or total_timeout <= 0:
        raise ValueError(
            f"timeouts must be positive, got cell {cell_timeout} and total {total_timeout}"
        )
    if memory_mb < 0:
        raise ValueError(f"memory_mb must be >= 0, got {memory_mb}")
    paths = [Path(p) for p in submissions]
    names = submission_names(paths)
    sandbox = resolve_sandbox(isolation, network=network)
    print(f"labcore.grade: isolation {sandbox.label}: {sandbox.describe()}", file=sys.stderr)
    baseline = baseline_findings(lab, rubric)
    with socket_safe_tempdir():
        private = Path(tempfile.mkdtemp(prefix="labcore-grade-")).resolve()
        boxes = Path(tempfile.mkdtemp(prefix="labcore-sandboxes-")).resolve()
    # Without a sandbox, kernels may enter their own box but not list the folder of boxes.
    os.chmod(boxes, 0o311)
    hidden = [p.absolute() for p in [*paths, *map(Path, protect)]]
    hide = [boxes, private, *[p if p.is_dir() else p.parent for p in hidden]]
    pool: _Pool | None = None
    grades: list[SubmissionGrade | None] = [None] * len(paths)
    done = 0
    try:
        options = _Options(
            lab=lab,
            cell_timeout=float(cell_timeout),
            total_timeout=float(total_timeout),
            memory_mb=int(memory_mb),
            seed=int(seed),
            sandbox=sandbox,
            baseline=baseline,
            private=private,
            boxes=boxes,
            hide=hide,
        )
        pool = _Pool(options, rubric)
        save_cases(rubric, int(seed), private / "cases.pt")
        with ThreadPoolExecutor(max_workers=jobs) as executor:
            futures = {
                executor.submit(pool.grade, i, name, path): i
                for i, (name, path) in enumerate(zip(names, paths, strict=True))
            }
            for future in as_completed(list(futures)):
                index = futures[future]
                grades[index] = future.result()
                done += 1
                if progress is not None:
                    progress(done, len(paths), grades[index])
    finally:
        if pool is not None:
            pool.kill_all()
        os.chmod(boxes, 0o700)
        remove_tree(boxes)
        remove_tree(private)
    return [g for g in grades if g is not None]
