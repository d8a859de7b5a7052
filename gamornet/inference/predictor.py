"""The predictor: one object, and one batch loop, between a model and its probabilities.

Every prediction in gamornet goes through a :class:`Predictor`: the 0.4.x
functions ``gamornet_predict_keras`` and ``gamornet_predict_tflearn``, the
``gamornet predict`` command, the benchmarks. It turns a model (a published
name or a file of either backend) into an engine (:mod:`gamornet.inference._engine`),
and feeds it batches from a background thread (:func:`Predictor.stream`).

Examples
--------
>>> import gamornet
>>> with gamornet.load_predictor("SDSS_tl") as predictor:      # doctest: +SKIP
...     probabilities = predictor.predict(images)             # (n, 3): p_disk, p_indet, p_bulge
"""

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from gamornet import models
from gamornet._utils import checks as _checks
from gamornet._utils.prefetch import prefetch
from gamornet._utils.progress import progress_bar
from gamornet.errors import BlankImageWarning

__all__ = ["BatchResult", "BlankImageWarning", "Predictor", "clear_model_cache", "load_predictor", "predict_mc"]


@dataclass
class BatchResult:
    """What the predictor computed for one batch of images.

    Attributes
    ----------
    probabilities : numpy.ndarray of float32, shape (n, 3)
        [p_disk, p_indet, p_bulge] per image.
    blank : numpy.ndarray of bool, shape (n,)
        Images whose pixels all have one value (blank or saturated): their
        probabilities carry no information about the galaxy.
    columns : dict of str to numpy.ndarray
        Further per-image columns, in :attr:`Predictor.columns` order.
    draws : numpy.ndarray of float32, shape (mc_samples, n, 3), or None
        With MC dropout (``mc_samples`` > 0), every draw; ``probabilities``
        is their mean.
    """

    probabilities: np.ndarray
    blank: np.ndarray
    columns: dict = field(default_factory=dict)
    draws: object = None


@dataclass
class _ArrayBatch:
    images: np.ndarray
    start: int


def _array_batches(images, batch_size):
    for start in range(0, images.shape[0], batch_size):
        yield _ArrayBatch(np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32), start)


def _blank(images):
    flat = images.reshape(len(images), -1)
    return flat.min(axis=1) == flat.max(axis=1)


