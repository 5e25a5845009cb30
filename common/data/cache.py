"""On-disk cache of prepared arrays, keyed by input files and settings."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes hashed at the start and at the end of each file
META_FILE = "meta.json"


def file_fingerprint(path: Path) -> dict[str, object]:
    """Return size, mtime and a SHA-256 of the first and last MiB of ``path``.

    Hashing the ends, not the whole file, keeps a check of a 1 GiB file in
    milliseconds; size and mtime catch edits in the middle in practice.
    """
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(CHUNK))
        if stat.st_size > CHUNK:
            handle.seek(max(stat.st_size - CHUNK, CHUNK))
            digest.update(handle.read(CHUNK))
    return {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256_ends": digest.hexdigest(),
    }


def cache_key(files: list[Path], settings: Mapping[str, object]) -> str:
    """Return a hex key for the input files and the preprocessing settings."""
    payload = {
        "files": [file_fingerprint(path) for path in sorted(files)],
        "settings": dict(settings),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def load_entry(
    entry: Path,
) -> tuple[dict[str, np.ndarray], dict[str, object]] | None:
    """Return the arrays (memory-mapped) and metadata of a cache entry, or None.

    A missing or unreadable entry returns None so the caller prepares the data
    again; a damaged entry is also logged.
    """
    meta_path = entry / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        arrays = {
            name: np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            for name in meta["arrays"]
        }
    except (OSError, ValueError, KeyError) as error:
        logger.warning("cache entry %s is damaged (%s); preparing the data again", entry, error)
        return None
    return arrays, meta


class EntryWriter:
    """A cache entry under construction in a temporary folder beside its final folder.

    Arrays are written into the folder, then :meth:`commit` renames it to
    the entry in one step, so a crash leaves either the whole entry or none
    of it. If another process wrote the same entry first, its entry is kept.

    Parameters
    ----------
    entry : Path
        Final folder of the entry; its parent is created if needed.

    Raises
    ------
    OSError
        If the temporary folder cannot be created.
    """

    def __init__(self, entry: Path) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        self.entry = entry
        self.folder = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        self._arrays: dict[str, np.ndarray | None] = {}

    def new_array(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """Return a writable array that is the file ``NAME.npy`` of the entry.

        What is written into the array before :meth:`commit` is what the
        entry stores, with no copy. An empty shape gives an in-memory array,
        saved at commit, because an empty file cannot be memory-mapped.

        Raises
        ------
        OSError
            If the file cannot be created or the disk has no room for it.
        """
        if int(np.prod(shape)) == 0:
            array = np.empty(shape, dtype=dtype)
            self._arrays[name] = array
            return array
        path = self.folder / f"{name}.npy"
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        # Reserve the disk blocks now: a full disk raises OSError here,
        # where a write through the mapping would kill the process (SIGBUS).
        with path.open("r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, path.stat().st_size)
        self._arrays[name] = None
        return array

    def save(self, name: str, array: np.ndarray) -> None:
        """Write ``array`` as ``NAME.npy``; object arrays are not allowed."""
        np.save(self.folder / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        self._arrays[name] = None

    def commit(
        self, meta: Mapping[str, object], extra_writer: Callable[[Path], None] | None = None
    ) -> None:
        """Write the metadata and rename the folder to the entry.

        Parameters
        ----------
        meta : Mapping[str, object]
            JSON-serialisable metadata, saved as ``meta.json`` with the array names.
        extra_writer : Callable[[Path], None] | None
            Called with the temporary folder to write more files.
        """
        for name, array in self._arrays.items():
            if array is not None:
                self.save(name, array)
        if extra_writer is not None:
            extra_writer(self.folder)
        full_meta = dict(meta)
        full_meta["arrays"] = sorted(self._arrays)
        (self.folder / META_FILE).write_text(json.dumps(full_meta, indent=1), encoding="utf-8")
        if self.entry.exists() and not (self.entry / META_FILE).is_file():
            logger.warning("removing damaged cache entry %s", self.entry)
            shutil.rmtree(self.entry)
        try:
            os.rename(self.folder, self.entry)
        except OSError:
            if not (self.entry / META_FILE).is_file():
                raise
            logger.info("cache entry %s was written by another process; keeping it", self.entry)
        logger.info("cached prepared arrays in %s", self.entry)

    def discard(self) -> None:
        """Remove the temporary folder if it was not committed.

        Arrays from :meth:`new_array` stay valid, because a memory-mapped
        file lives until its last mapping is closed.
        """
        if self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)


def write_entry(
    entry: Path,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, object],
    extra_writer: Callable[[Path], None] | None = None,
) -> None:
    """Write a cache entry atomically, see :class:`EntryWriter`.

    Parameters
    ----------
    entry : Path
        Final folder of the entry.
    arrays : Mapping[str, numpy.ndarray]
        Arrays saved as ``NAME.npy``; object arrays are not allowed.
    meta : Mapping[str, object]
        JSON-serialisable metadata, saved as ``meta.json`` with the array names.
    extra_writer : Callable[[Path], None] | None
        Called with the temporary folder to write more files.
    """
    writer = EntryWriter(entry)
    try:
        for name, array in arrays.items():
            writer.save(name, array)
        writer.commit(meta, extra_writer)
    finally:
        writer.discard()
