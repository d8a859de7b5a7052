"""The published GaMorNet models of Ghosh et al. (2020): list them, fetch them, find the cache.

The four published models (``SDSS_sim``, ``SDSS_tl``, ``CANDELS_sim``,
``CANDELS_tl``) exist for both backends. They are fetched once from the public
data release (or the mirrors in ``GAMORNET_MIRROR``) into a local cache, checked,
and recorded with their sha256; every later use checks them again. See the
handbook page of the documentation for the cache, mirrors and offline use.

Backend-neutral: importing this module imports neither TensorFlow nor tflearn.

Examples
--------
>>> from gamornet import models
>>> [entry.name for entry in models.list_models(backend="keras")]
['SDSS_sim', 'SDSS_tl', 'CANDELS_sim', 'CANDELS_tl']
>>> path = models.fetch("SDSS_tl")          # doctest: +SKIP
"""

import dataclasses
import functools
import os
import threading

from gamornet.models._registry import (
    BACKENDS,
    CITATION,
    DEFAULT_BASE_URL,
    PUBLISHED_FILES,
    PUBLISHED_MODEL_NAMES,
    PUBLISHED_MODELS,
    PublishedFile,
    PublishedModel,
    is_published_name,
    published_file,
    published_model,
)

__all__ = [
    "BACKENDS",
    "CITATION",
    "DEFAULT_BASE_URL",
    "PUBLISHED_FILES",
    "PUBLISHED_MODELS",
    "PUBLISHED_MODEL_NAMES",
    "PublishedFile",
    "PublishedModel",
    "ResolvedModel",
    "cache_dir",
    "cached_status",
    "fetch",
    "fetch_file",
    "is_published_name",
    "list_files",
    "list_models",
    "model_files",
    "model_sha256",
    "published_file",
    "published_model",
    "input_shape_of",
    "resolve",
    "resolve_model",
]


def list_models(backend=None):
    """The published models, one entry per (name, backend).

    Parameters
    ----------
    backend : {'keras', 'tflearn'}, optional
        Only the models of this backend; by default both.

    Returns
    -------
    list of PublishedModel
        Each with its ``name``, ``backend``, ``input_shape``, ``files``
        (relative to the data release), ``description`` and ``citation``.

    Raises
    ------
    ValueError
        An unknown backend.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None. Received: backend={backend!r}")
    return [entry for entry in PUBLISHED_MODELS if backend is None or entry.backend == backend]


def list_files():
    """The published data files (tutorial images, prediction tables), as :class:`PublishedFile` entries."""
    return list(PUBLISHED_FILES)


def fetch(name, backend="keras", force=False, progress=True):
    """Return the local path of a published model, downloading it into the cache on first use.

    Parameters
    ----------
    name : {'SDSS_sim', 'SDSS_tl', 'CANDELS_sim', 'CANDELS_tl'}
        The published model.
    backend : {'keras', 'tflearn'}
        Which flavour.
    force : bool
        Download again even when a valid copy is cached.
    progress : bool
        Show a progress bar (on standard error) while downloading.

    Returns
    -------
    str
        For Keras, the cached ``.hdf5`` file; for TFLearn, the checkpoint
        prefix (its three files are in the cache).

    Raises
    ------
    ValueError
        An unknown name or backend, or malformed ``GAMORNET_*`` settings.
    gamornet.errors.DownloadError
        Every mirror failed, or the model is not cached and ``GAMORNET_OFFLINE`` is set.
    gamornet.errors.CacheIntegrityError
        A cached file no longer matches its recorded sha256 and size.
    """
    from gamornet.models import _download

    return _download.fetch(published_model(name, backend), force=force, progress=progress)


def fetch_file(name, force=False, progress=True):
    """Return the local path of a published data file, downloading it on first use.

    Parameters
    ----------
    name : str
        The ``name`` of an entry of :func:`list_files` (``'predict_images'`` ...).
    force, progress : bool
        As for :func:`fetch`.
    """
    from gamornet.models import _download

    return _download.fetch(published_file(name), force=force, progress=progress)


def cache_dir():
    """The folder where published files are cached (not created here).

    ``$GAMORNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/gamornet``, else
    ``~/.cache/gamornet``, as an absolute path.
    """
    from gamornet.models import _download

    return _download.cache_dir()


def cached_status(name, backend="keras", verify=False):
    """Whether a published model is in the cache, and intact.

    Parameters
    ----------
    name, backend
        As for :func:`fetch`.
    verify : bool
        Also recompute every sha256 (reads the files).

    Returns
    -------
    CacheStatus
        ``state`` is one of 'cached', 'missing', 'partial', 'unrecorded' or
        'changed'; ``files`` describes each file.
    """
    from gamornet.models import _download

    return _download.cached_status(published_model(name, backend), verify=verify)


def resolve(model, backend="keras"):
    """The local path of a model: a published name is fetched into the cache; a path is checked.

    Parameters
    ----------
    model : str or os.PathLike
        A published name (``'SDSS_tl'`` ...) or a path: a Keras ``.hdf5``
        file or a model folder (:mod:`gamornet.models.folder`: its
        ``trained_model.hdf5``), or a TFLearn checkpoint (its prefix, one of
        its three files, or a folder of checkpoints, whose newest is taken).
    backend : {'keras', 'tflearn'}

    Returns
    -------
    str
        The Keras file, or the TFLearn checkpoint prefix.

    Raises
    ------
    TypeError
        ``model`` is neither a name nor a path.
    FileNotFoundError
        No such file or checkpoint.
    ValueError
        An unknown backend.
    gamornet.errors.DownloadError, gamornet.errors.CacheIntegrityError
        As :func:`fetch`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}. Received: backend={backend!r}")
    if is_published_name(model):
        from gamornet.models._download import fetch_model

        return fetch_model(model, backend)
    if backend == "tflearn":
        from gamornet.models.formats.tflearn_checkpoint import resolve_prefix

        return resolve_prefix(model)
    if isinstance(model, (str, os.PathLike)) and os.path.isdir(model):
        from gamornet.models.folder import find_weights

        return find_weights(model)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            "model_load_path must be a path to a Keras model file or one of "
            f"{', '.join(map(repr, PUBLISHED_MODEL_NAMES))}. Received an object of type {type(model).__name__}"
        )
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model_load_path: no model file found at {path!r}")
    return path


