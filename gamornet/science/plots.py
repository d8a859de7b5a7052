"""The figures of calibration and thresholds: reliability diagrams, purity and completeness curves.

:func:`plot_reliability` and :func:`plot_purity_completeness` draw into
matplotlib axes the user gives; :func:`reliability_diagram` and
:func:`purity_completeness_diagram` write a whole figure as a PNG. The numbers
drawn come from :func:`gamornet.science.calibration.reliability_curve` and
:func:`gamornet.science.thresholds.purity_completeness`.

Backend-neutral: imports neither TensorFlow nor tflearn. Needs matplotlib,
imported only when a figure is made.
"""

import numpy as np

from gamornet._utils.atomic import atomic_path
from gamornet.science._checks import check_png_path
from gamornet.science.calibration import reliability_curve
from gamornet.science.thresholds import purity_completeness

__all__ = [
    "plot_purity_completeness",
    "plot_reliability",
    "purity_completeness_diagram",
    "reliability_diagram",
]


def _figure(**kwargs):
    """A matplotlib Figure not registered with pyplot (so notebooks' backends are left alone)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - matplotlib is in the test, sim and docs extras
        raise ImportError(
            "the figures of gamornet.science.plots need matplotlib: pip install matplotlib"
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
        As :func:`gamornet.science.calibration.reliability_curve`.
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
        As :func:`gamornet.science.calibration.reliability_curve`.
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
        From :func:`gamornet.science.thresholds.purity_completeness`.
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
        As :func:`gamornet.science.thresholds.purity_completeness`.
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

