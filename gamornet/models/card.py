"""Model cards: where a trained model applies, and a check of new images against it.

A network trained from scratch learns the look of its training set: its noise,
signal-to-noise, sizes and point-spread function. Shown images of another
look, it still returns confident probabilities, and nothing warns the user.
A *model card*, ``model_card.json`` beside the model, records what the model
was trained on: the survey or preset, pixel scale, input shape, preprocessing,
and the distributions over the training images of five per-image statistics
that need no labels. :func:`check_domain` computes the same statistics for new
images and flags each image that falls outside the central 99% of the training
images on any of them, naming the statistic.

The statistics (:func:`image_statistics`) are those of the image exactly as
the network receives it, after any preprocessing, so that the training images
and the images checked later are compared in the same units. For an image of
several bands, of the mean of its bands. With ``border`` the width in pixels of
the frame of edge pixels (4 by default), and the centre the middle of the
cutout (GaMorNet's cutouts are centred on the galaxy):

``background_level``
    The median of the frame's pixels (the image's units).
``border_noise``
    The scaled median absolute deviation of the frame's pixels,
    1.4826 x median(\\|x - median(x)\\|): the standard deviation of Gaussian
    noise, barely moved by galaxy light reaching the frame
    (:func:`gamornet.science.preprocess.estimate_background`).
``peak_snr``
    The largest background-subtracted pixel within the aperture (the circle
    of radius min(x, y) / 2 - ``border`` about the centre, inside the frame)
    divided by ``border_noise``; +inf for a noiseless image with light, NaN for
    a blank one.
``size``
    The light-weighted size: the half-light radius r50 in pixels, the radius
    of the circle about the centre that holds half of the background-subtracted
    light of the aperture. The light is summed over the pixels in order of
    their distance from the centre; the sum of the k nearest is the light
    within the circle of the same area, of radius sqrt(k / pi) pixels (a curve
    of growth, linearly interpolated in between: within 1.5% of the true radii
    of a Gaussian of sigma >= 1.5 pixels). Pixels below the background count
    with their negative values, so the curve may fall as well as rise; r_f is
    where it first reaches the fraction f of the aperture's total. NaN when
    the aperture's total is not positive.
``concentration``
    C = 5 log10(r80 / r20) (Bershady, Jangren & Conselice 2000, AJ 119, 2645;
    Conselice 2003, ApJS 147, 1), with r20 and r80 from the same curve of
    growth: about 2.1 for a Gaussian, 2.7 for an exponential disk and 5.2 for
    a de Vaucouleurs bulge (before the PSF).

A card stores, for each statistic, the quantiles of the training images at
:data:`QUANTILE_LEVELS`, among them the 0.5% and 99.5% quantiles that bound
the central 99% range. The published models of Ghosh et al. (2020) have cards
too (:func:`published_model_card`), filled from the paper and the 0.4.x
handbook; their training images are not public, so their statistics are
unknown and their cards say so, and :func:`check_domain` then checks nothing.

Backend-neutral: imports neither TensorFlow nor tflearn.

Examples
--------
>>> import numpy as np
>>> from gamornet.models.card import check_domain, model_card
>>> rng = np.random.default_rng(0)
>>> y, x = np.mgrid[:32, :32] - 15.5
>>> blob = np.exp(-(x**2 + y**2) / (2 * 3.0**2))
>>> training = blob[None, :, :, None] * rng.uniform(50, 100, (200, 1, 1, 1)) + rng.normal(size=(200, 32, 32, 1))
>>> card = model_card(training)
>>> noisier = blob[None, :, :, None] * 75 + rng.normal(scale=5.0, size=(3, 32, 32, 1))
>>> check = check_domain(noisier, card)
>>> check.out_of_domain.tolist()
[True, True, True]
>>> str(check.failed[1])
'border_noise;peak_snr'
"""

import dataclasses
import json
import os

import numpy as np

from gamornet._utils.atomic import atomic_write
from gamornet.models.folder import CARD_FILE_NAME, CORRUPT_CARD_ADVICE
from gamornet.science.preprocess import check_border, check_stack, estimate_background

__all__ = [
    "CARD_FILE_NAME",
    "STATISTICS",
    "QUANTILE_LEVELS",
    "DOMAIN_LEVELS",
    "DomainCheck",
    "image_statistics",
    "model_card",
    "write_model_card",
    "update_model_card",
    "read_model_card",
    "published_model_card",
    "find_model_card",
    "resolve_model_card",
    "has_statistics",
    "check_domain",
]

