"""Cutouts by RA/Dec from survey tiles and mosaics, made inside the prediction stream.

A survey astronomer starts from a catalogue (an id, RA and Dec per galaxy) and
the survey's images: overlapping tiles or mosaics, FITS files with a celestial
WCS, often at another pixel scale than the one GaMorNet was trained at.
:class:`CutoutReader` turns the two into batches of stamps of the network's
input size, centred on each row's RA/Dec, the same :class:`gamornet.io.images.Batch`
objects that :class:`gamornet.io.images.ImageReader` yields for files of cutouts. So
``gamornet predict --catalog ... --images ...`` classifies them in its one
batch loop, while the next stamps are cut in a background thread
(:meth:`gamornet.inference.predictor.Predictor.stream`), and ``gamornet cutouts`` writes them to a FITS
cube for inspection (:func:`write_stamps`). No stamp is ever written to disk on
the way to a prediction.

How a stamp is made
-------------------
1. **The images are indexed once.** Each file's header is read once; the sky
   positions of its corners, edge midpoints and centre give a spherical cap
   that holds its footprint, and the caps' centres go into a k-d tree. Each
   catalogue row is then compared with the few tiles near it, never with
   every tile, so a catalogue of a million rows opens each tile only when a
   stamp is cut from it (at most a few files are kept open at a time).
2. **One tile per row.** The tile that holds the whole stamp is used (if
   several do, the one where the stamp lies farthest from the edges; and if
   that stamp has NaN pixels, another tile that holds it whole, with fewer).
   If no tile holds the whole stamp, the tile that holds the largest part of
   it is used, and the row is flagged ``partial``.
3. **The network's pixel scale.** A tile whose pixel scale differs from the
   network's (:data:`gamornet.presets.PIXEL_SCALES`: SDSS 0.396, CANDELS 0.06
   arcsec/pixel) by more than 1 % is resampled to it with
   :func:`reproject.reproject_adaptive` (the anti-aliased adaptive resampling
   of DeForest 2004, Sol. Phys. 219, 3), which conserves the flux of images in
   counts or flux per pixel. Images in surface-brightness units (a BUNIT per
   steradian or per square arcsecond) are resampled without the flux
   rescaling, which keeps their surface brightness. The stamp is then centred
   on the RA/Dec exactly, with the tile's orientation. Stamps cut without
   resampling are the tile's own pixels: the catalogue position lies within
   half a pixel of the centre pixel (the same rounding as astropy's
   :class:`~astropy.nddata.Cutout2D`).
4. **Missing pixels are filled, and counted.** Pixels outside the tile, and
   NaN or infinite pixels in it, are filled with the median of the stamp's
   finite pixels: the local sky level, which is 0 in sky-subtracted images. A
   constant adds no structure that the network could read as part of a
   galaxy, and unlike 0 it keeps the background continuous in images whose sky
   was not subtracted. The flags say how many pixels were filled.

The flags
---------
Every row gets the columns of :data:`FLAG_COLUMNS`:

``off_image``
    True when no image covers any pixel of the stamp. The row has no stamp, and
    ``gamornet predict`` writes it with empty probabilities.
``partial``
    True when the stamp reaches beyond the edges of its tile.
``fraction_present``
    The fraction of the stamp's pixels that lie inside the tile (1 for a whole
    stamp, 0 off the images).
``nan_fraction``
    The fraction of the stamp's pixels that lie inside the tile but have no
    finite value there (blank or masked regions of a mosaic). A stamp with no
    finite pixel at all has no stamp either, and gets empty probabilities.
``tile``
    The image the stamp was cut from (empty when off the images).
``bad_coordinates``
    True for a row whose RA/Dec are missing or out of range, kept with
    ``skip_bad`` (``--skip-bad``) so that there is still one row per
    catalogue row: it has no stamp (``off_image`` is True too) and empty
    probabilities. Without ``skip_bad`` such rows stop the run before any
    stamp is cut.

Rows are counted from 1 in messages (the first row of the catalogue is row 1,
a header line not counted), as in the training catalogues' messages.

Catalogues and images
---------------------
A catalogue is a FITS, CSV, ECSV or Parquet table read with
:meth:`astropy.table.Table.read` (or an :class:`~astropy.table.Table`). Only
its id, RA and Dec columns are read
(:func:`gamornet.io.catalogues.read_sky_catalogue`): 24 bytes or so per
row, while the stamps are streamed a batch at a time. RA and Dec are in
degrees (ICRS; columns with an angle unit are converted), the id is the first
of ``id``, ``ID`` or ``objid`` (any case), or the row number if there is none.

The images must be of one band: files whose BUNIT or FILTER keywords differ
are refused. Each must be a 2-D image with a celestial WCS (any projection,
with or without SIP distortion; in any sky frame astropy knows). Every image
HDU of a multi-extension file (the CCDs of a DECam, HSC or Rubin exposure) is
a tile with its own WCS, named ``exposure.fits[HDU]`` in the ``tile`` flag; a
file whose image HDUs cover the same sky (image, mask and variance planes) is
refused, as is one with an image HDU without a celestial WCS: ``--hdu`` then
names the one to use.

Backend-neutral: imports neither TensorFlow nor tflearn. Resampling and the
footprint index need ``reproject`` (and SciPy, which it requires):
``pip install 'gamornet[survey]'``.
"""

import dataclasses
import itertools
import math
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from gamornet._utils import checks as _checks
from gamornet._utils.atomic import atomic_path
from gamornet._utils.progress import progress_bar
from gamornet.errors import PixelScaleWarning
from gamornet.io.catalogues import SkyCatalogue, read_sky_catalogue
from gamornet.io.images import Batch, MissingRow, describe_error, expand_inputs, find_image_hdu
from gamornet.presets import INPUT_SHAPES, PIXEL_SCALES

