"""The Keras training loop behind gamornet_train_keras, gamornet_tl_keras, ``gamornet train`` and ``gamornet tl``.

One loop, two engines:

- a custom step: a ``tf.function`` that runs ``strategy.run`` with a
  ``GradientTape``, ``tf.nn.compute_average_loss`` over the global batch, and
  ``strategy.reduce`` for the metrics. It trains on one device and under
  ``MultiWorkerMirroredStrategy``, where Keras 3's ``model.fit`` fails
  (keras-team/keras#20585); on one device it is faster than ``fit`` (see
  :func:`_use_custom_loop`);
- ``model.fit``, for ``MirroredStrategy`` and a user's own tf.data.Dataset.

Both call the same callbacks, so ``metrics.csv``, the ``model_<epoch>.hdf5``
checkpoints, the resumable state and the progress bars are the same whichever
engine runs. :func:`write_beside_model` is the one place that decides what is
written beside a trained model.
"""

import contextlib
import csv
import dataclasses
import functools
import json
import logging
import os
import shutil
import sys
import time
import warnings

import numpy as np

from gamornet._utils import checks as _checks
from gamornet._utils.atomic import atomic_path, atomic_write
from gamornet._utils.tf_logging import import_keras, import_tensorflow
from gamornet.errors import GamornetWarning
from gamornet.io.catalogues import TrainingCatalogue
from gamornet.training import data as _data
from gamornet.training.resume import ResumableState, check_free_space, explain_write_error, os_error

keras = import_keras()
tf = import_tensorflow()

DISTRIBUTE_CHOICES = (None, "mirrored", "multiworker")
PRECISION_POLICIES = {"fp32": None, "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}

#: Tasks a CPU-only node may run under Slurm (see _cluster_resolver).
_CPU_TASK_SLOTS = 4096


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a training run goes, beyond the 0.4.x parameters (see ``gamornet_train_keras``)."""

    preprocessing: dict = None
    augmentation: object = None
    distribute: str = None
    precision: str = "fp32"
    resume: bool = False
    fresh: bool = False
    seed: int = None
    cache: object = "auto"
    epoch_base: int = 0
    write_settings: bool = False
    curves: bool = False
    progress: bool = False
    engine: str = "auto"


def check_run_options(preprocessing=None, augmentation=None, distribute=None, precision="fp32", resume=False,
                      fresh=False, seed=None, cache="auto", **fixed):
    """Check the options of a run (before anything is built) and return a :class:`RunOptions`.

    Raises
    ------
    ValueError, TypeError
        An unknown choice, or settings of the wrong type.
    """
    if distribute not in DISTRIBUTE_CHOICES:
        raise ValueError(f"distribute must be None, 'mirrored' or 'multiworker'. Received: distribute={distribute!r}")
    if precision not in PRECISION_POLICIES:
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16'. Received: precision={precision!r}")
    for name, value in (("resume", resume), ("fresh", fresh)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False. Received: {name}={value!r}")
    if seed is not None:
        seed = _checks.check_positive_int(seed, "seed", allow_zero=True)
    preprocessing = _data.check_preprocessing(preprocessing)
    augmentation = _data.check_augmentation(augmentation)
    return RunOptions(preprocessing=preprocessing, augmentation=augmentation, distribute=distribute,
                      precision=precision, resume=bool(resume), fresh=bool(fresh), seed=seed,
                      cache=_data.check_cache(cache), **fixed)  # fmt: skip


# --------------------------------------------------------------------------- strategies and precision


def _cluster_resolver():
    """TF_CONFIG when set, else Slurm's environment; else a clear error."""
    resolvers = tf.distribute.cluster_resolver
    if os.environ.get("TF_CONFIG"):
        return resolvers.TFConfigClusterResolver()
    if os.environ.get("SLURM_PROCID") is not None and os.environ.get("SLURM_STEP_NODELIST", os.environ.get("SLURM_JOB_NODELIST")):
        if "CUDA_VISIBLE_DEVICES" in os.environ or shutil.which("nvidia-smi") is not None:
            return resolvers.SlurmClusterResolver()
        # A CPU-only node: the resolver would count GPUs with nvidia-smi, which is missing, and it places one task
        # per GPU slot. Give it a slot per task and let it set no CUDA_VISIBLE_DEVICES.
        return resolvers.SlurmClusterResolver(gpus_per_node=_CPU_TASK_SLOTS, gpus_per_task=1, auto_set_gpu=False)
    raise ValueError(
        "distribute='multiworker' needs the cluster described in the environment variable TF_CONFIG, or a Slurm job "
        "step (srun sets SLURM_PROCID and SLURM_STEP_NODELIST). Neither is set"
    )


def make_strategy(distribute):
    """The tf.distribute strategy of ``distribute`` (None: TensorFlow's default, one device)."""
    if distribute is None:
        return tf.distribute.get_strategy()
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=_cluster_resolver())


