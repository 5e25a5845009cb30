"""The ``metals`` command: a table of subcommands, each imported only when it runs.

A subcommand is one :class:`Subcommand` entry in :data:`SUBCOMMANDS`: a name,
a one-line help and the ``"module:function"`` path of a handler that takes
the remaining arguments and returns an exit code. Handlers are imported on
use, so ``metals --help`` stays fast and a device image without the server
code can still run the client-side subcommands.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from metals import __version__

if TYPE_CHECKING:
    from metals.common.runconfig import RunConfig

#: Exit code for invalid arguments or configuration values.
EXIT_USAGE = 2
#: Exit code after SIGINT (Ctrl-C), 128 + 2 as shells report it.
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Subcommand:
    """One ``metals`` subcommand.

    Parameters
    ----------
    name : str
        Word typed after ``metals``.
    help : str
        One line shown by ``metals --help``.
    handler : str
        ``"module:function"`` path of a function ``(argv: list[str]) -> int``
        that receives the arguments after the name and returns the exit code.
    """

    name: str
    help: str
    handler: str

    def load(self) -> Callable[[list[str]], int]:
        """Import the handler module and return the handler function."""
        module_name, _, function_name = self.handler.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, function_name)


#: Every subcommand, in the order ``metals --help`` lists them. To add one,
#: append an entry here and put its imports inside its handler.
SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "run",
        "run an experiment on Flower's simulation runtime (Hydra overrides, -m sweeps)",
        "metals.cli:run_command",
    ),
    Subcommand(
        "centralized",
        "train the same MLP centrally on every label (reference accuracy)",
        "metals.centralized:centralized_command",
    ),
    Subcommand(
        "data",
        "describe the dataset and the client partitions a config produces",
        "metals.cli:data_command",
    ),
    Subcommand(
        "config",
        "print the validated flat run config (kebab-case keys) for overrides",
        "metals.cli:config_command",
    ),
    Subcommand(
        "detect",
        "label each record of a traffic file with a trained run's model",
        "metals.detect:detect_command",
    ),
    Subcommand(
        "export",
        "export a trained model as TorchScript or ONNX and check it against PyTorch",
        "metals.detect:export_command",
    ),
    Subcommand(
        "deploy",
        "run an experiment on a local SuperLink and SuperNodes (OS processes, loopback)",
        "metals.deploy:deploy_main",
    ),
    Subcommand(
        "client",
        "start a SuperNode for this device with its own traffic file",
        "metals.device:client_main",
    ),
    Subcommand(
        "report",
        "run the METALS study grid and write docs/results.md with figures",
        "metals.report:report_command",
    ),
)


def format_help(subcommands: Sequence[Subcommand] = SUBCOMMANDS) -> str:
    """Return the text of ``metals --help``."""
    width = max(len(command.name) for command in subcommands)
    lines = [
        "usage: metals [-h] [--version] COMMAND [ARGS ...]",
        "",
        "Federated active learning (METALS) for IoT intrusion detection on Flower.",
        "",
        "commands:",
    ]
    lines += [f"  {command.name:<{width}}  {command.help}" for command in subcommands]
    lines += ["", "Run 'metals COMMAND --help' for the options of one command."]
    return "\n".join(lines) + "\n"


def find_subcommand(
    name: str, subcommands: Sequence[Subcommand] = SUBCOMMANDS
) -> Subcommand | None:
    """Return the subcommand called ``name``, or None."""
    for command in subcommands:
        if command.name == name:
            return command
    return None


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the ``metals`` command line and return its exit code.

    Parameters
    ----------
    argv : Sequence[str] | None, default=None
        Arguments after the program name; ``sys.argv[1:]`` when None.
    stdout, stderr : TextIO | None, default=None
        Streams for help and errors; the process streams when None.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    out = stdout or sys.stdout
    err = stderr or sys.stderr

    if not args:
        err.write(format_help())
        return EXIT_USAGE
    if args[0] in ("-h", "--help", "help"):
        out.write(format_help())
        return 0
    if args[0] == "--version":
        out.write(f"metals {__version__}\n")
        return 0

    command = find_subcommand(args[0])
    if command is None:
        known = ", ".join(command.name for command in SUBCOMMANDS)
        err.write(f"metals: unknown command {args[0]!r}; commands are: {known}\n")
        err.write("Run 'metals --help' for one line on each.\n")
        return EXIT_USAGE

    return command.load()(args[1:])


def entry() -> None:
    """Run :func:`main` as the ``metals`` program and exit with its code.

    After a run, the interpreter spent 0.5 to 0.8 s tearing down torch's and
    Flower's modules before the process ended. Every file of the run is
    closed by then, so this flushes the output streams and the log
    handlers and ends the process at once. An exception from :func:`main`
    still ends the process the usual way.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


