"""Explicit image preprocessing for training GaMorNet from scratch.

Galaxy images span orders of magnitude in brightness. A network trained from
scratch learns faster and generalises better when every image is brought to a
common scale (and, optionally, stretched so the faint outer disk is visible
beside the bright core). This module does that, per image, on request only.

Important
---------
Nothing in GaMorNet applies this preprocessing implicitly.
:func:`gamornet.keras_module.gamornet_predict_keras` and the other prediction
functions pass images to the network exactly as given. The published models of
Ghosh et al. (2020) were trained on images that were *not* preprocessed in
this way: give them images as the 0.4.x documentation describes, not the
output of this module. A model you train on preprocessed images needs the
*same* preprocessing (same ``stretch``, ``softening``, ``scaling`` and
``border``) applied to every image you later predict with it;
:func:`preprocessing_settings` returns these settings as a dictionary to save
beside the model.

Backend-neutral: imports neither TensorFlow nor tflearn.
"""

import numbers

import numpy as np

__all__ = ["STRETCHES", "SCALINGS", "check_border", "check_stack", "describe_preprocessing", "estimate_background",
           "preprocess_images", "preprocessing_settings", "unpreprocessed_share"]

#: Stretches: ``'none'`` (linear), ``'asinh'`` (Lupton et al. 1999, AJ 118, 1406) and ``'log'``.
STRETCHES = ("none", "asinh", "log")

#: Per-image scalings: ``'peak'`` (divide by the brightest pixel), ``'sum'`` (divide by the summed positive
#: pixels), ``'zscore'`` (subtract the mean, divide by the standard deviation) and ``'none'``.
SCALINGS = ("peak", "sum", "zscore", "none")

# Images are processed this many at a time, so a memory-mapped stack is never read whole.
_CHUNK = 512


def check_stack(images):
    """Check a stack of images: a numpy array of shape (n, x, y, ndim) of real numbers; return it."""
    if not isinstance(images, np.ndarray):
        raise TypeError(
            "images must be a numpy array of shape (n, x, y, ndim). "
            f"Received an object of type {type(images).__name__}"
        )
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(images.dtype, np.complexfloating):
        raise TypeError(f"images must hold real numbers (pixel values). Received dtype {images.dtype}")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            "images must be a non-empty 4-D array of shape (n, x, y, ndim). "
            f"Received an array of shape {images.shape}"
        )
    return images


def check_border(border, images):
    """Check the width in pixels of the border that measures the background: a positive integer that leaves a
    centre; return it."""
    if isinstance(border, bool) or not isinstance(border, numbers.Integral) or border < 1:
        raise ValueError(f"border must be a positive integer (pixels). Received: border={border!r}")
    smaller_side = min(images.shape[1:3])
    if 2 * border >= smaller_side:
        raise ValueError(
            f"border={border} pixels leaves no inner region in images of {images.shape[1]}x{images.shape[2]} pixels; "
            f"use a border smaller than half the smaller side: at most {(smaller_side - 1) // 2} pixels"
        )
    return int(border)


def estimate_background(images, border=4):
    """Background level and noise of each image, from the pixels of its border.

    A robust estimate: the median of the pixels within ``border`` pixels of the
    image edges, and their scaled median absolute deviation
    (1.4826 x MAD, the standard deviation for Gaussian noise), so that the
    galaxy's light reaching into the border barely changes either.

    Parameters
    ----------
    images : numpy.ndarray of shape (n, x, y, ndim)
        The images.
    border : int
        Width (pixels) of the frame of edge pixels used.

    Returns
    -------
    level, noise : numpy.ndarray of shape (n, ndim)
        Background level and noise (standard deviation) per image and band,
        in the images' units.

    Raises
    ------
    TypeError, ValueError
        Not a 4-D numeric array, or a border too wide for the images.
    """
    images = check_stack(images)
    border = check_border(border, images)
    n_images, n_bands = images.shape[0], images.shape[3]
    level = np.empty((n_images, n_bands))
    noise = np.empty((n_images, n_bands))
    for start in range(0, n_images, _CHUNK):
        chunk = np.asarray(images[start : start + _CHUNK], dtype=np.float64)
        frame = np.concatenate(
            [
                chunk[:, :border].reshape(len(chunk), -1, n_bands),
                chunk[:, -border:].reshape(len(chunk), -1, n_bands),
                chunk[:, border:-border, :border].reshape(len(chunk), -1, n_bands),
                chunk[:, border:-border, -border:].reshape(len(chunk), -1, n_bands),
            ],
            axis=1,
        )
        median = np.median(frame, axis=1)
        level[start : start + len(chunk)] = median
        noise[start : start + len(chunk)] = 1.4826 * np.median(np.abs(frame - median[:, None, :]), axis=1)
    return level, noise


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}. Received: {name}={value!r}")
    return value


