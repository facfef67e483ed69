"""A CSV that Canvas's gradebook imports (Grades, Import): one column of points for one assignment.

The layout is the one Canvas's own gradebook export has, read by its importer
(``app/models/gradebook_importer.rb`` in instructure/canvas-lms; the instructor's view:
https://teaching.resources.osu.edu/toolsets/carmencanvas/guides/calculating-final-grades/import-csv-file-carmen-grades
and https://nemogb-dev.github.io/nemogb-r/articles/detailed-canvas-export-info.html):

- the header row starts with the student columns ``Student, ID, SIS User ID, SIS Login ID,
  Section``; every later column is an assignment, named ``Title (assignment id)`` (the id is in the
  assignment's URL; a column whose id Canvas does not know is matched by title, else it becomes
  a new assignment). Calculated columns (``Current Score``, ``Final Grade``, ...) are ignored;
- a row whose first cell says ``Points Possible`` is not a student: it holds each assignment's
  points;
- each other row is a student, found by ``ID`` (Canvas's user id), else by ``SIS User ID``, else
  ``SIS Login ID``, else by name. Students absent from the file keep their grades.

:func:`write_canvas_csv` copies the student columns from a roster, the gradebook CSV that
Canvas exports (Grades, Export), and matches each submission to the student whose ``key`` column
(``SIS Login ID`` unless told otherwise) equals the submission's first path component (``alice``
for ``alice/00-function-approximation``), ignoring case. Submissions that match nobody and students
without a submission are left out of the file and returned in :class:`CanvasExport`, never dropped
silently.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labcore.grading.records import SubmissionGrade
from labcore.grading.report import csv_cell, points_text
from labcore.rubrics import Rubric

__all__ = [
    "CANVAS_STUDENT_COLUMNS",
    "DEFAULT_KEY",
    "CanvasExport",
    "read_canvas_roster",
    "submission_student",
    "write_canvas_csv",
]

#: The student columns of Canvas's gradebook CSV, in the order its importer expects.
CANVAS_STUDENT_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
#: Roster columns without which Canvas cannot place a row (the SIS ones may be absent or empty).
REQUIRED_ROSTER_COLUMNS = ("Student", "ID", "Section")
DEFAULT_KEY = "SIS Login ID"
POINTS_POSSIBLE = "Points Possible"
#: Headers Canvas reads as student information or as calculated columns, never as an assignment.
_NOT_ASSIGNMENTS = re.compile(
    r"^(Student|LastName|FirstName|ID|SIS User ID|SIS Login ID|Section|Integration ID|Root Account)$"
    r"|Current (Score|Points|Grade)|Final (Score|Points|Grade)|Override (Score|Grade|Status)"
)
#: Rows of a Canvas export that mark muted or manually posted assignments (no student data).
_POSTING_ROW = re.compile(r"^\s*(Muted|Manual Posting.*)?\s*$", re.IGNORECASE)


@dataclass
class CanvasExport:
    """What :func:`write_canvas_csv` wrote and what it could not match.

    Attributes:
        path: the CSV written.
        assignment: its assignment column's header.
        key: the roster column submissions were matched against.
        matched: submission name -> the ``key`` value of its student, in roster order.
        unmatched_submissions: submission names that match no student (not in the file).
        students_without_submission: ``"<Student> (<key> <value>)"`` for each roster student that
            no submission matched (not in the file, so Canvas keeps what they have).
    """

    path: Path
    assignment: str
    key: str
    matched: dict[str, str] = field(default_factory=dict)
    unmatched_submissions: list[str] = field(default_factory=list)
    students_without_submission: list[str] = field(default_factory=list)

    def report_lines(self) -> list[str]:
        """One line for the file, then one per unmatched submission and per student without one."""
        lines = [
            f"{self.path}: {len(self.matched)} student(s) for {self.assignment!r}, matched by "
            f"{self.key!r}"
        ]
        lines += [
            f"  submission {name!r} matches no student's {self.key!r}: not in {self.path.name}"
            for name in self.unmatched_submissions
        ]
        lines += [
            f"  student {who} has no submission: not in {self.path.name} (Canvas keeps their grade)"
            for who in self.students_without_submission
        ]
        return lines


def submission_student(name: str) -> str:
    """The part of a submission's name that identifies the student: its first path component."""
    return name.split("/", 1)[0]


def _normalise(value: str) -> str:
    return value.strip().casefold()


