"""Running one experiment on Flower's simulation runtime (Ray) inside this process."""

from __future__ import annotations

import inspect
import logging
import os
import queue
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from metals.common.runconfig import validate_run_config
from metals.server.checkpoint import check_run_dir, resolve_run_dir

if TYPE_CHECKING:
    from metals.ray_actor import PreStartedActors
    from metals.server.results import RoundProgress

logger = logging.getLogger(__name__)

# Maximum wait of one blocking get on the simulation runtime's message queues.
# Flower's loops wait 1 s there before they look at the stop event again.
RUNTIME_QUEUE_WAIT_SECONDS = 0.02
# A second SIGINT this soon after the first is the same interrupt delivered
# twice: timeout(1) signals both the process and its process group.
REPEATED_SIGINT_SECONDS = 1.0
# Without a push signal, every node's pending messages are looked for this
# often. Every push of the ServerApp signals its nodes, so this only catches
# messages that come another way.
FORWARD_FALLBACK_SECONDS = 5.0


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
    """Drop the Flower records that a metals run cannot act on.

    These are two Flower 1.42 WARNING records: the deprecation notice of
    ``flwr.simulation.run_simulation`` (metals runs its simulation in
    process on purpose) and the notice that ``fraction_evaluate`` is 0
    (federated evaluation off is the default of ``fraction-evaluate``).
    Once ``stop`` is set, every record goes: after an interrupt, Flower
    logs each client actor that Ray stops as an error with a traceback.

    Parameters
    ----------
    stop : threading.Event | None, default=None
        Set when the user interrupts the run.
    """

    NOTICES = (
        "The `run_simulation` function is deprecated",
        "fraction_evaluate is set to 0.0",
    )

    def __init__(self, stop: threading.Event | None = None) -> None:
        super().__init__()
        self._stop = stop

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for the two notices and for every record after ``stop``, else True."""
        if self._stop is not None and self._stop.is_set():
            return False
        message = record.getMessage()
        return not any(notice in message for notice in self.NOTICES)


def console_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """Return the handlers of ``logger`` that write to a stream other than a file."""
    return [
        handler
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
    ]


class RunInterrupted(Exception):
    """The user interrupted a run; the checkpoint of the last completed round stays."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"run interrupted; results so far are in {run_dir}")
        self.run_dir = run_dir


class AfterRounds:
    """A call on the finished run directory, run in its own thread while the runtime stops.

    Parameters
    ----------
    function : Callable[[Path], None]
        Called with ``run_dir``.
    run_dir : Path
        The run directory.
    """

    def __init__(self, function: Callable[[Path], None], run_dir: Path) -> None:
        self._function = function
        self._run_dir = run_dir
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start the call in a new thread."""
        self._thread = threading.Thread(target=self._run, name="metals-after-rounds", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._function(self._run_dir)
        except BaseException as error:  # raised again by raise_error, in the caller's thread
            self._error = error

    def join(self) -> None:
        """Wait for the call to end, if it started."""
        if self._thread is not None:
            self._thread.join()

    def raise_error(self) -> None:
        """Raise what the call raised, if anything."""
        if self._error is not None:
            raise self._error


class PromptQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue whose blocking ``get`` gives up after at most ``RUNTIME_QUEUE_WAIT_SECONDS``.

    The worker threads of Flower's simulation runtime wait on their queues
    for 1 s before they look at the runtime's stop event. Once the ServerApp
    has finished, the run then stood still for that second before Ray shut
    down. Their loops treat ``queue.Empty`` as "look again", so a shorter
    wait changes nothing else.
    """

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Return the next item; raise ``queue.Empty`` after at most the capped wait."""
        if block and timeout is not None:
            timeout = min(timeout, RUNTIME_QUEUE_WAIT_SECONDS)
        return super().get(block, timeout)


class PushedNodes:
    """Node ids with messages pushed since :func:`forward_messages` last took them."""

    def __init__(self) -> None:
        self._node_ids: set[int] = set()
        self._lock = threading.Lock()
        self._signal = threading.Event()

    def add(self, node_ids: Iterable[int]) -> None:
        """Record the destination nodes of a push and wake the forwarding loop."""
        with self._lock:
            self._node_ids.update(node_ids)
            self._signal.set()

    def take(self, timeout: float) -> set[int]:
        """Wait up to ``timeout`` s for a push, then return and forget the recorded node ids."""
        self._signal.wait(timeout)
        with self._lock:
            node_ids, self._node_ids = self._node_ids, set()
            self._signal.clear()
        return node_ids


class NodePartitions:
    """The partition of each simulated node, as the simulation runtime assigned them."""

    def __init__(self) -> None:
        self._partitions: dict[int, int] = {}
        self._known = threading.Event()

    def set(self, partitions: Mapping[int, int]) -> None:
        """Record the runtime's node-id-to-partition mapping."""
        self._partitions = dict(partitions)
        self._known.set()

    def get(self, timeout: float) -> dict[int, int]:
        """Return the mapping, waiting up to ``timeout`` s for it, or an empty one after that."""
        return dict(self._partitions) if self._known.wait(timeout) else {}


