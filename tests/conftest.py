"""Fixtures shared by the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Return the folder with the real datasets, or skip when it is missing.

    It is ``$METALS_DATA_DIR`` when set, else ``../shared/data`` beside the
    repository (the layout CI uses).
    """
    candidate = Path(os.environ.get("METALS_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    if not (candidate / "nsl-kdd").is_dir():
        pytest.skip(f"real datasets not found in {candidate}; set METALS_DATA_DIR to their folder")
    return candidate


@pytest.fixture()
def flower_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set the process identity Flower needs to build a ``Message`` outside a running app."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
