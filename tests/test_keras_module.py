"""The Keras backend against the independent numpy reference, and its error paths."""

import csv
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import reference
from conftest import CHECK_SHAPES
from legacy_files import write_keras2_file

keras = pytest.importorskip("keras")
import tensorflow as tf  # noqa: E402

from gamornet import keras_module as km  # noqa: E402

TOLERANCE = 1e-4
TRAIN_SHAPE = (64, 64, 1)


# --------------------------------------------------------------------------- LRN


@pytest.mark.numeric
def test_lrn_matches_the_keras_flavour_of_the_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 40, size=(2, 9, 7, 12)).astype(np.float32)
    layer = km.LocalResponseNormalization()
    got = layer(x).numpy()
    expected = np.stack([reference.lrn_keras(image.astype(np.float64)) for image in x])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # It is not TensorFlow's channel-window LRN: the difference is large at these values.
    tf_lrn = tf.nn.local_response_normalization(x, depth_radius=5, bias=1.0, alpha=1e-4, beta=0.75).numpy()
    assert np.abs(tf_lrn - got).max() > 0.1


def test_lrn_is_serialisable():
    layer = km.LocalResponseNormalization(n=3, alpha=2e-4, beta=0.5, k=2.0, name="lrn")
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone, km.LocalResponseNormalization)
    assert (clone.n, clone.alpha, clone.beta, clone.k) == (3, 2e-4, 0.5, 2.0)
    x = np.random.default_rng(1).normal(0, 30, size=(1, 5, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(clone(x).numpy(), layer(x).numpy())


# --------------------------------------------------------------------------- network


@pytest.mark.parametrize(
    "input_shape, parameters",
    [("SDSS", 58_270_403), ("CANDELS", 29_958_851), ((72, 60, 2), None)],
)
def test_network_follows_table_2(input_shape, parameters):
    model = km.gamornet_build_model_keras(input_shape)
    shape = CHECK_SHAPES["custom"] if parameters is None else CHECK_SHAPES[input_shape]
    expected_shapes = reference.weight_shapes(shape)
    weighted = [layer for layer in model.layers if layer.weights]
    assert [tuple(w.shape) for layer in weighted for w in layer.weights] == [
        s for pair in expected_shapes for s in pair
    ]
    if parameters is not None:
        assert model.count_params() == parameters
    assert model.output_shape == (None, 3)


# --------------------------------------------------------------------------- predictions


@pytest.mark.parametrize("name", ["SDSS", "CANDELS", pytest.param("custom", marks=pytest.mark.numeric)])
@pytest.mark.parametrize("layout", ["model", "weights"])
def test_predictions_match_the_reference(tmp_path, keras_case, name, layout):
    images, weights = keras_case(name)
    path = write_keras2_file(str(tmp_path / "model.hdf5"), weights, layout=layout)
    expected = reference.forward(images, weights, reference.lrn_keras)
    input_shape = name if name != "custom" else CHECK_SHAPES["custom"]
    for batch_size in (2, 5, 64):  # does not divide 5, divides it, larger than it
        got = km.gamornet_predict_keras(images, path, input_shape, batch_size=batch_size)
        assert got.shape == (5, 3)
        assert np.abs(got - expected).max() < TOLERANCE, (name, layout, batch_size)
    # The reference is sensitive to the LRN flavour, so matching it is a real check.
    other = reference.forward(images[:1], weights, reference.lrn_tflearn)
    assert np.abs(other - expected[:1]).max() > 10 * TOLERANCE


def test_individual_arrays_and_integer_images(tmp_path, keras_case):
    images, weights = keras_case("CANDELS")
    path = write_keras2_file(str(tmp_path / "m.h5"), weights)
    together = km.gamornet_predict_keras(images, path, "CANDELS")
    disk, indeterminate, bulge = km.gamornet_predict_keras(images, path, "CANDELS", individual_arrays=True)
    np.testing.assert_array_equal(np.stack([disk, indeterminate, bulge], axis=1), together)
    rounded = np.round(images).astype(np.int32)
    got = km.gamornet_predict_keras(rounded, path, "CANDELS")
    assert np.abs(got - reference.forward(rounded, weights)).max() < TOLERANCE


def test_loading_goes_by_layer_order_whatever_the_names(tmp_path, keras_case):
    images, weights = keras_case("CANDELS")
    path = write_keras2_file(str(tmp_path / "renamed.hdf5"), weights, rename=lambda name: "z_" + name[::-1])
    got = km.gamornet_predict_keras(images, path, "CANDELS")
    assert np.abs(got - reference.forward(images, weights)).max() < TOLERANCE


def test_a_04x_style_script_runs_unchanged(tmp_path, keras_case):
    images, weights = keras_case("SDSS")
    path = write_keras2_file(str(tmp_path / "model.hdf5"), weights)
    script = (
        "import numpy as np\n"
        "from gamornet.keras_module import gamornet_predict_keras\n"
        f"img_array = np.load({str(tmp_path / 'imgs.npy')!r})\n"
        f"preds = gamornet_predict_keras(img_array, model_load_path={path!r}, input_shape='SDSS')\n"
        f"np.save({str(tmp_path / 'preds.npy')!r}, preds)\n"
    )
    np.save(tmp_path / "imgs.npy", images)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, capture_output=True)
    preds = np.load(tmp_path / "preds.npy")
    assert np.abs(preds - reference.forward(images, weights)).max() < TOLERANCE
    assert sorted(os.listdir(tmp_path)) == ["imgs.npy", "model.hdf5", "preds.npy"]


# --------------------------------------------------------------------------- error paths


def test_missing_model_file_is_named(tmp_path, keras_case):
    images, _ = keras_case("CANDELS")
    missing = str(tmp_path / "nope.hdf5")
    with pytest.raises(OSError, match="nope.hdf5"):
        km.gamornet_predict_keras(images, missing, "CANDELS")


def test_corrupt_model_file_is_named(tmp_path, keras_case):
    images, _ = keras_case("CANDELS")
    corrupt = tmp_path / "corrupt.hdf5"
    corrupt.write_bytes(b"this is not an HDF5 file" * 100)
    with pytest.raises(OSError, match="corrupt.hdf5"):
        km.gamornet_predict_keras(images, str(corrupt), "CANDELS")


def test_model_file_of_another_input_shape(tmp_path, keras_case):
    _, weights = keras_case("CANDELS")
    images, _ = keras_case("SDSS")
    path = write_keras2_file(str(tmp_path / "candels.hdf5"), weights)
    with pytest.raises(ValueError, match=r"candels.hdf5.*does not fit.*layer 6.*input_shape"):
        km.gamornet_predict_keras(images, path, "SDSS")


def test_model_file_without_eight_weighted_layers(tmp_path, keras_case):
    images, weights = keras_case("CANDELS")
    path = write_keras2_file(str(tmp_path / "m.hdf5"), weights)
    with h5py.File(path, "a") as handle:
        group = handle["model_weights"]
        names = [n for n in group.attrs["layer_names"] if n != b"dense_3"]
        group.attrs["layer_names"] = np.array(names, dtype="S")
    with pytest.raises(ValueError, match="8 layers with weights.*found 7"):
        km.gamornet_predict_keras(images, path, "CANDELS")


def test_model_file_missing_a_listed_layer(tmp_path, keras_case):
    images, weights = keras_case("CANDELS")
    path = write_keras2_file(str(tmp_path / "m.hdf5"), weights, layout="weights")
    with h5py.File(path, "a") as handle:
        del handle["conv2d_3"]
    with pytest.raises(ValueError, match="corrupt.*conv2d_3"):
        km.gamornet_predict_keras(images, path, "CANDELS")


def test_model_file_missing_a_weight(tmp_path, keras_case):
    images, weights = keras_case("CANDELS")
    path = write_keras2_file(str(tmp_path / "m.hdf5"), weights, layout="weights")
    with h5py.File(path, "a") as handle:
        del handle["conv2d_2"]["conv2d_2"]["bias:0"]
    with pytest.raises(ValueError, match="corrupt.*conv2d_2.*lacks a weight"):
        km.gamornet_predict_keras(images, path, "CANDELS")


@pytest.mark.parametrize(
    "images, error, match",
    [
        ([[1.0]], TypeError, "numpy array"),
        (np.zeros((2, 83, 83)), ValueError, "must be 4-D.*trailing axis"),
        (np.zeros((2, 80, 83, 1)), ValueError, r"\(80, 83, 1\).*input_shape is \(83, 83, 1\)"),
        (np.zeros((0, 83, 83, 1)), ValueError, "no images"),
        (np.full((2, 83, 83, 1), "a"), TypeError, "real numbers"),
    ],
)
def test_bad_images_are_refused_before_loading(images, error, match):
    # The model path does not exist: the image check must come first.
    with pytest.raises(error, match=match):
        km.gamornet_predict_keras(images, "/nonexistent/model.hdf5", "CANDELS")


def test_nan_pixels_are_refused_naming_the_image():
    images = np.zeros((300, 83, 83, 1), dtype=np.float32)
    images[260, 4, 4, 0] = np.nan
    with pytest.raises(ValueError, match="image 260 holds NaN"):
        km.gamornet_predict_keras(images, "/nonexistent/model.hdf5", "CANDELS")


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        km.gamornet_predict_keras(np.zeros((1, 83, 83, 1)), "/x.hdf5", "CANDELS", batch_size=batch_size)


def test_published_names_use_the_downloader(monkeypatch, tmp_path, keras_case):
    images, weights = keras_case("CANDELS")
    path = write_keras2_file(str(tmp_path / "published.hdf5"), weights)
    calls = []

    def fake_fetch(name, backend):
        calls.append((name, backend))
        return path

    import gamornet.models._download

    monkeypatch.setattr(gamornet.models._download, "fetch_model", fake_fetch)
    got = km.gamornet_predict_keras(images, "CANDELS_tl", "CANDELS")
    assert calls == [("CANDELS_tl", "keras")]
    assert np.abs(got - reference.forward(images, weights)).max() < TOLERANCE


def test_load_model_refuses_what_is_not_a_model():
    with pytest.raises(TypeError, match="keras.Model"):
        km.gamornet_load_model_keras("model", "/x.hdf5")


def test_other_keras_backend_fails_clearly():
    # Keras reads KERAS_BACKEND once, at import; another backend's packages (jax, torch) are not
    # installed here, so the subprocess makes Keras report one.
    script = "import keras; keras.config.backend = lambda: 'jax'; import gamornet.keras_module"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0
    assert "ImportError: gamornet.keras_module needs Keras with the TensorFlow backend" in result.stderr
    assert "'jax' backend" in result.stderr and "KERAS_BACKEND=tensorflow" in result.stderr


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def training_set():
    rng = np.random.default_rng(5)
    images = reference.galaxy_images(24, TRAIN_SHAPE, seed=5)
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=24)]
    return images[:16], labels[:16], images[16:], labels[16:]


