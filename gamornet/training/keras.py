"""The Keras training body behind gamornet_train_keras, gamornet_tl_keras and ``gamornet train`` / ``tl``.

The 0.4.x functions (:mod:`gamornet.keras_module`) check their own
arguments and call :func:`train_from_scratch` or :func:`transfer`; the command
line calls them with its own options. Both build the network, check the
optimiser and loss, describe the run's settings (for resuming) and hand over
to the one training loop (:mod:`gamornet.training._loop`), which reads its
data through :mod:`gamornet.training.data`.
"""

import os

import numpy as np

from gamornet._utils import checks as _checks
from gamornet._utils.tf_logging import import_keras
from gamornet.models import formats
from gamornet.models import published as models
from gamornet.models.network import build_network, set_weights, weighted_layers
from gamornet.presets import LOAD_BOOLS_PRESETS, N_WEIGHTED_LAYERS, TRAINABLE_BOOLS_PRESETS
from gamornet.io.catalogues import TrainingCatalogue
from gamornet.training import _loop as _training_loop
from gamornet.training import data as _training_data
from gamornet.training import recipe as _recipe
from gamornet.training.resume import BACKUP_FOLDER

keras = import_keras()

__all__ = ["check_compile_options", "compile_model", "load_weights_into", "train_from_scratch", "transfer"]

_ALL_TRUE = [True] * N_WEIGHTED_LAYERS


def _build(input_shape):
    return build_network(_checks.check_input_shape(input_shape), lrn="keras")


def load_weights_into(model, model_load_path, load_bools=_ALL_TRUE):
    """Load the checked weights of a Keras model file (or published name) into the layers ``load_bools`` selects."""
    path = models.resolve(model_load_path, "keras")
    set_weights(model, formats.read_weights(path, tuple(model.input_shape[1:]), "keras"), load_bools)
    return model


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


def check_compile_options(lr, momentum, decay, nesterov, loss, optimizer="sgd"):
    """The optimiser and loss, checked before anything is built or written."""
    momentum = _checks.check_non_negative_float(momentum, "momentum")
    learning_rate = _learning_rate(lr, decay)
    if _checks.check_optimizer(optimizer) == "adam":
        made = keras.optimizers.Adam(learning_rate=learning_rate)
    else:
        made = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov)
    return made, _check_loss(loss)


def compile_model(model, optimizer, loss):
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


