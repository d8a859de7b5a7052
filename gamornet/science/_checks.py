"""Argument checks shared by the science modules: probabilities, labels, bins, purities, output paths.

:mod:`gamornet.science.classify`, :mod:`gamornet.science.calibration`,
:mod:`gamornet.science.thresholds`, :mod:`gamornet.science.plots`,
:mod:`gamornet.science.uncertainty` and ``gamornet calibrate`` check their
arguments here, so that one kind of argument is checked, and its error worded,
in one place. Every check raises ``TypeError``, ``ValueError`` or
``FileNotFoundError`` with a message that says what was expected and what was
received.

Backend-neutral and numpy only: imports neither TensorFlow nor tflearn.
"""

import numbers
import os

import numpy as np

from gamornet.presets import CLASS_NAMES

__all__ = [
    "check_class_labels",
    "check_n_bins",
    "check_output_path",
    "check_png_path",
    "check_probabilities",
    "check_probability_set",
    "check_purity",
    "check_temperature",
    "class_indices",
]

# Rows of probabilities must sum to 1 within this tolerance (float32 softmax
# outputs sum to 1 within ~1e-6; tables printed with 3 decimals within ~2e-3).
_SUM_TOLERANCE = 5e-3


def check_probabilities(probabilities):
    """Rows [p_disk, p_indet, p_bulge] as a 2-d array: float32 for float32 input, else float64.

    Parameters
    ----------
    probabilities : array_like of shape (n, 3) or (3,)

    Returns
    -------
    numpy.ndarray of shape (n, 3)
        A single row of shape (3,) becomes shape (1, 3).

    Raises
    ------
    TypeError
        Values that are not real numbers.
    ValueError
        Another shape, or a row that is not finite, not in [0, 1] or does not
        sum to 1.
    """
    if not isinstance(probabilities, np.ndarray):
        probabilities = np.asarray(probabilities)
    if not (np.issubdtype(probabilities.dtype, np.floating) or np.issubdtype(probabilities.dtype, np.integer)):
        raise TypeError(f"probabilities must be real numbers. Received dtype {probabilities.dtype}")
    if probabilities.ndim not in (1, 2) or probabilities.shape[-1] != 3:
        raise ValueError(
            "probabilities must have shape (n, 3) or (3,): [p_disk, p_indet, p_bulge] per galaxy. "
            f"Received an array of shape {probabilities.shape}"
        )
    dtype = np.float32 if probabilities.dtype == np.float32 else np.float64
    values = np.atleast_2d(probabilities.astype(dtype, copy=False))
    bad = ~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1) | (values > 1).any(axis=1)
    bad |= np.abs(values.sum(axis=1, dtype=np.float64) - 1.0) > _SUM_TOLERANCE
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            "probabilities must be finite, between 0 and 1, and each row [p_disk, p_indet, p_bulge] must sum "
            f"to 1. Received row {row}: {values[row].tolist()}"
        )
    return values


