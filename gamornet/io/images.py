"""Read galaxy images in batches, from FITS files, FITS cubes and ``.npy`` arrays.

Catalogues can hold millions of cutouts, so images are streamed: at most one
batch (plus the one being prepared) is in memory at a time, whatever the number
of images. Inputs may be

- FITS files (one image each), folders of FITS files, or glob patterns
  (``'cutouts/*.fits'``, ``'run*/**/*.fits'``);
- FITS cubes: a FITS image with one more axis than a single image, holding one
  image per plane (read plane by plane, never whole);
- ``.npy`` arrays of shape (n, x, y) or (n, x, y, ndim), read through small
  memory maps of one batch each, so that the resident memory stays flat;
- a range of images of a ``.npy`` array or of a FITS cube, written as Python
  writes a slice: ``'stack.npy[0:4096]'`` (images 0 to 4095),
  ``'cube.fits[4096:]'`` (image 4096 to the end). Only the images of the
  range are read; they keep their sources (``'stack.npy[12]'``). This is how
  :mod:`gamornet.survey.distributed` hands each task its share of a large array.

Each image is named by its *source*: the file name for a single-image FITS
file, ``'cube.fits[12]'`` for plane 12 of a cube, ``'images.npy[12]'`` for
image 12 of an array. Files that cannot be read, images of the wrong shape and
images with NaN or infinite pixels are *bad inputs*: they are reported by name
(:class:`BadInput`), never silently dropped.

Image layout: for ``input_shape`` (x, y, ndim), a single image is a FITS array
of shape (x, y) (when ndim is 1), (ndim, x, y) (one plane per band, the FITS
convention) or (x, y, ndim); a cube adds a leading axis of n images. FITS
scaling (BSCALE/BZERO) is applied; pixels are read as float32.

Backend-neutral: imports neither TensorFlow nor tflearn (astropy is imported
when a FITS file is first read).
"""

import glob
import os
import re
from dataclasses import dataclass, field

import numpy as np

from gamornet._utils import checks as _checks
from gamornet._utils.atomic import is_temporary_name

__all__ = [
    "BadInput",
    "Batch",
    "MissingRow",
    "ImageInput",
    "ImageReader",
    "expand_inputs",
    "expand_inputs_with_ranges",
    "FITS_EXTENSIONS",
    "image_layout",
    "bad_pixels_reason",
    "describe_error",
    "find_image_hdu",
    "read_npy_header",
]

#: File name endings read as FITS when a folder is given.
FITS_EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")

_GLOB_CHARACTERS = set("*?[")

# 'path[start:stop]', either bound optional: a range of the images of an array or a cube.
_RANGE = re.compile(r"^(?P<path>.+)\[(?P<start>\d*):(?P<stop>\d*)\]$")


@dataclass(frozen=True)
class BadInput:
    """An input that could not be used: its source name and why, in plain words."""

    source: str
    reason: str

    def __str__(self):
        return f"{self.source}: {self.reason}"


@dataclass(frozen=True)
class MissingRow:
    """An input row that has no image, such as a catalogue row outside every survey image.

    It is written with empty probabilities. ``before`` places it among the
    rows of its batch: it comes before the batch's image number ``before``
    (``len(batch.sources)``: after them all).
    """

    source: str
    columns: dict
    before: int


@dataclass
class Batch:
    """A batch of images and their sources.

    Attributes
    ----------
    sources : list of str
        One name per image, in input order.
    images : numpy.ndarray of float32, shape (len(sources), x, y, ndim)
        The images, all with finite pixels.
    bad : list of BadInput
        Bad inputs met while this batch was gathered, in input order.
    columns : dict of str to numpy.ndarray
        Extra per-image columns that a reader adds (such as a catalogue's
        RA/Dec and the quality flags of :mod:`gamornet.survey.cutouts`), each of
        length ``len(sources)``. Empty for files of images.
    missing : list of MissingRow
        Rows of this batch that have no image, with the same columns, to be
        written with empty probabilities. Empty for files of images.
    """

    sources: list
    images: np.ndarray
    bad: list = field(default_factory=list)
    columns: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)

    def in_order(self):
        """Yield the batch's rows in input order: the index of each image, and each MissingRow where it falls."""
        missing = iter(self.missing)
        pending = next(missing, None)
        for index in range(len(self.sources)):
            while pending is not None and pending.before <= index:
                yield pending
                pending = next(missing, None)
            yield index
        while pending is not None:
            yield pending
            pending = next(missing, None)


