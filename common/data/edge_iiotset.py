"""Load Edge-IIoTset files (combined DNN/ML files or raw captures, 63 columns) into a raw table."""

from __future__ import annotations

import csv
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metals.common.data.blocks import empty_array, map_blocks
from metals.common.data.errors import DataError
from metals.common.data.table import (
    LABEL,
    LoadReport,
    RawTable,
    check_label_names,
    empty_columns_error,
)

if TYPE_CHECKING:
    # Imported where they are used; see metals.common.data.
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

logger = logging.getLogger(__name__)

NAME = "edge_iiotset"
SOURCE = (
    "the Kaggle dataset page "
    "https://www.kaggle.com/datasets/mohamedamineferrag/edgeiiotset-cyber-security-dataset-of-iot-iiot"
)
SUBFOLDERS = ("edge-iiotset", "edge_iiotset", "Edge-IIoTset")
COMBINED_FILES = ("DNN-EdgeIIoT-dataset.csv", "ML-EdgeIIoT-dataset.csv")

COLUMNS = [
    "frame.time", "ip.src_host", "ip.dst_host", "arp.dst.proto_ipv4", "arp.opcode",
    "arp.hw.size", "arp.src.proto_ipv4", "icmp.checksum", "icmp.seq_le",
    "icmp.transmit_timestamp", "icmp.unused", "http.file_data", "http.content_length",
    "http.request.uri.query", "http.request.method", "http.referer", "http.request.full_uri",
    "http.request.version", "http.response", "http.tls_port", "tcp.ack", "tcp.ack_raw",
    "tcp.checksum", "tcp.connection.fin", "tcp.connection.rst", "tcp.connection.syn",
    "tcp.connection.synack", "tcp.dstport", "tcp.flags", "tcp.flags.ack", "tcp.len",
    "tcp.options", "tcp.payload", "tcp.seq", "tcp.srcport", "udp.port", "udp.stream",
    "udp.time_delta", "dns.qry.name", "dns.qry.name.len", "dns.qry.qu", "dns.qry.type",
    "dns.retransmission", "dns.retransmit_request", "dns.retransmit_request_in",
    "mqtt.conack.flags", "mqtt.conflag.cleansess", "mqtt.conflags", "mqtt.hdrflags",
    "mqtt.len", "mqtt.msg_decoded_as", "mqtt.msg", "mqtt.msgtype", "mqtt.proto_len",
    "mqtt.protoname", "mqtt.topic", "mqtt.topic_len", "mqtt.ver", "mbtcp.len",
    "mbtcp.trans_id", "mbtcp.unit_id", "Attack_label", "Attack_type",
]  # fmt: skip
ATTACK_LABEL = "Attack_label"
ATTACK_TYPE = "Attack_type"

# Identifiers, timestamps and payloads: they name hosts or capture times and
# would give the label away, so they are not features.
DROPPED = [
    "frame.time", "ip.src_host", "ip.dst_host", "arp.src.proto_ipv4", "arp.dst.proto_ipv4",
    "http.file_data", "http.request.full_uri", "icmp.transmit_timestamp",
    "http.request.uri.query", "tcp.options", "tcp.payload", "tcp.srcport", "tcp.dstport",
    "udp.port", "mqtt.msg",
]  # fmt: skip
CATEGORICAL = [
    "http.request.method", "http.referer", "http.request.version", "dns.qry.name.len",
    "mqtt.conack.flags", "mqtt.protoname", "mqtt.topic",
]  # fmt: skip
NUMERIC = [c for c in COLUMNS if c not in DROPPED + CATEGORICAL + [ATTACK_LABEL, ATTACK_TYPE]]
# Dropped columns that hold numbers in a well-formed row: text there marks a
# row whose values are shifted into the wrong columns.
# NOTE: this shift rule is checked on the raw MITM capture only; the combined
# Kaggle files were not available to confirm that their port columns never
# hold text in well-formed rows.
SHIFT_CHECK = ["icmp.transmit_timestamp", "tcp.srcport", "tcp.dstport", "udp.port"]
# Text columns that are neither features nor checks are not read at all.
NOT_READ = [c for c in DROPPED if c not in SHIFT_CHECK]

