"""gamornet.survey.cutouts and ``gamornet cutouts``, on a simulated survey field (tests/survey_field.py).

The field's galaxies are drawn with GalSim at known sky positions into overlapping TAN tiles with Gaussian noise
of known standard deviation; each galaxy's direct stamp is drawn separately on the pixels where its stamp should
be. Cutouts must equal the direct stamps plus the field's noise on those pixels.
"""

import csv
import math
import os
import re
import warnings

import numpy as np
import pytest
from astropy import units
from astropy.io import fits
from astropy.table import Table

import reference
import survey_field
from legacy_files import write_keras2_file
from survey_field import NOISE

from gamornet.cli.main import main
from gamornet.io.catalogues import read_sky_catalogue
from gamornet.survey.cutouts import (
    FLAG_COLUMNS,
    CutoutReader,
    SurveyImages,
    network_pixel_scale,
    write_stamps,
)
from gamornet.errors import GamornetWarning, PixelScaleWarning
from gamornet.io.images import ImageReader, MissingRow


@pytest.fixture(scope="session")
def field(tmp_path_factory):
    return survey_field.build_field(str(tmp_path_factory.mktemp("survey-field")))


def collect(reader, catalog):
    """Per galaxy name: (stamp or None, flags), and the rows' ids in the order the batches gave them."""
    names = dict(zip((str(value) for value in catalog["objid"]), (str(name) for name in catalog["name"])))
    found, order = {}, []
    for batch in reader:
        assert len(batch.images) <= reader.batch_size
        for item in batch.in_order():
            if isinstance(item, MissingRow):
                found[names[item.source]] = (None, dict(item.columns))
                order.append(item.source)
            else:
                found[names[batch.sources[item]]] = (batch.images[item, ..., 0],
                                                     {name: batch.columns[name][item] for name in reader.columns})
                order.append(batch.sources[item])
    return found, order


@pytest.fixture(scope="module")
def stamps(field):
    return collect(CutoutReader(field.catalog, field.tiles, "CANDELS", batch_size=3), field.catalog)


WHOLE = ("in_a_with_nan", "whole_in_b", "overlap_nan_in_a", "in_b")


def noise_units(field, stamp, name):
    """(cutout - direct stamp) / sigma on the pixels that came from the image."""
    used = field.present[name] & ~field.nan_mask[name]
    return (stamp - field.direct[name])[used] / NOISE, (stamp - field.direct[name] - field.noise[name])[used] / NOISE


# --------------------------------------------------------------------------- stamps against direct drawings


def test_cutouts_equal_the_direct_stamps_within_the_noise(field, stamps):
    found, _ = stamps
    for name in WHOLE + ("edge",):
        stamp, _ = found[name]
        difference, residual = noise_units(field, stamp, name)
        # The difference is the field's noise: largest deviation and spread of a Gaussian of sigma 1.
        assert np.abs(difference).max() < 5.5, name
        assert abs(difference.std() - 1.0) < 0.05 and abs(difference.mean()) < 0.05, name
        # Exactly the noise on those pixels (up to float32 rounding).
        assert np.abs(residual).max() < 1e-3, name


def test_a_one_pixel_shift_would_be_caught(field, stamps):
    """The comparison above can fail: the same stamp one pixel off differs by many sigma."""
    stamp, _ = stamps[0]["in_b"]
    shifted = np.roll(stamp, 1, axis=1)
    difference, _ = noise_units(field, shifted, "in_b")
    assert np.abs(difference).max() > 20


def test_tiles_and_flags(field, stamps):
    found, order = stamps
    for name in WHOLE + ("edge", "fine"):
        stamp, flags = found[name]
        assert stamp is not None and np.isfinite(stamp).all()
        assert flags["tile"] == field.expected_tile[name], name
        assert not flags["off_image"]
    # Whole stamps (the overlap galaxy from tile B, where it has no NaN pixel; "whole_in_b" from B, not from A
    # where it crosses the edge).
    for name in ("whole_in_b", "overlap_nan_in_a", "in_b", "fine"):
        assert not found[name][1]["partial"] and found[name][1]["fraction_present"] == 1.0
        assert found[name][1]["nan_fraction"] == 0.0
    # The galaxy on the field's bottom edge: the rows of its stamp inside the grid.
    edge = found["edge"][1]
    assert edge["partial"] and edge["fraction_present"] == pytest.approx(field.present["edge"].mean(), abs=1e-6)
    assert field.present["edge"].mean() < 0.7
    # The NaN patch of 5 x 5 pixels.
    assert found["in_a_with_nan"][1]["nan_fraction"] == pytest.approx(25 / (83 * 83), abs=1e-6)
    # Off every tile: no stamp, flagged, in its place in catalogue order.
    stamp, flags = found["off_image"]
    assert stamp is None
    assert flags["off_image"] and not flags["partial"] and flags["fraction_present"] == 0 and flags["tile"] == ""
    assert order == [str(value) for value in field.catalog["objid"]]
    # The id, RA and Dec of the catalogue come with every row.
    row = list(field.catalog["name"]).index("in_b")
    assert found["in_b"][1]["objid"] == field.catalog["objid"][row]
    assert found["in_b"][1]["ra"] == field.catalog["ra"][row] and found["in_b"][1]["dec"] == field.catalog["dec"][row]


