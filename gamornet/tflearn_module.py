"""GaMorNet with the real tflearn package on TensorFlow 2: the 0.4.x ``tflearn_module`` API.

The public functions keep the names, parameters, defaults and return values of
GaMorNet 0.4.x: :func:`gamornet_build_model_tflearn`,
:func:`gamornet_load_model_tflearn`, :func:`gamornet_predict_tflearn`,
:func:`gamornet_train_tflearn` and :func:`gamornet_tl_tflearn`. Models are
``tflearn.DNN`` objects and the published TFLearn checkpoints (written by
tflearn 0.3.2 on TensorFlow 1.13) load unchanged.

tflearn 0.5.0 is imported through :mod:`gamornet._tflearn_compat`, which keeps
TensorFlow 2 behaviour (eager execution) on for the process, so this module and
:mod:`gamornet.keras_module` work side by side. Every tflearn model lives in its
own ``tf.Graph``: two models never share variable names, so the 0.4.x advice to
set ``clear_session=True`` in notebooks is no longer needed.
"""

import atexit
import functools
import os

import shutil
import tempfile
import threading

import numpy as np

from gamornet import models
from gamornet._tflearn_compat import import_tflearn, silenced_deprecations
from gamornet._utils import checks as _checks
from gamornet._utils.tf_logging import import_tensorflow
from gamornet.errors import ModelFileError
from gamornet.inference.predictor import predict_04x
from gamornet.models import formats
from gamornet.models.formats import tflearn_checkpoint
from gamornet.models.formats.tflearn_checkpoint import TRAINING_CHECKPOINT_NAME, first_line
from gamornet.presets import LOAD_BOOLS_PRESETS, N_WEIGHTED_LAYERS, TRAINABLE_BOOLS_PRESETS

tflearn = import_tflearn()
tf = import_tensorflow()

__all__ = [
    "gamornet_build_model_tflearn",
    "gamornet_load_model_tflearn",
    "gamornet_predict_tflearn",
    "gamornet_train_tflearn",
    "gamornet_tl_tflearn",
]

_ALL_TRUE = [True] * N_WEIGHTED_LAYERS

#: tflearn's lr_decay applies every this many steps (tflearn's default decay_step).
_DECAY_STEPS = 100


# --------------------------------------------------------------------------- models in their own graphs


def _in_model_graph(method):
    @functools.wraps(method)
    def run_in_model_graph(self, *args, **kwargs):
        with self.net.graph.as_default(), silenced_deprecations():
            return method(self, *args, **kwargs)

    return run_in_model_graph


class _GraphBoundDNN(tflearn.DNN):
    """A ``tflearn.DNN`` whose methods run in the model's own ``tf.Graph``.

    tflearn looks its inputs, targets and training-mode switch up in the
    default graph; these methods make the model's graph the default while they
    run, so the model can be used anywhere, beside Keras and other models.
    """

    fit = _in_model_graph(tflearn.DNN.fit)
    fit_batch = _in_model_graph(tflearn.DNN.fit_batch)
    predict = _in_model_graph(tflearn.DNN.predict)
    predict_label = _in_model_graph(tflearn.DNN.predict_label)
    evaluate = _in_model_graph(tflearn.DNN.evaluate)
    save = _in_model_graph(tflearn.DNN.save)
    load = _in_model_graph(tflearn.DNN.load)
    get_weights = _in_model_graph(tflearn.DNN.get_weights)
    set_weights = _in_model_graph(tflearn.DNN.set_weights)


_log_lock = threading.Lock()
_log_folder_path = None


def _log_folder():
    """A private temporary folder for tflearn's TensorBoard logs, removed when Python exits.

    tflearn writes a TensorBoard log of every training run; by default into
    /tmp/tflearn_logs/, shared by all users. GaMorNet never writes them into the
    working directory.
    """
    global _log_folder_path
    with _log_lock:
        if _log_folder_path is None:
            _log_folder_path = tempfile.mkdtemp(prefix="gamornet-tflearn-logs-")
            atexit.register(shutil.rmtree, _log_folder_path, True)
        return _log_folder_path


