"""The metals ServerApp: federated active learning over the clients of a run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from metals.common.runconfig import SETTINGS, validate_run_config
from metals.server.federation import run_federation
from metals.server.grid import PollingGrid
from metals.server.results import RoundProgress

logger = logging.getLogger(__name__)

__all__ = ["RoundProgress", "app", "build_server_app"]


def build_server_app(
    run_config: Mapping[str, Any] | None = None,
    progress: Callable[[RoundProgress], None] | None = None,
) -> ServerApp:
    """Create the ServerApp, optionally with its settings bound.

    Parameters
    ----------
    run_config : Mapping[str, Any] | None, default=None
        Settings to use instead of ``context.run_config`` (kebab-case keys of
        ``SETTINGS``). None reads them from the context, skipping keys
        outside ``SETTINGS`` that Flower or a project file may add.
    progress : Callable[[RoundProgress], None] | None, default=None
        Called after each completed round.

    Returns
    -------
    ServerApp
        App whose main function runs the whole experiment.
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        if run_config is not None:
            overrides = dict(run_config)
        else:
            overrides = {key: value for key, value in context.run_config.items() if key in SETTINGS}
        config = validate_run_config(overrides)
        if not isinstance(grid, PollingGrid):
            grid = PollingGrid(grid)
        run_dir = run_federation(grid, config, progress)
        logger.info("run finished; results in %s", run_dir)

    return server_app


app = build_server_app()
