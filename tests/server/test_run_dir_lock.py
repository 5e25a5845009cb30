"""One server per run directory: a second one is rejected with the first one's pid."""

import subprocess
import sys
import textwrap

import pytest

from metals.server.checkpoint import RunDirInUseError, check_run_dir_free, run_dir_lock

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from metals.server.checkpoint import run_dir_lock

    with run_dir_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def test_second_process_is_rejected_until_the_first_ends(tmp_path):
    # Prepare: another process has locked the run directory.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"

        # Execute and assert: the lock is refused with the holder's pid.
        with pytest.raises(RunDirInUseError, match=f"process {holder.pid}"):
            with run_dir_lock(tmp_path):
                pass
        with pytest.raises(RunDirInUseError, match=f"process {holder.pid}"):
            check_run_dir_free(tmp_path)
    finally:
        holder.communicate("\n", timeout=60)

    # Assert: once the holder has ended, the folder can be locked again.
    with run_dir_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip().isdigit()


def test_lock_creates_the_run_directory(tmp_path):
    run_dir = tmp_path / "new" / "run"

    with run_dir_lock(run_dir):
        assert run_dir.is_dir()


def test_free_check_creates_nothing(tmp_path):
    run_dir = tmp_path / "absent"

    check_run_dir_free(run_dir)

    assert not run_dir.exists()