def _check_softening(softening):
    if isinstance(softening, bool) or not isinstance(softening, numbers.Real) or not np.isfinite(softening) or softening <= 0:
        raise ValueError(f"softening must be a positive number (in units of the background noise). Received: {softening!r}")
    return float(softening)


def preprocessing_settings(stretch="none", scaling="peak", softening=3.0, border=4, subtract_background=False):
    """The settings of :func:`preprocess_images` as a dictionary, checked.

    Save it beside a model trained on preprocessed images (e.g. as JSON) and
    pass it back as ``preprocess_images(images, **settings)`` for every image
    that model classifies.

    Raises
    ------
    ValueError
        An unknown stretch or scaling, or a non-positive softening or border.
    """
    _check_choice(stretch, "stretch", STRETCHES)
    _check_choice(scaling, "scaling", SCALINGS)
    if isinstance(border, bool) or not isinstance(border, numbers.Integral) or border < 1:
        raise ValueError(f"border must be a positive integer (pixels). Received: border={border!r}")
    if not isinstance(subtract_background, (bool, np.bool_)):
        raise TypeError(f"subtract_background must be True or False. Received: {subtract_background!r}")
    return {
        "stretch": stretch,
        "scaling": scaling,
        "softening": _check_softening(softening),
        "border": int(border),
        "subtract_background": bool(subtract_background),
    }


def describe_preprocessing(settings):
    """Preprocessing settings in words: ``'none (images as they are)'``, ``'asinh stretch (softening 3), peak
    scaling'`` ..."""
    if settings is None:
        return "none (images as they are)"
    parts = ["background subtracted"] if settings.get("subtract_background") else []
    if settings.get("stretch", "none") != "none":
        parts.append(f"{settings['stretch']} stretch (softening {settings.get('softening', 3.0):g})")
    parts.append(f"{settings.get('scaling', 'peak')} scaling")
    return ", ".join(parts) + f", border {settings.get('border', 4)} px"


def preprocess_images(images, stretch="none", scaling="peak", softening=3.0, border=4, subtract_background=False):
    """Bring each image to a common scale, optionally after a stretch: a new array.

    The steps, per image and band, in this order:

    1. ``subtract_background``: subtract the median of the border pixels
       (:func:`estimate_background`); for images whose sky was not subtracted.
    2. ``stretch``:

       - ``'none'``: the pixel values as they are;
       - ``'asinh'``: ``arcsinh(x / (softening * noise))`` (Lupton, Gunn &
         Szalay 1999, AJ 118, 1406): linear within a few times the noise,
         logarithmic for bright pixels, so the core and the faint outer disk
         both stay visible; ``noise`` is the border noise of the image;
       - ``'log'``: ``log10(1 + max(x, 0) / (softening * noise))``, the same
         idea with negative (noise) pixels set to 0.

    3. ``scaling``:

       - ``'peak'``: divide by the largest pixel value (so the peak is 1);
       - ``'sum'``: divide by the sum of the positive pixels;
       - ``'zscore'``: subtract the mean, divide by the standard deviation;
       - ``'none'``: leave as is.

       An image whose divisor is not positive (blank) is left unscaled.

    This is never applied implicitly: see the module's notes. The input is not
    modified.

    Parameters
    ----------
    images : numpy.ndarray of shape (n, x, y, ndim)
        The images (finite values). Memory-mapped arrays are read in chunks.
    stretch : {'none', 'asinh', 'log'}
        The stretch.
    scaling : {'peak', 'sum', 'zscore', 'none'}
        The per-image scaling.
    softening : float
        For ``'asinh'`` and ``'log'``: the pixel value where the stretch turns
        from linear to logarithmic, in units of the image's background noise.
    border : int
        Width (pixels) of the edge frame used to estimate the background.
    subtract_background : bool
        Subtract the border median first.

    Returns
    -------
    numpy.ndarray of shape (n, x, y, ndim), float32
        The preprocessed images.

    Raises
    ------
    TypeError, ValueError
        Not a 4-D numeric array, non-finite pixels, or invalid settings.
    """
    images = check_stack(images)
    settings = preprocessing_settings(stretch, scaling, softening, border, subtract_background)
    check_border(settings["border"], images)
    output = np.empty(images.shape, dtype=np.float32)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = np.array(images[start : start + _CHUNK], dtype=np.float64)
        if not np.isfinite(chunk).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1))[0])
            raise ValueError(f"images must hold finite pixel values, but image {bad} holds NaN or infinite pixels")
        output[start : start + len(chunk)] = _preprocess_chunk(chunk, settings)
    return output


