"""Tests of gamornet.models.card: per-image statistics against analytic profiles, cards, and the domain check."""

import json
import math

import numpy as np
import pytest

from gamornet.science import classify
from gamornet.models.card import (
    STATISTICS,
    check_domain,
    find_model_card,
    image_statistics,
    model_card,
    published_model_card,
    read_model_card,
    update_model_card,
    write_model_card,
)

SIDE = 64


def _radius_grid(side=SIDE):
    y, x = np.mgrid[:side, :side] - (side - 1) / 2.0
    return np.hypot(x, y)


def _stack(*images):
    return np.stack(images)[..., None]


def _bisect(function, low, high):
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if function(middle) < 0 else (low, middle)
    return (low + high) / 2


def _exponential_radius(fraction, scale, aperture):
    """Radius enclosing ``fraction`` of an exponential disk's light within ``aperture`` (analytic)."""
    enclosed = lambda r: 1 - (1 + r / scale) * math.exp(-r / scale)  # noqa: E731
    return _bisect(lambda r: enclosed(r) - fraction * enclosed(aperture), 0.0, aperture)


def test_statistics_of_a_gaussian_and_an_exponential_match_their_analytic_values():
    radius = _radius_grid()
    sigma, scale = 4.0, 3.0
    gaussian = 100 * np.exp(-(radius**2) / (2 * sigma**2))
    exponential = 100 * np.exp(-radius / scale)
    stats = image_statistics(_stack(gaussian, exponential))
    # Gaussian: the light within r is 1 - exp(-r^2 / 2 sigma^2), so r_f = sigma sqrt(-2 ln(1 - f)).
    r_f = {f: sigma * math.sqrt(-2 * math.log(1 - f)) for f in (0.2, 0.5, 0.8)}
    assert stats["size"][0] == pytest.approx(r_f[0.5], rel=0.01)
    assert stats["concentration"][0] == pytest.approx(5 * math.log10(r_f[0.8] / r_f[0.2]), rel=0.01)
    aperture = SIDE / 2 - 4  # inside the 4-pixel frame
    r_f = {f: _exponential_radius(f, scale, aperture) for f in (0.2, 0.5, 0.8)}
    assert stats["size"][1] == pytest.approx(r_f[0.5], rel=0.015)
    assert stats["concentration"][1] == pytest.approx(5 * math.log10(r_f[0.8] / r_f[0.2]), rel=0.015)
    # Noiseless: no background, a peak at the centre, only the profiles' faint wings in the frame.
    assert stats["background_level"][0] == pytest.approx(0.0, abs=1e-6)
    assert stats["border_noise"][0] == pytest.approx(0.0, abs=1e-6)
    assert (stats["peak_snr"] > 1e4).all()
    point = np.zeros((1, 16, 16, 1))
    point[0, 8, 8] = 1.0
    assert np.isinf(image_statistics(point)["peak_snr"][0])  # noiseless frame: infinite S/N