class Predictor:
    """A loaded GaMorNet model that predicts probabilities for batches of images.

    Made by :func:`load_predictor`; see there for the parameters.

    Attributes
    ----------
    model : str
        The model as given: a published name or a path.
    model_path : str
        Its local file (Keras) or checkpoint prefix (TFLearn).
    backend : {'keras', 'tflearn'}
    input_shape : tuple of int
        (x, y, ndim) of the images it takes.
    precision : {'fp32', 'bf16', 'int8'}
        The arithmetic the network runs in (see :mod:`gamornet.inference.precision`).
    columns : tuple of str
        The names of the per-image columns it adds beside the probabilities:
        with MC dropout p_disk_std, p_indet_std, p_bulge_std, entropy and
        mutual_information; with a model card that holds training statistics
        ``out_of_domain`` (:func:`gamornet.models.card.check_domain`: the
        statistics outside the card's central 99% range, ``''`` for an image
        within it).
    mc_samples : int
        MC-dropout draws per image (0: plain, deterministic predictions).
    seed : int or None
        The seed of the MC-dropout masks.
    calibration : gamornet.science.calibration.Calibration or None
        The temperature applied to every probability (to every draw with MC dropout).
    model_card : dict or None
        The model card images are checked against.
    preprocessing : dict or None
        The settings of :func:`gamornet.science.preprocess.preprocess_images`
        applied to every image before the network sees it (None: images as
        they are).
    sources : dict
        Where the preprocessing, calibration and thresholds come from:
        ``{"preprocessing": path or None, "calibration": path or None,
        "thresholds": path or None}`` (None: given by the caller, or none).
    thresholds : gamornet.science.classify.Thresholds or None
        The class thresholds saved in the model folder (``gamornet
        thresholds --save``), which ``gamornet predict`` classifies with by
        default; None when it holds none.
    """

    def __init__(self, engine, model, model_path, backend, input_shape, *, precision="fp32", mc_samples=0,
                 seed=None, calibration=None, model_card=None, preprocessing=None, sources=None, thresholds=None):
        from gamornet.models.card import has_statistics

        self.preprocessing = preprocessing
        self.sources = dict({"preprocessing": None, "calibration": None, "thresholds": None}, **(sources or {}))
        self.thresholds = thresholds
        self._engine = engine
        self.precision = precision
        self.model = model
        self.model_path = model_path
        self.backend = backend
        self.input_shape = tuple(input_shape)
        self.model_card = model_card
        self.columns = ("out_of_domain",) if has_statistics(model_card) else ()
        self._sha256 = None
        self.mc_samples = mc_samples
        self.seed = seed
        self.calibration = calibration
        self._mc_head = None
        if mc_samples:
            from gamornet.inference.mc_dropout import MCDropoutHead
            from gamornet.science.uncertainty import MC_COLUMNS

            # Dropout is on only in this head, built beside the (shared, cached) engine, which stays deterministic.
            self._mc_head = MCDropoutHead.from_head_layers(engine.head_layers, mc_samples, seed)
            self.columns = MC_COLUMNS + self.columns

    @property
    def engine(self):
        """The engine (:class:`gamornet.inference._engine.Engine`); ``ValueError`` once the predictor is closed."""
        if self._engine is None:
            raise ValueError("this predictor is closed: load a new one with gamornet.load_predictor")
        return self._engine

    @property
    def model_sha256(self):
        """The sha256 of the model's weights file (see :func:`gamornet.models.model_sha256`); computed once."""
        if self._sha256 is None:
            self._sha256 = models.model_sha256(self.model_path, self.backend)
        return self._sha256

    def provenance(self):
        """What a table of predictions must record about how it was made.

        Returns
        -------
        dict
            gamornet version, model (as given), its local path and sha256,
            backend, input shape, precision (and, for bf16 and int8, what ran
            the network: ``engine``).
        """
        from gamornet._version import __version__

        described = {
            "gamornet_version": __version__,
            "model": os.fspath(self.model),
            "model_path": self.model_path,
            "model_sha256": self.model_sha256,
            "backend": self.backend,
            "input_shape": list(self.input_shape),
            "precision": self.precision,
            "mc_samples": self.mc_samples,
            "mc_seed": self.seed,
            "calibration": None if self.calibration is None else {
                "temperature": self.calibration.temperature, "fitted_on": self.calibration.fitted_on,
                "file": self.sources["calibration"]},
            "preprocessing": self.preprocessing,
            "preprocessing_file": self.sources["preprocessing"],
            "model_card": None if self.model_card is None else {
                key: self.model_card.get(key) for key in ("trained_by", "n_training_images", "domain_levels")},
        }
        if hasattr(self.engine, "provenance"):
            described["engine"] = self.engine.provenance()
        return described

    def predict_batch(self, images):
        """Predict one batch of images already in memory.

        Parameters
        ----------
        images : numpy.ndarray of shape (n, x, y, ndim)
            Images with finite pixels (not checked here: :meth:`predict` and
            the readers of :mod:`gamornet.io.images` check them).

        Returns
        -------
        BatchResult
        """
        array = self.preprocess(np.asarray(images, dtype=np.float32))
        if getattr(self.engine, "needs_calibration", False) and len(array):
            from gamornet.inference.int8 import DEFAULT_CALIBRATION_SIZE

            self.engine.calibrate(array[:DEFAULT_CALIBRATION_SIZE])
        return self._result(array, array)

    def preprocess(self, images):
        """``images`` (float32, (n, x, y, ndim)) as the network takes them: with :attr:`preprocessing` applied."""
        if self.preprocessing is None or len(images) == 0:
            return images
        from gamornet.science.preprocess import preprocess_images

        return preprocess_images(images, **self.preprocessing)

    def _result(self, tensor, images, probabilities=None):
        """The results of a batch given as a tensor (or array) for the network and as an array (and, when the
        engine has already run it, its probabilities)."""
        if len(images) == 0:
            return BatchResult(np.empty((0, 3), np.float32), np.empty(0, bool),
                               {name: np.empty(0, str if name == "out_of_domain" else np.float32)
                                for name in self.columns},
                               np.empty((self.mc_samples, 0, 3), np.float32) if self.mc_samples else None)
        columns = {}
        if self._mc_head is not None:
            from gamornet.science.uncertainty import summarize_samples

            draws = self._calibrated(self._mc_head(self.engine.features(tensor)))
            summary = summarize_samples(draws)
            columns.update(summary.columns())
            result = BatchResult(summary.mean, _blank(images), columns, draws)
        else:
            if probabilities is None:
                probabilities = self.engine.forward(tensor)
            result = BatchResult(self._calibrated(probabilities), _blank(images), columns)
        if "out_of_domain" in self.columns:
            from gamornet.models.card import check_domain

            columns["out_of_domain"] = check_domain(images, self.model_card).failed
        return result

    def _calibrated(self, probabilities):
        """``probabilities`` (..., 3) with the calibration's temperature applied, when there is one."""
        if self.calibration is None:
            return probabilities
        return self.calibration.apply(probabilities.reshape(-1, 3)).reshape(probabilities.shape)

    def stream(self, batches):
        """The batch loop: predict every batch of an iterable, preparing the next ones in the background.

        While the network works on one batch, a background thread reads the
        next ones (from files, memory maps ...) and converts them into
        TensorFlow tensors.

        Parameters
        ----------
        batches : iterable
            Objects with an ``images`` attribute, a float32 array of shape
            (n, x, y, ndim) (n may be 0), such as the batches of
            :class:`gamornet.io.images.ImageReader`.

        Yields
        ------
        (batch, BatchResult)
            Each batch with its results, in order.
        """
        import tensorflow as tf

        if getattr(self.engine, "needs_calibration", False):
            from gamornet.inference.int8 import calibrated_batches

            # int8 without calibration images: calibrated on the first images of the run, preprocessed.
            batches = calibrated_batches(self.engine, batches,
                                         images_of=lambda batch: self.preprocess(np.asarray(batch.images, np.float32)))

        def prepared():
            for batch in batches:
                # Preprocessed here, in the background thread, like the reading.
                images = self.preprocess(np.asarray(batch.images, dtype=np.float32))
                yield batch, (tf.convert_to_tensor(images) if len(images) else images), images

        prepared_batches = prefetch(prepared(), depth=2)
        if self._mc_head is None and hasattr(self.engine, "forward_stream"):
            # bf16 refines the images near a class boundary in batches collected over several of these.
            items = (((batch, images), tensor) for batch, tensor, images in prepared_batches)
            for (batch, images), probabilities in self.engine.forward_stream(items):
                yield batch, self._result(None, images, probabilities)
            return
        for batch, tensor, images in prepared_batches:
            yield batch, self._result(tensor, images)

    def predict(self, images, batch_size=64, progress=False):
        """Probabilities of a stack of images.

        Parameters
        ----------
        images : numpy.ndarray of shape (n, x, y, ndim)
            The images, with finite pixel values, in the units the model was
            trained on. Memory-mapped arrays are read one batch at a time.
        batch_size : int
            Images per batch; it does not change the results.
        progress : bool
            Show a progress bar on standard error.

        Returns
        -------
        numpy.ndarray of float32, shape (n, 3)
            [p_disk, p_indet, p_bulge] per image, in input order.

        Raises
        ------
        TypeError, ValueError
            Images that are not a 4-D array of finite numbers of the predictor's input shape.

        Warns
        -----
        BlankImageWarning
            Some images have a single pixel value (blank or saturated): their
            probabilities (about 1/3 each) say nothing about a galaxy.
        """
        _checks.check_images(images, self.input_shape, "images")
        batch_size = _checks.check_positive_int(batch_size, "batch_size")
        return self._predict_checked(images, batch_size, progress)

    def predict_mc(self, images, batch_size=64, progress=False, return_samples=False):
        """MC-dropout predictions of a stack of images (the predictor must have ``mc_samples`` > 0).

        Parameters
        ----------
        images, batch_size, progress
            As :meth:`predict`.
        return_samples : bool
            Keep every draw, (mc_samples, n, 3), in the result's ``samples``.

        Returns
        -------
        gamornet.science.uncertainty.MCResult
            ``mean``, ``std``, ``entropy``, ``mutual_information`` (and ``samples``).

        Raises
        ------
        ValueError
            A predictor without MC dropout, or bad images (as :meth:`predict`).
        """
        from gamornet.science.uncertainty import MCResult

        if not self.mc_samples:
            raise ValueError("this predictor makes plain predictions: load it with mc_samples >= 2 for MC dropout")
        _checks.check_images(images, self.input_shape, "images")
        batch_size = _checks.check_positive_int(batch_size, "batch_size")
        mean, columns, draws = self._predict_checked(images, batch_size, progress, keep_columns=True,
                                                     keep_draws=bool(return_samples))
        std = np.stack([columns[name] for name in self.columns[:3]], axis=1)
        return MCResult(mean, std, columns["entropy"], columns["mutual_information"], draws, self.mc_samples)

    def _predict_checked(self, images, batch_size, progress, stacklevel=3, keep_columns=False, keep_draws=False):
        """Probabilities of checked images; with ``keep_columns``, (probabilities, columns, draws or None)."""
        n_images = images.shape[0]
        probabilities = np.empty((n_images, 3), dtype=np.float32)
        blank = np.zeros(n_images, dtype=bool)
        columns = {name: np.empty(n_images, object if name == "out_of_domain" else np.float32)
                   for name in self.columns}
        draws = np.empty((self.mc_samples, n_images, 3), np.float32) if keep_draws else None
        with progress_bar(n_images, "Predicting", enabled=progress) as bar:
            for batch, result in self.stream(_array_batches(images, batch_size)):
                stop = batch.start + len(batch.images)
                probabilities[batch.start : stop] = result.probabilities
                blank[batch.start : stop] = result.blank
                for name in columns:
                    columns[name][batch.start : stop] = result.columns[name]
                if draws is not None:
                    draws[:, batch.start : stop] = result.draws
                bar.update(stop)
        if blank.any():
            indices = np.flatnonzero(blank)
            shown = ", ".join(map(str, indices[:10])) + (" ..." if len(indices) > 10 else "")
            warnings.warn(
                f"{len(indices)} of {n_images} images have the same value in every pixel (blank, or saturated "
                f"everywhere): their probabilities say nothing about a galaxy. Images: {shown}",
                BlankImageWarning,
                stacklevel=stacklevel,
            )
        return (probabilities, columns, draws) if keep_columns else probabilities

    def close(self):
        """Release the model; the predictor cannot be used afterwards. Closing twice is harmless."""
        self._engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        state = "closed" if self._engine is None else "open"
        return (
            f"<gamornet Predictor {os.fspath(self.model)!r} backend={self.backend!r} "
            f"input_shape={self.input_shape} ({state})>"
        )


