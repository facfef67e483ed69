"""How long the batch grader takes: 20 submissions of one lab with ``--jobs 2``.

Usage: ``python benchmarks/grading.py [--lab 00-function-approximation] [-n 20] [--jobs 2]
[--isolation auto]``

Half of the submissions are the solution notebook (full marks), half the untouched lab (zero);
the script prints the wall-clock time of the batch, the time per submission, the mean time a
single submission spent in its worker, the isolation the kernels ran under, and checks that the
grades are the expected ones. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from labcore.grade import grade_submissions

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="00-function-approximation")
    parser.add_argument("-n", type=int, default=20, help="number of submissions")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--isolation", default="auto", help="as for python -m labcore.grade")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.n):
            source = ROOT / ("solutions" if i % 2 == 0 else "labs") / f"{args.lab}.ipynb"
            path = Path(tmp) / f"student{i:02d}.ipynb"
            shutil.copy(source, path)
            paths.append(path)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        grades = grade_submissions(args.lab, paths, jobs=args.jobs, isolation=args.isolation)
        wall = time.perf_counter() - start

    totals = [sum(e.points for e in g.exercises) for g in grades]
    maximum = sum(e.max_points for e in grades[0].exercises)
    full = sum(1 for i, t in enumerate(totals) if i % 2 == 0 and abs(t - maximum) < 1e-9)
    zero = sum(1 for i, t in enumerate(totals) if i % 2 == 1 and t == 0)
    print(f"lab {args.lab}: {args.n} submissions, --jobs {args.jobs}, {os.cpu_count()} CPUs")
    print(f"  isolation              {grades[0].isolation}")
    print(f"  load average           {load:8.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"  batch wall time        {wall:8.1f} s")
    print(f"  per submission (wall)  {wall / args.n:8.2f} s")
    print(f"  mean worker time       {sum(g.seconds for g in grades) / args.n:8.2f} s")
    print(f"  solutions at full marks {full}/{(args.n + 1) // 2}")
    print(f"  untouched labs at zero  {zero}/{args.n // 2}")


if __name__ == "__main__":
    main()