def _network(shape, trainable_bools, load_bools):
    """Table 2 of Ghosh et al. (2020), TFLearn flavour, built in the current default graph."""
    trainable, restore = list(trainable_bools), list(load_bools)
    net = tflearn.input_data(shape=[None, *shape])
    net = tflearn.conv_2d(net, 96, 11, strides=4, activation="relu", trainable=trainable[0], restore=restore[0])
    net = tflearn.max_pool_2d(net, 3, strides=2)
    net = tflearn.local_response_normalization(net)
    net = tflearn.conv_2d(net, 256, 5, activation="relu", trainable=trainable[1], restore=restore[1])
    net = tflearn.max_pool_2d(net, 3, strides=2)
    net = tflearn.local_response_normalization(net)
    net = tflearn.conv_2d(net, 384, 3, activation="relu", trainable=trainable[2], restore=restore[2])
    net = tflearn.conv_2d(net, 384, 3, activation="relu", trainable=trainable[3], restore=restore[3])
    net = tflearn.conv_2d(net, 256, 3, activation="relu", trainable=trainable[4], restore=restore[4])
    net = tflearn.max_pool_2d(net, 3, strides=2)
    net = tflearn.local_response_normalization(net)
    net = tflearn.fully_connected(net, 4096, activation="tanh", trainable=trainable[5], restore=restore[5])
    net = tflearn.dropout(net, 0.5)
    net = tflearn.fully_connected(net, 4096, activation="tanh", trainable=trainable[6], restore=restore[6])
    net = tflearn.dropout(net, 0.5)
    return tflearn.fully_connected(net, 3, activation="softmax", trainable=trainable[7], restore=restore[7])


def _new_model(shape, trainable_bools=_ALL_TRUE, load_bools=_ALL_TRUE, training=None):
    """A GaMorNet tflearn.DNN in a new graph; with ``training``, the training graph of 0.4.x.

    ``training`` holds the optimiser settings (lr, momentum, decay, nesterov),
    the loss, the checkpoint path (or None) and max_checkpoints.
    """
    graph = tf.Graph()
    with graph.as_default(), silenced_deprecations():
        network = _network(shape, trainable_bools, load_bools)
        checkpoint_path, max_checkpoints = None, None
        if training is not None:
            optimizer_class = tflearn.Nesterov if training["nesterov"] else tflearn.Momentum
            optimizer = optimizer_class(
                learning_rate=training["lr"],
                momentum=training["momentum"],
                lr_decay=training["decay"],
                decay_step=_DECAY_STEPS,
            )
            network = tflearn.regression(network, optimizer=optimizer, loss=training["loss"])
            checkpoint_path, max_checkpoints = training["checkpoint_path"], training["max_checkpoints"]
        return _GraphBoundDNN(
            network,
            tensorboard_verbose=0,
            tensorboard_dir=_log_folder(),
            checkpoint_path=checkpoint_path,
            max_checkpoints=max_checkpoints,
        )


def gamornet_build_model_tflearn(input_shape, trainable_bools=_ALL_TRUE, load_layers_bools=_ALL_TRUE):
    """Build the 8-layer GaMorNet network of Ghosh et al. (2020), Table 2, with tflearn.

    The network has its own ``tf.Graph``; its layers are named as in the
    published checkpoints (``Conv2D`` ... ``Conv2D_4``, ``FullyConnected`` ...
    ``FullyConnected_2``). Local response normalisation is tflearn's
    (``tf.nn.local_response_normalization`` with depth radius 5, bias 1,
    alpha 1e-4, beta 0.75).

    Parameters
    ----------
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        ``'SDSS'`` is (167, 167, 1), ``'CANDELS'`` is (83, 83, 1); otherwise a
        tuple (x, y, ndim).
    trainable_bools : list of 8 bool or {'train_bools_SDSS', 'train_bools_CANDELS'}
        Which of the weighted layers [2, 5, 8, 9, 10, 13, 15, 17] are trainable.
    load_layers_bools : list of 8 bool or {'load_bools_SDSS', 'load_bools_CANDELS'}
        Which of the weighted layers take their weights when a checkpoint is
        loaded (tflearn's ``restore=``).

    Returns
    -------
    tflearn.DNN
        The network with freshly initialised weights, ready for
        :func:`gamornet_load_model_tflearn` and ``predict``. (0.4.x returned the
        bare output tensor, to be wrapped in ``tflearn.DNN``; the model is now
        wrapped already, because it lives in a graph of its own.)

    Raises
    ------
    ValueError, TypeError
        An invalid ``input_shape`` or invalid bools.
    """
    shape = _checks.check_input_shape(input_shape)
    trainable = _checks.check_bools(trainable_bools, "trainable_bools", TRAINABLE_BOOLS_PRESETS)
    load = _checks.check_bools(load_layers_bools, "load_layers_bools", LOAD_BOOLS_PRESETS)
    return _new_model(shape, trainable, load)


