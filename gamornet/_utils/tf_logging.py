"""TensorFlow's start-up log lines, hidden unless asked for. Backend-neutral.

When TensorFlow 2.21 loads its shared libraries, their C++ code writes lines
such as ``WARNING: All log messages before absl::InitializeLog() is called are
written to STDERR`` and ``I0000 ... oneDNN custom operations are on ...``
(on CPUs where oneDNN is on, and whenever ``TF_ENABLE_ONEDNN_OPTS=1``). They
come from the Abseil logging of TensorFlow's C++ core, before anything has
configured it, straight to file descriptor 2: ``TF_CPP_MIN_LOG_LEVEL``, which
TensorFlow's own logging reads later, does not filter them. They say nothing an
astronomer can act on, so :func:`import_tensorflow`, through which gamornet
first imports TensorFlow, points file descriptor 2 at a temporary file while
TensorFlow's libraries load, then points it back.

Set the environment variable ``GAMORNET_TF_LOGS=1`` (or run
``gamornet --verbose ...``) to see TensorFlow's lines; TensorFlow's own
``TF_CPP_MIN_LOG_LEVEL`` is then left as you set it (unset, TensorFlow shows
everything from its informational lines up). Otherwise gamornet sets it to 2
(warnings and informational lines off) unless you did.

What is never hidden:

- anything Python writes to ``sys.stderr`` meanwhile, from any thread
  (warnings, messages of other libraries): ``sys.stderr`` writes to the real
  standard error while file descriptor 2 is redirected;
- what TensorFlow wrote when its import fails: it is written to standard error
  before the exception propagates;
- a hard crash during the import (TensorFlow aborts on CPUs that lack the
  instructions it was built for): Python's fault handler then writes the
  traceback to the real standard error. Set ``GAMORNET_TF_LOGS=1`` and run
  again to read TensorFlow's own message.
"""

import contextlib
import faulthandler
import importlib
import io
import os
import sys
import tempfile
import threading

__all__ = ["ENVIRONMENT_VARIABLE", "import_keras", "import_tensorflow", "quiet_import", "tensorflow_logs_shown"]

#: The environment variable that shows TensorFlow's start-up lines when set to 1.
ENVIRONMENT_VARIABLE = "GAMORNET_TF_LOGS"

_FALSE_WORDS = ("", "0", "false", "no", "off")

# File descriptor 2 belongs to the whole process: one redirection at a time (re-entrant, for nested imports).
_lock = threading.RLock()


def tensorflow_logs_shown():
    """Whether the user asked to see TensorFlow's log lines.

    Returns
    -------
    bool
        True when the environment variable ``GAMORNET_TF_LOGS`` is set to
        anything but ``''``, ``0``, ``false``, ``no`` or ``off``.
    """
    return os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() not in _FALSE_WORDS


def import_tensorflow():
    """Import TensorFlow without its C++ start-up log lines, unless asked for.

    Returns
    -------
    module
        The ``tensorflow`` module.

    Raises
    ------
    ImportError
        TensorFlow cannot be imported; what it wrote to standard error while
        trying has been written there too.
    """
    if not tensorflow_logs_shown():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return quiet_import("tensorflow")


def import_keras():
    """Import Keras on TensorFlow, quietly: TensorFlow first (without its start-up lines), then Keras.

    Keras' backend defaults to TensorFlow here (``KERAS_BACKEND`` is set
    when it is not), and another backend is refused: the published models and
    the TFLearn module share TensorFlow's network.

    Returns
    -------
    module
        The ``keras`` module.

    Raises
    ------
    ImportError
        TensorFlow or Keras cannot be imported, or Keras is set to another
        backend.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import_tensorflow()  # before Keras imports it, so that TensorFlow's start-up lines stay hidden
    keras = importlib.import_module("keras")
    if keras.config.backend() != "tensorflow":
        raise ImportError(
            "gamornet.keras_module needs Keras with the TensorFlow backend (so do gamornet.load_predictor and "
            "gamornet.tflearn_module), which the published models and the TFLearn module share. Keras is set to the "
            f"{keras.config.backend()!r} backend: set the environment variable KERAS_BACKEND=tensorflow (or edit "
            "~/.keras/keras.json) before importing Keras"
        )
    return keras


def quiet_import(name):
    """Import the module ``name`` with file descriptor 2 hidden while it loads.

    Nothing is hidden when the module is already imported, when
    ``GAMORNET_TF_LOGS`` asks for the lines, or when the process has no file
    descriptor 2.

    Parameters
    ----------
    name : str
        The module's full name.

    Returns
    -------
    module
        The imported module.
    """
    with _lock:
        if name in sys.modules or tensorflow_logs_shown():
            return importlib.import_module(name)
        try:
            captured = tempfile.TemporaryFile()
        except OSError:  # no writable temporary folder: better the lines than no import
            return importlib.import_module(name)
        with captured:
            try:
                real_stderr = os.dup(2)
            except OSError:  # no standard error at all: nothing to hide
                return importlib.import_module(name)
            try:
                with _descriptor_2_redirected(captured.fileno(), real_stderr):
                    return importlib.import_module(name)
            except BaseException:
                captured.seek(0)
                _write_all(2, captured.read())
                raise
            finally:
                os.close(real_stderr)


class _Descriptor(io.RawIOBase):
    """Writes to a file descriptor that can be changed later; closing it closes no descriptor."""

    def __init__(self, descriptor):
        super().__init__()
        self.descriptor = descriptor

    def writable(self):
        return True

    def write(self, data):
        # All of it: the text stream above passes writes straight through, and a pipe may take them in parts.
        data = memoryview(data)
        written = 0
        while written < len(data):
            written += os.write(self.descriptor, data[written:])
        return written

    def fileno(self):
        return self.descriptor


@contextlib.contextmanager
def _descriptor_2_redirected(target, real_stderr):
    """Point file descriptor 2 at ``target``; keep ``sys.stderr`` and crash reports on ``real_stderr``."""
    python_stderr = sys.stderr
    _flush(python_stderr)
    replacement = None
    if _writes_to_descriptor_2(python_stderr):
        raw = _Descriptor(real_stderr)
        replacement = io.TextIOWrapper(
            raw,
            encoding=getattr(python_stderr, "encoding", None) or "utf-8",
            errors=getattr(python_stderr, "errors", None) or "backslashreplace",
            write_through=True,
        )
        sys.stderr = replacement
    report_crashes = not faulthandler.is_enabled()
    if report_crashes:
        faulthandler.enable(file=real_stderr, all_threads=True)
    os.dup2(target, 2)
    try:
        yield
    finally:
        os.dup2(real_stderr, 2)
        if report_crashes:
            faulthandler.disable()
        if replacement is not None:
            _flush(replacement)
            # A thread still holding the replacement writes to the restored descriptor 2 from now on.
            raw.descriptor = 2
            # Another thread may have set its own standard error meanwhile: keep it.
            if sys.stderr is replacement:
                sys.stderr = python_stderr


def _writes_to_descriptor_2(stream):
    try:
        return stream is not None and stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        # io.UnsupportedOperation is an OSError and a ValueError: a notebook's or a test runner's stream.
        return False


def _flush(stream):
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream.flush()


def _write_all(descriptor, data):
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(descriptor, data):]
