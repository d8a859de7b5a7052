"""GaMorNet with Keras 3 on TensorFlow 2: the 0.4.x ``keras_module`` API.

The public functions keep the names, parameters, defaults and return values of
GaMorNet 0.4.x: :func:`gamornet_build_model_keras`,
:func:`gamornet_load_model_keras`, :func:`gamornet_predict_keras`,
:func:`gamornet_train_keras` and :func:`gamornet_tl_keras`. The published Keras
models (legacy HDF5 files written by Keras 2.2.4 / 2.3.1) load unchanged.
"""

import os

# First: it imports TensorFlow quietly, then Keras, and checks Keras' backend.
from gamornet.models.network import LocalResponseNormalization, build_network, set_weights, weighted_layers  # noqa: I100

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gamornet import models  # noqa: E402
from gamornet._utils import checks as _checks
from gamornet.models import formats
from gamornet.presets import LOAD_BOOLS_PRESETS, N_WEIGHTED_LAYERS, TRAINABLE_BOOLS_PRESETS  # noqa: E402

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


def gamornet_predict_keras(img_array, model_load_path, input_shape, batch_size=64, individual_arrays=False,
                           precision="fp32"):
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
        Invalid images or parameters (checked before the model is loaded).
    OSError
        A missing or unreadable model file.
    """
    from gamornet.inference.predictor import predict_04x

    return predict_04x(img_array, model_load_path, input_shape, batch_size, individual_arrays, "keras", precision)


# --------------------------------------------------------------------------- training
# The loop itself (engines, callbacks, resumable state, tf.distribute) is gamornet.training._loop; the data
# (arrays, catalogues, tf.data streaming, augmentation) is gamornet.training.data.

from gamornet.io.catalogues import TrainingCatalogue  # noqa: E402
from gamornet.training import _loop as _training_loop  # noqa: E402
from gamornet.training import data as _training_data  # noqa: E402


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


def _check_loss(loss):
    """The Keras loss ``loss`` names (a function or a Loss object)."""
    try:
        return keras.losses.get(loss)
    except (ValueError, TypeError):
        raise ValueError(
            f"loss must be the name of a loss of keras.losses (such as 'categorical_crossentropy') or a function "
            f"loss(y_true, y_pred). Received: loss={loss!r}"
        ) from None


def _check_compile_options(lr, momentum, decay, nesterov, loss, optimizer="sgd"):
    """The optimiser and loss, checked before anything is built or written."""
    momentum = _checks.check_non_negative_float(momentum, "momentum")
    learning_rate = _learning_rate(lr, decay)
    if _checks.check_optimizer(optimizer) == "adam":
        made = keras.optimizers.Adam(learning_rate=learning_rate)
    else:
        made = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov)
    return made, _check_loss(loss)


def _compile(model, optimizer, loss):
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def _check_verbose(verbose):
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0 (silent), 1 (progress bar) or 2 (one line per epoch). Received: {verbose!r}")
    return verbose


def _check_training_options(epochs, checkpoint_freq, batch_size, verbose):
    return (
        _checks.check_positive_int(epochs, "epochs"),
        _checks.check_positive_int(checkpoint_freq, "checkpoint_freq", allow_zero=True),
        _checks.check_positive_int(batch_size, "batch_size"),
        _check_verbose(verbose),
    )


def _describe_setting(value):
    """A description of a setting that is the same in every run given the same value (no memory addresses)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    config = getattr(value, "get_config", None)
    described = {"class": f"{type(value).__module__}.{type(value).__qualname__}"}
    if config is not None:
        described["config"] = config()
    elif callable(value):
        described["class"] = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    return described


def _describe_source(source):
    """How a training source is recorded with a resumable run's settings."""
    if isinstance(source, TrainingCatalogue):
        return os.path.abspath(source.source)
    if isinstance(source, _training_data.TrainingArrays):
        return f"arrays of shape {tuple(source.images.shape)}"
    return "a tf.data.Dataset"


