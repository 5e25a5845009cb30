"""One-hot encoding and MinMax scaling fitted on training rows only."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metals.common.data.blocks import empty_array, map_blocks
from metals.common.data.errors import DataError
from metals.common.data.table import LABEL

if TYPE_CHECKING:
    # Imported where it is used; see metals.common.data.
    import pandas as pd

logger = logging.getLogger(__name__)

_STATE_FILE = "preprocessor.json"
_VERSION = 1


class Preprocessor:
    """Turn a cleaned table into a scaled float32 matrix and class indices.

    Categorical columns are one-hot encoded with the categories seen in the
    training rows; a category never seen there becomes an all-zero block.
    Every feature is then MinMax-scaled with the training minimum and
    maximum, and values outside [0, 1] (rows outside the training range)
    are clipped and counted.

    Parameters
    ----------
    numeric : list[str]
        Numeric feature columns.
    categorical : list[str]
        Categorical feature columns.
    label_map : dict[str, str]
        Fine-grained label (column ``label``) to class name.
    class_names : list[str]
        Classes in their fixed order; ``y`` indexes into it.
    """

    def __init__(
        self,
        numeric: list[str],
        categorical: list[str],
        label_map: dict[str, str],
        class_names: list[str],
    ) -> None:
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.label_map = dict(label_map)
        self.class_names = list(class_names)
        self.categories_: dict[str, list[str]] | None = None
        self.min_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    @property
    def feature_names(self) -> list[str]:
        """Names of the output columns, numeric first, then ``column=category``."""
        if self.categories_ is None:
            raise DataError("the preprocessor is not fitted; call fit() on training rows first")
        names = list(self.numeric)
        for column in self.categorical:
            names.extend(f"{column}={category}" for category in self.categories_[column])
        return names

    def fit(self, frame: pd.DataFrame, rows: np.ndarray | None = None) -> Preprocessor:
        """Learn categories and the MinMax range from training rows.

        Parameters
        ----------
        frame : pandas.DataFrame
            Rows with every feature column.
        rows : numpy.ndarray | None, default=None
            Positions of the training rows in ``frame``, int64 shape
            (n_train,). ``None`` fits on every row.

        Returns
        -------
        Preprocessor
            ``self``, fitted.
        """
        n_rows = len(frame) if rows is None else len(rows)
        if n_rows == 0:
            raise DataError("cannot fit the preprocessor on zero training rows")
        self._check_columns(frame)
        self.categories_ = {
            column: sorted(_distinct_strings(frame[column], rows)) for column in self.categorical
        }
        low, high = _column_range(_numeric_values(frame, self.numeric), rows)
        lows, highs = [low], [high]

        # A one-hot column spans [0, 1] unless its category is in every row.
        for column in self.categorical:
            categories = self.categories_[column]
            always = False
            if len(categories) == 1:
                row_codes, lookup = _category_lookup(frame[column], categories)
                codes = lookup[row_codes if rows is None else row_codes[rows]]
                always = bool(np.all(codes == 0))
            lows.append(np.full(len(categories), 1.0 if always else 0.0))
            highs.append(np.ones(len(categories)))
        self.min_ = np.concatenate(lows).astype(np.float64)
        span = np.concatenate(highs) - self.min_

        # A constant column maps to 0: dividing by 1 keeps it finite.
        span[span == 0] = 1.0
        self.scale_ = span.astype(np.float64)
        return self

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Encode, scale and clip ``frame``; see :meth:`transform_counted`.

        Returns
        -------
        x : numpy.ndarray
            float32, shape (n_rows, n_features), values in [0, 1].
        y : numpy.ndarray
            int64, shape (n_rows,), index into ``class_names``.
        """
        x, y, _ = self.transform_counted(frame)
        return x, y

    def transform_counted(
        self, frame: pd.DataFrame, rows: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Encode, scale and clip ``frame`` and count the clipped values.

        Parameters
        ----------
        frame : pandas.DataFrame
            Rows with every feature column and the fine label in ``label``.
        rows : numpy.ndarray | None, default=None
            Positions of the rows to transform, int64 shape (n_rows,), in
            the order of the output. ``None`` transforms every row.
        out : numpy.ndarray | None, default=None
            C-contiguous float32 array of shape (n_rows, n_features) that
            receives ``x``, such as a memory-mapped cache file. ``None``
            allocates one.

        Returns
        -------
        x : numpy.ndarray
            float32, shape (n_rows, n_features), values in [0, 1];
            ``out`` when given.
        y : numpy.ndarray
            int64, shape (n_rows,).
        n_clipped : int
            Number of values that were outside the training range.

        Raises
        ------
        DataError
            If the preprocessor is not fitted, a column is missing or a label
            has no class.
        """
        x, n_clipped = self._scale(frame, rows, out)
        labels = frame[LABEL] if rows is None else frame[LABEL].iloc[rows]
        return x, self.encode_labels(labels), n_clipped

    def transform_features(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode, scale and clip the features of unlabeled rows.

        Parameters
        ----------
        frame : pandas.DataFrame
            Rows with every feature column; a ``label`` column is not needed.

        Returns
        -------
        numpy.ndarray
            float32, shape (n_rows, n_features), values in [0, 1].
        """
        x, n_clipped = self._scale(frame)
        if n_clipped:
            logger.info("clipped %s value(s) outside the training range to [0, 1]", n_clipped)
        return x

    def _scale(
        self, frame: pd.DataFrame, rows: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, int]:
        """Return the clipped float32 matrix of ``rows`` (``out`` if given) and the clip count."""
        if self.min_ is None or self.scale_ is None:
            raise DataError("the preprocessor is not fitted; call fit() on training rows first")
        self._check_columns(frame)
        assert self.categories_ is not None
        n_numeric = len(self.numeric)
        widths = [len(self.categories_[column]) for column in self.categorical]
        offsets = [n_numeric + sum(widths[:position]) for position in range(len(widths))]
        n_features = n_numeric + sum(widths)
        n_rows = len(frame) if rows is None else len(rows)
        if out is None:
            matrix = empty_array((n_rows, n_features), dtype=np.float32)
        elif (
            out.shape != (n_rows, n_features)
            or out.dtype != np.float32
            or not out.flags.c_contiguous
        ):
            raise ValueError(
                f"out must be a C-contiguous float32 array of shape {(n_rows, n_features)}, "
                f"got {out.dtype} {out.shape}"
            )
        else:
            matrix = out
        values = _numeric_values(frame, self.numeric)
        lookups = [
            _category_lookup(frame[column], self.categories_[column]) for column in self.categorical
        ]
        low, span = self.min_[:n_numeric], self.scale_[:n_numeric]

        # Each row block is scaled and one-hot encoded while it is in the CPU
        # cache. A code indexes the flat block: row * n_features + offset + code.
        def encode_block(start: int, stop: int) -> tuple[int, list[int]]:
            index = slice(start, stop) if rows is None else rows[start:stop]
            # Indexing by rows returns a copy to scale in place, a slice a view of the frame.
            if rows is None:
                scaled = values[index] - low
            else:
                scaled = values[index]
                scaled -= low
            scaled /= span
            clipped = int(np.count_nonzero(scaled < 0.0)) + int(np.count_nonzero(scaled > 1.0))
            np.clip(scaled, 0.0, 1.0, out=scaled)
            block = matrix[start:stop]
            block[:, :n_numeric] = scaled
            block[:, n_numeric:] = 0.0
            flat = block.reshape(-1)
            row_starts = np.arange(0, (stop - start) * n_features, n_features, dtype=np.int64)
            unseen = []
            for (row_codes, lookup), offset in zip(lookups, offsets, strict=True):
                block_codes = lookup[row_codes[index]]
                seen = block_codes >= 0
                unseen.append(len(block_codes) - int(np.count_nonzero(seen)))
                flat[(row_starts + offset + block_codes)[seen]] = 1.0
            return clipped, unseen

        counts = map_blocks(encode_block, n_rows)
        n_clipped = sum(clipped for clipped, _ in counts)
        for position, column in enumerate(self.categorical):
            unseen = sum(block_unseen[position] for _, block_unseen in counts)
            if unseen:
                logger.info(
                    "column %s: %s value(s) of categories not seen in training encoded as "
                    "all zeros",
                    column,
                    unseen,
                )

        for offset, width in zip(offsets, widths, strict=True):
            block = slice(offset, offset + width)
            if np.any(self.min_[block] != 0.0):
                # A category present in every training row: scale to 0 and clip the rest.
                shifted = (matrix[:, block] - self.min_[block]) / self.scale_[block]
                n_clipped += int(np.count_nonzero((shifted < 0.0) | (shifted > 1.0)))
                matrix[:, block] = np.clip(shifted, 0.0, 1.0)
        return matrix, n_clipped

    def encode_labels(self, labels: pd.Series) -> np.ndarray:
        """Return class indices, int64 shape (n_rows,), for fine-grained labels."""
        import pandas as pd

        index = {name: position for position, name in enumerate(self.class_names)}
        codes = {fine: index[coarse] for fine, coarse in self.label_map.items()}
        if isinstance(labels.dtype, pd.CategoricalDtype):
            # Map the few categories, then index by the row codes.
            lookup = labels.cat.categories.astype(str).map(codes).to_numpy(dtype=np.float64)
            # A missing label (code -1) indexes the trailing NaN.
            y_codes = np.append(lookup, np.nan)[labels.cat.codes.to_numpy()]
            if not np.isnan(y_codes).any():
                return y_codes.astype(np.int64)
        y = labels.astype(str).map(codes)
        if y.isna().any():
            unknown = sorted(set(labels.astype(str)[y.isna()]))
            raise DataError(
                f"label(s) {unknown} have no class in the label mapping; known labels "
                f"are {sorted(self.label_map)}"
            )
        return y.to_numpy(dtype=np.int64)

    def _check_columns(self, frame: pd.DataFrame) -> None:
        """Raise if ``frame`` lacks a feature column."""
        missing = [c for c in self.numeric + self.categorical if c not in frame.columns]
        if missing:
            raise DataError(
                f"missing feature column(s) {missing}; the table must have the columns "
                "the preprocessor was fitted on"
            )

    def to_json(self) -> str:
        """Return the fitted state as the JSON text that :meth:`save` writes."""
        if self.min_ is None or self.scale_ is None or self.categories_ is None:
            raise DataError("the preprocessor is not fitted; call fit() on training rows first")
        state = {
            "version": _VERSION,
            "numeric": self.numeric,
            "categorical": self.categorical,
            "label_map": self.label_map,
            "class_names": self.class_names,
            "categories": self.categories_,
            "min": self.min_.tolist(),
            "scale": self.scale_.tolist(),
        }
        return json.dumps(state)

    def save(self, directory: str | Path) -> None:
        """Write the fitted state as JSON into ``directory`` (created if absent)."""
        text = self.to_json()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / _STATE_FILE).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> Preprocessor:
        """Read a preprocessor written by :meth:`save`.

        Raises
        ------
        DataError
            If the file is missing or not a preprocessor state.
        """
        path = Path(directory) / _STATE_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(
                f"preprocessor state {path} not found; prepare the dataset first"
            ) from None
        return cls.from_json(text, source=str(path))

    @classmethod
    def from_json(cls, text: str, *, source: str = "preprocessor state") -> Preprocessor:
        """Rebuild a preprocessor from the text of :meth:`to_json`.

        Parameters
        ----------
        text : str
            JSON text written by :meth:`to_json` or :meth:`save`.
        source : str, default="preprocessor state"
            Where the text came from (a file, a message), named in errors.

        Raises
        ------
        DataError
            If the text is not a preprocessor state of this version.
        """
        try:
            state = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{source}: invalid preprocessor state ({error}); prepare the dataset again"
            ) from None
        if not isinstance(state, dict) or state.get("version") != _VERSION:
            version = state.get("version") if isinstance(state, dict) else None
            raise DataError(
                f"{source}: preprocessor state version {version!r} is not "
                f"{_VERSION}; prepare the dataset again"
            )
        preprocessor = cls(
            state["numeric"], state["categorical"], state["label_map"], state["class_names"]
        )
        preprocessor.categories_ = {key: list(value) for key, value in state["categories"].items()}
        preprocessor.min_ = np.asarray(state["min"], dtype=np.float64)
        preprocessor.scale_ = np.asarray(state["scale"], dtype=np.float64)
        return preprocessor


