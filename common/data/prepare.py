"""Prepare a dataset into scaled train / validation / test arrays, with a disk cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metals.common.data import cache, edge_iiotset, nsl_kdd, ton_iot
from metals.common.data.errors import DataError
from metals.common.data.paths import default_cache_dir, resolve_data_dir
from metals.common.data.preprocess import Preprocessor
from metals.common.data.split import drop_duplicates, stratified_split
from metals.common.data.table import GROUP, LABEL, RawTable

logger = logging.getLogger(__name__)

# Bump when a change to loading or preprocessing changes the prepared arrays,
# so that old cache entries are not reused.
PREPARE_VERSION = 2


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, validate and load one dataset."""

    files: Callable[[Path], list[Path]]
    load: Callable[[Path, str], RawTable]
    check_labels: Callable[[str], object]


def _registry() -> dict[str, DatasetSpec]:
    """Return the datasets known by name."""
    specs = {
        "nsl_kdd": DatasetSpec(nsl_kdd.input_files, nsl_kdd.load_nsl_kdd, nsl_kdd.label_mapping),
        "edge_iiotset": DatasetSpec(
            edge_iiotset.input_files, edge_iiotset.load_edge_iiotset, edge_iiotset.label_mapping
        ),
        "ton_iot": DatasetSpec(ton_iot.input_files, ton_iot.load_ton_iot, ton_iot.label_mapping),
    }
    return specs


