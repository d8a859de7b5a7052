"""Tables of predictions, one row per image: CSV streamed row by row, FITS and Parquet written at the end.

The columns are ``source, p_disk, p_indet, p_bulge, class``, followed by the
per-image columns that the predictor and the reader add (uncertainties, flags
...). A table of catalogue rows (``gamornet predict --catalog``) names its rows
by *key columns* instead of ``source``: the catalogue's id, RA and Dec. Rows
without a prediction (a catalogue row off the images, for example) have empty
probabilities and class. Backend-neutral.
"""

import csv
import os

import numpy as np

from gamornet._utils.atomic import atomic_path

__all__ = ["BASE_COLUMNS", "PREDICTION_COLUMNS", "CsvTable", "FitsTable", "ParquetTable", "fits_suffix"]

#: The columns of every table, in order.
BASE_COLUMNS = ("source", "p_disk", "p_indet", "p_bulge", "class")

#: The columns that follow the key columns.
PREDICTION_COLUMNS = BASE_COLUMNS[1:]

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
    key_columns : sequence of str
        The columns before the probabilities: ``source`` (the default), or a
        catalogue's id, RA and Dec. The first holds the ``sources`` given to
        :meth:`add`; the others come from its ``columns``.
    """

    def __init__(self, stream, extra_columns=(), key_columns=BASE_COLUMNS[:1]):
        self.stream = stream
        self.extra_columns = tuple(extra_columns)
        self.key_columns = tuple(key_columns)
        self.writer = csv.writer(stream, lineterminator="\n")
        self.writer.writerow(self.key_columns + PREDICTION_COLUMNS + self.extra_columns)
        self.stream.flush()
        self.rows = 0

    def add(self, sources, probabilities, classes, columns=None):
        """Append one row per source; ``columns`` maps each extra (and key) column name to its values."""
        columns = columns or {}
        keys = [columns[name] for name in self.key_columns[1:]]
        extra = [columns[name] for name in self.extra_columns]
        for index, (source, row, label) in enumerate(zip(sources, probabilities, classes)):
            values = [_text(source), *(_text(values_of[index]) for values_of in keys)]
            values += [*(_text(value) for value in row), label]
            values += [_text(values_of[index]) for values_of in extra]
            self.writer.writerow(values)
        self.stream.flush()
        self.rows += len(sources)


class _TableInMemory:
    """Rows kept in memory (a few dozen bytes each) until the table is written whole."""

    def __init__(self, extra_columns=(), key_columns=BASE_COLUMNS[:1]):
        self.extra_columns = tuple(extra_columns)
        self.key_columns = tuple(key_columns)
        self.sources, self.probabilities, self.classes = [], [], []
        self.extra = {name: [] for name in self.key_columns[1:] + self.extra_columns}
        self.rows = 0

    def add(self, sources, probabilities, classes, columns=None):
        """Keep one row per source; ``columns`` maps each extra (and key) column name to its values."""
        self.sources.extend(np.asarray(sources).tolist())
        self.probabilities.append(np.asarray(probabilities, dtype=np.float32).reshape(-1, 3))
        self.classes.extend(classes)
        for name in self.extra:
            self.extra[name].extend(np.asarray((columns or {})[name]).tolist())
        self.rows += len(sources)

    def _probabilities(self):
        return np.concatenate(self.probabilities) if self.probabilities else np.empty((0, 3), np.float32)


class FitsTable(_TableInMemory):
    """Rows kept in memory (a few dozen bytes each), written as a FITS binary table at the end.

    Parameters
    ----------
    meta : dict
        Header keywords of the table (8 characters at most, values of at most 68).
    extra_columns : sequence of str
        Names of the columns after the five base columns.
    key_columns : sequence of str
        The columns before the probabilities (see :class:`CsvTable`). Their
        values keep their type (a catalogue's integer ids stay integers).
    """

    def __init__(self, meta, extra_columns=(), key_columns=BASE_COLUMNS[:1]):
        super().__init__(extra_columns, key_columns)
        self.meta = dict(meta)

    def write(self, path):
        """Write the table to ``path`` atomically (gzip-compressed when it ends in ``.gz``)."""
        from astropy.table import Table

        probabilities = self._probabilities()
        keys = [np.asarray(self.sources, dtype=str if self.key_columns == BASE_COLUMNS[:1] else None)]
        keys += [np.asarray(self.extra[name]) for name in self.key_columns[1:]]
        data = keys + [probabilities[:, 0], probabilities[:, 1], probabilities[:, 2], np.asarray(self.classes, dtype=str)]
        data += [np.asarray(self.extra[name]) for name in self.extra_columns]
        table = Table(data, names=self.key_columns + PREDICTION_COLUMNS + self.extra_columns, meta=self.meta)
        with atomic_path(os.fspath(path), suffix=fits_suffix(os.fspath(path))) as temporary:
            table.write(temporary, format="fits", overwrite=True)


class ParquetTable(_TableInMemory):
    """Rows kept in memory, written as one Parquet file (with pyarrow) at the end.

    Parameters
    ----------
    metadata : dict of str to str
        Key-value metadata of the file (provenance).
    extra_columns : sequence of str
        Names of the columns after the five base columns.
    column_types : dict of str to numpy.dtype, optional
        The type of each extra column, so that every part of a data set has
        the same schema, a part without rows too (by default, that of the
        values given).
    key_columns : sequence of str
        The columns before the probabilities (see :class:`CsvTable`).
    """

    def __init__(self, metadata, extra_columns=(), column_types=None, key_columns=BASE_COLUMNS[:1]):
        super().__init__(extra_columns, key_columns)
        self.metadata = dict(metadata)
        self.column_types = dict(column_types or {})

    def _column(self, name):
        import pyarrow as pa

        dtype = self.column_types.get(name)
        return pa.array(np.asarray(self.extra[name], dtype=dtype) if dtype is not None else self.extra[name])

    def arrow_table(self):
        """The rows as a ``pyarrow.Table`` with the metadata."""
        import pyarrow as pa

        probabilities = self._probabilities()
        keys = [pa.array(self.sources, pa.string() if self.key_columns == BASE_COLUMNS[:1] else None)]
        keys += [self._column(name) for name in self.key_columns[1:]]
        arrays = keys + [pa.array(probabilities[:, index]) for index in range(3)]
        arrays.append(pa.array(self.classes, pa.string()))
        arrays += [self._column(name) for name in self.extra_columns]
        names = list(self.key_columns + PREDICTION_COLUMNS + self.extra_columns)
        return pa.Table.from_arrays(arrays, names=names, metadata=self.metadata)

    def write(self, path):
        """Write the table to ``path`` atomically."""
        import pyarrow.parquet as pq

        with atomic_path(os.fspath(path), suffix=".parquet") as temporary:
            pq.write_table(self.arrow_table(), temporary)
