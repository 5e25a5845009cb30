"""Tests of `metals client`: the SuperNode command for one device, and a real TLS connection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args
from test_docker import accepted_flags

from metals.deploy import (
    FLOWER_OFFLINE_ENV,
    ManagedProcess,
    find_free_port,
    flower_environment,
    flower_executable,
    wait_for_port,
)
from metals.device import build_supernode_command, client_main, parse_superlink_address
from metals.tls import create_site_certificates


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.168.1.10:9093", ("192.168.1.10", 9093)),
        ("superlink:8000", ("superlink", 8000)),
        ("[::1]:8000", ("::1", 8000)),
    ],
)
def test_superlink_address_parsed(address: str, expected: tuple[str, int]) -> None:
    assert parse_superlink_address(address) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("superlink", "expected HOST:PORT"),
        (":8000", "expected HOST:PORT"),
        ("superlink:http", "expected a number"),
        ("superlink:70000", "1..65535"),
    ],
)
def test_superlink_address_rejected(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_superlink_address(address)


@pytest.mark.parametrize("tls", [False, True])
def test_supernode_command_accepted_by_flower(tmp_path: Path, tls: bool) -> None:
    # Prepare
    data = tmp_path / "my traffic.csv"
    root = tmp_path / "ca.crt" if tls else None

    # Execute
    command = build_supernode_command("192.168.1.10:8000", data, root_certificates=root)

    # Assert
    flags = {item for item in command if item.startswith("--")}
    assert flags <= accepted_flags("flower-supernode")
    assert ("--insecure" in command) is not tls
    assert ("--root-certificates" in command) is tls
    node_config = command[command.index("--node-config") + 1]
    assert parse_config_args([node_config]) == {"data-path": str(data)}


def test_supernode_command_rejects_quote_in_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="double quote"):
        build_supernode_command("127.0.0.1:8000", tmp_path / 'a"b.csv')


def test_client_rejects_missing_data_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        client_main(["--superlink", "127.0.0.1:8000", "--data", str(tmp_path / "none.csv")])

    assert caught.value.code == 2
    assert "data file not found" in capsys.readouterr().err


def test_client_rejects_missing_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "traffic.csv"
    data.write_text("a,b\n1,2\n")

    with pytest.raises(SystemExit) as caught:
        client_main(
            ["--superlink", "127.0.0.1:8000", "--data", str(data), "--tls", str(tmp_path / "x")]
        )

    assert caught.value.code == 2
    assert "root certificate not found" in capsys.readouterr().err


@pytest.mark.slow
def test_client_joins_superlink_over_tls(tmp_path: Path) -> None:
    # Prepare: a SuperLink with TLS on loopback, and a device's traffic file.
    certificates = create_site_certificates(tmp_path / "tls")
    data = tmp_path / "traffic.csv"
    data.write_text("duration,protocol_type\n0,tcp\n")
    port = find_free_port()
    superlink = ManagedProcess(
        "superlink",
        [
            flower_executable("flower-superlink"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ssl-certfile",
            str(certificates.server_cert),
            "--ssl-keyfile",
            str(certificates.server_key),
            "--ssl-ca-certfile",
            str(certificates.ca_cert),
        ],
        tmp_path / "superlink.log",
        flower_environment(tmp_path / "home-superlink"),
    )
    environment = {**os.environ, **FLOWER_OFFLINE_ENV, "FLWR_HOME": str(tmp_path / "home-node")}
    command = [
        sys.executable,
        "-m",
        "metals.cli",
        "client",
        "--superlink",
        f"127.0.0.1:{port}",
        "--data",
        str(data),
        "--tls",
        str(certificates.ca_cert),
        "--runtime-port",
        str(find_free_port()),
    ]
    client: subprocess.Popen[bytes] | None = None
    try:
        superlink.start()
        wait_for_port("127.0.0.1", port, superlink, timeout=60)

        # Execute: the device connects, then is stopped as systemd or docker would.
        with (tmp_path / "client.log").open("wb") as log:
            client = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 90
            while "Activated node_id" not in superlink.log_tail(200):
                assert client.poll() is None, (tmp_path / "client.log").read_text()
                assert time.monotonic() < deadline, "the device never registered"
                time.sleep(0.5)
            client.send_signal(signal.SIGTERM)
            code = client.wait(timeout=60)
    finally:
        if client is not None and client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait()
        superlink.stop()

    # Assert
    client_log = (tmp_path / "client.log").read_text()
    assert code == 0, client_log
    assert "Starting SuperNode for" in client_log
    assert "TLS is off" not in client_log
    assert "--insecure" not in client_log


@pytest.mark.slow
def test_devices_train_beside_partitions(tmp_path: Path, data_dir: Path) -> None:
    import numpy as np

    from metals.deploy import Deployment, read_complete_rows
    from metals.server.checkpoint import load_checkpoint

    # Prepare: two devices with 400 records each, cut from the NSL-KDD training file.
    with (data_dir / "nsl-kdd" / "KDDTrain+_20Percent.txt").open() as handle:
        lines = [next(handle) for _ in range(800)]
    device_files = []
    for number, start in enumerate((0, 400)):
        path = tmp_path / f"device-{number}" / "traffic.csv"
        path.parent.mkdir()
        path.write_text("".join(lines[start : start + 400]))
        device_files.append(path)
    # Two partition SuperNodes (num-clients) and the two devices make four nodes.
    config = {
        "dataset": "nsl_kdd",
        "data-dir": str(data_dir),
        "run-dir": str(tmp_path / "run"),
        "num-clients": 2,
        "min-available-nodes": 4,
        "num-rounds": 2,
        "local-epochs": 1,
        "fraction-train": 1.0,
        "query-size": 10,
        "round-timeout": 180.0,
    }
    deployment = Deployment(config)

    # Execute
    with deployment:
        deployment.start()
        for number, path in enumerate(device_files):
            command = build_supernode_command(
                deployment.address, path, runtime_port=find_free_port()
            )
            node = ManagedProcess(
                f"device-{number}",
                command,
                deployment.log_dir / f"device-{number}.log",
                flower_environment(deployment.deploy_dir / "flwr-home" / f"device-{number}"),
            )
            node.start()
            deployment.supernodes.append(node)
        deployment.submit()
        run_dir = deployment.wait(timeout=420)

    # Assert: both rounds ran with every node.
    rows = read_complete_rows(run_dir / "metrics.csv")
    assert [row["round"] for row in rows] == [1.0, 2.0]
    assert deployment.missing_replies == 0

    # Assert: each device replied with its own pools: 400 records, 80 local
    # test, 64 of the other 320 labeled at the start, 10 bought per round.
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint is not None
    device_keys = sorted(key for key in checkpoint.client_stats if key.startswith("device-"))
    assert len(device_keys) == 2
    assert sorted(key for key in checkpoint.client_stats if key.isdigit()) == ["0", "1"]
    for key in device_keys:
        stats = checkpoint.client_stats[key]
        assert stats["pool-size"] == 320
        assert stats["labels-queried-total"] == 20
        assert stats["labeled-pool-size"] == 84

    # Assert: each device kept its pools in its own file.
    for key in device_keys:
        with np.load(run_dir / "client-state" / f"{key}.npz") as pools:
            assert int(pools["labels_queried_total"]) == 20
            assert len(pools["labeled"]) == 84
    labels_total = sum(
        int(stats["labels-queried-total"]) for stats in checkpoint.client_stats.values()
    )
    assert rows[-1]["labels_queried_total"] == labels_total
