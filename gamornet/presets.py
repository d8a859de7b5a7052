"""Presets of Ghosh et al. (2020): input shapes, pixel scales, layer bools and the label rule.

Backend-neutral: imports neither TensorFlow nor tflearn.
"""

import numpy as np

#: Named input shapes (x, y, ndim) of the two data sets of the paper.
INPUT_SHAPES = {
    "SDSS": (167, 167, 1),  # SDSS g-band cutouts, 0.396 arcsec/pixel
    "CANDELS": (83, 83, 1),  # CANDELS H-band cutouts, 0.06 arcsec/pixel
}

#: Pixel scales (arcsec/pixel) of the images each named input shape was
#: trained on (Ghosh et al. 2020, Section 2): SDSS g band and HST/WFC3 F160W
#: (CANDELS H band) mosaics.
PIXEL_SCALES = {
    "SDSS": 0.396,
    "CANDELS": 0.06,
}

#: The paper's layer numbers (Table 2) of the 8 weighted layers, in the order
#: of ``load_layers_bools`` and ``trainable_bools``: 5 convolutional, 3 dense.
WEIGHTED_LAYER_NUMBERS = (2, 5, 8, 9, 10, 13, 15, 17)
N_WEIGHTED_LAYERS = len(WEIGHTED_LAYER_NUMBERS)

#: The 5 convolutional layers of Table 2: (filters, kernel side, stride); each
#: of the layers at the indices in ``_POOLED_AFTER`` is followed by a 3x3,
#: stride-2 max-pool.
_CONV_LAYERS = ((96, 11, 4), (256, 5, 1), (384, 3, 1), (384, 3, 1), (256, 3, 1))
_POOLED_AFTER = (0, 1, 4)
_DENSE_UNITS = (4096, 4096, 3)


def weight_shapes(input_shape):
    """Shapes of the weights of the 8 weighted layers for an input (x, y, ndim).

    Follows Table 2 of Ghosh et al. (2020) with 'same' padding, where a layer of
    stride s maps a side of n pixels to ceil(n / s).

    Parameters
    ----------
    input_shape : tuple of int
        A resolved (x, y, ndim).

    Returns
    -------
    list of ((int, ...), (int,))
        (kernel shape, bias shape) per weighted layer, in Keras layout: conv
        kernels (side, side, channels in, filters), dense kernels (inputs, units).
        TFLearn's ``W`` and ``b`` variables have the same shapes.
    """
    rows, columns, channels = (int(size) for size in input_shape)
    shapes = []
    for index, (filters, side, stride) in enumerate(_CONV_LAYERS):
        shapes.append(((side, side, channels, filters), (filters,)))
        channels = filters
        rows, columns = -(-rows // stride), -(-columns // stride)
        if index in _POOLED_AFTER:
            rows, columns = -(-rows // 2), -(-columns // 2)
    inputs = rows * columns * channels
    for units in _DENSE_UNITS:
        shapes.append(((inputs, units), (units,)))
        inputs = units
    return shapes


#: Named ``trainable_bools`` presets.
TRAINABLE_BOOLS_PRESETS = {
    "train_bools_SDSS": (True,) * N_WEIGHTED_LAYERS,
    "train_bools_CANDELS": (False, False, False, True, True, True, True, True),
}

#: Named ``load_layers_bools`` presets.
LOAD_BOOLS_PRESETS = {
    "load_bools_SDSS": (True, True, True, True, True, False, False, False),
    "load_bools_CANDELS": (True, True, True, True, True, True, False, False),
}

#: Class names, in the order of the network's three outputs.
CLASS_NAMES = ("disk", "indeterminate", "bulge")

#: Bulge-to-total light ratio limits of the indeterminate class (inclusive).
BT_INDETERMINATE_RANGE = (0.45, 0.55)

#: The same limits as d = m_disk - m_bulge in magnitudes (inclusive).
DELTA_MAG_INDETERMINATE_RANGE = (-0.22, 0.22)


def labels_from_bulge_to_total(bulge_to_total):
    """One-hot labels from bulge-to-total light ratios, by the paper's rule.

    Disk-dominated if L_B/L_T < 0.45, indeterminate if 0.45 <= L_B/L_T <= 0.55,
    bulge-dominated if L_B/L_T > 0.55.

    Parameters
    ----------
    bulge_to_total : array_like of float
        Bulge-to-total light ratios, each in [0, 1].

    Returns
    -------
    numpy.ndarray of shape (n, 3)
        One-hot labels: disk [1, 0, 0], indeterminate [0, 1, 0], bulge [0, 0, 1].

    Raises
    ------
    ValueError
        If a ratio is outside [0, 1] or not finite.
    """
    ratios = np.atleast_1d(np.asarray(bulge_to_total, dtype=np.float64))
    if ratios.ndim != 1:
        raise ValueError(
            f"bulge_to_total must be a scalar or a 1-D sequence. Received an array of shape {ratios.shape}"
        )
    bad = ~np.isfinite(ratios) | (ratios < 0) | (ratios > 1)
    if bad.any():
        raise ValueError(
            "bulge_to_total must hold finite ratios between 0 and 1. "
            f"Received {ratios[bad][0]!r} at index {int(np.flatnonzero(bad)[0])}"
        )
    low, high = BT_INDETERMINATE_RANGE
    classes = np.where(ratios < low, 0, np.where(ratios > high, 2, 1))
    return np.eye(3, dtype=np.float32)[classes]


def labels_from_magnitudes(disk_magnitude, bulge_magnitude):
    """One-hot labels from component magnitudes, by the paper's rule.

    With d = m_disk - m_bulge: disk-dominated if d < -0.22, indeterminate if
    -0.22 <= d <= 0.22, bulge-dominated otherwise.

    Parameters
    ----------
    disk_magnitude, bulge_magnitude : array_like of float
        Apparent magnitudes (mag) of the disk and bulge components.

    Returns
    -------
    numpy.ndarray of shape (n, 3)
        One-hot labels.

    Raises
    ------
    ValueError
        If the inputs differ in length or hold non-finite values.
    """
    disk = np.atleast_1d(np.asarray(disk_magnitude, dtype=np.float64))
    bulge = np.atleast_1d(np.asarray(bulge_magnitude, dtype=np.float64))
    if disk.shape != bulge.shape or disk.ndim != 1:
        raise ValueError(
            "disk_magnitude and bulge_magnitude must be 1-D and of the same length. "
            f"Received shapes {disk.shape} and {bulge.shape}"
        )
    if not (np.isfinite(disk).all() and np.isfinite(bulge).all()):
        raise ValueError("disk_magnitude and bulge_magnitude must be finite (mag). Received NaN or inf")
    difference = disk - bulge
    low, high = DELTA_MAG_INDETERMINATE_RANGE
    classes = np.where(difference < low, 0, np.where(difference > high, 2, 1))
    return np.eye(3, dtype=np.float32)[classes]
