"""The grader's command line end to end: the Canvas export beside the gradebook, and its errors."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from submissions import lean_submission

from labcore.grade import main
from labcore.grading.canvas import CANVAS_STUDENT_COLUMNS
from labcore.rubrics import load_rubric

ROOT = Path(__file__).resolve().parents[1]
LAB = "00-function-approximation"


def roster(path: Path) -> Path:
    """A Canvas gradebook export with two students, alice and bob, and the lab's column."""
    with open(path, "w", newline="", encoding="utf-8-sig") as handle:
        csv.writer(handle).writerows(
            [
                [*CANVAS_STUDENT_COLUMNS, "Lab 0 (12345)"],
                ["    Points Possible", "", "", "", "", "12"],
                ["Doe, Alice", "101", "S001", "alice", "Section A", ""],
                ["Roe, Bob", "102", "S002", "bob", "Section A", ""],
            ]
        )
    return path


def test_canvas_flags_are_checked_before_any_grading(tmp_path, capsys):
    notebook = tmp_path / "alice.ipynb"
    shutil.copy(ROOT / "labs" / f"{LAB}.ipynb", notebook)
    out = tmp_path / "g.csv"
    with pytest.raises(SystemExit) as exit_info:
        main([LAB, str(notebook), "--out", str(out), "--canvas-roster", str(tmp_path / "r.csv")])
    assert exit_info.value.code == 2 and "go together" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("Name,Score\nalice,1\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main([LAB, str(notebook), "--out", str(out), "--canvas-roster", str(bad),
              "--canvas-assignment", "Lab 0 (12345)"])  # fmt: skip
    assert exit_info.value.code == 2 and "--canvas-roster" in capsys.readouterr().err
    assert not out.exists()  # nothing was graded


def test_the_command_line_writes_canvas_csv_beside_the_gradebook(tmp_path):
    """alice hands in the untouched lab (0 points); carol is not on the roster; bob hands in nothing."""
    submissions = tmp_path / "lab0"
    submissions.mkdir()
    blank = lean_submission(ROOT / "labs" / f"{LAB}.ipynb", ("setup",))  # imports and stubs only
    for who in ("alice", "carol"):
        nbformat.write(blank, submissions / f"{who}.ipynb")
    out = tmp_path / "grades" / "lab0.csv"
    cmd = [
        sys.executable, "-m", "labcore.grade", LAB, str(submissions), "--out", str(out),
        "--canvas-roster", str(roster(tmp_path / "roster.csv")),
        "--canvas-assignment", "Lab 0 (12345)", "--jobs", "2",
    ]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out.parent / "canvas.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [*CANVAS_STUDENT_COLUMNS, "Lab 0 (12345)"]
    assert rows[1][0].strip() == "Points Possible"
    assert float(rows[1][-1]) == load_rubric(LAB).max_total
    assert [(r[3], float(r[-1])) for r in rows[2:]] == [("alice", 0.0)]
    assert "'carol' matches no student" in run.stderr and "Roe, Bob" in run.stderr
