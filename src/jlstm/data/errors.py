"""The one error type of the data layer."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data: a missing file or column, a bad value, a series too short.

    The message names the problem and the fix; the CLI prints it as is and exits
    with status 2.
    """