#: The per-image statistics, in the order they are reported (see the module's notes for their definitions).
STATISTICS = ("background_level", "border_noise", "peak_snr", "size", "concentration")

#: The quantiles a card stores for each statistic over the training images.
QUANTILE_LEVELS = (0.0, 0.005, 0.025, 0.16, 0.5, 0.84, 0.975, 0.995, 1.0)

#: The quantiles that bound the range an image must lie within on every statistic: the central 99%.
DOMAIN_LEVELS = (0.005, 0.995)

_FORMAT = "gamornet-model-card"
_VERSION = 1

#: Images are measured this many at a time, so a memory-mapped stack is never read whole.
_CHUNK = 512

#: Separates the names of the statistics that failed in :attr:`DomainCheck.failed`.
_SEPARATOR = ";"


# --------------------------------------------------------------------------- statistics


def _aperture(shape, border):
    """Flat indices of the aperture's pixels sorted by distance from the centre, and the curve of growth's radii.

    Radius k (from 0) is that of the circle whose area is the k pixels nearest
    the centre, sqrt(k / pi): the sum of those pixels is the light within it.
    """
    rows, columns = shape
    radius = min(rows, columns) / 2.0 - border
    y, x = np.mgrid[:rows, :columns]
    distance = np.hypot(y - (rows - 1) / 2.0, x - (columns - 1) / 2.0).ravel()
    inside = np.flatnonzero(distance <= radius)
    order = inside[np.argsort(distance[inside], kind="stable")]
    return order, np.sqrt(np.arange(len(order) + 1) / np.pi)


def _radius_enclosing(cumulative, total, radii, fraction):
    """Per image, the radius where the curve of growth first reaches ``fraction`` of ``total`` (interpolated).

    ``cumulative`` and ``radii`` start with the empty circle (0 light at radius 0).
    """
    target = fraction * total
    index = np.maximum(np.argmax(cumulative >= target[:, None], axis=1), 1)
    rows = np.arange(len(cumulative))
    low, high = cumulative[rows, index - 1], cumulative[rows, index]
    step = np.clip((target - low) / np.where(high > low, high - low, 1.0), 0.0, 1.0)
    radius = radii[index - 1] + step * (radii[index] - radii[index - 1])
    return np.where(total > 0, radius, np.nan)


def _chunk_statistics(chunk, border, aperture):
    """The statistics of a chunk of single-band images (n, y, x), float64."""
    level, noise = (value[:, 0] for value in estimate_background(chunk[..., None], border))
    order, radii = aperture
    light = (chunk.reshape(len(chunk), -1) - level[:, None])[:, order]
    cumulative = np.concatenate([np.zeros((len(light), 1)), np.cumsum(light, axis=1)], axis=1)
    total = cumulative[:, -1]
    peak = light.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        peak_snr = np.where(noise > 0, peak / np.where(noise > 0, noise, 1.0), np.where(peak > 0, np.inf, np.nan))
        r20, r50, r80 = (_radius_enclosing(cumulative, total, radii, fraction) for fraction in (0.2, 0.5, 0.8))
        concentration = 5.0 * np.log10(r80 / r20)
    concentration[~np.isfinite(concentration)] = np.nan
    return {"background_level": level, "border_noise": noise, "peak_snr": peak_snr, "size": r50,
            "concentration": concentration}  # fmt: skip


def image_statistics(images, border=4):
    """The five per-image statistics of the model card, for each image.

    Parameters
    ----------
    images : numpy.ndarray of shape (n, x, y, ndim)
        The images as the network receives them (after any preprocessing).
        Memory-mapped arrays are read in chunks.
    border : int
        Width (pixels) of the frame of edge pixels that measures the
        background; the aperture is the circle inside it.

    Returns
    -------
    dict of str to numpy.ndarray of shape (n,), float64
        One array per name of :data:`STATISTICS` (definitions in the module's
        notes). ``peak_snr`` is +inf for a noiseless image; ``size`` and
        ``concentration`` are NaN where the aperture holds no positive light.

    Raises
    ------
    TypeError, ValueError
        Not a non-empty 4-D numeric array, NaN or infinite pixels, or a border
        too wide for the images.
    """
    images = check_stack(images)
    border = check_border(border, images)
    aperture = _aperture(images.shape[1:3], border)
    parts = []
    for start in range(0, images.shape[0], _CHUNK):
        chunk = np.asarray(images[start : start + _CHUNK], dtype=np.float64).mean(axis=3)
        if not np.isfinite(chunk).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1))[0])
            raise ValueError(f"images must hold finite pixel values, but image {bad} holds NaN or infinite pixels")
        parts.append(_chunk_statistics(chunk, border, aperture))
    return {name: np.concatenate([part[name] for part in parts]) for name in STATISTICS}