def _preprocess_chunk(chunk, settings):
    n_bands = chunk.shape[3]
    if settings["subtract_background"] or settings["stretch"] != "none":
        level, noise = estimate_background(chunk, settings["border"])
        if settings["subtract_background"]:
            chunk = chunk - level[:, None, None, :]
        if settings["stretch"] != "none":
            # A noiseless border (a simulated image without noise) falls back to the image's own spread.
            fallback = chunk.reshape(len(chunk), -1, n_bands).std(axis=1)
            noise = np.where(noise > 0, noise, np.where(fallback > 0, fallback, 1.0))
            scaled = chunk / (settings["softening"] * noise[:, None, None, :])
            if settings["stretch"] == "asinh":
                chunk = np.arcsinh(scaled)
            else:
                chunk = np.log10(1.0 + np.clip(scaled, 0.0, None))
    flat = chunk.reshape(len(chunk), -1, n_bands)
    if settings["scaling"] == "peak":
        divisor = flat.max(axis=1)
    elif settings["scaling"] == "sum":
        divisor = np.clip(flat, 0.0, None).sum(axis=1)
    elif settings["scaling"] == "zscore":
        chunk = chunk - flat.mean(axis=1)[:, None, None, :]
        divisor = flat.std(axis=1)
    else:
        return chunk
    divisor = np.where(divisor > 0, divisor, 1.0)
    return chunk / divisor[:, None, None, :]


def unpreprocessed_share(images, settings, n_images=64):
    """The share of the first images whose scale shows that ``settings`` were not applied; None if it cannot tell.

    After ``'peak'`` scaling every image's largest pixel is 1, after ``'sum'``
    its positive pixels sum to 1, after ``'zscore'`` its standard deviation
    is 1: an image further than 1% from that did not get the preprocessing
    (blank images are not counted). With ``scaling='none'`` nothing tells.

    Parameters
    ----------
    images : numpy.ndarray of shape (n, x, y, ndim)
    settings : dict
        As :func:`preprocessing_settings` returns.
    n_images : int
        How many of the first images are looked at.

    Returns
    -------
    float or None
    """
    scaling = settings.get("scaling", "none")
    if scaling == "none":
        return None
    sample = np.asarray(images[:n_images], dtype=np.float64)
    flat = sample.reshape(len(sample), -1, sample.shape[3])
    if scaling == "peak":
        values = flat.max(axis=1)
    elif scaling == "sum":
        values = np.clip(flat, 0.0, None).sum(axis=1)
    else:
        values = flat.std(axis=1)
    counted = (flat.max(axis=1) > flat.min(axis=1)) & np.isfinite(values)
    if not counted.any():
        return None
    return float(np.mean(np.abs(values[counted] - 1.0) > 0.01))
