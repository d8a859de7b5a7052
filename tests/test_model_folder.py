"""A model folder is the unit: what training writes, what calibrate/thresholds --save add, and what predict applies.

The models here are trained for real (one epoch on a few 32 x 32 galaxies, one
per preprocessing) or written from known weights (tests/reference.py). What the
command line writes is compared with the network given images preprocessed by
hand: with the same engine to 1e-6 (the same arithmetic), and with the numpy
reference network to 1e-4.
"""

import csv
import json
import os
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits

import reference
from legacy_files import write_keras2_file

import gamornet
from gamornet.cli.main import main
from gamornet.errors import CalibrationMismatchError, PreprocessingWarning
from gamornet.models import formats
from gamornet.science.calibration import apply_temperature
from gamornet.science.classify import Thresholds, classify
from gamornet.science.preprocess import preprocess_images

SHAPE = (32, 32, 1)
PREPROCESSINGS = {
    "none": None,
    "peak": {"scaling": "peak"},
    "asinh_peak": {"stretch": "asinh", "scaling": "peak"},
}


def raw_images(n=6, shape=SHAPE, seed=5):
    """Galaxies as a survey delivers them: counts of hundreds, on a sky of 100."""
    return reference.galaxy_images(n, shape, seed=seed).astype(np.float32)


def write_fits(folder, images):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = os.path.join(folder, f"galaxy_{index:02d}.fits")
        fits.PrimaryHDU(image[:, :, 0]).writeto(path)
        paths.append(path)
    return paths


def read_predictions(path):
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    return ([row["source"] for row in rows], np.array([[float(row[name]) for name in ("p_disk", "p_indet", "p_bulge")]
                                                       for row in rows]), [row["class"] for row in rows])  # fmt: skip


@pytest.fixture(scope="module", params=sorted(PREPROCESSINGS))
def trained(request, tmp_path_factory):
    """A model folder trained (one epoch, Adam) on 12 galaxies with one of the preprocessings."""
    from gamornet.keras_module import gamornet_train_keras

    settings = PREPROCESSINGS[request.param]
    folder = str(tmp_path_factory.mktemp(f"model-{request.param}"))
    images = raw_images(18, seed=11)
    labels = np.eye(3)[np.arange(18) % 3]
    gamornet_train_keras(images[:12], labels[:12], images[12:], labels[12:], SHAPE, files_save_path=folder, epochs=1,
                         batch_size=6, verbose=0, preprocessing=settings, seed=0, optimizer="adam",
                         divergence_guard=False)  # fmt: skip
    return folder, settings


def network(folder):
    return formats.read_weights(os.path.join(folder, "trained_model.hdf5"), SHAPE, "keras")


def as_network_sees(images, settings):
    return images if settings is None else preprocess_images(images, **settings)


@pytest.mark.slow
@pytest.mark.numeric
def test_predict_applies_the_folders_preprocessing_to_raw_fits(trained, tmp_path, capsys):
    folder, settings = trained
    raw = raw_images()
    paths = write_fits(str(tmp_path / "raw"), raw)
    output = str(tmp_path / "classes.csv")
    # The folder or its weights file: the same model, the same preprocessing.
    for model in (folder, os.path.join(folder, "trained_model.hdf5")):
        assert main(["predict", str(tmp_path / "raw"), "--model", model, "--thresholds", "0.6,0.6", "--output", output,
                     "--no-progress"]) == 0  # fmt: skip
        sources, probabilities, _ = read_predictions(output)
        assert sources == paths
        with gamornet.load_predictor(folder, preprocessing=None) as bare:
            by_hand = bare.predict(as_network_sees(raw, settings))
        np.testing.assert_allclose(probabilities, by_hand, atol=1e-6, rtol=0)
        np.testing.assert_allclose(probabilities, reference.forward(as_network_sees(raw, settings), network(folder)),
                                   atol=1e-4)  # fmt: skip
        err = capsys.readouterr().err
        applied = err.splitlines()[0]
        assert applied.startswith("gamornet predict: applies preprocessing: ")
        if settings is None:
            assert "preprocessing: none (images as they are)" in applied
        else:
            assert f"{settings['scaling']} scaling" in applied and "preprocessing.json" in applied
        assert "calibration: none" in applied and "thresholds: p_disk >= 0.6, p_bulge >= 0.6" in applied


