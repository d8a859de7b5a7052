"""The demo: simulate galaxies, train GaMorNet from scratch, and evaluate it the way the handbook does.

:func:`run_demo` is what ``gamornet demo`` and ``make demo`` run. Offline and
on a CPU it goes through five stages:

1. **simulate** training, validation and test sets of bulge + disk galaxies
   (:mod:`gamornet.training.simulate`), labelled by the rule of Ghosh et al. (2020):
   disk-dominated if L_B/L_T < 0.45, bulge-dominated if L_B/L_T > 0.55,
   indeterminate in between; and a *shifted* test set, the same kind of
   galaxies seen through another PSF and noise level (:func:`shifted_survey`);
2. **split**: set the labels of each set, leaving indeterminate galaxies out
   of training when asked, and preprocess every image the same way
   (:mod:`gamornet.science.preprocess`);
3. **train** GaMorNet from scratch with the Keras backend
   (:func:`gamornet.keras_module.gamornet_train_keras`), which writes the
   model card (:mod:`gamornet.models.card`) beside the model;
4. **evaluate** through the predictor (:func:`gamornet.load_predictor`):

   - the most probable class (argmax), scored as the handbook does
     (:mod:`gamornet.science.metrics`);
   - calibration: a temperature fitted on the validation set, and the
     expected calibration error of the test set before and after
     (:mod:`gamornet.science.calibration`);
   - thresholds on the calibrated p_disk and p_bulge chosen on the validation
     set for the purities asked (0.95), which leave the galaxies the network
     is unsure of indeterminate; their purity, completeness and
     indeterminate fraction on the test set
     (:mod:`gamornet.science.thresholds`);
   - MC dropout (:mod:`gamornet.science.uncertainty`): how well the spread of the
     predicted class's probability picks out misclassified galaxies (AUROC);
   - the domain check: the share of test and shifted galaxies outside the
     model card's central 99% range, and the recall on both sets;
   - the same network trained on images preprocessed another way
     (``compare_stretch``), scored on both sets, to compare the
     preprocessing choices where it matters: on images unlike the training
     set;

5. **report**: print the tables and write ``predictions.csv``,
   ``demo_summary.json`` and ``demo.png``.

Every setting is a field of :class:`DemoConfig`, whose defaults are what
``make demo`` runs (``gamornet demo`` without options; the ``gamornet demo``
options are made from its fields). They were chosen for ``make demo`` to
finish in about 10 minutes on a 2-core CPU, setting up included (the demo
itself took 6 min 10 s on 2 idle cores of an AMD EPYC): CANDELS-like galaxies
(0.06 arcsec pixels, H band) of H = 19-22.5 mag in 64 x 64 cutouts (the largest
cutout for which GaMorNet's last pooling layer is 2 x 2: half the training
cost of 83 x 83 per image), disks no larger than the cutout holds
(:func:`demo_survey`), images divided by their peak without a stretch, more
galaxies seen fewer times rather than the reverse (8,000 galaxies, 4 epochs,
batches of 64), indeterminate galaxies kept in training (left out, the network
gives them no probability and its calibration error stays at about 0.08 after
temperature scaling), and Adam (Kingma & Ba 2015) with a warm-up plus cosine
learning-rate schedule peaking at 0.0006. In the same time, GaMorNet's SGD with
Nesterov momentum (``optimizer='sgd'``, peak 0.004, on asinh-stretched images)
left the disk recall below 0.9 on two seeds of three. What the defaults reach
over three seeds (disk recall 0.918-0.942, bulge recall 0.940-0.969, calibrated
ECE 0.010-0.024) is on the API page of this module.
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

from gamornet._utils import checks as _checks
from gamornet.science import classify
from gamornet._utils.atomic import atomic_write
from gamornet.demo._evaluate import evaluate_comparison, evaluate_network
from gamornet.science.metrics import format_handbook_table, format_purity_table
from gamornet.models.card import CARD_FILE_NAME, update_model_card
from gamornet.presets import CLASS_NAMES, labels_from_bulge_to_total
from gamornet.science.preprocess import SCALINGS, STRETCHES, preprocess_images, preprocessing_settings

__all__ = ["DemoConfig", "DEMO_DEFAULTS", "DEMO_MAGNITUDE_RANGES", "demo_survey", "shifted_survey", "run_demo"]

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

    preset: object = _setting("CANDELS", "survey imitated: SDSS g band or CANDELS H band (gamornet.training.simulate)", "choice",
                              choices=("SDSS", "CANDELS"))  # fmt: skip
    size: int = _setting(64, "cutout size in pixels, square; the network's input is (size, size, 1)", "positive_int")
    magnitude_range: object = _setting(
        None, "total magnitudes (AB) of the simulated galaxies, bright then faint; default "
        + ", ".join(f"{low}-{high} for {name}" for name, (low, high) in DEMO_MAGNITUDE_RANGES.items())
        + ", else the preset's", "pair", metavar=("BRIGHT", "FAINT"),
    )  # fmt: skip
    n_train: int = _setting(8000, "training galaxies", "positive_int")
    training_bulge_to_total: object = _setting(
        (0.0, 1.0), "L_B/L_T range of the training galaxies (the validation, test and shifted sets span 0-1); a "
        "narrower range leaves the easiest, most bulge-dominated galaxies out of training",
        "pair", metavar=("LOW", "HIGH"),
    )  # fmt: skip
    n_validation: int = _setting(1500, "validation galaxies: they fit the temperature and choose the thresholds",
                                 "positive_int")  # fmt: skip
    n_test: int = _setting(2000, "test galaxies", "positive_int")
    exclude_indeterminate: bool = _setting(
        False, "leave galaxies with 0.45 <= L_B/L_T <= 0.55 out of training and of the validation loss (the test "
        "set, the temperature and the thresholds keep them); off by default: without them the network never gives "
        "'indeterminate' a probability, and no temperature calibrates it (ECE 0.08 after calibration)", "flag",
    )  # fmt: skip
    disk_weight: float = _setting(
        1.0, "weight of the disk galaxies in the training loss (gamornet.training.data.class_weighted_crossentropy; "
        "indeterminate and bulge galaxies weigh 1): above 1 moves the most probable class towards disks, at a cost in "
        "bulge recall and in calibration", "positive_float",
    )  # fmt: skip
    epochs: int = _setting(4, "training epochs", "positive_int")
    batch_size: int = _setting(64, "images per gradient step", "positive_int")
    optimizer: str = _setting(
        "adam", "adam: Adam (Kingma & Ba 2015), which learns more in the demo's few minutes; sgd: stochastic gradient "
        "descent with momentum, as GaMorNet was trained (Ghosh et al. 2020; peak lr about 0.004)", "choice",
        choices=_checks.OPTIMIZERS,
    )  # fmt: skip
    lr: float = _setting(0.0006, "peak learning rate", "positive_float")
    lr_schedule: str = _setting("cosine", "cosine: warm up over half an epoch, then a half cosine down to 0; "
                                "constant: lr throughout", "choice", choices=("cosine", "constant"))  # fmt: skip
    momentum: float = _setting(0.9, "SGD momentum (sgd only)", "number")
    nesterov: bool = _setting(True, "Nesterov momentum, sgd only (--no-nesterov turns it off)", "flag")
    stretch: str = _setting("none", "image stretch before scaling (gamornet.science.preprocess)", "choice", choices=STRETCHES)
    scaling: str = _setting("peak", "per-image scaling (gamornet.science.preprocess)", "choice", choices=SCALINGS)
    softening: float = _setting(3.0, "stretch softening, in units of the background noise", "positive_float")
    seed: int = _setting(0, "master seed of the simulated sets and of the network's initialisation", "non_negative_int")
    thresholds: object = _setting(
        None, "turn probabilities into classes with a handbook threshold set (keras_SDSS, keras_CANDELS, "
        "tflearn_SDSS, tflearn_CANDELS); default: the thresholds chosen on the validation set", "text",
    )  # fmt: skip
    disk_purity: float = _setting(0.95, "purity of the predicted disks that the chosen threshold on p_disk reaches on "
                                  "the validation set", "positive_float")  # fmt: skip
    bulge_purity: float = _setting(0.95, "the same for bulges, on p_bulge", "positive_float")
    mc_samples: int = _setting(30, "MC-dropout draws per test galaxy, for the uncertainty", "positive_int")
    n_shifted: object = _setting(None, "galaxies of the shifted test set; default as many as the test set",
                                 "positive_int")  # fmt: skip
    shifted_psf_fwhm: float = _setting(0.45, "FWHM (arcsec) of the shifted set's PSF, a Kolmogorov profile in place "
                                       "of the survey's", "positive_float")  # fmt: skip
    shifted_noise: float = _setting(2.5, "background noise of the shifted set, in units of the survey's",
                                    "positive_float")  # fmt: skip
    compare_stretch: str = _setting("asinh", "also train a network whose images get this stretch (the same scaling) "
                                    "and compare both on the test and shifted sets; 'off' trains one network",
                                    "choice", choices=STRETCHES + ("off",))  # fmt: skip

    def __post_init__(self):
        from gamornet._utils.checks import check_seed

        for name in ("size", "n_train", "n_validation", "n_test", "epochs", "batch_size", "mc_samples"):
            object.__setattr__(self, name, _checks.check_positive_int(getattr(self, name), name))
        if self.n_shifted is not None:
            object.__setattr__(self, "n_shifted", _checks.check_positive_int(self.n_shifted, "n_shifted"))
        if self.magnitude_range is not None:
            object.__setattr__(self, "magnitude_range", tuple(self.magnitude_range))
        object.__setattr__(self, "training_bulge_to_total", _check_fraction_range(self.training_bulge_to_total,
                                                                                  "training_bulge_to_total"))
        shifted_survey(self.survey, self.shifted_psf_fwhm, self.shifted_noise)  # checks the survey and the shift
        _checks.check_optimizer(self.optimizer)
        _check_positive_number(self.lr, "lr")
        _check_positive_number(self.disk_weight, "disk_weight")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant'. Received: lr_schedule={self.lr_schedule!r}")
        _checks.check_non_negative_float(self.momentum, "momentum")
        for name in ("nesterov", "exclude_indeterminate"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False. Received: {name}={getattr(self, name)!r}")
        preprocessing_settings(stretch=self.stretch, scaling=self.scaling, softening=self.softening)
        if self.compare_stretch not in STRETCHES + ("off",):
            raise ValueError(f"compare_stretch must be one of {', '.join(map(repr, STRETCHES))} or 'off'. "
                             f"Received: compare_stretch={self.compare_stretch!r}")  # fmt: skip
        object.__setattr__(self, "seed", check_seed(self.seed))
        if self.thresholds is not None:
            classify.resolve_thresholds(self.thresholds)
        for name in ("disk_purity", "bulge_purity"):
            if _check_positive_number(getattr(self, name), name) > 1:
                raise ValueError(f"{name} must be a fraction in (0, 1]. Received: {name}={getattr(self, name)!r}")

    @property
    def survey(self):
        """The :class:`gamornet.training.simulate.SurveyPreset` the galaxies are drawn from (:func:`demo_survey`)."""
        return demo_survey(self.preset, self.size, self.magnitude_range)

    @property
    def training_survey(self):
        """The survey of the training set: :attr:`survey` with ``training_bulge_to_total`` as its L_B/L_T range."""
        return dataclasses.replace(self.survey, bulge_to_total_range=self.training_bulge_to_total)

    @property
    def shifted(self):
        """The :class:`gamornet.training.simulate.SurveyPreset` of the shifted test set (:func:`shifted_survey`)."""
        return shifted_survey(self.survey, self.shifted_psf_fwhm, self.shifted_noise)

    @property
    def preprocessing(self):
        """The settings of :func:`gamornet.science.preprocess.preprocess_images` applied to every image."""
        return preprocessing_settings(stretch=self.stretch, scaling=self.scaling, softening=self.softening)

    @property
    def input_shape(self):
        """The network's input shape (size, size, 1)."""
        return (self.size, self.size, 1)

    @property
    def comparison_preprocessing(self):
        """The preprocessing of the comparison network (None when ``compare_stretch`` is 'off' or the same)."""
        if self.compare_stretch in ("off", self.stretch):
            return None
        return preprocessing_settings(stretch=self.compare_stretch, scaling=self.scaling, softening=self.softening)

    @property
    def class_rule(self):
        """How probabilities become classes, in words."""
        if self.thresholds is None:
            return (f"thresholds on the calibrated p_disk and p_bulge chosen on the validation set for purities "
                    f"{self.disk_purity:g} and {self.bulge_purity:g}")  # fmt: skip
        return f"handbook thresholds {self.thresholds!r} (gamornet.science.classify)"


