"""Benchmark Edge-IIoTset preparation against a plain pandas.read_csv of the same file.

The full DNN-EdgeIIoT-dataset.csv is not available here, so the benchmark
generates a file of the same size and layout (2,219,201 rows, the 63 columns)
with the class counts below, and labels it as generated. Each measured step
runs in a fresh Python process, and its peak memory is that process's
ru_maxrss. The steps run in rounds (plain read, the preparation's pyarrow parse
alone, preparation, cached reload),
so that a change in the machine's load hits both sides of a ratio. The page
reports medians over the rounds.

Usage:
    python bench/bench_prepare.py [--dir /tmp/metals-bench] [--rows 2219201]
        [--repeat 3] [--page docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from benchpage import cpu_model, write_section

# Rows per class of DNN-EdgeIIoT-dataset.csv. Normal, MITM and Fingerprinting
# are the file's counts; the other classes are estimates that sum to its
# 2,219,201 rows.
CLASS_COUNTS = {
    "Normal": 1_615_643,
    "DDoS_UDP": 121_568,
    "DDoS_ICMP": 116_436,
    "SQL_injection": 51_203,
    "Password": 50_153,
    "Vulnerability_scanner": 50_110,
    "DDoS_TCP": 50_062,
    "DDoS_HTTP": 49_911,
    "Uploading": 37_634,
    "Backdoor": 24_862,
    "Port_Scanning": 22_564,
    "XSS": 15_915,
    "Ransomware": 10_925,
    "MITM": 1_214,
    "Fingerprinting": 1_001,
}
CHUNK_ROWS = 200_000
DEFAULT_DIR = Path("/tmp/metals-bench")


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Write a generated CSV in the Edge-IIoTset 63-column layout."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from metals.common.data.edge_iiotset import CATEGORICAL, COLUMNS

    rng = np.random.default_rng(seed)
    names = np.array(list(CLASS_COUNTS))
    shares = np.array(list(CLASS_COUNTS.values()), dtype=np.float64)
    labels = rng.permutation(np.repeat(names, np.round(shares / shares.sum() * rows).astype(int)))
    labels = np.resize(labels, rows)
    text_values = {
        "frame.time": None,
        "ip.src_host": np.array([f"192.168.0.{i}" for i in range(1, 255)]),
        "ip.dst_host": np.array([f"192.168.0.{i}" for i in range(1, 255)]),
        "arp.src.proto_ipv4": np.array(["0", "192.168.0.1"]),
        "arp.dst.proto_ipv4": np.array(["0", "192.168.0.128"]),
        "http.file_data": np.array(["0.0", "0", "<html>hello</html>"]),
        "http.request.uri.query": np.array(["0.0", "0", "id=1"]),
        "http.request.full_uri": np.array(["0.0", "0", "http://192.168.0.128/index.php"]),
        "tcp.options": np.array(["0.0", "0", "020405b40402080a"]),
        "tcp.payload": np.array(["0.0", "0", "474554202f20485454502f312e31"]),
        "mqtt.msg": np.array(["0.0", "0", "32.5"]),
        "http.request.method": np.array(["0.0", "0", "GET", "POST"]),
        "http.referer": np.array(["0.0", "0", "127.0.0.1"]),
        "http.request.version": np.array(["0.0", "0", "HTTP/1.1"]),
        "dns.qry.name.len": np.array(["0.0", "0", "0.debian.pool.ntp.org", "1.0"]),
        "mqtt.conack.flags": np.array(["0.0", "0", "0x00000000"]),
        "mqtt.protoname": np.array(["0.0", "0", "MQTT"]),
        "mqtt.topic": np.array(["0.0", "0", "Temperature_and_Humidity"]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    with temporary.open("wb") as handle:
        for start in range(0, rows, CHUNK_ROWS):
            size = min(CHUNK_ROWS, rows - start)
            columns = {}
            for name in COLUMNS:
                if name == "frame.time":
                    seconds = rng.integers(0, 86_400, size)
                    columns[name] = pa.array(
                        np.char.add(" 2021 ", (seconds / 3600).round(6).astype(str))
                    )
                elif name in text_values or name in CATEGORICAL:
                    columns[name] = pa.array(rng.choice(text_values[name], size, p=None))
                elif name == "Attack_type":
                    columns[name] = pa.array(labels[start : start + size])
                elif name == "Attack_label":
                    columns[name] = pa.array(
                        (labels[start : start + size] != "Normal").astype(np.int64)
                    )
                else:
                    # Most fields are 0 and the rest random integers: a rough
                    # stand-in for the capture values, enough for timing.
                    values = np.where(
                        rng.random(size) < 0.6, 0.0, rng.integers(0, 65_536, size).astype(float)
                    )
                    columns[name] = pa.array(values)
            table = pa.table(columns)
            options = pacsv.WriteOptions(include_header=start == 0, quoting_style="none")
            pacsv.write_csv(table, handle, write_options=options)
    os.replace(temporary, path)


def measure(step: str, data_dir: Path, cache_dir: Path) -> dict[str, float]:
    """Run one step in this process and return wall time and peak memory."""
    import pandas as pd

    from metals.common.data import prepare_dataset

    csv_path = data_dir / "edge-iiotset" / "DNN-EdgeIIoT-dataset.csv"
    result: dict[str, float] = {"base_rss_bytes": current_rss()}
    started = time.perf_counter()
    cpu_started = time.process_time()
    if step == "plain":
        frame = pd.read_csv(csv_path)
        result["frame_bytes"] = float(frame.memory_usage(deep=True).sum())
        result["rows"] = float(len(frame))
    elif step == "parse":
        # Only the pyarrow read that starts the preparation: the floor under it.
        from metals.common.data.edge_iiotset import _read_columns

        result["rows"] = float(_read_columns(csv_path, []).num_rows)
    else:
        prepared = prepare_dataset("edge_iiotset", data_dir, cache_dir=cache_dir)
        result["rows"] = float(len(prepared.y_train) + len(prepared.y_val) + len(prepared.y_test))
        result["features"] = float(prepared.x_train.shape[1])
    result["seconds"] = time.perf_counter() - started
    result["cpu_seconds"] = time.process_time() - cpu_started
    result["peak_rss_bytes"] = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return result


def current_rss() -> float:
    """Return this process's resident memory in bytes (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    return 0.0


