"""The tutorial notebooks run top to bottom, offline, at tiny sizes.

Each notebook is executed with nbclient in a fresh Jupyter kernel. Their sizes
come from the environment variables ``GAMORNET_TUTORIAL_<NAME>`` that their
``parameters`` cell reads, and the published models come from a local FTP
mirror (``GAMORNET_MIRROR``) that serves stand-in models in the published
layout: a Keras 2 HDF5 file and a TFLearn checkpoint written by real tflearn,
both holding known CANDELS-sized weights. The prediction notebook's
probabilities are checked against the independent numpy reference.
"""

import csv
import os
import re

import nbformat
import numpy as np
from astropy.io import fits
import pytest
from nbclient import NotebookClient

import reference
import servers
from legacy_files import write_keras2_file
from tflearn_files import write_tflearn_checkpoint

from gamornet.models._registry import published_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = os.path.join(ROOT, "tutorials")
NOTEBOOKS = ("1_predictions", "2_training", "3_transfer_learning", "5_survey_images")

#: What each notebook must show: both modules, and how its galaxies are simulated.
USES = {
    "1_predictions": ("gamornet.keras_module", "gamornet.tflearn_module", "simulate_galaxies"),
    "2_training": ("gamornet.keras_module", "gamornet.tflearn_module", "simulate_galaxies"),
    "3_transfer_learning": ("gamornet.keras_module", "gamornet.tflearn_module", "simulate_galaxies"),
    "5_survey_images": ("gamornet.keras_module", "gamornet.tflearn_module", "render_galaxy", "gamornet.survey.cutouts",
                        '"cutouts"'),
}

#: The survey the notebooks run on in the tests: CANDELS models are half the size of SDSS ones.
SURVEY = "CANDELS"
SHAPE = (83, 83, 1)

#: Tiny sizes, as the notebooks' environment variables.
SIZES = {
    "SURVEY": SURVEY,
    "N_GALAXIES": "3",
    "N_TRAIN": "4",
    "N_VALIDATION": "3",
    "EPOCHS": "2",
    "BATCH_SIZE": "4",
}

#: How long one notebook may take (kernel start, TensorFlow import, training) before the test fails.
CELL_TIMEOUT_S = 300

#: Appended to the prediction notebook: saves what the test checks against the reference.
_SAVE_PREDICTIONS = """
np.savez(os.path.join(os.environ["GAMORNET_TUTORIAL_TEST_DIR"], "predictions.npz"),
         images=images, keras=keras_probabilities, tflearn=tflearn_probabilities,
         keras_classes=keras_classes, tflearn_classes=tflearn_classes)
"""

#: Appended to the survey-images notebook: saves what the test checks.
_SAVE_SURVEY = """
np.savez(os.path.join(os.environ["GAMORNET_TUTORIAL_TEST_DIR"], "survey.npz"), stamps=stamps,
         keras=keras_probabilities, tflearn=tflearn_probabilities, partial=np.asarray(flags["partial"]),
         off_image=np.asarray(flags["off_image"]))
"""


def _read(name):
    return nbformat.read(os.path.join(TUTORIALS, f"{name}.ipynb"), as_version=4)


@pytest.fixture(scope="module")
def weights():
    """Known CANDELS weights for each flavour's local response normalisation."""
    images = reference.galaxy_images(3, SHAPE, seed=11)
    return {
        "keras": reference.calibrated_weights(SHAPE, images, reference.lrn_keras, seed=12),
        "tflearn": reference.calibrated_weights(SHAPE, images, reference.lrn_tflearn, seed=13),
    }


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, weights):
    """A local FTP server with CANDELS_sim and CANDELS_tl, both flavours, in the published layout."""
    built = tmp_path_factory.mktemp("fixture-models")
    keras_file = str(built / "model.hdf5")
    write_keras2_file(keras_file, weights["keras"], layout="model")
    tflearn_prefix = write_tflearn_checkpoint(str(built / "check-1"), weights["tflearn"], SHAPE)
    files = {}
    for name in ("CANDELS_sim", "CANDELS_tl"):
        files[published_model(name, "keras").files[0]] = keras_file
        entry = published_model(name, "tflearn")
        for path in entry.files:
            files[path] = tflearn_prefix + path[len(entry.load_path):]
    root = tmp_path_factory.mktemp("ftp-root")
    servers.published_layout(root, files)
    with servers.FTPServer(root) as server:
        yield server


