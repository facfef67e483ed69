"""Overhead of the batch grader: grading a lab's submissions against running them bare.

For each lab, ``-n`` submissions (half the solution notebook ``solutions/<lab>.ipynb``, half the
untouched ``labs/<lab>.ipynb``) are

1. graded with :func:`labcore.grade.grade_submissions` (``jobs=--jobs``, ``isolation=--isolation``):
   the whole call, as in a ``python -m labcore.grade`` run (isolation probe, hidden cases built
   once, the forkserver that imports torch, one worker process and one fresh sandboxed kernel per
   submission, hidden tests, clean-up);
2. executed bare with nbclient, each notebook in a fresh ``python3`` kernel, ``--jobs`` at a time
   (threads), with the environment the grader gives its kernels (one OpenMP/MKL/OpenBLAS thread,
   no GPU, a private HOME and TMPDIR), the kernel shut down at once as the grader does.

Each batch runs in a fresh interpreter (spawned; its imports are not timed), so that every grader
batch starts its own forkserver as the command line does. The printed ratio is the wall time
``grader / bare`` (issue #16's goal: at most 1.2). Where the script may make a cgroup (root on
Linux), it also reports the CPU seconds each batch used, all its processes together (kernels,
workers, forkserver): a measure of the grader's extra work that the load of other programs on the
machine barely moves, unlike wall time. The contenders alternate (the first repeat grades first,
the next runs bare first, ...) and each lab reports the best of ``--repeats`` batches. The script
checks the grades (solutions at full marks, untouched labs at zero) and that no solution cell
raised when run bare, and exits with status 1 otherwise; it prints the load average before and
after. Not a test: timings depend on the machine and its load.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/grading.py                       # every lab, n=4
    python benchmarks/grading.py --lab 00-function-approximation -n 8 --repeats 3
    python benchmarks/grading.py --isolation none                        # any grader mode
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

from labcore.grade import grade_submissions
from labcore.grading.kernel import kernel_env as grading_kernel_env
from labcore.grading.records import SubmissionGrade
from labcore.rubrics import available_labs

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT_S = 60.0  #: grade_submissions' default cell_timeout, used by both contenders
INF = float("inf")


@dataclass(frozen=True)
class Submission:
    """One notebook of the batch: ``kind`` is ``solution`` (full marks) or ``blank`` (zero)."""

    path: Path
    kind: str


@dataclass
class LabResult:
    """The best batch times of one lab and what was checked along the way.

    Attributes:
        lab: the lab's stem.
        n: number of submissions per batch.
        grader_s: best wall time (seconds) of ``grade_submissions`` over the repeats whose
            grades were right (``inf`` if none was).
        bare_s: best wall time (seconds) of the bare nbclient batch over the repeats in which
            no solution cell raised (``inf`` if none).
        grader_cpu: least CPU seconds of a grader batch (``inf`` when not measured).
        bare_cpu: least CPU seconds of a bare batch (``inf`` when not measured).
        isolation: the isolation recorded in the grades (e.g. ``bwrap+uid``, ``none``).
        worker_s: mean seconds a submission spent in its worker (the grader's own clock), in
            the fastest grader batch.
        problems: wrong grades and solution cells that raised; empty when all is as expected.
    """

    lab: str
    n: int
    grader_s: float = INF
    bare_s: float = INF
    grader_cpu: float = INF
    bare_cpu: float = INF
    isolation: str = ""
    worker_s: float = 0.0
    problems: list[str] = field(default_factory=list)


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``1.23x``, or ``-`` when either was not measured."""
    return f"{a / b:.2f}x" if a < INF and 0 < b < INF else "-"


def seconds_text(value: float) -> str:
    """A duration for the table: ``12.3``, or ``-`` when not measured."""
    return f"{value:.1f}" if value < INF else "-"


# --------------------------------------------------------------------------- CPU accounting
class CpuMeter:
    """CPU seconds used by the processes of a cgroup of its own (and all they start).

    A cgroup is the one place where Linux adds up the CPU time of every process of a batch,
    including those whose parent never waits for them (the grader's forkserver and its workers).
    Uses cgroup v2 (``cpu.stat``, ``usage_usec``) or v1 (``cpuacct.usage``, nanoseconds).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def create(cls, name: str) -> CpuMeter | None:
        """A new, empty cgroup called ``name``, or None where none can be made (not root, ...)."""
        roots = []
        try:
            with open("/proc/mounts", encoding="utf-8") as mounts:
                for line in mounts:
                    fields = line.split()
                    if len(fields) > 3 and fields[2] == "cgroup2":
                        roots.append(Path(fields[1]))
                    elif len(fields) > 3 and fields[2] == "cgroup" and "cpuacct" in fields[3]:
                        roots.append(Path(fields[1]))
        except OSError:
            return None
        for root in roots:
            folder = root / name
            try:
                folder.mkdir()
            except OSError:
                continue
            meter = cls(folder)
            try:
                meter.seconds()
                return meter
            except (OSError, ValueError):
                meter.remove()
        return None

    def join(self) -> None:
        """Move the calling process into the cgroup (its children will follow it there)."""
        (self.folder / "cgroup.procs").write_text(f"{os.getpid()}\n", encoding="utf-8")

    def seconds(self) -> float:
        """CPU seconds (user + system) used in the cgroup so far.

        Raises:
            OSError, ValueError: if the cgroup has neither ``cpu.stat`` nor ``cpuacct.usage``.
        """
        stat = self.folder / "cpu.stat"
        if stat.exists():
            for line in stat.read_text(encoding="utf-8").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
            raise ValueError(f"no usage_usec in {stat}")
        return int((self.folder / "cpuacct.usage").read_text(encoding="utf-8")) / 1e9

    def remove(self, wait_s: float = 10.0) -> None:
        """Remove the cgroup once its last process has exited (waits up to ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.folder.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    print(f"note: could not remove the cgroup {self.folder}", file=sys.stderr)
                    return
                time.sleep(0.2)


def _measured(cgroup: str | None, work: Callable[[], Any]) -> tuple[float, float, Any]:
    """Run ``work()`` in this process: its wall seconds, CPU seconds and result.

    The CPU seconds are those of the cgroup at ``cgroup`` (this process joins it first, so they
    count this process and all it starts from now on), or ``inf`` without one.
    """
    meter = CpuMeter(Path(cgroup)) if cgroup else None
    if meter is not None:
        meter.join()
    cpu = meter.seconds() if meter is not None else 0.0
    start = time.perf_counter()
    result = work()
    wall = time.perf_counter() - start
    cpu = meter.seconds() - cpu if meter is not None else INF
    return wall, cpu, result


def in_fresh_process(function: Callable[..., Any], *args: Any) -> tuple[float, float, Any]:
    """Call ``function(*args, cgroup)`` in a spawned interpreter with a cgroup of its own."""
    meter = CpuMeter.create(f"labcore-bench-{os.getpid()}-{time.monotonic_ns()}")
    try:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as process:
            cgroup = str(meter.folder) if meter is not None else None
            return process.submit(function, *args, cgroup).result()
    finally:
        if meter is not None:
            meter.remove()


# --------------------------------------------------------------------------- the contenders
def kernel_env(box: Path) -> dict[str, str]:
    """The environment of a bare kernel: the one ``labcore.grade`` gives its kernels
    (:func:`labcore.grading.kernel.kernel_env`), without the grader's token."""
    env = grading_kernel_env(box, "", "LABCORE_BENCH_UNUSED")
    env.pop("LABCORE_BENCH_UNUSED")
    return env


def make_submissions(lab: str, n: int, folder: Path) -> list[Submission]:
    """Copy ``n`` notebooks of ``lab`` into ``folder``: solutions at even indices, blanks at odd.

    Raises:
        ValueError: if ``n < 1`` or the lab has no solution or student notebook.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sources = {
        "solution": ROOT / "solutions" / f"{lab}.ipynb",
        "blank": ROOT / "labs" / f"{lab}.ipynb",
    }
    for source in sources.values():
        if not source.is_file():
            raise ValueError(f"lab {lab!r}: {source} does not exist")
    folder.mkdir(parents=True)
    submissions = []
    for i in range(n):
        kind = "solution" if i % 2 == 0 else "blank"
        path = folder / f"student{i:02d}.ipynb"
        shutil.copyfile(sources[kind], path)
        submissions.append(Submission(path, kind))
    return submissions


def run_bare(path: Path, box: Path) -> int:
    """Execute the notebook at ``path`` in a fresh kernel, in ``box/work``; the cells that raised.

    The notebook is copied into ``box/work`` (its working folder, as in the grader) and executed
    in memory; nothing is written back.
    """
    work = box / "work"
    for folder in (work, box / "tmp"):
        folder.mkdir(parents=True)
    shutil.copyfile(path, work / path.name)
    nb = nbformat.read(work / path.name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=int(CELL_TIMEOUT_S),
        kernel_name="python3",
        allow_errors=True,
        shutdown_kernel="immediate",
        resources={"metadata": {"path": str(work)}},
    )
    client.execute(env=kernel_env(box))
    return sum(
        any(out.get("output_type") == "error" for out in cell.get("outputs", []))
        for cell in nb.cells
        if cell.cell_type == "code"
    )


def _bare_batch(
    paths: list[Path], jobs: int, scratch: Path, cgroup: str | None
) -> tuple[float, float, list[int]]:
    """Body of :func:`time_bare`'s process: wall and CPU seconds, the cells that raised per path."""
    boxes = Path(tempfile.mkdtemp(prefix="bare-", dir=scratch))

    def batch() -> list[int]:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(
                pool.map(run_bare, paths, [boxes / f"box{i:02d}" for i in range(len(paths))])
            )

    try:
        return _measured(cgroup, batch)
    finally:
        shutil.rmtree(boxes, ignore_errors=True)


def time_bare(
    submissions: list[Submission], jobs: int, scratch: Path
) -> tuple[float, float, list[int]]:
    """Wall and CPU seconds of running every submission bare, ``jobs`` at a time; errors of each."""
    return in_fresh_process(_bare_batch, [s.path for s in submissions], jobs, scratch)


def _grade_batch(
    lab: str, paths: list[Path], jobs: int, isolation: str, cgroup: str | None
) -> tuple[float, float, list[str]]:
    """Body of :func:`time_grader`'s process: wall and CPU seconds, the grades as JSON."""
    wall, cpu, grades = _measured(
        cgroup, lambda: grade_submissions(lab, paths, jobs=jobs, isolation=isolation)
    )
    return wall, cpu, [g.to_json() for g in grades]


def time_grader(
    lab: str, submissions: list[Submission], jobs: int, isolation: str
) -> tuple[float, float, list[SubmissionGrade]]:
    """Wall and CPU seconds of one ``grade_submissions`` call on every submission; the grades."""
    paths = [s.path for s in submissions]
    wall, cpu, grades = in_fresh_process(_grade_batch, lab, paths, jobs, isolation)
    return wall, cpu, [SubmissionGrade.from_json(g) for g in grades]


def grade_problems(submissions: list[Submission], grades: list[SubmissionGrade]) -> list[str]:
    """What is wrong with the grades: a solution below full marks or a blank above zero."""
    problems = []
    for submission, grade in zip(submissions, grades, strict=True):
        expected = grade.max_total if submission.kind == "solution" else 0.0
        if abs(grade.total - expected) > 1e-6:
            problems.append(
                f"{submission.path.name} ({submission.kind}) got {grade.total:g} of "
                f"{grade.max_total:g}, expected {expected:g} ({grade.status})"
            )
    return problems


def bare_problems(submissions: list[Submission], errors: list[int]) -> list[str]:
    """What is wrong with the bare runs: a solution notebook with a cell that raised."""
    return [
        f"{s.path.name} (solution) raised in {e} cell(s) when run bare"
        for s, e in zip(submissions, errors, strict=True)
        if s.kind == "solution" and e
    ]


# --------------------------------------------------------------------------- the report
def load() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``0.52 0.71 1.03``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def markdown_tables(results: list[LabResult], jobs: int, repeats: int, loads: str) -> str:
    """The wall-time table (lab | N | grader s | bare s | ratio | isolation), then CPU seconds."""
    lines = [
        f"Best of {repeats} batch(es) each, jobs={jobs}, {os.cpu_count()} CPUs, load average "
        f"{loads}; ratio = grader / bare (goal <= 1.2).",
        "",
        "| lab | N | grader s | bare s | ratio | isolation |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.lab} | {r.n} | {seconds_text(r.grader_s)} | {seconds_text(r.bare_s)} "
            f"| {ratio(r.grader_s, r.bare_s)} | {r.isolation} |"
        )
    if any(r.grader_cpu < INF and r.bare_cpu < INF for r in results):
        lines += [
            "",
            "CPU seconds of all processes of a batch (least over the repeats):",
            "",
            "| lab | N | grader CPU s | bare CPU s | CPU ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in results:
            lines.append(
                f"| {r.lab} | {r.n} | {seconds_text(r.grader_cpu)} | {seconds_text(r.bare_cpu)} "
                f"| {ratio(r.grader_cpu, r.bare_cpu)} |"
            )
    return "\n".join(lines)


def benchmark_lab(lab: str, args: argparse.Namespace, scratch: Path) -> LabResult:
    """Grade and run bare ``args.n`` submissions of ``lab``, ``args.repeats`` times alternating."""
    result = LabResult(lab, args.n)
    submissions = make_submissions(lab, args.n, scratch / lab)
    print(f"{lab}: {args.n} submissions, load {load()}", flush=True)
    for repeat in range(args.repeats):
        order = ("grader", "bare") if repeat % 2 == 0 else ("bare", "grader")
        for contender in order:
            if contender == "grader":
                wall, cpu, grades = time_grader(lab, submissions, args.jobs, args.isolation)
                wrong = grade_problems(submissions, grades)
                if not wrong:  # a failed batch is no timing
                    result.grader_cpu = min(result.grader_cpu, cpu)
                    if wall < result.grader_s:
                        result.grader_s = wall
                        result.isolation = ",".join(sorted({g.isolation for g in grades}))
                        result.worker_s = sum(g.seconds for g in grades) / len(grades)
            else:
                wall, cpu, errors = time_bare(submissions, args.jobs, scratch)
                wrong = bare_problems(submissions, errors)
                if not wrong:
                    result.bare_s = min(result.bare_s, wall)
                    result.bare_cpu = min(result.bare_cpu, cpu)
            result.problems += wrong
            cpu_text = f", CPU {cpu:6.1f} s" if cpu < INF else ""
            print(
                f"  repeat {repeat + 1}: {contender:6s} {wall:6.1f} s{cpu_text}, load {load()}",
                flush=True,
            )
    print(
        f"  best: grader {seconds_text(result.grader_s)} s (mean worker {result.worker_s:.1f} s "
        f"per submission), bare {seconds_text(result.bare_s)} s, ratio "
        f"{ratio(result.grader_s, result.bare_s)} (CPU {ratio(result.grader_cpu, result.bare_cpu)}"
        f"), isolation {result.isolation}; "
        f"grades {'as expected' if not result.problems else 'WRONG'}",
        flush=True,
    )
    for problem in result.problems:
        print(f"  problem: {problem}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the Markdown tables; 1 if a lab failed or a grade was wrong."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lab", action="append", help="a lab's stem (repeatable); default: every lab with a rubric"
    )
    parser.add_argument("-n", type=int, default=4, help="submissions per lab (default 4)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel kernels for both (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="batches per contender; best kept")
    parser.add_argument(
        "--isolation", default="auto", help="passed to grade_submissions (default auto)"
    )
    args = parser.parse_args(argv)
    labs = args.lab or available_labs()
    unknown = sorted(set(labs) - set(available_labs()))
    if unknown:
        parser.error(
            f"no rubric for {', '.join(unknown)}; choose from {', '.join(available_labs())}"
        )
    if args.n < 1 or args.jobs < 1 or args.repeats < 1:
        parser.error("-n, --jobs and --repeats must be >= 1")

    before = load()
    print(f"load average before: {before} ({os.cpu_count()} CPUs)", flush=True)
    results: list[LabResult] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        for lab in labs:
            try:
                results.append(benchmark_lab(lab, args, Path(tmp)))
            except Exception as err:  # one broken lab must not hide the others' numbers
                print(f"{lab}: failed ({type(err).__name__}: {err})", flush=True)
                failed.append(lab)
    after = load()
    print(f"load average after:  {after}", flush=True)
    print()
    print(markdown_tables(results, args.jobs, args.repeats, f"{before} before, {after} after"))
    given = sys.argv[1:] if argv is None else argv
    print(f"\n(command: {' '.join(['python', 'benchmarks/grading.py', *given])})")
    if failed or any(r.problems for r in results):
        print("\nfailed labs, wrong grades or failing bare runs: see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
