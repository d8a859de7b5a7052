"""The precisions of gamornet.inference.precision: fp32 against the numpy reference, bf16 and int8 against fp32.

A small GaMorNet (32 x 32 pixels) is trained here, in a few seconds, on
bulge + disk galaxies drawn with numpy, so that the class changes that bf16
and int8 cause are counted on a trained network, with the budgets of the
documentation's "Speed" page: at most 0.1 % of the galaxies for bf16 and
0.5 % for int8. Both LRN flavours are run.
"""

import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import reference

keras = pytest.importorskip("keras")

from gamornet.inference import hardware, precision  # noqa: E402
from gamornet.inference.bf16 import BF16_MARGIN, DEFAULT_REFINED_RULES, KerasEngine, Refinement  # noqa: E402
from gamornet.inference.int8 import DEFAULT_CALIBRATION_SIZE, calibrated_batches, calibration_sha256  # noqa: E402
from gamornet.science.classify import classify  # noqa: E402
from gamornet.errors import MissingDependencyError, PrecisionWarning  # noqa: E402
from gamornet.presets import labels_from_bulge_to_total  # noqa: E402

SHAPE = (32, 32, 1)
N_TEST = 6000
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
    """(network with the Keras LRN, its weights as (kernel, bias) pairs, test images): trained on 1,200 galaxies."""
    from gamornet.keras_module import gamornet_train_keras

    keras.utils.set_random_seed(0)
    images, ratios = bulge_disk_images(1300 + N_TEST, seed=3)
    labels = labels_from_bulge_to_total(ratios)
    train = slice(0, 1200)
    keep = labels[train, 1] == 0  # as the demo does: indeterminate galaxies left out of training
    network = gamornet_train_keras(images[train][keep], labels[train][keep], images[1200:1300], labels[1200:1300],
                                   SHAPE, files_save_path="/dev/null", epochs=3, batch_size=32, lr=0.002,
                                   nesterov=True, verbose=0)  # fmt: skip
    weights = [tuple(layer.get_weights()) for layer in network.layers if layer.weights]
    return network, weights, images[1300:]


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
    expected = reference.forward(test_images[:4], weights, reference.lrn_keras)
    np.testing.assert_allclose(fp32_predictions[:4], expected, atol=1e-4, rtol=0)


