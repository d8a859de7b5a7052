"""Fetching published files with ``wget``: progress, timeouts, mirrors, staging and validation.

Files are fetched over ``ftp://``, ``http(s)://`` or ``file://`` into a staging
folder inside the cache, checked by their registry entry, and only then renamed
into place, so the cache never holds a partial or invalid file.
"""

import contextlib
import ftplib
import http.client
import os
import shutil
import socket
import tempfile
import urllib.error

import progressbar
import wget

from gamornet.models._download import cache
from gamornet.models._download.settings import (
    ENV_MIRROR, ENV_OFFLINE, ENV_TIMEOUT, cache_dir, download_timeout, is_offline, mirror_urls,
)
from gamornet._utils.progress import CurrentStderr
from gamornet.models._registry import DEFAULT_BASE_URL
from gamornet.errors import CacheIntegrityError, DownloadError

__all__ = ["fetch"]

_STAGING_PREFIX = ".download-"


class _MirrorFailed(Exception):
    """One mirror could not deliver a valid copy of a published entry; the downloader tries the next one."""

    def __init__(self, url, reason):
        super().__init__(f"{url}: {reason}")


class _TransferProgress:
    """A progress bar (progressbar2, on standard error) fed by wget's ``bar`` callback.

    It returns an empty string to wget, so wget itself prints nothing.
    """

    def __init__(self, label):
        self.label = label
        self.bar = None
        self.calls = 0

    def __call__(self, current, total, width):
        self.calls += 1
        if self.bar is None:
            if total and total > 0:
                widgets = [f"{self.label}: ", progressbar.Percentage(), " ", progressbar.Bar(), " ",
                           progressbar.DataSize(), " ", progressbar.FileTransferSpeed(), " ", progressbar.ETA()]
                maximum = total
            else:
                widgets = [f"{self.label}: ", progressbar.AnimatedMarker(), " ", progressbar.Timer()]
                maximum = progressbar.UnknownLength
            self.bar = progressbar.ProgressBar(max_value=maximum, widgets=widgets, fd=CurrentStderr(),
                                               redirect_stdout=False)
            self.bar.start()
        if total and total > 0:
            self.bar.update(max(0, min(current, total)))
        else:
            self.bar.update(self.calls)
        return ""

    def finish(self, complete):
        if self.bar is not None:
            self.bar.finish(dirty=not complete)


