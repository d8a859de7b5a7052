"""Tests of gamornet.training.simulate: the physics of the simulated galaxies, determinism, files and errors.

Expected values are computed here from the instrument numbers (zero point,
exposure, gain, sky brightness, pixel scale) and measured on the images with
plain numpy, independently of the simulator's own helpers.
"""

import dataclasses
import sys

import numpy as np
import pytest

from gamornet.training import simulate
from gamornet.training.simulate import (
    PARAMETER_DTYPE,
    get_preset,
    read_parameter_table,
    render_galaxy,
    sample_parameters,
    simulate_galaxies,
    write_fits_cutouts,
    write_parameter_table,
)

pytest.importorskip("galsim")


def _compact(preset_name, **changes):
    """A preset whose galaxies are small enough that (nearly) all their light falls in the cutout."""
    preset = get_preset(preset_name)
    scale = preset.pixel_scale
    return dataclasses.replace(
        preset,
        disk_radius_range=(3 * scale, 4 * scale),
        bulge_radius_range=(1 * scale, 2 * scale),
        **changes,
    )


def _expected_sky_adu(preset):
    # mu (mag/arcsec^2) -> ADU/s/arcsec^2 with the zero point, times exposure and pixel area.
    return 10 ** (-0.4 * (preset.sky_brightness - preset.zero_point)) * preset.exposure_time * preset.pixel_scale**2


def _fwhm_from_half_maximum_area(image, scale):
    """FWHM of a round peak: the diameter of the circle whose area is that of the pixels above half maximum."""
    area = np.count_nonzero(image >= image.max() / 2) * scale**2
    return 2 * np.sqrt(area / np.pi)


# --------------------------------------------------------------------------- instrument numbers


def test_preset_numbers_follow_from_zero_point_exposure_and_sky():
    sdss = get_preset("SDSS")
    candels = get_preset("CANDELS")
    assert (sdss.shape, sdss.pixel_scale, candels.shape, candels.pixel_scale) == ((167, 167), 0.396, (83, 83), 0.06)
    # 1 nanomaggy (22.5 AB mag) gives ~250 ADU in an SDSS g frame (nmgypercount ~ 0.004).
    assert 200 < sdss.flux_of(22.5) < 300
    # CANDELS zero point 25.95 is 1 e-/s with gain 1: a 25.95 mag source gives exposure_time ADU.
    assert candels.flux_of(25.95) == pytest.approx(candels.exposure_time)
    for preset in (sdss, candels):
        assert preset.sky_level == pytest.approx(_expected_sky_adu(preset))


# --------------------------------------------------------------------------- physics


@pytest.mark.parametrize("preset_name", ["SDSS", "CANDELS"])
def test_flux_is_conserved_without_noise(preset_name):
    # A wide cutout: a de Vaucouleurs bulge has ~1% of its light beyond 20 half-light radii.
    preset = _compact(preset_name, shape=(201, 201))
    table = sample_parameters(5, preset, seed=11)
    for row in table:
        image = render_galaxy(row, preset)
        assert image.sum() == pytest.approx(row["disk_flux"] + row["bulge_flux"], rel=0.01)


def test_flux_is_conserved_with_sky_and_noise():
    preset = _compact("CANDELS", magnitude_range=(20.0, 20.0))
    images, table = simulate_galaxies(4, preset, seed=5, n_workers=1, progress=False)
    npix = images[0].size
    for image, row in zip(images, table):
        flux = row["disk_flux"] + row["bulge_flux"]
        # The light inside this 83 x 83 cutout: the noise-free image (whole flux checked above, wider cutout).
        inside = render_galaxy(row, preset).astype(np.float64).sum()
        assert inside == pytest.approx(flux, rel=0.03)
        sigma = np.sqrt(npix * preset.noise_per_pixel() ** 2 + flux / preset.gain)
        assert abs(image.sum() - inside) < 5 * sigma
    # With the sky left in, the total minus the sky of every pixel is the galaxy's flux.
    with_sky, _ = simulate_galaxies(4, preset, seed=5, n_workers=1, progress=False, subtract_sky=False)
    assert np.allclose(with_sky - _expected_sky_adu(preset), images, atol=1e-2)


