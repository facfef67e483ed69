"""The typed records that pass between the parts of the grader.

A worker grades one submission and hands a :class:`SubmissionGrade` (JSON, through a state file) to
the main process; the report writers read nothing else. :class:`WorkerSpec` is what the main process
tells a worker, :class:`CellOutcome` what running code in the kernel came to, and :class:`CaseStatus`
what the kernel-side harness (:mod:`labcore.grading.inkernel.harness`) recorded for one hidden case.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field

from labcore.rubrics import Rubric

__all__ = [
    "CaseOutcome",
    "CaseStatus",
    "CellOutcome",
    "ExerciseGrade",
    "SubmissionGrade",
    "WorkerSpec",
]


class CellOutcome(enum.Enum):
    """What running one piece of code in the kernel came to."""

    OK = "ok"  #: it ran to the end
    ERROR = "error"  #: it raised (the kernel is fine)
    TIMEOUT = "timeout"  #: it ran out of time, was interrupted, and the kernel answers again
    STUCK = "stuck"  #: it ran out of time and the kernel ignored the interrupt
    DEAD = "dead"  #: the kernel died


class CaseStatus(enum.Enum):
    """What the kernel-side harness recorded about one hidden case (``record["status"]``)."""

    OK = "ok"
    ERROR = "error"
    MISSING = "missing"
    NOT_CALLABLE = "not-callable"
    NOT_IMPLEMENTED = "not-implemented"


@dataclass
class CaseOutcome:
    """One hidden case of an exercise: its input's description, whether it passed, and why not."""

    name: str
    passed: bool
    message: str = ""


@dataclass
class ExerciseGrade:
    """The grade of one exercise: points earned, per-case outcomes and a one-line summary."""

    grade_id: str
    function: str
    max_points: float
    points: float = 0.0
    cases: list[CaseOutcome] = field(default_factory=list)
    summary: str = "not graded"
    graded: bool = False
    title: str = ""  #: what the student sees, e.g. "Exercise 3: one attention head, cell 14"


@dataclass
class SubmissionGrade:
    """Everything the grader found about one submission.

    Attributes:
        submission: the name used in the CSV and for the feedback file.
        path: the notebook that was graded.
        lab: the lab's stem.
        exercises: one grade per rubric exercise, in rubric order.
        notes: what went wrong while running it (timeouts, kernel death, limits, ...).
        flags: references to labcore's reference implementation (for review, no penalty).
        cell_errors: ``"<cell> raised <error>"`` for each of the student's cells that raised.
        seconds: wall-clock time spent on it.
        finished: whether the worker got to the end (False if it was killed or crashed).
        isolation: how its kernel was isolated (``uid+namespace``, ``uid``, ``namespace`` or
            ``none``; see ``--isolation``).
    """

    submission: str
    path: str
    lab: str
    exercises: list[ExerciseGrade]
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    cell_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    finished: bool = False
    isolation: str = ""

    @property
    def total(self) -> float:
        """Points earned, over all exercises."""
        return round(sum(e.points for e in self.exercises), 2)

    @property
    def max_total(self) -> float:
        """Points of a perfect submission."""
        return round(sum(e.max_points for e in self.exercises), 2)

    @property
    def status(self) -> str:
        """``ok``, or the notes and flags joined by ``; `` (one line, for the CSV)."""
        parts = list(self.notes)
        if self.flags:
            parts.append("flagged: references labcore's reference implementation (see feedback)")
        return "; ".join(parts) or "ok"

    def exercise(self, grade_id: str) -> ExerciseGrade:
        """The grade of the exercise ``grade_id``."""
        return next(e for e in self.exercises if e.grade_id == grade_id)

    def to_json(self) -> str:
        """Serialise (the worker hands its progress to the main process this way)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SubmissionGrade:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        exercises = [
            ExerciseGrade(**{**e, "cases": [CaseOutcome(**c) for c in e["cases"]]})
            for e in data.pop("exercises")
        ]
        return cls(exercises=exercises, **data)

    @classmethod
    def empty(cls, submission: str, path: str, rubric: Rubric) -> SubmissionGrade:
        """A grade with zero points for every exercise of ``rubric``."""
        return cls(
            submission=submission,
            path=path,
            lab=rubric.lab,
            exercises=[ExerciseGrade(e.grade_id, e.function, e.points) for e in rubric.exercises],
        )


@dataclass
class WorkerSpec:
    """What the main process tells the worker that grades one submission (a JSON file).

    Attributes:
        lab: the lab's stem.
        name: the submission's name (CSV, feedback).
        path: the notebook to grade.
        state: where the worker saves its :class:`SubmissionGrade` after every step.
        box: the kernel's folder (its home; ``work/`` holds the copy of the notebook).
        channels: the folder of the kernel's connection file, sockets and hidden-case files.
        specs: the folder of the kernel's kernel spec.
        kernel_log: where the kernel's own output goes.
        cases: the hidden cases built by the main process (:func:`labcore.grading.transport.save_cases`).
        token: a random mark in the kernel's environment (cleanup without a uid).
        uid: the kernel's own uid, or None.
        prefix: the command line before the kernel's (limits and sandbox).
        cell_timeout, total_timeout: seconds per cell, per submission.
        memory_mb: the kernel's address-space limit (for messages).
        seed: seed of the hidden inputs.
        baseline: what the reference-use detector finds in the untouched lab (subtracted).
    """

    lab: str
    name: str
    path: str
    state: str
    box: str
    channels: str
    specs: str
    kernel_log: str
    cases: str
    token: str
    uid: int | None
    prefix: list[str]
    cell_timeout: float
    total_timeout: float
    memory_mb: int
    seed: int
    baseline: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """Serialise for the worker process."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))
