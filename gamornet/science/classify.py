"""Turn GaMorNet's probabilities into classes with the handbook's thresholds.

GaMorNet returns, for each galaxy, the probabilities [p_disk, p_indet, p_bulge]
of being disk-dominated, indeterminate or bulge-dominated. The Public Data
Release Handbook of GaMorNet 0.4.x (section "Thresholds Used"; see
:ref:`thresholds` on our handbook page) turns them into classes with one
threshold set per flavour and data set:

================  ==================================================  =================
set               disk-dominated if                                   bulge-dominated if
================  ==================================================  =================
keras_SDSS        p_disk >= 0.70                                      p_bulge >= 0.70
keras_CANDELS     p_disk > p_bulge and p_disk > p_indet               p_bulge >= 0.60
tflearn_SDSS      p_disk >= 0.80                                      p_bulge >= 0.80
tflearn_CANDELS   p_disk > p_bulge, p_disk > p_indet, p_disk >= 0.36  p_bulge >= 0.55
================  ==================================================  =================

and indeterminate otherwise. The choice of threshold is a trade-off between
accuracy and completeness (Ghosh et al. 2020, Section 4.1, Figures 8 and 9), so
users may give their own.

Backend-neutral: imports neither TensorFlow nor tflearn.
"""

import numbers
from dataclasses import dataclass

import numpy as np

from gamornet.presets import CLASS_NAMES
from gamornet.science._checks import check_probabilities

