"""Batch autograder: grade many lab submissions against hidden tests, safely, in one command.

Usage::

    python -m labcore.grade 00-function-approximation submissions/*.ipynb \\
        --out grades.csv --feedback-dir feedback --jobs 4

``<lab>`` is the lab's file stem in ``labs/``; its hidden tests and points are a rubric in
:mod:`labcore.rubrics`. The result is a CSV gradebook (``submission``, one column per exercise
``grade_id``, ``total``, ``max_total``, ``status``) and one Markdown feedback file per submission.
``--gradescope-autograder OUT.zip`` builds the lab's Gradescope autograder instead.

The grader lives in :mod:`labcore.grading`; this module is its command line and re-exports its
public API. Read the package in this order: records, detect, sandbox, kernel, transport, worker,
pool, report, cli (and the kernel-side modules in ``labcore/grading/inkernel/``).
"""

from __future__ import annotations

import sys

from labcore.grading import (
    CaseOutcome,
    ExerciseGrade,
    SubmissionGrade,
    find_reference_use,
    grade_submissions,
    submission_names,
    write_csv,
    write_feedback,
)
from labcore.grading.cli import main

__all__ = [
    "CaseOutcome",
    "ExerciseGrade",
    "SubmissionGrade",
    "find_reference_use",
    "grade_submissions",
    "main",
    "submission_names",
    "write_csv",
    "write_feedback",
]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