def load_predictor(model, input_shape=None, backend="keras", *, precision="fp32", calibration_images=None,
                   mc_samples=0, seed=None, calibration="model", model_card=None, thresholds=None,
                   preprocessing="model"):
    """Load a GaMorNet model for prediction.

    Parameters
    ----------
    model : str or os.PathLike
        A published model (``'SDSS_sim'``, ``'SDSS_tl'``, ``'CANDELS_sim'``,
        ``'CANDELS_tl'``), fetched once into the cache (see
        :mod:`gamornet.models`), a model folder (what ``gamornet train``
        writes, see :mod:`gamornet.models.folder`) or a model file: a Keras
        ``.hdf5`` file (in a model folder or not), or a TFLearn checkpoint
        (its prefix, one of its three files, or a folder of checkpoints).
    input_shape : {'SDSS', 'CANDELS'} or tuple of int, optional
        The images' (x, y, ndim). Published models and model folders know
        theirs; a model file outside a model folder needs it.
    backend : {'keras', 'tflearn'}
        The flavour of the model file. Both run on the same Keras engine with
        the backend's own local response normalisation, so the TFLearn models
        give the same probabilities as with tflearn itself.
    mc_samples : int
        0 (default): plain, deterministic predictions. N from 2 to
        :data:`gamornet.inference.mc_dropout.MAX_MC_SAMPLES` (1000): Monte-Carlo
        dropout with N draws per image (see :mod:`gamornet.science.uncertainty`); the
        probabilities are the mean of the draws, and the results gain the
        columns p_disk_std, p_indet_std, p_bulge_std, entropy and
        mutual_information.
    seed : int, optional
        The seed of the MC-dropout masks: the same seed and batches give the
        same numbers. None: fresh masks every time.
    calibration : 'model', None, str, os.PathLike or gamornet.science.calibration.Calibration
        A temperature fitted for this model, applied to every probability.
        ``'model'`` (the default): the model folder's ``calibration.json``
        (``gamornet calibrate --save``), if it has one; None or ``'none'``:
        no calibration; or a file written by ``gamornet calibrate`` (see
        :mod:`gamornet.science.calibration`), or a ``Calibration``. A
        calibration fitted for other weights is refused.
    preprocessing : 'model', None, dict, str or os.PathLike
        What is done to every image before the network sees it
        (:func:`gamornet.science.preprocess.preprocess_images`). ``'model'``
        (the default): what the model folder records (``preprocessing.json``,
        else its model card), none for a published model or a file outside a
        model folder; None or ``'none'``: images as they are; or the settings
        (a dict of :func:`gamornet.science.preprocess.preprocessing_settings`)
        or a JSON file of them (a ``preprocessing.json``). Images are then
        given raw, as they come from the survey; ``calibration_images`` too.
    model_card : None, 'auto', dict or str
        Check every image against a model card (:mod:`gamornet.models.card`)
        and add the column ``out_of_domain``: ``'auto'`` takes the model's own
        card (``model_card.json`` beside a model file; a published model's
        card holds no training statistics, so nothing is checked), or give a
        card or its path. None (the default) checks nothing.
    thresholds : str, tuple, Thresholds or list of them, optional
        For ``precision='bf16'``: the class rules the probabilities will be
        classified with (see :func:`gamornet.science.classify.near_boundaries`).
        The galaxies whose class under them is decided by less than
        :data:`gamornet.inference.bf16.BF16_MARGIN` are predicted again in fp32,
        so that they keep fp32's class. Default: the most probable class and
        the handbook set of the backend and data set (``'keras_SDSS'`` for a
        Keras model of SDSS images ...), what ``gamornet predict`` classifies
        with by default; for another input shape, the most probable class and
        all four handbook sets (:data:`gamornet.inference.bf16.DEFAULT_REFINED_RULES`).
        When the model folder holds thresholds (``gamornet thresholds
        --save``), they replace the handbook set. The fewer the rules, the
        fewer galaxies are predicted twice. Other precisions only check it.

    Returns
    -------
    Predictor

    Raises
    ------
    ValueError, TypeError
        An unknown backend or precision, a missing or invalid input shape,
        calibration images of the wrong shape, ``mc_samples`` of 1, above 1000 or negative, a
        bad seed, unknown thresholds, or MC dropout asked of an int8 network.
    gamornet.errors.CalibrationMismatchError
        A calibration fitted for another model (a ``ValueError``).
    gamornet.errors.MissingDependencyError
        int8 without OpenVINO and NNCF (the extra ``gamornet[fast]``).
    FileNotFoundError
        No such model file.
    gamornet.errors.ModelFileError
        The file is unreadable, corrupt, holds non-finite weights, or holds no
        GaMorNet model of this input shape.
    gamornet.errors.DownloadError, gamornet.errors.CacheIntegrityError
        A published model could not be fetched, or its cached copy changed.
    """
    from gamornet.inference import _engine
    from gamornet.inference import precision as _precision
    from gamornet.inference.bf16 import Refinement

    resolved = models.resolve_model(model, backend, input_shape)
    shape = resolved.input_shape
    precision = _precision.check_precision(precision)
    settings, settings_source = model_preprocessing(preprocessing, resolved)
    if calibration_images is not None:
        _checks.check_images(calibration_images, shape, "calibration_images")
        if settings is not None:
            from gamornet.science.preprocess import preprocess_images

            calibration_images = preprocess_images(calibration_images, **settings)
    mc_samples = _checks.check_positive_int(mc_samples, "mc_samples", allow_zero=True)
    if mc_samples:
        from gamornet.inference.mc_dropout import check_n_samples

        mc_samples = check_n_samples(mc_samples, "mc_samples")
    if mc_samples and precision == "int8":
        raise ValueError(
            "MC dropout runs the network's dense layers with dropout on, which the int8 network does not expose: "
            f"use precision 'fp32' or 'bf16' with mc_samples. Received: precision='int8', mc_samples={mc_samples}"
        )
    seed = _checks.check_seed(seed, allow_none=True)
    _precision.require_engine(precision)  # a missing extra is said before the model is loaded
    saved_thresholds, thresholds_source = resolved.thresholds
    rules = refined_rules(resolved) if thresholds is None else thresholds
    Refinement(rules)  # checks the thresholds
    local_path = resolved.path  # the model file is looked for once every argument is checked
    from gamornet.models.card import resolve_model_card

    card = resolve_model_card(model_card, model if models.is_published_name(model) else local_path, backend, shape)
    calibration, calibration_source = _model_calibration(calibration, resolved)
    engine = _engine.engine_for(local_path, shape, backend)
    if precision != "fp32":
        # A derived engine: the cached fp32 engine is left as it is. bf16 refines near the boundaries of the
        # classes as they will be made: of the calibrated probabilities, when there is a calibration.
        refinement = Refinement(rules, transform=None if calibration is None else calibration.apply)
        engine = _precision.make_engine(
            engine.network, precision, calibration_images=calibration_images, backend=backend,
            cache_folder=os.path.dirname(os.path.abspath(local_path)), model_sha256=resolved.sha256,
            refinement=refinement,
        )  # fmt: skip
    sources = {"preprocessing": settings_source, "calibration": calibration_source, "thresholds": thresholds_source}
    return Predictor(engine, model, local_path, backend, shape, precision=precision, mc_samples=mc_samples, seed=seed,
                     calibration=calibration, model_card=card, preprocessing=settings, sources=sources,
                     thresholds=saved_thresholds)


