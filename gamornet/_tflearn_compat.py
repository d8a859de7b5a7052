"""The shims that let the real ``tflearn`` 0.5.0 package run on TensorFlow 2.

tflearn 0.5.0 (2020) is the last release of tflearn. Out of the box it fails
on TensorFlow 2.21 with Pillow 10+, and its ``__init__`` switches TensorFlow's
eager execution off for the whole process, which breaks Keras 3 in the same
Python process. :func:`import_tflearn` applies a few narrow shims, imports the
PyPI package unchanged (nothing is vendored or forked) and checks that the
process is still in TensorFlow 2 mode afterwards.

Each shim covers one change of TensorFlow or Pillow:

1. ``tensorflow.python.util.nest.is_sequence`` -- TensorFlow 2 renamed it
   ``is_nested`` and then dropped the old name (tflearn's ``layers/recurrent``
   imports it at import time).
2. ``PIL.Image.ANTIALIAS`` -- Pillow 10 removed it (deprecated in 9.1); it was
   another name of ``Image.LANCZOS``, which tflearn's ``data_utils`` uses as a
   default argument at import time.
3. ``tf.compat.v1.disable_v2_behavior`` -- tflearn's ``__init__`` calls it,
   which would turn eager execution and resource variables off for every
   library in the process (Keras 3 needs both). It is replaced by a no-op for
   the duration of the import only. tflearn keeps working because every
   tflearn model gamornet builds lives in its own ``tf.Graph``, where
   TensorFlow runs in graph mode whatever the process-wide setting.
4. ``tflearn.helpers.trainer.get_current_batch_size`` -- TensorFlow 2 shapes
   hold plain ints (or None) instead of ``Dimension`` objects, so tflearn's
   ``shape[0].value`` fails when it evaluates a validation set. The function
   is replaced by one that reads the batch dimension either way.
5. ``tflearn.regression`` -- with a learning-rate decay, tflearn's optimisers
   test their step counter with ``if not step_tensor``. TensorFlow 2 creates
   resource variables, whose truth value is their (symbolic) content, so the
   test fails in graph mode; TensorFlow 1's reference variables, which tflearn
   was written for, are plain Python objects there. ``regression`` is wrapped
   so that the variables it creates itself (only the step counter
   ``Training_step``) are reference variables, in that graph only.

tflearn's import also builds its ``is_training`` variable in the default graph;
the import runs inside a throwaway ``tf.Graph`` so that this variable does not
land in the process-wide eager context.
"""

import contextlib
import functools
import importlib
import importlib.metadata
import io
import sys
import threading

from gamornet._utils.tf_logging import import_tensorflow

__all__ = ["import_tflearn", "installed_versions", "silenced_deprecations"]

_lock = threading.Lock()
_tflearn = None


class _TensorFlow2BehaviourOff(ImportError):
    """tflearn is importable, but TensorFlow 2 behaviour is off in this process."""


def installed_versions():
    """The versions of tflearn and TensorFlow found, for error messages.

    Returns
    -------
    tuple of str
        (tflearn version, TensorFlow version); ``'not installed'`` where the
        distribution is missing. Read from the package metadata, so neither
        package is imported.
    """

    def version_of(*distributions):
        for distribution in distributions:
            try:
                return importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "not installed"

    return (
        version_of("tflearn"),
        version_of("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-macos", "tf-nightly"),
    )


def _shim_nest_is_sequence():
    # TensorFlow 2 renamed nest.is_sequence to nest.is_nested and later removed
    # the old name (tflearn's own pull request #1173 reports it gone by TF 2.14);
    # tflearn/layers/recurrent.py still imports it.
    from tensorflow.python.util import nest

    if not hasattr(nest, "is_sequence"):
        nest.is_sequence = nest.is_nested


def _shim_pillow_antialias():
    # Pillow 10.0 removed Image.ANTIALIAS (deprecated since 9.1), an alias of
    # the Lanczos filter; tflearn/data_utils.py uses it as a default argument.
    from PIL import Image

    if not hasattr(Image, "ANTIALIAS"):
        Image.ANTIALIAS = Image.Resampling.LANCZOS


@contextlib.contextmanager
def _v2_behavior_kept(v1):
    # tflearn/__init__.py calls tf.compat.v1.disable_v2_behavior(), which would
    # switch eager execution and resource variables off for the whole process
    # (and so break Keras 3). Make it a no-op while tflearn is imported.
    original = v1.disable_v2_behavior  # read first: the module wrapper caches attributes on read

    def _keep_v2_behavior():
        """Stands in for tf.compat.v1.disable_v2_behavior while gamornet imports tflearn."""

    v1.disable_v2_behavior = _keep_v2_behavior
    if v1.disable_v2_behavior is not _keep_v2_behavior:
        raise ImportError(
            "gamornet could not stop tflearn from disabling TensorFlow 2 behaviour: "
            "tf.compat.v1.disable_v2_behavior cannot be replaced in this TensorFlow version"
        )
    try:
        yield
    finally:
        v1.disable_v2_behavior = original


