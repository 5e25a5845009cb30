from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from metals.common.inference import prefetch
from metals.common.traffic import (
    TrafficFileError,
    TrafficLayout,
    inspect_columns,
    iter_traffic_chunks,
)

LAYOUT = TrafficLayout(
    features=("speed", "state"),
    numeric=frozenset({"speed"}),
    optional=("label",),
    ignored=("ts",),
    headerless=(("speed", "state"), ("speed", "state", "label")),
    label="label",
)

#: A layout with a text column between two numeric ones.
SIZED_LAYOUT = TrafficLayout(
    features=("speed", "state", "size"),
    numeric=frozenset({"speed", "size"}),
    optional=("label",),
    headerless=(("speed", "state", "size"), ("speed", "state", "size", "label")),
    label="label",
)


def read_all(path: Path, chunk_size: int = 100_000):
    chunks = list(iter_traffic_chunks(path, LAYOUT, chunk_size=chunk_size))
    lines = np.concatenate([chunk.lines for chunk in chunks]).tolist()
    bad = [(record.line, record.reason) for chunk in chunks for record in chunk.bad]
    return chunks, lines, bad


def test_bom_header_and_spaces(tmp_path: Path):
    # Prepare
    path = tmp_path / "device.csv"
    path.write_text("\ufeffts,speed,state,label\n1, 3.5 , on,normal\n2,4, off ,ddos\n")

    # Execute
    chunks, lines, bad = read_all(path)

    # Assert
    frame = chunks[0].frame
    assert list(frame.columns) == ["speed", "state", "label"]
    assert frame["speed"].tolist() == [3.5, 4.0]
    assert frame["state"].tolist() == ["on", "off"]
    assert lines == [2, 3]
    assert bad == []


def test_line_numbers_across_chunks(tmp_path: Path):
    # Prepare
    rows = [f"{index},s{index % 3}" for index in range(1, 101)]
    rows[40] = "41"  # line 41: a field short
    path = tmp_path / "plain.csv"
    path.write_text("\n".join(rows) + "\n")

    # Execute
    chunks, lines, bad = read_all(path, chunk_size=7)

    # Assert
    speeds = np.concatenate([chunk.frame["speed"].to_numpy() for chunk in chunks])
    assert len(chunks) == 15
    assert bad == [(41, "wrong number of fields (expected 2)")]
    assert lines == [n for n in range(1, 101) if n != 41]
    assert speeds.tolist() == [float(n) for n in range(1, 101) if n != 41]


def test_chunks_across_many_reads(tmp_path: Path):
    # Prepare: about 2.8 MiB, so chunks span several reads of the reused buffer.
    rows = [f"{index},s{index % 3}" for index in range(1, 300_001)]
    rows[123_456] = "123457"  # line 123457: a field short
    path = tmp_path / "large.csv"
    path.write_text("\n".join(rows))  # no line break after the last line

    # Execute
    chunks, lines, bad = read_all(path, chunk_size=70_000)

    # Assert
    speeds = np.concatenate([chunk.frame["speed"].to_numpy() for chunk in chunks])
    expected = [n for n in range(1, 300_001) if n != 123_457]
    assert len(chunks) == 5
    assert bad == [(123_457, "wrong number of fields (expected 2)")]
    assert lines == expected
    assert speeds.tolist() == [float(n) for n in expected]


def test_blank_lines_and_crlf(tmp_path: Path):
    # Prepare
    path = tmp_path / "crlf.csv"
    path.write_bytes(b"1,a\r\n\r\n2,b\r\n\n3,c")

    # Execute
    chunks, lines, bad = read_all(path, chunk_size=2)

    # Assert
    states = [value for chunk in chunks for value in chunk.frame["state"]]
    assert lines == [1, 3, 5]
    assert states == ["a", "b", "c"]
    assert bad == []


def test_bad_values_reported(tmp_path: Path):
    # Prepare
    path = tmp_path / "values.csv"
    path.write_text("speed,state\n1,a\nfast,b\n,c\ninf,d\n5,\n6,f\n")

    # Execute
    _, lines, bad = read_all(path)

    # Assert
    assert lines == [2, 7]
    assert bad == [
        (3, "invalid number 'fast' in column 'speed'"),
        (4, "missing value in column 'speed'"),
        (5, "infinite value in column 'speed'"),
        (6, "missing value in column 'state'"),
    ]


