"""gamornet.science.calibration, .thresholds and .plots: ECE, temperature scaling, purity/completeness, thresholds,
their files and figures.

Every number is checked against an independent reference: a hand-computed
example, brute-force counting with Python loops, a direct grid search of the
likelihood, or a temperature known by construction.
"""

import hashlib
import json
import os

import numpy as np
import pytest

from gamornet import models
from gamornet.science import calibration
from gamornet.science.plots import purity_completeness_diagram, reliability_diagram
from gamornet.science.thresholds import choose_thresholds, load_thresholds, purity_completeness, save_thresholds
from gamornet.science.classify import Thresholds, classify
from gamornet.errors import CalibrationMismatchError, UnreachablePurityError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _softmax(logits):
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def _calibrated_set(n, seed, spread=1.5):
    """(logits, labels): labels drawn from softmax(logits), so softmax(logits) is calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, spread, size=(n, 3))
    cumulative = np.cumsum(_softmax(logits), axis=1)
    labels = (rng.random(n)[:, None] > cumulative).sum(axis=1)
    return logits, labels


# The hand-computed example: confidences 0.93 (right), 0.72 (right), 0.62 (wrong), 0.66 (right).
HAND_PROBABILITIES = [[0.93, 0.04, 0.03], [0.14, 0.14, 0.72], [0.62, 0.28, 0.10], [0.66, 0.20, 0.14]]
HAND_LABELS = ["disk", "bulge", "bulge", "disk"]


def test_ece_of_a_hand_computed_example():
    # 10 bins: 0.93 alone in (0.9, 1]: |1 - 0.93| = 0.07; 0.72 alone in (0.7, 0.8]: |1 - 0.72| = 0.28;
    # 0.62 and 0.66 share (0.6, 0.7]: accuracy 1/2, confidence 0.64, weight 2: 2 * 0.14 = 0.28.
    expected = (0.07 + 0.28 + 0.28) / 4
    assert calibration.expected_calibration_error(HAND_PROBABILITIES, HAND_LABELS, n_bins=10) == pytest.approx(expected)
    # One bin: |accuracy 3/4 - mean confidence 0.7325|.
    assert calibration.expected_calibration_error(HAND_PROBABILITIES, HAND_LABELS, n_bins=1) == pytest.approx(
        abs(0.75 - (0.93 + 0.72 + 0.62 + 0.66) / 4))


def test_labels_as_indices_one_hot_and_names_agree():
    one_hot = np.eye(3)[[0, 2, 2, 0]]
    values = [calibration.expected_calibration_error(HAND_PROBABILITIES, labels, n_bins=10)
              for labels in (HAND_LABELS, [0, 2, 2, 0], np.array([0.0, 2.0, 2.0, 0.0]), one_hot, one_hot.astype(bool))]
    assert np.ptp(values) == 0


def _ece_by_loops(probabilities, labels, n_bins):
    """Guo et al.'s definition with Python loops: bins (i/M, (i+1)/M]."""
    total = 0.0
    for i in range(n_bins):
        low, high = i / n_bins, (i + 1) / n_bins
        members = [(max(row), int(np.argmax(row)) == label) for row, label in zip(probabilities, labels)
                   if (low < max(row) <= high) or (i == 0 and max(row) == 0)]
        if members:
            confidence = sum(m[0] for m in members) / len(members)
            accuracy = sum(m[1] for m in members) / len(members)
            total += len(members) / len(probabilities) * abs(accuracy - confidence)
    return total


@pytest.mark.parametrize("n_bins", [1, 7, 15])
def test_ece_matches_the_definition_counted_by_loops(n_bins):
    logits, labels = _calibrated_set(300, seed=1)
    probabilities = _softmax(2.0 * logits)
    assert calibration.expected_calibration_error(probabilities, labels, n_bins) == pytest.approx(
        _ece_by_loops(probabilities.tolist(), labels.tolist(), n_bins), abs=1e-12)