def forward_messages(
    state: Any,
    message_queue: queue.Queue,  # type: ignore[type-arg]
    nodes: Iterable[int],
    f_stop: threading.Event,
    *,
    pushed: PushedNodes,
    partitions: NodePartitions | None = None,
) -> None:
    """Move undelivered messages from the link state to the runtime's queue as they come.

    Flower's own loop calls ``get_message_ins`` for every node every 0.1 s.
    A round so waited up to 0.1 s (0.05 s on average) before its first
    client started. Each of these calls also scans every message in flight,
    so with 500 clients, 100 of them sampled, the loop kept a core busy for
    most of the round (9 s of 5 rounds). This one calls it only for the
    nodes that ``pushed`` records, as soon as it records them, and for every
    node each ``FORWARD_FALLBACK_SECONDS``. It ends within
    ``RUNTIME_QUEUE_WAIT_SECONDS`` of ``f_stop``.

    Parameters
    ----------
    state : LinkState
        The simulation's link state, of which only ``get_message_ins`` is called.
    message_queue : queue.Queue
        Queue of the runtime's worker threads.
    nodes : Iterable[int]
        Node ids of the simulated clients, read again on every full pass.
    f_stop : threading.Event
        The runtime's stop event.
    pushed : PushedNodes
        Destination nodes of the ServerApp's pushes.
    partitions : NodePartitions | None, default=None
        Receives ``nodes`` when it maps node ids to partition ids, as
        Flower's runtime passes it.
    """
    if partitions is not None and isinstance(nodes, Mapping):
        partitions.set(nodes)
    last_full_pass = time.monotonic()
    while not f_stop.is_set():
        node_ids: Iterable[int] = pushed.take(RUNTIME_QUEUE_WAIT_SECONDS)
        if time.monotonic() - last_full_pass >= FORWARD_FALLBACK_SECONDS:
            node_ids = list(nodes)
            last_full_pass = time.monotonic()
        for node_id in node_ids:
            # NOTE: a node with two messages waiting gets both at once, and two
            # workers may run them side by side. metals sends a node a second
            # message only after a wait for its reply timed out.
            for message in state.get_message_ins(node_id=node_id, limit=None):
                message_queue.put(message)


def store_replies(
    state: Any,
    message_queue: queue.Queue,  # type: ignore[type-arg]
    f_stop: threading.Event,
    *,
    replied: threading.Event,
) -> None:
    """Store the clients' replies in the link state and set ``replied`` after each one.

    It replaces the loop of Flower's simulation runtime that stores
    replies, so that the ServerApp's grid waits for this signal instead of
    pulling replies every few milliseconds. It ends within
    ``RUNTIME_QUEUE_WAIT_SECONDS`` of ``f_stop``.

    Parameters
    ----------
    state : LinkState
        The simulation's link state, of which only ``store_message_res`` is called.
    message_queue : queue.Queue
        Queue of replies that the runtime's worker threads fill.
    f_stop : threading.Event
        The runtime's stop event.
    replied : threading.Event
        Set after each stored reply.
    """
    while not f_stop.is_set():
        try:
            reply = message_queue.get(timeout=RUNTIME_QUEUE_WAIT_SECONDS)
        except queue.Empty:
            continue
        state.store_message_res(reply)
        replied.set()


# Parameters of the loops in Flower's simulation runtime that forward_messages
# and store_replies replace. With any other signature, metals leaves the
# runtime unchanged.
_FORWARD_PARAMETERS = ["state", "queue", "nodes_mapping", "f_stop"]
_STORE_PARAMETERS = ["state", "queue", "f_stop"]


def parameter_names(function: object) -> list[str]:
    """Return the parameter names of ``function``, or an empty list when it is not callable."""
    return list(inspect.signature(function).parameters) if callable(function) else []