def read_canvas_roster(roster: Path, key: str = DEFAULT_KEY) -> list[dict[str, str]]:
    """The students of a Canvas gradebook export, as ``{column: value}`` in file order.

    Skips the ``Points Possible`` row and the rows that mark muted or manually posted assignments.
    Reads UTF-8 with or without a byte-order mark. Call it before grading to check the roster.

    Raises:
        ValueError: the file has no header, lacks one of ``Student``, ``ID``, ``Section``, has no
            column ``key``, or two students share a ``key`` value (case ignored).
    """
    with open(roster, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"roster {roster}: the file is empty; expected Canvas's gradebook export")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in REQUIRED_ROSTER_COLUMNS if name not in header]
    if missing:
        raise ValueError(
            f"roster {roster}: no column {', '.join(map(repr, missing))}; expected Canvas's "
            f"gradebook export (Grades, Export), whose columns start with "
            f"{', '.join(CANVAS_STUDENT_COLUMNS)}; got {header}"
        )
    if key not in header:
        raise ValueError(
            f"roster {roster}: unknown key column {key!r}; choose one of its columns, e.g. "
            f"'SIS Login ID' or 'SIS User ID'; got {header}"
        )
    students: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if POINTS_POSSIBLE in row[0] or all(_POSTING_ROW.match(cell) for cell in row):
            continue
        student = dict(zip(header, row + [""] * (len(header) - len(row)), strict=False))
        value = _normalise(student[key])
        if value and value in seen:
            raise ValueError(
                f"roster {roster}, line {line}: {key} {student[key]!r} is also {seen[value]}'s; "
                f"the key column must identify one student"
            )
        if value:
            seen[value] = student["Student"]
        students.append(student)
    return students


def write_canvas_csv(
    grades: Sequence[SubmissionGrade],
    rubric: Rubric,
    path: Path,
    *,
    assignment: str,
    roster: Path,
    key: str = DEFAULT_KEY,
) -> CanvasExport:
    """Write the CSV that Canvas imports: the roster's matched students and their total points.

    Args:
        grades: graded submissions of ``rubric``'s lab; each is matched by the first path component
            of its name (see :func:`submission_student`).
        rubric: the lab's rubric; its ``max_total`` is the ``Points Possible`` of the assignment.
        path: the CSV to write (folders are created).
        assignment: the assignment column's header as Canvas names it, ``"Title (id)"``, e.g.
            ``"Lab 0 (12345)"`` (copy it from the header of the roster).
        roster: Canvas's gradebook export (see :func:`read_canvas_roster`).
        key: the roster column that holds the submissions' names.

    Returns:
        What was written, and what matched nobody (see :class:`CanvasExport`).

    Raises:
        ValueError: a bad roster or key (see :func:`read_canvas_roster`), an empty assignment name
            or one Canvas would not read as an assignment, a grade of another lab, or two
            submissions of the same student.
    """
    assignment = assignment.strip()
    if not assignment or "\n" in assignment or "\r" in assignment:
        raise ValueError(
            f"assignment: expected Canvas's column name, 'Title (id)'; got {assignment!r}"
        )
    if _NOT_ASSIGNMENTS.search(assignment):
        raise ValueError(
            f"assignment: {assignment!r} is a column Canvas reads as student information or a "
            f"calculated score, not an assignment; use the assignment's own column name"
        )
    other_labs = sorted({g.lab for g in grades if g.lab != rubric.lab})
    if other_labs:
        raise ValueError(f"grades: expected grades of lab {rubric.lab!r}; got some of {other_labs}")
    students = read_canvas_roster(roster, key)

    by_key: dict[str, SubmissionGrade] = {}
    unmatched: list[str] = []
    known = {_normalise(s[key]) for s in students} - {""}
    for grade in grades:
        value = _normalise(submission_student(grade.submission))
        if value not in known:
            unmatched.append(grade.submission)
        elif value in by_key:
            raise ValueError(
                f"grades: submissions {by_key[value].submission!r} and {grade.submission!r} both "
                f"belong to {key} {submission_student(grade.submission)!r}; keep one per student"
            )
        else:
            by_key[value] = grade

    export = CanvasExport(
        path=path, assignment=assignment, key=key, unmatched_submissions=unmatched
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CANVAS_STUDENT_COLUMNS, csv_cell(assignment)])
        blanks = [""] * (len(CANVAS_STUDENT_COLUMNS) - 1)
        writer.writerow([POINTS_POSSIBLE, *blanks, points_text(rubric.max_total)])
        for student in students:
            grade = by_key.get(_normalise(student[key]))
            if grade is None:
                who = f"{key} {student[key]}" if student[key].strip() else f"no {key}"
                export.students_without_submission.append(f"{student['Student']} ({who})")
                continue
            export.matched[grade.submission] = student[key]
            writer.writerow(
                [
                    *[csv_cell(student.get(column, "")) for column in CANVAS_STUDENT_COLUMNS],
                    points_text(grade.total),
                ]
            )
    return export
