"""The demo: simulate galaxies, train GaMorNet from scratch, and evaluate it.

:func:`run_demo` is what ``gamornet demo`` and ``make demo`` run. Offline and
on a CPU it goes through five stages:

1. **simulate** training, validation and test sets of bulge + disk galaxies
   (:mod:`gamornet.simulate`), labelled by the rule of Ghosh et al. (2020):
   disk-dominated if L_B/L_T < 0.45, bulge-dominated if L_B/L_T > 0.55,
   indeterminate in between;
2. **split**: preprocess every image the same way (:mod:`gamornet.preprocess`)
   and set the labels of each set, leaving indeterminate galaxies out of
   training when asked;
3. **train** GaMorNet from scratch with the Keras backend
   (:func:`gamornet.keras_module.gamornet_train_keras`);
4. **evaluate**: predict the test set with the saved model
   (:func:`gamornet.keras_module.gamornet_predict_keras`) and score it
   (:mod:`gamornet.metrics`);
5. **report**: print the handbook-style table of actual against predicted
   classes, the indeterminate fraction and the accuracy, and write
   ``predictions.csv`` and ``demo.png``.

By default the predicted class is the most probable of the three (argmax of
[p_disk, p_indeterminate, p_bulge]). The handbook's probability thresholds
(:mod:`gamornet.classify`) were tuned for the published models on real SDSS
and CANDELS galaxies, not for a model trained for minutes on simulations, so
the demo uses them only when asked (``thresholds='keras_CANDELS'``, ...).

Every setting is a field of :class:`DemoConfig`, whose defaults are what
``make demo`` runs (``gamornet demo`` without options; the ``gamornet demo``
options are made from its fields). They were chosen for ``make demo`` to
finish in under 10 minutes on a 2-core CPU: CANDELS-like galaxies (0.06 arcsec
pixels, H band) of H = 19-22.5 mag in 64 x 64 cutouts (the largest cutout for
which GaMorNet's last pooling layer is 2 x 2: half the training cost of
83 x 83 per image), disks no larger than the cutout holds
(:func:`demo_survey`), an asinh stretch scaled to a peak of 1, more galaxies
seen fewer times (8,000 galaxies, 3 epochs) rather than the reverse,
indeterminate galaxies left out of training, and SGD with Nesterov momentum and
a warm-up plus cosine learning-rate schedule peaking at 0.003. On a 2-core CPU
these reached a disk recall of about 0.90 and a bulge recall of about 0.92 on
the held-out test set.
"""

import csv
import dataclasses
import inspect
import json
import os
import sys
import time
import types

import numpy as np

from gamornet import _checks, classify
from gamornet._atomic import atomic_write
from gamornet.metrics import classes_from_names, confusion_counts, format_handbook_table, summary_metrics
from gamornet.model_card import update_model_card
from gamornet.presets import CLASS_NAMES, labels_from_bulge_to_total
from gamornet.preprocess import SCALINGS, STRETCHES, preprocess_images, preprocessing_settings

__all__ = ["DemoConfig", "DEMO_DEFAULTS", "DEMO_MAGNITUDE_RANGES", "demo_survey", "run_demo"]

#: Half-light radius of the largest disk, as a fraction of the cutout's half-width: 2.5 R_e holds ~92% of an
#: exponential disk's light, so the cutout holds nearly all of every disk and the true L_B/L_T is what it shows.
_DISK_FILLS_HALF_WIDTH = 1 / 2.5

#: Total magnitudes (AB mag) the demo simulates when none are given, by preset name. For CANDELS the brighter
#: part of the preset's H = 19-24 mag: fainter galaxies carry too little signal for a network trained in minutes
#: (over H = 19-24 the defaults reached a disk recall of only about 0.87). Other presets keep their own range.
DEMO_MAGNITUDE_RANGES = {"CANDELS": (19.0, 22.5)}


