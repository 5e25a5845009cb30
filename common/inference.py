"""Load a trained run directory and predict attack classes on traffic files in chunks.

A run directory written by the server contains everything a detector needs:
``model.pt`` (the MLP's state_dict), ``config.json`` (the resolved run
config, from which the hidden layer widths and the dataset come),
``summary.json`` (``format_version`` and ``class_names`` in their fixed
order) and ``preprocessor/`` (the preprocessing fitted on training rows).
Nothing is refitted: traffic is encoded and scaled exactly as in training.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from metals.common.data.preprocess import Preprocessor
from metals.common.data.table import LABEL
from metals.common.model import MLP
from metals.common.runconfig import parse_hidden_layers
from metals.common.traffic import (
    BadRecord,
    TrafficChunk,
    TrafficLayout,
    inspect_columns,
    iter_traffic_chunks,
)

if TYPE_CHECKING:
    # Imported where it is used; see metals.common.data.
    import pandas as pd

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Oldest and newest run-directory format this version of metals reads.
MIN_FORMAT_VERSION = 1
MAX_FORMAT_VERSION = 1

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
PREPROCESSOR_DIR = "preprocessor"

#: Records per forward pass. On a 2-core Xeon (AVX-512, torch 2.13, one thread) the
#: 2 x 90 NSL-KDD MLP took about 0.6 s of CPU per 1M records in batches of 8,192 and
#: 0.8 s in batches of 65,536, with bit-identical probabilities. Smaller batches
#: probably keep more of the activations in the CPU cache.
PREDICT_BATCH = 8192

#: Class names, compared case-insensitively, that mean benign traffic.
BENIGN_NAMES = frozenset({"normal", "benign"})


class RunDirError(ValueError):
    """A run directory that is missing a file, damaged, or of an unsupported format."""


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from ``path``, raising :class:`RunDirError` with the fix."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if (path.parent / "checkpoint").is_dir():
            raise RunDirError(
                f"{path} not found: the run in {path.parent} has not finished; resume it "
                f"with 'metals run hydra.run.dir={path.parent}' and the same overrides, "
                "or pass a finished run to --model"
            ) from None
        raise RunDirError(
            f"{path} not found; --model must be a run directory written by "
            "'metals run' (with model.pt, config.json, summary.json, preprocessor/)"
        ) from None
    except json.JSONDecodeError as error:
        raise RunDirError(f"{path}: invalid JSON ({error}); the run directory is damaged") from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def check_format_version(summary: Mapping[str, Any], path: Path) -> int:
    """Return the run directory's ``format_version`` if this metals can read it.

    Raises
    ------
    RunDirError
        When the field is missing or not an integer, or when the run is older
        than :data:`MIN_FORMAT_VERSION` or newer than :data:`MAX_FORMAT_VERSION`.
        For a newer run the message says to upgrade metals.
    """
    version = summary.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise RunDirError(
            f"{path}: 'format_version' is {version!r}, expected an integer; the run "
            "directory was not written by metals or is damaged"
        )
    if version > MAX_FORMAT_VERSION:
        raise RunDirError(
            f"{path}: run directory format_version {version} is newer than this metals "
            f"reads (up to {MAX_FORMAT_VERSION}); upgrade metals to use this model"
        )
    if version < MIN_FORMAT_VERSION:
        raise RunDirError(
            f"{path}: run directory format_version {version} is older than this metals "
            f"reads (from {MIN_FORMAT_VERSION}); train the model again with this metals"
        )
    return version


def traffic_layout(dataset: str, preprocessor: Preprocessor) -> TrafficLayout:
    """Return the traffic-file columns a model trained on ``dataset`` accepts.

    Parameters
    ----------
    dataset : str
        Dataset name from the run config.
    preprocessor : Preprocessor
        Fitted preprocessing; its numeric and categorical columns are the
        features a file must contain.

    Returns
    -------
    TrafficLayout
        For ``nsl_kdd`` also the column orders of files without a header row
        (41 features, optionally followed by the attack name and difficulty).
        For ``ton_iot`` a device file needs the sensor columns of one device
        type. For ``edge_iiotset`` the identifier and timestamp columns that
        training drops are accepted and not read.
    """
    return replace(_dataset_layout(dataset, preprocessor), dataset=dataset)


def _dataset_layout(dataset: str, preprocessor: Preprocessor) -> TrafficLayout:
    """Return the columns of :func:`traffic_layout`, without the dataset name."""
    features = tuple(preprocessor.numeric + preprocessor.categorical)
    numeric = frozenset(preprocessor.numeric)
    if dataset == "nsl_kdd":
        from metals.common.data import nsl_kdd

        ordered = tuple(nsl_kdd.FEATURES)
        return TrafficLayout(
            features=ordered,
            numeric=numeric,
            optional=(LABEL,),
            ignored=(nsl_kdd.DIFFICULTY,),
            headerless=(ordered, (*ordered, LABEL), (*ordered, LABEL, nsl_kdd.DIFFICULTY)),
            label=LABEL,
        )
    if dataset == "ton_iot":
        from metals.common.data import ton_iot

        # A device file has its own sensors only; training gave rows the other
        # devices' sensors as 0 (numeric) or "n/a" (categorical).
        defaults: dict[str, float | str] = dict.fromkeys(preprocessor.numeric, 0.0)
        defaults.update(dict.fromkeys(preprocessor.categorical, ton_iot.ABSENT))
        device_columns = tuple(
            tuple(sensors + categories)
            for sensors, categories in ton_iot.DEVICES.values()
            if all(name in features for name in sensors + categories)
        )
        return TrafficLayout(
            features=features,
            numeric=numeric,
            optional=(ton_iot.TYPE,),
            ignored=(*ton_iot.DROPPED, ton_iot.BINARY),
            label=ton_iot.TYPE,
            defaults=defaults,
            column_sets=device_columns,
            boolean_numbers=True,
        )
    if dataset == "edge_iiotset":
        from metals.common.data import edge_iiotset

        # NOTE: no test runs this layout on a trained Edge-IIoTset model; the full
        # dataset is not available to the test suite.
        label = edge_iiotset.ATTACK_TYPE
        return TrafficLayout(
            features=features,
            numeric=numeric,
            optional=(label,),
            ignored=tuple(c for c in edge_iiotset.COLUMNS if c not in features and c != label),
            label=label,
            number_spelling=frozenset(preprocessor.categorical),
        )
    return TrafficLayout(features=features, numeric=numeric, optional=(LABEL,), label=LABEL)


@dataclass
class Detector:
    """A trained model with its fitted preprocessing, ready to label traffic.

    Parameters
    ----------
    run_dir : pathlib.Path
        Run directory the detector was loaded from.
    model : MLP
        Classifier in eval mode.
    preprocessor : Preprocessor
        Preprocessing fitted on the training rows.
    class_names : list[str]
        Classes in the order of the model's outputs.
    config : dict[str, Any]
        Resolved run config of the training run.
    format_version : int
        Run-directory format the files were written in.
    """

    run_dir: Path
    model: MLP
    preprocessor: Preprocessor
    class_names: list[str]
    config: dict[str, Any]
    format_version: int
    layout: TrafficLayout = field(init=False)

    def __post_init__(self) -> None:
        self.layout = traffic_layout(str(self.config.get("dataset", "")), self.preprocessor)

    @property
    def num_features(self) -> int:
        """Input width of the model (preprocessed columns)."""
        return self.model.num_features

    @property
    def benign_class(self) -> int | None:
        """Index of the benign class ("normal"/"benign"), or None when no class is benign."""
        for position, name in enumerate(self.class_names):
            if name.lower() in BENIGN_NAMES:
                return position
        return None

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode and scale raw records, float32 (n_records, num_features)."""
        return self.preprocessor.transform_features(frame)

    def predict_proba(self, x: np.ndarray, *, batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """Return class probabilities, float32 (n, num_classes), for ``x`` of shape (n, d)."""
        probabilities = np.empty((len(x), len(self.class_names)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
                probabilities[start : start + batch_size] = torch.softmax(self.model(batch), dim=1)
        return probabilities

    def predict(
        self, x: np.ndarray, *, batch_size: int = PREDICT_BATCH
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the most probable class of each record and its probability.

        Parameters
        ----------
        x : numpy.ndarray
            float32 (n, num_features): preprocessed records.
        batch_size : int, default=PREDICT_BATCH
            Records per forward pass.

        Returns
        -------
        predicted : numpy.ndarray
            int64 (n,): class index; the first of equally probable classes.
        probability : numpy.ndarray
            float32 (n,): softmax probability of that class.
        """
        predicted = np.empty(len(x), dtype=np.int64)
        probability = np.empty(len(x), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
                top = torch.softmax(self.model(batch), dim=1).max(dim=1)
                probability[start : start + batch_size] = top.values.numpy()
                predicted[start : start + batch_size] = top.indices.numpy()
        return predicted, probability


def load_detector(run_dir: str | Path) -> Detector:
    """Load the model, fitted preprocessing and class names of a run directory.

    Parameters
    ----------
    run_dir : str or pathlib.Path
        Folder written by a training run.

    Returns
    -------
    Detector
        The model in eval mode with its preprocessing.

    Raises
    ------
    RunDirError
        When a file is missing or damaged, the format version is not readable
        by this metals, or the weights do not fit the configured model.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} not found; pass the folder 'metals run' wrote")

    summary = read_json(run_dir / SUMMARY_FILE)
    version = check_format_version(summary, run_dir / SUMMARY_FILE)
    config = read_json(run_dir / CONFIG_FILE)
    preprocessor = _load_preprocessor(run_dir / PREPROCESSOR_DIR)

    class_names = summary.get("class_names")
    if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
        raise RunDirError(
            f"{run_dir / SUMMARY_FILE}: 'class_names' is missing or not a list of names"
        )
    if class_names != preprocessor.class_names:
        raise RunDirError(
            f"{run_dir}: summary.json class_names {class_names} differ from the "
            f"preprocessor's {preprocessor.class_names}; the run directory mixes two runs"
        )

    model = _load_model(run_dir, config, len(preprocessor.feature_names), len(class_names))
    logger.info(
        "loaded run %s: dataset %s, %s features, classes %s",
        run_dir,
        config.get("dataset"),
        model.num_features,
        class_names,
    )
    return Detector(run_dir, model, preprocessor, list(class_names), config, version)


def _load_preprocessor(directory: Path) -> Preprocessor:
    """Load the fitted preprocessor, turning its errors into :class:`RunDirError`."""
    from metals.common.data.errors import DataError

    try:
        return Preprocessor.load(directory)
    except DataError as error:
        raise RunDirError(f"{directory}: cannot load the fitted preprocessor: {error}") from None


def _load_model(
    run_dir: Path, config: Mapping[str, Any], num_features: int, num_classes: int
) -> MLP:
    """Rebuild the MLP from the run config and load ``model.pt`` into it."""
    path = run_dir / MODEL_FILE
    if not path.is_file():
        raise RunDirError(f"{path} not found; the run has not finished or the folder is damaged")
    try:
        hidden = parse_hidden_layers(str(config.get("hidden-layers", "")))
    except ValueError:
        raise RunDirError(
            f"{run_dir / CONFIG_FILE}: invalid 'hidden-layers' "
            f"{config.get('hidden-layers')!r}; expected widths such as '90,90'"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as error:
        raise RunDirError(f"{path}: cannot read the weights ({error})") from None

    model = MLP(num_features, num_classes, hidden)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise RunDirError(
            f"{path}: weights do not fit an MLP with {num_features} inputs, hidden layers "
            f"{list(hidden)} and {num_classes} classes ({error})"
        ) from None
    model.eval()
    return model


@dataclass
class ChunkPrediction:
    """Predictions for one chunk of a traffic file.

    Parameters
    ----------
    lines : numpy.ndarray
        int64 (n,): 1-based line number of each predicted record.
    predicted : numpy.ndarray
        int64 (n,): class index into ``Detector.class_names``.
    probability : numpy.ndarray
        float32 (n,): probability of the predicted class.
    true : numpy.ndarray or None
        int64 (n,): class index of the file's own label, when the file has one.
    bad : list[BadRecord]
        Records of the chunk that could not be read, with line numbers.
    unseen : dict[str, tuple[int, list[str]]]
        Per categorical column with values the training rows never had: the
        number of such records and their distinct values. Those records are
        predicted with an all-zero block for that column.
    """

    lines: np.ndarray
    predicted: np.ndarray
    probability: np.ndarray
    true: np.ndarray | None
    bad: list[BadRecord]
    unseen: dict[str, tuple[int, list[str]]] = field(default_factory=dict)


def detect_chunks(
    detector: Detector, path: str | Path, *, chunk_size: int = 100_000
) -> Iterator[ChunkPrediction]:
    """Predict every readable record of a traffic file, one chunk at a time.

    Parameters
    ----------
    detector : Detector
        Loaded run directory.
    path : str or pathlib.Path
        Traffic CSV in the layout of the dataset the model was trained on.
    chunk_size : int, default=100000
        Lines per chunk; peak memory grows with it, not with the file. Up to
        five chunks are in memory at once: one per pipeline stage and one
        waiting between stages.

    Yields
    ------
    ChunkPrediction
        Predicted class and probability per record, with line numbers.
        Until the iterator is exhausted or closed, torch runs on one thread
        fewer than before (at least one).

    Raises
    ------
    metals.common.traffic.TrafficFileError
        When the file is missing, empty, or has unknown or missing columns.
    """
    columns = inspect_columns(path, detector.layout)
    chunks = iter_traffic_chunks(path, detector.layout, chunk_size=chunk_size, columns=columns)
    # Three stages on their own threads: parsing (pyarrow), encoding (numpy) and
    # the forward pass (torch) all release the GIL, so they share the cores.
    encoded = prefetch(_encode_chunks(detector, prefetch(chunks), columns.read))
    # Leave one core to the parsing and encoding threads. On 2 cores a forward pass
    # on 2 torch threads used about 1.8x the CPU time of 1 thread, time those need.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    try:
        for chunk, x, true, unseen in encoded:
            predicted, probability = detector.predict(x)
            yield ChunkPrediction(
                lines=chunk.lines,
                predicted=predicted,
                probability=probability,
                true=true,
                bad=chunk.bad,
                unseen=unseen,
            )
    finally:
        torch.set_num_threads(threads)


def _encode_chunks(
    detector: Detector, chunks: Iterator[TrafficChunk], read: tuple[str, ...]
) -> Iterator[tuple[TrafficChunk, np.ndarray, np.ndarray | None, dict[str, tuple[int, list[str]]]]]:
    """Yield each chunk with its model input, its labels' class indices and unseen categories."""
    label = detector.layout.label
    has_label = bool(label) and label in read
    for chunk in chunks:
        x = detector.features(chunk.frame)
        true = None
        if has_label and len(chunk.frame):
            true = _true_classes(detector, chunk.frame[label], first_line=int(chunk.lines[0]))
            has_label = true is not None
        yield chunk, x, true, unseen_categories(detector.preprocessor, chunk.frame)


def unseen_categories(
    preprocessor: Preprocessor, frame: pd.DataFrame
) -> dict[str, tuple[int, list[str]]]:
    """Count the records whose categorical value the training rows never had.

    Parameters
    ----------
    preprocessor : Preprocessor
        Fitted preprocessing; ``categories_`` holds the training categories.
    frame : pandas.DataFrame
        Records with every categorical feature column.

    Returns
    -------
    dict[str, tuple[int, list[str]]]
        Per column with such values: the number of records and the distinct
        unseen values in order of first appearance. Columns without any are left out.
    """
    import pandas as pd

    counts: dict[str, tuple[int, list[str]]] = {}
    categories = preprocessor.categories_ or {}
    for column in preprocessor.categorical:
        known = pd.Index(categories.get(column, []))
        series = frame[column]
        if isinstance(series.dtype, pd.CategoricalDtype):
            # Look up the distinct values once, as the one-hot encoding does. A
            # missing value has code -1, which picks the appended last entry, and
            # it gets an all-zero block too.
            distinct = np.append(np.asarray(series.cat.categories.astype(str)), "<missing>")
            found = np.append(known.get_indexer(distinct[:-1]) >= 0, False)
            codes = series.cat.codes.to_numpy()
            unseen = ~found[codes]
            values = distinct[codes]
        else:
            values = series.astype(str).to_numpy()
            unseen = known.get_indexer(values) < 0
        count = int(np.count_nonzero(unseen))
        if count:
            counts[column] = (count, [str(value) for value in pd.unique(values[unseen])])
    return counts


def prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield ``items`` while a background thread already produces the next ones.

    Work that releases the GIL (pyarrow parsing, numpy encoding) then
    overlaps with the consumer's work. At most ``depth`` items wait in the
    queue, so memory grows by ``depth`` items. An exception in the producer
    is raised again in the consumer, and closing the consumer stops the
    producer and closes ``items``.

    Parameters
    ----------
    items : Iterator[T]
        Producer, run in a daemon thread.
    depth : int, default=1
        Items produced ahead of the consumer.
    """
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(("end", None))
        except BaseException as error:  # raised again in the consumer
            slots.put(("error", error))
        finally:
            # A stopped generator stops its own stages too (a nested prefetch).
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="metals-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        # Unblock a producer waiting on a full queue, then wait for it to finish.
        while worker.is_alive():
            try:
                slots.get(timeout=0.1)
            except queue.Empty:
                pass
        worker.join()


def _true_classes(detector: Detector, labels: pd.Series, *, first_line: int) -> np.ndarray | None:
    """Map the file's own labels to class indices, or None when a label has no class."""
    from metals.common.data.errors import DataError

    try:
        return detector.preprocessor.encode_labels(labels)
    except DataError as error:
        logger.warning(
            "the file's labels from line %s on are not scored against the model: %s",
            first_line,
            error,
        )
        return None