def _train(data, input_shape, *, mode, build, files_save_path, epochs, checkpoint_freq, batch_size, verbose, lr,
           momentum, decay, nesterov, loss, save_model, options, path_column, label_column, model_settings,
           optimizer):
    """The body shared by gamornet_train_keras, gamornet_tl_keras and the ``gamornet train`` / ``tl`` commands.

    ``data`` is (training_imgs, training_labels, validation_imgs,
    validation_labels) as the public functions received them; everything is
    checked before a network is built.
    """
    shape = _checks.check_input_shape(input_shape)
    epochs, checkpoint_freq, batch_size, verbose = _check_training_options(epochs, checkpoint_freq, batch_size, verbose)
    training_imgs, training_labels, validation_imgs, validation_labels = data
    training = _training_data.resolve_source(training_imgs, training_labels, shape, "training_imgs", "training_labels",
                                             path_column, label_column)  # fmt: skip
    validation = _training_data.resolve_source(validation_imgs, validation_labels, shape, "validation_imgs",
                                               "validation_labels", path_column, label_column)  # fmt: skip
    # Checked without making the optimizer: its variables would start TensorFlow's runtime, which a multi-worker
    # strategy must configure first.
    _learning_rate(lr, decay)
    _checks.check_non_negative_float(momentum, "momentum")
    _checks.check_optimizer(optimizer)
    loss = _check_loss(loss)
    # Checked, not created: the folder is created once the network is built, so a bad argument or model file
    # leaves nothing behind.
    folder = _checks.check_save_folder(files_save_path)
    if options.resume and folder is None:
        raise ValueError("a resumable run needs an output folder to keep its state in, not /dev/null")
    settings = dict(model_settings, mode=mode, input_shape=list(shape), batch_size=batch_size,
                    optimizer=optimizer, lr=_describe_setting(lr), momentum=momentum, decay=decay, nesterov=nesterov,
                    loss=_describe_setting(loss), precision=options.precision,
                    training=_describe_source(training), validation=_describe_source(validation),
                    preprocessing=options.preprocessing,
                    augmentation=None if options.augmentation is None else options.augmentation.to_dict())  # fmt: skip

    def build_and_compile():
        model = build()
        # The optimizer is made here, in the scope of the run's tf.distribute strategy.
        _compile(model, _check_compile_options(lr, momentum, decay, nesterov, loss, optimizer)[0], loss)
        return model

    return _training_loop.run(
        build_and_compile, training, validation, folder, input_shape=shape, epochs=epochs,
        checkpoint_freq=checkpoint_freq, batch_size=batch_size, save_model=save_model, verbose=verbose, loss=loss,
        options=options, settings=settings,
    )  # fmt: skip


