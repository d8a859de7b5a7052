"""How well classes were predicted: counts, recall and the handbook's table.

:func:`gamornet.science.classify.classify` turns probabilities into classes; this
module scores those classes against the true ones, the way the 0.4.x handbook
and Tables 5 and 7 of Ghosh et al. (2020) do: each column of the table is a
predicted class, and each entry the percentage of that column's galaxies that
are actually disks or bulges (the *purity* of the prediction); below it the
*completeness* (recall) of each actual class and the fraction of galaxies
predicted indeterminate.

Classes are integers: 0 disk-dominated, 1 indeterminate, 2 bulge-dominated
(the order of the network's outputs, :data:`gamornet.presets.CLASS_NAMES`).

Backend-neutral: imports neither TensorFlow nor tflearn.

Examples
--------
>>> from gamornet.science.metrics import confusion_counts, summary_metrics
>>> counts = confusion_counts([0, 0, 2, 2, 1], [0, 2, 2, 2, 0])
>>> counts.tolist()
[[1, 0, 1], [1, 0, 0], [0, 0, 2]]
>>> float(summary_metrics(counts)["disk_recall"])
0.5
"""

import numpy as np

from gamornet.presets import CLASS_NAMES

__all__ = ["confusion_counts", "summary_metrics", "format_handbook_table", "format_purity_table", "classes_from_names"]


def classes_from_names(names):
    """Class indices (0 disk, 1 indeterminate, 2 bulge) from class names.

    Parameters
    ----------
    names : array_like of str
        ``'disk'``, ``'indeterminate'`` or ``'bulge'`` per galaxy, as
        :func:`gamornet.science.classify.classify` returns them.

    Returns
    -------
    numpy.ndarray of int64

    Raises
    ------
    ValueError
        A name that is none of the three.
    """
    names = np.asarray(names)
    known = np.isin(names, CLASS_NAMES)
    if not known.all():
        raise ValueError(
            f"class names must be 'disk', 'indeterminate' or 'bulge'. Received {names[~known][0]!r}"
        )
    return np.select([names == "disk", names == "bulge"], [0, 2], 1).astype(np.int64)


def confusion_counts(true_classes, predicted_classes):
    """Counts of galaxies per (actual class, predicted class).

    Parameters
    ----------
    true_classes, predicted_classes : array_like of int
        Classes 0 (disk), 1 (indeterminate), 2 (bulge).

    Returns
    -------
    numpy.ndarray of shape (3, 3), int
        ``counts[actual, predicted]``.

    Raises
    ------
    ValueError
        Arrays that are not 1-D of one length, or classes other than 0, 1, 2.
    """
    true_classes = np.asarray(true_classes, dtype=np.int64)
    predicted_classes = np.asarray(predicted_classes, dtype=np.int64)
    if true_classes.shape != predicted_classes.shape or true_classes.ndim != 1:
        raise ValueError(
            "true_classes and predicted_classes must be 1-D and of the same length. "
            f"Received shapes {true_classes.shape} and {predicted_classes.shape}"
        )
    if true_classes.size and (min(true_classes.min(), predicted_classes.min()) < 0
                              or max(true_classes.max(), predicted_classes.max()) > 2):  # fmt: skip
        raise ValueError("classes must be 0 (disk), 1 (indeterminate) or 2 (bulge)")
    counts = np.zeros((3, 3), dtype=np.int64)
    np.add.at(counts, (true_classes, predicted_classes), 1)
    return counts


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else float("nan")


def _check_counts(counts):
    counts = np.asarray(counts)
    if counts.shape != (3, 3) or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError(
            "counts must be a 3 x 3 array of non-negative integers, counts[actual, predicted], as "
            f"confusion_counts returns. Received an array of shape {counts.shape} and dtype {counts.dtype}"
        )
    return counts