CLASSES_15 = [
    "Normal", "Backdoor", "DDoS_HTTP", "DDoS_ICMP", "DDoS_TCP", "DDoS_UDP", "Fingerprinting",
    "MITM", "Password", "Port_Scanning", "Ransomware", "SQL_injection", "Uploading",
    "Vulnerability_scanner", "XSS",
]  # fmt: skip
# The 6-class grouping of the Edge-IIoTset authors.
GROUPS_6 = {
    "Normal": "Normal",
    **dict.fromkeys(["DDoS_HTTP", "DDoS_ICMP", "DDoS_TCP", "DDoS_UDP"], "DDoS"),
    **dict.fromkeys(
        ["Port_Scanning", "Fingerprinting", "Vulnerability_scanner"], "Information_gathering"
    ),
    "MITM": "MITM",
    **dict.fromkeys(["XSS", "SQL_injection", "Uploading"], "Injection"),
    **dict.fromkeys(["Backdoor", "Password", "Ransomware"], "Malware"),
}
CLASSES_6 = ["Normal", "DDoS", "Information_gathering", "MITM", "Injection", "Malware"]
LABEL_GROUPINGS = ("default", "15", "6", "2", "binary")


def label_mapping(labels: str) -> tuple[dict[str, str], list[str]]:
    """Return the attack-type-to-class map and the class order for a grouping.

    Parameters
    ----------
    labels : str
        ``"default"`` or ``"15"`` for the 15 attack types, ``"6"`` for the
        authors' 6 groups, ``"2"`` or ``"binary"`` for normal against attack.

    Raises
    ------
    DataError
        If ``labels`` is not one of those.
    """
    if labels in ("default", "15"):
        return {name: name for name in CLASSES_15}, list(CLASSES_15)
    if labels == "6":
        return dict(GROUPS_6), list(CLASSES_6)
    if labels in ("2", "binary"):
        mapping = {name: ("Normal" if name == "Normal" else "Attack") for name in CLASSES_15}
        return mapping, ["Normal", "Attack"]
    raise DataError(
        f"invalid value {labels!r} for 'labels' with dataset edge_iiotset: "
        f"allowed are {', '.join(LABEL_GROUPINGS)}"
    )


def input_files(data_dir: Path) -> list[Path]:
    """Return the files to read: a combined file if present, else every raw capture.

    ``DNN-EdgeIIoT-dataset.csv`` is preferred, then ``ML-EdgeIIoT-dataset.csv``;
    without either, every ``*.csv`` in an Edge-IIoTset subfolder is read as a
    raw per-attack capture.

    Raises
    ------
    DataError
        If no file is found.
    """
    folders = [data_dir / name for name in SUBFOLDERS] + [data_dir]
    for file in COMBINED_FILES:
        for folder in folders:
            if (folder / file).is_file():
                return [folder / file]
    for folder in folders[:-1]:
        captures = sorted(folder.glob("*.csv"))
        if captures:
            return captures
    tried = ", ".join(str(folder) for folder in folders)
    raise DataError(
        f"dataset file {COMBINED_FILES[0]!r} not found (nor raw capture files in an "
        f"edge-iiotset subfolder); looked in {tried}. Get it from {SOURCE} and put it "
        "there, or point data_dir=DIR (or METALS_DATA_DIR) at the folder that holds it"
    )