@contextmanager
def prompt_runtime(
    pushed: PushedNodes, replied: threading.Event, partitions: NodePartitions | None = None
) -> Iterator[bool]:
    """Let Flower's simulation runtime pass messages on as they come and stop without a 1 s wait.

    Inside the block, the runtime module uses :func:`forward_messages`
    (woken by ``pushed``), :func:`store_replies` (which sets ``replied``)
    and :class:`PromptQueue`, and the originals come back after it. When the
    Flower version lacks these names or has other signatures, nothing
    changes and the block yields False.

    Parameters
    ----------
    pushed : PushedNodes
        Destination nodes of the ServerApp's pushes, recorded by its grid.
    replied : threading.Event
        Set after each reply stored in the link state.
    partitions : NodePartitions | None, default=None
        Receives the runtime's node-id-to-partition mapping when the
        forwarding loop starts.
    """
    from flwr.server.superlink.fleet.vce import vce_api

    original_forward = getattr(vce_api, "add_messages_to_queue", None)
    original_store = getattr(vce_api, "put_message_into_state", None)
    original_queue = getattr(vce_api, "Queue", None)
    if (
        original_queue is not queue.Queue
        or parameter_names(original_forward) != _FORWARD_PARAMETERS
        or parameter_names(original_store) != _STORE_PARAMETERS
    ):
        logger.debug("Flower's simulation loops have other signatures here, so they stay unchanged")
        if partitions is not None:
            partitions.set({})  # the grid then queries the nodes
        yield False
        return
    vce_api.add_messages_to_queue = partial(forward_messages, pushed=pushed, partitions=partitions)
    vce_api.put_message_into_state = partial(store_replies, replied=replied)
    vce_api.Queue = PromptQueue
    try:
        yield True
    finally:
        vce_api.add_messages_to_queue = original_forward
        vce_api.put_message_into_state = original_store
        vce_api.Queue = original_queue


@contextmanager
def stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on the first SIGINT; a later one raises KeyboardInterrupt.

    A SIGINT within ``REPEATED_SIGINT_SECONDS`` of the first is ignored.

    Outside the main thread, where Python cannot install signal handlers,
    nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = signal.getsignal(signal.SIGINT)

    interrupted_at: list[float] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if not interrupted_at:
            interrupted_at.append(now)
            logger.warning("interrupt received; stopping the run (press Ctrl-C again to force)")
            stop.set()
        elif now - interrupted_at[0] >= REPEATED_SIGINT_SECONDS:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _import_runtime(actor_module_done: threading.Event) -> None:
    """Import the modules a run needs besides Ray, so that they load while Ray starts.

    The client actors' module comes first, and ``actor_module_done`` is set
    once its import has ended, so that the main thread can start the actors
    with it while the other imports go on.
    """
    try:
        from metals.ray_actor import ClientActor  # noqa: F401
    finally:
        actor_module_done.set()
    import torch  # noqa: F401
    from flwr.simulation import run_simulation  # noqa: F401

    from metals.client.app import app  # noqa: F401
    from metals.server.app import build_server_app  # noqa: F401