def _check_fraction_range(value, name):
    try:
        low, high = (float(bound) for bound in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of numbers (low, high). Received: {name}={value!r}") from None
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"{name} must be a pair (low, high) with 0 <= low < high <= 1. Received: {name}={value!r}")
    return (low, high)


def _check_positive_number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value <= 0:  # fmt: skip
        raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")
    return float(value)


#: The default of every :class:`DemoConfig` field: what ``make demo`` runs (``gamornet demo`` without options).
DEMO_DEFAULTS = types.MappingProxyType({field.name: field.default for field in dataclasses.fields(DemoConfig)})


def demo_survey(preset="CANDELS", size=64, magnitude_range=None):
    """The survey preset the demo simulates: the preset's instrument in ``size`` x ``size`` cutouts.

    The instrument (pixel scale, PSF, sky, noise) and the ranges of L_B/L_T,
    axis ratios and bulge sizes are the preset's (:mod:`gamornet.training.simulate`).
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
    preset : {'SDSS', 'CANDELS'} or gamornet.training.simulate.SurveyPreset
        The survey.
    size : int
        Cutout size (pixels, square).
    magnitude_range : tuple of float, optional
        Total magnitudes (AB mag) of the galaxies.

    Returns
    -------
    gamornet.training.simulate.SurveyPreset

    Raises
    ------
    ValueError, TypeError
        An unknown preset, a size below 8 pixels or an invalid magnitude range.
    """
    from gamornet.training.simulate import get_preset

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


