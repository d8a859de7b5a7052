"""``gamornet calibrate`` and ``gamornet thresholds`` on tables written as ``gamornet predict`` writes them."""

import csv
import hashlib
import json
import os

import numpy as np
import pytest

from gamornet.science import calibration
from gamornet.science.thresholds import choose_thresholds, load_thresholds
from gamornet.cli import main as cli
from gamornet.science.classify import classify
from gamornet.presets import CLASS_NAMES

N = 3000
TEMPERATURE = 2.0


def _softmax(logits):
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def labelled():
    """(sources, float32 over-confident probabilities, labels): labels drawn from the calibrated probabilities."""
    rng = np.random.default_rng(21)
    logits = rng.normal(0.0, 2.0, size=(N, 3))
    labels = (rng.random(N)[:, None] > np.cumsum(_softmax(logits), axis=1)).sum(axis=1)
    probabilities = _softmax(TEMPERATURE * logits).astype(np.float32)
    sources = [f"cutouts/galaxy_{i:05d}.fits" for i in range(N)]
    return sources, probabilities, labels


def _write_predictions(path, sources, probabilities, comments=(), extra=None):
    """A table as gamornet predict writes it: str() of float32 probabilities, and the class."""
    with open(path, "w", newline="", encoding="utf-8") as stream:
        for line in comments:
            stream.write(f"# {line}\n")
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(("source", "p_disk", "p_indet", "p_bulge", "class") + ((extra[0],) if extra else ()))
        classes = classify(probabilities, "keras_SDSS")
        for i, (source, row, label) in enumerate(zip(sources, probabilities, classes)):
            writer.writerow((source, *map(str, row), label) + ((extra[1][i],) if extra else ()))
    return str(path)


def _write_labels(path, sources, labels, style="names"):
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        if style == "one-hot":
            writer.writerow(("source",) + CLASS_NAMES)
            writer.writerows((source, *np.eye(3, dtype=int)[label]) for source, label in zip(sources, labels))
        else:
            writer.writerow(("source", "label"))
            writer.writerows((source, CLASS_NAMES[label] if style == "names" else label)
                             for source, label in zip(sources, labels))
    return str(path)


SHA = "c" * 64


def test_calibrate_fits_the_temperature_and_records_model_and_data(tmp_path, labelled, capsys):
    sources, probabilities, labels = labelled
    predictions = _write_predictions(tmp_path / "pred.csv", sources, probabilities, comments=[f"model_sha256: {SHA}"])
    # Labels of a subset, in another order, plus one galaxy that was not predicted.
    order = np.random.default_rng(0).permutation(N)[:2500]
    labels_file = _write_labels(tmp_path / "labels.csv", [sources[i] for i in order] + ["other.fits"],
                                list(labels[order]) + [0], style="indices")
    output = str(tmp_path / "calib.json")
    assert cli.main(["calibrate", predictions, "--labels", labels_file, "--output", output,
                     "--plot", str(tmp_path / "reliability.png")]) == 0
    out, err = capsys.readouterr()
    assert "2500 galaxies are in both files; left out 500 predictions without a label and 1 labels" in err
    loaded = calibration.load_calibration(output, SHA)
    assert loaded.temperature == pytest.approx(TEMPERATURE, rel=0.05)
    fitted_on = loaded.fitted_on
    assert fitted_on["n"] == 2500 and fitted_on["n_bins"] == 15
    with open(labels_file, "rb") as stream:
        assert fitted_on["labels"]["sha256"] == hashlib.sha256(stream.read()).hexdigest()
    assert fitted_on["predictions"]["file"] == os.path.abspath(predictions)
    expected_before = calibration.expected_calibration_error(probabilities[order], labels[order])
    assert fitted_on["ece_before"] == pytest.approx(expected_before, rel=1e-5)
    assert fitted_on["ece_after"] < 0.03 < fitted_on["ece_before"]
    assert f"temperature T = {loaded.temperature:.4f}" in out and "over-confident" in out
    assert os.path.getsize(tmp_path / "reliability.png") > 0


