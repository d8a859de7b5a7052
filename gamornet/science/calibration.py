"""Probabilities you can trust: calibration by temperature scaling, and the calibration file.

GaMorNet returns, for each galaxy, the probabilities [p_disk, p_indet, p_bulge].
With a set of galaxies whose true classes are known (simulated ones, or a
labelled sample of the survey), this module answers two questions:

- **Are the probabilities calibrated?** Among galaxies given a top
  probability of 0.8, are 80% right? :func:`expected_calibration_error` (ECE)
  and :func:`reliability_curve` measure it, and
  :func:`gamornet.science.plots.reliability_diagram` shows it (Guo et al.
  2017, "On calibration of modern neural networks", ICML).
- **Can they be made calibrated?** :func:`fit_temperature` fits one
  temperature T on the log-probabilities, by minimising the negative
  log-likelihood of the true classes; :func:`apply_temperature` then divides
  the log-probabilities by T and normalises again. T > 1 softens
  over-confident probabilities, T < 1 sharpens under-confident ones. The most
  probable class of each galaxy never changes.

Which thresholds reach a purity is answered by
:mod:`gamornet.science.thresholds`; the figures are drawn by
:mod:`gamornet.science.plots`.

A temperature is only valid for the model it was fitted for: calibration files
record the model's sha256 (:func:`gamornet.models.model_sha256` of the file
that :func:`gamornet.models.resolve` gives), and :func:`load_calibration`
refuses a file made for another model.

Backend-neutral and numpy only: imports neither TensorFlow nor tflearn (nor
scipy).
"""

import os
from dataclasses import dataclass

import numpy as np

from gamornet._version import __version__
from gamornet.errors import CalibrationMismatchError
from gamornet.presets import CLASS_NAMES
from gamornet.science._checks import check_n_bins, check_probability_set, check_temperature
from gamornet.science._json_files import FORMAT_VERSION, json_safe, read_json, utc_now, write_json

__all__ = [
    "Calibration",
    "ReliabilityCurve",
    "apply_temperature",
    "expected_calibration_error",
    "fit_temperature",
    "MIN_CALIBRATION_GALAXIES",
    "load_calibration",
    "reliability_curve",
    "save_calibration",
]

CALIBRATION_FORMAT = "gamornet-calibration"

# log(0) is replaced by the log of the smallest normal float32, the floor of a float32 softmax.
_LOG_FLOOR = float(np.log(np.finfo(np.float32).tiny))

# Temperatures are searched in [1 / _BETA_MAX, 1 / _BETA_MIN].
_BETA_MIN, _BETA_MAX = 1e-4, 1e4