__all__ = [
    "FLAG_COLUMNS",
    "RESAMPLE_TOLERANCE",
    "Tile",
    "SurveyImages",
    "CutoutReader",
    "network_pixel_scale",
    "write_stamps",
]

#: The flag columns every catalogue row gets, in this order.
FLAG_COLUMNS = ("off_image", "partial", "fraction_present", "nan_fraction", "tile", "bad_coordinates")

#: Images whose pixel scale differs from the network's by more than this fraction are resampled.
RESAMPLE_TOLERANCE = 0.01

#: The adaptive-resampling kernel: Hann is three times faster than the Gaussian, blurs less, and conserves
#: the flux of a galaxy to better than 0.1 % (tests/test_cutouts.py).
_RESAMPLING_KERNEL = "hann"

#: At most this many tiles are kept open between rows.
_MAX_OPEN_FILES = 8

_DEGREE = math.pi / 180.0


def _import_optional(module, purpose):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed. Install the survey extra with: "
            "pip install 'gamornet[survey]'"
        ) from error


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Tile:
    """One survey image: where its pixels are and what they are.

    Attributes
    ----------
    path : str
        The FITS file.
    hdu : int
        The HDU that holds the image.
    shape : tuple of int
        (rows, columns) of the image.
    wcs : astropy.wcs.WCS
        Its celestial WCS.
    frame : astropy.coordinates.BaseCoordinateFrame
        The sky frame of the WCS.
    pixel_scale : float
        Pixel size (arcsec), the geometric mean of the two axes'.
    axis_scales : tuple of float
        Pixel size along each pixel axis (arcsec).
    bunit, band : str or None
        The BUNIT and FILTER keywords (of the image's HDU, else the primary's).
    name : str
        How the image is named in the ``tile`` flag and in messages: the
        path, followed by ``[HDU]`` for one of several images of a file
        (``exposure.fits[2]``).
    """

    path: str
    hdu: int
    shape: tuple
    wcs: object
    frame: object
    pixel_scale: float
    axis_scales: tuple
    bunit: object
    band: object
    name: str = None

    def __post_init__(self):
        if self.name is None:
            object.__setattr__(self, "name", self.path)

    @property
    def surface_brightness(self):
        """True when BUNIT is a surface brightness (per solid angle), which resampling must not rescale."""
        if not self.bunit:
            return False
        from astropy import units

        unit = units.Unit(self.bunit, parse_strict="silent")
        if isinstance(unit, units.UnrecognizedUnit):
            return False
        return dict(zip(unit.decompose().bases, unit.decompose().powers)).get(units.rad, 0) < 0


def _open_image_hdu(path, hdu):
    """(hdulist, hdu index, image HDU) of a survey image; the caller closes the list."""
    from astropy.io import fits

    try:
        hdulist = fits.open(path, memmap=False, lazy_load_hdus=True)
    except Exception as error:  # noqa: BLE001 - any failure means the file is not a readable FITS file
        raise OSError(f"cannot read the image {path!r} as FITS ({describe_error(error)})") from error
    image_hdu, reason = find_image_hdu(hdulist, hdu)
    if image_hdu is None:
        hdulist.close()
        raise ValueError(f"the image {path!r} cannot be used: {reason}")
    return hdulist, hdulist.index(image_hdu), image_hdu


def _read_tile(path, hdulist, index):
    """A :class:`Tile` from the header of HDU ``index`` of an open image file."""
    from astropy.wcs import WCS, FITSFixedWarning
    from astropy.wcs.utils import proj_plane_pixel_scales, wcs_to_celestial_frame

    image_hdu = hdulist[index]
    header = image_hdu.header
    shape = tuple(image_hdu.shape)
    if len(shape) != 2:
        raise ValueError(
            f"the image {path!r} (HDU {index}) holds an array of shape {shape}; survey images must be 2-D images "
            "(one band) with a celestial WCS"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, fobj=hdulist, relax=True)
    except Exception as error:  # noqa: BLE001 - astropy raises many kinds for malformed WCS keywords
        raise ValueError(
            f"the image {path!r} has a WCS that astropy cannot read ({describe_error(error)})"
        ) from error
    if not wcs.has_celestial:
        raise ValueError(
            f"the image {path!r} has no celestial WCS: expected sky axes (CTYPE1/CTYPE2 such as 'RA---TAN' and "
            f"'DEC--TAN', with CRVAL, CRPIX and CD or CDELT). Received CTYPE {tuple(wcs.wcs.ctype)}"
        )
    wcs = wcs.celestial
    try:
        frame = wcs_to_celestial_frame(wcs)
    except ValueError as error:
        raise ValueError(
            f"the image {path!r} has a sky frame astropy does not know ({describe_error(error)})"
        ) from None
    primary = hdulist[0].header
    bunit = header.get("BUNIT", primary.get("BUNIT"))
    band = header.get("FILTER", primary.get("FILTER"))
    scales = proj_plane_pixel_scales(wcs) * 3600.0  # the celestial WCS is in degrees
    if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
        raise ValueError(f"the image {path!r} has a WCS without a valid pixel scale (CD or CDELT): {scales} arcsec")
    return Tile(path=path, hdu=index, shape=shape, wcs=wcs, frame=frame, pixel_scale=float(np.sqrt(np.prod(scales))),
                axis_scales=tuple(float(scale) for scale in scales), bunit=bunit, band=band)


def _image_hdus(hdulist):
    """The indices of the HDUs of an open FITS file that hold an image (an image HDU with data)."""
    from astropy.io import fits

    return [index for index, hdu in enumerate(hdulist)
            if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and hdu.header.get("NAXIS", 0) > 0]


