"""Training data from files, at any size: catalogues, tf.data streaming and augmentation.

GaMorNet was trained on about 100,000 simulated galaxies, then transfer-learned
on a few thousand real ones (Ghosh et al. 2020, ApJ 895, 112). At SDSS size,
100,000 images are 11 GB of float32: more than many machines hold. This module
reads the images from disk as training needs them.

A *catalogue* is a table (CSV, FITS or Parquet, read with astropy's
``Table.read`` by :func:`gamornet.io.catalogues.read_training_catalogue`) with
one row per galaxy:

- a path column (default ``path``): a FITS file, or a ``.npy`` file holding one
  image; a relative path is relative to the catalogue's folder;
- a label column (default ``label``) holding ``disk``, ``indeterminate`` or
  ``bulge`` (any case), or 0, 1, 2 in that order; or three one-hot columns,
  given as ``label_column=('disk', 'indeterminate', 'bulge')`` (or the string
  ``'disk,indeterminate,bulge'``).

:func:`catalogue_dataset` turns a catalogue (or arrays) into a ``tf.data``
pipeline of (images, one-hot labels) batches:

- images are decoded by the readers of :mod:`gamornet.io.images` in parallel
  threads, off the training thread;
- when the decoded images fit in memory (``cache='auto'``: at most a quarter
  of the memory available) they are read once and kept, and every epoch is a
  fresh full shuffle of them; otherwise they are *streamed*: each epoch shuffles
  the list of files and decodes them again, so memory does not grow with the
  number of images;
- the explicit preprocessing of :mod:`gamornet.science.preprocess` is applied on the
  way (its settings are saved beside the model);
- :class:`AugmentationSettings` (off by default) adds right-angle rotations and
  flips, sub-pixel shifts and extra noise;
- the next batches are prepared while the network trains on the current one.

:func:`gamornet.keras_module.gamornet_train_keras` and
:func:`gamornet.keras_module.gamornet_tl_keras` take a catalogue (its path or a
:class:`~gamornet.io.catalogues.TrainingCatalogue`) or such a dataset in place
of arrays; ``gamornet train`` and ``gamornet tl`` are their command-line twins.
The TFLearn backend keeps its array API only: it has no ``tf.data`` path.
"""

import dataclasses
import math
import numbers
import os
import threading

import numpy as np

from gamornet._utils import checks as _checks
from gamornet.io.catalogues import TrainingCatalogue, read_training_catalogue

__all__ = [
    "AugmentationSettings",
    "check_training_classes",
    "read_image",
    "catalogue_dataset",
    "class_weighted_crossentropy",
    "check_cache",
    "TrainingArrays",
]

#: Share of the memory available when the data set is built that ``cache='auto'`` lets decoded images take.
_CACHE_SHARE_OF_AVAILABLE_MEMORY = 0.25

#: Images decoded at once by the parallel readers.
_DECODE_THREADS = 4


# --------------------------------------------------------------------------- catalogues


def resolve_catalogue(data, path_column="path", label_column="label"):
    """A :class:`~gamornet.io.catalogues.TrainingCatalogue` from a catalogue or its path.

    A path is read with :func:`gamornet.io.catalogues.read_training_catalogue`.
    """
    if isinstance(data, TrainingCatalogue):
        if len(data) == 0:
            raise ValueError(f"the catalogue {data.source!r} is empty: it holds no rows (no images to train on)")
        return data
    return read_training_catalogue(data, path_column=path_column, label_column=label_column)


# --------------------------------------------------------------------------- one image


