"""Static checks of docker-compose.yml and the Dockerfiles against the installed Flower CLI.

No Docker engine runs here, so these tests read the files. They check that
the files parse and that every service's command uses flags that the
installed Flower program lists in its ``--help``. Partition ids must cover
0..N-1 once each, and addresses, ports and volumes must agree between services.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import tomli
import yaml

from metals.deploy import FLOWER_OFFLINE_ENV, _split_deploy_options

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILES = {
    "server": REPO / "docker" / "server.Dockerfile",
    "client": REPO / "docker" / "client.Dockerfile",
}
PROGRAM_OF_IMAGE = {
    "flwr/superlink": "flower-superlink",
    "flwr/supernode": "flower-supernode",
    "flwr/superexec": "flower-superexec",
}
HYDRA_FLAGS = {"-m", "--multirun", "--cfg", "--info"}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def role_of(name: str) -> str:
    """Return the role of a service from its name: superlink, supernode, clientapp, ..."""
    return name.split("-")[0]


def services_with_role(role: str) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in services().items() if role_of(name) == role}


@functools.cache
def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs with continuation lines joined."""
    logical: list[str] = []
    current = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    pairs = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def arguments_of(path: Path, instruction: str) -> list[str]:
    """Return the arguments of every ``instruction`` (RUN, ENV, ...) in a Dockerfile."""
    return [args for kind, args in dockerfile_instructions(path) if kind == instruction]


def dockerfile_of(service: dict[str, Any]) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    return REPO / build.get("context", ".") / build["dockerfile"]


def program_of(service: dict[str, Any]) -> str:
    """Return the program a service runs: its entrypoint, its Dockerfile's, or its image's."""
    if "entrypoint" in service:
        entrypoint = service["entrypoint"]
        return entrypoint[0] if isinstance(entrypoint, list) else shlex.split(entrypoint)[0]
    dockerfile = dockerfile_of(service)
    if dockerfile is not None:
        entrypoints = arguments_of(dockerfile, "ENTRYPOINT")
        return json.loads(entrypoints[-1])[0]
    image = service["image"].split(":")[0]
    return PROGRAM_OF_IMAGE[image]


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return [str(item) for item in command] if isinstance(command, list) else shlex.split(command)


def option(command: list[str], flag: str) -> str:
    """Return the value after ``flag`` (or in ``flag=value``); fail when it is missing."""
    for index, item in enumerate(command):
        if item == flag:
            return command[index + 1]
        if item.startswith(flag + "="):
            return item.split("=", 1)[1]
    raise AssertionError(f"{flag} missing from {command}")


