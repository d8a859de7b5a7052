"""The demo: simulate galaxies, train GaMorNet from scratch, and evaluate it.

:func:`run_demo` is what ``gamornet demo`` and ``make demo`` run. Offline and
on a CPU it

1. simulates training, validation and test sets of bulge + disk galaxies
   (:mod:`gamornet.simulate`), labelled by the rule of Ghosh et al. (2020):
   disk-dominated if L_B/L_T < 0.45, bulge-dominated if L_B/L_T > 0.55,
   indeterminate in between;
2. preprocesses every image the same way (:mod:`gamornet.preprocess`);
3. trains GaMorNet from scratch with the Keras backend
   (:func:`gamornet.keras_module.gamornet_train_keras`);
4. predicts the test set with the saved model
   (:func:`gamornet.keras_module.gamornet_predict_keras`);
5. prints the handbook-style table of actual against predicted classes, the
   indeterminate fraction and the accuracy, and writes its files.

By default the predicted class is the most probable of the three (argmax of
[p_disk, p_indeterminate, p_bulge]). The handbook's probability thresholds
(:mod:`gamornet.classify`) were tuned for the published models on real SDSS
and CANDELS galaxies, not for a model trained for minutes on simulations, so
the demo uses them only when asked (``thresholds='keras_CANDELS'``, ...).

The defaults were chosen for the 15 minutes of ``make demo`` on a 2-core CPU
(see :data:`DEMO_DEFAULTS`): CANDELS-like galaxies (0.06 arcsec pixels, H band)
in 64 x 64 cutouts (the largest cutout for which GaMorNet's last pooling layer
is 2 x 2: half the training cost of 83 x 83 per image), disks no larger than
the cutout holds (:func:`demo_survey`), an asinh stretch scaled to a peak of 1,
more galaxies seen fewer times (8,000 galaxies, 3 epochs) rather than the
reverse, indeterminate galaxies left out of training, and SGD with Nesterov
momentum and a warm-up plus cosine learning-rate schedule peaking at 0.003.
On the CPU these reached a disk recall of about 0.87 and a bulge recall of
about 0.90 on the held-out test set (B/T uniform in 0-1, H = 19-24 mag).
"""

import csv
import json
import os
import sys
import time

import numpy as np

from gamornet import _checks, classify
from gamornet._atomic import atomic_path, atomic_write
from gamornet.presets import CLASS_NAMES, labels_from_bulge_to_total
from gamornet.preprocess import preprocess_images, preprocessing_settings

__all__ = ["DEMO_DEFAULTS", "demo_survey", "run_demo", "confusion_counts", "format_handbook_table"]

#: The settings ``make demo`` runs with (``gamornet demo`` without options).
DEMO_DEFAULTS = {
    "preset": "CANDELS",
    "size": 64,
    "n_train": 8000,
    "n_validation": 400,
    "n_test": 1000,
    "epochs": 3,
    "batch_size": 32,
    "lr": 0.003,
    "lr_schedule": "cosine",
    "momentum": 0.9,
    "nesterov": True,
    "stretch": "asinh",
    "scaling": "peak",
    "softening": 3.0,
    "seed": 0,
    "magnitude_range": None,
    "exclude_indeterminate": True,
}

#: Half-light radius of the largest disk, as a fraction of the cutout's half-width: 2.5 R_e holds ~92% of an
#: exponential disk's light, so the cutout holds nearly all of every disk and the true L_B/L_T is what it shows.
_DISK_FILLS_HALF_WIDTH = 1 / 2.5