def gamornet_train_keras(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                         files_save_path="./", epochs=100, checkpoint_freq=0, batch_size=64, lr=0.0001,
                         momentum=0.9, decay=0.0, nestorov=False, loss="categorical_crossentropy",
                         load_model=False, model_load_path="./", save_model=True, verbose=1, *, nesterov=None,
                         preprocessing=None, augmentation=None, path_column="path", label_column="label",
                         distribute=None, precision="fp32", resume=False, fresh=False, seed=None, cache="auto",
                         optimizer="sgd"):
    """Train a GaMorNet model with Keras.

    Parameters
    ----------
    training_imgs : numpy.ndarray of shape (n, x, y, ndim), or a catalogue, or a tf.data.Dataset
        Training images. Besides the 0.4.x array: a catalogue (its path, or a
        :class:`gamornet.io.catalogues.TrainingCatalogue`) of image files and labels, read
        from disk as training needs them (:mod:`gamornet.training.data`); or a
        ``tf.data.Dataset`` of (images, one-hot labels) batches.
    training_labels : numpy.ndarray of shape (n, 3), or None
        One-hot labels: disk [1, 0, 0], indeterminate [0, 1, 0], bulge [0, 0, 1].
        None when ``training_imgs`` is a catalogue or a dataset.
    validation_imgs : numpy.ndarray of shape (m, x, y, ndim), or a catalogue, or a tf.data.Dataset
        Validation images, in any of the forms of ``training_imgs``.
    validation_labels : numpy.ndarray of shape (m, 3), or None
        One-hot validation labels (None for a catalogue or a dataset).
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        The image shape (x, y, ndim).
    files_save_path : str
        Folder (created if missing) for ``metrics.csv``, the checkpoints,
        ``trained_model.hdf5`` and its model card ``model_card.json``
        (:mod:`gamornet.models.card`). ``'/dev/null'`` saves nothing.
    epochs : int
        Number of passes over the training images.
    checkpoint_freq : int
        Save ``model_<epoch:02d>.hdf5`` every this many epochs; 0 saves none.
    batch_size : int
        Images per gradient step (over all replicas when ``distribute`` is set).
    lr : float or keras.optimizers.schedules.LearningRateSchedule
        Learning rate of the optimizer.
    momentum : float
        Momentum of ``'sgd'``, >= 0 (``'adam'`` keeps its own moment estimates).
    decay : float
        Learning-rate decay with the Keras 2 meaning: lr / (1 + decay * iterations).
    nestorov : bool
        Use Nesterov momentum with ``'sgd'`` (the 0.4.x signature's spelling;
        ``nesterov`` is accepted too, as a keyword).
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
    preprocessing : dict, optional
        Settings of :func:`gamornet.science.preprocess.preprocessing_settings`: applied
        to every training and validation image, and saved beside the model in
        ``preprocessing.json``. Default: images as they are.
    augmentation : gamornet.training.data.AugmentationSettings or dict, optional
        Random rotations, flips, shifts and extra noise for the training
        images; saved in ``augmentation.json``. Default: none.
    path_column, label_column : str
        The columns of a catalogue (:func:`gamornet.io.catalogues.read_training_catalogue`).
    distribute : {None, 'mirrored', 'multiworker'}
        ``'mirrored'``: all local GPUs (``tf.distribute.MirroredStrategy``).
        ``'multiworker'``: several processes or machines
        (``MultiWorkerMirroredStrategy``, from ``TF_CONFIG`` or Slurm), with a
        custom training step; call it before any other TensorFlow work in the
        process. See :doc:`/training`.
    precision : {'fp32', 'bf16', 'fp16'}
        Mixed precision: ``'bf16'`` (CPU or GPU), ``'fp16'`` (GPU only).
    resume : bool
        Keep the training state in ``files_save_path/backup/`` after every
        epoch, and continue from it when called again with the same settings
        (after a crash or a time limit).
    fresh : bool
        With ``resume``: forget the saved state and start over.
    seed : int, optional
        Seed of the initial weights, the shuffling, dropout and augmentation.
    cache : {'auto', True, False}
        For catalogues: keep the decoded images in memory, or stream them
        (:func:`gamornet.training.data.catalogue_dataset`).
    optimizer : {'sgd', 'adam'}
        ``'sgd'``: stochastic gradient descent with ``momentum`` (and
        ``nesterov``), as GaMorNet was trained (Ghosh et al. 2020) and as
        0.4.x did. ``'adam'``: Adam (Kingma & Ba 2015), which learns faster
        in a short run from scratch; it takes lr values about ten times
        smaller (``gamornet demo`` uses a peak of 6e-4, see :doc:`/training`).

    Returns
    -------
    keras.Model
        The trained model.

    Raises
    ------
    TypeError, ValueError
        Invalid images, labels, catalogues or parameters; an unreadable or
        wrongly shaped image (named).
    OSError
        A missing or unreadable model file or image file, or an unwritable
        ``files_save_path``.
    """
    nesterov = _checks.resolve_nesterov(nestorov, nesterov)
    options = _training_loop.check_run_options(preprocessing, augmentation, distribute, precision, resume, fresh, seed,
                                               cache)  # fmt: skip
    return _train_from_scratch(
        (training_imgs, training_labels, validation_imgs, validation_labels), input_shape, options,
        files_save_path=files_save_path, epochs=epochs, checkpoint_freq=checkpoint_freq, batch_size=batch_size, lr=lr,
        momentum=momentum, decay=decay, nesterov=nesterov, loss=loss, load_model=load_model,
        model_load_path=model_load_path, save_model=save_model, verbose=verbose, path_column=path_column,
        label_column=label_column, optimizer=optimizer,
    )  # fmt: skip