@pytest.mark.slow
def test_the_predictor_and_every_path_apply_it(trained):
    folder, settings = trained
    if settings is None:
        pytest.skip("nothing to apply")
    raw, preprocessed = raw_images(), as_network_sees(raw_images(), settings)
    with gamornet.load_predictor(folder) as own, gamornet.load_predictor(folder, preprocessing="none") as bare:
        assert own.preprocessing == dict(settings, **{key: own.preprocessing[key] for key in own.preprocessing
                                                      if key not in settings})  # fmt: skip
        assert own.provenance()["preprocessing"] == own.preprocessing and bare.provenance()["preprocessing"] is None
        np.testing.assert_allclose(own.predict(raw), bare.predict(preprocessed), atol=1e-6, rtol=0)
        np.testing.assert_allclose(own.predict_batch(raw).probabilities, bare.predict(preprocessed), atol=1e-6, rtol=0)
    # MC dropout and bf16: the same numbers on raw images as on preprocessed ones without it.
    with gamornet.load_predictor(folder, mc_samples=3, seed=1) as own, \
            gamornet.load_predictor(folder, mc_samples=3, seed=1, preprocessing=None) as bare:  # fmt: skip
        np.testing.assert_allclose(own.predict_mc(raw).mean, bare.predict_mc(preprocessed).mean, atol=1e-6)
    with gamornet.load_predictor(folder, precision="bf16", thresholds="0.6,0.6" and (0.6, 0.6)) as own, \
            gamornet.load_predictor(folder, precision="bf16", thresholds=(0.6, 0.6), preprocessing=None) as bare:
        np.testing.assert_allclose(own.predict(raw), bare.predict(preprocessed), atol=1e-6)
    # A settings file or dict replaces the folder's.
    other = {"scaling": "sum"}
    with gamornet.load_predictor(folder, preprocessing=other) as replaced, \
            gamornet.load_predictor(folder, preprocessing=None) as bare:  # fmt: skip
        np.testing.assert_allclose(replaced.predict(raw), bare.predict(preprocess_images(raw, **other)), atol=1e-6)


@pytest.mark.slow
def test_preprocessing_none_and_a_file_replace_the_folders(trained, tmp_path, capsys):
    folder, settings = trained
    if settings is None:
        pytest.skip("nothing to turn off")
    raw = raw_images()
    write_fits(str(tmp_path / "raw"), raw)
    output = str(tmp_path / "classes.csv")
    base = ["predict", str(tmp_path / "raw"), "--model", folder, "--thresholds", "0.6,0.6", "--output", output,
            "--no-progress"]  # fmt: skip
    assert main(base + ["--preprocessing", "none"]) == 0
    _, probabilities, _ = read_predictions(output)
    np.testing.assert_allclose(probabilities, reference.forward(raw, network(folder)), atol=1e-4)
    assert "preprocessing: none (images as they are)" in capsys.readouterr().err
    settings_file = tmp_path / "zscore.json"
    settings_file.write_text(json.dumps({"preprocess_images": {"scaling": "zscore"}}))
    assert main(base + ["--preprocessing", str(settings_file)]) == 0
    _, probabilities, _ = read_predictions(output)
    expected = reference.forward(preprocess_images(raw, scaling="zscore"), network(folder))
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    assert f"zscore scaling, border 4 px (from {settings_file})" in capsys.readouterr().err
    assert main(base + ["--preprocessing", str(tmp_path / "missing.json")]) == 1
    assert "--preprocessing: no file" in capsys.readouterr().err
    settings_file.write_text(json.dumps({"scaling": "brightest"}))
    assert main(base + ["--preprocessing", str(settings_file)]) == 1
    assert "scaling must be one of" in capsys.readouterr().err


