"""The training recipe: a warm-up and cosine learning-rate schedule, the best epoch kept, and a divergence guard.

What lets GaMorNet learn on a new simulator in minutes (measured in
``benchmarks/own_simulator.py``, see the training page of the documentation):

- :func:`warmup_cosine`: the learning rate rises from lr / 20 to lr over
  half an epoch, then falls along a half cosine to 0 at the last step (the
  schedule of ``gamornet demo``; Loshchilov & Hutter 2017, Goyal et al.
  2017). It is the default with Adam (``lr_schedule='auto'``);
- :class:`KeepBestEpoch`: the weights of the epoch with the lowest
  validation loss are the ones saved and returned, and a line says which
  epoch that was;
- :class:`DivergenceGuard`: after every epoch, a loss above that of a
  uniform guess (ln 3 = 1.0986 for three classes), or one class given to
  nearly every validation galaxy, is said plainly with a suggestion (a lower
  learning rate), and training stops unless told to go on.

The network, the loop and the files are those of :mod:`gamornet.training._loop`;
this module only adds a schedule and two callbacks.
"""

import json
import math
import os
import sys
import warnings

import numpy as np

from gamornet._utils.atomic import atomic_path, atomic_write
from gamornet._utils.tf_logging import import_keras
from gamornet.errors import TrainingDivergedWarning
from gamornet.presets import CLASS_NAMES

keras = import_keras()

__all__ = ["LR_SCHEDULES", "ONE_CLASS_SHARE", "UNIFORM_LOSS", "DivergenceGuard", "KeepBestEpoch",
           "resolve_recipe", "validation_sample", "warmup_cosine"]

#: The learning-rate schedules: 'auto' (cosine with Adam and no decay, else constant), 'cosine', 'constant'.
LR_SCHEDULES = ("auto", "cosine", "constant")

#: The loss of a uniform guess over three classes, ln 3: a network whose training loss is above it has diverged.
UNIFORM_LOSS = math.log(3.0)

#: The share of the validation galaxies given one class above which the network is said to predict one class only.
ONE_CLASS_SHARE = 0.97

#: At most this many validation galaxies are predicted after each epoch by the guard.
_GUARD_SAMPLE = 512