def test_calibrate_with_model_computes_its_sha256(tmp_path, labelled):
    sources, probabilities, labels = labelled
    model = tmp_path / "model.hdf5"
    model.write_bytes(b"some weights")
    sha = hashlib.sha256(b"some weights").hexdigest()
    predictions = _write_predictions(tmp_path / "pred.csv", sources, probabilities)
    labels_file = _write_labels(tmp_path / "labels.csv", sources, labels, style="one-hot")
    output = str(tmp_path / "calib.json")
    assert cli.main(["calibrate", predictions, "--labels", labels_file, "--output", output, "--model", str(model)]) == 0
    loaded = calibration.load_calibration(output, sha)
    assert loaded.model == str(model)
    # A column model_sha256 that disagrees with --model is refused.
    predictions = _write_predictions(tmp_path / "pred2.csv", sources, probabilities, extra=("model_sha256", [SHA] * N))
    assert cli.main(["calibrate", predictions, "--labels", labels_file, "--output", output, "--model", str(model)]) == 1


def test_thresholds_prints_and_writes_a_rule_predict_can_read(tmp_path, labelled, capsys):
    sources, probabilities, labels = labelled
    predictions = _write_predictions(tmp_path / "pred.csv", sources, probabilities)
    labels_file = _write_labels(tmp_path / "labels.csv", sources, labels)
    output, plot = str(tmp_path / "thr.json"), str(tmp_path / "curves.png")
    assert cli.main(["thresholds", predictions, "--labels", labels_file, "--disk-purity", "0.9",
                     "--bulge-purity", "0.85", "--output", output, "--plot", plot]) == 0
    out = capsys.readouterr().out
    rule = load_thresholds(output)
    # The library's choice on the float32 probabilities: the same thresholds at float32 precision (the table
    # holds their shortest decimal form), so the same classes.
    expected = choose_thresholds(probabilities, labels, 0.9, 0.85)
    assert np.float32(rule.disk) == np.float32(expected.disk) and np.float32(rule.bulge) == np.float32(expected.bulge)
    assert (classify(probabilities, rule) == classify(probabilities, expected.to_thresholds())).all()
    assert f"p_disk  >= {expected.disk:.4f}" in out and "indeterminate fraction" in out
    assert f"--thresholds {output}" in out
    # Applied to the float32 probabilities as predict would, the rule gives the purities reported.
    classes = classify(probabilities, rule)
    assert ((classes == "disk") & (labels == 0)).sum() / (classes == "disk").sum() >= 0.9
    document = json.loads(open(output).read())
    assert document["chosen"]["disk_completeness"] == pytest.approx(expected.disk_completeness)
    assert os.path.getsize(plot) > 0


def test_an_unreachable_purity_is_a_clear_error(tmp_path, labelled, capsys):
    sources, probabilities, labels = labelled
    predictions = _write_predictions(tmp_path / "pred.csv", sources[:20], probabilities[:20])
    labels_file = _write_labels(tmp_path / "labels.csv", sources[:20], (labels[:20] + 1) % 3)
    assert cli.main(["thresholds", predictions, "--labels", labels_file, "--disk-purity", "1.0",
                     "--output", str(tmp_path / "thr.json")]) == 1
    assert "no threshold on p_disk gives a disk purity of 1" in capsys.readouterr().err
    assert not (tmp_path / "thr.json").exists()


def _error(capsys, argv):
    assert cli.main(argv) == 1
    return capsys.readouterr().err


