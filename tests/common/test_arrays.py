"""Reading Array values without numpy.load."""

import io

import numpy as np
import pytest
from flwr.app import Array

from metals.common.arrays import array_values

VALUES = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.linspace(-1, 1, 5),
    np.array([3, -7, 11], dtype=np.int64),
    np.array(2.5, dtype=np.float32),
    np.zeros((0, 4), dtype=np.float32),
    np.arange(6, dtype=np.uint8).reshape(2, 3),
]


@pytest.mark.parametrize("values", VALUES, ids=lambda v: f"{v.dtype}-{v.shape}")
def test_array_values_match_numpy_load(values):
    # Prepare
    array = Array(values)

    # Execute
    read = array_values(array)

    # Assert
    np.testing.assert_array_equal(read, array.numpy())
    assert read.dtype == values.dtype
    assert read.shape == values.shape


def _raw_array(values: np.ndarray, *, dtype: str | None = None, shape=None) -> Array:
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return Array(
        dtype=dtype or str(values.dtype),
        shape=tuple(values.shape if shape is None else shape),
        stype="numpy.ndarray",
        data=buffer.getvalue(),
    )


@pytest.mark.parametrize(
    "array",
    [
        _raw_array(np.asfortranarray(np.arange(6.0).reshape(2, 3))),
        _raw_array(np.arange(4, dtype=">f4")),
        _raw_array(np.arange(4, dtype=np.float32), dtype="float64"),
    ],
    ids=["fortran-order", "big-endian", "dtype-mismatch"],
)
def test_array_values_other_layouts_fall_back(array):
    # Execute
    read = array_values(array)

    # Assert: the same values as numpy.load reads.
    np.testing.assert_array_equal(read, array.numpy())


def test_array_values_wrong_shape_falls_back():
    # Prepare: the Array's shape field disagrees with its bytes.
    array = _raw_array(np.arange(6, dtype=np.float32), shape=(4,))

    # Execute
    read = array_values(array)

    # Assert: the bytes' own shape wins, as with numpy.load.
    assert read.shape == (6,)
