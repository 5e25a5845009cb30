"""Temporary files beside their target, readable as a plain ``open()`` would make them.

``tempfile.mkstemp`` creates its file with mode 0600, and an atomic write
renames that file over the target, so results written that way were
readable by their owner only while the plots beside them followed the
umask (usually 0644).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    """Return the process umask; reading it means setting it, so it is set back at once."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The umask when metals was imported.
UMASK = _read_umask()


def temporary_beside(path: Path) -> tuple[int, str]:
    """Create a temporary file in ``path``'s folder for an atomic write of ``path``.

    Returns
    -------
    tuple[int, str]
        The open file descriptor and the file's name, as ``tempfile.mkstemp``
        returns them, with the mode set to ``0o666`` less the umask.
    """
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    if hasattr(os, "fchmod"):
        os.fchmod(handle, 0o666 & ~UMASK)
    return handle, name