#: The fewest labelled galaxies a temperature is fitted on. The fitted T is a mean over galaxies, whose spread
#: shrinks as 1/sqrt(n): below 30 galaxies a few of them decide it. A few hundred are advised.
MIN_CALIBRATION_GALAXIES = 30


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class ReliabilityCurve:
    """Accuracy against confidence in equal-width bins (see :func:`reliability_curve`).

    Attributes
    ----------
    edges : numpy.ndarray of shape (n_bins + 1,)
        Bin edges from 0 to 1; bin ``i`` holds confidences in
        ``(edges[i], edges[i + 1]]`` (the first bin also holds 0).
    counts : numpy.ndarray of shape (n_bins,)
        Galaxies per bin.
    confidence : numpy.ndarray of shape (n_bins,)
        Mean top probability per bin (NaN in empty bins).
    accuracy : numpy.ndarray of shape (n_bins,)
        Fraction of galaxies whose most probable class is right, per bin (NaN in empty bins).
    ece : float
        The expected calibration error, sum over bins of
        ``counts / n * |accuracy - confidence|``.
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


def reliability_curve(probabilities, labels, n_bins=15):
    """Accuracy against confidence in ``n_bins`` equal-width bins of the top probability.

    Parameters
    ----------
    probabilities : array_like of shape (n, 3)
        [p_disk, p_indet, p_bulge] per galaxy; rows sum to 1.
    labels : array_like of shape (n, 3) or (n,)
        True classes: one-hot rows (disk [1,0,0], indeterminate [0,1,0],
        bulge [0,0,1]), class indices (0, 1, 2) or class names
        ('disk', 'indeterminate', 'bulge').
    n_bins : int
        Number of equal-width bins of confidence in [0, 1].

    Returns
    -------
    ReliabilityCurve

    Raises
    ------
    ValueError
        Probabilities not of shape (n, 3), not in [0, 1] or not summing to
        1; an empty set; labels of another length or not one of the three
        classes; n_bins not a positive integer.
    """
    n_bins = check_n_bins(n_bins)
    values, truth = check_probability_set(probabilities, labels)
    values = values.astype(np.float64)
    confidence = values.max(axis=1)
    correct = (values.argmax(axis=1) == truth).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    confidence_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    ece = float(np.abs(correct_sum - confidence_sum).sum() / len(values))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.where(counts > 0, confidence_sum / counts, np.nan)
        accuracy = np.where(counts > 0, correct_sum / counts, np.nan)
    return ReliabilityCurve(edges, counts, mean_confidence, accuracy, ece)


def expected_calibration_error(probabilities, labels, n_bins=15):
    """Top-label expected calibration error (ECE) with equal-width confidence bins.

    The galaxies are binned by their top probability (confidence) into
    ``n_bins`` equal-width bins of [0, 1]; the ECE is the average, weighted
    by the number of galaxies per bin, of ``|accuracy - mean confidence|``
    (Guo et al. 2017, Eq. 3). 0 for perfectly calibrated probabilities.

    Parameters
    ----------
    probabilities : array_like of shape (n, 3)
        [p_disk, p_indet, p_bulge] per galaxy; rows sum to 1.
    labels : array_like of shape (n, 3) or (n,)
        True classes: one-hot rows, class indices (0 disk, 1 indeterminate,
        2 bulge) or class names.
    n_bins : int
        Number of bins.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As :func:`reliability_curve`.

    Examples
    --------
    >>> from gamornet.science.calibration import expected_calibration_error
    >>> probabilities = [[0.93, 0.04, 0.03], [0.14, 0.14, 0.72], [0.62, 0.28, 0.10], [0.66, 0.20, 0.14]]
    >>> round(expected_calibration_error(probabilities, ["disk", "bulge", "bulge", "disk"], n_bins=10), 4)
    0.1575
    """
    return reliability_curve(probabilities, labels, n_bins).ece


def _log_probabilities(values):
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(values.astype(np.float64)), _LOG_FLOOR)


def _nll_slope_and_curvature(logits, true_logit, beta):
    """First and second derivatives in beta = 1/T of the mean NLL of softmax(beta * logits)."""
    scaled = beta * logits
    weights = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    mean_logit = (weights * logits).sum(axis=1)
    variance = (weights * (logits - mean_logit[:, None]) ** 2).sum(axis=1)
    return float(np.mean(mean_logit - true_logit)), float(np.mean(variance))


def _check_enough_labels(truth):
    """Refuse labelled sets on which a temperature means nothing: too few galaxies, or one class only."""
    if len(truth) < MIN_CALIBRATION_GALAXIES:
        raise ValueError(
            f"cannot fit a temperature on {len(truth)} labelled galaxies: at least {MIN_CALIBRATION_GALAXIES} are "
            "needed (a few hundred are advised), else a handful of galaxies decide it"
        )
    present = np.unique(truth)
    if present.size < 2:
        raise ValueError(
            f"cannot fit a temperature: every one of the {len(truth)} labelled galaxies is "
            f"{CLASS_NAMES[int(present[0])]}. With one class the fit only asks how much probability that class gets, "
            "not whether the model's confidence matches its accuracy; label galaxies of at least two classes (of "
            "all three, for a temperature that holds for each)"
        )


def fit_temperature(probabilities, labels):
    """Fit the temperature that calibrates a model's probabilities on labelled galaxies.

    Temperature scaling (Guo et al. 2017) replaces the probabilities p by
    ``softmax(log(p) / T)``. T is fitted by minimising the mean negative
    log-likelihood of the true classes. This likelihood is convex in 1/T, so
    its minimum is found exactly (safeguarded Newton steps on 1/T).

    Parameters
    ----------
    probabilities : array_like of shape (n, 3)
        The model's [p_disk, p_indet, p_bulge] per galaxy (not calibrated).
    labels : array_like of shape (n, 3) or (n,)
        True classes: one-hot rows, class indices (0 disk, 1 indeterminate,
        2 bulge) or class names.

    Returns
    -------
    float
        T > 0: above 1 for over-confident probabilities, below 1 for
        under-confident ones.

    Raises
    ------
    ValueError
        Bad probabilities or labels (see :func:`reliability_curve`); fewer
        than :data:`MIN_CALIBRATION_GALAXIES` (30) labelled galaxies, or
        labels of one class only (the fit then says nothing about whether
        confidence matches accuracy); or no
        temperature in [1e-4, 1e4] minimises the likelihood: when every
        galaxy's most probable class is right (T would be 0), or when the
        probabilities do no better than chance (T would be infinite).
    """
    values, truth = check_probability_set(probabilities, labels)
    _check_enough_labels(truth)
    logits = _log_probabilities(values)
    true_logit = logits[np.arange(len(truth)), truth]
    low, high = _BETA_MIN, _BETA_MAX
    if _nll_slope_and_curvature(logits, true_logit, high)[0] <= 0:
        if (values.argmax(axis=1) == truth).all():
            reason = f"the most probable class of every one of the {len(truth)} galaxies is right"
        else:
            reason = "almost every galaxy's most probable class is right, with top probabilities close to 1"
        raise ValueError(
            f"cannot fit a temperature: {reason}, so the likelihood keeps growing as T goes to 0. "
            "Temperature scaling needs a labelled set on which the model makes some mistakes"
        )
    if _nll_slope_and_curvature(logits, true_logit, low)[0] >= 0:
        raise ValueError(
            "cannot fit a temperature: the probabilities do no better than chance on these labels (the "
            "likelihood keeps growing as T goes to infinity). Check that the labels match the predictions"
        )
    beta = 1.0
    for _ in range(200):
        slope, curvature = _nll_slope_and_curvature(logits, true_logit, beta)
        if slope > 0:
            high = beta
        else:
            low = beta
        step = slope / curvature if curvature > 0 else np.inf
        if abs(step) <= 1e-12 * beta or high - low <= 1e-12 * low:
            break
        newton = beta - step
        beta = newton if low < newton < high else np.sqrt(low * high)
    return float(1.0 / beta)


def apply_temperature(probabilities, temperature):
    """Calibrated probabilities: ``softmax(log(p) / T)``.

    Parameters
    ----------
    probabilities : array_like of shape (n, 3)
        [p_disk, p_indet, p_bulge] per galaxy.
    temperature : float
        T > 0, from :func:`fit_temperature` or :func:`load_calibration`.

    Returns
    -------
    numpy.ndarray of shape (n, 3)
        float32 for float32 input, else float64. Each galaxy keeps its most
        probable class.

    Raises
    ------
    ValueError
        Bad probabilities (see :func:`reliability_curve`), or a temperature
        that is not a finite number > 0.
    """
    temperature = check_temperature(temperature)
    values, _ = check_probability_set(probabilities)
    scaled = _log_probabilities(values) / temperature
    exponentials = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return (exponentials / exponentials.sum(axis=1, keepdims=True)).astype(values.dtype)



# --------------------------------------------------------------------------- the calibration file


def _check_sha256(value, name):
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
        raise ValueError(f"{name} must be a sha256: 64 hexadecimal digits. Received: {value!r}")
    return value.lower()


@dataclass(frozen=True)
class Calibration:
    """A temperature fitted for one model (see :func:`load_calibration`).

    Attributes
    ----------
    temperature : float
        T > 0.
    model_sha256 : str
        The sha256 of the model it was fitted for (:func:`gamornet.models.model_sha256`).
    model : str or None
        The model's name or path when fitted (for information).
    fitted_on : dict
        What it was fitted on (number of galaxies, files and their sha256,
        ECE before and after...).
    """

    temperature: float
    model_sha256: str
    model: object = None
    fitted_on: object = None

    def apply(self, probabilities):
        """Calibrated probabilities (see :func:`apply_temperature`)."""
        return apply_temperature(probabilities, self.temperature)


def save_calibration(path, temperature, model_sha256, model=None, fitted_on=None):
    """Write a calibration file (JSON, atomically), to be read by :func:`load_calibration`.

    Parameters
    ----------
    path : str
        The JSON file to write; its folder must exist.
    temperature : float
        T > 0, from :func:`fit_temperature`.
    model_sha256 : str
        The sha256 of the model whose probabilities were calibrated
        (:func:`gamornet.models.model_sha256`).
    model : str, optional
        Its name or path, for information.
    fitted_on : dict, optional
        A description of the data (number of galaxies, files, ECE before and after...).

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        A temperature that is not a finite number > 0, or a malformed sha256.
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    document = {
        "format": CALIBRATION_FORMAT,
        "format_version": FORMAT_VERSION,
        "method": "temperature scaling: p -> softmax(log(p) / T)",
        "temperature": check_temperature(temperature),
        "model": {"sha256": _check_sha256(model_sha256, "model_sha256"), "name": model},
        "fitted_on": json_safe(fitted_on or {}),
        "created": utc_now(),
        "gamornet_version": __version__,
    }
    return write_json(path, document)


