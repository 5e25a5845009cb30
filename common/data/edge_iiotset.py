"""Load Edge-IIoTset files (combined DNN/ML files or raw captures, 63 columns) into a raw table."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from metals.common.data.errors import DataError
from metals.common.data.table import (
    LABEL,
    LoadReport,
    RawTable,
    check_empty_columns,
    check_label_names,
)

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
        "there, or point --data-dir (or METALS_DATA_DIR) at the folder that holds it"
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


def _numeric_column(
    column: pa.ChunkedArray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return float64 values and a text mask for a column of strings.

    Empty strings become NaN (not text). A value that is not a number is NaN
    in the values and True in the mask.
    """
    try:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        return values, np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    strings = column.to_pandas()
    converted = pd.to_numeric(strings, errors="coerce").to_numpy(dtype=np.float64)
    blank = strings.isna().to_numpy() | (strings.str.strip() == "").to_numpy()
    return converted, np.isnan(converted) & ~blank


def _categorical_column(column: pa.ChunkedArray) -> pd.Categorical:
    """Return stripped strings with numbers in one spelling (``0`` and ``0.0`` alike).

    The column is dictionary-encoded first, so the spelling fix runs once per
    distinct value, not once per row.
    """
    encoded = pc.utf8_trim_whitespace(column).combine_chunks().dictionary_encode()
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    valid = encoded.is_valid().to_numpy(zero_copy_only=False)
    dictionary = pd.Series(encoded.dictionary.to_pylist(), dtype="object")
    as_number = pd.to_numeric(dictionary, errors="coerce").astype("float64")
    spelled = dictionary.where(as_number.isna(), as_number.astype(str)).astype(str)
    categories = sorted(set(spelled))
    position = {name: code for code, name in enumerate(categories)}
    remap = np.array([position[name] for name in spelled], dtype=np.int64)
    codes = np.full(len(indices), -1, dtype=np.int64)
    codes[valid] = remap[indices[valid].astype(np.int64)]
    return pd.Categorical.from_codes(codes, categories=categories)


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
        Numeric features (float64), categorical features (category dtype)
        and the attack type in column ``label``.

    Raises
    ------
    DataError
        On an empty file, missing columns, a truncated last line or an
        attack type not in the 15 classes.
    """
    _check_header_and_tail(path)
    malformed: list[int] = []

    def skip_malformed(row: pacsv.InvalidRow) -> str:
        malformed.append(row.number or -1)
        return "skip"

    read_columns = [name for name in COLUMNS if name not in NOT_READ]
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(invalid_row_handler=skip_malformed),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(read_columns, pa.string()),
                include_columns=read_columns,
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except pa.ArrowInvalid as error:
        raise DataError(f"{path}: cannot parse the file as CSV ({error})") from None
    table = table.rename_columns([name.strip() for name in table.column_names])
    rows = table.num_rows
    report.files.append(str(path))
    report.rows_read += rows + len(malformed)
    report.drop("wrong number of fields", len(malformed))
    if malformed:
        logger.warning(
            "%s: skipped %s line(s) with the wrong number of fields (first at line %s)",
            path,
            len(malformed),
            malformed[0],
        )
    if rows == 0:
        raise DataError(f"{path}: the file contains no records; download or copy it again")

    labels = table.column(ATTACK_TYPE).to_pandas().astype("string").str.strip()
    check_label_names(labels.fillna("<empty>"), dict.fromkeys(CLASSES_15), path)

    # Text in any numeric column means the row is shifted or mixed-type.
    shifted = np.zeros(rows, dtype=bool)
    for name in SHIFT_CHECK:
        _, text = _numeric_column(table.column(name))
        report.drop(f"shifted row (text in {name})", int(np.count_nonzero(text & ~shifted)))
        shifted |= text
    frame = pd.DataFrame(index=pd.RangeIndex(rows))
    for name in NUMERIC:
        values, text = _numeric_column(table.column(name))
        report.drop(f"shifted row (text in {name})", int(np.count_nonzero(text & ~shifted)))
        shifted |= text
        frame[name] = values
    for name in CATEGORICAL:
        frame[name] = _categorical_column(table.column(name))
    attack_label, _ = _numeric_column(table.column(ATTACK_LABEL))
    del table
    check_empty_columns(frame, NUMERIC + CATEGORICAL, path)

    # Infinite values count as missing, as in the authors' preprocessing.
    numbers = frame[NUMERIC].to_numpy()
    missing = ~shifted & (
        ~np.isfinite(numbers).all(axis=1) | frame[CATEGORICAL].isna().any(axis=1).to_numpy()
    )
    report.drop("NaN, inf or empty value", int(np.count_nonzero(missing)))
    contradicts = ~shifted & ~missing & ((attack_label == 0) != (labels == "Normal").to_numpy())
    report.drop("Attack_label contradicts Attack_type", int(np.count_nonzero(contradicts)))

    keep = ~(shifted | missing | contradicts)
    frame[LABEL] = labels.to_numpy()
    frame = frame.loc[keep].reset_index(drop=True)
    for name in CATEGORICAL:
        frame[name] = frame[name].cat.remove_unused_categories()
    logger.info("read %s: %s rows, %s kept", path, report.rows_read, len(frame))
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
