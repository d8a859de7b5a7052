"""Atomic file writing: every file gamornet writes goes through here.

A file is written under a temporary name in its destination folder and renamed
into place only once complete, so an interrupted run never leaves a
half-written file behind. Backend-neutral.
"""

import contextlib
import os
import tempfile


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
    handle, temporary = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", suffix=suffix, dir=folder)
    os.close(handle)
    try:
        yield temporary
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
