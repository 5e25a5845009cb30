"""The cleaned table a dataset loader returns, and checks shared by the loaders."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metals.common.data.errors import DataError

if TYPE_CHECKING:
    # Imported where it is used; see metals.common.data.
    import pandas as pd

logger = logging.getLogger(__name__)

LABEL = "label"
GROUP = "device"


@dataclass
class LoadReport:
    """Row counts of one load, for the dataset summary.

    Attributes
    ----------
    files : list[str]
        Paths of the files read.
    rows_read : int
        Data rows read from all files (header lines excluded).
    rows_dropped : dict[str, int]
        Rows removed before deduplication, by reason.
    duplicates_removed : int
        Exact duplicate rows removed (features and label), filled in by the
        preparation step.
    notes : list[str]
        Other facts the user should see, such as header rows found.
    """

    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_dropped: dict[str, int] = field(default_factory=dict)
    duplicates_removed: int = 0
    notes: list[str] = field(default_factory=list)

    def drop(self, reason: str, count: int) -> None:
        """Add ``count`` dropped rows under ``reason`` (zero counts are skipped)."""
        if count:
            self.rows_dropped[reason] = self.rows_dropped.get(reason, 0) + int(count)

    def to_dict(self) -> dict[str, object]:
        """Return the report as plain JSON-serialisable values."""
        return {
            "files": list(self.files),
            "rows_read": self.rows_read,
            "rows_dropped": dict(self.rows_dropped),
            "duplicates_removed": self.duplicates_removed,
            "notes": list(self.notes),
        }


@dataclass
class RawTable:
    """A dataset after parsing and row cleaning, before any fitted step.

    Attributes
    ----------
    name : str
        Dataset name.
    train : pandas.DataFrame
        Feature columns, the fine-grained label in column ``label`` and, for
        datasets with devices, the device type in column ``device``.
    test : pandas.DataFrame | None
        The official test rows in the same layout, or ``None`` when the
        dataset has no official test file.
    numeric : list[str]
        Numeric feature columns, float64 in the frames.
    categorical : list[str]
        Categorical feature columns, strings in the frames, one-hot encoded
        later.
    label_map : dict[str, str]
        Fine-grained label to class name for the chosen grouping.
    class_names : list[str]
        Classes in their fixed order.
    report : LoadReport
        What was read and dropped.
    """

    name: str
    train: pd.DataFrame
    test: pd.DataFrame | None
    numeric: list[str]
    categorical: list[str]
    label_map: dict[str, str]
    class_names: list[str]
    report: LoadReport


def check_label_names(labels: pd.Series, known: Mapping[str, object], path: Path) -> None:
    """Raise if ``labels`` holds a name missing from ``known``.

    Raises
    ------
    DataError
        Naming the unknown labels, the file and the known names.
    """
    import pandas as pd

    present = pd.unique(labels.astype(str))
    unknown = sorted(str(name) for name in present if name not in known)
    if unknown:
        first = int(np.flatnonzero(~labels.astype(str).isin(list(known)).to_numpy())[0])
        raise DataError(
            f"{path}: unknown label(s) {unknown} (first at data row {first + 1}); "
            f"known labels are {sorted(known)}. Fix the file or extend the label mapping"
        )


def check_short_rows(frame: pd.DataFrame, last_column: str, path: Path, first_line: int) -> None:
    """Raise if a row lacks its last field, as a truncated last line does.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows as read, with every field a string or NaN.
    last_column : str
        Column that every complete line fills.
    path : Path
        File the rows came from.
    first_line : int
        1-based line number of the first data row in the file.

    Raises
    ------
    DataError
        Naming the file and the first incomplete line.
    """
    missing = frame[last_column].isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)
        line = first_line + int(rows[0])
        raise DataError(
            f"{path}: line {line} has fewer fields than the header "
            f"({len(rows)} such line(s)); the file is truncated or damaged. "
            "Download or copy it again"
        )


def parse_numeric(
    frame: pd.DataFrame, columns: list[str], path: Path, first_line: int, *, strict: bool
) -> np.ndarray:
    """Convert ``columns`` of ``frame`` to float64 in place.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows as read; the listed columns hold strings or numbers.
    columns : list[str]
        Columns that must be numeric.
    path : Path
        File the rows came from, for messages.
    first_line : int
        1-based line number of the first data row.
    strict : bool
        If true, a value that is not a number raises. If false, the rows
        holding one are returned in the mask for the caller to count and
        drop.

    Returns
    -------
    numpy.ndarray
        Boolean mask, shape (n_rows,), of rows with a non-numeric value.

    Raises
    ------
    DataError
        In strict mode, naming the file, line, column and value.
    """
    import pandas as pd

    bad_rows = np.zeros(len(frame), dtype=bool)
    for column in columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values.dtype):
            frame[column] = values.astype("float64")
            continue
        converted = pd.to_numeric(values, errors="coerce").astype("float64")
        bad = (converted.isna() & values.notna()).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            if strict:
                raise DataError(
                    f"{path}: line {first_line + row}, column {column!r}: value "
                    f"{values.iloc[row]!r} is not a number ({int(bad.sum())} such "
                    "value(s) in this column). Check that the file is the right "
                    "dataset and not damaged"
                )
            bad_rows |= bad
        frame[column] = converted
    return bad_rows


def check_empty_columns(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    """Raise if a feature column holds no value at all.

    Raises
    ------
    DataError
        Naming the file and the empty columns.
    """
    empty = [column for column in columns if frame[column].isna().all()]
    if empty:
        raise empty_columns_error(empty, path)


def empty_columns_error(columns: list[str], path: Path) -> DataError:
    """Return the error for feature columns of ``path`` that hold no value in any row."""
    return DataError(
        f"{path}: column(s) {columns} contain no value in any row; the file is "
        "damaged or not in the expected layout"
    )
