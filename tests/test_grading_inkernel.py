"""The kernel-side modules of the grader, imported and run here (the grader sends them as source)."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from labcore.grading.inkernel import forget, output_cap, probe, source
from labcore.grading.inkernel.harness import clean
from labcore.grading.transport import decode


def test_source_is_the_module_text_and_unknown_names_are_refused():
    assert source("harness").startswith('"""Kernel side of one hidden case')
    assert "def forget(full: bool = False)" in source("forget")
    with pytest.raises(ValueError, match="no kernel-side module"):
        source("../grade")


def test_capped_stream_passes_the_budget_then_says_once_that_it_drops_the_rest():
    sink = io.StringIO()
    stream = output_cap.CappedStream(sink, budget=10)
    assert stream.write("0123456") == 7 and stream.write("789abc") == 6
    stream.write("more")
    stream.write = print  # IPython 9 patches write: the cap must survive it
    stream.write("and more")
    assert sink.getvalue() == "0123456789\n[grader: output limit reached, the rest is dropped]\n"
    assert stream.getvalue() == sink.getvalue()  # everything else is the wrapped stream's


def test_install_caps_both_streams(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    output_cap.install(5)
    assert isinstance(sys.stdout, output_cap.CappedStream)
    assert isinstance(sys.stderr, output_cap.CappedStream)


def test_forget_drops_the_last_exception_and_its_frames(monkeypatch):
    try:
        raise RuntimeError("a failed cell")
    except RuntimeError:
        kind, value, trace = sys.exc_info()
    for name, item in (("last_type", kind), ("last_value", value), ("last_traceback", trace)):
        monkeypatch.setattr(sys, name, item, raising=False)
    forget.forget()
    assert sys.last_type is None and sys.last_value is None and sys.last_traceback is None


def test_clean_keeps_plain_values_and_tensors_and_describes_the_rest():
    big = torch.zeros(11)
    value = {"t": torch.arange(3.0, requires_grad=True) * 2, "n": [1, 2.5, "x", None], "big": big}
    cleaned = clean(value, max_elements=10)
    decoded = decode(cleaned)
    assert torch.equal(decoded["t"].tensor, torch.tensor([0.0, 2.0, 4.0]))
    assert decoded["t"].requires_grad and decoded["n"] == [1, 2.5, "x", None]
    assert "too large" in decoded["big"].text  # not transported
    assert clean(object(), 10)["__object__"] == "builtins.object"
    deep: list = []
    for _ in range(12):
        deep = [deep]
    assert "nested too deeply" in str(clean(deep, 10))


def test_probe_finds_what_is_wrong_outside_a_sandbox(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x", encoding="utf-8")
    assert probe.check(str(secret), network=True) in (
        "the grader's files are visible",
        "capabilities left",
    )