def is_multiworker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy):
    """True where files are written: the only process, or the chief (worker 0 when no task is named chief)."""
    if not is_multiworker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    jobs = resolver.cluster_spec().jobs
    return task_type == "worker" and task_id == 0 and "chief" not in jobs


@contextlib.contextmanager
def precision_policy(precision):
    """Build the network under Keras' mixed-precision policy for ``precision`` (restored afterwards)."""
    policy = PRECISION_POLICIES[precision]
    if policy == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        raise ValueError(
            "precision='fp16' needs a GPU: float16 arithmetic is slow or missing on CPUs. Use precision='bf16' on a "
            "CPU (fast on CPUs with AVX512-BF16 or AMX)"
        )
    previous = keras.config.dtype_policy()
    if policy is not None:
        keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# --------------------------------------------------------------------------- callbacks


class _NoLegacyFormatNotice(logging.Filter):
    """Keras logs that HDF5 is a legacy format at every save; it is the format of the 0.4.x models, on purpose."""

    def filter(self, record):
        return "saving your model as an HDF5 file" not in record.getMessage()


def save_model_atomically(model, path, what=None):
    """Write ``model`` as a legacy HDF5 file (Keras picks the format by the .hdf5 ending).

    Raises
    ------
    OSError
        The file cannot be written (a full disk is found before writing, as
        HDF5 fails badly on one); nothing is left behind.
    """
    what = what or f"the model {path!r}"
    folder = os.path.dirname(os.path.abspath(path))
    n_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)
    if model.optimizer is not None:
        n_bytes += sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.optimizer.variables)
    notice = _NoLegacyFormatNotice()
    logger = logging.getLogger("absl")
    logger.addFilter(notice)
    try:
        check_free_space(folder, n_bytes, what)
        with atomic_path(path, suffix=".hdf5") as temporary:
            model.save(temporary, include_optimizer=True)
    except OSError as error:
        raise explain_write_error(error, what, "Nothing was written") from None
    finally:
        logger.removeFilter(notice)


class MetricsAndCheckpoints(keras.callbacks.Callback):
    """Writes metrics.csv after every epoch and model_<epoch:02d>.hdf5 every ``checkpoint_freq`` epochs.

    ``epoch_base`` is the number of the first epoch in metrics.csv: 0 in the
    0.4.x functions (as Keras' CSVLogger wrote it), 1 in the command line.
    With a :class:`~gamornet.training.resume.ResumableState` (``state``), each
    epoch's state is committed first, with the rows, and metrics.csv follows
    it, so the two always agree; a resumed run takes its rows from the state.
    """

    COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")

    def __init__(self, folder, checkpoint_freq, epoch_base=0, state=None):
        super().__init__()
        self.folder = folder
        self.checkpoint_freq = checkpoint_freq
        self.epoch_base = epoch_base
        self.state = state
        self.rows = []

    @property
    def path(self):
        return os.path.join(self.folder, "metrics.csv")

    def resume_from(self, initial_epoch, rows=None):
        """Keep the rows of the epochs an earlier run finished before ``initial_epoch``.

        ``rows`` are those kept with the resumable state; without them (a state
        of gamornet 0.5.0), those of metrics.csv.
        """
        self.rows = []
        if initial_epoch == 0:
            return
        if rows is None and os.path.isfile(self.path):
            with open(self.path, newline="", encoding="utf-8") as stream:
                rows = [[row.get(column, "") for column in self.COLUMNS] for row in csv.DictReader(stream)]
        for row in rows or []:
            if int(row[0]) - self.epoch_base < initial_epoch:
                self.rows.append([int(row[0])] + list(row[1:]))

    def on_train_end(self, logs=None):
        if self.state is not None:
            self.state.wait()

    def write(self, when, rows=None):
        """Write metrics.csv from the rows (``rows``, else this writer's; ``when``: for the error message)."""
        try:
            with atomic_write(self.path, "w", newline="") as stream:
                writer = csv.writer(stream)
                writer.writerow(self.COLUMNS)
                writer.writerows(self.rows if rows is None else rows)
        except OSError as error:
            kept = "The training state is kept: run the same command again to write it" if self.state else ""
            raise explain_write_error(error, f"{self.path!r} {when}", kept) from None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.rows.append([epoch + self.epoch_base] + [_plain(logs.get(column, "")) for column in self.COLUMNS[1:]])
        when = f"after epoch {epoch + self.epoch_base}"
        if self.state is not None:
            rows = list(self.rows)
            self.state.commit(self.model, epoch + 1, rows, then=lambda: self.write(when, rows))
        else:
            self.write(when)
        if self.checkpoint_freq and (epoch + 1) % self.checkpoint_freq == 0:
            save_model_atomically(self.model, os.path.join(self.folder, f"model_{epoch + 1:02d}.hdf5"),
                                  f"the checkpoint model_{epoch + 1:02d}.hdf5 into {self.folder!r}")  # fmt: skip


