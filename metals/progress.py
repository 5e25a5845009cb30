"""Live progress of a run: one line per federated round on the console."""

from __future__ import annotations

import sys
from typing import Protocol, TextIO


class RoundReport(Protocol):
    """The fields of ``metals.server.app.RoundProgress`` that the printer reads."""

    round: int
    num_rounds: int
    sampled_clients: int
    valid_replies: int
    labels_queried_total: int
    labeled_fraction: float
    accuracy: float
    macro_f1: float
    elapsed_seconds: float


def format_round(report: RoundReport) -> str:
    """Return the one-line summary of a finished round.

    Example: ``round  3/10 | clients 5/5 | labels 1,234 (24.1%) | accuracy 0.8123
    | macro-F1 0.6541 | 12.3 s``. ``clients`` shows valid replies out of
    sampled clients, ``labels`` the labels bought from the oracle so far and
    the share of all training rows now labeled, and the time is the wall time
    since the run started, in seconds.
    """
    digits = len(str(report.num_rounds))
    return (
        f"round {report.round:>{digits}}/{report.num_rounds}"
        f" | clients {report.valid_replies}/{report.sampled_clients}"
        f" | labels {report.labels_queried_total:,} ({report.labeled_fraction:.1%})"
        f" | accuracy {report.accuracy:.4f}"
        f" | macro-F1 {report.macro_f1:.4f}"
        f" | {report.elapsed_seconds:.1f} s"
    )


class ProgressPrinter:
    """Print :func:`format_round` for each round as it finishes.

    Parameters
    ----------
    stream : TextIO | None, default=None
        Where the lines go; the process standard output when None, looked up
        at each call so that a redirected ``sys.stdout`` is honoured.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def __call__(self, report: RoundReport) -> None:
        """Write the line for ``report`` and flush it."""
        stream = self.stream or sys.stdout
        stream.write(format_round(report) + "\n")
        stream.flush()