def test_bad_files_and_options(tmp_path, labelled, capsys):
    sources, probabilities, labels = labelled
    predictions = _write_predictions(tmp_path / "pred.csv", sources[:50], probabilities[:50])
    labels_file = _write_labels(tmp_path / "labels.csv", sources[:50], labels[:50])
    out = str(tmp_path / "c.json")
    assert "does not record which model made it (no model_sha256): give the model with --model" in _error(
        capsys, ["calibrate", predictions, "--labels", labels_file, "--output", out])
    assert "--output must end in .json" in _error(
        capsys, ["calibrate", predictions, "--labels", labels_file, "--output", str(tmp_path / "c.txt")])
    assert "--plot: the folder" in _error(
        capsys, ["thresholds", predictions, "--labels", labels_file, "--plot", str(tmp_path / "no" / "c.png")])
    assert "--disk-purity must be a purity in (0, 1]. Received: --disk-purity=1.5" in _error(
        capsys, ["thresholds", predictions, "--labels", labels_file, "--disk-purity", "1.5"])
    assert "n_bins must be a positive integer" in _error(
        capsys, ["calibrate", predictions, "--labels", labels_file, "--output", out, "--n-bins", "0"])
    other = _write_labels(tmp_path / "other.csv", ["x.fits"], [0])
    assert "no galaxy of" in _error(capsys, ["thresholds", predictions, "--labels", other])
    bad_labels = tmp_path / "bad_labels.csv"
    bad_labels.write_text("source,label\n" + f"{sources[0]},spiral\n")
    assert f"the label of '{sources[0]}' is 'spiral'" in _error(capsys, ["thresholds", predictions, "--labels",
                                                                         str(bad_labels)])
    bad_labels.write_text("source,morphology\na.fits,disk\n")
    assert "needs a 'label' column" in _error(capsys, ["thresholds", predictions, "--labels", str(bad_labels)])
    bad_labels.write_text(f"source,label\n{sources[0]},disk\n{sources[0]},bulge\n")
    assert "appears twice" in _error(capsys, ["thresholds", predictions, "--labels", str(bad_labels)])
    bad_predictions = tmp_path / "bad_pred.csv"
    bad_predictions.write_text("source,p_disk,p_bulge\na.fits,0.5,0.5\n")
    assert "lacks the column(s) p_indet" in _error(
        capsys, ["thresholds", str(bad_predictions), "--labels", labels_file])
    bad_predictions.write_text("")
    assert "is empty" in _error(capsys, ["thresholds", str(bad_predictions), "--labels", labels_file])
    assert "No such file" in _error(capsys, ["thresholds", str(tmp_path / "missing.csv"), "--labels", labels_file])
    mixed = _write_predictions(tmp_path / "mixed.csv", sources[:2], probabilities[:2],
                               extra=("model_sha256", ["a" * 64, "b" * 64]))
    assert "holds predictions of several models" in _error(
        capsys, ["calibrate", mixed, "--labels", labels_file, "--output", out])
    assert os.path.exists(out) is False


def test_a_fits_table_of_gamornet_predict_carries_the_model_sha256(tmp_path, labelled):
    from astropy.table import Table

    sources, probabilities, labels = labelled
    table = Table([np.array(sources), probabilities[:, 0], probabilities[:, 1], probabilities[:, 2],
                   classify(probabilities, "keras_SDSS")], names=("source", "p_disk", "p_indet", "p_bulge", "class"),
                  meta={"MODELSHA": SHA})
    table.write(str(tmp_path / "pred.fits"))
    labels_file = _write_labels(tmp_path / "labels.csv", sources, labels)
    output = str(tmp_path / "calib.json")
    assert cli.main(["calibrate", str(tmp_path / "pred.fits"), "--labels", labels_file, "--output", output]) == 0
    assert calibration.load_calibration(output, SHA).temperature == pytest.approx(TEMPERATURE, rel=0.05)


# --------------------------------------------------------------------------- rules that cannot hold (issue 24)


