"""The checks of lab 0 (:mod:`labcore.checks.function_approximation`) leave the student's session
alone: the global RNG state and the default dtype are the same after every check, whether the
function checked is right or one of the catalogued mistakes (one of which reseeds the global RNG
and another draws nothing but changes tensors in place)."""

from __future__ import annotations

import torch
from mistakes import lab0

from labcore.checks import CheckFailed
from labcore.checks import function_approximation as checks


def _run(function: str, fn) -> None:
    try:
        getattr(checks, f"check_{function}")(fn)
    except CheckFailed:
        pass


def test_every_check_leaves_rng_and_default_dtype_alone(capsys):
    torch.manual_seed(1234)
    torch.rand(3)  # a state that no seed call reproduces by accident
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    for function, fn in lab0.SOLUTIONS.items():
        getattr(checks, f"check_{function}")(fn)
        assert torch.equal(state, torch.random.get_rng_state()), function
        assert torch.get_default_dtype() == dtype, function
    assert capsys.readouterr().out.count("\u2714") == len(checks.EXERCISES)


def test_checks_restore_what_a_mistake_changed():
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    for function, entries in lab0.MISTAKES.items():
        for name, fn, _ in entries:
            _run(function, fn)
            assert torch.equal(state, torch.random.get_rng_state()), name
            assert torch.get_default_dtype() == dtype, name


def test_a_function_that_changes_the_default_dtype_is_told_and_the_dtype_restored():
    def sneaky(x):
        torch.set_default_dtype(torch.float64)
        return lab0.gaussian_mle(x)

    try:
        checks.check_gaussian_mle(sneaky)
    except CheckFailed as err:
        assert "default dtype" in str(err)
    else:
        raise AssertionError("the check accepted a change of the default dtype")
    assert torch.get_default_dtype() == torch.float32


def test_the_first_polynomial_case_needs_no_meta_run():
    """The meta run (whose first use imports torch's meta kernels, seconds on a loaded machine)
    is in the last case, so a slow first call can cost one hidden case at most."""
    cases = checks.polynomial_cases(torch.Generator().manual_seed(0))
    assert [bool(spec.get("meta")) for _, spec in cases] == [False] * (len(cases) - 1) + [True]
