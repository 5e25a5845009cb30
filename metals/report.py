"""The ``metals report`` command: run the METALS study grid and write the results page."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from metals.study.grid import PRESETS, GridError, GridRun, expand_runs, load_grid

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Run the METALS study grid (classical FL and METALS with every AL strategy
under FedAvg and FedProx, on the main partition and under Dirichlet label
skew, several seeds) with `metals run`'s simulation, then write the
results page with tables and PNG figures. Finished runs are skipped, so
an interrupted report continues where it stopped.
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``metals report``."""
    parser = argparse.ArgumentParser(
        prog="metals report",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--grid",
        default="reduced",
        help=f"grid preset ({', '.join(PRESETS)}) or a YAML file in the same layout "
        "(default: reduced)",
    )
    parser.add_argument(
        "--dataset",
        action="append",
        dest="datasets",
        help="dataset to run the grid on; repeat for several (default: nsl_kdd)",
    )
    parser.add_argument(
        "--seeds", help="comma-separated seeds replacing the grid's seeds, e.g. 1,2,3"
    )
    parser.add_argument(
        "--runs-dir",
        default="runs/report",
        help="folder for the run directories (default: runs/report)",
    )
    parser.add_argument(
        "--data-dir", default="", help="folder with the dataset files (default: METALS_DATA_DIR)"
    )
    parser.add_argument(
        "--page", default="docs/results.md", help="results page to write (default: docs/results.md)"
    )
    parser.add_argument(
        "--figures",
        default="docs/figures",
        help="folder for the PNG figures (default: docs/figures)",
    )
    parser.add_argument(
        "--page-only",
        action="store_true",
        help="write the page from the finished runs without starting any run",
    )
    return parser


def _parse_seeds(text: str | None) -> list[int] | None:
    """Return the seeds of ``--seeds``, or None when it is not given."""
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise GridError(f"invalid --seeds {text!r}: write integers separated by commas") from None


def run_grid_runs(runs: Sequence[GridRun]) -> list[GridRun]:
    """Run every run whose directory has no ``summary.json`` yet and return the failed ones.

    A run that raises ``RuntimeError`` or ``ValueError`` is logged and
    skipped, so one failed cell does not stop the grid.
    """
    from metals.config import compose_run_config
    from metals.simulation import run_experiment

    failed: list[GridRun] = []
    pending = [run for run in runs if not (run.run_dir / "summary.json").is_file()]
    logger.info("%d of %d runs to do", len(pending), len(runs))
    for number, run in enumerate(pending, start=1):
        label = f"{run.cell.dataset} {run.cell.partition.label} {run.cell.label} seed {run.seed}"
        sys.stdout.write(f"[{number}/{len(pending)}] {label} ...")
        sys.stdout.flush()
        started = time.monotonic()
        try:
            config, _ = compose_run_config(run.overrides, run_dir=run.run_dir)
            run_experiment(config)
        except (RuntimeError, ValueError) as error:
            logger.error("run %s failed: %s", run.run_dir, error)
            sys.stdout.write(f" failed: {error}\n")
            failed.append(run)
            continue
        sys.stdout.write(f" done in {time.monotonic() - started:.0f} s\n")
        sys.stdout.flush()
    return failed


def report_command(argv: list[str]) -> int:
    """Run the study grid on each dataset and write the results page; return the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    datasets = args.datasets or ["nsl_kdd"]
    root = Path(args.runs_dir).resolve()

    try:
        grid = load_grid(args.grid, _parse_seeds(args.seeds))
        runs = [
            run
            for dataset in datasets
            for run in expand_runs(grid, dataset, root, data_dir=args.data_dir or None)
        ]
    except GridError as error:
        sys.stderr.write(f"metals report: {error}\n")
        return 2

    failed: list[GridRun] = []
    if not args.page_only:
        failed = run_grid_runs(runs)

    from metals.study.page import write_results_page

    command = "metals report " + " ".join(argv) if argv else "metals report"
    page = write_results_page(
        runs, grid, Path(args.page), Path(args.figures), command=command.strip()
    )
    sys.stdout.write(f"results page: {page}\n")
    if failed:
        sys.stderr.write(f"metals report: {len(failed)} run(s) failed; see the log above\n")
        return 1
    return 0