def test_missing_pixels_are_filled_with_the_stamps_median(field, stamps):
    found, _ = stamps
    for name, filled in (("in_a_with_nan", field.nan_mask["in_a_with_nan"]), ("edge", ~field.present["edge"])):
        stamp, _ = found[name]
        assert filled.any()
        np.testing.assert_array_equal(stamp[filled], np.median(stamp[~filled]))


def test_resampling_conserves_flux_and_centres_the_stamp(field, stamps):
    stamp, flags = stamps[0]["fine"]
    direct = field.direct["fine"]
    flux_ratio = stamp.sum() / field.fine_flux
    assert abs(flux_ratio - 1.0) < 0.01, flux_ratio
    # The same galaxy at the same place: light-weighted centres agree to a tenth of a pixel, pixels to a few
    # per cent of the peak (the resampling kernel's blur).
    rows, columns = np.indices(stamp.shape)
    for grid in (rows, columns):
        assert abs((grid * stamp).sum() / stamp.sum() - (grid * direct).sum() / direct.sum()) < 0.1
    assert np.abs(stamp - direct).max() < 0.05 * direct.max()


def test_surface_brightness_images_are_resampled_without_rescaling(field, tmp_path):
    with fits.open(field.tiles[2]) as hdulist:
        header, data = hdulist[0].header, hdulist[0].data
    header["BUNIT"] = "MJy/sr"
    path = str(tmp_path / "fine_sb.fits")
    fits.PrimaryHDU(data, header).writeto(path)
    catalog = field.catalog[list(field.catalog["name"]).index("fine"):][:1]
    batch = next(iter(CutoutReader(catalog, [path], "CANDELS")))
    # Surface brightness kept: the sum scales with the pixel area.
    expected = (survey_field.FINE_SCALE / survey_field.SCALE) ** 2
    assert batch.images.sum() / field.fine_flux == pytest.approx(expected, rel=0.01)


def test_no_resample_warns_and_cuts_the_images_own_pixels(field):
    catalog = field.catalog[list(field.catalog["name"]).index("fine"):][:1]
    with pytest.warns(PixelScaleWarning, match=r"network.s 0\.06 arcsec/pixel.*fine\.fits. 0\.04 arcsec/pixel.*1\.5 times as large"):
        reader = CutoutReader(catalog, field.tiles, "CANDELS", resample=False)
    assert issubclass(PixelScaleWarning, GamornetWarning)
    batch = next(iter(reader))
    with fits.open(field.tiles[2]) as hdulist:
        data = hdulist[0].data
    # The tile's own pixels around the pixel nearest the galaxy's position.
    from astropy.wcs import WCS

    x, y = WCS(hdulist_header(field.tiles[2])).all_world2pix(catalog["ra"][0], catalog["dec"][0], 0)
    column, row = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    np.testing.assert_array_equal(batch.images[0, ..., 0], data[row - 41 : row + 42, column - 41 : column + 42])


def hdulist_header(path):
    with fits.open(path) as hdulist:
        return hdulist[0].header.copy()


def test_no_warning_when_the_scales_match(field):
    with warnings.catch_warnings():
        warnings.simplefilter("error", GamornetWarning)
        CutoutReader(field.catalog[:2], field.tiles[:2], "CANDELS", resample=False)


def test_network_pixel_scales():
    assert network_pixel_scale("SDSS") == 0.396 and network_pixel_scale("CANDELS") == 0.06
    assert network_pixel_scale((167, 167, 1)) == 0.396
    assert network_pixel_scale((64, 64, 1)) is None
    assert network_pixel_scale((64, 64, 1), pixel_scale=0.2) == 0.2


# --------------------------------------------------------------------------- the footprint index


def test_the_index_finds_every_tile_that_holds_a_position_and_few_others(field):
    images = SurveyImages(field.tiles)
    rng = np.random.default_rng(5)
    ra = rng.uniform(150.090, 150.110, 400)
    dec = rng.uniform(2.195, 2.215, 400)
    from astropy.coordinates import SkyCoord

    coordinates = SkyCoord(ra, dec, unit="deg")
    found = images.candidates(ra, dec)
    for index, tile in enumerate(images.tiles):
        holds = tile.wcs.footprint_contains(coordinates)
        listed = np.array([index in near for near in found])
        # Every position inside a tile is found for it; the caps may also list a few positions just outside.
        assert listed[holds].all()
        assert listed.sum() <= holds.sum() * 2 + 10
    assert sum(len(near) for near in found) < 3 * len(ra)


def test_each_tile_is_opened_once_to_index_and_once_to_cut(field, monkeypatch):
    rng = np.random.default_rng(6)
    wcs = survey_field.grid_wcs()
    ra, dec = wcs.all_pix2world(rng.uniform(40, 380, 60), rng.uniform(40, 260, 60), 0)
    catalog = Table({"ra": ra, "dec": dec})
    opened = []
    real_open = fits.open
    monkeypatch.setattr(fits, "open", lambda name, *args, **kwargs: opened.append(os.fspath(name)) or real_open(
        name, *args, **kwargs))
    reader = CutoutReader(catalog, field.tiles[:2], "CANDELS", batch_size=16)
    assert sorted(opened) == sorted(field.tiles[:2])
    opened.clear()
    rows = sum(len(batch.sources) + len(batch.missing) for batch in reader)
    assert rows == 60
    assert sorted(opened) == sorted(field.tiles[:2])


