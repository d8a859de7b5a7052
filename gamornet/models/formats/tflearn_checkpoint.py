"""The TensorFlow checkpoints of the TFLearn backend.

A checkpoint is three files sharing a prefix: ``<prefix>.index``,
``<prefix>.data-00000-of-00001`` and ``<prefix>.meta``. The published TFLearn
models were written by tflearn 0.3.2 on TensorFlow 1.13 from the training
graph: besides the weights of the 8 weighted layers (``Conv2D/W``, ``Conv2D/b``
... ``FullyConnected_2/b``) they hold Momentum slots, step counters and metric
averages. gamornet's TFLearn training writes ``check-<step>.*`` files the same way.

Only variables are read (TensorFlow checks each tensor's checksum); the graph
in the ``.meta`` file is parsed to check it, never imported or run. Imports
TensorFlow when a checkpoint is read.
"""

import os
import re

import numpy as np

from gamornet.errors import ModelFileError
from gamornet.models.formats import check_weights

__all__ = [
    "LAYER_SCOPES",
    "SUFFIXES",
    "TRAINING_CHECKPOINT_NAME",
    "WEIGHT_VARIABLES",
    "check",
    "first_line",
    "newest_checkpoint",
    "read_weights",
    "resolve_prefix",
    "variable_shapes",
]

#: Endings of the three files of one checkpoint, appended to its prefix. The
#: index is written last by the downloader: a checkpoint is usable once it is there.
SUFFIXES = (".data-00000-of-00001", ".index", ".meta")

#: tflearn's default scope names of the 8 weighted layers in a fresh graph, in
#: the order of the paper's layers [2, 5, 8, 9, 10, 13, 15, 17]: the names in
#: the published checkpoints.
LAYER_SCOPES = (
    "Conv2D", "Conv2D_1", "Conv2D_2", "Conv2D_3", "Conv2D_4",
    "FullyConnected", "FullyConnected_1", "FullyConnected_2",
)

#: The (weight, bias) variables of the 8 weighted layers, in network order.
#: Their shapes are those of :func:`gamornet.presets.weight_shapes`.
WEIGHT_VARIABLES = tuple((f"{scope}/W", f"{scope}/b") for scope in LAYER_SCOPES)

#: Checkpoints written by training are ``<files_save_path>/check-<step>.*``.
TRAINING_CHECKPOINT_NAME = "check"


def _tensorflow():
    from gamornet._utils.tf_logging import import_tensorflow

    return import_tensorflow()


def first_line(error):
    """The first line of an error's message (TensorFlow's are long), or its type when it has none."""
    message = (getattr(error, "message", None) or str(error)).strip()
    return message.splitlines()[0] if message else type(error).__name__


def _describe(prefix):
    return f"the TFLearn checkpoint {prefix!r}"


def newest_checkpoint(folder):
    """The newest checkpoint of ``folder``: as its ``checkpoint`` file says, else the highest step number.

    tflearn records absolute paths in the ``checkpoint`` file, which go stale
    when a folder of checkpoints is moved or copied; the step numbers in the
    file names (``check-<step>.index``) do not. A checkpoint without its data
    file does not count.

    Returns
    -------
    str or None
        The prefix, or None when the folder holds no checkpoint.
    """
    newest = _tensorflow().train.latest_checkpoint(folder)
    if newest is not None:
        return newest
    steps = {}
    for name in os.listdir(folder):
        match = re.fullmatch(r"(.+-(\d+))\.index", name)
        if match and os.path.isfile(os.path.join(folder, match.group(1) + SUFFIXES[0])):
            steps[int(match.group(2))] = os.path.join(folder, match.group(1))
    return steps[max(steps)] if steps else None


