"""Load the TON_IoT telemetry files, one CSV per IoT device type, into a raw table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metals.common.data.errors import DataError
from metals.common.data.table import (
    GROUP,
    LABEL,
    LoadReport,
    RawTable,
    check_empty_columns,
    check_label_names,
    check_short_rows,
    parse_numeric,
)

if TYPE_CHECKING:
    # Imported where it is used; see metals.common.data.
    import pandas as pd

logger = logging.getLogger(__name__)

NAME = "ton_iot"
SOURCE = (
    "the dataset author's repository https://github.com/Ferrag/DDoS-attacks-dataset "
    "(branch main) or `metals data download dataset=ton_iot`"
)
SUBFOLDERS = ("ton-iot-telemetry", "ton_iot", "")
FILE_PATTERN = "Train_Test_IoT_{device}.csv"

# Sensor columns of each device file: (numeric, categorical).
DEVICES: dict[str, tuple[list[str], list[str]]] = {
    "Fridge": (["fridge_temperature"], ["temp_condition"]),
    "GPS_Tracker": (["latitude", "longitude"], []),
    "Garage_Door": (["sphone_signal"], ["door_state"]),
    "Modbus": (
        [
            "FC1_Read_Input_Register",
            "FC2_Read_Discrete_Value",
            "FC3_Read_Holding_Register",
            "FC4_Read_Coil",
        ],
        [],
    ),
    "Motion_Light": (["motion_status"], ["light_status"]),
    "Thermostat": (["current_temperature", "thermostat_status"], []),
    "Weather": (["temperature", "pressure", "humidity"], []),
}
# Timestamps identify the capture window of each attack, so they would give
# the label away; they are read for the layout check and dropped.
DROPPED = ["ts", "date", "time"]
TYPE = "type"
BINARY = "label"
ATTACK_TYPES = [
    "normal",
    "backdoor",
    "ddos",
    "injection",
    "password",
    "ransomware",
    "scanning",
    "xss",
]
LABEL_GROUPINGS = ("default", "type", "binary")
ABSENT = "n/a"  # categorical value of a sensor the row's device does not have
BOOLEAN_TEXT = {"true": "1", "false": "0"}


def label_mapping(labels: str) -> tuple[dict[str, str], list[str]]:
    """Return the attack-type-to-class map and the class order for a grouping.

    Parameters
    ----------
    labels : str
        ``"default"`` or ``"type"`` for the 8 attack types (``normal``
        included), ``"binary"`` for normal against attack.

    Raises
    ------
    DataError
        If ``labels`` is not one of those.
    """
    if labels in ("default", "type"):
        return {name: name for name in ATTACK_TYPES}, list(ATTACK_TYPES)
    if labels == "binary":
        mapping = {name: ("normal" if name == "normal" else "attack") for name in ATTACK_TYPES}
        return mapping, ["normal", "attack"]
    raise DataError(
        f"invalid value {labels!r} for 'labels' with dataset ton_iot: "
        f"allowed are {', '.join(LABEL_GROUPINGS)}"
    )


def input_files(data_dir: Path) -> list[Path]:
    """Return every device file present, looked for in the known subfolders.

    Raises
    ------
    DataError
        If no device file is found.
    """
    found = []
    for device in DEVICES:
        for folder in SUBFOLDERS:
            path = data_dir / folder / FILE_PATTERN.format(device=device)
            if path.is_file():
                found.append(path)
                break
    if not found:
        tried = ", ".join(str(data_dir / folder) for folder in SUBFOLDERS)
        raise DataError(
            f"no TON_IoT device file ({FILE_PATTERN.format(device='<Device>')}) found in "
            f"{tried}. Get the files from {SOURCE} and put them there, or point "
            "data_dir=DIR (or METALS_DATA_DIR) at the folder that holds them"
        )
    return found


def read_device_file(path: Path, device: str, report: LoadReport) -> pd.DataFrame:
    """Read and clean one device file.

    Header names and values are stripped of spaces and the byte-order mark;
    ``true``/``false`` become 1/0. Rows with an empty field or a
    non-numeric sensor value are dropped and counted in ``report``.

    Parameters
    ----------
    path : Path
        A ``Train_Test_IoT_<Device>.csv`` file.
    device : str
        Device type, a key of ``DEVICES``.
    report : LoadReport
        Updated with the file, rows read and rows dropped.

    Returns
    -------
    pandas.DataFrame
        The device's sensor columns, ``label`` (the attack type) and
        ``device``.

    Raises
    ------
    DataError
        On an empty file, missing columns, a truncated line, an empty column
        or an unknown attack type.
    """
    import pandas as pd

    numeric, categorical = DEVICES[device]
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            encoding="utf-8-sig",
            keep_default_na=False,
            na_values=[""],
            skipinitialspace=True,
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; download or copy it again") from None
    except pd.errors.ParserError as error:
        raise DataError(f"{path}: cannot parse the file as CSV ({error})") from None
    frame.columns = [str(column).strip().lstrip("\ufeff") for column in frame.columns]

    expected = DROPPED + numeric + categorical + [BINARY, TYPE]
    missing = [column for column in expected if column not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; a TON_IoT {device} file has the "
            f"columns {expected}. Check that the file is the right device file"
        )
    if len(frame) == 0:
        raise DataError(f"{path}: the file contains no records; download or copy it again")
    check_short_rows(frame, TYPE, path, first_line=2)

    for column in categorical + numeric + [TYPE]:
        frame[column] = frame[column].str.strip()
    for column in numeric:
        frame[column] = frame[column].str.lower().replace(BOOLEAN_TEXT)
    frame[TYPE] = frame[TYPE].str.lower()
    check_empty_columns(frame, numeric + categorical, path)
    check_label_names(frame[TYPE], dict.fromkeys(ATTACK_TYPES), path)

    rows_read = len(frame)
    empty = frame[numeric + categorical].isna().any(axis=1).to_numpy()
    not_numeric = parse_numeric(frame, numeric, path, first_line=2, strict=False) & ~empty
    is_attack = frame[BINARY].str.strip().to_numpy() != "0"
    contradicts = ~(empty | not_numeric) & (is_attack == (frame[TYPE] == "normal").to_numpy())
    keep = ~(empty | not_numeric | contradicts)
    report.files.append(str(path))
    report.rows_read += rows_read
    report.drop(f"{device}: empty field", int(np.count_nonzero(empty)))
    report.drop(f"{device}: non-numeric sensor value", int(np.count_nonzero(not_numeric)))
    report.drop(f"{device}: label contradicts type", int(np.count_nonzero(contradicts)))

    cleaned = frame.loc[keep, numeric + categorical].copy()
    cleaned[LABEL] = frame.loc[keep, TYPE]
    cleaned[GROUP] = device
    logger.info("read %s: %s rows, %s kept", path, rows_read, len(cleaned))
    return cleaned


def load_ton_iot(data_dir: Path, labels: str = "default") -> RawTable:
    """Load every TON_IoT device file found into one table.

    A sensor that a device does not have is 0 (numeric) or ``"n/a"``
    (categorical) in that device's rows. The device type of every row is
    kept in column ``device`` for the natural partition.

    Parameters
    ----------
    data_dir : Path
        Data directory; files are looked for in ``ton-iot-telemetry/``,
        ``ton_iot/`` and the folder itself.
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
    frames = []
    for path in input_files(data_dir):
        device = path.stem.removeprefix("Train_Test_IoT_")
        frames.append(read_device_file(path, device, report))
    absent = sorted(set(DEVICES) - {str(frame[GROUP].iloc[0]) for frame in frames if len(frame)})
    if absent:
        report.notes.append(f"device file(s) not found or empty: {', '.join(absent)}")

    devices = [str(frame[GROUP].iloc[0]) for frame in frames if len(frame)]
    numeric = [column for device in devices for column in DEVICES[device][0]]
    categorical = [column for device in devices for column in DEVICES[device][1]]
    table = pd.concat(frames, ignore_index=True)
    table[numeric] = table[numeric].fillna(0.0)
    table[categorical] = table[categorical].fillna(ABSENT)
    return RawTable(
        name=NAME,
        train=table,
        test=None,
        numeric=numeric,
        categorical=categorical,
        label_map=label_map,
        class_names=class_names,
        report=report,
    )
