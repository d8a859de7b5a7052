"""Settings of the downloader, read from the environment at each use.

Environment variables
---------------------
GAMORNET_CACHE_DIR
    The cache folder. Default: ``$XDG_CACHE_HOME/gamornet``, else
    ``~/.cache/gamornet``. Files keep their relative paths of the public data
    release inside it.
GAMORNET_MIRROR
    One or more base URLs that replace ``ftp://ftp.astro.yale.edu/pub/aghosh/``,
    separated by whitespace or commas and tried in order, e.g.
    ``https://example.org/gamornet/ ftp://127.0.0.1:2121/pub/aghosh/``. Each
    is an ``ftp://``, ``http://``, ``https://`` or ``file://`` URL, or a local
    folder, laid out like the FTP server. To fall back on the original server,
    list it too.
GAMORNET_OFFLINE
    ``1`` (or ``true``, ``yes``, ``on``): never use the network; use cached
    files only, and fail with a clear message when one is missing.
GAMORNET_TIMEOUT
    Seconds to wait for a server to answer before giving up on it (default 60).
"""

import os
import pathlib
import re
import urllib.parse

import numpy as np

from gamornet.models import _registry

__all__ = [
    "ENV_CACHE_DIR", "ENV_MIRROR", "ENV_OFFLINE", "ENV_TIMEOUT", "cache_dir", "download_timeout", "is_offline",
    "mirror_urls",
]

ENV_CACHE_DIR = "GAMORNET_CACHE_DIR"
ENV_MIRROR = "GAMORNET_MIRROR"
ENV_OFFLINE = "GAMORNET_OFFLINE"
ENV_TIMEOUT = "GAMORNET_TIMEOUT"

#: Seconds to wait for a server to answer (override with GAMORNET_TIMEOUT).
DEFAULT_TIMEOUT_S = 60.0
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
_URL_SCHEMES = ("ftp", "http", "https", "file")


def cache_dir():
    """The folder where published files are cached (not created here).

    Returns
    -------
    str
        ``$GAMORNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/gamornet``, else
        ``~/.cache/gamornet``, as an absolute path.
    """
    configured = os.environ.get(ENV_CACHE_DIR, "").strip()
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG specification says relative paths are to be ignored.
    if xdg and os.path.isabs(os.path.expanduser(xdg)):
        return os.path.join(os.path.expanduser(xdg), "gamornet")
    return os.path.join(os.path.expanduser("~"), ".cache", "gamornet")


def mirror_urls():
    """The base URLs to fetch from, in the order they are tried.

    Returns
    -------
    list of str
        The bases given in ``GAMORNET_MIRROR`` (separated by whitespace or
        commas; local folders become ``file://`` URLs), each ending in ``/``;
        ``[DEFAULT_BASE_URL]`` when it is unset.

    Raises
    ------
    ValueError
        A mirror that is neither an ftp://, http://, https:// or file:// URL
        nor a local folder.
    """
    configured = os.environ.get(ENV_MIRROR, "")
    bases = [item for item in re.split(r"[\s,]+", configured) if item]
    if not bases:
        return [_registry.DEFAULT_BASE_URL]
    urls = []
    for base in bases:
        scheme = urllib.parse.urlsplit(base).scheme.lower()
        if not scheme or (len(scheme) == 1 and os.name == "nt"):
            folder = os.path.abspath(os.path.expanduser(base))
            if not os.path.isdir(folder):
                raise ValueError(
                    f"{ENV_MIRROR} must list base URLs (ftp://, http://, https://, file://) or existing local "
                    f"folders. Received {base!r}, which is neither a URL nor a folder"
                )
            base = pathlib.Path(folder).as_uri()
        elif scheme not in _URL_SCHEMES:
            raise ValueError(
                f"{ENV_MIRROR} must list base URLs with a scheme among {', '.join(_URL_SCHEMES)}, or local "
                f"folders. Received {base!r}"
            )
        urls.append(base if base.endswith("/") else base + "/")
    return urls


def is_offline():
    """Whether ``GAMORNET_OFFLINE`` forbids the network.

    Raises
    ------
    ValueError
        A value other than 1/0, true/false, yes/no, on/off (or empty).
    """
    value = os.environ.get(ENV_OFFLINE, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"{ENV_OFFLINE} must be 1 (never use the network) or 0. Received {ENV_OFFLINE}={os.environ[ENV_OFFLINE]!r}"
    )


def download_timeout():
    """Seconds to wait for a server to answer: ``GAMORNET_TIMEOUT``, default 60.

    Raises
    ------
    ValueError
        A value that is not a positive number of seconds.
    """
    value = os.environ.get(ENV_TIMEOUT, "").strip()
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not np.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{ENV_TIMEOUT} must be a positive number of seconds. Received {ENV_TIMEOUT}={value!r}")
    return seconds
