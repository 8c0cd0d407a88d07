"""What counts as a number in an option a user gives: Python or numpy scalars, never a bool.

``True`` is an ``int`` to Python, and ``np.float32(0.5)`` is not a ``float``; every option
check of the package asks these functions instead, so that they agree.

Examples
--------
>>> import numpy as np
>>> is_number(np.float32(0.5)), is_number(True), is_number("1.0")
(True, False, False)
>>> is_finite_number(float("nan")), is_finite_number(np.inf), is_finite_number(-2)
(False, False, True)
>>> is_integer(np.int64(3)), is_integer(3.0), is_integer(False)
(True, False, False)
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["is_finite_number", "is_integer", "is_number"]


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (int or float, Python or numpy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a number (:func:`is_number`) and neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or numpy), not a bool and not a float."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
