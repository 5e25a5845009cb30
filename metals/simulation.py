"""Running one experiment on Flower's simulation runtime (Ray) inside this process."""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from metals.common.runconfig import validate_run_config
from metals.server.checkpoint import check_run_dir, resolve_run_dir
from metals.server.grid import SIMULATION_POLL_SECONDS, PollingGrid

if TYPE_CHECKING:
    from metals.server.results import RoundProgress

logger = logging.getLogger(__name__)


def backend_config(num_cpus: int | None = None, *, verbose: bool = False) -> dict[str, Any]:
    """Return the Ray backend config: one CPU per client, quiet unless ``verbose``.

    Parameters
    ----------
    num_cpus : int | None, default=None
        CPUs Ray may use; None uses every CPU of the machine, one simulated
        client per CPU at a time.
    verbose : bool, default=False
        Keep Ray's worker output and dashboard defaults.
    """
    # Ray's own services (GCS, raylet, workers) listen on loopback only, and
    # giving the address skips Ray's probe for the machine's outward address.
    init_args: dict[str, Any] = {"include_dashboard": False, "_node_ip_address": "127.0.0.1"}
    if num_cpus is not None:
        init_args["num_cpus"] = num_cpus
    if not verbose:
        init_args["log_to_driver"] = False
        init_args["logging_level"] = logging.WARNING
    return {"init_args": init_args, "client_resources": {"num_cpus": 1, "num_gpus": 0.0}}


