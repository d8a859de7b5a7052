"""Write TFLearn checkpoints with known weights, with the real tflearn package.

The checkpoints are laid out like the published ones (SPEC §4): written from a
training graph (a ``regression`` layer with TFLearn's Momentum optimizer and a
learning-rate decay), so besides the weights ``Conv2D/W`` ... ``FullyConnected_2/b``
they hold the Momentum slots (``Conv2D/W/Momentum`` ...), ``Global_Step``,
``Training_step``, ``is_training`` and the metric moving averages.

The network is built here with tflearn's own layer functions, independently of
``gamornet.tflearn_module``; only gamornet's compat layer is used, to import
tflearn on TensorFlow 2.
"""

import functools
import os
import re

import numpy as np

import reference

#: The variable names of the 8 (kernel, bias) pairs, in the order of the network.
WEIGHT_NAMES = tuple(
    (f"{scope}/W", f"{scope}/b")
    for scope in ("Conv2D", "Conv2D_1", "Conv2D_2", "Conv2D_3", "Conv2D_4",
                  "FullyConnected", "FullyConnected_1", "FullyConnected_2")
)

CHECKPOINT_SUFFIXES = (".data-00000-of-00001", ".index", ".meta")


def _training_network(tflearn, input_shape):
    """The TFLearn flavour of Table 2, with tflearn's default layer names."""
    net = tflearn.input_data(shape=[None, *input_shape])
    net = tflearn.conv_2d(net, 96, 11, strides=4, activation="relu")
    net = tflearn.max_pool_2d(net, 3, strides=2)
    net = tflearn.local_response_normalization(net)
    net = tflearn.conv_2d(net, 256, 5, activation="relu")
    net = tflearn.max_pool_2d(net, 3, strides=2)
    net = tflearn.local_response_normalization(net)
    net = tflearn.conv_2d(net, 384, 3, activation="relu")
    net = tflearn.conv_2d(net, 384, 3, activation="relu")
    net = tflearn.conv_2d(net, 256, 3, activation="relu")
    net = tflearn.max_pool_2d(net, 3, strides=2)
    net = tflearn.local_response_normalization(net)
    net = tflearn.fully_connected(net, 4096, activation="tanh")
    net = tflearn.dropout(net, 0.5)
    net = tflearn.fully_connected(net, 4096, activation="tanh")
    net = tflearn.dropout(net, 0.5)
    net = tflearn.fully_connected(net, 3, activation="softmax")
    momentum = tflearn.Momentum(learning_rate=1e-4, momentum=0.9, lr_decay=0.96, decay_step=100)
    return tflearn.regression(net, optimizer=momentum, loss="categorical_crossentropy")


def write_tflearn_checkpoint(prefix, weights, input_shape):
    """Write a TFLearn checkpoint holding ``weights``, with real tflearn.

    Parameters
    ----------
    prefix : str
        The checkpoint prefix, such as ``<folder>/check-1546293``: the files
        ``<prefix>.data-00000-of-00001``, ``<prefix>.index`` and
        ``<prefix>.meta`` are written. A trailing ``-<number>`` sets the step
        counters (``Global_Step``, ``Training_step``) to that number, as in a
        checkpoint TFLearn wrote during training.
    weights : list of 8 (kernel, bias) pairs
        In Keras layout, which is also tflearn's: conv kernels (k, k, c_in,
        c_out), dense kernels (n_in, n_out).
    input_shape : tuple of int
        (x, y, ndim) of the network the weights belong to.

    Returns
    -------
    str
        ``prefix``.
    """
    import tensorflow as tf

    from gamornet._tflearn_compat import import_tflearn, silenced_deprecations

    tflearn = import_tflearn()
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    step = re.search(r"-(\d+)$", prefix)
    graph = tf.Graph()
    with graph.as_default(), silenced_deprecations():
        network = _training_network(tflearn, tuple(input_shape))
        model = tflearn.DNN(network, tensorboard_verbose=0, tensorboard_dir=os.path.join(folder, "logs"))
        variables = {variable.op.name: variable for variable in tf.compat.v1.global_variables()}
        values = {}
        for (kernel_name, bias_name), (kernel, bias) in zip(WEIGHT_NAMES, weights):
            values[kernel_name] = np.asarray(kernel, dtype=np.float32)
            values[bias_name] = np.asarray(bias, dtype=np.float32)
        if step:
            for counter in ("Global_Step", "Training_step"):
                values[counter] = np.float32(step.group(1))
        _assign(model.session, variables, values)
        model.save(prefix)
        model.session.close()
    return prefix


def _assign(session, variables, values):
    """Set variables through placeholders, so that no weight becomes a constant of the saved graph."""
    import tensorflow as tf

    feeds, assignments = {}, []
    for name, value in values.items():
        variable = variables[name]
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"{name}: the network needs shape {tuple(variable.shape)}, the weights have {value.shape}")
        placeholder = tf.compat.v1.placeholder(variable.dtype.base_dtype, shape=value.shape)
        assignments.append(variable.assign(placeholder))
        feeds[placeholder] = value
    session.run(assignments, feed_dict=feeds)


def checkpoint_variables(prefix):
    """{variable name: numpy array} of a checkpoint, read with TensorFlow's reader."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@functools.lru_cache(maxsize=None)
def calibrated_case(input_shape, n_images=5):
    """(images, weights) with known weights calibrated for the TFLearn LRN flavour."""
    images = reference.galaxy_images(n_images, input_shape, seed=3)
    weights = reference.calibrated_weights(input_shape, images[:3], reference.lrn_tflearn, seed=4)
    return images, weights
