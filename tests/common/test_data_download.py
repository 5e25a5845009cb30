from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from metals.common.data import DataError
from metals.common.data.download import FILES, download_dataset


@pytest.fixture()
def local_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a temporary folder."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def _serve_with_sums(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve small files and point the NSL-KDD entry at their sums."""
    base, remotes = FILES["nsl_kdd"]
    patched = []
    for remote in remotes:
        content = f"content of {remote.name}\n".encode()
        (served / remote.name).write_bytes(content)
        patched.append(
            type(remote)(remote.name, remote.folder, hashlib.sha256(content).hexdigest())
        )
    monkeypatch.setitem(FILES, "nsl_kdd", (base, patched))


def test_download_verifies_and_places_files(local_server, tmp_path, monkeypatch) -> None:
    # Prepare
    url, served = local_server
    _serve_with_sums(served, monkeypatch)
    data_dir = tmp_path / "data"

    # Execute
    paths = download_dataset("nsl_kdd", data_dir, base_url=url)

    # Assert
    assert paths == [
        data_dir / "nsl-kdd" / "KDDTrain+_20Percent.txt",
        data_dir / "nsl-kdd" / "KDDTest+.txt",
    ]
    assert paths[1].read_text() == "content of KDDTest+.txt\n"
    assert sorted(p.name for p in (data_dir / "nsl-kdd").iterdir()) == [
        "KDDTest+.txt",
        "KDDTrain+_20Percent.txt",
    ]


def test_download_skips_verified_file(local_server, tmp_path, monkeypatch) -> None:
    # Prepare
    url, served = local_server
    _serve_with_sums(served, monkeypatch)
    data_dir = tmp_path / "data"
    download_dataset("nsl_kdd", data_dir, base_url=url)
    for file in served.iterdir():
        file.unlink()

    # Execute
    paths = download_dataset("nsl_kdd", data_dir, base_url=url)

    # Assert
    assert all(path.is_file() for path in paths)


def test_sha256_mismatch_leaves_nothing(local_server, tmp_path) -> None:
    # Prepare
    url, served = local_server
    (served / "KDDTrain+_20Percent.txt").write_text("not the real file\n")
    data_dir = tmp_path / "data"

    # Execute
    with pytest.raises(DataError) as error:
        download_dataset("nsl_kdd", data_dir, base_url=url)

    # Assert
    assert "SHA-256" in str(error.value)
    assert "KDDTrain+_20Percent.txt" in str(error.value)
    assert list((data_dir / "nsl-kdd").iterdir()) == []


def test_missing_remote_file_fails(local_server, tmp_path) -> None:
    # Prepare
    url, _ = local_server

    # Execute
    with pytest.raises(DataError) as error:
        download_dataset("ton_iot", tmp_path / "data", base_url=url)

    # Assert
    assert "Train_Test_IoT_Fridge.csv" in str(error.value)
    assert "failed" in str(error.value)
    assert list((tmp_path / "data" / "ton-iot-telemetry").iterdir()) == []


def test_edge_iiotset_points_to_kaggle(tmp_path) -> None:
    # Execute
    with pytest.raises(DataError) as error:
        download_dataset("edge_iiotset", tmp_path)

    # Assert
    assert "kaggle.com" in str(error.value)


def test_known_sums_match_real_files() -> None:
    # Prepare
    import os

    shared = (
        Path(os.environ.get("METALS_DATA_DIR", ""))
        if os.environ.get("METALS_DATA_DIR")
        else Path(__file__).resolve().parents[3] / "shared" / "data"
    )
    if not (shared / "nsl-kdd").is_dir():
        pytest.skip(f"real datasets not found in {shared}; set METALS_DATA_DIR")

    # Execute
    mismatched = [
        remote.name
        for _, remotes in FILES.values()
        for remote in remotes
        if hashlib.sha256((shared / remote.folder / remote.name).read_bytes()).hexdigest()
        != remote.sha256
    ]

    # Assert
    assert mismatched == []