def resolve_prefix(path):
    """The prefix of the checkpoint that ``path`` names.

    Parameters
    ----------
    path : str or os.PathLike
        The prefix, one of the checkpoint's three files, or a folder (its
        newest checkpoint, as tflearn training leaves it).

    Returns
    -------
    str

    Raises
    ------
    TypeError
        ``path`` is not a path.
    FileNotFoundError
        No checkpoint there (its index or data file is missing).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "model_load_path must be the prefix of a TFLearn checkpoint (such as 'models/check-1546293') or "
            f"one of 'SDSS_sim', 'SDSS_tl', 'CANDELS_sim', 'CANDELS_tl'. Received an object of type "
            f"{type(path).__name__}"
        )
    prefix = os.fspath(path)
    for ending in SUFFIXES:
        if prefix.endswith(ending):
            prefix = prefix[: -len(ending)]
            break
    if os.path.isdir(prefix):
        newest = newest_checkpoint(prefix)
        if newest is None:
            raise FileNotFoundError(
                f"model_load_path {prefix!r} is a folder without a TFLearn checkpoint: give the checkpoint "
                "prefix, such as 'folder/check-1546293' for the files check-1546293.index, "
                "check-1546293.data-00000-of-00001 and check-1546293.meta"
            )
        prefix = newest
    missing = [prefix + ending for ending in SUFFIXES[:2] if not os.path.isfile(prefix + ending)]
    if missing:
        raise FileNotFoundError(
            f"model_load_path: no TFLearn checkpoint found at prefix {prefix!r}: missing "
            f"{', '.join(repr(item) for item in missing)}. A checkpoint is three files, <prefix>.index, "
            "<prefix>.data-00000-of-00001 and <prefix>.meta; give the prefix"
        )
    return prefix


def _reader(prefix):
    tf = _tensorflow()
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise ModelFileError(f"could not read {_describe(prefix)}: {first_line(error)}") from None


def variable_shapes(prefix):
    """{variable name: shape} of every variable of the checkpoint at ``prefix``.

    Raises
    ------
    gamornet.errors.ModelFileError
        The checkpoint cannot be read.
    """
    return _reader(prefix).get_variable_to_shape_map()


def read_weights(prefix, input_shape):
    """The 8 checked [W, b] pairs of GaMorNet's weighted layers in the checkpoint at ``prefix``.

    Parameters
    ----------
    prefix : str
        The checkpoint prefix (see :func:`resolve_prefix`).
    input_shape : tuple of int
        The (x, y, ndim) the model must have been built for.

    Returns
    -------
    list of list of numpy.ndarray
        [W, b] of each weighted layer, in network order (the same layout as
        the Keras layers' [kernel, bias]).

    Raises
    ------
    gamornet.errors.ModelFileError
        The checkpoint cannot be read, lacks a weight variable, holds one of
        the wrong shape, or holds weights that are not finite.
    """
    tf = _tensorflow()
    reader = _reader(prefix)
    shapes = reader.get_variable_to_shape_map()
    absent = [name for names in WEIGHT_VARIABLES for name in names if name not in shapes]
    if absent:
        raise ModelFileError(
            f"{_describe(prefix)} does not hold a GaMorNet network: it lacks the variables {absent}. GaMorNet "
            "checkpoints hold Conv2D/W, Conv2D/b ... Conv2D_4/b and FullyConnected/W ... FullyConnected_2/b"
        )
    layers = []
    for scope, names in zip(LAYER_SCOPES, WEIGHT_VARIABLES):
        arrays = []
        for name in names:
            try:
                arrays.append(np.asarray(reader.get_tensor(name)))
            # A short data file gives IndexError; a damaged one, DataLossError.
            except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as error:
                raise ModelFileError(
                    f"{_describe(prefix)} is corrupt: reading {name!r} failed: {first_line(error)}"
                ) from None
        layers.append((scope, arrays))
    try:
        return check_weights(layers, input_shape, _describe(prefix))
    except ValueError as error:
        raise ModelFileError(str(error)) from None


def check(prefix, input_shape):
    """Raise unless the three files at ``prefix`` hold a GaMorNet checkpoint for ``input_shape``.

    Reads every weight variable (as :func:`read_weights`) and parses the graph
    in ``<prefix>.meta`` (never imports it).

    Raises
    ------
    FileNotFoundError
        One of the three files is missing.
    gamornet.errors.ModelFileError
        As :func:`read_weights`, or a ``.meta`` file that is not a graph.
    """
    for suffix in SUFFIXES:
        if not os.path.isfile(prefix + suffix):
            raise FileNotFoundError(f"{_describe(prefix)} is incomplete: {prefix + suffix!r} is missing")
    read_weights(prefix, input_shape)
    tf = _tensorflow()
    from google.protobuf.message import DecodeError

    graph = tf.compat.v1.MetaGraphDef()
    with open(prefix + ".meta", "rb") as stream:
        content = stream.read()
    try:
        graph.ParseFromString(content)
    except DecodeError as error:
        raise ModelFileError(f"the TFLearn graph file {prefix + '.meta'!r} is corrupt: {error}") from None
    if not graph.graph_def.node:
        raise ModelFileError(f"the TFLearn graph file {prefix + '.meta'!r} holds no graph")