def _train_from_scratch(data, input_shape, options, *, load_model, model_load_path, **parameters):
    """gamornet_train_keras after its options are checked (``gamornet train`` calls it with its own options)."""

    def build():
        model = gamornet_build_model_keras(input_shape)
        if load_model:
            gamornet_load_model_keras(model, model_load_path)
        return model

    model_settings = {"load_model": bool(load_model), "model_load_path": str(model_load_path) if load_model else None}
    return _train(data, input_shape, mode="train", build=build, options=options, model_settings=model_settings,
                  **parameters)  # fmt: skip


def gamornet_tl_keras(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                      load_layers_bools=_ALL_TRUE, trainable_bools=_ALL_TRUE, model_load_path="./",
                      files_save_path="./", epochs=100, checkpoint_freq=0, batch_size=64, lr=0.00001,
                      momentum=0.9, decay=0.0, nesterov=False, loss="categorical_crossentropy", save_model=True,
                      verbose=1, *, nestorov=None, preprocessing=None, augmentation=None, path_column="path",
                      label_column="label", distribute=None, precision="fp32", resume=False, fresh=False, seed=None,
                      cache="auto", optimizer="sgd"):
    """Transfer learning: retrain a saved GaMorNet model on new images.

    Parameters
    ----------
    training_imgs, training_labels, validation_imgs, validation_labels, input_shape
        As for :func:`gamornet_train_keras` (arrays, catalogues or datasets).
    load_layers_bools : list of 8 bool or {'load_bools_SDSS', 'load_bools_CANDELS'}
        Which of the weighted layers [2, 5, 8, 9, 10, 13, 15, 17] take the
        weights of ``model_load_path``; the others start from fresh weights.
    trainable_bools : list of 8 bool or {'train_bools_SDSS', 'train_bools_CANDELS'}
        Which of the weighted layers are trained; the others stay frozen.
    model_load_path : str
        The starting model: a file or a published model name.
    files_save_path, epochs, checkpoint_freq, batch_size, lr, momentum, decay, nesterov, loss, save_model, verbose
        As for :func:`gamornet_train_keras` (``nestorov`` is accepted too, as a keyword).
    preprocessing, augmentation, path_column, label_column, distribute, precision, resume, fresh, seed, cache, optimizer
        As for :func:`gamornet_train_keras`.

    Returns
    -------
    keras.Model
        The retrained model.

    Raises
    ------
    TypeError, ValueError
        Invalid images, labels, catalogues, bools or parameters.
    OSError
        A missing or unreadable model file or image file, or an unwritable
        ``files_save_path``.
    """
    nesterov = _checks.resolve_nesterov(nesterov, nestorov)
    options = _training_loop.check_run_options(preprocessing, augmentation, distribute, precision, resume, fresh, seed,
                                               cache)  # fmt: skip
    return _transfer(
        (training_imgs, training_labels, validation_imgs, validation_labels), input_shape, options,
        load_layers_bools=load_layers_bools, trainable_bools=trainable_bools, model_load_path=model_load_path,
        files_save_path=files_save_path, epochs=epochs, checkpoint_freq=checkpoint_freq, batch_size=batch_size, lr=lr,
        momentum=momentum, decay=decay, nesterov=nesterov, loss=loss, save_model=save_model, verbose=verbose,
        path_column=path_column, label_column=label_column, optimizer=optimizer,
    )  # fmt: skip


def _transfer(data, input_shape, options, *, load_layers_bools, trainable_bools, model_load_path, **parameters):
    """gamornet_tl_keras after its options are checked (``gamornet tl`` calls it with its own options)."""
    load_bools = _checks.check_bools(load_layers_bools, "load_layers_bools", LOAD_BOOLS_PRESETS)
    train_bools = _checks.check_bools(trainable_bools, "trainable_bools", TRAINABLE_BOOLS_PRESETS)

    def build():
        model = gamornet_build_model_keras(input_shape)
        _load_weights_into(model, model_load_path, load_bools)
        for layer, trainable in zip(weighted_layers(model), train_bools):
            layer.trainable = trainable
        return model

    model_settings = {"model_load_path": str(model_load_path), "load_layers_bools": load_bools,
                      "trainable_bools": train_bools}  # fmt: skip
    return _train(data, input_shape, mode="tl", build=build, options=options, model_settings=model_settings,
                  **parameters)  # fmt: skip
