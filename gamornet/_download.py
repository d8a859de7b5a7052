"""Fetch, cache and verify the published GaMorNet models and data files.

The one downloader of gamornet, used by both backends and the command line.
Backend-neutral: TensorFlow is imported only to check a TFLearn checkpoint.

Files are fetched with ``wget`` (over ``ftp://``, ``http(s)://`` or
``file://``), into a temporary folder inside the cache, checked, and only then
renamed into place, so the cache never holds a partial or invalid file. The
first download of each file records its sha256 and size in a manifest
(``manifest.json`` in the cache); every later use checks the file against it.

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

import collections
import contextlib
import datetime
import errno
import ftplib
import hashlib
import http.client
import json
import os
import pathlib
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import zlib

import numpy as np
import progressbar
import wget

from gamornet import _registry, _tf_logging
from gamornet._atomic import atomic_write
from gamornet.errors import CacheIntegrityError, DownloadError
from gamornet._hdf5 import check_keras_model_file
from gamornet.presets import weight_shapes
from gamornet._progress import CurrentStderr

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

__all__ = [
    "CacheIntegrityError",
    "DownloadError",
    "cache_dir",
    "cached_path",
    "cached_status",
    "check_tflearn_checkpoint",
    "download_timeout",
    "fetch",
    "fetch_file",
    "fetch_model",
    "is_offline",
    "mirror_urls",
    "read_manifest",
]

ENV_CACHE_DIR = "GAMORNET_CACHE_DIR"
ENV_MIRROR = "GAMORNET_MIRROR"
ENV_OFFLINE = "GAMORNET_OFFLINE"
ENV_TIMEOUT = "GAMORNET_TIMEOUT"

#: Seconds to wait for a server to answer (override with GAMORNET_TIMEOUT).
DEFAULT_TIMEOUT_S = 60.0
#: Seconds to wait for another process that is downloading the same files.
LOCK_TIMEOUT_S = 3600.0
#: The manifest of recorded sha256 digests and sizes, in the cache folder.
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

_LOCK_FOLDER = ".locks"
_STAGING_PREFIX = ".download-"
_HASH_CHUNK = 1 << 20
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
_URL_SCHEMES = ("ftp", "http", "https", "file")


#: The state of one cached file, as :func:`cached_status` reports it.
CachedFile = collections.namedtuple(
    "CachedFile", "relative_path local_path exists size sha256 recorded_size recorded_sha256 known_sha256"
)
#: ``state`` is one of 'cached', 'missing', 'partial', 'unrecorded', 'changed'.
CacheStatus = collections.namedtuple("CacheStatus", "state files")


# --------------------------------------------------------------------------- settings


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


# --------------------------------------------------------------------------- entries


def _files_of(entry):
    """(relative path, known sha256 or None) of every file of a registry entry."""
    if isinstance(entry, _registry.PublishedModel):
        return [(path, entry.sha256.get(path)) for path in entry.files]
    if isinstance(entry, _registry.PublishedFile):
        return [(entry.path, entry.sha256)]
    raise TypeError(
        f"expected a published model or data file of gamornet._registry. Received {type(entry).__name__}"
    )


def _load_relative_path(entry):
    return entry.load_path if isinstance(entry, _registry.PublishedModel) else entry.path


def _describe(entry):
    if isinstance(entry, _registry.PublishedModel):
        flavour = "Keras" if entry.backend == "keras" else "TFLearn"
        return f"the {flavour} model {entry.name!r}"
    return f"the data file {entry.name!r}"


def _download_command(entry, force=False):
    command = f"gamornet download {entry.name}"
    if isinstance(entry, _registry.PublishedModel):
        command += f" --backend {entry.backend}"
    return command + (" --force" if force else "")


def _lock_name(entry):
    if isinstance(entry, _registry.PublishedModel):
        return f"{entry.backend}-{entry.name}.lock"
    return f"file-{entry.name}.lock"


def _local(root, relative_path):
    return os.path.join(root, *relative_path.split("/"))


def cached_path(entry):
    """The local path a registry entry has in the cache (whether or not it is there).

    For a TFLearn model, the checkpoint prefix; otherwise the file.
    """
    return _local(cache_dir(), _load_relative_path(entry))


# --------------------------------------------------------------------------- manifest and hashes


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(root=None):
    """The recorded files of the cache: {relative path: {'sha256', 'size', 'source', 'recorded'}}.

    Raises
    ------
    OSError
        The manifest exists but is not a gamornet manifest.
    """
    root = cache_dir() if root is None else root
    path = os.path.join(root, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as stream:
            content = json.load(stream)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise OSError(
            f"the cache manifest {path!r} cannot be read ({error}). Delete it: the cached files are then checked "
            "again and recorded anew at their next use"
        ) from None
    files = content.get("files") if isinstance(content, dict) else None
    if not isinstance(files, dict):
        raise OSError(
            f"the cache manifest {path!r} is not a gamornet manifest. Delete it: the cached files are then "
            "checked again and recorded anew at their next use"
        )
    return files


def _record(root, records):
    """Add ``records`` to the manifest, atomically and under the manifest's lock."""
    with _file_lock(os.path.join(root, _LOCK_FOLDER, "manifest.lock"), LOCK_TIMEOUT_S, "the cache manifest"):
        files = read_manifest(root)
        files.update(records)
        with atomic_write(os.path.join(root, MANIFEST_NAME), "w", encoding="utf-8") as stream:
            json.dump({"format": MANIFEST_FORMAT, "files": files}, stream, indent=1, sort_keys=True)
            stream.write("\n")


