"""What a grading run writes: the CSV gradebook and one Markdown feedback file per submission.

Exports for other gradebooks live beside this module (:mod:`labcore.grading.gradescope`,
:mod:`labcore.grading.canvas`); all of them read only :class:`~labcore.grading.records.SubmissionGrade`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

from labcore.grading.records import SubmissionGrade
from labcore.rubrics import Rubric

__all__ = [
    "csv_cell",
    "feedback_filename",
    "feedback_markdown",
    "points_text",
    "write_csv",
    "write_feedback",
]


def feedback_filename(name: str) -> str:
    """A safe file name for a submission's feedback (no folders, no leading dot)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("/", "__")).lstrip(".") + ".md"


def points_text(value: float) -> str:
    """Points as the CSV and feedback show them: at most 2 decimals, no trailing zeros."""
    return f"{round(value, 2):g}"


def csv_cell(text: str) -> str:
    """Neutralise spreadsheet formulas in text that came from submissions (names, ids)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_csv(grades: Sequence[SubmissionGrade], rubric: Rubric, path: Path) -> None:
    """The gradebook: ``submission``, one column per exercise, ``total``, ``max_total``, ``status``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["submission", *[e.grade_id for e in rubric.exercises], "total", "max_total", "status"]
        )
        for grade in grades:
            points = {e.grade_id: e.points for e in grade.exercises}
            writer.writerow(
                [
                    csv_cell(grade.submission),
                    *[points_text(points.get(e.grade_id, 0.0)) for e in rubric.exercises],
                    points_text(grade.total),
                    points_text(grade.max_total),
                    csv_cell(grade.status),
                ]
            )


def _md(text: str) -> str:
    """Student-controlled text made safe for one line of Markdown."""
    text = " ".join(str(text).split())
    return text.replace("`", "'").replace("<", "&lt;").replace("|", "\\|")


def feedback_markdown(grade: SubmissionGrade) -> str:
    """The feedback file of one submission (Markdown): per exercise, per hidden case, and notes."""
    lines = [
        f"# Feedback on lab {grade.lab}: {_md(grade.submission)}",
        "",
        f"**Score: {points_text(grade.total)} / {points_text(grade.max_total)}**",
        "",
        f"Status: {_md(grade.status)}",
        "",
        "| exercise | function | points | result |",
        "|---|---|---|---|",
    ]
    for e in grade.exercises:
        lines.append(
            f"| {_md(e.title or e.function)} | `{e.function}` | {points_text(e.points)} / "
            f"{points_text(e.max_points)} | {_md(e.summary)} |"
        )
    for e in grade.exercises:
        lines += [
            "",
            f"## {_md(e.title or e.function)}: `{e.function}` ({points_text(e.points)} / "
            f"{points_text(e.max_points)})",
            "",
        ]
        if not e.cases:
            lines.append(f"- {_md(e.summary)}")
        for case in e.cases:
            mark = "passed" if case.passed else "FAILED"
            detail = f": {_md(case.message)}" if case.message else ""
            lines.append(f"- {mark}, {_md(case.name)}{detail}")
    if grade.notes or grade.cell_errors:
        lines += ["", "## What happened while running your notebook", ""]
        lines += [f"- {_md(n)}" for n in grade.notes]
        lines += [f"- cell {_md(e)}" for e in grade.cell_errors[:50]]
    if grade.flags:
        lines += [
            "",
            "## Flagged for review",
            "",
            "Your notebook seems to use labcore's own implementation of a graded function. This "
            "does not change the points above; your instructor may ask you about it.",
            "",
        ]
        lines += [f"- {_md(f)}" for f in grade.flags]
    lines += [
        "",
        "---",
        "Each exercise was tested right after its cell ran, by calling your function on hidden "
        "inputs in a fresh kernel and comparing the results with the reference in the grader.",
        "",
    ]
    return "\n".join(lines)


def write_feedback(grade: SubmissionGrade, directory: Path) -> Path:
    """Write ``<directory>/<submission>.md`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / feedback_filename(grade.submission)
    path.write_text(feedback_markdown(grade), encoding="utf-8")
    return path