def shifted_survey(survey, psf_fwhm=0.45, noise=2.5):
    """The survey of the demo's shifted test set: the same galaxies, another PSF and noise level.

    A model trained on one survey's images meets, in practice, images of
    another look. The shifted set keeps every range of ``survey`` (sizes,
    magnitudes, L_B/L_T), so the true classes mean the same, and changes how
    the galaxies are seen:

    - the PSF becomes a Kolmogorov (seeing-limited) profile of FWHM
      ``psf_fwhm`` arcsec in place of the survey's;
    - the background noise per pixel becomes ``noise`` times the survey's, by
      Gaussian read noise added to the sky's Poisson noise (another noise
      model as well as another level).

    Parameters
    ----------
    survey : gamornet.training.simulate.SurveyPreset
        The in-domain survey (:func:`demo_survey`).
    psf_fwhm : float
        The shifted PSF's FWHM (arcsec).
    noise : float
        The shifted noise per pixel, in units of the survey's.

    Returns
    -------
    gamornet.training.simulate.SurveyPreset

    Raises
    ------
    ValueError
        A PSF FWHM that is not positive, or a noise factor below what the
        sky's Poisson noise alone gives.
    """
    _check_positive_number(psf_fwhm, "shifted_psf_fwhm")
    _check_positive_number(noise, "shifted_noise")
    sky_variance = survey.sky_level * survey.gain  # electrons^2 per pixel
    read_variance = noise**2 * (sky_variance + survey.read_noise**2) - sky_variance
    if read_variance < 0:
        lowest = (sky_variance / (sky_variance + survey.read_noise**2)) ** 0.5
        raise ValueError(f"shifted_noise must be at least {lowest:.2f}, the sky's Poisson noise alone, in units of "
                         f"the survey's noise. Received: shifted_noise={noise!r}")  # fmt: skip
    return dataclasses.replace(survey, name=f"{survey.name} shifted", psf="kolmogorov", psf_fwhm=float(psf_fwhm),
                               read_noise=read_variance**0.5)  # fmt: skip


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