def test_thresholds_never_writes_a_rule_that_classifies_no_disk(tmp_path, capsys):
    """Every galaxy has p_bulge > p_disk and half are disks: alone, each class reaches a purity of 0.5 at its lowest
    threshold, but together every galaxy passes both rules and the bulge rule wins them all."""
    rng = np.random.default_rng(3)
    n = 40
    p_disk = rng.uniform(0.10, 0.30, n)
    p_bulge = rng.uniform(0.60, 0.68, n)
    probabilities = np.stack([p_disk, 1 - p_disk - p_bulge, p_bulge], axis=1).astype(np.float32)
    labels = np.array([0, 2] * (n // 2))
    sources = [f"g{i}.fits" for i in range(n)]
    predictions = _write_predictions(tmp_path / "pred.csv", sources, probabilities)
    labels_file = _write_labels(tmp_path / "labels.csv", sources, labels)
    output = tmp_path / "thr.json"
    assert cli.main(["thresholds", predictions, "--labels", labels_file, "--disk-purity", "0.5",
                     "--bulge-purity", "0.5", "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert "no pair of thresholds gives both purities" in err and "thresholds above 0.5 never overlap" in err
    assert not output.exists()


def _plain_purity(probabilities, labels, disk, bulge, index):
    """The purity of a class under the rule, computed here with plain comparisons (the larger wins a galaxy
    passing both; a tie is indeterminate)."""
    p_disk, p_bulge = probabilities[:, 0], probabilities[:, 2]
    both = (p_disk >= disk) & (p_bulge >= bulge)
    called_disk = (p_disk >= disk) & (~both | (p_disk > p_bulge))
    called_bulge = (p_bulge >= bulge) & (~both | (p_bulge > p_disk))
    called = called_disk if index == 0 else called_bulge
    return (called & (labels == index)).sum() / called.sum() if called.any() else np.nan


@pytest.mark.parametrize("seed", range(6))
def test_low_purities_give_a_rule_that_reaches_them_or_a_clear_error(seed):
    """Thresholds at or below 0.5 overlap: the rule chosen must reach both purities as classify applies it."""
    from gamornet.errors import UnreachablePurityError

    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, size=(300, 3))
    labels = (rng.random(300)[:, None] > np.cumsum(_softmax(logits), axis=1)).sum(axis=1)
    probabilities = _softmax(0.7 * logits + rng.normal(0.0, 0.8, size=(300, 3))).astype(np.float32)
    for target in (0.35, 0.45, 0.55):
        try:
            choice = choose_thresholds(probabilities, labels, target, target)
        except UnreachablePurityError as error:
            assert "thresholds above 0.5 never overlap" in str(error) or "no threshold on" in str(error)
            continue
        for index, reported in ((0, choice.disk_purity), (2, choice.bulge_purity)):
            purity = _plain_purity(probabilities, labels, choice.disk, choice.bulge, index)
            assert purity >= target and purity == pytest.approx(reported)


@pytest.mark.parametrize("case, message", [
    ("one class", "every one of the 300 labelled galaxies is disk"),
    ("two galaxies", "cannot fit a temperature on 2 labelled galaxies: at least 30 are needed"),
])
def test_calibrate_refuses_degenerate_labels(tmp_path, labelled, capsys, case, message):
    sources, probabilities, labels = labelled
    if case == "one class":
        sources, probabilities, labels = sources[:300], probabilities[:300], np.zeros(300, dtype=int)
    else:
        sources, probabilities, labels = sources[:2], probabilities[:2], np.array([0, 2])
    predictions = _write_predictions(tmp_path / "pred.csv", sources, probabilities, comments=[f"model_sha256: {SHA}"])
    labels_file = _write_labels(tmp_path / "labels.csv", sources, labels)
    output = tmp_path / "calib.json"
    assert cli.main(["calibrate", predictions, "--labels", labels_file, "--output", str(output)]) == 1
    assert message in capsys.readouterr().err
    assert not output.exists()


# --------------------------------------------------------------------------- what catalogue and cluster runs write


def _catalogue_table(path, ids, probabilities, without_stamp):
    """A table as `gamornet predict --catalog` writes it (through its own CSV writer): keyed by the catalogue's id,
    RA and Dec, the flags after; rows without a stamp have empty probabilities and class."""
    from gamornet.io.tables import CsvTable
    from gamornet.survey.cutouts import FLAG_COLUMNS

    values = probabilities.astype(np.float32).copy()
    values[without_stamp] = np.nan
    classes = ["" if missing else label for missing, label in zip(without_stamp, classify(probabilities))]
    n = len(ids)
    columns = {"ra": np.linspace(150.0, 150.1, n), "dec": np.full(n, 2.2), "off_image": without_stamp,
               "partial": np.zeros(n, bool), "fraction_present": np.where(without_stamp, 0.0, 1.0),
               "nan_fraction": np.zeros(n), "tile": np.where(without_stamp, "", "tile.fits"),
               "bad_coordinates": np.zeros(n, bool)}
    with open(path, "w", newline="", encoding="utf-8") as stream:
        CsvTable(stream, FLAG_COLUMNS, ("objid", "ra", "dec")).add(ids, values, classes, columns)
    return str(path)


def test_calibrate_a_catalogue_table_keyed_by_its_id(tmp_path, labelled, capsys):
    _, probabilities, labels = labelled
    ids = np.array([f"{i:07d}" for i in range(N)])  # zero-padded ids: matched as text
    without_stamp = np.zeros(N, bool)
    without_stamp[::10] = True
    predictions = _catalogue_table(tmp_path / "catalogue_predictions.csv", ids, probabilities, without_stamp)
    labels_file = tmp_path / "labels.csv"
    with open(labels_file, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(("objid", "label"))
        writer.writerows((i, CLASS_NAMES[label]) for i, label in zip(ids, labels))
    output = str(tmp_path / "calib.json")
    assert cli.main(["calibrate", predictions, "--labels", str(labels_file), "--output", output,
                     "--model", str(_model_file(tmp_path))]) == 0
    err = capsys.readouterr().err
    assert f"left out {without_stamp.sum()} rows of" in err and "without probabilities" in err
    loaded = json.loads(open(output).read())
    kept = ~without_stamp
    assert loaded["fitted_on"]["n"] == kept.sum()
    assert loaded["temperature"] == pytest.approx(calibration.fit_temperature(probabilities[kept], labels[kept]),
                                                  rel=1e-6)


def _model_file(tmp_path):
    path = tmp_path / "model.hdf5"
    path.write_bytes(b"not read: only its sha256 is")
    return path


def test_calibrate_and_thresholds_read_the_parquet_folder_of_a_cluster_run(tmp_path, labelled, capsys):
    from gamornet.io.tables import ParquetTable

    sources, probabilities, labels = labelled
    folder = tmp_path / "predictions.parquet"
    folder.mkdir()
    metadata = {"gamornet": json.dumps({"model_sha256": SHA})}
    classes = classify(probabilities)
    for index, part in enumerate(np.array_split(np.arange(N), 3)):
        table = ParquetTable(metadata)
        table.add([sources[i] for i in part], probabilities[part], [classes[i] for i in part])
        table.write(str(folder / f"part-{index:05d}-{index:020x}.parquet"))
    (folder / "_manifest.json").write_text("{}")
    labels_file = _write_labels(tmp_path / "labels.csv", sources, labels)
    output = str(tmp_path / "calib.json")
    assert cli.main(["calibrate", str(folder), "--labels", labels_file, "--output", output]) == 0
    loaded = calibration.load_calibration(output, SHA)  # the model's sha256, from the run's provenance
    assert loaded.temperature == pytest.approx(calibration.fit_temperature(probabilities, labels), rel=1e-6)
    assert cli.main(["thresholds", str(folder), "--labels", labels_file, "--disk-purity", "0.9",
                     "--bulge-purity", "0.9", "--output", str(tmp_path / "thr.json")]) == 0
    rule = load_thresholds(str(tmp_path / "thr.json"))
    expected = choose_thresholds(probabilities, labels, 0.9, 0.9)
    assert (rule.disk, rule.bulge) == pytest.approx((expected.disk, expected.bulge))
