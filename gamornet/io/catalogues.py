"""Catalogues: tables of galaxies, one row each, read from CSV, ECSV, FITS and Parquet files.

gamornet reads two kinds of catalogue:

- a *sky catalogue* (:class:`SkyCatalogue`, :func:`read_sky_catalogue`): an
  id, RA and Dec per galaxy, the positions at which
  :class:`gamornet.survey.cutouts.CutoutReader` cuts stamps from survey images
  (``gamornet predict --catalog``, ``gamornet cutouts``);
- a *training catalogue* (:class:`TrainingCatalogue`,
  :func:`read_training_catalogue`): an image file and a label per galaxy, the
  training data of :mod:`gamornet.training.data` (``gamornet train``,
  ``gamornet tl``).

Both are files of one of the formats of :data:`CATALOGUE_FORMATS`, recognised
by the ending of their name, and read by :func:`read_table` (with astropy's
``Table.read``; Parquet needs pyarrow). Both report faults alike:

- ``FileNotFoundError``: the catalogue file does not exist (or, for a training
  catalogue, image files that it names);
- ``OSError``: the file cannot be read as a table of its format;
- ``ValueError``: a name with an unknown ending, a missing column, or values
  that cannot be used (with the row);
- ``TypeError``: an argument of the wrong type.

A training catalogue has one row per galaxy:

- a path column (default ``path``): a FITS file, or a ``.npy`` file holding one
  image; a relative path is relative to the catalogue's folder;
- a label column (default ``label``) holding ``disk``, ``indeterminate`` or
  ``bulge`` (any case), or 0, 1, 2 in that order; or three one-hot columns,
  given as ``label_column=('disk', 'indeterminate', 'bulge')`` (or the string
  ``'disk,indeterminate,bulge'``).

Of a sky catalogue only the id, RA and Dec columns are read: 24 bytes or so
per row. RA and Dec are in degrees (ICRS; columns with an angle unit are
converted), the id is the first of :data:`ID_NAMES` (any case), or the row
number if there is none. Ids are kept as the catalogue holds them: the text of
a CSV file as written (``00123``, ``1e3`` and ``nan_0`` stay so, never read as
numbers), the values of the typed columns of ECSV, FITS and Parquet files as
stored; so a table of predictions joins back to its catalogue.

Backend-neutral: imports neither TensorFlow nor tflearn (astropy is imported
when a catalogue is read).
"""

import dataclasses
import numbers
import os

import numpy as np

from gamornet.io.images import describe_error
from gamornet.presets import CLASS_NAMES

__all__ = [
    "CATALOGUE_FORMATS",
    "catalogue_format",
    "read_table",
    "table_columns",
    "ID_NAMES",
    "RA_NAMES",
    "DEC_NAMES",
    "SkyCatalogue",
    "read_sky_catalogue",
    "TrainingCatalogue",
    "read_training_catalogue",
]

#: Catalogue formats, by file name ending, as astropy's ``Table.read`` formats.
CATALOGUE_FORMATS = {
    ".csv": "ascii.csv",
    ".ecsv": "ascii.ecsv",
    ".fits": "fits",
    ".fit": "fits",
    ".fits.gz": "fits",
    ".fit.gz": "fits",
    ".parquet": "parquet",
    ".pq": "parquet",
}

#: Names tried for the id column, in this order (exact case first, then any case).
ID_NAMES = ("id", "ID", "objid")

#: Names tried for the RA column, in this order (exact case first, then any case).
RA_NAMES = ("ra", "RA", "RAJ2000", "_RAJ2000", "RA_J2000", "RA_ICRS", "ALPHA_J2000", "ALPHAWIN_J2000", "RA_DEG",
            "RAdeg", "ALPHA")

#: Names tried for the Dec column, in this order (exact case first, then any case).
DEC_NAMES = ("dec", "DEC", "DEJ2000", "_DEJ2000", "DECJ2000", "DEC_J2000", "DE_ICRS", "DEC_ICRS", "DELTA_J2000",
             "DELTAWIN_J2000", "DEC_DEG", "DEdeg", "DELTA")

# Messages count a catalogue's rows as gamornet cutouts and predict --catalog do.
_ROWS_COUNTED = "Rows are counted from 1, the header not counted"

# Missing files are listed by name up to this many in one error message.
_LISTED_MISSING = 5


# --------------------------------------------------------------------------- reading a table file