def refined_rules(resolved):
    """The class rules bf16 refines near when none are given: the most probable class and the handbook set of the
    backend and data set (what ``gamornet predict`` classifies with by default); every handbook set for another
    input shape."""
    from gamornet.science.classify import MOST_PROBABLE, default_threshold_set
    from gamornet.inference.bf16 import DEFAULT_REFINED_RULES

    saved, _ = resolved.thresholds
    if saved is not None:
        return (MOST_PROBABLE, saved)
    if resolved.data_set is None:
        return DEFAULT_REFINED_RULES
    return (MOST_PROBABLE, default_threshold_set(resolved.backend, resolved.data_set))


def _is_none(choice):
    return choice is None or (isinstance(choice, str) and choice == "none")


def model_preprocessing(choice, resolved):
    """(settings or None, their file or None): the preprocessing of ``choice`` for the resolved model.

    ``'model'``: what the model folder records; None or ``'none'``: none; a
    dict of settings; or the path of a JSON file of them.
    """
    from gamornet.models.folder import read_preprocessing_file
    from gamornet.science.preprocess import preprocessing_settings

    if _is_none(choice):
        return None, None
    if isinstance(choice, str) and choice == "model":
        return resolved.preprocessing
    if isinstance(choice, dict):
        try:
            return preprocessing_settings(**choice), None
        except TypeError as error:
            raise ValueError(f"preprocessing: settings that preprocess_images does not take: {error}") from None
    if isinstance(choice, (str, os.PathLike)):
        return read_preprocessing_file(choice), os.fspath(choice)
    raise TypeError("preprocessing must be 'model', None (or 'none'), a dict of preprocessing settings or the path "
                    f"of a JSON file of them. Received an object of type {type(choice).__name__}")  # fmt: skip


