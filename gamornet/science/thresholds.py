"""Thresholds chosen from labelled galaxies: purity and completeness against the threshold, and the thresholds file.

GaMorNet returns, for each galaxy, the probabilities [p_disk, p_indet, p_bulge].
With a set of galaxies whose true classes are known (simulated ones, or a
labelled sample of the survey), this module answers: **which thresholds?**
:func:`purity_completeness` gives the purity (the fraction of galaxies
classified disk-dominated that are) and completeness (the fraction of
disk-dominated galaxies classified so) against the threshold on p_disk, and
the same for bulges on p_bulge, as Figures 8 and 9 of Ghosh et al. (2020) do.
:func:`choose_thresholds` picks the lowest thresholds that reach the purities
asked for, as a :class:`gamornet.science.classify.Thresholds` rule, and
:func:`save_thresholds` writes them for ``gamornet predict --thresholds``.

Whether the probabilities are calibrated, and how to calibrate them, is
answered by :mod:`gamornet.science.calibration`; the figures are drawn by
:mod:`gamornet.science.plots`.

Backend-neutral and numpy only: imports neither TensorFlow nor tflearn (nor
scipy).
"""

import os
from dataclasses import asdict, dataclass

import numpy as np

from gamornet._version import __version__
from gamornet.errors import UnreachablePurityError
from gamornet.science._checks import check_probability_set, check_purity
from gamornet.science._json_files import FORMAT_VERSION, json_safe, read_json, utc_now, write_json
from gamornet.science.classify import Thresholds, classify

__all__ = [
    "PurityCompleteness",
    "ThresholdChoice",
    "choose_thresholds",
    "load_thresholds",
    "purity_completeness",
    "save_thresholds",
]

THRESHOLDS_FORMAT = "gamornet-thresholds"


# --------------------------------------------------------------------------- purity and completeness


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
        Bad probabilities or labels (see :func:`gamornet.science.calibration.reliability_curve`), or
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

    Thresholds above 0.5 never overlap (p_disk + p_bulge <= 1). At or below
    0.5 a galaxy may pass both rules, and classify gives it to the larger of
    p_disk and p_bulge. If the rule then falls short of a purity, each
    threshold is chosen again among the galaxies its class can win under the
    other's rule, until neither changes. The rule
    returned always reaches both purities as classify applies it; when no pair
    does, an error says so (a rule that classifies no galaxy as a disk is
    never returned).

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
        No threshold reaches a purity asked for (the message gives the
        highest purity reached), or no pair of overlapping thresholds reaches
        both (a ``ValueError``).
    ValueError
        Bad probabilities or labels (see :func:`gamornet.science.calibration.reliability_curve`), a
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
    targets = {"disk": disk_target, "bulge": bulge_target}
    disk, bulge = _joint_thresholds(values, truth, targets)
    predicted, counts = _rule_counts(values, truth, disk, bulge)
    _check_rule_reaches(counts, {"disk": disk_target, "bulge": bulge_target}, disk, bulge)
    return ThresholdChoice(
        disk=disk, bulge=bulge,
        disk_purity=counts["disk"][0], disk_completeness=counts["disk"][1],
        bulge_purity=counts["bulge"][0], bulge_completeness=counts["bulge"][1],
        indeterminate_fraction=float((predicted == "indeterminate").mean()),
        target_disk_purity=disk_target, target_bulge_purity=bulge_target, n=len(values),
    )


# Rounds of choosing each class's threshold given the other's, where the two rules overlap (thresholds <= 0.5).
_JOINT_ROUNDS = 20


def _rule_counts(values, truth, disk, bulge):
    """(classes, {'disk': (purity, completeness), 'bulge': ...}) of the rule as classify applies it."""
    predicted = classify(values, Thresholds(disk=disk, bulge=bulge))
    counts = {}
    for name, index in (("disk", 0), ("bulge", 2)):
        called, true = predicted == name, truth == index
        counts[name] = (
            float((called & true).sum() / called.sum()) if called.any() else float("nan"),
            float((called & true).sum() / true.sum()),
        )
    return predicted, counts