# --------------------------------------------------------------------------- cards


def _distribution(values):
    """Quantiles at QUANTILE_LEVELS of the finite values, and how many values were not finite."""
    finite = values[np.isfinite(values)]
    quantiles = np.quantile(finite, QUANTILE_LEVELS).tolist() if finite.size else None
    return {"quantiles": quantiles, "n_undefined": int(values.size - finite.size)}


def model_card(images, *, input_shape=None, survey=None, band=None, pixel_scale=None, preprocessing=None,
               trained_by=None, notes=(), border=4):
    """A model card (a dict, JSON-ready) from the images a model was trained on.

    Parameters
    ----------
    images : numpy.ndarray of shape (n, x, y, ndim)
        The training images, exactly as the network received them.
    input_shape : tuple of int, optional
        The network's input shape; default ``images.shape[1:]``.
    survey : str, optional
        The survey or preset the images come from or imitate (``'CANDELS'``).
    band : str, optional
        The band.
    pixel_scale : float, optional
        Pixel size (arcsec).
    preprocessing : dict, optional
        The settings of :func:`gamornet.science.preprocess.preprocess_images` applied
        to every image, which every image the model classifies needs too.
    trained_by : str, optional
        What trained the model (``'gamornet demo'``, ...).
    notes : sequence of str
        Anything else a user of the model should know.
    border : int
        As for :func:`image_statistics`.

    Returns
    -------
    dict
        ``format``, ``version``, ``trained_by``, ``survey``, ``band``,
        ``pixel_scale_arcsec``, ``input_shape``, ``preprocessing``,
        ``n_training_images``, ``border``, ``quantile_levels``,
        ``domain_levels``, ``statistics`` (per statistic: ``quantiles`` at
        ``quantile_levels``, and ``n_undefined``, the images where it is not
        finite) and ``notes``. Unknown entries are None.

    Raises
    ------
    TypeError, ValueError
        Invalid images (as :func:`image_statistics`).
    """
    from gamornet._version import __version__

    statistics = image_statistics(images, border)
    return {
        "format": _FORMAT,
        "version": _VERSION,
        "gamornet_version": __version__,
        "trained_by": trained_by,
        "survey": survey,
        "band": band,
        "pixel_scale_arcsec": None if pixel_scale is None else float(pixel_scale),
        "input_shape": [int(size) for size in (images.shape[1:] if input_shape is None else input_shape)],
        "preprocessing": preprocessing,
        "n_training_images": int(images.shape[0]),
        "border": int(border),
        "quantile_levels": list(QUANTILE_LEVELS),
        "domain_levels": list(DOMAIN_LEVELS),
        "statistics": {name: _distribution(values) for name, values in statistics.items()},
        "notes": list(notes),
    }


def _card_path(path):
    """``path`` itself if it ends in .json, else ``<path>/model_card.json``."""
    path = os.fspath(path)
    return path if path.endswith(".json") else os.path.join(path, CARD_FILE_NAME)


def write_model_card(folder, images, **details):
    """Write ``<folder>/model_card.json`` for a model trained on ``images`` (atomically).

    This is what every model that gamornet trains gets beside it.

    Parameters
    ----------
    folder : str
        The model's folder (it must exist), or the path of the card's file
        (ending in ``.json``).
    images : numpy.ndarray of shape (n, x, y, ndim)
        The training images, exactly as the network received them.
    **details
        The keywords of :func:`model_card` (``survey``, ``pixel_scale``,
        ``preprocessing``, ``trained_by``, ...).

    Returns
    -------
    str
        The card's path.

    Raises
    ------
    TypeError, ValueError
        Invalid images or details.
    OSError
        The folder cannot be written.
    """
    card = model_card(images, **details)
    path = _card_path(folder)
    with atomic_write(path, "w") as stream:
        json.dump(card, stream, indent=2)
        stream.write("\n")
    return path