def _read_npy_image(path, input_shape):
    from gamornet.io import images as io

    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - any failure makes this one file bad
        raise ValueError(f"{path}: cannot be read as a .npy array ({io.describe_error(error)})") from None
    layout = io.image_layout(array.shape, input_shape)
    if layout is None or (layout[0] and array.shape[0] != 1):
        x, y, ndim = input_shape
        raise ValueError(
            f"{path}: holds an array of shape {array.shape}, but a catalogue row names one image of shape "
            f"({x}, {y}, {ndim})" + (f" or ({x}, {y})" if ndim == 1 else f" or ({ndim}, {x}, {y})")
        )
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{path}: holds {array.dtype} values, not real pixel values")
    is_cube, to_images = layout
    stack = np.asarray(array if is_cube else array[np.newaxis], dtype=np.float32)
    image = np.ascontiguousarray(to_images(stack)[0])
    reason = io.bad_pixels_reason(image)
    if reason is not None:
        raise ValueError(f"{path}: {reason}")
    return image


def _refuse_blank(path, image):
    """A training image with one value in every pixel (all zero: a failed cutout) shows no galaxy: refused."""
    if image.size and np.all(image == image.flat[0]):
        raise ValueError(
            f"{path}: every pixel of this training image is {float(image.flat[0]):g} (a blank or failed cutout): it "
            "shows no galaxy, yet its label would teach the network a class; remove it from the catalogue"
        )
    return image


def read_image(path, input_shape):
    """Read one training image, from a FITS file or a ``.npy`` file, as float32.

    FITS files are read by :class:`gamornet.io.images.ImageReader` (its layouts:
    (x, y), (ndim, x, y) or (x, y, ndim), the first HDU with data). A ``.npy``
    file holds one image in the same layouts, or a stack of one.

    Parameters
    ----------
    path : str
        The file.
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        The network's (x, y, ndim).

    Returns
    -------
    numpy.ndarray of shape (x, y, ndim), float32

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        A file that cannot be read, an image of the wrong shape, more than one
        image, NaN or infinite pixels, or one value in every pixel (a blank
        image, such as all zeros); the message starts with the file name.
    """
    from gamornet.io.images import ImageReader

    shape = _checks.check_input_shape(input_shape)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such image file")
    if path.lower().endswith(".npy"):
        return _refuse_blank(path, _read_npy_image(path, shape))
    batch = next(iter(ImageReader([path], shape, batch_size=2)))
    if batch.bad:
        raise ValueError(str(batch.bad[0]))
    if len(batch.sources) != 1:
        raise ValueError(f"{path}: holds a cube of several images, but a catalogue row names one image")
    return _refuse_blank(path, batch.images[0])


