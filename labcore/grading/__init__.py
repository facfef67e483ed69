"""The batch grader (``python -m labcore.grade``), in the order a newcomer reads it.

- :mod:`~labcore.grading.records`: the typed records passed between the parts (grades, outcomes,
  the worker's spec).
- :mod:`~labcore.grading.detect`: what is read off a notebook before it runs (exercise cells, cell
  labels, use of labcore's reference implementation).
- :mod:`~labcore.grading.sandbox`: each kernel's isolation (bubblewrap) and resource limits.
- :mod:`~labcore.grading.kernel`: one sandboxed kernel (a jupyter_client provisioner, nbclient).
- :mod:`~labcore.grading.transport`: hidden cases in, results out, safely.
- :mod:`~labcore.grading.inkernel`: the code that runs inside the kernel (real modules, sent as source).
- :mod:`~labcore.grading.worker`: grades one submission, in a process of its own.
- :mod:`~labcore.grading.pool`: the main process: workers, ``jobs`` at a time, and the cleanup.
- :mod:`~labcore.grading.report`: the CSV gradebook and the feedback files;
  :mod:`~labcore.grading.gradescope` and :mod:`~labcore.grading.canvas`: exports.
- :mod:`~labcore.grading.cli`: the command line.
"""

from labcore.grading.detect import find_reference_use
from labcore.grading.pool import grade_submissions, submission_names
from labcore.grading.records import (
    CaseOutcome,
    CaseStatus,
    CellOutcome,
    ExerciseGrade,
    SubmissionGrade,
    WorkerSpec,
)
from labcore.grading.report import feedback_markdown, write_csv, write_feedback

__all__ = [
    "CaseOutcome",
    "CaseStatus",
    "CellOutcome",
    "ExerciseGrade",
    "SubmissionGrade",
    "WorkerSpec",
    "feedback_markdown",
    "find_reference_use",
    "grade_submissions",
    "submission_names",
    "write_csv",
    "write_feedback",
]
