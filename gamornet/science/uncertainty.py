"""Per-galaxy uncertainty from Monte-Carlo dropout.

GaMorNet has two dropout layers (rate 0.5), after its first two fully
connected layers (Ghosh et al. 2020, Table 2). Switched off for ordinary
predictions, they can be kept on to draw many predictions of the same galaxy,
each from a network with a random half of those units removed: Monte-Carlo
(MC) dropout (Gal & Ghahramani 2016), as GaMPEN and Zoobot do. The spread of
these draws measures how sure the network is of each galaxy:

- ``mean`` (n, 3): the average of the draws, the MC estimate of
  [p_disk, p_indet, p_bulge];
- ``std`` (n, 3): their standard deviation, per class;
- ``entropy`` (n,): the predictive entropy of ``mean``, in nats (0 for a
  certain prediction, ln 3 = 1.099 for [1/3, 1/3, 1/3]): all the uncertainty;
- ``mutual_information`` (n,): the predictive entropy minus the average
  entropy of the draws, the part of the uncertainty that comes from the
  network's weights (epistemic), not from the galaxy being ambiguous.

Dropout is on only inside :func:`gamornet.inference.predictor.predict_mc`
(and the predictor's ``mc_samples``); ordinary predictions stay deterministic.
This module holds the statistics of the draws (:func:`predictive_entropy`,
:func:`mutual_information`, :func:`summarize_samples`, :func:`error_detection_auroc`),
in numpy only; :mod:`gamornet.inference.mc_dropout` makes the draws.
"""

from dataclasses import dataclass

import numpy as np

from gamornet.science._checks import check_probability_set

__all__ = [
    "MC_COLUMNS",
    "MCResult",
    "error_detection_auroc",
    "mutual_information",
    "predictive_entropy",
    "summarize_samples",
]

#: The per-galaxy columns that MC dropout adds to a predictions table, in order.
MC_COLUMNS = ("p_disk_std", "p_indet_std", "p_bulge_std", "entropy", "mutual_information")


def _check_samples(samples):
    samples = np.asarray(samples)
    if samples.dtype.kind not in "iuf":
        raise TypeError(f"samples must be real numbers. Received dtype {samples.dtype}")
    if samples.ndim != 3 or samples.shape[2] != 3:
        raise ValueError(
            "samples must have shape (n_samples, n, 3): [p_disk, p_indet, p_bulge] per draw and galaxy. "
            f"Received an array of shape {samples.shape}"
        )
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise ValueError(f"samples must hold at least one draw of one galaxy. Received shape {samples.shape}")
    return samples.astype(np.float64)


