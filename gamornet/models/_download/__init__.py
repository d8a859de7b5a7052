"""The one downloader of gamornet: fetch, cache and verify the published models and data files.

Split by job:

- :mod:`gamornet.models._download.settings`: the environment variables
  (``GAMORNET_CACHE_DIR``, ``GAMORNET_MIRROR``, ``GAMORNET_OFFLINE``,
  ``GAMORNET_TIMEOUT``);
- :mod:`gamornet.models._download.cache`: where files live in the cache, the manifest
  of sha256 digests and sizes, the locks;
- :mod:`gamornet.models._download.transfer`: the transfer with ``wget``, staging,
  validation by the registry entry, mirrors.

Users reach it through :mod:`gamornet.models`. Backend-neutral: TensorFlow is
imported only to check a TFLearn checkpoint.
"""

from gamornet.models._download.cache import CachedFile, CacheStatus, cached_path, cached_status, read_manifest
from gamornet.models._download.settings import cache_dir, download_timeout, is_offline, mirror_urls
from gamornet.models._download.transfer import fetch
from gamornet.models._registry import published_file, published_model
from gamornet.errors import CacheIntegrityError, DownloadError

__all__ = [
    "CacheIntegrityError",
    "CacheStatus",
    "CachedFile",
    "DownloadError",
    "cache_dir",
    "cached_path",
    "cached_status",
    "download_timeout",
    "fetch",
    "fetch_file",
    "fetch_model",
    "is_offline",
    "mirror_urls",
    "read_manifest",
]


def fetch_model(name, backend, force=False, progress=True):
    """Return the local path of a published model, downloading it on first use (see :func:`gamornet.models.fetch`)."""
    return fetch(published_model(name, backend), force=force, progress=progress)


def fetch_file(name, force=False, progress=True):
    """Return the local path of a published data file, downloading it on first use."""
    return fetch(published_file(name), force=force, progress=progress)
