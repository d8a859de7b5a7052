"""Training from files: catalogues, the tf.data pipelines, augmentation, the training loop and its two engines.

Every image and catalogue is written by the tests into temporary folders, at
32 x 32 pixels: GaMorNet's two 4096-unit dense layers make even a small input
cost about 18 M parameters, so runs are kept to a few steps.
"""

import csv
import json
import os
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import reference
from gamornet.io.catalogues import read_training_catalogue
from gamornet.training import data as training

SHAPE = (32, 32, 1)
CLASS_NAMES = ("disk", "indeterminate", "bulge")


def _write_catalogue(folder, name, images, classes, image_folder="images", form="names"):
    """FITS images (one per row, as a 2-D array) and a catalogue naming them, relative to its folder."""
    os.makedirs(folder / image_folder, exist_ok=True)
    rows = []
    for index, (image, label) in enumerate(zip(images, classes)):
        path = f"{image_folder}/{name}_{index:03d}.fits"
        fits.writeto(folder / path, image[..., 0], overwrite=True)
        rows.append((path, label))
    table = Table(rows=rows, names=("path", "label"))
    if form == "numbers":
        table["label"] = np.array([int(label) for label in classes])
    elif form == "names":
        table["label"] = [CLASS_NAMES[int(label)] for label in classes]
    elif form == "one-hot":
        del table["label"]
        for column, class_name in enumerate(CLASS_NAMES):
            table[class_name] = (np.asarray(classes) == column).astype(float)
    path = folder / f"{name}.csv"
    table.write(path, format="ascii.csv", overwrite=True)
    return path


@pytest.fixture(scope="module")
def galaxies():
    """24 training and 8 validation galaxy-like images, with classes 0, 1, 2 in turn."""
    images = reference.galaxy_images(32, SHAPE, seed=11)
    classes = np.arange(32) % 3
    return images, classes


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory, galaxies):
    """(training catalogue, validation catalogue) of FITS files written by the test."""
    folder = tmp_path_factory.mktemp("catalogue")
    images, classes = galaxies
    return (_write_catalogue(folder, "train", images[:24], classes[:24]),
            _write_catalogue(folder, "validation", images[24:], classes[24:]))  # fmt: skip


def _one_hot(classes):
    labels = np.zeros((len(classes), 3), dtype=np.float32)
    labels[np.arange(len(classes)), classes] = 1
    return labels


# --------------------------------------------------------------------------- catalogues


@pytest.mark.parametrize("form", ["names", "numbers", "one-hot"])
def test_catalogue_labels_in_every_form(tmp_path, galaxies, form):
    images, classes = galaxies
    path = _write_catalogue(tmp_path, "cat", images[:6], classes[:6], form=form)
    label_column = "disk,indeterminate,bulge" if form == "one-hot" else "label"
    catalogue = read_training_catalogue(path, label_column=label_column)
    np.testing.assert_array_equal(catalogue.labels, _one_hot(classes[:6]))
    assert catalogue.paths[0] == str(tmp_path / "images" / "cat_000.fits")
    assert catalogue.class_counts() == {"disk": 2, "indeterminate": 2, "bulge": 2}


@pytest.mark.parametrize("ending, table_format", [(".fits", "fits"), (".parquet", "parquet"), (".ecsv", "ascii.ecsv")])
def test_catalogue_formats(tmp_path, galaxies, ending, table_format):
    images, classes = galaxies
    csv_path = _write_catalogue(tmp_path, "cat", images[:3], classes[:3])
    table = Table.read(csv_path, format="ascii.csv")
    table["label"] = [name.upper() for name in table["label"]]  # names are read in any case
    table.write(tmp_path / f"cat{ending}", format=table_format)
    catalogue = read_training_catalogue(tmp_path / f"cat{ending}")
    np.testing.assert_array_equal(catalogue.labels, _one_hot(classes[:3]))


def _csv(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("path,label\n", ValueError, r"is empty: it holds no rows"),
        ("path,label\nimages/cat_000.fits,spiral\n", ValueError,
         r"row 1 \(.*cat_000.fits\): unknown label 'spiral' in column 'label'"),
        ("path,label\nimages/cat_000.fits,disk\nimages/cat_001.fits,3\n", ValueError, r"row 2 .*unknown label '3'"),
        ("path,label\nimages/cat_000.fits,disk\nimages/nowhere.fits,bulge\n", FileNotFoundError,
         r"names 1 image file\(s\) that do not exist \(row 2: .*nowhere.fits"),
        ("file,label\nimages/cat_000.fits,disk\n", ValueError, r"no column 'path' \(its columns are: file, label\)"),
        ("path,class\nimages/cat_000.fits,disk\n", ValueError, r"no column 'label'.*--label-column"),
        ("path,label\n,disk\n", ValueError, r"row 1: the path column 'path' is empty"),
    ],
)  # fmt: skip
def test_catalogue_errors_name_the_row_and_file(tmp_path, galaxies, text, error, match):
    images, classes = galaxies
    _write_catalogue(tmp_path, "cat", images[:2], classes[:2])
    with pytest.raises(error, match=match):
        read_training_catalogue(_csv(tmp_path / "bad.csv", text))


