"""Benchmark ``metals run`` against the plain PyTorch floor (bench/floor.py).

Three measurements, each written to the ``bench:speed`` section of
docs/benchmarks.md and to JSON files in the work folder:

1. The same run: ``metals run +experiment=metals_paper`` (NSL-KDD, 100
   clients, 20 sampled per round, 50 rounds, 10 local epochs) and the floor
   with the same overrides, one after the other, ``--repeat`` times (3 by
   default); the page shows the pair with the median ratio. Each runs as a
   fresh process, timed end to end (interpreter start, imports, data, Ray
   start-up, every round, shutdown) and per round.
2. Scaling: 10, 50, 100 and 500 clients with 20% sampled, a few rounds
   each; time per round (median over rounds 2 and later, so that round 1
   with the actors' start-up is left out) and peak memory.
3. A profile of one round: the floor's phases, and the metals ClientApp's
   train handler called in one process under cProfile for the clients of
   one round, grouped into data loading, AL scoring, training, local
   evaluation, pool persistence and weight (de)serialisation.

Peak memory is the maximum, over samples every 0.2 s, of the summed RSS
of the measured process and all its descendants (Ray's GCS, raylet and
workers included). Summed RSS counts shared pages once per process, so it
overstates the physical memory of a multi-process run.

Usage:
    python bench/bench_speed.py [--work /tmp/metals-speed] [--page docs/benchmarks.md]
        [--rounds 50] [--repeat 3] [--scaling-rounds 4] [--skip-scaling]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchpage import cpu_model, write_section

REPO = Path(__file__).resolve().parents[1]
FLOOR = REPO / "bench" / "floor.py"
PAPER = ["+experiment=metals_paper", "dataset=nsl_kdd"]
SCALING_CLIENTS = (10, 50, 100, 500)
MARK_BEGIN = "<!-- bench:speed -->"
MARK_END = "<!-- /bench:speed -->"


# ---------------------------------------------------------------------------
# Process measurement
# ---------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Return the direct children of ``pid`` from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _tree_rss_bytes(root: int) -> int:
    """Return the summed VmRSS of ``root`` and its descendants, in bytes."""
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
        stack += _children(pid)
    return total


def measure(command: list[str], log: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``command`` to its end and return its wall seconds and peak tree RSS in MiB.

    Raises
    ------
    RuntimeError
        When the command exits with a non-zero code; its output is in ``log``.
    """
    peak = [0]
    with log.open("w", encoding="utf-8") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO, env=env
        )
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _tree_rss_bytes(process.pid))
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {code}; see {log}")
    return {"wall_seconds": wall, "peak_rss_mib": peak[0] / 2**20}


def _metals_command(overrides: list[str], run_dir: Path) -> list[str]:
    metals = Path(sys.executable).with_name("metals")
    return [str(metals), "run", *overrides, f"hydra.run.dir={run_dir}"]


def _floor_command(overrides: list[str], out: Path) -> list[str]:
    return [sys.executable, str(FLOOR), *overrides, "--out", str(out)]


def _metals_rounds(run_dir: Path) -> list[dict[str, float]]:
    from metals.tables import read_metrics_csv

    return read_metrics_csv(run_dir)


