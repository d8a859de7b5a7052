"""The int8 engine: post-training quantization with NNCF, run by OpenVINO on the CPU.

The weights and input activations of the last four convolutions and of the
first two dense layers are in 8-bit integers, their scales set on *calibration
images*; the first convolution, the local response normalisations and the last
dense layer (with its softmax) stay in fp32. It needs the optional extra
``gamornet[fast]``. The quantized model is cached (see :class:`Int8Engine`),
keyed on the sha256 of the calibration images (:func:`calibration_sha256`), so
the next run with the same model and calibration images starts at once. A run
without calibration images calibrates on its own first
:data:`DEFAULT_CALIBRATION_SIZE` images (:func:`calibrated_batches`).

Backend-neutral at import: OpenVINO and NNCF are imported only when an engine
is made.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings

import numpy as np

from gamornet._utils import checks as _checks
from gamornet._utils.hashing import file_sha256
from gamornet.errors import MissingDependencyError, PrecisionWarning
from gamornet.inference.engine_checks import check_batch, check_network

__all__ = ["DEFAULT_CALIBRATION_SIZE", "FAST_EXTRA", "import_openvino", "calibration_sha256", "Int8Engine",
           "calibrated_batches"]

#: Calibration images used for int8 when the run's own images are used (the first this many).
DEFAULT_CALIBRATION_SIZE = 300

#: What to install for int8.
FAST_EXTRA = 'pip install "gamornet[fast]" (or "gamornet-cpu[fast]"), which installs OpenVINO and NNCF'

# Layers kept in fp32 by int8, by their role in the network (see gamornet.inference.engine_checks.layer_roles): on
# a trained network these are the layers whose rounding changed the most classes (docs/speed.rst).
_INT8_FP32_ROLES = ("conv_1", "dense_3")

# OpenVINO operations of the two LRN flavours: NNCF would quantize their inputs (squares, sums, powers) like
# those of a convolution. Their outputs feed int8 convolutions anyway; their arithmetic stays in floating point.
_LRN_OPERATIONS = ["LRN", "AvgPool", "ReduceSum", "Power", "Divide", "Multiply", "Sqrt"]

# Bumped whenever the int8 recipe or the graph it quantizes changes, so that caches of an older one are not reused
# (2: the Keras LRN's power 0.75 taken as two square roots).
_INT8_RECIPE_VERSION = 2


def _missing(what, error):
    return MissingDependencyError(
        f"precision='int8' needs {what}, which is not installed ({error}). Install it with {FAST_EXTRA}; "
        "or use precision='bf16' or 'fp32', which need nothing more",
        name=getattr(error, "name", None),
    )


def import_openvino():
    """OpenVINO (runs the int8 model), or an error that says how to get it.

    Returns
    -------
    module
        ``openvino``.

    Raises
    ------
    gamornet.errors.MissingDependencyError
        OpenVINO is not installed (the extra ``gamornet[fast]``); it says how
        to install it.
    """
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
        self._openvino = import_openvino()
        self.input_shape = check_network(network)
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
        batch = check_batch(batch, self.input_shape)
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



def calibrated_batches(engine, batches, n_images=DEFAULT_CALIBRATION_SIZE, images_of=None):
    """Yield ``batches`` unchanged, after calibrating ``engine`` on their first ``n_images`` images.

    The batches read before calibration are kept in memory and yielded after
    it, so a stream is read once. An engine that needs no calibration (fp32,
    bf16, or int8 already calibrated) starts at once.

    Parameters
    ----------
    engine : gamornet.inference.bf16.KerasEngine or Int8Engine
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
