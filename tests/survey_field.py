"""A small simulated survey field: GalSim galaxies at known sky positions, written as FITS tiles with a TAN WCS.

The field is one master pixel grid of CANDELS-like pixels (0.06 arcsec) with one TAN projection. Galaxies are
drawn into it with GalSim at known pixel positions (their RA/Dec follow from the projection), Gaussian noise of
known standard deviation is added, and the grid is written as two overlapping tiles (each a window of the grid,
its WCS the grid's with CRPIX shifted). A third tile, elsewhere on the sky and without noise, holds one galaxy
drawn at 0.04 arcsec/pixel with a rotated WCS: stamps cut from it must be resampled.

Each galaxy's *direct* stamp is drawn separately with GalSim, on the pixel grid where the stamp should be: the
field's pixels around the pixel nearest the galaxy's position, or, for the resampled tile, the network's pixels
centred on the position. Nothing here uses gamornet.survey.cutouts.
"""

import dataclasses
import math
import os

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from gamornet.training.simulate import CANDELS, render_galaxy, sample_parameters

SCALE = 0.06  # arcsec/pixel: the field's and the CANDELS network's
SHAPE = (83, 83)  # the CANDELS stamp (rows, columns)
GRID = (300, 420)  # rows, columns of the master grid
CENTRE = (150.1, 2.2)  # RA, Dec (degrees) of the grid's reference pixel
NOISE = 20.0  # standard deviation of the field's Gaussian noise (ADU)
TILES = {"tile_a.fits": slice(0, 260), "tile_b.fits": slice(160, 420)}  # the two tiles' columns of the grid
FINE_SCALE = 0.04  # arcsec/pixel of the third tile
FINE_SHAPE = (200, 200)
FINE_ROTATION = 30.0  # degrees
FINE_CENTRE = (150.1, 2.21)  # RA, Dec of the third tile's centre: 36 arcsec north of the field
BUNIT = "ADU"
FILTER = "F160W"

#: Galaxies: name, (column, row) in the master grid (0-based), what the test expects of its stamp.
PLACES = (
    ("in_a_with_nan", (80.3, 150.6)),  # tile A only; a small NaN patch in its stamp
    ("whole_in_b", (230.4, 110.2)),  # partial in A (crosses its right edge), whole in B
    ("overlap_nan_in_a", (205.2, 230.7)),  # whole in both, farther from A's edge; NaN in A there, so B is used
    ("in_b", (340.6, 200.4)),  # tile B only
    ("edge", (60.2, 285.3)),  # crosses the bottom edge of the field: partial
)
NAN_PATCHES = {"in_a_with_nan": (slice(140, 145), slice(90, 95)), "overlap_nan_in_a": (slice(225, 228), slice(200, 203))}
OFF_IMAGE = (600.0, 150.0)  # a position off every tile (column, row of the grid's projection)


def field_preset():
    """Small, bright galaxies, so that no galaxy's light reaches another's stamp."""
    return dataclasses.replace(CANDELS, magnitude_range=(20.0, 20.5), disk_radius_range=(0.25, 0.4),
                               bulge_radius_range=(0.1, 0.2), centre_offset=0.0)


def grid_wcs(column_offset=0):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = CENTRE
    wcs.wcs.crpix = [GRID[1] / 2.0 + 0.5 - column_offset, GRID[0] / 2.0 + 0.5]
    wcs.wcs.cd = [[-SCALE / 3600.0, 0.0], [0.0, SCALE / 3600.0]]
    wcs.wcs.radesys = "ICRS"
    return wcs


def fine_wcs():
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = FINE_CENTRE
    wcs.wcs.crpix = [FINE_SHAPE[1] / 2.0 + 0.5, FINE_SHAPE[0] / 2.0 + 0.5]
    angle = math.radians(FINE_ROTATION)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    wcs.wcs.cd = (np.diag([-FINE_SCALE, FINE_SCALE]) / 3600.0) @ rotation
    wcs.wcs.radesys = "ICRS"
    return wcs


def draw(parameters, preset, shape, column, row):
    """A noise-free GalSim image of ``shape`` with the galaxy's centre at 0-based pixel (column, row)."""
    placed = parameters.copy()
    placed["x_centre"], placed["y_centre"] = column + 1.0, row + 1.0
    return render_galaxy(placed, preset, shape=(shape[1], shape[0])).astype(np.float64)


def write_tile(path, data, wcs, bunit=BUNIT, band=FILTER):
    header = wcs.to_header()
    header["BUNIT"] = bunit
    header["FILTER"] = band
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=header).writeto(path, overwrite=True)


@dataclasses.dataclass
class Field:
    folder: str
    tiles: list  # paths, in the order A, B, fine
    catalog: Table  # id, ra, dec per galaxy (and the off-image row)
    direct: dict  # name -> direct stamp (noise-free)
    noise: dict  # name -> the field's noise on the expected stamp's pixels (None for the fine tile)
    expected_tile: dict  # name -> the tile file the stamp should come from
    present: dict  # name -> boolean mask of the expected stamp's pixels inside the field
    nan_mask: dict  # name -> boolean mask of the NaN patch on the expected stamp
    fine_flux: float  # the fine galaxy's flux within the network stamp, drawn directly at the network's scale
    parameters: np.ndarray