@dataclass(frozen=True)
class PreparedData:
    """A dataset split, encoded and scaled, ready for partitioning.

    Attributes
    ----------
    name : str
        ``"nsl_kdd"``, ``"edge_iiotset"`` or ``"ton_iot"``.
    x_train, x_val, x_test : numpy.ndarray
        float32, shape (n_rows, n_features), MinMax-scaled with the training
        range; validation and test values are clipped to [0, 1].
    y_train, y_val, y_test : numpy.ndarray
        int64, shape (n_rows,), index into ``class_names``. The test set is
        the global held-out set (for NSL-KDD the official KDDTest+ rows).
    groups_train : numpy.ndarray | None
        Device type per training row, shape (n_train,), for ``ton_iot``;
        ``None`` for the other datasets.
    feature_names : list[str]
        Column names of the x arrays.
    class_names : list[str]
        Class names in label order.
    preprocessor : Preprocessor
        Fitted on the training rows; transforms new rows the same way.
    report : dict[str, object]
        Rows read, dropped and deduplicated, class counts per split and
        clipped values, for the dataset summary.
    cache_path : Path | None
        Cache entry the arrays came from or were written to.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    groups_train: np.ndarray | None
    feature_names: list[str]
    class_names: list[str]
    preprocessor: Preprocessor
    report: dict[str, object] = field(default_factory=dict)
    cache_path: Path | None = None


def dataset_names() -> list[str]:
    """Return the names ``prepare_dataset`` accepts."""
    return sorted(_registry())


def prepare_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    labels: str = "default",
    seed: int = 42,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    cache_dir: str | Path | None = None,
) -> PreparedData:
    """Load, deduplicate, split, encode and scale a dataset, using the cache.

    Steps: parse and clean the files, remove duplicate rows, split stratified
    and seeded (when the dataset has an official test file, only validation
    rows are split off the training file), fit the one-hot categories and the
    MinMax range on training rows, transform every split. The result is
    stored under ``cache_dir`` keyed by the input files and these settings;
    a later call with the same files and settings loads it memory-mapped.

    Parameters
    ----------
    name : str
        Dataset name, one of :func:`dataset_names`.
    data_dir : str | Path | None, default=None
        Folder with the files; see :func:`resolve_data_dir`.
    labels : str, default="default"
        Label grouping of the dataset (``"binary"``, ``"family"``, ``"6"``, ...).
    seed : int, default=42
        Seed of the splits.
    val_fraction : float, default=0.1
        Share of the rows held out for validation.
    test_fraction : float, default=0.2
        Share held out as global test set; ignored when the dataset has an
        official test file.
    cache_dir : str | Path | None, default=None
        Cache folder; ``None`` uses the user cache directory.

    Returns
    -------
    PreparedData

    Raises
    ------
    DataError
        On an unknown dataset or label grouping, a missing or bad file.
    """
    registry = _registry()
    if name not in registry:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(registry))}")
    spec = registry[name]
    spec.check_labels(labels)
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise DataError(f"invalid value {value!r} for {key}: must be in [0, 1)")

    directory = resolve_data_dir(data_dir)
    files = spec.files(directory)
    settings = {
        "dataset": name,
        "labels": labels,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "version": PREPARE_VERSION,
    }
    root = Path(cache_dir) if cache_dir not in (None, "") else default_cache_dir()
    entry = root / name / cache.cache_key(files, settings)

    cached = cache.load_entry(entry)
    if cached is not None:
        arrays, meta = cached
        logger.info("loaded prepared %s from cache %s", name, entry)
        return _from_cache(name, arrays, meta, entry)

    started = time.perf_counter()
    raw = spec.load(directory, labels)
    entry_arrays = _EntryArrays(entry)
    try:
        prepared = _prepare_raw(
            raw,
            seed=seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            allocate=entry_arrays.allocate,
        )
        logger.info("prepared %s in %.1f s", name, time.perf_counter() - started)
        committed = entry_arrays.commit(prepared)
    finally:
        entry_arrays.discard()
    if not committed:
        return prepared
    return PreparedData(**{**prepared.__dict__, "cache_path": entry})


def prepare_from_config(config: Mapping[str, Any], *, seed: int | None = None) -> PreparedData:
    """Prepare the dataset a run config names, with its labels, seed and split fractions.

    Parameters
    ----------
    config : Mapping[str, Any]
        Validated run config (kebab-case keys).
    seed : int | None, default=None
        Seed of the split in place of the config's ``seed``.
    """
    return prepare_dataset(
        str(config["dataset"]),
        str(config["data-dir"]) or None,
        labels=str(config["labels"]),
        seed=int(config["seed"]) if seed is None else seed,
        val_fraction=float(config["val-fraction"]),
        test_fraction=float(config["test-fraction"]),
    )


def _prepare_raw(
    raw: RawTable,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    allocate: Callable[[str, tuple[int, int]], np.ndarray] | None = None,
) -> PreparedData:
    """Deduplicate, split, fit and transform a loaded table.

    ``allocate(name, shape)``, if given, returns the float32 array that
    receives ``x_train``, ``x_val`` or ``x_test``.
    """
    preprocessor = Preprocessor(raw.numeric, raw.categorical, raw.label_map, raw.class_names)
    features = raw.numeric + raw.categorical
    has_groups = GROUP in raw.train.columns
    key_columns = features + [LABEL] + ([GROUP] if has_groups else [])

    # Deduplicate before splitting so that no record sits in two splits.
    train_frame, removed = drop_duplicates(raw.train, key_columns)
    duplicates = {"train": removed}
    y_all = preprocessor.encode_labels(train_frame[LABEL])

    # Splits are row positions into the frames, so no split is copied as a frame.
    test_rows: np.ndarray | None
    if raw.test is not None:
        train_rows, val_rows = stratified_split(y_all, [val_fraction], seed=seed)
        test_frame, removed_test = drop_duplicates(raw.test, features + [LABEL])
        duplicates["test"] = removed_test
        test_rows = None
    else:
        train_rows, val_rows, test_rows = stratified_split(
            y_all, [val_fraction, test_fraction], seed=seed
        )
        test_frame = train_frame
    if len(train_rows) == 0:
        raise DataError(f"dataset {raw.name!r} has no training rows left after cleaning")
    present = np.unique(y_all[train_rows])
    if len(present) < len(preprocessor.class_names):
        logger.warning(
            "%s: the training rows contain %s of %s classes (%s); a model trained on them "
            "never predicts the others",
            raw.name,
            len(present),
            len(preprocessor.class_names),
            ", ".join(preprocessor.class_names[index] for index in present),
        )

    preprocessor.fit(train_frame, train_rows)
    n_features = len(preprocessor.feature_names)

    def output(name: str, n_rows: int) -> np.ndarray | None:
        return None if allocate is None else allocate(name, (n_rows, n_features))

    n_test = len(test_frame) if test_rows is None else len(test_rows)
    x_train, y_train, _ = preprocessor.transform_counted(
        train_frame, train_rows, output("x_train", len(train_rows))
    )
    x_val, y_val, clipped_val = preprocessor.transform_counted(
        train_frame, val_rows, output("x_val", len(val_rows))
    )
    x_test, y_test, clipped_test = preprocessor.transform_counted(
        test_frame, test_rows, output("x_test", n_test)
    )
    for split, count, rows in (
        ("validation", clipped_val, len(y_val)),
        ("test", clipped_test, len(y_test)),
    ):
        if count:
            logger.info(
                "%s: clipped %s %s value(s) outside the training range to [0, 1] (%s rows)",
                raw.name,
                count,
                split,
                rows,
            )

    groups = train_frame[GROUP].to_numpy(dtype=str)[train_rows] if has_groups else None
    report = raw.report.to_dict()
    report["duplicates_removed"] = duplicates
    report["clipped"] = {"val": clipped_val, "test": clipped_test}
    report["class_counts"] = {
        split: np.bincount(y, minlength=len(raw.class_names)).tolist()
        for split, y in (("train", y_train), ("val", y_val), ("test", y_test))
    }
    return PreparedData(
        name=raw.name,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        groups_train=groups,
        feature_names=preprocessor.feature_names,
        class_names=list(raw.class_names),
        preprocessor=preprocessor,
        report=report,
    )


_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


class _EntryArrays:
    """The x arrays of a new cache entry, written in place into its files.

    The transform writes each x array straight into its memory-mapped
    ``.npy`` file, so the entry needs no second copy of the largest arrays.
    When the entry cannot be written (a read-only folder, a full disk),
    the arrays are allocated in memory and the data is not cached.
    """

    def __init__(self, entry: Path) -> None:
        self.entry = entry
        self.writer: cache.EntryWriter | None = None
        try:
            self.writer = cache.EntryWriter(entry)
        except OSError as error:
            self._give_up(error)

    def allocate(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        """Return a float32 array of ``shape``, in the entry's file ``NAME.npy`` if possible."""
        if self.writer is not None:
            try:
                return self.writer.new_array(name, shape, np.float32)
            except OSError as error:
                self._give_up(error)
        return np.empty(shape, dtype=np.float32)

    def commit(self, prepared: PreparedData) -> bool:
        """Store the other arrays, names, report and preprocessor, and return True on success.

        The x arrays of a committed entry are made read-only, as they are
        on a later load from the cache, because a write would change the entry.
        """
        if self.writer is None:
            return False
        meta = {
            "name": prepared.name,
            "feature_names": prepared.feature_names,
            "class_names": prepared.class_names,
            "report": prepared.report,
        }
        try:
            for key in ("y_train", "y_val", "y_test"):
                self.writer.save(key, getattr(prepared, key))
            if prepared.groups_train is not None:
                self.writer.save("groups_train", prepared.groups_train)
            self.writer.commit(meta, extra_writer=prepared.preprocessor.save)
        except OSError as error:
            self._give_up(error)
            return False
        for key in ("x_train", "x_val", "x_test"):
            getattr(prepared, key).flags.writeable = False
        return True

    def discard(self) -> None:
        """Remove the temporary files of an entry that was not committed."""
        if self.writer is not None:
            self.writer.discard()

    def _give_up(self, error: OSError) -> None:
        """Log why the entry is not written and drop its temporary files."""
        logger.warning("could not write the cache entry %s: %s", self.entry, error)
        self.discard()
        self.writer = None


def _from_cache(
    name: str, arrays: dict[str, np.ndarray], meta: dict[str, object], entry: Path
) -> PreparedData:
    """Build a PreparedData from a loaded cache entry."""
    return PreparedData(
        name=name,
        **{key: arrays[key] for key in _ARRAYS},
        groups_train=arrays.get("groups_train"),
        feature_names=list(meta["feature_names"]),
        class_names=list(meta["class_names"]),
        preprocessor=Preprocessor.load(entry),
        report=dict(meta["report"]),
        cache_path=entry,
    )
