"""The TFLearn backend (real tflearn on TensorFlow 2) against the independent numpy reference.

Checkpoints are written by real tflearn from a training graph (tests/tflearn_files.py).
They are large (a 64 x 64 network holds 21 M weights, twice with the Momentum
slots), so every folder that holds them is removed when its test ends.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import types

import numpy as np
import pytest

import reference
from legacy_files import write_keras2_file
from tflearn_files import WEIGHT_NAMES, calibrated_case, checkpoint_variables, write_tflearn_checkpoint

from gamornet import tflearn_module as tm  # noqa: I100 (after the helpers, which set up sys.path)

import tensorflow as tf  # noqa: E402
import tflearn  # noqa: E402  (already imported, with the shims, by gamornet.tflearn_module)

TOLERANCE = 1e-4
SMALL = (64, 64, 1)
CUSTOM = (72, 60, 2)  # non-square, two bands: exercises the flatten order
HERE = os.path.dirname(os.path.abspath(__file__))
MISSING = "/nonexistent/check-1"


@pytest.fixture
def folder(tmp_path):
    """A scratch folder, removed with its checkpoints when the test ends."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """checkpoint(shape) -> (prefix, images, weights): written once per shape, removed after the module."""
    root = tmp_path_factory.mktemp("tflearn-checkpoints")
    written = {}

    def checkpoint(shape):
        if shape not in written:
            images, weights = calibrated_case(shape)
            prefix = os.path.join(root, "x".join(map(str, shape)), "check-100")
            written[shape] = (write_tflearn_checkpoint(prefix, weights, shape), images, weights)
        return written[shape]

    yield checkpoint
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def training_set():
    rng = np.random.default_rng(7)
    images = reference.galaxy_images(12, SMALL, seed=7)
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=12)]
    return images[:8], labels[:8], images[8:], labels[8:]


def _variables(model):
    """{name: numpy array} of the model's variables, read from its session."""
    graph = model.net.graph
    variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
    values = model.session.run(variables)
    return {variable.op.name: value for variable, value in zip(variables, values)}


def _checkpoint_steps(path):
    return sorted(int(name[len("check-"):-len(".index")]) for name in os.listdir(path)
                  if name.startswith("check-") and name.endswith(".index"))


# --------------------------------------------------------------------------- the network


def test_network_follows_table_2_with_tflearn_names():
    """Shapes at a custom shape here; at the presets the reference comparisons below check them."""
    trainable = [True, False, True, False, True, False, True, False]
    load = [False, True, True, False, False, True, True, False]
    model = tm.gamornet_build_model_tflearn(CUSTOM, trainable, load)
    try:
        assert isinstance(model, tflearn.DNN)
        graph = model.net.graph
        variables = {v.op.name: v for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)}
        for (kernel_name, bias_name), (kernel_shape, bias_shape) in zip(WEIGHT_NAMES, reference.weight_shapes(CUSTOM)):
            assert tuple(variables[kernel_name].shape) == kernel_shape
            assert tuple(variables[bias_name].shape) == bias_shape
        trainable_names = {v.op.name for v in graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)}
        assert [pair[0] in trainable_names for pair in WEIGHT_NAMES] == trainable
        restored = {v.op.name for v in model.trainer.to_restore}
        assert [pair[0] in restored and pair[1] in restored for pair in WEIGHT_NAMES] == load
        assert tuple(model.net.shape) == (None, 3)
    finally:
        model.session.close()


def test_build_accepts_presets_and_refuses_bad_bools():
    model = tm.gamornet_build_model_tflearn("CANDELS", "train_bools_CANDELS", "load_bools_CANDELS")
    model.session.close()
    with pytest.raises(ValueError, match="trainable_bools must hold exactly 8 booleans"):
        tm.gamornet_build_model_tflearn("CANDELS", [True] * 7)
    with pytest.raises(ValueError, match="load_layers_bools must be 'load_bools_SDSS', 'load_bools_CANDELS'"):
        tm.gamornet_build_model_tflearn("CANDELS", load_layers_bools="load_bools_HST")
    with pytest.raises(ValueError, match="input_shape must be 'SDSS', 'CANDELS'"):
        tm.gamornet_build_model_tflearn("HST")


