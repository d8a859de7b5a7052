"""Every public exception and warning of gamornet, in one place.

Errors subclass the built-in ``OSError`` or ``ValueError`` that describes them,
so ``except OSError`` and ``except ValueError`` keep working; warnings
subclass :class:`GamornetWarning`, itself a ``UserWarning``, so they can be
filtered together::

    import warnings
    from gamornet.errors import GamornetWarning
    warnings.simplefilter("ignore", GamornetWarning)

Backend-neutral: imports neither TensorFlow nor tflearn.
"""

__all__ = ["CacheIntegrityError", "DownloadError", "GamornetWarning", "MissingDependencyError", "PrecisionWarning"]


class DownloadError(OSError):
    """A published file could not be fetched (network, server or invalid file), or not offline."""


class CacheIntegrityError(OSError):
    """A cached file no longer matches the sha256 and size recorded when it was downloaded."""


class GamornetWarning(UserWarning):
    """Base class of the warnings gamornet gives about data or settings (filter them together)."""


class MissingDependencyError(ImportError, ValueError):
    """An option needs an optional dependency that is not installed (the message says which extra brings it).

    It is both an ``ImportError`` and a ``ValueError`` (the option's value cannot be used with this
    installation), so the command line reports it as a plain error.
    """


class PrecisionWarning(GamornetWarning):
    """A reduced precision (bf16, int8) gives less on this machine than on one with the instructions for it."""
