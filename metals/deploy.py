"""Run an experiment on a real Flower deployment: SuperLink and SuperNodes as OS processes.

``metals deploy`` starts one ``flower-superlink`` and one ``flower-supernode``
per client on loopback, each SuperNode with its own ``partition-id`` in its
node config. It submits the run with ``flwr run --stream`` and reports each
round as the ServerApp appends it to ``metrics.csv``. Every process it
started is stopped at the end, also on Ctrl-C, on SIGTERM and on failure. The run directory is the
one ``metals run`` writes; ``deploy/`` inside it holds the generated Flower
app, the Flower home folders, the TLS files and one log per process.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SERVER_APP = "metals.server.app:app"
CLIENT_APP = "metals.client.app:app"

# By default Flower sends telemetry and update checks to flower.ai, and
# installs app dependencies with `uv sync` at run time. metals runs offline
# with everything installed, so every process it starts gets these settings.
FLOWER_OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}

STOP_TIMEOUT_SECONDS = 10.0
# Lines that Flower's FedAvg logs in the ServerApp process (flwr 1.42).
_SAMPLED_LINE = re.compile(r"configure_train: Sampled (\d+) nodes")
_RECEIVED_LINE = re.compile(r"aggregate_train: Received (\d+) results")

if TYPE_CHECKING:
    from metals.server.results import RoundProgress

ProgressCallback = Callable[["RoundProgress"], None]


class DeployError(RuntimeError):
    """A deployment process failed to start, died, or the run failed."""


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


# Ports that find_free_port returned in this process, so that no two callers get the same one.
_RETURNED_PORTS: set[int] = set()
# Lowest port find_free_port picks: above the ports that need privileges.
_LOWEST_PORT = 10000


def _ephemeral_start() -> int:
    """Return the first port of the range the kernel gives outgoing connections.

    Linux reads it from ``/proc/sys/net/ipv4/ip_local_port_range`` (32768
    by default). Elsewhere the default of Windows and macOS, 49152, is used.
    """
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def find_free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that is free right now.

    The port comes from below the range in which the kernel picks the local
    ports of outgoing connections. A port the kernel hands out itself could
    go to any process's next connection before the Flower process binds it,
    and the Flower process then fails with "address already in use".

    NOTE: another process may still bind the port first. The start-up
    failure then names the port in its log.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ports = range(_LOWEST_PORT, _ephemeral_start())
    for port in random.Random().sample(ports, min(200, len(ports))):
        if port in _RETURNED_PORTS:
            continue
        with socket.socket(family) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _RETURNED_PORTS.add(port)
        return port
    # Every candidate was taken: let the kernel choose.
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def flower_executable(name: str) -> str:
    """Return the path of a Flower command, preferring the one beside this Python.

    Raises
    ------
    DeployError
        If the command is not installed.
    """
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise DeployError(
            f"command not found: {name}; install Flower in this environment "
            "(pip install 'flwr[simulation]>=1.42,<1.43')"
        )
    return found


def flower_environment(flwr_home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment for a Flower process: offline settings and its own FLWR_HOME."""
    environment = dict(os.environ if base is None else base)
    environment.update(FLOWER_OFFLINE_ENV)
    environment["FLWR_HOME"] = str(flwr_home)
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def _exit_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when the process that started it dies.

    Runs in the child between fork and exec. It covers a parent killed by
    SIGKILL, where no ``finally`` block can run.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class ManagedProcess:
    """One Flower process in its own process group, logging to one file.

    Attributes
    ----------
    name : str
        Short name used in logs, such as ``superlink`` or ``supernode-2``.
    command : list[str]
        Program and arguments.
    log_path : Path
        File that receives the process's stdout and stderr.
    environment : dict[str, str]
        Environment of the process.
    """

    name: str
    command: list[str]
    log_path: Path
    environment: dict[str, str]
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start the process in a new session so that its children can be stopped with it."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        logger.debug("Starting %s: %s", self.name, " ".join(self.command))
        self.popen = subprocess.Popen(  # noqa: S603 - command built from fixed Flower programs
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.environment,
            start_new_session=True,
            preexec_fn=_exit_with_parent,
        )
        logger.info("Started %s (pid %d), log %s", self.name, self.popen.pid, self.log_path)

    @property
    def pid(self) -> int:
        """Process id; raises ``DeployError`` before ``start``."""
        if self.popen is None:
            raise DeployError(f"{self.name} has not been started")
        return self.popen.pid

    def exit_code(self) -> int | None:
        """Return the exit code, or None while the process runs (or before it starts)."""
        return None if self.popen is None else self.popen.poll()

    def _signal_group(self, signum: int) -> None:
        """Send ``signum`` to the process group; a group that is gone already is fine."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def kill(self) -> None:
        """Kill the process group with SIGKILL, as a crash or power loss would."""
        if self.popen is not None:
            strays = descendants(self.popen.pid)
            self._signal_group(signal.SIGKILL)
            self.popen.wait()
            _stop_strays(strays, STOP_TIMEOUT_SECONDS, graceful=False)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the process group: SIGTERM, then SIGKILL after ``timeout`` seconds.

        The group is signalled even when the leader has exited, because a
        child it left behind may still run. Descendants in other sessions
        (Flower's SuperExec and its app runners) get the same treatment.
        """
        if self.popen is None:
            return
        strays = descendants(self.popen.pid) if self.popen.poll() is None else []
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s (pid %d) did not stop within %.0f s after SIGTERM; sending SIGKILL",
                    self.name,
                    self.pid,
                    timeout,
                )
        self._signal_group(signal.SIGKILL)
        self.popen.wait()
        _stop_strays(strays, timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = 20) -> str:
        """Return the last ``lines`` lines of the process log."""
        return _tail(self.log_path, lines)


