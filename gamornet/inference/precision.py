"""Faster inference in reduced precision: fp32, bf16 and int8 engines for a GaMorNet network.

An *engine* runs a built GaMorNet network (either LRN flavour, weights loaded)
on batches of images: ``engine.forward(batch)`` returns the (b, 3) float32
probabilities [p_disk, p_indet, p_bulge]. :func:`make_engine` builds one for a
precision:

``'fp32'``
    The network as it is, in 32-bit floats: the predictions of
    ``gamornet_predict_keras``, exactly.
``'bf16'``
    Keras' bfloat16 policy (8-bit mantissa) for every layer but the first
    convolution (which sees the raw pixel values), the local response
    normalisations (TensorFlow has no bfloat16 CPU kernel of TFLearn's) and
    the last dense layer with its softmax: on a CPU with AVX512-BF16 or AMX,
    or on a GPU of compute capability 8.0 or more, on the hardware's bfloat16
    units. bfloat16 moves a probability by up to about 0.01, which would
    change the class of a few galaxies in a thousand; so the galaxies whose
    class is decided by less than :data:`BF16_MARGIN` under the class rules
    in use (:func:`gamornet.science.classify.near_boundaries`) are predicted again in
    fp32 (:class:`Refinement`), and keep fp32's probabilities and class.
``'int8'``
    Post-training quantization with NNCF, run by OpenVINO on the CPU: the
    weights and input activations of the last four convolutions and of the
    first two dense layers in 8-bit integers, their scales set on
    *calibration images*; the first convolution, the local response
    normalisations and the last dense layer (with its softmax) stay in fp32.
    It needs the optional extra ``gamornet[fast]``. The quantized model is
    cached (see :class:`Int8Engine`), so the next run with the same model and
    calibration images starts at once.

The figures behind these choices (speed and class changes, measured on a
trained network) are on the documentation's "Speed" page.

Backend-neutral at import: TensorFlow, OpenVINO and NNCF are imported only
when an engine is made.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings

import numpy as np

from gamornet._utils import checks as _checks
from gamornet._utils.hashing import file_sha256
from gamornet.science.classify import HANDBOOK_THRESHOLDS, MOST_PROBABLE
from gamornet.errors import MissingDependencyError, PrecisionWarning

__all__ = [
    "PRECISIONS",
    "DEFAULT_CALIBRATION_SIZE",
    "HardwareSupport",
    "check_precision",
    "require_engine",
    "hardware_support",
    "precision_note",
    "calibration_sha256",
    "make_engine",
    "calibrated_batches",
    "KerasEngine",
    "Int8Engine",
    "Refinement",
    "BF16_MARGIN",
    "DEFAULT_REFINED_RULES",
]

#: The precisions of :func:`make_engine`, fastest last.
PRECISIONS = ("fp32", "bf16", "int8")

#: Calibration images used for int8 when the run's own images are used (the first this many).
DEFAULT_CALIBRATION_SIZE = 300

#: What to install for int8.
FAST_EXTRA = 'pip install "gamornet[fast]" (or "gamornet-cpu[fast]"), which installs OpenVINO and NNCF'

# Layers kept in fp32 by each reduced precision, by their role in the network (see _layer_roles): on a
# trained network these are the layers whose rounding changed the most classes (docs/speed.rst).
_BF16_FP32_ROLES = ("conv_1", "lrn", "dense_3")
_INT8_FP32_ROLES = ("conv_1", "dense_3")

# OpenVINO operations of the two LRN flavours: NNCF would quantize their inputs (squares, sums, powers) like
# those of a convolution. Their outputs feed int8 convolutions anyway; their arithmetic stays in floating point.
_LRN_OPERATIONS = ["LRN", "AvgPool", "ReduceSum", "Power", "Divide", "Multiply", "Sqrt"]

# Bumped whenever the int8 recipe or the graph it quantizes changes, so that caches of an older one are not reused
# (2: the Keras LRN's power 0.75 taken as two square roots).
_INT8_RECIPE_VERSION = 2

#: How far (in probability) a bf16 class decision must be from a boundary for its bf16 probabilities to be kept:
#: about twice the largest difference from fp32 measured on a trained network (docs/speed.rst).
BF16_MARGIN = 0.02

#: bf16 predicts the images near a boundary again in fp32 in batches of this many, collected over several batches;
#: batches are held back until their images are refined, at most this many images' worth.
REFINE_BATCH = 64
MAX_WAITING_IMAGES = 1024

#: The class rules bf16 protects when none are given and the images are of neither handbook data set (SDSS, CANDELS):
#: the most probable class and the four handbook sets. For SDSS and CANDELS images the predictor protects the most
#: probable class and the handbook set of the backend and data set (see gamornet.load_predictor).
DEFAULT_REFINED_RULES = (MOST_PROBABLE,) + tuple(HANDBOOK_THRESHOLDS)

# CPU flags (Linux /proc/cpuinfo names) of native bfloat16 and int8 dot products.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512-BF16, AMX; Arm BF16
_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "i8mm", "asimddp")  # x86 VNNI, AMX; Arm I8MM, dot product


def check_precision(precision):
    """Check a precision name.

    Parameters
    ----------
    precision : {'fp32', 'bf16', 'int8'}

    Returns
    -------
    str
        The name, in lower case.

    Raises
    ------
    TypeError
        Not a string.
    ValueError
        Not one of :data:`PRECISIONS`.
    """
    if not isinstance(precision, str):
        raise TypeError(f"precision must be 'fp32', 'bf16' or 'int8'. Received an object of type {type(precision).__name__}")
    name = precision.strip().lower()
    if name not in PRECISIONS:
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'int8'. Received: precision={precision!r}")
    return name


# --------------------------------------------------------------------------- hardware


@dataclasses.dataclass(frozen=True)
class HardwareSupport:
    """What a machine's processors offer the reduced precisions.

    Attributes
    ----------
    bf16 : bool or None
        The CPU has native bfloat16 dot products (AVX512-BF16 or AMX-BF16 on
        x86, BF16 on Arm); None when it could not be told.
    int8 : bool or None
        The CPU has fast int8 dot products (AVX512-VNNI, AVX-VNNI or AMX-INT8
        on x86; I8MM or the dot-product extension on Arm); None when it could
        not be told.
    cpu_flags : tuple of str
        The relevant flags found.
    gpus : tuple of (str, tuple of int or None)
        Each GPU TensorFlow sees: its name and CUDA compute capability.
    """

    bf16: object
    int8: object
    cpu_flags: tuple = ()
    gpus: tuple = ()


def _cpu_flags(cpuinfo_text):
    flags = set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def hardware_support(cpuinfo_text=None, gpus=None):
    """Tell what this machine offers bf16 and int8.

    Parameters
    ----------
    cpuinfo_text : str, optional
        The text of ``/proc/cpuinfo``; by default read from this machine
        (on systems without it, the CPU's support is unknown).
    gpus : sequence of (str, tuple of int or None), optional
        The GPUs (name, compute capability); by default none. :func:`make_engine`
        passes the GPUs TensorFlow sees.

    Returns
    -------
    HardwareSupport
    """
    if cpuinfo_text is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
                cpuinfo_text = stream.read()
        except OSError:
            cpuinfo_text = ""
    flags = _cpu_flags(cpuinfo_text)
    if not flags:
        return HardwareSupport(bf16=None, int8=None, gpus=tuple(gpus or ()))
    found = tuple(sorted(flag for flag in flags if flag in _BF16_FLAGS + _INT8_FLAGS))
    return HardwareSupport(
        bf16=any(flag in flags for flag in _BF16_FLAGS),
        int8=any(flag in flags for flag in _INT8_FLAGS),
        cpu_flags=found,
        gpus=tuple(gpus or ()),
    )


def precision_note(precision, support):
    """What a precision gives on a machine, when that is less than on one built for it.

    Parameters
    ----------
    precision : {'fp32', 'bf16', 'int8'}
    support : HardwareSupport

    Returns
    -------
    str or None
        A sentence for the user, or None when the machine has what the
        precision needs.
    """
    precision = check_precision(precision)
    if precision == "fp32":
        return None
    if support.gpus:
        name, capability = support.gpus[0]
        if precision == "int8":
            return (f"int8 runs on the CPU with OpenVINO, not on the GPU ({name}): this version of gamornet has no "
                    "GPU int8 engine (TensorRT). On a GPU, bf16 is the faster choice")
        if capability is not None and tuple(capability) < (8, 0):
            return (f"the GPU {name} (compute capability {'.'.join(map(str, capability))}) has no bfloat16 units "
                    "(they start at 8.0, Ampere): bf16 runs emulated there, usually no faster than fp32")
        return None
    if precision == "bf16" and support.bf16 is None:
        return ("gamornet could not tell whether this CPU has bfloat16 instructions (AVX512-BF16, AMX or Arm BF16): "
                "without them bf16 runs emulated, usually slower than fp32. Measure with benchmarks/precision.py")
    if precision == "bf16" and not support.bf16:
        return ("this CPU has no bfloat16 instructions (AVX512-BF16, AMX or Arm BF16): bf16 runs emulated, "
                "usually slower than fp32. Use fp32, or int8")
    if precision == "int8" and support.int8 is None:
        return ("gamornet could not tell whether this CPU has int8 dot-product instructions (VNNI, AMX or Arm "
                "I8MM): without them int8 gains less. Measure with benchmarks/precision.py")
    if precision == "int8" and not support.int8:
        return ("this CPU has no int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX or Arm I8MM): int8 runs "
                "on older instructions and gains less over fp32 than on a CPU with them")
    return None


def _onednn_on():
    """Whether TensorFlow runs its CPU kernels with oneDNN (off with TF_ENABLE_ONEDNN_OPTS=0)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow without this probe: assume its default on x86, on
        return True
    return bool(_pywrap_util_port.IsMklEnabled())


#: What bf16 gives when TensorFlow's oneDNN is off (measured: docs/speed.rst).
ONEDNN_OFF_NOTE = (
    "TensorFlow's oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0): bf16 runs on TensorFlow's own kernels, which are "
    "slower than fp32 (about 0.6 x fp32's images per second on a CPU with AVX512-BF16). Turn oneDNN on, or use "
    "fp32 or int8"
)


def _tensorflow_gpus():
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append((details.get("device_name", device.name), details.get("compute_capability")))
    return tuple(gpus)


# --------------------------------------------------------------------------- network


def _layer_roles(network):
    """{layer name: role} of a GaMorNet network, whatever its layer names and LRN flavour.

    Roles are 'conv_1' .. 'conv_5', 'dense_1' .. 'dense_3', 'lrn' (either flavour) and 'other' (input,
    pooling, flatten, dropout: layers that do no arithmetic a rounding could change).
    """
    kinds = [type(layer).__name__ for layer in network.layers]
    if kinds.count("Conv2D") != 5 or kinds.count("Dense") != 3:
        raise ValueError(
            "network must be a GaMorNet network (5 convolutions and 3 dense layers). Received a network with "
            f"{kinds.count('Conv2D')} convolutions and {kinds.count('Dense')} dense layers"
        )
    roles, counts = {}, {"Conv2D": 0, "Dense": 0}
    for layer, kind in zip(network.layers, kinds):
        if kind in counts:
            counts[kind] += 1
            roles[layer.name] = f"{'conv' if kind == 'Conv2D' else 'dense'}_{counts[kind]}"
        elif kind in ("InputLayer", "MaxPooling2D", "Flatten", "Dropout"):
            roles[layer.name] = "other"
        else:
            roles[layer.name] = "lrn"
    return roles


def _check_network(network):
    import keras

    if not isinstance(network, keras.Model):
        raise TypeError(f"network must be a keras.Model of GaMorNet. Received an object of type {type(network).__name__}")
    _layer_roles(network)
    return tuple(int(size) for size in network.input_shape[1:])


def _check_batch(batch, input_shape):
    """A batch as float32 (an array, or a TensorFlow tensor as the predictor's stream hands it over)."""
    if not hasattr(batch, "numpy"):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
    if len(batch.shape) != 4 or tuple(batch.shape[1:]) != input_shape:
        raise ValueError(
            f"a batch must have shape (b, {', '.join(map(str, input_shape))}). Received an array of shape "
            f"{tuple(batch.shape)}"
        )
    return batch


@dataclasses.dataclass(frozen=True)
class Refinement:
    """Which bf16 predictions are made again in fp32: those of galaxies near a class boundary.

    Parameters
    ----------
    rules : tuple
        The class rules the probabilities will be classified with:
        ``'most_probable'`` and threshold sets as
        :func:`gamornet.science.classify.near_boundaries` takes them (default: the
        most probable class and the four handbook sets).
    margin : float
        A galaxy whose class, under some rule, is decided by less than this
        (in probability; twice this between two probabilities) is predicted
        again in fp32 (default :data:`BF16_MARGIN`).
    transform : callable, optional
        Applied to the probabilities before they are compared with the rules:
        the calibration's temperature when predictions are calibrated, so
        that the rules see the probabilities they will classify.

    Raises
    ------
    ValueError, TypeError
        An unknown rule, or a margin outside (0, 0.5).
    """

    rules: tuple = DEFAULT_REFINED_RULES
    margin: float = BF16_MARGIN
    transform: object = None

    def __post_init__(self):
        from gamornet.science.classify import _check_margin, _resolve_rules

        object.__setattr__(self, "rules", _resolve_rules(self.rules))
        object.__setattr__(self, "margin", _check_margin(self.margin))
        if self.transform is not None and not callable(self.transform):
            raise TypeError("transform must be callable or None. Received an object of type "
                            f"{type(self.transform).__name__}")

    def mask(self, probabilities):
        """(n,) bool: the galaxies of ``probabilities`` (n, 3) to predict again in fp32."""
        from gamornet.science.classify import near_boundaries

        if self.transform is not None:
            probabilities = self.transform(probabilities)
        return near_boundaries(probabilities, self.rules, self.margin)

    def describe(self):
        """The rules and margin, as plain values (for the provenance of a table)."""
        rules = [rule if isinstance(rule, str) else {"disk": rule.disk, "bulge": rule.bulge,
                                                     "disk_must_lead": bool(rule.disk_must_lead)}
                 for rule in self.rules]  # fmt: skip
        return {"rules": rules, "margin": self.margin}


class KerasEngine:
    """The fp32 or bf16 engine: the Keras network, run by compiled TensorFlow functions.

    It has the steps of the predictor's engine (:class:`gamornet.inference._engine.Engine`):
    :meth:`forward`, and ``features`` / ``head`` for Monte-Carlo dropout.

    Parameters
    ----------
    network : keras.Model
        A built GaMorNet network with its weights.
    precision : {'fp32', 'bf16'}
        ``'fp32'`` runs ``network`` as it is. ``'bf16'`` runs a copy of it
        that computes in bfloat16 (weights stored in bfloat16) except in its
        first convolution, LRN layers and last dense layer, and predicts the
        galaxies that ``refinement`` picks again with ``network`` in fp32.
    backend : {'keras', 'tflearn'}
        The backend whose model file the weights came from (recorded only).
    refinement : Refinement, optional
        For bf16: which galaxies are predicted again in fp32 (default
        ``Refinement()``: near the boundaries of the most probable class and
        of the handbook sets). Ignored by fp32.

    Attributes
    ----------
    counts : dict
        ``predicted`` and ``refined``: the galaxies :meth:`forward` has
        predicted, and how many of them bf16 predicted again in fp32.
    """

    needs_calibration = False

    def __init__(self, network, precision="fp32", backend="keras", refinement=None):
        from gamornet.inference._engine import Engine

        precision = check_precision(precision)
        if precision == "int8":
            raise ValueError("KerasEngine runs fp32 and bf16; int8 is Int8Engine's. Received: precision='int8'")
        if refinement is not None and not isinstance(refinement, Refinement):
            raise TypeError(f"refinement must be a gamornet.inference.precision.Refinement or None. Received an object of type "
                            f"{type(refinement).__name__}")  # fmt: skip
        self.precision = precision
        self.input_shape = _check_network(network)
        self.network = network if precision == "fp32" else _bfloat16_copy(network)
        self._engine = Engine(self.network, backend)
        self.head_layers = self._engine.head_layers
        self.refinement = None
        self.counts = {"predicted": 0, "refined": 0}
        if precision == "bf16":
            self.refinement = Refinement() if refinement is None else refinement
            self._reference = Engine(network, backend)  # fp32, for the galaxies near a class boundary

    def forward(self, batch):
        """Probabilities of a batch of images (b, x, y, ndim): (b, 3) float32 [p_disk, p_indet, p_bulge]."""
        ((_, probabilities),) = self.forward_stream([(None, batch)])
        return probabilities

    def forward_stream(self, items, refine_batch=REFINE_BATCH, max_waiting=MAX_WAITING_IMAGES):
        """Probabilities of a stream of batches, in order; bf16 refines in batches of its own.

        A forward pass over a few images costs nearly as much as over a
        batch (the dense layers' weights are read whole either way), so bf16
        collects the images to predict again in fp32 from several batches and
        predicts them together. A batch is yielded once its own images are
        refined: its results may come a few batches late.

        Parameters
        ----------
        items : iterable of (key, batch)
            Any key (handed back) with a batch of images (b, x, y, ndim), an
            array or a TensorFlow tensor.
        refine_batch : int
            bf16 predicts the collected images in fp32 once this many are
            waiting.
        max_waiting : int
            ... or once the batches held back hold this many images.

        Yields
        ------
        (key, numpy.ndarray of float32, shape (b, 3))
        """
        held, queued, n_queued, n_held = [], [], 0, 0
        for key, batch in items:
            batch = _check_batch(batch, self.input_shape)
            if batch.shape[0] == 0:
                probabilities = np.empty((0, 3), dtype=np.float32)
            else:
                probabilities = np.array(self._engine.forward(batch), dtype=np.float32)
            self.counts["predicted"] += len(probabilities)
            rows = np.empty(0, dtype=np.int64)
            if self.refinement is not None and len(probabilities):
                import tensorflow as tf

                rows = np.flatnonzero(self.refinement.mask(probabilities))
                if len(rows):
                    queued.append(tf.gather(batch, rows))
                    n_queued += len(rows)
            held.append((key, probabilities, rows))
            n_held += len(probabilities)
            if n_queued >= refine_batch or n_held >= max_waiting or not n_queued:
                yield from self._refined(held, queued, refine_batch)
                held, queued, n_queued, n_held = [], [], 0, 0
        yield from self._refined(held, queued, refine_batch)

    def _refined(self, held, queued, refine_batch):
        """The held batches, in order, with their queued images predicted again in fp32."""
        if queued:
            import tensorflow as tf

            images = tf.concat(queued, axis=0)
            starts = range(0, int(images.shape[0]), refine_batch)
            refined = np.concatenate([np.asarray(self._reference.forward(images[start : start + refine_batch]),
                                                 dtype=np.float32) for start in starts])  # fmt: skip
            self.counts["refined"] += len(refined)
            position = 0
            for _, probabilities, rows in held:
                probabilities[rows] = refined[position : position + len(rows)]
                position += len(rows)
        for key, probabilities, _ in held:
            yield key, probabilities

    def features(self, batch):
        """The flattened output (b, F) of the convolutional part."""
        return self._engine.features(_check_batch(batch, self.input_shape))

    def head(self, features, training=False):
        """Probabilities (b, 3), float32, from :meth:`features`; dropout is on only when ``training`` is True."""
        return np.asarray(self._engine.head(features, training=training), dtype=np.float32)

    def calibrate(self, images):
        """Nothing to calibrate in fp32 or bf16 (present so that every engine can be driven the same way)."""

    def provenance(self):
        """What runs the network: a dict for the predictions' provenance."""
        import keras
        import tensorflow as tf

        described = {"precision": self.precision, "engine": "tensorflow", "tensorflow": tf.__version__,
                     "keras": keras.__version__}  # fmt: skip
        if self.precision == "bf16":
            described["fp32_layers"] = list(_BF16_FP32_ROLES)
            described["refined_in_fp32"] = dict(self.refinement.describe(), **self.counts)
        return described


def _bfloat16_copy(network):
    """A copy of ``network`` that computes in bfloat16, except the layers of _BF16_FP32_ROLES.

    The bfloat16 layers get the 'bfloat16' policy (weights stored in bfloat16,
    so they are not cast again at every call); Keras casts the activations
    between fp32 and bfloat16 layers. Pooling, flatten and dropout layers take
    the precision of the layer before them, so that no activation is rounded
    on its way between two fp32 layers.
    """
    import keras

    policies, policy = {}, "float32"
    for name, role in _layer_roles(network).items():
        if role != "other":
            policy = "float32" if role in _BF16_FP32_ROLES else "bfloat16"
        policies[name] = policy

    def with_policy(layer):
        config = layer.get_config()
        config["dtype"] = policies[layer.name]
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(network, clone_function=with_policy)
    for source, target in zip(network.layers, copy.layers):
        if source.weights:
            target.set_weights(source.get_weights())
    return copy


# --------------------------------------------------------------------------- int8


def _missing(what, error):
    return MissingDependencyError(
        f"precision='int8' needs {what}, which is not installed ({error}). Install it with {FAST_EXTRA}; "
        "or use precision='bf16' or 'fp32', which need nothing more",
        name=getattr(error, "name", None),
    )


def _import_openvino():
    """OpenVINO (runs the int8 model), or an error that says how to get it."""
    try:
        import openvino
    except ImportError as error:
        raise _missing("OpenVINO", error) from error
    return openvino


def _import_nncf():
    """NNCF (quantizes the model; not needed when the quantized model is cached), or an error that says how to get it."""
    try:
        import nncf
    except ImportError as error:
        raise _missing("NNCF", error) from error
    return nncf


def require_engine(precision):
    """Check that the engine of a precision is installed.

    Parameters
    ----------
    precision : {'fp32', 'bf16', 'int8'}

    Raises
    ------
    gamornet.errors.MissingDependencyError
        int8 without OpenVINO (the extra ``gamornet[fast]``); it says how to
        install it.
    ValueError, TypeError
        An unknown precision.
    """
    if check_precision(precision) == "int8":
        _import_openvino()


def _nncf_version():
    import importlib.metadata

    try:
        return importlib.metadata.version("nncf")
    except importlib.metadata.PackageNotFoundError:
        return None


def calibration_sha256(images):
    """The sha256 of a calibration set: of its shape and its pixel values as float32.

    Parameters
    ----------
    images : numpy.ndarray of shape (n, x, y, ndim)

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    digest = hashlib.sha256(repr(tuple(images.shape)).encode())
    for start in range(0, len(images), 256):
        digest.update(np.ascontiguousarray(images[start : start + 256], dtype=np.float32).tobytes())
    return digest.hexdigest()


def _weights_sha256(network):
    digest = hashlib.sha256()
    for weight in network.weights:
        digest.update(np.ascontiguousarray(weight.numpy(), dtype=np.float32).tobytes())
    return digest.hexdigest()


def _network_description(network):
    """The architecture in words (layer classes and output shapes), without names: part of the cache key."""
    return [[type(layer).__name__, list(layer.output.shape[1:])] for layer in network.layers]


@contextlib.contextmanager
def _quiet_nncf(nncf):
    """NNCF's progress bars and INFO lines go to standard output; keep them out of the user's output."""
    import io
    import logging

    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


class Int8Engine:
    """The int8 engine: the network quantized by NNCF, run by OpenVINO on the CPU.

    The quantized model is made from calibration images by :meth:`calibrate`
    (the first call of :meth:`forward` needs it done) and cached as an
    OpenVINO IR (an XML graph and its binary weights: data only, never code),
    in a folder ``gamornet-int8-<key>`` where ``key`` is the sha256 of the
    model's sha256, the network's architecture, the OpenVINO and NNCF
    versions, the quantization recipe and the calibration images' sha256. The
    folder is written under a temporary name and renamed into place when
    complete; its files' sha256 are recorded in ``key.json`` and checked
    before every reuse.

    Parameters
    ----------
    network : keras.Model
        A built GaMorNet network with its weights.
    cache_folder : str, optional
        Where the cache goes: usually the model file's folder. When it cannot
        be written (or when None), the gamornet cache folder is used
        (``$GAMORNET_CACHE_DIR``, else ``~/.cache/gamornet``), under ``int8/``.
    model_sha256 : str, optional
        The sha256 of the model file; by default the sha256 of the weights.

    Raises
    ------
    gamornet.errors.MissingDependencyError
        OpenVINO is not installed (``gamornet[fast]``). NNCF is needed only to
        quantize, so its absence is said by :meth:`calibrate`, when no cached
        model fits.
    """

    precision = "int8"

    def __init__(self, network, cache_folder=None, model_sha256=None):
        self._openvino = _import_openvino()
        self.input_shape = _check_network(network)
        if cache_folder is not None and not isinstance(cache_folder, (str, os.PathLike)):
            raise TypeError(f"cache_folder must be a folder path. Received an object of type {type(cache_folder).__name__}")
        if model_sha256 is not None and not (isinstance(model_sha256, str) and len(model_sha256) == 64):
            raise ValueError(f"model_sha256 must be 64 hexadecimal digits. Received: {model_sha256!r}")
        self.network = network
        self.cache_folder = None if cache_folder is None else os.fspath(cache_folder)
        self.model_sha256 = model_sha256 or _weights_sha256(network)
        self._request = None
        self._provenance = {}

    @property
    def needs_calibration(self):
        """Whether :meth:`calibrate` is still to be called."""
        return self._request is None

    def _key(self, calibration_sha, n_images):
        record = {
            "format": 1,
            "recipe": _INT8_RECIPE_VERSION,
            "engine": "openvino+nncf",
            "openvino": self._openvino.get_version(),
            "nncf": _nncf_version(),
            "model_sha256": self.model_sha256,
            "network": _network_description(self.network),
            "fp32_layers": list(_INT8_FP32_ROLES),
            "calibration_sha256": calibration_sha,
            "calibration_images": n_images,
        }
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest(), record

    def _folders(self, key):
        """Candidate cache folders, in order: beside the model, then the gamornet cache."""
        from gamornet.models._download import cache_dir

        name = f"gamornet-int8-{key[:16]}"
        folders = [os.path.join(self.cache_folder, name)] if self.cache_folder else []
        return folders + [os.path.join(cache_dir(), "int8", name)]

    def calibrate(self, images):
        """Quantize the network on calibration images, or load the quantized model cached for them.

        Parameters
        ----------
        images : numpy.ndarray of shape (n, x, y, ndim)
            Images like those to be classified, preprocessed the same way (all
            of them are used; :data:`DEFAULT_CALIBRATION_SIZE` is plenty).

        Raises
        ------
        TypeError, ValueError
            Images that are not a numeric array of the network's input shape,
            or that hold NaN or infinite pixels.
        gamornet.errors.MissingDependencyError
            NNCF is not installed and no cached quantized model fits.
        """
        _checks.check_images(images, self.input_shape, name="calibration_images")
        key, record = self._key(calibration_sha256(images), len(images))
        folders = self._folders(key)
        model, folder = self._read_cache(folders, key)
        from_cache = model is not None
        if model is None:
            model = self._quantize(images)
            folder = self._write_cache(model, folders, record, key)
        core = self._openvino.Core()
        # On a CPU with bfloat16 units OpenVINO would run the layers left in floating point in bfloat16: keep fp32.
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self._request = compiled.create_infer_request()
        self._provenance = {"calibration_sha256": record["calibration_sha256"], "calibration_images": len(images),
                            "cache": folder, "from_cache": from_cache}  # fmt: skip

    def _quantize(self, images):
        openvino, nncf = self._openvino, _import_nncf()
        with warnings.catch_warnings():
            # Keras warns that the converter calls the model with a tuple instead of a list: harmless.
            warnings.simplefilter("ignore", UserWarning)
            model = openvino.convert_model(self.network)
        operations = model.get_ordered_ops()
        convolutions = [op.get_friendly_name() for op in operations if op.get_type_name() == "Convolution"]
        products = [op.get_friendly_name() for op in operations if op.get_type_name() == "MatMul"]
        if len(convolutions) != 5 or len(products) != 3:
            raise ValueError(
                f"OpenVINO {openvino.get_version()} converted the network into {len(convolutions)} convolutions and "
                f"{len(products)} matrix products instead of 5 and 3: this version is not supported for int8"
            )
        by_role = dict(zip(("conv_1", "conv_2", "conv_3", "conv_4", "conv_5"), convolutions))
        by_role.update(zip(("dense_1", "dense_2", "dense_3"), products))
        ignored = [by_role[role] for role in _INT8_FP32_ROLES]
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        # NNCF's default activation ranges (means over images of each image's extremes) clip the brightest
        # images' activations, which changed the class of 2 % of the galaxies of a trained network; the
        # extremes over all calibration images change 0.3 % (docs/speed.rst).
        parameters = AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        )
        dataset = nncf.Dataset([np.ascontiguousarray(images[i : i + 1], dtype=np.float32) for i in range(len(images))])
        with _quiet_nncf(nncf):
            return nncf.quantize(
                model, dataset, subset_size=len(images), advanced_parameters=parameters,
                ignored_scope=nncf.IgnoredScope(names=ignored, types=_LRN_OPERATIONS, validate=False),
            )  # fmt: skip

    def _read_cache(self, folders, key):
        """The cached quantized model of ``key`` and its folder, or (None, None)."""
        for folder in folders:
            record_path = os.path.join(folder, "key.json")
            if not os.path.isfile(record_path):
                continue
            try:
                with open(record_path, encoding="utf-8") as stream:
                    record = json.load(stream)
                intact = record.get("key") == key and all(
                    file_sha256(os.path.join(folder, name)) == digest for name, digest in record["files"].items()
                )
            except (OSError, ValueError, KeyError, AttributeError, TypeError):
                intact = False
            if intact:
                return self._openvino.Core().read_model(os.path.join(folder, "model.xml")), folder
            warnings.warn(
                f"the cached int8 model in {folder} is damaged or incomplete: it is made again", PrecisionWarning,
                stacklevel=3,
            )  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
        return None, None

    def _write_cache(self, model, folders, record, key):
        """Write the quantized model into the first writable folder; return it (None if none could be written)."""
        for folder in folders:
            try:
                _write_model_folder(self._openvino, model, folder, dict(record, key=key))
                return folder
            except OSError:
                continue
        warnings.warn(
            "the int8 model could not be cached (neither " + " nor ".join(folders) + " can be written): "
            "the next run quantizes it again", PrecisionWarning, stacklevel=3,
        )  # fmt: skip
        return None

    def forward(self, batch):
        """Probabilities of a batch of images (b, x, y, ndim): (b, 3) float32 [p_disk, p_indet, p_bulge].

        Raises
        ------
        RuntimeError
            :meth:`calibrate` has not been called.
        """
        if self._request is None:
            raise RuntimeError("the int8 engine is not calibrated yet: call calibrate(images) first")
        batch = _check_batch(batch, self.input_shape)
        self._request.infer([np.asarray(batch, dtype=np.float32)])
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)

    def provenance(self):
        """What runs the network: a dict for the predictions' provenance."""
        return dict({"precision": "int8", "engine": "openvino+nncf", "openvino": self._openvino.get_version(),
                     "nncf": _nncf_version(), "fp32_layers": list(_INT8_FP32_ROLES)},
                    **self._provenance)  # fmt: skip


def _write_model_folder(openvino, model, folder, record):
    """Save ``model`` as ``folder/model.xml`` + ``model.bin`` + ``key.json``, all at once (atomic rename)."""
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(folder) + "-", dir=parent)
    try:
        openvino.save_model(model, os.path.join(temporary, "model.xml"), compress_to_fp16=False)
        record["files"] = {name: file_sha256(os.path.join(temporary, name)) for name in ("model.xml", "model.bin")}
        with open(os.path.join(temporary, "key.json"), "w", encoding="utf-8") as stream:
            json.dump(record, stream, indent=1, sort_keys=True)
        try:
            os.rename(temporary, folder)
        except OSError:
            if not os.path.isfile(os.path.join(folder, "key.json")):
                raise
            # Another process cached the same model first: keep its copy.
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# --------------------------------------------------------------------------- the entry point


