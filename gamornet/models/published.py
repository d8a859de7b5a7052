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
    "resolve",
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
        file, or a TFLearn checkpoint (its prefix, one of its three files, or a
        folder of checkpoints, whose newest is taken).
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
    import os

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}. Received: backend={backend!r}")
    if is_published_name(model):
        from gamornet.models._download import fetch_model

        return fetch_model(model, backend)
    if backend == "tflearn":
        from gamornet.models.formats.tflearn_checkpoint import resolve_prefix

        return resolve_prefix(model)
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
    return sha256_of(model_files(local_path, backend)[0])