#: At most this many validation galaxies give the validation loss after every epoch; all of them fit the
#: temperature and choose the thresholds.
_MONITORED_VALIDATION = 500

#: The independent master seeds derived from the demo's seed, in this order.
_SEED_NAMES = ("training", "validation", "test", "shifted", "network", "dropout")


def _derived_seeds(seed):
    """Independent master seeds (training, validation, test, shifted sets, network, dropout) from one."""
    values = np.random.SeedSequence(seed).generate_state(len(_SEED_NAMES), dtype=np.uint32)
    return dict(zip(_SEED_NAMES, (int(value) for value in values)))


# --------------------------------------------------------------------------- stages


def _simulate_stage(config, seeds, n_workers, progress, log):
    """Stage 1: the training, validation, test and shifted test sets, each ``(images, parameters)``."""
    from gamornet.training.simulate import simulate_galaxies

    counts = {"training": config.n_train, "validation": config.n_validation, "test": config.n_test,
              "shifted": config.n_shifted or config.n_test}  # fmt: skip
    shifted = config.shifted
    sets = {}
    for name, count in counts.items():
        survey = {"shifted": shifted, "training": config.training_survey}.get(name, config.survey)
        seen = (f": PSF Kolmogorov {shifted.psf_fwhm} arcsec FWHM, noise x{config.shifted_noise}"
                if name == "shifted" else "")  # fmt: skip
        log(f"Simulating the {name} set ({count} galaxies{seen})")
        sets[name] = simulate_galaxies(count, survey, seed=seeds[name], n_workers=n_workers, progress=progress)
    return sets