def _file_tiles(path, hdu):
    """The tiles of one file (opened once): the HDU asked for, else every image HDU (the CCDs of a
    multi-extension exposure).

    Every image HDU of a file is used or refused with a reason, never left out without a word: an HDU without a
    celestial WCS, or HDUs covering the same sky (the image, mask and variance planes of one image, not CCDs).
    """
    hdulist, first, _ = _open_image_hdu(path, hdu)
    with hdulist:
        indices = [first] if hdu is not None else _image_hdus(hdulist)
        if len(indices) <= 1:
            return [_read_tile(path, hdulist, first)]
        tiles = []
        for index in indices:
            try:
                tile = _read_tile(path, hdulist, index)
            except ValueError as error:
                raise ValueError(
                    f"{error}. The file {path!r} holds {len(indices)} images (HDUs {', '.join(map(str, indices))}), "
                    "all used as CCDs of one exposure; give the HDU of the image to use with --hdu (hdu=N) if the "
                    "others are not images of the sky"
                ) from None
            tiles.append(dataclasses.replace(tile, name=f"{path}[{index}]"))
    for one, other in itertools.combinations(tiles, 2):
        if one.shape == other.shape and np.allclose(_footprint(one)[0], _footprint(other)[0], rtol=0,
                                                    atol=one.pixel_scale / 3600.0 * _DEGREE):
            raise ValueError(
                f"the HDUs {one.hdu} and {other.hdu} of {path!r} cover the same sky: they are planes of one "
                "image (such as image, mask and variance), not CCDs of an exposure. Give the HDU of the image "
                "with --hdu (hdu=N)"
            )
    return tiles


def _check_one_band(tiles):
    first = tiles[0]
    for tile in tiles[1:]:
        for keyword, attribute in (("BUNIT", "bunit"), ("FILTER", "band")):
            if getattr(tile, attribute) != getattr(first, attribute):
                raise ValueError(
                    f"the images are not all of one band and unit: {first.path!r} has {keyword} = "
                    f"{getattr(first, attribute)!r} but {tile.path!r} has {keyword} = {getattr(tile, attribute)!r}. "
                    "Give the images of one band at a time"
                )


def _unit_vectors(ra, dec):
    ra, dec = np.asarray(ra, dtype=np.float64) * _DEGREE, np.asarray(dec, dtype=np.float64) * _DEGREE
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _footprint(tile):
    """(unit vector of the centre, radius in radians) of a cap on the sky that holds the whole image."""
    rows, columns = tile.shape
    x = np.array([-0.5, (columns - 1) / 2.0, columns - 0.5])
    y = np.array([-0.5, (rows - 1) / 2.0, rows - 0.5])
    xx, yy = np.meshgrid(x, y)
    sky = tile.wcs.pixel_to_world(xx.ravel(), yy.ravel()).icrs
    vectors = _unit_vectors(sky.ra.deg, sky.dec.deg)
    if not np.all(np.isfinite(vectors)):
        raise ValueError(f"the image {tile.path!r} has corners outside its WCS projection; it cannot be indexed")
    centre = vectors[4]
    radius = float(np.max(np.arccos(np.clip(vectors @ centre, -1.0, 1.0))))
    return centre, radius * 1.01 + 1e-9


class SurveyImages:
    """Survey images of one band (tiles or mosaics), with their sky footprints indexed once.

    Parameters
    ----------
    images : str or list of str
        FITS files, folders of FITS files or glob patterns (as
        :func:`gamornet.io.images.expand_inputs`); tiles may overlap. A file given
        twice is used once.
    hdu : int, optional
        The HDU that holds the image. By default every image HDU of a file is
        a tile of its own, with its own WCS (the CCDs of a multi-extension
        exposure, named ``path[HDU]`` in the ``tile`` flag); a file whose
        image HDUs cover the same sky (image, mask and variance planes) or
        lack a celestial WCS is refused: give the image's HDU.
    exclude : iterable of str
        Files that folders and patterns must not match (the outputs of the
        run that reads them).

    Attributes
    ----------
    tiles : list of Tile
        The images, in the order given.

    Raises
    ------
    FileNotFoundError
        A path that does not exist, or a pattern that matches no file.
    OSError
        A file that is not FITS.
    ValueError
        An image that is not 2-D, has no celestial WCS, or whose BUNIT or
        FILTER differ from the first image's.
    """

    def __init__(self, images, hdu=None, exclude=()):
        hdu = _checks.check_hdu(hdu)
        paths, seen = [], set()
        for kind, path in expand_inputs(images, exclude):
            if kind != "fits":
                raise ValueError(f"survey images must be FITS files with a celestial WCS. Received: {path!r}")
            if os.path.realpath(path) not in seen:
                seen.add(os.path.realpath(path))
                paths.append(path)
        self.tiles = [tile for path in paths for tile in _file_tiles(path, hdu)]
        _check_one_band(self.tiles)
        footprints = [_footprint(tile) for tile in self.tiles]
        self._centres = np.array([centre for centre, _ in footprints])
        self._radii = np.array([radius for _, radius in footprints])
        spatial = _import_optional("scipy.spatial", "indexing the footprints of survey images")
        self._tree = spatial.cKDTree(self._centres)

    def __len__(self):
        return len(self.tiles)

    @property
    def bunit(self):
        """The images' BUNIT (None when they have none)."""
        return self.tiles[0].bunit

    @property
    def band(self):
        """The images' FILTER (None when they have none)."""
        return self.tiles[0].band

    def candidates(self, ra, dec, reach=0.0):
        """The images whose footprint comes within ``reach`` of each position.

        Parameters
        ----------
        ra, dec : numpy.ndarray
            Positions (degrees, ICRS).
        reach : float or numpy.ndarray
            How far beyond each image's footprint to look (radians): a stamp's
            half-diagonal, so that images holding part of a stamp are found.
            One value, or one per image.

        Returns
        -------
        list of numpy.ndarray of int
            Per position, the indices of the images that may hold it, in
            increasing order.
        """
        vectors = _unit_vectors(ra, dec)
        limits = np.minimum(self._radii + reach, math.pi)
        chord = 2.0 * math.sin(float(limits.max()) / 2.0)
        found = []
        for vector, near in zip(vectors, self._tree.query_ball_point(vectors, chord)):
            near = np.asarray(sorted(near), dtype=np.int64)
            if len(near):
                near = near[self._centres[near] @ vector >= np.cos(limits[near])]
            found.append(near)
        return found


