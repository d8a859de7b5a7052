"""The legacy Keras HDF5 model files of the Keras backend, read with h5py alone.

The published Keras models were written by Keras 2.2.4 / 2.3.1 on TensorFlow
1.x in the legacy HDF5 layout, in one of two forms: ``model.save()`` (the layer
groups under a ``model_weights`` group, plus ``optimizer_weights``) or
``save_weights()`` (the layer groups at the root). gamornet's own training
writes the same layout (Keras 3's legacy writer). Layer groups are named
``conv2d_1`` ... ``dense_3``; loading goes by layer order, whatever the names.

Only datasets are read: no configuration or code stored in the file is used.
Backend-neutral: imports neither TensorFlow, Keras nor tflearn.
"""

import re
import zipfile

import h5py
import numpy as np

from gamornet.errors import ModelFileError
from gamornet.models.formats import check_weights

__all__ = ["ENDINGS", "check", "read_layers", "read_weights"]

#: File endings of legacy Keras HDF5 model files.
ENDINGS = (".hdf5", ".h5")


def _as_str(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _natural_key(name):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _describe(path):
    return f"the Keras model file {path!r}"


def _open(path):
    try:
        return h5py.File(path, "r")
    except OSError as error:
        if zipfile.is_zipfile(path):
            raise ModelFileError(
                f"{_describe(path)} is a Keras 3 '.keras' archive, a format gamornet does not read (such an archive "
                "may hold code). GaMorNet models are legacy HDF5 files, as gamornet's training functions write them: "
                "save a Keras model in that layout with model.save('model.hdf5')"
            ) from None
        raise ModelFileError(f"could not open {_describe(path)} as HDF5: {error}") from None


def read_layers(path):
    """Read the weighted layers of a legacy Keras HDF5 file, in layer order, unchecked.

    Parameters
    ----------
    path : str
        The HDF5 file.

    Returns
    -------
    list of (str, list of numpy.ndarray)
        The name of each layer that holds weights, and its weight arrays, in
        the order of the file's ``layer_names`` attribute (else natural name order).

    Raises
    ------
    gamornet.errors.ModelFileError
        The file cannot be opened or is not HDF5 (a Keras 3 ``.keras`` archive is named as such),
        or it lists a layer or weight it does not hold.
    """
    with _open(path) as handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" in group.attrs:
            layer_names = [_as_str(name) for name in group.attrs["layer_names"]]
        else:
            layer_names = sorted((key for key in group if isinstance(group[key], h5py.Group)), key=_natural_key)
        layers = []
        for layer_name in layer_names:
            if layer_name not in group:
                raise ModelFileError(
                    f"{_describe(path)} is corrupt: it lists layer {layer_name!r} but holds no such group"
                )
            layer_group = group[layer_name]
            weight_names = [_as_str(name) for name in layer_group.attrs.get("weight_names", [])]
            if not weight_names:
                continue
            try:
                arrays = [np.asarray(layer_group[weight_name]) for weight_name in weight_names]
            except (KeyError, OSError) as error:
                raise ModelFileError(
                    f"{_describe(path)} is corrupt: layer {layer_name!r} lacks a weight ({error})"
                ) from None
            layers.append((layer_name, arrays))
    return layers


def read_weights(path, input_shape):
    """The 8 checked [kernel, bias] pairs of a GaMorNet model in a legacy Keras HDF5 file.

    Parameters
    ----------
    path : str
        The HDF5 file.
    input_shape : tuple of int
        The (x, y, ndim) the model must have been built for.

    Returns
    -------
    list of list of numpy.ndarray
        [kernel, bias] of each weighted layer, in network order.

    Raises
    ------
    gamornet.errors.ModelFileError
        The file cannot be read, does not hold 8 weighted layers of the shapes
        GaMorNet has for ``input_shape``, or holds weights that are not finite.
    """
    try:
        return check_weights(read_layers(path), input_shape, _describe(path))
    except ModelFileError:
        raise
    except ValueError as error:
        raise ModelFileError(str(error)) from None


def check(path, input_shape):
    """Raise unless ``path`` holds a GaMorNet model for ``input_shape`` with finite weights.

    Every weight is read, so a truncated or unreadable dataset is caught too.
    Raises as :func:`read_weights`.
    """
    read_weights(path, input_shape)