# ---------------------------------------------------------------------------
# Handlers of the built-in subcommands. Each one imports what it needs itself.
# ---------------------------------------------------------------------------

OVERRIDES_HELP = """\
Overrides use Hydra's syntax, for example:
  dataset=ton_iot partition=natural       pick a config group option
  num_clients=20 train.local_epochs=5     set a value
  +experiment=metals_paper                apply a preset (metals_paper, classical_fl, quick)
Groups: dataset (nsl_kdd, edge_iiotset, ton_iot), strategy (fedavg, fedprox),
al (random, entropy, margin, least_confidence, kcenter), partition (iid,
dirichlet, natural).
"""


def _wants_help(argv: Sequence[str]) -> bool:
    return any(arg in ("-h", "--help") for arg in argv)


def data_command(argv: list[str]) -> int:
    """Describe, or with ``download`` fetch, the dataset that the overrides in ``argv`` select."""
    if _wants_help(argv):
        sys.stdout.write(
            "usage: metals data [download] [OVERRIDES ...]\n\n"
            "Without 'download': print the dataset summary and the client partitions.\n"
            "With 'download': fetch the dataset's public files into the data directory\n"
            "and check their SHA-256 (nsl_kdd and ton_iot; Edge-IIoTset is on Kaggle).\n\n"
            + OVERRIDES_HELP
        )
        return 0
    download = bool(argv) and argv[0] == "download"
    overrides = argv[1:] if download else argv

    from metals.config import ConfigError, compose_run_config

    try:
        run_config, verbose = compose_run_config(overrides)
    except ConfigError as error:
        sys.stderr.write(f"metals data: {error}\n")
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)

    from metals.common.data import DataError

    try:
        if download:
            from metals.common.data.download import download_dataset

            paths = download_dataset(
                str(run_config["dataset"]), str(run_config["data-dir"]) or None
            )
            sys.stdout.write("".join(f"{path}\n" for path in paths))
        else:
            from metals.common.data.summary import describe_federation

            sys.stdout.write(describe_federation(run_config).rstrip("\n") + "\n")
    except DataError as error:
        sys.stderr.write(f"metals data: {error}\n")
        return 1
    return 0


def config_command(argv: list[str]) -> int:
    """Print the validated flat run config for the overrides in ``argv``."""
    if _wants_help(argv):
        sys.stdout.write("usage: metals config [OVERRIDES ...]\n\n" + OVERRIDES_HELP)
        return 0

    from metals.config import ConfigError, compose_run_config

    try:
        run_config, _ = compose_run_config(argv)
    except ConfigError as error:
        sys.stderr.write(f"metals config: {error}\n")
        return EXIT_USAGE
    for key, value in run_config.items():
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        sys.stdout.write(f"{key} = {shown}\n")
    return 0


def run_command(argv: list[str]) -> int:
    """Run an experiment on Flower's simulation runtime, one per Hydra job."""

    def execute(run_config: RunConfig, verbose: bool) -> Path:
        from metals.progress import ProgressPrinter
        from metals.simulation import run_experiment

        # The plots come after the run; matplotlib imports while Ray starts.
        threading.Thread(
            target=importlib.import_module, args=("metals.plots",), daemon=True
        ).start()

        # Every label is known in classical mode, so a budget there caps nothing.
        budget = float(run_config["label-budget"]) if run_config["mode"] == "metals" else 1.0
        printer = ProgressPrinter(label_budget=budget)
        sys.stdout.write(
            f"starting Ray and {run_config['num-clients']} simulated clients; round 1 "
            "includes their start-up\n"
        )
        sys.stdout.flush()
        return run_experiment(
            run_config, progress=printer, verbose=verbose, on_finished=write_report
        )

    # The table and plots are written while Flower and Ray shut down.
    written: dict[Path, tuple[str, list[Path]]] = {}

    def write_report(run_dir: Path) -> None:
        written[run_dir] = _write_report(run_dir)

    def report(run_dir: Path) -> None:
        if run_dir in written:
            _print_report(run_dir, *written.pop(run_dir))
        else:
            _report_run(run_dir)

    return run_with_hydra(argv, "run", execute, check_run_dirs=True, report=report)


#: Hydra flags that only print information; nothing is validated or run for them.
_HYDRA_INFO_FLAGS = ("--cfg", "-c", "--info", "-i", "--hydra-help", "--resolve", "--package", "-p")
_HYDRA_MULTIRUN_FLAGS = ("-m", "--multirun")