@functools.cache
def accepted_flags(program: str) -> frozenset[str]:
    """Return the long options that ``program --help`` lists."""
    executable = Path(sys.executable).parent / program
    environment = {**os.environ, **FLOWER_OFFLINE_ENV}
    result = subprocess.run(
        [str(executable), "--help"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=True,
    )
    return frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", result.stdout))


def overrides_of(command: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in command if "=" in item and not item.startswith("-"))


def pyproject() -> dict[str, Any]:
    return tomli.loads((REPO / "pyproject.toml").read_text())


# ---------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------


def test_compose_has_every_role() -> None:
    roles = [role_of(name) for name in services()]

    assert roles.count("superlink") == 1
    assert roles.count("serverapp") == 1
    assert roles.count("submit") == 1
    assert roles.count("supernode") >= 2
    assert roles.count("supernode") == roles.count("clientapp")


@pytest.mark.parametrize("name", list(services()))
def test_service_flags_accepted_by_flower(name: str) -> None:
    # Prepare
    service = services()[name]
    program = program_of(service)
    flags = {item.split("=", 1)[0] for item in command_of(service) if item.startswith("--")}

    # Execute / Assert
    if program == "metals":
        options, rest = _split_deploy_options(command_of(service)[1:])
        assert command_of(service)[0] == "deploy"
        assert not [item for item in rest if item.startswith("-") and item not in HYDRA_FLAGS]
        assert options.superlink is not None
    else:
        unknown = flags - accepted_flags(program)
        assert not unknown, f"{name}: {program} does not accept {sorted(unknown)}"


def test_partition_ids_cover_every_node() -> None:
    # Prepare
    supernodes = services_with_role("supernode")
    configs = []
    for service in supernodes.values():
        pairs = option(command_of(service), "--node-config").split()
        configs.append(dict(pair.split("=", 1) for pair in pairs))

    # Execute
    ids = sorted(int(config["partition-id"]) for config in configs)
    totals = {int(config["num-partitions"]) for config in configs}

    # Assert
    assert ids == list(range(len(supernodes)))
    assert totals == {len(supernodes)}
    submit = command_of(services()["submit"])
    assert int(overrides_of(submit)["num_clients"]) == len(supernodes)


def test_addresses_and_ports_agree() -> None:
    # Prepare
    superlink = command_of(services()["superlink"])
    superlink_address = f"superlink:{option(superlink, '--port')}"

    # Assert: everyone dials the SuperLink where it listens.
    assert option(superlink, "--host") == "0.0.0.0"
    assert option(command_of(services()["serverapp"]), "--runtime-api-address") == (
        superlink_address
    )
    assert option(command_of(services()["submit"]), "--superlink") == superlink_address
    published = [str(port).split(":")[-1] for port in services()["superlink"].get("ports", [])]
    assert option(superlink, "--port") in published
    for name, service in services_with_role("supernode").items():
        assert option(command_of(service), "--superlink") == superlink_address, name
        assert option(command_of(service), "--host") == "0.0.0.0", name

    # Assert: each ClientApp runner serves exactly one SuperNode, at its port.
    targets = {}
    for name, service in services_with_role("clientapp").items():
        targets[name] = option(command_of(service), "--runtime-api-address")
    expected = {
        f"{name}:{option(command_of(service), '--port')}"
        for name, service in services_with_role("supernode").items()
    }
    assert sorted(targets.values()) == sorted(expected)


def test_runners_use_process_isolation() -> None:
    # The ServerApp and ClientApps run in their own containers.
    for name in [*services_with_role("superlink"), *services_with_role("supernode")]:
        assert option(command_of(services()[name]), "--isolation") == "process", name


def test_tls_mode_is_consistent() -> None:
    insecure = {name: "--insecure" in command_of(spec) for name, spec in services().items()}
    flower_services = {name for name in services() if role_of(name) != "submit"}

    assert len({insecure[name] for name in flower_services}) == 1


def test_data_mounted_read_only() -> None:
    # Prepare
    submit = overrides_of(command_of(services()["submit"]))
    data_dir = submit["data_dir"]

    # Assert: every process that reads data mounts the same folder read-only.
    for name in ["serverapp", "submit", *services_with_role("clientapp")]:
        mounts = [str(volume).split(":") for volume in services()[name].get("volumes", [])]
        data_mounts = [mount for mount in mounts if mount[-2:] == [data_dir, "ro"]]
        assert len(data_mounts) == 1, f"{name} lacks {data_dir} read-only"


def test_results_volume_shared() -> None:
    # Prepare
    submit = overrides_of(command_of(services()["submit"]))
    run_dir = Path(submit["hydra.run.dir"])
    declared = set(compose().get("volumes") or {})

    # Assert: the ServerApp writes the run directory where the submitter reads it.
    for name in ("serverapp", "submit"):
        mounts = [str(volume).split(":") for volume in services()[name]["volumes"]]
        results = [mount for mount in mounts if mount[0] in declared]
        assert len(results) == 1, name
        assert run_dir.is_relative_to(results[0][1]), name
        assert results[0][-1] != "ro", name


def test_services_run_offline() -> None:
    for name, service in services().items():
        environment = service.get("environment", {})
        for key, value in FLOWER_OFFLINE_ENV.items():
            assert environment.get(key) == value, f"{name}: {key}"


def test_images_match_installed_flower() -> None:
    installed = version("flwr")

    for name, service in services().items():
        image = service["image"]
        if image.split(":")[0] in PROGRAM_OF_IMAGE:
            assert image == f"{image.split(':')[0]}:{installed}", name


def test_metals_services_build_their_image() -> None:
    for name in ["serverapp", "submit", *services_with_role("clientapp")]:
        dockerfile = dockerfile_of(services()[name])
        assert dockerfile is not None, name
        assert dockerfile.is_file(), name


# ---------------------------------------------------------------------------
# Dockerfiles
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(DOCKERFILES))
def test_dockerfile_base_is_flower_superexec(kind: str) -> None:
    path = DOCKERFILES[kind]
    arguments = dict(args.split("=", 1) for args in arguments_of(path, "ARG") if "=" in args)
    bases = arguments_of(path, "FROM")

    assert bases == ["flwr/superexec:${FLWR_VERSION}"]
    assert arguments["FLWR_VERSION"] == version("flwr")
    entrypoint = arguments_of(path, "ENTRYPOINT")
    assert json.loads(entrypoint[-1]) == ["flower-superexec"]


@pytest.mark.parametrize("kind", list(DOCKERFILES))
def test_dockerfile_installs_cpu_torch(kind: str) -> None:
    runs = arguments_of(DOCKERFILES[kind], "RUN")
    torch_runs = [run for run in runs if '"torch==' in run]

    assert len(torch_runs) == 1
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_runs[0]
    # Multi-arch: no wheel file or architecture-specific name anywhere.
    text = DOCKERFILES[kind].read_text()
    for marker in (".whl", "x86_64", "aarch64", "amd64.", "cu1", "cu12"):
        assert marker not in text, marker


@pytest.mark.parametrize("kind", list(DOCKERFILES))
def test_dockerfile_runtime_install_off(kind: str) -> None:
    environment = " ".join(arguments_of(DOCKERFILES[kind], "ENV"))

    for key, value in FLOWER_OFFLINE_ENV.items():
        assert f"{key}={value}" in environment, key
    assert "METALS_DATA_DIR=/data" in environment


@pytest.mark.parametrize("kind", list(DOCKERFILES))
def test_dockerfile_dependencies_match_pyproject(kind: str) -> None:
    # Prepare: pyproject's dependencies without torch (CPU index) and flwr (base image).
    declared = {
        requirement.replace(" ", "")
        for requirement in pyproject()["project"]["dependencies"]
        if not requirement.startswith(("torch", "flwr"))
    }
    runs = arguments_of(DOCKERFILES[kind], "RUN")

    # Execute
    installed = {
        item.strip('"')
        for run in runs
        if "hydra-core" in run
        for item in shlex.split(run, posix=False)
        if item.startswith('"')
    }

    # Assert
    assert installed == declared


@pytest.mark.parametrize("kind", list(DOCKERFILES))
def test_dockerfile_copies_every_package_folder(kind: str) -> None:
    folders = set(pyproject()["tool"]["setuptools"]["package-dir"].values())
    copies = arguments_of(DOCKERFILES[kind], "COPY")
    copied = {args.split()[0] for args in copies}

    assert folders <= copied
    assert "pyproject.toml" in " ".join(copies)


def test_client_image_has_no_server_code() -> None:
    runs = " ".join(arguments_of(DOCKERFILES["client"], "RUN"))

    assert "rmtree" in runs
    assert "'server'" in runs
    assert "import metals.client.app" in runs