# --------------------------------------------------------------------------- predictions


@pytest.mark.parametrize(
    "input_shape, batch_size", [("SDSS", 2), ("CANDELS", 64), pytest.param(CUSTOM, 5, marks=pytest.mark.numeric)]
)
def test_predictions_match_the_reference(checkpoints, input_shape, batch_size):
    """batch_size 2 leaves a partial last batch, 64 exceeds the 5 images, 5 divides them."""
    shape = {"SDSS": (167, 167, 1), "CANDELS": (83, 83, 1)}.get(input_shape, input_shape)
    prefix, images, weights = checkpoints(shape)
    expected = reference.forward(images, weights, reference.lrn_tflearn)
    got = tm.gamornet_predict_tflearn(images, prefix, input_shape, batch_size=batch_size)
    assert got.shape == (5, 3) and got.dtype == np.float32
    assert np.abs(got - expected).max() < TOLERANCE
    # the known weights keep the network informative: the images get different probabilities
    assert np.ptp(expected, axis=0).max() > 1e-3


def test_individual_arrays_integer_images_and_accepted_paths(checkpoints, folder):
    prefix, images, weights = checkpoints(SMALL)
    expected = reference.forward(images, weights, reference.lrn_tflearn)
    disk, indeterminate, bulge = tm.gamornet_predict_tflearn(
        images, prefix + ".index", SMALL, batch_size=3, individual_arrays=True, clear_session=True,
        trainable_bools="train_bools_CANDELS",
    )
    assert np.abs(np.stack([disk, indeterminate, bulge], axis=1) - expected).max() < TOLERANCE
    # the comparison tells the LRN flavours apart: the Keras one would be far off at these pixel values
    assert np.abs(reference.forward(images, weights, reference.lrn_keras) - expected).max() > 1000 * TOLERANCE
    rounded = np.round(images).astype(np.int32)
    expected_rounded = reference.forward(rounded, weights, reference.lrn_tflearn)
    # a folder stands for its newest checkpoint (tflearn's `checkpoint` file names it)
    got = tm.gamornet_predict_tflearn(rounded, os.path.dirname(prefix), SMALL)
    assert np.abs(got - expected_rounded).max() < TOLERANCE


def test_build_then_load_then_predict_like_04x(checkpoints):
    prefix, images, weights = checkpoints(SMALL)
    model = tm.gamornet_build_model_tflearn(SMALL, [True] * 8, [True] * 8)
    assert tm.gamornet_load_model_tflearn(model, prefix) is model
    # the model works outside any graph context, like any Python object
    assert np.abs(model.predict(images) - reference.forward(images, weights, reference.lrn_tflearn)).max() < TOLERANCE
    model.session.close()


def test_load_restores_only_the_layers_whose_load_bool_is_true(checkpoints):
    prefix, _, weights = checkpoints(SMALL)
    load = [True, False, True, True, False, True, False, True]
    model = tm.gamornet_build_model_tflearn(SMALL, load_layers_bools=load)
    tm.gamornet_load_model_tflearn(model, prefix)
    values = _variables(model)
    model.session.close()
    for (kernel_name, bias_name), (kernel, bias), loaded in zip(WEIGHT_NAMES, weights, load):
        assert np.array_equal(values[kernel_name], kernel) is loaded
        if loaded:
            assert np.array_equal(values[bias_name], bias)
        else:
            assert not np.any(values[bias_name])  # tflearn initialises biases to zero
    assert values["Global_Step"] == 100  # the training state comes with the weights


def test_two_models_in_one_process_never_collide(checkpoints):
    small_prefix, small_images, small_weights = checkpoints(SMALL)
    custom_prefix, custom_images, custom_weights = checkpoints(CUSTOM)
    small = tm.gamornet_load_model_tflearn(tm.gamornet_build_model_tflearn(SMALL), small_prefix)
    custom = tm.gamornet_load_model_tflearn(tm.gamornet_build_model_tflearn(CUSTOM), custom_prefix)
    small_expected = reference.forward(small_images[:2], small_weights, reference.lrn_tflearn)
    custom_expected = reference.forward(custom_images[:2], custom_weights, reference.lrn_tflearn)
    for _ in range(2):
        assert np.abs(small.predict(small_images[:2]) - small_expected).max() < TOLERANCE
        assert np.abs(custom.predict(custom_images[:2]) - custom_expected).max() < TOLERANCE
    small.session.close()
    custom.session.close()


