"""Benchmark `metals detect` end to end against the bare forward pass of the same model.

Builds traffic files of 250k and 1M records by repeating the rows of the
real KDDTest+ file into a work folder, never into the repository. Trains a
small NSL-KDD model unless --model is given. Then runs each measured step in
a fresh Python process that reports its own wall time and peak RSS
(ru_maxrss):

- detect: `metals detect --model RUN --data FILE --out PRED.csv` (load the
  run, parse, preprocess, predict, write), timed inside the process;
- floor: the same model's forward pass (softmax and argmax included,
  torch.inference_mode, torch's default threads) over the already prepared
  float32 tensor of the same records, timed alone after the tensor is built,
  in batches of 65,536 rows and in detect's batch size; the faster one counts;
- parse: the chunked reader alone, for the breakdown.

Every step runs with the glibc malloc thresholds that `metals detect` sets
(metals.detect.reuse_freed_memory).

Usage:
    METALS_DATA_DIR=../shared/data python bench/bench_detect.py [--write-page]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchpage import cpu_model, write_section

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGE = REPO_ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- bench:detect -->"
END_MARK = "<!-- /bench:detect -->"
#: Batch size of the floor's forward pass besides detect's own.
FLOOR_BATCH = 65_536


# ---------------------------------------------------------------------------
# Child steps: each runs in its own process and prints one JSON line.
# ---------------------------------------------------------------------------


def cpu_seconds() -> float:
    """Return the user plus system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_detect(model: str, data: str, out: str, chunk_size: int) -> dict:
    # Import torch, pandas and pyarrow before the clock starts, as the floor step does;
    # the table's process column includes the imports.
    import metals.common.inference  # noqa: F401
    from metals.detect import detect_command

    started, cpu = time.perf_counter(), cpu_seconds()
    code = detect_command(["--model", str(model), "--data", str(data), "--out", str(out),
                           "--chunk-size", str(chunk_size)])  # fmt: skip
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": cpu_seconds() - cpu,
        "exit_code": code,
    }


def child_floor(model: str, data: str, chunk_size: int) -> dict:
    import numpy as np
    import torch

    from metals.common.inference import PREDICT_BATCH, load_detector
    from metals.common.traffic import iter_traffic_chunks

    detector = load_detector(model)
    parts = [
        detector.features(chunk.frame)
        for chunk in iter_traffic_chunks(data, detector.layout, chunk_size=chunk_size)
    ]
    x = torch.from_numpy(np.concatenate(parts))
    del parts

    # Detect's batch size was faster on one thread, and on two threads when the
    # machine was lightly loaded; 65,536 was faster on two threads at a load
    # average above 8. The faster one counts, so detect is never measured
    # against a slower forward pass than its own.
    timings = []
    for batch in (FLOOR_BATCH, PREDICT_BATCH):
        started, cpu = time.perf_counter(), cpu_seconds()
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                torch.softmax(detector.model(x[start : start + batch]), dim=1).argmax(dim=1)
        timings.append((time.perf_counter() - started, cpu_seconds() - cpu, batch))
    seconds, cpu_used, batch = min(timings)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_used,
        "records": len(x),
        "batch": batch,
        "large_batch_seconds": timings[0][0],
    }


def child_parse(model: str, data: str, chunk_size: int) -> dict:
    from metals.common.inference import load_detector
    from metals.common.traffic import iter_traffic_chunks

    detector = load_detector(model)
    started, cpu = time.perf_counter(), cpu_seconds()
    records = sum(
        len(chunk.frame)
        for chunk in iter_traffic_chunks(data, detector.layout, chunk_size=chunk_size)
    )
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": cpu_seconds() - cpu,
        "records": records,
    }


def run_child(args: argparse.Namespace) -> None:
    # metals detect sets these malloc thresholds itself; the other steps get the same.
    from metals.detect import reuse_freed_memory

    reuse_freed_memory()
    if args.child == "detect":
        result = child_detect(args.model, args.data, args.out, args.chunk_size)
    elif args.child == "floor":
        result = child_floor(args.model, args.data, args.chunk_size)
    else:
        result = child_parse(args.model, args.data, args.chunk_size)
    result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------------
# Set-up and the measuring parent.
# ---------------------------------------------------------------------------


def build_traffic(source: Path, target: Path, records: int) -> Path:
    """Write ``records`` lines by repeating ``source`` (reused when already complete)."""
    if target.is_file() and target.stat().st_size > 0:
        with target.open("rb") as handle:
            if (
                sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 24), b""))
                == records
            ):
                return target
    lines = source.read_bytes().splitlines(keepends=True)
    partial = target.with_suffix(".partial")
    with partial.open("wb") as handle:
        written = 0
        while written < records:
            part = lines[: records - written]
            handle.writelines(part)
            written += len(part)
    partial.replace(target)
    return target