def _entropy(probabilities):
    """-sum p ln p over the last axis, with 0 ln 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * np.log(probabilities), 0.0)
    return 0.0 - terms.sum(axis=-1)  # not -sum: -0.0 for a certain prediction


def predictive_entropy(probabilities):
    """The entropy of each galaxy's class probabilities, in nats.

    Parameters
    ----------
    probabilities : array_like of shape (n, 3)
        [p_disk, p_indet, p_bulge] per galaxy (for MC dropout, the mean of the draws).

    Returns
    -------
    numpy.ndarray of shape (n,)
        ``-sum_k p_k ln p_k``: 0 when one class has probability 1, ln 3 when
        all three have 1/3.

    Raises
    ------
    ValueError
        Probabilities not of shape (n, 3), not in [0, 1] or not summing to 1,
        or an empty set.

    Examples
    --------
    >>> from gamornet.science.uncertainty import predictive_entropy
    >>> predictive_entropy([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]).round(4).tolist()
    [0.0, 0.6931]
    """
    values, _ = check_probability_set(probabilities)
    return _entropy(values.astype(np.float64))


def mutual_information(samples):
    """The epistemic part of the uncertainty: the mutual information between the class and the weights.

    ``H[mean over draws of p] - mean over draws of H[p]`` (Gal 2016, Eq.
    3.20; the "BALD" score): large when the draws disagree with each other,
    0 when they all agree, however uncertain each is.

    Parameters
    ----------
    samples : array_like of shape (n_samples, n, 3)
        The draws: [p_disk, p_indet, p_bulge] per draw and galaxy.

    Returns
    -------
    numpy.ndarray of shape (n,)
        In nats, >= 0.

    Raises
    ------
    ValueError
        Samples not of shape (n_samples, n, 3), or empty.

    Examples
    --------
    >>> import numpy as np
    >>> from gamornet.science.uncertainty import mutual_information
    >>> agree = [[[0.5, 0.0, 0.5]], [[0.5, 0.0, 0.5]]]      # two draws, one galaxy
    >>> disagree = [[[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]]
    >>> np.round([mutual_information(agree)[0], mutual_information(disagree)[0]], 4).tolist()
    [0.0, 0.6931]
    """
    samples = _check_samples(samples)
    return _mutual_information(samples, samples.mean(axis=0))


def _mutual_information(samples, mean):
    # Rounding can make the difference of two equal entropies slightly negative.
    return np.maximum(_entropy(mean) - _entropy(samples).mean(axis=0), 0.0)


@dataclass(frozen=True)
class MCResult:
    """MC-dropout predictions of n galaxies (see :func:`predict_mc` and :func:`summarize_samples`).

    Attributes
    ----------
    mean : numpy.ndarray of shape (n, 3)
        The mean of the draws: [p_disk, p_indet, p_bulge].
    std : numpy.ndarray of shape (n, 3)
        The standard deviation of the draws, per class (over the draws, ddof=0).
    entropy : numpy.ndarray of shape (n,)
        The predictive entropy of ``mean``, in nats.
    mutual_information : numpy.ndarray of shape (n,)
        Its epistemic part, in nats.
    samples : numpy.ndarray of shape (n_samples, n, 3) or None
        The draws themselves, only when asked for.
    n_samples : int
        The number of draws.
    """

    mean: np.ndarray
    std: np.ndarray
    entropy: np.ndarray
    mutual_information: np.ndarray
    samples: object
    n_samples: int

    def columns(self):
        """The per-galaxy columns of a predictions table, as a dict of (n,) arrays named as in ``MC_COLUMNS``."""
        values = (self.std[:, 0], self.std[:, 1], self.std[:, 2], self.entropy, self.mutual_information)
        return dict(zip(MC_COLUMNS, values))


def summarize_samples(samples, return_samples=False):
    """Summarise MC-dropout draws into a mean, a spread, and the two uncertainties.

    Parameters
    ----------
    samples : array_like of shape (n_samples, n, 3)
        [p_disk, p_indet, p_bulge] per draw and galaxy.
    return_samples : bool
        Keep the draws in the result's ``samples``.

    Returns
    -------
    MCResult
        ``mean`` and ``std`` in float32, the uncertainties in float32.

    Raises
    ------
    ValueError
        Samples not of shape (n_samples, n, 3), or empty.
    """
    samples64 = _check_samples(samples)
    mean = samples64.mean(axis=0)
    return MCResult(
        mean=mean.astype(np.float32),
        std=samples64.std(axis=0).astype(np.float32),
        entropy=_entropy(mean).astype(np.float32),
        mutual_information=_mutual_information(samples64, mean).astype(np.float32),
        samples=np.asarray(samples, dtype=np.float32) if return_samples else None,
        n_samples=samples64.shape[0],
    )


def error_detection_auroc(uncertainty, is_error):
    """How well an uncertainty picks out misclassified galaxies: the area under the ROC curve.

    The probability that a misclassified galaxy, drawn at random, has a
    larger uncertainty than a correctly classified one (ties count one half):
    1 when every error is more uncertain than every right answer, 0.5 for an
    uncertainty that knows nothing of the errors (Mann-Whitney U / (n_error *
    n_right)).

    Parameters
    ----------
    uncertainty : array_like of shape (n,)
        Per galaxy: ``std`` of the top class, ``entropy``, ``mutual_information``...
    is_error : array_like of bool, shape (n,)
        Whether each galaxy is misclassified.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Arrays of other shapes or lengths, non-finite uncertainties, or no
        misclassified or no correctly classified galaxy.

    Examples
    --------
    >>> from gamornet.science.uncertainty import error_detection_auroc
    >>> error_detection_auroc([0.1, 0.4, 0.35, 0.8], [False, True, False, True])
    1.0
    """
    scores = np.asarray(uncertainty, dtype=np.float64)
    errors = np.asarray(is_error)
    if scores.ndim != 1 or errors.shape != scores.shape:
        raise ValueError(f"uncertainty and is_error must be 1-d arrays of the same length. Received shapes "
                         f"{scores.shape} and {errors.shape}")
    if errors.dtype != bool:
        raise TypeError(f"is_error must be booleans (True for a misclassified galaxy). Received dtype {errors.dtype}")
    if not np.isfinite(scores).all():
        raise ValueError("uncertainty must be finite numbers")
    n_errors, n_right = int(errors.sum()), int((~errors).sum())
    if n_errors == 0 or n_right == 0:
        raise ValueError(f"the AUROC needs misclassified and correctly classified galaxies. Received {n_errors} "
                         f"misclassified and {n_right} correct")
    # Mid-ranks of the scores (ties share the mean of their ranks).
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    mid_ranks = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    ranks = np.empty_like(mid_ranks)
    ranks[order] = mid_ranks
    u_statistic = ranks[errors].sum() - n_errors * (n_errors + 1) / 2.0
    return float(u_statistic / (n_errors * n_right))
