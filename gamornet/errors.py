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

__all__ = ["CacheIntegrityError", "CalibrationMismatchError", "DownloadError", "GamornetWarning",
           "UnreachablePurityError"]


class DownloadError(OSError):
    """A published file could not be fetched (network, server or invalid file), or not offline."""


class CacheIntegrityError(OSError):
    """A cached file no longer matches the sha256 and size recorded when it was downloaded."""


class GamornetWarning(UserWarning):
    """Base class of the warnings gamornet gives about data or settings (filter them together)."""


class CalibrationMismatchError(ValueError):
    """A calibration file was fitted on the predictions of another model than the one in use."""


class UnreachablePurityError(ValueError):
    """No probability threshold gives the requested purity on the labelled galaxies.

    Attributes
    ----------
    kind : str
        ``'disk'`` or ``'bulge'``.
    target : float
        The purity asked for.
    best_purity : float
        The highest purity any threshold reaches.
    best_threshold : float
        The lowest threshold that reaches ``best_purity``.
    """

    def __init__(self, message, kind, target, best_purity, best_threshold):
        super().__init__(message)
        self.kind = kind
        self.target = target
        self.best_purity = best_purity
        self.best_threshold = best_threshold
