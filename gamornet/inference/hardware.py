"""Hardware detection: what a machine's processors offer the reduced precisions (bf16, int8).

:func:`hardware_support` reads the CPU's flags (and is handed the GPUs
TensorFlow sees); :func:`precision_note` says what a precision gives on that
machine when it is less than on one built for it: the warning of
:func:`gamornet.inference.precision.make_engine`.

Backend-neutral at import: TensorFlow is imported only to list the GPUs or
probe oneDNN.
"""

import dataclasses

from gamornet.inference.engine_checks import check_precision

__all__ = ["HardwareSupport", "hardware_support", "precision_note", "onednn_on", "tensorflow_gpus", "ONEDNN_OFF_NOTE"]

# CPU flags (Linux /proc/cpuinfo names) of native bfloat16 and int8 dot products.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512-BF16, AMX; Arm BF16
_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "i8mm", "asimddp")  # x86 VNNI, AMX; Arm I8MM, dot product


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


def onednn_on():
    """Whether TensorFlow runs its CPU kernels with oneDNN (off with TF_ENABLE_ONEDNN_OPTS=0).

    Returns
    -------
    bool
        True also for a TensorFlow that cannot be probed (its default on x86).
    """
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


def tensorflow_gpus():
    """The GPUs TensorFlow sees, as :func:`hardware_support` takes them.

    Returns
    -------
    tuple of (str, tuple of int or None)
        Each GPU's name and CUDA compute capability.
    """
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append((details.get("device_name", device.name), details.get("compute_capability")))
    return tuple(gpus)