def model_files(local_path, backend="keras"):
    """The files that hold a model's weights: the Keras file, or a TFLearn checkpoint's index and data files."""
    if backend == "tflearn":
        from gamornet.models.formats.tflearn_checkpoint import SUFFIXES

        return [local_path + suffix for suffix in SUFFIXES[:2]]
    return [local_path]


def model_sha256(local_path, backend="keras"):
    """The sha256 that identifies a model: of the Keras file, or of a TFLearn checkpoint's data file.

    Parameters
    ----------
    local_path : str
        As returned by :func:`resolve`.
    backend : {'keras', 'tflearn'}

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    from gamornet.models._download.cache import sha256_of

    # The first file holds the weights: the Keras file, or a checkpoint's data file (its index only points into it).
    path = os.path.abspath(model_files(local_path, backend)[0])
    status = os.stat(path)
    key = (path, status.st_size, status.st_mtime_ns)
    with _sha256_lock:
        if key in _sha256_cache:
            return _sha256_cache[key]
    digest = sha256_of(path)
    with _sha256_lock:
        if len(_sha256_cache) >= _SHA256_CACHE_SIZE:
            _sha256_cache.pop(next(iter(_sha256_cache)))
        _sha256_cache[key] = digest
    return digest


# A model's sha256, computed once per file: keyed on the file's path, size and modification time, so that a file
# replaced in place is hashed again.
_sha256_cache = {}
_sha256_lock = threading.Lock()
_SHA256_CACHE_SIZE = 64


def input_shape_of(model, backend="keras", input_shape=None):
    """The input shape of a model: as given (checked), else the published model's.

    Parameters
    ----------
    model : str or os.PathLike
        A published name or a model file.
    backend : {'keras', 'tflearn'}
    input_shape : {'SDSS', 'CANDELS'} or tuple of int, optional
        Needed for a model file outside a model folder (a folder's model
        card records it). A given shape that does not fit the file is
        refused when the file is read (:mod:`gamornet.models.formats` names
        the layer that does not fit).

    Returns
    -------
    tuple of int
        (x, y, ndim).

    Raises
    ------
    TypeError
        ``model`` is neither a published name nor a path.
    ValueError
        A model file without ``input_shape``, or an invalid shape.
    """
    from gamornet._utils import checks

    if input_shape is not None:
        return checks.check_input_shape(input_shape)
    if is_published_name(model):
        return tuple(published_model(model, backend).input_shape)
    folder = _model_folder(model, backend)
    if folder is not None:
        from gamornet.models.folder import folder_input_shape

        shape = folder_input_shape(folder)
        if shape is not None:
            return checks.check_input_shape(shape)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be the path of a model file or one of {', '.join(map(repr, PUBLISHED_MODEL_NAMES))}. "
            f"Received an object of type {type(model).__name__} (save a Keras model to a file first)"
        )  # fmt: skip
    raise ValueError(
        f"input_shape is needed with a model file ({os.fspath(model)!r}): 'SDSS', 'CANDELS' or a tuple "
        "(x, y, ndim). (Published models, such as 'SDSS_tl', and model folders with a model card know their input "
        "shape.)"
    )


def _model_folder(model, backend):
    """The model folder (:mod:`gamornet.models.folder`) of a Keras model given as a folder or a file in one."""
    if backend != "keras" or is_published_name(model):
        return None
    from gamornet.models.folder import folder_of

    return folder_of(model)


def _data_set_of(shape):
    from gamornet.presets import INPUT_SHAPES

    return next((name for name, preset in INPUT_SHAPES.items() if tuple(preset) == tuple(shape)), None)


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """One model, resolved once and passed down: what it is, where its file is, and its sha256.

    Made by :func:`resolve_model`. The path is found (a published model
    fetched into the cache) the first time :attr:`path` is read, and the
    sha256 computed the first time :attr:`sha256` is read (once per file).

    Attributes
    ----------
    model : str or os.PathLike
        As given: a published name or a path.
    backend : {'keras', 'tflearn'}
    input_shape : tuple of int
    data_set : {'SDSS', 'CANDELS'} or None
        The data set whose handbook thresholds fit the model: a published
        model's, or the preset whose input shape a model file has; None for
        any other shape.
    published : bool
        Whether ``model`` names a published model.
    folder : str or None
        The model folder (:mod:`gamornet.models.folder`) of a Keras model
        given as a folder or as a file in one: what it holds (preprocessing,
        calibration, thresholds) is what predictions apply by default.
    """

    model: object
    backend: str
    input_shape: tuple
    data_set: object
    published: bool
    folder: object = None

    @functools.cached_property
    def path(self):
        """The local path: the Keras file, or the TFLearn checkpoint prefix (as :func:`resolve`)."""
        return resolve(self.model, self.backend)

    @functools.cached_property
    def sha256(self):
        """The sha256 that identifies the model (as :func:`model_sha256`)."""
        return model_sha256(self.path, self.backend)

    @functools.cached_property
    def preprocessing(self):
        """(settings or None, the file they come from or None): the preprocessing the model folder records."""
        from gamornet.models.folder import read_preprocessing

        return read_preprocessing(self.folder)

    @functools.cached_property
    def calibration_file(self):
        """The model folder's ``calibration.json``, or None."""
        from gamornet.models.folder import saved_calibration

        return saved_calibration(self.folder)

    @functools.cached_property
    def thresholds(self):
        """(gamornet.science.classify.Thresholds, path) saved in the model folder, checked against the weights'
        sha256; (None, None) without (``CalibrationMismatchError`` for thresholds of other weights)."""
        from gamornet.models.folder import saved_thresholds

        return saved_thresholds(self.folder, self.sha256) if self.folder is not None else (None, None)


def resolve_model(model, backend="keras", input_shape=None):
    """Resolve a model's name or file, its backend and input shape into a :class:`ResolvedModel`.

    Nothing is read or fetched here; :attr:`ResolvedModel.path` does that
    when first used.

    Parameters
    ----------
    model : str or os.PathLike
        A published name (``'SDSS_tl'`` ...), a model file, or a model folder
        (:mod:`gamornet.models.folder`).
    backend : {'keras', 'tflearn'}
    input_shape : {'SDSS', 'CANDELS'} or tuple of int, optional
        As for :func:`input_shape_of`.

    Returns
    -------
    ResolvedModel

    Raises
    ------
    ValueError, TypeError
        As :func:`input_shape_of`, or an unknown backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}. Received: backend={backend!r}")
    shape = input_shape_of(model, backend, input_shape)
    published = is_published_name(model)
    data_set = _data_set_of(published_model(model, backend).input_shape if published else shape)
    return ResolvedModel(model, backend, shape, data_set, published, _model_folder(model, backend))