def _weights(model):
    return [[w.copy() for w in layer.get_weights()] for layer in model.layers if layer.weights]


@pytest.mark.numeric
def test_training_writes_its_files_and_they_load_back(tmp_path, training_set):
    folder = tmp_path / "run"  # created by the function, no trailing slash
    model = km.gamornet_train_keras(
        *training_set, TRAIN_SHAPE, files_save_path=str(folder), epochs=2, checkpoint_freq=1,
        batch_size=8, lr=1e-3, verbose=0,
    )
    assert sorted(os.listdir(folder)) == ["metrics.csv", "model_01.hdf5", "model_02.hdf5", "model_card.json",
                                          "trained_model.hdf5"]
    from gamornet.models.card import read_model_card

    card = read_model_card(folder)  # beside the model: the training images' statistics
    assert card["trained_by"] == "gamornet.keras_module" and card["n_training_images"] == 16
    assert card["input_shape"] == list(TRAIN_SHAPE) and card["statistics"]["size"]["quantiles"] is not None
    with open(folder / "metrics.csv") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert [row[0] for row in rows[1:]] == ["0", "1"]
    assert all(np.isfinite(float(value)) for row in rows[1:] for value in row)

    images = training_set[2]
    expected = model.predict(images, verbose=0)
    for name in ("trained_model.hdf5", "model_02.hdf5"):
        reloaded = km.gamornet_predict_keras(images, str(folder / name), TRAIN_SHAPE)
        np.testing.assert_allclose(reloaded, expected, atol=TOLERANCE)
    # And through Keras itself, with the LRN layer registered.
    keras_model = keras.models.load_model(
        str(folder / "trained_model.hdf5"), custom_objects={"LocalResponseNormalization": km.LocalResponseNormalization}
    )
    np.testing.assert_allclose(keras_model.predict(images, verbose=0), expected, atol=TOLERANCE)
    # The checkpoint after epoch 1 differs from the final state.
    first = km.gamornet_predict_keras(images, str(folder / "model_01.hdf5"), TRAIN_SHAPE)
    assert np.abs(first - expected).max() > 0