def test_reliability_curve_bins():
    curve = calibration.reliability_curve(HAND_PROBABILITIES, HAND_LABELS, n_bins=10)
    assert curve.counts.tolist() == [0, 0, 0, 0, 0, 0, 2, 1, 0, 1]
    assert curve.accuracy[6] == 0.5 and curve.confidence[6] == pytest.approx(0.64)
    assert np.isnan(curve.accuracy[0]) and np.isnan(curve.confidence[0])


@pytest.mark.parametrize("temperature", [0.6, 2.5])
def test_fit_temperature_recovers_a_known_temperature(temperature):
    # Probabilities softmax(logits * T) are softmax(logits) over- (T > 1) or under-confident (T < 1):
    # dividing their log by T gives back the calibrated ones.
    logits, labels = _calibrated_set(20000, seed=2)
    distorted = _softmax(temperature * logits)
    fitted = calibration.fit_temperature(distorted, labels)
    assert fitted == pytest.approx(temperature, rel=0.05)
    before = calibration.expected_calibration_error(distorted, labels)
    after = calibration.expected_calibration_error(calibration.apply_temperature(distorted, fitted), labels)
    assert after < 0.02 < before


def test_fit_temperature_is_the_likelihood_minimum_found_by_grid_search():
    logits, labels = _calibrated_set(2000, seed=3)
    probabilities = _softmax(1.7 * logits)
    temperatures = np.exp(np.linspace(np.log(0.5), np.log(5.0), 4001))
    nll = [-np.mean(np.log(_softmax(np.log(probabilities) / t)[np.arange(2000), labels])) for t in temperatures]
    best = temperatures[int(np.argmin(nll))]
    assert calibration.fit_temperature(probabilities, labels) == pytest.approx(best, rel=1e-3)


def test_fit_temperature_handles_zero_probabilities():
    logits, labels = _calibrated_set(500, seed=4)
    probabilities = _softmax(3.0 * logits).astype(np.float32)
    probabilities[:10] = [1.0, 0.0, 0.0]
    assert 1.0 < calibration.fit_temperature(probabilities, labels) < 10.0


def test_apply_temperature_is_the_normalised_power():
    probabilities = np.array(HAND_PROBABILITIES)
    temperature = 1.8
    powered = probabilities ** (1.0 / temperature)
    np.testing.assert_allclose(calibration.apply_temperature(probabilities, temperature),
                               powered / powered.sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(calibration.apply_temperature(probabilities, 1.0), probabilities, rtol=1e-12)
    single = calibration.apply_temperature(probabilities.astype(np.float32), 3.0)
    assert single.dtype == np.float32
    assert (single.argmax(axis=1) == probabilities.argmax(axis=1)).all()


def _purity_completeness_by_loops(probabilities, labels, column, thresholds):
    purity, completeness = [], []
    for t in thresholds:
        called = [label for row, label in zip(probabilities, labels) if row[column] >= t]
        right = sum(label == column for label in called)
        purity.append(right / len(called) if called else np.nan)
        completeness.append(right / sum(label == column for label in labels))
    return purity, completeness


def test_purity_and_completeness_match_brute_force_counting():
    logits, labels = _calibrated_set(400, seed=5)
    probabilities = _softmax(1.5 * logits)
    thresholds = np.linspace(0, 1, 41)
    curves = purity_completeness(probabilities, labels, thresholds)
    for column, purity, completeness in ((0, curves.disk_purity, curves.disk_completeness),
                                         (2, curves.bulge_purity, curves.bulge_completeness)):
        expected_purity, expected_completeness = _purity_completeness_by_loops(
            probabilities.tolist(), labels.tolist(), column, thresholds)
        np.testing.assert_allclose(purity, expected_purity, equal_nan=True)
        np.testing.assert_allclose(completeness, expected_completeness)
    assert curves.n_disk == (labels == 0).sum() and curves.n_bulge == (labels == 2).sum()
    assert curves.disk_selected[0] == 400 and curves.disk_completeness[0] == 1.0
    assert len(purity_completeness(probabilities, labels).thresholds) == 101


def test_thresholds_are_compared_at_the_probabilities_precision():
    # float32(0.7) < 0.7: classify counts it as reaching 0.7, and so must the curves.
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.2, 0.6]], dtype=np.float32)
    curves = purity_completeness(probabilities, [0, 2], [0.7])
    assert curves.disk_selected.tolist() == [1]
    assert classify(probabilities, Thresholds(0.7, 0.7)).tolist()[0] == "disk"