class _BadImages:
    """The first bad image met by the decoding threads, so the training loop can name it.

    Errors raised inside ``tf.numpy_function`` reach the caller as TensorFlow
    errors; the loop catches those and raises the original error instead.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._error = None

    def record(self, error):
        with self._lock:
            if self._error is None:
                self._error = error

    def pop(self):
        with self._lock:
            error, self._error = self._error, None
        return error


BAD_IMAGES = _BadImages()


# --------------------------------------------------------------------------- augmentation


def _check_number(value, name, low, message):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < low:
        raise ValueError(f"{name} must be {message}. Received: {name}={value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class AugmentationSettings:
    """Random changes to the training images, each epoch anew; all off by default.

    They are applied to the images as read (before any preprocessing), to the
    training set only.

    Parameters
    ----------
    rotate_flip : bool
        Rotate by a random multiple of 90 degrees and flip at random (the 8
        symmetries of a square image; flips and 180 degree turns for a
        non-square one). A galaxy's class does not depend on its orientation.
    max_shift : float
        Shift each image by up to this many pixels along each axis (uniform,
        sub-pixel, bilinear interpolation, edges reflected). Interpolation
        smooths the pixel noise slightly: keep shifts small (e.g. 0.5).
    noise_factor : float
        Raise each image's background noise by a random factor between 1 and
        ``noise_factor`` (uniform), by adding Gaussian noise of standard
        deviation ``sigma * sqrt(f**2 - 1)``, where ``sigma`` is the image's own
        noise (robust standard deviation of its border pixels,
        :func:`gamornet.science.preprocess.estimate_background`). The network then sees
        each galaxy at a range of signal-to-noise ratios. 1 (the default) adds
        none; an image with noiseless borders gets none.

    Raises
    ------
    ValueError, TypeError
        A negative shift, a noise factor below 1, or a non-boolean flag.
    """

    rotate_flip: bool = False
    max_shift: float = 0.0
    noise_factor: float = 1.0

    def __post_init__(self):
        if not isinstance(self.rotate_flip, (bool, np.bool_)):
            raise TypeError(f"rotate_flip must be True or False. Received: {self.rotate_flip!r}")
        object.__setattr__(self, "rotate_flip", bool(self.rotate_flip))
        object.__setattr__(
            self, "max_shift", _check_number(self.max_shift, "max_shift", 0.0, "a number of pixels >= 0")
        )
        object.__setattr__(
            self, "noise_factor", _check_number(self.noise_factor, "noise_factor", 1.0, "a number >= 1 (1: no noise added)")
        )

    @property
    def enabled(self):
        """True if any augmentation is on."""
        return self.rotate_flip or self.max_shift > 0 or self.noise_factor > 1

    def to_dict(self):
        """The settings as a plain dict (saved beside a model trained with them)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, settings):
        """Settings from :meth:`to_dict`'s dict.

        Raises
        ------
        ValueError
            Unknown keys.
        """
        unknown = sorted(set(settings) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown augmentation settings {unknown}; known: rotate_flip, max_shift, noise_factor")
        return cls(**settings)


def class_weighted_crossentropy(disk=1.0, indeterminate=1.0, bulge=1.0):
    """A training loss that counts the galaxies of each class with a weight: the ``loss`` of the train functions.

    Weighting a class up moves the network's most probable class towards it,
    trading the other classes' recall for its own: in ``gamornet demo``, the
    disks just below the paper's boundary (L_B/L_T of 0.35-0.45, Ghosh et al.
    2020), a quarter to a third of which a network trained for minutes misses. The
    probabilities then lean towards that class too, which a temperature
    (:mod:`gamornet.science.calibration`) does not undo: choose the thresholds that
    turn them into classes on labelled galaxies
    (:func:`gamornet.science.thresholds.choose_thresholds`).

    Parameters
    ----------
    disk, indeterminate, bulge : float
        The weight of each class's galaxies, finite and > 0. All 1: Keras'
        ``categorical_crossentropy``.

    Returns
    -------
    keras.losses.Loss
        For ``loss=`` of :func:`gamornet.keras_module.gamornet_train_keras`
        and :func:`gamornet.keras_module.gamornet_tl_keras`.

    Raises
    ------
    ValueError
        A weight that is not a finite number > 0.
    """
    weights = []
    for name, value in (("disk", disk), ("indeterminate", indeterminate), ("bulge", bulge)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"the weight of the {name} class must be a finite number > 0. Received: {name}={value!r}")
        weights.append(float(value))
    from gamornet.models.network import ClassWeightedCrossentropy

    return ClassWeightedCrossentropy(weights)


def check_augmentation(augmentation):
    """None, or :class:`AugmentationSettings` from settings, a dict of them, or None."""
    if augmentation is None:
        return None
    if isinstance(augmentation, dict):
        augmentation = AugmentationSettings.from_dict(augmentation)
    if not isinstance(augmentation, AugmentationSettings):
        raise TypeError(
            "augmentation must be None, a gamornet.training.data.AugmentationSettings or a dict of its settings. "
            f"Received an object of type {type(augmentation).__name__}"
        )
    return augmentation if augmentation.enabled else None


def check_preprocessing(preprocessing):
    """None, or the checked dict of :func:`gamornet.science.preprocess.preprocessing_settings`."""
    from gamornet.science.preprocess import preprocessing_settings

    if preprocessing is None:
        return None
    if not isinstance(preprocessing, dict):
        raise TypeError(
            "preprocessing must be None or a dict of gamornet.science.preprocess.preprocessing_settings(). "
            f"Received an object of type {type(preprocessing).__name__}"
        )
    try:
        return preprocessing_settings(**preprocessing)
    except TypeError as error:
        raise ValueError(f"preprocessing holds an unknown setting ({error}); see gamornet.science.preprocess") from None


def _augment_batch(tf, images, noise, seed, settings):
    """Augment one batch (b, x, y, ndim) with per-image random draws from the stateless ``seed``."""
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    if settings.rotate_flip:
        square = images.shape[1] == images.shape[2]
        turns = tf.random.stateless_uniform([batch], seeds[0], 0, 4 if square else 2, dtype=tf.int32)
        if not square:
            turns = turns * 2
        flips = tf.random.stateless_uniform([batch], seeds[1], 0, 2, dtype=tf.int32)
        images = tf.where((flips == 1)[:, None, None, None], tf.reverse(images, axis=[2]), images)
        rotated = [images, tf.image.rot90(images, 1) if square else images, tf.image.rot90(images, 2),
                   tf.image.rot90(images, 3) if square else images]  # fmt: skip
        images = _select(tf, rotated, turns)
    if settings.max_shift > 0:
        shifts = tf.random.stateless_uniform([batch, 2], seeds[2], -settings.max_shift, settings.max_shift)
        ones, zeros = tf.ones([batch]), tf.zeros([batch])
        # Output pixel (x, y) takes input pixel (x + dx, y + dy): a translation by (-dx, -dy).
        transforms = tf.stack([ones, zeros, shifts[:, 0], zeros, ones, shifts[:, 1], zeros, zeros], axis=1)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT",
        )  # fmt: skip
    if settings.noise_factor > 1:
        factors = tf.random.stateless_uniform([batch], seeds[3], 1.0, settings.noise_factor)
        extra = noise * tf.sqrt(tf.square(factors) - 1.0)[:, None]
        images = images + tf.random.stateless_normal(tf.shape(images), seeds[4]) * extra[:, None, None, :]
    return images