def run_step(step: str, data_dir: Path, cache_dir: Path) -> dict[str, float]:
    """Run ``measure`` for one step in a fresh interpreter."""
    command = [
        sys.executable,
        __file__,
        "--step",
        step,
        "--dir",
        str(data_dir.parent),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_rounds(data_dir: Path, cache_dir: Path, repeat: int) -> dict[str, list[dict[str, float]]]:
    """Run plain read, parse, preparation and cached reload ``repeat`` times, interleaved."""
    results: dict[str, list[dict[str, float]]] = {
        "plain": [],
        "parse": [],
        "prepare": [],
        "cached": [],
    }
    for round_number in range(1, repeat + 1):
        for step in results:
            if step == "prepare":
                shutil.rmtree(cache_dir, ignore_errors=True)
            result = run_step(step, data_dir, cache_dir)
            result["load"] = os.getloadavg()[0]
            results[step].append(result)
            print(
                f"round {round_number} {step}: {result['seconds']:.2f} s wall, "
                f"{result['cpu_seconds']:.2f} s CPU, load {result['load']:.1f}",
                file=sys.stderr,
            )
    return results


def median(results: list[dict[str, float]], key: str) -> float:
    """Return the median of ``key`` over the rounds."""
    return statistics.median(result[key] for result in results)


def report(results: dict[str, list[dict[str, float]]], csv_path: Path, command: str) -> str:
    """Return the page section for the measured rounds."""
    plain, parse, prepare, cached = (
        results[step] for step in ("plain", "parse", "prepare", "cached")
    )
    ratios = [p["seconds"] / q["seconds"] for p, q in zip(prepare, plain, strict=True)]
    parse_ratios = [p["seconds"] / q["seconds"] for p, q in zip(parse, plain, strict=True)]
    cpu_ratios = [p["cpu_seconds"] / q["cpu_seconds"] for p, q in zip(prepare, plain, strict=True)]
    time_ratio = statistics.median(ratios)
    frame_bytes = median(plain, "frame_bytes")
    memory_ratio = median(prepare, "peak_rss_bytes") / frame_bytes
    growth = median(prepare, "peak_rss_bytes") - median(prepare, "base_rss_bytes")
    reload_seconds = median(cached, "seconds")
    loads = [result["load"] for step in results.values() for result in step]

    def row(label: str, step: list[dict[str, float]], digits: int) -> str:
        return (
            f"| {label} | {median(step, 'seconds'):.{digits}f} | "
            f"{median(step, 'cpu_seconds'):.{digits}f} | "
            f"{median(step, 'peak_rss_bytes') / 2**20:,.0f} |"
        )

    def verdict(met: bool) -> str:
        return "met" if met else "**not met**"

    lines = [
        "## Edge-IIoTset preparation",
        "",
        f"Input: a **generated** file in the Edge-IIoTset layout ({int(plain[0]['rows']):,} rows, "
        f"63 columns, {csv_path.stat().st_size / 2**20:,.0f} MiB, class proportions of "
        "DNN-EdgeIIoT-dataset.csv), not real traffic. Each step ran in a fresh Python "
        "process; peak memory is its ru_maxrss, CPU time is user + system time of all its "
        f"threads. The four steps ran in {len(plain)} interleaved rounds; the table shows "
        "medians.",
        "",
        "| step | wall time (s) | CPU time (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
        row("plain `pandas.read_csv`", plain, 1),
        row("pyarrow parse only (the first step of the preparation)", parse, 1),
        row("full preparation (`prepare_dataset`, no cache)", prepare, 1),
        row("cached reload (`prepare_dataset`, cache hit)", cached, 2),
        "",
        f"- preparation / plain read, wall time: median {time_ratio:.2f}x over the rounds "
        f"({', '.join(f'{ratio:.2f}' for ratio in ratios)}); goal <= 1.5x, "
        f"{verdict(time_ratio <= 1.5)}",
        f"- preparation / plain read, CPU time: median {statistics.median(cpu_ratios):.2f}x "
        "(the preparation parses on every core, the plain read on one)",
        f"- pyarrow parse only / plain read, wall time: median "
        f"{statistics.median(parse_ratios):.2f}x; the parse is the floor under the "
        "preparation, and the steps after it (column copies, checks, deduplication, "
        "split, one-hot encoding, scaling, cache write) take the rest",
        f"- preparation peak RSS / loaded frame ({frame_bytes / 2**20:,.0f} MiB, "
        f"`memory_usage(deep=True)`): {memory_ratio:.2f}x; goal <= 3x, "
        f"{verdict(memory_ratio <= 3)}; growth above the RSS after imports "
        f"({median(prepare, 'base_rss_bytes') / 2**20:,.0f} MiB): "
        f"{growth / frame_bytes:.2f}x",
        f"- cached reload: {reload_seconds:.2f} s; goal < 1 s, {verdict(reload_seconds < 1)}",
        f"- rows after cleaning and deduplication: {int(prepare[0]['rows']):,}; "
        f"features: {int(prepare[0]['features'])}",
        "",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}; "
        f"1-minute load average during the run: {min(loads):.1f} to {max(loads):.1f} "
        "(a load above the core count means other jobs shared the cores, so times are "
        "upper bounds and ratios are the comparable figure).",
        "",
        f"Command: `{command}`",
    ]
    return "\n".join(lines)