def test_training_with_dev_null_writes_nothing(tmp_path, monkeypatch, training_set):
    monkeypatch.chdir(tmp_path)
    km.gamornet_train_keras(*training_set, TRAIN_SHAPE, files_save_path="/dev/null", epochs=1, checkpoint_freq=1,
                            batch_size=8, verbose=0)
    assert os.listdir(tmp_path) == []
    assert not os.path.exists("/dev/nullmetrics.csv")


def test_trailing_slash_and_default_folder(tmp_path, monkeypatch, training_set):
    monkeypatch.chdir(tmp_path)
    km.gamornet_train_keras(*training_set, TRAIN_SHAPE, files_save_path="out/", epochs=1, batch_size=8,
                            save_model=False, verbose=0)
    assert os.listdir(tmp_path) == ["out"]
    assert os.listdir(tmp_path / "out") == ["metrics.csv"]


def test_decay_has_the_keras_2_meaning_and_nestorov_is_accepted(training_set):
    lr, decay = 1e-3, 0.5
    model = km.gamornet_train_keras(*training_set, TRAIN_SHAPE, files_save_path="/dev/null", epochs=1,
                                    batch_size=8, lr=lr, decay=decay, nestorov=True, verbose=0)
    optimizer = model.optimizer
    assert optimizer.nesterov is True
    assert int(optimizer.iterations.numpy()) == 2  # 16 images / 8
    # The learning rate in force after 2 iterations, and the schedule at other steps.
    assert float(optimizer.learning_rate) == pytest.approx(lr / (1 + decay * 2), rel=1e-6)
    for step in (0, 1, 10):
        assert float(optimizer._learning_rate(step)) == pytest.approx(lr / (1 + decay * step), rel=1e-6)


