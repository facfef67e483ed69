"""Rubrics of the batch autograder: the hidden tests and the points of every lab.

A rubric belongs to one lab (``labs/<stem>.ipynb``) and lists its exercises. Each
:class:`Exercise` names the exercise cell (``grade_id``, the cell id that ``labcore.assign`` copies
into the cell's nbgrader metadata), the function the statement asks for, its points, and two
grader-side functions:

* ``make_cases(seed)`` builds the hidden cases: the inputs sent to the student's kernel (tensors,
  numbers, strings, lists and dicts only, so that the kernel can load them with
  ``torch.load(weights_only=True)``) and whatever the comparison needs (the expected result,
  computed here with labcore's reference implementation, never sent to the kernel);
* ``score(case, value, extra)`` compares what the student's function returned with the expected
  result and returns ``None`` (the case passed) or a message for the student's feedback: which
  input, what was expected, what came, and a hint -- never the solution code.

The student's kernel only *calls* the function and ships back its raw result (see
:mod:`labcore.grade`); ``value`` and ``extra`` arrive here decoded into plain Python values,
:class:`TensorResult` (a tensor with what the kernel saw of it) and :class:`Opaque` (anything the
grader refuses to transport). Points are awarded per case: an exercise earns
``points * passed / n_cases``.

How the kernel calls the function is ``call_source``: Python source that defines
``call(fn, spec) -> (value, extra)``. It runs in the student's kernel, so it must not be trusted
for anything but running the function; the default calls ``fn(*spec["args"], **spec["kwargs"])``
and reports which tensor arguments the function modified in place.

Adding a lab: write ``labcore/rubrics/<topic>.py`` defining ``RUBRIC`` and register it in
:data:`RUBRICS`; ``tests/test_grade.py`` checks that every rubric matches its lab's exercise cells.
"""

from __future__ import annotations

import importlib
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import torch

__all__ = [
    "case_generator",
    "RUBRICS",
    "DEFAULT_CALL",
    "HiddenCase",
    "TensorResult",
    "Opaque",
    "Exercise",
    "Rubric",
    "load_rubric",
    "available_labs",
    "describe",
    "tensor_mismatch",
    "hook_left_message",
    "mutation_message",
    "plain",
    "judged_exercise",
]

#: lab stem (file name in labs/ without .ipynb) -> module defining ``RUBRIC``
RUBRICS: dict[str, str] = {
    "00-function-approximation": "labcore.rubrics.function_approximation",
    "01-mlp": "labcore.rubrics.mlp",
    "02-attention": "labcore.rubrics.attention",
    "03-attribution": "labcore.rubrics.attribution",
    "04-dynamics": "labcore.rubrics.dynamics",
    "05-transcoders": "labcore.rubrics.transcoder",
    "06-learning-dynamics": "labcore.rubrics.learning_dynamics",
}

#: Kernel-side source of the default way to call a graded function: positional ``args``, keyword
#: ``kwargs``, the argument positions listed in ``requires_grad`` made to require gradients, and
#: the positions of tensor arguments changed in place reported as ``extra["mutated"]``; with
#: ``spec["meta"]`` the function runs once more on ``meta`` copies of its tensors and the devices
#: of its results are reported as ``extra["meta"]`` (read by :func:`labcore.checks.rules.meta_rule`).
DEFAULT_CALL = """
def call(fn, spec):
    import torch

    from labcore.checks.rules import changed, copies, on_meta

    args = list(spec.get("args", ()))
    kwargs = dict(spec.get("kwargs", {}))
    for index in spec.get("requires_grad", ()):
        args[index] = args[index].detach().clone().requires_grad_(True)
    before = copies(args)
    value = fn(*args, **kwargs)
    extra = {"mutated": changed(args, before)}
    if spec.get("meta"):
        extra["meta"] = on_meta(fn, *args, **kwargs)
    return value, extra
"""


@dataclass(frozen=True)
class HiddenCase:
    """One hidden input of an exercise.

    Attributes:
        name: what the input is ("batch of 7, degree 3, float32"); shown in the feedback.
        inputs: what the kernel receives as ``spec`` (tensors, numbers, strings, lists, dicts).
        expected: grader-side data for ``score`` (never sent to the kernel). The main process
            builds the cases once and hands them to its workers with ``torch.save``, so
            ``inputs`` and ``expected`` hold only tensors, numbers, strings, lists, tuples and
            dicts.
    """

    name: str
    inputs: dict[str, Any]
    expected: Any = None


@dataclass(frozen=True)
class TensorResult:
    """A tensor returned by the student's function, as the kernel shipped it.

    Attributes:
        tensor: a detached CPU copy of the values.
        requires_grad: whether the returned tensor required gradients.
        device: the device it was on (``"cpu"`` in the grader's kernels).
        type_name: its class (``torch.Tensor``, or a subclass or ``numpy.ndarray``).
    """

    tensor: torch.Tensor
    requires_grad: bool = False
    device: str = "cpu"
    type_name: str = "torch.Tensor"