def _plain(value):
    return float(value) if isinstance(value, (np.generic, np.ndarray)) or tf.is_tensor(value) else value


class ProgressBars(keras.callbacks.Callback):
    """A progress bar per epoch (images and images/s) and a line of metrics after it, for the command line."""

    def __init__(self, n_images, batch_size, epochs, epoch_base, stream=None):
        super().__init__()
        self.n_images, self.batch_size, self.epochs, self.epoch_base = n_images, batch_size, epochs, epoch_base
        self.stream = stream
        self._stack = None

    def on_epoch_begin(self, epoch, logs=None):
        from gamornet._utils.progress import progress_bar

        self._stack = contextlib.ExitStack()
        label = f"Epoch {epoch + self.epoch_base}/{self.epochs - 1 + self.epoch_base}"
        self._bar = self._stack.enter_context(progress_bar(self.n_images, label))
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._bar.update(min((batch + 1) * self.batch_size, self.n_images))

    def on_epoch_end(self, epoch, logs=None):
        self._stack.close()
        logs = logs or {}
        parts = [f"{name} {float(logs[name]):.4f}" for name in MetricsAndCheckpoints.COLUMNS[1:] if name in logs]
        print(f"epoch {epoch + self.epoch_base}: " + ", ".join(parts) + f" ({time.perf_counter() - self._start:.0f} s)",
              file=self.stream or sys.stdout, flush=True)  # fmt: skip


# --------------------------------------------------------------------------- the custom distributed step


def _per_example_loss(loss):
    """The unreduced form of a Keras loss (a name, a function or a Loss object)."""
    function = keras.losses.get(loss)
    if isinstance(function, keras.losses.Loss):
        function = function.call

    def per_example(labels, predictions):
        # A user's function may return the batch's mean already: spread it over the batch, so that the average
        # over the global batch is that mean, as model.fit would use it.
        values = function(labels, predictions)
        return tf.broadcast_to(values, tf.shape(labels)[:1]) if values.shape.rank == 0 else values

    return per_example


class DistributedSteps:
    """The compiled training and evaluation steps of the custom loop.

    ``train(batch)`` runs one step on every replica: the forward pass and
    the loss under a ``GradientTape``, the per-replica loss divided by the
    *global* batch size (``tf.nn.compute_average_loss``), so that the gradients
    summed over replicas by the optimizer are those of the global batch's mean
    loss. It returns the loss summed over the global batch, the number of
    correct classifications and the number of images, each summed over the
    replicas with ``strategy.reduce``.
    """

    def __init__(self, model, strategy, loss):
        self.model, self.strategy = model, strategy
        self.loss = _per_example_loss(loss)
        # reduce_retracing: an epoch's or the validation set's last, smaller batch is traced once, not per size.
        # functools.partial, not the bound methods: TensorFlow counts traces per function's code across the whole
        # process, and after a few training runs in one process it warned of "retracing" although each run traces
        # once. A partial has no code of its own, so each run's functions are counted apart.
        self.train = tf.function(functools.partial(DistributedSteps._train, self), reduce_retracing=True)
        self.evaluate = tf.function(functools.partial(DistributedSteps._evaluate, self), reduce_retracing=True)

    def _totals(self, labels, predictions, per_example):
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(labels, axis=-1), tf.argmax(predictions, axis=-1)), tf.float32))
        return tf.reduce_sum(per_example), correct, tf.cast(tf.shape(labels)[0], tf.float32)

    def _replica_step(self, images, labels):
        model = self.model
        with tf.GradientTape() as tape:
            predictions = tf.cast(model(images, training=True), tf.float32)
            per_example = self.loss(labels, predictions)
            global_batch = tf.shape(labels)[0] * self.strategy.num_replicas_in_sync
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled = model.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return self._totals(labels, predictions, per_example)

    def _train(self, batch):
        images, labels = batch
        per_replica = self.strategy.run(self._replica_step, args=(images, labels))
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in per_replica]

    def _evaluate(self, images, labels):
        predictions = tf.cast(self.model(images, training=False), tf.float32)
        return self._totals(labels, predictions, self.loss(labels, predictions))


