"""The grader's command line: the Canvas options are checked before any grading.

The export itself is tested through the command line in ``tests/test_grade.py`` (the batch).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from labcore.grade import main
from labcore.grading.canvas import CANVAS_STUDENT_COLUMNS

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
