"""Shared fixtures: every test starts from the same seeds, and the repository root is one fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

import labcore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seeded():
    """Seed Python, NumPy and torch before every test."""
    labcore.seed_everything(0)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