def _evaluate(steps, validation):
    """Validation metrics over ``validation.steps`` batches of its (endless) dataset, on this worker alone."""
    totals = np.zeros(3)
    iterator = iter(validation.dataset)
    for _ in range(validation.steps) if validation.steps is not None else iter(int, 1):
        try:
            images, labels = next(iterator)
        except StopIteration:
            break
        totals += [float(value) for value in steps.evaluate(images, labels)]
    return {"val_loss": totals[0] / totals[2], "val_accuracy": totals[1] / totals[2]}


#: Set to a list to receive, from :func:`custom_loop`, one dict per epoch of the seconds spent waiting for the input
#: pipeline ("input"), in the compiled steps ("steps"), in validation, in the end-of-epoch callbacks (the resumable
#: state, metrics.csv, checkpoints: "callbacks") and in all ("epoch"); benchmarks/training_throughput.py reads them.
EPOCH_PROFILES = None


class _EpochClock:
    """Adds the seconds since the last call to a named share of the epoch (see :data:`EPOCH_PROFILES`)."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.shares = dict.fromkeys(("input", "steps", "validation", "callbacks"), 0.0)

    def add(self, share):
        now = time.perf_counter()
        self.shares[share] += now - self.last
        self.last = now

    def done(self):
        if EPOCH_PROFILES is not None:
            EPOCH_PROFILES.append(dict(self.shares, epoch=time.perf_counter() - self.start))


def custom_loop(model, strategy, loss, training, validation, epochs, initial_epoch, callbacks):
    """Train as ``model.fit`` would, with :class:`DistributedSteps`.

    ``training`` is prepared data whose (distributed, endless) dataset gives
    ``training.steps`` batches per epoch; ``validation`` is evaluated after
    each epoch by every worker on the whole validation set, so no collective
    operation is needed (keep it small).
    """
    steps = DistributedSteps(model, strategy, loss)
    iterator = iter(training.dataset)
    logs = {}
    callbacks.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        clock = _EpochClock()
        callbacks.on_epoch_begin(epoch)
        totals = np.zeros(3)
        for step in range(training.steps):
            callbacks.on_train_batch_begin(step)
            clock.add("callbacks")
            batch = next(iterator)
            clock.add("input")
            totals += [float(value) for value in steps.train(batch)]
            clock.add("steps")
            logs = {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}
            callbacks.on_train_batch_end(step, logs)
        clock.add("callbacks")
        if validation is not None:
            logs = dict(logs, **_evaluate(steps, validation))
        clock.add("validation")
        callbacks.on_epoch_end(epoch, logs)
        clock.add("callbacks")
        clock.done()
        if model.stop_training:
            break
    callbacks.on_train_end(logs)
    return model


# --------------------------------------------------------------------------- what is written beside the model


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What :func:`write_beside_model` needs to know of a finished run.

    ``training`` is the training data as :func:`gamornet.training.data.resolve_source`
    returned it (arrays, a catalogue or a tf.data.Dataset): what a description
    of the training set (such as a model card's per-image statistics) is
    computed from.
    """

    input_shape: tuple
    preprocessing: dict
    augmentation: object
    write_settings: bool
    curves: bool
    epoch_base: int
    training: object = None