def check_all_jobs(argv: Sequence[str], *, check_run_dirs: bool = False) -> int:
    """Validate the config of every job that ``argv`` would launch.

    A ``-m`` sweep such as ``num_clients=5,0`` is expanded into its jobs the
    way Hydra's basic sweeper does it, and each job is composed and checked,
    so an invalid value stops the command before the first job starts.

    With ``check_run_dirs``, a job whose run directory is given
    (``hydra.run.dir``, or ``hydra.sweep.dir`` with ``-m``) and already
    contains a run is checked against that run's checkpoint, so a mismatch
    is reported before Hydra writes its ``.hydra/`` files into that folder.

    Returns
    -------
    int
        The number of jobs checked.

    Raises
    ------
    ConfigError
        On the first invalid override or value.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from metals.config import ConfigError, compose_run_config

    overrides = [arg for arg in argv if arg not in _HYDRA_MULTIRUN_FLAGS]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    except HydraException as error:
        raise ConfigError(f"invalid overrides {' '.join(overrides)!r}: {error}") from None

    multirun = any(arg in _HYDRA_MULTIRUN_FLAGS for arg in argv)
    jobs = [job for batch in batches for job in batch] or [[]]
    for number, job in enumerate(jobs):
        # Hydra's own settings (run directory, launcher) are not part of the run config.
        own = [item for item in job if not item.lstrip("+~").startswith(("hydra.", "hydra/"))]
        run_config, _ = compose_run_config(own)
        run_dir = _given_run_dir(job, number, multirun) if check_run_dirs else None
        if run_dir is not None:
            _check_resumable(run_dir, run_config)
    return len(jobs)


def _given_run_dir(job: Sequence[str], number: int, multirun: bool) -> Path | None:
    """Return the run directory that a job's overrides fix, or None when Hydra picks it.

    A sweep job runs in ``<hydra.sweep.dir>/<job number>``, Hydra's default
    ``hydra.sweep.subdir``. A path with an interpolation such as ``${now:...}``
    counts as unknown.
    """
    values = {}
    for item in job:
        key, _, value = item.lstrip("+").partition("=")
        values[key] = value
    if multirun:
        if "hydra.sweep.subdir" in values or not values.get("hydra.sweep.dir"):
            return None
        path = f"{values['hydra.sweep.dir']}/{number}"
    else:
        path = values.get("hydra.run.dir", "")
    if not path or "${" in path:
        return None
    return Path(path).expanduser().resolve()


def _check_resumable(run_dir: Path, run_config: RunConfig) -> None:
    """Raise ConfigError when ``run_dir`` is in use, or has a run ``run_config`` cannot continue."""
    from metals.config import ConfigError
    from metals.server.checkpoint import RunDirInUseError, check_run_dir, check_run_dir_free

    try:
        check_run_dir_free(run_dir)
        check_run_dir(run_dir, {**run_config, "run-dir": str(run_dir)})
    except ConfigError:
        raise
    except (ValueError, RunDirInUseError) as error:
        raise ConfigError(str(error)) from None


def run_with_hydra(
    argv: Sequence[str],
    name: str,
    execute: Callable[[RunConfig, bool], Path],
    *,
    check_run_dirs: bool = False,
    report: Callable[[Path], None] | None = None,
) -> int:
    """Run ``execute`` once per Hydra job and report each run.

    Parameters
    ----------
    argv : Sequence[str]
        Hydra overrides and flags (``-m``, ``hydra.run.dir=PATH``).
    name : str
        Subcommand name, for messages.
    execute : Callable[[RunConfig, bool], Path]
        Runs one job from its validated run config and the ``verbose`` flag,
        and returns the run directory holding ``metrics.csv`` and
        ``summary.json``.
    check_run_dirs : bool, default=False
        Before Hydra starts, check each given run directory that already
        contains a run against that run's checkpoint (see :func:`check_all_jobs`).
    report : Callable[[Path], None] | None, default=None
        Writes and prints the results of one run directory. None writes the
        table and plots and prints the table.

    Returns
    -------
    int
        0 when every job finished, 2 when a value was invalid, 130 when the
        user interrupted a run (SIGINT).

    Raises
    ------
    SystemExit
        With code 1 when a job fails on missing or malformed data, a failed
        round or unreadable results; the message names the log file.
    """
    from metals.config import ConfigError

    info_only = _wants_help(argv) or any(arg in _HYDRA_INFO_FLAGS for arg in argv)
    if not info_only:
        try:
            check_all_jobs(argv, check_run_dirs=check_run_dirs)
        except ConfigError as error:
            sys.stderr.write(f"metals {name}: {error}\n")
            return EXIT_USAGE

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    from metals.config import to_run_config
    from metals.simulation import RunInterrupted

    run_dirs: list[Path] = []
    sweep_dirs: list[Path] = []

    @hydra.main(config_path="pkg://metals.conf", config_name="config", version_base=None)
    def job(config: DictConfig) -> None:
        hydra_config = HydraConfig.get()
        container = OmegaConf.to_container(config, resolve=True)
        assert isinstance(container, dict)
        try:
            run_config = to_run_config(container, run_dir=hydra_config.runtime.output_dir)
        except ConfigError as error:
            sys.stderr.write(f"metals {name}: {error}\n")
            raise SystemExit(EXIT_USAGE) from None

        verbose = container.get("verbose") is True
        _route_console_logs(verbose)
        try:
            run_dir = execute(run_config, verbose)
            (report or _report_run)(run_dir)
        except RunInterrupted as interrupt:
            logging.getLogger(__name__).info("metals %s interrupted", name, exc_info=True)
            saved = any((interrupt.run_dir / "checkpoint").glob("weights-*.npz"))
            next_step = (
                "to resume after the last completed round"
                if saved
                else "to start again, because no round had completed"
            )
            sys.stderr.write(
                f"metals {name}: interrupted; rerun the same command with "
                f"hydra.run.dir={interrupt.run_dir} {next_step}\n"
            )
            raise SystemExit(EXIT_INTERRUPTED) from None
        except _expected_failures() as error:
            # Expected failures (missing data, a failed round) get one line on the
            # console; the traceback goes to metals.log in the run directory.
            logging.getLogger(__name__).info("metals %s failed", name, exc_info=True)
            sys.stderr.write(
                f"metals {name}: {error}\n(details in {hydra_config.runtime.output_dir}"
                f"/{hydra_config.job.name}.log)\n"
            )
            raise SystemExit(1) from None
        except ValueError as error:
            # A run directory whose run cannot be resumed; run_command checks
            # this before Hydra starts, so this is the fallback for other paths.
            logging.getLogger(__name__).info("metals %s failed", name, exc_info=True)
            sys.stderr.write(f"metals {name}: {error}\n")
            raise SystemExit(EXIT_USAGE) from None
        run_dirs.append(run_dir)
        if hydra_config.mode is not None and hydra_config.mode.name == "MULTIRUN":
            sweep_dirs.append(Path(hydra_config.sweep.dir))

    saved_argv = sys.argv
    sys.argv = [f"metals {name}", *argv]
    try:
        job()
    finally:
        sys.argv = saved_argv

    if len(run_dirs) > 1:
        _report_sweep(run_dirs, sweep_dirs[0] if sweep_dirs else None)
    return 0


def _expected_failures() -> tuple[type[Exception], ...]:
    """Return the errors of a job that get one line on the console instead of a traceback.

    An ``except`` clause evaluates this only when an error reaches it, so the
    data layer (and pandas with it) is not imported before Ray starts.
    """
    from metals.common.data import DataError
    from metals.tables import ResultsError

    return (DataError, ResultsError, RuntimeError)


def _is_framework_chatter(record: logging.LogRecord) -> bool:
    """Return True for a Flower or Ray log record below ERROR."""
    framework = record.name.split(".")[0] in ("flwr", "ray")
    return framework and record.levelno < logging.ERROR


def _route_console_logs(verbose: bool) -> None:
    """Keep every log record in Hydra's log file and, unless ``verbose``, off the console.

    Without ``verbose``, Hydra's console handler drops records below WARNING,
    and Flower's and Ray's records below ERROR. Flower's own console handler is
    not touched here.
    """
    if verbose:
        return
    from metals.simulation import console_handlers

    # Flower's state database reports its schema set-up at INFO on every run.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for handler in console_handlers(logging.getLogger()):
        handler.setLevel(logging.WARNING)
        handler.addFilter(lambda record: not _is_framework_chatter(record))


def _report_run(run_dir: Path) -> None:
    """Write the results table and plots of one run and print the table."""
    _print_report(run_dir, *_write_report(run_dir))


def _write_report(run_dir: Path) -> tuple[str, list[Path]]:
    """Write the results table and plots of one run, and return the table and the plot paths."""
    from metals.plots import write_plots
    from metals.tables import write_results_table

    return write_results_table(run_dir), list(write_plots(run_dir))


def _print_report(run_dir: Path, table: str, plots: Sequence[Path]) -> None:
    """Print a run's results table, its plot names and its directory."""
    sys.stdout.write("\n" + table + "\n")
    sys.stdout.write(f"plots: {', '.join(path.name for path in plots)}\n")
    sys.stdout.write(f"run directory: {run_dir}\n")


def _report_sweep(run_dirs: Sequence[Path], sweep_dir: Path | None) -> None:
    """Print one table over all runs of a sweep and save it in the sweep directory."""
    from metals.tables import format_results_table

    table = format_results_table(run_dirs)
    sys.stdout.write("\n" + table + "\n")
    if sweep_dir is not None:
        path = sweep_dir / "results.md"
        path.write_text(table + "\n", encoding="utf-8")
        sys.stdout.write(f"sweep table: {path}\n")


if __name__ == "__main__":
    entry()