__all__ = ["Thresholds", "HANDBOOK_THRESHOLDS", "MOST_PROBABLE", "check_margin", "classify", "default_threshold_set", "default_thresholds",
           "near_boundaries", "resolve_rules", "resolve_thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """A rule that turns [p_disk, p_indet, p_bulge] into a class.

    A galaxy is disk-dominated if ``p_disk >= disk`` (and, when
    ``disk_must_lead``, also ``p_disk > p_bulge`` and ``p_disk > p_indet``,
    strictly); bulge-dominated if ``p_bulge >= bulge``; indeterminate
    otherwise. If both rules hold (possible only for thresholds of 0.5 or
    less), the larger of p_disk and p_bulge wins, and a tie is indeterminate.

    Comparisons are made at the precision of the probabilities: a float32
    probability printed as 0.7 meets a threshold of 0.70.

    Attributes
    ----------
    disk : float
        Minimum p_disk of a disk-dominated galaxy, in [0, 1] (inclusive).
    bulge : float
        Minimum p_bulge of a bulge-dominated galaxy, in [0, 1] (inclusive).
    disk_must_lead : bool
        Whether a disk-dominated galaxy's p_disk must also exceed both other
        probabilities.
    """

    disk: float
    bulge: float
    disk_must_lead: bool = False

    def __post_init__(self):
        for name in ("disk", "bulge"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
                raise ValueError(f"the {name} threshold must be a probability between 0 and 1. Received: {value!r}")
        if not isinstance(self.disk_must_lead, (bool, np.bool_)):
            raise TypeError(f"disk_must_lead must be True or False. Received: {self.disk_must_lead!r}")


#: The threshold sets of the Public Data Release Handbook ("Thresholds Used"), by name.
HANDBOOK_THRESHOLDS = {
    "keras_SDSS": Thresholds(disk=0.70, bulge=0.70),
    "keras_CANDELS": Thresholds(disk=0.0, bulge=0.60, disk_must_lead=True),
    "tflearn_SDSS": Thresholds(disk=0.80, bulge=0.80),
    "tflearn_CANDELS": Thresholds(disk=0.36, bulge=0.55, disk_must_lead=True),
}

_ALLOWED = (
    ", ".join(repr(name) for name in HANDBOOK_THRESHOLDS)
    + ", a pair (p_disk, p_bulge), a triple (p_disk, p_bulge, disk_must_lead) or a Thresholds"
)


def resolve_thresholds(thresholds):
    """Resolve a threshold set name, tuple or :class:`Thresholds` to a :class:`Thresholds`.

    Parameters
    ----------
    thresholds : str, tuple or Thresholds
        One of ``'keras_SDSS'``, ``'keras_CANDELS'``, ``'tflearn_SDSS'``,
        ``'tflearn_CANDELS'``; a pair (p_disk, p_bulge) of minimum
        probabilities; a triple (p_disk, p_bulge, disk_must_lead); or a
        :class:`Thresholds`.

    Returns
    -------
    Thresholds

    Raises
    ------
    ValueError
        An unknown set name, or probabilities outside [0, 1].
    TypeError
        Anything else.
    """
    if isinstance(thresholds, Thresholds):
        return thresholds
    if isinstance(thresholds, str):
        if thresholds in HANDBOOK_THRESHOLDS:
            return HANDBOOK_THRESHOLDS[thresholds]
        raise ValueError(f"thresholds must be {_ALLOWED}. Received: thresholds={thresholds!r}")
    if isinstance(thresholds, (tuple, list)) and len(thresholds) in (2, 3):
        return Thresholds(*thresholds)
    raise TypeError(f"thresholds must be {_ALLOWED}. Received: {thresholds!r}")


def default_threshold_set(backend, data):
    """The name of the handbook threshold set of a backend and data set.

    Parameters
    ----------
    backend : {'keras', 'tflearn'}
    data : {'SDSS', 'CANDELS'}
        The data set (input shape preset, or the prefix of a published model
        name such as ``'SDSS_tl'``).

    Returns
    -------
    str
        For example ``'keras_SDSS'``.

    Raises
    ------
    ValueError
        An unknown backend or data set.
    """
    if backend not in ("keras", "tflearn"):
        raise ValueError(f"backend must be 'keras' or 'tflearn'. Received: backend={backend!r}")
    if data not in ("SDSS", "CANDELS"):
        raise ValueError(
            "the handbook's thresholds exist for the 'SDSS' and 'CANDELS' data sets only. "
            f"Received: {data!r}; give your own thresholds"
        )
    return f"{backend}_{data}"


def default_thresholds(backend, data_set, input_shape, how_to_give="thresholds=(p_disk, p_bulge), such as (0.7, 0.7),"):
    """The rule a prediction classifies with when none is given: the handbook set of the backend and data set.

    Parameters
    ----------
    backend : {'keras', 'tflearn'}
    data_set : {'SDSS', 'CANDELS'} or None
        The model's data set (:attr:`gamornet.models.ResolvedModel.data_set`):
        None where no handbook set fits the input shape.
    input_shape : tuple of int
        Named in the error.
    how_to_give : str
        How the caller gives its own thresholds, for the error (the command
        line names its option).

    Returns
    -------
    str
        The name of the handbook set, for example ``'keras_SDSS'``.

    Raises
    ------
    ValueError
        No handbook set fits the input shape.
    """
    if data_set is None:
        raise ValueError(
            f"no handbook threshold set fits the input shape {tuple(input_shape)}: they exist for SDSS (167, 167, 1) "
            f"and CANDELS (83, 83, 1). Give {how_to_give} or a set name ({', '.join(HANDBOOK_THRESHOLDS)})"
        )
    return default_threshold_set(backend, data_set)


def classify(probabilities, thresholds="keras_SDSS"):
    """Classify galaxies as 'disk', 'indeterminate' or 'bulge' from GaMorNet's probabilities.

    Parameters
    ----------
    probabilities : array_like of shape (n, 3) or (3,)
        [p_disk, p_indet, p_bulge] per galaxy, as returned by
        ``gamornet_predict_keras`` or ``gamornet_predict_tflearn``. Each row
        must sum to 1.
    thresholds : str, tuple or Thresholds
        A handbook set (``'keras_SDSS'``, ``'keras_CANDELS'``,
        ``'tflearn_SDSS'``, ``'tflearn_CANDELS'``; see the module
        documentation), or the user's own (see :func:`resolve_thresholds`).
        Use the set of the flavour and data set the model was trained on.

    Returns
    -------
    numpy.ndarray of str of shape (n,), or str
        ``'disk'``, ``'indeterminate'`` or ``'bulge'`` per galaxy; a single
        string for a single row of shape (3,).

    Raises
    ------
    ValueError
        Probabilities of the wrong shape, outside [0, 1] or with rows that do
        not sum to 1; an unknown threshold set.
    TypeError
        Non-numeric probabilities or thresholds.
    """
    rule = resolve_thresholds(thresholds)
    values = check_probabilities(probabilities)
    p_disk, p_indet, p_bulge = values[:, 0], values[:, 1], values[:, 2]
    # Thresholds are compared at the probabilities' precision.
    disk = p_disk >= values.dtype.type(rule.disk)
    if rule.disk_must_lead:
        disk &= (p_disk > p_bulge) & (p_disk > p_indet)
    bulge = p_bulge >= values.dtype.type(rule.bulge)
    both = disk & bulge
    disk &= ~both | (p_disk > p_bulge)
    bulge &= ~both | (p_bulge > p_disk)
    index = np.where(disk, 0, np.where(bulge, 2, 1))
    classes = np.asarray(CLASS_NAMES)[index]
    if np.ndim(probabilities) == 1:
        return str(classes[0])
    return classes


#: The rule "the most probable class" (argmax), as a name :func:`near_boundaries` accepts beside threshold sets.
MOST_PROBABLE = "most_probable"


def check_margin(margin):
    """Check a margin of :func:`near_boundaries`.

    Parameters
    ----------
    margin : float
        How far each probability may move, in (0, 0.5).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Not a real number in (0, 0.5).
    """
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0.0 < margin < 0.5:
        raise ValueError(f"margin must be a probability in (0, 0.5). Received: margin={margin!r}")
    return float(margin)


def resolve_rules(rules):
    """A tuple of :class:`Thresholds` and :data:`MOST_PROBABLE` from one rule or a list of them.

    Parameters
    ----------
    rules : str, tuple, Thresholds, or a list of them
        Class rules as :func:`near_boundaries` takes them.

    Returns
    -------
    tuple
        Each rule as :data:`MOST_PROBABLE` or a :class:`Thresholds`.

    Raises
    ------
    TypeError, ValueError
        Not a rule or a non-empty list of them, or an unknown rule.
    """
    if isinstance(rules, (str, Thresholds)) or (
        isinstance(rules, tuple) and len(rules) in (2, 3) and all(isinstance(value, numbers.Real) for value in rules)
    ):
        rules = [rules]
    if not isinstance(rules, (list, tuple)) or not rules:
        raise TypeError(f"rules must be a class rule ({MOST_PROBABLE!r}, {_ALLOWED}) or a non-empty list of them. "
                        f"Received: {rules!r}")  # fmt: skip
    return tuple(rule if rule == MOST_PROBABLE else resolve_thresholds(rule) for rule in rules)


def near_boundaries(probabilities, rules, margin):
    """Which galaxies could change class if their probabilities moved a little.

    A galaxy is flagged when some comparison its class depends on, under any
    of ``rules``, is decided by less than ``margin``: a probability within
    ``margin`` of a threshold, or two probabilities within ``2 * margin`` of
    each other (each may move by ``margin``). A galaxy that is not flagged
    keeps its class under every rule when each of its three probabilities
    moves by less than ``margin``. Reduced-precision prediction
    (:mod:`gamornet.inference.bf16`) uses it to predict the flagged galaxies again
    in fp32.

    Parameters
    ----------
    probabilities : array_like of shape (n, 3)
        [p_disk, p_indet, p_bulge] per galaxy; rows must sum to 1.
    rules : str, tuple, Thresholds, or a list of them
        The class rules: :data:`MOST_PROBABLE` (``'most_probable'``, the
        largest probability), a handbook set name, a pair or triple of
        thresholds, or a :class:`Thresholds` (see :func:`resolve_thresholds`).
    margin : float
        How far each probability may move, in (0, 0.5).

    Returns
    -------
    numpy.ndarray of bool, shape (n,)

    Raises
    ------
    ValueError, TypeError
        Invalid probabilities, an unknown rule, or a margin outside (0, 0.5).
    """
    margin = check_margin(margin)
    rules = resolve_rules(rules)
    values = check_probabilities(probabilities).astype(np.float64)
    p_disk, p_indet, p_bulge = values[:, 0], values[:, 1], values[:, 2]
    near = np.zeros(len(values), dtype=bool)

    def close(a, b, slack):  # a comparison of a and b decided by less than slack
        return np.abs(a - b) < slack

    for rule in rules:
        if rule == MOST_PROBABLE:
            ordered = np.sort(values, axis=1)
            near |= close(ordered[:, 2], ordered[:, 1], 2 * margin)
            continue
        disk_possible = p_disk > rule.disk - margin
        bulge_possible = p_bulge > rule.bulge - margin
        for probability, threshold in ((p_disk, rule.disk), (p_bulge, rule.bulge)):
            if threshold > 0:  # a threshold of 0 is met by every probability
                near |= close(probability, threshold, margin)
        if rule.disk_must_lead:
            near |= disk_possible & close(p_disk, np.maximum(p_bulge, p_indet), 2 * margin)
        # Both rules may hold: the larger of p_disk and p_bulge then decides.
        near |= disk_possible & bulge_possible & close(p_disk, p_bulge, 2 * margin)
    return near