def train_run(run_dir: Path, data_dir: Path) -> Path:
    """Train an NSL-KDD MLP for 2 epochs and write it in the server's run-directory layout."""
    if (run_dir / "model.pt").is_file():
        return run_dir
    import numpy as np

    from metals.common.data import prepare_dataset
    from metals.common.model import build_model
    from metals.common.runconfig import validate_run_config
    from metals.common.training import train_local
    from metals.server.results import save_model, write_config, write_summary

    config = validate_run_config({"dataset": "nsl_kdd", "data-dir": str(data_dir)})
    prepared = prepare_dataset("nsl_kdd", data_dir, cache_dir=run_dir.parent / "cache")
    model = build_model(prepared.x_train.shape[1], len(prepared.class_names), (90, 90), seed=1)
    train_local(model, np.array(prepared.x_train), np.array(prepared.y_train), epochs=2,
                batch_size=256, seed=1)  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    prepared.preprocessor.save(run_dir / "preprocessor")
    write_summary(run_dir, {"class_names": list(prepared.class_names)})
    save_model(run_dir, model.state_dict())
    return run_dir


def measure(step: str, model: Path, data: Path, out: Path, chunk_size: int) -> dict:
    command = [sys.executable, __file__, "--child", step, "--model", str(model),
               "--data", str(data), "--out", str(out), "--chunk-size", str(chunk_size)]  # fmt: skip
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise RuntimeError(f"step {step} failed ({finished.returncode}):\n{finished.stderr}")
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    return result


def median_run(runs: list[dict]) -> dict:
    """Return the median wall, CPU and process seconds of ``runs``, the fastest wall
    seconds and the largest RSS."""
    import statistics

    result = dict(runs[0])
    for key in ("seconds", "cpu_seconds", "process_seconds", "large_batch_seconds"):
        if key in result:
            result[key] = statistics.median(run[key] for run in runs)
    result["max_rss_mib"] = max(run["max_rss_mib"] for run in runs)
    result["fastest_seconds"] = min(run["seconds"] for run in runs)
    return result


def machine() -> str:
    """Return the CPU model, cores, system, Python and torch versions."""
    import torch

    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )


def format_section(
    rows: list[dict], command: str, host: str, load: str, chunk_size: int, repeats: int
) -> str:
    lines = [
        START_MARK,
        "## metals detect: end to end against the bare forward pass",
        "",
        f"Machine: {host}. Load average (1, 5, 15 min): {load} the run; other jobs",
        "shared the cores.",
        "",
        f"Command: `{command}`",
        "",
        "Traffic: KDDTest+ rows repeated into files of the sizes below (generated, not",
        f"committed). Model: the 2 x 90 MLP on NSL-KDD (118 inputs, 5 classes). Chunk size "
        f"{chunk_size:,} lines. Each step runs in a fresh process; peak RSS is that",
        "process's ru_maxrss. *floor* is the forward pass alone over the prepared float32",
        f"tensor of the same records, the faster of batches of {FLOOR_BATCH:,} rows and",
        "detect's own batch size; *detect* is `metals detect --out PRED.csv` from",
        "loading the run to the last written row; *parse* is the chunked reader alone.",
        f"Each size runs floor, parse and detect in turn, {repeats} times; seconds are the",
        "medians, peak RSS the largest.",
        "",
        "*CPU s* is the user and system time of the same section over all threads, which",
        "other jobs on the machine disturb less than wall time. *process* is the wall time",
        "of the whole process, Python start and imports included.",
        "",
        "| records | step | seconds | records/s | x floor | CPU s | CPU x floor "
        "| peak RSS (MiB) | process (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['records']:,} | {row['step']} | {row['seconds']:.2f} | "
            f"{row['records'] / row['seconds']:,.0f} | {row['ratio']:.1f} | "
            f"{row['cpu_seconds']:.2f} | {row['cpu_ratio']:.1f} | "
            f"{row['max_rss_mib']:.0f} | {row['process_seconds']:.1f} |"
        )
    lines += [""] + summary_lines(rows) + ["", END_MARK]
    return "\n".join(lines)