def _distinct_strings(values: pd.Series, rows: np.ndarray | None = None) -> list[str]:
    """Return the distinct values of a column, or of its ``rows``, as strings."""
    import pandas as pd

    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        if rows is not None:
            codes = codes[rows]
        used = np.bincount(codes[codes >= 0], minlength=len(values.cat.categories)) > 0
        return [str(value) for value in values.cat.categories[used]]
    if rows is not None:
        values = values.iloc[rows]
    return [str(value) for value in pd.unique(values.astype(str))]


def _numeric_values(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Return the float64 (n_rows, n_columns) values of ``columns``, read-only.

    A frame whose numeric columns form one float64 block, as the
    Edge-IIoTset loader builds it, gives a view of that block, not a copy.
    """
    if not columns:
        return np.zeros((len(frame), 0))
    return frame[columns].to_numpy(dtype=np.float64)


def _column_range(values: np.ndarray, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Return the per-column minimum and maximum of ``values`` over ``rows`` (NaN propagates)."""
    n_rows = len(values) if rows is None else len(rows)

    def block_range(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        block = values[start:stop] if rows is None else values[rows[start:stop]]
        return block.min(axis=0), block.max(axis=0)

    ranges = map_blocks(block_range, n_rows)
    low = np.full(values.shape[1], np.inf)
    high = np.full(values.shape[1], -np.inf)
    for block_low, block_high in ranges:
        np.minimum(low, block_low, out=low)
        np.maximum(high, block_high, out=high)
    return low, high


def _category_lookup(values: pd.Series, categories: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return row codes and a lookup that maps them to positions in ``categories``.

    ``lookup[row_codes]`` is each value's position in ``categories``, -1 for
    an unseen or empty value. For a categorical column the lookup covers
    only its few categories, so no pass over the rows is made here.

    Returns
    -------
    row_codes : numpy.ndarray
        int, shape (n_rows,).
    lookup : numpy.ndarray
        int64, indexed by ``row_codes``.
    """
    import pandas as pd

    known = pd.Index(categories)
    if isinstance(values.dtype, pd.CategoricalDtype):
        # Code -1 (empty) indexes the trailing -1.
        lookup = known.get_indexer(values.cat.categories.astype(str))
        return values.cat.codes.to_numpy(), np.append(lookup, -1).astype(np.int64)
    row_codes = known.get_indexer(values.astype(str))
    # Position -1 (unseen) indexes the trailing -1 as well.
    return row_codes, np.append(np.arange(len(categories)), -1).astype(np.int64)