# --------------------------------------------------------------------------- the reader


def network_pixel_scale(input_shape, pixel_scale=None):
    """The pixel scale (arcsec) of the images a network of ``input_shape`` was trained on.

    Parameters
    ----------
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        The network's input shape. The published shapes have the published
        scales (:data:`gamornet.presets.PIXEL_SCALES`).
    pixel_scale : float, optional
        The scale of a custom network (arcsec/pixel); it wins when given.

    Returns
    -------
    float or None
        None for a custom shape without ``pixel_scale``.

    Raises
    ------
    ValueError
        A ``pixel_scale`` that is not a positive number, or an invalid
        ``input_shape``.
    """
    if pixel_scale is not None:
        if isinstance(pixel_scale, bool) or not isinstance(pixel_scale, (int, float, np.floating, np.integer)) or not (
            np.isfinite(pixel_scale) and pixel_scale > 0
        ):
            raise ValueError(f"pixel_scale must be a positive number of arcsec per pixel. Received: {pixel_scale!r}")
        return float(pixel_scale)
    if isinstance(input_shape, str) and input_shape in PIXEL_SCALES:
        return PIXEL_SCALES[input_shape]
    shape = _checks.check_input_shape(input_shape)
    for name, preset_shape in INPUT_SHAPES.items():
        if shape == tuple(preset_shape):
            return PIXEL_SCALES[name]
    return None


@dataclass(frozen=True)
class _Plan:
    """How stamps are cut from one tile."""

    resample: bool
    window: tuple  # (rows, columns) the stamp covers, in the tile's pixels
    read: tuple  # (rows, columns) read around the position (the window and the resampling kernel's margin)
    reach: float  # the stamp's half-diagonal (radians)


@dataclass(frozen=True)
class _Option:
    tile: int
    x: float
    y: float
    fraction: float
    edge: float


@dataclass
class _Row:
    source: str
    image: object  # numpy.ndarray (rows, columns), or None for a row without a stamp
    values: dict


class _RawImage:
    """An uncompressed, unscaled image read straight from its file: each read maps just the rows it needs.

    Much faster than an astropy section (which reads row by row), and unlike a map of the whole file it never
    keeps the pages it read resident once the stamp is copied out.
    """

    def __init__(self, stream, offset, dtype, shape):
        self.stream, self.offset, self.dtype, self.shape = stream, offset, dtype, shape

    def __getitem__(self, slices):
        rows, columns = slices
        row_bytes = self.shape[1] * self.dtype.itemsize
        window = np.memmap(self.stream, dtype=self.dtype, mode="r", offset=self.offset + rows.start * row_bytes,
                           shape=(rows.stop - rows.start, self.shape[1]))
        pixels = np.array(window[:, columns], dtype=np.float32)
        del window
        return pixels


def _raw_image(path, hdulist, index, image_hdu):
    """A :class:`_RawImage` of the HDU, or None when its pixels need astropy (compressed file or HDU, scaling,
    BLANK values)."""
    from astropy.io import fits

    header = image_hdu.header
    if isinstance(image_hdu, fits.CompImageHDU) or any(keyword in header for keyword in ("BSCALE", "BZERO", "BLANK")):
        return None
    dtypes = {-32: ">f4", -64: ">f8", 8: "u1", 16: ">i2", 32: ">i4", 64: ">i8"}
    if header.get("BITPIX") not in dtypes:
        return None
    with open(path, "rb") as stream:
        if stream.read(2) == b"\x1f\x8b":  # gzip
            return None
    info = hdulist.fileinfo(index)
    if info is None or info.get("datLoc") is None:
        return None
    return _RawImage(open(path, "rb"), int(info["datLoc"]), np.dtype(dtypes[header["BITPIX"]]), tuple(image_hdu.shape))


class _OpenFiles:
    """The tiles' files, opened when first needed; at most ``_MAX_OPEN_FILES`` stay open (least recently used
    are closed first). Pixels are read for the stamp only: straight from the file for plain images, through
    astropy's sections for scaled or tile-compressed ones."""

    def __init__(self, tiles):
        self.tiles = tiles
        self._open = OrderedDict()

    def _entry(self, index):
        if index in self._open:
            self._open.move_to_end(index)
            return self._open[index]
        tile = self.tiles[index]
        hdulist, hdu_index, image_hdu = _open_image_hdu(tile.path, tile.hdu)
        self._open[index] = (hdulist, image_hdu.section, _raw_image(tile.path, hdulist, hdu_index, image_hdu))
        if len(self._open) > _MAX_OPEN_FILES:
            _, oldest = self._open.popitem(last=False)
            self._close(oldest)
        return self._open[index]

    def section(self, index):
        """The astropy section of a tile's image."""
        return self._entry(index)[1]

    def pixels(self, index, slices):
        """The pixels of a tile's image in ``slices`` (rows, columns), as float32."""
        _, section, raw = self._entry(index)
        return raw[slices] if raw is not None else np.asarray(section[slices], dtype=np.float32)

    @staticmethod
    def _close(entry):
        hdulist, _, raw = entry
        hdulist.close()
        if raw is not None:
            raw.stream.close()

    def close(self):
        for entry in self._open.values():
            self._close(entry)
        self._open.clear()