# --------------------------------------------------------------------------- loading


def _restore(model, prefix):
    """Restore into ``model`` the variables of checkpoint ``prefix`` that it restores.

    The checkpoint is checked first by its format module: the 16 weights of
    GaMorNet, of the network's shapes, finite. tflearn's ``restore=False``
    layers are then skipped. Training state (step counters, momentum slots,
    metric averages) is restored where the checkpoint holds it and left freshly
    initialised where it does not (for example Nesterov slots after a Momentum run).
    """
    network_shape = tuple(model.inputs[0].shape[1:])
    formats.read_weights(prefix, network_shape, "tflearn")
    stored = tflearn_checkpoint.variable_shapes(prefix)
    wanted = {variable.op.name: variable for variable in model.trainer.to_restore}
    for name, variable in wanted.items():
        if name in stored and tuple(stored[name]) != tuple(variable.shape):
            raise ModelFileError(
                f"the TFLearn checkpoint {prefix!r} does not fit this network: variable {name!r} has shape "
                f"{tuple(stored[name])} in the checkpoint, but the network built for input_shape {network_shape} "
                f"needs {tuple(variable.shape)}. Check input_shape"
            )
    present = {name for name in wanted if name in stored}
    if not present:
        return model
    try:
        model.load(prefix, variable_name_map=lambda name: name if name in present else None)
    except tf.errors.OpError as error:
        raise ModelFileError(f"could not read the TFLearn checkpoint {prefix!r}: {first_line(error)}") from None
    return model


def gamornet_load_model_tflearn(model, model_load_path):
    """Load the weights of a TFLearn checkpoint into ``model``.

    Only variables are read from the checkpoint (its ``.meta`` graph is not
    imported). Layers built with a False load bool keep their fresh weights.

    Parameters
    ----------
    model : tflearn.DNN
        A network built by :func:`gamornet_build_model_tflearn`.
    model_load_path : str
        The checkpoint prefix: for the files ``check-1546293.index``,
        ``check-1546293.data-00000-of-00001`` and ``check-1546293.meta``, give
        ``path/check-1546293``. A folder holding tflearn's ``checkpoint``
        file stands for its newest checkpoint. ``'SDSS_sim'``, ``'SDSS_tl'``,
        ``'CANDELS_sim'`` and ``'CANDELS_tl'`` fetch the published models of
        Ghosh et al. (2020).

    Returns
    -------
    tflearn.DNN
        ``model``, with the loaded weights.

    Raises
    ------
    TypeError
        ``model`` is not a ``tflearn.DNN``.
    OSError
        The checkpoint is missing or unreadable.
    ValueError
        The checkpoint does not hold a GaMorNet network of this input shape.
    """
    if not isinstance(model, tflearn.DNN):
        raise TypeError(
            "model must be a tflearn.DNN built by gamornet_build_model_tflearn. "
            f"Received an object of type {type(model).__name__}"
        )
    return _restore_in_graph(model, models.resolve(model_load_path, "tflearn"))


def _restore_in_graph(model, prefix):
    with model.net.graph.as_default(), silenced_deprecations():
        return _restore(model, prefix)


# --------------------------------------------------------------------------- predictions


