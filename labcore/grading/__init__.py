"""The batch grader, in the order a newcomer reads it.

- :mod:`~labcore.grading.records`: the typed records passed between the parts (grades, outcomes).
- :mod:`~labcore.grading.report`: the CSV gradebook and the Markdown feedback files.

``python -m labcore.grade`` is the command line.
"""

from labcore.grading.records import (
    CaseOutcome,
    CaseStatus,
    CellOutcome,
    ExerciseGrade,
    SubmissionGrade,
)
from labcore.grading.report import feedback_markdown, write_csv, write_feedback

__all__ = [
    "CaseOutcome",
    "CaseStatus",
    "CellOutcome",
    "ExerciseGrade",
    "SubmissionGrade",
    "feedback_markdown",
    "write_csv",
    "write_feedback",
]
