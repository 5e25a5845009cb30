"""Benchmark `metals deploy` (SuperLink + SuperNodes as OS processes) against `metals run`.

Runs the same small NSL-KDD config on Flower's simulation runtime
(`run_experiment`, Ray) and on a local deployment (`run_deployment`), then
the deployment again with more SuperNodes, and reports:

- wall time per round of each (mean of metrics.csv `round_seconds`) and the
  deploy / run ratio;
- whole-run wall time, including start-up and shutdown;
- the cost of one extra SuperNode per round (least-squares slope over the
  SuperNode counts);
- the fixed cost of the process Flower starts for each message: a fresh
  Python process that imports `metals.client.app` and loads the cached
  prepared dataset, timed alone.

Every run writes into a work folder, never into the repository. Times are
wall-clock seconds on whatever else the machine is doing; the page records
the load average.

Usage:
    METALS_DATA_DIR=../shared/data python bench/bench_deploy.py [--page docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchpage import cpu_model, write_section

REPO_ROOT = Path(__file__).resolve().parents[1]
START_MARK = "<!-- bench:deploy -->"
END_MARK = "<!-- /bench:deploy -->"

BASE_CONFIG = {
    "dataset": "nsl_kdd",
    "num-rounds": 3,
    "local-epochs": 1,
    "fraction-train": 1.0,
    "round-timeout": 600.0,
}


def round_seconds(run_dir: Path) -> list[float]:
    from metals.deploy import read_complete_rows

    return [row["round_seconds"] for row in read_complete_rows(run_dir / "metrics.csv")]


def time_simulation(config: dict, run_dir: Path) -> dict:
    from metals.simulation import run_experiment

    started = time.perf_counter()
    run_experiment({**config, "run-dir": str(run_dir)})
    wall = time.perf_counter() - started
    rounds = round_seconds(run_dir)
    return {"wall": wall, "per_round": statistics.mean(rounds), "rounds": rounds}


def time_deployment(config: dict, run_dir: Path) -> dict:
    from metals.deploy import run_deployment

    started = time.perf_counter()
    run_deployment({**config, "run-dir": str(run_dir)}, timeout=1800)
    wall = time.perf_counter() - started
    rounds = round_seconds(run_dir)
    return {"wall": wall, "per_round": statistics.mean(rounds), "rounds": rounds}


def time_message_process(data_dir: str) -> float:
    """Time a fresh process that imports the ClientApp and loads the cached dataset."""
    code = (
        "import time; t = time.perf_counter(); import metals.client.app; "
        "from metals.common.data import prepare_dataset; prepare_dataset('nsl_kdd', "
        f"{data_dir!r}); print(time.perf_counter() - t)"
    )
    samples = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def slope(xs: list[float], ys: list[float]) -> float:
    mean_x, mean_y = statistics.mean(xs), statistics.mean(ys)
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    denominator = sum((x - mean_x) ** 2 for x in xs)
    return numerator / denominator


def render(results: dict, command: str) -> str:
    simulation = results["simulation"]
    deployments = results["deployments"]
    base = deployments[str(results["clients"])]
    counts = sorted(int(n) for n in deployments)
    per_node = slope([float(n) for n in counts], [deployments[str(n)]["per_round"] for n in counts])
    lines = [
        START_MARK,
        "## Deployment (`metals deploy`) against simulation (`metals run`)",
        "",
        f"Config: NSL-KDD, {results['clients']} clients, {BASE_CONFIG['num-rounds']} rounds, "
        "1 local epoch, every client in every round, margin sampling, FedAvg. "
        "Time per round is the mean of `round_seconds` in metrics.csv (training, "
        "AL query, aggregation and global evaluation); the whole run adds start-up "
        "and shutdown.",
        "",
        "| runtime | SuperNodes | time per round (s) | whole run (s) |",
        "|---|---:|---:|---:|",
        f"| `metals run` (Ray simulation) | {results['clients']} | "
        f"{simulation['per_round']:.1f} | {simulation['wall']:.1f} |",
    ]
    for n in counts:
        entry = deployments[str(n)]
        lines.append(
            f"| `metals deploy` (OS processes, loopback) | {n} | {entry['per_round']:.1f} | "
            f"{entry['wall']:.1f} |"
        )
    lines += [
        "",
        f"- deploy / run, time per round, same config: "
        f"{base['per_round'] / simulation['per_round']:.2f}x; whole run: "
        f"{base['wall'] / simulation['wall']:.2f}x",
        f"- cost of one more SuperNode: {per_node:+.1f} s per round (least-squares slope "
        f"over {', '.join(str(n) for n in counts)} SuperNodes; on 2 cores the ClientApp "
        "processes of one round compete for the same CPUs)",
        f"- a fresh process that imports `metals.client.app` and loads the cached "
        f"dataset: {results['message_process']:.1f} s (median of 3). Flower 1.42 starts "
        "such a `flwr-clientapp` process for every message a SuperNode receives, so "
        "each sampled client pays it once per round.",
        "",
        "What limits deployment speed, and what metals does about it: the process per "
        "message is Flower's isolation model (`--isolation subprocess`; `process` only "
        "moves the runner into another container and still starts one process per "
        "message). metals keeps that process short: the prepared dataset comes from "
        "the on-disk cache instead of the CSV files, the ClientApp imports nothing from "
        "the server side, local training builds no `torch.optim` optimizer (whose first "
        "use imports `torch._dynamo`, 1 to 2 s), and the CLI imports each subcommand's "
        "modules only when it runs. The ServerApp pulls replies every 0.1 s instead of "
        "the 3 s of Flower's deployed grid. Simulation keeps one Ray actor per CPU alive "
        "across rounds and reuses "
        "the partition cached in it, which is why it is faster per round here.",
        "",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, "
        f"Python {platform.python_version()}, niceness {results.get('niceness', 0)}; "
        f"1-minute load average at the end: {results['load_average']:.1f} (other jobs "
        "share the cores, so times are upper bounds and the per-node slope is rough).",
        "",
        f"Command: `{command}`",
        END_MARK,
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3, help="clients of the compared runs")
    parser.add_argument(
        "--extra-nodes",
        type=int,
        nargs="*",
        default=[2, 5],
        help="other SuperNode counts for the per-node cost (default: 2 5)",
    )
    parser.add_argument("--page", type=Path, default=None, help="write the section into this page")
    parser.add_argument("--work-dir", type=Path, default=None, help="folder for the runs")
    parser.add_argument(
        "--from-results",
        type=Path,
        default=None,
        help="render the section from a results.json of an earlier run instead of measuring",
    )
    args = parser.parse_args()

    command = (
        "METALS_DATA_DIR=../shared/data python bench/bench_deploy.py --page docs/benchmarks.md"
    )
    if args.from_results is not None:
        section = render(json.loads(args.from_results.read_text()), command)
        print(section)
        if args.page is not None:
            write_section(args.page, "deploy", section)
        return 0

    data_dir = os.environ.get("METALS_DATA_DIR") or str(REPO_ROOT.parent / "shared" / "data")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="metals-bench-deploy-"))
    config = {**BASE_CONFIG, "data-dir": data_dir, "num-clients": args.clients}

    results: dict = {"clients": args.clients, "deployments": {}}
    print("simulation ...", flush=True)
    results["simulation"] = time_simulation(config, work / "simulation")
    for count in [args.clients, *args.extra_nodes]:
        print(f"deployment with {count} SuperNodes ...", flush=True)
        results["deployments"][str(count)] = time_deployment(
            {**config, "num-clients": count}, work / f"deploy-{count}"
        )
    results["message_process"] = time_message_process(data_dir)
    results["load_average"] = os.getloadavg()[0]
    results["niceness"] = os.nice(0)
    (work / "results.json").write_text(json.dumps(results, indent=2))

    section = render(results, command)
    print(section)
    if args.page is not None:
        write_section(args.page, "deploy", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