def _process_table() -> dict[int, tuple[int, str]]:
    """Return ``{pid: (parent pid, state letter)}`` of every process, from Linux's /proc."""
    table: dict[int, tuple[int, str]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name in brackets may hold spaces; fields follow the last ')'.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int) -> list[int]:
    """Return the live (non-zombie) descendants of ``pid``, children first.

    Flower starts its SuperExec and app runners in sessions of their own, so
    signalling the process group of a SuperLink or SuperNode misses them.
    NOTE: reads /proc, so the list is empty on systems without it (macOS);
    there those processes stop by themselves once their parent is gone.
    """
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _state) in table.items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    queue = list(children.get(pid, []))
    while queue:
        current = queue.pop(0)
        if table[current][1] != "Z":
            found.append(current)
        queue.extend(children.get(current, []))
    return found


def _stop_strays(pids: list[int], timeout: float, *, graceful: bool = True) -> None:
    """Stop processes that are not our children: SIGTERM, then SIGKILL after ``timeout``.

    With ``graceful`` False only SIGKILL is sent.
    """
    for signum in (signal.SIGTERM, signal.SIGKILL) if graceful else (signal.SIGKILL,):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            table = _process_table()
            pids = [pid for pid in pids if pid in table and table[pid][1] != "Z"]
            if not pids:
                return
            time.sleep(0.1)