def make_engine(network, precision="fp32", calibration_images=None, cache_folder=None, model_sha256=None,
                backend="keras", refinement=None):
    """An engine that runs ``network`` in ``precision``.

    Parameters
    ----------
    network : keras.Model
        A built GaMorNet network (either LRN flavour) with its weights loaded.
    precision : {'fp32', 'bf16', 'int8'}
        See the module's documentation.
    calibration_images : numpy.ndarray of shape (n, x, y, ndim), optional
        For int8: images like those to be classified, preprocessed the same
        way. Without them, the engine must be calibrated before its first
        :meth:`forward`, for example on the first
        :data:`DEFAULT_CALIBRATION_SIZE` images of the run
        (:func:`calibrated_batches`). Ignored by fp32 and bf16.
    cache_folder : str, optional
        For int8: where to cache the quantized model (usually the model
        file's folder); see :class:`Int8Engine`.
    model_sha256 : str, optional
        For int8: the sha256 of the model file, part of the cache key.
    backend : {'keras', 'tflearn'}
        The backend whose model file the weights came from (recorded in the
        provenance; the network's LRN layers already are of its flavour).
    refinement : Refinement, optional
        For bf16: which galaxies are predicted again in fp32 (see
        :class:`KerasEngine`). Ignored by fp32 and int8.

    Returns
    -------
    KerasEngine or Int8Engine
        With ``forward(batch) -> (b, 3) float32``, ``calibrate(images)``,
        ``needs_calibration`` and ``provenance()``.

    Raises
    ------
    TypeError, ValueError
        An unknown precision, a network that is not GaMorNet's, calibration
        images of the wrong shape or with NaN or infinite pixels.
    gamornet.errors.MissingDependencyError
        int8 without OpenVINO and NNCF (the extra ``gamornet[fast]``).

    Warns
    -----
    gamornet.errors.PrecisionWarning
        The machine lacks the instructions that make the precision fast (see
        :func:`precision_note`).
    """
    precision = check_precision(precision)
    require_engine(precision)  # before any work, so that a missing extra is said first
    if calibration_images is not None and precision == "int8":
        _checks.check_images(calibration_images, _check_network(network), name="calibration_images")
    gpus = _tensorflow_gpus()
    note = precision_note(precision, hardware_support(gpus=gpus))
    if precision == "bf16" and not gpus and not _onednn_on():
        note = ONEDNN_OFF_NOTE
    if note:
        warnings.warn(note, PrecisionWarning, stacklevel=2)
    if precision != "int8":
        return KerasEngine(network, precision, backend, refinement=refinement)
    engine = Int8Engine(network, cache_folder=cache_folder, model_sha256=model_sha256)
    if calibration_images is not None:
        engine.calibrate(calibration_images)
    return engine


