"""How hidden cases and their results travel between the grader and a kernel.

The main process builds every hidden case once (:func:`save_cases`); a worker writes one case's
input to a file (:func:`write_input`), sends the kernel :func:`harness_cell` (the kernel-side
:mod:`~labcore.grading.inkernel.harness` with its arguments), and reads the kernel's record back
with :func:`read_record`: no symlinks, a size cap, weights-only unpickling, the case's nonce.
:func:`decode` turns the record's plain values back into what the rubric's scorer expects.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

import torch

from labcore.grading.inkernel import source
from labcore.rubrics import Exercise, HiddenCase, Opaque, Rubric, TensorResult

__all__ = [
    "MAX_RESULT_BYTES",
    "MAX_TENSOR_ELEMENTS",
    "decode",
    "harness_cell",
    "load_cases",
    "read_record",
    "save_cases",
    "write_input",
]

MAX_RESULT_BYTES = 64 * 2**20  # a hidden case's result file
MAX_TENSOR_ELEMENTS = 4_000_000  # a returned tensor larger than this is not transported


def harness_cell(nonce: str, in_path: Path, out_path: Path, exercise: Exercise) -> str:
    """The code injected into the kernel for one hidden case (one line).

    It runs :func:`labcore.grading.inkernel.harness.run` in a fresh namespace that holds only the
    student's namespace (``__labcore_ns``), so names the student shadowed do not matter.
    """
    call = (
        f"\nrun(__labcore_ns, {nonce!r}, {str(in_path)!r}, {str(out_path)!r}, "
        f"{exercise.function!r}, {exercise.call_source!r}, {MAX_TENSOR_ELEMENTS})\n"
    )
    code = source("harness") + call
    return f'exec({code!r}, {{"__labcore_ns": globals(), "__name__": "labcore_harness"}})'


def write_input(path: Path, inputs: Any) -> None:
    """Save one case's inputs at ``path``, a new file (never through a link), readable by the kernel."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        torch.save(inputs, handle)
    os.chmod(path, 0o644)


def decode(value: Any, depth: int = 0) -> Any:
    """Turn a record loaded with ``weights_only=True`` into plain values, TensorResult, Opaque."""
    if depth > 10:
        return Opaque("nested value")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        return TensorResult(value.detach())
    if isinstance(value, list | tuple):
        items = [decode(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        if isinstance(value.get("__tensor__"), torch.Tensor):
            return TensorResult(
                tensor=value["__tensor__"].detach(),
                requires_grad=bool(value.get("requires_grad")),
                device=str(value.get("device", "cpu")),
                type_name=str(value.get("type", "torch.Tensor")),
            )
        if isinstance(value.get("__dict__"), list):
            out: dict[str, Any] = {}
            for item in value["__dict__"]:
                if isinstance(item, list | tuple) and len(item) == 2:
                    out[str(item[0])] = decode(item[1], depth + 1)
            return out
        if "__object__" in value:
            return Opaque(str(value["__object__"])[:200], str(value.get("repr", ""))[:200])
    return Opaque(type(value).__name__)


def read_record(path: Path, nonce: str) -> dict[str, Any] | None:
    """Load a kernel's result file safely: no symlinks, a size cap, weights-only unpickling."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or not 0 < info.st_size <= MAX_RESULT_BYTES:
            return None
        data = handle.read(MAX_RESULT_BYTES + 1)
    try:
        record = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception:  # anything unreadable is simply no result
        return None
    if not isinstance(record, dict) or record.get("nonce") != nonce:
        return None
    return record


def save_cases(rubric: Rubric, seed: int, path: Path) -> None:
    """Build every hidden case once (reference results included) and save them for the workers."""
    cases = {
        e.grade_id: [
            {"name": c.name, "inputs": c.inputs, "expected": c.expected} for c in e.make_cases(seed)
        ]
        for e in rubric.exercises
    }
    torch.save(cases, path)


def load_cases(path: Path) -> dict[str, list[HiddenCase]]:
    """Inverse of :func:`save_cases` (weights-only: tensors, numbers, strings, containers)."""
    data = torch.load(path, weights_only=True, map_location="cpu")
    return {
        grade_id: [HiddenCase(c["name"], c["inputs"], c["expected"]) for c in cases]
        for grade_id, cases in data.items()
    }
