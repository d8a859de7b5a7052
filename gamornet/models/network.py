"""GaMorNet's network as a Keras 3 model, in either backend's flavour (Ghosh et al. 2020, Table 2).

The Keras and the TFLearn models of the paper are the same 8-layer network:
the same layers, 'same' padding, the same (row, column, channel) flatten
order, so their weights map one to one (:func:`gamornet.presets.weight_shapes`).
They differ only in their local response normalisation (LRN):

- the Keras flavour normalises by the mean of x**2 over a 5 x 5 spatial window,
  summed over all channels (:class:`LocalResponseNormalization`);
- the TFLearn flavour is ``tf.nn.local_response_normalization`` with TFLearn's
  defaults: the sum of x**2 over the 11 neighbouring channels at the same pixel
  (:class:`TFLearnLocalResponseNormalization`).

The predictor (:mod:`gamornet.inference.predictor`) builds this network for either
backend's model file; :mod:`gamornet.keras_module` builds the Keras flavour for
training. The TFLearn backend trains with the real tflearn package.
"""

from gamornet._utils.tf_logging import import_keras, import_tensorflow
from gamornet.presets import N_WEIGHTED_LAYERS

keras = import_keras()
tf = import_tensorflow()

__all__ = [
    "LRN_FLAVOURS",
    "ClassWeightedCrossentropy",
    "LocalResponseNormalization",
    "TFLearnLocalResponseNormalization",
    "build_network",
    "set_weights",
    "weighted_layers",
]

#: The LRN flavour of each backend's models.
LRN_FLAVOURS = ("keras", "tflearn")


@keras.saving.register_keras_serializable(package="gamornet")
class ClassWeightedCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy with each galaxy's term multiplied by the weight of its true class.

    The loss of a galaxy of class k with predicted probabilities p is
    ``-weights[k] * log(p[k])`` (p clipped to [1e-7, 1 - 1e-7], as Keras'
    cross-entropy does); a batch's loss is the mean over its galaxies, as with
    ``model.fit(class_weight=...)``. Weights (1, 1, 1) give Keras'
    ``categorical_crossentropy``. Build it with
    :func:`gamornet.training.data.class_weighted_crossentropy`, which checks the
    weights.
    """

    def __init__(self, weights=(1.0, 1.0, 1.0), name="class_weighted_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weights = tuple(float(weight) for weight in weights)

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        y_pred = keras.ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        weights = keras.ops.sum(y_true * keras.ops.convert_to_tensor(self.weights, dtype=y_pred.dtype), axis=-1)
        return -weights * keras.ops.sum(y_true * keras.ops.log(y_pred), axis=-1)

    def get_config(self):
        return dict(super().get_config(), weights=list(self.weights))


@keras.saving.register_keras_serializable(package="gamornet")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation of GaMorNet's Keras models.

    This is the normalisation the published Keras models were trained with,
    which differs from ``tf.nn.local_response_normalization``. For an input
    ``x`` of shape (n, rows, columns, channels)::

        s = mean of x**2 over an n x n spatial window (stride 1, 'same' padding,
            averaged over the in-image pixels only)
        S = sum of s over all channels (one value per pixel)
        y = x / (k + alpha * S) ** beta

    Parameters
    ----------
    n : int
        Side of the spatial window, in pixels.
    alpha, beta, k : float
        The scale, exponent and bias of the normalisation.
    """

    def __init__(self, n=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        self.n = int(n)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)

    def call(self, inputs):
        squared = tf.square(inputs)
        # TensorFlow's 'SAME' average pooling divides by the number of in-image pixels.
        local_mean = tf.nn.avg_pool2d(squared, ksize=self.n, strides=1, padding="SAME")
        summed = tf.reduce_sum(local_mean, axis=-1, keepdims=True)
        base = self.k + self.alpha * summed
        if self.beta == 0.75:  # GaMorNet's exponent
            # base ** 0.75 = sqrt(base) * sqrt(sqrt(base)): the same numbers to float rounding, but engines that fuse
            # the power into the division by channel (OpenVINO) evaluate it once per channel, where two square
            # roots cost a fraction of a general power (docs/speed.rst).
            root = tf.sqrt(base)
            return inputs / (root * tf.sqrt(root))
        return inputs / tf.pow(base, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"n": self.n, "alpha": self.alpha, "beta": self.beta, "k": self.k})
        return config


