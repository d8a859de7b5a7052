"""The precisions of gamornet.precision: fp32 against the numpy reference, bf16 and int8 against fp32.

A small GaMorNet (32 x 32 pixels) is trained here, in a few seconds, on
bulge + disk galaxies drawn with numpy, so that the class changes that bf16
and int8 cause are counted on a trained network, with the budgets of the
documentation's "Speed" page: at most 0.1 % of the galaxies for bf16 and
0.5 % for int8. Both LRN flavours are run.
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import reference

keras = pytest.importorskip("keras")

from gamornet import precision  # noqa: E402
from gamornet.classify import classify  # noqa: E402
from gamornet.errors import MissingDependencyError, PrecisionWarning  # noqa: E402
from gamornet.presets import labels_from_bulge_to_total  # noqa: E402

SHAPE = (32, 32, 1)
N_TEST = 2000
THRESHOLDS = "keras_CANDELS"


def bulge_disk_images(n, seed):
    """Bulge (de Vaucouleurs) + disk (exponential) galaxies with noise, asinh-stretched to a peak of 1.

    Returns the images (n, 32, 32, 1) and their bulge-to-total light ratios.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32].astype(np.float64) - 15.5
    images = np.empty((n,) + SHAPE, np.float32)
    ratios = rng.uniform(0.0, 1.0, n)
    for i, ratio in enumerate(ratios):
        q, angle = rng.uniform(0.4, 1.0), rng.uniform(0.0, np.pi)
        major = x * np.cos(angle) + y * np.sin(angle)
        minor = (-x * np.sin(angle) + y * np.cos(angle)) / q
        radius = np.hypot(major, minor) + 1e-3
        disk = np.exp(-radius / rng.uniform(2.5, 5.0))
        bulge = np.exp(-7.67 * (radius / rng.uniform(1.0, 2.5)) ** 0.25)
        image = 500 * rng.uniform(0.5, 2.0) * (ratio * bulge / bulge.sum() + (1 - ratio) * disk / disk.sum())
        image = image + rng.normal(0.0, 0.02, image.shape)
        stretched = np.arcsinh(image / 0.05)
        images[i, ..., 0] = stretched / stretched.max()
    return images, ratios


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(network with the Keras LRN, its weights as (kernel, bias) pairs, test images): trained on 1,600 galaxies."""
    from gamornet.keras_module import gamornet_train_keras

    keras.utils.set_random_seed(0)
    images, ratios = bulge_disk_images(1800 + N_TEST, seed=3)
    labels = labels_from_bulge_to_total(ratios)
    train = slice(0, 1600)
    keep = labels[train, 1] == 0  # as the demo does: indeterminate galaxies left out of training
    network = gamornet_train_keras(images[train][keep], labels[train][keep], images[1600:1800], labels[1600:1800],
                                   SHAPE, files_save_path="/dev/null", epochs=4, batch_size=32, lr=0.002,
                                   nesterov=True, verbose=0)  # fmt: skip
    weights = [tuple(layer.get_weights()) for layer in network.layers if layer.weights]
    return network, weights, images[1800:]


class TFLearnLRN(keras.layers.Layer):
    """The TFLearn flavour of LRN (SPEC §1), as a Keras layer: what a TFLearn checkpoint runs with."""

    def call(self, inputs):
        import tensorflow as tf

        return tf.nn.local_response_normalization(inputs, depth_radius=5, bias=1.0, alpha=1e-4, beta=0.75)


def tflearn_flavour(network):
    """The same network and weights, with the TFLearn LRN."""
    from gamornet.keras_module import LocalResponseNormalization

    def swap(layer):
        if isinstance(layer, LocalResponseNormalization):
            return TFLearnLRN(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(network, clone_function=swap)
    for source, target in zip(network.layers, copy.layers):
        if source.weights:
            target.set_weights(source.get_weights())
    return copy


def predict(engine, images, batch_size=256):
    return np.concatenate([engine.forward(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def class_changes(probabilities, reference_probabilities):
    return int((classify(probabilities, THRESHOLDS) != classify(reference_probabilities, THRESHOLDS)).sum())


@pytest.fixture(scope="module")
def fp32_predictions(trained):
    network, _, test_images = trained
    return predict(precision.make_engine(network, "fp32"), test_images)


# --------------------------------------------------------------------------- fp32, bf16, int8 on a trained network


def test_the_network_is_trained(trained, fp32_predictions):
    _, _, test_images = trained
    classes = classify(fp32_predictions, THRESHOLDS)
    # The test set is drawn as the training set was: most galaxies are called disk or bulge, and both are.
    assert (classes == "disk").mean() > 0.25 and (classes == "bulge").mean() > 0.25


def test_fp32_is_the_reference_forward_pass(trained, fp32_predictions):
    _, weights, test_images = trained
    expected = reference.forward(test_images[:20], weights, reference.lrn_keras)
    np.testing.assert_allclose(fp32_predictions[:20], expected, atol=1e-4, rtol=0)


def test_bf16_changes_at_most_0_1_percent_of_classes(trained, fp32_predictions):
    network, _, test_images = trained
    engine = precision.make_engine(network, "bf16")
    probabilities = predict(engine, test_images)
    assert probabilities.dtype == np.float32 and probabilities.shape == (N_TEST, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert class_changes(probabilities, fp32_predictions) <= 0.001 * N_TEST
    difference = np.abs(probabilities - fp32_predictions)
    assert 0 < difference.max() < 0.05  # it does run in bfloat16, and close to fp32
    assert engine.provenance()["precision"] == "bf16"


def test_bf16_keeps_the_sensitive_layers_in_fp32(trained):
    network, _, _ = trained
    engine = precision.make_engine(network, "bf16")
    policies = {layer.name: layer.dtype_policy.name for layer in engine.network.layers if layer.weights}
    assert policies == {"conv2d_1": "float32", "conv2d_2": "float32", "conv2d_3": "bfloat16",
                        "conv2d_4": "bfloat16", "conv2d_5": "bfloat16", "dense_1": "bfloat16",
                        "dense_2": "bfloat16", "dense_3": "float32"}  # fmt: skip
    others = {layer.name: layer.dtype_policy.name for layer in engine.network.layers if not layer.weights}
    # Pooling takes the precision of the layer before it: no activation is rounded between two fp32 layers.
    assert others["max_pooling2d_1"] == others["max_pooling2d_2"] == "float32"
    assert others["max_pooling2d_3"] == others["flatten_1"] == "bfloat16"
    assert {others[f"local_response_normalization_{i}"] for i in (1, 2, 3)} == {"float32"}
    assert network.layers[1].dtype_policy.name == "float32"  # the network given is left as it was


def test_int8_changes_at_most_0_5_percent_of_classes(trained, fp32_predictions, tmp_path):
    network, _, test_images = trained
    engine = precision.make_engine(network, "int8", calibration_images=test_images[:300], cache_folder=tmp_path)
    probabilities = predict(engine, test_images)
    assert probabilities.dtype == np.float32 and probabilities.shape == (N_TEST, 3)
    assert class_changes(probabilities, fp32_predictions) <= 0.005 * N_TEST
    assert 0 < np.abs(probabilities - fp32_predictions).max() < 0.1
    described = engine.provenance()
    assert described["precision"] == "int8" and described["calibration_images"] == 300
    assert described["from_cache"] is False and described["cache"].startswith(str(tmp_path))


@pytest.mark.parametrize("name", ["bf16", "int8"])
def test_the_tflearn_flavour(trained, tmp_path, name):
    network, weights, test_images = trained
    tflearn_network = tflearn_flavour(network)
    images = test_images[:400]
    expected = reference.forward(images[:5], weights, reference.lrn_tflearn)
    fp32 = predict(precision.make_engine(tflearn_network, "fp32"), images)
    np.testing.assert_allclose(fp32[:5], expected, atol=1e-4, rtol=0)
    engine = precision.make_engine(tflearn_network, name, calibration_images=images[:200], cache_folder=tmp_path)
    probabilities = predict(engine, images)
    budget = {"bf16": 0.001, "int8": 0.005}[name]
    assert class_changes(probabilities, fp32) <= max(1, budget * len(images))
    assert np.abs(probabilities - fp32).max() < 0.1


# --------------------------------------------------------------------------- the int8 cache


def test_int8_cache_is_reused_and_keyed_on_the_calibration_set(trained, tmp_path):
    network, _, test_images = trained
    calibration = test_images[:100]
    first = precision.make_engine(network, "int8", calibration_images=calibration, cache_folder=tmp_path)
    folders = [name for name in os.listdir(tmp_path) if name.startswith("gamornet-int8-")]
    assert len(folders) == 1 and not [name for name in os.listdir(tmp_path) if name.startswith(".tmp")]
    assert sorted(os.listdir(tmp_path / folders[0])) == ["key.json", "model.bin", "model.xml"]
    with open(tmp_path / folders[0] / "key.json", encoding="utf-8") as stream:
        record = json.load(stream)
    assert record["calibration_sha256"] == precision.calibration_sha256(calibration)

    again = precision.make_engine(network, "int8", calibration_images=calibration, cache_folder=tmp_path)
    assert again.provenance()["from_cache"] is True
    np.testing.assert_array_equal(predict(again, test_images[:64]), predict(first, test_images[:64]))

    other = precision.make_engine(network, "int8", calibration_images=test_images[100:200], cache_folder=tmp_path)
    assert other.provenance()["from_cache"] is False
    assert len([name for name in os.listdir(tmp_path) if name.startswith("gamornet-int8-")]) == 2


def test_damaged_int8_cache_is_made_again(trained, tmp_path):
    network, _, test_images = trained
    calibration = test_images[:50]
    engine = precision.make_engine(network, "int8", calibration_images=calibration, cache_folder=tmp_path)
    folder = engine.provenance()["cache"]
    with open(os.path.join(folder, "model.bin"), "r+b") as stream:
        stream.seek(1000)
        stream.write(b"\x00\x01\x02\x03")
    with pytest.warns(PrecisionWarning, match="damaged or incomplete"):
        again = precision.make_engine(network, "int8", calibration_images=calibration, cache_folder=tmp_path)
    assert again.provenance()["from_cache"] is False and again.provenance()["cache"] == folder
    np.testing.assert_array_equal(predict(again, test_images[:64]), predict(engine, test_images[:64]))


def test_unwritable_model_folder_falls_back_to_the_gamornet_cache(trained, tmp_path):
    network, _, test_images = trained
    not_a_folder = tmp_path / "model.hdf5"
    not_a_folder.write_bytes(b"a file where a folder is expected")
    engine = precision.make_engine(network, "int8", calibration_images=test_images[:50], cache_folder=not_a_folder)
    assert engine.provenance()["cache"].startswith(os.path.join(os.environ["GAMORNET_CACHE_DIR"], "int8"))


def test_calibrated_batches_calibrates_on_the_first_images_of_the_run(trained, tmp_path):
    network, _, test_images = trained
    engine = precision.make_engine(network, "int8", cache_folder=tmp_path)
    assert engine.needs_calibration
    with pytest.raises(RuntimeError, match="not calibrated"):
        engine.forward(test_images[:4])
    batches = [test_images[i : i + 64] for i in range(0, 256, 64)]
    seen = list(precision.calibrated_batches(engine, iter(batches), n_images=100))
    assert len(seen) == 4 and all(a is b for a, b in zip(seen, batches))
    assert not engine.needs_calibration
    assert engine.provenance()["calibration_sha256"] == precision.calibration_sha256(test_images[:100])


# --------------------------------------------------------------------------- bad input and other machines


@pytest.mark.parametrize("value, error, match", [
    ("fp16", ValueError, r"precision must be 'fp32', 'bf16' or 'int8'. Received: precision='fp16'"),
    ("", ValueError, "Received: precision=''"),
    (8, TypeError, "Received an object of type int"),
    (None, TypeError, "Received an object of type NoneType"),
])  # fmt: skip
def test_unknown_precision(value, error, match):
    with pytest.raises(error, match=match):
        precision.check_precision(value)


def test_check_precision_accepts_any_case():
    assert precision.check_precision(" BF16") == "bf16"


def test_make_engine_refuses_an_unknown_precision_and_what_is_not_a_network(trained):
    network, _, _ = trained
    with pytest.raises(ValueError, match="Received: precision='int4'"):
        precision.make_engine(network, "int4")
    with pytest.raises(TypeError, match="network must be a keras.Model of GaMorNet"):
        precision.make_engine("SDSS_tl", "bf16")
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="5 convolutions and 3 dense layers. Received a network with 0 convolutions"):
        precision.make_engine(small, "bf16")


@pytest.mark.parametrize("calibration, error, match", [
    (np.zeros((10, 64, 64, 1), np.float32), ValueError, r"calibration_images holds images of shape .* \(64, 64, 1\)"),
    (np.zeros((10, 32, 32), np.float32), ValueError, "calibration_images must be 4-D"),
    (np.zeros((0, 32, 32, 1), np.float32), ValueError, "calibration_images holds no images"),
    (np.full((3, 32, 32, 1), np.nan, np.float32), ValueError, "image 0 holds NaN or infinite pixels"),
    ([[0.0]], TypeError, "calibration_images must be a numpy array"),
])  # fmt: skip
def test_calibration_set_of_the_wrong_kind(trained, tmp_path, calibration, error, match):
    network, _, _ = trained
    with pytest.raises(error, match=match):
        precision.make_engine(network, "int8", calibration_images=calibration, cache_folder=tmp_path)
    assert os.listdir(tmp_path) == []


def test_batch_of_the_wrong_shape(trained):
    network, _, _ = trained
    with pytest.raises(ValueError, match=r"a batch must have shape \(b, 32, 32, 1\). Received an array of shape"):
        precision.make_engine(network, "bf16").forward(np.zeros((2, 16, 16, 1), np.float32))


_WITHOUT_OPENVINO = """
import sys
sys.modules["openvino"] = None  # as if the extra gamornet[fast] were not installed
from gamornet import precision
from gamornet.errors import MissingDependencyError
try:
    precision.make_engine(None, "int8")