class FlowerNoticeFilter(logging.Filter):
    """Drop two Flower 1.42 WARNING records that a metals run cannot act on.

    They are the deprecation notice of ``flwr.simulation.run_simulation``
    (metals runs its simulation in process on purpose) and the notice that
    ``fraction_evaluate`` is 0 (federated evaluation off is the default of
    ``fraction-evaluate``). Every other record passes.
    """

    NOTICES = (
        "The `run_simulation` function is deprecated",
        "fraction_evaluate is set to 0.0",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for the two notices, True for every other record."""
        message = record.getMessage()
        return not any(notice in message for notice in self.NOTICES)


class RunInterrupted(Exception):
    """The user interrupted a run; the checkpoint of the last completed round stays."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"run interrupted; results so far are in {run_dir}")
        self.run_dir = run_dir


class InterruptibleGrid(PollingGrid):
    """A grid that raises :class:`RunInterrupted` once ``stop`` is set.

    Flower's simulation runs the ServerApp in a non-daemon thread that waits
    for replies up to the round timeout, and it stops the simulation runtime
    only after that thread ends. Checking ``stop`` on every grid call ends the
    ServerApp thread within one poll interval, so Flower then stops the
    runtime and shuts Ray down in its usual order.

    Parameters
    ----------
    grid : Grid
        Grid that Flower passes to the ServerApp.
    stop : threading.Event
        Set when the run must end.
    run_dir : Path
        Run directory, named in the exception.
    poll_seconds : float, default=SIMULATION_POLL_SECONDS
        Seconds between two pulls of replies.
    """

    def __init__(
        self,
        grid: Grid,
        stop: threading.Event,
        run_dir: Path,
        poll_seconds: float = SIMULATION_POLL_SECONDS,
    ) -> None:
        super().__init__(grid, poll_seconds)
        self._stop = stop
        self._run_dir = run_dir

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise RunInterrupted(self._run_dir)

    def get_node_ids(self) -> Iterable[int]:
        """Return the connected node ids, or raise :class:`RunInterrupted`."""
        self._check_stop()
        return super().get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push ``messages``, or raise :class:`RunInterrupted`."""
        self._check_stop()
        return super().push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull the replies to ``message_ids``, or raise :class:`RunInterrupted`."""
        self._check_stop()
        return super().pull_messages(message_ids)

    def wait(self, seconds: float) -> None:
        """Pause between two pulls, ending at once when ``stop`` is set."""
        self._stop.wait(seconds)


def interruptible_server_app(
    server_app: ServerApp, stop: threading.Event, run_dir: Path
) -> ServerApp:
    """Wrap ``server_app`` so that its grid raises :class:`RunInterrupted` once ``stop`` is set."""
    wrapper = ServerApp()

    @wrapper.main()
    def main(grid: Grid, context: Context) -> None:
        server_app(InterruptibleGrid(grid, stop, run_dir), context)

    return wrapper


@contextmanager
def stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on the first SIGINT; a second SIGINT raises KeyboardInterrupt.

    Outside the main thread, where Python cannot install signal handlers,
    nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = signal.getsignal(signal.SIGINT)

    def handle(signum: int, frame: FrameType | None) -> None:
        logger.warning("interrupt received; stopping the run (press Ctrl-C again to force)")
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _import_runtime() -> None:
    """Import the modules a run needs besides Ray, so that they load while Ray starts."""
    import torch  # noqa: F401
    from flwr.simulation import run_simulation  # noqa: F401

    from metals.client.app import app  # noqa: F401
    from metals.server.app import build_server_app  # noqa: F401


def start_ray(num_cpus: int | None = None, *, verbose: bool = False) -> None:
    """Start a local Ray instance for the simulation unless one is running.

    Flower starts Ray itself when it is not running, with a job runtime
    environment that sets ``PYTHONPATH``. Ray then starts a new worker
    process for each client actor instead of handing it one of the idle
    workers it started with the job. The first client could then train
    after about 3 s, against 0.5 s here (2 actors, loaded 2-core machine).
    Ray's workers inherit this process's environment, ``PYTHONPATH``
    included, so an installed metals imports the same in them.

    Parameters
    ----------
    num_cpus : int | None, default=None
        CPUs Ray may use; None uses every CPU of the machine.
    verbose : bool, default=False
        Keep Ray's worker output.
    """
    import ray

    if ray.is_initialized():
        return
    with warnings.catch_warnings():
        if not verbose:
            # A notice about a future change of GPU visibility; runs here use no GPU.
            warnings.filterwarnings("ignore", message="Tip: In future versions of Ray")
        ray.init(**backend_config(num_cpus, verbose=verbose)["init_args"])


def stop_ray() -> None:
    """Shut Ray down if it is still running, as after a run that failed before Flower did it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_experiment(
    run_config: Mapping[str, Any],
    *,
    progress: Callable[[RoundProgress], None] | None = None,
    verbose: bool = False,
) -> Path:
    """Validate ``run_config``, run it on Flower's Ray simulation and return the run directory.

    Parameters
    ----------
    run_config : Mapping[str, Any]
        Kebab-case keys of ``metals.common.runconfig.SETTINGS``.
    progress : Callable[[RoundProgress], None] | None, default=None
        Called after each completed round.
    verbose : bool, default=False
        Show Flower's INFO logs and Ray's worker output.

    Returns
    -------
    Path
        Folder with metrics.csv, summary.json, model.pt, config.json,
        preprocessor/ and checkpoint/.

    Raises
    ------
    ValueError
        On an invalid run config, or when ``run-dir`` contains a run that
        ``resume`` false forbids continuing or whose settings differ.
    RuntimeError
        When the simulation fails, for example a round with too few valid replies.
    RunInterrupted
        After SIGINT (Ctrl-C), once the ServerApp and Ray have stopped.
    """
    config = validate_run_config(run_config)
    # A simulation starts exactly num-clients nodes, so waiting for more would
    # only end at round-timeout. Deployments may run more SuperNodes than
    # partitions (devices with data-path), so the run config allows it there.
    if int(config["min-available-nodes"]) > int(config["num-clients"]):
        raise ValueError(
            f"invalid value {config['min-available-nodes']} for 'min-available-nodes': a "
            f"simulation has only num-clients={config['num-clients']} nodes; lower it to at "
            "most num-clients or 0 (all)"
        )
    run_dir = resolve_run_dir(config)
    config["run-dir"] = str(run_dir)

    # The ServerApp checks this too, but only after Ray has started.
    check_run_dir(run_dir, config)

    # Ray 2.x reports usage statistics to its vendor unless this is 0.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not verbose:
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")

    # Ray starts in this thread while another imports torch, Flower's
    # simulation and both apps, so the two overlap on 2 cores. A first SIGINT
    # only sets ``stop``: interrupting ray.init midway once crashed the
    # process (SIGSEGV) instead of ending the run.
    stop = threading.Event()
    importer = threading.Thread(target=_import_runtime, name="metals-import", daemon=True)
    importer.start()
    try:
        with stop_on_sigint(stop):
            start_ray(verbose=verbose)
            importer.join()
    except KeyboardInterrupt as error:
        stop.set()
        raise RunInterrupted(run_dir) from error
    finally:
        if stop.is_set():
            stop_ray()
    if stop.is_set():
        raise RunInterrupted(run_dir)

    import torch
    from flwr.simulation import run_simulation

    from metals.client.app import app as client_app
    from metals.server.app import build_server_app

    # The client actors keep both cores busy, so the driver's torch runs on
    # one thread. With torch's default of two threads on a loaded 2-core
    # machine, the global evaluation of the NSL-KDD test set took 0.23 s per
    # call instead of 0.04 s (timed apart from a run, same machine).
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)

    flwr_logger = logging.getLogger("flwr")
    previous_level = flwr_logger.level
    notice_filter = FlowerNoticeFilter()
    if not verbose:
        flwr_logger.setLevel(logging.WARNING)
        flwr_logger.addFilter(notice_filter)
    server_app = interruptible_server_app(build_server_app(config, progress), stop, run_dir)
    try:
        with stop_on_sigint(stop):
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=int(config["num-clients"]),
                backend_config=backend_config(verbose=verbose),
                verbose_logging=verbose,
            )
    except KeyboardInterrupt as error:
        # A second SIGINT, or one from a tool that signals both the process
        # and its group, such as timeout(1). The ServerApp thread still ends
        # at its next grid call because ``stop`` is set.
        stop.set()
        raise RunInterrupted(run_dir) from error
    except Exception as error:
        # Ray's workers get the terminal's SIGINT too, so a client may fail
        # and the round report that failure before the grid sees ``stop``.
        if stop.is_set():
            raise RunInterrupted(run_dir) from error
        raise
    finally:
        flwr_logger.setLevel(previous_level)
        flwr_logger.removeFilter(notice_filter)
        torch.set_num_threads(previous_threads)
        stop_ray()
    if stop.is_set():
        raise RunInterrupted(run_dir)
    return Path(str(config["run-dir"]))
