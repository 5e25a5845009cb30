"""Stream a traffic CSV file in chunks of records, reporting unreadable records by line number.

A traffic file is read in the layout of the dataset a model was trained on.
Files with a header row (TON_IoT, Edge-IIoTset, header-row mirrors of
NSL-KDD) name their columns. In a file without one (NSL-KDD), the number of
fields on the first line selects one of the column orders the dataset allows.
Every record the reader cannot use (wrong number of fields, a value that is
not a number in a numeric column, a missing or infinite value in a feature
column) is left out and returned with its 1-based line number and the
reason, so nothing is dropped silently. Memory use depends on the chunk size, not on the file size.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

if TYPE_CHECKING:
    # Imported where they are used; see metals.common.data.
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

logger = logging.getLogger(__name__)

NEWLINE = 10
MIN_READ_BYTES = 1 << 20
#: Lines of a file without a header row whose values are checked against a column order.
SAMPLED_LINES = 20


class TrafficFileError(ValueError):
    """A traffic file that cannot be read in the layout the model expects."""


@dataclass(frozen=True)
class TrafficLayout:
    """Columns a traffic file may contain for one trained model.

    Parameters
    ----------
    features : tuple[str, ...]
        Columns the model's preprocessing reads. A file must contain all of them.
    numeric : frozenset[str], default=frozenset()
        Subset of ``features`` (and ``optional``) parsed as 64-bit floats; the
        others are read as strings.
    optional : tuple[str, ...], default=()
        Columns accepted and passed on when present, such as the label columns.
    ignored : tuple[str, ...], default=()
        Columns accepted and not read, such as identifiers and timestamps the
        training preprocessing drops.
    headerless : tuple[tuple[str, ...], ...], default=()
        Column orders accepted in a file without a header row, for example the
        41 NSL-KDD features alone or followed by the attack name and difficulty.
    nullable : frozenset[str], default=frozenset()
        Feature columns whose empty values the preprocessing fills itself.
    label : str or None, default=None
        Optional column holding the record's own label, when a file has one.
    defaults : Mapping[str, float | str], default={}
        Feature columns a file may lack, with the value training gave rows
        without them (TON_IoT: the sensors of other device types).
    column_sets : tuple[tuple[str, ...], ...], default=()
        When given, a file must contain every column of at least one set,
        such as the sensor columns of one TON_IoT device type.
    boolean_numbers : bool, default=False
        Read ``true``/``false`` in numeric columns as 1/0, as training does.
    number_spelling : frozenset[str], default=frozenset()
        Text columns whose numeric values are rewritten in one spelling
        (``0`` and ``0.0`` both become ``0.0``), as training does.
    dataset : str, default=""
        Name of the dataset the model was trained on, for messages.
    """

    features: tuple[str, ...]
    numeric: frozenset[str] = frozenset()
    optional: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    headerless: tuple[tuple[str, ...], ...] = ()
    nullable: frozenset[str] = frozenset()
    label: str | None = None
    defaults: Mapping[str, float | str] = field(default_factory=dict)
    column_sets: tuple[tuple[str, ...], ...] = ()
    boolean_numbers: bool = False
    number_spelling: frozenset[str] = frozenset()
    dataset: str = ""

    @property
    def known(self) -> frozenset[str]:
        """Every column name a file may contain."""
        return frozenset(self.features) | frozenset(self.optional) | frozenset(self.ignored)


@dataclass(frozen=True)
class FileColumns:
    """The columns of one traffic file, as found on its first line.

    Parameters
    ----------
    names : tuple[str, ...]
        Every column of the file, in file order.
    header_lines : int
        1 when the first line is a header row, else 0.
    read : tuple[str, ...]
        Columns parsed into each chunk: the features present, then the
        optional columns present.
    absent : tuple[str, ...], default=()
        Feature columns the file lacks, filled from ``TrafficLayout.defaults``.
    """

    names: tuple[str, ...]
    header_lines: int
    read: tuple[str, ...]
    absent: tuple[str, ...] = ()


@dataclass(frozen=True)
class BadRecord:
    """A record left out of the prediction, with its 1-based line number in the file."""

    line: int
    reason: str


@dataclass
class TrafficChunk:
    """One chunk of readable records.

    Parameters
    ----------
    frame : pandas.DataFrame
        Readable records of shape (n_records, n_columns), columns
        ``FileColumns.read``. Numeric columns are float64, the others pandas
        categoricals of strings without leading or trailing spaces.
    lines : numpy.ndarray
        int64 (n_records,): the 1-based line number of each row of ``frame``.
    bad : list[BadRecord]
        Records of this chunk that were left out, in line order.
    """

    frame: pd.DataFrame
    lines: np.ndarray
    bad: list[BadRecord] = field(default_factory=list)


def _looks_numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def inspect_columns(path: str | Path, layout: TrafficLayout) -> FileColumns:
    """Find the columns of a traffic file and check them against the model's layout.

    Parameters
    ----------
    path : str or pathlib.Path
        CSV file, UTF-8 (a byte-order mark is allowed).
    layout : TrafficLayout
        Columns the model accepts.

    Returns
    -------
    FileColumns
        The file's columns and whether its first line is a header row.

    Raises
    ------
    TrafficFileError
        When the file is missing, empty or not UTF-8. When its header names
        columns the model never saw or lacks columns it needs, the message
        names them. When a file without a header row fits none of the
        layout's column orders, by field count or by the value types of its
        first lines; the message names the expected and found field counts.
    """
    path = Path(path)
    if not path.is_file():
        raise TrafficFileError(f"traffic file not found: {path}; check the --data path")

    with path.open("rb") as handle:
        first = handle.readline()
    try:
        text = first.decode("utf-8-sig").strip()
    except UnicodeDecodeError as error:
        raise TrafficFileError(
            f"{path}: line 1 is not UTF-8 text ({error}); save the file as UTF-8 CSV"
        ) from None
    if not text:
        raise TrafficFileError(
            f"{path}: the file is empty or starts with a blank line; its first line must be "
            "the header row or a record"
        )
    fields = [value.strip() for value in next(csv.reader(io.StringIO(text)))]

    # A header row names at least one known column, or contains no number at all.
    is_header = bool(set(fields) & layout.known) or not any(map(_looks_numeric, fields))
    if is_header:
        names = tuple(fields)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise TrafficFileError(f"{path}: duplicate columns in the header: {duplicates}")
        unknown = [name for name in names if name not in layout.known]
        missing = [
            name for name in layout.features if name not in names and name not in layout.defaults
        ]
        if not missing and layout.column_sets:
            if not any(all(name in names for name in group) for group in layout.column_sets):
                groups = " or ".join("(" + ", ".join(group) + ")" for group in layout.column_sets)
                missing = [f"every column of one of {groups}"]
        if unknown or missing:
            problems = []
            if unknown:
                problems.append(f"columns the model never saw: {unknown}")
            if missing:
                problems.append(f"missing columns the model needs: {missing}")
            trained_on = f" ({layout.dataset})" if layout.dataset else ""
            raise TrafficFileError(
                f"{path}: {'; '.join(problems)}. Use a file in the layout of the "
                f"dataset the model was trained on{trained_on}"
            )
        header_lines = 1
    else:
        names = _headerless_order(path, fields, layout)
        header_lines = 0

    present = tuple(name for name in layout.features if name in names)
    present_optional = tuple(name for name in layout.optional if name in names)
    absent = tuple(name for name in layout.features if name not in names)
    return FileColumns(
        names=names, header_lines=header_lines, read=present + present_optional, absent=absent
    )


def _headerless_order(path: Path, fields: list[str], layout: TrafficLayout) -> tuple[str, ...]:
    """Return the column order of a file without a header row, from its first lines.

    An order fits when it has as many columns as line 1 has fields and, on at
    least one of the first :data:`SAMPLED_LINES` lines with that many fields,
    every value in a numeric column is a number or empty. A single damaged
    line therefore does not reject the file, but a file with a column removed
    (so that its field count equals that of a shorter order) is rejected.

    Raises
    ------
    TrafficFileError
        When no order fits. The message gives the expected and found field
        counts and, when one column is missing, which columns it can be.
    """
    if not layout.headerless:
        raise TrafficFileError(
            f"{path}: line 1 has {len(fields)} fields and no header row; this model reads "
            "only files whose first line is a header row naming the columns"
        )
    rows = _sample_rows(path, len(fields))
    same_width = [order for order in layout.headerless if len(order) == len(fields)]
    for order in same_width:
        if any(_fits(order, row, layout, strict=False) for row in rows):
            return order

    allowed = " or ".join(_describe_order(order, layout) for order in layout.headerless)
    message = (
        f"{path}: line 1 has {len(fields)} fields and no header row; a file without a "
        f"header row needs {allowed}"
    )
    for order in same_width:
        message += (
            f". The {len(order)} fields do not fit the columns of that layout: "
            + _first_misfit(order, rows[0], layout)
        )
    for order in layout.headerless:
        if len(order) == len(fields) + 1:
            missing = _missing_column_candidates(order, rows, layout)
            if missing:
                message += (
                    f". The values fit the {len(order)}-field layout without one column: {missing}"
                )
    raise TrafficFileError(
        message + ". Add the missing columns, or add a header row naming the columns"
    )


def _sample_rows(path: Path, width: int) -> list[list[str]]:
    """Return the fields of up to :data:`SAMPLED_LINES` non-empty lines with ``width`` fields."""
    rows: list[list[str]] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle):
            if len(rows) >= SAMPLED_LINES:
                break
            codec = "utf-8-sig" if number == 0 else "utf-8"
            try:
                text = raw.decode(codec).strip()
            except UnicodeDecodeError:
                continue
            if not text:
                continue
            row = [value.strip() for value in next(csv.reader(io.StringIO(text)))]
            if len(row) == width:
                rows.append(row)
    return rows


def _fits(order: tuple[str, ...], row: list[str], layout: TrafficLayout, *, strict: bool) -> bool:
    """Tell whether the value types of ``row`` fit ``order``.

    Numeric columns need a number or an empty value. With ``strict``, text
    columns also need a value that is not a number, which is too strict to
    accept a file but narrows down where a column is missing.
    """
    if len(order) != len(row):
        return False
    for name, value in zip(order, row, strict=True):
        if name in layout.ignored:
            continue
        if name in layout.numeric:
            if value and not _looks_numeric(value):
                return False
        elif strict and _looks_numeric(value):
            return False
    return True


def _first_misfit(order: tuple[str, ...], row: list[str], layout: TrafficLayout) -> str:
    """Describe the first value of line 1 that is not a number in a numeric column."""
    for name, value in zip(order, row, strict=True):
        if name in layout.numeric and value and not _looks_numeric(value):
            return f"line 1 has {value!r} in numeric column {name!r}"
    return "no line of the first lines has numbers in every numeric column"


def _missing_column_candidates(
    order: tuple[str, ...], rows: list[list[str]], layout: TrafficLayout
) -> str:
    """Name the columns of ``order`` whose removal makes a sampled line fit, or return ''.

    Neighbouring columns of the same type cannot be told apart, so the
    result names ranges such as ``'src_bytes' to 'dst_host_srv_rerror_rate'
    (37 columns)``.
    """
    candidates = [
        position
        for position in range(len(order))
        if any(
            _fits(order[:position] + order[position + 1 :], row, layout, strict=True)
            for row in rows
        )
    ]
    if not candidates:
        return ""
    ranges: list[list[int]] = []
    for position in candidates:
        if ranges and ranges[-1][-1] == position - 1:
            ranges[-1].append(position)
        else:
            ranges.append([position])
    parts = []
    for positions in ranges:
        first, last = order[positions[0]], order[positions[-1]]
        if len(positions) == 1:
            parts.append(repr(first))
        else:
            parts.append(f"one of {first!r} to {last!r} ({len(positions)} columns)")
    return " or ".join(parts)


def _describe_order(order: tuple[str, ...], layout: TrafficLayout) -> str:
    """Return e.g. ``43 fields (41 features, label, difficulty)`` for a column order."""
    n_features = sum(1 for name in order if name in layout.features)
    others = [name for name in order if name not in layout.features]
    return f"{len(order)} fields ({', '.join([f'{n_features} features', *others])})"


def iter_traffic_chunks(
    path: str | Path,
    layout: TrafficLayout,
    *,
    chunk_size: int = 100_000,
    columns: FileColumns | None = None,
) -> Iterator[TrafficChunk]:
    """Read a traffic file in chunks of at most ``chunk_size`` lines.

    Parameters
    ----------
    path : str or pathlib.Path
        CSV file checked by :func:`inspect_columns`.
    layout : TrafficLayout
        Columns the model accepts.
    chunk_size : int, default=100000
        Lines per chunk; memory use grows with it, not with the file size.
    columns : FileColumns or None, default=None
        Result of :func:`inspect_columns` when the caller already has it.

    Yields
    ------
    TrafficChunk
        Readable records with their line numbers, and the records left out.

    Raises
    ------
    TrafficFileError
        On the column problems listed in :func:`inspect_columns`, or when the
        rows of a chunk cannot be matched to its lines (a quoted value with a
        line break inside, which these datasets never contain).
    """
    if chunk_size < 1:
        raise ValueError(f"invalid chunk size {chunk_size}: must be a positive number of lines")
    path = Path(path)
    if columns is None:
        columns = inspect_columns(path, layout)

    with path.open("rb") as handle:
        if columns.header_lines:
            handle.readline()
        first_line = columns.header_lines + 1
        for block, n_lines in _line_blocks(handle, chunk_size):
            if first_line == 1 and block[:3] == b"\xef\xbb\xbf":
                block = block[3:]
            if not block:
                return
            chunk = _parse_block(block, n_lines, first_line, columns, layout, path)
            first_line += n_lines
            yield chunk


def _line_blocks(handle: BinaryIO, chunk_size: int) -> Iterator[tuple[memoryview, int]]:
    """Yield blocks of ``chunk_size`` whole lines, and the rest of the file last.

    Every block is a view of one buffer that is reused for the next block, so
    a block is valid only until the next one is requested. Reusing the buffer
    spares a fresh allocation and its page faults per chunk.

    Yields
    ------
    block : memoryview
        The lines, each with its line break except perhaps the file's last.
    n_lines : int
        Lines in ``block``: ``chunk_size``, or fewer in the last block.
    """
    buffer = bytearray(MIN_READ_BYTES)
    view = memoryview(buffer)
    start = end = 0  # the lines not yet yielded are buffer[start:end]
    breaks = 0  # line breaks in buffer[start:end]
    read_total = breaks_total = 0
    at_end = False
    while True:
        while breaks < chunk_size and not at_end:
            # Size the read from the line length seen so far, to read a chunk in one call.
            per_line = read_total / breaks_total if breaks_total else 0.0
            read_size = max(MIN_READ_BYTES, int(per_line * (chunk_size - breaks) * 1.1))
            tail = end - start
            if tail + read_size > len(buffer):
                # A quarter more, so that small changes in line length do not grow it again.
                grown = bytearray((tail + read_size) * 5 // 4)
                grown[:tail] = view[start:end]
                buffer, view = grown, memoryview(grown)
            elif start:
                view[:tail] = bytes(view[start:end])
            start, end = 0, tail
            n_read = handle.readinto(view[end : end + read_size])
            if not n_read:
                at_end = True
                break
            n_breaks = _count_breaks(buffer, end, end + n_read)
            breaks += n_breaks
            breaks_total += n_breaks
            read_total += n_read
            end += n_read

        if breaks >= chunk_size:
            cut = _cut_after_line(buffer, start, end, breaks - chunk_size)
            yield view[start:cut], chunk_size
            breaks -= chunk_size
            start = cut
            continue

        # The rest of the file; its last line may lack a line break.
        if end > start:
            yield view[start:end], breaks + (0 if buffer[end - 1] == NEWLINE else 1)
        return


def _count_breaks(buffer: bytearray, start: int, stop: int) -> int:
    """Count the line breaks in ``buffer[start:stop]``.

    numpy compares 1 MiB at a time without holding the GIL, while
    ``bytearray.count`` holds it and stalls the other pipeline threads.
    """
    data = np.frombuffer(buffer, dtype=np.uint8, count=stop - start, offset=start)
    total = 0
    for offset in range(0, len(data), MIN_READ_BYTES):
        total += int(np.count_nonzero(data[offset : offset + MIN_READ_BYTES] == NEWLINE))
    return total


def _cut_after_line(buffer: bytearray, start: int, end: int, after: int) -> int:
    """Return the offset in ``buffer`` just after the line break followed by ``after`` others.

    Only the tail of ``buffer[start:end]`` is scanned, because reads end a
    little past the cut.
    """
    window = MIN_READ_BYTES
    while True:
        low = max(start, end - window)
        tail = np.frombuffer(buffer, dtype=np.uint8, count=end - low, offset=low)
        positions = np.flatnonzero(tail == NEWLINE)
        del tail  # release the export, so the caller may replace the buffer
        if len(positions) > after:
            return low + int(positions[len(positions) - after - 1]) + 1
        window *= 2


def _line_starts(block: bytes) -> np.ndarray:
    """Return the byte offset of each line of ``block``, shape (n_lines,)."""
    newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == NEWLINE)
    starts = np.concatenate(([0], newlines + 1))
    return starts[starts < len(block)]


def _non_empty_lines(block: bytes, starts: np.ndarray) -> np.ndarray:
    """Return a bool mask (n_lines,) of lines with content; pyarrow skips the others."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.append(starts[1:], len(block))
    length = ends - starts
    ends_in_newline = data[ends - 1] == NEWLINE
    length = length - ends_in_newline
    crlf = ends_in_newline & (length >= 1) & (data[np.maximum(ends - 2, 0)] == ord("\r"))
    length = length - crlf
    return length > 0