@pytest.mark.parametrize("preset_name", ["SDSS", "CANDELS"])
def test_bulge_to_total_is_recovered_from_the_two_components(preset_name):
    preset = _compact(preset_name)
    table = sample_parameters(6, preset, seed=3)
    for row in table:
        bulge = render_galaxy(row, preset, component="bulge").astype(np.float64)
        disk = render_galaxy(row, preset, component="disk").astype(np.float64)
        both = render_galaxy(row, preset).astype(np.float64)
        assert bulge.sum() / (bulge.sum() + disk.sum()) == pytest.approx(row["bulge_to_total"], abs=0.015)
        assert np.allclose(bulge + disk, both, rtol=1e-4, atol=1e-3 * both.max())
        # The table's magnitudes are those of the components' fluxes.
        if 0 < row["bulge_to_total"] < 1:
            assert row["bulge_magnitude"] == pytest.approx(
                preset.zero_point - 2.5 * np.log10(row["bulge_flux"] / preset.exposure_time)
            )


@pytest.mark.parametrize("preset_name", ["SDSS", "CANDELS"])
def test_psf_full_width_at_half_maximum_matches_the_preset(preset_name):
    preset = get_preset(preset_name)
    # Finely sampled, so the measurement sees the PSF and not the pixels.
    fine = dataclasses.replace(preset, pixel_scale=preset.psf_fwhm / 20, shape=(121, 121), centre_offset=0.0)
    row = sample_parameters(1, fine, seed=0)[0]
    point = render_galaxy(row, fine, component="point")
    assert _fwhm_from_half_maximum_area(point, fine.pixel_scale) == pytest.approx(preset.psf_fwhm, rel=0.05)
    # At the survey's own pixels, a point source is the PSF broadened by the pixel: a little wider.
    row = sample_parameters(1, dataclasses.replace(preset, centre_offset=0.0), seed=0)[0]
    imaged = render_galaxy(row, preset, component="point")
    measured = _fwhm_from_half_maximum_area(imaged, preset.pixel_scale)
    assert preset.psf_fwhm * 0.85 < measured < preset.psf_fwhm + 1.5 * preset.pixel_scale


@pytest.mark.parametrize("preset_name", ["SDSS", "CANDELS"])
@pytest.mark.parametrize("read_noise", [0.0, 10.0])
def test_blank_sky_noise_is_poisson_of_the_sky_plus_read_noise(preset_name, read_noise):
    # Galaxies far too faint to see: the image is sky noise only.
    preset = dataclasses.replace(
        get_preset(preset_name, (64, 64)), magnitude_range=(45.0, 45.0), read_noise=read_noise
    )
    images, _ = simulate_galaxies(6, preset, seed=2, n_workers=1, progress=False)
    sky = _expected_sky_adu(preset)
    expected = np.sqrt(sky / preset.gain + (read_noise / preset.gain) ** 2)
    assert images.std() == pytest.approx(expected, rel=0.03)
    assert abs(images.mean()) < 4 * expected / np.sqrt(images.size)
    with_sky, _ = simulate_galaxies(6, preset, seed=2, n_workers=1, progress=False, subtract_sky=False)
    assert with_sky.mean() == pytest.approx(sky, abs=4 * expected / np.sqrt(images.size))


@pytest.mark.parametrize(
    ("bulge_to_total", "label"),
    [(0.0, 0), (0.4499, 0), (0.45, 1), (0.5, 1), (0.55, 1), (0.5501, 2), (1.0, 2)],
)
def test_labels_follow_the_paper_rule_at_its_boundaries(bulge_to_total, label):
    preset = dataclasses.replace(get_preset("CANDELS"), bulge_to_total_range=(bulge_to_total, bulge_to_total))
    table = sample_parameters(3, preset, seed=1)
    assert np.all(table["bulge_to_total"] == bulge_to_total)
    assert np.all(table["label"] == label)


def test_pure_disks_and_pure_bulges_draw():
    for ratio in (0.0, 1.0):
        preset = dataclasses.replace(_compact("CANDELS", shape=(201, 201)), bulge_to_total_range=(ratio, ratio))
        row = sample_parameters(1, preset, seed=4)[0]
        image = render_galaxy(row, preset)
        assert image.sum() == pytest.approx(row["disk_flux"] + row["bulge_flux"], rel=0.01)
        assert np.isinf(row["disk_magnitude" if ratio == 1 else "bulge_magnitude"])