def gamornet_predict_tflearn(img_array, model_load_path, input_shape, batch_size=64, individual_arrays=False,
                             trainable_bools=_ALL_TRUE, clear_session=False, precision="fp32"):
    """Use a TFLearn GaMorNet model to predict the classes of galaxy images.

    Parameters
    ----------
    img_array : numpy.ndarray of shape (n, x, y, ndim)
        The images, with finite pixel values, in the units the model was
        trained on (the published models take images as they are, unscaled).
    model_load_path : str
        The checkpoint prefix (``path/check-1546293`` for the three files
        ``check-1546293.*``), or one of ``'SDSS_sim'``, ``'SDSS_tl'``,
        ``'CANDELS_sim'``, ``'CANDELS_tl'``, which fetch the published models
        of Ghosh et al. (2020).
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        ``'SDSS'`` is (167, 167, 1), ``'CANDELS'`` is (83, 83, 1).
    batch_size : int
        Images processed at a time. It does not change the predictions.
    individual_arrays : bool
        If True, return three arrays (disk, indeterminate, bulge) instead of one.
    trainable_bools : list of 8 bool or {'train_bools_SDSS', 'train_bools_CANDELS'}
        The trainable layers of the model during its training, as in 0.4.x.
        They do not change the predictions.
    clear_session : bool
        Accepted for 0.4.x scripts. Every call builds its model in a new graph,
        so there is no session to clear and nothing else is touched.
    precision : {'fp32', 'bf16', 'int8'}
        New in 0.5 (0.4.x calls are unchanged): the arithmetic of the network.
        ``'fp32'`` (the default) gives the 0.4.x probabilities; ``'bf16'`` and
        ``'int8'`` run faster on CPUs with the instructions for them, at the
        price of a few changed classes (see :mod:`gamornet.inference.precision` and the
        "Speed" page). ``'int8'`` is calibrated on the first 300 images of
        ``img_array`` and needs the extra ``gamornet[fast]``.

    Returns
    -------
    numpy.ndarray of shape (n, 3), or tuple of three numpy.ndarray of shape (n,)
        The probabilities [p_disk, p_indeterminate, p_bulge] of each image, in
        the order of ``img_array``.

    Raises
    ------
    TypeError, ValueError
        Invalid images or parameters (checked before the model is loaded), or
        a checkpoint that does not hold a GaMorNet network of this input shape.
    OSError
        A missing or unreadable checkpoint.
    """
    _checks.check_bools(trainable_bools, "trainable_bools", TRAINABLE_BOOLS_PRESETS)
    _checks.check_flag(clear_session, "clear_session")
    return predict_04x(img_array, model_load_path, input_shape, batch_size, individual_arrays, "tflearn",
                       precision)


# --------------------------------------------------------------------------- training


def _check_lr(lr):
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)) or not np.isfinite(lr) \
            or lr <= 0:
        raise ValueError(f"lr must be a positive number (the learning rate). Received: lr={lr!r}")
    return float(lr)


def _check_decay(decay):
    decay = _checks.check_non_negative_float(decay, "decay")
    if decay > 1:
        raise ValueError(
            "decay is TFLearn's lr_decay: the learning rate is multiplied by decay every 100 steps "
            "(lr_t = lr * decay ** (step / 100)), and 0 means no decay. It must be between 0 and 1. "
            f"Received: decay={decay!r}"
        )
    return decay


def _loss_names():
    return sorted(
        name for name, value in vars(tflearn.objectives).items()
        if callable(value) and not name.startswith("_") and getattr(value, "__module__", "") == "tflearn.objectives"
        and name != "get"
    )


def _check_loss(loss):
    if callable(loss):
        return loss
    names = _loss_names()
    if not isinstance(loss, str) or loss not in names:
        raise ValueError(
            f"loss must be the name of a loss of tflearn.objectives ({', '.join(names)}) or a function "
            f"loss(y_pred, y_true). Received: loss={loss!r}"
        )
    return loss