def _model_calibration(calibration, resolved):
    """(the :class:`gamornet.science.calibration.Calibration` of the resolved model, checked, or None; its file)."""
    if isinstance(calibration, str) and calibration == "model":
        calibration = resolved.calibration_file
    if _is_none(calibration):
        return None, None
    from gamornet.science import calibration as _calibration
    from gamornet.errors import CalibrationMismatchError

    sha256 = resolved.sha256
    if isinstance(calibration, (str, os.PathLike)):
        return _calibration.load_calibration(calibration, sha256), os.fspath(calibration)
    if not isinstance(calibration, _calibration.Calibration):
        raise TypeError(
            "calibration must be the path of a calibration file (gamornet calibrate --output) or a "
            f"gamornet.science.calibration.Calibration. Received an object of type {type(calibration).__name__}"
        )
    if calibration.model_sha256 != sha256:
        raise CalibrationMismatchError(
            f"the calibration was fitted for another model (sha256 {calibration.model_sha256[:16]}...), but this "
            f"model's sha256 is {sha256[:16]}...: fit one for this model with gamornet calibrate"
        )
    return calibration, None


def predict_mc(images, model, input_shape=None, backend="keras", n_samples=30, batch_size=64, seed=None,
               return_samples=False, progress=False, *, preprocessing="model", calibration="model"):
    """Predict galaxies with MC dropout: probabilities with an uncertainty per galaxy.

    Each image is predicted ``n_samples`` times with GaMorNet's dropout layers
    on (a different random half of the units of the first two fully connected
    layers removed each time); the draws are summarised into a mean, a spread
    and two uncertainties (see the module's documentation). Dropout is on only
    here: :func:`gamornet.keras_module.gamornet_predict_keras` and
    ``gamornet predict`` without ``--mc-samples`` stay deterministic.

    Parameters
    ----------
    images : numpy.ndarray of shape (n, x, y, ndim)
        The images, with finite pixels, as the model takes them.
    model : str or os.PathLike
        A published model (``'SDSS_tl'`` ...) or a model file of ``backend``:
        a Keras ``.hdf5`` file, or a TFLearn checkpoint.
    input_shape : {'SDSS', 'CANDELS'} or tuple of int, optional
        Needed with a model file; published models know theirs.
    backend : {'keras', 'tflearn'}
        The flavour of the model.
    n_samples : int
        Draws per image, >= 1.
    batch_size : int
        Images per batch (the draws of a batch share their dropout masks).
    seed : int, optional
        The same seed, images and batch size give the same numbers; None: fresh draws.
    return_samples : bool
        Also return every draw (``samples``, of shape (n_samples, n, 3)).
    progress : bool
        Show a progress bar on standard error.
    preprocessing, calibration
        As for :func:`load_predictor`: by default what the model folder
        records (images are then given raw).

    Returns
    -------
    MCResult
        ``mean`` and ``std`` (n, 3), ``entropy`` and ``mutual_information`` (n,),
        and ``samples`` when asked for.

    Raises
    ------
    ValueError, TypeError
        ``n_samples`` < 2 or above 1000, a bad seed or batch size, an unknown backend, a
        missing input shape, images not of shape (n, x, y, ndim) of finite
        numbers, or an empty set of images.
    FileNotFoundError, gamornet.errors.ModelFileError
        As :func:`gamornet.load_predictor`.
    """
    from gamornet.inference.mc_dropout import check_n_samples

    n_samples = check_n_samples(n_samples)
    seed = _checks.check_seed(seed, allow_none=True)
    batch_size = _checks.check_positive_int(batch_size, "batch_size")
    return_samples = _checks.check_flag(return_samples, "return_samples")
    if backend not in models.BACKENDS:
        raise ValueError(f"backend must be one of {models.BACKENDS}. Received: backend={backend!r}")
    shape = models.input_shape_of(model, backend, input_shape)
    _checks.check_images(images, shape, "images")
    with load_predictor(model, shape, backend, mc_samples=n_samples, seed=seed, preprocessing=preprocessing,
                        calibration=calibration) as predictor:
        return predictor.predict_mc(images, batch_size, progress=progress, return_samples=return_samples)