def demo_survey(preset="CANDELS", size=64, magnitude_range=None):
    """The survey preset the demo simulates: the preset's instrument in ``size`` x ``size`` cutouts.

    The instrument (pixel scale, PSF, sky, noise) and the ranges of L_B/L_T,
    axis ratios and bulge sizes are the preset's (:mod:`gamornet.simulate`).
    Two ranges are adapted to the cutout:

    - disk half-light radii stop at 0.4 of the cutout's half-width (for
      CANDELS in 64 x 64 pixels: 0.77 arcsec instead of 1.2), so that a disk is
      not cut by the cutout's edges, which would make it look more
      bulge-dominated than its true L_B/L_T says; bulge radii stop at the same
      limit;
    - ``magnitude_range``, when given, replaces the preset's.

    Parameters
    ----------
    preset : {'SDSS', 'CANDELS'} or gamornet.simulate.SurveyPreset
        The survey.
    size : int
        Cutout size (pixels, square).
    magnitude_range : tuple of float, optional
        Total magnitudes (AB mag) of the galaxies; default the preset's.

    Returns
    -------
    gamornet.simulate.SurveyPreset
    """
    import dataclasses

    from gamornet.simulate import get_preset

    size = _checks.check_positive_int(size, "size")
    survey = get_preset(preset, (size, size))
    largest = _DISK_FILLS_HALF_WIDTH * size * survey.pixel_scale / 2
    disk_low, disk_high = survey.disk_radius_range
    bulge_low, bulge_high = survey.bulge_radius_range
    changes = {
        "disk_radius_range": (min(disk_low, largest), min(disk_high, largest)),
        "bulge_radius_range": (min(bulge_low, largest), min(bulge_high, largest)),
    }
    if magnitude_range is not None:
        changes["magnitude_range"] = tuple(magnitude_range)
    return dataclasses.replace(survey, **changes)


def _say(stream, message):
    print(message, file=stream, flush=True)


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
    """
    true_classes = np.asarray(true_classes, dtype=np.int64)
    predicted_classes = np.asarray(predicted_classes, dtype=np.int64)
    if true_classes.shape != predicted_classes.shape or true_classes.ndim != 1:
        raise ValueError(
            "true_classes and predicted_classes must be 1-D and of the same length. "
            f"Received shapes {true_classes.shape} and {predicted_classes.shape}"
        )
    if true_classes.size and (min(true_classes.min(), predicted_classes.min()) < 0
                              or max(true_classes.max(), predicted_classes.max()) > 2):
        raise ValueError("classes must be 0 (disk), 1 (indeterminate) or 2 (bulge)")
    counts = np.zeros((3, 3), dtype=np.int64)
    np.add.at(counts, (true_classes, predicted_classes), 1)
    return counts


def _percent(numerator, denominator):
    return 100.0 * numerator / denominator if denominator else float("nan")


def summary_metrics(counts):
    """Recall, handbook percentages, indeterminate fraction and accuracy from :func:`confusion_counts`.

    Returns
    -------
    dict
        ``disk_recall`` and ``bulge_recall`` (fraction of the actual disks /
        bulges predicted as such, an indeterminate prediction counting as a
        miss), ``accuracy`` (all three classes), ``indeterminate_fraction``
        (fraction of the test set predicted indeterminate), and
        ``handbook`` (the handbook's percentages: of the galaxies predicted
        disk, or bulge, the percentage that are actually disks, or bulges).
    """
    counts = np.asarray(counts)
    total = counts.sum()
    handbook = {
        (actual, predicted): _percent(counts[actual, predicted], counts[:, predicted].sum())
        for actual in (0, 2)
        for predicted in (0, 2)
    }
    return {
        "n_test": int(total),
        "disk_recall": counts[0, 0] / counts[0].sum() if counts[0].sum() else float("nan"),
        "bulge_recall": counts[2, 2] / counts[2].sum() if counts[2].sum() else float("nan"),
        "indeterminate_recall": counts[1, 1] / counts[1].sum() if counts[1].sum() else float("nan"),
        "accuracy": np.trace(counts) / total if total else float("nan"),
        "indeterminate_fraction": counts[:, 1].sum() / total if total else float("nan"),
        "handbook": handbook,
    }


def format_handbook_table(counts):
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

    Returns
    -------
    str
    """
    metrics = summary_metrics(counts)
    handbook = metrics["handbook"]
    lines = [
        "| Demo on simulated galaxies | Predicted Disks | Predicted Bulges |",
        "|----------------------------|-----------------|------------------|",
        f"| Actual Disks               | {handbook[0, 0]:14.2f}% | {handbook[0, 2]:15.2f}% |",
        f"| Actual Bulges              | {handbook[2, 0]:14.2f}% | {handbook[2, 2]:15.2f}% |",
        "",
        f"Counts (actual x predicted; {metrics['n_test']} test galaxies):",
        f"{'':16}{'disk':>8}{'indet.':>8}{'bulge':>8}{'recall':>9}",
    ]
    for actual, name in enumerate(("actual disk", "actual indet.", "actual bulge")):
        row = counts[actual]
        recall = _percent(row[actual], row.sum())
        lines.append(f"{name:16}{row[0]:8d}{row[1]:8d}{row[2]:8d}{recall:8.1f}%")
    lines += [
        "",
        f"Disk recall:  {metrics['disk_recall']:.3f}   Bulge recall: {metrics['bulge_recall']:.3f}",
        f"Indeterminate fraction (predicted): {metrics['indeterminate_fraction']:.1%}",
        f"Accuracy (three classes): {metrics['accuracy']:.1%}",
    ]
    return "\n".join(lines)