def main() -> None:
    """Generate the file if needed, run the rounds and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help="work folder for the generated file and the cache",
    )
    parser.add_argument(
        "--rows", type=int, default=sum(CLASS_COUNTS.values()), help="rows of the generated file"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="rounds of the four measured steps (default: 5)"
    )
    parser.add_argument(
        "--page", type=Path, default=None, help="benchmark page to write the results into"
    )
    parser.add_argument(
        "--step",
        choices=("plain", "parse", "prepare", "cached"),
        default=None,
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    data_dir = args.dir / "generated-edge-iiotset"
    cache_dir = args.dir / "cache"

    if args.step is not None:
        print(json.dumps(measure(args.step, data_dir, cache_dir)))
        return

    csv_path = data_dir / "edge-iiotset" / "DNN-EdgeIIoT-dataset.csv"
    if not csv_path.is_file():
        started = time.perf_counter()
        generate(csv_path, args.rows)
        (data_dir / "GENERATED.txt").write_text(
            "DNN-EdgeIIoT-dataset.csv here is generated by bench/bench_prepare.py for "
            "timing; it is not Edge-IIoTset data.\n"
        )
        print(f"generated {csv_path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    results = run_rounds(data_dir, cache_dir, args.repeat)
    command = "python bench/bench_prepare.py"
    if args.dir != DEFAULT_DIR:
        command += f" --dir {args.dir}"
    if args.repeat != 3:
        command += f" --repeat {args.repeat}"
    command += " --page docs/benchmarks.md"
    text = report(results, csv_path, command)
    print(text)
    if args.page is not None:
        write_section(
            args.page,
            "prepare",
            f"<!-- bench:prepare -->\n{text.rstrip()}\n<!-- /bench:prepare -->",
        )


if __name__ == "__main__":
    main()
