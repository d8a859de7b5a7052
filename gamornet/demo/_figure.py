"""The demo's figure, ``demo.png``: training, results, calibration, uncertainty, shift and a gallery (matplotlib).

Backend-neutral: imports neither TensorFlow nor tflearn; matplotlib is
imported only when a figure is drawn.
"""

import csv

import numpy as np

from gamornet._utils.atomic import atomic_path
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


def _reliability_panel(axis, evaluation, true_classes):
    from gamornet.science.plots import plot_reliability

    plot_reliability(axis, evaluation["probabilities"]["test"], true_classes, label="network")
    plot_reliability(axis, evaluation["calibrated"]["test"], true_classes,
                     label=f"T = {evaluation['temperature']:.2f}", colour="C1")  # fmt: skip
    axis.set_title("Test set: reliability, before and after calibration", fontsize=11)


def _uncertainty_panel(axis, evaluation, true_classes):
    uncertainty = evaluation["uncertainty"]
    wrong = evaluation["test"]["predicted"] != true_classes
    bins = np.linspace(0.0, max(float(uncertainty["top_std"].max()), 1e-6), 25)
    for mask, colour, name in ((~wrong, "C2", "right"), (wrong, "C3", "wrong")):
        axis.hist(uncertainty["top_std"][mask], bins=bins, color=colour, alpha=0.55, density=True,
                  label=f"{name} ({mask.sum()})")  # fmt: skip
    axis.set_xlabel("MC-dropout std of the predicted class's probability")
    axis.set_ylabel("density")
    axis.legend(fontsize=8, title=f"AUROC {uncertainty['auroc_std']:.2f}", title_fontsize=8)
    axis.set_title("Test set: uncertainty of right and wrong classes", fontsize=11)


def _shift_panel(axis, evaluation, comparison, labels):
    networks = [(labels[0], evaluation)] + ([] if comparison is None else [(labels[1], comparison)])
    groups = ("disk recall", "bulge recall", "out of domain")
    width = 0.8 / (2 * len(networks))
    for number, (label, scores) in enumerate(networks):
        for offset, name in enumerate(("test", "shifted")):
            values = [scores[name]["metrics"]["disk_recall"], scores[name]["metrics"]["bulge_recall"],
                      scores["domain"][name].share]  # fmt: skip
            position = np.arange(3) + (2 * number + offset - len(networks) + 0.5) * width
            axis.bar(position, values, width, color=f"C{2 * number + offset}", label=f"{label}: {name}")
    axis.set_xticks(range(3), groups)
    axis.set_ylim(0, 1.4)
    axis.set_yticks(np.linspace(0, 1, 6))
    axis.legend(fontsize=7, ncols=2, loc="upper center")
    axis.set_title("In-domain and shifted test sets", fontsize=11)


def plot_demo(path, history, sets, evaluation, comparison, title):
    """Write ``demo.png``: training, results, calibration, uncertainty, the shifted set and a gallery.

    Parameters
    ----------
    path : str
        The PNG to write (atomically).
    history : dict
        Columns of ``metrics.csv`` (:func:`read_history`); {} draws no curves.
    sets : dict
        ``(images, parameters)`` per set; the test set's are drawn.
    evaluation : dict
        The main network's scores (``gamornet.demo._evaluate.evaluate_network``).
    comparison : dict or None
        The comparison network's scores, with its ``settings``.
    title : str
        The figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, parameters = sets["test"]
    truth = parameters["label"]
    test = evaluation["test"]
    labels = [evaluation.get("label", "network"), None if comparison is None else comparison.get("label")]
    figure = plt.figure(figsize=(16, 14), layout="constrained")
    figure.suptitle(title, fontsize=13)
    top, bottom = figure.subfigures(2, 1, height_ratios=[2.3, 1.4])
    axes = top.subplots(2, 3, gridspec_kw={"wspace": 0.12, "hspace": 0.08})
    _training_curves(axes[0, 0], history)
    _confusion_panel(axes[0, 1], test["counts"])
    _scatter_panel(axes[0, 2], parameters, test["predicted"], evaluation["probabilities"]["test"])
    _reliability_panel(axes[1, 0], evaluation, truth)
    _uncertainty_panel(axes[1, 1], evaluation, truth)
    _shift_panel(axes[1, 2], evaluation, comparison, labels)
    _gallery(bottom.subplots(2, 6), images, parameters, test["predicted"], evaluation["probabilities"]["test"])
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=80)
    plt.close(figure)
