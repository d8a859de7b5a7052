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
    class is decided by less than :data:`~gamornet.inference.bf16.BF16_MARGIN`
    under the class rules in use
    (:func:`gamornet.science.classify.near_boundaries`) are predicted again in
    fp32 (:class:`~gamornet.inference.bf16.Refinement`), and keep fp32's
    probabilities and class.
``'int8'``
    Post-training quantization with NNCF, run by OpenVINO on the CPU: the
    weights and input activations of the last four convolutions and of the
    first two dense layers in 8-bit integers, their scales set on
    *calibration images*; the first convolution, the local response
    normalisations and the last dense layer (with its softmax) stay in fp32.
    It needs the optional extra ``gamornet[fast]``. The quantized model is
    cached (see :class:`~gamornet.inference.int8.Int8Engine`), so the next run
    with the same model and calibration images starts at once.

The engines live in modules of their own: :mod:`gamornet.inference.bf16` (fp32
and bf16, with the boundary refinement), :mod:`gamornet.inference.int8` (int8,
its calibration images and cache) and :mod:`gamornet.inference.hardware` (what
the machine offers each precision); this module picks among them.

The figures behind these choices (speed and class changes, measured on a
trained network) are on the documentation's "Speed" page.

Backend-neutral at import: TensorFlow, OpenVINO and NNCF are imported only
when an engine is made.
"""

import warnings

from gamornet._utils import checks as _checks
from gamornet.errors import PrecisionWarning
from gamornet.inference.bf16 import KerasEngine
from gamornet.inference.engine_checks import PRECISIONS, check_network, check_precision
from gamornet.inference.hardware import ONEDNN_OFF_NOTE, hardware_support, onednn_on, precision_note, tensorflow_gpus
from gamornet.inference.int8 import Int8Engine, import_openvino

__all__ = ["PRECISIONS", "check_precision", "require_engine", "make_engine"]


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
        import_openvino()


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
        :data:`~gamornet.inference.int8.DEFAULT_CALIBRATION_SIZE` images of
        the run (:func:`~gamornet.inference.int8.calibrated_batches`).
        Ignored by fp32 and bf16.
    cache_folder : str, optional
        For int8: where to cache the quantized model (usually the model
        file's folder); see :class:`~gamornet.inference.int8.Int8Engine`.
    model_sha256 : str, optional
        For int8: the sha256 of the model file, part of the cache key.
    backend : {'keras', 'tflearn'}
        The backend whose model file the weights came from (recorded in the
        provenance; the network's LRN layers already are of its flavour).
    refinement : gamornet.inference.bf16.Refinement, optional
        For bf16: which galaxies are predicted again in fp32 (see
        :class:`~gamornet.inference.bf16.KerasEngine`). Ignored by fp32 and int8.

    Returns
    -------
    gamornet.inference.bf16.KerasEngine or gamornet.inference.int8.Int8Engine
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
        :func:`~gamornet.inference.hardware.precision_note`).
    """
    precision = check_precision(precision)
    require_engine(precision)  # before any work, so that a missing extra is said first
    if calibration_images is not None and precision == "int8":
        _checks.check_images(calibration_images, check_network(network), name="calibration_images")
    gpus = tensorflow_gpus()
    note = precision_note(precision, hardware_support(gpus=gpus))
    if precision == "bf16" and not gpus and not onednn_on():
        note = ONEDNN_OFF_NOTE
    if note:
        warnings.warn(note, PrecisionWarning, stacklevel=2)
    if precision != "int8":
        return KerasEngine(network, precision, backend, refinement=refinement)
    engine = Int8Engine(network, cache_folder=cache_folder, model_sha256=model_sha256)
    if calibration_images is not None:
        engine.calibrate(calibration_images)
    return engine
