"""Compiled kernels: how ztfluigi asks numba for them (one place, one policy).

Kernels are compiled ``nogil`` (Luigi workers may run them in threads) with numpy's error model
(a division by zero gives inf/NaN as in numpy, not an exception), and cached on disk when the
package directory is writable; an installed read-only package compiles them once per process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numba

F = TypeVar("F", bound=Callable)


def compiled(func: F) -> F:
    """``func`` compiled by numba (``njit``, nogil, numpy error model, disk cache if possible)."""
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(func)
    except RuntimeError:  # "cannot cache function …: no locator available"
        return numba.njit(nogil=True, error_model="numpy")(func)