def test_published_names_use_the_downloader(monkeypatch, checkpoints):
    prefix, images, weights = checkpoints(SMALL)
    calls = []

    def fake_fetch(name, backend, force=False, progress=True):
        calls.append((name, backend))
        return prefix

    monkeypatch.setitem(sys.modules, "gamornet.models._download", types.SimpleNamespace(fetch_model=fake_fetch))
    got = tm.gamornet_predict_tflearn(images, "SDSS_tl", SMALL)
    assert calls == [("SDSS_tl", "tflearn")]
    assert np.abs(got - reference.forward(images, weights, reference.lrn_tflearn)).max() < TOLERANCE


# --------------------------------------------------------------------------- prediction and loading errors


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"img_array": [[0.0]]}, TypeError, "img_array must be a numpy array"),
        ({"img_array": np.zeros((2, 83, 83, 1))}, ValueError,
         r"holds images of shape .* but input_shape is \(64, 64, 1\)"),
        ({"img_array": np.full((2, 64, 64, 1), np.nan)}, ValueError, "image 0 holds NaN or infinite pixels"),
        ({"input_shape": "HST"}, ValueError, "input_shape must be 'SDSS', 'CANDELS'"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
        ({"individual_arrays": "yes"}, TypeError, "individual_arrays must be True or False"),
        ({"trainable_bools": [True] * 7}, ValueError, "trainable_bools must hold exactly 8 booleans"),
        ({"clear_session": None}, TypeError, "clear_session must be True or False"),
        ({"model_load_path": 3}, TypeError, "model_load_path must be the prefix of a TFLearn checkpoint"),
        ({}, FileNotFoundError, "no TFLearn checkpoint found at prefix '/nonexistent/check-1'"),
    ],
)
def test_prediction_arguments_are_checked_before_loading(kwargs, error, match):
    arguments = {"img_array": np.zeros((2, 64, 64, 1)), "model_load_path": MISSING, "input_shape": SMALL}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        tm.gamornet_predict_tflearn(**arguments)


def test_folder_without_checkpoint(folder):
    with pytest.raises(FileNotFoundError, match=f"{folder}' is a folder without a TFLearn checkpoint"):
        tm.gamornet_predict_tflearn(np.zeros((1, 64, 64, 1)), str(folder), SMALL)


def test_unreadable_checkpoint_is_named(folder):
    prefix = str(folder / "check-5")
    for ending in (".index", ".data-00000-of-00001", ".meta"):
        with open(prefix + ending, "wb") as stream:
            stream.write(b"not a checkpoint" * 10)
    with pytest.raises(OSError, match=f"could not read the TFLearn checkpoint '{prefix}'"):
        tm.gamornet_predict_tflearn(np.zeros((1, 64, 64, 1)), prefix, SMALL)


def test_moved_folder_of_checkpoints_and_truncated_data(checkpoints, folder):
    prefix, images, weights = checkpoints(SMALL)
    # a copy without tflearn's `checkpoint` file (whose absolute paths go stale when folders move):
    # the highest step number is the newest
    for step in (99, 100):
        for ending in (".index", ".meta", ".data-00000-of-00001"):
            os.link(prefix + ending, str(folder / f"check-{step}{ending}"))
    os.remove(folder / "check-99.data-00000-of-00001")  # an incomplete one does not count
    model = tm.gamornet_load_model_tflearn(tm.gamornet_build_model_tflearn(SMALL), str(folder))
    assert np.abs(model.predict(images[:1]) - reference.forward(images[:1], weights, reference.lrn_tflearn)).max() \
        < TOLERANCE
    model.session.close()
    truncated = str(folder / "check-7")
    os.link(prefix + ".index", truncated + ".index")
    with open(prefix + ".data-00000-of-00001", "rb") as source, open(truncated + ".data-00000-of-00001", "wb") as out:
        out.write(source.read(1 << 20))
    with pytest.raises(OSError, match=f"the TFLearn checkpoint '{truncated}' is corrupt: reading"):
        tm.gamornet_predict_tflearn(images[:1], truncated, SMALL)