@pytest.mark.slow
def test_the_04x_functions_keep_their_contract_and_warn_once(trained):
    from gamornet.inference import predictor as _predictor
    from gamornet.keras_module import gamornet_predict_keras

    folder, settings = trained
    weights_file = os.path.join(folder, "trained_model.hdf5")
    raw = raw_images()
    _predictor._WARNED_UNPREPROCESSED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        given = gamornet_predict_keras(raw, weights_file, SHAPE)
        gamornet_predict_keras(raw, weights_file, SHAPE)
        gamornet_predict_keras(as_network_sees(raw, settings), weights_file, SHAPE)
    np.testing.assert_allclose(given, reference.forward(raw, network(folder)), atol=1e-4)  # images as given
    said = [str(warning.message) for warning in caught if issubclass(warning.category, PreprocessingWarning)]
    if settings is None:
        assert said == []
    else:
        assert len(said) == 1, said
        assert "100% of the first images look unpreprocessed (their peak is not 1)" in said[0] if settings["scaling"] \
            == "peak" else True
        assert "preprocess_images(images, **settings)" in said[0] and "gamornet predict" in said[0]


# --------------------------------------------------------------------------- calibration and thresholds in the folder


def fittable_labels(probabilities):
    """Labels that a temperature can be fitted to, of all three classes: the most probable class for half of the
    galaxies, the two others for a quarter each."""
    classes = np.argmax(probabilities, axis=1)
    classes[::4] = (classes[::4] + 1) % 3
    classes[1::4] = (classes[1::4] + 2) % 3
    return [("disk", "indeterminate", "bulge")[label] for label in classes]


def write_labels(path, sources, labels):
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["source", "label"])
        writer.writerows(zip(sources, labels))


@pytest.fixture
def own_folder(tmp_path, trained):
    """A copy of a trained folder (peak scaling) that a test may change, with raw FITS files to classify."""
    folder, settings = trained
    if settings is None or settings.get("stretch", "none") != "none":
        pytest.skip("one preprocessing is enough here")
    copy = str(tmp_path / "model")
    shutil.copytree(folder, copy)
    write_fits(str(tmp_path / "raw"), raw_images(36, seed=21))  # gamornet calibrate wants >= 30 labelled galaxies
    return copy, settings


@pytest.mark.slow
def test_calibration_and_thresholds_saved_into_the_folder_are_applied_and_named(own_folder, tmp_path, capsys):
    folder, settings = own_folder
    first = str(tmp_path / "first.csv")
    base = ["predict", str(tmp_path / "raw"), "--model", folder, "--no-progress"]
    assert main(base + ["--thresholds", "0.5,0.5", "--output", first]) == 0
    sources, plain, _ = read_predictions(first)
    write_labels(tmp_path / "labels.csv", sources, fittable_labels(plain))
    assert main(["calibrate", first, "--labels", str(tmp_path / "labels.csv"), "--save", folder]) == 0
    assert "applies it by default" in capsys.readouterr().out
    # Thresholds as `gamornet thresholds --save` writes them (an untrained network reaches no purity to choose by).
    from gamornet.science.thresholds import save_thresholds

    sha256 = gamornet.models.resolve_model(folder).sha256
    save_thresholds(os.path.join(folder, "thresholds.json"), Thresholds(0.4, 0.45), chosen_from={"model_sha256": sha256})
    calibration = json.load(open(os.path.join(folder, "calibration.json")))
    chosen = json.load(open(os.path.join(folder, "thresholds.json")))
    temperature = calibration["temperature"]
    second = str(tmp_path / "second.csv")
    assert main(base + ["--output", second]) == 0
    _, probabilities, classes = read_predictions(second)
    expected = apply_temperature(plain, temperature)
    np.testing.assert_allclose(probabilities, expected, atol=2e-6)
    assert classes == list(classify(probabilities.astype(np.float32),
                                    Thresholds(chosen["disk"], chosen["bulge"], chosen["disk_must_lead"])))
    applied = capsys.readouterr().err.splitlines()[0]
    assert f"calibration: temperature T = {temperature:.4f} (from {os.path.join(folder, 'calibration.json')})" in applied
    assert f"(from {os.path.join(folder, 'thresholds.json')})" in applied
    # What the folder holds, and what predict applies.
    assert main(["models", "--info", folder]) == 0
    info = capsys.readouterr().out
    assert f"calibration: temperature T = {temperature:.4f}" in info and "thresholds: p_disk >= " in info
    assert f"gamornet predict --model {folder} applies: preprocessing: peak scaling" in info
    # --calibration none and --thresholds turn them off.
    assert main(base + ["--output", second, "--calibration", "none", "--thresholds", "0.5,0.5"]) == 0
    np.testing.assert_allclose(read_predictions(second)[1], plain, atol=1e-7)
    assert "calibration: none; thresholds: p_disk >= 0.5, p_bulge >= 0.5" in capsys.readouterr().err