def _check_header_and_tail(path: Path) -> None:
    """Raise unless the header has the 63 columns and the last line is complete."""
    with path.open("rb") as handle:
        header = handle.readline().decode("utf-8-sig", errors="replace").strip()
        if not header:
            raise DataError(f"{path}: the file is empty; download or copy it again")
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(size - 65536, 0))
        tail = handle.read().decode("utf-8", errors="replace").rstrip("\r\n")
    names = [name.strip() for name in next(csv.reader([header]))]
    missing = [name for name in COLUMNS if name not in names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; an Edge-IIoTset file has the "
            f"{len(COLUMNS)} columns of the Kaggle release, from 'frame.time' to "
            "'Attack_type'. Check that the file is an Edge-IIoTset file"
        )
    last = tail.rsplit("\n", 1)[-1]
    if last.strip() != header and last.count(",") + 1 < len(names):
        raise DataError(
            f"{path}: the last line has {last.count(',') + 1} fields, fewer than the "
            f"{len(names)} of the header; the file is truncated. Download or copy it again"
        )


# Bytes of CSV text that one pyarrow task parses. Small blocks stay in the
# CPU cache. On the 2.2M-row file of bench/bench_prepare.py (2-core Xeon,
# loaded by other jobs), the parse took about 5.1 s of CPU time with 1 or
# 2 MiB blocks, 6.3 s with 16 MiB and 10.2 s with 64 MiB.
_BLOCK_BYTES = 1 << 21
# The parse allocates from the C library's malloc, not pyarrow's default
# pool (mimalloc in pyarrow 26). With mimalloc the same parse spent 0.8 to
# 2 s of system (kernel) time, with malloc about 0.5 s.

# pyarrow's message when a value does not convert to the requested column type.
_CONVERSION_ERROR = "CSV conversion error"
_READ_COLUMNS = [name for name in COLUMNS if name not in NOT_READ]


def _column_types(*, as_text: bool) -> dict[str, pa.DataType]:
    """Return the Arrow type of each read column: numbers as float64, or all as text.

    The fast read converts numbers while it parses the file. A file with text
    in a numeric column (shifted or mixed-type rows) is read again as text.
    """
    import pyarrow as pa

    if as_text:
        return dict.fromkeys(_READ_COLUMNS, pa.string())
    text = pa.dictionary(pa.int32(), pa.string())
    return {
        name: (text if name in CATEGORICAL or name == ATTACK_TYPE else pa.float64())
        for name in _READ_COLUMNS
    }


def _read_table(
    path: Path, column_types: dict[str, pa.DataType], malformed: list[tuple[int | None, str]]
) -> pa.Table:
    """Parse the listed columns of ``path``, skipping lines of the wrong width.

    Raises
    ------
    pyarrow.ArrowInvalid
        If a value does not convert to its column's type.
    DataError
        If the file cannot be parsed as CSV.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    def skip_malformed(row: pacsv.InvalidRow) -> str:
        malformed.append((row.number, row.text))
        return "skip"

    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=True, block_size=_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(invalid_row_handler=skip_malformed),
            convert_options=pacsv.ConvertOptions(
                column_types=column_types,
                include_columns=list(column_types),
                strings_can_be_null=True,
                null_values=[""],
            ),
            memory_pool=pa.system_memory_pool(),
        )
    except pa.ArrowInvalid as error:
        if _CONVERSION_ERROR in str(error):
            raise
        raise DataError(f"{path}: cannot parse the file as CSV ({error})") from None


def _read_columns(path: Path, malformed: list[tuple[int | None, str]]) -> pa.Table:
    """Read with numeric columns as float64, or every column as text if that fails."""
    import pyarrow as pa

    # NOTE: a file with any shifted row (the raw MITM capture has 382) pays for
    # both reads. The benchmark's generated file has none, so it times only the
    # float64 read.
    try:
        return _read_table(path, _column_types(as_text=False), malformed)
    except pa.ArrowInvalid as error:
        logger.info("%s: reading every column as text (%s)", path, error)
    malformed.clear()
    return _read_table(path, _column_types(as_text=True), malformed)


def _fill_numeric(column: pa.ChunkedArray, out: np.ndarray) -> np.ndarray | None:
    """Write a column's values as float64 into ``out`` and return its text mask.

    Empty values become NaN and are not text. A value that is not a number
    becomes NaN and is True in the returned mask. ``None`` means no text.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        numbers = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        strings = column.to_pandas()
        out[:] = pd.to_numeric(strings, errors="coerce").to_numpy(dtype=np.float64)
        blank = strings.isna().to_numpy() | (strings.str.strip() == "").to_numpy()
        return np.isnan(out) & ~blank
    chunks = [chunk.to_numpy(zero_copy_only=False) for chunk in numbers.chunks]
    np.concatenate(chunks or [np.empty(0)], out=out)
    return None


