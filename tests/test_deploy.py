"""Tests of metals deploy: process handling, TLS files, the Flower app, and real runs."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tomli
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from metals.deploy import (
    DeployError,
    Deployment,
    ManagedProcess,
    _ephemeral_start,
    _signals_as_interrupt,
    _split_deploy_options,
    deploy_main,
    find_free_port,
    flower_environment,
    raise_if_interrupted,
    read_complete_rows,
    run_deployment,
    wait_for_port,
    write_app_folder,
    write_connection,
)
from metals.tls import SiteCertificates, create_site_certificates

# Tiny settings: 3 SuperNodes, 1 local epoch, every client in every round.
TINY = {
    "dataset": "nsl_kdd",
    "num-clients": 3,
    "num-rounds": 2,
    "local-epochs": 1,
    "fraction-train": 1.0,
    "round-timeout": 120.0,
}


def processes_using(folder: Path) -> list[int]:
    """Return ids of live processes whose FLWR_HOME or command line is inside ``folder``."""
    marker = str(folder).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline or any(
            item.startswith(b"FLWR_HOME=" + marker) for item in environ.split(b"\0")
        ):
            found.append(int(entry.name))
    return found


def group_alive(pgid: int, grace: float = 5.0) -> bool:
    """Return True when a process group still has a running member after ``grace`` seconds.

    Zombies do not count: a killed child stays a zombie until init reaps it.
    """
    deadline = time.monotonic() + grace
    while True:
        members = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            state, group = fields[0], int(fields[2])
            if group == pgid and state != "Z":
                members.append(int(entry.name))
        if not members or time.monotonic() > deadline:
            return bool(members)
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# TLS files
# ---------------------------------------------------------------------------


def test_site_certificates_chain_and_names(tmp_path: Path) -> None:
    # Prepare / Execute
    paths = create_site_certificates(tmp_path, ["superlink", "192.168.1.10"])

    # Assert
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "superlink" in names.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    assert "127.0.0.1" in ips
    assert "192.168.1.10" in ips
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert stat.S_IMODE(paths.server_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


def test_site_certificates_keep_existing_files(tmp_path: Path) -> None:
    # Prepare
    first = create_site_certificates(tmp_path)
    original = first.ca_cert.read_bytes()

    # Execute / Assert
    with pytest.raises(FileExistsError, match="overwrite"):
        create_site_certificates(tmp_path)
    assert first.ca_cert.read_bytes() == original
    create_site_certificates(tmp_path, overwrite=True)
    assert first.ca_cert.read_bytes() != original


@pytest.mark.parametrize(
    ("hosts", "days", "message"),
    [([], 0, "valid_days"), ([" "], 30, "host names must not be empty")],
)
def test_site_certificates_reject_bad_input(
    tmp_path: Path, hosts: list[str], days: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        create_site_certificates(tmp_path, hosts, valid_days=days)


def test_site_certificates_check_names_missing_file(tmp_path: Path) -> None:
    # Prepare
    paths = create_site_certificates(tmp_path)
    paths.server_key.unlink()

    # Execute / Assert
    with pytest.raises(FileNotFoundError, match="server.key"):
        SiteCertificates.in_folder(tmp_path).check()


def test_server_key_is_elliptic_curve(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    paths = create_site_certificates(tmp_path)

    key = load_pem_private_key(paths.server_key.read_bytes(), password=None)

    assert isinstance(key, ec.EllipticCurvePrivateKey)


# ---------------------------------------------------------------------------
# Flower app folder and connection file
# ---------------------------------------------------------------------------


def test_app_folder_is_a_valid_flower_app(tmp_path: Path) -> None:
    import zipfile
    from io import BytesIO

    from flwr.cli.build import build_fab_from_disk

    from metals.common.runconfig import validate_run_config

    # Prepare
    config = validate_run_config({"num-clients": 4, "run-dir": str(tmp_path / "run")})

    # Execute
    folder = write_app_folder(tmp_path / "app", config)
    fab = build_fab_from_disk(folder)

    # Assert: Flower accepts the app, and it carries the whole run config.
    with zipfile.ZipFile(BytesIO(fab)) as archive:
        packaged = tomli.loads(archive.read("pyproject.toml").decode())
    app = packaged["tool"]["flwr"]["app"]
    assert app["components"]["serverapp"] == "metals.server.app:app"
    assert app["components"]["clientapp"] == "metals.client.app:app"
    assert app["config"] == dict(config)


@pytest.mark.parametrize("root", [None, Path("/site/ca.crt")])
def test_connection_file_sets_tls_mode(tmp_path: Path, root: Path | None) -> None:
    name = write_connection(tmp_path, "127.0.0.1:9093", root)

    document = tomli.loads((tmp_path / "config.toml").read_text())

    assert document["superlink"]["default"] == name
    connection = document["superlink"][name]
    assert connection["address"] == "127.0.0.1:9093"
    if root is None:
        assert connection["insecure"] is True
        assert "root-certificates" not in connection
    else:
        assert connection["root-certificates"] == str(root)
        assert "insecure" not in connection


def test_flower_environment_is_offline(tmp_path: Path) -> None:
    environment = flower_environment(tmp_path, {"PATH": "/usr/bin", "FLWR_TELEMETRY_ENABLED": "1"})

    assert environment["FLWR_TELEMETRY_ENABLED"] == "0"
    assert environment["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert environment["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert environment["FLWR_HOME"] == str(tmp_path)
    assert environment["PATH"] == "/usr/bin"


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    deployment = Deployment({"num-clients": 2, "run-dir": "out", "data-dir": "data"})

    assert deployment.run_dir == tmp_path / "out"
    assert deployment.run_config["run-dir"] == str(tmp_path / "out")
    assert deployment.run_config["data-dir"] == str(tmp_path / "data")


def test_unknown_key_rejected_before_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown run-config key 'num-client'"):
        run_deployment({"num-client": 3, "run-dir": str(tmp_path / "run")})

    assert not (tmp_path / "run").exists()


def test_metrics_rows_skip_half_written_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("round,accuracy\n1,0.5\n2,0.")

    rows = read_complete_rows(path)

    assert rows == [{"round": 1.0, "accuracy": 0.5}]


# ---------------------------------------------------------------------------
# Command-line options
# ---------------------------------------------------------------------------


def test_deploy_options_leave_overrides_in_order() -> None:
    options, rest = _split_deploy_options(
        ["-m", "num_clients=3", "--tls", "--certs", "site", "--timeout=90", "seed=1,2"]
    )

    assert options.tls is True
    assert options.certs == Path("site")
    assert options.timeout == 90.0
    assert rest == ["-m", "num_clients=3", "seed=1,2"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--timeout"], "needs a value"), (["--timeout", "soon"], "expected seconds")],
)
def test_deploy_options_reject_bad_values(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _split_deploy_options(argv)


def test_deploy_rejects_invalid_value_before_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    code = deploy_main(["num_clients=0", f"hydra.run.dir={tmp_path / 'run'}"])

    # Assert
    assert code == 2
    assert "num" in capsys.readouterr().err
    assert not (tmp_path / "run" / "deploy").exists()


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


def test_stop_ends_whole_process_group(tmp_path: Path) -> None:
    # Prepare: a shell that leaves a background child behind.
    child_pid_file = tmp_path / "child.pid"
    process = ManagedProcess(
        "sleeper",
        ["sh", "-c", f"sleep 300 & echo $! > {child_pid_file}; wait"],
        tmp_path / "sleeper.log",
        dict(os.environ),
    )
    process.start()
    deadline = time.monotonic() + 10
    while not child_pid_file.read_text().strip() if child_pid_file.exists() else True:
        assert time.monotonic() < deadline, "the shell did not start its child"
        time.sleep(0.05)

    # Execute
    process.stop(timeout=5)

    # Assert
    assert process.exit_code() is not None
    assert not group_alive(process.pid)


def test_start_failure_shows_log_tail(tmp_path: Path) -> None:
    # Prepare: a "server" that fails before opening its port.
    process = ManagedProcess(
        "broken",
        [sys.executable, "-c", "print('address already in use'); raise SystemExit(3)"],
        tmp_path / "broken.log",
        dict(os.environ),
    )
    process.start()

    # Execute / Assert
    try:
        with pytest.raises(DeployError, match="code 3") as caught:
            wait_for_port("127.0.0.1", find_free_port(), process, timeout=30)
        assert "address already in use" in str(caught.value)
    finally:
        process.stop()


def test_missing_superlink_port_times_out(tmp_path: Path) -> None:
    process = ManagedProcess(
        "silent", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.log", {}
    )
    process.start()
    try:
        with pytest.raises(DeployError, match="did not open"):
            wait_for_port("127.0.0.1", find_free_port(), process, timeout=1)
    finally:
        process.stop()
    assert not group_alive(process.pid)


# ---------------------------------------------------------------------------
# Real deployments on loopback (SuperLink + 3 SuperNodes, NSL-KDD)
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_deploy_command_two_rounds_tls(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    run_dir = tmp_path / "run"
    argv = [
        "num_clients=3",
        "num_rounds=2",
        "train.local_epochs=1",
        "fl.fraction_train=1.0",
        f"data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
        "--timeout",
        "240",
        "--tls",
    ]

    # Execute
    try:
        code = deploy_main(argv)
    finally:
        leftover = processes_using(run_dir)

    # Assert
    output = capsys.readouterr()
    assert code == 0, output.err
    assert leftover == []
    rows = read_complete_rows(run_dir / "metrics.csv")
    assert [row["round"] for row in rows] == [1.0, 2.0]
    for name in ("summary.json", "model.pt", "config.json", "results.md"):
        assert (run_dir / name).is_file(), name
    logs = run_dir / "deploy" / "logs"
    for name in ("superlink", "supernode-0", "supernode-1", "supernode-2", "flwr-run"):
        assert (logs / f"{name}.log").stat().st_size > 0, name
    assert "round 2/2 | clients 3/3" in output.out

    # Assert: TLS on every connection to the SuperLink.
    assert "unencrypted" not in output.out + output.err
    assert (run_dir / "deploy" / "tls" / "ca.crt").is_file()
    assert "Uvicorn running on https://" in (logs / "superlink.log").read_text()
    for node in range(3):
        assert "insecure" not in (logs / f"supernode-{node}.log").read_text().lower()


@pytest.mark.slow
def test_deploy_survives_killed_supernode(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: round 2 may go ahead with 2 of 3 nodes.
    config = {
        **TINY,
        "data-dir": str(data_dir),
        "run-dir": str(tmp_path / "run"),
        "min-available-nodes": 2,
        "min-valid-fraction": 0.5,
        "round-timeout": 40.0,
    }
    caplog.set_level(logging.INFO, logger="metals.deploy")
    deployment = Deployment(config)

    def kill_after_first_round() -> None:
        while not read_complete_rows(deployment.run_dir / "metrics.csv"):
            if deployment.submitter is None or deployment.submitter.exit_code() is not None:
                return
            time.sleep(0.1)
        deployment.supernodes[2].kill()

    # Execute
    with deployment:
        deployment.start()
        deployment.submit()
        killer = threading.Thread(target=kill_after_first_round, daemon=True)
        killer.start()
        run_dir = deployment.wait(timeout=240)
        killer.join(timeout=5)
    groups = [process.pid for process in [deployment.superlink, *deployment.supernodes]]

    # Assert
    rows = read_complete_rows(run_dir / "metrics.csv")
    assert [row["round"] for row in rows] == [1.0, 2.0]
    assert (run_dir / "summary.json").is_file()
    assert deployment.supernodes[2].exit_code() == -signal.SIGKILL
    assert deployment.missing_replies >= 1
    assert "supernode-2 exited with code -9" in caplog.text
    assert "TLS is off: traffic between the SuperLink and the SuperNodes is unencrypted" in (
        caplog.text
    )
    assert "sent no valid reply" in caplog.text
    assert not any(group_alive(pgid) for pgid in groups)
    assert processes_using(run_dir) == []


@pytest.mark.slow
def test_deploy_stops_everything_on_failure(tmp_path: Path) -> None:
    # Prepare: a ServerApp reference that cannot be imported fails the run.
    config = {**TINY, "run-dir": str(tmp_path / "run")}
    deployment = Deployment(config, server_app="metals.server.missing:app")

    # Execute
    with pytest.raises(DeployError) as caught, deployment:
        deployment.start()
        deployment.submit()
        deployment.wait(timeout=120)

    # Assert
    assert "flwr-run.log" in str(caught.value)
    assert processes_using(tmp_path / "run") == []


@pytest.mark.slow
def test_interrupt_stops_every_process(tmp_path: Path, data_dir: Path) -> None:
    # Prepare
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "metals.cli",
        "deploy",
        "num_clients=2",
        f"data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
    ]
    # A shell starts background jobs with SIGINT ignored, and a child keeps
    # that, so restore the default as a terminal-started command has it.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        log = run_dir / "deploy" / "logs" / "supernode-1.log"
        while not log.is_file():
            assert time.monotonic() < deadline, "metals deploy started no SuperNode"
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            time.sleep(0.2)

        # Execute: Ctrl-C as the terminal would send it.
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    # Assert
    assert code == 130
    assert processes_using(run_dir) == []


class _SignalInFinalizer:
    """Gets a SIGINT while Python finalizes it, where a raised exception is dropped.

    An at-fork hook, where a Ctrl-C during the start of a child lands, drops
    it the same way.
    """

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)


def test_dropped_signal_still_interrupts() -> None:
    with _signals_as_interrupt():
        # Execute: the handler's KeyboardInterrupt is lost in the finalizer.
        _SignalInFinalizer()

        # Assert: the next check of a wait loop raises it again.
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
    raise_if_interrupted()  # and the record ends with the block


def test_free_ports_distinct_below_ephemeral() -> None:
    # Execute: as many ports as a deployment with several SuperNodes asks for.
    ports = [find_free_port() for _ in range(20)]

    # Assert: no port twice, and none from the range of outgoing connections.
    assert len(set(ports)) == len(ports)
    assert max(ports) < _ephemeral_start()
    assert min(ports) >= 1024