def write_beside_model(folder, record):
    """Write the files that describe a trained model, beside it in ``folder``: the one place that decides them.

    - ``preprocessing.json`` (when the run used preprocessing, and always for
      the command line): ``{"preprocess_images": settings or null,
      "input_shape": [x, y, ndim]}``, the settings every image the model
      classifies must be given with :func:`gamornet.science.preprocess.preprocess_images`
      (null: images as they are);
    - ``augmentation.json``, when augmentation was on;
    - ``training_curves.png`` (command line): loss and accuracy per epoch.

    The 0.4.x array calls write none of these.
    """
    if record.write_settings or record.preprocessing is not None:
        with atomic_write(os.path.join(folder, "preprocessing.json"), "w", encoding="utf-8") as stream:
            json.dump({"preprocess_images": record.preprocessing, "input_shape": list(record.input_shape)}, stream,
                      indent=2)  # fmt: skip
    if record.augmentation is not None:
        with atomic_write(os.path.join(folder, "augmentation.json"), "w", encoding="utf-8") as stream:
            json.dump(record.augmentation.to_dict(), stream, indent=2)
    if record.curves and os.path.isfile(os.path.join(folder, "metrics.csv")):
        plot_training_curves(os.path.join(folder, "metrics.csv"), os.path.join(folder, "training_curves.png"))


#: At most this many training images of a catalogue are read again for the model card's statistics.
_CARD_SAMPLE = 2000


def write_training_card(folder, training, input_shape, preprocessing):
    """Write the model card (:mod:`gamornet.models.card`) of a model trained on ``training``, beside it.

    The statistics are those of the training images as the network received
    them (preprocessed): all of them for arrays, an evenly spaced sample of
    at most 2000 for a catalogue. A tf.data.Dataset gives no images to
    describe, so its card is not written.
    """
    from gamornet.models.card import write_model_card
    from gamornet.science.preprocess import preprocess_images

    if isinstance(training, TrainingCatalogue):
        rows = np.unique(np.linspace(0, len(training) - 1, min(len(training), _CARD_SAMPLE)).astype(int))
        images = np.stack([_data.read_image(training.paths[row], input_shape) for row in rows])
    elif isinstance(training, tf.data.Dataset):
        return None
    else:
        images = training.images
    if preprocessing is not None:
        images = preprocess_images(images, **preprocessing)
    return write_model_card(folder, images, trained_by="gamornet.keras_module", preprocessing=preprocessing)