def _setting(default, help, kind, **extra):
    """A :class:`DemoConfig` field: its default, help text and kind of value (for the command line)."""
    return dataclasses.field(default=default, metadata=dict(help=help, kind=kind, **extra))


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Every setting of the demo, checked when it is made; the defaults are what ``make demo`` runs.

    Each field's ``metadata`` holds its ``help`` text and the ``kind`` of
    value it takes (``'positive_int'``, ``'non_negative_int'``,
    ``'positive_float'``, ``'number'``, ``'flag'``, ``'choice'`` with its
    ``choices``, ``'pair'`` or ``'text'``); the ``gamornet demo`` options are
    made from them. Change fields with :func:`dataclasses.replace`, or give
    them to :func:`run_demo` as keywords.

    Raises
    ------
    ValueError, TypeError
        A setting out of range or of the wrong type (the message names it).
    """

    preset: object = _setting("CANDELS", "survey imitated: SDSS g band or CANDELS H band (gamornet.simulate)", "choice",
                              choices=("SDSS", "CANDELS"))  # fmt: skip
    size: int = _setting(64, "cutout size in pixels, square; the network's input is (size, size, 1)", "positive_int")
    magnitude_range: object = _setting(
        None, "total magnitudes (AB) of the simulated galaxies, bright then faint; default "
        + ", ".join(f"{low}-{high} for {name}" for name, (low, high) in DEMO_MAGNITUDE_RANGES.items())
        + ", else the preset's", "pair", metavar=("BRIGHT", "FAINT"),
    )  # fmt: skip
    n_train: int = _setting(8000, "training galaxies", "positive_int")
    n_validation: int = _setting(400, "validation galaxies", "positive_int")
    n_test: int = _setting(1000, "test galaxies", "positive_int")
    exclude_indeterminate: bool = _setting(
        True, "leave galaxies with 0.45 <= L_B/L_T <= 0.55 out of training and validation (the test set keeps them)",
        "flag",
    )  # fmt: skip
    epochs: int = _setting(3, "training epochs", "positive_int")
    batch_size: int = _setting(32, "images per gradient step", "positive_int")
    lr: float = _setting(0.003, "peak SGD learning rate", "positive_float")
    lr_schedule: str = _setting("cosine", "cosine: warm up over half an epoch, then a half cosine down to 0; "
                                "constant: lr throughout", "choice", choices=("cosine", "constant"))  # fmt: skip
    momentum: float = _setting(0.9, "SGD momentum", "number")
    nesterov: bool = _setting(True, "Nesterov momentum (--no-nesterov turns it off)", "flag")
    stretch: str = _setting("asinh", "image stretch before scaling (gamornet.preprocess)", "choice", choices=STRETCHES)
    scaling: str = _setting("peak", "per-image scaling (gamornet.preprocess)", "choice", choices=SCALINGS)
    softening: float = _setting(3.0, "stretch softening, in units of the background noise", "positive_float")
    seed: int = _setting(0, "master seed of the simulated sets", "non_negative_int")
    thresholds: object = _setting(
        None, "turn probabilities into classes with a handbook threshold set (keras_SDSS, keras_CANDELS, "
        "tflearn_SDSS, tflearn_CANDELS); default: the most probable class", "text",
    )  # fmt: skip

    def __post_init__(self):
        from gamornet.simulate import _check_seed

        for name in ("size", "n_train", "n_validation", "n_test", "epochs", "batch_size"):
            object.__setattr__(self, name, _checks.check_positive_int(getattr(self, name), name))
        if self.magnitude_range is not None:
            object.__setattr__(self, "magnitude_range", tuple(self.magnitude_range))
        demo_survey(self.preset, self.size, self.magnitude_range)  # checks the preset, size and magnitudes
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float, np.floating)) or not np.isfinite(self.lr) \
                or self.lr <= 0:  # fmt: skip
            raise ValueError(f"lr must be a positive number. Received: lr={self.lr!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant'. Received: lr_schedule={self.lr_schedule!r}")
        _checks.check_non_negative_float(self.momentum, "momentum")
        for name in ("nesterov", "exclude_indeterminate"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False. Received: {name}={getattr(self, name)!r}")
        preprocessing_settings(stretch=self.stretch, scaling=self.scaling, softening=self.softening)
        object.__setattr__(self, "seed", _check_seed(self.seed))
        if self.thresholds is not None:
            classify.resolve_thresholds(self.thresholds)

    @property
    def survey(self):
        """The :class:`gamornet.simulate.SurveyPreset` the galaxies are drawn from (:func:`demo_survey`)."""
        return demo_survey(self.preset, self.size, self.magnitude_range)

    @property
    def preprocessing(self):
        """The settings of :func:`gamornet.preprocess.preprocess_images` applied to every image."""
        return preprocessing_settings(stretch=self.stretch, scaling=self.scaling, softening=self.softening)

    @property
    def input_shape(self):
        """The network's input shape (size, size, 1)."""
        return (self.size, self.size, 1)

    @property
    def class_rule(self):
        """How probabilities become classes, in words."""
        if self.thresholds is None:
            return "argmax of [p_disk, p_indeterminate, p_bulge]"
        return f"handbook thresholds {self.thresholds!r} (gamornet.classify)"


