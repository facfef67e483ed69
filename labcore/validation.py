"""Input validation shared by every labcore module.

Each helper raises ``ValueError`` (or ``TypeError``) with a message that names the argument, what was
expected and what came, so that a student sees at once which call was wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["check_tensor", "check_positive_int", "check_in", "check_same_device"]


def check_tensor(
    name: str,
    x: object,
    *,
    ndim: int | Sequence[int] | None = None,
    min_ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    floating: bool = False,
) -> torch.Tensor:
    """Check that ``x`` is a tensor with the expected rank, shape and dtype kind; return it.

    Args:
        name: the argument's name, used in the error message.
        x: the value to check.
        ndim: the allowed number(s) of dimensions.
        min_ndim: the least number of dimensions.
        shape: the expected trailing shape; ``None`` entries match any size
            (``shape=(None, 3)`` accepts ``(..., n, 3)``).
        floating: require a floating-point dtype.

    Raises:
        TypeError: if ``x`` is not a tensor or, with ``floating=True``, not floating point.
        ValueError: if its rank or shape is not the expected one.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}"
        )
    if shape is not None:
        shape = tuple(shape)
        tail = tuple(x.shape[x.ndim - len(shape) :]) if x.ndim >= len(shape) else None
        if tail is None or any(w is not None and w != g for w, g in zip(shape, tail, strict=True)):
            want = "(..., " + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    return x


def check_positive_int(name: str, value: object, *, allow_zero: bool = False) -> int:
    """Check that ``value`` is a positive (or, with ``allow_zero``, non-negative) int; return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    low = 0 if allow_zero else 1
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def check_in(name: str, value: object, allowed: Sequence[object]) -> object:
    """Check that ``value`` is one of ``allowed``; return it."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """Check that all given tensors live on one device; return that device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"all tensors must be on the same device, got {listed}")
    return next(iter(devices.values()))