@pytest.mark.slow
def test_a_folder_whose_weights_changed_refuses_its_old_calibration_and_thresholds(own_folder, tmp_path, capsys):
    folder, _ = own_folder
    first = str(tmp_path / "first.csv")
    base = ["predict", str(tmp_path / "raw"), "--model", folder, "--no-progress", "--output", first]
    assert main(base + ["--thresholds", "0.5,0.5"]) == 0
    sources, plain, _ = read_predictions(first)
    write_labels(tmp_path / "labels.csv", sources, fittable_labels(plain))
    assert main(["calibrate", first, "--labels", str(tmp_path / "labels.csv"), "--save", folder]) == 0
    # New weights in the folder (as a retraining would write).
    shutil.copy(os.path.join(folder, "trained_model.hdf5"), str(tmp_path / "old_weights.hdf5"))
    weights = [(kernel * 1.01, bias) for kernel, bias in formats.read_weights(os.path.join(folder, "trained_model.hdf5"),
                                                                              SHAPE, "keras")]  # fmt: skip
    write_keras2_file(os.path.join(folder, "trained_model.hdf5"), weights)
    assert main(base + ["--thresholds", "0.5,0.5"]) == 1
    assert "was fitted for another model" in capsys.readouterr().err
    with pytest.raises(CalibrationMismatchError):
        gamornet.load_predictor(folder)
    assert main(base + ["--thresholds", "0.5,0.5", "--calibration", "none"]) == 0
    # A calibration made from predictions of the old weights (a FITS table records their sha256) is refused.
    old = str(tmp_path / "old.fits")
    shutil.copy(os.path.join(str(tmp_path), "old_weights.hdf5"), os.path.join(folder, "trained_model.hdf5"))
    assert main(base[:-1] + [old, "--thresholds", "0.5,0.5", "--calibration", "none"]) == 0
    write_keras2_file(os.path.join(folder, "trained_model.hdf5"), weights)
    capsys.readouterr()
    assert main(["calibrate", old, "--labels", str(tmp_path / "labels.csv"), "--save", folder]) == 1
    assert "a calibration is saved only beside the weights whose predictions it was made from" in capsys.readouterr().err
    assert main(["thresholds", old, "--labels", str(tmp_path / "labels.csv"), "--save", folder]) == 1
    assert "thresholds are saved only beside the weights whose predictions" in capsys.readouterr().err
    assert main(["models", "--info", folder]) == 0
    assert "calibration: REFUSED: made for other weights" in capsys.readouterr().out
    assert main(["calibrate", first, "--labels", str(tmp_path / "labels.csv"), "--save", str(tmp_path / "raw" /
                                                                                               "galaxy_00.fits")]) == 1
    assert "--save must be a model folder" in capsys.readouterr().err


def test_a_folder_without_weights_and_a_file_outside_a_folder(tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "model_05.hdf5").write_bytes(b"")
    assert main(["predict", str(tmp_path), "--model", str(folder), "--input-shape", "32,32,1"]) == 1
    assert "holds no trained_model.hdf5; it holds model_05.hdf5" in capsys.readouterr().err
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.hdf5").write_bytes(b"")
    assert main(["predict", str(tmp_path), "--model", str(alone / "model.hdf5")]) == 1
    assert "--input-shape is needed with a model file" in capsys.readouterr().err