def _training_settings(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                       epochs, max_checkpoints, batch_size, lr, momentum, decay, nesterov, nestorov, loss,
                       save_model, show_metric, clear_session):
    """Check the training arguments; return the resolved shape, fit options and optimiser settings."""
    shape = _checks.check_input_shape(input_shape)
    _checks.check_training_data(training_imgs, training_labels, validation_imgs, validation_labels, shape)
    options = {
        "epochs": _checks.check_positive_int(epochs, "epochs"),
        "batch_size": _checks.check_positive_int(batch_size, "batch_size"),
        "show_metric": _checks.check_flag(show_metric, "show_metric"),
        "save_model": _checks.check_flag(save_model, "save_model"),
    }
    _checks.check_flag(clear_session, "clear_session")
    training = {
        "lr": _check_lr(lr),
        "momentum": _checks.check_non_negative_float(momentum, "momentum"),
        "decay": _check_decay(decay),
        "nesterov": _checks.resolve_nesterov(nesterov, nestorov),
        "loss": _check_loss(loss),
        "max_checkpoints": _checks.check_positive_int(max_checkpoints, "max_checkpoints"),
    }
    return shape, options, training


def _checkpoint_path(files_save_path, save_model):
    """tflearn's checkpoint_path, <folder>/check (tflearn appends -<step>), or None when saving nothing.

    The folder is not created here (see :func:`_fit`), so bad arguments leave nothing behind.
    """
    folder = _checks.check_save_folder(files_save_path)
    if not save_model or folder is None:
        return None
    return os.path.join(os.path.abspath(folder), TRAINING_CHECKPOINT_NAME)


def _fit(model, training_imgs, training_labels, validation_imgs, validation_labels, options):
    # Created only now, once every argument and the model file are known to be good.
    _checks.resolve_save_folder(options["files_save_path"])
    # The validation set is evaluated, and a checkpoint written when saving,
    # at the end of every epoch (tflearn's snapshot_epoch).
    model.fit(
        np.asarray(training_imgs, dtype=np.float32),
        np.asarray(training_labels, dtype=np.float32),
        n_epoch=options["epochs"],
        validation_set=(np.asarray(validation_imgs, dtype=np.float32), np.asarray(validation_labels, dtype=np.float32)),
        shuffle=True,
        show_metric=options["show_metric"],
        batch_size=options["batch_size"],
        snapshot_step=None,
        snapshot_epoch=True,
    )
    return model


def gamornet_train_tflearn(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                           files_save_path="./", epochs=100, max_checkpoints=1, batch_size=64, lr=0.0001,
                           momentum=0.9, decay=0.0, nesterov=False, loss="categorical_crossentropy",
                           load_model=False, model_load_path="./", save_model=True, show_metric=True,
                           clear_session=False, *, nestorov=None):
    """Train a GaMorNet model with tflearn.

    Parameters
    ----------
    training_imgs : numpy.ndarray of shape (n, x, y, ndim)
        Training images.
    training_labels : numpy.ndarray of shape (n, 3)
        One-hot labels: disk [1, 0, 0], indeterminate [0, 1, 0], bulge [0, 0, 1].
    validation_imgs : numpy.ndarray of shape (m, x, y, ndim)
        Validation images, evaluated at the end of every epoch.
    validation_labels : numpy.ndarray of shape (m, 3)
        One-hot validation labels.
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        The image shape (x, y, ndim).
    files_save_path : str
        Folder (created if missing) for the checkpoints
        ``check-<step>.{data-00000-of-00001,index,meta}``, one written at the
        end of every epoch, ``<step>`` being the number of gradient steps so
        far. ``'/dev/null'`` saves nothing.
    epochs : int
        Number of passes over the training images.
    max_checkpoints : int
        How many of the newest checkpoints are kept; older ones are deleted.
    batch_size : int
        Images per gradient step.
    lr : float
        Learning rate of stochastic gradient descent with momentum.
    momentum : float
        Momentum, >= 0.
    decay : float
        TFLearn's learning-rate decay: lr_t = lr * decay ** (step / 100);
        0 (the default) means a constant learning rate.
    nesterov : bool
        Use Nesterov momentum (``nestorov`` is accepted too, as a keyword).
    loss : str or callable
        A loss of ``tflearn.objectives``, by name, or a function
        ``loss(y_pred, y_true)`` returning a tensor.
    load_model : bool
        Start from the checkpoint ``model_load_path`` (all layers, with the
        optimiser's state and step counter where the checkpoint holds them).
    model_load_path : str
        The checkpoint to start from, when ``load_model`` is True: a prefix,
        a folder of checkpoints (its newest) or a published model name.
    save_model : bool
        Write the checkpoints. The validation metrics are shown either way.
    show_metric : bool
        Show the accuracy along with the loss during training.
    clear_session : bool
        Accepted for 0.4.x scripts; every model has its own graph, so nothing
        needs clearing and nothing else is touched.

    Returns
    -------
    tflearn.DNN
        The trained model.

    Raises
    ------
    TypeError, ValueError
        Invalid images, labels or parameters (all checked before any network
        is built), or a checkpoint that does not fit the network.
    OSError
        A missing or unreadable checkpoint, or an unwritable ``files_save_path``.
    """
    shape, options, training = _training_settings(
        training_imgs, training_labels, validation_imgs, validation_labels, input_shape, epochs, max_checkpoints,
        batch_size, lr, momentum, decay, nesterov, nestorov, loss, save_model, show_metric, clear_session,
    )
    prefix = models.resolve(model_load_path, "tflearn") if _checks.check_flag(load_model, "load_model") else None
    training["checkpoint_path"] = _checkpoint_path(files_save_path, options["save_model"])
    options["files_save_path"] = files_save_path
    model = _new_model(shape, training=training)
    if prefix is not None:
        _restore_in_graph(model, prefix)
    return _fit(model, training_imgs, training_labels, validation_imgs, validation_labels, options)


