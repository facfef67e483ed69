"""scikit-learn's bundled handwritten digits as a train/test split of tensors.

The data set (Alpaydin & Kaynak, 1998; UCI "Optical Recognition of Handwritten Digits") holds 1797
grey-scale images of 8x8 pixels, values 0..16, of the digits 0-9, about 180 per class. It ships with
scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["DigitsSplit", "digits"]


class DigitsSplit(NamedTuple):
    """A train/test split; unpack it as ``X_train, y_train, X_test, y_test = digits()``.

    Attributes:
        X_train: ``(n_train, 64)`` pixels in ``[0, 1]`` (row-major 8x8 images).
        y_train: ``(n_train,)`` int64 labels in ``0..9``.
        X_test: ``(n_test, 64)``.
        y_test: ``(n_test,)``.
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float64) / 16.0, bunch.target.astype(np.int64)


def digits(
    test_size: float = 0.25,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> DigitsSplit:
    """The 8x8 digits, pixels scaled to ``[0, 1]``, split into train and test sets.

    The split is stratified (each class keeps its proportion in both parts) and deterministic:
    the same ``seed`` gives the same split on every machine.

    Args:
        test_size: the fraction of samples in the test set, in ``(0, 1)``.
        seed: seeds the split (``random_state`` of scikit-learn's ``train_test_split``).
        device: where the tensors go; ``None``: torch's default device.
        dtype: a floating dtype for the pixels (labels are always int64).

    Returns:
        ``DigitsSplit(X_train, y_train, X_test, y_test)``: ``X_* (n, 64)`` in ``[0, 1]``,
        ``y_* (n,)`` int64; with the defaults, 1347 training and 450 test samples.
    """
    from sklearn.model_selection import train_test_split

    if isinstance(test_size, bool) or not isinstance(test_size, (float, int)):
        raise TypeError(f"test_size must be a float in (0, 1), got {type(test_size).__name__}")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    X, y = _load()
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y
    )
    return DigitsSplit(
        torch.as_tensor(X_tr, dtype=dtype, device=device),
        torch.as_tensor(y_tr, dtype=torch.int64, device=device),
        torch.as_tensor(X_te, dtype=dtype, device=device),
        torch.as_tensor(y_te, dtype=torch.int64, device=device),
    )