def test_quoted_comma_kept(tmp_path: Path):
    # Prepare
    path = tmp_path / "quoted.csv"
    path.write_text('speed,state\n1,"a,b"\n2,c\n')

    # Execute
    chunks, lines, bad = read_all(path)

    # Assert
    assert chunks[0].frame["state"].tolist() == ["a,b", "c"]
    assert lines == [2, 3]
    assert bad == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("\n1,a\n", "starts with a blank line; its first line must be the header row"),
        ("speed,colour\n1,red\n", r"columns the model never saw: \['colour'\]"),
        ("speed,label\n1,x\n", r"missing columns the model needs: \['state'\]"),
        ("speed,state,speed\n1,a,2\n", r"duplicate columns in the header: \['speed'\]"),
        ("1,a,b,c\n", "line 1 has 4 fields and no header row"),
    ],
    ids=["empty", "blank-first-line", "unknown", "missing", "duplicate", "field-count"],
)
def test_bad_files_rejected(tmp_path: Path, content: str, message: str):
    # Prepare
    path = tmp_path / "bad.csv"
    path.write_text(content)

    # Execute / Assert
    with pytest.raises(TrafficFileError, match=message):
        inspect_columns(path, LAYOUT)


def test_not_utf8_rejected(tmp_path: Path):
    # Prepare
    path = tmp_path / "latin1.csv"
    path.write_bytes("vitesse,état\n".encode("latin-1"))

    # Execute / Assert
    with pytest.raises(TrafficFileError, match="line 1 is not UTF-8"):
        inspect_columns(path, LAYOUT)


def test_headerless_layout_by_field_count(tmp_path: Path):
    # Prepare
    path = tmp_path / "labelled.csv"
    path.write_text("1,a,normal\n")

    # Execute
    columns = inspect_columns(path, LAYOUT)

    # Assert
    assert columns.header_lines == 0
    assert columns.names == ("speed", "state", "label")
    assert columns.read == ("speed", "state", "label")


def test_headerless_misfit_names_missing_column(tmp_path: Path):
    # Prepare: "speed" is missing, so the line has the field count of the
    # features alone, with "state" in the numeric column "speed".
    path = tmp_path / "no-speed.csv"
    path.write_text("a,9,normal\nb,4,attack\n")

    # Execute
    with pytest.raises(TrafficFileError) as raised:
        inspect_columns(path, SIZED_LAYOUT)

    # Assert
    message = str(raised.value)
    assert "line 1 has 3 fields and no header row" in message
    assert "needs 3 fields (3 features) or 4 fields (3 features, label)" in message
    assert "line 1 has 'a' in numeric column 'speed'" in message
    assert "fit the 4-field layout without one column: 'speed'" in message


def test_headerless_bad_first_line_accepted(tmp_path: Path):
    # Prepare
    path = tmp_path / "first-bad.csv"
    path.write_text("fast,a,3\n1,b,4\n")

    # Execute
    columns = inspect_columns(path, SIZED_LAYOUT)
    chunks = list(iter_traffic_chunks(path, SIZED_LAYOUT, columns=columns))
    lines = np.concatenate([chunk.lines for chunk in chunks]).tolist()
    bad = [(record.line, record.reason) for chunk in chunks for record in chunk.bad]

    # Assert
    assert columns.names == ("speed", "state", "size")
    assert lines == [2]
    assert bad == [(1, "invalid number 'fast' in column 'speed'")]


def test_header_only_layout_rejects_headerless(tmp_path: Path):
    # Prepare
    layout = TrafficLayout(features=("speed", "state"), numeric=frozenset({"speed"}))
    path = tmp_path / "plain.csv"
    path.write_text("1,a\n")

    # Execute
    with pytest.raises(TrafficFileError) as raised:
        inspect_columns(path, layout)

    # Assert
    message = str(raised.value)
    assert "line 1 has 2 fields and no header row" in message
    assert "reads only files whose first line is a header row" in message
    assert "none" not in message


def test_invalid_chunk_size_rejected(tmp_path: Path):
    # Prepare
    path = tmp_path / "one.csv"
    path.write_text("1,a\n")

    # Execute / Assert
    with pytest.raises(ValueError, match="invalid chunk size 0"):
        next(iter_traffic_chunks(path, LAYOUT, chunk_size=0))


def test_prefetch_keeps_order_and_raises():
    # Prepare
    def produce():
        yield from range(5)
        raise TrafficFileError("broken at item 5")

    received = []

    # Execute
    with pytest.raises(TrafficFileError, match="broken at item 5"):
        for item in prefetch(produce()):
            received.append(item)

    # Assert
    assert received == [0, 1, 2, 3, 4]


def test_prefetch_stops_producer_on_break():
    # Prepare
    produced = []

    def produce():
        for item in range(1000):
            produced.append(item)
            yield item

    # Execute
    for item in prefetch(produce(), depth=2):
        if item == 3:
            break

    # Assert
    assert len(produced) < 10
    assert not [thread for thread in threading.enumerate() if thread.name == "metals-prefetch"]