@dataclass(frozen=True)
class Opaque:
    """A value the grader does not transport (an object of another type); only its type name."""

    type_name: str
    text: str = ""


@dataclass(frozen=True)
class Exercise:
    """One graded exercise of a lab.

    Attributes:
        grade_id: the exercise cell's id (and nbgrader ``grade_id``), e.g. ``"ex-gaussian-nll"``.
        function: the name of the function the statement asks for.
        points: the points of the whole exercise, shared equally by its hidden cases.
        make_cases: ``seed -> cases`` (grader side; deterministic in ``seed``).
        score: ``(case, value, extra) -> None | message`` (grader side).
        call_source: kernel-side source defining ``call(fn, spec) -> (value, extra)``.
        case_timeout: seconds one hidden case may take in the kernel.
    """

    grade_id: str
    function: str
    points: float
    make_cases: Callable[[int], Sequence[HiddenCase]]
    score: Callable[[HiddenCase, Any, dict[str, Any]], str | None]
    call_source: str = DEFAULT_CALL
    case_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.function.isidentifier():
            raise ValueError(f"function must be a Python identifier, got {self.function!r}")
        if not (self.points > 0 and math.isfinite(self.points)):
            raise ValueError(f"points of {self.grade_id} must be positive, got {self.points}")
        if self.case_timeout <= 0:
            raise ValueError(f"case_timeout must be positive, got {self.case_timeout}")


@dataclass(frozen=True)
class Rubric:
    """The hidden tests and points of one lab.

    Attributes:
        lab: the lab's file stem in ``labs/``.
        exercises: in the order of the notebook.
        reference_modules: labcore modules holding the reference implementations of the graded
            functions (used by the grader's detector of reference use).
    """

    lab: str
    exercises: tuple[Exercise, ...]
    reference_modules: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        ids = [e.grade_id for e in self.exercises]
        if not ids:
            raise ValueError(f"rubric {self.lab!r} has no exercise")
        if len(set(ids)) != len(ids):
            raise ValueError(f"rubric {self.lab!r} repeats a grade_id: {ids}")

    @property
    def max_total(self) -> float:
        """The points of a perfect submission."""
        return float(sum(e.points for e in self.exercises))

    def exercise(self, grade_id: str) -> Exercise:
        """The exercise with this ``grade_id`` (``KeyError`` if there is none)."""
        for candidate in self.exercises:
            if candidate.grade_id == grade_id:
                return candidate
        raise KeyError(grade_id)


def available_labs() -> list[str]:
    """The lab stems that have a rubric."""
    return sorted(RUBRICS)


def load_rubric(lab: str) -> Rubric:
    """Import and return the rubric of ``lab`` (its file stem in ``labs/``).

    Raises:
        ValueError: if no rubric is registered for ``lab``, naming the labs that have one.
    """
    if lab not in RUBRICS:
        raise ValueError(
            f"no rubric for lab {lab!r}; labs with a rubric: {', '.join(available_labs())}"
        )
    rubric = importlib.import_module(RUBRICS[lab]).RUBRIC
    if not isinstance(rubric, Rubric) or rubric.lab != lab:
        raise ValueError(f"{RUBRICS[lab]}.RUBRIC must be a Rubric for lab {lab!r}")
    return rubric


# --------------------------------------------------------------------------- comparison helpers
def _values(tensor: torch.Tensor, limit: int = 6) -> str:
    """The first ``limit`` values of a tensor, formatted briefly."""
    flat = tensor.detach().flatten()
    shown = flat[:limit].tolist()
    text = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in shown)
    return f"[{text}{', ...' if flat.numel() > limit else ''}]"


