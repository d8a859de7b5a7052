"""Probabilities you can trust: calibration, and thresholds chosen from labelled galaxies.

GaMorNet returns, for each galaxy, the probabilities [p_disk, p_indet, p_bulge].
With a set of galaxies whose true classes are known (simulated ones, or a
labelled sample of the survey), this module answers three questions:

- **Are the probabilities calibrated?** Among galaxies given a top
  probability of 0.8, are 80% right? :func:`expected_calibration_error` (ECE)
  and :func:`reliability_diagram` measure and show it (Guo et al. 2017,
  "On calibration of modern neural networks", ICML).
- **Can they be made calibrated?** :func:`fit_temperature` fits one
  temperature T on the log-probabilities, by minimising the negative
  log-likelihood of the true classes; :func:`apply_temperature` then divides
  the log-probabilities by T and normalises again. T > 1 softens
  over-confident probabilities, T < 1 sharpens under-confident ones. The most
  probable class of each galaxy never changes.
- **Which thresholds?** :func:`purity_completeness` gives the purity (the
  fraction of galaxies classified disk-dominated that are) and completeness
  (the fraction of disk-dominated galaxies classified so) against the
  threshold on p_disk, and the same for bulges on p_bulge, as Figures 8 and 9
  of Ghosh et al. (2020) do. :func:`choose_thresholds` picks the lowest
  thresholds that reach the purities asked for, as a
  :class:`gamornet.science.classify.Thresholds` rule.

A temperature is only valid for the model it was fitted for: calibration files
record the model's sha256 (:func:`model_sha256`), and :func:`load_calibration`
refuses a file made for another model.

Backend-neutral and numpy only: imports neither TensorFlow nor tflearn (nor
scipy). Plots need matplotlib.
"""

import datetime
import json
import os
from dataclasses import asdict, dataclass

import numpy as np

import gamornet
from gamornet._utils.atomic import atomic_path, atomic_write
from gamornet.science._checks import (
    check_n_bins,
    check_png_path,
    check_probability_set,
    check_purity,
    check_temperature,
)
from gamornet.science.classify import Thresholds, classify
from gamornet.errors import CalibrationMismatchError, UnreachablePurityError

__all__ = [
    "Calibration",
    "PurityCompleteness",
    "ReliabilityCurve",
    "ThresholdChoice",
    "apply_temperature",
    "choose_thresholds",
    "expected_calibration_error",
    "fit_temperature",
    "load_calibration",
    "load_thresholds",
    "model_sha256",
    "plot_purity_completeness",
    "plot_reliability",
    "purity_completeness",
    "purity_completeness_diagram",
    "reliability_curve",
    "reliability_diagram",
    "save_calibration",
    "save_thresholds",
]

CALIBRATION_FORMAT = "gamornet-calibration"
THRESHOLDS_FORMAT = "gamornet-thresholds"
FORMAT_VERSION = 1

# log(0) is replaced by the log of the smallest normal float32, the floor of a float32 softmax.
_LOG_FLOOR = float(np.log(np.finfo(np.float32).tiny))