def _select(tf, candidates, choice):
    """Per image, the candidate batch numbered ``choice`` (b,)."""
    result = candidates[0]
    for number, candidate in enumerate(candidates[1:], start=1):
        result = tf.where((choice == number)[:, None, None, None], candidate, result)
    return result


# --------------------------------------------------------------------------- datasets


def _available_memory():
    """Bytes of memory available now (Linux MemAvailable), or 1 GiB when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**30


def check_cache(cache):
    """Check the ``cache`` setting of :func:`catalogue_dataset`: ``'auto'``, True or False (returned as given).

    Raises
    ------
    ValueError
        Any other value.
    """
    if cache not in ("auto", True, False):
        raise ValueError(
            "cache must be 'auto' (keep the decoded images in memory when they fit), True or False. "
            f"Received: cache={cache!r}"
        )
    return cache


@dataclasses.dataclass(frozen=True)
class TrainingArrays:
    """Training images and their one-hot labels held in memory, already checked (see :func:`resolve_source`).

    Attributes
    ----------
    images : numpy.ndarray of shape (n, x, y, ndim)
    labels : numpy.ndarray of shape (n, 3)
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)


def check_training_classes(source, name):
    """Refuse training data whose labels hold one class only.

    A network trained on one class learns to answer that class for every galaxy, with a loss that looks excellent.

    Parameters
    ----------
    source : TrainingArrays, TrainingCatalogue or tf.data.Dataset
        From :func:`resolve_source` (a dataset is not read, so not checked).
    name : str
        How the data are named in the message.

    Raises
    ------
    ValueError
        Labels of one class only.
    """
    from gamornet.presets import CLASS_NAMES

    labels = getattr(source, "labels", None)
    if labels is None or not len(labels):
        return
    counts = np.bincount(np.argmax(np.asarray(labels), axis=1), minlength=3)
    if np.count_nonzero(counts) < 2:
        only = CLASS_NAMES[int(np.argmax(counts))]
        raise ValueError(
            f"every one of the {len(labels)} galaxies of {name} is labelled {only}: a network trained on one class "
            f"learns to answer {only} for every galaxy. Give labelled galaxies of at least two classes (of all three "
            "for GaMorNet's disk, indeterminate and bulge)"
        )


