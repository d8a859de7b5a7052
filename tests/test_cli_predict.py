"""``gamornet predict`` end to end, against the independent numpy reference."""

import csv
import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import reference
from legacy_files import write_keras2_file

from gamornet.cli import predict as _cli_predict
from gamornet.science.classify import classify
from gamornet.cli.main import main

TOLERANCE = 1e-4
CANDELS = (83, 83, 1)


@pytest.fixture(scope="module")
def case(tmp_path_factory, keras_case_module):
    """CANDELS images, a Keras 2 model file with calibrated weights, and the reference probabilities."""
    images, weights = keras_case_module
    folder = tmp_path_factory.mktemp("model")
    model = write_keras2_file(str(folder / "model.hdf5"), weights)
    expected = reference.forward(images, weights, reference.lrn_keras)
    return images, model, expected


@pytest.fixture(scope="module")
def keras_case_module():
    images = reference.galaxy_images(5, CANDELS, seed=1)
    weights = reference.calibrated_weights(CANDELS, images[:3], reference.lrn_keras, seed=2)
    return images, weights


def write_fits_files(folder, images, names=None):
    folder.mkdir(exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        name = names[index] if names else f"galaxy_{index:02d}.fits"
        path = str(folder / name)
        fits.PrimaryHDU(image[:, :, 0]).writeto(path)
        paths.append(path)
    return paths


def read_csv(path):
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["source", "p_disk", "p_indet", "p_bulge", "class"]
    return rows[1:]


def check_rows(sources, probabilities, classes, expected_sources, expected, thresholds):
    assert list(sources) == list(expected_sources)
    np.testing.assert_allclose(probabilities, expected, atol=TOLERANCE)
    assert list(classes) == classify(np.asarray(probabilities, dtype=np.float32), thresholds).tolist()


def csv_columns(rows):
    sources = [row[0] for row in rows]
    probabilities = np.array([[float(value) for value in row[1:4]] for row in rows])
    return sources, probabilities, [row[4] for row in rows]


# --------------------------------------------------------------------------- outputs


@pytest.mark.numeric
def test_csv_from_a_folder_of_fits_files(tmp_path, case, capsys):
    images, model, expected = case
    paths = write_fits_files(tmp_path / "cutouts", images)
    output = tmp_path / "out" / "predictions.csv"
    output.parent.mkdir()
    status = main(["predict", str(tmp_path / "cutouts"), "--model", model, "--input-shape", "CANDELS",
                   "--batch-size", "2", "--output", str(output), "--no-progress"])
    assert status == 0
    check_rows(*csv_columns(read_csv(output)), paths, expected, "keras_CANDELS")
    assert "classified 5 images with the thresholds keras_CANDELS" in capsys.readouterr().err
    assert os.listdir(output.parent) == ["predictions.csv"]  # no temporary file left


def test_fits_table_from_a_npy_and_a_cube(tmp_path, case):
    images, model, expected = case
    npy = str(tmp_path / "stack.npy")
    np.save(npy, images[:3, :, :, 0])
    cube = str(tmp_path / "cube.fits")
    fits.PrimaryHDU(images[3:, :, :, 0]).writeto(cube)
    output = str(tmp_path / "predictions.fits")
    status = main(["predict", npy, cube, "--model", model, "--input-shape", "83,83,1", "--batch-size", "2",
                   "--thresholds", "0.5,0.5", "--output", output, "--no-progress"])
    assert status == 0
    table = Table.read(output)
    assert table.colnames == ["source", "p_disk", "p_indet", "p_bulge", "class"]
    probabilities = np.stack([table["p_disk"], table["p_indet"], table["p_bulge"]], axis=1)
    sources = [f"{npy}[{i}]" for i in range(3)] + [f"{cube}[{i}]" for i in range(2)]
    check_rows(table["source"], probabilities, table["class"], sources, expected, (0.5, 0.5))
    assert table.meta["BACKEND"] == "keras" and table.meta["THRESH"] == "p_disk >= 0.5, p_bulge >= 0.5"


def test_csv_on_standard_output_with_a_glob(tmp_path, case, capsys):
    images, model, expected = case
    paths = write_fits_files(tmp_path / "cutouts", images[:2])
    status = main(["predict", str(tmp_path / "cutouts" / "*.fits"), "--model", model, "--input-shape", "CANDELS",
                   "--thresholds", "tflearn_CANDELS", "--no-progress"])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    rows = list(csv.reader(lines))[1:]
    check_rows(*csv_columns(rows), paths, expected[:2], "tflearn_CANDELS")


def test_published_names_set_the_input_shape_and_the_thresholds(tmp_path, case, monkeypatch):
    images, model, expected = case
    import gamornet.models._download

    fetched = []
    monkeypatch.setattr(gamornet.models._download, "fetch_model",
                        lambda name, backend, **options: fetched.append((name, backend)) or model)
    np.save(tmp_path / "stack.npy", images)
    output = str(tmp_path / "predictions.csv")
    assert main(["predict", str(tmp_path / "stack.npy"), "--model", "CANDELS_tl", "--output", output,
                 "--no-progress"]) == 0
    assert fetched == [("CANDELS_tl", "keras")]
    sources, probabilities, classes = csv_columns(read_csv(output))
    check_rows(sources, probabilities, classes, [f"{tmp_path / 'stack.npy'}[{i}]" for i in range(5)], expected,
               "keras_CANDELS")


def test_the_tflearn_backend(tmp_path):
    tflearn_files = pytest.importorskip("tflearn_files")
    images, weights = tflearn_files.calibrated_case(CANDELS)
    prefix = tflearn_files.write_tflearn_checkpoint(str(tmp_path / "model" / "check-100"), weights, CANDELS)
    expected = reference.forward(images, weights, reference.lrn_tflearn)
    np.save(tmp_path / "stack.npy", images)
    output = str(tmp_path / "predictions.csv")
    assert main(["predict", str(tmp_path / "stack.npy"), "--model", prefix, "--backend", "tflearn",
                 "--input-shape", "CANDELS", "--batch-size", "3", "--output", output, "--no-progress"]) == 0
    sources, probabilities, classes = csv_columns(read_csv(output))
    check_rows(sources, probabilities, classes, [f"{tmp_path / 'stack.npy'}[{i}]" for i in range(len(images))],
               expected, "tflearn_CANDELS")


# --------------------------------------------------------------------------- bad inputs


@pytest.fixture()
def with_bad_files(tmp_path, case):
    images, model, expected = case
    folder = tmp_path / "cutouts"
    paths = write_fits_files(folder, images, names=["a.fits", "b.fits", "d.fits", "f.fits", "g.fits"])
    blank = str(folder / "c_blank.fits")
    fits.PrimaryHDU(np.full((83, 83), np.nan, dtype=np.float32)).writeto(blank)
    garbage = str(folder / "e_garbage.fits")
    with open(garbage, "wb") as stream:
        stream.write(b"not a FITS file" * 300)
    return folder, paths, blank, garbage


@pytest.mark.parametrize("ending", [".csv", ".fits"])
def test_skip_bad_goes_on_and_lists_the_bad_inputs(tmp_path, case, with_bad_files, capsys, ending):
    images, model, expected = case
    folder, paths, blank, garbage = with_bad_files
    output = str(tmp_path / ("predictions" + ending))
    status = main(["predict", str(folder), "--model", model, "--input-shape", "CANDELS", "--batch-size", "2",
                   "--output", output, "--skip-bad", "--no-progress"])
    assert status == 0
    if ending == ".csv":
        sources, probabilities, classes = csv_columns(read_csv(output))
    else:
        table = Table.read(output)
        sources, classes = list(table["source"]), list(table["class"])
        probabilities = np.stack([table["p_disk"], table["p_indet"], table["p_bulge"]], axis=1)
    check_rows(sources, probabilities, classes, paths, expected, "keras_CANDELS")
    err = capsys.readouterr().err
    assert "skipped 2 bad inputs:" in err
    assert f"  {blank}: the image is blank: every pixel is NaN" in err
    assert f"  {garbage}: cannot be read as FITS (" in err


@pytest.mark.parametrize("ending", [".csv", ".fits"])
def test_a_bad_input_stops_the_run_and_keeps_the_rows_before_it(tmp_path, case, with_bad_files, capsys, ending):
    images, model, expected = case
    folder, paths, blank, garbage = with_bad_files
    out = tmp_path / "out"
    out.mkdir()
    output = str(out / ("predictions" + ending))
    with open(output, "w") as stream:
        stream.write("an older table\n")
    status = main(["predict", str(folder), "--model", model, "--input-shape", "CANDELS", "--batch-size", "4",
                   "--output", output, "--no-progress"])
    assert status == 1
    err = capsys.readouterr().err
    partial = str(out / ("predictions.partial" + ending))
    assert (
        f"gamornet predict: error: cannot classify {blank!r}: the image is blank: every pixel is NaN. "
        f"The 2 images classified before it are saved in {partial!r}. Fix or remove this input, or add "
        "--skip-bad to skip bad inputs and list them at the end"
    ) in err
    assert open(output).read() == "an older table\n"  # the output is untouched
    assert sorted(os.listdir(out)) == sorted(["predictions" + ending, "predictions.partial" + ending])
    if ending == ".csv":
        sources, probabilities, classes = csv_columns(read_csv(partial))
    else:
        table = Table.read(partial)
        sources, classes = list(table["source"]), list(table["class"])
        probabilities = np.stack([table["p_disk"], table["p_indet"], table["p_bulge"]], axis=1)
    check_rows(sources, probabilities, classes, paths[:2], expected[:2], "keras_CANDELS")


def test_a_bad_first_input_leaves_no_file(tmp_path, case, capsys):
    images, model, expected = case
    blank = str(tmp_path / "blank.fits")
    fits.PrimaryHDU(np.full((83, 83), np.nan, dtype=np.float32)).writeto(blank)
    out = tmp_path / "out"
    out.mkdir()
    status = main(["predict", blank, "--model", model, "--input-shape", "CANDELS", "--output",
                   str(out / "p.csv"), "--no-progress"])
    assert status == 1
    assert "No image had been classified before it." in capsys.readouterr().err
    assert os.listdir(out) == []


def _wrapped_predictor(monkeypatch, wrap):
    """Make ``gamornet predict`` use predictors whose batch step is ``wrap(step)`` (the test's spy)."""
    original = _cli_predict.load_predictor

    def load(*args, **kwargs):
        predictor = original(*args, **kwargs)
        predictor._result = wrap(predictor._result)
        return predictor

    monkeypatch.setattr(_cli_predict, "load_predictor", load)


def test_an_interrupted_run_keeps_its_rows(tmp_path, case, monkeypatch, capsys):
    images, model, expected = case
    np.save(tmp_path / "stack.npy", images)

    def interrupted_after_two_batches(step):
        calls = []

        def step_then_stop(tensor, batch):
            calls.append(len(batch))
            if len(calls) == 3:
                raise KeyboardInterrupt
            return step(tensor, batch)

        return step_then_stop

    _wrapped_predictor(monkeypatch, interrupted_after_two_batches)
    output = str(tmp_path / "p.csv")
    assert main(["predict", str(tmp_path / "stack.npy"), "--model", model, "--input-shape", "CANDELS",
                 "--batch-size", "2", "--output", output, "--no-progress"]) == 130
    partial = str(tmp_path / "p.partial.csv")
    assert f"the 4 images classified before the stop are saved in {partial!r}" in capsys.readouterr().err
    assert not os.path.exists(output)
    assert len(read_csv(partial)) == 4
    assert not glob.glob(str(tmp_path / ".tmp-*"))


# --------------------------------------------------------------------------- streaming


def test_rows_are_written_as_they_are_computed(tmp_path, case, monkeypatch):
    """The CSV grows batch by batch while the run goes on: rows are not collected in memory."""
    images, model, expected = case
    np.save(tmp_path / "stack.npy", images)
    rows_on_disk = []

    def watching(step):
        def step_and_look(tensor, batch):
            (temporary,) = glob.glob(str(tmp_path / ".tmp-p.csv-*"))
            with open(temporary) as stream:
                rows_on_disk.append(len(stream.readlines()) - 1)
            return step(tensor, batch)

        return step_and_look

    _wrapped_predictor(monkeypatch, watching)
    mapped = []
    memmap_new = np.memmap.__new__

    def spy(cls, filename, dtype=np.uint8, mode="r+", offset=0, shape=None, order="C"):
        mapped.append(shape)
        return memmap_new(cls, filename, dtype=dtype, mode=mode, offset=offset, shape=shape, order=order)

    monkeypatch.setattr(np.memmap, "__new__", staticmethod(spy))
    assert main(["predict", str(tmp_path / "stack.npy"), "--model", model, "--input-shape", "CANDELS",
                 "--batch-size", "2", "--output", str(tmp_path / "p.csv"), "--no-progress"]) == 0
    assert rows_on_disk == [0, 2, 4]
    assert mapped == [(2,) + CANDELS, (2,) + CANDELS, (1,) + CANDELS]  # one batch of the .npy mapped at a time
    assert len(read_csv(tmp_path / "p.csv")) == 5


def test_progress_bar_shows_images_per_second(tmp_path, case, capsys):
    images, model, expected = case
    np.save(tmp_path / "stack.npy", images[:2])
    assert main(["predict", str(tmp_path / "stack.npy"), "--model", model, "--input-shape", "CANDELS",
                 "--output", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert "Classifying:" in err and "2 of 2 images" in err and "image/s" in err


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "options, message",
    [
        (["--model", "{model}"], r"--input-shape is needed with a model file \('.*model.hdf5'\)"),
        (["--model", "{model}", "--input-shape", "HST"],
         r"--input-shape must be SDSS, CANDELS or three integers X,Y,NDIM \(such as 64,64,1\). Received: 'HST'"),
        (["--model", "{model}", "--input-shape", "83,83"], r"three integers X,Y,NDIM .* Received: '83,83'"),
        (["--model", "{model}", "--input-shape", "83,0,1"], r"input_shape must be .* Received: input_shape=\(83, 0, 1\)"),
        (["--model", "{model}", "--input-shape", "40,40,1"],
         r"no handbook threshold set fits the input shape \(40, 40, 1\): .* Give --thresholds P_DISK,P_BULGE"),
        (["--model", "{model}", "--input-shape", "CANDELS", "--thresholds", "keras_HST"],
         r"--thresholds must be one of keras_SDSS, .*Received: 'keras_HST'"),
        (["--model", "{model}", "--input-shape", "CANDELS", "--thresholds", "0.7,0.7,strict"],
         r"--thresholds must be .*Received: '0.7,0.7,strict'"),
        (["--model", "{model}", "--input-shape", "CANDELS", "--thresholds", "0.7,1.7"],
         r"the bulge threshold must be a probability between 0 and 1. Received: 1.7"),
        (["--model", "{model}", "--input-shape", "CANDELS", "--output", "{tmp}/p.txt"],
         r"--output must end in .csv \(a CSV table\) or .fits \(a FITS table\). Received: '.*p.txt'"),
        (["--model", "{model}", "--input-shape", "CANDELS", "--output", "{tmp}/missing/p.csv"],
         r"--output: the folder '.*missing' does not exist"),
        (["--model", "{model}", "--input-shape", "CANDELS", "--batch-size", "0"],
         r"--batch-size must be a positive integer. Received: --batch-size=0"),
        (["--model", "{tmp}/absent.hdf5", "--input-shape", "CANDELS"], r"--model: no model file found at '.*absent.hdf5'"),
        (["--model", "{model}", "--input-shape", "CANDELS", "--hdu", "-1"],
         r"--hdu must be a non-negative integer. Received: --hdu=-1"),
        (["--model", "SDSS_tl", "--input-shape", "CANDELS"],
         r"the published model 'SDSS_tl' takes images of shape \(167, 167, 1\), but --input-shape is \(83, 83, 1\)"),
        (["--model", "{model}", "--input-shape", "CANDELS", "--mc-samples", "1"],
         r"--mc-samples must be an integer >= 2 .*one draw has no spread.*reads as certainty"),
        (["--model", "{model}", "--input-shape", "CANDELS", "--mc-samples", "100000"],
         r"--mc-samples must be at most 1000: the Monte Carlo error .* Received: --mc-samples=100000"),
    ],
)
def test_errors_are_reported_before_any_work(tmp_path, case, capsys, options, message):
    images, model, expected = case
    np.save(tmp_path / "stack.npy", images[:1])
    options = [option.format(model=model, tmp=tmp_path) for option in options]
    assert main(["predict", str(tmp_path / "stack.npy"), *options, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gamornet predict: error: ")
    assert re.search(message, err), err


def test_missing_inputs_are_reported_before_the_model_is_loaded(tmp_path, case, capsys, monkeypatch):
    images, model, expected = case
    monkeypatch.setattr(_cli_predict, "load_predictor", lambda *args: pytest.fail("the model was loaded"))
    assert main(["predict", str(tmp_path / "nothing*.fits"), "--model", model, "--input-shape", "CANDELS"]) == 1
    assert "the pattern '" in capsys.readouterr().err


def test_partial_path():
    assert _cli_predict.partial_path("a/predictions.csv") == "a/predictions.partial.csv"
    assert _cli_predict.partial_path("t.FITS") == "t.partial.FITS"
    assert _cli_predict.partial_path("t.fits.gz") == "t.partial.fits.gz"


# --------------------------------------------------------------------------- the throughput benchmark


def test_the_throughput_benchmark_runs_at_tiny_sizes():
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "predict_throughput.py")
    result = subprocess.run([sys.executable, script, "--quick", "--input-shape", "32,32,1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for method in ("(a) gamornet_predict_keras", "(b) gamornet_predict_tflearn", "(c) gamornet predict, .npy",
                   "(d) compiled forward pass (floor)"):
        assert method in out
    assert "fixed costs: Keras model build + weight loading" in out
    assert re.search(r"\s+40 images: +\d+\.\d MB peak RSS", out) and re.search(r"\s+160 images: +\d+\.\d MB", out)
    assert "growth from 40 to 160 images" in out


# --------------------------------------------------------------------------- outputs are safe (issue 10)


def test_a_gzipped_fits_table_is_compressed(tmp_path, case):
    images, model, expected = case
    np.save(tmp_path / "stack.npy", images)
    output = tmp_path / "p.fits.gz"
    assert main(["predict", str(tmp_path / "stack.npy"), "--model", model, "--input-shape", "CANDELS",
                 "--output", str(output), "--no-progress"]) == 0
    assert output.read_bytes()[:2] == b"\x1f\x8b"  # the gzip magic number
    table = Table.read(output)
    np.testing.assert_allclose(np.stack([table["p_disk"], table["p_indet"], table["p_bulge"]], axis=1), expected,
                               atol=TOLERANCE)


def test_an_output_that_is_an_input_is_refused(tmp_path, case, capsys):
    images, model, expected = case
    (path,) = write_fits_files(tmp_path / "cutouts", images[:1])
    before = open(path, "rb").read()
    assert main(["predict", path, "--model", model, "--input-shape", "CANDELS", "--output", path,
                 "--no-progress"]) == 1
    assert f"--output {path!r} is one of the inputs" in capsys.readouterr().err
    assert open(path, "rb").read() == before


def test_a_second_run_does_not_read_its_own_table_as_an_image(tmp_path, case, capsys):
    images, model, expected = case
    paths = write_fits_files(tmp_path / "cutouts", images)
    output = tmp_path / "cutouts" / "pred.fits"
    for _ in range(2):
        assert main(["predict", str(tmp_path / "cutouts"), "--model", model, "--input-shape", "CANDELS",
                     "--output", str(output), "--no-progress"]) == 0
    assert list(Table.read(output)["source"]) == paths


def test_a_successful_run_removes_stale_partial_and_temporary_files(tmp_path, case):
    from gamornet._utils.atomic import _owner

    images, model, expected = case
    np.save(tmp_path / "stack.npy", images)
    output = tmp_path / "p.csv"
    partial = tmp_path / "p.partial.csv"
    partial.write_text("source,p_disk,p_indet,p_bulge,class\n")
    host = _owner().split(".")[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".tmp-p.csv-{host}.{int(dead.stdout)}-abcd.csv"
    stale.write_text("half a table")
    mine = tmp_path / f".tmp-p.csv-{host}.{os.getpid()}-efgh.csv"  # a running process's: kept
    mine.write_text("being written")
    assert main(["predict", str(tmp_path / "stack.npy"), "--model", model, "--input-shape", "CANDELS",
                 "--output", str(output), "--no-progress"]) == 0
    assert sorted(os.listdir(tmp_path)) == sorted(["stack.npy", "p.csv", mine.name])


def test_sigterm_keeps_the_rows_and_leaves_no_temporary_file(tmp_path, case):
    """What Slurm or `timeout` does at a time limit: the same as Ctrl-C, with exit status 143."""
    images, model, expected = case
    np.save(tmp_path / "stack.npy", np.concatenate([images] * 400))  # 2,000 images: long enough to stop mid-run
    output = tmp_path / "p.csv"
    command = [sys.executable, "-m", "gamornet.cli.main", "predict", str(tmp_path / "stack.npy"), "--model", model,
               "--input-shape", "CANDELS", "--batch-size", "8", "--output", str(output), "--no-progress"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        temporaries = glob.glob(str(tmp_path / ".tmp-p.csv-*"))
        if temporaries and os.path.getsize(temporaries[0]) > 2000:  # rows are being written
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    partial = tmp_path / "p.partial.csv"
    rows = read_csv(partial)
    assert 0 < len(rows) < 2000
    assert f"gamornet predict: stopped by SIGTERM; the {len(rows)} images classified before the stop are saved in " \
           f"{str(partial)!r}" in err
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["p.partial.csv", "stack.npy"]


def test_blank_images_are_named_at_the_end(tmp_path, case, capsys):
    images, model, expected = case
    stack = images.copy()
    stack[2] = 0.0
    np.save(tmp_path / "stack.npy", stack)
    assert main(["predict", str(tmp_path / "stack.npy"), "--model", model, "--input-shape", "CANDELS",
                 "--output", str(tmp_path / "p.csv"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 image had the same value in every pixel (blank, or saturated everywhere)" in err
    assert f"  {tmp_path / 'stack.npy'}[2]\n" in err
    assert len(read_csv(tmp_path / "p.csv")) == 5


def test_an_empty_stack_is_an_error_as_in_the_api(tmp_path, case, capsys):
    images, model, expected = case
    np.save(tmp_path / "empty.npy", np.empty((0, 83, 83, 1), np.float32))
    assert main(["predict", str(tmp_path / "empty.npy"), "--model", model, "--input-shape", "CANDELS",
                 "--output", str(tmp_path / "p.csv"), "--no-progress"]) == 1
    assert "the inputs hold no images: " in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
    from gamornet.keras_module import gamornet_predict_keras

    with pytest.raises(ValueError, match="holds no images"):
        gamornet_predict_keras(np.empty((0, 83, 83, 1), np.float32), model, "CANDELS")


def test_the_help_cites_the_handbook(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert "SPEC" not in out and "the Public Data Release Handbook" in out


# --------------------------------------------------------------------------- thresholds and calibration from files


def test_thresholds_and_calibration_from_files(tmp_path, case):
    from gamornet import models
    from gamornet.science import calibration
    from gamornet.science.classify import Thresholds
    from gamornet.science.thresholds import save_thresholds

    images, model, expected = case
    np.save(tmp_path / "stack.npy", images)
    thresholds_file = str(tmp_path / "thresholds.json")
    save_thresholds(thresholds_file, Thresholds(0.4, 0.45))
    calibration_file = str(tmp_path / "calibration.json")
    calibration.save_calibration(calibration_file, 1.7, models.model_sha256(model))
    output = str(tmp_path / "p.fits")
    assert main(["predict", str(tmp_path / "stack.npy"), "--model", model, "--input-shape", "CANDELS",
                 "--thresholds", thresholds_file, "--calibration", calibration_file, "--output", output,
                 "--no-progress"]) == 0
    table = Table.read(output)
    probabilities = np.stack([table["p_disk"], table["p_indet"], table["p_bulge"]], axis=1)
    # softmax(log p / T), computed here from the reference probabilities
    scaled = np.exp(np.log(expected) / 1.7)
    calibrated = scaled / scaled.sum(axis=1, keepdims=True)
    check_rows(table["source"], probabilities, table["class"], [f"{tmp_path / 'stack.npy'}[{i}]" for i in range(5)],
               calibrated, (0.4, 0.45))
    assert table.meta["CALIBT"] == 1.7 and table.meta["THRESH"] == "p_disk >= 0.4, p_bulge >= 0.45"


def test_a_calibration_for_another_model_is_refused(tmp_path, case, capsys):
    from gamornet.science import calibration

    images, model, expected = case
    np.save(tmp_path / "stack.npy", images)
    calibration_file = str(tmp_path / "calibration.json")
    calibration.save_calibration(calibration_file, 1.7, "0" * 64)
    assert main(["predict", str(tmp_path / "stack.npy"), "--model", model, "--input-shape", "CANDELS",
                 "--calibration", calibration_file, "--output", str(tmp_path / "p.csv"), "--no-progress"]) == 1
    assert "was fitted for another model" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_a_corrupt_model_card_says_how_to_go_on(tmp_path, case, capsys):
    images, model, _ = case
    folder = tmp_path / "trained"
    folder.mkdir()
    copy = folder / "model.hdf5"
    copy.write_bytes(open(model, "rb").read())
    (folder / "model_card.json").write_text('{"format": "gamornet-model-card", "statis')  # cut short by a full disk
    np.save(tmp_path / "stack.npy", images[:1])
    assert main(["predict", str(tmp_path / "stack.npy"), "--model", str(copy), "--input-shape", "CANDELS",
                 "--output", str(tmp_path / "p.csv"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "is not a JSON model card" in err
    assert "restore it from the training run" in err and "move it out of the model's folder" in err
    assert not (tmp_path / "p.csv").exists()