def test_catalogue_errors_of_format_type_and_one_hot(tmp_path, galaxies):
    images, classes = galaxies
    _write_catalogue(tmp_path, "cat", images[:2], classes[:2])
    with pytest.raises(ValueError, match=r"CSV, ECSV, FITS or Parquet .*Received: '.*cat.txt'"):
        read_training_catalogue(_csv(tmp_path / "cat.txt", "path,label\n"))
    with pytest.raises(FileNotFoundError, match="no such catalogue file"):
        read_training_catalogue(tmp_path / "missing.csv")
    with pytest.raises(TypeError, match="path of a table file"):
        read_training_catalogue(3)
    with pytest.raises(ValueError, match="exactly three column names"):
        read_training_catalogue(tmp_path / "cat.csv", label_column="disk,bulge")
    one_hot = _csv(tmp_path / "hot.csv", "path,d,i,b\nimages/cat_000.fits,1,0,0\nimages/cat_001.fits,1,1,0\n")
    with pytest.raises(ValueError, match=r"row 2 .*\[1.0, 1.0, 0.0\] .* are not one-hot"):
        read_training_catalogue(one_hot, label_column=("d", "i", "b"))


def test_a_catalogue_that_cannot_be_read_as_a_table_is_an_os_error(tmp_path):
    """The convention of gamornet.io.catalogues, for both kinds of catalogue: OSError (it was a ValueError here)."""
    broken = tmp_path / "broken.fits"
    broken.write_text("not a FITS file")
    with pytest.raises(OSError, match=r"cannot read the catalogue .*broken\.fits' as a fits table"):
        read_training_catalogue(broken)


@pytest.mark.parametrize("ending, table_format", [(".pq", "parquet"), (".fit.gz", "fits")])
def test_catalogue_formats_of_sky_catalogues_too(tmp_path, galaxies, ending, table_format):
    images, classes = galaxies
    csv_path = _write_catalogue(tmp_path, "cat", images[:3], classes[:3])
    Table.read(csv_path, format="ascii.csv").write(tmp_path / f"cat{ending}", format=table_format)
    catalogue = read_training_catalogue(tmp_path / f"cat{ending}")
    np.testing.assert_array_equal(catalogue.labels, _one_hot(classes[:3]))


# --------------------------------------------------------------------------- single images