def test_checkpoint_of_another_input_shape(checkpoints):
    prefix, _, _ = checkpoints(SMALL)
    with pytest.raises(ValueError, match=r"does not fit this network: it does not hold a GaMorNet model for input "
                                         r"shape \(80, 80, 1\): weighted layer 6 "
                                         r"\('FullyConnected'\) holds weights of shapes \[\(1024, 4096\), \(4096,\)\], "
                                         r"expected \[\(2304, 4096\), \(4096,\)\]"):
        tm.gamornet_predict_tflearn(np.zeros((1, 80, 80, 1)), prefix, (80, 80, 1))


def test_checkpoint_of_another_network(folder):
    prefix = str(folder / "check-1")
    with tf.Graph().as_default():
        variable = tf.compat.v1.get_variable("other", shape=[3], initializer=tf.compat.v1.zeros_initializer())
        with tf.compat.v1.Session() as session:
            session.run(variable.initializer)
            tf.compat.v1.train.Saver([variable]).save(session, prefix)
    with pytest.raises(ValueError, match=f"{prefix}' does not hold a GaMorNet network: it lacks the variables "
                                         r"\['Conv2D/W', 'Conv2D/b'"):
        tm.gamornet_predict_tflearn(np.zeros((1, 64, 64, 1)), prefix, SMALL)


def test_load_model_refuses_what_is_not_a_model():
    with pytest.raises(TypeError, match="model must be a tflearn.DNN"):
        tm.gamornet_load_model_tflearn("model", MISSING)


# --------------------------------------------------------------------------- training


@pytest.mark.numeric
def test_training_keeps_the_newest_checkpoints_and_they_load_back(folder, monkeypatch, training_set):
    working = folder / "cwd"
    working.mkdir()
    monkeypatch.chdir(working)
    save = folder / "run"  # created by the function
    model = tm.gamornet_train_tflearn(
        *training_set, SMALL, files_save_path=str(save), epochs=3, max_checkpoints=2, batch_size=4, lr=1e-3,
        show_metric=False,
    )
    assert isinstance(model, tflearn.DNN)
    assert os.listdir(working) == []  # logs go to a temporary folder, never the working directory
    log_folder = os.path.realpath(model.trainer.tensorboard_dir)
    assert log_folder.startswith(os.path.realpath(tempfile.gettempdir())) and os.path.isdir(log_folder)
    # 8 images in batches of 4: steps 2, 4, 6 at the ends of the epochs; the newest two are kept
    assert _checkpoint_steps(save) == [4, 6]
    assert sorted(os.listdir(save)) == sorted(
        ["checkpoint"] + [f"check-{step}{ending}" for step in (4, 6)
                          for ending in (".data-00000-of-00001", ".index", ".meta")]
    )
    saved = checkpoint_variables(str(save / "check-6"))
    assert {"Conv2D/W/Momentum", "Global_Step", "is_training"} <= set(saved)
    validation = training_set[2]
    reloaded = tm.gamornet_predict_tflearn(validation, str(save / "check-6"), SMALL)
    assert np.abs(reloaded - model.predict(validation)).max() < TOLERANCE
    model.session.close()


def test_save_model_false_writes_nothing(folder, monkeypatch, training_set):
    monkeypatch.chdir(folder)
    tm.gamornet_train_tflearn(*training_set, SMALL, files_save_path="run", epochs=1, batch_size=8, save_model=False)
    assert os.listdir(folder) == ["run"] and os.listdir(folder / "run") == []


def test_nesterov_decay_and_loss_reach_the_optimiser(folder, training_set):
    model = tm.gamornet_train_tflearn(
        *training_set, SMALL, files_save_path=str(folder), epochs=1, batch_size=4, lr=0.01, decay=0.5,
        loss="mean_square", nestorov=True,
    )
    saved = checkpoint_variables(str(folder / "check-2"))
    assert "Conv2D/W/Nesterov" in saved and "Conv2D/W/Momentum" not in saved
    assert saved["Training_step"] == 2
    (learning_rate,) = model.net.graph.get_collection("lr_variables")
    # TFLearn's lr_decay: lr * decay ** (step / 100)
    assert model.session.run(learning_rate) == pytest.approx(0.01 * 0.5 ** (2 / 100), rel=1e-6)
    assert model.train_ops[0].loss.name.startswith("MeanSquare/")
    model.session.close()


