from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metals.common.data import DataError, prepare_dataset
from metals.common.data.nsl_kdd import FAMILIES, read_nsl_kdd_file
from metals.common.data.table import LoadReport

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """Return the folder of real datasets, or skip the test when it is absent."""
    from_env = os.environ.get("METALS_DATA_DIR", "")
    candidate = Path(from_env) if from_env else REPO_ROOT.parent / "shared" / "data"
    if not (candidate / "nsl-kdd" / "KDDTest+.txt").is_file():
        pytest.skip(f"real datasets not found in {candidate}; set METALS_DATA_DIR")
    return candidate


def copy_head(source: Path, target: Path, lines: int) -> Path:
    """Write the first ``lines`` lines of ``source`` to ``target`` and return it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("r", encoding="utf-8", newline="") as handle:
        head = [next(handle) for _ in range(lines)]
    target.write_text("".join(head), encoding="utf-8", newline="")
    return target


@pytest.fixture()
def small_nsl(tmp_path: Path) -> Path:
    """A data folder with the first 3000 training and 2000 test rows of the real files."""
    real = shared_data_dir() / "nsl-kdd"
    folder = tmp_path / "data"
    copy_head(real / "KDDTrain+_20Percent.txt", folder / "KDDTrain+_20Percent.txt", 3000)
    copy_head(real / "KDDTest+.txt", folder / "KDDTest+.txt", 2000)
    return folder


def test_real_files_prepare(tmp_path: Path) -> None:
    # Prepare
    data_dir = shared_data_dir()

    # Execute
    prepared = prepare_dataset("nsl_kdd", data_dir, cache_dir=tmp_path / "cache")

    # Assert
    assert prepared.class_names == ["normal", "DoS", "Probe", "R2L", "U2R"]
    assert prepared.report["rows_read"] == 25192 + 22544
    assert len(prepared.y_train) + len(prepared.y_val) == 25192
    assert len(prepared.y_test) == 22544
    assert prepared.x_train.dtype == np.float32
    assert prepared.x_train.shape[1] == len(prepared.feature_names)
    assert prepared.x_train.min() >= 0.0
    assert prepared.x_train.max() <= 1.0
    assert prepared.x_test.min() >= 0.0
    assert prepared.x_test.max() <= 1.0
    assert set(np.unique(prepared.y_test)) == {0, 1, 2, 3, 4}
    assert prepared.groups_train is None


def test_every_attack_name_mapped() -> None:
    # Prepare
    folder = shared_data_dir() / "nsl-kdd"
    report = LoadReport()

    # Execute
    names = set()
    for file in ("KDDTrain+_20Percent.txt", "KDDTest+.txt"):
        names |= set(read_nsl_kdd_file(folder / file, report)["label"])

    # Assert
    assert names <= set(FAMILIES)
    assert set(FAMILIES.values()) == {"normal", "DoS", "Probe", "R2L", "U2R"}


def test_moved_first_row_is_a_record() -> None:
    # Prepare
    path = shared_data_dir() / "nsl-kdd" / "KDDTrain+_20Percent.txt"
    report = LoadReport()

    # Execute
    frame = read_nsl_kdd_file(path, report)

    # Assert
    assert len(frame) == 25192
    assert frame["label"].iloc[0] == "teardrop"
    assert report.notes == []


def test_header_mirror_gives_same_arrays(small_nsl: Path, tmp_path: Path) -> None:
    # Prepare
    plain = prepare_dataset("nsl_kdd", small_nsl, cache_dir=tmp_path / "c1")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    header = (
        "duration,protocol_type,service,flag,"
        + ",".join(f"f{i}" for i in range(37))
        + ",class,difficulty\n"
    )
    for file in ("KDDTrain+_20Percent.txt", "KDDTest+.txt"):
        text = (small_nsl / file).read_text(encoding="utf-8")
        (mirror / file).write_text(header + text, encoding="utf-8")

    # Execute
    with_header = prepare_dataset("nsl_kdd", mirror, cache_dir=tmp_path / "c2")

    # Assert
    assert with_header.report["rows_read"] == plain.report["rows_read"]
    assert np.array_equal(with_header.x_train, plain.x_train)
    assert np.array_equal(with_header.y_test, plain.y_test)


def test_unseen_test_category_encoded_as_zeros(small_nsl: Path, tmp_path: Path) -> None:
    # Prepare
    test_file = small_nsl / "KDDTest+.txt"
    lines = test_file.read_text(encoding="utf-8").splitlines(keepends=True)
    fields = lines[0].split(",")
    fields[2] = "never_seen_service"
    lines[0] = ",".join(fields)
    test_file.write_text("".join(lines), encoding="utf-8")

    # Execute
    prepared = prepare_dataset("nsl_kdd", small_nsl, cache_dir=tmp_path / "cache")

    # Assert
    service = [i for i, name in enumerate(prepared.feature_names) if name.startswith("service=")]
    assert len(prepared.y_test) == 2000
    assert prepared.x_test[0, service].sum() == 0.0
    assert prepared.x_test[1, service].sum() == 1.0


def test_binary_labels(small_nsl: Path, tmp_path: Path) -> None:
    # Execute
    prepared = prepare_dataset("nsl_kdd", small_nsl, labels="binary", cache_dir=tmp_path)

    # Assert
    assert prepared.class_names == ["normal", "attack"]
    assert set(np.unique(prepared.y_train)) == {0, 1}


def test_cache_reload_matches(small_nsl: Path, tmp_path: Path) -> None:
    # Prepare
    first = prepare_dataset("nsl_kdd", small_nsl, cache_dir=tmp_path)

    # Execute
    second = prepare_dataset("nsl_kdd", small_nsl, cache_dir=tmp_path)

    # Assert
    assert second.cache_path == first.cache_path
    assert isinstance(second.x_train, np.memmap)
    assert np.array_equal(second.x_train, first.x_train)
    assert np.array_equal(second.y_val, first.y_val)
    assert second.feature_names == first.feature_names
    assert second.report == first.report
    x, y = second.preprocessor.transform(
        read_nsl_kdd_file(small_nsl / "KDDTest+.txt", LoadReport())
    )
    assert np.array_equal(x, first.x_test)


def test_cache_key_follows_file_and_settings(small_nsl: Path, tmp_path: Path) -> None:
    # Prepare
    first = prepare_dataset("nsl_kdd", small_nsl, cache_dir=tmp_path)

    # Execute
    other_seed = prepare_dataset("nsl_kdd", small_nsl, seed=7, cache_dir=tmp_path)
    with (small_nsl / "KDDTest+.txt").open("a", encoding="utf-8") as handle:
        handle.write(
            "0,tcp,http,SF,1,1,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,1,1,0,0,0,0,1,0,0,1,1,1,0,0,0,"
            "0,0,0,0,normal,21\n"
        )
    changed_file = prepare_dataset("nsl_kdd", small_nsl, cache_dir=tmp_path)

    # Assert
    assert other_seed.cache_path != first.cache_path
    assert changed_file.cache_path != first.cache_path
    assert len(changed_file.y_test) == len(first.y_test) + 1


def _write(folder: Path, train: str, test: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "KDDTrain+_20Percent.txt").write_text(train, encoding="utf-8")
    if test is not None:
        (folder / "KDDTest+.txt").write_text(test, encoding="utf-8")
    return folder


def _bad_cases(real_train: str) -> dict[str, tuple[str, str]]:
    lines = real_train.splitlines(keepends=True)
    unknown = lines[1].replace(",normal,", ",made_up_attack,")
    short = lines[2].split(",")[:20]
    nan_column = "".join(",".join(["", *line.split(",")[1:]]) for line in lines[:50])
    return {
        "empty file": ("", "empty"),
        "wrong columns": ("1,2,3,4\n" * 5, "fields"),
        "unknown label": ("".join(lines[:5]) + unknown, "made_up_attack"),
        "truncated last line": ("".join(lines[:5]) + ",".join(short), "line 6"),
        "all-NaN column": (nan_column, "duration"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty file",
        "wrong columns",
        "unknown label",
        "truncated last line",
        "all-NaN column",
    ],
)
def test_bad_train_file_rejected(case: str, small_nsl: Path, tmp_path: Path) -> None:
    # Prepare
    real_train = (small_nsl / "KDDTrain+_20Percent.txt").read_text(encoding="utf-8")
    content, expected = _bad_cases(real_train)[case]
    (small_nsl / "KDDTrain+_20Percent.txt").write_text(content, encoding="utf-8")
    cache_dir = tmp_path / "cache"

    # Execute
    with pytest.raises(DataError) as error:
        prepare_dataset("nsl_kdd", small_nsl, cache_dir=cache_dir)

    # Assert
    assert "KDDTrain+_20Percent.txt" in str(error.value)
    assert expected in str(error.value)
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.npy"))


def test_text_in_numeric_column_rejected(small_nsl: Path, tmp_path: Path) -> None:
    # Prepare
    path = small_nsl / "KDDTest+.txt"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    fields = lines[3].split(",")
    fields[4] = "lots"
    lines[3] = ",".join(fields)
    path.write_text("".join(lines), encoding="utf-8")

    # Execute
    with pytest.raises(DataError) as error:
        prepare_dataset("nsl_kdd", small_nsl, cache_dir=tmp_path)

    # Assert
    assert "line 4" in str(error.value)
    assert "src_bytes" in str(error.value)
    assert "'lots'" in str(error.value)


def test_missing_file_names_file_and_source(tmp_path: Path) -> None:
    # Prepare
    folder = tmp_path / "empty"
    folder.mkdir()

    # Execute
    with pytest.raises(DataError) as error:
        prepare_dataset("nsl_kdd", folder, cache_dir=tmp_path / "cache")

    # Assert
    assert "KDDTrain+.txt" in str(error.value)
    assert str(folder) in str(error.value)
    assert "unb.ca" in str(error.value)


def test_unknown_grouping_rejected(small_nsl: Path, tmp_path: Path) -> None:
    # Execute
    with pytest.raises(DataError) as error:
        prepare_dataset("nsl_kdd", small_nsl, labels="6", cache_dir=tmp_path)

    # Assert
    assert "'6'" in str(error.value)
