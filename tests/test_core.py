"""labcore's top level: device choice and seeding."""

import random

import numpy as np
import pytest
import torch

import labcore


def test_version_is_a_string():
    assert isinstance(labcore.__version__, str) and labcore.__version__.count(".") == 2


def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("LABCORE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert labcore.get_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert labcore.get_device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert labcore.get_device() == torch.device("cpu")


def test_get_device_honours_prefer_and_environment(monkeypatch):
    assert labcore.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LABCORE_DEVICE", "cpu")
    assert labcore.get_device() == torch.device("cpu")


def test_get_device_rejects_unknown_or_unavailable(monkeypatch):
    with pytest.raises(ValueError, match="prefer must be one of"):
        labcore.get_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="not available"):
        labcore.get_device("cuda")


def test_seed_everything_makes_every_generator_repeat():
    def draw():
        generator = labcore.seed_everything(123)
        legacy_numpy = np.random.rand()  # noqa: NPY002 - the global generator is what we seed
        return (random.random(), legacy_numpy, torch.rand(3), torch.rand(2, generator=generator))

    first, second = draw(), draw()
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])


@pytest.mark.parametrize(
    "bad, error", [(-1, ValueError), (2**32, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_seed_everything_rejects_bad_seeds(bad, error):
    with pytest.raises(error, match="seed"):
        labcore.seed_everything(bad)


def test_labcore_dependencies_carry_lower_bounds_only(root):
    """Installing labcore in Colab must never replace Colab's own torch, numpy or matplotlib."""
    import re

    import tomllib

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        r for extra in project.get("optional-dependencies", {}).values() for r in extra
    ]
    assert any(r.startswith("torch") for r in requirements)
    for requirement in requirements:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+(\[[a-z,]+\])?>=[0-9.]+", requirement), (
            f"{requirement!r}: labcore's dependencies take lower bounds only (no ==, <, ~=)"
        )


def test_one_thread_runs_on_one_thread_and_restores_the_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with labcore.one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), labcore.one_thread():
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