def _overlap(tile_shape, window, x, y):
    """Per position: the fraction of a window centred there that lies in the tile, and its distance from the
    tile's edges in pixels (negative when it crosses them). The window starts at ceil(position - size / 2), as
    astropy's ``overlap_slices`` (and so ``Cutout2D``) rounds it."""
    fractions = np.ones(len(x))
    edges = np.full(len(x), np.inf)
    for size, length, position in zip(window, tile_shape, (y, x)):
        start = np.ceil(position - size / 2.0)
        stop = start + size
        fractions *= np.clip(np.minimum(stop, length) - np.maximum(start, 0), 0, size) / size
        edges = np.minimum(edges, np.minimum(start, length - stop))
    return fractions, edges


class CutoutReader:
    """Stream stamps cut from survey images at the RA/Dec of each catalogue row, in batches.

    Iterating yields :class:`gamornet.io.images.Batch` objects, as
    :class:`gamornet.io.images.ImageReader` does: ``images`` holds the stamps of up
    to ``batch_size`` rows, ``sources`` their ids (as text), ``columns`` the
    id, RA, Dec and the flags of :data:`FLAG_COLUMNS` per stamp, ``missing``
    the rows without a stamp (off the images, no finite pixel, or unusable
    RA/Dec kept with ``skip_bad``) with the same columns; ``bad`` stays
    empty: every catalogue row is a row. Rows come in catalogue order. Only one batch of stamps is
    in memory at a time, whatever the number of rows.

    Parameters
    ----------
    catalog : str, astropy.table.Table or gamornet.io.catalogues.SkyCatalogue
        The catalogue (see :func:`gamornet.io.catalogues.read_sky_catalogue`).
    images : str, list of str or SurveyImages
        FITS files, folders or glob patterns of one band (see
        :class:`SurveyImages`).
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        The network's (x, y, 1): the stamps' size in pixels (rows, columns).
    batch_size : int
        Stamps per batch.
    pixel_scale : float, optional
        The network's pixel scale (arcsec); default that of the published
        shape (:func:`network_pixel_scale`). Needed for a custom shape, unless
        ``resample`` is False.
    resample : bool
        Resample images whose pixel scale differs from the network's by more
        than 1 % (:data:`RESAMPLE_TOLERANCE`), conserving flux (default True).
        If False, stamps are cut in the images' own pixels and a
        :class:`gamornet.errors.PixelScaleWarning` states the mismatch.
    hdu : int, optional
        The HDU that holds each image; by default every image HDU of each
        file (see :class:`SurveyImages`).
    skip_bad : bool
        If False (the default), rows with NaN or out-of-range RA/Dec are an
        error, raised here, before any stamp is cut. If True each is kept as a
        row without a stamp, flagged ``bad_coordinates`` (one row per
        catalogue row); :attr:`bad_rows` says why.
    id_column, ra_column, dec_column : str, optional
        The catalogue's columns (see :func:`gamornet.io.catalogues.read_sky_catalogue`).
    exclude : iterable of str
        Files that folders and patterns of ``images`` must not match.

    Attributes
    ----------
    catalog : gamornet.io.catalogues.SkyCatalogue
    images : SurveyImages
    input_shape : tuple of int
    pixel_scale : float or None
        The network's pixel scale (arcsec).
    total : int
        The number of catalogue rows.
    columns : tuple of str
        The names of the per-row columns: the id, RA and Dec columns, then
        :data:`FLAG_COLUMNS`.
    bad_rows : dict of int to str
        The rows skipped for their RA/Dec, and why.

    Raises
    ------
    ValueError
        A multi-band ``input_shape``, an unknown pixel scale, unusable RA/Dec
        (without ``skip_bad``), a catalogue column named like a flag, and the
        errors of :func:`gamornet.io.catalogues.read_sky_catalogue` and :class:`SurveyImages`.

    Examples
    --------
    >>> reader = CutoutReader("galaxies.fits", "tiles/*.fits", "SDSS")   # doctest: +SKIP
    >>> for batch in reader:                                             # doctest: +SKIP
    ...     probabilities = predict(batch.images)
    """

    def __init__(self, catalog, images, input_shape, batch_size=64, *, pixel_scale=None, resample=True, hdu=None,
                 skip_bad=False, id_column=None, ra_column=None, dec_column=None, exclude=()):
        self.input_shape = _checks.check_input_shape(input_shape)
        if self.input_shape[2] != 1:
            raise ValueError(
                f"stamps cut from survey images have one band, but input_shape {self.input_shape} has "
                f"{self.input_shape[2]}; give a single-band shape (x, y, 1)"
            )
        self.batch_size = _checks.check_positive_int(batch_size, "batch_size")
        self.resample = bool(resample)
        self.skip_bad = bool(skip_bad)
        self.pixel_scale = network_pixel_scale(input_shape, pixel_scale)
        if self.pixel_scale is None and self.resample:
            raise ValueError(
                f"the network's pixel scale is not known for input_shape {self.input_shape}: give pixel_scale (the "
                "arcsec per pixel of the images it was trained on), or turn resampling off to cut stamps in the "
                "images' own pixels"
            )
        self.catalog = catalog if isinstance(catalog, SkyCatalogue) else read_sky_catalogue(
            catalog, id_column=id_column, ra_column=ra_column, dec_column=dec_column)
        self.columns = (self.catalog.id_name, self.catalog.ra_name, self.catalog.dec_name) + FLAG_COLUMNS
        clash = set(self.columns[:3]) & set(FLAG_COLUMNS)
        if clash:
            raise ValueError(f"the catalogue's column {sorted(clash)[0]!r} has the name of a flag column "
                             f"({', '.join(FLAG_COLUMNS)}); rename it")
        self.bad_rows = self.catalog.bad_rows()
        if self.bad_rows and not self.skip_bad:
            raise ValueError(self._bad_rows_message())
        self.images = images if isinstance(images, SurveyImages) else SurveyImages(images, hdu, exclude)
        self.total = len(self.catalog)
        self._plans = [self._plan(tile) for tile in self.images.tiles]
        self._stamp_size = self.input_shape[0] * self.input_shape[1]
        self._reach = np.array([plan.reach for plan in self._plans])
        self._warn_about_scales()

    def _bad_rows_message(self):
        rows = sorted(self.bad_rows)
        listed = "; ".join(f"row {row + 1} ({self.catalog.id_name} {self.catalog.source(row)}): "
                           f"{self.bad_rows[row]}" for row in rows[:5])
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        return (f"{len(rows)} rows of the catalogue {self.catalog.name} have unusable coordinates (RA must be a "
                f"number of degrees in 0-360, Dec in -90 to +90; rows counted from 1): {listed}{more}. Fix them, or "
                "keep these rows without a stamp, flagged bad_coordinates (skip_bad=True, --skip-bad)")

    def _plan(self, tile):
        rows, columns = self.input_shape[:2]
        resample = self.resample and abs(tile.pixel_scale / self.pixel_scale - 1.0) > RESAMPLE_TOLERANCE
        if not resample:
            window = read = (rows, columns)
            arcsec = (rows * tile.axis_scales[1], columns * tile.axis_scales[0])
        else:
            # Output rows and columns follow the tile's pixel axes (the stamp keeps the tile's orientation).
            factors = (self.pixel_scale / tile.axis_scales[1], self.pixel_scale / tile.axis_scales[0])
            window = tuple(int(math.ceil(size * factor)) for size, factor in zip((rows, columns), factors))
            read = tuple(size + 2 * (int(math.ceil(2 * max(factor, 1.0))) + 2) for size, factor in zip(window, factors))
            arcsec = (rows * self.pixel_scale, columns * self.pixel_scale)
        reach = 0.5 * math.hypot(*arcsec) / 3600.0 * _DEGREE * 1.01
        return _Plan(resample=resample, window=window, read=read, reach=reach)

    def _warn_about_scales(self):
        if self.resample or self.pixel_scale is None:
            return
        off = [tile for tile in self.images.tiles
               if abs(tile.pixel_scale / self.pixel_scale - 1.0) > RESAMPLE_TOLERANCE]
        if not off:
            return
        listed = ", ".join(f"{tile.path!r} {tile.pixel_scale:.4g}" for tile in off[:3]) + (" ..." if len(off) > 3 else "")
        ratios = sorted({round(self.pixel_scale / tile.pixel_scale, 2) for tile in off})
        warnings.warn(PixelScaleWarning(
            f"{len(off)} of {len(self.images)} images have a pixel scale other than the network's "
            f"{self.pixel_scale:.4g} arcsec/pixel ({listed} arcsec/pixel). With resampling turned off their stamps "
            f"are cut in their own pixels, so galaxies look {' to '.join(f'{r:g}' for r in ratios)} times as large "
            "to the network as in the images it was trained on"
        ), stacklevel=3)

    # ----------------------------------------------------------------- choosing tiles

    def _tile_coordinates(self, index, ra, dec):
        """RA/Dec (ICRS) as (longitude, latitude) in the tile's own sky frame (degrees)."""
        from astropy.coordinates import ICRS, SkyCoord

        frame = self.images.tiles[index].frame
        if isinstance(frame, ICRS):
            return np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
        spherical = SkyCoord(ra, dec, unit="deg", frame="icrs").transform_to(frame).spherical
        return spherical.lon.deg, spherical.lat.deg

    def _pixel_positions(self, index, ra, dec):
        """(x, y): 0-based pixel positions of RA/Dec in a tile (NaN where the WCS has no solution)."""
        tile = self.images.tiles[index]
        longitude, latitude = self._tile_coordinates(index, ra, dec)
        world = [longitude, latitude] if tile.wcs.wcs.lng == 0 else [latitude, longitude]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x, y = tile.wcs.all_world2pix(world[0], world[1], 0, quiet=True)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def _options(self, rows):
        """Per row: the tiles that hold part of its stamp, best first (whole stamps first, then by coverage)."""
        ra, dec = self.catalog.ra[rows], self.catalog.dec[rows]
        members = {}
        for position, near in enumerate(self.images.candidates(ra, dec, self._reach)):
            for index in near:
                members.setdefault(int(index), []).append(position)
        options = [[] for _ in rows]
        for index, positions in members.items():
            positions = np.asarray(positions)
            x, y = self._pixel_positions(index, ra[positions], dec[positions])
            fractions, edges = _overlap(self.images.tiles[index].shape, self._plans[index].window, x, y)
            for position, xi, yi, fraction, edge in zip(positions, x, y, fractions, edges):
                if fraction > 0:
                    options[position].append(_Option(index, float(xi), float(yi), float(fraction), float(edge)))
        for choices in options:
            choices.sort(key=lambda option: (-option.fraction, -option.edge, option.tile))
        return options

    # ----------------------------------------------------------------- cutting

    def _native_stamp(self, option, files):
        from astropy.nddata.utils import overlap_slices

        shape = self.input_shape[:2]
        tile = self.images.tiles[option.tile]
        large, small = overlap_slices(tile.shape, shape, (option.y, option.x), mode="partial")
        stamp = np.full(shape, np.nan, dtype=np.float32)
        present = np.zeros(shape, dtype=bool)
        stamp[small] = files.pixels(option.tile, large)
        present[small] = True
        return stamp, present

    def _stamp_wcs(self, tile, longitude, latitude):
        """A TAN WCS of the network's pixel scale, centred on the position, with the tile's orientation."""
        from astropy.wcs import WCS

        rows, columns = self.input_shape[:2]
        source = tile.wcs.wcs
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = [ctype[:4].ljust(4, "-") + "-TAN" for ctype in source.ctype]
        wcs.wcs.cunit = ["deg", "deg"]
        crval = [0.0, 0.0]
        crval[source.lng], crval[source.lat] = longitude, latitude
        wcs.wcs.crval = crval
        wcs.wcs.crpix = [(columns + 1) / 2.0, (rows + 1) / 2.0]
        matrix = tile.wcs.pixel_scale_matrix / (np.asarray(tile.axis_scales) / 3600.0)[np.newaxis, :]
        wcs.wcs.cd = matrix * (self.pixel_scale / 3600.0)
        if source.radesys:
            wcs.wcs.radesys = source.radesys
        if np.isfinite(source.equinox):
            wcs.wcs.equinox = source.equinox
        wcs.wcs.set()
        return wcs

    def _resampled_stamp(self, option, files, row):
        from astropy.nddata import Cutout2D

        reproject = _import_optional("reproject", "resampling survey images to the network's pixel scale")
        tile = self.images.tiles[option.tile]
        plan = self._plans[option.tile]
        cutout = Cutout2D(files.section(option.tile), (option.x, option.y), plan.read, wcs=tile.wcs, mode="trim")
        longitude, latitude = self._tile_coordinates(option.tile, self.catalog.ra[row:row + 1],
                                                     self.catalog.dec[row:row + 1])
        stamp_wcs = self._stamp_wcs(tile, float(longitude[0]), float(latitude[0]))
        shape = self.input_shape[:2]
        stamp, _ = reproject.reproject_adaptive(
            (np.asarray(cutout.data, dtype=np.float64), cutout.wcs), stamp_wcs, shape_out=shape,
            conserve_flux=not tile.surface_brightness, kernel=_RESAMPLING_KERNEL, boundary_mode="ignore_threshold",
        )
        margin = (plan.read[0] - plan.window[0]) // 2
        if option.edge >= margin:
            present = np.ones(shape, dtype=bool)
        else:
            # Near an edge: which stamp pixels fall inside the tile.
            rows, columns = np.indices(shape)
            x, y = tile.wcs.world_to_pixel_values(*stamp_wcs.pixel_to_world_values(columns.ravel(), rows.ravel()))
            inside = (x >= -0.5) & (x < tile.shape[1] - 0.5) & (y >= -0.5) & (y < tile.shape[0] - 0.5)
            present = inside.reshape(shape)
        return stamp.astype(np.float32), present

    def _cut(self, option, files, row):
        try:
            if self._plans[option.tile].resample:
                return self._resampled_stamp(option, files, row)
            return self._native_stamp(option, files)
        except ImportError:
            raise
        except Exception as error:  # noqa: BLE001 - a truncated or corrupt image file
            raise OSError(
                f"cannot read the pixels of {self.images.tiles[option.tile].name!r} for row {row + 1} "
                f"({self.catalog.id_name} {self.catalog.source(row)}): {describe_error(error)}"
            ) from error

    def _row(self, row, options, files):
        """The stamp of one row, from the best of its options, with its flags."""
        values = {self.catalog.id_name: self.catalog.ids[row], self.catalog.ra_name: self.catalog.ra[row],
                  self.catalog.dec_name: self.catalog.dec[row]}
        source = self.catalog.source(row)
        if not options or row in self.bad_rows:
            values.update(off_image=True, partial=False, fraction_present=0.0, nan_fraction=0.0, tile="",
                          bad_coordinates=row in self.bad_rows)
            return _Row(source, None, values)
        best = None
        for option in options:  # whole stamps first, then by the share of the stamp inside the tile
            if best is not None and option.fraction * self._stamp_size <= best[3]:
                break  # no later option holds as many real pixels
            stamp, present = self._cut(option, files, row)
            finite = np.isfinite(stamp) & present
            real = int(np.count_nonzero(finite))
            if best is None or real > best[3]:
                best = (option, stamp, present, real, finite)
            if real == self._stamp_size:
                break
        option, stamp, present, real, finite = best
        missing_inside = int(np.count_nonzero(present)) - real
        fraction_present = float(np.count_nonzero(present)) / present.size
        values.update(off_image=False, partial=fraction_present < 1.0, fraction_present=fraction_present,
                      nan_fraction=missing_inside / present.size, tile=self.images.tiles[option.tile].name,
                      bad_coordinates=False)
        if not finite.any():
            return _Row(source, None, values)
        if not finite.all():
            stamp[~finite] = np.median(stamp[finite])
        return _Row(source, stamp, values)

    def rows(self):
        """Yield a ``_Row`` (with its stamp, or None) for every catalogue row, in order."""
        files = _OpenFiles(self.images.tiles)
        try:
            for start in range(0, self.total, self.batch_size):
                rows = [row for row in range(start, min(start + self.batch_size, self.total))
                        if row not in self.bad_rows]
                options = dict(zip(rows, self._options(np.asarray(rows, dtype=np.int64)))) if rows else {}
                for row in range(start, min(start + self.batch_size, self.total)):
                    yield self._row(row, options.get(row, []), files)
        finally:
            files.close()

    @property
    def key_columns(self):
        """The columns that name a row in a table of predictions: the catalogue's id, RA and Dec."""
        return self.columns[:3]

    @property
    def extra_columns(self):
        """The columns that follow the predictions in a table: :data:`FLAG_COLUMNS`."""
        return self.columns[3:]

    @property
    def entries(self):
        """The files read: ``('catalog', path)`` (when read from a file), then ``('fits', path)`` per image."""
        catalog = [("catalog", self.catalog.path)] if self.catalog.path is not None else []
        paths = dict.fromkeys(tile.path for tile in self.images.tiles)  # a multi-extension file once
        return catalog + [("fits", path) for path in paths]

    def column_dtypes(self):
        """The dtype of each of :attr:`columns`."""
        catalog = self.catalog
        return {catalog.id_name: catalog.ids.dtype, catalog.ra_name: np.dtype(np.float64),
                catalog.dec_name: np.dtype(np.float64), "off_image": np.dtype(bool), "partial": np.dtype(bool),
                "fraction_present": np.dtype(np.float64), "nan_fraction": np.dtype(np.float64), "tile": np.dtype(str),
                "bad_coordinates": np.dtype(bool)}

    def __iter__(self):
        pending = _PendingBatch(self)
        for item in self.rows():
            pending.add(item)
            if pending.full():
                yield pending.batch()
                pending = _PendingBatch(self)
        if pending.sources or pending.missing:
            yield pending.batch()


