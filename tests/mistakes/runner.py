"""Run a catalogue entry through the grader's rubric in this process, as the grader would.

The grader sends each hidden input to the student's kernel, where its own kernel-side harness
(:mod:`labcore.grading.inkernel.harness`) calls the function and writes a record that the grader
scores. Here :func:`labcore.grading.worker.score_locally` runs the same harness on the entry's
namespace (no kernel, no sandbox), with the same transport and the same scoring, so a catalogue
test sees exactly the grader's verdict.

:class:`Catalogue` runs a lab's catalogue (``tests/mistakes/labN.py``) through the lab's notebook
check and this rubric run, once per function, and :func:`define_tests` writes the catalogue tests
into a test module: each ``tests/test_mistakes_labN.py`` passes its catalogue and its
``check_message``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import labcore
from labcore.checks import CheckFailed
from labcore.grading.records import CaseOutcome
from labcore.grading.worker import score_locally
from labcore.rubrics import Exercise, HiddenCase, Rubric, load_rubric

_CASES: dict[tuple[str, str, int], list[HiddenCase]] = {}


def case_outcomes(
    rubric: Rubric, exercise: Exercise, namespace: dict[str, Any], *, seed: int = 0
) -> list[CaseOutcome]:
    """The grader's outcome of every hidden case of ``seed`` (built once per exercise and seed)
    for ``namespace[exercise.function]``. ``namespace`` plays the student's kernel: a later
    exercise finds the earlier functions it calls there."""
    key = (rubric.lab, exercise.grade_id, seed)
    if key not in _CASES:
        _CASES[key] = list(exercise.make_cases(seed))
    with tempfile.TemporaryDirectory() as folder:
        return [
            score_locally(rubric, exercise, case, namespace, Path(folder)) for case in _CASES[key]
        ]


def rubric_points(
    rubric: Rubric, function: str, namespace: dict[str, Any], *, seed: int = 0
) -> tuple[float, list[str]]:
    """The points that ``namespace[function]`` earns on the hidden cases of ``seed``, and the
    failure messages (``"<case>: <message>"``)."""
    exercise = next(e for e in rubric.exercises if e.function == function)
    outcomes = case_outcomes(rubric, exercise, namespace, seed=seed)
    messages = [f"{o.name}: {o.message}" for o in outcomes if not o.passed]
    return exercise.points * (len(outcomes) - len(messages)) / len(outcomes), messages


# ============================================================================ the catalogue tests
@dataclass(frozen=True)
class Verdict:
    """What the notebook check and the grader made of one function: the check's failure message
    (``None``: passed), the rubric's points and failure messages, and whether the check left the
    global RNG state and the default dtype as they were."""

    message: str | None
    points: float
    messages: list[str]
    state_kept: bool


def check_by_name(checks: ModuleType) -> Callable[[str, Callable], str | None]:
    """The ``check_message`` of a lab whose check of exercise ``f`` is ``checks.check_<f>(fn)``."""

    def check_message(function: str, fn: Callable) -> str | None:
        try:
            getattr(checks, f"check_{function}")(fn)
        except CheckFailed as err:
            return str(err)
        return None

    return check_message


class Catalogue:
    """A lab's catalogue (``tests/mistakes/labN.py``: ``SOLUTIONS``, ``MISTAKES``, ``VALID``) run
    through the lab's notebook check (``check_message(function, fn)``: ``None`` or the failure
    message) and its rubric (the grader's harness in this process, hidden cases of seed 0). Every
    function is judged once (on one CPU thread) and the verdict kept: the tests and the table
    share it."""

    def __init__(
        self,
        module: ModuleType,
        lab: str,
        check_message: Callable[[str, Callable], str | None],
        *,
        rubric_only: Collection[str] = (),
    ) -> None:
        self.module = module
        self.rubric = load_rubric(lab)
        self.exercises = {e.function: e for e in self.rubric.exercises}
        self.check_message = check_message
        self.rubric_only = set(rubric_only)
        self._verdicts: dict[tuple[str, Callable], Verdict] = {}

    def verdict(self, function: str, fn: Callable, *, check: bool = True) -> Verdict:
        """The check's and the rubric's verdict on ``fn`` as exercise ``function`` (once);
        ``check=False`` grades with the rubric only (the check's message is then ``None``)."""
        key = (function, fn) if check else (function + " (rubric only)", fn)
        if key not in self._verdicts:
            state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
            with labcore.one_thread():  # tiny tensors: threads only contend on a busy machine
                message = self.check_message(function, fn) if check else None
                kept = torch.equal(state, torch.random.get_rng_state()) and (
                    dtype == torch.get_default_dtype()
                )
                torch.random.set_rng_state(state)  # whatever the check did, the next entry
                torch.set_default_dtype(dtype)  # starts from the same state
                points, messages = rubric_points(self.rubric, function, {function: fn})
            self._verdicts[key] = Verdict(message, points, messages, kept)
        return self._verdicts[key]

    def full(self, function: str) -> float:
        """The points of exercise ``function``."""
        return self.exercises[function].points

    def rows(self) -> list[tuple[str, int, int, int, int]]:
        """Per exercise: (function, mistakes caught by check and rubric, mistakes tried, valid
        alternatives accepted by both, valid alternatives tried)."""
        rows = []
        for function in self.exercises:
            caught = 0
            for _, fn, _ in self.module.MISTAKES[function]:
                verdict = self.verdict(function, fn)
                caught += verdict.message is not None and verdict.points < self.full(function)
            accepted = 0
            for _, fn in self.module.VALID[function]:
                verdict = self.verdict(function, fn)
                accepted += verdict.message is None and verdict.points == self.full(function)
            tried, valid = len(self.module.MISTAKES[function]), len(self.module.VALID[function])
            rows.append((function, caught, tried, accepted, valid))
        return rows


def define_tests(namespace: dict[str, Any], catalogue: Catalogue) -> None:
    """Define the catalogue tests of a lab in a test module's ``namespace`` (its globals):

    * the catalogue covers every exercise of the rubric, with at least five mistakes and three
      valid alternatives each;
    * the solution passes the check and earns full points (the rubric alone for the exercises in
      ``catalogue.rubric_only``: their checks train for seconds and run elsewhere);
    * every mistake fails the check with a message that contains its hint and no answer code
      (``def``, ``return``), and loses points in the rubric;
    * every valid alternative passes the check and earns full points;
    * every check left the global RNG state and the default dtype as they were, whatever the
      function did;
    * the per-exercise table (mistakes caught / tried, valid accepted / tried), printed.
    """
    module = catalogue.module
    exercises = list(catalogue.exercises)
    mistakes = [(f, *entry) for f, entries in module.MISTAKES.items() for entry in entries]
    valid = [(f, *entry) for f, entries in module.VALID.items() for entry in entries]

    def test_the_catalogue_covers_every_exercise() -> None:
        assert set(module.MISTAKES) == set(module.VALID) == set(exercises) == set(module.SOLUTIONS)
        for function in exercises:
            assert len(module.MISTAKES[function]) >= 5, function
            assert len(module.VALID[function]) >= 3, function

    @pytest.mark.parametrize("function", exercises)
    def test_the_solution_passes_check_and_rubric(function: str) -> None:
        check = function not in catalogue.rubric_only
        verdict = catalogue.verdict(function, module.SOLUTIONS[function], check=check)
        assert verdict.message is None, verdict.message
        assert verdict.points == catalogue.full(function), verdict.messages

    @pytest.mark.parametrize(
        "function, name, fn, hint", mistakes, ids=[f"{m[0]}: {m[1]}" for m in mistakes]
    )
    def test_mistake_is_rejected_by_check_and_rubric(
        function: str, name: str, fn: Callable, hint: str
    ) -> None:
        verdict = catalogue.verdict(function, fn)
        message = verdict.message
        assert message is not None, f"the check accepted: {name}"
        assert hint in message, message
        assert "def " not in message and "return " not in message  # never the answer's code
        assert verdict.points < catalogue.full(function), f"the rubric gave full points to: {name}"

    @pytest.mark.parametrize("function, name, fn", valid, ids=[f"{v[0]}: {v[1]}" for v in valid])
    def test_valid_alternative_passes_check_and_rubric(
        function: str, name: str, fn: Callable
    ) -> None:
        verdict = catalogue.verdict(function, fn)
        assert verdict.message is None, verdict.message
        assert verdict.points == catalogue.full(function), verdict.messages

    def test_checks_leave_rng_and_default_dtype_alone() -> None:
        entries = [(f, fn) for f, _, fn, _ in mistakes] + [(f, fn) for f, _, fn in valid]
        entries += [(f, fn) for f, fn in module.SOLUTIONS.items() if f not in catalogue.rubric_only]
        changed = [f for f, fn in entries if not catalogue.verdict(f, fn).state_kept]
        assert not changed, f"checks that changed the RNG state or default dtype: {changed}"

    def test_catalogue_table(capsys: pytest.CaptureFixture[str]) -> None:
        """The per-exercise table of the closing note (printed)."""
        rows = catalogue.rows()
        with capsys.disabled():
            print("\nexercise | mistakes caught / tried | valid accepted / tried")
            for function, caught, tried, accepted, valid_count in rows:
                print(f"{function} | {caught} / {tried} | {accepted} / {valid_count}")
        assert all(c == t and a == v for _, c, t, a, v in rows)

    for test in (
        test_the_catalogue_covers_every_exercise,
        test_the_solution_passes_check_and_rubric,
        test_mistake_is_rejected_by_check_and_rubric,
        test_valid_alternative_passes_check_and_rubric,
        test_checks_leave_rng_and_default_dtype_alone,
        test_catalogue_table,
    ):
        namespace[test.__name__] = test


def chained_entries(catalogue: Catalogue, in_place: dict[str, list[str]]) -> list[tuple]:
    """The valid alternatives that sit beside a wrong earlier exercise: ``(exercise, name, fn)``
    for the entries of an exercise of ``in_place`` (exercise -> the earlier exercises it calls)
    whose namespace holds, under an earlier exercise's name, something else than its solution."""
    solutions = catalogue.module.SOLUTIONS
    return [
        (function, name, fn)
        for function, entries in catalogue.module.VALID.items()
        if function in in_place
        for name, fn in entries
        if any(
            getattr(fn.__globals__.get(earlier), "__code__", None)
            is not solutions[earlier].__code__
            for earlier in in_place[function]
        )
    ]


def assert_graded_on_its_own(
    catalogue: Catalogue,
    function: str,
    fn: Callable,
    in_place: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One mistake costs points once: ``fn`` (exercise ``function``) sits beside a wrong earlier
    exercise in its namespace; that earlier function loses points in its own exercise (check and
    rubric), ``fn`` keeps all of its own (labcore's version of the earlier exercise is bound in its
    place during the call), the student's functions are back afterwards, and without the
    substitution (``in_place`` emptied for ``function``) the check would have failed ``fn`` too."""
    solutions = catalogue.module.SOLUTIONS
    earlier = {
        name: fn.__globals__[name]
        for name in in_place[function]
        if fn.__globals__[name].__code__ is not solutions[name].__code__
    }
    assert earlier, f"{function}: no wrong earlier exercise beside it"
    for name, wrong in earlier.items():
        verdict = catalogue.verdict(name, wrong)
        assert verdict.message is not None, f"the check of {name} accepted the wrong {name}"
        assert verdict.points < catalogue.full(name), f"the rubric gave full points to {name}"
    verdict = catalogue.verdict(function, fn)
    assert verdict.message is None, verdict.message
    assert verdict.points == catalogue.full(function), verdict.messages
    assert all(fn.__globals__[name] is wrong for name, wrong in earlier.items())  # put back
    monkeypatch.setitem(in_place, function, [])
    with labcore.one_thread():
        assert catalogue.check_message(function, fn) is not None  # it would cost points twice


# ============================================================================ the per-lab table
def lab_counts(catalogue: Catalogue) -> dict[str, int]:
    """One lab's counts: exercises; mistakes tried, rejected by the check, by the rubric (fewer
    than full points), by both; valid alternatives tried, accepted by the check, by the rubric
    (full points), by both."""
    counts = dict.fromkeys(
        ("exercises", "mistakes", "check", "rubric", "both", "valid", "v_check", "v_rubric",
         "v_both"),
        0,
    )  # fmt: skip
    counts["exercises"] = len(catalogue.exercises)
    for function in catalogue.exercises:
        full = catalogue.full(function)
        for _, fn, _ in catalogue.module.MISTAKES[function]:
            verdict = catalogue.verdict(function, fn)
            by_check, by_rubric = verdict.message is not None, verdict.points < full
            counts["mistakes"] += 1
            counts["check"] += by_check
            counts["rubric"] += by_rubric
            counts["both"] += by_check and by_rubric
        for _, fn in catalogue.module.VALID[function]:
            verdict = catalogue.verdict(function, fn)
            by_check, by_rubric = verdict.message is None, verdict.points == full
            counts["valid"] += 1
            counts["v_check"] += by_check
            counts["v_rubric"] += by_rubric
            counts["v_both"] += by_check and by_rubric
    return counts


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.mistakes.runner --table [--labs 0 1 ...]``: run every lab's catalogue
    through its check and its rubric and print the per-lab table (Markdown). Exits 1 if a
    mistake passed or a valid alternative failed either."""
    import argparse
    import contextlib
    import importlib
    import io
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m tests.mistakes.runner", description=main.__doc__
    )
    parser.add_argument("--table", action="store_true", help="print the per-lab table")
    parser.add_argument("--labs", type=int, nargs="*", default=list(range(7)), help="labs (0-6)")
    args = parser.parse_args(argv)
    if not args.table:
        parser.error("nothing to do: pass --table")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, as pytest sets it
    print(
        "| lab | exercises | mistakes caught by the check / tried | caught by the rubric / tried "
        "| valid accepted by the check / tried | accepted by the rubric / tried |"
    )
    print("|---|---|---|---|---|---|")
    ok = True
    for lab in args.labs:
        catalogue = importlib.import_module(f"test_mistakes_lab{lab}").CATALOGUE
        with contextlib.redirect_stdout(io.StringIO()):  # the checks' own success lines
            c = lab_counts(catalogue)
        print(
            f"| {lab} | {c['exercises']} | {c['check']} / {c['mistakes']} | "
            f"{c['rubric']} / {c['mistakes']} | {c['v_check']} / {c['valid']} | "
            f"{c['v_rubric']} / {c['valid']} |",
            flush=True,
        )
        ok = ok and c["both"] == c["mistakes"] and c["v_both"] == c["valid"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
