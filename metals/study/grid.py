"""The METALS study grid: load a grid preset and expand it into runs with Hydra overrides."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from metals.common.runconfig import AL_STRATEGIES, DATASETS

logger = logging.getLogger(__name__)

#: Grid presets shipped under ``conf/report/``.
PRESETS = ("reduced", "full")
MODES = ("classical", "metals")


class GridError(ValueError):
    """An invalid grid preset or grid file, reported before any run starts."""


@dataclass(frozen=True)
class Strategy:
    """An aggregator of the grid: FedAvg, or FedProx with its proximal weight ``mu``."""

    name: str
    mu: float = 0.0

    @property
    def label(self) -> str:
        """Display name such as ``FedAvg`` or ``FedProx(0.5)``."""
        return "FedAvg" if self.name == "fedavg" else f"FedProx({self.mu:g})"

    @property
    def slug(self) -> str:
        """Folder name such as ``fedavg`` or ``fedprox-0.5``."""
        return "fedavg" if self.name == "fedavg" else f"fedprox-{self.mu:g}"

    def overrides(self) -> list[str]:
        """Return the Hydra overrides that select this aggregator."""
        if self.name == "fedavg":
            return ["strategy=fedavg"]
        return ["strategy=fedprox", f"strategy.proximal_mu={self.mu:g}"]


def parse_strategy(text: str) -> Strategy:
    """Parse ``fedavg`` or ``fedprox:<mu>`` into a :class:`Strategy`.

    Raises
    ------
    GridError
        On another name or a mu that is not a number > 0.
    """
    name, _, mu_text = str(text).partition(":")
    if name == "fedavg" and not mu_text:
        return Strategy("fedavg")
    if name == "fedprox":
        try:
            mu = float(mu_text)
        except ValueError:
            mu = -1.0
        if mu > 0:
            return Strategy("fedprox", mu)
    raise GridError(f"invalid strategy {text!r} in the grid: write fedavg or fedprox:<mu > 0>")


@dataclass(frozen=True)
class Partition:
    """Spread of the training rows over clients: ``iid``, ``natural`` or ``dirichlet``."""

    name: str
    alpha: float = 0.0

    @property
    def label(self) -> str:
        """Display name such as ``IID`` or ``Dirichlet(0.1)``."""
        if self.name == "dirichlet":
            return f"Dirichlet({self.alpha:g})"
        return "IID" if self.name == "iid" else "natural (device type)"

    @property
    def slug(self) -> str:
        """Folder name such as ``iid`` or ``dirichlet-0.1``."""
        return f"dirichlet-{self.alpha:g}" if self.name == "dirichlet" else self.name

    def overrides(self) -> list[str]:
        """Return the Hydra overrides that select this partition."""
        if self.name == "dirichlet":
            return ["partition=dirichlet", f"partition.alpha={self.alpha:g}"]
        return [f"partition={self.name}"]


@dataclass(frozen=True)
class Cell:
    """One configuration of the grid, run once per seed.

    Attributes
    ----------
    dataset : str
        Dataset name.
    partition : Partition
        Row spread over the clients.
    mode : str
        ``classical`` (every label known) or ``metals`` (active learning).
    strategy : Strategy
        Aggregator.
    al : str
        AL strategy, ``""`` in classical mode.
    """

    dataset: str
    partition: Partition
    mode: str
    strategy: Strategy
    al: str = ""

    @property
    def label(self) -> str:
        """Display name such as ``FedAvg, margin`` or ``FedProx(0.5), classical FL``."""
        method = "classical FL" if self.mode == "classical" else self.al
        return f"{self.strategy.label}, {method}"

    @property
    def slug(self) -> str:
        """Folder name such as ``metals-fedavg-margin``."""
        suffix = "" if self.mode == "classical" else f"-{self.al}"
        return f"{self.mode}-{self.strategy.slug}{suffix}"


@dataclass(frozen=True)
class GridRun:
    """One run of the grid: a cell, a seed, its Hydra overrides and its run directory."""

    cell: Cell
    seed: int
    overrides: tuple[str, ...]
    run_dir: Path


@dataclass(frozen=True)
class Grid:
    """A loaded grid preset.

    Attributes
    ----------
    name : str
        Preset name or file path.
    seeds : tuple[int, ...]
        Seeds every cell runs with.
    mode_overrides : Mapping[str, tuple[str, ...]]
        Hydra overrides per mode, applied first.
    main : tuple[dict, ...]
        Cell specs on the dataset's main partition.
    alphas : tuple[float, ...]
        Dirichlet concentrations of the non-IID comparison.
    non_iid : tuple[dict, ...]
        Cell specs run under each Dirichlet alpha.
    """

    name: str
    seeds: tuple[int, ...]
    mode_overrides: Mapping[str, tuple[str, ...]]
    main: tuple[dict[str, Any], ...]
    alphas: tuple[float, ...] = ()
    non_iid: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def load_grid(name_or_path: str, seeds: Sequence[int] | None = None) -> Grid:
    """Load a grid preset (``reduced``, ``full``) or a YAML file in the same layout.

    Parameters
    ----------
    name_or_path : str
        Preset name from :data:`PRESETS`, or the path of a YAML file.
    seeds : Sequence[int] | None, default=None
        Seeds to use instead of the file's ``seeds``.

    Raises
    ------
    GridError
        When the file is missing or a section is malformed.
    """
    if name_or_path in PRESETS:
        text = resources.files("metals.conf").joinpath(f"report/{name_or_path}.yaml").read_text()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise GridError(
                f"grid {name_or_path!r} not found: use a preset ({', '.join(PRESETS)}) or "
                "the path of a YAML file"
            )
        text = path.read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict) or "main" not in spec or "modes" not in spec:
        raise GridError(f"grid {name_or_path!r} must be a mapping with 'modes' and 'main' entries")

    chosen = tuple(int(seed) for seed in (seeds if seeds else spec.get("seeds", [42])))
    non_iid = spec.get("non_iid") or {}
    grid = Grid(
        name=name_or_path,
        seeds=chosen,
        mode_overrides={mode: tuple(spec["modes"].get(mode, [])) for mode in MODES},
        main=tuple(spec["main"]),
        alphas=tuple(float(alpha) for alpha in non_iid.get("alphas", [])),
        non_iid=tuple(non_iid.get("cells", [])),
    )
    expand_cells(grid, "nsl_kdd")  # validates every cell spec
    return grid


def _cells_of(spec: Mapping[str, Any], dataset: str, partition: Partition) -> list[Cell]:
    """Expand one cell spec ``{mode, strategies, al}`` into its cells."""
    mode = spec.get("mode")
    if mode not in MODES:
        raise GridError(f"invalid mode {mode!r} in grid cell {dict(spec)}: use classical or metals")
    strategies = [parse_strategy(text) for text in spec.get("strategies", ["fedavg"])]
    if mode == "classical":
        return [Cell(dataset, partition, mode, strategy) for strategy in strategies]

    names = spec.get("al", [])
    unknown = [name for name in names if name not in AL_STRATEGIES]
    if not names or unknown:
        raise GridError(
            f"grid cell {dict(spec)} needs 'al' with AL strategies from "
            f"{', '.join(AL_STRATEGIES)}; unknown: {unknown}"
        )
    return [Cell(dataset, partition, mode, strategy, al) for al in names for strategy in strategies]


def main_partition(dataset: str) -> Partition:
    """Return the dataset's main partition: natural device partitions for ton_iot, else iid."""
    return Partition("natural") if dataset == "ton_iot" else Partition("iid")


