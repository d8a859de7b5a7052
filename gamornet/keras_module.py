"""GaMorNet with Keras 3 on TensorFlow 2: the 0.4.x ``keras_module`` API.

The public functions keep the names, parameters, defaults and return values of
GaMorNet 0.4.x: :func:`gamornet_build_model_keras`,
:func:`gamornet_load_model_keras`, :func:`gamornet_predict_keras`,
:func:`gamornet_train_keras` and :func:`gamornet_tl_keras`. The published Keras
models (legacy HDF5 files written by Keras 2.2.4 / 2.3.1) load unchanged.
"""

import csv
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gamornet import _checks, formats, models  # noqa: E402
from gamornet._atomic import atomic_path, atomic_write  # noqa: E402
from gamornet._network import LocalResponseNormalization, build_network, set_weights, weighted_layers  # noqa: E402
from gamornet.presets import LOAD_BOOLS_PRESETS, N_WEIGHTED_LAYERS, TRAINABLE_BOOLS_PRESETS  # noqa: E402
from gamornet.model_card import write_model_card  # noqa: E402

__all__ = [
    "LocalResponseNormalization",
    "gamornet_build_model_keras",
    "gamornet_load_model_keras",
    "gamornet_predict_keras",
    "gamornet_train_keras",
    "gamornet_tl_keras",
]

_ALL_TRUE = [True] * N_WEIGHTED_LAYERS


def gamornet_build_model_keras(input_shape):
    """Build the 8-layer GaMorNet network of Ghosh et al. (2020), Table 2.

    Parameters
    ----------
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        ``'SDSS'`` is (167, 167, 1), ``'CANDELS'`` is (83, 83, 1); otherwise a
        tuple (x, y, ndim).

    Returns
    -------
    keras.Model
        The uncompiled network, with freshly initialised weights. Its 8
        weighted layers are, in order, the paper's layers [2, 5, 8, 9, 10, 13,
        15, 17].

    Raises
    ------
    ValueError, TypeError
        An invalid ``input_shape``.
    """
    return build_network(_checks.check_input_shape(input_shape), lrn="keras")


def _load_weights_into(model, model_load_path, load_bools=_ALL_TRUE):
    """Load the checked weights of a Keras model file (or published name) into the layers ``load_bools`` selects."""
    path = models.resolve(model_load_path, "keras")
    set_weights(model, formats.read_weights(path, tuple(model.input_shape[1:]), "keras"), load_bools)
    return model