@pytest.mark.numeric
def test_load_model_continues_from_a_checkpoint(folder, checkpoints, training_set):
    prefix, _, weights = checkpoints(SMALL)
    model = tm.gamornet_train_tflearn(
        *training_set, SMALL, files_save_path=str(folder), epochs=1, batch_size=8, lr=1e-9, load_model=True,
        model_load_path=prefix,
    )
    assert _checkpoint_steps(folder) == [101]  # the step counter continues from check-100
    values = _variables(model)
    for (kernel_name, _), (kernel, _) in zip(WEIGHT_NAMES, weights):
        np.testing.assert_allclose(values[kernel_name], kernel, rtol=0, atol=1e-5 * np.abs(kernel).max())
    model.session.close()


def test_transfer_learning_restores_and_freezes_as_told(folder, checkpoints, training_set):
    prefix, _, weights = checkpoints(SMALL)
    load = [True, True, True, True, True, True, False, False]  # load_bools_CANDELS
    frozen = [True, True, True, False, False, False, False, False]  # train_bools_CANDELS
    model = tm.gamornet_tl_tflearn(
        *training_set, SMALL, load_layers_bools="load_bools_CANDELS", trainable_bools="train_bools_CANDELS",
        model_load_path=prefix, files_save_path=str(folder), epochs=1, batch_size=4, lr=1e-3, show_metric=True,
    )
    assert _checkpoint_steps(folder) == [102]  # numbered after check-100
    values = _variables(model)
    model.session.close()
    for index, ((kernel_name, bias_name), (kernel, bias)) in enumerate(zip(WEIGHT_NAMES, weights)):
        scale = np.abs(kernel).max()
        change = np.abs(values[kernel_name] - kernel).max()
        if frozen[index]:
            assert np.array_equal(values[kernel_name], kernel) and np.array_equal(values[bias_name], bias), kernel_name
        elif load[index]:
            assert 0 < change < 0.1 * scale, kernel_name  # loaded, then trained a little
        else:
            assert change > 0.5 * scale, kernel_name  # fresh weights, unrelated to the checkpoint's
    saved = checkpoint_variables(str(folder / "check-102"))
    assert np.array_equal(saved["Conv2D/W"], weights[0][0])


def test_transfer_learning_with_lists_and_dev_null(folder, monkeypatch, checkpoints, training_set):
    prefix, _, weights = checkpoints(SMALL)
    monkeypatch.chdir(folder)
    model = tm.gamornet_tl_tflearn(
        *training_set, SMALL, [True] * 8, [False] * 7 + [True], prefix, "/dev/null", epochs=1, batch_size=8,
        nesterov=True,
    )
    assert os.listdir(folder) == []  # '/dev/null' saves nothing, anywhere
    values = _variables(model)
    model.session.close()
    assert np.array_equal(values["FullyConnected_1/W"], weights[6][0])
    assert not np.array_equal(values["FullyConnected_2/W"], weights[7][0])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": 0}, ValueError, "epochs must be a positive integer"),
        ({"max_checkpoints": 0}, ValueError, "max_checkpoints must be a positive integer"),
        ({"batch_size": 2.5}, ValueError, "batch_size must be a positive integer"),
        ({"lr": 0}, ValueError, "lr must be a positive number"),
        ({"lr": "fast"}, ValueError, "lr must be a positive number"),
        ({"momentum": -0.1}, ValueError, "momentum must be a finite number >= 0"),
        ({"decay": -1.0}, ValueError, "decay must be a finite number >= 0"),
        ({"decay": 2.0}, ValueError, r"decay is TFLearn's lr_decay: .* between 0 and 1"),
        ({"loss": "hubble"}, ValueError,
         "loss must be the name of a loss of tflearn.objectives .*categorical_crossentropy"),
        ({"nesterov": "yes"}, TypeError, "nesterov .* must be True or False"),
        ({"nesterov": True, "nestorov": False}, ValueError, "two spellings of one flag"),
        ({"show_metric": 1}, TypeError, "show_metric must be True or False"),
        ({"save_model": "no"}, TypeError, "save_model must be True or False"),
        ({"clear_session": None}, TypeError, "clear_session must be True or False"),
        ({"load_model": "yes"}, TypeError, "load_model must be True or False"),
        ({"files_save_path": 3}, TypeError, "files_save_path must be the path of a folder"),
        ({"load_model": True, "model_load_path": MISSING}, FileNotFoundError, "no TFLearn checkpoint found"),
        ({"input_shape": (64, 64)}, ValueError, "input_shape must be 'SDSS', 'CANDELS' or a tuple of three"),
    ],
)
def test_training_error_paths(folder, training_set, kwargs, error, match):
    arguments = dict(zip(("training_imgs", "training_labels", "validation_imgs", "validation_labels"), training_set))
    arguments.update(input_shape=SMALL, files_save_path=str(folder / "run"), epochs=1)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        tm.gamornet_train_tflearn(**arguments)
    assert not os.path.exists(folder / "run")  # every argument is checked before anything is written