class _PendingBatch:
    """The batch being gathered: stamps written into one preallocated array."""

    def __init__(self, reader):
        self.reader = reader
        self.images = np.empty((reader.batch_size,) + reader.input_shape, dtype=np.float32)
        self.sources, self.missing, self.bad = [], [], []
        self.values = {name: [] for name in reader.columns}

    def add(self, row):
        if row.image is None:
            self.missing.append(MissingRow(row.source, row.values, len(self.sources)))
            return
        self.images[len(self.sources), ..., 0] = row.image
        self.sources.append(row.source)
        for name, value in row.values.items():
            self.values[name].append(value)

    def full(self):
        # Rows without stamps count too, so that a long run of them never grows a batch without bound.
        return len(self.sources) == self.reader.batch_size or len(self.missing) >= self.reader.batch_size

    def batch(self):
        dtypes = self.reader.column_dtypes()
        columns = {name: np.asarray(values, dtype=dtypes[name]) for name, values in self.values.items()}
        return Batch(self.sources, self.images[: len(self.sources)], self.bad, columns, self.missing)


# --------------------------------------------------------------------------- writing stamps


def _cube_header(reader, n_planes):
    from astropy.io import fits

    rows, columns = reader.input_shape[:2]
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 3
    header["NAXIS1"] = columns
    header["NAXIS2"] = rows
    header["NAXIS3"] = n_planes
    header["EXTEND"] = True
    if reader.images.bunit is not None:
        header["BUNIT"] = reader.images.bunit
    if reader.images.band is not None:
        header["FILTER"] = reader.images.band
    native = [tile.pixel_scale for tile in reader.images.tiles]
    if reader.pixel_scale is not None and all(
        plan.resample or abs(scale / reader.pixel_scale - 1) <= RESAMPLE_TOLERANCE
        for plan, scale in zip(reader._plans, native)
    ):
        header["PIXSCALE"] = (reader.pixel_scale, "[arcsec/pixel] of the stamps")
    elif max(native) / min(native) - 1 <= RESAMPLE_TOLERANCE:
        header["PIXSCALE"] = (float(np.median(native)), "[arcsec/pixel] of the stamps (the images')")
    header["RESAMPLE"] = (reader.resample, "images at other pixel scales resampled")
    header["COMMENT"] = "Stamps cut by gamornet cutouts: plane i is row i of the ROWS table."
    header["COMMENT"] = "Rows without a stamp (off_image, no finite pixel, bad_coordinates): planes of NaN."
    header["COMMENT"] = "Missing pixels of partial stamps: filled with the stamp's median."
    return header