def test_stamps_are_cut_a_batch_at_a_time(field, monkeypatch):
    """The reader streams: before the first batch is handed out, only its rows have been cut."""
    catalog = Table({"ra": np.repeat(field.catalog["ra"][:1], 40), "dec": np.repeat(field.catalog["dec"][:1], 40)})
    reader = CutoutReader(catalog, field.tiles, "CANDELS", batch_size=8)
    cut = []
    real_row = reader._row
    monkeypatch.setattr(reader, "_row", lambda *args: cut.append(1) or real_row(*args))
    batches = iter(reader)
    first = next(batches)
    assert len(first.sources) == 8 and len(cut) <= 8
    assert sum(len(batch.sources) for batch in batches) == 32


# --------------------------------------------------------------------------- catalogues


@pytest.mark.parametrize("ending", [".fits", ".csv", ".parquet", ".ecsv"])
def test_catalogue_formats(field, tmp_path, ending):
    path = str(tmp_path / f"catalogue{ending}")
    field.catalog.write(path)
    catalog = read_sky_catalogue(path)
    assert (catalog.id_name, catalog.ra_name, catalog.dec_name) == ("objid", "ra", "dec")
    # CSV holds text, read as written; the typed formats keep the integers they store.
    expected = field.catalog["objid"].astype(str) if ending == ".csv" else field.catalog["objid"]
    np.testing.assert_array_equal(catalog.ids, expected)
    assert catalog.ids.dtype.kind == ("U" if ending == ".csv" else "i")
    np.testing.assert_allclose(catalog.ra, field.catalog["ra"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(catalog.dec, field.catalog["dec"], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "names, expected",
    [
        (("ID", "RAJ2000", "DEJ2000"), ("ID", "RAJ2000", "DEJ2000")),
        (("objID", "ALPHA_J2000", "DELTA_J2000"), ("objID", "ALPHA_J2000", "DELTA_J2000")),
        (("number", "Ra", "Dec"), ("row", "Ra", "Dec")),
    ],
)
def test_default_column_names(names, expected):
    table = Table([[7, 8], [10.0, 11.0], [1.0, 2.0]], names=names)
    catalog = read_sky_catalogue(table)
    assert (catalog.id_name, catalog.ra_name, catalog.dec_name) == expected
    expected_ids = [0, 1] if expected[0] == "row" else [7, 8]
    assert list(catalog.ids) == expected_ids


def test_named_columns_and_angle_units():
    table = Table({"name": ["a", "b"], "alpha": [1.0, 2.0] * units.hourangle, "delta": [3600.0, 7200.0] * units.arcsec})
    catalog = read_sky_catalogue(table, id_column="name", ra_column="alpha", dec_column="delta")
    np.testing.assert_allclose(catalog.ra, [15.0, 30.0])
    np.testing.assert_allclose(catalog.dec, [1.0, 2.0])
    assert catalog.source(1) == "b"


def test_rows_with_bad_coordinates_can_be_skipped(field):
    catalog = field.catalog.copy()
    catalog["ra"][1] = np.nan
    catalog["dec"][3] = 95.0
    reader = CutoutReader(catalog, field.tiles, "CANDELS", batch_size=4, skip_bad=True)
    assert not any(batch.bad for batch in reader)  # every catalogue row stays a row
    kept = [item for batch in reader for item in batch.missing if item.columns["bad_coordinates"]]
    assert [item.source for item in kept] == ["102", "104"]
    assert all(item.columns["off_image"] and item.columns["tile"] == "" for item in kept)
    assert "not numbers" in reader.bad_rows[1] and "Dec is outside -90 to +90" in reader.bad_rows[3]
    assert sum(len(batch.sources) + len(batch.missing) for batch in reader) == len(catalog)


# --------------------------------------------------------------------------- bad input


def image_file(path, data=None, header=None):
    fits.PrimaryHDU(np.zeros((50, 50), np.float32) if data is None else data, header).writeto(path)
    return str(path)


def field_header(field, **changes):
    header = hdulist_header(field.tiles[0])
    for keyword, value in changes.items():
        header[keyword] = value
    return header


def bad_case(name, field, tmp_path):
    """(catalogue, images, keyword arguments) of a bad-input case."""
    catalog, images, options = field.catalog, field.tiles[:2], {}
    if name == "missing column":
        options = {"ra_column": "RA_deg"}
    elif name == "no RA column":
        catalog = Table({"x": [1.0], "dec": [1.0]})
    elif name == "RA as text":
        catalog = Table({"ra": ["10:00:00"], "dec": [1.0]})
    elif name == "RA in magnitudes":
        catalog = Table({"ra": [1.0] * units.mag, "dec": [1.0]})
    elif name in ("NaN Dec", "RA out of range"):
        catalog = field.catalog.copy()
        catalog["dec" if name == "NaN Dec" else "ra"][2] = np.nan if name == "NaN Dec" else 400.0
    elif name == "unknown catalogue format":
        catalog = str(tmp_path / "catalogue.txt")
        open(catalog, "w").close()
    elif name == "no such catalogue":
        catalog = str(tmp_path / "nothing.fits")
    elif name == "unreadable catalogue":
        catalog = str(tmp_path / "broken.fits")
        open(catalog, "w").write("not a FITS file")
    elif name == "flag-named column":
        catalog, options = Table({"tile": [1], "ra": [1.0], "dec": [1.0]}), {"id_column": "tile"}
    elif name == "no celestial WCS":
        images = [image_file(tmp_path / "plain.fits", header=fits.Header({"BUNIT": "ADU", "FILTER": "F160W"}))]
    elif name == "3-D image":
        images = [image_file(tmp_path / "cube.fits", np.zeros((2, 50, 50), np.float32), field_header(field))]
    elif name in ("other FILTER", "other BUNIT"):
        keyword, value = ("FILTER", "F125W") if name == "other FILTER" else ("BUNIT", "electron/s")
        images = [field.tiles[0], image_file(tmp_path / "other.fits", header=field_header(field, **{keyword: value}))]
    elif name == "not FITS":
        path = tmp_path / "notes.fits"
        path.write_text("not a FITS file")
        images = [str(path)]
    elif name == "a .npy":
        np.save(tmp_path / "stamps.npy", np.zeros((2, 83, 83), np.float32))
        images = [str(tmp_path / "stamps.npy")]
    elif name == "unknown pixel scale":
        options = {"input_shape": (64, 64, 1)}
    elif name == "two bands":
        options = {"input_shape": (83, 83, 2)}
    elif name == "bad pixel scale":
        options = {"pixel_scale": -1.0}
    return catalog, images, options


BAD_INPUTS = [
    ("missing column", ValueError, r"has no column 'RA_deg' \(--ra-column\)\. Its columns are: objid, ra, dec"),
    ("no RA column", ValueError, r"has no RA column under a usual name .*--ra-column"),
    ("RA as text", ValueError, r"column 'ra' .* holds text \(such as '10:00:00'\)"),
    ("RA in magnitudes", ValueError, r"has the unit mag, which is not an angle"),
    ("NaN Dec", ValueError, r"1 rows .* unusable coordinates .*row 3 \(objid 103\): its RA/Dec are not numbers"),
    ("RA out of range", ValueError, r"rows counted from 1\): row 3 \(objid 103\): its RA is outside 0-360 degrees \(ra=400\.0\).*--skip-bad"),
    ("unknown catalogue format", ValueError, r"CSV, ECSV, FITS or Parquet table.*catalogue\.txt"),
    ("no such catalogue", FileNotFoundError, r"no such catalogue file: .*nothing\.fits"),
    ("unreadable catalogue", OSError, r"cannot read the catalogue .*broken\.fits"),
    ("flag-named column", ValueError, r"column 'tile' has the name of a flag column"),
    ("no celestial WCS", ValueError, r"plain\.fits' has no celestial WCS: expected sky axes .*Received CTYPE"),
    ("3-D image", ValueError, r"holds an array of shape \(2, 50, 50\); survey images must be 2-D"),
    ("other FILTER", ValueError, r"not all of one band.*FILTER = 'F160W' but .*other\.fits' has FILTER = 'F125W'"),
    ("other BUNIT", ValueError, r"BUNIT = 'ADU' but .*other\.fits' has BUNIT = 'electron/s'"),
    ("not FITS", OSError, r"cannot read the image .*notes\.fits' as FITS"),
    ("a .npy", ValueError, r"survey images must be FITS files.*stamps\.npy"),
    ("unknown pixel scale", ValueError, r"pixel scale is not known for input_shape \(64, 64, 1\): give pixel_scale"),
    ("two bands", ValueError, r"have one band, but input_shape \(83, 83, 2\) has 2"),
    ("bad pixel scale", ValueError, r"pixel_scale must be a positive number of arcsec per pixel. Received: -1\.0"),
]


@pytest.mark.parametrize("name, error, message", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_refused_with_a_clear_message(field, tmp_path, name, error, message):
    catalog, images, options = bad_case(name, field, tmp_path)
    input_shape = options.pop("input_shape", "CANDELS")
    with pytest.raises(error, match=message):
        CutoutReader(catalog, images, input_shape, **options)


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_a_truncated_tile_stops_with_an_error_naming_it(field, tmp_path):
    path = tmp_path / "truncated.fits"
    with open(field.tiles[0], "rb") as source:
        path.write_bytes(source.read()[: 2880 + 100 * 260 * 4])
    catalog = field.catalog[:1]
    reader = CutoutReader(catalog, [str(path)], "CANDELS")
    with pytest.raises(OSError, match=r"cannot read the pixels of .*truncated\.fits' for row 1 \(objid 101\)"):
        list(reader)


def test_a_stamp_without_finite_pixels_has_no_stamp(field, tmp_path):
    header = hdulist_header(field.tiles[0])
    path = image_file(tmp_path / "blank.fits", np.full((300, 260), np.nan, np.float32), header)
    batch = next(iter(CutoutReader(field.catalog[:1], [path], "CANDELS")))
    assert len(batch.sources) == 0 and len(batch.missing) == 1
    flags = batch.missing[0].columns
    assert not flags["off_image"] and flags["fraction_present"] == 1.0 and flags["nan_fraction"] == 1.0
    assert flags["tile"] == path


# --------------------------------------------------------------------------- gamornet cutouts


def test_the_cutouts_command_writes_a_cube_and_a_table(field, tmp_path, capsys):
    catalog_path = str(tmp_path / "catalogue.parquet")
    field.catalog.write(catalog_path)
    output = str(tmp_path / "stamps.fits")
    pattern = os.path.join(field.folder, "tile_*.fits")
    status = main(["cutouts", "--catalog", catalog_path, "--images", pattern, "--input-shape", "CANDELS",
                   "--output", output])
    assert status == 0
    captured = capsys.readouterr()
    assert "Cutting stamps:" in captured.err and "of 7 rows" in captured.err
    assert "wrote 7 rows" in captured.err and "1 off the images" in captured.err
    with fits.open(output) as hdulist:
        cube = hdulist[0].data
        rows = Table(hdulist["ROWS"].data)
        assert hdulist[0].header["PIXSCALE"] == 0.06 and hdulist[0].header["FILTER"] == "F160W"
    assert cube.shape == (7, 83, 83)
    assert list(rows.colnames) == ["objid", "ra", "dec", *FLAG_COLUMNS]
    assert list(rows["objid"]) == list(field.catalog["objid"])
    names = list(field.catalog["name"])
    assert np.isnan(cube[names.index("off_image")]).all() and rows["off_image"][names.index("off_image")]
    assert rows["partial"][names.index("edge")]
    # The cube holds the same stamps as the reader, and gamornet.io.images reads it back.
    reader = CutoutReader(field.catalog, field.tiles, "CANDELS", batch_size=3)
    for batch in reader:
        for index, source in enumerate(batch.sources):
            np.testing.assert_array_equal(cube[list(rows["objid"].astype(str)).index(source)],
                                          batch.images[index, ..., 0])
    planes = [batch for batch in ImageReader([output], (83, 83, 1), skip_bad=True)]
    assert sum(len(batch.sources) for batch in planes) == 6
    assert sorted(os.listdir(tmp_path)) == ["catalogue.parquet", "stamps.fits"]


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_the_cutouts_command_leaves_nothing_behind_on_failure(field, tmp_path, capsys):
    path = tmp_path / "truncated.fits"
    with open(field.tiles[0], "rb") as source:
        path.write_bytes(source.read()[: 2880 + 100 * 260 * 4])
    catalog_path = str(tmp_path / "catalogue.fits")
    field.catalog[:1].write(catalog_path)
    output = tmp_path / "stamps.fits"
    status = main(["cutouts", "--catalog", catalog_path, "--images", str(path), "--input-shape", "CANDELS",
                   "--output", str(output), "--no-progress"])
    assert status == 1
    assert "cannot read the pixels of" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["catalogue.fits", "truncated.fits"]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--output", "stamps.csv"], "--output must be a FITS file name ending in .fits"),
        (["--output", "nowhere/stamps.fits"], "--output: the folder .* does not exist"),
        (["--output", "stamps.fits", "--input-shape", "HST"], "--input-shape must be SDSS, CANDELS or three integers"),
        (["--output", "stamps.fits", "--ra-column", "RA_deg"], r"has no column 'RA_deg' \(--ra-column\)"),
    ],
)
def test_the_cutouts_command_reports_bad_options(field, tmp_path, capsys, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    catalog_path = str(tmp_path / "catalogue.fits")
    field.catalog.write(catalog_path)
    status = main(["cutouts", "--catalog", catalog_path, "--images", *field.tiles, "--no-progress", *options])
    assert status == 1
    assert re.search(message, capsys.readouterr().err)


def test_compressed_gzipped_and_scaled_images_give_the_same_stamps(field, tmp_path):
    """Plain images are read straight from the file; the others through astropy: the stamps are the same."""
    with fits.open(field.tiles[1]) as hdulist:
        header, data = hdulist[0].header.copy(), hdulist[0].data.copy()
    compressed = str(tmp_path / "compressed.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header, compression_type="GZIP_1",
                                                       quantize_level=0.0)]).writeto(compressed)
    gzipped = str(tmp_path / "gzipped.fits.gz")
    fits.PrimaryHDU(data, header).writeto(gzipped)
    # Integers with BSCALE/BZERO: what the plain image holds, to within one step of the scale.
    scaled = str(tmp_path / "scaled.fits")
    scaled_hdu = fits.PrimaryHDU(data.copy(), header)
    scaled_hdu.scale("int32", bscale=1e-3, bzero=0.0)
    scaled_hdu.writeto(scaled)
    catalog = field.catalog[list(field.catalog["name"]).index("in_b"):][:1]
    plain = next(iter(CutoutReader(catalog, [field.tiles[1]], "CANDELS"))).images
    for path, tolerance in ((compressed, 0), (gzipped, 0), (scaled, 1.01e-3)):
        images = next(iter(CutoutReader(catalog, [path], "CANDELS"))).images
        np.testing.assert_allclose(images, plain, rtol=0, atol=tolerance, err_msg=path)


