"""Tests of gamornet.science.preprocess: per-image scalings and stretches, computed independently with numpy."""

import ast
import os

import numpy as np
import pytest

import gamornet
from gamornet.science import preprocess
from gamornet.science.preprocess import estimate_background, preprocess_images, preprocessing_settings


def _galaxies(n=5, size=32, noise=2.0, seed=0):
    """Gaussian blobs of different brightness on a sky of known noise."""
    rng = np.random.default_rng(seed)
    y, x = np.indices((size, size)) - (size - 1) / 2
    amplitudes = 10.0 ** rng.uniform(1, 4, n)
    blobs = amplitudes[:, None, None] * np.exp(-(x**2 + y**2) / (2 * 3.0**2))
    return (blobs + rng.normal(0, noise, (n, size, size)))[..., None].astype(np.float32)


def test_peak_scaling_divides_each_image_by_its_maximum():
    images = _galaxies()
    before = images.copy()
    out = preprocess_images(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    assert np.allclose(out, images / images.max(axis=(1, 2, 3), keepdims=True), rtol=1e-6)
    assert np.array_equal(images, before)


def test_sum_and_zscore_scalings():
    images = _galaxies()
    out = preprocess_images(images, scaling="sum")
    assert np.allclose(np.clip(out, 0, None).sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    out = preprocess_images(images, scaling="zscore")
    assert np.allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    assert np.allclose(out.std(axis=(1, 2, 3)), 1.0, rtol=1e-4)
    assert np.allclose(preprocess_images(images, scaling="none"), images)


def test_background_is_estimated_from_the_border():
    rng = np.random.default_rng(3)
    images = (7.0 + rng.normal(0, 2.0, (4, 96, 96, 1))).astype(np.float32)
    images[:, 30:66, 30:66] += 1000.0  # a bright source off the border changes nothing
    level, noise = estimate_background(images, border=8)
    assert level.shape == (4, 1) and noise.shape == (4, 1)
    assert np.allclose(level, 7.0, atol=0.2)
    assert np.allclose(noise, 2.0, rtol=0.06)


def test_asinh_and_log_stretches_use_the_background_noise():
    images = _galaxies(noise=2.0)
    _, noise = estimate_background(images)
    x = images.astype(np.float64)
    expected = np.arcsinh(x / (3.0 * noise[:, None, None, :]))
    expected /= expected.max(axis=(1, 2, 3), keepdims=True)
    assert np.allclose(preprocess_images(images, stretch="asinh"), expected, atol=1e-6)
    expected = np.log10(1 + np.clip(x, 0, None) / (5.0 * noise[:, None, None, :]))
    assert np.allclose(preprocess_images(images, stretch="log", softening=5.0, scaling="none"), expected, atol=1e-5)
    # The stretch compresses the bright core: a faint pixel gains relative to the peak.
    bright = _galaxies(n=1, noise=2.0)
    bright[0, 16, 16, 0] = 1e4
    bright[0, 16, 22, 0] = 1e3
    linear = preprocess_images(bright)
    stretched = preprocess_images(bright, stretch="asinh")
    assert linear[0, 16, 22, 0] == pytest.approx(0.1)
    assert stretched[0, 16, 22, 0] > 0.7


def test_background_subtraction():
    images = _galaxies() + np.float32(50.0)
    out = preprocess_images(images, scaling="none", subtract_background=True)
    assert np.allclose(out, images - np.median(
        np.concatenate([images[:, :4].reshape(5, -1), images[:, -4:].reshape(5, -1),
                        images[:, 4:-4, :4].reshape(5, -1), images[:, 4:-4, -4:].reshape(5, -1)], axis=1),
        axis=1)[:, None, None, None], atol=1e-4)  # fmt: skip


def test_blank_and_noiseless_images_are_left_finite():
    images = np.zeros((2, 16, 16, 1), dtype=np.float32)
    for stretch in preprocess.STRETCHES:
        for scaling in preprocess.SCALINGS:
            out = preprocess_images(images, stretch=stretch, scaling=scaling)
            assert np.isfinite(out).all() and np.array_equal(out, images)
    noiseless = np.zeros((1, 16, 16, 1), dtype=np.float32)
    noiseless[0, 8, 8, 0] = 10.0
    assert np.isfinite(preprocess_images(noiseless, stretch="asinh")).all()


def test_chunks_give_the_same_result(monkeypatch):
    images = _galaxies(n=7)
    whole = preprocess_images(images, stretch="asinh", scaling="zscore")
    monkeypatch.setattr(preprocess, "_CHUNK", 2)
    assert np.array_equal(preprocess_images(images, stretch="asinh", scaling="zscore"), whole)


def test_multi_band_images_are_scaled_per_band():
    images = np.concatenate([_galaxies(seed=1), 10 * _galaxies(seed=2)], axis=3)
    out = preprocess_images(images)
    assert np.allclose(out.max(axis=(1, 2)), 1.0)


def test_settings_round_trip():
    settings = preprocessing_settings(stretch="asinh", scaling="peak", softening=2)
    assert settings == {"stretch": "asinh", "scaling": "peak", "softening": 2.0, "border": 4,
                        "subtract_background": False}  # fmt: skip
    images = _galaxies()
    assert np.array_equal(preprocess_images(images, **settings), preprocess_images(images, "asinh", "peak", 2.0))


def test_bad_input_is_refused():
    images = _galaxies()
    with pytest.raises(TypeError, match="images must be a numpy array .* Received an object of type list"):
        preprocess_images(images.tolist())
    with pytest.raises(ValueError, match=r"non-empty 4-D array .* Received an array of shape \(5, 32, 32\)"):
        preprocess_images(images[..., 0])
    with pytest.raises(TypeError, match="real numbers"):
        preprocess_images(images.astype(np.complex64))
    with pytest.raises(ValueError, match="stretch must be one of 'none', 'asinh', 'log'. Received: stretch='sqrt'"):
        preprocess_images(images, stretch="sqrt")
    with pytest.raises(ValueError, match="scaling must be one of"):
        preprocess_images(images, scaling="max")
    with pytest.raises(ValueError, match="softening must be a positive number"):
        preprocess_images(images, stretch="asinh", softening=0)
    with pytest.raises(ValueError, match="border must be a positive integer"):
        preprocess_images(images, border=0)
    with pytest.raises(ValueError, match="leaves no inner region"):
        preprocess_images(images, border=16)
    with pytest.raises(TypeError, match="subtract_background must be True or False"):
        preprocess_images(images, subtract_background="yes")
    bad = images.copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="image 3 holds NaN or infinite pixels"):
        preprocess_images(bad)


def test_the_largest_border_allowed_is_the_one_the_message_names():
    # 33x40 pixels: a border of 16 leaves a 1-pixel-wide inner region, one of 17 leaves none.
    images = _galaxies(n=2, size=40)[:, :33]
    level, _ = estimate_background(images, border=16)
    assert level.shape == (2, 1)
    with pytest.raises(ValueError, match=r"images of 33x40 pixels; .*half the smaller side: at most 16 pixels"):
        estimate_background(images, border=17)


def test_nothing_in_the_package_applies_preprocessing_implicitly():
    # Only the demo (which trains from scratch on purpose), training from catalogues (where preprocessing is an
    # option, off unless given: tests/test_training.py checks that images reach the network as read; the recipe's
    # validation sample is prepared the same way) and the predictor, which applies the preprocessing a model folder
    # records (tests/test_model_folder.py, with --preprocessing none to turn it off), may call preprocess_images.
    # Other modules may use the measurements of gamornet.science.preprocess (estimate_background ...).
    allowed = {"science/preprocess.py", "demo/run.py", "training/data.py", "training/_loop.py", "training/recipe.py",
               "inference/predictor.py"}
    folder = os.path.dirname(gamornet.__file__)
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            relative = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if not name.endswith(".py") or relative in allowed:
                continue
            with open(os.path.join(root, name), encoding="utf-8") as source:
                tree = ast.parse(source.read())
            used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} | {
                node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
            assert "preprocess_images" not in used, name
