"""The exercise checks of lab 6 (labcore.checks.learning_dynamics): they accept right answers,
reject typical mistakes with a message that names the cause, explain errors raised inside the
student's code, let an unfinished exercise's error through, and leave the caller's random state and
default dtype alone. The full catalogue of mistakes is ``tests/test_mistakes_lab6.py``."""

from __future__ import annotations

import pytest
import torch
from mistakes import lab6

from labcore.checks import CheckFailed
from labcore.checks import learning_dynamics as checks
from labcore.rubrics import load_rubric

CHECKS = {name: getattr(checks, f"check_{name}") for name in lab6.SOLUTIONS}


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_solution_passes_with_one_success_line(name, capsys):
    CHECKS[name](lab6.SOLUTIONS[name])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("\u2714") and name in out[0]


@pytest.mark.parametrize("name", list(CHECKS))
def test_an_unfinished_exercise_raises_not_implemented(name):
    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        CHECKS[name](stub)


@pytest.mark.parametrize("name", list(CHECKS))
def test_checks_leave_the_global_rng_and_default_dtype_alone(name):
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    CHECKS[name](lab6.SOLUTIONS[name])
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.get_default_dtype() == dtype


def test_a_shape_error_inside_the_student_code_is_explained():
    def step(w1, w2, sigma_yx, lr):
        error = sigma_yx - w2 @ w1
        return w1 + lr * w2 @ error, w2 + lr * error @ w1.mT  # W2 not transposed

    with pytest.raises(CheckFailed, match="shape error inside your function"):
        checks.check_two_layer_gradient_step(step)


def test_a_message_shows_input_expected_and_got():
    with pytest.raises(CheckFailed) as info:
        checks.check_alignment(lab6.alignment_norm_not_squared)
    text = str(info.value)
    assert text.startswith("[") and "expected:" in text and "got:" in text and "hint:" in text


def test_the_overflow_is_named_for_the_naive_formula():
    with pytest.raises(CheckFailed) as info:
        checks.check_mode_strength(lab6.strength_naive)
    assert "NaN" in str(info.value) and "e^{-2st}" in str(info.value)


def test_a_default_dtype_change_is_caught():
    def alignment(k, y):
        torch.set_default_dtype(torch.float64)
        return (y @ k @ y) / (k.norm() * y.square().sum())

    try:
        with pytest.raises(CheckFailed, match="default dtype"):
            checks.check_alignment(alignment)
    finally:
        torch.set_default_dtype(torch.float32)


def test_the_device_rule_runs_on_meta_tensors():
    """A result created on the CPU is caught without a GPU, by the meta run of one case."""
    with pytest.raises(CheckFailed, match="meta"):
        checks.check_arccos_ntk(lab6.arccos_cpu_ones)


def test_check_and_rubric_share_one_rule_and_one_call():
    rubric = load_rubric("06-learning-dynamics")
    for exercise in rubric.exercises:
        source, _ = checks.EXERCISES[exercise.function]
        assert exercise.call_source == source
        assert len(exercise.make_cases(0)) == len(
            checks.CASES[exercise.function](torch.Generator(), None)
        )


def test_judge_accepts_the_reference_and_names_a_mutation():
    x = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randn(10, 2, dtype=torch.float64)
    spec = {"args": [x, y]}
    value, extra = checks.call_function("input_output_modes", lab6.input_output_modes, spec)
    assert checks.judge("input_output_modes", spec, value, extra) is None
    value, extra = checks.call_function("input_output_modes", lab6.modes_centres_in_place, spec)
    assert "modified its input 'x'" in checks.judge("input_output_modes", spec, value, extra)