# --------------------------------------------------------------------------- gamornet predict --catalog

CANDELS = (83, 83, 1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A Keras 2 model file of the CANDELS shape with known weights, and the weights."""
    images = reference.galaxy_images(3, CANDELS, seed=1)
    weights = reference.calibrated_weights(CANDELS, images, reference.lrn_keras, seed=2)
    return write_keras2_file(str(tmp_path_factory.mktemp("model") / "model.hdf5"), weights), weights


def expected_stamp(field, name):
    """The direct stamp plus the field's noise; pixels off the field or NaN filled with the median of the others."""
    stamp = field.direct[name] + field.noise[name]
    filled = ~field.present[name] | field.nan_mask[name]
    stamp[filled] = np.median(stamp[~filled])
    return stamp.astype(np.float32)


def predict(field, model_path, tmp_path, output, *options):
    catalog_path = str(tmp_path / "catalogue.fits")
    if not os.path.exists(catalog_path):
        field.catalog.write(catalog_path)
    return main(["predict", "--catalog", catalog_path, "--images", os.path.join(field.folder, "tile_*.fits"),
                 "--model", model_path, "--input-shape", "CANDELS", "--no-progress", "--output", str(output),
                 *options])


def test_predictions_from_the_catalogue_equal_those_of_the_direct_stamps(field, model, tmp_path, capsys):
    model_path, weights = model
    assert predict(field, model_path, tmp_path, tmp_path / "predictions.fits") == 0
    table = Table.read(tmp_path / "predictions.fits", mask_invalid=False)
    assert table.colnames == ["objid", "ra", "dec", "p_disk", "p_indet", "p_bulge", "class", *FLAG_COLUMNS]
    assert list(table["objid"]) == list(field.catalog["objid"])
    np.testing.assert_array_equal(table["ra"], field.catalog["ra"])
    names = list(field.catalog["name"])
    probabilities = np.stack([table["p_disk"], table["p_indet"], table["p_bulge"]], axis=1)
    drawn = WHOLE + ("edge",)
    expected = reference.forward(np.stack([expected_stamp(field, name)[..., None] for name in drawn]), weights,
                                 reference.lrn_keras)
    np.testing.assert_allclose(probabilities[[names.index(name) for name in drawn]], expected, atol=1e-4)
    # The resampled galaxy: close to the prediction on its stamp drawn directly at the network's scale.
    fine = reference.forward(field.direct["fine"][None, ..., None].astype(np.float32), weights, reference.lrn_keras)
    assert np.abs(probabilities[names.index("fine")] - fine[0]).max() < 2e-3
    off = names.index("off_image")
    assert np.isnan(probabilities[off]).all() and table["class"][off] == "" and table["off_image"][off]
    assert table["partial"][names.index("edge")] and table["tile"][names.index("in_b")] == field.tiles[1]
    err = capsys.readouterr().err
    assert "classified 6 images" in err and "1 catalogue row had no stamp" in err


def test_the_csv_table_of_a_catalogue(field, model, tmp_path):
    model_path, _ = model
    assert predict(field, model_path, tmp_path, tmp_path / "predictions.csv") == 0
    rows = list(csv.reader(open(tmp_path / "predictions.csv", newline="")))
    assert rows[0] == ["objid", "ra", "dec", "p_disk", "p_indet", "p_bulge", "class", *FLAG_COLUMNS]
    off = list(field.catalog["name"]).index("off_image") + 1
    assert rows[off][:8] == [str(field.catalog["objid"][off - 1]), str(float(field.catalog["ra"][off - 1])),
                             str(float(field.catalog["dec"][off - 1])), "", "", "", "", "true"]
    assert len(rows) == len(field.catalog) + 1


def test_the_stamps_cube_predicts_the_same(field, model, tmp_path):
    """gamornet cutouts, then gamornet predict on its cube, gives the probabilities of gamornet predict --catalog."""
    model_path, _ = model
    catalog_path = str(tmp_path / "catalogue.fits")
    field.catalog.write(catalog_path)
    assert main(["cutouts", "--catalog", catalog_path, "--images", *field.tiles, "--input-shape", "CANDELS",
                 "--no-progress", "--output", str(tmp_path / "stamps.fits")]) == 0
    assert main(["predict", str(tmp_path / "stamps.fits"), "--model", model_path, "--input-shape", "CANDELS",
                 "--skip-bad", "--no-progress", "--output", str(tmp_path / "cube.fits")]) == 0
    assert predict(field, model_path, tmp_path, tmp_path / "catalogue_predictions.fits") == 0
    from_cube = Table.read(tmp_path / "cube.fits", mask_invalid=False)
    from_catalogue = Table.read(tmp_path / "catalogue_predictions.fits", mask_invalid=False)
    with_stamp = ~from_catalogue["off_image"]
    assert len(from_cube) == with_stamp.sum()
    for column in ("p_disk", "p_indet", "p_bulge"):
        np.testing.assert_allclose(from_cube[column], from_catalogue[column][with_stamp], atol=1e-6)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--catalog", "{catalog}"], r"--catalog needs --images"),
        (["--images", "{tile}"], r"--images needs --catalog"),
        (["{tile}", "--catalog", "{catalog}", "--images", "{tile}"], r"give either images to classify \(INPUT\) or"),
        ([], r"give the images to classify .* or a catalogue and survey images with --catalog and --images"),
        (["--catalog", "{catalog}", "--images", "{tile}", "--id-column", "class"],
         r"column 'class' has the name of a column of the predictions"),
        (["--catalog", "{catalog}", "--images", "{tile}", "--output", "{tile}"], r"--output .* is one of the inputs"),
        (["--catalog", "{catalog}", "--images", "{tile}", "--pixel-scale", "0"],
         r"pixel_scale must be a positive number of arcsec per pixel"),
    ],
)
def test_predict_reports_bad_survey_options(field, model, tmp_path, capsys, arguments, message):
    catalog = field.catalog.copy()
    catalog["class"] = np.arange(len(catalog))
    catalog_path = str(tmp_path / "catalogue.fits")
    catalog.write(catalog_path)
    tile = str(tmp_path / "tile.fits")
    with open(field.tiles[0], "rb") as source:
        open(tile, "wb").write(source.read())
    arguments = [argument.format(catalog=catalog_path, tile=tile) for argument in arguments]
    if "--output" not in arguments:
        arguments += ["--output", str(tmp_path / "predictions.csv")]
    status = main(["predict", *arguments, "--model", model[0], "--input-shape", "CANDELS", "--no-progress"])
    assert status == 1
    assert re.search(message, capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == ["catalogue.fits", "tile.fits"]


# --------------------------------------------------------------------------- ids, rows and edge cases (issue 24)

TEXT_IDS = ["00123", "1e3", "nan_0", "7", "0012", "1.50", "-0"]  # each would read as a number


def text_id_catalogue(field, tmp_path):
    """The field's catalogue as a CSV file whose ids only look like numbers: they must come back as written."""
    path = str(tmp_path / "catalogue.csv")
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["id", "ra", "dec"])
        for text, ra, dec in zip(TEXT_IDS, field.catalog["ra"], field.catalog["dec"]):
            writer.writerow([text, repr(float(ra)), repr(float(dec))])
    return path


