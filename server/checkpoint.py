"""Per-round checkpoints of the server, so a killed run resumes from its last completed round."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metals.server.results import atomic_write_text

if TYPE_CHECKING:
    from flwr.app import ArrayRecord

logger = logging.getLogger(__name__)

#: File in a run directory that the running server holds locked.
LOCK_FILE = ".lock"


def resolve_run_dir(config: Mapping[str, Any]) -> Path:
    """Return the run directory: ``run-dir``, or a new ``runs/<timestamp>`` under the cwd."""
    if str(config["run-dir"]):
        return Path(str(config["run-dir"])).expanduser().resolve()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return (Path.cwd() / "runs" / stamp).resolve()


CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"

# Settings that may change when a run resumes; every other key must match.
RESUMABLE_CHANGES = frozenset(
    {"num-rounds", "resume", "run-dir", "round-timeout", "min-available-nodes", "data-dir"}
)


@dataclass
class Checkpoint:
    """Server state after a completed round.

    Attributes
    ----------
    round : int
        Last completed round.
    arrays : ArrayRecord
        Global weights after that round.
    rows : list[dict[str, Any]]
        metrics.csv rows of rounds 1..round.
    client_stats : dict[str, dict[str, float]]
        Latest pool counters per partition id (labels bought, pool sizes).
    random_state : Any
        ``getstate()`` of the strategy's sampling generator after the round.
    config : dict[str, Any]
        Run config of the run.
    """

    round: int
    arrays: ArrayRecord
    rows: list[dict[str, Any]]
    client_stats: dict[str, dict[str, float]]
    random_state: Any
    config: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> None:
    """Write weights, then the state file that points at them; the state file is the commit."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    weights_name = f"weights-{checkpoint.round:06d}.npz"
    temporary = folder / f".{weights_name}.tmp.npz"
    np.savez(temporary, **{key: array.numpy() for key, array in checkpoint.arrays.items()})
    os.replace(temporary, folder / weights_name)

    version, internal, gauss = checkpoint.random_state
    state = {
        "round": checkpoint.round,
        "weights": weights_name,
        "rows": checkpoint.rows,
        "client_stats": checkpoint.client_stats,
        "random_state": [version, list(internal), gauss],
        "config": checkpoint.config,
    }
    atomic_write_text(folder / STATE_FILE, json.dumps(state) + "\n")

    # Older weights are no longer referenced.
    for old in folder.glob("weights-*.npz"):
        if old.name != weights_name:
            old.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """Return the last checkpoint in ``run_dir``, or None when the run has none."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        return None
    from flwr.app import Array, ArrayRecord

    state = json.loads(state_path.read_text(encoding="utf-8"))
    with np.load(folder / state["weights"]) as weights:
        arrays = ArrayRecord({key: Array(np.array(weights[key])) for key in weights.files})
    version, internal, gauss = state["random_state"]
    return Checkpoint(
        round=int(state["round"]),
        arrays=arrays,
        rows=list(state["rows"]),
        client_stats=dict(state["client_stats"]),
        random_state=(version, tuple(internal), gauss),
        config=dict(state["config"]),
    )


def check_resumable(checkpoint: Checkpoint, config: Mapping[str, Any], run_dir: Path) -> None:
    """Raise ``ValueError`` when ``config`` changes a key of the checkpointed run that matters."""
    changed = sorted(
        key
        for key in set(config) | set(checkpoint.config)
        if key not in RESUMABLE_CHANGES and config.get(key) != checkpoint.config.get(key)
    )
    if changed:
        details = ", ".join(
            f"{key}: {checkpoint.config.get(key)!r} -> {config.get(key)!r}" for key in changed
        )
        raise ValueError(
            f"cannot resume the run in {run_dir}: settings differ from its checkpoint ({details}); "
            "restore them, or start a new run with another run-dir"
        )


class RunDirInUseError(RuntimeError):
    """Another process is running an experiment in the same run directory."""


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` for one server, or raise at once.

    Two servers in one folder would both write its checkpoint, metrics and
    client pool files. The lock is ``fcntl.flock`` on ``run_dir/.lock``,
    which the operating system releases when the process ends, however it
    ends. Where ``fcntl`` is missing (Windows), nothing is locked.

    Raises
    ------
    RunDirInUseError
        When another process holds the lock; the message names its pid.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise RunDirInUseError(
                f"{run_dir} is in use by another metals run (process {owner}); wait for it to "
                "end, or choose another run directory (hydra.run.dir)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_run_dir_free(run_dir: Path) -> None:
    """Raise :class:`RunDirInUseError` when a server holds the lock of ``run_dir`` now.

    A check before a command writes anything into the folder. It creates
    nothing; the server takes the lock itself with :func:`run_dir_lock`.
    """
    path = run_dir / LOCK_FILE
    if not path.is_file():
        return
    try:
        with run_dir_lock(run_dir):
            pass
    except OSError as error:
        logger.info("cannot open %s to check it (%s); the server checks again", path, error)


def check_run_dir(run_dir: Path, config: Mapping[str, Any]) -> Checkpoint | None:
    """Return the checkpoint a run in ``run_dir`` continues from, or None for a new run.

    Raises
    ------
    ValueError
        When ``run_dir`` contains a run and ``resume`` is false, or when
        ``config`` changes a setting of that run that must stay fixed.
    """
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        return None
    if not config["resume"]:
        raise ValueError(
            f"{run_dir} already contains a run (checkpoint after round {checkpoint.round}); set "
            "resume=true to continue it, or choose another run-dir"
        )
    check_resumable(checkpoint, config, run_dir)
    return checkpoint


def restore_generator(checkpoint: Checkpoint, generator: random.Random) -> None:
    """Put the sampling generator back in the state it had after the checkpointed round."""
    generator.setstate(checkpoint.random_state)