def _lowest_threshold_by_loops(probabilities, labels, column, target):
    for t in sorted({row[column] for row in probabilities}):
        called = [label for row, label in zip(probabilities, labels) if row[column] >= t]
        if sum(label == column for label in called) / len(called) >= target:
            return t
    return None


@pytest.mark.parametrize("target", [0.7, 0.9])
def test_choose_thresholds_matches_brute_force_search(target):
    logits, labels = _calibrated_set(600, seed=6, spread=2.5)
    probabilities = _softmax(logits).astype(np.float32)
    choice = choose_thresholds(probabilities, labels, disk_purity=target, bulge_purity=target)
    rows = probabilities.tolist()
    assert choice.disk == _lowest_threshold_by_loops(rows, labels.tolist(), 0, target)
    assert choice.bulge == _lowest_threshold_by_loops(rows, labels.tolist(), 2, target)
    assert choice.disk_purity >= target and choice.bulge_purity >= target
    # The rule's own counts, by loops over classify's classes.
    classes = classify(probabilities, choice.to_thresholds())
    disks = [c == "disk" for c in classes]
    right = sum(d and label == 0 for d, label in zip(disks, labels))
    assert choice.disk_purity == pytest.approx(right / sum(disks))
    assert choice.disk_completeness == pytest.approx(right / (labels == 0).sum())
    assert choice.indeterminate_fraction == pytest.approx(sum(c == "indeterminate" for c in classes) / 600)
    assert choice.to_thresholds() == Thresholds(choice.disk, choice.bulge)
    assert choice.n == 600 and "indeterminate fraction" in str(choice)


def test_an_unreachable_purity_says_what_is_reachable():
    # The galaxy with the highest p_disk is a bulge: disk purity never exceeds 2/3.
    probabilities = [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]]
    with pytest.raises(UnreachablePurityError, match=r"disk purity of 0.95.*highest purity is 0.667") as caught:
        choose_thresholds(probabilities, [2, 0, 0, 2])
    assert caught.value.kind == "disk" and caught.value.best_purity == pytest.approx(2 / 3)
    assert caught.value.best_threshold == pytest.approx(0.6)
    assert isinstance(caught.value, ValueError)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("function", [calibration.expected_calibration_error, calibration.fit_temperature,
                                      purity_completeness, choose_thresholds])
