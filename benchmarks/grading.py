"""Overhead of the batch grader: grading a lab's submissions against running them bare.

For each lab, ``-n`` submissions (half the solution notebook ``solutions/<lab>.ipynb``, half the
untouched ``labs/<lab>.ipynb``) are

1. graded with :func:`labcore.grade.grade_submissions` (``jobs=--jobs``, ``isolation=--isolation``),
   the wall time of the whole call, in a fresh interpreter as a ``python -m labcore.grade`` run:
   isolation probe, hidden cases built once, the forkserver that imports torch, worker processes,
   one fresh kernel per submission, hidden tests, clean-up;
2. executed bare with nbclient, each notebook in a fresh ``python3`` kernel, ``--jobs`` at a time
   (threads), with the environment the grader gives its kernels (one OpenMP/MKL/OpenBLAS thread,
   no GPU, a private HOME and TMPDIR) and the kernel shut down at once, as the grader does.

The printed ratio is ``grader / bare`` (issue #16's goal: at most 1.2). The contenders alternate
(the first repeat grades first, the next runs bare first, ...) and each lab reports the best of
``--repeats`` batches, so that both see the same machine load. The script also checks the grades
(solutions at full marks, untouched labs at zero) and exits with status 1 if one is wrong, and
prints the load average before and after. Not a test: timings depend on the machine and its load.

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
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from labcore.grade import grade_submissions
from labcore.grading.records import SubmissionGrade
from labcore.rubrics import available_labs

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT_S = 60.0  #: grade_submissions' default cell_timeout, used by both contenders


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
            no solution raised (``inf`` if none).
        isolation: the isolation recorded in the grades (e.g. ``uid+namespace``, ``none``).
        worker_s: mean seconds a submission spent in its worker (the grader's own clock), from
            the fastest grader batch.
        problems: wrong grades and unexpected errors; empty when all is as expected.
    """

    lab: str
    n: int
    grader_s: float = float("inf")
    bare_s: float = float("inf")
    isolation: str = ""
    worker_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """``grader_s / bare_s``: how many times longer grading takes than running bare."""
        return self.grader_s / self.bare_s


def kernel_env(box: Path) -> dict[str, str]:
    """The environment of a bare kernel: the one ``labcore.grade`` gives its kernels.

    Mirrors ``kernel_env`` of labcore/grading/kernel.py (without the grader's token): the grader's PATH,
    PYTHONPATH and VIRTUAL_ENV, a HOME, TMPDIR, IPython, Matplotlib and cache folder inside
    ``box``, one thread for OpenMP, MKL and OpenBLAS, no GPU.
    """
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(box),
        "TMPDIR": str(box / "tmp"),
        "IPYTHONDIR": str(box / ".ipython"),
        "MPLCONFIGDIR": str(box / ".matplotlib"),
        "XDG_CACHE_HOME": str(box / ".cache"),
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "LABCORE_DEVICE": "cpu",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    for name in ("PYTHONPATH", "VIRTUAL_ENV"):
        if name in os.environ:
            env[name] = os.environ[name]
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


def time_bare(submissions: list[Submission], jobs: int, scratch: Path) -> tuple[float, list[int]]:
    """Wall time (seconds) of running every submission bare, ``jobs`` at a time; errors of each."""
    boxes = Path(tempfile.mkdtemp(prefix="bare-", dir=scratch))
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            errors = list(
                pool.map(
                    lambda item: run_bare(item[1].path, boxes / f"box{item[0]:02d}"),
                    enumerate(submissions),
                )
            )
        return time.perf_counter() - start, errors
    finally:
        shutil.rmtree(boxes, ignore_errors=True)


def _grade_batch(lab: str, paths: list[Path], jobs: int, isolation: str) -> tuple[float, list[str]]:
    """Body of :func:`time_grader`'s process: the timed call and the grades as JSON."""
    start = time.perf_counter()
    grades = grade_submissions(lab, paths, jobs=jobs, isolation=isolation)
    return time.perf_counter() - start, [g.to_json() for g in grades]


def time_grader(
    lab: str, submissions: list[Submission], jobs: int, isolation: str
) -> tuple[float, list[SubmissionGrade]]:
    """Wall time (seconds) of one ``grade_submissions`` call on every submission; the grades.

    The call runs in a fresh interpreter (spawned, imports not timed) so that each batch starts
    its own forkserver, as every ``python -m labcore.grade`` run does: multiprocessing keeps one
    forkserver per process, and a second batch here would otherwise reuse the first one's.
    """
    paths = [s.path for s in submissions]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as process:
        seconds, grades = process.submit(_grade_batch, lab, paths, jobs, isolation).result()
    return seconds, [SubmissionGrade.from_json(g) for g in grades]


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


def load() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``0.52 0.71 1.03``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def markdown_table(results: list[LabResult], jobs: int, repeats: int, loads: str) -> str:
    """The results as a Markdown table (lab | N | grader s | bare s | ratio | isolation)."""
    lines = [
        f"Best of {repeats} batch(es), jobs={jobs}, {os.cpu_count()} CPUs, load average {loads}; "
        "ratio = grader / bare (goal <= 1.2).",
        "",
        "| lab | N | grader s | bare s | ratio | isolation |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.lab} | {r.n} | {r.grader_s:.1f} | {r.bare_s:.1f} | {r.ratio:.2f}x "
            f"| {r.isolation} |"
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
                seconds, grades = time_grader(lab, submissions, args.jobs, args.isolation)
                wrong = grade_problems(submissions, grades)
                result.problems += wrong
                if not wrong and seconds < result.grader_s:  # a failed batch is no timing
                    result.grader_s = seconds
                    result.isolation = ",".join(sorted({g.isolation for g in grades}))
                    result.worker_s = sum(g.seconds for g in grades) / len(grades)
            else:
                seconds, errors = time_bare(submissions, args.jobs, scratch)
                wrong = bare_problems(submissions, errors)
                result.problems += wrong
                if not wrong:
                    result.bare_s = min(result.bare_s, seconds)
            print(f"  repeat {repeat + 1}: {contender:6s} {seconds:7.1f} s", flush=True)
    print(
        f"  best: grader {result.grader_s:.1f} s (mean worker {result.worker_s:.1f} s per "
        f"submission), bare {result.bare_s:.1f} s, ratio {result.ratio:.2f}x, isolation "
        f"{result.isolation}; grades {'as expected' if not result.problems else 'WRONG'}",
        flush=True,
    )
    for problem in result.problems:
        print(f"  problem: {problem}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the Markdown table; 1 if a lab failed or a grade was wrong."""
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
    print(markdown_table(results, args.jobs, args.repeats, f"{before} before, {after} after"))
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python", "benchmarks/grading.py", *given])
    print(f"\n(command: {command})")
    if failed or any(r.problems for r in results):
        print("\nfailed labs, wrong grades or failing bare runs: see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