#: The default of every :class:`DemoConfig` field: what ``make demo`` runs (``gamornet demo`` without options).
DEMO_DEFAULTS = types.MappingProxyType({field.name: field.default for field in dataclasses.fields(DemoConfig)})


def demo_survey(preset="CANDELS", size=64, magnitude_range=None):
    """The survey preset the demo simulates: the preset's instrument in ``size`` x ``size`` cutouts.

    The instrument (pixel scale, PSF, sky, noise) and the ranges of L_B/L_T,
    axis ratios and bulge sizes are the preset's (:mod:`gamornet.simulate`).
    Two ranges are adapted to the demo:

    - disk half-light radii stop at 0.4 of the cutout's half-width (for
      CANDELS in 64 x 64 pixels: 0.77 arcsec instead of 1.2), so that a disk is
      not cut by the cutout's edges, which would make it look more
      bulge-dominated than its true L_B/L_T says; bulge radii stop at the same
      limit;
    - total magnitudes are ``magnitude_range`` when given, else those of
      :data:`DEMO_MAGNITUDE_RANGES` for a preset given by name there, else the
      preset's.

    Parameters
    ----------
    preset : {'SDSS', 'CANDELS'} or gamornet.simulate.SurveyPreset
        The survey.
    size : int
        Cutout size (pixels, square).
    magnitude_range : tuple of float, optional
        Total magnitudes (AB mag) of the galaxies.

    Returns
    -------
    gamornet.simulate.SurveyPreset

    Raises
    ------
    ValueError, TypeError
        An unknown preset, a size below 8 pixels or an invalid magnitude range.
    """
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
    if magnitude_range is None and isinstance(preset, str):
        magnitude_range = DEMO_MAGNITUDE_RANGES.get(preset)
    if magnitude_range is not None:
        changes["magnitude_range"] = tuple(magnitude_range)
    return dataclasses.replace(survey, **changes)


class _Log:
    """Prints the demo's messages, each stamped with the seconds since the start."""

    def __init__(self, stream):
        self.stream = sys.stdout if stream is None else stream
        self.start = time.perf_counter()

    def elapsed(self):
        return time.perf_counter() - self.start

    def __call__(self, message, stamp=True):
        prefix = f"[{self.elapsed():6.0f} s] " if stamp else ""
        print(prefix + message, file=self.stream, flush=True)


def _derived_seeds(seed, count=3):
    """Independent master seeds (training, validation, test, ...) from one."""
    return [int(value) for value in np.random.SeedSequence(seed).generate_state(count, dtype=np.uint32)]


# --------------------------------------------------------------------------- stages


def _simulate_stage(config, n_workers, progress, log):
    """Stage 1: the training, validation and test sets, each ``(images, parameters)``."""
    from gamornet.simulate import simulate_galaxies

    sets = {}
    counts = {"training": config.n_train, "validation": config.n_validation, "test": config.n_test}
    for (name, count), set_seed in zip(counts.items(), _derived_seeds(config.seed)):
        log(f"Simulating the {name} set ({count} galaxies)")
        sets[name] = simulate_galaxies(count, config.survey, seed=set_seed, n_workers=n_workers, progress=progress)
    return sets


def _split_stage(config, sets, log):
    """Stage 2: preprocessed network inputs and one-hot labels of each set; indeterminates left out of training."""
    settings = config.preprocessing
    log(f"Preprocessing: stretch={settings['stretch']!r}, scaling={settings['scaling']!r}, "
        f"softening={settings['softening']} x background noise")  # fmt: skip
    inputs = {name: preprocess_images(images, **settings) for name, (images, _) in sets.items()}
    labels = {name: labels_from_bulge_to_total(table["bulge_to_total"]) for name, (_, table) in sets.items()}
    if config.exclude_indeterminate:
        for name in ("training", "validation"):
            keep = labels[name][:, 1] == 0
            if not keep.any():
                raise ValueError(f"The {name} set holds only indeterminate galaxies; simulate more galaxies")
            inputs[name], labels[name] = inputs[name][keep], labels[name][keep]
        log(f"indeterminate galaxies left out of training: {len(labels['training'])} training and "
            f"{len(labels['validation'])} validation galaxies remain", stamp=False)  # fmt: skip
    for name in ("training", "test"):
        shares = labels[name].mean(axis=0)
        log(f"{name} set: {shares[0]:.0%} disk, {shares[1]:.0%} indeterminate, {shares[2]:.0%} bulge "
            "(Ghosh et al. 2020: disk if L_B/L_T < 0.45, bulge if > 0.55)", stamp=False)  # fmt: skip
    return inputs, labels