def test_background_noise_and_peak_snr_of_noisy_images():
    rng = np.random.default_rng(3)
    sky, noise, amplitude = 7.0, 2.0, 60.0
    point = np.zeros((SIDE, SIDE))
    point[SIDE // 2, SIDE // 2] = amplitude
    images = sky + point + rng.normal(0.0, noise, size=(40, SIDE, SIDE))
    stats = image_statistics(images[..., None])
    assert np.median(stats["background_level"]) == pytest.approx(sky, abs=0.05)
    assert np.median(stats["border_noise"]) == pytest.approx(noise, rel=0.05)
    # The brightest pixel is the point source (30 sigma), background-subtracted, over the noise.
    assert np.median(stats["peak_snr"]) == pytest.approx(amplitude / noise, rel=0.1)


def test_statistics_survive_negative_and_preprocessed_images():
    from gamornet.science.preprocess import preprocess_images

    rng = np.random.default_rng(4)
    radius = _radius_grid()
    galaxy = 50 * np.exp(-radius / 3.0)
    images = _stack(galaxy + rng.normal(0, 1.0, radius.shape), -np.abs(rng.normal(0, 1.0, radius.shape)) - 5.0)
    stats = image_statistics(images)
    # An image without positive light has no size or concentration; its S/N is still defined.
    assert np.isnan(stats["size"][1]) and np.isnan(stats["concentration"][1]) and np.isfinite(stats["peak_snr"][1])
    # Size, concentration and S/N do not depend on the image's units; level and noise scale with them.
    scaled = image_statistics(images[:1] * 0.01)
    for name in ("size", "concentration", "peak_snr"):
        assert scaled[name][0] == pytest.approx(stats[name][0], rel=1e-9)
    assert scaled["border_noise"][0] == pytest.approx(0.01 * stats["border_noise"][0], rel=1e-9)
    stretched = image_statistics(preprocess_images(images[:1], stretch="asinh", scaling="peak"))
    assert all(np.isfinite(stretched[name][0]) for name in STATISTICS)
    assert stretched["concentration"][0] < stats["concentration"][0]  # the stretch flattens the profile
    blank = image_statistics(np.zeros((1, 16, 16, 1)))
    assert np.isnan(blank["peak_snr"][0]) and np.isnan(blank["size"][0])


def _galaxies(n, rng, noise=1.0, width=(2.0, 4.0)):
    radius = _radius_grid(32)
    widths = rng.uniform(*width, size=(n, 1, 1))
    amplitudes = rng.uniform(20, 60, size=(n, 1, 1))
    return (amplitudes * np.exp(-(radius**2) / (2 * widths**2)) + rng.normal(0, noise, (n, 32, 32)))[..., None]


def test_the_domain_check_flags_shifted_images_and_names_the_statistic():
    rng = np.random.default_rng(5)
    card = model_card(_galaxies(1000, rng), survey="toy", pixel_scale=0.1, trained_by="a test")
    assert card["n_training_images"] == 1000 and card["input_shape"] == [32, 32, 1]
    in_domain = check_domain(_galaxies(400, rng), card)
    # Five statistics, each with 1% of the training images outside its range: about 5% at most.
    assert in_domain.share < 0.09
    noisier = check_domain(_galaxies(200, rng, noise=4.0), card)
    assert noisier.share > 0.95
    assert all("border_noise" in entry for entry in noisier.failed)
    wider = check_domain(_galaxies(200, rng, width=(6.0, 8.0)), card)
    assert wider.share > 0.95 and all("size" in entry for entry in wider.failed)
    assert wider.shares_by_statistic()["size"] == 1.0
    assert "of 200 images lie outside the model card's central 99% range (" in wider.summary()
    assert set(wider.checked) == set(STATISTICS)
    low, high = wider.ranges["size"]
    sizes = image_statistics(_galaxies(1000, np.random.default_rng(5)))["size"]
    assert (low, high) == pytest.approx(tuple(np.quantile(sizes, [0.005, 0.995])))


def test_cards_are_written_read_updated_and_found(tmp_path):
    rng = np.random.default_rng(6)
    images = _galaxies(50, rng)
    path = write_model_card(tmp_path, images, survey="toy", preprocessing={"stretch": "none"})
    assert path == str(tmp_path / "model_card.json")
    card = read_model_card(tmp_path)
    assert card == json.loads((tmp_path / "model_card.json").read_text())
    assert card["survey"] == "toy" and card["statistics"]["size"]["n_undefined"] == 0
    update_model_card(path, pixel_scale_arcsec=0.06, notes=["a note"])
    assert read_model_card(path)["pixel_scale_arcsec"] == 0.06
    assert read_model_card(path)["statistics"] == card["statistics"]
    (tmp_path / "trained_model.hdf5").write_bytes(b"")
    assert find_model_card(str(tmp_path / "trained_model.hdf5"))["survey"] == "toy"
    assert find_model_card(str(tmp_path / "elsewhere" / "model.hdf5")) is None
    assert check_domain(images, path).failed.tolist() == check_domain(images, card).failed.tolist()


def test_card_errors(tmp_path):
    images = _galaxies(20, np.random.default_rng(7))
    path = write_model_card(tmp_path, images)
    with pytest.raises(ValueError, match=r"a card's \['statistics'\] come from its training images"):
        update_model_card(path, statistics={})
    with pytest.raises(ValueError, match="the model card is for images of shape \\(32, 32, 1\\)"):
        check_domain(np.zeros((2, 16, 16, 1)), path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a JSON model card"):
        read_model_card(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="is not a gamornet model card"):
        check_domain(images, str(tmp_path / "other.json"))
    card = read_model_card(path)
    with pytest.raises(ValueError, match="model card of version 99"):
        check_domain(images, dict(card, version=99))
    broken = dict(card, statistics={"size": {"quantiles": [3, 2, 1]}})
    with pytest.raises(ValueError, match="the quantiles of 'size' must be 9 increasing numbers"):
        check_domain(images, broken)
    with pytest.raises(FileNotFoundError):
        read_model_card(tmp_path / "missing")
    with pytest.raises(ValueError, match="images must hold finite pixel values, but image 1"):
        image_statistics(np.stack([images[0], images[1] * np.nan]))
    with pytest.raises(ValueError, match="leaves no inner region"):
        image_statistics(images, border=16)
    with pytest.raises(TypeError, match="images must be a numpy array"):
        image_statistics([[1.0]])


def test_published_cards_come_from_the_paper_and_the_handbook():
    card = published_model_card("CANDELS_tl", "tflearn")
    assert card["pixel_scale_arcsec"] == 0.06 and card["input_shape"] == [83, 83, 1]
    assert card["handbook"]["accuracy_percent"]["actual_disks"] == [91.83, 20.86]  # handbook, TFLearn on CANDELS
    assert card["handbook"]["indeterminate_fraction"] == 0.39
    assert card["handbook"]["thresholds"] == {"disk": 0.36, "bulge": 0.55, "disk_must_lead": True}
    assert classify.HANDBOOK_THRESHOLDS["tflearn_CANDELS"].bulge == 0.55
    assert card["statistics"] is None and any("statistics unknown" in note for note in card["notes"])
    assert find_model_card("SDSS_sim")["band"] == "SDSS g"
    # With no statistics, nothing is checked and nothing is flagged.
    check = check_domain(np.random.default_rng(0).normal(size=(3, 83, 83, 1)), card)
    assert check.checked == () and not check.out_of_domain.any()
    assert check.summary().startswith("no domain check")
    with pytest.raises(ValueError, match="model name must be one of"):
        published_model_card("HST_tl")


def test_the_predictor_and_gamornet_predict_check_images_against_the_card_beside_the_model(tmp_path, keras_case,
                                                                                          capsys):
    import csv

    import reference
    from legacy_files import write_keras2_file

    from gamornet.cli.main import main
    from gamornet.models.card import has_statistics, resolve_model_card
    from gamornet.inference.predictor import load_predictor

    shape = (83, 83, 1)
    _, weights = keras_case("CANDELS")
    folder = tmp_path / "model"
    folder.mkdir()
    model = write_keras2_file(str(folder / "model.hdf5"), weights)
    write_model_card(folder, reference.galaxy_images(300, shape, seed=3))
    fresh = reference.galaxy_images(40, shape, seed=4)
    shifted = reference.galaxy_images(40, shape, seed=5, sky=2500.0)  # 5x the noise, 25x the sky
    images = np.concatenate([fresh, shifted])
    with load_predictor(model, "CANDELS", model_card="auto") as predictor:
        assert predictor.columns == ("out_of_domain",)
        failed = predictor.predict_batch(images).columns["out_of_domain"]
        assert predictor.provenance()["model_card"]["n_training_images"] == 300
        probabilities = predictor.predict(images)
    assert np.mean(failed[:40] != "") < 0.15 and (failed[40:] != "").all()
    with load_predictor(model, "CANDELS") as predictor:  # no card asked for: no column, the same probabilities
        assert predictor.columns == ()
        np.testing.assert_array_equal(predictor.predict(images), probabilities)
    np.save(tmp_path / "mixed.npy", images)
    output = tmp_path / "out.csv"
    assert main(["predict", str(tmp_path / "mixed.npy"), "--model", model, "--input-shape", "CANDELS",
                 "--output", str(output), "--no-progress"]) == 0  # fmt: skip
    with open(output, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["out_of_domain"] for row in rows] == failed.tolist()
    share = np.mean(failed != "")
    assert f"gamornet predict: {share:.1%} of the images lie outside the model card's central 99% range" in \
        capsys.readouterr().err  # fmt: skip
    # A published model's card has no statistics: nothing to check, no column.
    assert not has_statistics(resolve_model_card("auto", "CANDELS_tl", "keras", shape))
    with pytest.raises(ValueError, match=r"the model card is for images of shape \(32, 32, 1\), but the model takes"):
        load_predictor(model, "CANDELS", model_card=model_card(_galaxies(20, np.random.default_rng(1))))
    with pytest.raises(TypeError, match="model_card must be None, 'auto', a card"):
        load_predictor(model, "CANDELS", model_card=3)