def resolve_source(data, labels, input_shape, name, labels_name, path_column="path", label_column="label"):
    """What a training function received as ``data`` (and ``labels``): arrays, a catalogue, or a tf.data dataset.

    Returns
    -------
    TrainingArrays, TrainingCatalogue or tf.data.Dataset

    Raises
    ------
    TypeError, ValueError, OSError
        As the checks of the 0.4.x arrays, :func:`~gamornet.io.catalogues.read_training_catalogue`, or a dataset
        whose elements are not (images, labels) batches of ``input_shape``.
    """
    if isinstance(data, np.ndarray):
        _checks.check_images(data, input_shape, name)
        _checks.check_labels(labels, data.shape[0], labels_name)
        return TrainingArrays(data, labels)
    what = "a catalogue" if isinstance(data, (str, os.PathLike, TrainingCatalogue)) else "a tf.data.Dataset"
    if labels is not None:
        raise TypeError(
            f"{labels_name} must be None when {name} is {what}: the labels come with it. "
            f"Received an object of type {type(labels).__name__}"
        )
    if isinstance(data, (str, os.PathLike, TrainingCatalogue)):
        return resolve_catalogue(data, path_column, label_column)
    from gamornet._utils.tf_logging import import_tensorflow

    if isinstance(data, import_tensorflow().data.Dataset):
        return _check_dataset_spec(data, input_shape, name)
    raise TypeError(
        f"{name} must be a numpy array of images, a catalogue (its path or a gamornet.io.catalogues.TrainingCatalogue) "
        f"or a tf.data.Dataset of (images, labels) batches. Received an object of type {type(data).__name__}"
    )


def _check_dataset_spec(dataset, input_shape, name):
    spec = dataset.element_spec
    expected = f"(images of shape (batch, {', '.join(map(str, input_shape))}), labels of shape (batch, 3))"
    shapes = [tuple(part.shape) for part in spec] if isinstance(spec, tuple) and len(spec) == 2 else None
    if (
        shapes is None
        or len(shapes[0]) != 4
        or tuple(shapes[0][1:]) != tuple(input_shape)
        or len(shapes[1]) != 2
        or shapes[1][1] != 3
    ):
        raise ValueError(f"{name} must be a tf.data.Dataset of batches {expected}. Received elements {spec}")
    return dataset


def _decode(path, input_shape, preprocessing, noise_border):
    """One image and its background noise, as the decoding threads produce them."""
    from gamornet.science.preprocess import estimate_background, preprocess_images

    try:
        image = read_image(path, input_shape)
    except (OSError, ValueError) as error:
        BAD_IMAGES.record(error)
        raise
    noise = np.zeros(input_shape[2], dtype=np.float32)
    if noise_border is not None:
        noise = estimate_background(image[np.newaxis], noise_border)[1][0].astype(np.float32)
    if preprocessing is not None:
        image = preprocess_images(image[np.newaxis], **preprocessing)[0]
    return image, noise


def _noise_border(preprocessing):
    return preprocessing["border"] if preprocessing is not None else 4


def _read_all(paths, input_shape, preprocessing, noise_border, progress):
    """Decode every image into one array, in parallel threads (the in-memory cache)."""
    import concurrent.futures

    from gamornet._utils.progress import progress_bar

    images = np.empty((len(paths),) + tuple(input_shape), dtype=np.float32)
    noise = np.zeros((len(paths), input_shape[2]), dtype=np.float32)
    pool = concurrent.futures.ThreadPoolExecutor(_DECODE_THREADS)
    try:
        with progress_bar(len(paths), "Reading images", enabled=progress) as bar:
            results = pool.map(lambda path: _decode(path, input_shape, preprocessing, noise_border), paths)
            for index, (image, image_noise) in enumerate(results):
                images[index], noise[index] = image, image_noise
                bar.update(index + 1)
    finally:
        # A bad image stops the reading at once: the images not yet read are not waited for.
        pool.shutdown(wait=True, cancel_futures=True)
        BAD_IMAGES.pop()  # raised here already, with its name
    return images, noise