def _split_stage(config, sets, log):
    """Stage 2: one-hot labels of every set, and which training and validation galaxies the network learns from."""
    labels = {name: labels_from_bulge_to_total(table["bulge_to_total"]) for name, (_, table) in sets.items()}
    learn = {name: np.ones(len(labels[name]), dtype=bool) for name in ("training", "validation")}
    # The validation loss printed after every epoch needs a few hundred galaxies, not all (they cost time).
    learn["validation"][_MONITORED_VALIDATION:] = False
    if config.exclude_indeterminate:
        for name in learn:
            learn[name] &= labels[name][:, 1] == 0
            if not learn[name].any():
                raise ValueError(f"The {name} set holds only indeterminate galaxies; simulate more galaxies")
        log(f"indeterminate galaxies left out of training: {learn['training'].sum()} training and "
            f"{learn['validation'].sum()} validation galaxies remain", stamp=False)  # fmt: skip
    for name in ("training", "test"):
        shares = labels[name].mean(axis=0)
        log(f"{name} set: {shares[0]:.0%} disk, {shares[1]:.0%} indeterminate, {shares[2]:.0%} bulge "
            "(Ghosh et al. 2020: disk if L_B/L_T < 0.45, bulge if > 0.55)", stamp=False)  # fmt: skip
    return labels, learn


def _preprocess(sets, settings, log):
    log(f"Preprocessing: stretch={settings['stretch']!r}, scaling={settings['scaling']!r}, "
        f"softening={settings['softening']} x background noise")  # fmt: skip
    return {name: preprocess_images(images, **settings) for name, (images, _) in sets.items()}


def _learning_rate(config, steps_per_epoch):
    """The learning rate given to the optimiser: ``lr``, or a warm-up and cosine schedule peaking at ``lr``."""
    if config.lr_schedule == "constant":
        return config.lr
    from gamornet.training.recipe import warmup_cosine

    return warmup_cosine(config.lr, config.epochs, steps_per_epoch)


def _write_settings(config, settings, folder):
    """``preprocessing.json``: what a user of the trained model must repeat on every image."""
    survey = config.survey
    path = os.path.join(folder, "preprocessing.json")
    with atomic_write(path, "w") as handle:
        json.dump(
            {"preprocess_images": settings, "preset": survey.name, "input_shape": list(config.input_shape),
             "pixel_scale_arcsec": survey.pixel_scale, "class_rule": config.class_rule,
             "exclude_indeterminate_from_training": bool(config.exclude_indeterminate)},
            handle, indent=2,
        )  # fmt: skip
    return path


def _describe_card(config, settings, folder):
    """Complete the card that training wrote beside the model: survey, band, pixel scale and preprocessing."""
    survey = config.survey
    return update_model_card(
        folder, trained_by="gamornet demo", survey=survey.name, band=survey.band,
        pixel_scale_arcsec=survey.pixel_scale, preprocessing=settings,
        notes=[f"Simulated {survey.name}-like galaxies (gamornet.training.simulate) of {survey.magnitude_range[0]}-"
               f"{survey.magnitude_range[1]} mag, bulge-to-total ratios {config.training_bulge_to_total[0]}-"
               f"{config.training_bulge_to_total[1]}"
               + (", indeterminate galaxies left out" if config.exclude_indeterminate else "")],
    )  # fmt: skip


