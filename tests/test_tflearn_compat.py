"""The shims that let tflearn 0.5.0 run on TensorFlow 2: each one, the change it covers, and the failures."""

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tensorflow as tf

from gamornet import _tflearn_compat as compat

tflearn = compat.import_tflearn()

HERE = os.path.dirname(os.path.abspath(__file__))


def _run_python(code, timeout=240):
    """Run ``code`` in a fresh interpreter; return its JSON-decoded last line of output."""
    path = os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the changes the shims cover


def test_unshimmed_tflearn_fails_as_the_shims_say():
    """Plain `import tflearn` fails on is_sequence, then on ANTIALIAS, and switches eager execution off."""
    outcome = _run_python(
        """
        import json
        import tensorflow as tf
        steps = {}
        try:
            import tflearn
        except ImportError as error:
            steps["nest"] = str(error)
        steps["eager_after_failed_import"] = tf.executing_eagerly()
        from tensorflow.python.util import nest
        nest.is_sequence = nest.is_nested
        try:
            import tflearn
        except AttributeError as error:
            steps["pillow"] = str(error)
        from PIL import Image
        Image.ANTIALIAS = Image.Resampling.LANCZOS
        import tflearn
        steps["imported"] = True
        try:
            import gamornet.tflearn_module
        except ImportError as error:
            steps["gamornet"] = str(error)
        print(json.dumps(steps))
        """
    )
    assert "is_sequence" in outcome["nest"]
    assert outcome["eager_after_failed_import"] is False  # tflearn's disable_v2_behavior() ran first
    assert "ANTIALIAS" in outcome["pillow"]
    assert outcome["imported"]
    # tflearn imported without gamornet's shims has switched TF 2 behaviour off: refused, with the reason.
    assert "TensorFlow 2 behaviour" in outcome["gamornet"]
    assert "Import gamornet.tflearn_module before importing tflearn" in outcome["gamornet"]


def test_nest_shim_restores_is_sequence():
    from tensorflow.python.util import nest

    assert nest.is_sequence is nest.is_nested
    assert nest.is_sequence([1, 2]) and not nest.is_sequence(3.0)


def test_pillow_shim_is_the_lanczos_filter():
    from PIL import Image

    assert Image.ANTIALIAS == Image.Resampling.LANCZOS


def test_eager_execution_and_resource_variables_stay_on():
    assert tf.executing_eagerly()
    assert tf.compat.v1.resource_variables_enabled()
    # The no-op stood in only during the import: TensorFlow's own function is back.
    assert tf.compat.v1.disable_v2_behavior.__module__ == "tensorflow.python.compat.v2_compat"
    assert isinstance(tf.Variable(1.0), tf.Variable) and tf.Variable(1.0).numpy() == 1.0


def test_import_time_variable_stays_out_of_the_eager_context():
    # tflearn's import builds an `is_training` variable; it went into a throwaway graph.
    assert tf.compat.v1.get_default_graph().get_collection("is_training") == []


def test_batch_size_shim_reads_tf2_shapes():
    from tflearn.helpers import trainer

    assert trainer.get_current_batch_size is compat._batch_size_of_feed

    class Flow:
        batch_size = 7

    with tf.Graph().as_default():
        unknown = tf.compat.v1.placeholder(tf.float32, shape=[None, 3])
        known = tf.compat.v1.placeholder(tf.float32, shape=[4, 3])
        # TF 2 shapes hold ints or None; tflearn's original read shape[0].value.
        assert unknown.get_shape()[0] is None
        assert trainer.get_current_batch_size({unknown: np.zeros((5, 3))}, Flow()) == 5
        assert trainer.get_current_batch_size({unknown: [[0.0] * 3] * 2}, Flow()) == 2
        assert trainer.get_current_batch_size({known: np.zeros((4, 3))}, Flow()) == 7


def _small_regression(regression):
    net = tflearn.input_data(shape=[None, 4])
    net = tflearn.fully_connected(net, 3, activation="softmax")
    return regression(net, optimizer=tflearn.Momentum(learning_rate=0.1, lr_decay=0.9, decay_step=10))


def test_regression_shim_makes_decay_work_with_tf2_variables():
    assert tflearn.regression is tflearn.layers.estimator.regression
    original = tflearn.regression.__wrapped__
    with tf.Graph().as_default():
        # Unshimmed: tflearn's `if not step_tensor` on a TF 2 resource variable fails in graph mode.
        with pytest.raises(TypeError, match="as a Python `bool`"):
            _small_regression(original)
    with tf.Graph().as_default() as graph:
        _small_regression(tflearn.regression)
        (step,) = [v for v in graph.get_collection("variables") if v.op.name == "Training_step"]
        assert type(step).__name__ == "RefVariable"
        weights = [v for v in graph.get_collection("variables") if v.op.name == "FullyConnected/W"]
        assert type(weights[0]).__name__ == "ResourceVariable"  # the network's own variables are untouched


# --------------------------------------------------------------------------- failures


def test_installed_versions_come_from_the_package_metadata():
    tflearn_version, tensorflow_version = compat.installed_versions()
    assert tflearn_version == importlib.metadata.version("tflearn")
    assert tensorflow_version == tf.__version__


def test_any_import_failure_becomes_an_import_error_naming_the_versions(monkeypatch):
    def broken():
        raise AttributeError("module 'tensorflow' has no attribute 'contrib'")

    monkeypatch.setattr(compat, "_tflearn", None)
    monkeypatch.setattr(compat, "_import_with_shims", broken)
    with pytest.raises(ImportError, match=r"Found tflearn 0\.5\.0 and TensorFlow 2\.\d+.*AttributeError.*contrib"):
        compat.import_tflearn()


def test_without_tflearn_keras_works_and_the_tflearn_module_names_versions():
    outcome = _run_python(
        """
        import importlib.abc, json, sys

        class NoTflearn(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "tflearn" or name.startswith("tflearn."):
                    raise ModuleNotFoundError("No module named 'tflearn'", name=name)
                return None

        sys.meta_path.insert(0, NoTflearn())
        import numpy as np
        from gamornet import keras_module
        model = keras_module.gamornet_build_model_keras((32, 32, 1))
        probabilities = model.predict(np.ones((2, 32, 32, 1), np.float32), verbose=0)
        outcome = {"keras_sums": probabilities.sum(axis=1).tolist()}
        try:
            import gamornet.tflearn_module
        except ImportError as error:
            outcome["error"] = str(error)
        outcome["keras_again"] = float(keras_module.gamornet_build_model_keras((32, 32, 1))(
            np.ones((1, 32, 32, 1), np.float32)).numpy().sum())
        print(json.dumps(outcome))
        """
    )
    np.testing.assert_allclose(outcome["keras_sums"], [1.0, 1.0], rtol=1e-5)
    assert outcome["keras_again"] == pytest.approx(1.0, rel=1e-5)
    assert f"tflearn {importlib.metadata.version('tflearn')}" in outcome["error"]
    assert f"TensorFlow {tf.__version__}" in outcome["error"]
    assert "No module named 'tflearn'" in outcome["error"]