# Temperatures are searched in [1 / _BETA_MAX, 1 / _BETA_MIN].
_BETA_MIN, _BETA_MAX = 1e-4, 1e4


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
        Bad probabilities or labels (see :func:`reliability_curve`); or no
        temperature in [1e-4, 1e4] minimises the likelihood: when every
        galaxy's most probable class is right (T would be 0), or when the
        probabilities do no better than chance (T would be infinite).
    """
    values, truth = check_probability_set(probabilities, labels)
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


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class PurityCompleteness:
    """Purity and completeness of disks and bulges against the threshold (see :func:`purity_completeness`).

    Attributes
    ----------
    thresholds : numpy.ndarray of shape (m,)
        The thresholds t.
    disk_purity, disk_completeness : numpy.ndarray of shape (m,)
        Of the rule "disk-dominated if p_disk >= t": the fraction of the
        galaxies so classified that are disk-dominated (NaN when none is),
        and the fraction of the disk-dominated galaxies so classified.
    bulge_purity, bulge_completeness : numpy.ndarray of shape (m,)
        The same for "bulge-dominated if p_bulge >= t".
    disk_selected, bulge_selected : numpy.ndarray of shape (m,)
        How many galaxies each rule selects.
    n_disk, n_bulge : int
        How many galaxies are disk-dominated and bulge-dominated.
    """

    thresholds: np.ndarray
    disk_purity: np.ndarray
    disk_completeness: np.ndarray
    bulge_purity: np.ndarray
    bulge_completeness: np.ndarray
    disk_selected: np.ndarray
    bulge_selected: np.ndarray
    n_disk: int
    n_bulge: int


def _curve(probability, is_class, thresholds):
    """(purity, completeness, selected) of "p >= t" for every t, by sorting once."""
    order = np.argsort(probability, kind="stable")
    ascending = probability[order]
    # members[i]: how many galaxies of the class are at sorted position i or above.
    members = np.concatenate([np.cumsum(is_class[order][::-1])[::-1], [0]])
    first = np.searchsorted(ascending, thresholds, side="left")
    selected = len(probability) - first
    true_positives = members[first]
    total = int(is_class.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        purity = np.where(selected > 0, true_positives / selected, np.nan)
        completeness = true_positives / total if total else np.full(len(thresholds), np.nan)
    return purity, completeness, selected


def _at_precision(thresholds, dtype):
    """Thresholds as :func:`gamornet.science.classify.classify` compares them: at the probabilities' precision."""
    return np.asarray(thresholds, dtype=np.float64).astype(dtype).astype(np.float64)


def purity_completeness(probabilities, labels, thresholds=None):
    """Purity and completeness of disks and bulges against the probability threshold.

    As Figures 8 and 9 of Ghosh et al. (2020): a galaxy is called
    disk-dominated when p_disk >= t (bulge-dominated when p_bulge >= t); the
    purity is the fraction of the galaxies so called that truly are, the
    completeness the fraction of the true ones so called. Raising t trades
    completeness for purity.

    Parameters
    ----------
    probabilities : array_like of shape (n, 3)
        [p_disk, p_indet, p_bulge] per galaxy.
    labels : array_like of shape (n, 3) or (n,)
        True classes: one-hot rows, class indices (0 disk, 1 indeterminate,
        2 bulge) or class names.
    thresholds : array_like of shape (m,), optional
        The thresholds, in [0, 1]; by default 0, 0.01, ..., 1. Compared at
        the precision of the probabilities, as :func:`gamornet.science.classify.classify` does.

    Returns
    -------
    PurityCompleteness

    Raises
    ------
    ValueError
        Bad probabilities or labels (see :func:`reliability_curve`), or
        thresholds outside [0, 1].
    """
    values, truth = check_probability_set(probabilities, labels)
    if thresholds is None:
        thresholds = np.linspace(0.0, 1.0, 101)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or not ((thresholds >= 0) & (thresholds <= 1)).all():
        raise ValueError(f"thresholds must be a non-empty 1-d array of values in [0, 1]. Received: {thresholds!r}")
    compared = _at_precision(thresholds, values.dtype)
    probabilities64 = values.astype(np.float64)
    disk = _curve(probabilities64[:, 0], truth == 0, compared)
    bulge = _curve(probabilities64[:, 2], truth == 2, compared)
    return PurityCompleteness(thresholds, disk[0], disk[1], bulge[0], bulge[1], disk[2], bulge[2],
                              int((truth == 0).sum()), int((truth == 2).sum()))