def _train_stage(config, settings, inputs, labels, learn, folder, seeds, progress, log):
    """Stage 3: train GaMorNet from scratch on ``inputs``; its files, its card and the seed of its dropout masks."""
    if "keras" not in sys.modules:
        log("Loading TensorFlow")
    from gamornet.models.network import keras  # TensorFlow imported quietly first (gamornet._utils.tf_logging)

    from gamornet.keras_module import gamornet_train_keras
    from gamornet.training.data import class_weighted_crossentropy

    os.makedirs(folder, exist_ok=True)
    paths = {"preprocessing": _write_settings(config, settings, folder)}
    training, validation = learn["training"], learn["validation"]
    learning_rate = _learning_rate(config, -(-int(training.sum()) // config.batch_size))
    optimizer = (f"Adam lr={config.lr} ({config.lr_schedule})" if config.optimizer == "adam" else
                 f"SGD lr={config.lr} ({config.lr_schedule}), momentum={config.momentum}, nesterov={config.nesterov}")
    log(f"Training GaMorNet from scratch ({_preprocessing_label(settings)}) into {folder}: {config.epochs} epochs, "
        f"batch {config.batch_size}, {optimizer}"
        + (f", disks weighted x{config.disk_weight:g} in the loss" if config.disk_weight != 1 else ""))  # fmt: skip
    keras.utils.set_random_seed(seeds["network"])  # the same initial weights and batches for the same seed
    gamornet_train_keras(
        inputs["training"][training], labels["training"][training], inputs["validation"][validation],
        labels["validation"][validation], config.input_shape, files_save_path=folder, epochs=config.epochs,
        batch_size=config.batch_size, lr=learning_rate, momentum=config.momentum, nesterov=config.nesterov,
        optimizer=config.optimizer,
        loss=class_weighted_crossentropy(disk=config.disk_weight) if config.disk_weight != 1 else "categorical_crossentropy",
        save_model=True, verbose=1 if progress else 0,
        keep_best=False, divergence_guard=False,  # the demo's figures are those of its last epoch, as published
    )  # fmt: skip
    paths.update(model=os.path.join(folder, "trained_model.hdf5"), metrics=os.path.join(folder, "metrics.csv"),
                 card=os.path.join(folder, CARD_FILE_NAME))  # fmt: skip
    card = _describe_card(config, settings, folder)
    return {"path": paths["model"], "paths": paths, "card": card, "mc_seed": seeds["dropout"], "settings": settings}


def _compare_stage(config, sets, labels, learn, output_dir, seeds, progress, log):
    """Stage 4b: the same network trained on images preprocessed another way, scored on both test sets."""
    settings = config.comparison_preprocessing
    if settings is None:
        return None
    inputs = _preprocess(sets, settings, log)
    folder = os.path.join(output_dir, f"compare_{settings['stretch']}")
    network = _train_stage(config, settings, inputs, labels, learn, folder, seeds, progress, log)
    scores = evaluate_comparison(config, network, sets, inputs, network["card"])
    return dict(scores, settings=settings, folder=folder, label=_preprocessing_label(settings))


def _write_predictions(path, parameters, evaluation):
    """``predictions.csv``: per test galaxy, its truth, the probabilities, both classes and the flags."""
    raw, calibrated = evaluation["probabilities"]["test"], evaluation["calibrated"]["test"]
    argmax, thresholded = evaluation["test"]["predicted"], evaluation["thresholded"]
    uncertainty, failed = evaluation["uncertainty"], evaluation["domain"]["test"].failed
    with atomic_write(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            ["index", "bulge_to_total", "true_label", "p_disk", "p_indeterminate", "p_bulge", "predicted_label",
             "magnitude", "disk_half_light_radius_arcsec", "bulge_half_light_radius_arcsec", "p_disk_calibrated",
             "p_indeterminate_calibrated", "p_bulge_calibrated", "thresholded_label", "predicted_class_std",
             "mutual_information", "out_of_domain"]
        )  # fmt: skip
        for position, row in enumerate(parameters):
            writer.writerow(
                [int(row["index"]), f"{row['bulge_to_total']:.4f}", CLASS_NAMES[int(row["label"])]]
                + [f"{value:.5f}" for value in raw[position]] + [CLASS_NAMES[int(argmax[position])]]
                + [f"{row['magnitude']:.3f}", f"{row['disk_half_light_radius']:.4f}",
                   f"{row['bulge_half_light_radius']:.4f}"]
                + [f"{value:.5f}" for value in calibrated[position]] + [CLASS_NAMES[int(thresholded[position])]]
                + [f"{uncertainty['top_std'][position]:.5f}", f"{uncertainty['mutual_information'][position]:.5f}",
                   failed[position]]
            )  # fmt: skip


def _recall_pair(scores):
    return f"{scores['metrics']['disk_recall']:.3f} / {scores['metrics']['bulge_recall']:.3f}"


def _shift_lines(config, networks):
    """The table of in-domain and shifted recall and out-of-domain shares, one row per network."""
    shifted = config.shifted
    lines = [f"Shifted test set: the same kind of galaxies seen with a Kolmogorov PSF of {shifted.psf_fwhm} arcsec FWHM "
             f"(the survey's: {config.survey.psf_fwhm}) and x{config.shifted_noise} the noise. Recall of the most "
             "probable class, and the share of galaxies outside the model card's central 99% range:",
             f"  {'':30}{'disk / bulge recall':^32}{'out of domain':^18}",
             f"  {'preprocessing':30}{'test':^16}{'shifted':^16}{'test':^9}{'shifted':^9}"]  # fmt: skip
    for label, scores in networks:
        domain = scores["domain"]
        lines.append(f"  {label:30}{_recall_pair(scores['test']):^16}{_recall_pair(scores['shifted']):^16}"
                     f"{domain['test'].share:^9.1%}{domain['shifted'].share:^9.1%}")  # fmt: skip
    return lines


def _preprocessing_label(settings):
    stretch = "no stretch" if settings["stretch"] == "none" else f"{settings['stretch']} stretch"
    return f"{stretch}, {settings['scaling']} scaling"


def _report_text(config, evaluation, comparison):
    """The printed report after the argmax table: calibration, thresholds, uncertainty and the shifted set."""
    choice, rule, uncertainty = evaluation["choice"], evaluation["rule"], evaluation["uncertainty"]
    source = ("thresholds chosen on the validation set (calibrated probabilities, purities asked "
              f"{choice.target_disk_purity:g} / {choice.target_bulge_purity:g})" if choice is not None
              else f"the handbook's thresholds {config.thresholds!r}")  # fmt: skip
    networks = [(scores["label"], scores) for scores in (evaluation, comparison) if scores is not None]
    return "\n".join([
        f"Calibration: temperature T = {evaluation['temperature']:.3f} fitted on the {config.n_validation} validation "
        f"galaxies; expected calibration error (ECE, 15 bins) on the {config.n_test} test galaxies: "
        f"{evaluation['ece_before']:.3f} before, {evaluation['ece_after']:.3f} after.",
        "",
        f"Classes from {source}: disk if p_disk >= {rule.disk:.3f}, bulge if p_bulge >= {rule.bulge:.3f}, "
        "indeterminate otherwise.",
        format_purity_table(evaluation["thresholded_counts"], title="Test set, thresholds"),
        "",
        f"MC dropout ({config.mc_samples} draws): as a detector of the {uncertainty['error_rate']:.1%} misclassified "
        f"test galaxies (most probable class), the std of the predicted class has an AUROC of "
        f"{uncertainty['auroc_std']:.3f} (mutual information: {uncertainty['auroc_mutual_information']:.3f}).",
        "",
        *_shift_lines(config, networks),
        "Main network, shifted set: " + evaluation["domain"]["shifted"].summary(),
    ])  # fmt: skip


def _scores_json(scores):
    metrics = scores["metrics"]
    return {key: float(metrics[key]) for key in ("disk_recall", "bulge_recall", "accuracy", "indeterminate_fraction")}


def _summary(config, evaluation, comparison, timings):
    """``demo_summary.json``: every number the demo reports."""
    networks = {"main": evaluation} | ({} if comparison is None else {"comparison": comparison})
    summary = {
        "config": {key: (value if isinstance(value, (str, int, float, bool, type(None), tuple)) else str(value))
                   for key, value in dataclasses.asdict(config).items()},
        "temperature": evaluation["temperature"], "ece_before": evaluation["ece_before"],
        "ece_after": evaluation["ece_after"],
        "thresholds": {"disk": evaluation["rule"].disk, "bulge": evaluation["rule"].bulge},
        "validation_choice": None if evaluation["choice"] is None else evaluation["choice"].as_dict(),
        "test_thresholded": {key: float(evaluation["thresholded_metrics"][key]) for key in
                             ("disk_purity", "bulge_purity", "disk_recall", "bulge_recall", "indeterminate_fraction")},
        "uncertainty": {key: evaluation["uncertainty"][key] for key in ("auroc_std", "auroc_mutual_information",
                                                                       "error_rate")},
        "timings_s": timings,
    }  # fmt: skip
    for name, scores in networks.items():
        summary[name] = {"test": _scores_json(scores["test"]), "shifted": _scores_json(scores["shifted"]),
                         "out_of_domain": {key: check.share for key, check in scores["domain"].items()}}  # fmt: skip
    summary["main"]["preprocessing"] = config.preprocessing
    if comparison is not None:
        summary["comparison"]["preprocessing"] = comparison["settings"]
    return summary


def _report_stage(config, evaluation, comparison, sets, paths, plot, log):
    """Stage 5: ``predictions.csv``, ``demo.png`` and the printed tables; returns the printed text."""
    from gamornet.demo._figure import plot_demo, read_history

    folder = os.path.dirname(paths["model"])
    paths["predictions"] = os.path.join(folder, "predictions.csv")
    _write_predictions(paths["predictions"], sets["test"][1], evaluation)
    metrics = evaluation["test"]["metrics"]
    if plot:
        paths["figure"] = os.path.join(folder, "demo.png")
        plot_demo(
            paths["figure"], read_history(paths["metrics"]), sets, evaluation, comparison,
            f"GaMorNet trained from scratch on {config.n_train} simulated {config.survey.name}-like galaxies "
            f"({config.epochs} epochs): disk recall {metrics['disk_recall']:.2f}, "
            f"bulge recall {metrics['bulge_recall']:.2f}",
        )  # fmt: skip
    table = format_handbook_table(evaluation["test"]["counts"])
    text = _report_text(config, evaluation, comparison)
    for block in ("", table, "", text, ""):
        log(block, stamp=False)
    return table, text


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
        The metrics of :func:`gamornet.science.metrics.summary_metrics`, ``counts``
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
    survey, seeds = config.survey, _derived_seeds(config.seed)
    log(f"GaMorNet demo: {config.n_train} training, {config.n_validation} validation and {config.n_test} test "
        f"galaxies, {survey.name}-like ({survey.band}, {survey.pixel_scale} arcsec/pixel, {survey.magnitude_range[0]}"
        f"-{survey.magnitude_range[1]} mag), {config.size}x{config.size} pixels", stamp=False)  # fmt: skip
    log(f"Outputs go to {os.path.abspath(output_dir)}", stamp=False)
    timings = {}
    # Simulate before TensorFlow starts: the simulation's worker processes then start quickly.
    sets = _simulate_stage(config, seeds, n_workers, progress, log)
    timings["simulation"] = log.elapsed()
    labels, learn = _split_stage(config, sets, log)
    inputs = _preprocess(sets, config.preprocessing, log)
    started = log.elapsed()
    network = _train_stage(config, config.preprocessing, inputs, labels, learn, output_dir, seeds, progress, log)
    timings["training"] = log.elapsed() - started
    evaluation = evaluate_network(config, network, sets, inputs, network["card"], log)
    evaluation["label"] = _preprocessing_label(config.preprocessing)
    started = log.elapsed()
    comparison = _compare_stage(config, sets, labels, learn, output_dir, seeds, progress, log)
    timings["comparison"] = log.elapsed() - started
    paths = dict(network["paths"])
    table, report = _report_stage(config, evaluation, comparison, sets, paths, plot, log)
    timings["total"] = log.elapsed()
    paths["summary"] = os.path.join(output_dir, "demo_summary.json")
    with atomic_write(paths["summary"], "w") as stream_:
        json.dump(_summary(config, evaluation, comparison, timings), stream_, indent=2)
    log(f"Classes: {config.class_rule}. Timings: simulation {timings['simulation']:.0f} s, training "
        f"{timings['training']:.0f} s, comparison {timings['comparison']:.0f} s, total {timings['total']:.0f} s",
        stamp=False)  # fmt: skip
    log("Files: " + ", ".join(os.path.basename(path) for path in paths.values()), stamp=False)
    return dict(evaluation["test"]["metrics"], counts=evaluation["test"]["counts"], table=table, report=report,
                config=config, evaluation=evaluation, comparison=comparison, paths=paths, timings=timings)  # fmt: skip


def _signature_with_settings(function):
    """``function``'s signature with every :class:`DemoConfig` field as a keyword with its default (for help())."""
    signature = inspect.signature(function)
    parameters = [parameter for parameter in signature.parameters.values() if parameter.kind != parameter.VAR_KEYWORD]
    parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
                   for name, default in DEMO_DEFAULTS.items()]  # fmt: skip
    return signature.replace(parameters=parameters)


run_demo.__signature__ = _signature_with_settings(run_demo)