def test_parameters_stay_in_their_documented_ranges():
    preset = get_preset("SDSS")
    table = sample_parameters(2000, preset, seed=8)
    for field, bounds in (
        ("bulge_to_total", preset.bulge_to_total_range),
        ("magnitude", preset.magnitude_range),
        ("disk_half_light_radius", preset.disk_radius_range),
        ("bulge_half_light_radius", preset.bulge_radius_range),
        ("disk_axis_ratio", preset.disk_axis_ratio_range),
        ("bulge_axis_ratio", preset.bulge_axis_ratio_range),
    ):
        assert bounds[0] <= table[field].min() and table[field].max() <= bounds[1], field
    # B/T spans 0-1 uniformly: about 45% disks, 10% indeterminate, 45% bulges.
    assert table["bulge_to_total"].min() < 0.01 and table["bulge_to_total"].max() > 0.99
    shares = np.bincount(table["label"], minlength=3) / len(table)
    assert np.allclose(shares, [0.45, 0.10, 0.45], atol=0.04)
    misalignment = np.abs(table["bulge_position_angle"] - table["disk_position_angle"])
    assert misalignment.max() <= preset.position_angle_misalignment
    centre = (np.array(preset.shape) + 1) / 2
    assert np.abs(table["x_centre"] - centre[0]).max() <= preset.centre_offset
    assert np.abs(table["y_centre"] - centre[1]).max() <= preset.centre_offset


# --------------------------------------------------------------------------- determinism and shapes


def test_simulation_is_deterministic_and_independent_of_workers_and_size():
    preset = get_preset("CANDELS", (24, 24))
    images, table = simulate_galaxies(70, preset, seed=21, n_workers=1, progress=False)
    again, again_table = simulate_galaxies(70, preset, seed=21, n_workers=1, progress=False)
    assert np.array_equal(images, again) and np.array_equal(table, again_table)
    parallel, parallel_table = simulate_galaxies(70, preset, seed=21, n_workers=2, progress=False)
    assert np.array_equal(images, parallel) and np.array_equal(table, parallel_table)
    first, first_table = simulate_galaxies(5, preset, seed=21, n_workers=1, progress=False)
    assert np.array_equal(first, images[:5]) and np.array_equal(first_table, table[:5])
    other, other_table = simulate_galaxies(5, preset, seed=22, n_workers=1, progress=False)
    assert not np.array_equal(other, first) and not np.array_equal(other_table["bulge_to_total"], first_table["bulge_to_total"])
    assert np.array_equal(table["index"], np.arange(70))


def test_images_have_the_network_layout_for_custom_shapes():
    images, table = simulate_galaxies(3, "CANDELS", shape=(40, 30, 1), seed=1, n_workers=1, progress=False)
    assert images.shape == (3, 30, 40, 1) and images.dtype == np.float32
    assert table.dtype == PARAMETER_DTYPE
    assert np.allclose(table["x_centre"], 20.5, atol=1.0) and np.allclose(table["y_centre"], 15.5, atol=1.0)


def test_galaxy_centre_is_where_the_table_says():
    preset = dataclasses.replace(_compact("CANDELS", magnitude_range=(18.0, 18.0)), bulge_to_total_range=(1.0, 1.0))
    for row in sample_parameters(3, preset, seed=9):
        image = render_galaxy(row, preset).astype(np.float64)
        rows, columns = np.indices(image.shape)
        # FITS pixel coordinates: column + 1 is x, row + 1 is y.
        assert (image * (columns + 1)).sum() / image.sum() == pytest.approx(row["x_centre"], abs=0.05)
        assert (image * (rows + 1)).sum() / image.sum() == pytest.approx(row["y_centre"], abs=0.05)


# --------------------------------------------------------------------------- files


def test_fits_cutouts_and_parameter_table_round_trip(tmp_path):
    from astropy.io import fits

    preset = get_preset("SDSS", (32, 32))
    images, table = simulate_galaxies(4, preset, seed=6, n_workers=1, progress=False)
    paths = write_fits_cutouts(images, table, str(tmp_path / "sims"), preset, progress=False)
    assert [p.rsplit("/", 1)[1] for p in paths] == [f"output_img_{i}.fits" for i in range(4)]
    for index, path in enumerate(paths):
        with fits.open(path) as hdus:
            assert np.array_equal(hdus[0].data, images[index, ..., 0])
            assert hdus[0].header["BT"] == pytest.approx(table["bulge_to_total"][index])
            assert hdus[0].header["PIXSCALE"] == 0.396 and hdus[0].header["SKYSUB"] is True
    text = (tmp_path / "sims" / "sim_para.txt").read_text()
    assert "#sersic_idx R_e axis_ratio PA Inte_Mag x_pos y_pos sersic_idx_2" in text
    back = read_parameter_table(str(tmp_path / "sims" / "sim_para.txt"))
    assert np.allclose(back["R_e"], table["disk_half_light_radius"] / 0.396, atol=1e-4)
    assert np.allclose(back["R_e_2"], table["bulge_half_light_radius"] / 0.396, atol=1e-4)
    assert np.allclose(back["Inte_Mag_2"], table["bulge_magnitude"], atol=1e-4)
    assert np.allclose(back["bulge_to_total"], table["bulge_to_total"], atol=1e-4)
    assert np.array_equal(back["label"], table["label"])
    assert np.all(back["sersic_idx"] == 1) and np.all(back["sersic_idx_2"] == 4)
    assert sorted(p.name for p in (tmp_path / "sims").iterdir() if p.name.startswith(".tmp")) == []