def _joint_thresholds(values, truth, targets):
    """(disk, bulge) thresholds whose combined rule reaches both purities.

    Each class's lowest threshold alone is kept when the rule they make reaches both purities (always, when no
    galaxy passes both rules). Else, as a galaxy passing both goes to the larger of p_disk and p_bulge, each
    threshold is chosen again among the galaxies its class can win under the other's rule, until neither changes.
    """
    p_disk, p_bulge = values[:, 0], values[:, 2]
    disk = _lowest_threshold(p_disk, truth == 0, targets["disk"], "disk")
    bulge = _lowest_threshold(p_bulge, truth == 2, targets["bulge"], "bulge")
    for _ in range(_JOINT_ROUNDS):
        _, counts = _rule_counts(values, truth, disk, bulge)
        if all(counts[kind][0] >= targets[kind] for kind in targets):
            break
        previous = (disk, bulge)
        winnable = ~((p_bulge >= bulge) & (p_bulge >= p_disk))
        disk = _lowest_among(p_disk, truth == 0, winnable, targets["disk"], "disk", previous)
        winnable = ~((p_disk >= disk) & (p_disk >= p_bulge))
        bulge = _lowest_among(p_bulge, truth == 2, winnable, targets["bulge"], "bulge", previous)
        if (disk, bulge) == previous:
            break
    return disk, bulge


def _lowest_among(probability, is_class, winnable, target, kind, previous):
    """The lowest threshold reaching ``target`` among the galaxies the class can win; a clear error if none."""
    if winnable.any():
        try:
            return _lowest_threshold(probability[winnable], is_class[winnable], target, kind)
        except UnreachablePurityError:
            pass
    other = "bulge" if kind == "disk" else "disk"
    raise UnreachablePurityError(
        f"no pair of thresholds gives both purities asked for: with p_disk >= {previous[0]:.4f} and p_bulge >= "
        f"{previous[1]:.4f} (each class alone reaches its purity there) most galaxies pass both rules, and the "
        f"{other} rule takes those where p_{other} is larger, so no {kind} threshold keeps a {kind} purity of "
        f"{target:g}. Ask for higher purities (thresholds above 0.5 never overlap)",
        kind, target, float("nan"), float("nan"),
    )


def _check_rule_reaches(counts, targets, disk, bulge):
    """Refuse a rule that, applied as classify applies it, falls short of a purity asked for (never written)."""
    for kind in ("disk", "bulge"):
        purity = counts[kind][0]
        if not purity >= targets[kind]:
            reached = (f"classifies no galaxy as {kind}" if np.isnan(purity)
                       else f"gives a {kind} purity of {purity:.3f}")
            raise UnreachablePurityError(
                f"the rule p_disk >= {disk:.4f}, p_bulge >= {bulge:.4f} {reached} on the labelled galaxies, short of "
                f"the {targets[kind]:g} asked for. Ask for higher purities (thresholds above 0.5 never overlap), or "
                "label more galaxies",
                kind, targets[kind], float(purity), float(disk if kind == "disk" else bulge),
            )


# --------------------------------------------------------------------------- the thresholds file


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
        "chosen": json_safe(summary),
        "chosen_from": json_safe(chosen_from or {}),
        "created": utc_now(),
        "gamornet_version": __version__,
    }
    return write_json(path, document)


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
    document = read_json(path, THRESHOLDS_FORMAT, "thresholds", "gamornet thresholds")
    missing = [key for key in ("disk", "bulge") if key not in document]
    if missing:
        raise ValueError(f"the thresholds file {os.fspath(path)!r} lacks {' and '.join(missing)}")
    try:
        return Thresholds(document["disk"], document["bulge"], document.get("disk_must_lead", False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"the thresholds file {os.fspath(path)!r} holds a bad rule: {error}") from None