def _stamp_window(column, row):
    """The master-grid slices of the stamp around the pixel nearest (column, row), and the offsets inside it."""
    centre_column, centre_row = int(np.floor(column + 0.5)), int(np.floor(row + 0.5))
    top, left = centre_row - SHAPE[0] // 2, centre_column - SHAPE[1] // 2
    return top, left


def build_field(folder, seed=3):
    """Write the tiles into ``folder`` and return a :class:`Field` with what the tests compare against."""
    preset = field_preset()
    names = [name for name, _ in PLACES] + ["fine"]
    parameters = sample_parameters(len(names), preset, seed=seed)
    master = np.zeros(GRID)
    for index, (name, (column, row)) in enumerate(PLACES):
        # Drawn on a window of the grid that holds the galaxy's stamp with a margin, and reaches no other galaxy's
        # stamp (the galaxies are at least 103 pixels apart along a row or a column).
        side = 121
        top, left = int(row) - side // 2, int(column) - side // 2
        image = draw(parameters[index], preset, (side, side), column - left, row - top)
        rows = slice(max(top, 0), min(top + side, GRID[0]))
        columns = slice(max(left, 0), min(left + side, GRID[1]))
        master[rows, columns] += image[rows.start - top : rows.stop - top, columns.start - left : columns.stop - left]
    noise = np.random.default_rng(seed).normal(0.0, NOISE, size=GRID)
    field = master + noise
    nan_field = {}
    for name, (rows, columns) in NAN_PATCHES.items():
        nan_field[name] = (rows, columns)
    tiles = []
    for tile_name, columns in TILES.items():
        data = field[:, columns].copy()
        for name, (rows, patch_columns) in nan_field.items():
            if tile_name == "tile_a.fits":
                data[rows, patch_columns] = np.nan
        path = os.path.join(folder, tile_name)
        write_tile(path, data, grid_wcs(columns.start))
        tiles.append(path)
    fine_parameters = parameters[len(PLACES)]
    fine_preset = dataclasses.replace(preset, pixel_scale=FINE_SCALE)
    fine_column, fine_row = FINE_SHAPE[1] / 2.0 - 0.5 + 3.3, FINE_SHAPE[0] / 2.0 - 0.5 - 4.6
    fine_path = os.path.join(folder, "tile_fine.fits")
    write_tile(fine_path, draw(fine_parameters, fine_preset, FINE_SHAPE, fine_column, fine_row), fine_wcs())
    tiles.append(fine_path)

    wcs = grid_wcs()
    positions = [place for _, place in PLACES] + [OFF_IMAGE]
    ra, dec = wcs.all_pix2world([p[0] for p in positions], [p[1] for p in positions], 0)
    fine_ra, fine_dec = fine_wcs().all_pix2world([fine_column], [fine_row], 0)
    ids = np.arange(101, 101 + len(positions) + 1)
    catalog = Table({"objid": ids, "ra": np.append(ra, fine_ra), "dec": np.append(dec, fine_dec),
                     "name": [name for name, _ in PLACES] + ["off_image", "fine"]})

    direct, noise_on_stamp, expected_tile, present, nan_mask = {}, {}, {}, {}, {}
    for index, (name, (column, row)) in enumerate(PLACES):
        top, left = _stamp_window(column, row)
        direct[name] = draw(parameters[index], preset, SHAPE, column - left, row - top)
        rows_in = np.arange(top, top + SHAPE[0])
        columns_in = np.arange(left, left + SHAPE[1])
        inside = ((rows_in >= 0) & (rows_in < GRID[0]))[:, None] & ((columns_in >= 0) & (columns_in < GRID[1]))[None]
        present[name] = inside
        stamp_noise = np.zeros(SHAPE)
        stamp_noise[inside] = noise[np.clip(rows_in, 0, GRID[0] - 1)][:, np.clip(columns_in, 0, GRID[1] - 1)][inside]
        noise_on_stamp[name] = stamp_noise
        mask = np.zeros(SHAPE, dtype=bool)
        if name == "in_a_with_nan":
            rows, columns = NAN_PATCHES[name]
            mask[rows.start - top : rows.stop - top, columns.start - left : columns.stop - left] = True
        nan_mask[name] = mask
    expected_tile.update({"in_a_with_nan": tiles[0], "whole_in_b": tiles[1], "overlap_nan_in_a": tiles[1],
                          "in_b": tiles[1], "edge": tiles[0], "fine": fine_path})
    # The fine galaxy drawn directly at the network's scale, centred on the stamp's centre.
    direct["fine"] = draw(fine_parameters, preset, SHAPE, (SHAPE[1] - 1) / 2.0, (SHAPE[0] - 1) / 2.0)
    fine_flux = float(direct["fine"].sum())
    return Field(folder=folder, tiles=tiles, catalog=catalog, direct=direct, noise=noise_on_stamp,
                 expected_tile=expected_tile, present=present, nan_mask=nan_mask, fine_flux=fine_flux,
                 parameters=parameters)