def test_bad_probabilities_and_labels(function):
    with pytest.raises(ValueError, match=r"shape \(n, 3\).*Received an array of shape \(4, 2\)"):
        function(np.full((4, 2), 0.5), [0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"shape \(n, 3\).*shape \(3,\)"):
        function([0.2, 0.3, 0.5], [0])
    with pytest.raises(ValueError, match="sum to 1. Received row 1"):
        function([[0.2, 0.3, 0.5], [0.5, 0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        function(np.empty((0, 3)), [])
    with pytest.raises(ValueError, match="3 rows of probabilities but 2 labels"):
        function(HAND_PROBABILITIES[:3], [0, 1])
    with pytest.raises(ValueError, match=r"0 \(disk\), 1 \(indeterminate\) or 2 \(bulge\). Received: \[3\]"):
        function(HAND_PROBABILITIES, [0, 1, 3, 0])
    with pytest.raises(ValueError, match="class names must be one of disk, indeterminate, bulge. Received: 'spiral'"):
        function(HAND_PROBABILITIES, ["disk", "spiral", "bulge", "disk"])
    with pytest.raises(ValueError, match="one 1 and two 0s"):
        function(HAND_PROBABILITIES, [[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"one-hot rows of shape \(n, 3\) or class indices"):
        function(HAND_PROBABILITIES, np.zeros((4, 2)))


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True, "15"])
def test_bad_n_bins(n_bins):
    with pytest.raises(ValueError, match=f"n_bins must be a positive integer. Received: n_bins={n_bins!r}"):
        calibration.expected_calibration_error(HAND_PROBABILITIES, HAND_LABELS, n_bins=n_bins)


@pytest.mark.parametrize("temperature", [0, -1.0, np.inf, np.nan, "2", None])
def test_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        calibration.apply_temperature(HAND_PROBABILITIES, temperature)


def test_temperatures_that_cannot_be_fitted():
    with pytest.raises(ValueError, match="most probable class of every one of the 40 galaxies is right"):
        calibration.fit_temperature(HAND_PROBABILITIES * 10, ["disk", "bulge", "disk", "disk"] * 10)
    logits, labels = _calibrated_set(500, seed=7)
    with pytest.raises(ValueError, match="no better than chance"):
        calibration.fit_temperature(_softmax(logits), (labels + 1) % 3)


def test_bad_purities_and_missing_classes():
    for value in (0, 1.5, "0.9", True):
        with pytest.raises(ValueError, match="disk_purity must be a purity in \\(0, 1\\]"):
            choose_thresholds(HAND_PROBABILITIES, HAND_LABELS, disk_purity=value)
    with pytest.raises(ValueError, match="the labels hold no bulge-dominated galaxy"):
        choose_thresholds(HAND_PROBABILITIES, [0, 0, 1, 0])
    with pytest.raises(ValueError, match=r"thresholds must be a non-empty 1-d array of values in \[0, 1\]"):
        purity_completeness(HAND_PROBABILITIES, HAND_LABELS, [0.5, 1.2])


# --------------------------------------------------------------------------- figures


def _assert_png(path):
    with open(path, "rb") as stream:
        assert stream.read(8) == PNG_SIGNATURE
    assert [name for name in os.listdir(os.path.dirname(path)) if name.startswith(".tmp")] == []


def test_figures_are_written_as_png(tmp_path):
    logits, labels = _calibrated_set(300, seed=8)
    probabilities = _softmax(2.0 * logits)
    path = reliability_diagram(probabilities, labels, str(tmp_path / "reliability.png"), calibrated=_softmax(logits))
    _assert_png(path)
    choice = choose_thresholds(probabilities, labels, 0.8, 0.8)
    _assert_png(purity_completeness_diagram(probabilities, labels, str(tmp_path / "curves.png"), choice))


def test_figure_paths_are_checked(tmp_path):
    with pytest.raises(ValueError, match="must end in .png"):
        reliability_diagram(HAND_PROBABILITIES, HAND_LABELS, str(tmp_path / "figure.jpg"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        reliability_diagram(HAND_PROBABILITIES, HAND_LABELS, str(tmp_path / "missing" / "figure.png"))
    with pytest.raises(TypeError, match="file name"):
        purity_completeness_diagram(HAND_PROBABILITIES, HAND_LABELS, 12)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- files


def _model_sha256(model, backend="keras"):
    """The sha256 that calibration files record: of the model's file, as the predictor resolves it."""
    return models.model_sha256(models.resolve(model, backend), backend)


def test_model_sha256_of_a_keras_file_and_of_a_tflearn_checkpoint(tmp_path):
    keras_file = tmp_path / "model.hdf5"
    keras_file.write_bytes(b"weights of a keras model")
    assert _model_sha256(str(keras_file)) == hashlib.sha256(b"weights of a keras model").hexdigest()
    prefix = tmp_path / "check-10"
    (tmp_path / "check-10.index").write_bytes(b"index")
    (tmp_path / "check-10.data-00000-of-00001").write_bytes(b"data")
    (tmp_path / "check-10.meta").write_bytes(b"graph")
    assert _model_sha256(str(prefix), "tflearn") == hashlib.sha256(b"data").hexdigest()
    with pytest.raises(FileNotFoundError, match="no TFLearn checkpoint found at prefix .*check-11"):
        _model_sha256(str(tmp_path / "check-11"), "tflearn")
    with pytest.raises(FileNotFoundError, match="no model file found at .*missing.hdf5"):
        _model_sha256(str(tmp_path / "missing.hdf5"))
    with pytest.raises(TypeError, match="must be a path to a Keras model file or one of 'SDSS_sim'"):
        _model_sha256(None)


SHA_A, SHA_B = "a" * 64, "b" * 64


def test_calibration_files_round_trip_and_refuse_another_model(tmp_path):
    path = str(tmp_path / "calib.json")
    calibration.save_calibration(path, 1.75, SHA_A, model="mine.hdf5", fitted_on={"n": np.int64(12), "ece": np.nan})
    loaded = calibration.load_calibration(path, SHA_A.upper())
    assert loaded.temperature == 1.75 and loaded.model_sha256 == SHA_A and loaded.model == "mine.hdf5"
    assert loaded.fitted_on == {"n": 12, "ece": None}
    np.testing.assert_allclose(loaded.apply(HAND_PROBABILITIES),
                               calibration.apply_temperature(HAND_PROBABILITIES, 1.75))
    with pytest.raises(CalibrationMismatchError, match=r"fitted for another model \(mine.hdf5\), sha256 aaaa.*"
                                                       r"this model's sha256 is bbbb.*gamornet calibrate"):
        calibration.load_calibration(path, SHA_B)
    assert os.listdir(tmp_path) == ["calib.json"]


def test_bad_calibration_files(tmp_path):
    with pytest.raises(ValueError, match="model_sha256 must be a sha256: 64 hexadecimal digits"):
        calibration.save_calibration(str(tmp_path / "c.json"), 1.0, "abc")
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        calibration.save_calibration(str(tmp_path / "c.json"), -1.0, SHA_A)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        calibration.save_calibration(str(tmp_path / "no" / "c.json"), 1.0, SHA_A)
    assert os.listdir(tmp_path) == []
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not a calibration file: it is not valid JSON"):
        calibration.load_calibration(str(bad), SHA_A)
    save_thresholds(str(bad), Thresholds(0.5, 0.6))
    with pytest.raises(ValueError, match='is not a calibration file .*"format": "gamornet-calibration"'):
        calibration.load_calibration(str(bad), SHA_A)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"format": "gamornet-calibration", "format_version": 9}))
    with pytest.raises(ValueError, match="format version 9; this gamornet reads version 1"):
        calibration.load_calibration(str(future), SHA_A)
    with pytest.raises(FileNotFoundError):
        calibration.load_calibration(str(tmp_path / "missing.json"), SHA_A)


def test_thresholds_files_round_trip(tmp_path):
    logits, labels = _calibrated_set(300, seed=9, spread=2.5)
    probabilities = _softmax(logits).astype(np.float32)
    choice = choose_thresholds(probabilities, labels, 0.8, 0.85)
    path = save_thresholds(str(tmp_path / "thr.json"), choice, chosen_from={"labels": "labels.csv"})
    rule = load_thresholds(path)
    assert rule == choice.to_thresholds()
    assert (classify(probabilities, rule) == classify(probabilities, choice.to_thresholds())).all()
    document = json.loads(open(path).read())
    assert document["chosen"]["target_bulge_purity"] == 0.85 and document["chosen_from"] == {"labels": "labels.csv"}
    save_thresholds(path, Thresholds(0.0, 0.6, disk_must_lead=True))
    assert load_thresholds(path) == Thresholds(0.0, 0.6, True)
    with pytest.raises(TypeError, match="ThresholdChoice or a Thresholds"):
        save_thresholds(path, (0.5, 0.5))


def test_bad_thresholds_files(tmp_path):
    path = tmp_path / "thr.json"
    path.write_text(json.dumps({"format": "gamornet-thresholds", "format_version": 1, "disk": 0.5}))
    with pytest.raises(ValueError, match="lacks bulge"):
        load_thresholds(str(path))
    path.write_text(json.dumps({"format": "gamornet-thresholds", "format_version": 1, "disk": 0.5, "bulge": 1.5}))
    with pytest.raises(ValueError, match="holds a bad rule: the bulge threshold must be a probability"):
        load_thresholds(str(path))
    path.write_text("[]")
    with pytest.raises(ValueError, match="is not a thresholds file"):
        load_thresholds(str(path))
