"""The command line: ``python -m labcore.grade <lab> <submissions...>``.

Grades the submissions (:func:`labcore.grading.pool.grade_submissions`), then writes the CSV
gradebook and one feedback file per submission (:mod:`labcore.grading.report`).
``--gradescope-autograder OUT.zip`` instead builds the lab's Gradescope autograder
(:mod:`labcore.grading.gradescope`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from labcore.grading.pool import grade_submissions
from labcore.grading.records import SubmissionGrade
from labcore.grading.report import points_text, write_csv, write_feedback
from labcore.grading.sandbox import ISOLATION_CHOICES
from labcore.rubrics import available_labs, load_rubric

__all__ = ["main"]


def expand(paths: Iterable[Path]) -> list[Path]:
    """Notebook files, with folders replaced by the notebooks they contain (sorted)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            out.append(path)
    return out


def parser() -> argparse.ArgumentParser:
    """The command line's arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m labcore.grade",
        description="Grade lab submissions against hidden tests, one sandboxed kernel each.",
    )
    parser.add_argument("lab", help=f"the lab's file stem in labs/ ({', '.join(available_labs())})")
    parser.add_argument("submissions", nargs="*", type=Path, help="notebooks or folders of them")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="the CSV gradebook")
    parser.add_argument(
        "--feedback-dir",
        type=Path,
        default=None,
        help="feedback files (default: feedback/ beside --out)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per cell (60)")
    parser.add_argument(
        "--total-timeout", type=float, default=300.0, help="seconds per submission (300)"
    )
    parser.add_argument(
        "--memory-mb", type=int, default=4096, help="address-space limit per kernel (4096; 0: none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the hidden inputs (0)")
    parser.add_argument(
        "--isolation",
        choices=ISOLATION_CHOICES,
        default="bwrap",
        help="bwrap (default): each kernel in bubblewrap namespaces of its own, without network, "
        "under its own uid when run as root; none: kernels run unisolated, as your user "
        "(trusted submissions only); auto: the same as bwrap",
    )
    parser.add_argument(
        "--allow-network", action="store_true", help="let kernels use the network (bwrap)"
    )
    parser.add_argument(
        "--canvas-roster",
        type=Path,
        metavar="ROSTER.csv",
        help="Canvas's gradebook export: also write canvas.csv beside --out, for Canvas's import",
    )
    parser.add_argument(
        "--canvas-assignment",
        metavar="'TITLE (ID)'",
        help="the assignment's column in the roster, e.g. 'Lab 0 (12345)' (with --canvas-roster)",
    )
    parser.add_argument(
        "--canvas-key",
        default="SIS Login ID",
        help="the roster column that names the submissions (default: SIS Login ID)",
    )
    parser.add_argument(
        "--gradescope-autograder",
        type=Path,
        metavar="OUT.zip",
        help="build the lab's Gradescope autograder zip instead of grading",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: grade submissions, write the CSV and the feedback files."""
    args_parser = parser()
    args = args_parser.parse_args(argv)
    if args.lab not in available_labs():
        args_parser.error(f"no rubric for lab {args.lab!r}; labs: {', '.join(available_labs())}")
    if args.gradescope_autograder is not None:
        from labcore.grading.gradescope import build_autograder

        try:
            built = build_autograder(
                args.lab,
                args.gradescope_autograder,
                cell_timeout=args.timeout,
                total_timeout=args.total_timeout,
                memory_mb=args.memory_mb,
                seed=args.seed,
            )
        except ValueError as err:
            args_parser.error(str(err))
        print(f"wrote {built}: upload it as the autograder of a Gradescope programming assignment")
        return 0
    paths = expand(args.submissions)
    if not paths:
        args_parser.error("no notebook to grade")
    rubric = load_rubric(args.lab)
    feedback_dir = args.feedback_dir or args.out.parent / "feedback"
    if (args.canvas_roster is None) != (args.canvas_assignment is None):
        args_parser.error("--canvas-roster and --canvas-assignment go together")
    if args.canvas_roster is not None:
        from labcore.grading.canvas import read_canvas_roster

        try:  # a bad roster is an error before the grading, not after it
            read_canvas_roster(args.canvas_roster, args.canvas_key)
        except (OSError, ValueError) as err:
            args_parser.error(f"--canvas-roster: {err}")

    def report(done: int, total: int, grade: SubmissionGrade) -> None:
        """One progress line per graded submission."""
        print(
            f"[{done}/{total}] {grade.submission}: {points_text(grade.total)}/"
            f"{points_text(grade.max_total)} in {grade.seconds:.0f} s ({grade.status})",
            file=sys.stderr,
        )

    try:
        grades = grade_submissions(
            args.lab,
            paths,
            jobs=args.jobs,
            cell_timeout=args.timeout,
            total_timeout=args.total_timeout,
            memory_mb=args.memory_mb,
            seed=args.seed,
            isolation=args.isolation,
            network=args.allow_network,
            progress=report,
            protect=[args.out, feedback_dir, *filter(None, [args.canvas_roster])],
        )
    except ValueError as err:
        args_parser.error(str(err))
    write_csv(grades, rubric, args.out)
    for grade in grades:
        write_feedback(grade, feedback_dir)
    print(f"wrote {args.out} and {len(grades)} feedback files in {feedback_dir}/")
    if args.canvas_roster is not None:
        from labcore.grading.canvas import write_canvas_csv

        canvas = args.out.parent / "canvas.csv"
        try:
            export = write_canvas_csv(
                grades,
                rubric,
                canvas,
                assignment=args.canvas_assignment,
                roster=args.canvas_roster,
                key=args.canvas_key,
            )
        except ValueError as err:  # the gradebook and feedback are written already
            print(f"labcore.grade: no Canvas export: {err}", file=sys.stderr)
            return 1
        for line in export.report_lines():
            print(line, file=sys.stderr)
        print(f"wrote {canvas} for Canvas's gradebook import")
    return 0