def warmup_cosine(lr, epochs, steps_per_epoch):
    """The recipe's learning rate: from lr / 20 up to ``lr`` over half an epoch, then a half cosine down to 0.

    Parameters
    ----------
    lr : float
        The peak learning rate.
    epochs, steps_per_epoch : int
        The run's length, in epochs and gradient steps per epoch.

    Returns
    -------
    keras.optimizers.schedules.LearningRateSchedule or float
        ``lr`` itself for a run of a single step.
    """
    total = int(epochs) * int(steps_per_epoch)
    if total < 2:
        return float(lr)
    warmup = min(max(1, int(steps_per_epoch) // 2), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        float(lr) / 20, decay_steps=max(1, total - warmup), alpha=0.0, warmup_target=float(lr), warmup_steps=warmup
    )


def _check_auto_flag(value, name):
    if isinstance(value, str) and value == "auto":
        return value
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True, False or 'auto'. Received: {name}={value!r}")
    return bool(value)


def resolve_recipe(optimizer, lr, decay, lr_schedule="auto", keep_best="auto", divergence_guard="auto"):
    """The recipe's choices made explicit: (schedule 'cosine' or 'constant', keep_best, divergence_guard).

    ``'auto'``: the recipe with Adam (cosine schedule, best epoch kept, guard
    on); with SGD, what 0.4.x did (constant lr, last epoch, no guard). A
    schedule given as ``lr`` (a LearningRateSchedule) or a ``decay`` keeps
    the lr as given.

    Raises
    ------
    ValueError, TypeError
        An unknown schedule, or a cosine schedule asked with a schedule or decay already.
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(map(repr, LR_SCHEDULES))}. "
                         f"Received: lr_schedule={lr_schedule!r}")  # fmt: skip
    keep_best = _check_auto_flag(keep_best, "keep_best")
    divergence_guard = _check_auto_flag(divergence_guard, "divergence_guard")
    own_schedule = isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) or bool(decay)
    if lr_schedule == "cosine" and own_schedule:
        raise ValueError("lr_schedule='cosine' makes the learning rate's schedule: give lr as a number and decay=0. "
                         f"Received: lr={lr!r}, decay={decay!r}")  # fmt: skip
    recipe = optimizer == "adam"
    if lr_schedule == "auto":
        lr_schedule = "cosine" if recipe and not own_schedule else "constant"
    return (lr_schedule, recipe if keep_best == "auto" else keep_best,
            recipe if divergence_guard == "auto" else divergence_guard)


def validation_sample(source, input_shape, preprocessing, read_image=None, n_images=_GUARD_SAMPLE):
    """(images, one-hot labels) of at most ``n_images`` evenly spaced validation galaxies, as the network sees them.

    ``source`` is what :func:`gamornet.training.data.resolve_source` returned;
    ``read_image(path, input_shape)`` reads a catalogue's image. None for a
    tf.data.Dataset (whose galaxies are not at hand).
    """
    from gamornet.science.preprocess import preprocess_images

    labels = getattr(source, "labels", None)
    if labels is None or len(labels) == 0:
        return None
    rows = np.unique(np.linspace(0, len(labels) - 1, min(len(labels), n_images)).astype(int))
    if hasattr(source, "images"):
        images = np.asarray(source.images[rows], dtype=np.float32)
    elif hasattr(source, "paths") and read_image is not None:
        images = np.stack([read_image(source.paths[row], input_shape) for row in rows]).astype(np.float32)
    else:
        return None
    if preprocessing is not None:
        images = preprocess_images(images, **preprocessing)
    return images, np.asarray(labels[rows], dtype=np.float32)


class KeepBestEpoch(keras.callbacks.Callback):
    """Keep the weights of the epoch with the lowest validation loss, and put them back at the end of training.

    With a ``backup`` folder (a resumable run) the best weights and their
    epoch are kept there too (``best.weights.h5``, ``best.json``), so a
    resumed run still knows them. :attr:`kept` describes the outcome.
    """

    def __init__(self, backup=None, epoch_base=0, stream=None, quiet=False):
        super().__init__()
        self.backup, self.epoch_base, self.stream, self.quiet = backup, epoch_base, stream, quiet
        self.best = None  # {"epoch": index from 0, "val_loss": float}
        self._weights = None
        self.last = None
        self.kept = None

    def _paths(self):
        return os.path.join(self.backup, "best.weights.h5"), os.path.join(self.backup, "best.json")

    def on_train_begin(self, logs=None):
        if self.backup is None:
            return
        weights, record = self._paths()
        if os.path.isfile(record) and os.path.isfile(weights):
            with open(record, encoding="utf-8") as stream:
                self.best = json.load(stream)

    def on_epoch_end(self, epoch, logs=None):
        self.last = {"epoch": epoch, "val_loss": (logs or {}).get("val_loss")}
        value = (logs or {}).get("val_loss")
        if value is None or not np.isfinite(float(value)):
            return
        if self.best is None or float(value) < self.best["val_loss"]:
            self.best = {"epoch": int(epoch), "val_loss": float(value)}
            self._weights = self.model.get_weights()
            if self.backup is not None:
                self._save_best(epoch)

    def _save_best(self, epoch):
        """Keep the best epoch's weights in the backup folder; a full disk stops the run with a clean error."""
        from gamornet.training.resume import check_free_space, explain_write_error

        os.makedirs(self.backup, exist_ok=True)
        weights, record = self._paths()
        what = "the best epoch's weights"
        try:
            # Checked first, as the resume state is (HDF5 writers fail badly on a full disk), with room for the resume
            # state that a thread may be writing into the same folder at the same time (weights and optimiser slots).
            check_free_space(self.backup, 4 * sum(array.nbytes for array in self._weights), what)
            with atomic_path(weights, suffix=".weights.h5") as temporary:
                self.model.save_weights(temporary)
            with atomic_write(record, "w", encoding="utf-8") as stream:
                json.dump(self.best, stream)
        except OSError as error:
            raise explain_write_error(error, f"{what} of epoch {epoch + 1 + self.epoch_base}",
                                      f"The run's state after epoch {epoch + self.epoch_base} is kept: free some space "
                                      "and run the same command again to resume") from None

    def on_train_end(self, logs=None):
        if self.best is None:
            return
        best = self.best["epoch"] + self.epoch_base
        last = None if self.last is None else self.last["epoch"] + self.epoch_base
        if self.last is None or self.best["epoch"] != self.last["epoch"]:
            # Also when a resumed run had nothing left to train: the best epoch's weights are in the backup.
            if self._weights is not None:
                self.model.set_weights(self._weights)
            else:
                self.model.load_weights(self._paths()[0])
            line = f"Kept epoch {best}, whose validation loss {self.best['val_loss']:.4f} is the lowest" + (
                "" if self.last is None else f" (the last epoch, {last}, had {float(self.last['val_loss']):.4f})")
        else:
            line = f"Kept the last epoch, {best}, whose validation loss {self.best['val_loss']:.4f} is the lowest"
        self.kept = {"kept_epoch": best, "kept_val_loss": round(self.best["val_loss"], 6), "last_epoch": last}
        if not self.quiet:
            print(line, file=self.stream or sys.stdout, flush=True)


class DivergenceGuard(keras.callbacks.Callback):
    """After each epoch, say plainly when training has diverged, suggest a lower lr, and stop unless told to go on.

    Diverged: the validation loss after the epoch, or the training loss of an
    epoch after the first, is above :data:`UNIFORM_LOSS` (worse than a uniform
    guess), or the network gives one class to at least
    :data:`ONE_CLASS_SHARE` of the validation ``sample`` while fewer than 90%
    of them truly are of that class.
    """

    def __init__(self, sample, lr, keep_going=False, epoch_base=0, lr_option="lr"):
        super().__init__()
        self.sample, self.lr, self.keep_going = sample, lr, keep_going
        self.epoch_base, self.lr_option = epoch_base, lr_option
        self.message = None
        self._first = None

    def _one_class(self):
        if self.sample is None:
            return None
        images, labels = self.sample
        predicted = np.concatenate([np.argmax(np.asarray(self.model(images[start : start + 128], training=False)), axis=1)
                                    for start in range(0, len(images), 128)])  # fmt: skip
        counts = np.bincount(predicted, minlength=3)
        top = int(np.argmax(counts))
        share, truly = counts[top] / len(predicted), float(np.mean(np.argmax(labels, axis=1) == top))
        if share >= ONE_CLASS_SHARE and truly < 0.9:
            return (f"the network calls {share:.0%} of {len(predicted)} validation galaxies {CLASS_NAMES[top]}, "
                    f"while {truly:.0%} of them are")  # fmt: skip
        return None

    def _losses(self, epoch, logs):
        """Why the losses say training diverged: the validation loss after any epoch, or the training loss of an
        epoch after the first (the first's average includes the untrained network's), above ln 3."""
        reasons = []
        for name, what, counted in (("loss", "training", epoch > self._first), ("val_loss", "validation", True)):
            value = (logs or {}).get(name)
            if counted and value is not None and (not np.isfinite(float(value)) or float(value) > UNIFORM_LOSS):
                reasons.append(f"the {what} loss, {float(value):.3f}, is above {UNIFORM_LOSS:.3f}, that of a uniform "
                               "guess (1/3 for each class)")  # fmt: skip
        return reasons

    def on_train_begin(self, logs=None):
        self._first = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first is None:
            self._first = epoch

    def on_epoch_end(self, epoch, logs=None):
        reasons = self._losses(epoch, logs)
        one_class = self._one_class()
        if one_class:
            reasons.append(one_class)
        if not reasons:
            return
        lower = f"{self.lr / 3:.2g}" if isinstance(self.lr, (int, float)) else "a third of it"
        self.message = (f"Training has diverged after epoch {epoch + self.epoch_base}: {'; and '.join(reasons)}. The "
                        f"learning rate is probably too large: try {self.lr_option} {lower}")  # fmt: skip
        if self.keep_going:
            self.message += ". Going on, as asked"
        else:
            self.message += ". Training stopped here (ask to go on with --keep-going, keep_going=True)"
            self.model.stop_training = True
        warnings.warn(self.message, TrainingDivergedWarning, stacklevel=2)
