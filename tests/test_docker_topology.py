"""Run the services of docker-compose.yml as local processes, as `docker compose up` would.

No Docker engine runs here. This test takes every service's program and
command from the compose file and maps container host names and ports to
free loopback ports, and the volumes to temporary folders. It then runs the
whole topology for one round on NSL-KDD: process isolation, separate
ServerApp and ClientApp runners, and the submit job.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from test_deploy import processes_using
from test_docker import command_of, option, program_of, role_of, services

from metals.deploy import (
    ManagedProcess,
    find_free_port,
    flower_environment,
    flower_executable,
    read_complete_rows,
    wait_for_port,
)

START_ORDER = ("superlink", "serverapp", "supernode", "clientapp")


def local_commands(data_dir: Path, results_dir: Path) -> dict[str, list[str]]:
    """Return each service's command with hosts, ports and volumes mapped to this machine."""
    # Every port a service listens on gets a free loopback port.
    addresses = {}
    for name, service in services().items():
        command = command_of(service)
        if "--port" in command:
            addresses[f"{name}:{option(command, '--port')}"] = f"127.0.0.1:{find_free_port()}"

    commands = {}
    for name, service in services().items():
        command = command_of(service)
        mapped = []
        for index, item in enumerate(command):
            previous = command[index - 1] if index else ""
            if previous == "--port":
                item = addresses[f"{name}:{item}"].split(":")[1]
            elif previous == "--host":
                item = "127.0.0.1"
            elif item in addresses:
                item = addresses[item]
            elif item.startswith("data_dir="):
                item = f"data_dir={data_dir}"
            elif item.startswith("hydra.run.dir=/results/"):
                item = f"hydra.run.dir={results_dir / item.split('/results/', 1)[1]}"
            elif item.startswith("num_rounds="):
                item = "num_rounds=1"
            mapped.append(item)
        if role_of(name) == "submit":
            mapped += ["train.local_epochs=1"]
        program = program_of(service)
        if program == "metals":
            commands[name] = [sys.executable, "-m", "metals.cli", *mapped]
        else:
            commands[name] = [flower_executable(program), *mapped]
    return commands


@pytest.mark.slow
def test_compose_topology_runs_one_round(tmp_path: Path, data_dir: Path) -> None:
    # Prepare
    results = tmp_path / "results"
    commands = local_commands(data_dir, results)
    processes = {
        name: ManagedProcess(
            name,
            command,
            tmp_path / "logs" / f"{name}.log",
            {**flower_environment(tmp_path / "homes" / name), **services()[name]["environment"]},
        )
        for name, command in commands.items()
    }
    order = [name for role in START_ORDER for name in processes if role_of(name) == role]

    # Execute: start the long-running services, then the submit job, and wait for it.
    try:
        for name in order:
            processes[name].start()
            if name == "superlink":
                port = int(option(commands[name], "--port"))
                wait_for_port("127.0.0.1", port, processes[name], timeout=60)
        submit = processes["submit"]
        submit.start()
        deadline = time.monotonic() + 300
        while submit.exit_code() is None:
            assert time.monotonic() < deadline, submit.log_tail(40)
            for name in order:
                assert processes[name].exit_code() is None, processes[name].log_tail(40)
            time.sleep(1)
    finally:
        for process in processes.values():
            process.stop()

    # Assert
    assert submit.exit_code() == 0, submit.log_tail(40)
    run_dir = results / "compose-run"
    assert [row["round"] for row in read_complete_rows(run_dir / "metrics.csv")] == [1.0]
    assert (run_dir / "summary.json").is_file()
    assert (run_dir / "results.md").is_file()
    assert "Activated node_id" in processes["superlink"].log_tail(400)
    assert processes_using(tmp_path) == []
