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

from gamornet.models.published import (
    BACKENDS,
    CITATION,
    DEFAULT_BASE_URL,
    PUBLISHED_FILES,
    PUBLISHED_MODELS,
    PUBLISHED_MODEL_NAMES,
    PublishedFile,
    PublishedModel,
    ResolvedModel,
    cache_dir,
    cached_status,
    fetch,
    fetch_file,
    is_published_name,
    list_files,
    list_models,
    model_files,
    model_sha256,
    published_file,
    published_model,
    input_shape_of,
    resolve,
    resolve_model,
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