def _write_predictions(path, parameters, probabilities, predicted):
    with atomic_write(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            ["index", "bulge_to_total", "true_label", "p_disk", "p_indeterminate", "p_bulge", "predicted_label",
             "magnitude", "disk_half_light_radius_arcsec", "bulge_half_light_radius_arcsec"]
        )  # fmt: skip
        for row, probability, label in zip(parameters, probabilities, predicted):
            writer.writerow(
                [int(row["index"]), f"{row['bulge_to_total']:.4f}", CLASS_NAMES[int(row["label"])],
                 f"{probability[0]:.5f}", f"{probability[1]:.5f}", f"{probability[2]:.5f}", CLASS_NAMES[int(label)],
                 f"{row['magnitude']:.3f}", f"{row['disk_half_light_radius']:.4f}",
                 f"{row['bulge_half_light_radius']:.4f}"]
            )  # fmt: skip


def _read_metrics(path):
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]} if rows else {}


def _plot(path, metrics_path, counts, images, parameters, predicted, probabilities, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.lines  # noqa: F401  (matplotlib.lines.Line2D)
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker.MaxNLocator)

    history = _read_metrics(metrics_path)
    figure = plt.figure(figsize=(15, 9.5), layout="constrained")
    figure.suptitle(title, fontsize=13)
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.2, 1.6])
    curves_axis, matrix_axis, scatter_axis = top.subplots(1, 3, gridspec_kw={"wspace": 0.15})
    gallery = bottom.subplots(2, 6)

    axis = curves_axis
    if history:
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
        axis.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="center right")
    axis.set_title("Training curves")

    axis = matrix_axis
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for actual in range(3):
        for predicted_class in range(3):
            colour = "white" if fractions[actual, predicted_class] > 0.6 else "black"
            axis.text(predicted_class, actual, f"{counts[actual, predicted_class]}\n{fractions[actual, predicted_class]:.0%}",
                      ha="center", va="center", color=colour, fontsize=10)  # fmt: skip
    axis.set_xticks(range(3), ["disk", "indeterminate", "bulge"])
    axis.set_yticks(range(3), ["disk", "indeterminate", "bulge"])
    axis.set_xlabel("predicted class")
    axis.set_ylabel("actual class")
    axis.set_title("Test set: counts and share of each actual class")

    axis = scatter_axis
    colours = np.array(["C0", "C7", "C3"])[predicted]
    axis.scatter(parameters["bulge_to_total"], probabilities[:, 2] - probabilities[:, 0], c=colours, s=6)
    for limit in (0.45, 0.55):
        axis.axvline(limit, color="grey", lw=0.8, ls=":")
    axis.set_xlabel("true bulge-to-total light ratio L_B/L_T")
    axis.set_ylabel("p_bulge - p_disk")
    axis.set_title("Test set; colour = predicted class", fontsize=11)
    axis.legend(handles=[matplotlib.lines.Line2D([], [], ls="", marker="o", color=colour, label=name) for colour, name in (("C0", "disk"), ("C7", "indet."), ("C3", "bulge"))], fontsize=8, loc="upper left")

    order = np.argsort(parameters["bulge_to_total"])
    picks = order[np.linspace(0, len(order) - 1, 12).round().astype(int)]
    for position, index in enumerate(picks):
        axis = gallery[position // 6, position % 6]
        image = images[index, ..., 0]
        low, high = np.percentile(image, [1, 99.8])
        axis.imshow(np.arcsinh((image - low) / max((high - low) / 50, 1e-12)), origin="lower", cmap="gray")
        true_label = int(parameters["label"][index])
        guess = int(predicted[index])
        colour = "green" if guess == true_label else "red"
        axis.set_title(
            f"L_B/L_T={parameters['bulge_to_total'][index]:.2f} ({CLASS_NAMES[true_label][:5]})\n"
            f"predicted {CLASS_NAMES[guess]} ({probabilities[index, guess]:.0%})",
            fontsize=9, color=colour,
        )
        axis.set_xticks([])
        axis.set_yticks([])
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=90)
    plt.close(figure)


