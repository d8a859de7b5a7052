"""The model-file formats GaMorNet reads, one module per format.

- :mod:`gamornet.models.formats.keras_hdf5`: the legacy Keras HDF5 files of the Keras
  backend (written by Keras 2.2.4 / 2.3.1 for the published models, and by
  gamornet's own training);
- :mod:`gamornet.models.formats.tflearn_checkpoint`: the TensorFlow checkpoints of the
  TFLearn backend (``<prefix>.index``, ``<prefix>.data-00000-of-00001``,
  ``<prefix>.meta``).

Each module names its layers, variables and file endings once, and offers the
same two functions, used by the downloader, both backends and the predictor:

``check(path, input_shape)``
    Raise ``OSError`` or ``ValueError`` unless the file holds a GaMorNet model
    for ``input_shape`` with finite weights.
``read_weights(path, input_shape)``
    The same checks, then the 8 (kernel, bias) pairs of the weighted layers in
    network order, in the Keras layout of :func:`gamornet.presets.weight_shapes`.

Only weights are read from a model file: no code or configuration stored in it
is ever executed.
"""

from gamornet.presets import weight_shapes

__all__ = ["FORMAT_OF_BACKEND", "check", "format_module", "read_weights"]

#: The format module of each backend, by name.
FORMAT_OF_BACKEND = {"keras": "keras_hdf5", "tflearn": "tflearn_checkpoint"}


def format_module(backend):
    """The format module that reads ``backend``'s model files.

    Raises
    ------
    ValueError
        An unknown backend.
    """
    import importlib

    if backend not in FORMAT_OF_BACKEND:
        raise ValueError(f"backend must be one of {tuple(FORMAT_OF_BACKEND)}. Received: backend={backend!r}")
    return importlib.import_module(f"gamornet.models.formats.{FORMAT_OF_BACKEND[backend]}")


def check(path, input_shape, backend):
    """Check the model file of ``backend`` at ``path`` (a TFLearn checkpoint prefix); see the module docs."""
    format_module(backend).check(path, input_shape)


def read_weights(path, input_shape, backend):
    """The 8 checked (kernel, bias) pairs of the model file of ``backend`` at ``path``; see the module docs."""
    return format_module(backend).read_weights(path, input_shape)


def check_weights(weights, input_shape, describe):
    """Check 8 (name, [kernel, bias]) pairs against GaMorNet's shapes for ``input_shape``.

    Shared by the format modules, so both report shape and finiteness problems
    in the same words.

    Parameters
    ----------
    weights : list of (str, list of numpy.ndarray)
        The stored name of each weighted layer and its two arrays, in network order.
    input_shape : tuple of int
        The (x, y, ndim) the model must have been built for.
    describe : str
        How to name the file in messages (``"the Keras model file 'x.hdf5'"``).

    Returns
    -------
    list of list of numpy.ndarray
        The 8 [kernel, bias] pairs.

    Raises
    ------
    ValueError
        A layer of the wrong shapes, or weights that are not finite floating-point numbers.
    """
    import numpy as np

    expected_shapes = weight_shapes(input_shape)
    if len(weights) != len(expected_shapes):
        raise ValueError(
            f"{describe} does not hold a GaMorNet model: expected {len(expected_shapes)} layers with weights "
            f"(5 convolutional, 3 dense), found {len(weights)}"
        )
    arrays_only = []
    for number, ((name, arrays), expected) in enumerate(zip(weights, expected_shapes), start=1):
        received = tuple(tuple(array.shape) for array in arrays)
        if received != tuple(expected):
            raise ValueError(
                f"{describe} does not fit this network: it does not hold a GaMorNet model for input shape "
                f"{tuple(input_shape)}: weighted layer {number} ({name!r}) holds weights of shapes {list(received)}, "
                f"expected {list(expected)}. Check input_shape"
            )
        for array in arrays:
            if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
                raise ValueError(
                    f"{describe} is corrupt: weighted layer {number} ({name!r}) holds weights that are not finite "
                    "floating-point numbers (NaN or infinite)"
                )
        arrays_only.append(list(arrays))
    return arrays_only