def predict_04x(img_array, model_load_path, input_shape, batch_size, individual_arrays, backend, precision="fp32"):
    """The body of the 0.4.x ``gamornet_predict_keras`` and ``gamornet_predict_tflearn``.

    Every argument is checked before the model is loaded; the model is then
    reused from the engine cache when the same file was used before. Images go
    to the network as given (the 0.4.x contract: the caller preprocesses), with
    no calibration; a model folder's preprocessing is only used to warn, once,
    when the images look as if it had not been applied.
    """
    shape = _checks.check_input_shape(input_shape)
    _checks.check_images(img_array, shape)
    batch_size = _checks.check_positive_int(batch_size, "batch_size")
    individual_arrays = _checks.check_flag(individual_arrays, "individual_arrays")
    from gamornet.inference.precision import check_precision

    precision = check_precision(precision)
    with load_predictor(model_load_path, shape, backend, precision=precision, preprocessing=None,
                        calibration=None) as predictor:
        _warn_if_unpreprocessed(img_array, model_load_path, shape, backend)
        predictions = predictor._predict_checked(img_array, batch_size, progress=True, stacklevel=5)
    if individual_arrays:
        return predictions[:, 0], predictions[:, 1], predictions[:, 2]
    return predictions


#: The models whose images were found unpreprocessed once already: warned about once per process.
_WARNED_UNPREPROCESSED = set()