@dataclass(frozen=True)
class ThresholdChoice:
    """Thresholds chosen from labelled galaxies (see :func:`choose_thresholds`).

    Attributes
    ----------
    disk, bulge : float
        The lowest thresholds on p_disk and p_bulge that reach the purities
        asked for.
    disk_purity, disk_completeness, bulge_purity, bulge_completeness : float
        What the rule ``Thresholds(disk, bulge)`` gives on the labelled
        galaxies, counted with :func:`gamornet.science.classify.classify`.
    indeterminate_fraction : float
        The fraction of the galaxies it calls indeterminate.
    target_disk_purity, target_bulge_purity : float
        The purities asked for.
    n : int
        The number of labelled galaxies.
    """

    disk: float
    bulge: float
    disk_purity: float
    disk_completeness: float
    bulge_purity: float
    bulge_completeness: float
    indeterminate_fraction: float
    target_disk_purity: float
    target_bulge_purity: float
    n: int

    def to_thresholds(self):
        """The :class:`gamornet.science.classify.Thresholds` rule, for :func:`gamornet.science.classify.classify`."""
        return Thresholds(disk=self.disk, bulge=self.bulge)

    def as_dict(self):
        """The fields as a dict of plain Python numbers."""
        return asdict(self)

    def __str__(self):
        return (
            f"thresholds chosen on {self.n} labelled galaxies\n"
            f"  class  threshold         purity (asked)  completeness\n"
            f"  disk   p_disk  >= {self.disk:.4f}  {self.disk_purity:.3f} ({self.target_disk_purity:.3f})"
            f"   {self.disk_completeness:.3f}\n"
            f"  bulge  p_bulge >= {self.bulge:.4f}  {self.bulge_purity:.3f} ({self.target_bulge_purity:.3f})"
            f"   {self.bulge_completeness:.3f}\n"
            f"  indeterminate fraction: {self.indeterminate_fraction:.3f}"
        )


def _lowest_threshold(probability, is_class, target, kind):
    """The lowest data value t with purity(p >= t) >= target; raises UnreachablePurityError."""
    candidates = np.unique(probability)
    purity, _, _ = _curve(probability, is_class, candidates)
    reached = np.flatnonzero(purity >= target)
    if reached.size:
        return float(candidates[reached[0]])
    best = int(np.nanargmax(purity))
    column = "p_disk" if kind == "disk" else "p_bulge"
    raise UnreachablePurityError(
        f"no threshold on {column} gives a {kind} purity of {target:g} on these {len(probability)} galaxies: "
        f"the highest purity is {purity[best]:.3f} ({column} >= {candidates[best]:.4f}, "
        f"{int((probability >= candidates[best]).sum())} galaxies). Ask for a purity of at most "
        f"{np.floor(purity[best] * 1000) / 1000:g}, or label more galaxies",
        kind, target, float(purity[best]), float(candidates[best]),
    )


def choose_thresholds(probabilities, labels, disk_purity=0.95, bulge_purity=0.95):
    """The lowest thresholds on p_disk and p_bulge that reach the purities asked for.

    Among the thresholds at which the classification of the labelled galaxies
    changes (their own p_disk values), the lowest whose purity (see
    :func:`purity_completeness`) is at least ``disk_purity`` is chosen: it is
    the most complete one with that purity. The same for bulges. The
    completeness and indeterminate fraction reported are those of the
    resulting rule :class:`gamornet.science.classify.Thresholds` ``(disk, bulge)``
    applied by :func:`gamornet.science.classify.classify`.

    Purity need not grow with the threshold on a small set; the threshold
    chosen is the lowest that reaches the purity, and a few higher ones may
    fall short of it. A purity of 1 is reached as soon as the galaxy with the
    highest p_disk is a disk, even if by one galaxy: look at the completeness.

    Parameters
    ----------
    probabilities : array_like of shape (n, 3)
        [p_disk, p_indet, p_bulge] per galaxy (calibrated or not: use the
        thresholds on probabilities made the same way).
    labels : array_like of shape (n, 3) or (n,)
        True classes: one-hot rows, class indices (0 disk, 1 indeterminate,
        2 bulge) or class names.
    disk_purity, bulge_purity : float
        The purities asked for, in (0, 1].

    Returns
    -------
    ThresholdChoice
        ``.disk`` and ``.bulge`` are the thresholds; ``.to_thresholds()``
        gives the rule for :func:`gamornet.science.classify.classify`.

    Raises
    ------
    gamornet.errors.UnreachablePurityError
        No threshold reaches a purity asked for; the message gives the
        highest purity reached (a ``ValueError``).
    ValueError
        Bad probabilities or labels (see :func:`reliability_curve`), a
        purity outside (0, 1], or labels without any disk-dominated or
        bulge-dominated galaxy.
    """
    disk_target = check_purity(disk_purity, "disk_purity")
    bulge_target = check_purity(bulge_purity, "bulge_purity")
    values, truth = check_probability_set(probabilities, labels)
    for index, kind in ((0, "disk-dominated"), (2, "bulge-dominated")):
        if not (truth == index).any():
            raise ValueError(
                f"the labels hold no {kind} galaxy: purity and completeness cannot be measured for it"
            )
    disk = _lowest_threshold(values[:, 0], truth == 0, disk_target, "disk")
    bulge = _lowest_threshold(values[:, 2], truth == 2, bulge_target, "bulge")
    predicted = classify(values, Thresholds(disk=disk, bulge=bulge))
    counts = {}
    for name, index in (("disk", 0), ("bulge", 2)):
        called, true = predicted == name, truth == index
        counts[name] = (
            float((called & true).sum() / called.sum()) if called.any() else float("nan"),
            float((called & true).sum() / true.sum()),
        )
    return ThresholdChoice(
        disk=disk, bulge=bulge,
        disk_purity=counts["disk"][0], disk_completeness=counts["disk"][1],
        bulge_purity=counts["bulge"][0], bulge_completeness=counts["bulge"][1],
        indeterminate_fraction=float((predicted == "indeterminate").mean()),
        target_disk_purity=disk_target, target_bulge_purity=bulge_target, n=len(values),
    )


