"""The shared rules of :mod:`labcore.checks.rules`: the kernel-side watchers every lab's call uses
and the judge-side rules every lab's check and rubric apply."""

from __future__ import annotations

import pytest
import torch

from labcore.checks import rules


def _seeded_zero(x):
    torch.manual_seed(0)  # a reseed, and no draw
    return x


def test_the_probe_state_sees_a_reseed_that_a_before_after_comparison_misses():
    torch.manual_seed(0)  # the caller's state is the seed-0 state, as after a setup cell
    before = torch.random.get_rng_state()
    _seeded_zero(torch.ones(2))
    assert torch.equal(before, torch.random.get_rng_state())  # a comparison would see nothing
    with rules.watch_global_state() as report:
        _seeded_zero(torch.ones(2))
    assert report["global_rng"] is True
    assert torch.equal(before, torch.random.get_rng_state())  # the caller's stream is back


def test_the_watch_reports_draws_and_dtype_and_restores_both_even_on_error():
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    with rules.watch_global_state() as report:
        pass
    assert report == {"global_rng": False, "default_dtype": ""}
    with pytest.raises(ZeroDivisionError), rules.watch_global_state() as report:
        torch.rand(3)
        torch.set_default_dtype(torch.float64)
        raise ZeroDivisionError
    assert report == {"global_rng": True, "default_dtype": "torch.float64"}
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.get_default_dtype() == dtype


def test_changed_reports_in_place_changes_by_position():
    a, b = torch.zeros(3), torch.ones(2)
    args = [a, 5, b]
    before = rules.copies(args)
    a.add_(1)
    assert rules.changed(args, before) == [0]
    args[2] = b.unsqueeze(0)  # a new shape counts as a change
    assert rules.changed(args, before) == [0, 2]


def test_on_meta_reports_devices_or_the_error():
    assert rules.on_meta(lambda x: (x * 2, x.sum()), torch.ones(3)) == ["meta", "meta"]
    assert rules.on_meta(lambda x: x + torch.ones(3), torch.ones(3)).startswith("error: ")
    report = rules.on_meta(lambda x: torch.zeros(3) * 0, torch.ones(3))
    assert report == ["cpu"]
    problem = rules.meta_rule({"meta": report})
    assert "'meta' device" in problem and "device=" in problem
    assert rules.meta_rule({"meta": ["meta"]}) is None and rules.meta_rule({}) is None


def test_reference_in_place_binds_the_reference_then_puts_back_what_was_there():
    namespace: dict = {}
    exec("def later(x):\n    return earlier(x) + 1\n", namespace)
    later = namespace["later"]
    with rules.reference_in_place(later, {"earlier": lambda x: 10 * x}):
        assert later(1) == 11
    assert "earlier" not in namespace  # it was not defined: removed again
    namespace["earlier"] = lambda x: -x
    with pytest.raises(ValueError), rules.reference_in_place(later, {"earlier": abs}):
        assert later(-2) == 3
        raise ValueError
    assert later(2) == -1  # the student's own is back, even after an error


def test_tensor_rule_checks_type_shape_dtype_then_values_and_names_the_mistake():
    x = torch.tensor([1.0, -2.0, 3.0])
    expected = 2 * x

    def rule(got):
        return rules.tensor_rule(got, expected, x, what="y", diagnoses={"forgot the 2": lambda: x})

    assert rule(2 * x) is None
    assert "should be a torch.Tensor" in rule(2.0) and "no .item()" in rule(2.0)
    assert "should have shape (3,)" in rule(expected[:2])
    assert "should have dtype torch.float32" in rule(expected.double())
    assert "is complex" in rule(expected.to(torch.complex64))
    message = rule(x)
    assert "values differ" in message and "forgot the 2" in message and "expected:" in message
    assert "NaN or inf" in rule(torch.full((3,), float("nan")))
    with pytest.raises(ValueError, match="like= or dtype="):
        rules.tensor_rule(x, x)


def test_common_names_the_first_broken_rule():
    ok = {"mutated": [], "global_rng": False, "default_dtype": ""}
    assert rules.common(ok, ["x"]) is None
    assert "modified its input 'v' in place" in rules.common({**ok, "mutated": [1]}, ["x", "v"])
    assert "requires_grad switched on" in rules.common({**ok, "grad_flag": [0]}, ["x"])
    assert "changed the weights" in rules.common({**ok, "params_changed": True}, ["x"])
    assert "global random state" in rules.common({**ok, "global_rng": True}, ["x"])
    assert "default dtype" in rules.common({**ok, "default_dtype": "torch.float64"}, ["x"])
    assert "could not tell" in rules.common({}, ["x"])


def test_tolerance_and_tuples():
    assert rules.tolerance(torch.float64) == {"atol": 1e-10, "rtol": 1e-8}
    assert rules.tolerance(torch.float32, float32=(1e-4, 1e-3)) == {"atol": 1e-4, "rtol": 1e-3}
    assert rules.tuple_rule((1, 2), 2, "a, b") is None
    assert "expected a pair (a, b)" in rules.tuple_rule(1, 2, "a, b")
    assert "a tuple of 3 tensors" in rules.tuple_rule([1], 3, "U, s, V")


def test_raised_message_explains_shape_errors():
    try:
        torch.ones(2, 3) @ torch.ones(2, 3)
    except RuntimeError as err:
        message = rules.raised_message(err, shape_hint="check transposes")
    assert message.startswith("your function raised RuntimeError")
    assert "a shape error inside your function" in message and "check transposes" in message
    plain = rules.raised_message(KeyError("k"), shape_hint="x", hints={"'k'": "a key"})
    assert "shape error" not in plain and "hint: a key" in plain


def test_what_raised_names_the_error_of_a_call_that_must_reject_its_argument():
    def check_kind(kind):
        if kind not in ("l1", "l2"):
            raise ValueError(kind)

    assert rules.what_raised(check_kind, "l3") == "ValueError"
    assert rules.what_raised(check_kind, "l1") == "returned normally"
    assert rules.what_raised(lambda kind: {}[kind], "l3") == "KeyError"
    with pytest.raises(NotImplementedError):
        rules.what_raised(lambda kind: (_ for _ in ()).throw(NotImplementedError()), "l3")