def test_bf16_changes_at_most_0_1_percent_of_classes(trained, fp32_predictions):
    network, _, test_images = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)  # oneDNN off: TensorFlow's own bfloat16 kernels
        engine = precision.make_engine(network, "bf16")
    probabilities = predict(engine, test_images)
    assert probabilities.dtype == np.float32 and probabilities.shape == (N_TEST, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Under every default rule (the most probable class and the four handbook sets), oneDNN on or off.
    for rule in DEFAULT_REFINED_RULES:
        if rule == "most_probable":
            changes = int((probabilities.argmax(axis=1) != fp32_predictions.argmax(axis=1)).sum())
        else:
            changes = int((classify(probabilities, rule) != classify(fp32_predictions, rule)).sum())
        assert changes <= 0.001 * N_TEST, rule
    difference = np.abs(probabilities - fp32_predictions)
    assert 0 < difference.max() < 0.05  # it does run in bfloat16, and close to fp32
    described = engine.provenance()
    assert described["precision"] == "bf16" and described["fp32_layers"] == ["conv_1", "lrn", "dense_3"]
    refined = described["refined_in_fp32"]
    assert refined["predicted"] == N_TEST and 0 < refined["refined"] < 0.5 * N_TEST
    assert refined["margin"] == BF16_MARGIN and refined["rules"][0] == "most_probable"


def test_bf16_predicts_the_galaxies_near_a_boundary_again_in_fp32(trained, fp32_predictions):
    from gamornet.science.classify import near_boundaries

    network, _, test_images = trained
    images, fp32 = test_images[:1000], fp32_predictions[:1000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        bare = precision.make_engine(network, "bf16")
        refined = precision.make_engine(network, "bf16", refinement=Refinement((THRESHOLDS,)))
    bare.refinement = None  # the bfloat16 pass alone
    bare_probabilities, probabilities = predict(bare, images), predict(refined, images)
    near = near_boundaries(bare_probabilities, THRESHOLDS, BF16_MARGIN)
    assert 0 < near.sum() < 200 and refined.counts == {"predicted": 1000, "refined": int(near.sum())}
    # The galaxies near a boundary get fp32's probabilities, the others keep bf16's.
    np.testing.assert_allclose(probabilities[near], fp32[near], atol=1e-5, rtol=0)  # other batch sizes
    np.testing.assert_array_equal(probabilities[~near], bare_probabilities[~near])
    assert np.abs(bare_probabilities[near] - fp32[near]).max() > 1e-4
    # A galaxy not near a boundary keeps its class as long as bf16 moved it by less than the margin.
    moved_far = np.abs(bare_probabilities - fp32).max(axis=1) >= BF16_MARGIN
    changed = classify(probabilities, THRESHOLDS) != classify(fp32, THRESHOLDS)
    assert not (changed & ~moved_far).any()
    # With a calibration, the rules see the calibrated probabilities.
    hot = Refinement((THRESHOLDS,), transform=lambda p: np.full_like(p, 1 / 3))
    assert hot.mask(bare_probabilities[:5]).all()  # 1/3 each: p_disk ties for the lead


def test_bf16_refines_in_batches_collected_over_several_batches(trained):
    network, _, test_images = trained
    images = test_images[:600]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        engine = precision.make_engine(network, "bf16")
    one_by_one = [engine.forward(images[start : start + 50]) for start in range(0, 600, 50)]
    for refine_batch, max_waiting in ((64, 1024), (8, 1024), (64, 120), (1, 1)):
        items = ((start, images[start : start + 50]) for start in range(0, 600, 50))
        streamed = list(engine.forward_stream(items, refine_batch=refine_batch, max_waiting=max_waiting))
        assert [key for key, _ in streamed] == list(range(0, 600, 50))  # every batch, in order
        for (_, probabilities), expected in zip(streamed, one_by_one):
            np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)  # fp32 batch sizes differ
    empty = list(engine.forward_stream([("empty", images[:0]), ("two", images[:2])]))
    assert [key for key, _ in empty] == ["empty", "two"] and empty[0][1].shape == (0, 3)


def test_bf16_keeps_the_sensitive_layers_in_fp32(trained):
    network, _, _ = trained
    engine = precision.make_engine(network, "bf16")
    policies = {layer.name: layer.dtype_policy.name for layer in engine.network.layers if layer.weights}
    assert policies == {"conv2d_1": "float32", "conv2d_2": "bfloat16", "conv2d_3": "bfloat16",
                        "conv2d_4": "bfloat16", "conv2d_5": "bfloat16", "dense_1": "bfloat16",
                        "dense_2": "bfloat16", "dense_3": "float32"}  # fmt: skip
    others = {layer.name: layer.dtype_policy.name for layer in engine.network.layers if not layer.weights}
    # Pooling takes the precision of the layer before it: no activation is rounded between two fp32 layers.
    assert others["max_pooling2d_1"] == others["flatten_1"] == "float32"
    assert others["max_pooling2d_2"] == others["max_pooling2d_3"] == "bfloat16"
    # The LRN layers stay in fp32: TensorFlow has no bfloat16 CPU kernel of TFLearn's LRN.
    assert {others[f"local_response_normalization_{i}"] for i in (1, 2, 3)} == {"float32"}
    assert network.layers[1].dtype_policy.name == "float32"  # the network given is left as it was


@pytest.mark.parametrize("arguments, error, match", [
    (dict(rules="keras_HST"), ValueError, "thresholds must be"),
    (dict(margin=0.0), ValueError, r"margin must be a probability in \(0, 0.5\)"),
    (dict(transform="temperature"), TypeError, "transform must be callable or None. Received an object of type str"),
])  # fmt: skip
def test_bad_refinement(arguments, error, match):
    with pytest.raises(error, match=match):
        Refinement(**arguments)


def test_a_refinement_must_be_a_refinement(trained):
    network, _, _ = trained
    with pytest.raises(TypeError, match="refinement must be a gamornet.inference.bf16.Refinement or None. Received an "
                                        "object of type str"):  # fmt: skip
        KerasEngine(network, "bf16", refinement="keras_SDSS")


def test_int8_changes_at_most_0_5_percent_of_classes(trained, fp32_predictions, model_file):
    from gamornet.models import model_sha256

    network, _, test_images = trained
    # Calibrated as load_predictor calibrates on the first 300 images of a run, and cached where it caches.
    engine = precision.make_engine(network, "int8", calibration_images=test_images[:300],
                                   cache_folder=os.path.dirname(model_file),
                                   model_sha256=model_sha256(model_file, "keras"))  # fmt: skip
    probabilities = predict(engine, test_images)
    assert probabilities.dtype == np.float32 and probabilities.shape == (N_TEST, 3)
    assert class_changes(probabilities, fp32_predictions) <= 0.005 * N_TEST
    assert 0 < np.abs(probabilities - fp32_predictions).max() < 0.1
    described = engine.provenance()
    assert described["precision"] == "int8" and described["calibration_images"] == 300
    assert described["cache"].startswith(os.path.dirname(model_file))


def test_the_tflearn_flavour(trained, tmp_path, monkeypatch):
    network, weights, test_images = trained
    tflearn_network = tflearn_flavour(network)
    images = test_images[:400]
    expected = reference.forward(images[:2], weights, reference.lrn_tflearn)
    fp32 = predict(precision.make_engine(tflearn_network, "fp32", backend="tflearn"), images)
    np.testing.assert_allclose(fp32[:2], expected, atol=1e-4, rtol=0)
    bf16 = predict(precision.make_engine(tflearn_network, "bf16", backend="tflearn"), images)
    # The budgets are checked on 6,000 galaxies above; on 400, 1 % (a broken engine changes far more).
    assert class_changes(bf16, fp32) <= 4
    assert 0 < np.abs(bf16 - fp32).max() < 0.05
    # Neither the model's folder nor the gamornet cache can be written: the int8 model is used uncached.
    (tmp_path / "file").write_bytes(b"a file where folders are expected")
    monkeypatch.setenv("GAMORNET_CACHE_DIR", str(tmp_path / "file" / "cache"))
    with pytest.warns(PrecisionWarning, match="could not be cached .* the next run quantizes it again"):
        int8_engine = precision.make_engine(tflearn_network, "int8", calibration_images=images[:200],
                                            cache_folder=tmp_path / "file", backend="tflearn")  # fmt: skip
    assert int8_engine.provenance()["cache"] is None
    int8 = predict(int8_engine, images)
    assert class_changes(int8, fp32) <= 4
    assert 0 < np.abs(int8 - fp32).max() < 0.1


# --------------------------------------------------------------------------- the int8 cache


def test_int8_calibration_on_the_run_and_its_cache(trained, tmp_path):
    network, _, test_images = trained
    not_a_folder = tmp_path / "model.hdf5"  # a model folder that cannot be written: the cache goes elsewhere
    not_a_folder.write_bytes(b"a file where a folder is expected")
    engine = precision.make_engine(network, "int8", cache_folder=not_a_folder)
    assert engine.needs_calibration
    with pytest.raises(RuntimeError, match="not calibrated"):
        engine.forward(test_images[:4])
    # Calibrated on the first 40 images of a stream of batches, which go through unchanged.
    batches = [test_images[i : i + 16] for i in range(0, 64, 16)]
    seen = list(calibrated_batches(engine, iter(batches), n_images=40))
    assert len(seen) == 4 and all(a is b for a, b in zip(seen, batches))
    assert not engine.needs_calibration
    calibration = test_images[:40]
    described = engine.provenance()
    assert described["calibration_sha256"] == calibration_sha256(calibration)
    assert described["from_cache"] is False
    folder = described["cache"]
    assert os.path.dirname(folder) == os.path.join(os.environ["GAMORNET_CACHE_DIR"], "int8")
    assert os.path.basename(folder).startswith("gamornet-int8-")
    assert sorted(os.listdir(folder)) == ["key.json", "model.bin", "model.xml"]
    assert not [name for name in os.listdir(os.path.dirname(folder)) if name.startswith(".tmp")]
    with open(os.path.join(folder, "key.json"), encoding="utf-8") as stream:
        record = json.load(stream)
    assert record["calibration_sha256"] == calibration_sha256(calibration)
    assert record["model_sha256"] and record["openvino"] and record["nncf"]
    expected = predict(engine, test_images[:64])

    again = precision.make_engine(network, "int8", calibration_images=calibration, cache_folder=not_a_folder)
    assert again.provenance()["from_cache"] is True and again.provenance()["cache"] == folder
    np.testing.assert_array_equal(predict(again, test_images[:64]), expected)

    with open(os.path.join(folder, "model.bin"), "r+b") as stream:
        stream.seek(1000)
        stream.write(b"\x00\x01\x02\x03")
    with pytest.warns(PrecisionWarning, match="damaged or incomplete"):
        remade = precision.make_engine(network, "int8", calibration_images=calibration, cache_folder=not_a_folder)
    assert remade.provenance()["from_cache"] is False and remade.provenance()["cache"] == folder
    np.testing.assert_array_equal(predict(remade, test_images[:64]), expected)


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
    with pytest.raises(ValueError, match=r"\(5 convolutions and 3 dense layers\)\. Received a network with 0 convolutions"):
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
from gamornet.inference import precision
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
    this_cpu = hardware.hardware_support("flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16\n")
    assert this_cpu.bf16 is True and this_cpu.int8 is True
    assert this_cpu.cpu_flags == ("avx512_bf16", "avx512_vnni")
    assert hardware.precision_note("bf16", this_cpu) is None and hardware.precision_note("int8", this_cpu) is None
    older = hardware.hardware_support("flags\t\t: fpu sse avx2 avx512f\n")
    assert older.bf16 is False and older.int8 is False
    arm = hardware.hardware_support("Features\t: fp asimd asimddp bf16 i8mm\n")
    assert arm.bf16 is True and arm.int8 is True
    unknown = hardware.hardware_support("")
    assert unknown.bf16 is None and unknown.int8 is None


@pytest.mark.parametrize("flags, name, match", [
    ("avx2 avx512f", "bf16", "no bfloat16 instructions .* usually slower than fp32"),
    ("avx2 avx512f", "int8", "no int8 dot-product instructions .* gains less"),
    ("", "bf16", "could not tell whether this CPU has bfloat16"),
    ("", "int8", "could not tell whether this CPU has int8"),
])  # fmt: skip
def test_precision_note_says_what_a_cpu_without_the_instructions_gives(flags, name, match):
    support = hardware.hardware_support(f"flags : {flags}\n" if flags else "")
    assert hardware.precision_note("fp32", support) is None
    assert hardware.precision_note(name, support) is not None
    with pytest.raises(AssertionError, match=match):
        raise AssertionError(hardware.precision_note(name, support))


def test_precision_note_on_gpus():
    ampere = hardware.hardware_support("flags : avx2\n", gpus=[("NVIDIA A100", (8, 0))])
    assert hardware.precision_note("bf16", ampere) is None
    assert "int8 runs on the CPU with OpenVINO" in hardware.precision_note("int8", ampere)
    volta = hardware.hardware_support("flags : avx2\n", gpus=[("Tesla V100", (7, 0))])
    assert "compute capability 7.0" in hardware.precision_note("bf16", volta)


def test_no_warning_on_this_machine_when_it_has_the_instructions(trained):
    network, _, _ = trained
    support = hardware.hardware_support()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        if not hardware.onednn_on():
            with pytest.raises(PrecisionWarning, match="oneDNN is off"):
                precision.make_engine(network, "bf16")
        elif support.bf16:
            precision.make_engine(network, "bf16")
        else:
            with pytest.raises(PrecisionWarning, match="bfloat16"):
                precision.make_engine(network, "bf16")


# --------------------------------------------------------------------------- the predictor, 0.4.x functions, CLI


@pytest.fixture(scope="module")
def model_file(trained, tmp_path_factory):
    """The trained network as a Keras 2 HDF5 file, alone in its folder."""
    from legacy_files import write_keras2_file

    _, weights, _ = trained
    return write_keras2_file(str(tmp_path_factory.mktemp("model") / "trained.hdf5"), weights)


def test_load_predictor_with_each_precision(trained, fp32_predictions, model_file):
    import gamornet

    _, _, test_images = trained
    images = test_images[:400]
    results = {}
    for name in ("fp32", "bf16", "int8"):
        with gamornet.load_predictor(model_file, SHAPE, precision=name) as predictor:
            results[name] = predictor.predict(images, batch_size=128)
            described = predictor.provenance()
        assert described["precision"] == name
        if name == "bf16":
            bf16_described = described
    np.testing.assert_allclose(results["fp32"], fp32_predictions[:400], atol=1e-6, rtol=0)
    assert len(bf16_described["engine"]["refined_in_fp32"]["rules"]) == 5  # 32 x 32 images: every handbook set
    for name in ("bf16", "int8"):  # the budgets are checked on 6,000 galaxies above; here 1 % of 400
        assert class_changes(results[name], results["fp32"]) <= 4
    # int8 calibrated on the run's first 300 images, and cached beside the model file.
    assert described["engine"]["calibration_images"] == DEFAULT_CALIBRATION_SIZE
    assert described["engine"]["calibration_sha256"] == calibration_sha256(images[:300])
    assert os.path.dirname(described["engine"]["cache"]) == os.path.dirname(model_file)


def test_bf16_with_a_calibration_protects_the_calibrated_classes(trained, fp32_predictions, model_file, tmp_path):
    import gamornet
    from gamornet.science.calibration import apply_temperature, save_calibration
    from gamornet.models import model_sha256

    _, _, test_images = trained
    images = test_images[:1000]
    path = save_calibration(str(tmp_path / "calibration.json"), 2.5, model_sha256(model_file, "keras"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        with gamornet.load_predictor(model_file, SHAPE, precision="bf16", calibration=path,
                                     thresholds=THRESHOLDS) as predictor:  # fmt: skip
            calibrated = predictor.predict(images, batch_size=128)
            refined = predictor.engine.counts["refined"]
    expected = apply_temperature(fp32_predictions[:1000], 2.5)
    # A temperature of 2.5 draws the probabilities together: more galaxies near a boundary, all refined.
    assert 0 < refined < 1000 and class_changes(calibrated, expected) == 0
    np.testing.assert_allclose(calibrated, expected, atol=0.02, rtol=0)


def test_the_rules_bf16_protects_by_default():
    from gamornet import models
    from gamornet.inference.predictor import refined_rules

    # The handbook set of the backend and data set, as gamornet predict classifies by default, and the most
    # probable class; for other input shapes, every handbook set.
    assert refined_rules(models.resolve_model("SDSS_tl", "keras", (167, 167, 1))) == ("most_probable", "keras_SDSS")
    assert refined_rules(models.resolve_model("my_model.hdf5", "tflearn", (83, 83, 1))) == ("most_probable", "tflearn_CANDELS")
    assert refined_rules(models.resolve_model("my_model.hdf5", "keras", SHAPE)) == DEFAULT_REFINED_RULES
    assert set(DEFAULT_REFINED_RULES) == {"most_probable", "keras_SDSS", "keras_CANDELS", "tflearn_SDSS",
                                          "tflearn_CANDELS"}  # fmt: skip


def test_load_predictor_checks_precision_and_calibration_first(tmp_path):
    import gamornet

    missing = str(tmp_path / "missing.hdf5")  # checked before the model file is looked for
    with pytest.raises(ValueError, match="Received: precision='half'"):
        gamornet.load_predictor(missing, SHAPE, precision="half")
    with pytest.raises(ValueError, match=r"calibration_images holds images of shape \(x, y, ndim\) = \(8, 8, 1\)"):
        gamornet.load_predictor(missing, SHAPE, precision="int8", calibration_images=np.zeros((4, 8, 8, 1)))
    with pytest.raises(ValueError, match="thresholds must be .* Received: thresholds='keras_HST'"):
        gamornet.load_predictor(missing, SHAPE, precision="bf16", thresholds="keras_HST")
    with pytest.raises(ValueError, match="the bulge threshold must be a probability between 0 and 1"):
        gamornet.load_predictor(missing, SHAPE, thresholds=["most_probable", (0.5, 1.5)])


def test_04x_functions_take_precision_as_their_last_argument(trained, fp32_predictions, model_file):
    import inspect

    from gamornet.keras_module import gamornet_predict_keras
    from gamornet.tflearn_module import gamornet_predict_tflearn

    _, _, test_images = trained
    images = test_images[:300]
    old_call = gamornet_predict_keras(images, model_file, SHAPE, 64, False)
    np.testing.assert_allclose(old_call, fp32_predictions[:300], atol=1e-6, rtol=0)
    bf16 = gamornet_predict_keras(images, model_file, SHAPE, 64, False, "bf16")
    assert class_changes(bf16, old_call) <= 3  # 1 % of 300: the budgets are checked on 6,000 galaxies above
    int8 = gamornet_predict_keras(images, model_file, SHAPE, precision="int8")  # calibrated on these 300 images
    assert class_changes(int8, old_call) <= 3
    for function in (gamornet_predict_keras, gamornet_predict_tflearn):
        last = list(inspect.signature(function).parameters.values())[-1]
        assert (last.name, last.default) == ("precision", "fp32")
    with pytest.raises(ValueError, match="Received: precision='int16'"):
        gamornet_predict_keras(images, model_file, SHAPE, precision="int16")
    with pytest.raises(ValueError, match="Received: precision='int16'"):  # checked before the checkpoint is read
        gamornet_predict_tflearn(images, model_file + ".missing", SHAPE, precision="int16")


def test_cli_predict_with_precision_and_calibration_images(trained, model_file, tmp_path, capsys):
    from gamornet.cli.main import main

    _, _, test_images = trained
    np.save(tmp_path / "images.npy", test_images[:400])
    # The first 300 images, as (n, x, y) (a trailing axis is added): the model cached for them is found.
    np.save(tmp_path / "calibration.npy", test_images[:300, ..., 0])
    common = ["predict", str(tmp_path / "images.npy"), "--model", model_file, "--input-shape", "32,32,1",
              "--thresholds", THRESHOLDS, "--no-progress"]  # fmt: skip
    assert main(common + ["--output", str(tmp_path / "fp32.csv")]) == 0
    assert main(common + ["--precision", "int8", "--calibration-images", str(tmp_path / "calibration.npy"),
                          "--output", str(tmp_path / "int8.fits")]) == 0  # fmt: skip
    from astropy.io import fits
    from astropy.table import Table

    fp32 = Table.read(tmp_path / "fp32.csv")
    int8 = Table.read(tmp_path / "int8.fits")
    assert fits.getheader(tmp_path / "int8.fits", 1)["PRECISN"] == "int8"
    assert int((fp32["class"] != int8["class"]).sum()) <= 4  # 1 % of 400
    cached = [name for name in os.listdir(os.path.dirname(model_file)) if name.startswith("gamornet-int8-")]
    with open(os.path.join(os.path.dirname(model_file), cached[0], "key.json"), encoding="utf-8") as stream:
        assert json.load(stream)["calibration_sha256"] == calibration_sha256(test_images[:300])
    assert len(cached) == 1  # the int8 model of the first test was reused

    capsys.readouterr()
    assert main(common + ["--precision", "bf16", "--output", str(tmp_path / "bf16.csv")]) == 0
    bf16 = Table.read(tmp_path / "bf16.csv")
    assert int((fp32["class"] != bf16["class"]).sum()) == 0  # the galaxies near a keras_CANDELS boundary: fp32's
    message = capsys.readouterr().err
    assert re.search(r"bf16: \d+ of 400 images \(\d+\.\d%\), whose class was decided by less than 0.02 in "
                     r"probability, were predicted again in fp32", message)  # fmt: skip
    assert main(common + ["--precision", "bf16", "--calibration-images", str(tmp_path / "calibration.npy")]) == 1
    assert "--calibration-images calibrates the int8 quantization: give it with --precision int8" in (
        capsys.readouterr().err)
    with pytest.raises(SystemExit):
        main(common + ["--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