def test_learning_rate_schedule_is_accepted(training_set):
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=1, decay_rate=0.5)
    trained = km.gamornet_train_keras(*training_set, TRAIN_SHAPE, files_save_path="/dev/null", epochs=1,
                                      batch_size=8, lr=schedule, nesterov=True, verbose=0)
    assert trained.optimizer._learning_rate is schedule
    assert trained.optimizer.nesterov is True


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_optimizer_takes_its_own_first_step(tmp_path, training_set, optimizer):
    """One gradient step from known weights, checked against each optimiser's update rule.

    Adam's first step (Kingma & Ba 2015, Algorithm 1, bias-corrected) is
    lr * m/(sqrt(v) + eps) with m = g and v = g**2: every weight whose gradient
    is well above eps moves by lr exactly, whatever its gradient. SGD with
    momentum starts from zero velocity and moves each weight by lr * |g|, far
    less than lr here. The first convolution's 11 x 11 x 96 kernel tells the
    two apart.
    """
    images, labels, validation_images, validation_labels = training_set
    start = tmp_path / "start.hdf5"
    initial = km.gamornet_build_model_keras(TRAIN_SHAPE)
    initial.save(start)
    before = initial.layers[1].get_weights()[0]
    lr = 1e-3
    model = km.gamornet_train_keras(images[:8], labels[:8], validation_images, validation_labels, TRAIN_SHAPE,
                                    files_save_path="/dev/null", epochs=1, batch_size=8, lr=lr, momentum=0.9,
                                    load_model=True, model_load_path=str(start), verbose=0, optimizer=optimizer)
    assert type(model.optimizer).__name__ == {"adam": "Adam", "sgd": "SGD"}[optimizer]
    step = np.abs(model.layers[1].get_weights()[0] - before)
    assert step.max() <= lr * (1 + 1e-3)
    moved_by_lr = np.mean(np.abs(step / lr - 1) < 1e-2)
    if optimizer == "adam":
        assert moved_by_lr > 0.8
    else:
        assert moved_by_lr < 0.01 and step.max() > 0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": 0}, ValueError, "epochs must be a positive integer"),
        ({"checkpoint_freq": -1}, ValueError, "checkpoint_freq must be a non-negative integer"),
        ({"lr": -1.0}, ValueError, "lr must be a positive number"),
        ({"lr": "fast"}, ValueError, "lr must be a positive number"),
        ({"momentum": -0.1}, ValueError, "momentum must be a finite number >= 0"),
        ({"decay": float("nan")}, ValueError, "decay must be a finite number >= 0"),
        ({"verbose": 3}, ValueError, "verbose must be 0"),
        ({"nestorov": "yes"}, TypeError, "must be True or False"),
        ({"nestorov": True, "nesterov": False}, ValueError, "two spellings of one flag"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer must be 'sgd' .* or 'adam' .*Received: optimizer='rmsprop'"),
        ({"optimizer": None}, ValueError, "optimizer must be 'sgd'"),
        ({"files_save_path": 3}, TypeError, "files_save_path must be the path of a folder"),
        ({"load_model": True, "model_load_path": "/no/such/model.hdf5"}, OSError, "/no/such/model.hdf5"),
    ],
)
def test_training_error_paths(training_set, kwargs, error, match):
    options = dict(files_save_path="/dev/null", epochs=1, verbose=0)
    options.update(kwargs)
    with pytest.raises(error, match=match):
        km.gamornet_train_keras(*training_set, TRAIN_SHAPE, **options)