def run_pair(name: str, overrides: list[str], work: Path) -> dict[str, Any]:
    """Run the floor, then metals, with the same overrides; return both measurements."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}

    floor_json = folder / "floor.json"
    floor = measure(_floor_command(overrides, floor_json), folder / "floor.log", env)
    floor_record = json.loads(floor_json.read_text())
    floor["round_seconds"] = [row["round_seconds"] for row in floor_record["rounds"]]
    floor["labels"] = [row["labels_queried_total"] for row in floor_record["rounds"]]
    floor["accuracy"] = floor_record["rounds"][-1]["accuracy"]
    floor["phase_seconds"] = _sum_phases(floor_record["rounds"])

    run_dir = folder / "metals-run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    metals = measure(_metals_command(overrides, run_dir), folder / "metals.log", env)
    rows = _metals_rounds(run_dir)
    metals["round_seconds"] = [row["round_seconds"] for row in rows]
    metals["labels"] = [row["labels_queried_total"] for row in rows]
    metals["accuracy"] = rows[-1]["accuracy"]
    result = {"name": name, "overrides": overrides, "floor": floor, "metals": metals}
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _sum_phases(rounds: list[dict[str, Any]]) -> dict[str, float]:
    phases: dict[str, float] = {}
    for row in rounds:
        for phase, seconds in row["phase_seconds"].items():
            phases[phase] = phases.get(phase, 0.0) + seconds
    return phases


def steady_round(seconds: list[float]) -> float:
    """Return the median round time without round 1 (start-up), or round 1 when alone."""
    return statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]


# ---------------------------------------------------------------------------
# Profile of one round of the metals ClientApp, in this process
# ---------------------------------------------------------------------------

#: Function name -> phase of the profile table.
PROFILE_GROUPS = {
    "load_client_partition": "data loading (partition, per call)",
    "query_labels": "AL scoring and query",
    "train_local": "local training",
    "accuracy": "local evaluation (2 calls)",
    "restore_pools": "pool state (context.state, pool file)",
    "save_pool_file": "pool state (context.state, pool file)",
    "save_pools": "pool state (context.state, pool file)",
    "_model_from_message": "weights in (ArrayRecord to torch, model build)",
    "__init__ (ArrayRecord)": "weights out (torch to ArrayRecord)",
}


def profile_round(work: Path, overrides: list[str]) -> dict[str, Any]:
    """Call the ClientApp train handler for one round's sampled clients under cProfile.

    The clients of round 2 are profiled (round 1 runs first, unprofiled, so
    that one-off import and warm-up costs stay out). Message passing
    through Ray is measured apart as a pickle round trip of the request
    and the reply, the form in which Ray moves them between processes.
    """
    import cProfile
    import pickle
    import pstats
    import random

    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from metals.client.app import app
    from metals.common.data import prepare_dataset
    from metals.common.model import build_model
    from metals.config import compose_run_config

    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = 1, 1, 1
    torch.set_num_threads(1)
    config, _ = compose_run_config(overrides)
    run_dir = work / "profile-run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    config["run-dir"] = str(run_dir)
    num_clients = int(config["num-clients"])
    sampled = random.Random(0).sample(
        range(num_clients), max(int(num_clients * float(config["fraction-train"])), 1)
    )
    prepared = prepare_dataset(str(config["dataset"]), str(config["data-dir"]) or None)
    model = build_model(prepared.x_train.shape[1], len(prepared.class_names), (90, 90), seed=0)
    arrays = ArrayRecord(model.state_dict())
    contexts = {
        pid: Context(
            run_id=1,
            node_id=1000 + pid,
            node_config={"partition-id": pid, "num-partitions": num_clients},
            state=RecordDict(),
            run_config={},
        )
        for pid in sampled
    }

    def message(server_round: int, pid: int) -> Message:
        record = ConfigRecord({**config, "server-round": server_round})
        content = RecordDict({"arrays": arrays, "config": record})
        return Message(content, dst_node_id=1000 + pid, message_type="train")

    for pid in sampled:
        app(message(1, pid), contexts[pid])

    profiler = cProfile.Profile()
    started = time.perf_counter()
    replies = []
    profiler.enable()
    for pid in sampled:
        replies.append(app(message(2, pid), contexts[pid]))
    profiler.disable()
    handler_seconds = time.perf_counter() - started

    started = time.perf_counter()
    for pid, reply in zip(sampled, replies, strict=True):
        pickle.loads(pickle.dumps((message(2, pid), contexts[pid])))
        pickle.loads(pickle.dumps((reply, contexts[pid])))
    pickle_seconds = time.perf_counter() - started

    stats = pstats.Stats(profiler)
    phases: dict[str, float] = {}
    for (filename, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
        cumulative = row[3]
        if function == "__init__" and filename.endswith("arrayrecord.py"):
            key = "__init__ (ArrayRecord)"
        elif filename.startswith(str(REPO)) and function in PROFILE_GROUPS:
            key = function
        else:
            continue
        if key == "accuracy" and not filename.endswith("training.py"):
            continue
        group = PROFILE_GROUPS[key]
        phases[group] = phases.get(group, 0.0) + cumulative
    return {
        "clients": len(sampled),
        "handler_seconds": handler_seconds,
        "phases": phases,
        "pickle_round_trip_seconds": pickle_seconds,
    }


def profile_startup(work: Path, overrides: list[str]) -> dict[str, Any]:
    """Run a short metals run under cProfile in this process and time its start-up steps.

    The driver's main thread and the ServerApp's round loop (its own
    thread) are profiled. The Ray actors run in other processes, so their
    start-up shows only in round 1 of ``metrics.csv``.
    """
    import cProfile
    import pstats
    import shutil

    started = time.perf_counter()
    from metals.config import compose_run_config
    from metals.simulation import run_experiment

    imports = time.perf_counter() - started

    # The round loop runs in the ServerApp's own thread: profile it there.
    import metals.server.app as server_app

    server_profiler = cProfile.Profile()
    run_federation = server_app.run_federation

    def profiled_federation(*args: Any, **kwargs: Any) -> Path:
        server_profiler.enable()
        try:
            return run_federation(*args, **kwargs)
        finally:
            server_profiler.disable()

    server_app.run_federation = profiled_federation
    run_dir = work / "startup-run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config, _ = compose_run_config(overrides)
    config["run-dir"] = str(run_dir)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    run_experiment(config)
    profiler.disable()
    total = time.perf_counter() - started

    steps = {
        "ray.init (GCS, raylet and agent processes), while another thread imports torch, "
        "Flower and both apps": ("ray/_private/worker.py", "init"),
        "Ray shutdown": ("ray/_private/worker.py", "shutdown"),
    }
    found = dict.fromkeys(steps, 0.0)
    for (filename, _, function), row in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        for label, (suffix, name) in steps.items():
            if filename.endswith(suffix) and function == name:
                found[label] = max(found[label], row[3])
    rounds = [row["round_seconds"] for row in _metals_rounds(run_dir)]

    server_steps = {
        "waiting for the clients' training replies (receive)": ("server/grid.py", "receive"),
        "global evaluation on the test set": ("server/federation.py", "__call__"),
        "aggregation with reply checks": ("server/strategy.py", "aggregate_train"),
        "checkpoint": ("server/checkpoint.py", "save_checkpoint"),
        "metrics.csv": ("server/results.py", "write_metrics"),
        "whole round loop (run_federation)": ("server/federation.py", "run_federation"),
    }
    server = dict.fromkeys(server_steps, 0.0)
    for (filename, _, function), row in pstats.Stats(server_profiler).stats.items():  # type: ignore[attr-defined]
        for label, (suffix, name) in server_steps.items():
            if filename.endswith(suffix) and function == name:
                server[label] = max(server[label], row[3])
    return {
        "import_metals_seconds": imports,
        "run_experiment_seconds": total,
        "steps": found,
        "server_steps": server,
        "round_seconds": rounds,
    }


# ---------------------------------------------------------------------------
# The page section
# ---------------------------------------------------------------------------


def machine() -> str:
    """Return 'N cores, CPU model, Python version'."""
    return f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}"


def ratio(pair: dict[str, Any]) -> float:
    """Return metals' end-to-end time over the floor's for one pair of runs."""
    return pair["metals"]["wall_seconds"] / pair["floor"]["wall_seconds"]


def median_pair(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the pair with the median end-to-end ratio (the lower middle one of an even count)."""
    ordered = sorted(pairs, key=ratio)
    return ordered[(len(ordered) - 1) // 2]


def format_section(
    pairs: list[dict[str, Any]],
    scaling: list[dict[str, Any]],
    profile: dict[str, Any] | None,
    command: str,
    load: str,
) -> str:
    """Return the Markdown of the ``bench:speed`` section."""
    pair = median_pair(pairs)
    floor, metals = pair["floor"], pair["metals"]
    floor_rounds, metals_rounds = floor["round_seconds"], metals["round_seconds"]
    metals_startup = metals["wall_seconds"] - sum(metals_rounds)
    floor_startup = floor["wall_seconds"] - sum(floor_rounds)
    lines = [
        MARK_BEGIN,
        "## Speed: `metals run` against a plain PyTorch loop",
        "",
        f"Command: `{command}`. Machine: {machine()}. Load average during the run: {load}. "
        "The floor and metals ran one after the other in the same period, so compare their "
        "ratio; a load above 2 means other jobs shared the 2 cores and absolute times are "
        "high.",
        "",
        "The floor (`bench/floor.py`) computes the same run as one single-process PyTorch loop "
        "on one core. It uses the same prepared data, client partitions and pools, AL queries, "
        "local epochs and per-round seeds, FedAvg aggregation and global evaluation, and runs "
        "without Flower, Ray, messages, checkpoints or result files. Like metals, it samples "
        "partition ids in order with `random.Random(seed)`, so both train the same clients "
        "each round. It sums the replies in sampled order and metals sums them by partition, "
        "so the final weights differ in the last bits.",
        "",
        "### The same run: metals_paper preset on NSL-KDD",
        "",
        f"`{' '.join(pair['overrides'])}`: {len(metals_rounds)} rounds. The pair ran "
        f"{len(pairs)} times, floor then metals each time; the table shows the pair with the "
        "median end-to-end ratio.",
        "",
        "| | floor | metals run | metals / floor |",
        "|---|---:|---:|---:|",
        f"| end to end, s | {floor['wall_seconds']:.1f} | {metals['wall_seconds']:.1f} "
        f"| {metals['wall_seconds'] / floor['wall_seconds']:.2f}x |",
        f"| outside the rounds (start-up, shutdown), s | {floor_startup:.1f} "
        f"| {metals_startup:.1f} | |",
        f"| round 1, s | {floor_rounds[0]:.2f} | {metals_rounds[0]:.2f} "
        f"| {metals_rounds[0] / floor_rounds[0]:.2f}x |",
        f"| median round 2 and later, s | {steady_round(floor_rounds):.2f} "
        f"| {steady_round(metals_rounds):.2f} "
        f"| {steady_round(metals_rounds) / steady_round(floor_rounds):.2f}x |",
        f"| sum of rounds, s | {sum(floor_rounds):.1f} | {sum(metals_rounds):.1f} "
        f"| {sum(metals_rounds) / sum(floor_rounds):.2f}x |",
        f"| peak memory (summed RSS), MiB | {floor['peak_rss_mib']:.0f} "
        f"| {metals['peak_rss_mib']:.0f} | |",
        f"| final global accuracy | {floor['accuracy']:.4f} | {metals['accuracy']:.4f} | |",
        f"| labels bought after the last round | {int(floor['labels'][-1]):,} "
        f"| {int(metals['labels'][-1]):,} | |",
        "",
    ]
    ratios = [ratio(each) for each in pairs]
    goal_met = ratio(pair) <= 1.2
    lines += [
        "End to end, metals / floor in each pair: "
        + ", ".join(f"{value:.2f}x" for value in ratios)
        + f" (median {ratio(pair):.2f}x).",
        "",
        f"Goal of at most 1.2x the floor end to end: {'met' if goal_met else 'missed'} "
        f"(median {ratio(pair):.2f}x).",
        "",
        "What metals does about its largest costs:",
        "",
        "- Start-up. metals starts Ray itself, without the job runtime environment Flower "
        "would pass, so the client actors take over the idle workers Ray starts with the job "
        "instead of starting new processes. Ray starts without its autoscaler monitor, "
        "dashboard server and log monitor, which a run on one machine never uses (about "
        "1.2 s of CPU). metals queries the GCS for the raylet's registration every 10 ms, "
        "where Ray queries once a second. The client actors start as soon as Ray runs and "
        "import torch and the ClientApp while a second thread of the driver imports torch, "
        "Flower's simulation, both apps and matplotlib. The actors use metals' own actor "
        "class: Flower's lives in `flwr.simulation`, whose import took 0.6 s of CPU in each "
        "actor. A client reads only cached arrays and never imports pandas. The server "
        "scores with NumPy instead of importing scikit-learn, and local training uses "
        "metals' own Adam, because the first `torch.optim` optimizer of a process imports "
        "`torch._dynamo` (1 to 2 s in every actor).",
        "- Each round. The simulation runtime hands a pushed message to the clients at once. "
        "It asks the link state only for the nodes that were sent one, where Flower's loop "
        "asks for every node every 0.1 s and each call scans every message in flight. The "
        "server waits for a signal of each stored reply instead of pulling replies every "
        "0.1 s, and it sends the next round before it scores the current one. It reads the "
        "replies' arrays as views of their bytes, where `Array.numpy` parses each header "
        "with `ast.literal_eval` (25 us per array). A client process keeps every "
        "partition's rows, and clients save their pools without an fsync.",
        "- Shutdown. The runtime's queues wait at most 20 ms instead of 1 s before their "
        "threads see the stop event. Without the autoscaler monitor, `ray.shutdown` no "
        "longer waits 1 s for it to exit. The `metals` program ends without tearing down "
        "torch's and Flower's modules (0.5 to 0.8 s).",
        "- Left: Ray's own start (the GCS, the raylet, and the dashboard and "
        "runtime-environment agents that the raylet waits for) and the actors' warm-up, in "
        "which each imports torch and Flower's message types. The driver imports torch and "
        "Flower's simulation at the same time, so both cores stay busy until the first "
        "round.",
        "",
    ]
    if scaling:
        lines += [
            "### Scaling: clients at 20% sampled",
            "",
            "Same preset with `num_clients=N` and few rounds. Time per round is the median "
            "of rounds 2 and later; the sampled clients' work grows with N/5.",
            "",
            "| clients | sampled | floor s/round | metals s/round | metals / floor "
            "| floor peak MiB | metals peak MiB | metals end to end, s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for entry in scaling:
            f_round = steady_round(entry["floor"]["round_seconds"])
            m_round = steady_round(entry["metals"]["round_seconds"])
            lines.append(
                f"| {entry['clients']} | {max(entry['clients'] // 5, 1)} | {f_round:.2f} "
                f"| {m_round:.2f} | {m_round / f_round:.2f}x "
                f"| {entry['floor']['peak_rss_mib']:.0f} | {entry['metals']['peak_rss_mib']:.0f} "
                f"| {entry['metals']['wall_seconds']:.1f} |"
            )
        lines.append("")
    lines += _profile_lines(pair, profile)
    lines.append(MARK_END)
    return "\n".join(lines)


def _profile_lines(pair: dict[str, Any], profile: dict[str, Any] | None) -> list[str]:
    floor = pair["floor"]
    rounds = len(floor["round_seconds"])
    lines = [
        "### Where a round's time goes",
        "",
        f"Floor phases, mean per round over the {rounds} rounds of the same run (one core):",
        "",
        "| phase | s/round |",
        "|---|---:|",
    ]
    for phase, seconds in floor["phase_seconds"].items():
        lines.append(f"| {phase.replace('_', ' ')} | {seconds / rounds:.3f} |")
    lines.append("")
    if profile is not None:
        clients = profile["clients"]
        lines += [
            f"The metals ClientApp train handler for the {clients} clients of one round "
            "(round 2), called in one process under cProfile (cumulative seconds; the "
            "profiler itself adds time):",
            "",
            "| part of the handler | s for the round |",
            "|---|---:|",
        ]
        for phase, seconds in sorted(profile["phases"].items(), key=lambda item: -item[1]):
            lines.append(f"| {phase} | {seconds:.3f} |")
        lines += [
            f"| whole handler, all {clients} clients | {profile['handler_seconds']:.3f} |",
            f"| request and reply pickled and unpickled once each | "
            f"{profile['pickle_round_trip_seconds']:.3f} |",
            "",
        ]
        steady = steady_round(pair["metals"]["round_seconds"])
        lines += [
            f"With two actors, the handler work comes to about "
            f"{profile['handler_seconds'] / 2:.2f} s per actor and round, against a median "
            f"metals round of {steady:.2f} s in the same-run table. The two numbers come from "
            "separate processes measured at different moments of a shared machine, so compare "
            "them only roughly. The server-thread profile below splits one run's round loop "
            "directly.",
            "",
        ]
    if profile is not None and "startup" in profile:
        startup = profile["startup"]
        rounds = startup["round_seconds"]
        lines += [
            f"Start-up of a {len(rounds)}-round metals run of the same preset, driver process "
            "under cProfile (seconds):",
            "",
            "| step | s |",
            "|---|---:|",
            "| import metals.config and metals.simulation "
            f"| {startup['import_metals_seconds']:.1f} |",
        ]
        for label, seconds in startup["steps"].items():
            lines.append(f"| {label} | {seconds:.1f} |")
        lines += [
            f"| round 1 (the actors finish importing torch and the ClientApp, first "
            f"training) | {rounds[0]:.1f} |",
            f"| rounds 2 to {len(rounds)} | {sum(rounds[1:]):.1f} |",
            f"| whole run_experiment call | {startup['run_experiment_seconds']:.1f} |",
            "",
            f"The ServerApp thread of the same run under cProfile, seconds over all "
            f"{len(rounds)} rounds (the waits include the clients' work):",
            "",
            "| server step | s |",
            "|---|---:|",
        ]
        for label, seconds in startup["server_steps"].items():
            lines.append(f"| {label} | {seconds:.2f} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the page section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/metals-speed", help="folder for runs and JSON")
    parser.add_argument("--page", default=str(REPO / "docs" / "benchmarks.md"))
    parser.add_argument("--rounds", type=int, default=50, help="rounds of the same run")
    parser.add_argument("--scaling-rounds", type=int, default=4, help="rounds per scaling run")
    parser.add_argument(
        "--repeat", type=int, default=3, help="times the same run's pair of runs is measured"
    )
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--profile-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--startup-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    if args.profile_only:
        result = profile_round(work, PAPER)
        (work / "profile.json").write_text(json.dumps(result, indent=1))
        return 0
    if args.startup_only:
        result = profile_startup(work, [*PAPER, "num_rounds=6"])
        (work / "startup.json").write_text(json.dumps(result, indent=1))
        return 0

    command = "python bench/bench_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    loads = [os.getloadavg()[0]]
    pairs = []
    for number in range(1, args.repeat + 1):
        pair = run_pair(f"paper-{number}", [*PAPER, f"num_rounds={args.rounds}"], work)
        pairs.append(pair)
        loads.append(os.getloadavg()[0])
        print(json.dumps({key: pair[key]["wall_seconds"] for key in ("floor", "metals")}))

    scaling = []
    if not args.skip_scaling:
        for clients in SCALING_CLIENTS:
            overrides = [*PAPER, f"num_clients={clients}", f"num_rounds={args.scaling_rounds}"]
            entry = run_pair(f"scaling-{clients}", overrides, work)
            entry["clients"] = clients
            scaling.append(entry)
            loads.append(os.getloadavg()[0])
            print(clients, json.dumps({k: entry[k]["wall_seconds"] for k in ("floor", "metals")}))

    # The profile runs in a fresh process so that this one's imports do not count.
    measure([sys.executable, __file__, "--work", str(work), "--profile-only"], work / "profile.log")
    profile = json.loads((work / "profile.json").read_text())
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    measure(
        [sys.executable, __file__, "--work", str(work), "--startup-only"],
        work / "startup.log",
        env,
    )
    profile["startup"] = json.loads((work / "startup.json").read_text())
    loads.append(os.getloadavg()[0])

    load = f"{min(loads):.1f} to {max(loads):.1f} (1-minute)"
    section = format_section(pairs, scaling, profile, command.strip(), load)
    write_section(Path(args.page), "speed", section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
