"""``metals client``: run one device as a Flower SuperNode with its own traffic file.

On a device such as a Raspberry Pi, ``metals client --superlink HOST:PORT
--data PATH`` starts ``flower-supernode`` in the foreground with node config
``data-path=PATH``, so the ClientApp trains on this device's records only.
All experiment settings arrive from the server with each message. Without
``--tls ROOT_CERT`` the connection is unencrypted, and the command logs a
warning about it.

The file is in the layout of the run's dataset and must contain its label
column, from which the simulated labelling oracle takes the labels. The ClientApp
encodes it with the preprocessor the server fitted and sends with the
device's first message (``metals.client.device_data``).

This module imports nothing from ``metals.server``: a device image ships
without server code.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
from pathlib import Path

from metals.deploy import FLOWER_OFFLINE_ENV, STOP_TIMEOUT_SECONDS, flower_executable

logger = logging.getLogger(__name__)

DEFAULT_RUNTIME_PORT = 9094


def parse_superlink_address(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (or ``[IPv6]:PORT``) into host and port.

    Raises
    ------
    ValueError
        When the port is missing, not a number or outside 1..65535.
    """
    host, separator, port_text = address.rpartition(":")
    if not separator or not host:
        raise ValueError(
            f"invalid SuperLink address {address!r}: expected HOST:PORT, e.g. 192.168.1.10:9093"
        )
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(
            f"invalid port {port_text!r} in SuperLink address {address!r}: expected a number"
        ) from None
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid port {port} in SuperLink address {address!r}: use 1..65535")
    return host.strip("[]"), port


def build_supernode_command(
    superlink: str,
    data_path: Path,
    *,
    root_certificates: Path | None = None,
    runtime_port: int = DEFAULT_RUNTIME_PORT,
    max_wait_time: float | None = None,
) -> list[str]:
    """Return the ``flower-supernode`` command for one device.

    Parameters
    ----------
    superlink : str
        ``HOST:PORT`` of the SuperLink's Fleet API.
    data_path : Path
        This device's traffic file, passed as node config ``data-path``.
    root_certificates : Path | None, default=None
        CA certificate that signed the SuperLink's certificate; None runs
        without TLS.
    runtime_port : int, default=9094
        Loopback port of the SuperNode's Runtime API, used by its ClientApp
        processes.
    max_wait_time : float | None, default=None
        Seconds to keep trying to reach the SuperLink; None retries forever.

    Raises
    ------
    ValueError
        When the address is invalid or the path contains a double quote,
        which the node-config syntax cannot carry.
    """
    parse_superlink_address(superlink)
    text = str(data_path)
    if '"' in text:
        raise ValueError(
            f"invalid data path {text!r}: a double quote cannot be passed in the node "
            "config; rename the file or its folder"
        )
    command = [flower_executable("flower-supernode")]
    if root_certificates is None:
        command.append("--insecure")
    else:
        command += ["--root-certificates", str(root_certificates)]
    command += [
        "--superlink",
        superlink,
        "--host",
        "127.0.0.1",
        "--port",
        str(runtime_port),
        "--isolation",
        "subprocess",
        "--node-config",
        f'data-path="{text}"',
    ]
    if max_wait_time is not None:
        command += ["--max-wait-time", str(max_wait_time)]
    return command


def client_main(argv: list[str]) -> int:
    """Run ``metals client``; return the SuperNode's exit code (2 for invalid arguments)."""
    parser = argparse.ArgumentParser(
        prog="metals client",
        description=(
            "Start a Flower SuperNode for this device. It connects to the SuperLink "
            "and trains on the device's own traffic file whenever the server samples it."
        ),
    )
    parser.add_argument(
        "--superlink", required=True, help="SuperLink address HOST:PORT (Fleet API)"
    )
    parser.add_argument("--data", required=True, type=Path, help="this device's traffic CSV file")
    parser.add_argument(
        "--tls",
        type=Path,
        default=None,
        metavar="ROOT_CERT",
        help="CA certificate (ca.crt) that signed the SuperLink certificate; turns TLS on",
    )
    parser.add_argument(
        "--runtime-port",
        type=int,
        default=DEFAULT_RUNTIME_PORT,
        help=f"loopback port for the ClientApp runtime (default {DEFAULT_RUNTIME_PORT})",
    )
    parser.add_argument(
        "--max-wait-time",
        type=float,
        default=None,
        help="seconds to keep trying to reach the SuperLink (default: forever)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    data_path = args.data.expanduser().resolve()
    if not data_path.is_file():
        parser.error(f"data file not found: {data_path}; pass this device's traffic CSV")
    if args.tls is not None and not args.tls.is_file():
        parser.error(f"root certificate not found: {args.tls}; copy ca.crt from the server")
    try:
        command = build_supernode_command(
            args.superlink,
            data_path,
            root_certificates=None if args.tls is None else args.tls.resolve(),
            runtime_port=args.runtime_port,
            max_wait_time=args.max_wait_time,
        )
    except ValueError as error:
        parser.error(str(error))

    if args.tls is None:
        logger.warning(
            "TLS is off: traffic to the SuperLink %s is unencrypted; pass --tls ca.crt",
            args.superlink,
        )
    environment = dict(os.environ)
    environment.update(FLOWER_OFFLINE_ENV)
    logger.info("Starting SuperNode for %s, SuperLink %s", data_path, args.superlink)

    # The SuperNode runs in the foreground; Ctrl-C reaches it through the
    # terminal's process group and SIGTERM is passed on, so it stops its
    # ClientApp processes itself.
    process = subprocess.Popen(command, env=environment)  # noqa: S603

    def forward(signum: int, frame: object) -> None:
        process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        try:
            code = process.wait()
        except KeyboardInterrupt:
            # The SuperNode got the same Ctrl-C; give it time to stop its ClientApps.
            try:
                code = process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "SuperNode did not stop within %.0f s after Ctrl-C; killing it",
                    STOP_TIMEOUT_SECONDS,
                )
                process.kill()
                code = process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    logger.info("SuperNode stopped with exit code %d", code)
    return code
