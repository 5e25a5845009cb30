"""Files written through a temporary file get the mode a plain open() gives."""

import os
import stat

from metals.common.files import UMASK, temporary_beside
from metals.server.results import atomic_write_text


def test_temporary_file_follows_the_umask(tmp_path):
    # Execute
    handle, name = temporary_beside(tmp_path / "target.json")
    os.close(handle)

    # Assert
    assert os.path.dirname(name) == str(tmp_path)
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o666 & ~UMASK


def test_atomic_write_gives_umask_mode(tmp_path):
    # Prepare
    path = tmp_path / "metrics.csv"

    # Execute
    atomic_write_text(path, "round\n1\n")

    # Assert
    assert path.read_text() == "round\n1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~UMASK
