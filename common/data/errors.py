"""The error type raised for every bad input of the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset file, column, value or setting that the data layer cannot use.

    The message names the file, line, column or value at fault and says how to
    fix it.
    """
