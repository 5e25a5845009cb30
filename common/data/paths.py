"""Locate the data directory and the dataset files inside it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import platformdirs

from metals.common.data.errors import DataError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "METALS_DATA_DIR"
APP_NAME = "metals"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """Return the folder that contains the dataset files.

    Parameters
    ----------
    data_dir : str | Path | None
        Folder given by the ``data_dir`` Hydra key (``data-dir`` in the run
        config) or by the ``--data-dir`` option of ``metals detect``,
        ``metals export`` and ``metals report``.
        ``None`` or ``""`` means not given.

    Returns
    -------
    Path
        ``data_dir`` if given, else ``$METALS_DATA_DIR`` if set and non-empty,
        else the user data directory of ``metals`` (from ``platformdirs``).
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV, "")
    if from_env:
        return Path(from_env).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME)) / "datasets"


def default_cache_dir() -> Path:
    """Return the user cache directory where prepared arrays are stored."""
    return Path(platformdirs.user_cache_dir(APP_NAME)) / "prepared"


def find_file(data_dir: Path, candidates: list[str], *, source: str) -> Path:
    """Return the first of ``candidates`` that exists under ``data_dir``.

    Parameters
    ----------
    data_dir : Path
        Folder to look in.
    candidates : list[str]
        Relative paths to try in order, for example ``["nsl-kdd/KDDTest+.txt",
        "KDDTest+.txt"]``.
    source : str
        Where a user gets the file, named in the error message.

    Raises
    ------
    DataError
        If none of the candidates exists. The message names the file, every
        path tried and where to get it.
    """
    for relative in candidates:
        path = data_dir / relative
        if path.is_file():
            return path
    tried = ", ".join(str(data_dir / relative) for relative in candidates)
    raise DataError(
        f"dataset file {Path(candidates[0]).name!r} not found; looked for {tried}. "
        f"Get it from {source} and put it there, or point data_dir=DIR (or "
        f"{DATA_DIR_ENV}) at the folder that holds it"
    )
