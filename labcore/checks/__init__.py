"""Exercise checks: one module per lab, one ``check_<exercise>`` function per exercise.

A check runs the student's function and labcore's reference on the same inputs (edge cases
included), and either prints one success line or raises :class:`CheckFailed` with what differs: the
input, the expected shape or values, what came, and a hint. It never shows the solution code. A
``NotImplementedError`` from an unfinished exercise passes through unchanged, so an untouched stub
fails loudly where the student wrote it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import torch

from labcore.checks.rules import meta_rule, on_meta, raised_message, tolerance
from labcore.checks.rules import short as _short

__all__ = [
    "CheckFailed",
    "Case",
    "run_case",
    "compare",
    "passed",
    "assert_unchanged",
    "snapshot",
    "same_result",
    "diagnose",
    "forbid",
    "without",
    "run_judged",
    "meta_check",
]


class CheckFailed(AssertionError):
    """An exercise check found a difference; the message says which input and what differs."""


class Case:
    """One named input of a check, used to label failures (``Case("batch of 1")``)."""

    def __init__(self, description: str) -> None:
        self.description = description

    def __str__(self) -> str:
        return self.description


def run_case(case: Case | str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the student's ``fn``; turn any error but ``NotImplementedError`` into ``CheckFailed``."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except CheckFailed:
        raise
    except Exception as err:  # any student error becomes feedback
        raise CheckFailed(f"[{case}] your function raised {type(err).__name__}: {err}") from err


def compare(
    case: Case | str,
    got: Any,
    expected: torch.Tensor,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    hint: str = "",
) -> None:
    """Raise ``CheckFailed`` unless ``got`` is a tensor equal to ``expected`` within tolerance.

    Compares type, shape, dtype and device before values, each with its own message.
    """
    suffix = f"\n  hint: {hint}" if hint else ""
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"[{case}] expected a torch.Tensor, got {type(got).__name__}{suffix}")
    if got.shape != expected.shape:
        raise CheckFailed(
            f"[{case}] expected shape {tuple(expected.shape)}, got {tuple(got.shape)}{suffix}"
        )
    if got.dtype != expected.dtype:
        raise CheckFailed(f"[{case}] expected dtype {expected.dtype}, got {got.dtype}{suffix}")
    if got.device != expected.device:
        raise CheckFailed(
            f"[{case}] expected the result on {expected.device} (the input's device), "
            f"got {got.device}{suffix}"
        )
    if not expected.is_floating_point() and not expected.is_complex():
        if not torch.equal(got, expected):
            wrong = int((got != expected).sum())
            raise CheckFailed(
                f"[{case}] {wrong} of {expected.numel()} entries differ"
                f"\n  expected: {_short(expected)}\n  got:      {_short(got)}{suffix}"
            )
        return
    if not torch.allclose(got.detach(), expected.detach(), atol=atol, rtol=rtol, equal_nan=True):
        error = (got.detach() - expected.detach()).abs().max().item()
        raise CheckFailed(
            f"[{case}] values differ (max abs error {error:.3g}, tolerance {atol:g} + {rtol:g}*|x|)"
            f"\n  expected: {_short(expected)}\n  got:      {_short(got)}{suffix}"
        )


def assert_unchanged(case: Case | str, before: Any, after: Any, name: str) -> None:
    """Raise ``CheckFailed`` if the student's function modified its input ``name`` in place."""
    if isinstance(before, torch.Tensor) and not torch.equal(before, after):
        raise CheckFailed(f"[{case}] your function modified its input {name!r} in place")


def snapshot(value: Any) -> Any:
    """A deep copy of an input, to detect in-place modification with :func:`assert_unchanged`."""
    return value.detach().clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)


def passed(name: str, n_cases: int) -> None:
    """Print the one success line of a check."""
    cases = "1 case" if n_cases == 1 else f"all {n_cases} cases"
    print(f"\u2714 {name}: {cases} passed")


