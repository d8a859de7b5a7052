"""Every public exception and warning of gamornet, in one place.

Errors subclass the built-in ``OSError`` or ``ValueError`` that describes them,
so ``except OSError`` and ``except ValueError`` keep working; warnings
subclass :class:`GamornetWarning`, itself a ``UserWarning``, so they can be
filtered together::

    import warnings
    from gamornet.errors import GamornetWarning
    warnings.simplefilter("ignore", GamornetWarning)

The few exception classes used only inside gamornet, to carry a failure to
where it is reported, live here too, with a leading underscore.

Backend-neutral: imports neither TensorFlow nor tflearn.
"""

__all__ = [
    "BadInputError",
    "BlankImageWarning",
    "CacheIntegrityError",
    "CalibrationMismatchError",
    "DownloadError",
    "FolderInUseError",
    "GamornetWarning",
    "MissingDependencyError",
    "ModelFileError",
    "PixelScaleWarning",
    "PrecisionWarning",
    "PreprocessingWarning",
    "ResumeMismatchError",
    "TrainingDivergedWarning",
    "Terminated",
    "UnreachablePurityError",
]


class DownloadError(OSError):
    """A published file could not be fetched (network, server or invalid file), or not offline."""


class CacheIntegrityError(OSError):
    """A cached file no longer matches the sha256 and size recorded when it was downloaded."""


class GamornetWarning(UserWarning):
    """Base class of the warnings gamornet gives about data or settings (filter them together)."""


class ModelFileError(OSError, ValueError):
    """A model file that cannot be read, is incomplete or corrupt, or holds no GaMorNet model of the input shape.

    It is both an ``OSError`` (the file is unusable) and a ``ValueError`` (its
    content is not what was asked for), so either ``except`` clause catches it.
    """


class BadInputError(ValueError):
    """An input image that cannot be classified (unreadable, of the wrong shape, or with NaN pixels) stopped a run."""


class ResumeMismatchError(ValueError):
    """An output folder holds part of a run made with another model, other settings or other inputs.

    :func:`gamornet.survey.distributed.predict_catalogue` finishes a run only with
    what started it, so that every part of the output was made the same way.
    """


class FolderInUseError(OSError):
    """An output folder is in use by another run (which holds its lock file), or was taken over by one.

    :func:`gamornet.survey.distributed.predict_catalogue` holds a lock on its
    output folder for the whole run, so that two runs never write into one
    folder together.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by Slurm at a time limit, by ``timeout`` and by ``kill``), raised where the work is.

    The ``gamornet`` command raises it in place of the signal. It is a
    ``KeyboardInterrupt``, so every clean-up that Ctrl-C runs (keeping partial
    results, removing temporary files) runs for SIGTERM too.
    """


class BlankImageWarning(GamornetWarning):
    """Images whose pixels all have one value (blank, or saturated everywhere): their probabilities say nothing."""


class PreprocessingWarning(GamornetWarning):
    """Images given to a 0.4.x function look unlike what the model's preprocessing makes (see the model folder)."""


class TrainingDivergedWarning(GamornetWarning):
    """Training diverged: the loss rose above a uniform guess, or the network predicts one class for nearly all."""


class PixelScaleWarning(GamornetWarning):
    """Survey images are cut at a pixel scale other than the network's (resampling was turned off)."""


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


class MissingDependencyError(ImportError, ValueError):
    """An option needs an optional dependency that is not installed (the message says which extra brings it).

    It is both an ``ImportError`` and a ``ValueError`` (the option's value cannot be used with this
    installation), so the command line reports it as a plain error.
    """


class PrecisionWarning(GamornetWarning):
    """A reduced precision (bf16, int8) gives less on this machine than on one with the instructions for it."""