def calibrated_batches(engine, batches, n_images=DEFAULT_CALIBRATION_SIZE, images_of=None):
    """Yield ``batches`` unchanged, after calibrating ``engine`` on their first ``n_images`` images.

    The batches read before calibration are kept in memory and yielded after
    it, so a stream is read once. An engine that needs no calibration (fp32,
    bf16, or int8 already calibrated) starts at once.

    Parameters
    ----------
    engine : KerasEngine or Int8Engine
    batches : iterable
        Arrays of shape (b, x, y, ndim), or objects holding one.
    n_images : int
        How many of the first images calibrate the engine (fewer if the
        stream holds fewer).
    images_of : callable, optional
        Returns the image array of a batch (for example ``lambda batch:
        batch.images``); by default the batch is the array.

    Yields
    ------
    object
        Each batch of ``batches``, in order.
    """
    n_images = _checks.check_positive_int(n_images, "n_images")
    images_of = images_of or (lambda batch: batch)
    iterator = iter(batches)
    held, count = [], 0
    if engine.needs_calibration:
        for batch in iterator:
            held.append(batch)
            count += len(images_of(batch))
            if count >= n_images:
                break
        if count:
            images = np.concatenate([np.asarray(images_of(batch)) for batch in held])[:n_images]
            engine.calibrate(images)
    yield from held
    yield from iterator