def same_result(a: object, b: torch.Tensor) -> bool:
    """Whether ``a`` is a tensor like ``b`` (shape, dtype, device) with close values (NaNs equal)."""
    return (
        isinstance(a, torch.Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and a.device == b.device
        and bool(torch.allclose(a.detach(), b.detach(), atol=1e-5, rtol=1e-4, equal_nan=True))
    )


def diagnose(
    got: object,
    expected: torch.Tensor,
    mistakes: dict[str, Callable[[], torch.Tensor]],
    default: str,
) -> str:
    """The hint of the first typical mistake whose result equals ``got``, else ``default``.

    ``mistakes`` maps a hint to a function computing what that mistake returns. Candidates are
    computed lazily, and only for a ``got`` that differs from ``expected`` beyond
    :func:`~labcore.checks.rules.tolerance` (the typical mistakes of the model exercises are
    whole forward passes); they may fail (a mistake that cannot happen for this input); a
    candidate that equals the right answer for this input is skipped.
    """
    if not isinstance(got, torch.Tensor):
        return default
    if (
        got.shape == expected.shape
        and got.dtype == expected.dtype
        and got.device == expected.device
    ):
        with torch.no_grad():  # already right: no mistake to name (and none computed)
            if torch.allclose(got.detach(), expected.detach(), **tolerance(expected.dtype)):
                return default
    for hint, make in mistakes.items():
        try:
            candidate = make()
        except Exception:  # this mistake is not computable here: no match
            continue
        if same_result(got, candidate) and not same_result(candidate, expected):
            return hint
    return default


def forbid(message: str) -> Callable[..., None]:
    """A stand-in function that fails the check with ``message`` whenever it is called."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise CheckFailed(message)

    return forbidden


@contextlib.contextmanager
def without(*targets: tuple[object, str], what: str) -> Iterator[None]:
    """Make the labcore functions ``targets`` (``(module, name)`` pairs) fail the check while the
    block runs (the student's code): an exercise that asks for ``what`` must not call labcore's
    own. The originals are back when the block ends."""
    with contextlib.ExitStack() as stack:
        for module, name in targets:
            message = (
                f"this exercise asks you to write {what} yourself; do not call "
                f"{getattr(module, '__name__', module)}.{name} (the check compares your result "
                "with it)"
            )
            stack.enter_context(mock.patch.object(module, name, forbid(message)))
        yield


def run_judged(
    exercise: str,
    cases: list[tuple[str, dict[str, Any]]],
    call: Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]],
    judge: Callable[[dict[str, Any], Any, dict[str, Any]], str | None],
    *,
    shape_hint: str,
    hints: dict[str, str] | None = None,
    label: str | None = None,
) -> None:
    """Run every ``(case name, spec)`` through ``call(spec) -> (value, report)`` (the lab's shared
    kernel-side call) and ``judge(spec, value, report)`` (its shared rule); raise
    :class:`CheckFailed` naming the case on the first failure, else print the success line of
    ``label`` (default ``exercise``). An error raised inside the student's code becomes the
    failure, explained by :func:`labcore.checks.rules.raised_message` (``shape_hint``, ``hints``);
    ``NotImplementedError`` (an unfinished exercise) passes through.
    """
    for case, spec in cases:
        try:
            value, extra = call(spec)
        except (NotImplementedError, CheckFailed):
            raise
        except Exception as err:  # any error in the student's code becomes feedback
            message = raised_message(err, shape_hint=shape_hint, hints=hints)
            raise CheckFailed(f"[{case}] {message}") from None
        problem = judge(spec, value, extra)
        if problem:
            raise CheckFailed(f"[{case}] {problem}")
    passed(label or exercise, len(cases))


def meta_check(case: Case | str, fn: Callable[..., Any], *args: Any, n_outputs: int = 1) -> None:
    """The device rule, exactly as the grader's kernel applies it: ``fn`` runs once more on
    ``meta`` copies of its tensor (and module) arguments (shapes only, a stand-in for a GPU) and
    each of its ``n_outputs`` results must land on ``meta``; raise :class:`CheckFailed` naming
    ``case`` otherwise (:func:`~labcore.checks.rules.on_meta`,
    :func:`~labcore.checks.rules.meta_rule`)."""
    problem = meta_rule({"meta": on_meta(fn, *args)}, n_outputs)
    if problem:
        raise CheckFailed(f"[{case}] {problem}")