def _parse_block(
    block: memoryview,
    n_lines: int,
    first_line: int,
    columns: FileColumns,
    layout: TrafficLayout,
    path: Path,
) -> TrafficChunk:
    """Parse one chunk of ``n_lines`` whole lines into a :class:`TrafficChunk`."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # Rows with the wrong number of fields are skipped by pyarrow and located by their text.
    wrong_width: list[str] = []

    def skip_row(row: pacsv.InvalidRow) -> str:
        wrong_width.append(row.text)
        return "skip"

    numeric = [name for name in columns.read if name in layout.numeric]
    # Text columns arrive dictionary-encoded and become pandas categoricals, so
    # the preprocessing looks up each distinct value once, not once per record.
    text_type = pa.dictionary(pa.int32(), pa.string())
    text = {name: text_type for name in columns.read if name not in layout.numeric}
    # One parsing thread: a caller such as metals detect runs the encoding and the
    # forward pass on the other cores, and pyarrow's own threads would compete with them.
    read_options = pacsv.ReadOptions(column_names=list(columns.names), use_threads=False)
    parse_options = pacsv.ParseOptions(invalid_row_handler=skip_row)
    try:
        table = pacsv.read_csv(
            pa.py_buffer(block),
            read_options=read_options,
            parse_options=parse_options,
            convert_options=pacsv.ConvertOptions(
                include_columns=list(columns.read),
                column_types={**text, **{name: pa.float64() for name in numeric}},
            ),
        )
        frame = _trimmed(table).to_pandas()
        invalid: dict[int, str] = {}
    except pa.ArrowInvalid:
        # A value that is not a number: parse this chunk as text and find the rows.
        wrong_width.clear()
        table = pacsv.read_csv(
            pa.py_buffer(block),
            read_options=read_options,
            parse_options=parse_options,
            convert_options=pacsv.ConvertOptions(
                include_columns=list(columns.read),
                column_types={**text, **{name: pa.string() for name in numeric}},
            ),
        )
        frame, invalid = _coerce_numeric(
            _trimmed(table).to_pandas(), numeric, booleans=layout.boolean_numbers
        )

    if not wrong_width and len(frame) == n_lines:
        # Every line is a record: a row consumes at least one non-empty line.
        bad: list[BadRecord] = []
        lines = np.arange(first_line, first_line + n_lines, dtype=np.int64)
    else:
        bad, lines = _match_lines(block, wrong_width, len(frame), first_line, columns, path)

    # Numbers that did not parse, then missing or infinite feature values.
    reasons = dict(invalid)
    required = [name for name in numeric if name in layout.features and name not in layout.nullable]
    for name in required:
        values = frame[name].to_numpy(dtype=np.float64)
        not_finite = ~np.isfinite(values)
        if not not_finite.any():
            continue
        # Columns are checked in layout order, so a row names its first bad column.
        for row in np.flatnonzero(not_finite):
            kind = "missing" if np.isnan(values[row]) else "infinite"
            reasons.setdefault(int(row), f"{kind} value in column '{name}'")
    text_required = [
        name
        for name in columns.read
        if name in layout.features and name not in layout.numeric and name not in layout.nullable
    ]
    for name in text_required:
        empty = (frame[name].isna() | (frame[name] == "")).to_numpy()
        for row in np.flatnonzero(empty):
            reasons.setdefault(int(row), f"missing value in column '{name}'")

    if reasons:
        drop = np.array(sorted(reasons), dtype=np.int64)
        bad.extend(BadRecord(int(lines[row]), reasons[int(row)]) for row in drop)
        keep = np.ones(len(frame), dtype=bool)
        keep[drop] = False
        frame = frame.loc[keep].reset_index(drop=True)
        lines = lines[keep]
    for name in columns.absent:
        frame[name] = layout.defaults[name]
    for name in layout.number_spelling & set(frame.columns):
        frame[name] = _spell_numbers(frame[name])
    bad.sort(key=lambda record: record.line)
    return TrafficChunk(frame=frame, lines=lines, bad=bad)


def _match_lines(
    block: memoryview,
    wrong_width: list[str],
    n_records: int,
    first_line: int,
    columns: FileColumns,
    path: Path,
) -> tuple[list[BadRecord], np.ndarray]:
    """Return the records skipped for their field count and the line of each parsed record."""
    block = bytes(block)  # a copy to search in; rows of the wrong width are rare
    starts = _line_starts(block)
    non_empty = _non_empty_lines(block, starts)
    bad_index = _locate_rows(block, starts, wrong_width, path, first_line)
    bad = [
        BadRecord(
            int(first_line + index), f"wrong number of fields (expected {len(columns.names)})"
        )
        for index in bad_index
    ]
    is_row = non_empty.copy()
    is_row[bad_index] = False
    row_index = np.flatnonzero(is_row)
    if len(row_index) != n_records:
        raise TrafficFileError(
            f"{path}: could not match the {n_records} records parsed from lines "
            f"{first_line}-{first_line + len(starts) - 1} to those lines; a quoted value "
            "probably contains a line break, which this reader does not accept"
        )
    return bad, (row_index + first_line).astype(np.int64)


def _trimmed(table: pa.Table) -> pa.Table:
    """Strip leading and trailing spaces from every text column, as training does."""
    import pyarrow as pa
    import pyarrow.compute as pacompute

    for position, column in enumerate(table.columns):
        if pa.types.is_string(column.type):
            trimmed = pacompute.utf8_trim_whitespace(column)
        elif pa.types.is_dictionary(column.type):
            trimmed = pa.chunked_array(
                [_trimmed_dictionary(chunk) for chunk in column.chunks], type=column.type
            )
        else:
            continue
        table = table.set_column(position, table.field(position), trimmed)
    return table


def _trimmed_dictionary(array: pa.DictionaryArray) -> pa.DictionaryArray:
    """Strip spaces from the distinct values of ``array``, merging values that become equal."""
    import pyarrow as pa
    import pyarrow.compute as pacompute

    dictionary = pacompute.utf8_trim_whitespace(array.dictionary)
    if dictionary.equals(array.dictionary):
        return array
    # " tcp" and "tcp" both become "tcp": encode the trimmed values again.
    encoded = dictionary.dictionary_encode()
    indices = encoded.indices.take(array.indices)
    return pa.DictionaryArray.from_arrays(indices, encoded.dictionary)


def _spell_numbers(values: pd.Series) -> pd.Series:
    """Rewrite the numeric strings of a text column as ``str(float(value))``."""
    import pandas as pd

    distinct = pd.Series(pd.unique(values.dropna()), dtype=object)
    as_number = pd.to_numeric(distinct, errors="coerce")
    spelled = distinct.where(as_number.isna(), as_number.astype(str))
    return values.map(dict(zip(distinct, spelled, strict=True)))


def _coerce_numeric(
    frame: pd.DataFrame, numeric: list[str], *, booleans: bool
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Convert text columns to float64, returning the rows whose values are not numbers."""
    import pandas as pd

    invalid: dict[int, str] = {}
    for name in numeric:
        original = frame[name]
        text = original.str.lower()
        if booleans:
            text = text.replace({"true": "1", "false": "0"})
        values = pd.to_numeric(text, errors="coerce")
        given = text.notna() & ~text.isin(["", "nan", "na", "null"])
        for row in np.flatnonzero((values.isna() & given).to_numpy()):
            value = original.iloc[row]
            invalid.setdefault(int(row), f"invalid number {value!r} in column '{name}'")
        frame[name] = values.astype(np.float64)
    return frame, invalid


def _locate_rows(
    block: bytes, starts: np.ndarray, texts: list[str], path: Path, first_line: int
) -> np.ndarray:
    """Return the line index inside ``block`` of each skipped row text, in order."""
    found: list[int] = []
    position = 0
    for text in texts:
        offset = block.find(text.encode("utf-8"), position)
        if offset < 0:
            raise TrafficFileError(
                f"{path}: could not locate a malformed record after line {first_line}: {text!r}"
            )
        found.append(int(np.searchsorted(starts, offset, side="right")) - 1)
        position = offset + max(len(text), 1)
    return np.array(found, dtype=np.int64)