except ValueError as error:  # a MissingDependencyError is a ValueError and an ImportError
    print(type(error).__name__, isinstance(error, ImportError), error)
"""


def test_int8_without_the_extra_says_how_to_get_it():
    result = subprocess.run([sys.executable, "-c", _WITHOUT_OPENVINO], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MissingDependencyError True precision='int8' needs OpenVINO")
    assert 'pip install "gamornet[fast]"' in result.stdout and "precision='bf16'" in result.stdout


def test_missing_dependency_error_is_an_import_and_a_value_error():
    assert issubclass(MissingDependencyError, ImportError) and issubclass(MissingDependencyError, ValueError)


def test_hardware_support_reads_the_cpu_flags():
    this_cpu = precision.hardware_support("flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16\n")
    assert this_cpu.bf16 is True and this_cpu.int8 is True
    assert this_cpu.cpu_flags == ("avx512_bf16", "avx512_vnni")
    assert precision.precision_note("bf16", this_cpu) is None and precision.precision_note("int8", this_cpu) is None
    older = precision.hardware_support("flags\t\t: fpu sse avx2 avx512f\n")
    assert older.bf16 is False and older.int8 is False
    arm = precision.hardware_support("Features\t: fp asimd asimddp bf16 i8mm\n")
    assert arm.bf16 is True and arm.int8 is True
    unknown = precision.hardware_support("")
    assert unknown.bf16 is None and unknown.int8 is None


@pytest.mark.parametrize("flags, name, match", [
    ("avx2 avx512f", "bf16", "no bfloat16 instructions .* usually slower than fp32"),
    ("avx2 avx512f", "int8", "no int8 dot-product instructions .* gains less"),
    ("", "bf16", "could not tell whether this CPU has bfloat16"),
    ("", "int8", "could not tell whether this CPU has int8"),
])  # fmt: skip
def test_precision_note_says_what_a_cpu_without_the_instructions_gives(flags, name, match):
    support = precision.hardware_support(f"flags : {flags}\n" if flags else "")
    assert precision.precision_note("fp32", support) is None
    assert precision.precision_note(name, support) is not None
    with pytest.raises(AssertionError, match=match):
        raise AssertionError(precision.precision_note(name, support))


def test_precision_note_on_gpus():
    ampere = precision.hardware_support("flags : avx2\n", gpus=[("NVIDIA A100", (8, 0))])
    assert precision.precision_note("bf16", ampere) is None
    assert "int8 runs on the CPU with OpenVINO" in precision.precision_note("int8", ampere)
    volta = precision.hardware_support("flags : avx2\n", gpus=[("Tesla V100", (7, 0))])
    assert "compute capability 7.0" in precision.precision_note("bf16", volta)


def test_no_warning_on_this_machine_when_it_has_the_instructions(trained):
    network, _, _ = trained
    support = precision.hardware_support()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        if support.bf16:
            precision.make_engine(network, "bf16")
        else:
            with pytest.raises(PrecisionWarning, match="bfloat16"):
                precision.make_engine(network, "bf16")