def check_probability_set(probabilities, labels=None):
    """(values (n, 3) of the probabilities' precision, class indices (n,) or None).

    Parameters
    ----------
    probabilities : array_like of shape (n, 3)
        A non-empty set of galaxies (a single row of shape (3,) is refused).
    labels : array_like of shape (n, 3) or (n,), optional
        Their true classes, as :func:`check_class_labels` takes them.

    Returns
    -------
    tuple
        The probabilities as :func:`check_probabilities` returns them, and
        the labels' class indices (None without labels).

    Raises
    ------
    TypeError, ValueError
        As :func:`check_probabilities` and :func:`check_class_labels`; or an
        empty set.
    """
    shape = np.shape(probabilities)
    if len(shape) != 2 or shape[1] != 3:
        raise ValueError(
            "probabilities must have shape (n, 3): [p_disk, p_indet, p_bulge] per galaxy. "
            f"Received an array of shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError("the set of galaxies is empty: probabilities has shape (0, 3); give at least one galaxy")
    values = check_probabilities(probabilities)
    if labels is None:
        return values, None
    return values, check_class_labels(labels, len(values))


def check_class_labels(labels, n):
    """Class indices (0 disk, 1 indeterminate, 2 bulge) from one-hot rows, indices or names.

    Parameters
    ----------
    labels : array_like of shape (n, 3) or (n,)
        One-hot rows (disk [1,0,0], indeterminate [0,1,0], bulge [0,0,1]),
        class indices (0, 1, 2) or class names ('disk', 'indeterminate',
        'bulge').
    n : int
        The number of galaxies they must describe.

    Returns
    -------
    numpy.ndarray of intp, shape (n,)

    Raises
    ------
    ValueError
        Another shape or length, or a label that is none of the three classes.
    """
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 3:
        if array.dtype.kind not in "biuf" or not np.isin(array, (0, 1)).all() or not (array.sum(axis=1) == 1).all():
            raise ValueError(
                "one-hot labels must hold one 1 and two 0s per galaxy (disk [1,0,0], indeterminate [0,1,0], "
                f"bulge [0,0,1]). Received rows such as {array[0].tolist()}"
            )
        indices = np.argmax(array, axis=1)
    elif array.ndim == 1:
        indices = class_indices(array)
    else:
        raise ValueError(
            "labels must be one-hot rows of shape (n, 3) or class indices of shape (n,) (0 disk, "
            f"1 indeterminate, 2 bulge). Received an array of shape {array.shape}"
        )
    if len(indices) != n:
        raise ValueError(
            f"labels and probabilities must describe the same galaxies: there are {n} rows of probabilities "
            f"but {len(indices)} labels"
        )
    return indices.astype(np.intp)


def class_indices(array):
    """Class indices (0, 1, 2) from a 1-d array of class indices or class names (case and spaces ignored).

    Parameters
    ----------
    array : numpy.ndarray of shape (n,)

    Returns
    -------
    numpy.ndarray of intp, shape (n,)

    Raises
    ------
    ValueError
        A name or index that is none of the three classes.
    """
    if array.dtype.kind in "US" or array.dtype == object:
        names = {name: index for index, name in enumerate(CLASS_NAMES)}
        text = [str(value).strip().lower() for value in array]
        unknown = sorted({value for value in text if value not in names})
        if unknown:
            raise ValueError(
                f"class names must be one of {', '.join(CLASS_NAMES)}. Received: {', '.join(map(repr, unknown[:5]))}"
            )
        return np.array([names[value] for value in text], dtype=np.intp)
    if array.dtype.kind not in "iuf" or (array.size and not np.isin(array, (0, 1, 2)).all()):
        bad = array[~np.isin(array, (0, 1, 2))][:5].tolist() if array.dtype.kind in "iuf" else array.dtype
        raise ValueError(
            f"class indices must be 0 (disk), 1 (indeterminate) or 2 (bulge). Received: {bad}"
        )
    return array.astype(np.intp)


def check_n_bins(n_bins):
    """``n_bins`` as an int; raises ValueError unless it is a positive integer."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer. Received: n_bins={n_bins!r}")
    return int(n_bins)


def check_temperature(temperature):
    """``temperature`` as a float; raises ValueError unless it is a finite number > 0."""
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
            or not np.isfinite(temperature) or temperature <= 0):
        raise ValueError(f"the temperature must be a finite number > 0. Received: {temperature!r}")
    return float(temperature)


def check_purity(value, name):
    """``value`` as a float; raises ValueError, naming it ``name``, unless it is a purity in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a purity in (0, 1]. Received: {name}={value!r}")
    return float(value)


def _file_name(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name (str or os.PathLike). Received: {path!r}")
    return os.fspath(path)


def check_output_path(path):
    """``path`` as a str; raises TypeError unless it is a file name, FileNotFoundError unless its folder exists."""
    path = _file_name(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path!r}: the folder {folder!r} does not exist")
    return path


def check_png_path(path):
    """As :func:`check_output_path`, for a name that must end in ``.png`` (ValueError otherwise)."""
    path = _file_name(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"the figure is written as PNG: path must end in .png. Received: {path!r}")
    return check_output_path(path)