@pytest.mark.slow
def test_catalogue_ids_are_text_as_written_in_cutouts_and_predict(field, model, tmp_path):
    catalog_path = text_id_catalogue(field, tmp_path)
    written = TEXT_IDS
    assert [read_sky_catalogue(catalog_path).source(row) for row in range(len(written))] == written
    assert main(["cutouts", "--catalog", catalog_path, "--images", *field.tiles[:2], "--input-shape", "CANDELS",
                 "--no-progress", "--output", str(tmp_path / "stamps.fits")]) == 0
    with fits.open(tmp_path / "stamps.fits") as hdulist:
        assert [value.strip() for value in hdulist["ROWS"].data["id"]] == written
    assert main(["predict", "--catalog", catalog_path, "--images", *field.tiles[:2], "--model", model[0],
                 "--input-shape", "CANDELS", "--no-progress", "--output", str(tmp_path / "predictions.csv")]) == 0
    rows = list(csv.reader(open(tmp_path / "predictions.csv", newline="")))
    assert [row[0] for row in rows[1:]] == written


def multi_extension_exposure(field, path, planes=False):
    """tile_a and tile_b as the CCD1 and CCD2 extensions of one exposure, each with its own WCS (or, with
    ``planes``, tile_b's image and a mask plane of the same WCS)."""
    hdus = [fits.PrimaryHDU(header=fits.Header([("FILTER", survey_field.FILTER), ("BUNIT", survey_field.BUNIT)]))]
    sources = [(field.tiles[1], "IMAGE"), (field.tiles[1], "MASK")] if planes else [(field.tiles[0], "CCD1"),
                                                                                   (field.tiles[1], "CCD2")]
    for source, name in sources:
        with fits.open(source) as hdulist:
            hdus.append(fits.ImageHDU(hdulist[0].data, hdulist[0].header, name=name))
    fits.HDUList(hdus).writeto(path)
    return str(path)