def gamornet_tl_tflearn(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                        load_layers_bools=_ALL_TRUE, trainable_bools=_ALL_TRUE, model_load_path=".",
                        files_save_path=".", epochs=100, max_checkpoints=1, batch_size=64, lr=0.00001, momentum=0.9,
                        decay=0.0, nesterov=False, loss="categorical_crossentropy", save_model=True, show_metric=True,
                        clear_session=False, *, nestorov=None):
    """Transfer learning: retrain a saved GaMorNet model on new images, with tflearn.

    Parameters
    ----------
    training_imgs, training_labels, validation_imgs, validation_labels, input_shape
        As for :func:`gamornet_train_tflearn`.
    load_layers_bools : list of 8 bool or {'load_bools_SDSS', 'load_bools_CANDELS'}
        Which of the weighted layers [2, 5, 8, 9, 10, 13, 15, 17] take their
        weights from ``model_load_path``; the others start from fresh weights
        (tflearn's ``restore=False``).
    trainable_bools : list of 8 bool or {'train_bools_SDSS', 'train_bools_CANDELS'}
        Which of the weighted layers are trained; the others stay frozen.
    model_load_path : str
        The starting checkpoint: a prefix (``path/check-1546293``), a folder
        of checkpoints (its newest) or a published model name.
    files_save_path, epochs, max_checkpoints, batch_size, lr, momentum, decay
        As for :func:`gamornet_train_tflearn`. The step counter continues
        from the checkpoint's, so the new checkpoints are numbered after it,
        as tflearn numbers them.
    nesterov, loss, save_model, show_metric, clear_session
        As for :func:`gamornet_train_tflearn` (``nestorov`` is accepted too,
        as a keyword).

    Returns
    -------
    tflearn.DNN
        The retrained model.

    Raises
    ------
    TypeError, ValueError
        Invalid images, labels, bools or parameters (all checked before any
        network is built), or a checkpoint that does not fit the network.
    OSError
        A missing or unreadable checkpoint, or an unwritable ``files_save_path``.
    """
    shape, options, training = _training_settings(
        training_imgs, training_labels, validation_imgs, validation_labels, input_shape, epochs, max_checkpoints,
        batch_size, lr, momentum, decay, nesterov, nestorov, loss, save_model, show_metric, clear_session,
    )
    load = _checks.check_bools(load_layers_bools, "load_layers_bools", LOAD_BOOLS_PRESETS)
    trainable = _checks.check_bools(trainable_bools, "trainable_bools", TRAINABLE_BOOLS_PRESETS)
    prefix = models.resolve(model_load_path, "tflearn")
    training["checkpoint_path"] = _checkpoint_path(files_save_path, options["save_model"])
    options["files_save_path"] = files_save_path
    model = _new_model(shape, trainable, load, training=training)
    _restore_in_graph(model, prefix)
    return _fit(model, training_imgs, training_labels, validation_imgs, validation_labels, options)
