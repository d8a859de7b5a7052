"""Reading the weights of legacy Keras HDF5 model files with h5py alone.

Backend-neutral: imports neither TensorFlow, Keras nor tflearn, so the
downloader can check a published Keras model before it enters the cache, and
the Keras backend can load one without executing anything stored in the file.
"""

import re

import h5py
import numpy as np

from gamornet.presets import weight_shapes


def _as_str(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _natural_key(name):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_legacy_hdf5_weights(path):
    """Read the 8 [kernel, bias] pairs of a legacy Keras HDF5 file, in layer order.

    Handles both layouts of Keras 2 (and Keras 3's legacy writer): ``model.save()``
    (layers under a ``model_weights`` group) and ``save_weights()`` (layers at the
    root). The order is the file's ``layer_names`` attribute; names are ignored.
    Only datasets are read: no configuration or code stored in the file is used.

    Parameters
    ----------
    path : str
        The HDF5 file.

    Returns
    -------
    list of (str, list of numpy.ndarray)
        The name of each of the 8 weighted layers and its weight arrays
        (kernel, bias), in the order the network uses them.

    Raises
    ------
    OSError
        The file cannot be opened as HDF5 (missing, truncated, not HDF5).
    ValueError
        The file is HDF5 but does not hold the 8 weighted layers of a GaMorNet model.
    """
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise OSError(f"could not open the Keras model file {path!r} as HDF5: {error}") from None
    with handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" in group.attrs:
            layer_names = [_as_str(name) for name in group.attrs["layer_names"]]
        else:
            layer_names = sorted(
                (key for key in group if isinstance(group[key], h5py.Group)), key=_natural_key
            )
        layers = []
        for layer_name in layer_names:
            if layer_name not in group:
                raise ValueError(
                    f"the Keras model file {path!r} is corrupt: it lists layer {layer_name!r} but holds no such group"
                )
            layer_group = group[layer_name]
            weight_names = [_as_str(name) for name in layer_group.attrs.get("weight_names", [])]
            if not weight_names:
                continue
            try:
                arrays = [np.asarray(layer_group[weight_name]) for weight_name in weight_names]
            except (KeyError, OSError) as error:
                raise ValueError(
                    f"the Keras model file {path!r} is corrupt: layer {layer_name!r} lacks a weight ({error})"
                ) from None
            layers.append((layer_name, arrays))
    if len(layers) != 8:
        raise ValueError(
            f"the Keras model file {path!r} does not hold a GaMorNet model: expected 8 layers with weights "
            f"(5 convolutional, 3 dense), found {len(layers)}"
        )
    return layers


def check_keras_model_file(path, input_shape):
    """Check that a legacy Keras HDF5 file holds a GaMorNet model for ``input_shape``.

    Every weight is read, so a truncated or unreadable dataset is caught too.

    Parameters
    ----------
    path : str
        The HDF5 file.
    input_shape : tuple of int
        The (x, y, ndim) the model must have been built for.

    Raises
    ------
    OSError
        The file cannot be opened as HDF5.
    ValueError
        The file does not hold 8 weighted layers of the shapes GaMorNet has for
        ``input_shape``, or holds non-finite weights.
    """
    layers = read_legacy_hdf5_weights(path)
    for number, ((layer_name, arrays), expected) in enumerate(zip(layers, weight_shapes(input_shape)), start=1):
        received = tuple(tuple(array.shape) for array in arrays)
        if received != tuple(expected):
            raise ValueError(
                f"the Keras model file {path!r} does not hold a GaMorNet model for input shape "
                f"{tuple(input_shape)}: weighted layer {number} ({layer_name!r}) holds weights of shapes "
                f"{list(received)}, expected {list(expected)}"
            )
        for array in arrays:
            if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
                raise ValueError(
                    f"the Keras model file {path!r} is corrupt: weighted layer {number} ({layer_name!r}) holds "
                    "weights that are not finite floating-point numbers"
                )