@contextlib.contextmanager
def _socket_timeout(seconds):
    """urllib (under wget) takes no timeout argument: set the default one while fetching."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


_TRANSFER_ERRORS = (OSError, EOFError, ftplib.Error, http.client.HTTPException)


def _reason(error, timeout):
    """Plain words for a failed transfer."""
    if isinstance(error, urllib.error.ContentTooShortError):
        return f"the transfer stopped early ({error.reason})"
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP error {error.code} ({error.reason})"
    if isinstance(error, urllib.error.URLError):
        # urllib wraps the cause: an exception, or (FTP) a message with the exception chained.
        cause = error.reason if isinstance(error.reason, BaseException) else error.__cause__
        if cause is None:
            return str(error.reason)
        error = cause
    if isinstance(error, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s (set {ENV_TIMEOUT} to wait longer)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (no server is listening there)"
    if isinstance(error, ftplib.Error):
        return f"the FTP server answered: {error}"
    if isinstance(error, socket.gaierror):
        return f"the server's name cannot be resolved ({error})"
    return f"{type(error).__name__}: {error}"


def _transfer(url, target, progress, timeout):
    """Fetch ``url`` into the absolute path ``target`` with wget.

    wget writes a temporary file named after its ``out`` argument in the
    current folder; given an absolute ``out``, that temporary file lands beside
    ``target`` instead (inside the staging folder), so nothing is written to
    the working directory.
    """
    bar = _TransferProgress(os.path.basename(target)) if progress else None
    complete = False
    try:
        with _socket_timeout(timeout):
            saved = wget.download(url, out=target, bar=bar)
        complete = True
    finally:
        if bar is not None:
            bar.finish(complete)
    if os.path.abspath(saved) != target:
        os.replace(saved, target)


def _remove_stale_staging(folder, prefix):
    """Remove staging folders of this entry left by killed processes (the caller holds the entry's lock)."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            if name.startswith(prefix):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def _make_folders(folder):
    """Create ``folder`` and its missing parents; return the ones created, deepest first."""
    created = []
    while not os.path.isdir(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    for path in reversed(created):
        os.makedirs(path, exist_ok=True)
    return created


def _remove_empty(folders):
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _stage(entry, staging, base, progress, timeout):
    """Fetch every file of ``entry`` from ``base`` into ``staging``; return (relative path, path, record) of each."""
    staged = []
    for relative_path, known in entry.file_hashes():
        url = base + relative_path
        target = os.path.join(staging, os.path.basename(relative_path))
        try:
            _transfer(url, target, progress, timeout)
        except _TRANSFER_ERRORS as error:
            raise _MirrorFailed(url, _reason(error, timeout)) from None
        record = cache.new_record(target, url)
        if known and record["sha256"] != known:
            raise _MirrorFailed(url, f"the file's sha256 is {record['sha256']}, but the published one is {known}")
        staged.append((relative_path, target, record))
    try:
        entry.validate(os.path.join(staging, os.path.basename(entry.load_path)))
    except (OSError, ValueError) as error:
        urls = " and ".join(base + relative_path for relative_path, _ in entry.file_hashes())
        message = str(error).replace(staging + os.sep, "")
        raise _MirrorFailed(urls, f"the downloaded file is not valid: {message}") from None
    return staged


def _download_from(entry, root, base, progress, timeout):
    """Download every file of ``entry`` from one mirror, check them together, then move them into the cache.

    On failure nothing is left behind: neither the staged files nor the
    folders this attempt created.
    """
    folder = os.path.dirname(cache.path_in_cache(root, entry.load_path))
    prefix = f"{_STAGING_PREFIX}{os.path.basename(entry.load_path)}-"
    try:
        created = _make_folders(folder)
    except OSError as error:
        raise cache.unwritable_cache(error) from None
    _remove_stale_staging(folder, prefix)
    staging = tempfile.mkdtemp(prefix=prefix, dir=folder)
    moved = False
    try:
        staged = _stage(entry, staging, base, progress, timeout)
        # The TFLearn index goes last: a checkpoint is usable only once all its files are in place.
        for relative_path, target, _ in sorted(staged, key=lambda item: item[0].endswith(".index")):
            os.replace(target, cache.path_in_cache(root, relative_path))
            moved = True
        cache.record_files(root, {relative_path: record for relative_path, _, record in staged})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not moved:
            _remove_empty(created)


def _not_cached_offline(entry, root, bases):
    lines = [
        f"{entry.describe()} is not in the cache, and {ENV_OFFLINE} is set, so gamornet does not use the network.",
    ]
    for relative_path, _ in entry.file_hashes():
        lines.append(f"  download URL: {bases[0] + relative_path}")
        lines.append(f"  cache path:   {cache.path_in_cache(root, relative_path)}")
    once = " (or use the model once)" if hasattr(entry, "backend") else ""
    lines.append(
        f"To get it: unset {ENV_OFFLINE} and run `{entry.download_command()}`{once}; or "
        "download the file(s) by hand from the URL(s) above and place them at the cache path(s); or set "
        f"{ENV_MIRROR} to a mirror that holds a copy (an ftp://, http(s):// or file:// URL, or a local folder, "
        f"laid out like {DEFAULT_BASE_URL})."
    )
    return "\n".join(lines)


def _check_entry(entry):
    if not callable(getattr(entry, "file_hashes", None)) or not callable(getattr(entry, "validate", None)):
        raise TypeError(
            f"expected a published model or data file of gamornet.models. Received {type(entry).__name__}"
        )


def fetch(entry, force=False, progress=True):
    """Return the local path of a published model or data file, downloading it if needed.

    Parameters
    ----------
    entry : PublishedModel or PublishedFile
        A registry entry (see :mod:`gamornet.models`).
    force : bool
        Download again even when a valid copy is cached, and replace it.
    progress : bool
        Show a progress bar (on standard error) while downloading.

    Returns
    -------
    str
        The cached file; for a TFLearn model, the checkpoint prefix.

    Raises
    ------
    DownloadError
        Every mirror failed (the message names each URL and why), or the file
        is not cached and ``GAMORNET_OFFLINE`` is set. No file is left in the
        cache.
    CacheIntegrityError
        A cached file no longer matches its recorded sha256 and size.
    TimeoutError
        Another process held the download lock for longer than
        ``LOCK_TIMEOUT_S``.
    OSError
        The cache folder cannot be written (the message says to set ``GAMORNET_CACHE_DIR``).
    ValueError
        A malformed ``GAMORNET_MIRROR``, ``GAMORNET_OFFLINE`` or ``GAMORNET_TIMEOUT``.
    """
    _check_entry(entry)
    offline = is_offline()
    bases = mirror_urls()
    timeout = download_timeout()
    root = cache_dir()
    load_path = cache.path_in_cache(root, entry.load_path)
    if not force:
        # Lock-free when the cache is complete, so read-only shared caches work.
        try:
            if cache.use_cached(entry, root, adopt=False):
                return load_path
        except CacheIntegrityError:
            # Another process may be replacing these files right now (`--force` does so under the
            # entry's lock, one file at a time): look again under the lock before calling them damaged.
            pass
    if offline:
        if force:
            raise DownloadError(
                f"cannot download {entry.describe()} again: {ENV_OFFLINE} is set, so gamornet does not use the "
                "network. Unset it to download"
            )
        if not any(os.path.isfile(cache.path_in_cache(root, path)) for path, _ in entry.file_hashes()):
            raise DownloadError(_not_cached_offline(entry, root, bases))
    with cache.entry_lock(root, entry):
        # Another process may have finished the download while this one waited.
        if not force and cache.use_cached(entry, root, adopt=True):
            return load_path
        if offline:
            raise DownloadError(_not_cached_offline(entry, root, bases))
        failures = []
        for base in bases:
            try:
                _download_from(entry, root, base, progress, timeout)
                return load_path
            except _MirrorFailed as failure:
                failures.append(str(failure))
    lines = [f"could not download {entry.describe()}:"]
    lines += [f"  {failure}" for failure in failures]
    lines.append(
        f"Nothing was written to the cache ({root}). Check the network connection, or set {ENV_MIRROR} to a "
        "mirror of the public data release (ftp://, http(s):// or file:// URLs, or local folders, separated by "
        "spaces), or download the file(s) by hand and place them at "
        + ", ".join(repr(cache.path_in_cache(root, path)) for path, _ in entry.file_hashes())
    )
    raise DownloadError("\n".join(lines))