def update_model_card(path, **entries):
    """Set entries of an existing card (``survey``, ``preprocessing``, ``notes``, ...), keeping its statistics.

    For a caller that knows more about the training images than the trainer
    did, such as the survey, pixel scale and preprocessing.

    Parameters
    ----------
    path : str
        The card, or the folder that holds it.
    **entries
        Top-level entries to set; ``statistics`` cannot be set this way.

    Returns
    -------
    dict
        The updated card.

    Raises
    ------
    ValueError
        An attempt to change the statistics, or an invalid card.
    OSError
        The card cannot be read or written.
    """
    protected = {"statistics", "quantile_levels", "domain_levels", "format", "version"} & set(entries)
    if protected:
        raise ValueError(f"a card's {sorted(protected)} come from its training images and cannot be set")
    path = _card_path(path)
    card = read_model_card(path)
    card.update(entries)
    with atomic_write(path, "w") as stream:
        json.dump(card, stream, indent=2)
        stream.write("\n")
    return card


def _check_card(card, where):
    if not isinstance(card, dict) or card.get("format") != _FORMAT:
        raise ValueError(f"{where} is not a gamornet model card (no \"format\": \"{_FORMAT}\")")
    if card.get("version") != _VERSION:
        raise ValueError(f"{where} is a model card of version {card.get('version')!r}; this gamornet reads "
                         f"version {_VERSION}")  # fmt: skip
    statistics = card.get("statistics")
    if statistics is None:
        return card
    levels = card.get("quantile_levels")
    if not isinstance(statistics, dict) or not isinstance(levels, list) \
            or not all(level in levels for level in card.get("domain_levels", ())):  # fmt: skip
        raise ValueError(f"{where}: the statistics must be a mapping with quantile_levels that hold the domain_levels")
    for name, entry in statistics.items():
        quantiles = entry.get("quantiles") if isinstance(entry, dict) else "missing"
        if quantiles is not None and (not isinstance(quantiles, list) or len(quantiles) != len(levels)
                                      or not np.all(np.diff(np.asarray(quantiles, dtype=float)) >= 0)):  # fmt: skip
            raise ValueError(f"{where}: the quantiles of {name!r} must be {len(levels)} increasing numbers")
    return card


def read_model_card(path):
    """Read and check a model card.

    Parameters
    ----------
    path : str
        The card's file, or the folder that holds ``model_card.json``.

    Returns
    -------
    dict

    Raises
    ------
    OSError
        The file cannot be read.
    ValueError
        Not JSON, or not a model card of this version.
    """
    path = _card_path(path)
    with open(path, encoding="utf-8") as stream:
        try:
            card = json.load(stream)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path!r} is not a JSON model card: {error}") from None
    return _check_card(card, repr(path))


def find_model_card(model, backend="keras"):
    """The card of a model: a published model's, or the ``model_card.json`` beside a model file.

    Parameters
    ----------
    model : str
        A published model name (``'SDSS_tl'`` ...) or the path of a model
        file or TFLearn checkpoint prefix.
    backend : {'keras', 'tflearn'}
        For a published name, whose card (the flavours' handbook numbers
        differ).

    Returns
    -------
    dict or None
        None when a model file has no card beside it.

    Raises
    ------
    ValueError
        A card beside the model that is not a valid card (the message says
        how to restore it or predict without it).
    """
    from gamornet.models._registry import is_published_name

    if is_published_name(model):
        return published_model_card(model, backend)
    path = os.path.join(os.path.dirname(os.path.abspath(os.fspath(model))), CARD_FILE_NAME)
    if not os.path.isfile(path):
        return None
    try:
        return read_model_card(path)
    except ValueError as error:
        raise ValueError(f"{error}. {CORRUPT_CARD_ADVICE}") from None


