from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metals.common.data import DataError, partition_indices, prepare_dataset
from metals.common.data.summary import describe_federation
from metals.common.data.table import LoadReport
from metals.common.data.ton_iot import ATTACK_TYPES, DEVICES, read_device_file

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_DEVICES = ["Fridge", "GPS_Tracker", "Garage_Door", "Modbus", "Motion_Light", "Thermostat"]


def shared_data_dir() -> Path:
    """Return the folder of real datasets, or skip the test when it is absent."""
    from_env = os.environ.get("METALS_DATA_DIR", "")
    candidate = Path(from_env) if from_env else REPO_ROOT.parent / "shared" / "data"
    if not (candidate / "ton-iot-telemetry").is_dir():
        pytest.skip(f"real datasets not found in {candidate}; set METALS_DATA_DIR")
    return candidate


@pytest.mark.parametrize("device", REAL_DEVICES)
def test_real_device_file_reads(device: str) -> None:
    # Prepare
    path = shared_data_dir() / "ton-iot-telemetry" / f"Train_Test_IoT_{device}.csv"
    report = LoadReport()

    # Execute
    frame = read_device_file(path, device, report)

    # Assert
    numeric, categorical = DEVICES[device]
    assert len(frame) == report.rows_read
    assert set(frame["label"]) <= set(ATTACK_TYPES)
    assert set(frame["device"]) == {device}
    for column in numeric:
        assert frame[column].dtype == np.float64
    for column in categorical:
        assert not frame[column].str.startswith(" ").any()
        assert not frame[column].str.endswith(" ").any()


def test_real_files_prepare_with_devices(tmp_path: Path) -> None:
    # Execute
    prepared = prepare_dataset("ton_iot", shared_data_dir(), cache_dir=tmp_path)

    # Assert
    assert prepared.class_names == ATTACK_TYPES
    assert prepared.groups_train is not None
    assert set(prepared.groups_train) == set(REAL_DEVICES)
    assert len(prepared.groups_train) == len(prepared.y_train)
    assert "sphone_signal" in prepared.feature_names
    assert "light_status=on" in prepared.feature_names
    assert "light_status= on" not in prepared.feature_names
    assert prepared.report["duplicates_removed"]["train"] > 0


def test_natural_partition_on_real_devices(tmp_path: Path) -> None:
    # Prepare
    prepared = prepare_dataset("ton_iot", shared_data_dir(), cache_dir=tmp_path)

    # Execute
    parts = partition_indices(prepared.y_train, 12, "natural", groups=prepared.groups_train)

    # Assert
    assert all(len(set(prepared.groups_train[part])) == 1 for part in parts)
    assert sum(len(part) for part in parts) == len(prepared.y_train)


@pytest.fixture()
def two_devices(tmp_path: Path) -> Path:
    real = shared_data_dir() / "ton-iot-telemetry"
    folder = tmp_path / "data" / "ton-iot-telemetry"
    folder.mkdir(parents=True)
    for device in ("Fridge", "Garage_Door"):
        lines = (real / f"Train_Test_IoT_{device}.csv").read_bytes().splitlines(keepends=True)
        (folder / f"Train_Test_IoT_{device}.csv").write_bytes(b"".join(lines[:400]))
    return tmp_path / "data"


def test_bad_values_dropped_and_counted(two_devices: Path, tmp_path: Path) -> None:
    # Prepare
    path = two_devices / "ton-iot-telemetry" / "Train_Test_IoT_Fridge.csv"
    lines = path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    lines[1] = lines[1].replace(",9,", ",warm,", 1)
    lines[2] = lines[2].replace(",9.25,", ",,", 1)
    lines[3] = lines[3].replace(",1,ddos", ",0,ddos", 1)
    path.write_text("".join(lines), encoding="utf-8")
    report = LoadReport()

    # Execute
    frame = read_device_file(path, "Fridge", report)

    # Assert
    assert report.rows_dropped == {
        "Fridge: non-numeric sensor value": 1,
        "Fridge: empty field": 1,
        "Fridge: label contradicts type": 1,
    }
    assert len(frame) == 399 - 3


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (
            b"\xef\xbb\xbfts,date,time,temp_condition,label,type\r\n1,a,b,high,1,ddos\r\n",
            "fridge_temperature",
        ),
        (
            b"ts,date,time,fridge_temperature,temp_condition,label,type\n"
            b"1,a,b,9,high,1,ddos\n1,a,b,9,high,1,flood\n",
            "flood",
        ),
        (
            b"ts,date,time,fridge_temperature,temp_condition,label,type\n"
            b"1,a,b,9,high,1,ddos\n1,a,b,9,high",
            "line 3",
        ),
        (
            b"ts,date,time,fridge_temperature,temp_condition,label,type\n"
            b"1,a,b,,high,1,ddos\n1,a,b,,low,0,normal\n",
            "fridge_temperature",
        ),
    ],
    ids=["empty file", "missing column", "unknown label", "truncated last line", "all-NaN column"],
)
def test_bad_device_file_rejected(
    two_devices: Path, tmp_path: Path, content: bytes, expected: str
) -> None:
    # Prepare
    path = two_devices / "ton-iot-telemetry" / "Train_Test_IoT_Fridge.csv"
    path.write_bytes(content)
    cache_dir = tmp_path / "cache"

    # Execute
    with pytest.raises(DataError) as error:
        prepare_dataset("ton_iot", two_devices, cache_dir=cache_dir)

    # Assert
    assert "Train_Test_IoT_Fridge.csv" in str(error.value)
    assert expected in str(error.value)
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.npy"))


def test_missing_files_name_source(tmp_path: Path) -> None:
    # Execute
    with pytest.raises(DataError) as error:
        prepare_dataset("ton_iot", tmp_path, cache_dir=tmp_path / "cache")

    # Assert
    assert "Train_Test_IoT_<Device>.csv" in str(error.value)
    assert "Ferrag/DDoS-attacks-dataset" in str(error.value)


def test_summary_lists_every_client(two_devices: Path, tmp_path: Path, monkeypatch) -> None:
    # Prepare
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    config = {
        "dataset": "ton_iot",
        "data-dir": str(two_devices),
        "partition": "natural",
        "num-clients": 3,
        "flwr-internal-key": "ignored",
    }

    # Execute
    text = describe_federation(config)

    # Assert
    lines = text.splitlines()
    title = next(
        position for position, line in enumerate(lines) if line.strip().startswith("client")
    )
    table = lines[title + 1 :]
    assert "dataset: ton_iot" in text
    assert "rows read: 798" in text
    assert "duplicates removed:" in text
    assert "partition: natural over 3 clients" in text
    assert len(table) == 3
    assert sum("Fridge" in row for row in table) + sum("Garage_Door" in row for row in table) == 3
    assert all(cell.replace(",", "").isdigit() for row in table for cell in row.split()[:5])


def test_summary_rejects_bad_config(tmp_path: Path) -> None:
    # Execute
    with pytest.raises(ValueError) as error:
        describe_federation({"dataset": "nsl_kdd", "partition": "natural"})

    # Assert
    assert "natural" in str(error.value)
