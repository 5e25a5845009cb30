from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from metals.common.data import DataError, prepare_dataset
from metals.common.data.edge_iiotset import (
    CATEGORICAL,
    CLASSES_6,
    CLASSES_15,
    COLUMNS,
    DROPPED,
    GROUPS_6,
    read_edge_iiotset_file,
)
from metals.common.data.table import LoadReport

REPO_ROOT = Path(__file__).resolve().parents[2]
PER_CLASS = 40


def shared_data_dir() -> Path:
    """Return the folder of real datasets, or skip the test when it is absent."""
    from_env = os.environ.get("METALS_DATA_DIR", "")
    candidate = Path(from_env) if from_env else REPO_ROOT.parent / "shared" / "data"
    if not (candidate / "edge-iiotset" / "MITM_attack.csv").is_file():
        pytest.skip(f"real datasets not found in {candidate}; set METALS_DATA_DIR")
    return candidate


def _row(rng: np.random.Generator, attack: str, number: int) -> dict[str, str]:
    """One record in the 63-column layout, with values typical of the real files."""
    row = {name: "0.0" for name in COLUMNS}
    row["frame.time"] = f"2021 11:44:{number % 60:02d}.{number:06d}000"
    row["ip.src_host"] = f"192.168.0.{number % 250}"
    row["ip.dst_host"] = "192.168.0.128"
    row["tcp.srcport"] = str(float(rng.integers(1024, 65535)))
    row["tcp.dstport"] = str(float(rng.choice([80, 1883, 502])))
    row["tcp.payload"] = "0a0b0c0d"
    row["tcp.len"] = str(float(rng.integers(0, 1500)))
    row["tcp.ack"] = str(float(rng.integers(0, 10**6)))
    row["tcp.checksum"] = str(float(rng.integers(0, 65535)))
    row["udp.time_delta"] = str(rng.random())
    row["http.request.method"] = str(rng.choice(["0.0", "GET", "POST", "0"]))
    row["mqtt.protoname"] = str(rng.choice(["0.0", "MQTT"]))
    row["mqtt.topic"] = str(rng.choice(["0.0", "Temperature_and_Humidity"]))
    row["dns.qry.name.len"] = str(rng.choice(["0.0", "0.debian.pool.ntp.org", "1.0"]))
    row["Attack_label"] = "0" if attack == "Normal" else "1"
    row["Attack_type"] = attack
    return row