@pytest.fixture
def tutorial_environment(monkeypatch, mirror, tmp_path):
    """The kernel's environment: tiny sizes, the local mirror, a fresh cache, online."""
    monkeypatch.delenv("GAMORNET_OFFLINE", raising=False)
    monkeypatch.setenv("GAMORNET_MIRROR", mirror.base_url)
    monkeypatch.setenv("GAMORNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    for name, value in SIZES.items():
        monkeypatch.setenv(f"GAMORNET_TUTORIAL_{name}", value)
    monkeypatch.setenv("GAMORNET_TUTORIAL_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("GAMORNET_TUTORIAL_TEST_DIR", str(tmp_path))
    return tmp_path


def _execute(notebook, folder):
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    # ipykernel shows what libraries write to file descriptor 2 in the cells, as users see it in Jupyter,
    # except when it finds PYTEST_CURRENT_TEST in its environment.
    client.execute(env={name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"})
    return notebook


def _outputs(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _figures(notebook):
    return sum("image/png" in output.get("data", {}) for output in _outputs(notebook))


#: A line of one of gamornet's progress bars, colours removed: "Predicting:  42% |###  | ...".
_PROGRESS_LINE = re.compile(r"^[\w .\-]+: +\d+% ")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def _foreign_stderr_lines(notebook):
    """Lines of the notebook's standard error that are not gamornet's progress bars."""
    lines = [line for output in _outputs(notebook) if output.get("name") == "stderr"
             for line in re.split(r"[\r\n]+", _COLOUR.sub("", output["text"])) if line.strip()]
    return [line for line in lines if not _PROGRESS_LINE.match(line)]


def _text(notebook):
    return "".join(output.get("text", "") + output.get("data", {}).get("text/plain", "")
                   for output in _outputs(notebook))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_committed_clean_with_a_parameters_cell(name):
    notebook = _read(name)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: commit notebooks with cleared outputs"
    first = code_cells[0]
    assert "parameters" in first.metadata.get("tags", [])
    for parameter in ("SURVEY", "BATCH_SIZE", "SEED"):
        assert f'{parameter} = parameter("{parameter}"' in first.source
    sources = "\n".join(cell.source for cell in code_cells)
    for used in USES[name]:
        assert used in sources, f"{name} does not use {used}"


@pytest.mark.slow
@pytest.mark.numeric
def test_prediction_tutorial(tutorial_environment, mirror, weights):
    notebook = _read("1_predictions")
    notebook.cells.append(nbformat.v4.new_code_cell(_SAVE_PREDICTIONS))
    _execute(notebook, tutorial_environment)
    # Galaxies, then each galaxy with its probabilities.
    assert _figures(notebook) >= 2
    # Standard error shows gamornet's progress bars only: TensorFlow's start-up lines stay hidden.
    assert _foreign_stderr_lines(notebook) == []
    # Both flavours of the published model came from the mirror.
    for backend in ("keras", "tflearn"):
        for path in published_model(f"{SURVEY}_tl", backend).files:
            assert path in mirror.sent, path
    saved = np.load(tutorial_environment / "predictions.npz")
    images = saved["images"]
    assert images.shape == (int(SIZES["N_GALAXIES"]),) + SHAPE
    expected_keras = reference.forward(images, weights["keras"], lrn=reference.lrn_keras)
    expected_tflearn = reference.forward(images, weights["tflearn"], lrn=reference.lrn_tflearn)
    np.testing.assert_allclose(saved["keras"], expected_keras, atol=1e-4)
    np.testing.assert_allclose(saved["tflearn"], expected_tflearn, atol=1e-4)
    assert set(saved["keras_classes"]) <= {"disk", "indeterminate", "bulge"}


@pytest.mark.slow
def test_training_tutorial(tutorial_environment):
    notebook = _execute(_read("2_training"), tutorial_environment)
    # Example galaxies, a training-curve figure per flavour, probabilities against B/T.
    assert _figures(notebook) >= 4
    output = tutorial_environment / "output"
    assert {"metrics.csv", "trained_model.hdf5"} <= set(os.listdir(output / "keras"))
    assert (output / "preprocessing.json").is_file()
    metrics = np.atleast_1d(np.genfromtxt(output / "keras" / "metrics.csv", delimiter=",", names=True))
    assert len(metrics) == int(SIZES["EPOCHS"])
    # The newest TFLearn checkpoint only, after EPOCHS one-epoch runs of one step (4 galaxies, batches of 4).
    steps = int(SIZES["EPOCHS"])
    checkpoints = [name for name in os.listdir(output / "tflearn") if name.endswith(".index")]
    assert checkpoints == [f"check-{steps}.index"]
    assert "validation accuracy" in _text(notebook)


@pytest.mark.slow
def test_transfer_learning_tutorial(tutorial_environment, mirror):
    notebook = _execute(_read("3_transfer_learning"), tutorial_environment)
    assert _figures(notebook) >= 4
    for backend in ("keras", "tflearn"):
        for path in published_model(f"{SURVEY}_sim", backend).files:
            assert path in mirror.sent, path
    output = tutorial_environment / "output"
    assert {"metrics.csv", "trained_model.hdf5"} <= set(os.listdir(output / "keras"))
    # The newest checkpoint only; its step counter continues from the published checkpoint's.
    checkpoints = [name for name in os.listdir(output / "tflearn") if name.endswith(".index")]
    assert len(checkpoints) == 1
    assert "after transfer learning (TFLearn)" in _text(notebook)


@pytest.mark.slow
def test_survey_images_tutorial(tutorial_environment, weights):
    notebook = _read("5_survey_images")
    notebook.cells.append(nbformat.v4.new_code_cell(_SAVE_SURVEY))
    _execute(notebook, tutorial_environment)
    # The field with its tiles, and the stamps.
    assert _figures(notebook) >= 2
    output = tutorial_environment / "output"
    assert {"tile_1.fits", "tile_2.fits", "catalogue.fits", "stamps.fits"} <= set(os.listdir(output))
    saved = np.load(tutorial_environment / "survey.npz")
    n_galaxies = int(SIZES["N_GALAXIES"])
    # Every galaxy has a stamp, the one on the field's edge is partial, the extra row is off the images.
    assert saved["stamps"].shape == (n_galaxies,) + SHAPE
    assert list(saved["off_image"]) == [False] * n_galaxies + [True]
    assert saved["partial"][n_galaxies - 1] and not saved["partial"][: n_galaxies - 1].any()
    expected_keras = reference.forward(saved["stamps"], weights["keras"], lrn=reference.lrn_keras)
    expected_tflearn = reference.forward(saved["stamps"], weights["tflearn"], lrn=reference.lrn_tflearn)
    np.testing.assert_allclose(saved["keras"], expected_keras, atol=1e-4)
    np.testing.assert_allclose(saved["tflearn"], expected_tflearn, atol=1e-4)
    with fits.open(output / "stamps.fits") as hdulist:
        assert hdulist[0].data.shape == (n_galaxies + 1,) + SHAPE[:2]
    # gamornet predict --catalog: the same probabilities, one row per catalogue row, empty off the images.
    with open(output / "predictions.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["objid"] for row in rows] == [str(index) for index in range(1, n_galaxies + 2)]
    probabilities = np.array([[float(row[name]) for name in ("p_disk", "p_indet", "p_bulge")] for row in rows[:-1]])
    np.testing.assert_allclose(probabilities, saved["keras"], atol=1e-5)
    assert rows[-1]["p_disk"] == "" and rows[-1]["class"] == "" and rows[-1]["off_image"] == "true"


# --------------------------------------------------------------------------- 4_uncertainty (Keras only, no mirror)

#: Tiny sizes of the uncertainty notebook: a model that learns little, so its steps that need a useful model
#: say so rather than fail.
UNCERTAINTY_SIZES = {
    "SURVEY": SURVEY,
    "N_TRAIN": "8",
    "N_CALIBRATION": "6",
    "N_TEST": "6",
    "EPOCHS": "1",
    "BATCH_SIZE": "4",
    "MC_SAMPLES": "4",
}


def test_uncertainty_notebook_is_committed_clean_with_a_parameters_cell():
    notebook = _read("4_uncertainty")
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None, "commit notebooks with cleared outputs"
    first = code_cells[0]
    assert "parameters" in first.metadata.get("tags", [])
    for parameter in ("SURVEY", "BATCH_SIZE", "SEED", *UNCERTAINTY_SIZES):
        assert f'{parameter} = parameter("{parameter}"' in first.source, parameter
    sources = "\n".join(cell.source for cell in code_cells)
    for name in ("simulate_galaxies", "predict_mc", "fit_temperature", "choose_thresholds", "error_detection_auroc"):
        assert name in sources, name


@pytest.mark.slow
def test_uncertainty_tutorial(monkeypatch, tmp_path):
    from gamornet import models
    from gamornet.science.calibration import load_calibration

    monkeypatch.setenv("GAMORNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    for name, value in UNCERTAINTY_SIZES.items():
        monkeypatch.setenv(f"GAMORNET_TUTORIAL_{name}", value)
    output = tmp_path / "output"
    monkeypatch.setenv("GAMORNET_TUTORIAL_OUTPUT_DIR", str(output))
    notebook = _execute(_read("4_uncertainty"), tmp_path)
    # Reliability diagram, purity/completeness curves, uncertainty histograms.
    assert _figures(notebook) >= 3
    text = _text(notebook)
    assert "temperature T =" in text and "ECE" in text and "first test galaxies" in text
    model = str(output / "keras" / "trained_model.hdf5")
    assert load_calibration(str(output / "calib.json"), models.model_sha256(models.resolve(model))).temperature > 0