def test_decay_with_a_schedule_is_refused(training_set):
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=1, decay_rate=0.5)
    with pytest.raises(ValueError, match="decay applies to a constant learning rate"):
        km.gamornet_train_keras(*training_set, TRAIN_SHAPE, files_save_path="/dev/null", lr=schedule, decay=0.1)


def test_files_save_path_that_is_a_file(tmp_path, training_set):
    target = tmp_path / "a_file"
    target.write_text("")
    with pytest.raises(NotADirectoryError, match="must be a folder"):
        km.gamornet_train_keras(*training_set, TRAIN_SHAPE, files_save_path=str(target))


@pytest.mark.parametrize(
    "which, error, match",
    [
        ("training_labels", ValueError, r"shape \(n, 3\)"),
        ("validation_labels", ValueError, "holds 7 labels, but there are 8 images"),
        ("training_imgs", ValueError, "must be 4-D"),
        ("one_hot", ValueError, "one-hot"),
        ("labels_type", TypeError, "numpy array of one-hot labels"),
    ],
)
def test_training_data_error_paths(training_set, which, error, match):
    train_x, train_y, val_x, val_y = training_set
    if which == "training_labels":
        train_y = train_y[:, :2]
    elif which == "validation_labels":
        val_y = val_y[:7]
    elif which == "training_imgs":
        train_x = train_x[..., 0]
    elif which == "one_hot":
        train_y = train_y * 2
    elif which == "labels_type":
        train_y = train_y.tolist()
    with pytest.raises(error, match=match):
        km.gamornet_train_keras(train_x, train_y, val_x, val_y, TRAIN_SHAPE, files_save_path="/dev/null")


@pytest.mark.numeric
def test_load_model_continues_from_a_saved_model(tmp_path, training_set):
    source = km.gamornet_train_keras(*training_set, TRAIN_SHAPE, files_save_path=str(tmp_path), epochs=1,
                                     batch_size=8, verbose=0)
    continued = km.gamornet_train_keras(*training_set, TRAIN_SHAPE, files_save_path="/dev/null", epochs=1,
                                        batch_size=8, lr=1e-12, momentum=0.0, load_model=True,
                                        model_load_path=str(tmp_path / "trained_model.hdf5"), verbose=0)
    for before, after in zip(_weights(source), _weights(continued)):
        for a, b in zip(before, after):
            np.testing.assert_allclose(a, b, atol=1e-6)


# --------------------------------------------------------------------------- transfer learning


