"""labcore: the shared, tested code of the course *Signals, Structures, and Systems*.

Every notebook of the course imports this package. Each chapter has one module here
(``labcore.mlp``, ``labcore.attention``, ...); this top level only holds what every chapter needs:
choosing a device, seeding every random number generator, and running loops of tiny tensor
operations on one CPU thread.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

__version__ = "0.1.0"

__all__ = ["__version__", "get_device", "seed_everything", "one_thread"]


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then Apple's MPS, then the CPU.

    This is the only place in labcore that chooses a device; every other function creates its
    tensors on the device of its inputs.

    Args:
        prefer: force a device type (``"cuda"``, ``"mps"`` or ``"cpu"``) instead of choosing.
            ``None`` (default) also honours the environment variable ``LABCORE_DEVICE``.

    Raises:
        ValueError: if ``prefer`` names an unknown device type or one that is not available.
    """
    prefer = prefer if prefer is not None else os.environ.get("LABCORE_DEVICE") or None
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if prefer is not None:
        if prefer not in available:
            raise ValueError(f"prefer must be one of {sorted(available)} or None, got {prefer!r}")
        if not available[prefer]:
            raise ValueError(f"prefer={prefer!r} was requested but that device is not available")
        return torch.device(prefer)
    for kind in ("cuda", "mps", "cpu"):
        if available[kind]:
            return torch.device(kind)
    raise AssertionError("unreachable: the CPU is always available")  # pragma: no cover


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (all devices) and return a seeded CPU generator.

    Args:
        seed: a non-negative integer below 2**32.

    Returns:
        A ``torch.Generator`` seeded with ``seed``, for functions that take ``generator=``.

    Raises:
        TypeError: if ``seed`` is not an int; ValueError: if it is out of range.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds the legacy global generator that libraries use
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed code on one CPU thread, then restore the thread count.

    Training loops on tensors of a few hundred or thousand entries spend more on splitting each
    operation over threads than they gain (tens of times more on a busy machine), and one thread
    also makes their floating-point reductions independent of the machine's core count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