def plot_training_curves(metrics_path, png_path):
    """A PNG of the training and validation loss and accuracy per epoch, from a metrics.csv."""
    try:
        import matplotlib
    except ImportError:
        warnings.warn("matplotlib is not installed, so no training_curves.png was written (pip install matplotlib)",
                      GamornetWarning, stacklevel=2)  # fmt: skip
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    with open(metrics_path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    columns = {key: np.array([float(row[key]) if row[key] not in ("", None) else np.nan for row in rows]) for key in
               MetricsAndCheckpoints.COLUMNS}  # fmt: skip
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for axis, name, label in ((loss_axis, "loss", "loss"), (accuracy_axis, "accuracy", "accuracy")):
        axis.plot(columns["epoch"], columns[name], "o-", label=f"training {label}")
        axis.plot(columns["epoch"], columns[f"val_{name}"], "s--", label=f"validation {label}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.legend()
    accuracy_axis.set_ylim(0, 1)
    figure.suptitle("GaMorNet training curves")
    with atomic_path(png_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=90)
    plt.close(figure)


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def naming_bad_images():
    """Turn the TensorFlow error a bad image causes in the decoding threads back into the error naming it."""
    _data.BAD_IMAGES.pop()
    try:
        yield
    except tf.errors.OpError:
        error = _data.BAD_IMAGES.pop()
        if error is None:
            raise
        raise error from None


def _prepare(source, input_shape, batch_size, options, seed, training, progress, first_epoch=0, shard=(1, 0),
             drop_remainder=False):
    """The endless dataset the loop reads ``steps`` batches of per epoch (a user's tf.data.Dataset as it is)."""
    if isinstance(source, tf.data.Dataset):
        return _data.PreparedData(source, None, None, False, "a tf.data.Dataset")
    return _data.prepare_dataset(
        source, input_shape, batch_size, training=training, preprocessing=options.preprocessing,
        augmentation=options.augmentation, cache=options.cache, seed=seed, num_shards=shard[0], shard_index=shard[1],
        progress=progress, drop_remainder=drop_remainder, endless=True, first_epoch=first_epoch,
    )  # fmt: skip


def _multiworker_training_data(strategy, source, input_shape, batch_size, options, seed, progress, first_epoch):
    """The training set of a multi-worker run: each worker reads only its shard of the images.

    Every worker runs the same number of steps (its shard's full batches), as
    the collective operations of a step need all of them.
    """
    if isinstance(source, tf.data.Dataset):
        raise TypeError(
            "distribute='multiworker' reads the training images from a catalogue or from arrays, so that each worker "
            "reads only its share: give one of those, not a tf.data.Dataset"
        )
    prepared = {}

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(batch_size)
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        data = _prepare(source, input_shape, per_replica, options, seed, True, progress, first_epoch,
                        shard=(context.num_input_pipelines, context.input_pipeline_id), drop_remainder=True)  # fmt: skip
        data.steps //= local_replicas
        if data.steps == 0:
            raise ValueError(
                f"{len(source)} training images are too few for a global batch of {batch_size} images over "
                f"{context.num_replicas_in_sync} replicas"
            )
        prepared["data"] = data
        return data.dataset

    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    prepared["data"].dataset = dataset
    return prepared["data"]


def _callbacks(folder, writer, options, checkpoint_freq, state, prepared, batch_size, epochs):
    """The callbacks of a run, in the order they act at each epoch's end, and the metrics writer (or None).

    The metrics writer commits the resumable state (``state``) before it writes metrics.csv.
    """
    callbacks = []
    metrics = MetricsAndCheckpoints(folder, checkpoint_freq, options.epoch_base, state) if folder and writer else None
    if metrics is not None:
        callbacks.append(metrics)
    if options.progress and prepared.n_images is not None:
        callbacks.append(ProgressBars(prepared.n_images, batch_size, epochs, options.epoch_base))
    return callbacks, metrics


def _run_seed(folder, writer, options, settings):
    """The run's seed and its resumable state (or None): the seed given, else the one a resumed run was started with,
    else a new one; it joins the settings, so a run resumed with another seed is refused."""
    state = ResumableState(folder, settings, writer) if options.resume and folder is not None else None
    seed = options.seed
    if seed is None and state is not None and not options.fresh:
        seed = state.saved_seed()
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    if state is not None:
        state.settings["seed"] = seed
    return seed, state


def _restore(folder, writer, options, state, model, epochs, verbose):
    """The number of epochs the run's resumable state had finished, restored into ``model``, and their rows."""
    if state is None:
        return 0, []
    if options.fresh:
        state.clear()
    finished, rows = state.restore(model)
    initial_epoch = min(finished, epochs)
    if initial_epoch and writer and (options.progress or verbose):
        left = f"continuing with epoch {initial_epoch + options.epoch_base}" if initial_epoch < epochs else \
            "nothing is left to train"
        print(f"Resuming the run in {folder}: {initial_epoch} of {epochs} epochs were finished; {left}", flush=True)
    return initial_epoch, rows


def check_writable(folder):
    """Raise an ``OSError`` now, before any training, if files cannot be created in ``folder``."""
    try:
        with atomic_write(os.path.join(folder, ".gamornet-write-test"), "w") as stream:
            stream.write("")
        os.remove(os.path.join(folder, ".gamornet-write-test"))
    except OSError as error:
        reason = error.strerror or str(error)
        raise os_error(error.errno, f"the output folder {folder!r} cannot be written to ({reason}); nothing was "
                      "trained. Give an output folder you can write to") from None  # fmt: skip


def _use_custom_loop(options, strategy, prepared):
    """Whether the custom step (:func:`custom_loop`) trains, rather than ``model.fit``.

    ``engine='auto'`` picks it for ``MultiWorkerMirroredStrategy`` (where Keras 3's
    ``fit`` fails) and for one device on our own datasets: there Keras 3's ``fit``
    loop ran at 1.27 of 2 CPU cores in about half the epochs on this project's
    2-core CPU (0.66x the rate of a bare compiled train step), while the same
    step called from this loop keeps both cores busy (``benchmarks/training_throughput.py``).
    ``model.fit`` stays for ``MirroredStrategy`` and for a user's own tf.data.Dataset
    (whose length may be unknown); ``engine='fit'`` or ``'custom'`` forces one.
    """
    if is_multiworker(strategy) or options.engine == "custom":
        return True
    if options.engine == "fit":
        return False
    return options.distribute is None and prepared.steps is not None


def _fit_epochs(model, strategy, loss, training, validation, folder, writer, options, seed, state, initial_epoch,
                rows, *, input_shape, epochs, checkpoint_freq, batch_size, verbose, progress, extra_callbacks=()):
    """The data, the callbacks and the training epochs of :func:`run`."""
    with naming_bad_images():
        if is_multiworker(strategy):
            prepared = _multiworker_training_data(strategy, training, input_shape, batch_size, options, seed, progress,
                                                  initial_epoch)  # fmt: skip
        else:
            prepared = _prepare(training, input_shape, batch_size, options, seed, True, progress, initial_epoch)
        validation_data = _prepare(validation, input_shape, batch_size, options, seed, False, progress)
        callbacks, metrics = _callbacks(folder, writer, options, checkpoint_freq, state, prepared, batch_size, epochs)
        callbacks += list(extra_callbacks(model, writer) if extra_callbacks else ())
        if metrics is not None:
            metrics.resume_from(initial_epoch, rows)
            if initial_epoch:
                metrics.write("when the run resumed")
        fit_verbose = 0 if options.progress else verbose
        if _use_custom_loop(options, strategy, prepared):
            callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=fit_verbose != 0,
                                                         verbose=fit_verbose, epochs=epochs, steps=prepared.steps,
                                                         model=model)  # fmt: skip
            custom_loop(model, strategy, loss, prepared, validation_data, epochs, initial_epoch, callback_list)
        else:
            # The datasets shuffle themselves; one iterator serves all epochs (steps_per_epoch), so the batches of
            # each epoch do not depend on how many iterators Keras makes.
            model.fit(prepared.dataset, validation_data=validation_data.dataset, epochs=epochs,
                      initial_epoch=initial_epoch, steps_per_epoch=prepared.steps,
                      validation_steps=validation_data.steps, callbacks=callbacks, verbose=fit_verbose,
                      shuffle=False)  # fmt: skip


def run(build_model, training, validation, folder, *, input_shape, epochs, checkpoint_freq, batch_size, save_model,
        verbose, loss, options, settings, extra_callbacks=()):
    """Build, (resume,) train and save a model; the loop of every Keras training entry point.

    Parameters
    ----------
    build_model : callable
        Returns the compiled network; called inside the strategy's scope and
        the precision policy.
    training, validation
        Sources from :func:`gamornet.training.data.resolve_source`.
    folder : str or None
        The output folder (None: write nothing).
    settings : dict
        The run's settings, recorded with the resumable state.
    extra_callbacks : callable
        ``extra_callbacks(model, writer)`` returns further Keras callbacks (the recipe's
        best epoch and divergence guard, :mod:`gamornet.training.recipe`),
        which act after the run's own at each epoch's end.

    Returns
    -------
    keras.Model
    """
    strategy = make_strategy(options.distribute)
    writer = is_chief(strategy)
    seed, state = _run_seed(folder, writer, options, settings)
    keras.utils.set_random_seed(seed)
    with precision_policy(options.precision), strategy.scope():
        model = build_model()
    if folder is not None and writer:
        _checks.resolve_save_folder(folder)  # created only now: a bad argument or model file leaves nothing behind
        check_writable(folder)
    initial_epoch, rows = _restore(folder, writer, options, state, model, epochs, verbose)
    progress = options.progress or verbose == 1
    try:
        _fit_epochs(model, strategy, loss, training, validation, folder, writer, options, seed, state, initial_epoch,
                    rows, input_shape=input_shape, epochs=epochs, checkpoint_freq=checkpoint_freq,
                    batch_size=batch_size, verbose=verbose, progress=progress,
                    extra_callbacks=extra_callbacks)  # fmt: skip
    finally:
        if state is not None:
            state.wait(quietly=True)  # stopped (Ctrl-C, an error): the epoch being committed is still kept
    if folder is not None and writer:
        if save_model:
            save_model_atomically(model, os.path.join(folder, "trained_model.hdf5"))
            write_training_card(folder, training, input_shape, options.preprocessing)
        write_beside_model(folder, RunRecord(tuple(input_shape), options.preprocessing, options.augmentation,
                                             options.write_settings, options.curves, options.epoch_base,
                                             training))  # fmt: skip
    return model