# --------------------------------------------------------------------------- catalogue mode and Dask

CANDELS = (83, 83, 1)
ASINH_PEAK = PREPROCESSINGS["asinh_peak"]


@pytest.fixture(scope="module")
def candels_folder(tmp_path_factory):
    """A CANDELS model folder of known weights whose preprocessing.json asks for an asinh stretch and peak scaling."""
    folder = tmp_path_factory.mktemp("candels-model")
    images = reference.galaxy_images(3, CANDELS, seed=1)
    weights = reference.calibrated_weights(CANDELS, preprocess_images(images, **ASINH_PEAK), reference.lrn_keras,
                                           seed=2)  # fmt: skip
    write_keras2_file(str(folder / "trained_model.hdf5"), weights)
    (folder / "preprocessing.json").write_text(json.dumps({"preprocess_images": ASINH_PEAK,
                                                           "input_shape": list(CANDELS)}))  # fmt: skip
    return str(folder), weights


@pytest.mark.slow
@pytest.mark.numeric
def test_catalogue_mode_preprocesses_the_stamps(candels_folder, tmp_path_factory, tmp_path, capsys):
    import survey_field
    from astropy.table import Table
    from test_cutouts import WHOLE, expected_stamp

    folder, weights = candels_folder
    field = survey_field.build_field(str(tmp_path_factory.mktemp("field")))
    catalog_path = str(tmp_path / "catalogue.fits")
    field.catalog.write(catalog_path)
    output = tmp_path / "predictions.fits"
    assert main(["predict", "--catalog", catalog_path, "--images", os.path.join(field.folder, "tile_*.fits"),
                 "--model", folder, "--no-progress", "--output", str(output)]) == 0  # fmt: skip
    table = Table.read(output, mask_invalid=False)
    names = list(field.catalog["name"])
    probabilities = np.stack([table["p_disk"], table["p_indet"], table["p_bulge"]], axis=1)
    drawn = WHOLE + ("edge",)
    stamps = np.stack([expected_stamp(field, name)[..., None] for name in drawn])
    expected = reference.forward(preprocess_images(stamps, **ASINH_PEAK), weights, reference.lrn_keras)
    np.testing.assert_allclose(probabilities[[names.index(name) for name in drawn]], expected, atol=1e-4)
    assert "applies preprocessing: asinh stretch (softening 3), peak scaling" in capsys.readouterr().err


@pytest.mark.slow
def test_dask_workers_apply_it_and_the_run_records_it(candels_folder, tmp_path, capsys):
    from gamornet.survey.distributed import read_provenance

    folder, weights = candels_folder
    raw = reference.galaxy_images(4, CANDELS, seed=9).astype(np.float32)
    write_fits(str(tmp_path / "raw"), raw)
    base = ["predict", str(tmp_path / "raw"), "--model", folder, "--no-progress", "--thresholds", "0.6,0.6"]
    output = str(tmp_path / "run.parquet")
    assert main(base + ["--output", output, "--workers", "1"]) == 0
    assert "applies preprocessing: asinh stretch (softening 3), peak scaling" in capsys.readouterr().err
    import pyarrow.parquet as pq

    table = pq.read_table(output).to_pandas()
    expected = reference.forward(preprocess_images(raw, **ASINH_PEAK), weights, reference.lrn_keras)
    np.testing.assert_allclose(table[["p_disk", "p_indet", "p_bulge"]].to_numpy(dtype=float), expected, atol=1e-4)
    provenance = read_provenance(output)
    assert provenance["preprocessing"]["stretch"] == "asinh"
    assert provenance["predictor_options"]["preprocessing"]["scaling"] == "peak"
    # Other preprocessing on the same output folder is another run: refused, not mixed.
    assert main(base + ["--output", output, "--workers", "1", "--preprocessing", "none"]) == 1
    err = capsys.readouterr().err
    assert "holds part of a run made with another model or other settings" in err and "preprocessing" in err