def _graph(tf, function):
    """``function`` traced as it is: it has no Python control flow for AutoGraph to convert."""
    return tf.autograph.experimental.do_not_convert(function)


def _epoch_order(tf, n_images, training, seed, endless, first_epoch):
    """A dataset of one int64 vector per epoch: the order of the images (a fresh permutation when training).

    ``endless`` (the training loop): one dataset for all epochs, epoch ``e``
    shuffled by the ``e``-th draw of the seed, whatever iterators are made of
    it, so that both engines see the same batches and a resumed run (starting
    at ``first_epoch``) sees those it would have seen. Otherwise one epoch per
    iteration, each iteration drawing anew.
    """
    if not training:
        order = tf.data.Dataset.from_tensors(tf.range(n_images, dtype=tf.int64))
        return order.repeat() if endless else order
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=not endless)
    draws = draws.skip(first_epoch) if endless else draws.take(1)
    return draws.map(_graph(tf, lambda draw: tf.random.experimental.stateless_shuffle(
        tf.range(n_images, dtype=tf.int64), seed=tf.stack([draw, tf.constant(0, tf.int64)]))))  # fmt: skip


def _index_batches(tf, order, n_images, batch_size, drop_remainder):
    """Batches of indices from per-epoch orders, full batches as one reshape (as Keras' array adapter does)."""
    full = n_images // batch_size

    def split(indices):
        batches = tf.data.Dataset.from_tensor_slices(tf.reshape(indices[: full * batch_size], [full, batch_size]))
        if n_images % batch_size and not drop_remainder:
            batches = batches.concatenate(tf.data.Dataset.from_tensors(indices[full * batch_size :]))
        return batches

    return order.flat_map(split)


def _memory_pipeline(tf, images, labels, noise, batch_size, order, drop_remainder):
    tensors = (tf.convert_to_tensor(images), tf.convert_to_tensor(labels), tf.convert_to_tensor(noise))
    batches = _index_batches(tf, order, len(labels), batch_size, drop_remainder)
    # The arrays enter as one repeated element rather than as captured constants, so tf.data never copies them.
    dataset = tf.data.Dataset.zip((batches, tf.data.Dataset.from_tensors(tensors).repeat()))
    return dataset.map(_graph(tf, lambda indices, data: tuple(tf.gather(part, indices) for part in data)),
                       num_parallel_calls=tf.data.AUTOTUNE)  # fmt: skip


def _streaming_pipeline(tf, paths, labels, input_shape, batch_size, order, preprocessing, noise_border, drop_remainder):
    tensors = (tf.constant(list(paths)), tf.convert_to_tensor(labels))
    order = order.flat_map(tf.data.Dataset.from_tensor_slices)
    rows = tf.data.Dataset.zip((order, tf.data.Dataset.from_tensors(tensors).repeat()))
    rows = rows.map(_graph(tf, lambda index, data: (tf.gather(data[0], index), tf.gather(data[1], index))))

    def decode(path, label):
        image, noise = tf.numpy_function(
            lambda name: _decode(name.decode(), input_shape, preprocessing, noise_border), [path],
            [tf.float32, tf.float32], name="gamornet_read_image",
        )  # fmt: skip
        image.set_shape(input_shape)
        noise.set_shape([input_shape[2]])
        return image, label, noise

    decoded = rows.map(_graph(tf, decode), num_parallel_calls=_DECODE_THREADS, deterministic=True)
    return decoded.batch(batch_size, drop_remainder=drop_remainder)