def test_a_galaxy_on_the_second_ccd_of_a_multi_extension_exposure_is_found(field, tmp_path):
    exposure = multi_extension_exposure(field, tmp_path / "exposure.fits")
    found, _ = collect(CutoutReader(field.catalog, [exposure], "CANDELS", batch_size=3), field.catalog)
    alone, _ = collect(CutoutReader(field.catalog, field.tiles[:2], "CANDELS", batch_size=3), field.catalog)
    for name in ("in_b", "in_a_with_nan"):
        stamp, flags = found[name]
        np.testing.assert_array_equal(stamp, alone[name][0])
        assert not flags["off_image"]
    assert found["in_b"][1]["tile"] == f"{exposure}[2]" and found["in_a_with_nan"][1]["tile"] == f"{exposure}[1]"
    # --hdu still picks one extension.
    found, _ = collect(CutoutReader(field.catalog, [exposure], "CANDELS", hdu=1), field.catalog)
    assert found["in_b"][1]["off_image"] and found["in_b"][1]["tile"] == ""


def test_image_hdus_of_one_sky_are_refused_not_taken_for_ccds(field, tmp_path):
    exposure = multi_extension_exposure(field, tmp_path / "calexp.fits", planes=True)
    with pytest.raises(ValueError, match=r"HDUs 1 and 2 of .*calexp.fits' cover the same sky.* --hdu"):
        SurveyImages([exposure])
    assert len(SurveyImages([exposure], hdu=1)) == 1


