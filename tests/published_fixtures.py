"""Stand-ins for the published model files, for the downloader and CLI tests.

- :func:`write_saver_checkpoint` writes a TensorFlow 1 style checkpoint (the three
  files of a TFLearn checkpoint) with ``tf.compat.v1.train.Saver`` in a fresh
  ``tf.Graph``, under TFLearn's variable names, so the downloader's checks meet
  the format they meet in the wild.
"""

import os

from gamornet.models.formats.tflearn_checkpoint import WEIGHT_VARIABLES as TFLEARN_WEIGHT_VARIABLES


def write_saver_checkpoint(prefix, weights, names=TFLEARN_WEIGHT_VARIABLES, global_step=562800):
    """Write 8 (kernel, bias) pairs as a TFLearn-style checkpoint at ``prefix``.

    Parameters
    ----------
    prefix : str
        The checkpoint prefix: ``<prefix>.data-00000-of-00001``, ``<prefix>.index``
        and ``<prefix>.meta`` are written.
    weights : list of (numpy.ndarray, numpy.ndarray)
        Kernels and biases in Keras layout (TFLearn's ``W`` and ``b`` have it too).
    names : sequence of (str, str)
        Variable names of each pair (default: TFLearn's ``Conv2D/W`` ...).
    global_step : int
        Stored as TFLearn's ``Global_Step`` variable, beside an ``is_training`` flag.

    Returns
    -------
    str
        ``prefix``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        assignments = []
        for pair_names, pair in zip(names, weights):
            for name, value in zip(pair_names, pair):
                variable = v1.get_variable(name, shape=value.shape, dtype=tf.float32,
                                           initializer=v1.zeros_initializer())
                placeholder = v1.placeholder(tf.float32, shape=value.shape)
                assignments.append((variable.assign(placeholder), placeholder, value))
        v1.get_variable("Global_Step", shape=(), dtype=tf.int32,
                        initializer=v1.constant_initializer(global_step), trainable=False)
        v1.get_variable("is_training", shape=(), dtype=tf.bool, initializer=v1.constant_initializer(False),
                        trainable=False)
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            for assign, placeholder, value in assignments:
                session.run(assign, feed_dict={placeholder: value})
            saver.save(session, prefix, write_meta_graph=True, write_state=False)
    return prefix