@pytest.mark.parametrize(
    "which, value, error, match",
    [
        (1, np.zeros((8, 2)), ValueError, r"training_labels must have shape \(n, 3\)"),
        (1, np.zeros((7, 3)), ValueError, "training_labels holds 7 labels, but there are 8 images"),
        (2, np.zeros((4, 32, 32, 1)), ValueError, "validation_imgs holds images of shape"),
        (3, np.full((4, 3), 0.5), ValueError, "validation_labels must hold one-hot labels"),
    ],
)
def test_training_data_error_paths(training_set, which, value, error, match):
    data = list(training_set)
    data[which] = value
    with pytest.raises(error, match=match):
        tm.gamornet_train_tflearn(*data, SMALL, files_save_path="/dev/null", epochs=1)


def test_files_save_path_that_is_a_file(folder, training_set):
    path = folder / "a-file"
    path.write_text("")
    with pytest.raises(NotADirectoryError, match="files_save_path must be a folder"):
        tm.gamornet_train_tflearn(*training_set, SMALL, files_save_path=str(path), epochs=1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"load_layers_bools": [True] * 7}, ValueError, "load_layers_bools must hold exactly 8 booleans"),
        ({"trainable_bools": "train_bools_HST"}, ValueError, "trainable_bools must be 'train_bools_SDSS'"),
        ({"trainable_bools": [1] * 8}, TypeError, "trainable_bools must hold booleans"),
        ({"model_load_path": MISSING}, FileNotFoundError, "no TFLearn checkpoint found at prefix"),
        ({"model_load_path": None}, TypeError, "model_load_path must be the prefix"),
        ({"nestorov": 1}, TypeError, "must be True or False"),
    ],
)
def test_transfer_learning_error_paths(training_set, kwargs, error, match):
    arguments = {"model_load_path": MISSING, "files_save_path": "/dev/null", "epochs": 1}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        tm.gamornet_tl_tflearn(*training_set, SMALL, **arguments)


# --------------------------------------------------------------------------- beside Keras


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory, checkpoints):
    """A Keras file and a TFLearn checkpoint of the same small shape, with the reference's answers."""
    root = tmp_path_factory.mktemp("side-by-side")
    images = reference.galaxy_images(4, SMALL, seed=11)
    keras_weights = reference.calibrated_weights(SMALL, images[:3], reference.lrn_keras, seed=12)
    keras_path = write_keras2_file(str(root / "model.hdf5"), keras_weights)
    tflearn_prefix, _, tflearn_weights = checkpoints(SMALL)
    np.save(root / "images.npy", images)
    case = {
        "root": str(root),
        "keras_path": keras_path,
        "tflearn_prefix": tflearn_prefix,
        "keras_expected": reference.forward(images, keras_weights, reference.lrn_keras),
        "tflearn_expected": reference.forward(images, tflearn_weights, reference.lrn_tflearn),
        "images": images,
    }
    yield case
    shutil.rmtree(root, ignore_errors=True)