def catalogue_format(path):
    """The astropy format of a catalogue file, from the ending of its name (see :data:`CATALOGUE_FORMATS`).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str
        ``'ascii.csv'``, ``'ascii.ecsv'``, ``'fits'`` or ``'parquet'``.

    Raises
    ------
    ValueError
        A name with none of the endings.
    """
    path = os.fspath(path)
    lowered = path.lower()
    for ending in sorted(CATALOGUE_FORMATS, key=len, reverse=True):
        if lowered.endswith(ending):
            return CATALOGUE_FORMATS[ending]
    raise ValueError(
        f"a catalogue must be a CSV, ECSV, FITS or Parquet table, named by its ending "
        f"({', '.join(CATALOGUE_FORMATS)}). Received: {path!r}"
    )


def _checked_file(path):
    """(path, format) of a catalogue file that exists and has a known ending."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such catalogue file: {path!r}")
    return path, catalogue_format(path)


def _read(path, table_format, names, text_columns=()):
    """Read the columns ``names`` (all when None; only the names when an empty list) of a catalogue file; of a CSV
    file, the columns ``text_columns`` as the text written there (never guessed to be numbers)."""
    from astropy.table import Table

    text = {}
    if text_columns and table_format == "ascii.csv":
        from astropy.io.ascii import convert_numpy

        text = {"converters": {name: [convert_numpy(str)] for name in text_columns}}
    try:
        if names is None:
            return Table.read(path, format=table_format)
        if table_format == "fits":
            # Memory-mapped: only the columns used are read.
            table = Table.read(path, format="fits", memmap=True, mask_invalid=False)
            return table[names] if names else table[[]]
        if table_format == "parquet":
            if names == []:
                return Table.read(path, format="parquet", schema_only=True)
            return Table.read(path, format="parquet", include_names=names)
        if names == []:
            return Table.read(path, format=table_format, data_end=1)
        return Table.read(path, format=table_format, include_names=names, **text)
    except ImportError as error:
        if table_format == "parquet":
            raise ImportError(f"reading the Parquet catalogue {path!r} needs pyarrow: pip install pyarrow") from error
        raise
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - any parsing failure is a file that cannot be read as a table, named
        raise OSError(
            f"cannot read the catalogue {path!r} as a {table_format} table ({describe_error(error)})"
        ) from error


def read_table(path, columns=None):
    """Read a catalogue file as an astropy table: all its columns, or only some.

    Parameters
    ----------
    path : str or os.PathLike
        A file of one of the formats of :data:`CATALOGUE_FORMATS`.
    columns : list of str, optional
        Read only these columns (which the file must hold; see
        :func:`table_columns`): of a FITS table through a memory map, with
        NaN left as NaN rather than masked. By default every column is read,
        with astropy's defaults.

    Returns
    -------
    astropy.table.Table

    Raises
    ------
    FileNotFoundError
        No such file.
    OSError
        The file cannot be read as a table of its format.
    ValueError
        A name with an unknown ending.
    ImportError
        A Parquet file without pyarrow installed.
    """
    path, table_format = _checked_file(path)
    return _read(path, table_format, None if columns is None else list(columns))


def table_columns(path):
    """The names of the columns of a catalogue file, read without its rows (or with one row, of a text table).

    Parameters
    ----------
    path : str or os.PathLike
        A file of one of the formats of :data:`CATALOGUE_FORMATS`.

    Returns
    -------
    list of str

    Raises
    ------
    FileNotFoundError, OSError, ImportError
        As :func:`read_table`.
    ValueError
        As :func:`read_table`, or a file without columns (an empty file).
    """
    path, table_format = _checked_file(path)
    names = list(_read(path, table_format, []).colnames)
    if not names:
        raise ValueError(f"the catalogue {path!r} has no columns: it is empty (expected a header line naming the "
                         "columns, then one row per galaxy)")
    return names


def _catalogue_path(catalogue, expected):
    if not isinstance(catalogue, (str, os.PathLike)):
        raise TypeError(f"a catalogue must be {expected}. Received an object of type {type(catalogue).__name__}")
    return os.fspath(catalogue)


# --------------------------------------------------------------------------- sky catalogues (id, RA, Dec)


@dataclasses.dataclass(frozen=True)
class SkyCatalogue:
    """The columns of a catalogue that cutouts need.

    Attributes
    ----------
    ids : numpy.ndarray
        The id of each row (the row number when the catalogue has no id column):
        text, as written, for a CSV catalogue; as stored for typed formats.
    ra, dec : numpy.ndarray of float64
        RA and Dec (degrees); NaN where the catalogue's value is masked.
    id_name, ra_name, dec_name : str
        The catalogue's names of these columns (``'row'`` for row numbers).
    name : str
        How the catalogue is named in messages.
    path : str or None
        The file it was read from (None for a table in memory).
    """

    ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    id_name: str
    ra_name: str
    dec_name: str
    name: str
    path: object = None

    def __len__(self):
        return len(self.ra)

    def source(self, row):
        """The id of ``row`` as text (the name of its stamp in messages and outputs)."""
        value = self.ids[row]
        return value.decode() if isinstance(value, bytes) else str(value)

    def bad_rows(self):
        """The rows whose RA/Dec cannot be used, and why.

        Returns
        -------
        dict of int to str
            Row number to the reason, in plain words.
        """
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(self.ra) | ~np.isfinite(self.dec) | (self.ra < 0) | (self.ra > 360)
            bad |= np.abs(self.dec) > 90
        reasons = {}
        for row in np.flatnonzero(bad):
            ra, dec = self.ra[row], self.dec[row]
            if not (np.isfinite(ra) and np.isfinite(dec)):
                reasons[int(row)] = f"its RA/Dec are not numbers ({self.ra_name}={ra}, {self.dec_name}={dec})"
            elif not 0 <= ra <= 360:
                reasons[int(row)] = f"its RA is outside 0-360 degrees ({self.ra_name}={ra})"
            else:
                reasons[int(row)] = f"its Dec is outside -90 to +90 degrees ({self.dec_name}={dec})"
        return reasons


def _pick_column(names, wanted, candidates, option, catalogue_name):
    """The column named ``wanted``, or the first of ``candidates`` present (exact case first); None if none."""
    if wanted is not None:
        if wanted in names:
            return wanted
        raise ValueError(
            f"the catalogue {catalogue_name} has no column {wanted!r} ({option}). Its columns are: "
            + ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
        )
    for candidate in candidates:
        if candidate in names:
            return candidate
    lower = {}
    for name in names:
        lower.setdefault(name.lower(), name)
    for candidate in candidates:
        if candidate.lower() in lower:
            return lower[candidate.lower()]
    return None


def _degrees(column, name, catalogue_name):
    """A catalogue column of angles as float64 degrees (NaN where masked)."""
    from astropy import units

    if column.dtype.kind in "USO":
        example = str(column[0]) if len(column) else ""
        raise ValueError(
            f"the column {name!r} of the catalogue {catalogue_name} holds text (such as '{example}'); give RA and Dec "
            "as numbers of degrees"
        )
    factor = 1.0
    unit = getattr(column, "unit", None)
    if unit is not None and unit != units.dimensionless_unscaled:
        try:
            factor = units.Unit(unit).to(units.deg)
        except units.UnitConversionError:
            raise ValueError(
                f"the column {name!r} of the catalogue {catalogue_name} has the unit {unit}, which is not an angle; "
                "give RA and Dec in degrees (or with an angle unit)"
            ) from None
    values = np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)
    return np.asarray(values, dtype=np.float64) * factor


def read_sky_catalogue(catalogue, id_column=None, ra_column=None, dec_column=None):
    """Read the id, RA and Dec columns of a catalogue.

    Parameters
    ----------
    catalogue : str, os.PathLike or astropy.table.Table
        A FITS, CSV, ECSV or Parquet table (by its file name's ending, see
        :data:`CATALOGUE_FORMATS`), or a table already in memory.
    id_column : str, optional
        The id column; default the first of :data:`ID_NAMES` present (in any
        case), else the row number (named ``'row'``).
    ra_column, dec_column : str, optional
        RA and Dec columns (degrees, or any angle unit); default the first of
        :data:`RA_NAMES` / :data:`DEC_NAMES` present (in any case).

    Returns
    -------
    SkyCatalogue

    Raises
    ------
    FileNotFoundError
        The catalogue file does not exist.
    OSError
        The file cannot be read as a table of its format.
    ValueError
        An unknown file ending, a named column that the catalogue lacks, no RA
        or Dec column found, or RA/Dec columns that are not angles.
    TypeError
        ``catalogue`` is neither a path nor a table.
    """
    from astropy.table import Table

    if isinstance(catalogue, Table):
        table, path, catalogue_name = catalogue, None, "table"
        names = list(table.colnames)
    else:
        path = _catalogue_path(catalogue, "the path of a table file or an astropy.table.Table")
        catalogue_name = repr(path)
        names = table_columns(path)
    id_name = _pick_column(names, id_column, ID_NAMES, "--id-column", catalogue_name)
    ra_name = _pick_column(names, ra_column, RA_NAMES, "--ra-column", catalogue_name)
    dec_name = _pick_column(names, dec_column, DEC_NAMES, "--dec-column", catalogue_name)
    for found, what, option, tried in ((ra_name, "RA", "--ra-column", RA_NAMES),
                                       (dec_name, "Dec", "--dec-column", DEC_NAMES)):
        if found is None:
            raise ValueError(
                f"the catalogue {catalogue_name} has no {what} column under a usual name ({', '.join(tried)}, in any "
                f"case); name it with {option}. Its columns are: " + ", ".join(names[:40])
            )
    if path is not None:
        path, table_format = _checked_file(path)
        # Ids are text in a CSV file: read as written (00123, 1e3 and nan_0 are not numbers to be rewritten).
        table = _read(path, table_format, [name for name in (id_name, ra_name, dec_name) if name is not None],
                      text_columns=(id_name,) if id_name is not None else ())
    ids = np.asarray(table[id_name]) if id_name is not None else np.arange(len(table), dtype=np.int64)
    if id_name is not None and isinstance(table[id_name], np.ma.MaskedArray) and np.ma.is_masked(table[id_name]):
        raise ValueError(f"the id column {id_name!r} of the catalogue {catalogue_name} has empty (masked) values")
    return SkyCatalogue(
        ids=ids,
        ra=_degrees(table[ra_name], ra_name, catalogue_name),
        dec=_degrees(table[dec_name], dec_name, catalogue_name),
        id_name=id_name or "row",
        ra_name=ra_name,
        dec_name=dec_name,
        name=catalogue_name,
        path=path,
    )


# --------------------------------------------------------------------------- training catalogues (image, label)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingCatalogue:
    """Training images named by a catalogue, and their labels.

    Attributes
    ----------
    source : str
        The catalogue file.
    paths : tuple of str
        One absolute image path per row, in catalogue order.
    labels : numpy.ndarray of shape (n, 3), float32
        One-hot labels: disk [1, 0, 0], indeterminate [0, 1, 0], bulge [0, 0, 1].
    """

    source: str
    paths: tuple
    labels: np.ndarray

    def __len__(self):
        return len(self.paths)

    def class_counts(self):
        """Number of disk, indeterminate and bulge galaxies, as a dict."""
        counts = np.bincount(np.argmax(self.labels, axis=1), minlength=3)
        return {name: int(count) for name, count in zip(CLASS_NAMES, counts)}


def _label_columns(label_column):
    """A label column name, or a tuple of three one-hot column names."""
    if isinstance(label_column, str):
        names = tuple(name.strip() for name in label_column.split(","))
        if len(names) == 1:
            return names[0]
    elif isinstance(label_column, (tuple, list)) and all(isinstance(name, str) for name in label_column):
        names = tuple(label_column)
    else:
        raise TypeError(
            "label_column must be a column name, or three one-hot column names (disk, indeterminate, bulge). "
            f"Received: label_column={label_column!r}"
        )
    if len(names) != 3 or not all(names):
        raise ValueError(
            "one-hot labels need exactly three column names, in the order disk, indeterminate, bulge. "
            f"Received: label_column={label_column!r}"
        )
    return names


def _missing_column(path, table, name, option):
    columns = ", ".join(table.colnames)
    return ValueError(
        f"the catalogue {path!r} has no column {name!r} (its columns are: {columns}); name the right one with "
        f"{option}"
    )


def _row_label(value):
    """The class index (0, 1, 2) of one catalogue value, or None."""
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip().lower()
        if text in CLASS_NAMES:
            return CLASS_NAMES.index(text)
        if text in ("0", "1", "2"):
            return int(text)
        return None
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value) if 0 <= value <= 2 else None
    if isinstance(value, (numbers.Real, np.floating)) and float(value) in (0.0, 1.0, 2.0):
        return int(value)
    return None


def _class_labels(path, table, column, paths):
    values = table[column]
    mask = np.ma.getmaskarray(values) if hasattr(values, "mask") else np.zeros(len(values), dtype=bool)
    indices = np.empty(len(values), dtype=np.int64)
    for row, (value, masked) in enumerate(zip(values, mask)):
        index = None if masked else _row_label(value)
        if index is None:
            shown = "an empty cell" if masked else repr(value.item() if hasattr(value, "item") else value)
            raise ValueError(
                f"the catalogue {path!r}, row {row + 1} ({paths[row]}): unknown label {shown} in column {column!r}; "
                f"labels must be disk, indeterminate or bulge, or 0, 1 or 2 (in that order). {_ROWS_COUNTED}"
            )
        indices[row] = index
    return np.eye(3, dtype=np.float32)[indices]


def _one_hot_labels(path, table, columns, paths):
    try:
        values = np.stack([np.ma.filled(np.asarray(table[name], dtype=np.float64), np.nan) for name in columns], axis=1)
    except (TypeError, ValueError):
        raise ValueError(
            f"the one-hot label columns {', '.join(columns)} of the catalogue {path!r} must hold numbers"
        ) from None
    good = np.isfinite(values).all(axis=1) & (values >= 0).all(axis=1) & np.isclose(values.sum(axis=1), 1.0, atol=1e-3)
    if not good.all():
        row = int(np.flatnonzero(~good)[0])
        raise ValueError(
            f"the catalogue {path!r}, row {row + 1} ({paths[row]}): the one-hot labels {values[row].tolist()} in "
            f"columns {', '.join(columns)} are not one-hot (non-negative numbers summing to 1, e.g. disk 1, 0, 0). "
            f"{_ROWS_COUNTED}"
        )
    return values.astype(np.float32)


def _image_paths(path, table, path_column):
    folder = os.path.dirname(os.path.abspath(path))
    paths = []
    for row, value in enumerate(table[path_column]):
        if isinstance(value, (bytes, np.bytes_)):
            value = value.decode("utf-8", "replace")
        text = str(value).strip() if not np.ma.is_masked(value) else ""
        if not text:
            raise ValueError(f"the catalogue {path!r}, row {row + 1}: the path column {path_column!r} is empty. "
                             f"{_ROWS_COUNTED}")
        paths.append(os.path.normpath(os.path.join(folder, os.path.expanduser(text))))
    missing = [(row, image) for row, image in enumerate(paths) if not os.path.isfile(image)]
    if missing:
        listed = "; ".join(f"row {row + 1}: {image}" for row, image in missing[:_LISTED_MISSING])
        more = f" and {len(missing) - _LISTED_MISSING} more" if len(missing) > _LISTED_MISSING else ""
        raise FileNotFoundError(
            f"the catalogue {path!r} names {len(missing)} image file(s) that do not exist ({listed}{more}); paths are "
            f"relative to the catalogue's folder. {_ROWS_COUNTED}"
        )
    return tuple(paths)


def read_training_catalogue(path, path_column="path", label_column="label"):
    """Read a training catalogue: image paths and one-hot labels, every file checked to exist.

    Parameters
    ----------
    path : str or os.PathLike
        A CSV, ECSV, FITS or Parquet table (see :data:`CATALOGUE_FORMATS`).
    path_column : str
        The column of image paths (FITS files, or ``.npy`` files of one image),
        relative to the catalogue's folder unless absolute.
    label_column : str or tuple of three str
        A column of class names (``disk``, ``indeterminate``, ``bulge``, any
        case) or class numbers (0, 1, 2); or three one-hot columns in the order
        disk, indeterminate, bulge (also as one comma-separated string).

    Returns
    -------
    TrainingCatalogue

    Raises
    ------
    FileNotFoundError
        The catalogue, or image files it names (listed, with their rows).
    OSError
        The catalogue cannot be read as a table of its format.
    ValueError
        An unknown format, an empty catalogue, a missing column, or an unknown
        label (with its row and image).
    TypeError
        ``path`` or ``label_column`` of the wrong type.
    """
    path = _catalogue_path(path, "the path of a table file")
    if not isinstance(path_column, str) or not path_column:
        raise TypeError(f"path_column must be a column name. Received: path_column={path_column!r}")
    labels_from = _label_columns(label_column)
    table = read_table(path)
    if len(table) == 0:
        raise ValueError(f"the catalogue {path!r} is empty: it holds no rows (no images to train on)")
    if path_column not in table.colnames:
        raise _missing_column(path, table, path_column, "path_column (--path-column)")
    for name in (labels_from,) if isinstance(labels_from, str) else labels_from:
        if name not in table.colnames:
            raise _missing_column(path, table, name, "label_column (--label-column)")
    paths = _image_paths(path, table, path_column)
    if isinstance(labels_from, str):
        labels = _class_labels(path, table, labels_from, paths)
    else:
        labels = _one_hot_labels(path, table, labels_from, paths)
    return TrainingCatalogue(source=path, paths=paths, labels=labels)