def _text_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Return category codes (-1 for empty) and the sorted, trimmed distinct values.

    The trimming and the number spelling (``0`` and ``0.0`` alike) run once
    per distinct value of the chunks' dictionaries, not once per row.
    """
    import pyarrow as pa

    chunks = [
        chunk if pa.types.is_dictionary(chunk.type) else chunk.dictionary_encode()
        for chunk in column.chunks
    ]
    raw = [chunk.dictionary.to_pylist() for chunk in chunks]
    distinct = sorted(set().union(*raw))
    spelled = dict(zip(distinct, _spell(distinct), strict=True))
    categories = sorted(set(spelled.values()))
    position = {name: code for code, name in enumerate(categories)}
    codes = np.empty(len(column), dtype=np.int32)
    start = 0
    for chunk, values in zip(chunks, raw, strict=True):
        # Empty values index the trailing -1.
        remap = np.array([position[spelled[value]] for value in values] + [-1], dtype=np.int32)
        indices = chunk.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
        codes[start : start + len(chunk)] = remap[indices]
        start += len(chunk)
    return codes, categories


def _spell(values: list[str]) -> list[str]:
    """Return trimmed values with numbers in one spelling (``0`` and ``0.0`` alike)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(pa.array(values, pa.string())).to_pylist()
    trimmed = pd.Series(trimmed, dtype="object")
    as_number = pd.to_numeric(trimmed, errors="coerce").astype("float64")
    return trimmed.where(as_number.isna(), as_number.astype(str)).astype(str).tolist()


