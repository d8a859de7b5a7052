"""The demo's figure, ``demo.png``: training curves, test-set results and a gallery (matplotlib, Agg).

Backend-neutral: imports neither TensorFlow nor tflearn; matplotlib is
imported only when a figure is drawn.
"""

import csv

import numpy as np

from gamornet._atomic import atomic_path
from gamornet.presets import CLASS_NAMES

#: Colour of each predicted class (disk, indeterminate, bulge) in the scatter panel.
_CLASS_COLOURS = ("C0", "C7", "C3")


def read_history(path):
    """The columns of a ``metrics.csv`` written during training, as float arrays ({} if it has no rows)."""
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]} if rows else {}


def _training_curves(axis, history):
    import matplotlib.ticker

    axis.set_title("Training curves")
    if not history:
        return
    epochs = history["epoch"] + 1
    axis.plot(epochs, history["loss"], "o-", color="C0", label="training loss")
    axis.plot(epochs, history["val_loss"], "s--", color="C1", label="validation loss")
    axis.set_xlabel("epoch")
    axis.set_ylabel("cross-entropy loss")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    twin = axis.twinx()
    twin.plot(epochs, history["accuracy"], "o-", color="C2", label="training accuracy")
    twin.plot(epochs, history["val_accuracy"], "s--", color="C3", label="validation accuracy")
    twin.set_ylabel("accuracy")
    twin.set_ylim(0, 1)
    handles = axis.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    axis.legend(handles, [handle.get_label() for handle in handles], fontsize=8, loc="center right")


def _confusion_panel(axis, counts):
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for actual in range(3):
        for predicted in range(3):
            colour = "white" if fractions[actual, predicted] > 0.6 else "black"
            axis.text(predicted, actual, f"{counts[actual, predicted]}\n{fractions[actual, predicted]:.0%}",
                      ha="center", va="center", color=colour, fontsize=10)  # fmt: skip
    axis.set_xticks(range(3), CLASS_NAMES)
    axis.set_yticks(range(3), CLASS_NAMES)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("actual class")
    axis.set_title("Test set: counts and share of each actual class")


def _scatter_panel(axis, parameters, predicted, probabilities):
    import matplotlib.lines

    colours = np.array(_CLASS_COLOURS)[predicted]
    axis.scatter(parameters["bulge_to_total"], probabilities[:, 2] - probabilities[:, 0], c=colours, s=6)
    for limit in (0.45, 0.55):
        axis.axvline(limit, color="grey", lw=0.8, ls=":")
    axis.set_xlabel("true bulge-to-total light ratio L_B/L_T")
    axis.set_ylabel("p_bulge - p_disk")
    axis.set_title("Test set; colour = predicted class", fontsize=11)
    handles = [matplotlib.lines.Line2D([], [], ls="", marker="o", color=colour, label=name)
               for colour, name in zip(_CLASS_COLOURS, ("disk", "indet.", "bulge"))]  # fmt: skip
    axis.legend(handles=handles, fontsize=8, loc="upper left")


def _gallery(axes, images, parameters, predicted, probabilities):
    """Galaxies spread evenly in true L_B/L_T, titled green when classified right, red when wrong."""
    order = np.argsort(parameters["bulge_to_total"])
    picks = order[np.linspace(0, len(order) - 1, axes.size).round().astype(int)]
    for axis, index in zip(axes.flat, picks):
        image = images[index, ..., 0]
        low, high = np.percentile(image, [1, 99.8])
        axis.imshow(np.arcsinh((image - low) / max((high - low) / 50, 1e-12)), origin="lower", cmap="gray")
        true_label = int(parameters["label"][index])
        guess = int(predicted[index])
        axis.set_title(
            f"L_B/L_T={parameters['bulge_to_total'][index]:.2f} ({CLASS_NAMES[true_label][:5]})\n"
            f"predicted {CLASS_NAMES[guess]} ({probabilities[index, guess]:.0%})",
            fontsize=9, color="green" if guess == true_label else "red",
        )  # fmt: skip
        axis.set_xticks([])
        axis.set_yticks([])


def plot_demo(path, history, counts, images, parameters, predicted, probabilities, title):
    """Write ``demo.png``: training curves, the test set's counts and probabilities, and a gallery.

    Parameters
    ----------
    path : str
        The PNG to write (atomically).
    history : dict
        Columns of ``metrics.csv`` (:func:`read_history`); {} draws no curves.
    counts : numpy.ndarray of shape (3, 3)
        ``counts[actual, predicted]`` of the test set.
    images : numpy.ndarray of shape (n, y, x, 1)
        The test images as simulated (before preprocessing).
    parameters : numpy.ndarray
        Their parameter table (:data:`gamornet.simulate.PARAMETER_DTYPE`).
    predicted : numpy.ndarray of int, shape (n,)
        Predicted classes (0 disk, 1 indeterminate, 2 bulge).
    probabilities : numpy.ndarray of shape (n, 3)
        [p_disk, p_indet, p_bulge] per test galaxy.
    title : str
        The figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(15, 9.5), layout="constrained")
    figure.suptitle(title, fontsize=13)
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.2, 1.6])
    curves_axis, matrix_axis, scatter_axis = top.subplots(1, 3, gridspec_kw={"wspace": 0.15})
    _training_curves(curves_axis, history)
    _confusion_panel(matrix_axis, counts)
    _scatter_panel(scatter_axis, parameters, predicted, probabilities)
    _gallery(bottom.subplots(2, 6), images, parameters, predicted, probabilities)
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=90)
    plt.close(figure)
