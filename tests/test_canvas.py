"""The Canvas export: grades built in memory (no kernel), a roster as Canvas exports it, read back.

The layout checked is the one Canvas's gradebook importer reads (see :mod:`labcore.grading.canvas`):
student columns ``Student, ID, SIS User ID, SIS Login ID, Section``, one assignment column, a
``Points Possible`` row, then one row per student.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from labcore.grading.canvas import (
    CANVAS_STUDENT_COLUMNS,
    read_canvas_roster,
    submission_student,
    write_canvas_csv,
)
from labcore.grading.records import SubmissionGrade
from labcore.rubrics import Exercise, Rubric

ASSIGNMENT = "Lab 0 (12345)"
RUBRIC = Rubric(
    lab="00-function-approximation",
    exercises=(
        Exercise("ex-a", "a", 4.0, make_cases=lambda seed: [], score=lambda c, v, e: None),
        Exercise("ex-b", "b", 3.5, make_cases=lambda seed: [], score=lambda c, v, e: None),
    ),
)

# A roster as Canvas's gradebook export writes it: BOM, the Points Possible row, a posting-policy
# row, calculated columns, an earlier assignment, the Test Student, and a name that is a formula.
ROSTER_ROWS = [
    [*CANVAS_STUDENT_COLUMNS, "Lab 0 (12345)", "Current Score", "Final Score"],
    ["    Points Possible", "", "", "", "", "7.5", "(read only)", "(read only)"],
    ["", "", "", "", "", "Manual Posting", "", ""],
    ["Doe, Alice", "101", "S001", "alice", "Section A", "", "", ""],
    ["Roe, Bob", "102", "S002", "Bob", "Section A", "", "", ""],
    ['=HYPERLINK("http://x","y")', "103", "S003", "mallory", "-Section B", "", "", ""],
    ["Poe, Dave", "104", "S004", "dave", "Section B", "", "", ""],
    ["Student, Test", "105", "", "", "Section A", "", "", ""],
]


def _roster(tmp_path: Path, rows: list[list[str]] = ROSTER_ROWS) -> Path:
    path = tmp_path / "roster.csv"
    with open(path, "w", newline="", encoding="utf-8-sig") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _grade(name: str, a: float, b: float, lab: str = RUBRIC.lab) -> SubmissionGrade:
    grade = SubmissionGrade.empty(name, f"/submissions/{name}.ipynb", RUBRIC)
    grade.lab = lab
    grade.exercise("ex-a").points = a
    grade.exercise("ex-b").points = b
    return grade


GRADES = [
    _grade("alice/00-function-approximation", 4.0, 3.5),
    _grade("bob/00-function-approximation", 1.25, 0.0),  # roster says "Bob": case is ignored
    _grade("mallory/00-function-approximation", 2.0, 3.5),
    _grade("carol/00-function-approximation", 4.0, 0.0),  # not on the roster
]


def _read(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_layout_points_possible_and_scores(tmp_path: Path) -> None:
    out = tmp_path / "grades" / "canvas.csv"
    export = write_canvas_csv(GRADES, RUBRIC, out, assignment=ASSIGNMENT, roster=_roster(tmp_path))
    rows = _read(out)
    assert rows[0] == [*CANVAS_STUDENT_COLUMNS, ASSIGNMENT]
    assert rows[1][0] == "Points Possible"
    assert rows[1][1:5] == ["", "", "", ""]
    assert float(rows[1][5]) == RUBRIC.max_total == 7.5
    students = rows[2:]
    assert all(len(row) == len(CANVAS_STUDENT_COLUMNS) + 1 for row in students)
    by_id = {row[1]: row for row in students}
    assert list(by_id) == ["101", "102", "103"]  # roster order, matched students only
    totals = {"101": GRADES[0].total, "102": GRADES[1].total, "103": GRADES[2].total}
    for canvas_id, total in totals.items():
        assert float(by_id[canvas_id][-1]) == total
    assert by_id["101"][:5] == ["Doe, Alice", "101", "S001", "alice", "Section A"]
    assert export.path == out
    assert export.matched == {
        "alice/00-function-approximation": "alice",
        "bob/00-function-approximation": "Bob",
        "mallory/00-function-approximation": "mallory",
    }


def test_unmatched_both_ways_are_reported(tmp_path: Path) -> None:
    out = tmp_path / "canvas.csv"
    export = write_canvas_csv(GRADES, RUBRIC, out, assignment=ASSIGNMENT, roster=_roster(tmp_path))
    assert export.unmatched_submissions == ["carol/00-function-approximation"]
    assert export.students_without_submission == [
        "Poe, Dave (SIS Login ID dave)",
        "Student, Test (no SIS Login ID)",
    ]
    written = {row[0] for row in _read(out)}
    assert "Poe, Dave" not in written and "Student, Test" not in written
    report = "\n".join(export.report_lines())
    for name in ("carol/00-function-approximation", "Poe, Dave", "Student, Test"):
        assert name in report


def test_formulas_are_neutralised(tmp_path: Path) -> None:
    out = tmp_path / "canvas.csv"
    write_canvas_csv(GRADES, RUBRIC, out, assignment="=cmd|' /C calc'!A0", roster=_roster(tmp_path))
    rows = _read(out)
    assert rows[0][-1] == "'=cmd|' /C calc'!A0"
    mallory = next(row for row in rows if row[1] == "103")
    assert mallory[0] == "'" + ROSTER_ROWS[5][0]
    assert mallory[4] == "'-Section B"
    assert not any(cell[:1] in "=+-@" for row in rows for cell in row if cell)


def test_other_key_column(tmp_path: Path) -> None:
    grades = [_grade("S002", 4.0, 3.5), _grade("s004/lab", 0.0, 0.0)]
    export = write_canvas_csv(
        grades,
        RUBRIC,
        tmp_path / "canvas.csv",
        assignment=ASSIGNMENT,
        roster=_roster(tmp_path),
        key="SIS User ID",
    )
    assert export.matched == {"S002": "S002", "s004/lab": "S004"}
    assert export.unmatched_submissions == []
    assert len(export.students_without_submission) == 3


def test_roster_skips_non_student_rows(tmp_path: Path) -> None:
    students = read_canvas_roster(_roster(tmp_path))
    assert [s["ID"] for s in students] == ["101", "102", "103", "104", "105"]


def test_submission_student_is_the_first_path_component() -> None:
    assert submission_student("alice/00-function-approximation") == "alice"
    assert submission_student("alice") == "alice"


@pytest.mark.parametrize(
    ("rows", "key", "message"),
    [
        ([["Student", "ID", "SIS Login ID"], ["A", "1", "a"]], "SIS Login ID", "'Section'"),
        ([["Name", "Login"], ["A", "a"]], "Login", "'Student', 'ID', 'Section'"),
        (ROSTER_ROWS, "Email", "unknown key column 'Email'"),
        (
            [*ROSTER_ROWS, ["Doe, Alice 2", "106", "S006", "ALICE", "A", "", "", ""]],
            "SIS Login ID",
            "'ALICE' is also Doe, Alice's",
        ),
        ([], "SIS Login ID", "empty"),
    ],
)
def test_bad_roster_raises(tmp_path: Path, rows: list[list[str]], key: str, message: str) -> None:
    with pytest.raises(ValueError, match="roster") as error:
        write_canvas_csv(
            GRADES,
            RUBRIC,
            tmp_path / "canvas.csv",
            assignment=ASSIGNMENT,
            roster=_roster(tmp_path, rows),
            key=key,
        )
    assert message in str(error.value)
    assert not (tmp_path / "canvas.csv").exists()


@pytest.mark.parametrize("assignment", ["", "  ", "Lab 0\n(1)", "Current Score", "SIS Login ID"])
def test_bad_assignment_raises(tmp_path: Path, assignment: str) -> None:
    with pytest.raises(ValueError, match="assignment"):
        write_canvas_csv(
            GRADES, RUBRIC, tmp_path / "c.csv", assignment=assignment, roster=_roster(tmp_path)
        )


def test_grades_of_another_lab_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="01-mlp"):
        write_canvas_csv(
            [*GRADES, _grade("dave", 1, 1, lab="01-mlp")],
            RUBRIC,
            tmp_path / "c.csv",
            assignment=ASSIGNMENT,
            roster=_roster(tmp_path),
        )


def test_two_submissions_of_one_student_raise(tmp_path: Path) -> None:
    grades = [_grade("alice/lab", 1, 1), _grade("alice/lab-v2", 2, 2)]
    with pytest.raises(ValueError, match="alice/lab-v2"):
        write_canvas_csv(
            grades, RUBRIC, tmp_path / "c.csv", assignment=ASSIGNMENT, roster=_roster(tmp_path)
        )