def _learning_rate(lr, lr_schedule, epochs, steps_per_epoch):
    """The learning rate given to the optimiser: ``lr``, or a warm-up and cosine schedule peaking at ``lr``."""
    if lr_schedule == "constant":
        return lr
    import keras

    total = epochs * steps_per_epoch
    warmup = min(max(1, steps_per_epoch // 2), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        lr / 20, decay_steps=max(1, total - warmup), alpha=0.0, warmup_target=lr, warmup_steps=warmup
    )


def _derived_seeds(seed):
    """Three independent master seeds (training, validation, test) from one."""
    return [int(value) for value in np.random.SeedSequence(seed).generate_state(3, dtype=np.uint32)]


def run_demo(output_dir="demo_output", preset="CANDELS", size=64, n_train=8000, n_validation=400, n_test=1000,
             epochs=3, batch_size=32, lr=0.003, lr_schedule="cosine", momentum=0.9, nesterov=True, stretch="asinh",
             scaling="peak", softening=3.0, seed=0, magnitude_range=None, exclude_indeterminate=True,
             thresholds=None, n_workers=None, progress=True, plot=True, stream=None):
    """Simulate galaxies, train GaMorNet on them from scratch, and evaluate it on a held-out test set.

    Parameters
    ----------
    output_dir : str
        Folder for the outputs (created if missing): ``trained_model.hdf5``,
        ``metrics.csv`` (one row per epoch), ``predictions.csv`` (per test
        galaxy: true L_B/L_T and label, the three probabilities and the
        predicted class), ``preprocessing.json`` (the preprocessing and
        simulation settings a user of the model must repeat) and ``demo.png``.
    preset : {'SDSS', 'CANDELS'} or gamornet.simulate.SurveyPreset
        The survey the galaxies imitate (see :mod:`gamornet.simulate` and
        :func:`demo_survey`).
    size : int
        Cutout size (pixels, square). The network's input shape is
        (size, size, 1).
    magnitude_range : tuple of float, optional
        Total magnitudes (AB mag) of the galaxies; default the preset's.
    exclude_indeterminate : bool
        Leave the galaxies labelled indeterminate (0.45 <= L_B/L_T <= 0.55)
        out of the training and validation sets; the test set keeps them. The
        network then learns one boundary, near L_B/L_T = 0.5, between disks and
        bulges, and rarely predicts indeterminate: more disks and bulges are
        recovered, at the price of the indeterminate galaxies, which are all
        called disk or bulge.
    n_train, n_validation, n_test : int
        Number of galaxies of each set (independent seeds).
    epochs, batch_size, lr, momentum, nesterov
        Training settings (SGD) of :func:`gamornet.keras_module.gamornet_train_keras`.
    lr_schedule : {'cosine', 'constant'}
        ``'cosine'``: the learning rate rises linearly from ``lr / 20`` to
        ``lr`` over the first half epoch, then falls to 0 along a half cosine
        by the last step (Loshchilov & Hutter 2017; Goyal et al. 2017 for the
        warm-up), which trains a network from scratch in few epochs more
        stably than a constant rate. ``'constant'``: ``lr`` throughout.
    stretch, scaling, softening
        The preprocessing of every image (:func:`gamornet.preprocess.preprocess_images`).
    seed : int
        Master seed of the three sets. Training itself uses TensorFlow's
        random initialisation and shuffling, so results vary a little from
        run to run.
    thresholds : str, tuple or gamornet.classify.Thresholds, optional
        How probabilities become classes: None (default) takes the most
        probable class; otherwise a threshold set of
        :func:`gamornet.classify.classify` (e.g. ``'keras_CANDELS'``).
    n_workers : int, optional
        Worker processes of the simulation (default: all cores).
    progress : bool
        Show progress bars and per-epoch training output.
    plot : bool
        Write ``demo.png`` (needs matplotlib).
    stream : file-like, optional
        Where the report is printed (default: standard output).

    Returns
    -------
    dict
        The metrics of :func:`summary_metrics`, ``counts`` (3 x 3 array),
        ``table`` (the printed text), ``paths`` (the files written) and
        ``timings`` (seconds per stage).

    Raises
    ------
    ValueError, TypeError
        Invalid settings (checked before any work starts).
    OSError
        ``output_dir`` cannot be created or written.
    """
    stream = sys.stdout if stream is None else stream
    from gamornet.simulate import simulate_galaxies

    size = _checks.check_positive_int(size, "size")
    survey = demo_survey(preset, size, magnitude_range)
    if lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant'. Received: lr_schedule={lr_schedule!r}")
    n_train = _checks.check_positive_int(n_train, "n_train")
    n_validation = _checks.check_positive_int(n_validation, "n_validation")
    n_test = _checks.check_positive_int(n_test, "n_test")
    epochs = _checks.check_positive_int(epochs, "epochs")
    batch_size = _checks.check_positive_int(batch_size, "batch_size")
    settings = preprocessing_settings(stretch=stretch, scaling=scaling, softening=softening)
    if thresholds is None:
        rule = "argmax of [p_disk, p_indeterminate, p_bulge]"
    else:
        rule = f"handbook thresholds {thresholds!r} (gamornet.classify)"
        classify.resolve_thresholds(thresholds)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0. Received: seed={seed!r}")
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"output_dir must be a path to a folder. Received an object of type {type(output_dir).__name__}")
    output_dir = os.fspath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(f"output_dir must be a folder, but {output_dir!r} is a file")
    os.makedirs(output_dir, exist_ok=True)

    timings = {}
    start = time.perf_counter()
    _say(stream, f"GaMorNet demo: {n_train} training, {n_validation} validation and {n_test} test galaxies, "
                 f"{survey.name}-like ({survey.band}, {survey.pixel_scale} arcsec/pixel), {size}x{size} pixels")  # fmt: skip
    _say(stream, f"Outputs go to {os.path.abspath(output_dir)}")

    # Simulate before TensorFlow starts: the simulation's worker processes then start quickly.
    sets = {}
    for (name, count), set_seed in zip(
        (("training", n_train), ("validation", n_validation), ("test", n_test)), _derived_seeds(seed)
    ):
        _say(stream, f"[{time.perf_counter() - start:6.0f} s] Simulating the {name} set ({count} galaxies)")
        sets[name] = simulate_galaxies(count, survey, seed=set_seed, n_workers=n_workers, progress=progress)
    timings["simulation"] = time.perf_counter() - start

    _say(stream, f"[{time.perf_counter() - start:6.0f} s] Preprocessing: stretch={settings['stretch']!r}, "
                 f"scaling={settings['scaling']!r}, softening={settings['softening']} x background noise")  # fmt: skip
    inputs = {name: preprocess_images(images, **settings) for name, (images, _) in sets.items()}
    labels = {name: labels_from_bulge_to_total(table["bulge_to_total"]) for name, (_, table) in sets.items()}
    if exclude_indeterminate:
        for name in ("training", "validation"):
            keep = labels[name][:, 1] == 0
            if not keep.any():
                raise ValueError(f"The {name} set holds only indeterminate galaxies; simulate more galaxies")
            inputs[name], labels[name] = inputs[name][keep], labels[name][keep]
        _say(stream, f"         indeterminate galaxies left out of training: {len(labels['training'])} training and "
                     f"{len(labels['validation'])} validation galaxies remain")  # fmt: skip
    for name in ("training", "test"):
        shares = labels[name].mean(axis=0)
        _say(stream, f"         {name} set: {shares[0]:.0%} disk, {shares[1]:.0%} indeterminate, {shares[2]:.0%} bulge "
                     "(Ghosh et al. 2020: disk if L_B/L_T < 0.45, bulge if > 0.55)")  # fmt: skip
    with atomic_write(os.path.join(output_dir, "preprocessing.json"), "w") as handle:
        json.dump(
            {"preprocess_images": settings, "preset": survey.name, "input_shape": [size, size, 1],
             "pixel_scale_arcsec": survey.pixel_scale, "class_rule": rule,
             "exclude_indeterminate_from_training": bool(exclude_indeterminate)},
            handle, indent=2,
        )  # fmt: skip

    _say(stream, f"[{time.perf_counter() - start:6.0f} s] Loading TensorFlow")
    from gamornet.keras_module import gamornet_predict_keras, gamornet_train_keras

    learning_rate = _learning_rate(lr, lr_schedule, epochs, -(-len(labels["training"]) // batch_size))
    training_start = time.perf_counter()
    _say(stream, f"[{training_start - start:6.0f} s] Training GaMorNet from scratch: {epochs} epochs, batch {batch_size}, "
                 f"SGD lr={lr} ({lr_schedule}), momentum={momentum}, nesterov={nesterov}")  # fmt: skip
    gamornet_train_keras(
        inputs["training"], labels["training"], inputs["validation"], labels["validation"], (size, size, 1),
        files_save_path=output_dir, epochs=epochs, batch_size=batch_size, lr=learning_rate, momentum=momentum,
        nesterov=nesterov, save_model=True, verbose=1 if progress else 0,
    )  # fmt: skip
    timings["training"] = time.perf_counter() - training_start
    model_path = os.path.join(output_dir, "trained_model.hdf5")

    _say(stream, f"[{time.perf_counter() - start:6.0f} s] Predicting the test set with {model_path}")
    probabilities = gamornet_predict_keras(inputs["test"], model_path, (size, size, 1), batch_size=256)
    if thresholds is None:
        predicted = np.argmax(probabilities, axis=1)
    else:
        names = classify.classify(probabilities, thresholds)
        predicted = np.select([names == "disk", names == "bulge"], [0, 2], 1)
    test_images, test_table = sets["test"]
    counts = confusion_counts(test_table["label"], predicted)
    _write_predictions(os.path.join(output_dir, "predictions.csv"), test_table, probabilities, predicted)

    paths = {
        "model": model_path,
        "metrics": os.path.join(output_dir, "metrics.csv"),
        "predictions": os.path.join(output_dir, "predictions.csv"),
        "preprocessing": os.path.join(output_dir, "preprocessing.json"),
    }
    metrics = summary_metrics(counts)
    if plot:
        paths["figure"] = os.path.join(output_dir, "demo.png")
        _plot(
            paths["figure"], paths["metrics"], counts, test_images, test_table, predicted, probabilities,
            f"GaMorNet trained from scratch on {n_train} simulated {survey.name}-like galaxies ({epochs} epochs): "
            f"disk recall {metrics['disk_recall']:.2f}, bulge recall {metrics['bulge_recall']:.2f}",
        )  # fmt: skip
    timings["total"] = time.perf_counter() - start

    table = format_handbook_table(counts)
    _say(stream, "")
    _say(stream, table)
    _say(stream, "")
    _say(stream, f"Classes: {rule}. Timings: simulation "
                 f"{timings['simulation']:.0f} s, training {timings['training']:.0f} s, total {timings['total']:.0f} s")  # fmt: skip
    _say(stream, "Files: " + ", ".join(os.path.basename(path) for path in paths.values()))
    return dict(metrics, counts=counts, table=table, paths=paths, timings=timings)