def test_read_image_layouts_and_errors(tmp_path):
    image = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
    np.save(tmp_path / "plain.npy", image)
    np.save(tmp_path / "stacked.npy", image[None, :, :, None])
    fits.writeto(tmp_path / "plain.fits", image)
    for name in ("plain.npy", "stacked.npy", "plain.fits"):
        np.testing.assert_array_equal(training.read_image(str(tmp_path / name), SHAPE)[..., 0], image)
    fits.writeto(tmp_path / "small.fits", image[:30])
    fits.writeto(tmp_path / "cube.fits", np.stack([image, image]))
    bad = image.copy()
    bad[3, 4] = np.nan
    fits.writeto(tmp_path / "nan.fits", bad)
    np.save(tmp_path / "small.npy", image[:, :30])
    for name, match in (("small.fits", r"small.fits: holds an image of shape \(30, 32\)"),
                        ("cube.fits", "cube.fits: holds a cube of several images"),
                        ("nan.fits", "nan.fits: the image holds 1 NaN or infinite pixels"),
                        ("small.npy", r"small.npy: holds an array of shape \(32, 30\)")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            training.read_image(str(tmp_path / name), SHAPE)
    with pytest.raises(FileNotFoundError, match="gone.fits: no such image file"):
        training.read_image(str(tmp_path / "gone.fits"), SHAPE)


# --------------------------------------------------------------------------- datasets


def _epoch(dataset):
    images, labels = zip(*[(images.numpy(), labels.numpy()) for images, labels in dataset])
    return np.concatenate(images), np.concatenate(labels)


def test_cached_and_streamed_pipelines_give_the_same_batches(catalogues, galaxies):
    images, classes = galaxies
    streamed = training.catalogue_dataset(catalogues[0], SHAPE, batch_size=5, cache=False, seed=3)
    cached = training.catalogue_dataset(catalogues[0], SHAPE, batch_size=5, cache=True, seed=3)
    assert int(streamed.cardinality()) == 5  # 24 images in batches of 5
    first, second = _epoch(streamed), _epoch(streamed)
    np.testing.assert_array_equal(_epoch(cached)[0], first[0])
    # Each epoch is a permutation of all 24 images, with their labels, in a new order.
    for batch_images, batch_labels in (first, second):
        order = [int(np.flatnonzero((images[:24] == image).all(axis=(1, 2, 3)))[0]) for image in batch_images]
        assert sorted(order) == list(range(24))
        np.testing.assert_array_equal(batch_labels, _one_hot(classes[order]))
    assert not np.array_equal(first[0], second[0])
    validation = training.catalogue_dataset(catalogues[1], SHAPE, batch_size=3, training=False)
    np.testing.assert_array_equal(_epoch(validation)[0], images[24:])


def test_preprocessing_is_applied_on_the_way(catalogues, galaxies):
    from gamornet.science.preprocess import preprocess_images

    settings = {"stretch": "asinh", "scaling": "peak"}
    dataset = training.catalogue_dataset(catalogues[1], SHAPE, batch_size=8, training=False, preprocessing=settings)
    np.testing.assert_allclose(_epoch(dataset)[0], preprocess_images(galaxies[0][24:], **settings), rtol=1e-6)


def _dihedral(image):
    return [np.rot90(flipped, turns) for flipped in (image, image[:, ::-1]) for turns in range(4)]


def test_rotations_and_flips_are_the_symmetries_of_the_square(galaxies):
    images = galaxies[0][:8]
    settings = training.AugmentationSettings(rotate_flip=True)
    dataset = training.catalogue_dataset((images, _one_hot(np.zeros(8, int))), SHAPE, batch_size=8, seed=1,
                                         augmentation=settings)  # fmt: skip
    seen = set()
    for _ in range(4):
        for augmented in _epoch(dataset)[0]:
            matches = [(index, number) for index, image in enumerate(images)
                       for number, candidate in enumerate(_dihedral(image)) if np.array_equal(candidate, augmented)]  # fmt: skip
            assert len(matches) >= 1
            seen.add(matches[0][1])
    assert len(seen) >= 6  # 32 draws from 8 symmetries


def test_shifts_move_the_light_by_less_than_max_shift():
    image = np.zeros((1,) + SHAPE, dtype=np.float32)
    image[0, 14:18, 14:18] = 1.0
    settings = training.AugmentationSettings(max_shift=0.7)
    dataset = training.catalogue_dataset((np.repeat(image, 16, axis=0), _one_hot(np.zeros(16, int))), SHAPE,
                                         batch_size=16, augmentation=settings, seed=2)  # fmt: skip
    shifted = _epoch(dataset)[0][..., 0]
    np.testing.assert_allclose(shifted.sum(axis=(1, 2)), 16.0, rtol=1e-5)  # bilinear interpolation keeps the flux
    rows, columns = np.mgrid[0:32, 0:32]
    centroids = np.stack([(shifted * rows).sum(axis=(1, 2)), (shifted * columns).sum(axis=(1, 2))], axis=1) / 16.0
    offsets = centroids - 15.5
    assert np.abs(offsets).max() <= 0.7 + 1e-5
    assert np.abs(offsets).max() > 0.1 and len(np.unique(offsets.round(4), axis=0)) == 16


def test_noise_is_raised_by_a_factor_between_one_and_noise_factor():
    rng = np.random.default_rng(4)
    images = rng.normal(0.0, 2.0, size=(256,) + SHAPE).astype(np.float32)
    settings = training.AugmentationSettings(noise_factor=2.0)
    dataset = training.catalogue_dataset((images, _one_hot(np.zeros(256, int))), SHAPE, batch_size=64,
                                         augmentation=settings, seed=5)  # fmt: skip
    ratios = _epoch(dataset)[0].std(axis=(1, 2, 3)) / 2.0
    # Each ratio is f times the ratio of the image's measured noise to its border estimate (a few % apart).
    assert ratios.min() > 0.85 and ratios.max() < 2.25
    # f is uniform in [1, 2], so the variance grows by E[f^2] = (2^3 - 1) / 3 = 7/3 on average.
    assert np.mean(ratios**2) == pytest.approx(7 / 3, rel=0.05)


def test_augmentation_settings():
    settings = training.AugmentationSettings(rotate_flip=True, max_shift=0.5, noise_factor=1.5)
    assert settings.to_dict() == {"rotate_flip": True, "max_shift": 0.5, "noise_factor": 1.5}
    assert training.AugmentationSettings.from_dict(settings.to_dict()) == settings
    assert not training.AugmentationSettings().enabled and settings.enabled
    with pytest.raises(ValueError, match=r"noise_factor must be a number >= 1 .*Received: noise_factor=0.5"):
        training.AugmentationSettings(noise_factor=0.5)
    with pytest.raises(ValueError, match="max_shift must be a number of pixels >= 0"):
        training.AugmentationSettings(max_shift=-1)
    with pytest.raises(TypeError, match="rotate_flip must be True or False"):
        training.AugmentationSettings(rotate_flip="yes")
    with pytest.raises(ValueError, match=r"unknown augmentation settings \['flip'\]"):
        training.AugmentationSettings.from_dict({"flip": True})


# --------------------------------------------------------------------------- training through the 0.4.x functions

from gamornet.training import _loop as _training_loop  # noqa: E402
from gamornet.training import keras as training_keras  # noqa: E402
from gamornet.cli import main as cli
from gamornet import keras_module as km  # noqa: E402


def _weights(model):
    return [weight.copy() for layer in model.layers for weight in layer.get_weights()]


def _metrics(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.numeric
def test_training_from_a_catalogue_of_fits_files(tmp_path, catalogues, galaxies):
    from gamornet.science.preprocess import preprocess_images

    images, classes = galaxies
    settings = {"stretch": "asinh", "scaling": "peak"}
    folder = tmp_path / "run"
    model = km.gamornet_train_keras(str(catalogues[0]), None, str(catalogues[1]), None, SHAPE,
                                    files_save_path=str(folder), epochs=1, batch_size=12, lr=1e-3, verbose=0, seed=0,
                                    preprocessing=settings, cache=False)  # fmt: skip
    assert sorted(os.listdir(folder)) == ["metrics.csv", "model_card.json", "preprocessing.json", "trained_model.hdf5"]
    card = json.loads((folder / "model_card.json").read_text())  # issue 12: every trained model gets a card
    assert card["n_training_images"] == 24 and card["preprocessing"]["stretch"] == "asinh"
    assert [row["epoch"] for row in _metrics(folder / "metrics.csv")] == ["0"]  # numbered from 0, as in 0.4.x
    saved = json.loads((folder / "preprocessing.json").read_text())
    assert saved["preprocess_images"]["stretch"] == "asinh" and saved["input_shape"] == [32, 32, 1]
    validation = preprocess_images(images[24:], **saved["preprocess_images"])
    reloaded = km.gamornet_predict_keras(validation, str(folder / "trained_model.hdf5"), SHAPE)
    np.testing.assert_allclose(reloaded, model.predict(validation, verbose=0), atol=1e-6)

    # The same images as arrays, the same seed: the same batches, so the same network (the catalogue adds nothing).
    from_arrays = km.gamornet_train_keras(images[:24], _one_hot(classes[:24]), images[24:], _one_hot(classes[24:]),
                                          SHAPE, files_save_path="/dev/null", epochs=1, batch_size=12, lr=1e-3,
                                          verbose=0, seed=0, preprocessing=settings)  # fmt: skip
    for from_files, from_memory in zip(_weights(model), _weights(from_arrays)):
        np.testing.assert_allclose(from_files, from_memory, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cache", [True, False])
def test_a_bad_image_met_in_training_is_named(tmp_path, galaxies, cache):
    images, classes = galaxies
    path = _write_catalogue(tmp_path, "cat", images[:6], classes[:6])
    fits.writeto(tmp_path / "images" / "cat_004.fits", images[4, :30, :, 0], overwrite=True)
    with pytest.raises(ValueError, match=r"cat_004.fits: holds an image of shape \(30, 32\)"):
        km.gamornet_train_keras(str(path), None, str(path), None, SHAPE, files_save_path="/dev/null", epochs=1,
                                batch_size=2, verbose=0, cache=cache)  # fmt: skip


def test_training_inputs_are_checked(catalogues, galaxies):
    import tensorflow as tf

    images, classes = galaxies
    labels = _one_hot(classes)
    with pytest.raises(TypeError, match="training_labels must be None when training_imgs is a catalogue"):
        km.gamornet_train_keras(str(catalogues[0]), labels, images, labels, SHAPE, files_save_path="/dev/null")
    wrong = tf.data.Dataset.from_tensor_slices((images[:, :30], labels)).batch(4)
    with pytest.raises(ValueError, match=r"validation_imgs must be a tf.data.Dataset of batches \(images of shape"):
        km.gamornet_train_keras(images, labels, wrong, None, SHAPE, files_save_path="/dev/null")
    with pytest.raises(TypeError, match="a numpy array of images, a catalogue .* or a tf.data.Dataset"):
        km.gamornet_train_keras([1, 2], None, images, labels, SHAPE, files_save_path="/dev/null")
    with pytest.raises(ValueError, match="precision must be 'fp32', 'bf16' or 'fp16'"):
        km.gamornet_train_keras(images, labels, images, labels, SHAPE, precision="fp8")
    with pytest.raises(ValueError, match="distribute must be None, 'mirrored' or 'multiworker'"):
        km.gamornet_tl_keras(images, labels, images, labels, SHAPE, distribute="tpu")
    with pytest.raises(ValueError, match="a resumable run needs an output folder"):
        km.gamornet_train_keras(images, labels, images, labels, SHAPE, files_save_path="/dev/null", resume=True)


def test_resumed_runs_recognise_the_same_schedule_and_loss():
    import keras

    def schedule():
        return keras.optimizers.schedules.CosineDecay(0.01, decay_steps=100, warmup_target=0.1, warmup_steps=10)

    assert training_keras._describe_setting(schedule()) == training_keras._describe_setting(schedule())
    assert training_keras._describe_setting(schedule()) != training_keras._describe_setting(keras.optimizers.schedules.CosineDecay(0.01, 50))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    assert training_keras._describe_setting(loss)["config"]["label_smoothing"] == 0.1
    assert training_keras._describe_setting(keras.losses.categorical_crossentropy) == training_keras._describe_setting(
        keras.losses.categorical_crossentropy)


def test_a_tf_data_dataset_trains(galaxies):
    import tensorflow as tf

    images, classes = galaxies
    dataset = tf.data.Dataset.from_tensor_slices((images[:8], _one_hot(classes[:8]))).batch(8)
    model = km.gamornet_train_keras(dataset, None, dataset, None, SHAPE, files_save_path="/dev/null", epochs=1,
                                    verbose=0)  # fmt: skip
    assert model.output_shape == (None, 3)


def _mean_crossentropy(labels, predictions):
    """A user's loss that returns the batch's mean, not one value per image."""
    import keras

    return keras.ops.mean(keras.losses.categorical_crossentropy(labels, predictions))


def test_class_weighted_crossentropy_against_numpy():
    """Each galaxy's -log p(true class), clipped as Keras clips, times its class's weight; the batch's mean."""
    from gamornet.training.data import class_weighted_crossentropy

    rng = np.random.default_rng(3)
    classes = np.array([0, 1, 2, 0, 2, 2, 1, 0])
    probabilities = rng.dirichlet([1.0, 1.0, 1.0], size=len(classes)).astype("float32")
    probabilities[0] = [0.0, 0.5, 0.5]  # log(0) is clipped to log(1e-7)
    weights = np.array([2.5, 0.5, 1.0])
    per_galaxy = -np.log(np.clip(probabilities[np.arange(len(classes)), classes], 1e-7, 1 - 1e-7)) * weights[classes]
    loss = class_weighted_crossentropy(disk=2.5, indeterminate=0.5)
    assert float(loss(_one_hot(classes), probabilities)) == pytest.approx(per_galaxy.mean(), rel=1e-6)
    assert class_weighted_crossentropy().get_config()["weights"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("weights, message", [
    ({"disk": 0}, "disk=0"), ({"bulge": -1.0}, "bulge=-1.0"), ({"indeterminate": float("nan")}, "indeterminate=nan"),
    ({"disk": True}, "disk=True"), ({"disk": "2"}, "disk='2'"), ({"bulge": float("inf")}, "bulge=inf"),
])  # fmt: skip
def test_class_weighted_crossentropy_refuses_bad_weights(weights, message):
    from gamornet.training.data import class_weighted_crossentropy

    with pytest.raises(ValueError, match="finite number > 0. Received: " + re.escape(message)):
        class_weighted_crossentropy(**weights)


def _class_weighted_loss():
    from gamornet.training.data import class_weighted_crossentropy

    return class_weighted_crossentropy(disk=3.0, bulge=0.5)


@pytest.mark.numeric
@pytest.mark.parametrize("loss", ["categorical_crossentropy", _mean_crossentropy, "class-weighted"],
                         ids=["per-image", "batch-mean", "class-weighted"])  # fmt: skip
def test_custom_distributed_step_matches_fit(tmp_path, galaxies, loss):
    """One worker on the custom step (strategy.run, GradientTape, compute_average_loss) against model.fit.

    Same seed, so the same initial weights, batches and dropout masks: the two
    differ only in the order of float32 sums (the mean loss is a sum divided by
    the global batch instead of Keras' mean; the metrics are summed per batch),
    about 1e-7 relative per operation. Over 4 SGD steps that stays far below
    1e-4 of the weights and 1e-4 of the epoch losses, while a missed gradient
    step or a wrong loss scale (1/8 instead of 1) moves them by 1e-3 or more. Two epochs, so that the second
    epoch's batches are checked to be the same too.
    """
    images, classes = galaxies
    labels = _one_hot(classes)
    loss = _class_weighted_loss() if loss == "class-weighted" else loss
    runs = {}
    for engine in ("fit", "custom"):
        options = _training_loop.check_run_options(seed=0, engine=engine)
        model = training_keras.train_from_scratch(
            (images[:16], labels[:16], images[24:], labels[24:]), SHAPE, options, load_model=False,
            model_load_path=None, files_save_path=str(tmp_path / engine), epochs=2, checkpoint_freq=0, batch_size=8,
            lr=1e-3, momentum=0.9, decay=0.0, nesterov=False, loss=loss, save_model=False,
            verbose=0, path_column="path", label_column="label", optimizer="sgd",
        )  # fmt: skip
        runs[engine] = (_metrics(tmp_path / engine / "metrics.csv"), _weights(model))
    (fit_rows, fit_weights), (custom_rows, custom_weights) = runs["fit"], runs["custom"]
    assert [row["epoch"] for row in custom_rows] == ["0", "1"]
    for fit_row, custom_row in zip(fit_rows, custom_rows):
        for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(custom_row[column]) == pytest.approx(float(fit_row[column]), rel=1e-4), column
    moved = max(np.abs(after).max() for after in fit_weights)
    for from_fit, from_custom in zip(fit_weights, custom_weights):
        np.testing.assert_allclose(from_custom, from_fit, rtol=1e-4, atol=1e-4 * moved)


def test_bf16_mixed_precision_under_mirrored_strategy_on_cpu(tmp_path, galaxies):
    import keras
    import tensorflow as tf

    images, classes = galaxies
    model = km.gamornet_train_keras(images[:8], _one_hot(classes[:8]), images[:8], _one_hot(classes[:8]), SHAPE,
                                    files_save_path=str(tmp_path), epochs=1, batch_size=8, verbose=0,
                                    precision="bf16", distribute="mirrored")  # fmt: skip
    assert model.get_layer("conv2d_1").compute_dtype == "bfloat16"
    assert all(weight.dtype == "float32" for weight in model.weights)
    assert isinstance(model.distribute_strategy, tf.distribute.MirroredStrategy)
    assert keras.config.dtype_policy().name == "float32"  # restored for the next network
    reloaded = km.gamornet_predict_keras(images[:8], str(tmp_path / "trained_model.hdf5"), SHAPE)
    assert reloaded.shape == (8, 3) and np.allclose(reloaded.sum(axis=1), 1, atol=1e-5)


def test_precision_and_distribution_errors(monkeypatch):
    with pytest.raises(ValueError, match="precision='fp16' needs a GPU"):
        with _training_loop.precision_policy("fp16"):
            pass
    for name in ("TF_CONFIG", "SLURM_PROCID", "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="multiworker' needs the cluster described in .*TF_CONFIG, or a Slurm"):
        _training_loop.make_strategy("multiworker")


def test_slurm_job_steps_are_resolved(monkeypatch):
    """Under srun, the cluster comes from Slurm's variables (two tasks on two nodes here, no GPU)."""
    for name in ("TF_CONFIG", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi, as on a CPU-only node
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "node[01-02]")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "1(x2)")
    resolver = _training_loop._cluster_resolver()
    assert resolver.cluster_spec().as_dict() == {"worker": ["node01:8888", "node02:8888"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)


# --------------------------------------------------------------------------- the command line


def _train_command(catalogues, output, *extra):
    return ["train", "--catalog", str(catalogues[0]), "--validation-catalog", str(catalogues[1]), "--input-shape",
            "32,32,1", "--output-dir", str(output), "--batch-size", "8", "--lr", "0.001", "--seed", "0", *extra]  # fmt: skip


def test_cli_train_resume_fresh_and_tl(tmp_path, catalogues, capsys):
    output = tmp_path / "run"
    assert cli.main(_train_command(catalogues, output, "--epochs", "2", "--quiet")) == 0
    names = sorted(os.listdir(output))
    assert names == ["backup", "metrics.csv", "model_card.json", "preprocessing.json", "trained_model.hdf5",
                     "training_curves.png"]
    rows = _metrics(output / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]  # numbered from 1 on the command line
    assert (output / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((output / "preprocessing.json").read_text())["preprocess_images"] is None
    assert json.loads((output / "backup" / "state.json").read_text())["completed_epochs"] == 2

    # The same command again: nothing is left to train, and nothing is retrained.
    assert cli.main(_train_command(catalogues, output, "--epochs", "2")) == 0
    assert "2 of 2 epochs were finished; nothing is left to train" in capsys.readouterr().out
    assert _metrics(output / "metrics.csv") == rows

    # Other settings are refused rather than mixed into the saved run.
    assert cli.main(_train_command(catalogues, output, "--epochs", "2", "--momentum", "0.5")) == 1
    assert "holds a run started with other settings (momentum: 0.9 then, 0.5 now)" in capsys.readouterr().err
    # The seed is one of the settings: another one would draw other batches and dropout masks.
    assert cli.main(_train_command(catalogues, output, "--epochs", "2", "--seed", "99")) == 1
    assert "holds a run started with other settings (seed: 0 then, 99 now)" in capsys.readouterr().err
    assert cli.main(_train_command(catalogues, output, "--epochs", "2", "--optimizer", "adam")) == 1
    # With Adam the recipe's cosine schedule is the default, so the schedule differs too.
    assert ("holds a run started with other settings (lr_schedule: None then, 'cosine' now; optimizer: 'sgd' then, "
            "'adam' now)") in capsys.readouterr().err
    weights = output / "backup" / json.loads((output / "backup" / "state.json").read_text())["weights"]
    weights.rename(weights.with_suffix(".moved"))
    assert cli.main(_train_command(catalogues, output, "--epochs", "2")) == 1
    assert "cannot be restored from" in capsys.readouterr().err
    assert cli.main(_train_command(catalogues, output, "--epochs", "1", "--momentum", "0.5", "--fresh",
                                   "--rotate-flip", "--quiet")) == 0  # fmt: skip
    assert [row["epoch"] for row in _metrics(output / "metrics.csv")] == ["1"]
    assert json.loads((output / "augmentation.json").read_text())["rotate_flip"] is True

    tl_output = tmp_path / "tl"
    command = ["tl", "--model", str(output / "trained_model.hdf5"), *_train_command(catalogues, tl_output)[1:],
               "--epochs", "1", "--trainable-bools", "train_bools_CANDELS", "--load-layers-bools",
               "True,True,True,True,True,False,False,False", "--quiet"]  # fmt: skip
    assert cli.main(command) == 0
    assert "trained_model.hdf5" in os.listdir(tl_output)
    settings = json.loads((tl_output / "backup" / "state.json").read_text())["settings"]
    assert settings["trainable_bools"] == [False, False, False, True, True, True, True, True]
    assert settings["load_layers_bools"] == [True] * 5 + [False] * 3 and settings["lr"] == 0.001


def test_cli_bad_catalogue_is_named(tmp_path, catalogues, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(f"path,label\n{catalogues[0].parent / 'images' / 'train_000.fits'},elliptical\n")
    command = _train_command((bad, catalogues[1]), tmp_path / "out")
    assert cli.main(command) == 1
    err = capsys.readouterr().err
    assert f"gamornet train: error: the catalogue '{bad}', row 1" in err and "Rows are counted from 1" in err
    assert cli.main(command[:-2] + ["--max-shift", "-1"]) == 1
    assert "max_shift must be a number of pixels >= 0" in capsys.readouterr().err


def test_cli_one_class_training_data_are_refused_before_any_work(tmp_path, galaxies, catalogues, capsys):
    images, _ = galaxies
    one_class = _write_catalogue(tmp_path, "disks", images[:6], [0] * 6)
    assert cli.main(_train_command((one_class, catalogues[1]), tmp_path / "out")) == 1
    assert "every one of the 6 galaxies of the training data is labelled disk" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("ending", [".fits", ".npy"])
def test_a_blank_training_image_is_refused_and_named(tmp_path, ending):
    path = tmp_path / f"blank{ending}"
    if ending == ".npy":
        np.save(path, np.zeros(SHAPE[:2], np.float32))
    else:
        fits.writeto(path, np.zeros(SHAPE[:2], np.float32))
    with pytest.raises(ValueError, match=r"blank.* every pixel of this training image is 0 \(a blank or failed cutout"):
        training.read_image(str(path), SHAPE)


# --------------------------------------------------------------------------- runs in other processes

import contextlib  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _environment(**extra):
    environment = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)
    environment.pop("TF_CONFIG", None)
    environment.update(extra)
    return environment


def _gamornet(arguments, **extra):
    return subprocess.Popen([sys.executable, "-m", "gamornet.cli.main", *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_environment(**extra))  # fmt: skip


def _completed_epochs(output):
    try:
        return json.loads((output / "backup" / "state.json").read_text())["completed_epochs"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.slow
def test_a_run_killed_in_its_second_epoch_resumes_to_the_numbers_of_an_uninterrupted_run(tmp_path, catalogues):
    output = tmp_path / "run"
    # 24 images in batches of 4: 6 steps per epoch, so the second epoch lasts long enough to be killed in.
    command = _train_command(catalogues, output, "--epochs", "2", "--batch-size", "4")
    uninterrupted = _gamornet(_train_command(catalogues, tmp_path / "uninterrupted", "--epochs", "2", "--batch-size",
                                             "4", "--quiet"))  # fmt: skip
    process = _gamornet(command)
    deadline = time.monotonic() + 600  # a guard only: a busy shared machine may take minutes
    # The state is committed first, then metrics.csv (by a thread, while epoch 2 trains): wait for both.
    while _completed_epochs(output) < 1 or not (output / "metrics.csv").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the first epoch did not finish in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    first_rows = _metrics(output / "metrics.csv")
    assert [row["epoch"] for row in first_rows] == ["1"] and _completed_epochs(output) == 1  # killed in epoch 2

    # Resumed without --seed: the run's own seed (0) is taken from its saved settings.
    process = _gamornet([word for word in command if word not in ("--seed", "0")])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "Resuming the run in" in out and "1 of 2 epochs were finished; continuing with epoch 2" in out
    assert "epoch 1:" not in out and "epoch 2:" in out
    rows = _metrics(output / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"] and rows[0] == first_rows[0]
    assert "trained_model.hdf5" in os.listdir(output)
    # The shuffling and the dropout masks are those the uninterrupted run drew: the same numbers, to the last digit.
    assert uninterrupted.communicate(timeout=300)[0] is not None and uninterrupted.returncode == 0
    assert rows == _metrics(tmp_path / "uninterrupted" / "metrics.csv")


@contextlib.contextmanager
def _small_file_system(folder, size, *options):
    """A tmpfs of ``size`` mounted on ``folder`` for the test (root only; the test is skipped otherwise)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small file system (tmpfs) needs root; run the tests as root to check this")
    os.makedirs(folder, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs",
                              str(folder)], capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_full_disk_stops_training_cleanly_and_the_run_resumes_once_there_is_space(tmp_path, catalogues):
    # The training state of the 32 x 32 network (weights and momenta) takes about 170 MB: the state of epoch 1
    # fits in 200 MB, that of epoch 2 (written before the first is removed) does not.
    with _small_file_system(tmp_path / "small", "200m") as small:
        output = small / "run"
        command = _train_command(catalogues, output, "--epochs", "2", "--quiet")
        process = _gamornet(command)
        _, err = process.communicate(timeout=300)
        assert process.returncode == 1, err  # an error, not a crash (rc 139 before)
        assert "Traceback" not in err and "h5py" not in err
        # The first writer of epoch 2 to find the disk full stops the run: the resume state, or the best epoch's
        # weights that the command line keeps beside it.
        assert err.startswith(("gamornet train: error: cannot write the training state of epoch 2",
                               "gamornet train: error: cannot write the best epoch's weights of epoch 2"))
        assert "no space left on the disk" in err and "The run's state after epoch 1 is kept" in err
        state = json.loads((output / "backup" / "state.json").read_text())
        assert state["completed_epochs"] == 1
        kept = set(os.listdir(output / "backup"))
        assert {"epoch-0001.state.npy", "state.json"} <= kept <= {"epoch-0001.state.npy", "state.json", "best.json",
                                                                   "best.weights.h5"}, kept
        # metrics.csv and the state agree: epoch 1 only.
        rows = _metrics(output / "metrics.csv")
        assert [row["epoch"] for row in rows] == ["1"] == [str(row[0]) for row in state["metrics"]]

        subprocess.run(["mount", "-o", "remount,size=1g", str(small)], check=True)
        process = _gamornet(command)
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert [row["epoch"] for row in _metrics(output / "metrics.csv")] == ["1", "2"]
        assert _metrics(output / "metrics.csv")[0] == rows[0]


def test_a_read_only_output_folder_is_refused_before_training(tmp_path, catalogues, capsys):
    folder = tmp_path / "read-only"
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root writes into any folder: a read-only file system then
        context = _small_file_system(folder, "1m", "ro")
    else:
        folder.mkdir()
        folder.chmod(0o555)
        context = contextlib.nullcontext(folder)
    with context:
        assert cli.main(_train_command(catalogues, folder, "--epochs", "1")) == 1
        captured = capsys.readouterr()
        assert f"the output folder '{folder}' cannot be written to" in captured.err
        assert "nothing was trained" in captured.err and "epoch 1" not in captured.out
        assert os.listdir(folder) == []


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


@pytest.mark.slow
def test_multiworker_training_with_two_processes_on_loopback(tmp_path, catalogues):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        # Each worker is given its own output folder, to show that only the chief (worker 0) writes. The 8
        # validation images train too: one step of a global batch of 8, 4 images on each worker.
        command = _train_command((catalogues[1], catalogues[1]), tmp_path / f"worker{index}", "--epochs", "1",
                                 "--distribute", "multiworker")  # fmt: skip
        processes.append(_gamornet(command, TF_CONFIG=config))
    outputs = [process.communicate(timeout=400) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err
    lines = [[line for line in out.splitlines() if line.startswith("epoch 1:")] for out, _ in outputs]
    # The loss and metrics are reduced over both workers, so both report the same numbers.
    assert len(lines[0]) == 1 and lines[0][0].split(" (")[0] == lines[1][0].split(" (")[0]
    chief_files = sorted(os.listdir(tmp_path / "worker0"))
    assert "trained_model.hdf5" in chief_files and "metrics.csv" in chief_files
    assert not (tmp_path / "worker1").exists()
    rows = _metrics(tmp_path / "worker0" / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1"]
    assert float(rows[0]["loss"]) == pytest.approx(float(lines[0][0].split("loss ")[1].split(",")[0]), abs=1e-4)