def resolve_model_card(card, model, backend="keras", input_shape=None):
    """The card a predictor checks images against, from what the user asked for.

    Parameters
    ----------
    card : None, 'auto', dict or str
        None: no card. ``'auto'``: the model's own card (:func:`find_model_card`),
        or none if it has none. A dict: that card. A string or path: the
        card's file (or the folder that holds ``model_card.json``).
    model : str
        The model, as given to :func:`gamornet.load_predictor`.
    backend : {'keras', 'tflearn'}
    input_shape : tuple of int, optional
        The predictor's input shape, which the card's must match.

    Returns
    -------
    dict or None

    Raises
    ------
    ValueError
        An invalid card, or a card for another input shape.
    OSError
        A card file that cannot be read.
    """
    if card is None:
        return None
    if isinstance(card, str) and card == "auto":
        card = find_model_card(model, backend)
    elif isinstance(card, (str, os.PathLike)):
        card = read_model_card(card)
    elif isinstance(card, dict):
        card = _check_card(card, "model_card")
    else:
        raise TypeError(f"model_card must be None, 'auto', a card (dict) or the path of one. Received an object of "
                        f"type {type(card).__name__}")  # fmt: skip
    if card is not None and input_shape is not None and card.get("input_shape") \
            and tuple(card["input_shape"]) != tuple(input_shape):  # fmt: skip
        raise ValueError(f"the model card is for images of shape {tuple(card['input_shape'])}, but the model takes "
                         f"{tuple(input_shape)}")  # fmt: skip
    return card


def has_statistics(card):
    """Whether a card holds the training images' statistics, so that images can be checked against it."""
    return bool(card) and any(entry.get("quantiles") is not None for entry in (card.get("statistics") or {}).values())


# --------------------------------------------------------------------------- the published models

#: The handbook's accuracy tables (percentages; Ghosh et al. 2020, Tables 5 and 7 for TFLearn) and
#: indeterminate fractions of the final (``_tl``) models on the sample of Ghosh et al. (2020).
_HANDBOOK_RESULTS = {
    ("keras", "SDSS"): ({"actual_disks": [99.72, 3.37], "actual_bulges": [0.15, 95.25]}, 0.31),
    ("keras", "CANDELS"): ({"actual_disks": [94.45, 21.74], "actual_bulges": [5.37, 77.88]}, 0.46),
    ("tflearn", "SDSS"): ({"actual_disks": [99.72, 4.13], "actual_bulges": [0.19, 94.83]}, 0.33),
    ("tflearn", "CANDELS"): ({"actual_disks": [91.83, 20.86], "actual_bulges": [7.90, 78.62]}, 0.39),
}

_SURVEYS = {
    "SDSS": {"band": "SDSS g", "redshift": "z ~ 0"},
    "CANDELS": {"band": "HST WFC3/IR F160W (H)", "redshift": "z ~ 1"},
}


def published_model_card(name, backend="keras"):
    """The card of a published model of Ghosh et al. (2020), filled from the paper and the 0.4.x handbook.

    The training images of the published models are not part of the public
    data release, so the statistics of their training sets are unknown: the
    card's ``statistics`` is None, a note says so, and :func:`check_domain`
    checks nothing with it.

    Parameters
    ----------
    name : {'SDSS_sim', 'SDSS_tl', 'CANDELS_sim', 'CANDELS_tl'}
    backend : {'keras', 'tflearn'}

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        An unknown name or backend.
    """
    from gamornet.science import classify
    from gamornet.models._registry import CITATION, published_model
    from gamornet.models.published import resolve_model
    from gamornet.presets import PIXEL_SCALES

    entry = published_model(name, backend)
    survey = resolve_model(name, backend).data_set
    table, indeterminate = _HANDBOOK_RESULTS[backend, survey]
    thresholds = dataclasses.asdict(classify.HANDBOOK_THRESHOLDS[classify.default_threshold_set(backend, survey)])
    return {
        "format": _FORMAT, "version": _VERSION, "model": name, "backend": backend,
        "trained_by": f"Ghosh et al. (2020): {entry.description}", "citation": CITATION,
        "survey": survey, "band": _SURVEYS[survey]["band"], "redshift": _SURVEYS[survey]["redshift"],
        "pixel_scale_arcsec": PIXEL_SCALES[survey], "input_shape": list(entry.input_shape),
        "preprocessing": None,
        "training_data": (
            "galaxies simulated with GALFIT: a bulge (Sersic n = 4) plus an exponential disk, convolved with the "
            "survey's PSF, with sky and Poisson noise, spanning L_B/L_T from 0 to 1 (Ghosh et al. 2020, Sec. 3)"
            + ("; then transfer-learned on real galaxies of the survey" if name.endswith("_tl") else "")
        ),
        "handbook": {
            "thresholds": thresholds,
            "accuracy_percent": table, "accuracy_columns": ["predicted_disks", "predicted_bulges"],
            "indeterminate_fraction": indeterminate,
            "of_model": f"{survey}_tl",
        },
        "statistics": None,
        "notes": [
            "Images are given to the network as they are, without gamornet.science.preprocess (0.4.x handbook): "
            "cutouts centred on the galaxy, of the input shape, in the survey's band and pixel scale.",
            "Training-set statistics unknown: the training images are not part of the public data release, so "
            "no image can be checked against this card.",
        ],
    }  # fmt: skip


