"""Data sets of the course, as tensors: small, bundled or synthetic, never downloaded.

- ``digits``: scikit-learn's bundled 8x8 handwritten digits, split into train and test.
- ``regression_1d``, ``two_moons``, ``spirals``, ``gaussian_mixture_1d``: synthetic sets,
  reproducible from a seed.
- ``coref``: the synthetic pronoun-resolution corpus of chapter 2 and its word tokenizer
  (``labcore.data.coref``).
"""

from labcore.data import coref
from labcore.data.digits import DigitsSplit, digits
from labcore.data.synthetic import gaussian_mixture_1d, regression_1d, spirals, two_moons

__all__ = [
    "DigitsSplit",
    "coref",
    "digits",
    "gaussian_mixture_1d",
    "regression_1d",
    "spirals",
    "two_moons",
]
