"""Writers of model files in the layouts of the published Keras models (SPEC §4).

Written with h5py alone, byte-for-byte in the structure Keras 2.2.4 used, so the
loader is tested on the layout it meets in the wild, not on what Keras 3 writes.
"""

import json

import h5py
import numpy as np

# Layer names of a Keras 2 Sequential GaMorNet, in order.
KERAS2_LAYER_NAMES = (
    "conv2d_1", "max_pooling2d_1", "local_response_normalization_1",
    "conv2d_2", "max_pooling2d_2", "local_response_normalization_2",
    "conv2d_3", "conv2d_4", "conv2d_5", "max_pooling2d_3", "local_response_normalization_3",
    "flatten_1", "dense_1", "dropout_1", "dense_2", "dropout_2", "dense_3",
)
WEIGHTED = ("conv2d_1", "conv2d_2", "conv2d_3", "conv2d_4", "conv2d_5", "dense_1", "dense_2", "dense_3")


def _bytes_array(strings):
    return np.array([s.encode("utf-8") for s in strings], dtype="S")


def _write_layers(group, weights, layer_names, weighted_names):
    group.attrs["layer_names"] = _bytes_array(layer_names)
    group.attrs["backend"] = b"tensorflow"
    group.attrs["keras_version"] = b"2.2.4"
    pairs = dict(zip(weighted_names, weights))
    for name in layer_names:
        layer = group.create_group(name)
        if name in pairs:
            kernel, bias = pairs[name]
            weight_names = [f"{name}/kernel:0", f"{name}/bias:0"]
            layer.attrs["weight_names"] = _bytes_array(weight_names)
            layer.create_dataset(weight_names[0], data=np.asarray(kernel, dtype=np.float32))
            layer.create_dataset(weight_names[1], data=np.asarray(bias, dtype=np.float32))
        else:
            layer.attrs["weight_names"] = np.array([], dtype="S")


def write_keras2_file(path, weights, layout="model", rename=None):
    """Write ``weights`` (8 (kernel, bias) pairs) as a Keras 2.2.4 HDF5 file.

    Parameters
    ----------
    layout : {'model', 'weights'}
        ``'model'``: the ``model.save()`` layout (a ``model_weights`` group, a
        ``model_config`` and ``optimizer_weights``). ``'weights'``: the
        ``save_weights()`` layout, with the layers at the root.
    rename : callable, optional
        Maps each layer name to another, to check that loading goes by order.
    """
    rename = rename or (lambda name: name)
    layer_names = [rename(name) for name in KERAS2_LAYER_NAMES]
    weighted_names = [rename(name) for name in WEIGHTED]
    with h5py.File(path, "w") as handle:
        if layout == "weights":
            _write_layers(handle, weights, layer_names, weighted_names)
            return path
        if layout != "model":
            raise ValueError(layout)
        handle.attrs["keras_version"] = b"2.2.4"
        handle.attrs["backend"] = b"tensorflow"
        # A configuration the loader must never evaluate: a Lambda layer holding code.
        handle.attrs["model_config"] = json.dumps({
            "class_name": "Sequential",
            "config": {"name": "sequential_1", "layers": [
                {"class_name": "Lambda", "config": {"function": ["raise SystemExit('executed!')", None, None]}}
            ]},
        }).encode("utf-8")
        handle.attrs["training_config"] = json.dumps({
            "optimizer_config": {"class_name": "SGD", "config": {"lr": 1e-4, "momentum": 0.9}},
            "loss": "categorical_crossentropy", "metrics": ["accuracy"],
        }).encode("utf-8")
        _write_layers(handle.create_group("model_weights"), weights, layer_names, weighted_names)
        optimizer = handle.create_group("optimizer_weights")
        names = ["training/SGD/Variable:0"] + [f"training/SGD/Variable_{i}:0" for i in range(1, 17)]
        optimizer.attrs["weight_names"] = _bytes_array(names)
        shapes = [()] + [np.shape(array) for pair in weights for array in pair]
        for name, shape in zip(names, shapes):
            optimizer.create_dataset(name, data=np.zeros(shape, dtype=np.float32))
    return path