def test_transfer_learning_loads_freezes_and_refreshes(tmp_path, training_set):
    source_path = tmp_path / "source"
    source = km.gamornet_train_keras(*training_set, TRAIN_SHAPE, files_save_path=str(source_path), epochs=1,
                                     batch_size=8, verbose=0)
    source_weights = _weights(source)
    load = [True, True, True, True, True, True, False, False]
    train = [False, False, True, True, True, True, True, True]
    keras.utils.set_random_seed(3)
    tl_folder = tmp_path / "tl"
    model = km.gamornet_tl_keras(*training_set, TRAIN_SHAPE, load_layers_bools=load, trainable_bools=train,
                                 model_load_path=str(source_path / "trained_model.hdf5"),
                                 files_save_path=str(tl_folder), epochs=2, batch_size=8, lr=1e-2, verbose=0)
    after = _weights(model)
    for index in range(8):
        same = all(np.array_equal(a, b) for a, b in zip(source_weights[index], after[index]))
        if not train[index]:
            assert same, f"frozen layer {index} moved"
        else:
            assert not same, f"trainable layer {index} did not move"
        if not load[index]:
            # A fresh layer starts from new weights, far from the source's.
            assert np.abs(after[index][0] - source_weights[index][0]).max() > 1e-2
    assert [layer.trainable for layer in model.layers if layer.weights] == train
    reloaded = km.gamornet_predict_keras(training_set[2], str(tl_folder / "trained_model.hdf5"), TRAIN_SHAPE)
    np.testing.assert_allclose(reloaded, model.predict(training_set[2], verbose=0), atol=TOLERANCE)
    # The TL output is itself a valid TL starting point.
    km.gamornet_tl_keras(*training_set, TRAIN_SHAPE, model_load_path=str(tl_folder / "trained_model.hdf5"),
                         files_save_path="/dev/null", epochs=1, batch_size=8, verbose=0)


def test_transfer_learning_presets_are_accepted(tmp_path, training_set):
    path = write_keras2_file(
        str(tmp_path / "m.hdf5"),
        [(np.zeros(k, np.float32), np.zeros(b, np.float32)) for k, b in reference.weight_shapes(TRAIN_SHAPE)],
    )
    model = km.gamornet_tl_keras(*training_set, TRAIN_SHAPE, load_layers_bools="load_bools_CANDELS",
                                 trainable_bools="train_bools_CANDELS", model_load_path=path,
                                 files_save_path="/dev/null", epochs=1, batch_size=8, verbose=0)
    weighted = [layer for layer in model.layers if layer.weights]
    assert [layer.trainable for layer in weighted] == [False, False, False, True, True, True, True, True]
    # Loaded layers hold the file's zeros; the two fresh dense layers do not.
    assert not weighted[0].get_weights()[0].any()
    assert weighted[6].get_weights()[0].any() and weighted[7].get_weights()[0].any()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"load_layers_bools": [True] * 7}, ValueError, "exactly 8 booleans.*Received 7"),
        ({"trainable_bools": [1] * 8}, TypeError, "must hold booleans"),
        ({"load_layers_bools": "load_bools_HST"}, ValueError, "'load_bools_SDSS', 'load_bools_CANDELS'"),
        ({"trainable_bools": "load_bools_SDSS"}, ValueError, "'train_bools_SDSS', 'train_bools_CANDELS'"),
        ({"trainable_bools": 5}, TypeError, "list of 8 booleans"),
        ({"model_load_path": "/no/such/source.hdf5"}, OSError, "/no/such/source.hdf5"),
        ({"optimizer": "Adam"}, ValueError, "optimizer must be 'sgd' .* or 'adam'"),
    ],
)
def test_transfer_learning_error_paths(training_set, kwargs, error, match):
    options = dict(files_save_path="/dev/null", epochs=1, verbose=0)
    options.update(kwargs)
    with pytest.raises(error, match=match):
        km.gamornet_tl_keras(*training_set, TRAIN_SHAPE, **options)


# --------------------------------------------------------------------------- model files are checked; models are reused