def _check_labels(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    """Return each row's position in ``CLASSES_15``; raise on an empty or unknown label."""
    codes, names = _text_codes(column)
    if np.any(codes < 0) or not set(names) <= set(CLASSES_15):
        labels = column.to_pandas().astype("string").str.strip()
        check_label_names(labels.fillna("<empty>"), dict.fromkeys(CLASSES_15), path)
    remap = np.array([CLASSES_15.index(name) for name in names], dtype=np.int8)
    return remap[codes]


def _keep_rows(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Return the rows of a Fortran-ordered (n_rows, n_columns) matrix where ``keep`` is True."""
    kept_rows = empty_array((int(np.count_nonzero(keep)), values.shape[1]), order="F")
    for position in range(values.shape[1]):
        np.compress(keep, values[:, position], out=kept_rows[:, position])
    return kept_rows


def read_edge_iiotset_file(path: Path, report: LoadReport) -> pd.DataFrame:
    """Read and clean one Edge-IIoTset file in the 63-column layout.

    Rows with the wrong number of fields, text in a numeric column (shifted
    or mixed-type rows), an empty, NaN or infinite value, or an
    ``Attack_label`` that contradicts ``Attack_type`` are dropped and counted
    in ``report`` by reason.

    Parameters
    ----------
    path : Path
        A combined Kaggle file or a raw capture file.
    report : LoadReport
        Updated with the file, rows read and rows dropped.

    Returns
    -------
    pandas.DataFrame
        Numeric features (float64, one block), categorical features and the
        attack type in column ``label`` (category dtype).

    Raises
    ------
    DataError
        On an empty file, missing columns, a truncated last line or an
        attack type not in the 15 classes.
    """
    _check_header_and_tail(path)
    # Line number (None when pyarrow parses blocks in parallel) and text of
    # each line with the wrong number of fields.
    malformed: list[tuple[int | None, str]] = []
    table = _read_columns(path, malformed)
    table = table.rename_columns([name.strip() for name in table.column_names])
    rows = table.num_rows
    report.files.append(str(path))
    report.rows_read += rows + len(malformed)
    report.drop("wrong number of fields", len(malformed))
    if malformed:
        # Parallel parsing may report skipped lines out of file order.
        number, text = malformed[0]
        example = f"line {number}" if number is not None else f"{text[:80]!r}"
        logger.warning(
            "%s: skipped %s line(s) with the wrong number of fields, for example %s",
            path,
            len(malformed),
            example,
        )
    if rows == 0:
        raise DataError(f"{path}: the file contains no records; download or copy it again")

    # A worker thread maps the numeric matrix and copies the columns into it
    # while this thread reads Attack_label, checks the shift columns and
    # encodes the labels and the text columns. Both spend much of their time
    # in the kernel, numpy or pyarrow with the GIL released, so they overlap.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="metals-fill") as pool:
        filled = pool.submit(_fill_matrix, table, NUMERIC)
        attack_label = np.empty(rows)
        _fill_numeric(table.column(ATTACK_LABEL), attack_label)
        shift_texts = [_text_mask(table.column(name)) for name in SHIFT_CHECK]
        label_codes = _check_labels(table.column(ATTACK_TYPE), path)
        categorical = {name: _text_codes(table.column(name)) for name in CATEGORICAL}
        numbers, numeric_texts = filled.result()
    del table

    # Text in any numeric column means the row is shifted or mixed-type.
    shifted = np.zeros(rows, dtype=bool)
    texts = [*shift_texts, *numeric_texts]
    for name, text in zip([*SHIFT_CHECK, *NUMERIC], texts, strict=True):
        if text is not None:
            report.drop(f"shifted row (text in {name})", int(np.count_nonzero(text & ~shifted)))
            shifted |= text

    finite, has_value = _scan_numbers(numbers)
    empty = [name for name, present in zip(NUMERIC, has_value, strict=True) if not present]
    empty += [name for name, (codes, _) in categorical.items() if not np.any(codes >= 0)]
    if empty:
        raise empty_columns_error(empty, path)

    # Infinite values count as missing, as in the authors' preprocessing.
    missing = ~finite
    for codes, _ in categorical.values():
        missing |= codes < 0
    missing &= ~shifted
    report.drop("NaN, inf or empty value", int(np.count_nonzero(missing)))
    is_normal = label_codes == CLASSES_15.index("Normal")
    contradicts = ~shifted & ~missing & ((attack_label == 0) != is_normal)
    report.drop("Attack_label contradicts Attack_type", int(np.count_nonzero(contradicts)))

    keep = ~(shifted | missing | contradicts)
    if keep.all():
        # Every category occurs, because _text_codes takes them from the chunks'
        # dictionaries. pyarrow 26 builds a chunk's dictionary from the values
        # in that chunk, both in the CSV reader and in dictionary_encode.
        frame = _build_frame(numbers, categorical, label_codes)
    else:
        # Keep only the categories that occur, so that dropped rows leave none behind.
        categorical = {
            name: _drop_unused(codes[keep], names) for name, (codes, names) in categorical.items()
        }
        frame = _build_frame(_keep_rows(numbers, keep), categorical, label_codes[keep])
    logger.info("read %s: %s rows, %s kept", path, report.rows_read, len(frame))
    return frame


def _fill_matrix(table: pa.Table, names: list[str]) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Copy the columns ``names`` of ``table`` into a float64 matrix.

    Returns
    -------
    matrix : numpy.ndarray
        float64, shape (n_rows, len(names)), Fortran-ordered, so that the
        matrix of the ``NUMERIC`` columns becomes the frame's single float64
        block without a copy.
    texts : list[numpy.ndarray | None]
        Text mask of each column, see :func:`_fill_numeric`.
    """
    matrix = empty_array((table.num_rows, len(names)), order="F")
    texts = [
        _fill_numeric(table.column(name), out) for name, out in zip(names, matrix.T, strict=True)
    ]
    return matrix, texts


def _text_mask(column: pa.ChunkedArray) -> np.ndarray | None:
    """Return the text mask of a column whose values are not kept, see :func:`_fill_numeric`."""
    import pyarrow as pa

    if column.type == pa.float64():
        return None
    return _fill_numeric(column, np.empty(len(column)))


def _scan_numbers(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Find the rows with only finite values and the columns with any value, in row blocks.

    Parameters
    ----------
    numbers : numpy.ndarray
        float64, shape (n_rows, n_columns).

    Returns
    -------
    finite : numpy.ndarray
        bool, shape (n_rows,), True where every value of the row is finite.
    has_value : numpy.ndarray
        bool, shape (n_columns,), True where the column contains a value
        that is not NaN.
    """
    finite = np.empty(len(numbers), dtype=bool)

    def scan_block(start: int, stop: int) -> np.ndarray:
        block_finite = np.isfinite(numbers[start:stop])
        finite[start:stop] = block_finite.all(axis=1)
        return block_finite.any(axis=0)

    has_value = np.zeros(numbers.shape[1], dtype=bool)
    for block_has_finite in map_blocks(scan_block, len(numbers)):
        has_value |= block_has_finite
    # A column without a finite value may still contain infinities.
    for position in np.flatnonzero(~has_value):
        has_value[position] = not np.isnan(numbers[:, position]).all()
    return finite, has_value


def _drop_unused(codes: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Return the codes and the names of only the categories that occur in ``codes``.

    Parameters
    ----------
    codes : numpy.ndarray
        int32, shape (n_rows,), positions in ``names`` (-1 for empty).
    names : list[str]
        Category names.
    """
    used = np.bincount(codes[codes >= 0], minlength=len(names)) > 0
    remap = np.full(len(names) + 1, -1, dtype=np.int32)
    remap[np.flatnonzero(used)] = np.arange(np.count_nonzero(used), dtype=np.int32)
    used_names = [category for category, present in zip(names, used, strict=True) if present]
    # Code -1 (empty) indexes the trailing -1 of remap.
    return remap[codes], used_names


def _build_frame(
    numbers: np.ndarray,
    categorical: dict[str, tuple[np.ndarray, list[str]]],
    label_codes: np.ndarray,
) -> pd.DataFrame:
    """Return the frame of numeric, categorical and label columns, sharing ``numbers``.

    Parameters
    ----------
    numbers : numpy.ndarray
        float64, shape (n_rows, len(NUMERIC)), Fortran-ordered so that it
        becomes the frame's numeric block without a copy.
    categorical : dict[str, tuple[numpy.ndarray, list[str]]]
        Per categorical column, codes of shape (n_rows,) (-1 for empty) and
        the category names, each of which occurs in the codes.
    label_codes : numpy.ndarray
        Position of each row's attack type in ``CLASSES_15``, shape (n_rows,).
    """
    import pandas as pd

    frame = pd.DataFrame(numbers, columns=list(NUMERIC), copy=False)
    for name, (codes, names) in categorical.items():
        frame[name] = pd.Categorical.from_codes(codes, categories=names)
    frame[LABEL] = pd.Categorical.from_codes(label_codes, categories=CLASSES_15)
    return frame


def load_edge_iiotset(data_dir: Path, labels: str = "default") -> RawTable:
    """Load the Edge-IIoTset file(s) found in ``data_dir``.

    Parameters
    ----------
    data_dir : Path
        Data directory; see :func:`input_files` for the files looked for.
    labels : str, default="default"
        Label grouping, see :func:`label_mapping`.

    Returns
    -------
    RawTable
        All rows as training rows; the global test set is split off later.
    """
    import pandas as pd

    label_map, class_names = label_mapping(labels)
    report = LoadReport()
    frames = [read_edge_iiotset_file(path, report) for path in input_files(data_dir)]
    table = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return RawTable(
        name=NAME,
        train=table,
        test=None,
        numeric=list(NUMERIC),
        categorical=list(CATEGORICAL),
        label_map=label_map,
        class_names=class_names,
        report=report,
    )
