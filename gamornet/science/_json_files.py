"""The JSON files of calibrations and thresholds: written atomically, read back with their format checked.

:mod:`gamornet.science.calibration` (``gamornet calibrate``) and
:mod:`gamornet.science.thresholds` (``gamornet thresholds``) write their
files here; each file names its format (``"format"``) and its version
(``"format_version"``), and is refused by a reader of another.

Backend-neutral and numpy only: imports neither TensorFlow nor tflearn.
"""

import datetime
import json
import os

import numpy as np

from gamornet._utils.atomic import atomic_write
from gamornet.science._checks import check_output_path

__all__ = ["FORMAT_VERSION", "json_safe", "read_json", "utc_now", "write_json"]

#: The version of the calibration and thresholds file formats this gamornet writes and reads.
FORMAT_VERSION = 1


def write_json(path, document):
    """Write ``document`` as indented JSON (atomically); return ``path`` as a str.

    Raises
    ------
    TypeError
        ``path`` is not a file name.
    FileNotFoundError
        The folder of ``path`` does not exist.
    ValueError
        A value JSON cannot hold (NaN or infinity: see :func:`json_safe`).
    """
    path = check_output_path(path)
    with atomic_write(path, encoding="utf-8") as stream:
        json.dump(document, stream, indent=2, allow_nan=False)
        stream.write("\n")
    return path


def read_json(path, expected_format, what, writer):
    """The document of a file of format ``expected_format`` and version :data:`FORMAT_VERSION`.

    Parameters
    ----------
    path : str or os.PathLike
    expected_format : str
        The ``"format"`` the file must name.
    what, writer : str
        What the file is and what writes it, for the messages.

    Raises
    ------
    ValueError
        Not JSON, another format, or another format version.
    OSError
        The file cannot be read.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as stream:
        try:
            document = json.load(stream)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path!r} is not a {what} file: it is not valid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != expected_format:
        raise ValueError(
            f"{path!r} is not a {what} file (one written by {writer}): it lacks \"format\": \"{expected_format}\""
        )
    if document.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path!r} is a {what} file of format version {document.get('format_version')!r}; this gamornet "
            f"reads version {FORMAT_VERSION}"
        )
    return document


def json_safe(value):
    """Plain JSON values: numpy scalars to Python numbers, NaN to None."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    return value


def utc_now():
    """The time now in UTC, ISO 8601 to the second (the ``"created"`` of a file)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