def load_calibration(path, model_sha256):
    """Read a calibration file and check that it was made for this model.

    Parameters
    ----------
    path : str
        A file written by :func:`save_calibration` or ``gamornet calibrate``.
    model_sha256 : str
        The sha256 of the model in use (:func:`gamornet.models.model_sha256`,
        or a predictor's ``model_sha256``).

    Returns
    -------
    Calibration

    Raises
    ------
    gamornet.errors.CalibrationMismatchError
        The file was fitted for another model (a ``ValueError``).
    ValueError
        Not a calibration file, or a bad temperature in it.
    OSError
        The file cannot be read.
    """
    expected = _check_sha256(model_sha256, "model_sha256")
    document = read_json(path, CALIBRATION_FORMAT, "calibration", "gamornet calibrate")
    model = document.get("model") if isinstance(document.get("model"), dict) else {}
    recorded = _check_sha256(model.get("sha256"), f"the model sha256 in {os.fspath(path)!r}")
    if recorded != expected:
        name = f" ({model['name']})" if model.get("name") else ""
        raise CalibrationMismatchError(
            f"the calibration {os.fspath(path)!r} was fitted for another model{name}, sha256 {recorded[:16]}..., "
            f"but this model's sha256 is {expected[:16]}...: a temperature only holds for the model it was "
            "fitted for. Fit one for this model with `gamornet calibrate`"
        )
    return Calibration(
        temperature=check_temperature(document.get("temperature")),
        model_sha256=recorded,
        model=model.get("name"),
        fitted_on=document.get("fitted_on"),
    )

