"""What every engine of :mod:`gamornet.inference.precision` checks: a precision name, a GaMorNet network, a batch.

The reduced-precision engines (:mod:`gamornet.inference.bf16`,
:mod:`gamornet.inference.int8`) keep some layers in fp32 by their *role* in the
network (:func:`layer_roles`), whatever the layer names and LRN flavour.

Backend-neutral at import: Keras is imported only when a network is checked.
"""

import numpy as np

__all__ = ["PRECISIONS", "check_precision", "layer_roles", "check_network", "check_batch"]

#: The precisions of :func:`gamornet.inference.precision.make_engine`, fastest last.
PRECISIONS = ("fp32", "bf16", "int8")


def check_precision(precision):
    """Check a precision name.

    Parameters
    ----------
    precision : {'fp32', 'bf16', 'int8'}

    Returns
    -------
    str
        The name, in lower case.

    Raises
    ------
    TypeError
        Not a string.
    ValueError
        Not one of :data:`PRECISIONS`.
    """
    if not isinstance(precision, str):
        raise TypeError(f"precision must be 'fp32', 'bf16' or 'int8'. Received an object of type {type(precision).__name__}")
    name = precision.strip().lower()
    if name not in PRECISIONS:
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'int8'. Received: precision={precision!r}")
    return name


def layer_roles(network):
    """{layer name: role} of a GaMorNet network, whatever its layer names and LRN flavour.

    Roles are 'conv_1' .. 'conv_5', 'dense_1' .. 'dense_3', 'lrn' (either flavour) and 'other' (input,
    pooling, flatten, dropout: layers that do no arithmetic a rounding could change).

    Parameters
    ----------
    network : keras.Model

    Returns
    -------
    dict of str to str

    Raises
    ------
    ValueError
        Not 5 convolutions and 3 dense layers.
    """
    kinds = [type(layer).__name__ for layer in network.layers]
    if kinds.count("Conv2D") != 5 or kinds.count("Dense") != 3:
        raise ValueError(
            "network must be a GaMorNet network (5 convolutions and 3 dense layers). Received a network with "
            f"{kinds.count('Conv2D')} convolutions and {kinds.count('Dense')} dense layers"
        )
    roles, counts = {}, {"Conv2D": 0, "Dense": 0}
    for layer, kind in zip(network.layers, kinds):
        if kind in counts:
            counts[kind] += 1
            roles[layer.name] = f"{'conv' if kind == 'Conv2D' else 'dense'}_{counts[kind]}"
        elif kind in ("InputLayer", "MaxPooling2D", "Flatten", "Dropout"):
            roles[layer.name] = "other"
        else:
            roles[layer.name] = "lrn"
    return roles


def check_network(network):
    """Check a GaMorNet network; return its input shape.

    Parameters
    ----------
    network : keras.Model

    Returns
    -------
    tuple of int
        The shape of one image (x, y, ndim).

    Raises
    ------
    TypeError
        Not a keras.Model.
    ValueError
        Not GaMorNet's layers (see :func:`layer_roles`).
    """
    import keras

    if not isinstance(network, keras.Model):
        raise TypeError(f"network must be a keras.Model of GaMorNet. Received an object of type {type(network).__name__}")
    layer_roles(network)
    return tuple(int(size) for size in network.input_shape[1:])


def check_batch(batch, input_shape):
    """A batch as float32 (an array, or a TensorFlow tensor as the predictor's stream hands it over).

    Parameters
    ----------
    batch : array_like or tensorflow.Tensor of shape (b, x, y, ndim)
    input_shape : tuple of int
        The shape (x, y, ndim) of one image.

    Returns
    -------
    numpy.ndarray or tensorflow.Tensor
        A tensor unchanged; anything else as a contiguous float32 array.

    Raises
    ------
    ValueError
        A batch of another shape.
    """
    if not hasattr(batch, "numpy"):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
    if len(batch.shape) != 4 or tuple(batch.shape[1:]) != input_shape:
        raise ValueError(
            f"a batch must have shape (b, {', '.join(map(str, input_shape))}). Received an array of shape "
            f"{tuple(batch.shape)}"
        )
    return batch
