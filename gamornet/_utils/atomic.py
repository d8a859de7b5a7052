"""Atomic file writing: every file gamornet writes goes through here.

A file is written under a temporary name in its destination folder and renamed
into place only once complete, so an interrupted run never leaves a
half-written file behind. The file gets the permissions ``open()`` would give
it: those of the file it replaces, else 0666 less the process's umask (0644
under the usual umask 022), so colleagues who share a results folder or a
cache can read it. Backend-neutral.
"""

import contextlib
import errno
import os
import socket
import stat
import tempfile
import threading

#: Where Linux (4.7 and later) shows the process's umask without changing it.
_STATUS_FILE = "/proc/self/status"

_umask_lock = threading.Lock()


def _temporary_prefix(path):
    return ".tmp-" + os.path.basename(path) + "-"


def _owner():
    """``<host>.<pid>``: which process writes a temporary file, so that another can tell it is stale."""
    return f"{socket.gethostname().replace('-', '_').replace('.', '_')}.{os.getpid()}"


def is_running(pid):
    """Whether process ``pid`` runs on this machine (under any user)."""
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM
    return True


def remove_stale_temporaries(path):
    """Remove the temporary files of ``path`` left by processes of this host that no longer run.

    A process killed outright (SIGKILL, a node's crash) cannot remove its
    temporary file; the next run that writes the same file does. Files of
    running processes, and of other hosts sharing the folder, are left alone.

    Returns
    -------
    list of str
        The files removed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    prefix = _temporary_prefix(path)
    host = _owner().split(".")[0]
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            if not name.startswith(prefix):
                continue
            owner = name[len(prefix):].split("-", 1)[0]
            owner_host, _, pid = owner.rpartition(".")
            if owner_host == host and pid.isdigit() and not is_running(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, name))
                    removed.append(os.path.join(folder, name))
    return removed


def is_temporary_name(name):
    """Whether a file name is that of a temporary file of :func:`atomic_path`."""
    return name.startswith(".tmp-")


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    Parameters
    ----------
    path : str
        The final path. Its folder must exist.
    suffix : str
        Ending of the temporary name, for writers that choose a format by
        extension (``'.hdf5'``, ``'.fits'``).

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=_temporary_prefix(path) + _owner() + "-", suffix=suffix, dir=folder)
    os.close(handle)
    try:
        yield temporary
        _give_open_permissions(temporary, path)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Open a temporary file for writing; rename it to ``path`` when the block ends without error."""
    if "w" not in mode:
        raise ValueError(f"atomic_write only writes whole files; mode must contain 'w'. Received: mode={mode!r}")
    with atomic_path(path) as temporary:
        with open(temporary, mode, **open_kwargs) as stream:
            yield stream


def _give_open_permissions(temporary, path):
    """Give ``temporary`` (created 0600 by mkstemp) the permissions ``open(path, 'w')`` would give."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~current_umask()
    # A file system that has no permissions (some network or FAT mounts) refuses chmod: the file stays usable.
    with contextlib.suppress(OSError):
        os.chmod(temporary, mode)


def current_umask():
    """The process's umask, without changing it where the system allows.

    Returns
    -------
    int
        The umask, such as ``0o022``. Read from ``/proc/self/status`` where
        the system shows it, so no other thread ever sees it changed;
        elsewhere it is set and restored at once, under a lock, to the
        restrictive 0o077 meanwhile.
    """
    try:
        with open(_STATUS_FILE, encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask
