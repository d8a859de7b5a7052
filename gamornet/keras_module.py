"""GaMorNet with Keras 3 on TensorFlow 2: the 0.4.x ``keras_module`` API.

The public functions keep the names, parameters, defaults and return values of
GaMorNet 0.4.x: :func:`gamornet_build_model_keras`,
:func:`gamornet_load_model_keras`, :func:`gamornet_predict_keras`,
:func:`gamornet_train_keras` and :func:`gamornet_tl_keras`. The published Keras
models (legacy HDF5 files written by Keras 2.2.4 / 2.3.1) load unchanged.
"""

from gamornet._utils import checks as _checks
from gamornet._utils.tf_logging import import_keras
from gamornet.models.network import LocalResponseNormalization, build_network, weighted_layers
from gamornet.presets import N_WEIGHTED_LAYERS
from gamornet.training._loop import check_run_options
from gamornet.training.keras import load_weights_into, train_from_scratch, transfer

keras = import_keras()

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
    return load_weights_into(model, model_load_path)


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
# The body is gamornet.training.keras (with the loop in gamornet.training._loop and the data in
# gamornet.training.data); these are the 0.4.x entry points.


def gamornet_train_keras(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                         files_save_path="./", epochs=100, checkpoint_freq=0, batch_size=64, lr=0.0001,
                         momentum=0.9, decay=0.0, nestorov=False, loss="categorical_crossentropy",
                         load_model=False, model_load_path="./", save_model=True, verbose=1, *, nesterov=None,
                         preprocessing=None, augmentation=None, path_column="path", label_column="label",
                         distribute=None, precision="fp32", resume=False, fresh=False, seed=None, cache="auto",
                         optimizer="sgd", lr_schedule="auto", keep_best="auto", divergence_guard="auto",
                         keep_going=False):
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
    lr_schedule : {'auto', 'cosine', 'constant'}
        ``'cosine'``: the recipe's schedule (:func:`gamornet.training.recipe.warmup_cosine`:
        a warm-up over half an epoch to ``lr``, then a half cosine to 0);
        ``'constant'``: ``lr`` throughout (with ``decay``, as 0.4.x).
        ``'auto'`` (default): cosine with Adam, constant with SGD or when
        ``lr`` is a schedule or ``decay`` is set.
    keep_best : bool or 'auto'
        Save and return the weights of the epoch with the lowest validation
        loss, and say which epoch that was (recorded in the model card's
        ``training``). ``'auto'``: with Adam; with SGD the last epoch, as 0.4.x.
    divergence_guard : bool or 'auto'
        After every epoch, warn (:class:`gamornet.errors.TrainingDivergedWarning`)
        when the training loss is above ln 3 (a uniform guess) or the network
        calls nearly every validation galaxy the same class, suggest a lower
        ``lr``, and stop training. ``'auto'``: with Adam.
    keep_going : bool
        With the guard on, warn but go on training.

    Returns
    -------
    keras.Model
        The trained model (the best epoch's, with ``keep_best``).

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
    options = check_run_options(preprocessing, augmentation, distribute, precision, resume, fresh, seed,
                                               cache)  # fmt: skip
    return train_from_scratch(
        (training_imgs, training_labels, validation_imgs, validation_labels), input_shape, options,
        files_save_path=files_save_path, epochs=epochs, checkpoint_freq=checkpoint_freq, batch_size=batch_size, lr=lr,
        momentum=momentum, decay=decay, nesterov=nesterov, loss=loss, load_model=load_model,
        model_load_path=model_load_path, save_model=save_model, verbose=verbose, path_column=path_column,
        label_column=label_column, optimizer=optimizer, lr_schedule=lr_schedule, keep_best=keep_best,
        divergence_guard=divergence_guard, training_recipe={"keep_going": _checks.check_flag(keep_going, "keep_going")},
    )  # fmt: skip


def gamornet_tl_keras(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                      load_layers_bools=_ALL_TRUE, trainable_bools=_ALL_TRUE, model_load_path="./",
                      files_save_path="./", epochs=100, checkpoint_freq=0, batch_size=64, lr=0.00001,
                      momentum=0.9, decay=0.0, nesterov=False, loss="categorical_crossentropy", save_model=True,
                      verbose=1, *, nestorov=None, preprocessing=None, augmentation=None, path_column="path",
                      label_column="label", distribute=None, precision="fp32", resume=False, fresh=False, seed=None,
                      cache="auto", optimizer="sgd", lr_schedule="auto", keep_best="auto", divergence_guard="auto",
                      keep_going=False):
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
    lr_schedule, keep_best, divergence_guard, keep_going
        The training recipe, as for :func:`gamornet_train_keras`.

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
    options = check_run_options(preprocessing, augmentation, distribute, precision, resume, fresh, seed,
                                               cache)  # fmt: skip
    return transfer(
        (training_imgs, training_labels, validation_imgs, validation_labels), input_shape, options,
        load_layers_bools=load_layers_bools, trainable_bools=trainable_bools, model_load_path=model_load_path,
        files_save_path=files_save_path, epochs=epochs, checkpoint_freq=checkpoint_freq, batch_size=batch_size, lr=lr,
        momentum=momentum, decay=decay, nesterov=nesterov, loss=loss, save_model=save_model, verbose=verbose,
        path_column=path_column, label_column=label_column, optimizer=optimizer, lr_schedule=lr_schedule,
        keep_best=keep_best, divergence_guard=divergence_guard,
        training_recipe={"keep_going": _checks.check_flag(keep_going, "keep_going")},
    )  # fmt: skip