@pytest.mark.slow
def test_skip_bad_keeps_one_row_per_catalogue_row_and_no_stamp_reads_nan(field, tmp_path, capsys):
    """--skip-bad in catalogue mode: a row with unusable RA/Dec stays a row, with empty probabilities and the flag
    bad_coordinates, counted from 1 in the messages; out_of_domain of rows without a stamp is empty, not 'nan'."""
    from gamornet.models.card import write_model_card

    folder = tmp_path / "model"
    folder.mkdir()
    images = reference.galaxy_images(3, CANDELS, seed=1)
    model_path = write_keras2_file(str(folder / "model.hdf5"), reference.calibrated_weights(
        CANDELS, images, reference.lrn_keras, seed=2))
    write_model_card(folder, reference.galaxy_images(60, CANDELS, seed=3))
    catalog = field.catalog.copy()
    catalog["ra"][1] = np.nan
    catalog_path = str(tmp_path / "catalogue.fits")
    catalog.write(catalog_path)
    output = tmp_path / "predictions.csv"
    assert main(["predict", "--catalog", catalog_path, "--images", *field.tiles[:2], "--model", model_path,
                 "--input-shape", "CANDELS", "--no-progress", "--skip-bad", "--output", str(output)]) == 0
    rows = list(csv.DictReader(open(output, newline="")))
    assert [row["objid"] for row in rows] == [str(value) for value in catalog["objid"]]
    assert rows[1]["bad_coordinates"] == "true" and rows[1]["p_disk"] == "" and rows[1]["class"] == ""
    assert [row["bad_coordinates"] for row in rows].count("true") == 1
    without_stamp = [row for row in rows if row["p_disk"] == ""]
    assert len(without_stamp) == 3  # the bad row, the row off the images and the resampled galaxy's (no tile 3)
    assert all(row["out_of_domain"] == "" for row in without_stamp)
    assert "row 2 (objid 102): its RA/Dec are not numbers" in capsys.readouterr().err
    assert main(["cutouts", "--catalog", catalog_path, "--images", *field.tiles[:2], "--input-shape", "CANDELS",
                 "--no-progress", "--skip-bad", "--output", str(tmp_path / "stamps.fits")]) == 0
    with fits.open(tmp_path / "stamps.fits") as hdulist:
        assert hdulist[0].data.shape[0] == len(catalog) and np.isnan(hdulist[0].data[1]).all()
        assert list(hdulist["ROWS"].data["bad_coordinates"]) == [row["bad_coordinates"] == "true" for row in rows]
    assert "1 with unusable RA/Dec" in capsys.readouterr().err