def write_fixture(path: Path, *, seed: int = 0, edit=None) -> Path:
    """Write a 15-class file in the real layout; ``edit(rows)`` may change the rows."""
    rng = np.random.default_rng(seed)
    rows = [_row(rng, attack, number) for attack in CLASSES_15 for number in range(PER_CLASS)]
    if edit is not None:
        edit(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture()
def edge_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    write_fixture(folder / "edge-iiotset" / "DNN-EdgeIIoT-dataset.csv")
    return folder


def test_fixture_prepares_15_classes(edge_dir: Path, tmp_path: Path) -> None:
    # Execute
    prepared = prepare_dataset("edge_iiotset", edge_dir, cache_dir=tmp_path / "cache")

    # Assert
    counts = prepared.report["class_counts"]
    assert prepared.class_names == CLASSES_15
    assert [a + b + c for a, b, c in zip(*counts.values(), strict=True)] == [PER_CLASS] * 15
    assert prepared.report["rows_read"] == 15 * PER_CLASS
    assert not any(name in DROPPED for name in prepared.feature_names)
    assert "http.request.method=GET" in prepared.feature_names
    assert "http.request.method=0" not in prepared.feature_names
    assert all(
        column in {n.split("=")[0] for n in prepared.feature_names} for column in CATEGORICAL
    )
    assert prepared.x_train.dtype == np.float32


@pytest.mark.parametrize(
    ("labels", "classes"),
    [("6", CLASSES_6), ("2", ["Normal", "Attack"]), ("binary", ["Normal", "Attack"])],
)
def test_label_groupings(edge_dir: Path, tmp_path: Path, labels: str, classes: list[str]) -> None:
    # Execute
    prepared = prepare_dataset("edge_iiotset", edge_dir, labels=labels, cache_dir=tmp_path)

    # Assert
    assert prepared.class_names == classes
    assert set(np.unique(prepared.y_train)) == set(range(len(classes)))


def test_six_groups_cover_15_classes() -> None:
    # Assert
    assert set(GROUPS_6) == set(CLASSES_15)
    assert set(GROUPS_6.values()) == set(CLASSES_6)
    assert [n for n, g in GROUPS_6.items() if g == "Malware"] == [
        "Backdoor",
        "Password",
        "Ransomware",
    ]


def test_bad_rows_counted_and_dropped(tmp_path: Path) -> None:
    # Prepare
    def damage(rows: list[dict[str, str]]) -> None:
        rows[0]["tcp.srcport"] = "_googlecast._tcp.local"
        rows[1]["tcp.connection.fin"] = "0x00000010"
        rows[2]["tcp.len"] = "inf"
        rows[3]["tcp.ack"] = ""
        rows[4]["Attack_label"] = "1"
        rows.append(dict(rows[50]))

    path = write_fixture(tmp_path / "f.csv", edit=damage)
    report = LoadReport()

    # Execute
    frame = read_edge_iiotset_file(path, report)

    # Assert
    assert report.rows_read == 15 * PER_CLASS + 1
    assert report.rows_dropped["shifted row (text in tcp.srcport)"] == 1
    assert report.rows_dropped["shifted row (text in tcp.connection.fin)"] == 1
    assert report.rows_dropped["NaN, inf or empty value"] == 2
    assert report.rows_dropped["Attack_label contradicts Attack_type"] == 1
    assert len(frame) == 15 * PER_CLASS + 1 - 5


def test_duplicates_removed_before_split(tmp_path: Path) -> None:
    # Prepare
    def duplicate(rows: list[dict[str, str]]) -> None:
        rows.extend(dict(row) for row in rows[:30])

    folder = tmp_path / "data"
    write_fixture(folder / "edge-iiotset" / "DNN-EdgeIIoT-dataset.csv", edit=duplicate)

    # Execute
    prepared = prepare_dataset("edge_iiotset", folder, cache_dir=tmp_path / "cache")

    # Assert
    assert prepared.report["duplicates_removed"]["train"] == 30
    together = np.concatenate([prepared.x_train, prepared.x_val, prepared.x_test])
    assert len(np.unique(together, axis=0)) == len(together)


def test_real_mitm_capture(tmp_path: Path) -> None:
    # Prepare
    path = shared_data_dir() / "edge-iiotset" / "MITM_attack.csv"
    report = LoadReport()

    # Execute
    frame = read_edge_iiotset_file(path, report)

    # Assert
    shifted = sum(v for k, v in report.rows_dropped.items() if k.startswith("shifted"))
    assert report.rows_read == 1229
    assert shifted == 382
    assert len(frame) == 1229 - shifted
    assert set(frame["label"]) == {"MITM"}
    assert frame["tcp.len"].dtype == np.float64


def test_real_mitm_prepares(tmp_path: Path) -> None:
    # Execute
    prepared = prepare_dataset("edge_iiotset", shared_data_dir(), cache_dir=tmp_path)

    # Assert
    total = len(prepared.y_train) + len(prepared.y_val) + len(prepared.y_test)
    assert total == 1229 - 382 - prepared.report["duplicates_removed"]["train"]
    assert set(np.unique(prepared.y_train)) == {CLASSES_15.index("MITM")}


def _cut_last_line(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.rstrip("\n").rfind(",", 0, len(text) - 200)], encoding="utf-8")


def _drop_column(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [",".join(line.split(",")[:-2] + line.split(",")[-1:]) for line in lines]
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")


def _rename_label(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(",XSS\n", ",Cross_site\n", 1), encoding="utf-8")


def _blank_column(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    position = COLUMNS.index("tcp.ack")
    rows = [lines[0]]
    for line in lines[1:]:
        fields = line.split(",")
        fields[position] = ""
        rows.append(",".join(fields))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda path: path.write_text("", encoding="utf-8"), "empty"),
        (_cut_last_line, "truncated"),
        (_drop_column, "Attack_label"),
        (_rename_label, "Cross_site"),
        (_blank_column, "tcp.ack"),
    ],
    ids=["empty file", "truncated last line", "missing column", "unknown label", "all-NaN column"],
)
def test_bad_file_rejected(edge_dir: Path, tmp_path: Path, damage, expected: str) -> None:
    # Prepare
    path = edge_dir / "edge-iiotset" / "DNN-EdgeIIoT-dataset.csv"
    damage(path)
    cache_dir = tmp_path / "cache"

    # Execute
    with pytest.raises(DataError) as error:
        prepare_dataset("edge_iiotset", edge_dir, cache_dir=cache_dir)

    # Assert
    assert str(path) in str(error.value)
    assert expected in str(error.value)
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.npy"))


def test_missing_file_names_kaggle(tmp_path: Path) -> None:
    # Execute
    with pytest.raises(DataError) as error:
        prepare_dataset("edge_iiotset", tmp_path, cache_dir=tmp_path / "cache")

    # Assert
    assert "DNN-EdgeIIoT-dataset.csv" in str(error.value)
    assert "kaggle.com" in str(error.value)


def test_missing_classes_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: the real MITM capture alone has a fraction of the 15 classes.
    data_dir = shared_data_dir()

    # Execute
    with caplog.at_level(logging.WARNING, logger="metals.common.data.prepare"):
        prepare_dataset("edge_iiotset", data_dir, cache_dir=tmp_path / "cache")

    # Assert
    assert "of 15 classes" in caplog.text
    assert "never predicts the others" in caplog.text