def _tail(path: Path, lines: int) -> str:
    """Return the last ``lines`` lines of a text file, or '' when it is missing."""
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def wait_for_port(host: str, port: int, process: ManagedProcess | None, timeout: float) -> None:
    """Wait until ``host:port`` accepts TCP connections.

    Parameters
    ----------
    host, port : str, int
        Address to probe.
    process : ManagedProcess | None
        The process that should open the port; None for a server started elsewhere.
    timeout : float
        Seconds to wait.

    Raises
    ------
    DeployError
        If ``process`` exits first or the port is not open after ``timeout`` seconds.
    """
    name = "the SuperLink" if process is None else process.name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = None if process is None else process.exit_code()
        if process is not None and code is not None:
            raise DeployError(
                f"{process.name} exited with code {code} during start-up; "
                f"last lines of {process.log_path}:\n{process.log_tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        raise_if_interrupted()
        time.sleep(0.2)
    where = "" if process is None else f"; see {process.log_path}"
    raise DeployError(f"{name} did not open {host}:{port} within {timeout:.0f} s{where}")


# ---------------------------------------------------------------------------
# Flower app folder and connection
# ---------------------------------------------------------------------------


def write_app_folder(
    folder: Path,
    run_config: Mapping[str, Any],
    *,
    server_app: str = SERVER_APP,
    client_app: str = CLIENT_APP,
) -> Path:
    """Write the minimal Flower app that ``flwr run`` packages and submits.

    The app contains no code: ``[tool.flwr.app.components]`` points at the
    installed metals, which every SuperLink and SuperNode host must have, and
    ``[tool.flwr.app.config]`` carries the whole run config, so ``flwr run``
    needs no ``--run-config``.

    Parameters
    ----------
    folder : Path
        Folder to create; its ``pyproject.toml`` is replaced.
    run_config : Mapping[str, Any]
        Flat run config with bool, int, float or str values.
    server_app, client_app : str
        Object references of the ServerApp and ClientApp.

    Returns
    -------
    Path
        ``folder``.
    """
    import tomli_w  # a dependency of flwr

    from metals import __version__

    document = {
        "project": {
            "name": "metals-deployment",
            "version": __version__,
            "description": "metals experiment submitted by metals deploy",
            "license": "Apache-2.0",
            # Every host has metals installed; runtime installation is off.
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "metals",
                    "components": {"serverapp": server_app, "clientapp": client_app},
                    "config": dict(run_config),
                }
            }
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(tomli_w.dumps(document), encoding="utf-8")
    return folder


def write_connection(flwr_home: Path, address: str, root_certificates: Path | None) -> str:
    """Write ``$FLWR_HOME/config.toml`` with one SuperLink connection and return its name."""
    import tomli_w

    connection: dict[str, Any] = {"address": address}
    if root_certificates is None:
        connection["insecure"] = True
    else:
        connection["root-certificates"] = str(root_certificates)
    document = {"superlink": {"default": "metals", "metals": connection}}
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(tomli_w.dumps(document), encoding="utf-8")
    return "metals"


# ---------------------------------------------------------------------------
# The deployment
# ---------------------------------------------------------------------------


def _resolve_run_dir(run_config: Mapping[str, Any]) -> Path:
    """Return the absolute run directory: ``run-dir``, or ``runs/<time>-deploy`` under the cwd."""
    configured = str(run_config.get("run-dir") or "")
    if configured:
        return Path(configured).expanduser().resolve()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (Path.cwd() / "runs" / f"{stamp}-deploy").resolve()


@dataclass
class Deployment:
    """A SuperLink and N SuperNodes on loopback that run one metals experiment.

    Use it as a context manager: leaving the block stops every process, also
    when the block raises (including ``KeyboardInterrupt``).

    Parameters
    ----------
    run_config : Mapping[str, Any]
        Validated flat run config (``metals.common.runconfig``). ``num-clients``
        sets the number of SuperNodes; ``run-dir`` (made absolute here) the
        run directory.
    tls : bool, default=False
        Serve the SuperLink with TLS using self-signed site certificates.
    certs_dir : Path | None, default=None
        Folder with ``ca.crt``, ``server.pem`` and ``server.key``
        (``metals.tls``). None creates fresh ones in ``deploy/tls``.
    verbose : bool, default=False
        Echo the ``flwr run`` log stream to stderr.
    server_app, client_app : str
        Object references written into the Flower app.
    startup_timeout : float, default=60.0
        Seconds to wait for the SuperLink to open its port.
    external_superlink : str | None, default=None
        ``HOST:PORT`` of a SuperLink started elsewhere (a server machine, a
        container) that already has its SuperNodes. No process is started
        then; the run is only submitted and followed. With ``tls`` the CA
        certificate is ``certs_dir/ca.crt``.
    """

    run_config: Mapping[str, Any]
    tls: bool = False
    certs_dir: Path | None = None
    verbose: bool = False
    server_app: str = SERVER_APP
    client_app: str = CLIENT_APP
    startup_timeout: float = 60.0
    external_superlink: str | None = None
    run_dir: Path = field(init=False)
    address: str = field(default="", init=False)
    root_certificates: Path | None = field(default=None, init=False)
    superlink: ManagedProcess | None = field(default=None, init=False)
    supernodes: list[ManagedProcess] = field(default_factory=list, init=False)
    submitter: ManagedProcess | None = field(default=None, init=False)
    missing_replies: int = field(default=0, init=False)
    _lost: set[str] = field(default_factory=set, init=False)
    _sampled: int = field(default=0, init=False)
    _round_counts: list[tuple[int, int]] = field(default_factory=list, init=False)
    _rows_at_start: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        num_clients = int(self.run_config["num-clients"])
        if num_clients < 1:
            raise ValueError(f"invalid num-clients {num_clients}: a deployment needs at least 1")
        self.run_dir = _resolve_run_dir(self.run_config)
        config = dict(self.run_config)
        config["run-dir"] = str(self.run_dir)
        # ServerApp and ClientApp processes start in Flower's own folders, so
        # a relative data folder would point elsewhere there.
        if config.get("data-dir"):
            config["data-dir"] = str(Path(str(config["data-dir"])).expanduser().resolve())
        self.run_config = config

    @property
    def deploy_dir(self) -> Path:
        """Folder of the Flower app, Flower homes, TLS files and logs."""
        return self.run_dir / "deploy"

    @property
    def log_dir(self) -> Path:
        """Folder with one log file per process."""
        return self.deploy_dir / "logs"

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- start ---------------------------------------------------------------

    def _certificates(self) -> Any:
        """Return the site certificates, creating them in ``deploy/tls`` when none are given."""
        from metals.tls import SiteCertificates, create_site_certificates

        if self.certs_dir is not None:
            certificates = SiteCertificates.in_folder(self.certs_dir)
            certificates.check()
            return certificates
        return create_site_certificates(self.deploy_dir / "tls", overwrite=True)

    def _use_external_superlink(self, address: str) -> None:
        """Check that the SuperLink at ``address`` accepts connections; keep its address."""
        from metals.device import parse_superlink_address

        host, port = parse_superlink_address(address)
        if self.tls:
            if self.certs_dir is None:
                raise DeployError(
                    "TLS to an external SuperLink needs the site CA: pass --certs DIR "
                    "with the ca.crt that signed the SuperLink certificate"
                )
            self.root_certificates = Path(self.certs_dir).resolve() / "ca.crt"
            if not self.root_certificates.is_file():
                raise FileNotFoundError(f"CA certificate not found: {self.root_certificates}")
        else:
            logger.warning(
                "TLS is off: traffic to the SuperLink %s is unencrypted; use --tls", address
            )
        wait_for_port(host, port, None, self.startup_timeout)
        self.address = address
        logger.info("Submitting to the SuperLink at %s", address)

    def start(self) -> None:
        """Start the SuperLink, wait for its port, then start one SuperNode per client.

        With ``external_superlink`` set, only check that it accepts connections.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.external_superlink is not None:
            self._use_external_superlink(self.external_superlink)
            return
        num_clients = int(self.run_config["num-clients"])
        self.log_dir.mkdir(parents=True, exist_ok=True)
        homes = self.deploy_dir / "flwr-home"
        port = find_free_port()
        self.address = f"{LOOPBACK}:{port}"

        # SuperLink: Fleet, Control and Runtime APIs share one port in Flower 1.42.
        superlink_command = [
            flower_executable("flower-superlink"),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--isolation",
            "subprocess",
            "--disable-runtime-dependency-installation",
        ]
        node_tls: list[str]
        if self.tls:
            certificates = self._certificates()
            superlink_command += [
                "--ssl-certfile",
                str(certificates.server_cert),
                "--ssl-keyfile",
                str(certificates.server_key),
                "--ssl-ca-certfile",
                str(certificates.ca_cert),
            ]
            node_tls = ["--root-certificates", str(certificates.ca_cert)]
            self.root_certificates = certificates.ca_cert
            logger.info("TLS is on: SuperNodes verify the SuperLink with %s", certificates.ca_cert)
        else:
            superlink_command.append("--insecure")
            node_tls = ["--insecure"]
            self.root_certificates = None
            logger.warning(
                "TLS is off: traffic between the SuperLink and the SuperNodes is "
                "unencrypted; use --tls for encrypted connections"
            )

        self.superlink = ManagedProcess(
            "superlink",
            superlink_command,
            self.log_dir / "superlink.log",
            flower_environment(homes / "superlink"),
        )
        self.superlink.start()
        wait_for_port(LOOPBACK, port, self.superlink, self.startup_timeout)

        # SuperNodes: each with its own partition and its own ClientApp runtime port.
        for partition_id in range(num_clients):
            command = [
                flower_executable("flower-supernode"),
                *node_tls,
                "--superlink",
                self.address,
                "--host",
                LOOPBACK,
                "--port",
                str(find_free_port()),
                "--isolation",
                "subprocess",
                "--node-config",
                f"partition-id={partition_id} num-partitions={num_clients}",
            ]
            node = ManagedProcess(
                f"supernode-{partition_id}",
                command,
                self.log_dir / f"supernode-{partition_id}.log",
                flower_environment(homes / f"supernode-{partition_id}"),
            )
            node.start()
            self.supernodes.append(node)

    # -- run -----------------------------------------------------------------

    def submit(self) -> None:
        """Write the Flower app and the connection, then start ``flwr run --stream``."""
        if not self.address:
            raise DeployError("start() must run before submit()")
        app_dir = write_app_folder(
            self.deploy_dir / "app",
            self.run_config,
            server_app=self.server_app,
            client_app=self.client_app,
        )
        cli_home = self.deploy_dir / "flwr-home" / "cli"
        connection = write_connection(cli_home, self.address, self.root_certificates)
        self.submitter = ManagedProcess(
            "flwr-run",
            [flower_executable("flwr"), "run", str(app_dir), connection, "--stream"],
            self.log_dir / "flwr-run.log",
            flower_environment(cli_home),
        )
        self.submitter.start()

    def _check_supernodes(self) -> None:
        """Log each SuperNode that has exited; raise when none is left."""
        for node in self.supernodes:
            code = node.exit_code()
            if code is not None and node.name not in self._lost:
                self._lost.add(node.name)
                logger.warning(
                    "%s exited with code %d during the run; the run continues with "
                    "%d SuperNode(s). Last lines of %s:\n%s",
                    node.name,
                    code,
                    len(self.supernodes) - len(self._lost),
                    node.log_path,
                    node.log_tail(5),
                )
        if self._lost and len(self._lost) == len(self.supernodes):
            raise DeployError(f"every SuperNode exited; logs in {self.log_dir}")

    def _scan_stream(self, offset: int) -> int:
        """Read the ``flwr run`` stream after ``offset``; return the new offset.

        Flower's strategy logs how many nodes it sampled and how many results
        it aggregated. A round that aggregates fewer results than it sampled
        lost SuperNodes or got invalid replies, and is logged as a warning.
        """
        assert self.submitter is not None
        path = self.submitter.log_path
        if not path.is_file():
            return offset
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1
        for line in chunk[:end].decode("utf-8", errors="replace").splitlines():
            if self.verbose:
                print(line, file=sys.stderr)
            sampled = _SAMPLED_LINE.search(line)
            if sampled:
                self._sampled = int(sampled.group(1))
                continue
            received = _RECEIVED_LINE.search(line)
            if received:
                count = int(received.group(1))
                self._round_counts.append((self._sampled, count))
                missing = self._sampled - count
                if missing > 0:
                    self.missing_replies += missing
                    logger.warning(
                        "round %d: %d of %d sampled SuperNodes sent no valid reply (lost, "
                        "failed or too slow); the round aggregates the other %d",
                        self._rows_at_start + len(self._round_counts),
                        missing,
                        self._sampled,
                        count,
                    )
        return offset + end

    def wait(
        self,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        poll_seconds: float = 0.5,
    ) -> Path:
        """Wait for the run to finish, reporting rounds and lost SuperNodes.

        Parameters
        ----------
        progress : Callable[[RoundProgress], None] | None, default=None
            Called once per round that the ServerApp appends to ``metrics.csv``.
        timeout : float | None, default=None
            Seconds to wait before giving up; None waits as long as it takes.
        poll_seconds : float, default=0.5
            Interval between checks of the processes and files.

        Returns
        -------
        Path
            The run directory.

        Raises
        ------
        DeployError
            If the SuperLink or every SuperNode dies, ``flwr run`` fails,
            the timeout passes, or the run ends without ``summary.json``.
        """
        if self.submitter is None:
            raise DeployError("submit() must run before wait()")
        deadline = None if timeout is None else time.monotonic() + timeout
        # A resumed run already has rows; only the rounds of this session are reported.
        self._rows_at_start = len(read_complete_rows(self.run_dir / "metrics.csv"))
        rows_seen = self._rows_at_start
        stream_offset = 0

        while True:
            stream_offset = self._scan_stream(stream_offset)
            rows_seen = self._report_new_rows(rows_seen, progress)
            code = self.submitter.exit_code()
            if code is not None:
                break
            if self.superlink is not None and self.superlink.exit_code() is not None:
                raise DeployError(
                    f"the SuperLink exited with code {self.superlink.exit_code()} during "
                    f"the run; last lines of {self.superlink.log_path}:\n"
                    f"{self.superlink.log_tail()}"
                )
            self._check_supernodes()
            if deadline is not None and time.monotonic() > deadline:
                raise DeployError(
                    f"the run did not finish within {timeout:.0f} s; logs in {self.log_dir}"
                )
            raise_if_interrupted()
            time.sleep(poll_seconds)

        self._scan_stream(stream_offset)
        self._report_new_rows(rows_seen, progress, final=True)
        if code != 0:
            raise DeployError(
                f"flwr run exited with code {code}; last lines of "
                f"{self.submitter.log_path}:\n{self.submitter.log_tail()}"
            )
        if not (self.run_dir / "summary.json").is_file():
            raise DeployError(
                f"the run ended without writing {self.run_dir / 'summary.json'}; the "
                f"ServerApp probably failed. Last lines of {self.submitter.log_path}:\n"
                f"{self.submitter.log_tail()}"
            )
        return self.run_dir

    def _report_new_rows(
        self, rows_seen: int, progress: ProgressCallback | None, *, final: bool = False
    ) -> int:
        """Call ``progress`` for ``metrics.csv`` rows after the first ``rows_seen``.

        A row waits until the stream has shown that round's sampled and
        aggregated counts, unless ``final`` is set because the run has ended.
        Counts that the stream never showed are reported as -1.
        """
        rows = read_complete_rows(self.run_dir / "metrics.csv")
        while rows_seen < len(rows):
            index = rows_seen - self._rows_at_start
            known = 0 <= index < len(self._round_counts)
            if not known and not final:
                break
            sampled, received = self._round_counts[index] if known else (-1, -1)
            row = rows[rows_seen]
            if progress is not None:
                from metals.server.results import RoundProgress

                progress(
                    RoundProgress(
                        round=int(row["round"]),
                        num_rounds=int(self.run_config["num-rounds"]),
                        sampled_clients=sampled,
                        valid_replies=received,
                        labels_queried_total=int(row["labels_queried_total"]),
                        labeled_fraction=row["labeled_fraction"],
                        accuracy=row["accuracy"],
                        macro_f1=row["macro_f1"],
                        elapsed_seconds=row["round_seconds"],
                    )
                )
            rows_seen += 1
        return rows_seen

    def stop(self) -> None:
        """Stop ``flwr run``, the SuperNodes and the SuperLink, all at once.

        Each process gets its SIGTERM grace period in its own thread, so a
        slow one does not delay the others and Ctrl-C returns within about
        two grace periods (``STOP_TIMEOUT_SECONDS``), whatever the node count.
        """
        processes = [
            process
            for process in (self.submitter, *self.supernodes, self.superlink)
            if process is not None
        ]

        def stop_one(process: ManagedProcess) -> None:
            try:
                process.stop()
            except Exception:  # keep stopping the others
                logger.exception("Failed to stop %s", process.name)

        threads = [threading.Thread(target=stop_one, args=(process,)) for process in processes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        logger.info("Stopped all deployment processes; logs in %s", self.log_dir)


def read_complete_rows(path: Path) -> list[dict[str, float]]:
    """Return the rows of ``metrics.csv`` that are completely written, values as floats."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    # The ServerApp may be writing the file right now; only complete lines count.
    complete = text[: text.rfind("\n") + 1]
    return [
        {key: _to_float(value) for key, value in row.items() if key}
        for row in csv.DictReader(complete.splitlines())
    ]


def _to_float(text: str | None) -> float:
    """Parse a metrics.csv cell; empty or invalid cells become NaN."""
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def run_deployment(
    run_config: Mapping[str, Any],
    *,
    tls: bool = False,
    certs_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    verbose: bool = False,
    timeout: float | None = None,
    superlink: str | None = None,
) -> Path:
    """Run one experiment on a local SuperLink and ``num-clients`` SuperNodes.

    Parameters
    ----------
    run_config : Mapping[str, Any]
        Flat run config; validated here with ``validate_run_config``.
    tls, certs_dir, verbose
        See ``Deployment``.
    progress : Callable[[RoundProgress], None] | None, default=None
        Called once per finished round, as ``metals run`` does.
    timeout : float | None, default=None
        Seconds before the run is abandoned.
    superlink : str | None, default=None
        ``HOST:PORT`` of a running SuperLink to submit to instead of starting
        one (see ``Deployment.external_superlink``).

    Returns
    -------
    Path
        The run directory with metrics.csv, summary.json, model.pt and ``deploy/logs``.
    """
    from metals.common.runconfig import validate_run_config

    config = validate_run_config(run_config)
    deployment = Deployment(
        config, tls=tls, certs_dir=certs_dir, verbose=verbose, external_superlink=superlink
    )
    with deployment:
        deployment.start()
        deployment.submit()
        return deployment.wait(progress=progress, timeout=timeout)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


# Set by the handler of _signals_as_interrupt; read by raise_if_interrupted.
_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``KeyboardInterrupt``, and record that one arrived.

    SIGTERM then cleans up as Ctrl-C does. The record matters for a signal
    that arrives while the process forks a child: Python runs the handler
    inside an at-fork hook (logging's lock release), prints "Exception
    ignored" and drops the ``KeyboardInterrupt``. The deployment's wait
    loops call :func:`raise_if_interrupted`, so such a Ctrl-C still stops
    it within one poll instead of being lost.
    """

    def _raise(signum: int, frame: object) -> None:
        _INTERRUPTED.set()
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _INTERRUPTED.clear()
    previous = {signum: signal.signal(signum, _raise) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _INTERRUPTED.clear()


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a signal arrived whose exception Python dropped.

    See :func:`_signals_as_interrupt`.
    """
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt("a signal arrived while a child process was starting")


DEPLOY_HELP = """\
usage: metals deploy [--tls] [--certs DIR] [--timeout SECONDS] [--superlink HOST:PORT]
                     [OVERRIDES ...]

Run an experiment on a Flower SuperLink and one SuperNode per client, each an
OS process on this machine, talking over loopback. Takes the same Hydra
overrides as 'metals run' (num_clients=3 sets the number of SuperNodes,
hydra.run.dir=PATH the run directory) and writes the same run directory, with
one log per process in deploy/logs/.

options:
  --tls              serve the SuperLink with TLS; SuperNodes verify it with the CA
  --certs DIR        folder with ca.crt, server.pem and server.key
                     (python -m metals.tls DIR); default: fresh ones in deploy/tls
  --timeout SECONDS  abandon the run (and stop every process) after this long;
                     default: no limit beyond each round's round-timeout
  --superlink HOST:PORT
                     submit to a SuperLink that runs elsewhere with its own
                     SuperNodes, instead of starting processes here. The
                     ServerApp's host writes the run directory, so submit from
                     that host or from one that shares the folder
"""


def _split_deploy_options(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Separate the options of ``metals deploy`` from the Hydra overrides.

    Raises
    ------
    ValueError
        When an option lacks its value or the value is invalid.
    """
    options = argparse.Namespace(tls=False, certs=None, timeout=None, superlink=None)
    rest: list[str] = []
    index = 0
    arguments = list(argv)
    # Only --tls, --certs, --timeout and --superlink are parsed here; the rest (including
    # Hydra's -m and --cfg) passes through in its original order.
    while index < len(arguments):
        argument = arguments[index]
        name = argument.split("=", 1)[0]
        if name == "--tls":
            options.tls = True
        elif name in ("--certs", "--timeout", "--superlink"):
            if "=" in argument:
                value = argument.split("=", 1)[1]
            elif index + 1 < len(arguments):
                index += 1
                value = arguments[index]
            else:
                raise ValueError(f"option {name} needs a value")
            if name == "--certs":
                options.certs = Path(value)
            elif name == "--superlink":
                from metals.device import parse_superlink_address

                parse_superlink_address(value)
                options.superlink = value
            else:
                try:
                    options.timeout = float(value)
                except ValueError:
                    raise ValueError(
                        f"invalid value {value!r} for --timeout: expected seconds"
                    ) from None
                if options.timeout <= 0:
                    raise ValueError(f"invalid value {value!r} for --timeout: must be > 0")
        else:
            rest.append(argument)
        index += 1
    return options, rest


def deploy_main(argv: list[str]) -> int:
    """Run ``metals deploy [options] [overrides]``; return the exit code.

    Returns
    -------
    int
        0 when every run finished, 1 when a run failed, 2 for invalid
        arguments or values, 130 when interrupted.
    """
    if any(argument in ("-h", "--help") for argument in argv):
        sys.stdout.write(DEPLOY_HELP)
        return 0
    try:
        options, overrides = _split_deploy_options(argv)
    except ValueError as error:
        sys.stderr.write(f"metals deploy: {error}\n")
        return 2

    from metals.cli import run_with_hydra

    def execute(run_config: Mapping[str, Any], verbose: bool) -> Path:
        from metals.progress import ProgressPrinter

        return run_deployment(
            run_config,
            tls=options.tls,
            certs_dir=options.certs,
            progress=ProgressPrinter(),
            verbose=verbose,
            timeout=options.timeout,
            superlink=options.superlink,
        )

    try:
        with _signals_as_interrupt():
            return run_with_hydra(overrides, "deploy", execute)
    except KeyboardInterrupt:
        sys.stderr.write("metals deploy: interrupted; every process it started is stopped\n")
        return 130
    except (DeployError, FileNotFoundError) as error:
        sys.stderr.write(f"metals deploy: {error}\n")
        return 1