def _steps_per_epoch(training, batch_size):
    """Gradient steps per epoch of arrays or a catalogue; None for a tf.data.Dataset."""
    return -(-len(training) // batch_size) if hasattr(training, "__len__") else None


def _recipe_callbacks(recipe, training_recipe, validation, shape, options, folder, lr, verbose):
    """The factory of the recipe's callbacks (best epoch, divergence guard) for the training loop."""
    schedule, keep_best, guard = recipe

    def make(model, writer):
        made = []
        quiet = not (options.progress or verbose)
        if keep_best:
            backup = os.path.join(folder, BACKUP_FOLDER) if writer and options.resume and folder else None
            made.append(_recipe.KeepBestEpoch(backup, options.epoch_base, quiet=quiet or not writer))
        if guard:
            sample = _recipe.validation_sample(validation, shape, options.preprocessing, _training_data.read_image)
            made.append(_recipe.DivergenceGuard(sample, lr, training_recipe.get("keep_going", False), options.epoch_base,
                                                training_recipe.get("lr_option", "lr")))  # fmt: skip
        training_recipe["callbacks"] = made
        return made

    return make


def _describe_recipe(optimizer, lr, recipe):
    schedule, keep_best, guard = recipe
    rate = (f"peak lr {lr:g}, warmed up over half an epoch from lr/20 then a cosine down to 0" if schedule == "cosine"
            else f"lr {_describe_setting(lr)}")
    return (f"Training with {'Adam' if optimizer == 'adam' else 'SGD'} ({rate})"
            + ("; keeping the epoch of lowest validation loss" if keep_best else "; keeping the last epoch")
            + ("; divergence guard on" if guard else ""))  # fmt: skip


def _record_recipe(folder, training_recipe, optimizer, lr, recipe, epochs):
    """Record the recipe and its outcome (the epoch kept, a divergence) in the model card, and in ``outcome``."""
    from gamornet.models.card import CARD_FILE_NAME, update_model_card

    outcome = {"optimizer": optimizer, "lr": lr if isinstance(lr, (int, float)) else _describe_setting(lr),
               "lr_schedule": recipe[0], "epochs": epochs}
    for callback in training_recipe.get("callbacks", ()):
        if isinstance(callback, _recipe.KeepBestEpoch) and callback.kept:
            outcome.update(callback.kept)
        if isinstance(callback, _recipe.DivergenceGuard) and callback.message:
            outcome["diverged"] = callback.message
    training_recipe["outcome"] = outcome
    if folder is not None and os.path.isfile(os.path.join(folder, CARD_FILE_NAME)):
        update_model_card(folder, training=outcome)


def _train(data, input_shape, *, mode, build, files_save_path, epochs, checkpoint_freq, batch_size, verbose, lr,
           momentum, decay, nesterov, loss, save_model, options, path_column, label_column, model_settings,
           optimizer, lr_schedule="auto", keep_best="auto", divergence_guard="auto", training_recipe=None):
    """The body shared by gamornet_train_keras, gamornet_tl_keras and the ``gamornet train`` / ``tl`` commands.

    ``data`` is (training_imgs, training_labels, validation_imgs,
    validation_labels) as the public functions received them; everything is
    checked before a network is built. ``training_recipe`` (a dict, filled
    in) may hold ``keep_going`` and ``lr_option``; it receives
    ``outcome``: the recipe and what it did (epoch kept, divergence).
    """
    shape = _checks.check_input_shape(input_shape)
    epochs, checkpoint_freq, batch_size, verbose = _check_training_options(epochs, checkpoint_freq, batch_size, verbose)
    training_imgs, training_labels, validation_imgs, validation_labels = data
    training = _training_data.resolve_source(training_imgs, training_labels, shape, "training_imgs", "training_labels",
                                             path_column, label_column)  # fmt: skip
    _training_data.check_training_classes(training, "the training data")
    validation = _training_data.resolve_source(validation_imgs, validation_labels, shape, "validation_imgs",
                                               "validation_labels", path_column, label_column)  # fmt: skip
    # Checked without making the optimizer: its variables would start TensorFlow's runtime, which a multi-worker
    # strategy must configure first.
    _learning_rate(lr, decay)
    _checks.check_non_negative_float(momentum, "momentum")
    _checks.check_optimizer(optimizer)
    recipe = _recipe.resolve_recipe(optimizer, lr, decay, lr_schedule, keep_best, divergence_guard)
    steps = _steps_per_epoch(training, batch_size)
    if recipe[0] == "cosine" and steps is None:
        if lr_schedule == "cosine":
            raise ValueError("lr_schedule='cosine' needs the number of steps per epoch, which a tf.data.Dataset does "
                             "not give: give arrays or a catalogue, or lr_schedule='constant'")  # fmt: skip
        recipe = ("constant",) + recipe[1:]
    training_recipe = {} if training_recipe is None else training_recipe
    loss = _check_loss(loss)
    # Checked, not created: the folder is created once the network is built, so a bad argument or model file
    # leaves nothing behind.
    folder = _checks.check_save_folder(files_save_path)
    if options.resume and folder is None:
        raise ValueError("a resumable run needs an output folder to keep its state in, not /dev/null")
    settings = dict(model_settings, mode=mode, input_shape=list(shape), batch_size=batch_size,
                    optimizer=optimizer, lr=_describe_setting(lr), momentum=momentum, decay=decay, nesterov=nesterov,
                    loss=_describe_setting(loss), precision=options.precision,
                    **({"lr_schedule": "cosine"} if recipe[0] == "cosine" else {}),
                    training=_describe_source(training), validation=_describe_source(validation),
                    preprocessing=options.preprocessing,
                    augmentation=None if options.augmentation is None else options.augmentation.to_dict())  # fmt: skip

    learning_rate = _recipe.warmup_cosine(lr, epochs, steps) if recipe[0] == "cosine" else lr

    def build_and_compile():
        model = build()
        # The optimizer is made here, in the scope of the run's tf.distribute strategy.
        compile_model(model, check_compile_options(learning_rate, momentum, decay, nesterov, loss, optimizer)[0], loss)
        return model

    if options.progress:
        print(_describe_recipe(optimizer, lr, recipe), flush=True)
    model = _training_loop.run(
        build_and_compile, training, validation, folder, input_shape=shape, epochs=epochs,
        checkpoint_freq=checkpoint_freq, batch_size=batch_size, save_model=save_model, verbose=verbose, loss=loss,
        options=options, settings=settings,
        extra_callbacks=_recipe_callbacks(recipe, training_recipe, validation, shape, options, folder, lr, verbose),
    )  # fmt: skip
    _record_recipe(folder, training_recipe, optimizer, lr, recipe, epochs)
    return model


def train_from_scratch(data, input_shape, options, *, load_model, model_load_path, **parameters):
    """gamornet_train_keras after its options are checked (``gamornet train`` calls it with its own options)."""

    def build():
        model = _build(input_shape)
        if load_model:
            load_weights_into(model, model_load_path)
        return model

    model_settings = {"load_model": bool(load_model), "model_load_path": str(model_load_path) if load_model else None}
    return _train(data, input_shape, mode="train", build=build, options=options, model_settings=model_settings,
                  **parameters)  # fmt: skip


def transfer(data, input_shape, options, *, load_layers_bools, trainable_bools, model_load_path, **parameters):
    """gamornet_tl_keras after its options are checked (``gamornet tl`` calls it with its own options)."""
    load_bools = _checks.check_bools(load_layers_bools, "load_layers_bools", LOAD_BOOLS_PRESETS)
    train_bools = _checks.check_bools(trainable_bools, "trainable_bools", TRAINABLE_BOOLS_PRESETS)

    def build():
        model = _build(input_shape)
        load_weights_into(model, model_load_path, load_bools)
        for layer, trainable in zip(weighted_layers(model), train_bools):
            layer.trainable = trainable
        return model

    model_settings = {"model_load_path": str(model_load_path), "load_layers_bools": load_bools,
                      "trainable_bools": train_bools}  # fmt: skip
    return _train(data, input_shape, mode="tl", build=build, options=options, model_settings=model_settings,
                  **parameters)  # fmt: skip