def test_reading_a_table_without_a_header_fails(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("# a comment\n1 2 3\n")
    with pytest.raises(ValueError, match="no header line"):
        read_parameter_table(str(path))
    path.write_text("#sersic_idx R_e\n1 2 3\n")
    with pytest.raises(ValueError, match="has 3 values, but the header names 2"):
        read_parameter_table(str(path))


# --------------------------------------------------------------------------- errors


def test_bad_presets_and_shapes_are_refused():
    with pytest.raises(ValueError, match="preset must be 'SDSS', 'CANDELS' or a SurveyPreset. Received: preset='HST'"):
        get_preset("HST")
    with pytest.raises(TypeError, match="preset must be .* Received an object of type int"):
        get_preset(5)
    with pytest.raises(ValueError, match="shape must be a tuple"):
        get_preset("SDSS", (4, 4))
    with pytest.raises(ValueError, match="shape must be a tuple"):
        get_preset("SDSS", 64)
    with pytest.raises(ValueError, match=r"magnitude_range must be a pair \(low, high\)"):
        dataclasses.replace(get_preset("SDSS"), magnitude_range=(20.0, 19.0))
    with pytest.raises(ValueError, match="bulge_to_total_range must be a pair"):
        dataclasses.replace(get_preset("SDSS"), bulge_to_total_range=(0.0, 1.5))
    with pytest.raises(TypeError, match="disk_radius_range must be a pair of numbers"):
        dataclasses.replace(get_preset("SDSS"), disk_radius_range=3.0)
    with pytest.raises(ValueError, match="pixel_scale must be a positive number"):
        dataclasses.replace(get_preset("SDSS"), pixel_scale=0.0)
    with pytest.raises(ValueError, match="psf must be 'kolmogorov' or 'airy'"):
        dataclasses.replace(get_preset("SDSS"), psf="gaussian")
    with pytest.raises(ValueError, match="read_noise must be a number >= 0"):
        dataclasses.replace(get_preset("SDSS"), read_noise=-1.0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n_galaxies must be a positive integer. Received: n_galaxies=0"):
        simulate_galaxies(0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        simulate_galaxies(2, seed=-1)
    with pytest.raises(ValueError, match="n_workers must be a positive integer"):
        simulate_galaxies(2, n_workers=0)
    row = sample_parameters(1, "CANDELS")[0]
    with pytest.raises(ValueError, match="component must be 'both', 'bulge', 'disk' or 'point'"):
        render_galaxy(row, "CANDELS", component="halo")


def test_bad_files_arguments_are_refused(tmp_path):
    images, table = simulate_galaxies(2, "CANDELS", shape=(16, 16), n_workers=1, progress=False)
    with pytest.raises(ValueError, match="There are 1 images but 2 rows"):
        write_fits_cutouts(images[:1], table, str(tmp_path), "CANDELS", progress=False)
    with pytest.raises(ValueError, match=r"images must have shape \(n, y, x, 1\)"):
        write_fits_cutouts(images[0, :, :, 0], table, str(tmp_path), "CANDELS", progress=False)
    with pytest.raises(TypeError, match="parameters must be the 1-D parameter table"):
        write_parameter_table(np.zeros(2), str(tmp_path / "t.txt"))


def test_missing_galsim_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "galsim", None)
    with pytest.raises(ImportError, match=r"pip install 'gamornet\[sim\]'"):
        simulate_galaxies(2, n_workers=1, progress=False)
    # The parameters alone need no GalSim.
    assert len(simulate.sample_parameters(2)) == 2