# --------------------------------------------------------------------------- plots


def _figure(**kwargs):
    """A matplotlib Figure not registered with pyplot (so notebooks' backends are left alone)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - matplotlib is in the test, sim and docs extras
        raise ImportError(
            "the figures of gamornet.science.calibration need matplotlib: pip install matplotlib"
        ) from error
    return Figure(**kwargs)


def _save(figure, path):
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    return path


def plot_reliability(axes, probabilities, labels, n_bins=15, label=None, colour="C0"):
    """Draw a reliability diagram (accuracy against confidence) into matplotlib ``axes``.

    Parameters
    ----------
    axes : matplotlib.axes.Axes
    probabilities, labels, n_bins
        As :func:`reliability_curve`.
    label : str, optional
        The legend's name of this curve; its ECE is appended.
    colour : str
        A matplotlib colour.

    Returns
    -------
    ReliabilityCurve
    """
    curve = reliability_curve(probabilities, labels, n_bins)
    filled = curve.counts > 0
    centres = 0.5 * (curve.edges[:-1] + curve.edges[1:])
    name = f"{label}: " if label else ""
    axes.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
    axes.plot(curve.confidence[filled], curve.accuracy[filled], marker="o", color=colour,
              label=f"{name}ECE = {curve.ece:.3f}")
    axes.bar(centres[filled], curve.accuracy[filled], width=np.diff(curve.edges)[filled], color=colour,
             alpha=0.15, edgecolor=colour, lw=0.5)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence (top probability)")
    axes.set_ylabel("accuracy")
    axes.legend(loc="upper left", fontsize=8)
    return curve


def reliability_diagram(probabilities, labels, path, n_bins=15, calibrated=None):
    """Write a reliability diagram (accuracy against confidence, with the ECE) as a PNG.

    Parameters
    ----------
    probabilities, labels, n_bins
        As :func:`reliability_curve`.
    path : str
        The PNG file to write (atomically); its folder must exist.
    calibrated : array_like of shape (n, 3), optional
        The same galaxies' calibrated probabilities, drawn beside.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        Bad probabilities, labels or n_bins; a path not ending in ``.png``.
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    path = check_png_path(path)
    figure = _figure(figsize=(5.5, 6.5), layout="constrained")
    top, bottom = figure.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    curve = plot_reliability(top, probabilities, labels, n_bins, label="model" if calibrated is not None else None)
    centres = 0.5 * (curve.edges[:-1] + curve.edges[1:])
    width = np.diff(curve.edges)
    bottom.bar(centres, curve.counts, width=width, color="C0", alpha=0.5, label="model")
    if calibrated is not None:
        after = plot_reliability(top, calibrated, labels, n_bins, label="calibrated", colour="C1")
        bottom.bar(centres, after.counts, width=width, color="C1", alpha=0.5, label="calibrated")
        bottom.legend(fontsize=8)
    top.set_xlabel("")
    top.set_title(f"Reliability of the top probability ({len(np.asarray(labels))} galaxies)")
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("galaxies")
    return _save(figure, path)


