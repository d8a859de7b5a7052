"""Tables of predictions, one row per image: CSV streamed row by row, FITS written at the end.

The columns are always ``source, p_disk, p_indet, p_bulge, class``, followed
by the per-image columns that the predictor and the reader add (uncertainties,
flags ...). Rows without a prediction (an image that could not be cut out, for
example) have empty probabilities and class. Backend-neutral.
"""

import csv
import os

import numpy as np

from gamornet._atomic import atomic_path

__all__ = ["BASE_COLUMNS", "CsvTable", "FitsTable", "fits_suffix"]

#: The columns of every table, in order.
BASE_COLUMNS = ("source", "p_disk", "p_indet", "p_bulge", "class")

_FITS_COMPRESSED = (".gz",)


def fits_suffix(path):
    """The ending a temporary FITS file needs so that astropy writes it as ``path`` asks (gzip for ``.gz``)."""
    return ".fits.gz" if path.lower().endswith(_FITS_COMPRESSED) else ".fits"


def _text(value):
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else str(value)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)


class CsvTable:
    """Rows streamed into an open text file, flushed after every batch.

    Parameters
    ----------
    stream : file
        An open text stream.
    extra_columns : sequence of str
        Names of the columns after the five base columns.
    """

    def __init__(self, stream, extra_columns=()):
        self.stream = stream
        self.extra_columns = tuple(extra_columns)
        self.writer = csv.writer(stream, lineterminator="\n")
        self.writer.writerow(BASE_COLUMNS + self.extra_columns)
        self.stream.flush()
        self.rows = 0

    def add(self, sources, probabilities, classes, columns=None):
        """Append one row per source; ``columns`` maps each extra column name to its values."""
        columns = columns or {}
        extra = [columns[name] for name in self.extra_columns]
        for index, (source, row, label) in enumerate(zip(sources, probabilities, classes)):
            values = [source, *(_text(value) for value in row), label]
            values += [_text(values_of[index]) for values_of in extra]
            self.writer.writerow(values)
        self.stream.flush()
        self.rows += len(sources)


class FitsTable:
    """Rows kept in memory (a few dozen bytes each), written as a FITS binary table at the end.

    Parameters
    ----------
    meta : dict
        Header keywords of the table (8 characters at most, values of at most 68).
    extra_columns : sequence of str
        Names of the columns after the five base columns.
    """

    def __init__(self, meta, extra_columns=()):
        self.meta = dict(meta)
        self.extra_columns = tuple(extra_columns)
        self.sources, self.probabilities, self.classes = [], [], []
        self.extra = {name: [] for name in self.extra_columns}
        self.rows = 0

    def add(self, sources, probabilities, classes, columns=None):
        """Keep one row per source; ``columns`` maps each extra column name to its values."""
        self.sources.extend(sources)
        self.probabilities.append(np.asarray(probabilities, dtype=np.float32).reshape(-1, 3))
        self.classes.extend(classes)
        for name in self.extra_columns:
            self.extra[name].extend(np.asarray((columns or {})[name]).tolist())
        self.rows += len(sources)

    def write(self, path):
        """Write the table to ``path`` atomically (gzip-compressed when it ends in ``.gz``)."""
        from astropy.table import Table

        probabilities = np.concatenate(self.probabilities) if self.probabilities else np.empty((0, 3), np.float32)
        data = [np.asarray(self.sources, dtype=str), probabilities[:, 0], probabilities[:, 1], probabilities[:, 2],
                np.asarray(self.classes, dtype=str)]
        data += [np.asarray(self.extra[name]) for name in self.extra_columns]
        table = Table(data, names=BASE_COLUMNS + self.extra_columns, meta=self.meta)
        with atomic_path(os.fspath(path), suffix=fits_suffix(os.fspath(path))) as temporary:
            table.write(temporary, format="fits", overwrite=True)