def _finish_pipeline(tf, dataset, input_shape, augmentation, preprocessing_after, seed, steps, endless, first_epoch):
    if augmentation is not None:
        draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=not endless)
        draws = draws.skip(first_epoch * steps) if endless else draws

        def augment(data, draw):
            images, labels, noise = data
            seed_pair = tf.stack([draw, tf.constant(1, tf.int64)])
            return _augment_batch(tf, images, noise, seed_pair, augmentation), labels, noise

        dataset = tf.data.Dataset.zip((dataset, draws)).map(_graph(tf, augment), num_parallel_calls=tf.data.AUTOTUNE)
    if preprocessing_after is not None:
        from gamornet.science.preprocess import preprocess_images

        def preprocess(images, labels, noise):
            processed = tf.numpy_function(lambda batch: preprocess_images(batch, **preprocessing_after), [images],
                                          tf.float32, name="gamornet_preprocess")  # fmt: skip
            processed.set_shape((None,) + tuple(input_shape))
            return processed, labels, noise

        dataset = dataset.map(_graph(tf, preprocess), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(_graph(tf, lambda images, labels, noise: (images, labels)))
    if not endless:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    options = tf.data.Options()
    # Sharding is done here, before decoding, never by tf.distribute after it.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class PreparedData:
    """A dataset built by :func:`prepare_dataset`, with what the training loop needs to know of it."""

    dataset: object
    n_images: int
    steps: int
    cached: bool
    description: str


def _shard_indices(n_images, num_shards, shard_index):
    """This shard's rows: every ``num_shards``-th, all shards of equal length (so workers run equal steps)."""
    return np.arange(n_images)[shard_index::num_shards][: n_images // num_shards]


def prepare_dataset(source, input_shape, batch_size, *, training, preprocessing=None, augmentation=None, cache="auto",
                    seed=0, num_shards=1, shard_index=0, progress=False, drop_remainder=False, endless=False,
                    first_epoch=0):
    """Build the tf.data pipeline of :func:`catalogue_dataset` from a checked source (see :func:`resolve_source`).

    The training loop asks for an ``endless`` dataset (all epochs in one
    iteration, each ``steps`` batches long; see :func:`_epoch_order`) and this
    shard of the images (``num_shards``, ``shard_index``; equal shards).
    """
    from gamornet._utils.tf_logging import import_tensorflow

    tf = import_tensorflow()
    augmentation = augmentation if training else None
    rows = _shard_indices(len(source), num_shards, shard_index)
    if len(rows) == 0:
        raise ValueError(f"{len(source)} images cannot be shared among {num_shards} workers: give at least one each")
    labels = np.ascontiguousarray(source.labels[rows], dtype=np.float32)
    noise_border = _noise_border(preprocessing) if augmentation is not None and augmentation.noise_factor > 1 else None
    # Preprocessing follows augmentation (noise is added in the images' own units); without augmentation it is
    # done once, as the images are read.
    preprocessing_now, preprocessing_after = (None, preprocessing) if augmentation is not None else (preprocessing, None)
    n_bytes = len(rows) * int(np.prod(input_shape)) * 4
    if isinstance(source, TrainingArrays):
        cached, description = True, f"{len(rows)} images in memory"
        images = source.images if num_shards == 1 else source.images[rows]
        images = np.asarray(images, dtype=np.float32)
        noise = np.zeros((len(rows), input_shape[2]), dtype=np.float32)
        if noise_border is not None:
            from gamornet.science.preprocess import estimate_background

            noise = estimate_background(images, noise_border)[1].astype(np.float32)
        if preprocessing_now is not None:
            from gamornet.science.preprocess import preprocess_images

            images = preprocess_images(images, **preprocessing_now)
    else:
        cached = cache is True or (cache == "auto" and n_bytes <= _CACHE_SHARE_OF_AVAILABLE_MEMORY * _available_memory())
        description = f"{len(rows)} images of {source.source}, " + ("read once into memory" if cached else "streamed")
        paths = [source.paths[row] for row in rows]
        if cached:
            images, noise = _read_all(paths, input_shape, preprocessing_now, noise_border, progress)
    steps = len(rows) // batch_size if drop_remainder else -(-len(rows) // batch_size)
    order = _epoch_order(tf, len(rows), training, seed, endless, first_epoch)
    if cached:
        dataset = _memory_pipeline(tf, images, labels, noise, batch_size, order, drop_remainder)
    else:
        dataset = _streaming_pipeline(tf, paths, labels, input_shape, batch_size, order, preprocessing_now,
                                      noise_border, drop_remainder)  # fmt: skip
    dataset = _finish_pipeline(tf, dataset, input_shape, augmentation, preprocessing_after, seed, steps, endless,
                               first_epoch)  # fmt: skip
    return PreparedData(dataset, len(rows), steps, cached, description)


def catalogue_dataset(data, input_shape, batch_size=64, *, training=True, preprocessing=None, augmentation=None,
                      cache="auto", seed=None, path_column="path", label_column="label", progress=False):
    """A ``tf.data`` pipeline of (images, one-hot labels) batches from a catalogue or from arrays.

    Parameters
    ----------
    data : str, os.PathLike, TrainingCatalogue or tuple of numpy.ndarray
        A catalogue (its path, or a :class:`~gamornet.io.catalogues.TrainingCatalogue`), or a pair (images of
        shape (n, x, y, ndim), one-hot labels of shape (n, 3)).
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
        The network's (x, y, ndim).
    batch_size : int
        Images per batch (the last one may be smaller).
    training : bool
        True: a new random order each epoch, and ``augmentation``. False (for
        validation): catalogue order, no augmentation.
    preprocessing : dict, optional
        Settings of :func:`gamornet.science.preprocess.preprocessing_settings`, applied
        to every image (after augmentation).
    augmentation : AugmentationSettings or dict, optional
        Applied when ``training`` is True.
    cache : {'auto', True, False}
        Keep the decoded images of a catalogue in memory (read once, in
        parallel threads, before the first batch), or stream them from disk
        every epoch (constant memory). ``'auto'`` keeps them when they take at
        most a quarter of the memory available. Arrays are always in memory.
    seed : int, optional
        Seed of the shuffling and augmentation draws (each epoch differs).
    path_column, label_column
        As for :func:`~gamornet.io.catalogues.read_training_catalogue`, when ``data`` is a path.
    progress : bool
        Show a progress bar while a cached catalogue is read.

    Returns
    -------
    tf.data.Dataset
        Batches (float32 images of shape (b, x, y, ndim), float32 labels of
        shape (b, 3)); its cardinality is the number of batches.

    Raises
    ------
    TypeError, ValueError, OSError
        As :func:`~gamornet.io.catalogues.read_training_catalogue` and :func:`read_image` (a bad image is named
        when it is read), or invalid settings.
    """
    shape = _checks.check_input_shape(input_shape)
    batch_size = _checks.check_positive_int(batch_size, "batch_size")
    preprocessing = check_preprocessing(preprocessing)
    augmentation = check_augmentation(augmentation)
    cache = check_cache(cache)
    if isinstance(data, tuple) and len(data) == 2:
        source = resolve_source(data[0], data[1], shape, "images", "labels")
    else:
        source = resolve_source(data, None, shape, "data", "labels", path_column, label_column)
        if not isinstance(source, TrainingCatalogue):
            raise TypeError(f"data must be a catalogue or a pair (images, labels). Received a {type(data).__name__}")
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    seed = _checks.check_positive_int(seed, "seed", allow_zero=True)
    prepared = prepare_dataset(source, shape, batch_size, training=bool(training), preprocessing=preprocessing,
                               augmentation=augmentation, cache=cache, seed=seed, progress=progress)  # fmt: skip
    return prepared.dataset