def plot_purity_completeness(axes_disk, axes_bulge, curves, choice=None):
    """Draw purity and completeness curves into two matplotlib axes (disks, bulges).

    Parameters
    ----------
    axes_disk, axes_bulge : matplotlib.axes.Axes
    curves : PurityCompleteness
        From :func:`purity_completeness`.
    choice : ThresholdChoice, optional
        Marks the chosen thresholds and target purities.
    """
    panels = (
        (axes_disk, "disk", "p_disk", curves.disk_purity, curves.disk_completeness),
        (axes_bulge, "bulge", "p_bulge", curves.bulge_purity, curves.bulge_completeness),
    )
    for axes, kind, column, purity, completeness in panels:
        axes.plot(curves.thresholds, purity, color="C0", label="purity")
        axes.plot(curves.thresholds, completeness, color="C3", label="completeness")
        if choice is not None:
            threshold = getattr(choice, kind)
            target = getattr(choice, f"target_{kind}_purity")
            axes.axvline(threshold, color="0.3", ls="--", lw=1, label=f"{column} >= {threshold:.3f}")
            axes.axhline(target, color="C0", ls=":", lw=1, label=f"purity asked: {target:g}")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.set_xlabel(f"threshold on {column}")
        axes.set_title(f"{kind}-dominated galaxies")
        axes.legend(loc="lower left", fontsize=8)
    axes_disk.set_ylabel("fraction")