# --------------------------------------------------------------------------- the domain check


@dataclasses.dataclass(frozen=True)
class DomainCheck:
    """Which images lie outside a model card's central 99% range, and on which statistics.

    Attributes
    ----------
    statistics : dict of str to numpy.ndarray of shape (n,)
        The images' statistics (:func:`image_statistics`).
    failed : numpy.ndarray of str, shape (n,)
        Per image, the names of the statistics outside the range (or NaN),
        joined by ``';'``; ``''`` for an image within the range on all of
        them. This is the ``out_of_domain`` column of predictions.
    checked : tuple of str
        The statistics the card has a range for (none for a card without
        statistics).
    ranges : dict of str to (float, float)
        The range of each checked statistic.
    """

    statistics: dict
    failed: np.ndarray
    checked: tuple
    ranges: dict

    @property
    def out_of_domain(self):
        """numpy.ndarray of bool, shape (n,): whether each image failed any statistic."""
        return self.failed != ""

    @property
    def share(self):
        """The fraction of the images out of the domain."""
        return float(self.out_of_domain.mean())

    def shares_by_statistic(self):
        """The fraction of the images that fail each checked statistic (an image may fail several)."""
        return {name: float(np.mean([name in entry.split(_SEPARATOR) for entry in self.failed]))
                for name in self.checked}  # fmt: skip

    def summary(self):
        """One line for people: the share out of the domain and the statistics that failed most."""
        if not self.checked:
            return "no domain check: the model card holds no training-set statistics"
        by_name = ", ".join(f"{name} {share:.1%}" for name, share in self.shares_by_statistic().items() if share)
        return (f"{self.share:.1%} of {len(self.failed)} images lie outside the model card's central 99% range"
                + (f" ({by_name})" if by_name else ""))  # fmt: skip


def check_domain(images, card):
    """Flag the images that lie outside a model card's central 99% range on any statistic.

    Parameters
    ----------
    images : numpy.ndarray of shape (n, x, y, ndim)
        The images as the network receives them (with the card's
        preprocessing applied).
    card : dict or str
        A card (:func:`model_card`, :func:`published_model_card`) or the path
        of one.

    Returns
    -------
    DomainCheck

    Raises
    ------
    ValueError
        Images of another shape than the card's input shape, or an invalid card.
    TypeError
        Invalid images.
    OSError
        A card path that cannot be read.
    """
    card = read_model_card(card) if isinstance(card, (str, os.PathLike)) else _check_card(card, "card")
    images = check_stack(images)
    if card.get("input_shape") and list(images.shape[1:]) != list(card["input_shape"]):
        raise ValueError(f"the model card is for images of shape {tuple(card['input_shape'])}. Received images of "
                         f"shape {tuple(images.shape[1:])}")  # fmt: skip
    statistics = image_statistics(images, card.get("border", 4))
    ranges = {}
    for name, entry in (card.get("statistics") or {}).items():
        if name in statistics and entry.get("quantiles") is not None:
            levels = card["quantile_levels"]
            ranges[name] = tuple(entry["quantiles"][levels.index(level)] for level in card["domain_levels"])
    failures = np.zeros((len(images), len(ranges)), dtype=bool)
    for column, (name, (low, high)) in enumerate(ranges.items()):
        values = statistics[name]
        failures[:, column] = ~((values >= low) & (values <= high))  # NaN fails too
    names = np.array(list(ranges), dtype=object)
    failed = np.array([_SEPARATOR.join(names[row]) for row in failures], dtype=str)
    return DomainCheck(statistics=statistics, failed=failed, checked=tuple(ranges), ranges=ranges)