def describe(value: Any) -> str:
    """A short description of a returned value: type, shape, dtype and a few values."""
    if isinstance(value, TensorResult):
        kind = "" if value.type_name == "torch.Tensor" else f"{value.type_name} "
        return (
            f"{kind}tensor(shape={tuple(value.tensor.shape)}, dtype={value.tensor.dtype}, "
            f"values={_values(value.tensor)})"
        )
    if isinstance(value, torch.Tensor):
        return describe(TensorResult(value))
    if isinstance(value, Opaque):
        return f"an object of type {value.type_name}"
    if isinstance(value, list | tuple):
        inner = ", ".join(describe(v) for v in value[:3])
        more = ", ..." if len(value) > 3 else ""
        return f"{type(value).__name__} of length {len(value)} ({inner}{more})"
    if isinstance(value, dict):
        return f"dict with keys {sorted(value)[:5]}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def tensor_mismatch(
    got: Any,
    expected: torch.Tensor,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    hint: str = "",
    what: str = "the result",
) -> str | None:
    """Compare a returned value with the expected tensor; ``None`` when they agree.

    Checks, each with its own message: that ``got`` is a ``torch.Tensor`` (not a NumPy array or
    a float), its shape, its dtype, then the values within ``atol + rtol * |expected|``.
    """
    suffix = f" Hint: {hint}" if hint else ""
    if not isinstance(got, TensorResult) or got.type_name == "numpy.ndarray":
        return f"{what} should be a torch.Tensor, got {describe(got)}.{suffix}"
    if tuple(got.tensor.shape) != tuple(expected.shape):
        return (
            f"{what} should have shape {tuple(expected.shape)}, got {tuple(got.tensor.shape)}."
            f"{suffix}"
        )
    if got.tensor.dtype != expected.dtype:
        return (
            f"{what} should have dtype {expected.dtype} (the input's), got {got.tensor.dtype}."
            f"{suffix}"
        )
    actual = got.tensor.to(expected.dtype)
    if not torch.allclose(actual, expected, atol=atol, rtol=rtol, equal_nan=True):
        finite = torch.isfinite(actual) & torch.isfinite(expected)
        error = (actual - expected).abs()[finite]
        worst = f"max abs error {error.max().item():.3g}" if error.numel() else "non-finite values"
        return (
            f"{what} differs ({worst}; tolerance {atol:g} + {rtol:g}*|expected|): expected "
            f"{_values(expected)}, got {_values(actual)}.{suffix}"
        )
    return None


def mutation_message(extra: dict[str, Any], names: Sequence[str]) -> str | None:
    """A message when the kernel reported in-place changes to tensor arguments, else ``None``."""
    mutated = extra.get("mutated") or []
    if not isinstance(mutated, list):
        return "the grader could not tell whether your function changed its inputs."
    changed = [names[i] if isinstance(i, int) and 0 <= i < len(names) else "?" for i in mutated]
    if changed:
        return (
            f"your function modified its input {', '.join(repr(n) for n in changed)} in place; "
            "work on a copy or use out-of-place operations."
        )
    return None


def hook_left_message(extra: dict[str, Any]) -> str | None:
    """A message when the kernel saw the model's output change after the function returned (a
    forward hook left attached), or could not tell; else ``None``."""
    if extra.get("hook_left") is not False:
        return (
            "the model's output changed after your function returned: a hook is still attached. "
            "Hint: model.run_with_hooks removes its hooks when it returns."
        )
    return None


def case_generator(lab: str, seed: int, exercise: int) -> torch.Generator:
    """The generator of one exercise's hidden inputs, derived from the grading ``seed``.

    ``(seed, lab, exercise)`` are mixed through NumPy's ``SeedSequence``, so every lab and exercise
    gets its own well-spread stream (small consecutive seeds give correlated first draws in
    torch's Mersenne Twister) and an instructor's private ``--seed`` changes every input.
    """
    words = [seed, zlib.crc32(lab.encode()), exercise]
    mixed = int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(mixed)


# --------------------------------------------------------------------------- shared-rule exercises
def plain(value: Any) -> Any:
    """A value shipped back by the kernel, as the notebook check sees it: the tensor of a
    :class:`TensorResult` (a NumPy array stays an array), lists, tuples and dicts recursively;
    anything else (an :class:`Opaque` too) as it is."""
    if isinstance(value, TensorResult):
        return value.tensor.numpy() if value.type_name == "numpy.ndarray" else value.tensor
    if isinstance(value, list | tuple):
        items = [plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def judged_exercise(
    lab: str,
    checks: ModuleType,
    index: int,
    grade_id: str,
    function: str,
    points: float,
    *,
    case_timeout: float = 10.0,
    device_argument: bool = True,
) -> Exercise:
    """The exercise ``function`` of a lab whose checks module shares one rule with the grader.

    ``checks`` (e.g. :mod:`labcore.checks.attention`) defines ``CASES[function]`` (the case
    builder, called with a generator and, if ``device_argument``, ``None`` for the CPU),
    ``EXERCISES[function][0]`` (the kernel-side call source, run in the student's kernel) and
    ``judge(function, spec, value, extra)`` (the acceptance rule). The hidden cases are drawn
    from :func:`case_generator` of (``lab``, the grading seed, ``index``); every case is judged by
    the notebook check's own rule, so that the check and the grader cannot disagree.
    """
    builder = checks.CASES[function]
    source = checks.EXERCISES[function][0]

    def make_cases(seed: int) -> list[HiddenCase]:
        g = case_generator(lab, seed, index)
        specs = builder(g, None) if device_argument else builder(g)
        return [HiddenCase(name, spec) for name, spec in specs]

    def score(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
        extra = plain(extra) if isinstance(extra, dict) else {}
        return checks.judge(function, case.inputs, plain(value), extra)

    return Exercise(
        grade_id, function, points, make_cases, score, call_source=source, case_timeout=case_timeout
    )