def _warn_if_unpreprocessed(images, model, shape, backend):
    """Warn once per model when a model folder records a preprocessing that the images seem not to have had."""
    from gamornet.errors import PreprocessingWarning
    from gamornet.science.preprocess import describe_preprocessing, unpreprocessed_share

    resolved = models.resolve_model(model, backend, shape)
    settings, source = resolved.preprocessing
    if settings is None:  # a published model, or a file with no folder: nothing recorded, nothing fetched again
        return
    key = os.path.abspath(resolved.path)
    if key in _WARNED_UNPREPROCESSED:
        return
    share = unpreprocessed_share(images, settings)
    if share is None or share < 0.5:
        return
    _WARNED_UNPREPROCESSED.add(key)
    warnings.warn(
        f"{share:.0%} of the first images look unpreprocessed (their {settings['scaling']} is not 1), but the model "
        f"was trained on images preprocessed with {describe_preprocessing(settings)} ({source}). The 0.4.x functions "
        "give images to the network as they are: preprocess them first with gamornet.science.preprocess."
        "preprocess_images(images, **settings), or use gamornet.load_predictor(model) or `gamornet predict`, which "
        "apply the model's preprocessing", PreprocessingWarning, stacklevel=4,
    )  # fmt: skip


def clear_model_cache():
    """Forget the models kept for reuse between calls (``GAMORNET_MODEL_CACHE`` sets how many are kept)."""
    from gamornet.inference import _engine

    _engine.clear_cache()