def _learning_rate(config, steps_per_epoch):
    """The learning rate given to the optimiser: ``lr``, or a warm-up and cosine schedule peaking at ``lr``."""
    if config.lr_schedule == "constant":
        return config.lr
    import keras

    total = config.epochs * steps_per_epoch
    warmup = min(max(1, steps_per_epoch // 2), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        config.lr / 20, decay_steps=max(1, total - warmup), alpha=0.0, warmup_target=config.lr, warmup_steps=warmup
    )


def _write_settings(config, output_dir):
    """``preprocessing.json``: what a user of the trained model must repeat on every image."""
    survey = config.survey
    path = os.path.join(output_dir, "preprocessing.json")
    with atomic_write(path, "w") as handle:
        json.dump(
            {"preprocess_images": config.preprocessing, "preset": survey.name, "input_shape": list(config.input_shape),
             "pixel_scale_arcsec": survey.pixel_scale, "class_rule": config.class_rule,
             "exclude_indeterminate_from_training": bool(config.exclude_indeterminate)},
            handle, indent=2,
        )  # fmt: skip
    return path


def _train_stage(config, inputs, labels, output_dir, progress, log):
    """Stage 3: train GaMorNet from scratch; returns the saved model's path."""
    log("Loading TensorFlow")
    from gamornet.keras_module import gamornet_train_keras

    learning_rate = _learning_rate(config, -(-len(labels["training"]) // config.batch_size))
    log(f"Training GaMorNet from scratch: {config.epochs} epochs, batch {config.batch_size}, SGD lr={config.lr} "
        f"({config.lr_schedule}), momentum={config.momentum}, nesterov={config.nesterov}")  # fmt: skip
    gamornet_train_keras(
        inputs["training"], labels["training"], inputs["validation"], labels["validation"], config.input_shape,
        files_save_path=output_dir, epochs=config.epochs, batch_size=config.batch_size, lr=learning_rate,
        momentum=config.momentum, nesterov=config.nesterov, save_model=True, verbose=1 if progress else 0,
    )  # fmt: skip
    survey = config.survey
    update_model_card(
        output_dir, trained_by="gamornet demo", survey=survey.name, band=survey.band,
        pixel_scale_arcsec=survey.pixel_scale, preprocessing=config.preprocessing,
        notes=[f"Simulated {survey.name}-like galaxies (gamornet.simulate) of {survey.magnitude_range[0]}-"
               f"{survey.magnitude_range[1]} mag, bulge-to-total ratios 0-1"
               + (", indeterminate galaxies left out" if config.exclude_indeterminate else "")],
    )  # fmt: skip
    return os.path.join(output_dir, "trained_model.hdf5")


def _classes(config, probabilities):
    if config.thresholds is None:
        return np.argmax(probabilities, axis=1)
    return classes_from_names(classify.classify(probabilities, config.thresholds))


def _evaluate_stage(config, model_path, inputs, sets, log):
    """Stage 4: the test set's probabilities, predicted classes, counts and metrics."""
    from gamornet.keras_module import gamornet_predict_keras

    log(f"Predicting the test set with {model_path}")
    probabilities = gamornet_predict_keras(inputs["test"], model_path, config.input_shape, batch_size=256)
    predicted = _classes(config, probabilities)
    counts = confusion_counts(sets["test"][1]["label"], predicted)
    return {"probabilities": probabilities, "predicted": predicted, "counts": counts, "metrics": summary_metrics(counts)}


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


def _report_stage(config, evaluation, sets, paths, plot, log):
    """Stage 5: ``predictions.csv``, ``demo.png`` and the printed table; returns the table's text."""
    from gamornet._demo_figure import plot_demo, read_history

    test_images, test_table = sets["test"]
    paths["predictions"] = os.path.join(os.path.dirname(paths["model"]), "predictions.csv")
    _write_predictions(paths["predictions"], test_table, evaluation["probabilities"], evaluation["predicted"])
    metrics = evaluation["metrics"]
    if plot:
        paths["figure"] = os.path.join(os.path.dirname(paths["model"]), "demo.png")
        plot_demo(
            paths["figure"], read_history(paths["metrics"]), evaluation["counts"], test_images, test_table,
            evaluation["predicted"], evaluation["probabilities"],
            f"GaMorNet trained from scratch on {config.n_train} simulated {config.survey.name}-like galaxies "
            f"({config.epochs} epochs): disk recall {metrics['disk_recall']:.2f}, "
            f"bulge recall {metrics['bulge_recall']:.2f}",
        )  # fmt: skip
    table = format_handbook_table(evaluation["counts"])
    log("", stamp=False)
    log(table, stamp=False)
    log("", stamp=False)
    return table


# --------------------------------------------------------------------------- the demo


def _config_from(config, settings):
    if config is None:
        config = DemoConfig()
    elif not isinstance(config, DemoConfig):
        raise TypeError(f"config must be a DemoConfig. Received an object of type {type(config).__name__}")
    unknown = sorted(set(settings) - set(DEMO_DEFAULTS))
    if unknown:
        raise TypeError(f"run_demo got unknown settings {unknown}; the settings are the fields of DemoConfig: "
                        f"{', '.join(DEMO_DEFAULTS)}")  # fmt: skip
    return dataclasses.replace(config, **settings) if settings else config


def run_demo(output_dir="demo_output", config=None, *, n_workers=None, progress=True, plot=True, stream=None,
             **settings):
    """Simulate galaxies, train GaMorNet on them from scratch, and evaluate it on a held-out test set.

    Parameters
    ----------
    output_dir : str
        Folder for the outputs (created if missing): ``trained_model.hdf5``,
        ``metrics.csv`` (one row per epoch), ``predictions.csv`` (per test
        galaxy: true L_B/L_T and label, the three probabilities and the
        predicted class), ``preprocessing.json`` (the preprocessing and
        simulation settings a user of the model must repeat) and ``demo.png``.
    config : DemoConfig, optional
        The settings (default ``DemoConfig()``, what ``make demo`` runs).
    **settings
        Fields of :class:`DemoConfig` (``n_train=...``, ``seed=...``, ...)
        that replace those of ``config``.
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
        The metrics of :func:`gamornet.metrics.summary_metrics`, ``counts``
        (3 x 3 array), ``table`` (the printed text), ``config`` (the
        :class:`DemoConfig` run), ``paths`` (the files written) and
        ``timings`` (seconds per stage).

    Raises
    ------
    ValueError, TypeError
        Invalid settings (checked before any work starts).
    OSError
        ``output_dir`` cannot be created or written.
    """
    config = _config_from(config, settings)
    output_dir = _checks.check_folder(output_dir, "output_dir")
    os.makedirs(output_dir, exist_ok=True)
    log = _Log(stream)
    survey = config.survey
    log(f"GaMorNet demo: {config.n_train} training, {config.n_validation} validation and {config.n_test} test "
        f"galaxies, {survey.name}-like ({survey.band}, {survey.pixel_scale} arcsec/pixel, {survey.magnitude_range[0]}"
        f"-{survey.magnitude_range[1]} mag), {config.size}x{config.size} pixels", stamp=False)  # fmt: skip
    log(f"Outputs go to {os.path.abspath(output_dir)}", stamp=False)
    timings = {}
    # Simulate before TensorFlow starts: the simulation's worker processes then start quickly.
    sets = _simulate_stage(config, n_workers, progress, log)
    timings["simulation"] = log.elapsed()
    inputs, labels = _split_stage(config, sets, log)
    paths = {"preprocessing": _write_settings(config, output_dir)}
    started = log.elapsed()
    paths["model"] = _train_stage(config, inputs, labels, output_dir, progress, log)
    paths["metrics"] = os.path.join(output_dir, "metrics.csv")
    timings["training"] = log.elapsed() - started
    evaluation = _evaluate_stage(config, paths["model"], inputs, sets, log)
    table = _report_stage(config, evaluation, sets, paths, plot, log)
    timings["total"] = log.elapsed()
    log(f"Classes: {config.class_rule}. Timings: simulation {timings['simulation']:.0f} s, training "
        f"{timings['training']:.0f} s, total {timings['total']:.0f} s", stamp=False)  # fmt: skip
    log("Files: " + ", ".join(os.path.basename(path) for path in paths.values()), stamp=False)
    return dict(evaluation["metrics"], counts=evaluation["counts"], table=table, config=config, paths=paths,
                timings=timings)  # fmt: skip


def _signature_with_settings(function):
    """``function``'s signature with every :class:`DemoConfig` field as a keyword with its default (for help())."""
    signature = inspect.signature(function)
    parameters = [parameter for parameter in signature.parameters.values() if parameter.kind != parameter.VAR_KEYWORD]
    parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
                   for name, default in DEMO_DEFAULTS.items()]  # fmt: skip
    return signature.replace(parameters=parameters)


run_demo.__signature__ = _signature_with_settings(run_demo)