def summary_lines(rows: list[dict]) -> list[str]:
    """Return the goal check and the memory comparison as Markdown bullets."""
    detect = [row for row in rows if row["step"] == "detect"]
    largest = max(detect, key=lambda row: row["records"])
    # Under load the floor's wall time rose more than detect's in the measured runs,
    # so the median ratio flatters detect. The goal check also needs the fastest
    # runs, which come from the quietest moments.
    met = largest["ratio"] <= 2.0 and largest["fastest_ratio"] <= 2.0
    bullets = [
        f"- detect / floor at {largest['records']:,} records: {largest['ratio']:.1f}x wall "
        f"time (medians), {largest['fastest_ratio']:.1f}x between the fastest runs, "
        f"{largest['cpu_ratio']:.1f}x CPU time (goal <= 2x end to end: "
        f"{'met' if met else '**not met**'})",
        f"- detect / the forward pass in batches of {FLOOR_BATCH:,} rows alone (the floor "
        f"of earlier runs of this benchmark): {largest['large_batch_ratio']:.1f}x wall time "
        "(medians)",
        "- peak RSS of detect by file size: "
        + ", ".join(f"{row['records']:,}: {row['max_rss_mib']:.0f} MiB" for row in detect)
        + " (the floor holds the whole prepared tensor, so its RSS grows with the file). "
        "detect keeps up to five chunks in flight, so a file of fewer chunks uses less",
        "- detect runs parsing, encoding and the forward pass on three threads and gives "
        "torch one thread fewer than its default; the floor uses torch's default threads",
    ]
    return bullets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("detect", "floor", "parse"), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help="run directory (default: train one)")
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--chunk-size", type=int, default=100_000)
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="runs per step, interleaved; the table shows the medians (default 5)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/metals-bench-detect"),
        help="folder for generated files (default /tmp/metals-bench-detect)",
    )
    parser.add_argument(
        "--write-page", action="store_true", help="replace the detect section of docs/benchmarks.md"
    )
    args = parser.parse_args()  # fmt: skip
    if args.child:
        run_child(args)
        return

    data_dir = Path(os.environ.get("METALS_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    source = data_dir / "nsl-kdd" / "KDDTest+.txt"
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or train_run(args.work / "run", data_dir)
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())

    rows = []
    for records in args.records:
        traffic = build_traffic(source, args.work / f"traffic-{records}.csv", records)
        out = args.work / f"predictions-{records}.csv"
        steps = ("floor", "parse", "detect")
        # Interleave the steps within each repeat, so a burst of load from other jobs
        # hits every step alike; the table reports medians.
        runs: dict[str, list[dict]] = {step: [] for step in steps}
        for _ in range(args.repeats):
            for step in steps:
                runs[step].append(measure(step, model, traffic, out, args.chunk_size))
        results = {step: median_run(step_runs) for step, step_runs in runs.items()}
        floor = results["floor"]["seconds"]
        for step, result in results.items():
            rows.append({"records": records, "step": step, "seconds": result["seconds"],
                         "ratio": result["seconds"] / floor,
                         "cpu_seconds": result["cpu_seconds"],
                         "cpu_ratio": result["cpu_seconds"] / results["floor"]["cpu_seconds"],
                         "max_rss_mib": result["max_rss_mib"],
                         "fastest_ratio": result["fastest_seconds"]
                         / results["floor"]["fastest_seconds"],
                         "large_batch_ratio": result["seconds"]
                         / results["floor"]["large_batch_seconds"],
                         "process_seconds": result["process_seconds"]})  # fmt: skip
            print(f"{records:>9,} {step:<7} {result['seconds']:7.2f} s "
                  f"{records / result['seconds']:>12,.0f} rec/s {result['seconds'] / floor:5.1f}x "
                  f"floor  CPU {result['cpu_seconds']:6.2f} s "
                  f"peak RSS {result['max_rss_mib']:6.0f} MiB "
                  f"(process {result['process_seconds']:.1f} s)", flush=True)  # fmt: skip
        large = results["detect"]["seconds"] / results["floor"]["large_batch_seconds"]
        print(
            f"{records:>9,} floor batch of the first run {results['floor']['batch']:,}; "
            f"detect / floor in batches of {FLOOR_BATCH:,}: {large:.1f}x",
            flush=True,
        )
    load_after = " ".join(f"{value:.1f}" for value in os.getloadavg())

    command = "METALS_DATA_DIR=../shared/data python bench/bench_detect.py " + " ".join(
        sys.argv[1:]
    )
    section = format_section(
        rows,
        command.strip(),
        machine(),
        f"{load} before, {load_after} after",
        args.chunk_size,
        args.repeats,
    )
    if args.write_page:
        write_section(PAGE, "detect", section)
        print(f"wrote {PAGE}")
    else:
        print(section)


if __name__ == "__main__":
    main()
