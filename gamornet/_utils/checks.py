"""Argument checks shared by both backends.

Backend-neutral: imports neither TensorFlow nor tflearn. Every check raises
``TypeError`` or ``ValueError`` with a message that says what was expected and
what was received, before any network is built.
"""

import numbers
import os

import numpy as np

from gamornet.presets import INPUT_SHAPES, N_WEIGHTED_LAYERS

# Finite-pixel checks run over this many images at a time, so that checking a
# large (or memory-mapped) array never allocates a mask of the whole array.
_CHECK_CHUNK = 256


def check_input_shape(input_shape):
    """Resolve ``input_shape`` to a tuple of three positive ints.

    Parameters
    ----------
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        A preset name or a tuple (x, y, ndim).

    Returns
    -------
    tuple of int
        (x, y, ndim).

    Raises
    ------
    ValueError
        An unknown preset name, or a tuple that is not three positive ints.
    TypeError
        Anything that is neither a string nor a sequence.
    """
    if isinstance(input_shape, str):
        if input_shape in INPUT_SHAPES:
            return INPUT_SHAPES[input_shape]
        raise ValueError(
            "input_shape must be 'SDSS', 'CANDELS' or a tuple (x, y, ndim). "
            f"Received: input_shape={input_shape!r}"
        )
    if not isinstance(input_shape, (tuple, list, np.ndarray)):
        raise TypeError(
            "input_shape must be 'SDSS', 'CANDELS' or a tuple (x, y, ndim). "
            f"Received an object of type {type(input_shape).__name__}: {input_shape!r}"
        )
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
        isinstance(size, numbers.Integral) and not isinstance(size, bool) and size > 0 for size in shape
    ):
        raise ValueError(
            "input_shape must be 'SDSS', 'CANDELS' or a tuple of three positive ints (x, y, ndim). "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(int(size) for size in shape)


def _missing_axis_hint(shape, input_shape, name):
    """How to add the axis an array lacks, when one is all it lacks."""
    x, y, ndim = input_shape
    if tuple(shape) == (x, y, ndim):
        return f" A single image needs a leading axis of length 1: {name}[np.newaxis]"
    if len(shape) == 3 and ndim == 1 and tuple(shape[1:]) == (x, y):
        return f" A stack of single-band images of shape (n, x, y) needs a trailing axis: {name}[..., np.newaxis]"
    if tuple(shape) == (x, y) and ndim == 1:
        return f" A single single-band image needs two axes more: {name}[np.newaxis, ..., np.newaxis]"
    return ""


def check_images(images, input_shape, name="img_array"):
    """Check an image array against the network's input shape.

    Parameters
    ----------
    images : numpy.ndarray of shape (n, x, y, ndim)
        The images. Memory-mapped arrays are checked in chunks.
    input_shape : tuple of int
        The resolved (x, y, ndim) of the network.
    name : str
        The parameter name used in error messages.

    Returns
    -------
    numpy.ndarray
        The same array (never a copy).

    Raises
    ------
    TypeError
        Not a numpy array, or not of a real numeric dtype.
    ValueError
        Not 4-D, empty, (x, y, ndim) different from ``input_shape``, or holding
        NaN or infinite pixels.
    """
    if not isinstance(images, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array of shape (n, x, y, ndim). "
            f"Received an object of type {type(images).__name__}"
        )
    if not (np.issubdtype(images.dtype, np.number) and not np.issubdtype(images.dtype, np.complexfloating)):
        raise TypeError(f"{name} must hold real numbers (pixel values). Received dtype {images.dtype}")
    if images.ndim != 4:
        raise ValueError(
            f"{name} must be 4-D, of shape (n, x, y, ndim) = (n, {', '.join(map(str, input_shape))}). "
            f"Received an array of shape {images.shape}.{_missing_axis_hint(images.shape, input_shape, name)}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} holds no images. Received an array of shape {images.shape}")
    if tuple(images.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"{name} holds images of shape (x, y, ndim) = {tuple(images.shape[1:])}, "
            f"but input_shape is {tuple(input_shape)}"
        )
    if np.issubdtype(images.dtype, np.floating):
        for start in range(0, images.shape[0], _CHECK_CHUNK):
            chunk = images[start : start + _CHECK_CHUNK]
            finite = np.isfinite(chunk)
            if not finite.all():
                bad_image = start + int(np.flatnonzero(~finite.reshape(len(chunk), -1).all(axis=1))[0])
                raise ValueError(
                    f"{name} must hold finite pixel values, but image {bad_image} holds NaN or infinite "
                    "pixels. Replace them (for example with the sky level) before calling GaMorNet"
                )
    return images


def check_labels(labels, n_images, name="training_labels"):
    """Check one-hot labels of shape (n, 3).

    Raises
    ------
    TypeError
        Not a numpy array.
    ValueError
        Not of shape (n_images, 3), not finite, or rows that do not sum to 1.
    """
    if not isinstance(labels, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array of one-hot labels of shape (n, 3). "
            f"Received an object of type {type(labels).__name__}"
        )
    if labels.ndim != 2 or labels.shape[1] != 3:
        raise ValueError(
            f"{name} must have shape (n, 3): one-hot [disk, indeterminate, bulge] labels. "
            f"Received an array of shape {labels.shape}"
        )
    if labels.shape[0] != n_images:
        raise ValueError(f"{name} holds {labels.shape[0]} labels, but there are {n_images} images")
    values = np.asarray(labels, dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any() or not np.allclose(values.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(
            f"{name} must hold one-hot labels: disk [1, 0, 0], indeterminate [0, 1, 0], bulge [0, 0, 1] "
            "(rows of non-negative numbers summing to 1)"
        )
    return labels


def check_bools(bools, name, presets):
    """Resolve a list of 8 layer bools, or the name of a preset.

    Parameters
    ----------
    bools : str or sequence of bool
        A preset name (a key of ``presets``) or exactly 8 booleans.
    name : str
        The parameter name used in error messages.
    presets : dict
        The allowed preset names and their bools.

    Returns
    -------
    list of bool
        The 8 bools, in the order of layers [2, 5, 8, 9, 10, 13, 15, 17].

    Raises
    ------
    ValueError
        An unknown preset name, or not exactly 8 booleans.
    TypeError
        Elements that are not booleans.
    """
    allowed = ", ".join(repr(preset) for preset in presets)
    if isinstance(bools, str):
        if bools in presets:
            return list(presets[bools])
        raise ValueError(f"{name} must be {allowed} or a list of 8 booleans. Received: {name}={bools!r}")
    try:
        values = list(bools)
    except TypeError:
        raise TypeError(
            f"{name} must be {allowed} or a list of 8 booleans. "
            f"Received an object of type {type(bools).__name__}"
        ) from None
    if len(values) != N_WEIGHTED_LAYERS:
        raise ValueError(
            f"{name} must hold exactly 8 booleans, one per weighted layer [2, 5, 8, 9, 10, 13, 15, 17]. "
            f"Received {len(values)} values: {values!r}"
        )
    if not all(isinstance(value, (bool, np.bool_)) for value in values):
        raise TypeError(f"{name} must hold booleans (True or False). Received: {values!r}")
    return [bool(value) for value in values]


def check_flag(value, name):
    """Check a True/False parameter (numpy booleans accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_positive_int(value, name, allow_zero=False):
    """Check a positive (or non-negative) integer parameter."""
    low = 0 if allow_zero else 1
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        kind = "a non-negative integer" if allow_zero else "a positive integer"
        raise ValueError(f"{name} must be {kind}. Received: {name}={value!r}")
    return int(value)


def check_hdu(hdu, name="hdu"):
    """Check a FITS HDU number: None (the first HDU with data) or an integer >= 0 (0 is the primary HDU).

    Parameters
    ----------
    hdu : int or None
        The HDU number.
    name : str
        Its name in the message (``'hdu'``, or ``'--hdu'`` on the command line).

    Returns
    -------
    int or None

    Raises
    ------
    ValueError
        Anything but None or a non-negative integer.
    """
    if hdu is None:
        return None
    return check_positive_int(hdu, name, allow_zero=True)


def check_non_negative_float(value, name):
    """Check a finite, non-negative real parameter (momentum, decay)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0. Received: {name}={value!r}")
    return float(value)


def check_model_file(path, name="model_load_path"):
    """Check that ``path`` names an existing, readable file.

    Raises
    ------
    TypeError
        ``path`` is not a string or path-like.
    OSError
        The file does not exist or is not a regular file.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path to a file. Received an object of type {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: no model file found at {path!r}")
    return path


#: The optimisers of the Keras train functions: GaMorNet's stochastic gradient descent with momentum (Ghosh et al.
#: 2020), and Adam (Kingma & Ba 2015), which learns faster in a short run from scratch.
OPTIMIZERS = ("sgd", "adam")


def check_optimizer(optimizer):
    """``optimizer`` if it names one of :data:`OPTIMIZERS`."""
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be 'sgd' (stochastic gradient descent with momentum, as GaMorNet was "
                         f"trained) or 'adam' (Kingma & Ba 2015). Received: optimizer={optimizer!r}")  # fmt: skip
    return optimizer


def resolve_nesterov(documented, alias):
    """Reconcile the two spellings of the Nesterov flag of the 0.4.x docs.

    The 0.4.x signature of ``gamornet_train_keras`` spells it ``nestorov``;
    its parameter list, and every other function, spell it ``nesterov``. Each
    function keeps its documented spelling (default False) and takes the other
    as a keyword-only alias (default None).

    Raises
    ------
    ValueError
        The documented flag set to True and the alias to False.
    TypeError
        A value that is not a boolean.
    """
    for value in (documented, alias):
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"nesterov (or nestorov) must be True or False. Received: {value!r}")
    if alias is None:
        return bool(documented)
    if documented and not alias:
        raise ValueError(
            "nesterov and nestorov are two spellings of one flag; give one of them. "
            f"Received {documented!r} and {alias!r}"
        )
    return bool(alias)


def check_training_data(training_imgs, training_labels, validation_imgs, validation_labels, input_shape):
    """Check the training and validation images and their one-hot labels.

    Raises
    ------
    TypeError, ValueError
        As :func:`check_images` and :func:`check_labels`, naming the argument.
    """
    check_images(training_imgs, input_shape, "training_imgs")
    check_labels(training_labels, training_imgs.shape[0], "training_labels")
    check_images(validation_imgs, input_shape, "validation_imgs")
    check_labels(validation_labels, validation_imgs.shape[0], "validation_labels")


def check_folder(path, name, expected="the path of a folder"):
    """Check that ``path`` is a path that is not an existing file; the folder itself may not exist yet.

    Returns
    -------
    str
        The path (``os.fspath``).

    Raises
    ------
    TypeError
        Not a string or path-like.
    NotADirectoryError
        The path names an existing file.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be {expected}. Received an object of type {type(path).__name__}")
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{name} must be a folder, but {path!r} is a file")
    return path


def check_save_folder(files_save_path):
    """Check ``files_save_path`` without creating anything; return the folder, or None for '/dev/null'.

    Raises
    ------
    TypeError
        Not a string or path-like.
    NotADirectoryError
        The path names an existing file.
    """
    if isinstance(files_save_path, (str, os.PathLike)) and os.path.normpath(os.fspath(files_save_path)) == os.devnull:
        return None
    return check_folder(files_save_path, "files_save_path", "the path of a folder (or '/dev/null' to save nothing)")


def resolve_save_folder(files_save_path):
    """Resolve ``files_save_path`` to a folder, created if missing, or None for '/dev/null'.

    Raises
    ------
    TypeError
        Not a string or path-like.
    NotADirectoryError
        The path names an existing file.
    OSError
        The folder cannot be created.
    """
    path = check_save_folder(files_save_path)
    if path is not None:
        os.makedirs(path, exist_ok=True)
    return path


def check_seed(seed, name="seed", allow_none=False):
    """Check a random seed: an integer >= 0 (or None, where it means fresh draws each time); return it as an int."""
    if seed is None and allow_none:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        expected = "None or an integer >= 0" if allow_none else "an integer >= 0"
        raise ValueError(f"{name} must be {expected}. Received: {name}={seed!r}")
    return int(seed)