def expand_cells(grid: Grid, dataset: str) -> list[Cell]:
    """Return every cell of ``grid`` on ``dataset``, main partition first.

    Raises
    ------
    GridError
        On an unknown dataset or a malformed cell spec.
    """
    if dataset not in DATASETS:
        raise GridError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    cells: list[Cell] = []
    for spec in grid.main:
        cells += _cells_of(spec, dataset, main_partition(dataset))
    for alpha in grid.alphas:
        for spec in grid.non_iid:
            cells += _cells_of(spec, dataset, Partition("dirichlet", alpha))
    return cells


def cell_dir(root: Path, cell: Cell) -> Path:
    """Return the folder holding the seeds of ``cell`` under the report's run root."""
    return root / cell.dataset / cell.partition.slug / cell.slug


def expand_runs(
    grid: Grid, dataset: str, root: Path, *, data_dir: str | None = None
) -> list[GridRun]:
    """Return every run of ``grid`` on ``dataset``: each cell once per seed.

    Parameters
    ----------
    grid : Grid
        Loaded grid.
    dataset : str
        Dataset name.
    root : Path
        Folder for the run directories (``<root>/<dataset>/<partition>/<cell>/seed-<s>``).
    data_dir : str | None, default=None
        Folder with the dataset files, passed as ``data_dir``.
    """
    runs = []
    for cell in expand_cells(grid, dataset):
        for seed in grid.seeds:
            overrides = [
                *grid.mode_overrides[cell.mode],
                f"dataset={dataset}",
                *cell.partition.overrides(),
                *cell.strategy.overrides(),
                f"fl.mode={cell.mode}",
                f"seed={seed}",
            ]
            if cell.mode == "metals":
                overrides.append(f"al={cell.al}")
            if data_dir:
                overrides.append(f"data_dir={data_dir}")
            run_dir = cell_dir(root, cell) / f"seed-{seed}"
            runs.append(GridRun(cell, seed, tuple(overrides), run_dir))
    return runs
