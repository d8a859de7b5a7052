"""The cache of published files: where each file lives, the manifest of sha256 and sizes, the locks.

The first download of each file records its sha256 and size in a manifest
(``manifest.json`` in the cache folder); every later use checks the file
against it. Locks (in ``.locks/``) keep two processes from downloading the
same files at once; the operating system releases them when a process ends.
"""

import collections
import contextlib
import datetime
import errno
import json
import os
import sys
import time

from gamornet._utils.atomic import atomic_write
from gamornet._utils.hashing import file_sha256 as sha256_of
from gamornet.models._download.settings import ENV_CACHE_DIR, cache_dir
from gamornet.errors import CacheIntegrityError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

__all__ = [
    "CacheStatus", "CachedFile", "LOCK_TIMEOUT_S", "MANIFEST_NAME", "cached_path", "cached_status", "entry_lock",
    "file_lock", "new_record", "path_in_cache", "read_manifest", "record_files", "sha256_of", "use_cached",
]

#: Seconds to wait for another process that is downloading the same files.
LOCK_TIMEOUT_S = 3600.0
#: The manifest of recorded sha256 digests and sizes, in the cache folder.
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

_LOCK_FOLDER = ".locks"

#: The state of one cached file, as :func:`cached_status` reports it.
CachedFile = collections.namedtuple(
    "CachedFile", "relative_path local_path exists size sha256 recorded_size recorded_sha256 known_sha256"
)
#: ``state`` is one of 'cached', 'missing', 'partial', 'unrecorded', 'changed'.
CacheStatus = collections.namedtuple("CacheStatus", "state files")


def path_in_cache(root, relative_path):
    """The path in the cache folder ``root`` of a file of the data release."""
    return os.path.join(root, *relative_path.split("/"))


def cached_path(entry):
    """The local path a registry entry has in the cache (whether or not it is there).

    For a TFLearn model, the checkpoint prefix; otherwise the file.
    """
    return path_in_cache(cache_dir(), entry.load_path)


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


def record_files(root, records):
    """Add ``records`` to the manifest, atomically and under the manifest's lock."""
    with file_lock(os.path.join(root, _LOCK_FOLDER, "manifest.lock"), LOCK_TIMEOUT_S, "the cache manifest"):
        files = read_manifest(root)
        files.update(records)
        with atomic_write(os.path.join(root, MANIFEST_NAME), "w", encoding="utf-8") as stream:
            json.dump({"format": MANIFEST_FORMAT, "files": files}, stream, indent=1, sort_keys=True)
            stream.write("\n")


def new_record(path, source):
    return {
        "sha256": sha256_of(path),
        "size": os.path.getsize(path),
        "source": source,
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


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


def unwritable_cache(error):
    """An ``OSError`` that says the cache folder cannot be written, and which setting to change."""
    where = f" ({error.filename!r})" if getattr(error, "filename", None) else ""
    unwritable = type(error)(
        f"the gamornet cache folder {cache_dir()!r} cannot be written{where}: {error.strerror}. Set "
        f"{ENV_CACHE_DIR} to a folder you can write (for example export {ENV_CACHE_DIR}=$HOME/gamornet-cache), "
        "or ask the owner of the shared cache to download the model there once"
    )
    unwritable.errno = error.errno
    return unwritable


def entry_lock(root, entry):
    """The lock held while the files of a registry entry are downloaded or adopted into the cache."""
    return file_lock(os.path.join(root, _LOCK_FOLDER, entry.lock_name), LOCK_TIMEOUT_S, entry.describe())


@contextlib.contextmanager
def file_lock(path, timeout, what):
    """Hold an exclusive lock on ``path`` (created if needed), waiting at most ``timeout`` seconds.

    The operating system releases the lock when its process ends, so a crashed
    download never leaves a stale lock behind.
    """
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise unwritable_cache(error) from None
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
    for relative_path, known in entry.file_hashes():
        local_path = path_in_cache(root, relative_path)
        exists = os.path.isfile(local_path)
        record = manifest.get(relative_path) or {}
        size = os.path.getsize(local_path) if exists else None
        digest = sha256_of(local_path) if exists and verify else None
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


def use_cached(entry, root, adopt):
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
    files = entry.file_hashes()
    local_paths = [path_in_cache(root, relative_path) for relative_path, _ in files]
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
        digest = sha256_of(local_path) if size == record.get("size") else None
        if digest != record.get("sha256"):
            now = f"its sha256 is now {digest}" if digest else f"its size is now {size} bytes"
            raise CacheIntegrityError(
                f"the cached file {local_path!r} of {entry.describe()} has changed since it was recorded "
                f"(from {record.get('source')}): {now}, but was {record.get('sha256')} ({record.get('size')} bytes). "
                f"It is damaged or was modified. Download it again with `{entry.download_command(force=True)}`"
            )
        if known and digest != known:
            raise CacheIntegrityError(
                f"the cached file {local_path!r} of {entry.describe()} does not match the published sha256 "
                f"{known} (it has {digest}). Download it again with `{entry.download_command(force=True)}`"
            )
    if not unrecorded:
        return True
    if not adopt:
        return False
    load_path = path_in_cache(root, entry.load_path)
    try:
        entry.validate(load_path)
    except (OSError, ValueError) as error:
        raise CacheIntegrityError(
            f"{entry.describe()} found in the cache at {load_path!r} is not usable: {error}. Delete it, or "
            f"download it again with `{entry.download_command(force=True)}`"
        ) from None
    records = {}
    for relative_path, known, local_path in unrecorded:
        record = new_record(local_path, "found in the cache (not downloaded by gamornet)")
        if known and record["sha256"] != known:
            raise CacheIntegrityError(
                f"the cached file {local_path!r} of {entry.describe()} does not match the published sha256 "
                f"{known} (it has {record['sha256']}). Download it again with `{entry.download_command(force=True)}`"
            )
        records[relative_path] = record
    record_files(root, records)
    return True