def summary_metrics(counts):
    """Recall, handbook percentages, indeterminate fraction and accuracy from :func:`confusion_counts`.

    Parameters
    ----------
    counts : numpy.ndarray of shape (3, 3), int
        ``counts[actual, predicted]``.

    Returns
    -------
    dict
        ``n_test`` (galaxies counted); ``disk_recall`` and ``bulge_recall``
        (the completeness: fraction of the actual disks / bulges predicted as
        such, an indeterminate prediction counting as a miss);
        ``indeterminate_recall``; ``accuracy`` (all three classes);
        ``indeterminate_fraction`` (fraction of all galaxies predicted
        indeterminate); ``disk_purity`` and ``bulge_purity`` (fraction of the
        galaxies predicted disk / bulge that actually are); and ``handbook``,
        the handbook's percentages keyed ``(actual, predicted)`` for actual and
        predicted in (0, 2): of the galaxies predicted disk, or bulge, the
        percentage that are actually disks, or bulges. A ratio with nothing to
        count is NaN.

    Raises
    ------
    ValueError
        ``counts`` is not a 3 x 3 array of non-negative integers.
    """
    counts = _check_counts(counts)
    total = counts.sum()
    handbook = {
        (actual, predicted): 100.0 * _ratio(counts[actual, predicted], counts[:, predicted].sum())
        for actual in (0, 2)
        for predicted in (0, 2)
    }
    return {
        "n_test": int(total),
        "disk_recall": _ratio(counts[0, 0], counts[0].sum()),
        "bulge_recall": _ratio(counts[2, 2], counts[2].sum()),
        "indeterminate_recall": _ratio(counts[1, 1], counts[1].sum()),
        "accuracy": _ratio(np.trace(counts), total),
        "indeterminate_fraction": _ratio(counts[:, 1].sum(), total),
        "disk_purity": _ratio(counts[0, 0], counts[:, 0].sum()),
        "bulge_purity": _ratio(counts[2, 2], counts[:, 2].sum()),
        "handbook": handbook,
    }


def _purity_rows(metrics, title):
    handbook = metrics["handbook"]
    return [
        f"| {title:26} | Predicted Disks | Predicted Bulges |",
        "|----------------------------|-----------------|------------------|",
        f"| Actual Disks               | {handbook[0, 0]:14.2f}% | {handbook[0, 2]:15.2f}% |",
        f"| Actual Bulges              | {handbook[2, 0]:14.2f}% | {handbook[2, 2]:15.2f}% |",
    ]


def format_handbook_table(counts, title="Demo on simulated galaxies"):
    """The handbook's table of actual against predicted disks and bulges, and the recall lines.

    As the accuracy tables of the GaMorNet 0.4.x handbook (and Tables 5 and 7
    of Ghosh et al. 2020), each column is a predicted class and each entry the
    percentage of that column's galaxies that are actually disks or bulges
    (the rest of a column are actually indeterminate). Below it, the recall:
    the share of each actual class predicted as disk, indeterminate or bulge.

    Parameters
    ----------
    counts : numpy.ndarray of shape (3, 3)
        From :func:`confusion_counts`.
    title : str
        The table's corner cell (at most 26 characters show aligned).

    Returns
    -------
    str

    Raises
    ------
    ValueError
        ``counts`` is not a 3 x 3 array of non-negative integers.
    """
    counts = _check_counts(counts)
    metrics = summary_metrics(counts)
    lines = _purity_rows(metrics, title) + [
        "",
        f"Counts (actual x predicted; {metrics['n_test']} test galaxies):",
        f"{'':16}{'disk':>8}{'indet.':>8}{'bulge':>8}{'recall':>9}",
    ]
    for actual, name in enumerate(("actual disk", "actual indet.", "actual bulge")):
        row = counts[actual]
        lines.append(f"{name:16}{row[0]:8d}{row[1]:8d}{row[2]:8d}{100.0 * _ratio(row[actual], row.sum()):8.1f}%")
    lines += [
        "",
        f"Disk recall:  {metrics['disk_recall']:.3f}   Bulge recall: {metrics['bulge_recall']:.3f}",
        f"Indeterminate fraction (predicted): {metrics['indeterminate_fraction']:.1%}",
        f"Accuracy (three classes): {metrics['accuracy']:.1%}",
    ]
    return "\n".join(lines)


def format_purity_table(counts, title="With thresholds"):
    """The handbook's table with the completeness and the indeterminate fraction, for thresholded classes.

    The table's entries are the purities of the predicted disks and bulges
    (as in :func:`format_handbook_table`); below it the completeness of each
    class (the fraction of the actual disks, or bulges, so classified) and the
    fraction of all galaxies classified indeterminate, the three numbers by
    which the handbook and Ghosh et al. (2020, Sec. 4.1) judge a threshold.

    Parameters
    ----------
    counts : numpy.ndarray of shape (3, 3)
        From :func:`confusion_counts`.
    title : str
        The table's corner cell.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        ``counts`` is not a 3 x 3 array of non-negative integers.
    """
    metrics = summary_metrics(_check_counts(counts))
    return "\n".join(_purity_rows(metrics, title) + [
        f"Purity:       disk {metrics['disk_purity']:.3f}   bulge {metrics['bulge_purity']:.3f}",
        f"Completeness: disk {metrics['disk_recall']:.3f}   bulge {metrics['bulge_recall']:.3f}   "
        f"({metrics['n_test']} galaxies)",
        f"Indeterminate fraction (predicted): {metrics['indeterminate_fraction']:.1%}",
    ])  # fmt: skip