def test_non_finite_weights_in_a_local_file_are_refused(tmp_path, keras_case):
    images, weights = keras_case("CANDELS")
    for layer, part in ((0, 0), (7, 1)):  # a conv2d_1 kernel value; the dense_3 bias
        broken = [list(pair) for pair in weights]
        broken[layer][part] = broken[layer][part].copy()
        broken[layer][part].flat[0] = np.nan
        path = write_keras2_file(str(tmp_path / f"nan-{layer}.hdf5"), broken)
        with pytest.raises(ValueError, match=rf"nan-{layer}.hdf5' is corrupt: weighted layer {layer + 1} .* not finite"):
            km.gamornet_predict_keras(images, path, "CANDELS")
        with pytest.raises(ValueError, match="not finite"):
            km.gamornet_load_model_keras(km.gamornet_build_model_keras("CANDELS"), path)


def test_a_keras_3_archive_is_named_as_such(tmp_path, keras_case):
    images, _ = keras_case("CANDELS")
    path = str(tmp_path / "model.keras")
    km.gamornet_build_model_keras((16, 16, 1)).save(path)
    with pytest.raises(OSError, match=r"model.keras' is a Keras 3 '.keras' archive, a format gamornet does not read"):
        km.gamornet_predict_keras(images, path, "CANDELS")


def test_individual_arrays_must_be_a_bool(keras_case):
    images, _ = keras_case("CANDELS")
    with pytest.raises(TypeError, match="individual_arrays must be True or False. Received: individual_arrays='yes'"):
        km.gamornet_predict_keras(images, "/no/such/model.hdf5", "CANDELS", individual_arrays="yes")


def test_a_single_image_is_told_to_take_a_leading_axis(keras_case):
    images, _ = keras_case("CANDELS")
    with pytest.raises(ValueError, match=r"A single image needs a leading axis of length 1: img_array\[np.newaxis\]"):
        km.gamornet_predict_keras(images[0], "/no/such/model.hdf5", "CANDELS")


def test_blank_and_saturated_images_are_named(tmp_path, keras_case):
    images, weights = keras_case("CANDELS")
    path = write_keras2_file(str(tmp_path / "m.hdf5"), weights)
    stack = images.copy()
    stack[1] = 0.0
    stack[3] = 1e30
    with pytest.warns(UserWarning, match=r"2 of 5 images have the same value in every pixel .* Images: 1, 3"):
        got = km.gamornet_predict_keras(stack, path, "CANDELS")
    assert np.abs(got[[0, 2, 4]] - reference.forward(images[[0, 2, 4]], weights)).max() < TOLERANCE


def test_a_second_call_reuses_the_model_until_the_file_changes(tmp_path, keras_case):
    from gamornet.inference import _engine

    images, weights = keras_case("CANDELS")
    path = write_keras2_file(str(tmp_path / "m.hdf5"), weights)
    _engine.clear_cache()
    first = km.gamornet_predict_keras(images, path, "CANDELS")
    (key,) = _engine.cached_models()
    second = km.gamornet_predict_keras(images, path, "CANDELS")
    assert _engine.cached_models() == [key]
    np.testing.assert_array_equal(first, second)
    # A new file at the same path (other weights) is read anew.
    other = [(kernel * 0.5, bias) for kernel, bias in weights]
    os.remove(path)
    write_keras2_file(path, other)
    third = km.gamornet_predict_keras(images, path, "CANDELS")
    assert np.abs(third - reference.forward(images, other)).max() < TOLERANCE
    assert len(_engine.cached_models()) == 2 and key in _engine.cached_models()
    _engine.clear_cache()
    assert _engine.cached_models() == []


@pytest.mark.parametrize("bad", [{"lr": float("nan")}, {"momentum": -1.0}, {"loss": "no_such_loss"}, {"optimizer": "adamw"},
                                 {"load_model": True, "model_load_path": "/no/such/model.hdf5"}])
def test_bad_training_arguments_leave_no_folder(tmp_path, training_set, bad):
    images, labels, validation_images, validation_labels = training_set
    folder = tmp_path / "out"
    with pytest.raises((ValueError, OSError)):
        km.gamornet_train_keras(images, labels, validation_images, validation_labels, TRAIN_SHAPE,
                                files_save_path=str(folder), epochs=1, verbose=0, **bad)
    assert not folder.exists()