def write_stamps(reader, path, progress=True):
    """Write the stamps of a :class:`CutoutReader` to a FITS file, for inspection.

    The primary HDU is a cube with one plane per catalogue row, in catalogue
    order; rows without a stamp (unusable RA/Dec kept with ``skip_bad`` too) have a
    plane of NaN. The ``ROWS`` table HDU holds, per plane, the id, RA, Dec and
    the flags. The file is written under a temporary name and renamed into
    place when complete. ``gamornet predict`` reads such a cube directly.

    Parameters
    ----------
    reader : CutoutReader
    path : str
        The FITS file to write. Its folder must exist.
    progress : bool
        Show a progress bar on standard error.

    Returns
    -------
    dict
        Counts of rows: ``'rows'`` (planes written), ``'stamps'``,
        ``'partial'``, ``'off_image'``, ``'no_finite_pixel'`` and ``'skipped'``
        (rows with bad RA/Dec kept with ``skip_bad``: planes of NaN, not
        counted as off the images).
    """
    from astropy.io import fits
    from astropy.table import Table

    n_planes = reader.total
    blank = np.full(reader.input_shape[:2], np.nan, dtype=np.float32)
    values = {name: [] for name in reader.columns}
    counts = dict(rows=0, stamps=0, partial=0, off_image=0, no_finite_pixel=0, skipped=0)
    with atomic_path(path, suffix=".fits") as temporary:
        stream = fits.StreamingHDU(temporary, _cube_header(reader, n_planes))
        try:
            with progress_bar(reader.total, "Cutting stamps", unit="rows", enabled=progress) as bar:
                for batch in reader:
                    for item in batch.in_order():
                        if isinstance(item, MissingRow):
                            row_values, plane = item.columns, blank
                            if item.columns["bad_coordinates"]:
                                counts["skipped"] += 1
                            else:
                                counts["off_image" if item.columns["off_image"] else "no_finite_pixel"] += 1
                        else:
                            row_values = {name: batch.columns[name][item] for name in reader.columns}
                            plane = batch.images[item, ..., 0]
                            counts["stamps"] += 1
                            counts["partial"] += bool(row_values["partial"])
                        stream.write(plane.astype(">f4"))
                        for name in reader.columns:
                            values[name].append(row_values[name])
                    counts["rows"] += len(batch.sources) + len(batch.missing)
                    bar.update(counts["rows"])
        finally:
            stream.close()
        dtypes = reader.column_dtypes()
        table = Table([np.asarray(values[name], dtype=dtypes[name]) for name in reader.columns], names=reader.columns)
        with fits.open(temporary, mode="append") as hdulist:
            hdulist.append(fits.BinTableHDU(table, name="ROWS"))
    return counts