@keras.saving.register_keras_serializable(package="gamornet")
class TFLearnLocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation of GaMorNet's TFLearn models.

    TFLearn's ``local_response_normalization`` with its defaults, that is
    ``tf.nn.local_response_normalization(depth_radius=5, bias=1.0, alpha=1e-4,
    beta=0.75)``: ``y = x / (bias + alpha * sum of x**2 over the channels
    c - 5 ... c + 5 at the same pixel) ** beta``.
    """

    def __init__(self, depth_radius=5, bias=1.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        return tf.nn.local_response_normalization(
            inputs, depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"depth_radius": self.depth_radius, "bias": self.bias, "alpha": self.alpha, "beta": self.beta})
        return config


_LRN_LAYERS = {"keras": LocalResponseNormalization, "tflearn": TFLearnLocalResponseNormalization}


def _conv(filters, size, strides, name):
    return keras.layers.Conv2D(
        filters,
        size,
        strides=strides,
        padding="same",
        activation="relu",
        kernel_initializer=keras.initializers.VarianceScaling(scale=1.0, mode="fan_in", distribution="uniform"),
        bias_initializer="zeros",
        name=name,
    )


def _dense(units, activation, name):
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=keras.initializers.TruncatedNormal(mean=0.0, stddev=0.05),
        bias_initializer="zeros",
        name=name,
    )


def build_network(input_shape, lrn="keras"):
    """Build the 8-layer GaMorNet network (Table 2 of the paper) with fresh weights.

    Parameters
    ----------
    input_shape : tuple of int
        A resolved (x, y, ndim).
    lrn : {'keras', 'tflearn'}
        The LRN flavour: that of the backend whose weights the network will hold.

    Returns
    -------
    keras.Model
        The uncompiled network. Its layers are named as in the published Keras
        files (``conv2d_1`` ... ``dense_3``); its 8 weighted layers are the
        paper's layers [2, 5, 8, 9, 10, 13, 15, 17].
    """
    if lrn not in _LRN_LAYERS:
        raise ValueError(f"lrn must be one of {LRN_FLAVOURS}. Received: lrn={lrn!r}")
    normalisation = _LRN_LAYERS[lrn]
    inputs = keras.Input(shape=tuple(input_shape), name="input_1")
    x = _conv(96, 11, 4, "conv2d_1")(inputs)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="max_pooling2d_1")(x)
    x = normalisation(name="local_response_normalization_1")(x)
    x = _conv(256, 5, 1, "conv2d_2")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="max_pooling2d_2")(x)
    x = normalisation(name="local_response_normalization_2")(x)
    x = _conv(384, 3, 1, "conv2d_3")(x)
    x = _conv(384, 3, 1, "conv2d_4")(x)
    x = _conv(256, 3, 1, "conv2d_5")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="max_pooling2d_3")(x)
    x = normalisation(name="local_response_normalization_3")(x)
    x = keras.layers.Flatten(name="flatten_1")(x)
    x = _dense(4096, "tanh", "dense_1")(x)
    x = keras.layers.Dropout(0.5, name="dropout_1")(x)
    x = _dense(4096, "tanh", "dense_2")(x)
    x = keras.layers.Dropout(0.5, name="dropout_2")(x)
    outputs = _dense(3, "softmax", "dense_3")(x)
    return keras.Model(inputs, outputs, name="gamornet")


def weighted_layers(model):
    """The 8 weighted layers of a GaMorNet network, in order.

    Raises
    ------
    ValueError
        The model does not have 8 layers with weights.
    """
    layers = [layer for layer in model.layers if layer.weights]
    if len(layers) != N_WEIGHTED_LAYERS:
        raise ValueError(
            f"expected a GaMorNet model with {N_WEIGHTED_LAYERS} weighted layers. Received a model with {len(layers)}"
        )
    return layers


def set_weights(model, weights, load_bools=None):
    """Put checked weights (from :mod:`gamornet.models.formats`) into the weighted layers of ``model``.

    Parameters
    ----------
    model : keras.Model
        A network of :func:`build_network`.
    weights : list of list of numpy.ndarray
        The 8 [kernel, bias] pairs, in network order.
    load_bools : sequence of 8 bool, optional
        Which layers take their weights; the others keep theirs. Default: all.

    Returns
    -------
    keras.Model
        ``model``.
    """
    load_bools = [True] * N_WEIGHTED_LAYERS if load_bools is None else load_bools
    for layer, arrays, load in zip(weighted_layers(model), weights, load_bools):
        if load:
            layer.set_weights(arrays)
    return model