@dataclass(frozen=True)
class ImageInput:
    """One input file, and the range of its images to read (``stop`` None: to the end).

    Attributes
    ----------
    kind : {'fits', 'npy'}
        How the file is read.
    path : str
        The file.
    start, stop : int
        The range of its images (``stop`` None: to the end); ``str()`` writes
        it as ``'path[start:stop]'`` (the path alone when it is the whole file).
    """

    kind: str
    path: str
    start: int = 0
    stop: int = None

    @property
    def ranged(self):
        """True when only a range of the file's images is asked for."""
        return self.start != 0 or self.stop is not None

    def bounds(self, n_images):
        """(first, last) image of the range within a file of ``n_images`` images."""
        last = n_images if self.stop is None else min(self.stop, n_images)
        return min(self.start, last), last

    def __str__(self):
        if not self.ranged:
            return self.path
        return f"{self.path}[{self.start}:{'' if self.stop is None else self.stop}]"


@dataclass(frozen=True)
class _Chunk:
    sources: list
    images: np.ndarray


# --------------------------------------------------------------------------- inputs


def _is_fits_name(name):
    return name.lower().endswith(FITS_EXTENSIONS)


def _kind(path):
    return "npy" if path.lower().endswith(".npy") else "fits"


def expand_inputs(inputs, exclude=()):
    """Expand files, folders and glob patterns into a list of (kind, path).

    Parameters
    ----------
    inputs : str or list of str
        Paths of FITS files or ``.npy`` files, folders (their FITS files, in
        name order, not recursive) or glob patterns (``**`` recurses). A file
        ending in ``.npy`` is an array; any other file is read as FITS. A
        file followed by a range, ``'stack.npy[0:4096]'``, stands for those
        images of an array or a cube (the file is returned here; the
        :class:`ImageReader` reads only the range).
        Temporary files that gamornet writes while it works (``.tmp-*``) are
        never taken from folders and patterns.
    exclude : iterable of str
        Files that folders and patterns must not yield (such as the table
        being written, and its partial file); named explicitly, they are kept.

    Returns
    -------
    list of (str, str)
        ``('fits', path)`` or ``('npy', path)``, in the order given (folders
        and patterns in sorted order).

    Raises
    ------
    FileNotFoundError
        A path that does not exist, or a pattern that matches no file.
    ValueError
        No inputs, a folder that holds no FITS file, or a range whose end
        comes before its start.
    TypeError
        An input that is not a path.
    """
    return [(item.kind, item.path) for item in expand_inputs_with_ranges(inputs, exclude)]