def start_client_actors(*, verbose: bool = False) -> PreStartedActors:
    """Start as many client actors as Ray's CPUs hold, as Flower's Ray backend would.

    Flower starts its actors only when the simulation starts, after this
    process has imported Flower's simulation and both apps. Started as soon
    as Ray runs, the actors import torch and the ClientApp while this
    process still imports, and the first round starts about 0.9 s earlier
    on the 2-core machine. With ``verbose``, the actors show metals' INFO
    records.
    """
    import ray

    from metals.ray_actor import PreStartedActors

    resources = backend_config()["client_resources"]
    count = int(ray.cluster_resources().get("CPU", 0) // resources["num_cpus"])
    return PreStartedActors(count, resources, log_level=logging.INFO if verbose else None)


def start_ray(num_cpus: int | None = None, *, verbose: bool = False) -> None:
    """Start a local Ray instance for the simulation unless one is running.

    Flower starts Ray itself when it is not running, with a job runtime
    environment that sets ``PYTHONPATH``. Ray then starts a new worker
    process for each client actor instead of handing it one of the idle
    workers it started with the job. The first client could then train
    after about 3 s, against 0.5 s here (2 actors, loaded 2-core machine).
    Ray's workers inherit this process's environment, ``PYTHONPATH``
    included, so an installed metals imports the same in them. Ray starts
    without the processes that a run on one machine never uses; see
    :func:`metals.ray_node.lean_local_node`.

    Parameters
    ----------
    num_cpus : int | None, default=None
        CPUs Ray may use; None uses every CPU of the machine.
    verbose : bool, default=False
        Keep Ray's worker output.
    """
    import ray

    from metals.ray_node import lean_local_node

    if ray.is_initialized():
        return
    with warnings.catch_warnings(), lean_local_node(keep_log_monitor=verbose):
        if not verbose:
            # A notice about a future change of GPU visibility; runs here use no GPU.
            warnings.filterwarnings("ignore", message="Tip: In future versions of Ray")
        ray.init(**backend_config(num_cpus, verbose=verbose)["init_args"])
    # Only needed when lean_local_node left Ray's start unchanged.
    stop_autoscaler_monitor()


def stop_autoscaler_monitor() -> None:
    """Stop the autoscaler monitor of the Ray instance this process started.

    A Ray instance on one machine never adds or removes nodes, so its
    autoscaler monitor only costs a Python process. It also did not exit
    within the 1 s that ``ray.shutdown`` gives it after SIGTERM, so every
    run ended with that wait. SIGKILL ends it at once, and without the error
    report that a SIGTERM makes it send to the driver.
    """
    import ray
    from ray._private import ray_constants

    node = getattr(ray._private.worker, "_global_node", None)
    processes = getattr(node, "all_processes", None)
    if not isinstance(processes, dict):
        logger.debug("no Ray node of this process found; the autoscaler monitor keeps running")
        return
    for info in processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
        process = getattr(info, "process", None)
        if process is not None and process.poll() is None:
            process.kill()


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
    on_finished: Callable[[Path], None] | None = None,
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
    on_finished : Callable[[Path], None] | None, default=None
        Called with the run directory in its own thread once the ServerApp
        has written the results, while Flower and Ray shut down (a report,
        for example). This function waits for it and raises what it raised.

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
    actor_module_done = threading.Event()
    importer = threading.Thread(
        target=_import_runtime, args=(actor_module_done,), name="metals-import", daemon=True
    )
    importer.start()
    try:
        with stop_on_sigint(stop):
            start_ray(verbose=verbose)
            actor_module_done.wait()
            pre_started = start_client_actors(verbose=verbose)
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
    from metals.ray_actor import light_client_actors
    from metals.server.app import build_server_app
    from metals.simulation_grid import interruptible_server_app

    # The client actors keep both cores busy, so the driver's torch runs on
    # one thread. With torch's default of two threads on a loaded 2-core
    # machine, the global evaluation of the NSL-KDD test set took 0.23 s per
    # call instead of 0.04 s (timed apart from a run, same machine).
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)

    flwr_logger = logging.getLogger("flwr")
    previous_level = flwr_logger.level
    notice_filter = FlowerNoticeFilter(stop)
    # Flower's console handler printed each of its errors a second time,
    # beside the copy that reaches the root logger's handlers.
    flower_console = [] if verbose else console_handlers(flwr_logger)
    if not verbose:
        flwr_logger.setLevel(logging.WARNING)
        flwr_logger.addFilter(notice_filter)
        for handler in flower_console:
            flwr_logger.removeHandler(handler)
    pushed, replied, partitions = PushedNodes(), threading.Event(), NodePartitions()
    after_rounds = AfterRounds(on_finished, run_dir) if on_finished is not None else None
    server_app = interruptible_server_app(
        build_server_app(config, progress),
        stop,
        run_dir,
        pushed,
        on_finished=after_rounds.start if after_rounds is not None else None,
        replied=replied,
        partitions=partitions,
    )
    try:
        with (
            stop_on_sigint(stop),
            prompt_runtime(pushed, replied, partitions),
            light_client_actors(pre_started) as light,
        ):
            backend = backend_config(verbose=verbose)
            if light:
                # Two places in Flower's pool per actor: see PreStartedActors.
                backend["client_resources"] = pre_started.slot_resources
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=int(config["num-clients"]),
                backend_config=backend,
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
        for handler in flower_console:
            flwr_logger.addHandler(handler)
        torch.set_num_threads(previous_threads)
        stop_ray()
        if after_rounds is not None:
            after_rounds.join()
    if stop.is_set():
        raise RunInterrupted(run_dir)
    if after_rounds is not None:
        after_rounds.raise_error()
    return Path(str(config["run-dir"]))