def purity_completeness_diagram(probabilities, labels, path, choice=None, thresholds=None):
    """Write the purity and completeness curves of disks and bulges as a PNG.

    Parameters
    ----------
    probabilities, labels, thresholds
        As :func:`purity_completeness`.
    path : str
        The PNG file to write (atomically); its folder must exist.
    choice : ThresholdChoice, optional
        Marks the chosen thresholds.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        Bad probabilities or labels; a path not ending in ``.png``.
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    path = check_png_path(path)
    curves = purity_completeness(probabilities, labels, thresholds)
    figure = _figure(figsize=(10, 4.2), layout="constrained")
    axes_disk, axes_bulge = figure.subplots(1, 2, sharey=True)
    plot_purity_completeness(axes_disk, axes_bulge, curves, choice)
    figure.suptitle(f"Purity and completeness against threshold ({len(np.asarray(labels))} labelled galaxies)")
    return _save(figure, path)


# --------------------------------------------------------------------------- files


def model_sha256(model, backend="keras"):
    """The sha256 that identifies a model's weights in calibration files.

    Parameters
    ----------
    model : str
        A published model name (``'SDSS_tl'`` ...; fetched into the cache if
        needed, see :func:`gamornet.models.fetch`) or a model file: a Keras
        ``.hdf5`` file, or a TFLearn checkpoint (see :func:`gamornet.models.resolve`).
    backend : {'keras', 'tflearn'}
        The backend of a published model name.

    Returns
    -------
    str
        64 hexadecimal digits: the sha256 of the Keras file, or of a TFLearn
        checkpoint's weights (its ``<prefix>.data-00000-of-00001`` file, into
        which the ``.index`` only points), as the predictor's
        ``model_sha256`` (:func:`gamornet.models.model_sha256`).

    Raises
    ------
    FileNotFoundError
        No such file or checkpoint.
    ValueError
        An unknown backend.
    """
    from gamornet import models

    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a published model name or a path. Received: {model!r}")
    return models.model_sha256(models.resolve(model, backend), backend)


def _check_sha256(value, name):
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
        raise ValueError(f"{name} must be a sha256: 64 hexadecimal digits. Received: {value!r}")
    return value.lower()


def _write_json(path, document):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name (str or os.PathLike). Received: {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {os.fspath(path)!r}: the folder {folder!r} does not exist")
    with atomic_write(path, encoding="utf-8") as stream:
        json.dump(document, stream, indent=2, allow_nan=False)
        stream.write("\n")
    return os.fspath(path)


def _read_json(path, expected_format, what, writer):
    path = os.fspath(path)
    with open(path, encoding="utf-8") as stream:
        try:
            document = json.load(stream)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path!r} is not a {what} file: it is not valid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != expected_format:
        raise ValueError(
            f"{path!r} is not a {what} file (one written by {writer}): it lacks \"format\": \"{expected_format}\""
        )
    if document.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path!r} is a {what} file of format version {document.get('format_version')!r}; this gamornet "
            f"reads version {FORMAT_VERSION}"
        )
    return document


def _json_safe(value):
    """Plain JSON values: numpy scalars to Python numbers, NaN to None."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    return value


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Calibration:
    """A temperature fitted for one model (see :func:`load_calibration`).

    Attributes
    ----------
    temperature : float
        T > 0.
    model_sha256 : str
        The sha256 of the model it was fitted for (:func:`model_sha256`).
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
        The sha256 of the model whose probabilities were calibrated (:func:`model_sha256`).
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
        "fitted_on": _json_safe(fitted_on or {}),
        "created": _now(),
        "gamornet_version": gamornet.__version__,
    }
    return _write_json(path, document)


def load_calibration(path, model_sha256):
    """Read a calibration file and check that it was made for this model.

    Parameters
    ----------
    path : str
        A file written by :func:`save_calibration` or ``gamornet calibrate``.
    model_sha256 : str
        The sha256 of the model in use (:func:`model_sha256`, or a
        predictor's ``model_sha256``).

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
    document = _read_json(path, CALIBRATION_FORMAT, "calibration", "gamornet calibrate")
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


def save_thresholds(path, thresholds, chosen_from=None):
    """Write thresholds as JSON (atomically), for :func:`load_thresholds` and ``gamornet predict --thresholds``.

    Parameters
    ----------
    path : str
        The JSON file to write; its folder must exist.
    thresholds : ThresholdChoice or gamornet.science.classify.Thresholds
        The rule; a :class:`ThresholdChoice` also records its purities,
        completenesses and indeterminate fraction.
    chosen_from : dict, optional
        A description of the labelled data (files, their sha256...).

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    TypeError
        ``thresholds`` of another type.
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    if isinstance(thresholds, ThresholdChoice):
        rule, summary = thresholds.to_thresholds(), thresholds.as_dict()
    elif isinstance(thresholds, Thresholds):
        rule, summary = thresholds, None
    else:
        raise TypeError(f"thresholds must be a ThresholdChoice or a Thresholds. Received: {thresholds!r}")
    document = {
        "format": THRESHOLDS_FORMAT,
        "format_version": FORMAT_VERSION,
        "rule": "disk if p_disk >= disk (and, with disk_must_lead, p_disk > p_bulge and p_disk > p_indet); "
                "bulge if p_bulge >= bulge; indeterminate otherwise",
        "disk": float(rule.disk),
        "bulge": float(rule.bulge),
        "disk_must_lead": bool(rule.disk_must_lead),
        "chosen": _json_safe(summary),
        "chosen_from": _json_safe(chosen_from or {}),
        "created": _now(),
        "gamornet_version": gamornet.__version__,
    }
    return _write_json(path, document)


def load_thresholds(path):
    """Read a thresholds file (from ``gamornet thresholds --output`` or :func:`save_thresholds`).

    Parameters
    ----------
    path : str

    Returns
    -------
    gamornet.science.classify.Thresholds

    Raises
    ------
    ValueError
        Not a thresholds file, or thresholds outside [0, 1].
    OSError
        The file cannot be read.
    """
    document = _read_json(path, THRESHOLDS_FORMAT, "thresholds", "gamornet thresholds")
    missing = [key for key in ("disk", "bulge") if key not in document]
    if missing:
        raise ValueError(f"the thresholds file {os.fspath(path)!r} lacks {' and '.join(missing)}")
    try:
        return Thresholds(document["disk"], document["bulge"], document.get("disk_must_lead", False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"the thresholds file {os.fspath(path)!r} holds a bad rule: {error}") from None