def _batch_size_of_feed(feed_batch, dataflow):
    """tflearn's get_current_batch_size, for shapes of ints (TF 2) or Dimensions (TF 1)."""
    for placeholder, value in feed_batch.items():
        first = placeholder.get_shape()[0]
        first = getattr(first, "value", first)
        if first is None:
            return len(value) if isinstance(value, list) else int(value.shape[0])
    return dataflow.batch_size


def _shim_trainer_batch_size(trainer_module):
    # TensorFlow 2 TensorShape entries are ints or None, not Dimension objects:
    # tflearn's get_current_batch_size reads `shape[0].value` and fails on the
    # first validation pass.
    trainer_module.get_current_batch_size = _batch_size_of_feed


def _shim_regression_step_counter():
    # TensorFlow 2 variables are resource variables: `if not step_tensor` in
    # tflearn's Optimizer.build (taken when lr_decay > 0) converts the step
    # counter made by regression() to a Python bool, which graph mode refuses.
    # Make regression() create its variables as TensorFlow 1 reference
    # variables, whose truth value is that of any Python object.
    import tensorflow.compat.v1 as v1

    estimator = sys.modules["tflearn.layers.estimator"]
    original = estimator.regression
    if getattr(original, "_gamornet_shim", False):
        return

    @functools.wraps(original)
    def regression(*args, **kwargs):
        with v1.variable_scope(v1.get_variable_scope(), use_resource=False):
            return original(*args, **kwargs)

    regression._gamornet_shim = True
    for name, module in list(sys.modules.items()):
        if (name == "tflearn" or name.startswith("tflearn.")) and getattr(module, "regression", None) is original:
            module.regression = regression


@contextlib.contextmanager
def silenced_deprecations():
    """Silence TensorFlow's deprecation log lines while tflearn builds or trains a graph.

    tflearn calls many ``tf.compat.v1`` functions that TensorFlow marks as
    deprecated; the messages say nothing an astronomer can act on.
    """
    from tensorflow.python.util import deprecation

    with deprecation.silence():
        yield


def _import_with_shims():
    tf = import_tensorflow()
    import tensorflow.compat.v1 as v1

    _shim_nest_is_sequence()
    _shim_pillow_antialias()
    if "tflearn" not in sys.modules:
        # tflearn prints "Scipy not supported!" when scipy is missing: scipy only
        # serves its image augmentation, which gamornet does not use.
        with _v2_behavior_kept(v1), tf.Graph().as_default(), contextlib.redirect_stdout(io.StringIO()):
            with silenced_deprecations():
                tflearn = importlib.import_module("tflearn")
    else:
        tflearn = sys.modules["tflearn"]
    trainer_module = importlib.import_module("tflearn.helpers.trainer")
    _shim_trainer_batch_size(trainer_module)
    _shim_regression_step_counter()
    if not tf.executing_eagerly() or not v1.resource_variables_enabled():
        raise _TensorFlow2BehaviourOff(
            "tflearn was imported, but TensorFlow 2 behaviour (eager execution, resource variables) is off "
            "in this process, which breaks Keras. Import gamornet.tflearn_module before importing tflearn "
            "directly, and do not call tf.compat.v1.disable_v2_behavior()"
        )
    return tflearn


def import_tflearn():
    """Import tflearn with the TensorFlow 2 shims applied; the result is cached.

    Returns
    -------
    module
        The ``tflearn`` package.

    Raises
    ------
    ImportError
        tflearn (or TensorFlow) cannot be imported, or could only be imported
        by switching TensorFlow 2 behaviour off. The message names the
        versions of tflearn and TensorFlow found.
    """
    global _tflearn
    with _lock:
        if _tflearn is not None:
            return _tflearn
        try:
            _tflearn = _import_with_shims()
        except _TensorFlow2BehaviourOff:
            raise
        except Exception as error:
            tflearn_version, tensorflow_version = installed_versions()
            raise ImportError(
                "gamornet.tflearn_module needs the tflearn package on TensorFlow 2 (tested with tflearn 0.5.0 "
                f"and TensorFlow 2.21). Found tflearn {tflearn_version} and TensorFlow {tensorflow_version}; "
                f"importing tflearn failed with {type(error).__name__}: {error}. The Keras module "
                "(gamornet.keras_module) does not need tflearn"
            ) from error
        return _tflearn