def _new_record(path, source):
    return {
        "sha256": _sha256(path),
        "size": os.path.getsize(path),
        "source": source,
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- locking


def _try_lock(descriptor):
    if fcntl is not None:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)


def _unlock(descriptor):
    if fcntl is not None:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
    else:
        msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)


@contextlib.contextmanager
def _file_lock(path, timeout, what):
    """Hold an exclusive lock on ``path`` (created if needed), waiting at most ``timeout`` seconds.

    The operating system releases the lock when its process ends, so a crashed
    download never leaves a stale lock behind.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                _try_lock(descriptor)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
                    raise
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"waited {timeout:g} s for another gamornet process to finish with {what}: it holds the lock "
                    f"file {path!r}. Let that process finish (or stop it), then try again"
                )
            if not announced:
                print(f"gamornet: waiting for another process to finish with {what} ...", file=sys.stderr)
                announced = True
            time.sleep(0.1)
        try:
            yield
        finally:
            _unlock(descriptor)
    finally:
        os.close(descriptor)


# --------------------------------------------------------------------------- validation


def check_tflearn_checkpoint(prefix, input_shape):
    """Check that a TFLearn checkpoint holds GaMorNet's weights for ``input_shape``.

    Reads the index (``<prefix>.index``), every weight variable of the 8
    weighted layers from ``<prefix>.data-00000-of-00001`` (TensorFlow checks
    each tensor's checksum), and parses the graph in ``<prefix>.meta``.
    Imports TensorFlow.

    Parameters
    ----------
    prefix : str
        The checkpoint prefix (the path without the three endings).
    input_shape : tuple of int
        The (x, y, ndim) the model must have been built for.

    Raises
    ------
    OSError
        One of the three files is missing.
    ValueError
        The checkpoint cannot be read, lacks a variable, holds one of the
        wrong shape or holds non-finite weights.
    """
    for suffix in _registry.TFLEARN_CHECKPOINT_SUFFIXES:
        if not os.path.isfile(prefix + suffix):
            raise FileNotFoundError(f"the TFLearn checkpoint {prefix!r} is incomplete: {prefix + suffix!r} is missing")
    tf = _tf_logging.import_tensorflow()
    from google.protobuf.message import DecodeError

    def first_line(error):
        message = getattr(error, "message", None) or str(error)
        return message.strip().splitlines()[0] if message.strip() else type(error).__name__

    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as error:
        raise ValueError(f"the TFLearn checkpoint {prefix!r} cannot be read: {first_line(error)}") from None
    expected_shapes = weight_shapes(input_shape)
    for number, (names, expected) in enumerate(zip(_registry.TFLEARN_WEIGHT_VARIABLES, expected_shapes), start=1):
        for name, shape in zip(names, expected):
            if name not in shapes:
                raise ValueError(
                    f"the TFLearn checkpoint {prefix!r} does not hold a GaMorNet model: it lacks the variable "
                    f"{name!r} of weighted layer {number}"
                )
            if tuple(shapes[name]) != tuple(shape):
                raise ValueError(
                    f"the TFLearn checkpoint {prefix!r} does not hold a GaMorNet model for input shape "
                    f"{tuple(input_shape)}: variable {name!r} has shape {tuple(shapes[name])}, expected {tuple(shape)}"
                )
            try:
                value = reader.get_tensor(name)
            # A short data file gives IndexError; a damaged one, DataLossError.
            except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as error:
                raise ValueError(
                    f"the TFLearn checkpoint {prefix!r} is corrupt: reading {name!r} failed: {first_line(error)}"
                ) from None
            if not np.issubdtype(value.dtype, np.floating) or not np.isfinite(value).all():
                raise ValueError(
                    f"the TFLearn checkpoint {prefix!r} is corrupt: {name!r} holds values that are not finite "
                    "floating-point numbers"
                )
    graph = tf.compat.v1.MetaGraphDef()
    with open(prefix + ".meta", "rb") as stream:
        content = stream.read()
    try:
        graph.ParseFromString(content)
    except DecodeError as error:
        raise ValueError(f"the TFLearn graph file {prefix + '.meta'!r} is corrupt: {error}") from None
    if not graph.graph_def.node:
        raise ValueError(f"the TFLearn graph file {prefix + '.meta'!r} holds no graph")


def _check_data_file(path):
    if os.path.getsize(path) == 0:
        raise ValueError(f"the file {path!r} is empty")
    if path.endswith((".tar.gz", ".tgz")):
        try:
            with tarfile.open(path, "r:gz") as archive:
                # Walking the members decompresses the whole stream, so a truncated archive is caught.
                members = sum(1 for _ in archive)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise ValueError(f"the archive {path!r} is damaged or incomplete: {error}") from None
        if members == 0:
            raise ValueError(f"the archive {path!r} holds no files")


def _validate(entry, load_path):
    """Check the files of ``entry`` found at ``load_path`` (a prefix for TFLearn)."""
    if isinstance(entry, _registry.PublishedModel):
        if entry.backend == "keras":
            check_keras_model_file(load_path, entry.input_shape)
        else:
            check_tflearn_checkpoint(load_path, entry.input_shape)
    else:
        _check_data_file(load_path)


# --------------------------------------------------------------------------- cache state


def cached_status(entry, verify=False):
    """Report whether the files of a registry entry are in the cache, and intact.

    Parameters
    ----------
    entry : PublishedModel or PublishedFile
        A registry entry.
    verify : bool
        Also recompute every sha256 (reads the files); otherwise only sizes
        are compared with the manifest.

    Returns
    -------
    CacheStatus
        ``state`` is 'cached' (all files present and matching the manifest),
        'missing' (none present), 'partial' (some present), 'unrecorded' (all
        present, some not in the manifest: they are checked and recorded at
        their next use) or 'changed' (a file differs from its record).
        ``files`` holds one :data:`CachedFile` per file.
    """
    root = cache_dir()
    manifest = read_manifest(root)
    files = []
    for relative_path, known in _files_of(entry):
        local_path = _local(root, relative_path)
        exists = os.path.isfile(local_path)
        record = manifest.get(relative_path) or {}
        size = os.path.getsize(local_path) if exists else None
        digest = _sha256(local_path) if exists and verify else None
        files.append(CachedFile(relative_path, local_path, exists, size, digest, record.get("size"),
                                record.get("sha256"), known))
    present = [item.exists for item in files]
    if not any(present):
        state = "missing"
    elif not all(present):
        state = "partial"
    elif any(
        (item.recorded_sha256 is not None and item.size != item.recorded_size)
        or (item.sha256 is not None and item.recorded_sha256 is not None and item.sha256 != item.recorded_sha256)
        or (item.sha256 is not None and item.known_sha256 is not None and item.sha256 != item.known_sha256)
        for item in files
    ):
        state = "changed"
    elif any(item.recorded_sha256 is None for item in files):
        state = "unrecorded"
    else:
        state = "cached"
    return CacheStatus(state, files)


def _use_cached(entry, root, adopt):
    """True when every file of ``entry`` is cached and intact.

    Files present but not in the manifest (placed by hand, or a lost manifest)
    are checked like a fresh download and recorded when ``adopt`` is True (the
    caller holds the entry's lock); otherwise the answer is False.

    Raises
    ------
    CacheIntegrityError
        A cached file differs from its record or from the registry's sha256,
        or an unrecorded file fails the checks.
    """
    files = _files_of(entry)
    local_paths = [_local(root, relative_path) for relative_path, _ in files]
    if not all(os.path.isfile(path) for path in local_paths):
        return False
    manifest = read_manifest(root)
    unrecorded = []
    for (relative_path, known), local_path in zip(files, local_paths):
        record = manifest.get(relative_path)
        if record is None:
            unrecorded.append((relative_path, known, local_path))
            continue
        size = os.path.getsize(local_path)
        digest = _sha256(local_path) if size == record.get("size") else None
        if digest != record.get("sha256"):
            now = f"its sha256 is now {digest}" if digest else f"its size is now {size} bytes"
            raise CacheIntegrityError(
                f"the cached file {local_path!r} of {_describe(entry)} has changed since it was recorded "
                f"(from {record.get('source')}): {now}, but was {record.get('sha256')} ({record.get('size')} bytes). "
                f"It is damaged or was modified. Download it again with `{_download_command(entry, force=True)}`"
            )
        if known and digest != known:
            raise CacheIntegrityError(
                f"the cached file {local_path!r} of {_describe(entry)} does not match the published sha256 "
                f"{known} (it has {digest}). Download it again with `{_download_command(entry, force=True)}`"
            )
    if not unrecorded:
        return True
    if not adopt:
        return False
    load_path = _local(root, _load_relative_path(entry))
    try:
        _validate(entry, load_path)
    except (OSError, ValueError) as error:
        raise CacheIntegrityError(
            f"{_describe(entry)} found in the cache at {load_path!r} is not usable: {error}. Delete it, or "
            f"download it again with `{_download_command(entry, force=True)}`"
        ) from None
    records = {}
    for relative_path, known, local_path in unrecorded:
        record = _new_record(local_path, "found in the cache (not downloaded by gamornet)")
        if known and record["sha256"] != known:
            raise CacheIntegrityError(
                f"the cached file {local_path!r} of {_describe(entry)} does not match the published sha256 "
                f"{known} (it has {record['sha256']}). Download it again with `{_download_command(entry, force=True)}`"
            )
        records[relative_path] = record
    _record(root, records)
    return True


# --------------------------------------------------------------------------- transfer


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


class _MirrorFailed(Exception):
    def __init__(self, url, reason):
        super().__init__(f"{url}: {reason}")


def _remove_stale_staging(folder, prefix):
    """Remove staging folders of this entry left by killed processes (the caller holds the entry's lock)."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            if name.startswith(prefix):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def _download_from(entry, root, base, progress, timeout):
    """Download every file of ``entry`` from one mirror, check them together, then move them into the cache."""
    files = _files_of(entry)
    load_relative = _load_relative_path(entry)
    folder = os.path.dirname(_local(root, load_relative))
    os.makedirs(folder, exist_ok=True)
    prefix = f"{_STAGING_PREFIX}{os.path.basename(load_relative)}-"
    _remove_stale_staging(folder, prefix)
    staging = tempfile.mkdtemp(prefix=prefix, dir=folder)
    try:
        staged = []
        for relative_path, known in files:
            url = base + relative_path
            target = os.path.join(staging, os.path.basename(relative_path))
            try:
                _transfer(url, target, progress, timeout)
            except _TRANSFER_ERRORS as error:
                raise _MirrorFailed(url, _reason(error, timeout)) from None
            record = _new_record(target, url)
            if known and record["sha256"] != known:
                raise _MirrorFailed(url, f"the file's sha256 is {record['sha256']}, but the published one is {known}")
            staged.append((relative_path, target, record))
        try:
            _validate(entry, os.path.join(staging, os.path.basename(load_relative)))
        except (OSError, ValueError) as error:
            urls = " and ".join(base + relative_path for relative_path, _ in files)
            message = str(error).replace(staging + os.sep, "")
            raise _MirrorFailed(urls, f"the downloaded file is not valid: {message}") from None
        # The TFLearn index goes last: a checkpoint is usable only once all its files are in place.
        for relative_path, target, _ in sorted(staged, key=lambda item: item[0].endswith(".index")):
            os.replace(target, _local(root, relative_path))
        _record(root, {relative_path: record for relative_path, _, record in staged})
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _not_cached_offline(entry, root, bases):
    lines = [
        f"{_describe(entry)} is not in the cache, and {ENV_OFFLINE} is set, so gamornet does not use the network.",
    ]
    for relative_path, _ in _files_of(entry):
        lines.append(f"  download URL: {bases[0] + relative_path}")
        lines.append(f"  cache path:   {_local(root, relative_path)}")
    once = " (or use the model once)" if isinstance(entry, _registry.PublishedModel) else ""
    lines.append(
        f"To get it: unset {ENV_OFFLINE} and run `{_download_command(entry)}`{once}; or "
        "download the file(s) by hand from the URL(s) above and place them at the cache path(s); or set "
        f"{ENV_MIRROR} to a mirror that holds a copy (an ftp://, http(s):// or file:// URL, or a local folder, "
        f"laid out like {_registry.DEFAULT_BASE_URL})."
    )
    return "\n".join(lines)


def fetch(entry, force=False, progress=True):
    """Return the local path of a published model or data file, downloading it if needed.

    Parameters
    ----------
    entry : PublishedModel or PublishedFile
        A registry entry (see :mod:`gamornet._registry`).
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
        is not cached and ``GAMORNET_OFFLINE`` is set. Nothing is left in the
        cache.
    CacheIntegrityError
        A cached file no longer matches its recorded sha256 and size.
    TimeoutError
        Another process held the download lock for longer than
        ``LOCK_TIMEOUT_S``.
    ValueError
        A malformed ``GAMORNET_MIRROR``, ``GAMORNET_OFFLINE`` or ``GAMORNET_TIMEOUT``.
    """
    _files_of(entry)  # a TypeError for anything but a registry entry
    offline = is_offline()
    bases = mirror_urls()
    timeout = download_timeout()
    root = cache_dir()
    load_path = _local(root, _load_relative_path(entry))
    if not force:
        # Lock-free when the cache is complete, so read-only shared caches work.
        with contextlib.suppress(CacheIntegrityError):
            if _use_cached(entry, root, adopt=False):
                return load_path
    if offline:
        if force:
            raise DownloadError(
                f"cannot download {_describe(entry)} again: {ENV_OFFLINE} is set, so gamornet does not use the "
                "network. Unset it to download"
            )
        if not any(os.path.isfile(_local(root, path)) for path, _ in _files_of(entry)):
            raise DownloadError(_not_cached_offline(entry, root, bases))
    with _file_lock(os.path.join(root, _LOCK_FOLDER, _lock_name(entry)), LOCK_TIMEOUT_S, _describe(entry)):
        # Another process may have finished the download while this one waited.
        if not force and _use_cached(entry, root, adopt=True):
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
    lines = [f"could not download {_describe(entry)}:"]
    lines += [f"  {failure}" for failure in failures]
    lines.append(
        f"Nothing was written to the cache ({root}). Check the network connection, or set {ENV_MIRROR} to a "
        "mirror of the public data release (ftp://, http(s):// or file:// URLs, or local folders, separated by "
        "spaces), or download the file(s) by hand and place them at "
        + ", ".join(repr(_local(root, path)) for path, _ in _files_of(entry))
    )
    raise DownloadError("\n".join(lines))


def fetch_model(name, backend, force=False, progress=True):
    """Return the local path of a published model, downloading it on first use.

    Parameters
    ----------
    name : {'SDSS_sim', 'SDSS_tl', 'CANDELS_sim', 'CANDELS_tl'}
        The published model.
    backend : {'keras', 'tflearn'}
        Which flavour.
    force, progress : bool
        See :func:`fetch`.

    Returns
    -------
    str
        For Keras, the cached ``.hdf5`` file; for TFLearn, the checkpoint
        prefix (the three files ``<prefix>.data-00000-of-00001``,
        ``<prefix>.index`` and ``<prefix>.meta`` are in the cache).

    Raises
    ------
    ValueError
        An unknown name or backend.
    DownloadError, CacheIntegrityError, TimeoutError
        See :func:`fetch`.
    """
    return fetch(_registry.published_model(name, backend), force=force, progress=progress)


def fetch_file(name, force=False, progress=True):
    """Return the local path of a published data file (tutorial data, prediction tables).

    Parameters
    ----------
    name : str
        A name of ``gamornet._registry.PUBLISHED_FILES`` (``'predict_images'`` ...).
    force, progress : bool
        See :func:`fetch`.

    Raises
    ------
    ValueError
        An unknown name.
    DownloadError, CacheIntegrityError, TimeoutError
        See :func:`fetch`.
    """
    return fetch(_registry.published_file(name), force=force, progress=progress)
