"""Download the public dataset files, each verified by its SHA-256 sum."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from metals.common.data.errors import DataError
from metals.common.data.paths import resolve_data_dir
from metals.common.files import temporary_beside

logger = logging.getLogger(__name__)

NSL_KDD_MIRROR = (
    "https://raw.githubusercontent.com/LiuYangSO/"
    "Genetic-Algorithm-based-Adversarial-Examples-Generation-against-Machine-Learning-based-IDS/"
    "main"
)
TON_IOT_REPOSITORY = "https://raw.githubusercontent.com/Ferrag/DDoS-attacks-dataset/main"
EDGE_IIOTSET_PAGE = (
    "https://www.kaggle.com/datasets/mohamedamineferrag/"
    "edgeiiotset-cyber-security-dataset-of-iot-iiot"
)
TIMEOUT = 60.0  # seconds without data before a download fails


@dataclass(frozen=True)
class RemoteFile:
    """A dataset file on a public server and where it goes under the data directory."""

    name: str
    folder: str
    sha256: str


FILES: dict[str, tuple[str, list[RemoteFile]]] = {
    "nsl_kdd": (
        NSL_KDD_MIRROR,
        [
            RemoteFile(
                "KDDTrain+_20Percent.txt",
                "nsl-kdd",
                "1a1559ff163a1dfa7ad1fba6b00ac6a408cc16741588831b66f043b918881e53",
            ),
            RemoteFile(
                "KDDTest+.txt",
                "nsl-kdd",
                "86b5ec03d20c040bdbeeb7eb68ae7df37e27a16c5b66a6ba2b62b8fed0e5cdfa",
            ),
        ],
    ),
    "ton_iot": (
        TON_IOT_REPOSITORY,
        [
            RemoteFile(f"Train_Test_IoT_{device}.csv", "ton-iot-telemetry", digest)
            for device, digest in (
                ("Fridge", "86e676e6ceca71f96fbe67a044e39254cc6324b1e760bcb22d2c10a086a35bde"),
                ("GPS_Tracker", "3589a16ad6a449b636a988c6131c838843c7fb18bc96d4c2303f95f8aab10d37"),
                ("Garage_Door", "68fc5dbbc72ce13f91ab3126a2025c0f58e39d5b0d4aeb3a026641a863eb17f1"),
                ("Modbus", "32fc97401b1e17aee9c7ce42b9f7fd3866f194093ce090a4f821ec4b80d10aaa"),
                (
                    "Motion_Light",
                    "7ad01807b4865e08bc551a4c94c5d2351d13048ec2161d264ae7ca3e2975a2d6",
                ),
                ("Thermostat", "11ceb4f976d6a3004222417c8bfbc80665669c166293be8ffeef16f1fcf38837"),
            )
        ],
    ),
}


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_dataset(
    name: str, data_dir: str | Path | None = None, *, base_url: str | None = None
) -> list[Path]:
    """Download the files of a dataset into the data directory and verify them.

    A file already present with the expected SHA-256 is kept. Each download
    goes to a temporary file beside the target and is renamed only after its
    sum matches, so an interrupted or wrong download leaves nothing behind.

    Parameters
    ----------
    name : str
        ``"nsl_kdd"`` or ``"ton_iot"``. Edge-IIoTset is only on Kaggle, which
        needs an account, so it raises with the page to download from.
    data_dir : str | Path | None, default=None
        Target folder; see :func:`resolve_data_dir`.
    base_url : str | None, default=None
        Server to download from in place of the dataset's public repository
        (a mirror, or a local server in tests).

    Returns
    -------
    list[Path]
        Paths of the verified files.

    Raises
    ------
    DataError
        On an unknown dataset, a failed download or a SHA-256 mismatch.
    """
    if name == "edge_iiotset":
        raise DataError(
            "Edge-IIoTset cannot be downloaded automatically because Kaggle needs an "
            f"account; download it from {EDGE_IIOTSET_PAGE} and put "
            "DNN-EdgeIIoT-dataset.csv into <data-dir>/edge-iiotset/"
        )
    if name not in FILES:
        raise DataError(f"unknown dataset {name!r}; downloadable: {', '.join(sorted(FILES))}")
    default_url, files = FILES[name]
    root = resolve_data_dir(data_dir)
    url_root = (base_url or default_url).rstrip("/")

    paths = []
    for remote in files:
        target = root / remote.folder / remote.name
        if target.is_file() and sha256_of(target) == remote.sha256:
            logger.info("%s is present and verified", target)
            paths.append(target)
            continue
        _fetch(f"{url_root}/{remote.name}", target, remote.sha256)
        paths.append(target)
    return paths


def _fetch(url: str, target: Path, sha256: str) -> None:
    """Download ``url`` to ``target`` through a verified temporary file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = temporary_beside(target)
    temporary = Path(temporary_name)
    digest = hashlib.sha256()
    logger.info("downloading %s to %s", url, target)
    try:
        with os.fdopen(handle, "wb") as output:
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        output.write(block)
            except (urllib.error.URLError, OSError) as error:
                raise DataError(
                    f"download of {url} failed ({error}); check the network or copy "
                    f"the file to {target} by hand"
                ) from None
        if digest.hexdigest() != sha256:
            raise DataError(
                f"{url}: SHA-256 {digest.hexdigest()} does not match the expected "
                f"{sha256}; the file on the server changed or the download is damaged. "
                "Nothing was written"
            )
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    logger.info("verified %s", target)
