"""Inference engines: GaMorNet networks with loaded weights, compiled once and kept for reuse.

An engine is the network of :mod:`gamornet.models.network` in the LRN flavour of the
model file's backend, holding the checked weights read by :mod:`gamornet.models.formats`,
with three compiled steps:

- ``forward(batch)``: the probabilities [p_disk, p_indet, p_bulge];
- ``features(batch)``: the output of the convolutional part (everything up to
  the flatten), which needs no dropout;
- ``head(features, training=False)``: the three dense layers on those features,
  with dropout on when ``training`` is True (Monte-Carlo dropout).

Building an SDSS engine (58 M weights) costs seconds, so engines are kept in a
small cache keyed on the model file's path, size and modification time: a second
prediction with the same, unchanged file reuses the built network.
"""

import collections
import functools
import os
import threading

import numpy as np

from gamornet import models
from gamornet.models import network as _network
from gamornet.models import formats

__all__ = ["Engine", "ENV_MODEL_CACHE", "clear_cache", "engine_for"]

#: How many built models are kept for reuse (default 2; 0 keeps none).
ENV_MODEL_CACHE = "GAMORNET_MODEL_CACHE"
_DEFAULT_CACHE_SIZE = 2


def _run(model, batch):
    return model(batch, training=False)


class Engine:
    """A GaMorNet network with loaded weights, compiled for inference.

    Parameters
    ----------
    network : keras.Model
        A network of :func:`gamornet.models.network.build_network` with its weights.
    backend : {'keras', 'tflearn'}
        The backend whose model file the weights came from (which set the LRN flavour).
    """

    def __init__(self, network, backend):
        import keras
        import tensorflow as tf

        self.network = network
        self.backend = backend
        self.input_shape = tuple(int(size) for size in network.input_shape[1:])
        flatten = network.get_layer("flatten_1")
        #: The dense and dropout layers after the flatten, in order.
        self.head_layers = network.layers[network.layers.index(flatten) + 1 :]
        spec = tf.TensorSpec((None,) + self.input_shape, tf.float32)
        feature_model = keras.Model(network.inputs, flatten.output)
        # An unknown batch size in the signature: the last, partial batch runs the same graph (no retracing).
        # functools.partial rather than a lambda: TensorFlow counts traces per function's code across all engines
        # of a process, and would warn of retracing once a few engines (each traced once) had been made.
        self._forward = tf.function(functools.partial(_run, network), input_signature=[spec])
        self._features = tf.function(functools.partial(_run, feature_model), input_signature=[spec])

    def forward(self, batch):
        """Probabilities (n, 3), float32, of a batch (an array or tensor of shape (n, x, y, ndim))."""
        return self._forward(batch).numpy()

    def features(self, batch):
        """The flattened output (n, F) of the convolutional part, float32."""
        return self._features(batch).numpy()

    def head(self, features, training=False):
        """Probabilities (n, 3) from :meth:`features`; dropout is on only when ``training`` is True."""
        x = features
        for layer in self.head_layers:
            x = layer(x, training=training)
        return np.asarray(x)


def _cache_size():
    value = os.environ.get(ENV_MODEL_CACHE, "").strip()
    if not value:
        return _DEFAULT_CACHE_SIZE
    if not value.isdigit():
        raise ValueError(
            f"{ENV_MODEL_CACHE} must be the number of built models to keep for reuse (0 keeps none). "
            f"Received {ENV_MODEL_CACHE}={value!r}"
        )
    return int(value)


_cache = collections.OrderedDict()
_cache_lock = threading.Lock()


def _file_key(local_path, backend):
    """What identifies the content of a model file without reading it: paths, sizes, modification times."""
    key = []
    for path in models.model_files(local_path, backend):
        status = os.stat(path)
        key.append((os.path.realpath(path), status.st_size, status.st_mtime_ns))
    return tuple(key)


def build_engine(local_path, input_shape, backend):
    """A new engine for the model file at ``local_path`` (checked by its format module)."""
    weights = formats.read_weights(local_path, input_shape, backend)
    network = _network.build_network(input_shape, lrn=backend)
    _network.set_weights(network, weights)
    return Engine(network, backend)


def engine_for(local_path, input_shape, backend):
    """The engine of a model file, reused from the cache when the file has not changed.

    Parameters
    ----------
    local_path : str
        A Keras file or a TFLearn checkpoint prefix (see :func:`gamornet.models.resolve`).
    input_shape : tuple of int
    backend : {'keras', 'tflearn'}

    Returns
    -------
    Engine

    Raises
    ------
    FileNotFoundError, gamornet.errors.ModelFileError
        As :func:`gamornet.models.formats.read_weights`.
    """
    key = (backend, tuple(input_shape), _file_key(local_path, backend))
    size = _cache_size()
    with _cache_lock:
        engine = _cache.get(key)
        if engine is not None:
            _cache.move_to_end(key)
            return engine
    engine = build_engine(local_path, input_shape, backend)
    if size:
        with _cache_lock:
            _cache[key] = engine
            while len(_cache) > size:
                _cache.popitem(last=False)
    return engine


def clear_cache():
    """Forget every built model kept for reuse (their memory is freed once no predictor uses them)."""
    with _cache_lock:
        _cache.clear()


def cached_models():
    """The (backend, input shape, file key) of each model kept for reuse, oldest first."""
    with _cache_lock:
        return list(_cache)
