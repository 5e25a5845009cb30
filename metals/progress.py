"""Live progress of a run: one line per federated round on the console."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class RoundReport(Protocol):
    """The fields of ``metals.server.results.RoundProgress`` that the printer reads."""

    round: int
    num_rounds: int
    sampled_clients: int
    valid_replies: int
    labels_queried_total: int
    labeled_fraction: float
    accuracy: float
    macro_f1: float
    elapsed_seconds: float


def format_round(
    report: RoundReport, total_seconds: float | None = None, label_budget: float = 1.0
) -> str:
    """Return the one-line summary of a finished round.

    Example: ``round  3/10 | clients 5/5 | labels 1,234 (24.1%) | accuracy 0.8123
    | macro-F1 0.6541 | round 0.3 s | total 12.3 s``. ``clients`` shows valid
    replies out of sampled clients, and ``labels`` the labels bought from the
    oracle so far with the labeled share of the reporting clients' pools. ``round`` is the
    round's own wall time in seconds (``report.elapsed_seconds``) and
    ``total`` the wall time since the run started, when given. A
    ``label_budget`` below 1 is shown beside the labeled share, as in
    ``labels 4,594 (48.9%, budget 50.0%)``.
    """
    digits = len(str(report.num_rounds))
    share = f"{report.labeled_fraction:.1%}"
    if label_budget < 1:
        share += f", budget {label_budget:.1%}"
    line = (
        f"round {report.round:>{digits}}/{report.num_rounds}"
        f" | clients {report.valid_replies}/{report.sampled_clients}"
        f" | labels {report.labels_queried_total:,} ({share})"
        f" | accuracy {report.accuracy:.4f}"
        f" | macro-F1 {report.macro_f1:.4f}"
        f" | round {report.elapsed_seconds:.1f} s"
    )
    if total_seconds is not None:
        line += f" | total {total_seconds:.1f} s"
    return line


class ProgressPrinter:
    """Print :func:`format_round` for each round as it finishes.

    The total time counts from the creation of the printer, so create it just
    before the run starts.

    Parameters
    ----------
    stream : TextIO | None, default=None
        Where the lines go; the process standard output when None, looked up
        at each call so that a redirected ``sys.stdout`` is honoured.
    label_budget : float, default=1.0
        The run's ``label-budget``, shown in each line when below 1.
    """

    def __init__(self, stream: TextIO | None = None, label_budget: float = 1.0) -> None:
        self.stream = stream
        self.label_budget = label_budget
        self.started = time.monotonic()

    def __call__(self, report: RoundReport) -> None:
        """Write the line for ``report`` and flush it."""
        stream = self.stream or sys.stdout
        line = format_round(report, time.monotonic() - self.started, self.label_budget)
        stream.write(line + "\n")
        stream.flush()
