"""The shared input-validation helpers name the argument, the expectation and what came."""

import pytest
import torch

from labcore.validation import check_in, check_positive_int, check_same_device, check_tensor


def test_check_tensor_accepts_matching_input():
    x = torch.zeros(2, 5, 3)
    assert check_tensor("x", x, ndim=3, shape=(None, 3), floating=True) is x


@pytest.mark.parametrize(
    "kwargs, value, error, message",
    [
        ({"ndim": 2}, torch.zeros(3), ValueError, r"x must have 2 dimensions, got shape \(3,\)"),
        ({"min_ndim": 2}, torch.zeros(3), ValueError, "at least 2"),
        ({"shape": (None, 4)}, torch.zeros(2, 3), ValueError, r"\(\.\.\., \*, 4\), got \(2, 3\)"),
        ({"shape": (2, 3)}, torch.zeros(3), ValueError, "must have shape"),
        ({"floating": True}, torch.zeros(3, dtype=torch.long), TypeError, "floating-point"),
        ({}, [1.0, 2.0], TypeError, "must be a torch.Tensor, got list"),
    ],
)
def test_check_tensor_rejects_with_named_messages(kwargs, value, error, message):
    with pytest.raises(error, match=message):
        check_tensor("x", value, **kwargs)


def test_check_positive_int_and_check_in():
    assert check_positive_int("n", 3) == 3
    assert check_positive_int("n", 0, allow_zero=True) == 0
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        check_positive_int("n", 0)
    with pytest.raises(TypeError, match="n must be an int"):
        check_positive_int("n", 2.0)
    with pytest.raises(ValueError, match=r"method must be one of \['a', 'b'\], got 'c'"):
        check_in("method", "c", ["a", "b"])


def test_check_same_device():
    assert check_same_device(a=torch.zeros(1), b=torch.zeros(1)) == torch.device("cpu")
    with pytest.raises(ValueError, match="a on cpu, b on meta"):
        check_same_device(a=torch.zeros(1), b=torch.zeros(1, device="meta"))
