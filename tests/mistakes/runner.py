"""Run a catalogue entry through the grader's rubric in this process, as the grader would.

The grader sends each hidden input to the student's kernel, where its own kernel-side harness
(``labcore.grade._HARNESS``) calls the function and writes a record that the grader scores. Here the
same harness runs with ``exec`` on the entry's namespace (no kernel, no sandbox), and the same
``_Worker._score`` judges the record, so a catalogue test sees exactly the grader's verdict.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from labcore.grade import _HARNESS, MAX_TENSOR_ELEMENTS, SubmissionGrade, _read_record, _Worker
from labcore.rubrics import HiddenCase, Rubric

_CASES: dict[tuple[str, str, int], list[HiddenCase]] = {}


def rubric_points(
    rubric: Rubric, function: str, namespace: dict[str, Any], *, seed: int = 0
) -> tuple[float, list[str]]:
    """The points that ``namespace[function]`` earns on the hidden cases of ``seed``, and the
    failure messages (``"<case>: <message>"``). ``namespace`` plays the student's kernel: a later
    exercise finds the earlier functions it calls there."""
    exercise = next(e for e in rubric.exercises if e.function == function)
    key = (rubric.lab, function, seed)
    if key not in _CASES:
        _CASES[key] = list(exercise.make_cases(seed))
    cases = _CASES[key]
    worker = _Worker.__new__(_Worker)
    worker.grade = SubmissionGrade.empty("x", "x", rubric)
    messages = []
    with tempfile.TemporaryDirectory() as folder:
        in_path, out_path = Path(folder) / "in.pt", Path(folder) / "out.pt"
        for case in cases:
            torch.save(case.inputs, in_path)
            constants: dict[str, Any] = {
                "NONCE": "n0", "IN_PATH": str(in_path), "OUT_PATH": str(out_path),
                "NAME": function, "CALL_SOURCE": exercise.call_source,
                "MAX_ELEMENTS": MAX_TENSOR_ELEMENTS, "__labcore_ns": namespace,
            }  # fmt: skip
            exec(_HARNESS, constants)  # the grader's own kernel-side code
            outcome = worker._score(exercise, case, _read_record(out_path, "n0"))
            if not outcome.passed:
                messages.append(f"{case.name}: {outcome.message}")
    return exercise.points * (len(cases) - len(messages)) / len(cases), messages
