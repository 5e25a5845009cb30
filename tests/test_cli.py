"""Tests of the ``metals`` command table and its configuration subcommands."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metals.cli import SUBCOMMANDS, Subcommand, check_all_jobs, find_subcommand, format_help, main
from metals.config import ConfigError


def run_main(args):
    out, err = io.StringIO(), io.StringIO()
    code = main(args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_help_lists_every_subcommand():
    # Execute
    code, out, _ = run_main(["--help"])

    # Assert
    assert code == 0
    for command in SUBCOMMANDS:
        assert f"  {command.name} " in out
        assert command.help in out


def test_no_arguments_is_usage_error():
    # Execute
    code, _, err = run_main([])

    # Assert
    assert code == 2
    assert "usage: metals" in err


def test_unknown_subcommand_rejected():
    # Execute
    code, _, err = run_main(["trian"])

    # Assert
    assert code == 2
    assert "'trian'" in err
    assert "run" in err


def test_subcommand_names_unique():
    # Prepare
    names = [command.name for command in SUBCOMMANDS]

    # Assert
    assert len(names) == len(set(names))


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda command: command.name)
def test_every_handler_path_well_formed(command):
    # Prepare
    module_name, colon, function_name = command.handler.partition(":")

    # Assert
    assert colon == ":"
    assert module_name.startswith("metals.")
    assert function_name.isidentifier()


def test_registration_loads_handler_lazily():
    # Prepare
    command = Subcommand("echo", "test handler", "metals.cli:format_help")

    # Execute
    handler = command.load()

    # Assert
    assert handler is format_help
    assert find_subcommand("echo", [command]) is command
    assert "  echo  test handler" in format_help([command])


def test_help_imports_no_heavy_module():
    # Prepare: a fresh interpreter, so earlier imports in this process do not count.
    code = (
        "import sys; from metals.cli import main; main(['--help']); "
        "heavy = [m for m in ('torch', 'flwr', 'ray', 'hydra', 'pandas') if m in sys.modules]; "
        "print(heavy)"
    )

    # Execute
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    # Assert
    assert result.stdout.strip().endswith("[]")


def test_config_prints_flat_keys(capsys):
    # Execute
    code = main(["config", "+experiment=classical_fl", "strategy=fedprox"])

    # Assert
    out = capsys.readouterr().out
    assert code == 0
    assert "mode = 'classical'" in out
    assert "strategy = 'fedprox'" in out
    assert "smote = false" in out


def test_config_invalid_value_exit_2(capsys):
    # Execute
    code = main(["config", "fl.fraction_train=2"])

    # Assert
    captured = capsys.readouterr()
    assert code == 2
    assert "invalid value 2.0 for fl.fraction_train: must be <= 1" in captured.err
    assert "(run-config key fraction-train)" in captured.err
    assert "Traceback" not in captured.err


def test_run_invalid_value_exit_2_before_running(capsys):
    # Execute
    code = main(["run", "num_rounds=0"])

    # Assert
    captured = capsys.readouterr()
    assert code == 2
    assert "num_rounds" in captured.err
    assert "round" not in captured.out


def test_sweep_checked_job_by_job():
    # Execute
    jobs = check_all_jobs(["-m", "al=margin,entropy", "seed=1,2,3"])

    # Assert
    assert jobs == 6


def test_sweep_with_one_bad_job_rejected():
    # Execute
    with pytest.raises(ConfigError) as caught:
        check_all_jobs(["-m", "num_clients=5,0"])

    # Assert
    assert "num_clients" in str(caught.value)


def test_hydra_settings_not_validated_as_run_config(tmp_path):
    # Execute
    jobs = check_all_jobs([f"hydra.run.dir={tmp_path}", "hydra/job_logging=disabled"])

    # Assert
    assert jobs == 1


def test_console_script_help():
    # Execute
    result = subprocess.run(
        [sys.executable, "-m", "metals.cli", "--help"], capture_output=True, text=True
    )

    # Assert
    assert result.returncode == 0
    assert "commands:" in result.stdout


def test_progress_line_fields():
    # Prepare
    from metals.progress import ProgressPrinter
    from metals.server.results import RoundProgress

    stream = io.StringIO()
    printer = ProgressPrinter(stream)
    report = RoundProgress(
        round=3,
        num_rounds=10,
        sampled_clients=5,
        valid_replies=4,
        labels_queried_total=1234,
        labeled_fraction=0.241,
        accuracy=0.81234,
        macro_f1=0.65412,
        elapsed_seconds=0.25,
    )

    # Execute
    printer(report)

    # Assert
    line = stream.getvalue()
    assert line.startswith("round  3/10 | clients 4/5 | labels 1,234 (24.1%)")
    assert "| accuracy 0.8123 | macro-F1 0.6541 | round 0.2 s | total " in line
    assert line.endswith(" s\n")


def test_progress_line_shows_label_budget():
    # Prepare
    from metals.progress import ProgressPrinter
    from metals.server.results import RoundProgress

    stream = io.StringIO()
    printer = ProgressPrinter(stream, label_budget=0.5)
    report = RoundProgress(
        round=9,
        num_rounds=50,
        sampled_clients=20,
        valid_replies=20,
        labels_queried_total=4594,
        labeled_fraction=0.489,
        accuracy=0.7265,
        macro_f1=0.4651,
        elapsed_seconds=1.0,
    )

    # Execute
    printer(report)

    # Assert
    assert "| labels 4,594 (48.9%, budget 50.0%) |" in stream.getvalue()


DATA_DIR = Path(
    os.environ.get("METALS_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


@pytest.mark.skipif(
    not (DATA_DIR / "nsl-kdd" / "KDDTest+.txt").is_file(),
    reason=f"NSL-KDD files not found under {DATA_DIR}; set METALS_DATA_DIR",
)
def test_data_describes_partitions(capsys):
    # Execute
    code = main(["data", f"data_dir={DATA_DIR}", "num_clients=3"])

    # Assert
    out = capsys.readouterr().out
    assert code == 0
    assert "nsl_kdd" in out
    assert "over 3 clients" in out


def test_data_missing_files_exit_1(tmp_path, capsys):
    # Execute
    code = main(["data", f"data_dir={tmp_path}"])

    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert "not found" in err
    assert str(tmp_path) in err


def test_data_invalid_override_exit_2(capsys):
    # Execute
    code = main(["data", "partition=natural"])

    # Assert
    assert code == 2
    assert "partition.name" in capsys.readouterr().err


def test_data_download_edge_iiotset_points_to_kaggle(tmp_path, capsys):
    # Execute: Edge-IIoTset needs a Kaggle account, so nothing is fetched.
    code = main(["data", "download", "dataset=edge_iiotset", f"data_dir={tmp_path}"])

    # Assert
    assert code == 1
    assert "Kaggle" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "code", "stream", "text"),
    [(["--version"], 0, "stdout", "metals "), (["trian"], 2, "stderr", "unknown command")],
)
def test_program_exit_keeps_buffered_output(args, code, stream, text):
    # Execute: a pipe makes stdout block-buffered, so unflushed output would be lost.
    result = subprocess.run(
        [sys.executable, "-m", "metals.cli", *args], capture_output=True, text=True, timeout=120
    )

    # Assert
    assert result.returncode == code
    assert text in getattr(result, stream)