def expand_inputs_with_ranges(inputs, exclude=()):
    """As :func:`expand_inputs`, as a list of :class:`ImageInput` (with their ranges).

    Parameters
    ----------
    inputs : str or list of str
        As for :func:`expand_inputs`.
    exclude : iterable of str
        As for :func:`expand_inputs`.

    Returns
    -------
    list of ImageInput

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        As :func:`expand_inputs`.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    excluded = {os.path.realpath(path) for path in exclude}
    entries = []
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(
                f"each input must be a path or a glob pattern. Received an object of type {type(item).__name__}"
            )
        path = os.fspath(item)
        if os.path.isdir(path):
            names = sorted(name for name in os.listdir(path) if _is_fits_name(name) and not is_temporary_name(name))
            files = [os.path.join(path, name) for name in names if os.path.isfile(os.path.join(path, name))]
            files = [file for file in files if os.path.realpath(file) not in excluded]
            if not files:
                raise ValueError(
                    f"the folder {path!r} holds no FITS files (names ending in {', '.join(FITS_EXTENSIONS)})"
                )
            entries.extend(ImageInput("fits", file) for file in files)
        elif os.path.exists(path):
            entries.append(ImageInput(_kind(path), path))
        elif (ranged := _ranged_input(path)) is not None:
            entries.append(ranged)
        elif _GLOB_CHARACTERS & set(path):
            files = sorted(
                match for match in glob.glob(path, recursive=True)
                if os.path.isfile(match) and not is_temporary_name(os.path.basename(match))
                and os.path.realpath(match) not in excluded
            )
            if not files:
                raise FileNotFoundError(f"the pattern {path!r} matches no files")
            entries.extend(ImageInput(_kind(file), file) for file in files)
        else:
            raise FileNotFoundError(f"no such file or folder: {path!r}")
    if not entries:
        raise ValueError("no inputs were given: give FITS files, folders, glob patterns or .npy files")
    return entries


def _ranged_input(text):
    """The :class:`ImageInput` of ``'file[start:stop]'`` when the file exists, else None."""
    match = _RANGE.match(text)
    if match is None or not os.path.isfile(match["path"]):
        return None
    start = int(match["start"]) if match["start"] else 0
    stop = int(match["stop"]) if match["stop"] else None
    if stop is not None and stop < start:
        raise ValueError(
            f"the range of {text!r} ends before it starts: give [start:stop] with start <= stop, such as "
            f"{match['path'] + '[0:4096]'!r}"
        )
    return ImageInput(_kind(match["path"]), match["path"], start, stop)


# --------------------------------------------------------------------------- image checks


def image_layout(shape, input_shape):
    """How a stored array of ``shape`` holds images of ``input_shape``.

    Parameters
    ----------
    shape : tuple of int
        The shape of the stored array (a FITS image or a ``.npy`` array).
    input_shape : tuple of int
        The network's (x, y, ndim).

    Returns
    -------
    tuple (bool, callable) or None
        (is_cube, to_images) where ``to_images`` maps a stored array (with
        a leading image axis) to (n, x, y, ndim), or None when it does not fit.
    """
    x, y, ndim = input_shape
    shape = tuple(shape)
    single = {(x, y, ndim): lambda a: a}
    if ndim == 1:
        single[(x, y)] = lambda a: a[..., np.newaxis]
    single.setdefault((ndim, x, y), lambda a: np.moveaxis(a, 1, -1))
    if shape in single:
        return False, single[shape]
    if len(shape) >= 3 and shape[1:] in single:
        return True, single[shape[1:]]
    return None


def _expected_layouts(input_shape, cube):
    x, y, ndim = input_shape
    single = [f"({x}, {y})"] if ndim == 1 else []
    single += [f"({x}, {y}, {ndim})"] + ([f"({ndim}, {x}, {y})"] if ndim > 1 else [])
    if cube:
        return " or ".join(f"(n, {text[1:]}" for text in single)
    return " or ".join(single) + ", or a cube " + " or ".join(f"(n, {text[1:]}" for text in single)


def bad_pixels_reason(image):
    """None if every pixel is finite; else why the image is bad.

    Parameters
    ----------
    image : numpy.ndarray
        One image.

    Returns
    -------
    str or None
        The reason, in plain words (blank, no finite pixel, or how many NaN or
        infinite pixels it holds).
    """
    finite = np.isfinite(image)
    if finite.all():
        return None
    if not finite.any():
        if np.isnan(image).all():
            return "the image is blank: every pixel is NaN"
        return "the image has no finite pixel (NaN or infinite everywhere)"
    count = int(finite.size - np.count_nonzero(finite))
    return (
        f"the image holds {count} NaN or infinite pixels (of {finite.size}); replace them (for example with the "
        "sky level) before classifying"
    )


def _split_finite(sources, images):
    """Yield _Chunk runs of finite images and BadInput for the others, in order."""
    finite = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
    if finite.all():
        yield _Chunk(sources, images)
        return
    start = 0
    for index in np.flatnonzero(~finite):
        if index > start:
            yield _Chunk(sources[start:index], images[start:index])
        yield BadInput(sources[index], bad_pixels_reason(images[index]))
        start = index + 1
    if start < len(images):
        yield _Chunk(sources[start:], images[start:])


# --------------------------------------------------------------------------- readers


def describe_error(error):
    """The first line of an exception's message, or its type's name when it has none.

    Parameters
    ----------
    error : BaseException

    Returns
    -------
    str
    """
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def find_image_hdu(hdulist, hdu):
    """The HDU of an open FITS file that holds the image.

    Parameters
    ----------
    hdulist : astropy.io.fits.HDUList
        The open file.
    hdu : int or None
        The HDU asked for; None: the first image HDU with data.

    Returns
    -------
    tuple
        (hdu object, None), or (None, the reason in plain words) when there is
        no such image HDU.
    """
    from astropy.io import fits

    image_types = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
    if hdu is None:
        for candidate in hdulist:
            if isinstance(candidate, image_types) and candidate.header.get("NAXIS", 0) > 0:
                return candidate, None
        return None, "the file holds no image (no HDU with data)"
    try:
        chosen = hdulist[hdu]
    except (IndexError, KeyError):
        return None, f"the file has no HDU {hdu} (it has {len(hdulist)}, numbered from 0)"
    if not isinstance(chosen, image_types):
        return None, f"HDU {hdu} holds a {type(chosen).__name__}, not an image"
    if chosen.header.get("NAXIS", 0) == 0:
        return None, f"HDU {hdu} holds no data"
    return chosen, None


def _read_fits(path, input_shape, hdu, chunk_size, on_cube, item=None):
    """Yield the images of one FITS file (of the range of ``item``, an :class:`ImageInput`) as _Chunk / BadInput
    items."""
    from astropy.io import fits

    try:
        # memmap=False with .section reads only the planes asked for, by plain
        # reads, so a large cube never becomes resident.
        hdulist = fits.open(path, memmap=False, lazy_load_hdus=True)
    except Exception as error:  # noqa: BLE001 - any failure makes this one file bad
        yield BadInput(path, f"cannot be read as FITS ({describe_error(error)})")
        return
    with hdulist:
        try:
            image_hdu, reason = find_image_hdu(hdulist, hdu)
            if image_hdu is None:
                yield BadInput(path, reason)
                return
            shape = tuple(image_hdu.shape)
            layout = image_layout(shape, input_shape)
            if layout is None:
                yield BadInput(
                    path,
                    f"holds an image of shape {shape}, but the network takes images of shape "
                    f"{_expected_layouts(input_shape, cube=False)}",
                )
                return
            is_cube, to_images = layout
            if not is_cube and item is not None and item.ranged:
                yield BadInput(str(item), "a range of images was given, but the file holds a single image, not a cube")
                return
            if not is_cube:
                data = np.asarray(image_hdu.data, dtype=np.float32)[np.newaxis]
                yield from _split_finite([path], np.ascontiguousarray(to_images(data)))
                return
            first, last = item.bounds(shape[0]) if item is not None else (0, shape[0])
            on_cube(last - first)
            for start in range(first, last, chunk_size):
                stop = min(start + chunk_size, last)
                data = np.asarray(image_hdu.section[start:stop], dtype=np.float32)
                sources = [f"{path}[{index}]" for index in range(start, stop)]
                yield from _split_finite(sources, np.ascontiguousarray(to_images(data)))
        except Exception as error:  # noqa: BLE001 - a truncated or corrupt file is one bad file
            yield BadInput(path, f"cannot be read as FITS ({describe_error(error)})")


def read_npy_header(path):
    """(shape, dtype, fortran_order, data offset) of a .npy file, without reading its data.

    Parameters
    ----------
    path : str
        The ``.npy`` file.

    Returns
    -------
    tuple
        (shape as a tuple of int, numpy.dtype, bool, int): Fortran order is
        True only for arrays of more than one dimension.

    Raises
    ------
    OSError
        The file cannot be opened.
    ValueError
        Not a ``.npy`` file, or a format version other than 1.0 and 2.0.
    """
    with open(path, "rb") as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported (only 1.0 and 2.0)")
        return tuple(shape), dtype, bool(fortran_order and len(shape) > 1), stream.tell()


def _read_npy(path, input_shape, chunk_size, header=None, item=None):
    """Yield the images of one .npy file (of the range of ``item``) through one small memory map per chunk."""
    try:
        shape, dtype, fortran_order, offset = header or read_npy_header(path)
    except Exception as error:  # noqa: BLE001
        yield BadInput(path, f"cannot be read as a .npy array ({describe_error(error)})")
        return
    if dtype.hasobject or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        yield BadInput(path, f"holds {dtype} values, not real pixel values")
        return
    layout = image_layout(shape[1:], input_shape) if len(shape) >= 3 else None
    if layout is None or layout[0]:
        yield BadInput(
            path,
            f"holds an array of shape {tuple(shape)}, but the network takes a stack of images of shape "
            f"{_expected_layouts(input_shape, cube=True)}",
        )
        return
    _, to_images = layout
    n_images = shape[0]
    image_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    complete = (os.path.getsize(path) - offset) // image_bytes
    whole = None
    if fortran_order and complete >= n_images:
        # The images are not contiguous: read them through one map of the whole file.
        whole = np.load(path, mmap_mode="r")
    readable = n_images if fortran_order else min(n_images, complete)
    if fortran_order and complete < n_images:
        readable = 0
    first, last = item.bounds(n_images) if item is not None else (0, n_images)
    for start in range(first, min(last, readable), chunk_size):
        stop = min(start + chunk_size, last, readable)
        if whole is not None:
            window = whole[start:stop]
        else:
            # A map of just this chunk, dropped once copied: the mapped pages of a
            # whole-file map would stay resident and grow with the number of images.
            window = np.memmap(path, dtype=dtype, mode="r", offset=offset + start * image_bytes,
                               shape=(stop - start,) + tuple(shape[1:]))
        data = np.array(window, dtype=np.float32)
        del window
        sources = [f"{path}[{index}]" for index in range(start, stop)]
        yield from _split_finite(sources, np.ascontiguousarray(to_images(data)))
    if readable < last:
        yield BadInput(
            f"{path}[{max(readable, first)}]",
            f"cannot be read: the file is truncated (it should hold {n_images} images, but ends within image "
            f"{readable})",
        )


class ImageReader:
    """Stream images from FITS files, folders, glob patterns, FITS cubes and ``.npy`` arrays.

    Parameters
    ----------
    inputs : str or list of str
        See :func:`expand_inputs`.
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        The network's (x, y, ndim).
    batch_size : int
        Images per batch.
    hdu : int, optional
        The FITS HDU that holds the image; by default the first HDU with data.
    skip_bad : bool
        If False (the default), iteration stops at the first bad input: the
        last batch holds the good images before it and names it in
        ``Batch.bad``. If True, bad inputs are listed in ``Batch.bad`` and
        reading goes on.
    exclude : iterable of str
        Files that folders and patterns must not yield (see :func:`expand_inputs`).

    Attributes
    ----------
    entries : list of (str, str)
        The expanded inputs, ``('fits' | 'npy', path)``.
    total : int
        The number of images, as known so far: each FITS file counts one until
        it is opened and found to be a cube.

    Examples
    --------
    >>> reader = ImageReader(["cutouts/"], "SDSS", batch_size=64)   # doctest: +SKIP
    >>> for batch in reader:                                         # doctest: +SKIP
    ...     probabilities = predict(batch.images)
    """

    def __init__(self, inputs, input_shape, batch_size=64, hdu=None, skip_bad=False, exclude=()):
        self.input_shape = _checks.check_input_shape(input_shape)
        self.batch_size = _checks.check_positive_int(batch_size, "batch_size")
        self.hdu = _checks.check_hdu(hdu)
        self.skip_bad = bool(skip_bad)
        self._inputs = expand_inputs_with_ranges(inputs, exclude)
        self.entries = [(item.kind, item.path) for item in self._inputs]
        self._npy_headers = {}
        self.total = 0
        for item in self._inputs:
            self.total += self._npy_count(item) if item.kind == "npy" else 1

    def _npy_count(self, item):
        try:
            header = self._npy_headers.get(item.path) or read_npy_header(item.path)
        except Exception:  # noqa: BLE001 - reported as a bad file when read
            return 1
        self._npy_headers[item.path] = header
        if not header[0]:
            return 1
        first, last = item.bounds(int(header[0][0]))
        return last - first

    def _found_cube(self, n_images):
        self.total += n_images - 1

    def items(self):
        """Yield the inputs as runs of good images (``_Chunk``) and :class:`BadInput`, in order."""
        for item in self._inputs:
            if item.kind == "npy":
                yield from _read_npy(item.path, self.input_shape, self.batch_size, self._npy_headers.get(item.path),
                                     item)
            else:
                yield from _read_fits(item.path, self.input_shape, self.hdu, self.batch_size, self._found_cube, item)

    def __iter__(self):
        batch_shape = (self.batch_size,) + self.input_shape
        buffer, sources, bad = None, [], []
        for item in self.items():
            if isinstance(item, BadInput):
                bad.append(item)
                if not self.skip_bad:
                    filled = len(sources)
                    yield Batch(sources, buffer[:filled] if buffer is not None else _empty(self.input_shape), bad)
                    return
                continue
            offset = 0
            while offset < len(item.sources):
                if buffer is None:
                    buffer = np.empty(batch_shape, dtype=np.float32)
                filled = len(sources)
                take = min(self.batch_size - filled, len(item.sources) - offset)
                buffer[filled : filled + take] = item.images[offset : offset + take]
                sources.extend(item.sources[offset : offset + take])
                offset += take
                if len(sources) == self.batch_size:
                    yield Batch(sources, buffer, bad)
                    buffer, sources, bad = None, [], []
        if sources or bad:
            filled = len(sources)
            yield Batch(sources, buffer[:filled] if buffer is not None else _empty(self.input_shape), bad)


def _empty(input_shape):
    return np.empty((0,) + tuple(input_shape), dtype=np.float32)