def gamornet_load_model_keras(model, model_load_path):
    """Load the weights of a saved GaMorNet model into ``model``.

    Only weights are read (with h5py, by layer order); no code or
    configuration stored in the file is executed. The file is checked first:
    8 weighted layers of the shapes of ``model``'s input, with finite weights.

    Parameters
    ----------
    model : keras.Model
        A network built by :func:`gamornet_build_model_keras`.
    model_load_path : str
        A legacy Keras HDF5 file (``model.save()`` or ``save_weights()``
        layout), or one of ``'SDSS_sim'``, ``'SDSS_tl'``, ``'CANDELS_sim'``,
        ``'CANDELS_tl'``.

    Returns
    -------
    keras.Model
        ``model``, with the loaded weights.

    Raises
    ------
    OSError
        The file is missing or is not HDF5.
    ValueError
        The file does not hold a GaMorNet model of this input shape, or holds
        weights that are not finite.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received an object of type {type(model).__name__}")
    weighted_layers(model)
    return _load_weights_into(model, model_load_path)


def gamornet_predict_keras(img_array, model_load_path, input_shape, batch_size=64, individual_arrays=False):
    """Use a Keras GaMorNet model to predict the classes of galaxy images.

    The model is built once per model file: a second call with the same,
    unchanged file reuses it (see :func:`gamornet.load_predictor`).

    Parameters
    ----------
    img_array : numpy.ndarray of shape (n, x, y, ndim)
        The images, with finite pixel values, in the same units the model was
        trained on (the published models take images as they are, unscaled).
    model_load_path : str
        Path to a saved Keras model (``.h5`` / ``.hdf5``), or one of
        ``'SDSS_sim'``, ``'SDSS_tl'``, ``'CANDELS_sim'``, ``'CANDELS_tl'``,
        which fetch the published models of Ghosh et al. (2020).
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        ``'SDSS'`` is (167, 167, 1), ``'CANDELS'`` is (83, 83, 1).
    batch_size : int
        Images processed at a time. It does not change the predictions.
    individual_arrays : bool
        If True, return three arrays (disk, indeterminate, bulge) instead of one.

    Returns
    -------
    numpy.ndarray of shape (n, 3), or tuple of three numpy.ndarray of shape (n,)
        The probabilities [p_disk, p_indeterminate, p_bulge] of each image, in
        the order of ``img_array``.

    Raises
    ------
    TypeError, ValueError
        Invalid images or parameters (checked before the model is loaded).
    OSError
        A missing or unreadable model file.
    """
    from gamornet.predictor import predict_04x

    return predict_04x(img_array, model_load_path, input_shape, batch_size, individual_arrays, "keras")


# --------------------------------------------------------------------------- training


def _save_model_atomically(model, path):
    """Write ``model`` as a legacy HDF5 file (Keras picks the format by the .hdf5 ending)."""
    with atomic_path(path, suffix=".hdf5") as temporary:
        model.save(temporary, include_optimizer=True)


class _MetricsAndCheckpoints(keras.callbacks.Callback):
    """Writes metrics.csv after every epoch and model_<epoch:02d>.hdf5 every ``checkpoint_freq`` epochs."""

    _COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")

    def __init__(self, folder, checkpoint_freq):
        super().__init__()
        self.folder = folder
        self.checkpoint_freq = checkpoint_freq
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.rows.append([epoch] + [logs.get(column, "") for column in self._COLUMNS[1:]])
        with atomic_write(os.path.join(self.folder, "metrics.csv"), "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(self._COLUMNS)
            writer.writerows(self.rows)
        if self.checkpoint_freq and (epoch + 1) % self.checkpoint_freq == 0:
            _save_model_atomically(self.model, os.path.join(self.folder, f"model_{epoch + 1:02d}.hdf5"))


def _learning_rate(lr, decay):
    """The optimiser's learning rate: ``lr`` (a float or schedule) with Keras 2 ``decay``.

    Keras 2's ``decay`` meant lr_t = lr / (1 + decay * iterations), which is
    ``InverseTimeDecay`` with ``decay_steps=1``.
    """
    decay = _checks.check_non_negative_float(decay, "decay")
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        if decay:
            raise ValueError(
                "decay applies to a constant learning rate; with a LearningRateSchedule as lr, build the decay "
                f"into the schedule. Received: decay={decay!r}"
            )
        return lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not np.isfinite(lr) or lr <= 0:
        raise ValueError(
            f"lr must be a positive number or a keras.optimizers.schedules.LearningRateSchedule. Received: lr={lr!r}"
        )
    if decay:
        return keras.optimizers.schedules.InverseTimeDecay(float(lr), decay_steps=1, decay_rate=decay)
    return float(lr)


def _check_compile_options(lr, momentum, decay, nesterov, loss):
    """The optimiser and loss, checked before anything is built or written."""
    momentum = _checks.check_non_negative_float(momentum, "momentum")
    optimizer = keras.optimizers.SGD(learning_rate=_learning_rate(lr, decay), momentum=momentum, nesterov=nesterov)
    try:
        loss = keras.losses.get(loss)
    except (ValueError, TypeError):
        raise ValueError(
            f"loss must be the name of a loss of keras.losses (such as 'categorical_crossentropy') or a function "
            f"loss(y_true, y_pred). Received: loss={loss!r}"
        ) from None
    return optimizer, loss


def _compile(model, optimizer, loss):
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def _check_verbose(verbose):
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0 (silent), 1 (progress bar) or 2 (one line per epoch). Received: {verbose!r}")
    return verbose


def _fit(model, training_imgs, training_labels, validation_imgs, validation_labels, folder, epochs,
         checkpoint_freq, batch_size, save_model, verbose):
    callbacks = [] if folder is None else [_MetricsAndCheckpoints(folder, checkpoint_freq)]
    model.fit(
        np.asarray(training_imgs, dtype=np.float32),
        np.asarray(training_labels, dtype=np.float32),
        validation_data=(np.asarray(validation_imgs, dtype=np.float32), np.asarray(validation_labels, dtype=np.float32)),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=verbose,
    )
    if save_model and folder is not None:
        _save_model_atomically(model, os.path.join(folder, "trained_model.hdf5"))
        write_model_card(folder, training_imgs, trained_by="gamornet.keras_module")
    return model


def _check_training_options(epochs, checkpoint_freq, batch_size, verbose):
    return (
        _checks.check_positive_int(epochs, "epochs"),
        _checks.check_positive_int(checkpoint_freq, "checkpoint_freq", allow_zero=True),
        _checks.check_positive_int(batch_size, "batch_size"),
        _check_verbose(verbose),
    )


def gamornet_train_keras(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                         files_save_path="./", epochs=100, checkpoint_freq=0, batch_size=64, lr=0.0001,
                         momentum=0.9, decay=0.0, nestorov=False, loss="categorical_crossentropy",
                         load_model=False, model_load_path="./", save_model=True, verbose=1, *, nesterov=None):
    """Train a GaMorNet model with Keras.

    Parameters
    ----------
    training_imgs : numpy.ndarray of shape (n, x, y, ndim)
        Training images.
    training_labels : numpy.ndarray of shape (n, 3)
        One-hot labels: disk [1, 0, 0], indeterminate [0, 1, 0], bulge [0, 0, 1].
    validation_imgs : numpy.ndarray of shape (m, x, y, ndim)
        Validation images.
    validation_labels : numpy.ndarray of shape (m, 3)
        One-hot validation labels.
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        The image shape (x, y, ndim).
    files_save_path : str
        Folder (created if missing) for ``metrics.csv``, the checkpoints,
        ``trained_model.hdf5`` and its model card ``model_card.json``
        (:mod:`gamornet.model_card`). ``'/dev/null'`` saves nothing.
    epochs : int
        Number of passes over the training images.
    checkpoint_freq : int
        Save ``model_<epoch:02d>.hdf5`` every this many epochs; 0 saves none.
    batch_size : int
        Images per gradient step.
    lr : float or keras.optimizers.schedules.LearningRateSchedule
        Learning rate of stochastic gradient descent.
    momentum : float
        Momentum, >= 0.
    decay : float
        Learning-rate decay with the Keras 2 meaning: lr / (1 + decay * iterations).
    nestorov : bool
        Use Nesterov momentum (the 0.4.x signature's spelling; ``nesterov`` is
        accepted too, as a keyword).
    loss : str or callable
        Any loss of ``keras.losses``.
    load_model : bool
        Start from the weights of ``model_load_path``.
    model_load_path : str
        The model to start from, when ``load_model`` is True: a file or a
        published model name.
    save_model : bool
        Write ``trained_model.hdf5`` at the end. Checkpoints are not affected.
    verbose : {0, 1, 2}
        0 silent, 1 progress bar, 2 one line per epoch.

    Returns
    -------
    keras.Model
        The trained model.

    Raises
    ------
    TypeError, ValueError
        Invalid images, labels or parameters.
    OSError
        A missing or unreadable model file, or an unwritable ``files_save_path``.
    """
    shape = _checks.check_input_shape(input_shape)
    _checks.check_training_data(training_imgs, training_labels, validation_imgs, validation_labels, shape)
    epochs, checkpoint_freq, batch_size, verbose = _check_training_options(epochs, checkpoint_freq, batch_size, verbose)
    nesterov = _checks.resolve_nesterov(nestorov, nesterov)
    optimizer, loss = _check_compile_options(lr, momentum, decay, nesterov, loss)
    _checks.check_save_folder(files_save_path)
    model = gamornet_build_model_keras(shape)
    if load_model:
        gamornet_load_model_keras(model, model_load_path)
    _compile(model, optimizer, loss)
    # Created only now: a bad argument or model file leaves nothing behind.
    folder = _checks.resolve_save_folder(files_save_path)
    return _fit(model, training_imgs, training_labels, validation_imgs, validation_labels, folder, epochs,
                checkpoint_freq, batch_size, save_model, verbose)


def gamornet_tl_keras(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                      load_layers_bools=_ALL_TRUE, trainable_bools=_ALL_TRUE, model_load_path="./",
                      files_save_path="./", epochs=100, checkpoint_freq=0, batch_size=64, lr=0.00001,
                      momentum=0.9, decay=0.0, nesterov=False, loss="categorical_crossentropy", save_model=True,
                      verbose=1, *, nestorov=None):
    """Transfer learning: retrain a saved GaMorNet model on new images.

    Parameters
    ----------
    training_imgs, training_labels, validation_imgs, validation_labels, input_shape
        As for :func:`gamornet_train_keras`.
    load_layers_bools : list of 8 bool or {'load_bools_SDSS', 'load_bools_CANDELS'}
        Which of the weighted layers [2, 5, 8, 9, 10, 13, 15, 17] take the
        weights of ``model_load_path``; the others start from fresh weights.
    trainable_bools : list of 8 bool or {'train_bools_SDSS', 'train_bools_CANDELS'}
        Which of the weighted layers are trained; the others stay frozen.
    model_load_path : str
        The starting model: a file or a published model name.
    files_save_path, epochs, checkpoint_freq, batch_size, lr, momentum, decay, nesterov, loss, save_model, verbose
        As for :func:`gamornet_train_keras` (``nestorov`` is accepted too, as a keyword).

    Returns
    -------
    keras.Model
        The retrained model.

    Raises
    ------
    TypeError, ValueError
        Invalid images, labels, bools or parameters.
    OSError
        A missing or unreadable model file, or an unwritable ``files_save_path``.
    """
    shape = _checks.check_input_shape(input_shape)
    _checks.check_training_data(training_imgs, training_labels, validation_imgs, validation_labels, shape)
    load_bools = _checks.check_bools(load_layers_bools, "load_layers_bools", LOAD_BOOLS_PRESETS)
    train_bools = _checks.check_bools(trainable_bools, "trainable_bools", TRAINABLE_BOOLS_PRESETS)
    epochs, checkpoint_freq, batch_size, verbose = _check_training_options(epochs, checkpoint_freq, batch_size, verbose)
    nesterov = _checks.resolve_nesterov(nesterov, nestorov)
    optimizer, loss = _check_compile_options(lr, momentum, decay, nesterov, loss)
    _checks.check_save_folder(files_save_path)
    model = gamornet_build_model_keras(shape)
    _load_weights_into(model, model_load_path, load_bools)
    for layer, trainable in zip(weighted_layers(model), train_bools):
        layer.trainable = trainable
    _compile(model, optimizer, loss)
    # Created only now: a bad argument or model file leaves nothing behind.
    folder = _checks.resolve_save_folder(files_save_path)
    return _fit(model, training_imgs, training_labels, validation_imgs, validation_labels, folder, epochs,
                checkpoint_freq, batch_size, save_model, verbose)