def test_a_stamp_with_more_real_pixels_is_preferred_to_a_whole_one_mostly_nan(field, tmp_path):
    """Tile X holds the whole stamp of in_b, but 73 % of it NaN; tile Y holds 73 % of it, all real pixels."""
    with fits.open(field.tiles[1]) as hdulist:
        header, data = hdulist[0].header.copy(), hdulist[0].data.copy()
    catalog = field.catalog[list(field.catalog["name"]).index("in_b"):][:1]
    x, _ = SurveyImages([field.tiles[1]]).tiles[0].wcs.world_to_pixel_values(catalog["ra"][0], catalog["dec"][0])
    start = math.ceil(float(x) - 83 / 2)  # the stamp's first column, as astropy's Cutout2D rounds it
    cut = start + 61  # 61 of the stamp's 83 columns lie left of it: 73 %
    mostly_nan = data.copy()
    mostly_nan[:, :cut] = np.nan
    whole = image_file(tmp_path / "x_whole.fits", mostly_nan, header)
    partial = image_file(tmp_path / "y_partial.fits", data[:, :cut].copy(), header)
    batch = next(iter(CutoutReader(catalog, [whole, partial], "CANDELS")))
    assert len(batch.sources) == 1
    assert batch.columns["tile"][0] == partial and batch.columns["partial"][0]
    assert batch.columns["fraction_present"][0] == pytest.approx(61 / 83) and batch.columns["nan_fraction"][0] == 0


def test_an_empty_catalogue_is_the_same_clear_error_in_cutouts_and_predict(field, model, tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("id,ra,dec\n")
    assert main(["cutouts", "--catalog", str(empty), "--images", field.tiles[0], "--input-shape", "CANDELS",
                 "--output", str(tmp_path / "stamps.fits")]) == 1
    message = "has no rows: there is no galaxy to cut a stamp for"
    assert message in capsys.readouterr().err
    assert main(["predict", "--catalog", str(empty), "--images", field.tiles[0], "--model", model[0],
                 "--input-shape", "CANDELS", "--output", str(tmp_path / "p.csv")]) == 1
    assert message in capsys.readouterr().err
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    assert main(["cutouts", "--catalog", str(blank), "--images", field.tiles[0], "--input-shape", "CANDELS",
                 "--output", str(tmp_path / "stamps.fits")]) == 1
    err = capsys.readouterr().err
    assert "has no columns: it is empty (expected a header line" in err and "Its columns are: \n" not in err
    assert sorted(os.listdir(tmp_path)) == ["blank.csv", "empty.csv"]


def test_rows_are_counted_from_1_in_cutouts_as_in_train(field, tmp_path, capsys):
    catalog = field.catalog.copy()
    catalog["dec"][0] = np.nan  # the first row of the file: row 1, as gamornet train counts
    catalog_path = str(tmp_path / "catalogue.fits")
    catalog.write(catalog_path)
    assert main(["cutouts", "--catalog", catalog_path, "--images", field.tiles[0], "--output",
                 str(tmp_path / "stamps.fits")]) == 1
    assert "rows counted from 1): row 1 (objid 101)" in capsys.readouterr().err


def test_an_image_hdu_without_a_wcs_in_an_exposure_is_refused_not_ignored(field, tmp_path):
    path = multi_extension_exposure(field, tmp_path / "exposure.fits")
    with fits.open(path, mode="append") as hdulist:
        hdulist.append(fits.ImageHDU(np.zeros((20, 20), np.float32), name="WEIGHT"))
    with pytest.raises(ValueError, match=r"no celestial WCS.*holds 3 images \(HDUs 1, 2, 3\).*--hdu"):
        SurveyImages([path])