def test_keras_then_tflearn_then_keras_in_this_process(side_by_side):
    from gamornet import keras_module as km

    case = side_by_side
    for module, path, expected in [
        (km, case["keras_path"], case["keras_expected"]),
        (tm, case["tflearn_prefix"], case["tflearn_expected"]),
        (km, case["keras_path"], case["keras_expected"]),
    ]:
        predict = km.gamornet_predict_keras if module is km else tm.gamornet_predict_tflearn
        assert np.abs(predict(case["images"], path, SMALL, batch_size=3) - expected).max() < TOLERANCE
    assert tf.executing_eagerly()


@pytest.mark.parametrize("first", ["keras_module", "tflearn_module"])
def test_either_import_order_in_a_fresh_process(side_by_side, first):
    case = side_by_side
    second = "tflearn_module" if first == "keras_module" else "keras_module"
    code = f"""
        import json, sys
        import numpy as np
        import gamornet.{first}
        import gamornet.{second}
        from gamornet import keras_module as km, tflearn_module as tm
        images = np.load({os.path.join(case["root"], "images.npy")!r})
        keras_path, prefix = {case["keras_path"]!r}, {case["tflearn_prefix"]!r}
        results = [km.gamornet_predict_keras(images, keras_path, {SMALL}).tolist(),
                   tm.gamornet_predict_tflearn(images, prefix, {SMALL}).tolist(),
                   km.gamornet_predict_keras(images, keras_path, {SMALL}).tolist()]
        print(json.dumps(results))
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    keras_first, tflearn_result, keras_again = (np.array(r) for r in json.loads(result.stdout.strip().splitlines()[-1]))
    assert np.abs(keras_first - case["keras_expected"]).max() < TOLERANCE
    assert np.abs(tflearn_result - case["tflearn_expected"]).max() < TOLERANCE
    assert np.abs(keras_again - case["keras_expected"]).max() < TOLERANCE


# --------------------------------------------------------------------------- one engine for both backends; checked files


def test_the_predictor_agrees_with_tflearns_own_dnn(checkpoints):
    """gamornet_predict_tflearn runs on the Keras engine with TFLearn's LRN: it matches tflearn's DNN.predict."""
    prefix, images, weights = checkpoints(SMALL)
    model = tm.gamornet_load_model_tflearn(tm.gamornet_build_model_tflearn(SMALL), prefix)
    try:
        tflearn_own = np.asarray(model.predict(images), dtype=np.float32)
    finally:
        model.session.close()
    ours = tm.gamornet_predict_tflearn(images, prefix, SMALL)
    assert np.abs(ours - tflearn_own).max() < 1e-5
    assert np.abs(ours - reference.forward(images, weights, reference.lrn_tflearn)).max() < TOLERANCE


def test_non_finite_weights_in_a_checkpoint_are_refused(folder):
    images, weights = calibrated_case(SMALL, n_images=2)
    broken = [list(pair) for pair in weights]
    broken[7][1] = np.full_like(broken[7][1], np.inf)
    prefix = write_tflearn_checkpoint(str(folder / "check-3"), broken, SMALL)
    with pytest.raises(ValueError, match=r"check-3' is corrupt: weighted layer 8 \('FullyConnected_2'\) .* not finite"):
        tm.gamornet_predict_tflearn(images, prefix, SMALL)
    with pytest.raises(ValueError, match="not finite"):
        tm.gamornet_load_model_tflearn(tm.gamornet_build_model_tflearn(SMALL), prefix)


def test_tensorflow_errors_without_a_message_are_reported():
    from gamornet.models.formats.tflearn_checkpoint import first_line

    assert first_line(tf.errors.DataLossError(None, None, "")) == "DataLossError"
    assert first_line(ValueError("first\nsecond")) == "first"


def test_bad_training_arguments_leave_no_folder(folder, training_set):
    images, labels, validation_images, validation_labels = training_set
    for bad in ({"lr": float("nan")}, {"load_model": True, "model_load_path": str(folder / "none" / "check-1")}):
        target = folder / "out"
        with pytest.raises((ValueError, OSError)):
            tm.gamornet_train_tflearn(images, labels, validation_images, validation_labels, SMALL,
                                      files_save_path=str(target), epochs=1, **bad)
        assert not target.exists()
